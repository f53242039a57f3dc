"""Render a Plan: a table per kind on a terminal, a list of objects with --json."""

from __future__ import annotations

from airlock.cli.output import state
from airlock.cli.sizes import format_size
from airlock.resolve.model import Plan

__all__ = ["render_plan"]


def _size(n: int | None) -> str:
    return format_size(n) if n is not None else "?"


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "?"


def render_plan(plan: Plan) -> None:
    def text() -> None:
        files = [a for a in plan.files() if a.kind != "package"]
        state.table(
            ["kind", "name", "version", "platform", "size", "sha256", "source"],
            [
                (a.kind, a.name, a.version, a.platform, _size(a.size), _short(a.digest), a.source)
                for a in files
            ],
            title=f"files ({len(files)})",
        )
        images = plan.images()
        state.table(
            ["image", "size", "digest", "found in"],
            [(a.source, _size(a.size), _short(a.digest), "; ".join(a.found_in)) for a in images],
            title=f"images ({len(images)}); kubeadm list from: {plan.image_list_source}",
        )
        if plan.wheelhouse:
            state.table(
                ["wheelhouse", "adds"],
                [(label, _size(n)) for label, n in plan.wheelhouse.items()],
                title="airlock's wheelhouse (the offline side's airlock), per target",
            )
        if plan.total_size is not None:
            state.line(
                f"bundle total: {format_size(plan.total_size)} ({plan.total_size} bytes, each "
                "blob once)"
                + (f"; {plan.unknown_sizes} size(s) unknown" if plan.unknown_sizes else "")
            )
        packages = [a for a in plan.artifacts if a.kind == "package"]
        if packages:
            state.line(
                f"OS packages ({packages[0].source}): " + ", ".join(a.name for a in packages)
            )
        for w in plan.warnings:
            state.warn(w)

    if state.json:
        state.emit(
            {
                **plan.to_json(),
                "wheelhouse": [{"name": label, "size": n} for label, n in plan.wheelhouse.items()],
            }
        )
    else:
        text()
