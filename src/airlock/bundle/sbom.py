"""The bundle's SBOM: CycloneDX 1.6 JSON listing every image and every file it carries.

Images are `container` components with a `pkg:oci/<name>@<digest>?repository_url=...&tag=...`
purl; files are `file` components with their version, hashes and a `distribution` external
reference to the upstream URL. The output is deterministic: bom-refs are derived from names
and digests, the serial number is a UUIDv5 of the content, there is no timestamp, and the JSON
is re-serialized canonically (sorted keys), so the same content gives the same bytes.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airlock.content import FileArtifact, ImageArtifact
from airlock.oci.digest import digest_hex, sha256_digest
from airlock.oci.layout import canonical_json
from airlock.oci.ref import parse_reference

if TYPE_CHECKING:  # the library costs ~0.15 s to import: only a write that builds an SBOM pays
    from cyclonedx.model.component import Component

__all__ = ["SBOM_NAMESPACE", "build_sbom"]

# Namespace of the content-derived serial numbers (a fixed, arbitrary UUID).
SBOM_NAMESPACE = uuid.UUID("8f0c7a4e-5a7b-4c52-9a53-2c1f7d3f7a10")


def _image_component(image: ImageArtifact) -> Component:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    ref = parse_reference(image.reference)
    qualifiers = {"repository_url": ref.name}
    if ref.tag:
        qualifiers["tag"] = ref.tag
    purl = PackageURL(
        type="oci",
        name=ref.repository.rsplit("/", 1)[-1],
        version=image.digest,
        qualifiers=qualifiers,
    )
    props = [Property(name="airlock:mediaType", value=image.media_type)]
    props += [Property(name="airlock:platform", value=p) for p in sorted(image.platforms)]
    return Component(
        name=ref.name,
        version=ref.tag or image.digest,
        type=ComponentType.CONTAINER,
        bom_ref=f"image:{image.reference}@{image.digest}",
        purl=purl,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest_hex(image.digest))],
        properties=props,
    )


def _file_component(f: FileArtifact) -> Component:
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.component import Component, ComponentType

    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=digest_hex(f.digest))]
    if f.checksum is not None and f.checksum.algorithm == "sha512":
        hashes.append(HashType(alg=HashAlgorithm.SHA_512, content=f.checksum.value))
    props = [Property(name="airlock:kind", value=f.kind)]
    if f.platform:
        props.append(Property(name="airlock:platform", value=f.platform))
    if f.checksum is not None:
        props.append(Property(name="airlock:checksumSource", value=f.checksum.source))
    refs = [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(f.url))]
    return Component(
        name=f.name,
        version=f.version or None,
        type=ComponentType.FILE,
        bom_ref=f"file:{f.name}@{f.digest}",
        hashes=hashes,
        external_references=refs if f.url else [],
        properties=props,
    )


def build_sbom(
    *,
    bundle_name: str,
    tool_version: str,
    images: Sequence[ImageArtifact],
    files: Sequence[FileArtifact],
) -> bytes:
    """CycloneDX JSON bytes for these images and files (same inputs, same bytes)."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    identity = canonical_json(
        {
            "bundle": bundle_name,
            "images": sorted([i.reference, i.digest] for i in images),
            "files": sorted([f.name, f.digest, f.url] for f in files),
            "tool": tool_version,
        }
    )
    bom = Bom(serial_number=uuid.uuid5(SBOM_NAMESPACE, sha256_digest(identity)))
    bom.metadata.timestamp = None  # type: ignore[assignment]  # determinism: no wall-clock time in the bundle
    root = Component(
        name=bundle_name, type=ComponentType.APPLICATION, bom_ref=f"bundle:{bundle_name}"
    )
    bom.metadata.component = root
    bom.metadata.tools.components.add(
        Component(name="airlock", version=tool_version, type=ComponentType.APPLICATION)
    )
    components = [_image_component(i) for i in images] + [_file_component(f) for f in files]
    for c in components:
        bom.components.add(c)
    bom.register_dependency(root, components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about incomplete graphs
        text = JsonV1Dot6(bom).output_as_string()
    return canonical_json(json.loads(text))
