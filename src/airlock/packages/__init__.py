"""OS packages: carry the exact dependency closure a target needs, resolved with libsolv.

`repos` fetches and verifies repository metadata (Debian Release/Packages, rpm-md
repomd/primary, GPG via gpgv); `debian` and `rpm` run libsolv; `closure` ties them together.
"""

from __future__ import annotations

from airlock.packages.closure import (
    Checksum,
    Closure,
    Installed,
    InstalledPackage,
    PackageFile,
    PackageNotFound,
    UnsatisfiableDependencies,
    closure_downloads,
    closure_file_requests,
    closure_to_plan_rows,
    load_repositories,
    package_format,
    resolve_closure,
    verify_package_file,
)
from airlock.packages.repos import RepoMetadata, SignatureError

__all__ = [
    "Checksum",
    "Closure",
    "Installed",
    "InstalledPackage",
    "PackageFile",
    "PackageNotFound",
    "RepoMetadata",
    "SignatureError",
    "UnsatisfiableDependencies",
    "closure_downloads",
    "closure_file_requests",
    "closure_to_plan_rows",
    "load_repositories",
    "package_format",
    "resolve_closure",
    "verify_package_file",
]
