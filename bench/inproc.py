"""One airlock core call in a fresh process, reported as JSON on stdout (bench/run.py runs it).

The benchmark times the process from outside (what a user waits for) and this reports the time
of the call itself (without interpreter start and imports) and the process's peak RSS, so both
numbers come from the same run.

    python bench/inproc.py create SPEC --cache DIR --out DIR [--wheelhouse] [--sign KEY]
    python bench/inproc.py verify BUNDLE --key PUB
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _create(args: argparse.Namespace) -> dict[str, Any]:
    from airlock.spec import load_spec
    from airlock.verbs.create import CreateOptions, create_bundle

    spec = load_spec(args.spec)
    t0 = time.perf_counter()
    result = create_bundle(
        spec,
        options=CreateOptions(
            output=args.out, cache=args.cache, wheelhouse=args.wheelhouse, sign_key=args.sign
        ),
    )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "path": str(result.write.path),
        "size": result.write.size,
        "uniqueBlobBytes": result.write.unique_blob_bytes,
        "bytesDownloaded": result.bytes_downloaded,
        "filesFromCache": result.files_from_cache,
        "files": len(result.files),
        "images": len(result.images),
    }


def _verify(args: argparse.Namespace) -> dict[str, Any]:
    from airlock.bundle.verify import verify_bundle
    from airlock.trust import TrustPolicy

    t0 = time.perf_counter()
    report = verify_bundle(args.bundle, trust=TrustPolicy((args.key,)))
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "ok": report.ok,
        "bytesChecked": report.bytes_checked,
        "blobsChecked": report.blobs_checked,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    create = sub.add_parser("create")
    create.add_argument("spec", type=Path)
    create.add_argument("--cache", type=Path, required=True)
    create.add_argument("--out", type=Path, required=True)
    create.add_argument("--sign", type=Path)
    create.add_argument("--wheelhouse", action="store_true")
    verify = sub.add_parser("verify")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--key", type=Path, required=True)
    args = parser.parse_args()
    data = _create(args) if args.verb == "create" else _verify(args)
    data["maxRssKiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump(data, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
