"""The registry's index.json bookkeeping (`oci/repo_index.py`) against a plain model: after any
sequence of tag pushes, digest pushes, tag deletes and manifest deletes, each repository's tags
and manifests are what the model says, and no entry is duplicated."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from airlock.oci.layout import image_descriptor
from airlock.oci.media import OCI_MANIFEST
from airlock.oci.repo_index import digest_entry, with_digest_entry, without_manifest, without_tag
from airlock.oci.sources import entry_repository

REPOS = ["app", "team/app"]
DIGESTS = [f"sha256:{c * 64}" for c in "abc"]
TAGS = ["v1", "v2", "latest"]

_op = st.one_of(
    st.tuples(
        st.just("tag"), st.sampled_from(REPOS), st.sampled_from(TAGS), st.sampled_from(DIGESTS)
    ),
    st.tuples(st.just("push"), st.sampled_from(REPOS), st.just(""), st.sampled_from(DIGESTS)),
    st.tuples(st.just("untag"), st.sampled_from(REPOS), st.sampled_from(TAGS), st.just("")),
    st.tuples(st.just("delete"), st.sampled_from(REPOS), st.just(""), st.sampled_from(DIGESTS)),
)


def _merge_tag(
    entries: list[dict[str, Any]], repo: str, tag: str, digest: str
) -> list[dict[str, Any]]:
    """What a tag push does (layout.merge_index keyed by ref name)."""
    desc = image_descriptor(f"{repo}:{tag}", OCI_MANIFEST, digest, 10)
    return [e for e in entries if entry_repository(e) != (repo, tag)] + [desc]


@given(st.lists(_op, max_size=30))
@example(  # a tag moved by a push, then the manifest it left is deleted (found by hypothesis)
    [
        ("tag", "app", "v1", DIGESTS[0]),
        ("tag", "app", "v1", DIGESTS[1]),
        ("delete", "app", "", DIGESTS[0]),
    ]
)
def test_repo_index_matches_a_model(ops: list[tuple[str, str, str, str]]) -> None:
    entries: list[dict[str, Any]] = []
    tags: dict[tuple[str, str], str] = {}  # (repo, tag) -> digest
    manifests: set[tuple[str, str]] = set()  # (repo, digest)
    for kind, repo, tag, digest in ops:
        if kind == "tag":
            entries = _merge_tag(entries, repo, tag, digest)
            tags[(repo, tag)] = digest
            manifests.add((repo, digest))
        elif kind == "push":
            new = with_digest_entry(entries, digest_entry(repo, OCI_MANIFEST, digest, 10))
            entries = new if new is not None else entries
            manifests.add((repo, digest))
        elif kind == "untag":
            new = without_tag(entries, repo, tag)
            assert (new is not None) == ((repo, tag) in tags)
            entries = new if new is not None else entries
            tags.pop((repo, tag), None)  # the manifest stays, by digest
        else:
            new = without_manifest(entries, repo, digest)
            # a manifest whose only tag a push moved has left already (the model keeps it as
            # an upper bound): deleting it then finds nothing, never something the model lacks
            assert new is None or (repo, digest) in manifests
            entries = new if new is not None else entries
            manifests.discard((repo, digest))
            tags = {k: v for k, v in tags.items() if not (k[0] == repo and v == digest)}
    seen_tags = {
        (owner[0], owner[1]): e["digest"]
        for e in entries
        if (owner := entry_repository(e)) is not None and owner[1] is not None
    }
    seen_manifests = {
        (owner[0], e["digest"]) for e in entries if (owner := entry_repository(e)) is not None
    }
    # re-pointing a tag by a push drops the old manifest from the repository unless another
    # entry keeps it (gc then reclaims it): the store holds at most what the model says
    assert seen_tags == tags
    assert seen_manifests <= manifests
    assert {(r, d) for (r, _), d in tags.items()} <= seen_manifests
    # one digest-only entry per repository and manifest at most
    untagged = [
        (owner[0], e["digest"])
        for e in entries
        if (owner := entry_repository(e)) is not None and owner[1] is None
    ]
    assert len(untagged) == len(set(untagged))
