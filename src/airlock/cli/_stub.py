"""Commands a later issue fills in: they say so and change nothing."""

from __future__ import annotations

from typing import NoReturn

from airlock.errors import NotImplementedYet

__all__ = ["not_yet"]


def not_yet(command: str, issue: str) -> NoReturn:
    raise NotImplementedYet(command, issue)
