"""The `airlock` console script: start what needs no library (airlock.earlyhash), answer a
verify whose every check passes (airlock.earlyverify) and a create with nothing changed from its
record (airlock.replay), else the CLI."""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    from airlock import earlyhash

    earlyhash.start(sys.argv[1:])  # before typer, rich, pydantic and cryptography are imported
    from airlock import earlyverify

    if earlyverify.answer(sys.argv[1:]):  # a verify that passes: the handle's rules, held here
        return
    from airlock import replay

    if replay.fast_create(sys.argv[1:]):  # a create with nothing changed: its record holds
        return
    from airlock.cli.main import run as main

    main()
