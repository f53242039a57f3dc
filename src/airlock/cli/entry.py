"""The `airlock` console script: start what needs no library (airlock.earlyhash), then the CLI."""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    from airlock import earlyhash

    earlyhash.start(sys.argv[1:])  # before typer, rich, pydantic and cryptography are imported
    from airlock.cli.main import run as main

    main()
