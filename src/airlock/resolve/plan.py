"""`airlock plan`: the spec resolved to every artifact, each with where it was found.

Only metadata is fetched (CNI manifest, chart index and chart archive, kubeadm's constants.go);
no artifact. The fetcher is injected so the logic stays testable without a network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from airlock.errors import AirlockError
from airlock.fetch.network import NetworkOptions
from airlock.oci.ref import parse_reference
from airlock.resolve.charts import chart_images, find_chart
from airlock.resolve.kubernetes import KubeadmImages, images_from_constants, kubeadm_images
from airlock.resolve.manifests import images_in_manifest
from airlock.resolve.model import Artifact, Plan
from airlock.resolve.urls import apply_mirror, cni_manifest_url, release_files
from airlock.spec import Spec

__all__ = ["Fetcher", "resolve_plan", "resolve_plan_with"]

CONSTANTS_URL = "https://raw.githubusercontent.com/kubernetes/kubernetes/{v}/cmd/kubeadm/app/constants/constants.go"


class Fetcher(Protocol):
    def get(self, url: str) -> bytes: ...


def _kubeadm_list(spec: Spec, fetcher: Fetcher, warn: Callable[[str], None]) -> KubeadmImages:
    version = spec.kubernetes.version
    try:
        text = fetcher.get(CONSTANTS_URL.format(v=version)).decode()
        return images_from_constants(version, text)
    except AirlockError:
        pass
    listed = kubeadm_images(version)
    if not listed.exact:
        warn(
            f"kubeadm image list for {version} is a guess from {listed.source}; "
            "`bundle create` checks it against the fetched kubeadm binary"
        )
    return listed


ChartRenderer = Callable[[bytes, str], "str | None"]  # chart archive, label -> manifests


def resolve_plan_with(
    spec: Spec,
    fetcher: Fetcher,
    *,
    render: ChartRenderer | None = None,
    network: NetworkOptions | None = None,
) -> Plan:
    plan = Plan(spec.metadata.name, spec.kubernetes.version)
    mirrors = spec.sources.files

    def file_artifact(
        kind: str,
        name: str,
        version: str,
        url: str,
        checksum_url: str | None,
        *,
        platform: str = "",
        sha256: str | None = None,
        found: str,
    ) -> Artifact:
        signed = next((p for p in spec.verify.signatures if url.startswith(p.prefix)), None)
        return Artifact(
            kind=kind,
            name=name,
            version=version,
            source=url,
            fetch_url=apply_mirror(url, mirrors),
            checksum_url=checksum_url,
            sha256=sha256,
            platform=platform,
            found_in=(found,),
            signature_url=url + signed.suffix if signed else None,
            signature_key=signed.key if signed else None,
        )

    rt = spec.runtime
    for f in release_files(
        kubernetes=spec.kubernetes.version,
        release_tools=spec.kubernetes.release_tools,
        containerd=rt.containerd,
        runc=rt.runc,
        crictl=rt.crictl,
        cni_plugins=rt.cni_plugins,
        platforms=list(spec.platforms),
        helm=spec.tools.helm,
        k9s=spec.tools.k9s,
    ):
        plan.artifacts.append(
            file_artifact(
                f.kind,
                f.name,
                f.version,
                f.url,
                f.checksum_url,
                platform=f.platform,
                found="release layout",
            )
        )

    images: dict[str, list[str]] = {}

    def add_image(ref: str, where: str) -> None:
        key = str(parse_reference(ref))
        images.setdefault(key, [])
        if where not in images[key]:
            images[key].append(where)

    listed = _kubeadm_list(spec, fetcher, plan.warnings.append)
    plan.image_list_source = listed.source
    for ref in listed.images:
        add_image(ref, listed.source)

    cni_url = cni_manifest_url(spec.network.cni, spec.network.version)
    cni_name = cni_url.rsplit("/", 1)[1]
    plan.artifacts.append(
        file_artifact(
            "manifest",
            cni_name,
            spec.network.version,
            cni_url,
            None,
            found=f"{spec.network.cni} {spec.network.version}",
        )
    )
    manifest = fetcher.get(cni_url).decode()
    for ref, where in images_in_manifest(manifest, source=cni_name):
        add_image(ref, where)

    for chart in spec.charts:
        index_url = chart.repo.rstrip("/") + "/index.yaml"
        entry = find_chart(
            fetcher.get(index_url).decode(), repo=chart.repo, name=chart.name, version=chart.version
        )
        plan.artifacts.append(
            file_artifact(
                "chart",
                chart.name,
                chart.version,
                entry.url,
                None,
                sha256=entry.digest,
                found=f"{index_url}",
            )
        )
        chart_tgz = fetcher.get(entry.url)
        for ref, where in chart_images(chart_tgz, chart=f"{chart.name}-{chart.version}"):
            add_image(ref, where)
        if render is not None:  # what the chart really deploys with its default values
            rendered = render(chart_tgz, f"{chart.name}-{chart.version}")
            if rendered is not None:
                for ref, where in images_in_manifest(
                    rendered, source=f"helm template {chart.name}"
                ):
                    add_image(ref, where)

    for i, ref in enumerate(spec.images):
        add_image(ref, f"spec images[{i}]")

    for extra in spec.files:
        name = extra.name or extra.url.rstrip("/").rsplit("/", 1)[1]
        plan.artifacts.append(
            file_artifact(
                "file", name, "", extra.url, None, sha256=extra.sha256, found="spec files"
            )
        )

    for ref in sorted(images):
        r = parse_reference(ref)
        plan.artifacts.append(
            Artifact(
                kind="image",
                name=r.name,
                version=r.tag or "",
                source=ref,
                found_in=tuple(images[ref]),
            )
        )
    if spec.packages and spec.packages.repositories and spec.packages.names:
        plan.artifacts += _package_closure(spec, plan.warnings.append, network)
    elif spec.packages:
        if spec.packages.names:
            plan.warnings.append(
                "packages.repositories is empty: OS packages are listed by name only; "
                "add repositories to carry their exact dependency closure"
            )
        for name in spec.packages.names:
            plan.artifacts.append(
                Artifact(
                    kind="package",
                    name=name,
                    version="",
                    source=f"os:{spec.packages.os}",
                    found_in=("spec packages (names only; closure not resolved yet)",),
                )
            )
    return plan


def _package_closure(
    spec: Spec, warn: Callable[[str], None], network: NetworkOptions | None = None
) -> list[Artifact]:
    """The exact package files the target needs (libsolv), each with why it is needed."""
    import tempfile
    from pathlib import Path

    from airlock.packages.closure import Installed, load_repositories, resolve_closure

    pkgs = spec.packages
    assert pkgs is not None
    installed = (
        Installed(base="minimal")
        if pkgs.installed == "minimal"
        else Installed(dpkg_status=Path(pkgs.installed))
    )
    out: list[Artifact] = []
    for platform in spec.platforms:
        with tempfile.TemporaryDirectory(prefix="airlock-repos-") as tmp:
            repos = load_repositories(
                pkgs,
                workdir=Path(tmp),
                platform=platform,
                keys=[Path(k) for k in pkgs.keys],
                mirrors=spec.sources.files,
                opener=(network or NetworkOptions()).opener(),
            )
            if not pkgs.keys:
                warn(
                    "packages.keys is empty: repository metadata was used without a signature check"
                )
            closure = resolve_closure(
                pkgs,
                installed=installed,
                repos=repos,
                platform=platform,
                recommends=pkgs.recommends,
            )
        for p in closure.packages:
            out.append(
                Artifact(
                    kind="package",
                    name=p.name,
                    version=p.version,
                    source=p.url,
                    fetch_url=apply_mirror(p.url, spec.sources.files),
                    sha256=p.checksum.value if p.checksum.algorithm == "sha256" else None,
                    platform=platform,
                    found_in=(p.reason,),
                    size=p.size,
                )
            )
    return out


def resolve_plan(spec: Spec, *, network: NetworkOptions | None = None) -> Plan:
    from airlock.fetch.metadata import MetadataFetcher

    return resolve_plan_with(
        spec,
        MetadataFetcher(spec.sources.files, network=network),
        render=helm_template,
        network=network,
    )


def helm_template(chart_tgz: bytes, label: str) -> str | None:
    """`helm template` of a chart when a helm is on PATH; None when there is none, it fails or
    it renders nothing (values and annotations still count)."""
    import tempfile
    from pathlib import Path

    from airlock import system

    helm = system.which("helm")
    if helm is None:
        return None
    with tempfile.TemporaryDirectory(prefix="airlock-helm-") as tmp:
        chart = Path(tmp) / f"{label}.tgz"
        chart.write_bytes(chart_tgz)
        result = system.run(
            [helm, "template", "airlock-plan", str(chart)], check=False, timeout=120
        )
    return result.stdout if result.returncode == 0 and result.stdout.strip() else None
