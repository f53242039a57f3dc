"""`app deploy`: images the chart needs are checked against the registry before helm runs."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from airlock.cluster.apps import AppDeployOptions, deploy_app, list_apps, plan_app_deploy
from airlock.errors import NodeError, UsageError
from airlock.system import CommandResult


def chart_tgz(path: Path, *, name: str, version: str, values: str, annotation: str = "") -> Path:
    chart_yaml = f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: {version}\n"
    if annotation:
        chart_yaml += f"annotations:\n  artifacthub.io/images: |\n{annotation}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, text in (("Chart.yaml", chart_yaml), ("values.yaml", values)):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def charts(tmp_path: Path) -> dict[str, Path]:
    podinfo = chart_tgz(
        tmp_path / "podinfo-6.4.0.tgz",
        name="podinfo",
        version="6.4.0",
        values="image:\n  repository: ghcr.io/stefanprodan/podinfo\n  tag: 6.4.0\n"
        "redis:\n  image:\n    repository: redis\n    tag: 7.0.7\n",
        annotation="    - name: podinfo\n      image: ghcr.io/stefanprodan/podinfo:6.4.0\n",
    )
    return {"podinfo": podinfo}


class RecordingRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> CommandResult:
        self.calls.append(tuple(argv))
        return CommandResult(tuple(argv), 0, "deployed\n", "")


HELD = {"ghcr.io/stefanprodan/podinfo:6.4.0", "docker.io/library/redis:7.0.7"}


def test_missing_image_refuses_before_helm_runs(charts: dict[str, Path], tmp_path: Path) -> None:
    runner = RecordingRunner()
    opts = AppDeployOptions(
        charts=charts, registry_images={"ghcr.io/stefanprodan/podinfo:6.4.0"}, log_dir=tmp_path
    )
    with pytest.raises(NodeError) as err:
        deploy_app("podinfo", options=opts, runner=runner)
    assert "redis:7.0.7" in err.value.message  # the missing one, named
    assert "ghcr.io/stefanprodan/podinfo" not in err.value.message
    assert "nothing was deployed" in err.value.message
    assert runner.calls == []


def test_deploy_runs_helm_upgrade_install(charts: dict[str, Path], tmp_path: Path) -> None:
    runner = RecordingRunner()
    opts = AppDeployOptions(
        charts=charts,
        registry_images=HELD,
        sets=("replicaCount=2", "ui.message=hi"),
        log_dir=tmp_path,
    )
    result = deploy_app("podinfo", options=opts, runner=runner)
    assert runner.calls[1:] == [
        ("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "pods", "-A", "-o", "json")
    ]  # after helm: what the pods ask for, compared with the registry
    assert runner.calls[:1] == [
        (
            "helm",
            "upgrade",
            "--install",
            "podinfo",
            str(charts["podinfo"]),
            "--wait",
            "--kubeconfig",
            "/etc/kubernetes/admin.conf",
            "--set",
            "replicaCount=2",
            "--set",
            "ui.message=hi",
        )
    ]
    assert result.version == "6.4.0"
    assert result.images == ("ghcr.io/stefanprodan/podinfo:6.4.0", "redis:7.0.7")


def test_bad_set_is_refused(charts: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="not KEY=VALUE"):
        plan_app_deploy("podinfo", charts=charts, registry_images=HELD, sets=("replicaCount",))


def test_unknown_chart_names_the_available_ones(charts: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match=r"available: podinfo"):
        plan_app_deploy("nginx", charts=charts, registry_images=HELD)


def test_list_apps(charts: dict[str, Path], tmp_path: Path) -> None:
    charts["aaa"] = chart_tgz(
        tmp_path / "aaa.tgz", name="aaa", version="0.1.0", values="image: busybox:1.36\n"
    )
    apps = list_apps(charts=charts)
    assert [(a.name, a.version) for a in apps] == [("aaa", "0.1.0"), ("podinfo", "6.4.0")]
    assert apps[0].images == ("busybox:1.36",)


def test_dry_run_renders_the_command(charts: dict[str, Path]) -> None:
    result = deploy_app(
        "podinfo",
        options=AppDeployOptions(
            charts=charts, registry_images=HELD, dry_run=True, namespace="apps"
        ),
    )
    assert result.dry_run
    assert result.plan_text.endswith(
        f"run: helm upgrade --install podinfo {charts['podinfo']} --wait --kubeconfig"
        " /etc/kubernetes/admin.conf --namespace apps --create-namespace\n"
    )


class PodsRunner(RecordingRunner):
    def __init__(self, pods_json: str) -> None:
        super().__init__()
        self.pods_json = pods_json

    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> CommandResult:
        self.calls.append(tuple(argv))
        out = self.pods_json if argv[0] == "kubectl" else "deployed\n"
        return CommandResult(tuple(argv), 0, out, "")


def test_after_deploy_a_pod_image_the_registry_lacks_is_named(
    charts: dict[str, Path], tmp_path: Path
) -> None:
    import json

    pods = {
        "items": [
            {
                "spec": {
                    "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                    "containers": [
                        {"name": "podinfo", "image": "ghcr.io/stefanprodan/podinfo:6.4.0"}
                    ],
                }
            },
            {"spec": {"containers": [{"name": "redis", "image": "redis:7.0.7"}]}},
        ]
    }
    opts = AppDeployOptions(charts=charts, registry_images=HELD, log_dir=tmp_path)
    with pytest.raises(NodeError) as err:
        deploy_app("podinfo", options=opts, runner=PodsRunner(json.dumps(pods)))
    assert "busybox:1.36" in err.value.message  # only the init image nobody carried
    assert "redis" not in err.value.message and "podinfo:6.4.0" not in err.value.message
    ok = {"items": pods["items"][1:]}
    result = deploy_app("podinfo", options=opts, runner=PodsRunner(json.dumps(ok)))
    assert result.message.startswith("deployed podinfo")
