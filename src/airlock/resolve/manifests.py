"""Images named in Kubernetes manifests: every container and initContainer (pure)."""

from __future__ import annotations

from io import StringIO
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from airlock.errors import UsageError

__all__ = ["ManifestImage", "images_in_manifest"]

ManifestImage = tuple[str, str]  # (image, where: "DaemonSet kube-system/x initContainers[y]")


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get(
            "spec"
        )
    template = spec.get("template") if isinstance(spec, dict) else None
    return template.get("spec") if isinstance(template, dict) else None


def images_in_manifest(text: str, *, source: str) -> list[ManifestImage]:
    """Every `image:` of every container, initContainer and ephemeralContainer, in order."""
    yaml = YAML(typ="safe")
    try:
        docs = [d for d in yaml.load_all(StringIO(text)) if isinstance(d, dict)]
    except YAMLError as exc:
        raise UsageError(f"{source} is not valid YAML: {exc}") from None
    found: list[ManifestImage] = []
    for doc in docs:
        if doc.get("kind") == "List":
            docs.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
            continue
        pod = _pod_spec(doc)
        if not isinstance(pod, dict):
            continue
        meta = doc.get("metadata") or {}
        owner = f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        for group in ("initContainers", "containers", "ephemeralContainers"):
            for c in pod.get(group) or []:
                if isinstance(c, dict) and c.get("image"):
                    found.append(
                        (str(c["image"]), f"{source}: {owner} {group}[{c.get('name', '?')}]")
                    )
    return found
