"""Render a Plan: a table per kind on a terminal, a list of objects with --json."""

from __future__ import annotations

from airlock.cli.output import state
from airlock.resolve.model import Plan

__all__ = ["render_plan"]


def render_plan(plan: Plan) -> None:
    def text() -> None:
        files = [a for a in plan.files() if a.kind != "package"]
        state.table(
            ["kind", "name", "version", "platform", "source"],
            [(a.kind, a.name, a.version, a.platform, a.source) for a in files],
            title=f"files ({len(files)})",
        )
        images = plan.images()
        state.table(
            ["image", "found in"],
            [(a.source, "; ".join(a.found_in)) for a in images],
            title=f"images ({len(images)}); kubeadm list from: {plan.image_list_source}",
        )
        packages = [a for a in plan.artifacts if a.kind == "package"]
        if packages:
            state.line(
                f"OS packages ({packages[0].source}): " + ", ".join(a.name for a in packages)
            )
        for w in plan.warnings:
            state.warn(w)

    if state.json:
        state.emit([a.to_json() for a in plan.artifacts])
    else:
        text()
