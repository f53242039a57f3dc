"""`python -m airlock`: the same as the `airlock` command."""

from airlock.cli.entry import run

run()
