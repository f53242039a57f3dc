"""`airlock app deploy NAME | list`: Helm charts from the bundle, their images from the registry.

Before helm runs, every image the chart asks for (its `artifacthub.io/images` annotation and the
image blocks of values.yaml, as `airlock plan` found them) is looked up in what the local
registry holds; a missing one refuses the deploy and is named, because otherwise the pods would
sit in ImagePullBackOff behind a `--wait` that only times out. Then
`helm upgrade --install NAME CHART.tgz --wait --set ...` (idempotent: a second deploy upgrades).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from airlock.cluster.runner import ADMIN_CONF, CommandRunner, SystemRunner
from airlock.errors import AirlockError, NodeError, UsageError
from airlock.oci.layout import OciLayout
from airlock.oci.ref import parse_reference
from airlock.resolve.charts import chart_images

__all__ = [
    "AppDeployOptions",
    "AppInfo",
    "AppPlan",
    "AppResult",
    "deploy_app",
    "list_apps",
    "plan_app_deploy",
    "registry_images_in_store",
    "run_app_deploy",
]

_RELEASE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?\Z")
_SET_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\[\]-]*\Z")


@dataclass(frozen=True)
class AppInfo:
    name: str
    version: str
    app_version: str | None
    chart: str  # path of the packaged chart
    images: tuple[str, ...]


@dataclass(frozen=True)
class AppPlan:
    release: str
    chart: AppInfo
    argv: tuple[str, ...]
    kubeconfig: str = ADMIN_CONF

    def render(self) -> str:
        lines = [
            f"airlock app deploy {self.release}: chart {self.chart.name} {self.chart.version}"
            f" ({self.chart.chart})",
            *(f"  image in the local registry: {i}" for i in self.chart.images),
            f"run: {' '.join(self.argv)}",
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class AppResult:
    release: str
    chart: str
    version: str
    images: tuple[str, ...]
    dry_run: bool
    plan_text: str
    log: str = ""
    message: str = ""


@dataclass(frozen=True)
class AppDeployOptions:
    charts: Mapping[str, Path]  # chart name -> packaged chart (.tgz) from the bundle
    registry_images: Collection[str]  # full references the local registry holds
    sets: tuple[str, ...] = ()
    release: str | None = None  # None: the chart name
    namespace: str | None = None
    helm: str = "helm"
    kubeconfig: str = ADMIN_CONF
    log_dir: Path = Path("/var/log/airlock")
    dry_run: bool = False


def _normal(ref: str) -> str:
    return str(parse_reference(ref))


def _chart_yaml(data: bytes, name: str) -> dict[str, Any]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for m in tar.getmembers():
                parts = m.name.split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and m.isfile():
                    fh = tar.extractfile(m)
                    loaded = YAML(typ="safe").load(fh.read() if fh else b"")
                    if isinstance(loaded, dict):
                        return loaded
    except (tarfile.TarError, OSError, YAMLError) as exc:
        raise UsageError(f"chart {name} is not a valid chart archive: {exc}") from None
    raise UsageError(f"chart {name} has no Chart.yaml", hint="package it with `helm package`")


def _info(name: str, path: Path) -> AppInfo:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read chart {name} at {path}: {exc.strerror}") from None
    meta = _chart_yaml(data, name)
    images = tuple(dict.fromkeys(ref for ref, _ in chart_images(data, chart=name)))
    app = meta.get("appVersion")
    return AppInfo(
        name=str(meta.get("name") or name),
        version=str(meta.get("version") or "?"),
        app_version=str(app) if app is not None else None,
        chart=str(path),
        images=images,
    )


def list_apps(*, charts: Mapping[str, Path]) -> list[AppInfo]:
    """The charts the bundle carries, with the images each one asks for."""
    return [_info(name, charts[name]) for name in sorted(charts)]


def registry_images_in_store(store: Path) -> set[str]:
    """Full references the store (and so `airlock registry serve`) holds."""
    return set(OciLayout(store).images())


def _check_sets(sets: Sequence[str]) -> None:
    for s in sets:
        for part in s.split(","):
            key, eq, _ = part.partition("=")
            if not eq or not _SET_KEY_RE.match(key):
                raise UsageError(
                    f"--set {s!r}: {part!r} is not KEY=VALUE",
                    hint="e.g. --set replicaCount=2 or --set ui.message=hello",
                )


def plan_app_deploy(
    chart_name: str,
    *,
    charts: Mapping[str, Path],
    registry_images: Collection[str],
    helm: str = "helm",
    sets: Sequence[str] = (),
    release: str | None = None,
    namespace: str | None = None,
    kubeconfig: str = ADMIN_CONF,
) -> AppPlan:
    """Refuse (naming it) an image the registry lacks; else the helm command."""
    if chart_name not in charts:
        have = ", ".join(sorted(charts)) or "none"
        raise UsageError(
            f"no chart named {chart_name!r} in the bundle (available: {have})",
            hint="add it to the spec's charts and carry a new bundle",
        )
    info = _info(chart_name, charts[chart_name])
    held = {_normal(r) for r in registry_images}
    missing = [i for i in info.images if _normal(i) not in held]
    if missing:
        raise NodeError(
            f"chart {chart_name} needs {', '.join(missing)}, which the local registry does not"
            " hold; nothing was deployed",
            hint="add the image to the spec's images, carry a new bundle"
            " (airlock bundle create --since inventory.json) and `airlock load` it",
        )
    _check_sets(sets)
    name = release or chart_name
    if not _RELEASE_RE.match(name):
        raise UsageError(f"release name {name!r} must be a lowercase DNS label (a-z, 0-9, -)")
    argv: list[str] = [helm, "upgrade", "--install", name, info.chart, "--wait"]
    argv += ["--kubeconfig", kubeconfig]
    if namespace:
        argv += ["--namespace", namespace, "--create-namespace"]
    for s in sets:
        argv += ["--set", s]
    return AppPlan(name, info, tuple(argv), kubeconfig)


def images_not_held(pods: Mapping[str, Any], held: Collection[str]) -> list[str]:
    """Images the cluster's pods ask for (containers and initContainers) that the local
    registry does not hold: the image a chart pulls at run time but nobody carried."""
    have = {_normal(r) for r in held}
    wanted: set[str] = set()
    for pod in pods.get("items", []):
        spec = pod.get("spec", {}) if isinstance(pod, dict) else {}
        for group in ("initContainers", "containers", "ephemeralContainers"):
            for c in spec.get(group) or []:
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    wanted.add(c["image"])
    missing = []
    for image in sorted(wanted):
        try:
            if _normal(image) not in have:
                missing.append(image)
        except AirlockError:
            missing.append(image)
    return missing


def _check_pod_images(
    plan: AppPlan, runner: CommandRunner, held: Collection[str], log_dir: Path
) -> None:
    argv = ("kubectl", "--kubeconfig", plan.kubeconfig, "get", "pods", "-A", "-o", "json")
    result = runner.run(argv, log=log_dir / f"pods-{plan.release}.log")
    if result.returncode != 0:
        return  # the deploy itself succeeded; the comparison is a diagnostic
    try:
        pods = json.loads(result.stdout)
    except ValueError:
        return
    missing = images_not_held(pods, held)
    if missing:
        raise NodeError(
            f"{plan.release} is deployed, but pods ask for images the local registry does not hold:"
            f" {', '.join(missing)}",
            hint="add them to the spec's images, carry a delta bundle and `airlock load` it",
        )


def run_app_deploy(
    plan: AppPlan, *, runner: CommandRunner, log_dir: Path, registry_images: Collection[str] = ()
) -> AppResult:
    log = log_dir / f"helm-{plan.release}.log"
    result = runner.run(plan.argv, log=log)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-2:]
        raise NodeError(
            f"helm failed to deploy {plan.release} (exit {result.returncode}); its output is in"
            f" {log}" + (f" (last lines: {' | '.join(tail)})" if tail else ""),
            hint="`helm status` and `kubectl get pods -A` show what did not come up",
        )
    _check_pod_images(plan, runner, registry_images, log_dir)
    message = f"deployed {plan.release}: chart {plan.chart.name} {plan.chart.version}"
    return AppResult(
        release=plan.release,
        chart=plan.chart.chart,
        version=plan.chart.version,
        images=plan.chart.images,
        dry_run=False,
        plan_text=plan.render(),
        log=str(log),
        message=message,
    )


def deploy_app(
    chart_name: str,
    *,
    options: AppDeployOptions,
    runner: CommandRunner | None = None,
    progress: Callable[[str], None] | None = None,
) -> AppResult:
    """The `airlock app deploy NAME` verb."""
    plan = plan_app_deploy(
        chart_name,
        charts=options.charts,
        registry_images=options.registry_images,
        helm=options.helm,
        sets=options.sets,
        release=options.release,
        namespace=options.namespace,
        kubeconfig=options.kubeconfig,
    )
    if options.dry_run:
        return AppResult(
            release=plan.release,
            chart=plan.chart.chart,
            version=plan.chart.version,
            images=plan.chart.images,
            dry_run=True,
            plan_text=plan.render(),
            message="dry run: nothing was changed",
        )
    if progress:
        progress(f"helm upgrade --install {plan.release}")
    return run_app_deploy(
        plan,
        runner=runner or SystemRunner(),
        log_dir=options.log_dir,
        registry_images=options.registry_images,
    )
