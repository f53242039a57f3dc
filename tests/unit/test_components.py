"""The component builder's pure parts: recipes, cache keys, the Go version gate, the cache hit."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock_lab import components
from airlock_lab.components import COMPONENTS_DIR, Recipe, build_one, recipe_key, recipes


def test_every_recipe_has_its_module_with_go_sum() -> None:
    for recipe in recipes(("seed", "current", "upgrade")):
        module = COMPONENTS_DIR / recipe.module
        assert (module / "go.mod").is_file(), recipe.key
        assert (module / "go.sum").is_file(), recipe.key


def test_kubernetes_is_stamped_as_the_release_build_does() -> None:
    (kube,) = [r for r in recipes() if r.name == "kubernetes"]
    flags = " ".join(kube.ldflags)
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.27.3" in flags
        assert f"-X {pkg}.gitMinor=27" in flags
    assert {c.name for c in kube.commands} >= {"kubeadm", "kubelet", "kubectl", "kube-apiserver"}


def test_substitutes_say_so() -> None:
    for recipe in recipes(("seed", "current", "upgrade")):
        if recipe.built_version:
            assert recipe.note, recipe.key


def test_unknown_set_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown component set"):
        recipes(("nope",))


def test_key_changes_with_target_recipe_and_toolchain() -> None:
    helm = next(r for r in recipes() if r.name == "helm")
    base = recipe_key(helm, "linux", "amd64", "go1.26.8")
    assert base == recipe_key(helm, "linux", "amd64", "go1.26.8")
    assert base != recipe_key(helm, "linux", "arm64", "go1.26.8")
    assert base != recipe_key(helm, "linux", "amd64", "go1.26.9")
    changed = dataclasses.replace(helm, ldflags=(*helm.ldflags, "-X a.b=c"))
    assert base != recipe_key(changed, "linux", "amd64", "go1.26.8")


def _fake_go(tmp_path: Path, version: str) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    go = bindir / "go"
    go.write_text(f"#!/bin/sh\necho {version}\n")
    go.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_old_go_is_refused_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _fake_go(tmp_path, "go1.25.4").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UsageError, match=r"go1\.25\.4 is too old") as exc:
        components.check_go()
    assert "1.26" in (exc.value.hint or "")


def test_a_complete_build_is_taken_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    recipe: Recipe = next(r for r in recipes() if r.name == "k9s")
    key = recipe_key(recipe, "linux", "amd64", "go1.26.8")
    out = tmp_path / "cache/airlock/components" / f"{recipe.key}-linux-amd64-{key}"
    out.mkdir(parents=True)
    (out / "build.json").write_text(json.dumps({"format": "x"}))
    seen: list[str] = []
    built = build_one(recipe, go_version="go1.26.8", progress=lambda n, m: seen.append(m))
    assert built.cached and built.dir == out and built.seconds == 0.0
    assert seen == ["cached (linux/amd64)"]


def test_every_go_command_is_pinned_by_its_module() -> None:
    """tools.go imports every package a recipe builds, so `go mod tidy` put all of their
    dependencies in go.sum (a build runs with -mod=readonly)."""
    for recipe in recipes(("seed", "current", "upgrade")):
        if recipe.kind != "go":
            continue
        module = COMPONENTS_DIR / recipe.module
        pinned = "".join(p.read_text() for p in module.glob("*.go"))
        for command in recipe.commands:
            if command.package != ".":
                assert f'"{command.package}"' in pinned, (recipe.key, command.package)
