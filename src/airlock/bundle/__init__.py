"""The bundle format v1: write, read in place, verify, sign, split, inspect (see layout.py)."""

from __future__ import annotations

from airlock.bundle.inspect import BundleSummary, FileSummary, ImageSummary, inspect_bundle
from airlock.bundle.manifest import BundleManifest, parse_manifest
from airlock.bundle.reader import BundleReader, Member, bundle_paths, open_bundle
from airlock.bundle.signing import generate_keypair, key_id, sign, verify_signature
from airlock.bundle.verify import BundleVerificationError, VerifyReport, verify_bundle
from airlock.bundle.volumes import Span
from airlock.bundle.writer import BundleContent, WriteResult, write_bundle

__all__ = [
    "BundleContent",
    "BundleManifest",
    "BundleReader",
    "BundleSummary",
    "BundleVerificationError",
    "FileSummary",
    "ImageSummary",
    "Member",
    "Span",
    "VerifyReport",
    "WriteResult",
    "bundle_paths",
    "generate_keypair",
    "inspect_bundle",
    "key_id",
    "open_bundle",
    "parse_manifest",
    "sign",
    "verify_bundle",
    "verify_signature",
    "write_bundle",
]
