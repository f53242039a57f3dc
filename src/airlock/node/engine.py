"""The plan/apply engine for host changes: check every resource, then apply what changed.

A resource reads the current state, computes the desired state in memory and compares
(`check -> Change`); `changed` is a fact, not a guess. `plan` checks every resource in order
(later resources may depend on what earlier ones will change, e.g. a service restarts when its
unit file changes); `apply` first proves that every file the plan writes is writable, then
applies the changed resources in order. A second plan after an apply is empty.

With `root != /` (a sysroot), files go under the sysroot and live actions on the running
machine (sysctl -w, modprobe, systemctl, swapoff, firewall reloads) are recorded in the result
instead of run; `Context(live=True)` runs them (the default when root is `/`).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock import system
from airlock.errors import NodeError
from airlock.progress import ProgressSink, report_done, report_start

__all__ = [
    "Action",
    "ApplyResult",
    "Change",
    "Context",
    "Plan",
    "PlanItem",
    "Resource",
    "apply",
    "plan",
    "probe_writable",
]


@dataclass(frozen=True)
class Change:
    """What a resource would change: `diff` for files, `msg` one line for everything else."""

    changed: bool
    diff: str = ""
    msg: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    """A live action on the running machine: run (live) or only recorded (sysroot)."""

    argv: tuple[str, ...]
    ran: bool

    def __str__(self) -> str:
        return " ".join(self.argv)


def probe_writable(path: Path) -> str | None:
    """Why `path` cannot be replaced atomically (None when it can).

    Root ignores permission bits, so `os.access` proves nothing; a read-only mount or an
    immutable file only shows when one really tries: a temp file in the nearest existing
    directory, and opening an existing target for writing (without truncating it).
    """
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".airlock-probe-", dir=parent)
        os.close(fd)
        os.unlink(tmp)
        if path.is_file() and not path.is_symlink():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        return os.strerror(exc.errno or errno.EACCES)
    return None


@dataclass
class Context:
    """Where and how resources act.

    `root` is the sysroot (`/` for the machine itself); `live` runs live actions (default: only
    when root is `/`); `dry_run` plans without applying. `writable` is the writability probe
    (tests inject one to simulate read-only files without a read-only mount).
    """

    root: Path = Path("/")
    dry_run: bool = False
    live: bool | None = None
    writable: Callable[[Path], str | None] = probe_writable
    actions: list[Action] = field(default_factory=list)
    # Filled while planning: on-node paths some resource will change in this run.
    pending_paths: set[str] = field(default_factory=set)
    # told of each change as it is applied (amounts count changes, not bytes)
    progress: ProgressSink | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.live is None:
            self.live = self.root == Path("/")

    @property
    def is_sysroot(self) -> bool:
        return self.root != Path("/")

    def path(self, node_path: str) -> Path:
        """The host path of an on-node absolute path (under the sysroot)."""
        return system.host_path(node_path, self.root)

    def run_live(self, argv: Sequence[str], *, check: bool = True) -> system.CommandResult | None:
        """Run a live action (or record it when not live); returns the result when it ran."""
        if self.live:
            result = system.run(list(argv), check=check)
            self.actions.append(Action(tuple(argv), ran=True))
            return result
        self.actions.append(Action(tuple(argv), ran=False))
        return None


class Resource:
    """A piece of desired host state. Subclasses set `kind` and implement check/apply."""

    kind = "resource"

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    def check(self, ctx: Context) -> Change:
        raise NotImplementedError

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError

    def writes(self) -> list[str]:
        """On-node paths apply may create, replace or remove (checked for writability first)."""
        return []


@dataclass(frozen=True)
class PlanItem:
    resource: Resource
    change: Change

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource.id,
            "kind": self.resource.kind,
            "changed": self.change.changed,
            "msg": self.change.msg,
            "diff": self.change.diff,
            "warnings": list(self.change.warnings),
        }


@dataclass(frozen=True)
class Plan:
    root: Path
    items: tuple[PlanItem, ...]
    # On-node paths the changes write: a service restarts when a unit it uses is among them.
    pending: frozenset[str] = frozenset()

    @property
    def changes(self) -> list[PlanItem]:
        return [i for i in self.items if i.change.changed]

    @property
    def warnings(self) -> list[str]:
        return [w for i in self.items for w in i.change.warnings]

    @property
    def empty(self) -> bool:
        return not self.changes

    def render(self) -> str:
        """The plan as text: per change one `~ id: msg` line, then the unified diff if any."""
        lines: list[str] = []
        for item in self.changes:
            lines.append(f"~ {item.resource.id}: {item.change.msg}".rstrip(": "))
            if item.change.diff:
                lines.append(item.change.diff.rstrip("\n"))
        lines.extend(f"! warning: {w}" for w in self.warnings)
        n = len(self.changes)
        lines.append(f"{n} change{'s' if n != 1 else ''}" if n else "no changes")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "changes": [i.to_json() for i in self.changes],
            "unchanged": [i.resource.id for i in self.items if not i.change.changed],
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class ApplyResult:
    changed: tuple[str, ...]
    actions: tuple[Action, ...]
    warnings: tuple[str, ...]
    dry_run: bool

    @property
    def recorded(self) -> list[str]:
        """Live actions that were only recorded (sysroot), to run on the real node."""
        return [str(a) for a in self.actions if not a.ran]

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": list(self.changed),
            "actions": [{"argv": list(a.argv), "ran": a.ran} for a in self.actions],
            "warnings": list(self.warnings),
            "dry_run": self.dry_run,
        }


def plan(resources: Sequence[Resource], ctx: Context) -> Plan:
    """Check every resource in order; nothing on the host changes."""
    ids = [r.id for r in resources]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise NodeError(f"the plan lists a resource twice: {', '.join(dupes)}")
    ctx.pending_paths.clear()
    items = []
    for resource in resources:
        change = resource.check(ctx)
        if change.changed:
            ctx.pending_paths.update(resource.writes())
        items.append(PlanItem(resource, change))
    return Plan(ctx.root, tuple(items), frozenset(ctx.pending_paths))


def apply(the_plan: Plan, ctx: Context) -> ApplyResult:
    """Apply the changed resources; refuses before writing anything if a file is read-only."""
    if Path(the_plan.root) != ctx.root:
        raise NodeError(f"the plan was made for {the_plan.root}, not {ctx.root}")
    changes = the_plan.changes
    if ctx.dry_run:
        return ApplyResult((), (), tuple(the_plan.warnings), dry_run=True)
    problems = []
    for item in changes:
        for node_path in item.resource.writes():
            reason = ctx.writable(ctx.path(node_path))
            if reason:
                problems.append(f"{node_path}: {reason}")
    if problems:
        raise NodeError(
            "cannot apply the plan, nothing was changed; not writable: " + "; ".join(problems),
            "remount read-write (or clear the immutable flag: chattr -i) and run it again",
        )
    ctx.pending_paths = set(the_plan.pending)
    start = len(ctx.actions)
    done: list[str] = []
    label = "apply changes"
    report_start(ctx.progress, label, len(changes))
    for item in changes:
        try:
            item.resource.apply(ctx)
        except OSError as exc:
            raise NodeError(
                f"{item.resource.id}: {exc.strerror or exc} "
                f"({exc.filename or ctx.root}); applied before it: {len(done)} of {len(changes)}",
                "fix the cause and run it again: the plan converges from where it stopped",
            ) from exc
        done.append(item.resource.id)
        if ctx.progress is not None:
            ctx.progress.advance(label, 1)
    report_done(ctx.progress, label)
    return ApplyResult(
        tuple(done), tuple(ctx.actions[start:]), tuple(the_plan.warnings), dry_run=False
    )


def plan_json(the_plan: Plan) -> str:
    return json.dumps(the_plan.to_json(), indent=2, sort_keys=True) + "\n"


__all__ += ["plan_json"]


def plan_and_apply(resources: Sequence[Resource], ctx: Context) -> tuple[Plan, ApplyResult]:
    """What `airlock node prepare|install` does: plan, then apply unless `ctx.dry_run`."""
    the_plan = plan(resources, ctx)
    return the_plan, apply(the_plan, ctx)


__all__ += ["plan_and_apply"]
