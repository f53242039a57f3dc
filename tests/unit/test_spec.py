"""The spec: presets are valid, and every error kind names file, line and field."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.errors import SpecError
from airlock.presets import PRESETS, preset_text
from airlock.spec import dump_spec, parse_spec

SEED = preset_text("seed")


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, filename="airlock.yaml")
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid(preset: str) -> None:
    spec = parse_spec(preset_text(preset))  # type: ignore[arg-type]
    assert spec.kind == "Bundle"


def test_seed_is_the_blog() -> None:
    spec = parse_spec(SEED)
    assert spec.kubernetes.version == "v1.27.3"
    assert spec.runtime.cni_plugins == "v1.3.0"
    assert spec.runtime.crictl == "v1.27.0"
    assert (spec.network.cni, spec.network.version) == ("flannel", "v0.22.0")
    assert (spec.tools.helm, spec.tools.k9s) == ("v3.12.2", "v0.27.4")
    assert "docker.io/library/registry:2.8.2" in spec.images
    assert spec.charts[0].name == "podinfo" and spec.charts[0].version == "6.4.0"
    assert spec.packages is not None and spec.packages.os == "fedora-37"
    assert set(spec.packages.names) == {"socat", "conntrack-tools", "libcgroup"}


def test_current_uses_containerd_2() -> None:
    spec = parse_spec(preset_text("current"))
    assert spec.runtime.containerd.startswith("2.")


def test_unknown_key_names_line_and_field() -> None:
    text = SEED.replace("  podSubnet: 10.244.0.0/16", "  podSubnet: 10.244.0.0/16\n  podSubnett: x")
    (problem,) = errors_of(text)
    assert (
        problem
        == f"airlock.yaml:{line_of(text, 'podSubnett')}: network.podSubnett: unknown field; did you mean 'podSubnet'?"
    )


def test_bad_version_names_line() -> None:
    text = SEED.replace("version: v1.27.3", "version: '1.27'")
    (problem,) = errors_of(text)
    assert problem.startswith(
        f"airlock.yaml:{line_of(text, chr(39) + '1.27')}: kubernetes.version:"
    )
    assert "exact version like v1.27.3" in problem


def test_bad_cidr() -> None:
    text = SEED.replace("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0/33")
    (problem,) = errors_of(text)
    assert f":{line_of(text, 'podSubnet')}: network.podSubnet: not a valid CIDR" in problem


def test_unknown_cni() -> None:
    text = SEED.replace("cni: flannel ", "cni: weave ")
    (problem,) = errors_of(text)
    assert f":{line_of(text, 'cni: weave')}: network.cni: unknown CNI 'weave'" in problem
    assert "flannel" in problem


def test_duplicate_images() -> None:
    text = SEED.replace(
        "  - ghcr.io/stefanprodan/podinfo:6.4.0",
        "  - ghcr.io/stefanprodan/podinfo:6.4.0\n  - registry:2.8.2",
    )
    (problem,) = errors_of(text)
    assert problem.startswith(
        f"airlock.yaml:{line_of(text, '- registry:2.8.2')}: images[2]: duplicate"
    )
    assert "images[0]" in problem  # docker.io/library/registry:2.8.2 normalised


def test_source_mirror_not_a_url() -> None:
    text = SEED + 'sources:\n  files:\n    "https://dl.k8s.io/": "ftp:/nope"\n'
    (problem,) = errors_of(text)
    assert (
        f":{line_of(text, 'ftp:/nope')}: sources.files.https://dl.k8s.io/: not an http(s) URL"
        in problem
    )


def test_registry_source_not_a_url() -> None:
    text = SEED + "sources:\n  registries:\n    registry.k8s.io: {url: 127.0.0.1:5000}\n"
    (problem,) = errors_of(text)
    assert "sources.registries.registry.k8s.io.url: not an http(s) URL" in problem


def test_registry_listen_needs_address_and_port() -> None:
    text = SEED + "registry:\n  listen: [198.18.0.10:5000, nope]\n"
    (problem,) = errors_of(text)
    assert "registry.listen:" in problem and "'nope' is not ADDRESS:PORT" in problem
    assert parse_spec(SEED + "registry:\n  listen: ['[::1]:5000']\n").registry.listen == [
        "[::1]:5000"
    ]


def test_missing_field_and_several_errors_at_once() -> None:
    text = SEED.replace("  runc: v1.1.7\n", "").replace("cni: flannel ", "cni: weave ")
    problems = errors_of(text)
    assert len(problems) == 2
    assert any("runtime.runc: required field is missing" in p for p in problems)
    assert any("network.cni" in p for p in problems)


def test_bad_image_reference() -> None:
    text = SEED.replace("  - ghcr.io/stefanprodan/podinfo:6.4.0", "  - ghcr.io/Bad Name:1")
    (problem,) = errors_of(text)
    assert f":{line_of(text, 'Bad Name')}: images[1]:" in problem


def test_not_yaml() -> None:
    (problem,) = errors_of("apiVersion: [unclosed\n")
    assert problem.startswith("airlock.yaml:") and "not valid YAML" in problem


def test_wrong_api_version() -> None:
    (problem,) = errors_of(SEED.replace("airlock/v1alpha1", "airlock/v9"))
    assert "apiVersion:" in problem and "airlock/v9" in problem


def test_dump_round_trips() -> None:
    spec = parse_spec(SEED)
    assert parse_spec(dump_spec(spec)) == spec


@given(st.text(max_size=200))
def test_fuzz_spec_loader_only_raises_spec_errors(text: str) -> None:
    with contextlib.suppress(SpecError):
        parse_spec(text)


def test_wheelhouse_targets_default_and_minimum() -> None:
    spec = parse_spec(SEED)
    assert spec.wheelhouse.pythons == ["3.11", "3.12", "3.13"]
    assert spec.wheelhouse.architectures == ["x86_64", "aarch64"]
    with pytest.raises(
        SpecError, match=r"wheelhouse\.pythons.*needs Python 3\.11 or newer, not 3\.9"
    ):
        parse_spec(SEED + 'wheelhouse: {pythons: ["3.9"]}\n')
    with pytest.raises(SpecError, match=r"wheelhouse\.architectures"):
        parse_spec(SEED + "wheelhouse: {architectures: [ppc64le]}\n")
