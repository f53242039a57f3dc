"""Helm charts: find a version in a repo index, and the images a chart uses (pure).

Images come from the `artifacthub.io/images` annotation and from values.yaml image blocks in
their common shapes: `image: "repo:tag"`, `image: {repository, tag}`, `{registry, repository,
tag}`, `{repository, tag, digest}`; a missing tag defaults to the chart's appVersion.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from airlock.errors import UsageError

__all__ = ["ChartEntry", "chart_images", "find_chart"]


@dataclass(frozen=True)
class ChartEntry:
    name: str
    version: str
    url: str
    digest: str | None  # sha256 hex from index.yaml, when published
    app_version: str | None


def _yaml(text: str | bytes, what: str) -> Any:
    try:
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise UsageError(f"{what} is not valid YAML: {exc}") from None


def find_chart(index_text: str, *, repo: str, name: str, version: str) -> ChartEntry:
    index = _yaml(index_text, f"{repo}/index.yaml") or {}
    entries = (index.get("entries") or {}).get(name)
    if not entries:
        raise UsageError(f"chart {name!r} not found in {repo}/index.yaml")
    for e in entries:
        if str(e.get("version")) == version:
            urls = e.get("urls") or []
            if not urls:
                raise UsageError(f"chart {name} {version} in {repo} has no download URL")
            url = urljoin(repo.rstrip("/") + "/", urls[0])
            return ChartEntry(name, version, url, e.get("digest"), e.get("appVersion"))
    have = ", ".join(str(e.get("version")) for e in entries[:10])
    raise UsageError(
        f"chart {name} version {version} not in {repo} (available: {have})",
        hint="pin one of the published versions in the spec",
    )


def _image_blocks(node: Any, path: str, app_version: str | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "image":
                ref = _image_from(value, app_version)
                if ref:
                    out.append((ref, here))
                    continue
            out.extend(_image_blocks(value, here, app_version))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_image_blocks(value, f"{path}[{i}]", app_version))
    return out


def _image_from(value: Any, app_version: str | None) -> str | None:
    if isinstance(value, str) and value and "{{" not in value:
        return value
    if isinstance(value, dict) and isinstance(value.get("repository"), str):
        repo = value["repository"]
        if isinstance(value.get("registry"), str) and value["registry"]:
            repo = f"{value['registry']}/{repo}"
        tag = value.get("tag") or app_version
        ref = f"{repo}:{tag}" if tag else repo
        if isinstance(value.get("digest"), str) and value["digest"]:
            ref += f"@{value['digest']}"
        return ref
    return None


def chart_images(chart_tgz: bytes, *, chart: str) -> list[tuple[str, str]]:
    """(image, where) pairs found in a packaged chart."""
    chart_yaml: Any = None
    values: Any = None
    try:
        with tarfile.open(fileobj=io.BytesIO(chart_tgz), mode="r:gz") as tar:
            for m in tar.getmembers():
                parts = m.name.split("/")
                if len(parts) == 2 and parts[1] in ("Chart.yaml", "values.yaml") and m.isfile():
                    fh = tar.extractfile(m)
                    data = fh.read() if fh else b""
                    if parts[1] == "Chart.yaml":
                        chart_yaml = _yaml(data, f"{chart}/Chart.yaml")
                    else:
                        values = _yaml(data, f"{chart}/values.yaml")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"chart {chart} is not a valid chart archive: {exc}") from None
    found: list[tuple[str, str]] = []
    app_version = (
        str(chart_yaml.get("appVersion"))
        if isinstance(chart_yaml, dict) and chart_yaml.get("appVersion")
        else None
    )
    annotations = (chart_yaml or {}).get("annotations") or {}
    listed = annotations.get("artifacthub.io/images")
    if isinstance(listed, str):
        for item in _yaml(listed, f"{chart} artifacthub.io/images") or []:
            if isinstance(item, dict) and item.get("image"):
                found.append(
                    (str(item["image"]), f"chart {chart} Chart.yaml artifacthub.io/images")
                )
    for ref, where in _image_blocks(values or {}, "", app_version):
        found.append((ref, f"chart {chart} values.yaml {where}"))
    return found
