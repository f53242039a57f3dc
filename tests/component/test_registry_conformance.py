"""The same requests against airlock's registry and Debian's docker-registry (distribution 2.8).

Both serve the same images: docker-registry is filled by `skopeo copy --all --preserve-digests`
from airlock's registry (skopeo's `oci:` transport skips Docker-typed manifests in a layout). Each case compares status, error code, Docker-Content-Digest,
Content-Type, Content-Length and Content-Range. Deliberate differences are listed in
`DIFFERENCES` with both answers and the reason; they are asserted too, so a change on either
side shows up here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from test_registry_server import (
    ACCEPT,
    APISERVER,
    FLANNEL,
    PAUSE,
    PUSH,
    Content,
    DockerRegistry,
    Reply,
    ServerThread,
    build_store,
    docker_registry,
    request,
    running,
    skopeo,
)

from airlock.oci.digest import sha256_digest
from airlock.oci.layout import OciLayout
from airlock.oci.media import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from airlock.oci.sources import StoreSource

pytestmark = pytest.mark.component

UNKNOWN_UPLOAD = "00000000-0000-4000-8000-000000000000"
COMPARED = ("docker-content-digest", "content-type", "content-length", "content-range", "link")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


# name -> ((our status, our code), (distribution's status, its code), why)
DIFFERENCES: dict[str, tuple[tuple[int, str | None], tuple[int, str | None], str]] = {
    "manifest oci index, no Accept": (
        (200, None),
        (404, "MANIFEST_UNKNOWN"),
        "distribution 2.8 hides OCI content from clients that do not list the OCI types; "
        "airlock serves the stored manifest as it is (no conversion exists to offer anyway)",
    ),
    "manifest oci image, no Accept": (
        (200, None),
        (404, "MANIFEST_UNKNOWN"),
        "same as above, for an OCI image manifest",
    ),
    "manifest by malformed digest": (
        (404, "MANIFEST_UNKNOWN"),
        (500, "UNKNOWN"),
        "distribution treats `sha256:abc` as a tag and fails on the path; a reference that "
        "does not resolve is unknown (the OCI conformance suite expects 404)",
    ),
    "manifest by invalid tag": (
        (404, "MANIFEST_UNKNOWN"),
        (404, None),
        "distribution's router does not match the route and answers a text 404; airlock "
        "answers the same status with the spec's JSON error",
    ),
    "uppercase repository": (
        (400, "NAME_INVALID"),
        (404, None),
        "the spec's NAME_INVALID instead of the router's text 404",
    ),
    "dot-dot in repository": (
        (400, "NAME_INVALID"),
        (301, None),
        "Go's mux redirects to the cleaned path; airlock refuses path tricks outright",
    ),
    "empty repository component": (
        (400, "NAME_INVALID"),
        (301, None),
        "as above, for `//`",
    ),
    "unknown endpoint": (
        (404, "NOT_FOUND"),
        (404, None),
        "same status; airlock's body is a JSON error rather than text",
    ),
    "range several parts": (
        (200, None),
        (206, None),
        "airlock ignores multi-range requests (allowed by RFC 9110) instead of multipart bodies",
    ),
    "range other unit": (
        (200, None),
        (416, None),
        "RFC 9110: a server MUST ignore a Range with a unit it does not know; Go answers 416",
    ),
    "range suffix zero": (
        (416, "RANGE_INVALID"),
        (206, None),
        "`bytes=-0` is unsatisfiable; Go answers an empty 206 with a bogus Content-Range",
    ),
    "range beyond end": (
        (416, "RANGE_INVALID"),
        (416, None),
        "same status and Content-Range; airlock adds the JSON error body",
    ),
    "range reversed": (
        (416, "RANGE_INVALID"),
        (416, None),
        "same status; airlock adds the JSON error body",
    ),
    "tags list n=1": (
        (200, None),
        (200, None),
        "distribution 2.8 ignores `n` on tags/list; airlock paginates as the OCI spec says",
    ),
    "upload unknown": (
        (404, "BLOB_UPLOAD_UNKNOWN"),
        (404, "BLOB_UPLOAD_INVALID"),
        "distribution first misses its `_state` token (it signs upload state into the "
        "Location URL); airlock keeps upload state server-side and says the upload is unknown",
    ),
    "monolithic POST with digest": (
        (201, None),
        (202, None),
        "distribution 2.8 ignores `?digest=` on POST and opens an upload; airlock completes "
        "the single-request upload the OCI spec describes",
    ),
}


def _cases(c: Content) -> list[Case]:
    pause, api, flannel = c.images["pause"], c.images["apiserver"], c.images["flannel"]
    acc = {"Accept": ACCEPT}
    big = c.big_layer
    blob = f"/v2/{APISERVER}/blobs/{big}"
    cases = [
        Case("base", "GET", "/v2/"),
        Case("base without slash", "GET", "/v2"),
        Case("catalog", "GET", "/v2/_catalog"),
        Case("catalog n=1", "GET", "/v2/_catalog?n=1"),
        Case("catalog n=1 last", "GET", f"/v2/_catalog?n=1&last={FLANNEL}"),
        Case("catalog bad n", "GET", "/v2/_catalog?n=x"),
        Case("tags list", "GET", f"/v2/{PAUSE}/tags/list"),
        Case("tags list n=1", "GET", f"/v2/{PAUSE}/tags/list?n=1"),
        Case("tags unknown repo", "GET", "/v2/registry.k8s.io/nope/tags/list"),
        Case("manifest oci index, no Accept", "GET", f"/v2/{PAUSE}/manifests/3.9"),
        Case("manifest oci image, no Accept", "GET", f"/v2/{APISERVER}/manifests/v1.27.3"),
        Case("manifest child by digest", "GET", f"/v2/{PAUSE}/manifests/{pause.children[0]}", acc),
        Case(
            "manifest child in other repo",
            "GET",
            f"/v2/{FLANNEL}/manifests/{pause.children[0]}",
            acc,
        ),
        Case("manifest unknown tag", "GET", f"/v2/{PAUSE}/manifests/nope", acc),
        Case("manifest unknown repo", "GET", "/v2/registry.k8s.io/nope/manifests/3.9", acc),
        Case(
            "manifest unknown repo by digest",
            "GET",
            f"/v2/registry.k8s.io/nope/manifests/{pause.digest}",
            acc,
        ),
        Case("manifest unknown digest", "GET", f"/v2/{PAUSE}/manifests/sha256:{'a' * 64}", acc),
        Case("manifest by malformed digest", "GET", f"/v2/{PAUSE}/manifests/sha256:abc", acc),
        Case("manifest by invalid tag", "GET", f"/v2/{PAUSE}/manifests/bad~tag", acc),
        Case("uppercase repository", "GET", "/v2/registry.k8s.io/Pause/manifests/3.9", acc),
        Case("dot-dot in repository", "GET", "/v2/registry.k8s.io/../pause/manifests/3.9", acc),
        Case("empty repository component", "GET", "/v2/registry.k8s.io//pause/manifests/3.9", acc),
        Case("unknown endpoint", "GET", "/v2/nothing/here"),
        Case("blob layer", "GET", blob),
        Case("blob layer HEAD", "HEAD", blob),
        Case("blob config", "GET", f"/v2/{PAUSE}/blobs/{pause.blobs[0]}"),
        Case("blob not in this repo", "GET", f"/v2/{PAUSE}/blobs/{big}"),
        Case("blob unknown repo", "GET", f"/v2/registry.k8s.io/nope/blobs/{big}"),
        Case("blob unknown digest", "GET", f"/v2/{PAUSE}/blobs/sha256:{'a' * 64}"),
        Case("blob HEAD unknown digest", "HEAD", f"/v2/{PAUSE}/blobs/sha256:{'a' * 64}"),
        Case("blob is a manifest", "GET", f"/v2/{PAUSE}/blobs/{pause.digest}"),
        Case("blob malformed digest", "GET", f"/v2/{PAUSE}/blobs/sha256:abc"),
        Case("blob other algorithm", "GET", f"/v2/{PAUSE}/blobs/md5:abc"),
        Case("range first bytes", "GET", blob, {"Range": "bytes=0-9"}),
        Case("range open end", "GET", blob, {"Range": "bytes=1000-"}),
        Case("range suffix", "GET", blob, {"Range": "bytes=-5"}),
        Case("range past end clipped", "GET", blob, {"Range": "bytes=5-999999999"}),
        Case("range beyond end", "GET", blob, {"Range": "bytes=999999999-"}),
        Case("range reversed", "GET", blob, {"Range": "bytes=9-5"}),
        Case("range suffix zero", "GET", blob, {"Range": "bytes=-0"}),
        Case("range several parts", "GET", blob, {"Range": "bytes=0-1,5-6"}),
        Case("range other unit", "GET", blob, {"Range": "items=0-5"}),
        Case("delete manifest", "DELETE", f"/v2/{APISERVER}/manifests/{api.digest}"),
        Case("delete blob", "DELETE", blob),
        Case("upload start", "POST", f"/v2/{APISERVER}/blobs/uploads/"),
        Case("upload unknown", "GET", f"/v2/{PAUSE}/blobs/uploads/{UNKNOWN_UPLOAD}"),
        Case("upload malformed id", "GET", f"/v2/{PAUSE}/blobs/uploads/0123"),
        Case("upload PATCH without id", "PATCH", f"/v2/{PAUSE}/blobs/uploads/"),
        Case(
            "manifest push not json",
            "PUT",
            "/v2/newrepo/manifests/t1",
            {"Content-Type": OCI_MANIFEST},
            b"{not json",
        ),
        Case(
            "manifest push missing blob",
            "PUT",
            "/v2/newrepo/manifests/t1",
            {"Content-Type": OCI_MANIFEST},
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "d" * 64, "size": 2},
                    "layers": [],
                }
            ).encode(),
        ),
        Case(
            "monolithic POST with digest",
            "POST",
            f"/v2/newrepo/blobs/uploads/?digest={sha256_digest(b'mono')}",
            {},
            b"mono",
        ),
    ]
    for img in (pause, api, flannel):
        repo, tag = img.ref.rsplit(":", 1)
        for method in ("GET", "HEAD"):
            cases.append(
                Case(f"manifest {method} {img.ref}", method, f"/v2/{repo}/manifests/{tag}", acc)
            )
            cases.append(
                Case(
                    f"manifest {method} {img.ref} by digest",
                    method,
                    f"/v2/{repo}/manifests/{img.digest}",
                    acc,
                )
            )
    return cases


@dataclass
class Pair:
    content: Content
    ours: ServerThread
    theirs: DockerRegistry


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("conformance")
    content = build_store(tmp / "store")
    with (
        running(StoreSource(OciLayout(content.root)), options=PUSH) as ours,
        docker_registry(tmp / "dr") as theirs,
    ):
        for img in content.images.values():
            skopeo(
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://127.0.0.1:{ours.port}/{img.ref}",
                f"docker://127.0.0.1:{theirs.port}/{img.ref}",
            )
        yield Pair(content, ours, theirs)


def _summary(reply: Reply) -> dict[str, str | int | None]:
    out: dict[str, str | int | None] = {"status": reply.status, "code": reply.code}
    if reply.status < 300:
        for key in COMPARED:
            out[key] = reply.headers.get(key)
        if (reply.headers.get("content-type") or "").startswith("application/json"):
            # same document; spacing and the trailing newline differ
            out["body"] = json.dumps(json.loads(reply.body), sort_keys=True)
            out.pop("content-length")
        elif reply.status in (200, 206):
            out["body sha256"] = sha256_digest(reply.body)
    return out


def test_same_answers_as_docker_registry(pair: Pair) -> None:
    mismatches: list[str] = []
    for case in _cases(pair.content):
        ours = request(pair.ours.port, case.method, case.path, headers=case.headers, body=case.body)
        theirs = request(
            pair.theirs.port, case.method, case.path, headers=case.headers, body=case.body
        )
        if case.name in DIFFERENCES:
            want_ours, want_theirs, _why = DIFFERENCES[case.name]
            got = ((ours.status, ours.code), (theirs.status, theirs.code))
            if got != (want_ours, want_theirs):
                mismatches.append(
                    f"{case.name}: documented {want_ours} vs {want_theirs}, got {got}"
                )
            continue
        a, b = _summary(ours), _summary(theirs)
        if a != b:
            mismatches.append(f"{case.name}: ours {a}\n    distribution {b}")
    assert not mismatches, "\n".join(mismatches)


def _push_flow(port: int, repo: str) -> list[tuple[int, str | None, str | None]]:
    """Chunked upload, monolithic PUT upload, a wrong digest, a manifest by tag: the answers."""
    data = os.urandom(70_000)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    trail: list[tuple[int, str | None, str | None]] = []

    def note(r: Reply) -> Reply:
        trail.append((r.status, r.code, r.headers.get("docker-content-digest")))
        return r

    start = note(request(port, "POST", f"/v2/{repo}/blobs/uploads/"))
    loc = start.headers["location"]
    patch = note(
        request(port, "PATCH", loc, body=data[:30_000], headers={"Content-Range": "0-29999"})
    )
    loc = patch.headers["location"]
    trail.append((0, patch.headers.get("range"), None))
    sep = "&" if "?" in loc else "?"
    note(request(port, "PUT", f"{loc}{sep}digest={sha256_digest(data)}", body=data[30_000:]))
    start = note(request(port, "POST", f"/v2/{repo}/blobs/uploads/"))
    loc = start.headers["location"]
    sep = "&" if "?" in loc else "?"
    note(request(port, "PUT", f"{loc}{sep}digest={sha256_digest(config)}", body=config))
    start = note(request(port, "POST", f"/v2/{repo}/blobs/uploads/"))
    loc = start.headers["location"]
    sep = "&" if "?" in loc else "?"
    note(request(port, "PUT", f"{loc}{sep}digest={sha256_digest(b'nope')}", body=b"other"))
    note(request(port, "HEAD", f"/v2/{repo}/blobs/{sha256_digest(data)}"))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(data), "size": len(data)}
            ],
        }
    ).encode()
    headers = {"Content-Type": OCI_MANIFEST}
    note(
        request(
            port,
            "PUT",
            f"/v2/{repo}/manifests/{sha256_digest(b'x')}",
            body=manifest,
            headers=headers,
        )
    )
    note(request(port, "PUT", f"/v2/{repo}/manifests/v1", body=manifest, headers=headers))
    got = note(request(port, "GET", f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT}))
    trail.append((0, got.headers.get("content-type"), sha256_digest(got.body)))
    note(request(port, "GET", f"/v2/{repo}/blobs/{sha256_digest(data)}"))
    tags = request(port, "GET", f"/v2/{repo}/tags/list")
    trail.append((tags.status, json.dumps(tags.json(), sort_keys=True), None))
    return trail


def test_push_flow_same_as_docker_registry(pair: Pair) -> None:
    # Random bytes differ between the two runs, so compare shapes: status, code, and whether
    # the digest header was there; then that each side's digests are right for its own bytes.
    ours = _push_flow(pair.ours.port, "team/app")
    theirs = _push_flow(pair.theirs.port, "team/app")

    def shape(
        trail: list[tuple[int, str | None, str | None]],
    ) -> list[tuple[int, str | None, bool]]:
        return [(s, c, d is not None) for s, c, d in trail]

    assert shape(ours) == shape(theirs)
    # the manifest by tag carries the same config in both, so only the layer digest differs
    assert ours[-1] == (200, json.dumps({"name": "team/app", "tags": ["v1"]}, sort_keys=True), None)
