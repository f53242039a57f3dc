"""`airlock cluster reset`: undo `kubeadm init|join` on this node, keep airlock's store.

`kubeadm reset -f` removes what kubeadm wrote (/etc/kubernetes, etcd data) and says it leaves
the CNI configuration and iptables rules alone; airlock finishes the job: pods still running
(killed through containerd), the CNI's interfaces, the kubelet's cgroup root, the kernel
settings the kubelet changed (restored from init's record, see hoststate.py), /etc/cni/net.d,
/var/lib/cni, /var/lib/kubelet, and the iptables chains the cluster created (KUBE-* from
kube-proxy and the kubelet, FLANNEL* from Flannel; nothing else is touched). The rules are read
with iptables-save, those chains and every jump into them are dropped, and the rest is restored;
under a sysroot (tests, `--root`) that step is recorded, never run, because the host's firewall
is not the sysroot's. /var/lib/airlock/store (the images the next init pulls) is kept.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.cluster.hoststate import (
    DeleteLinks,
    RemoveCgroupRoot,
    RestoreKernelSettings,
    StopPods,
)
from airlock.cluster.runner import (
    CommandRunner,
    RemovePath,
    RunCommand,
    Step,
    StepContext,
    SystemRunner,
    execute_steps,
    render_steps,
)
from airlock.errors import NodeError
from airlock.system import host_path

__all__ = [
    "CHAIN_PREFIXES",
    "DEFAULT_LOG_DIR",
    "DEFAULT_STORE",
    "RESET_PATHS",
    "FlushChains",
    "ResetOptions",
    "ResetPlan",
    "ResetResult",
    "plan_reset",
    "reset_cluster",
    "reset_steps",
    "run_reset",
    "strip_chains",
]

DEFAULT_STORE = "/var/lib/airlock/store"
DEFAULT_LOG_DIR = "/var/log/airlock"
RESET_PATHS = ("/etc/cni/net.d", "/var/lib/cni", "/var/lib/kubelet")
CHAIN_PREFIXES = ("KUBE-", "FLANNEL")
# emptied, not removed: containerd's CNI config watcher loses a directory removed under it
# (the next init's node then never becomes Ready until containerd restarts)
WATCHED_PATHS = ("/etc/cni/net.d",)


def strip_chains(
    rules: str, *, prefixes: Sequence[str] = CHAIN_PREFIXES
) -> tuple[str, tuple[str, ...]]:
    """iptables-save text without the chains named by `prefixes` and every rule using them."""

    def ours(chain: str) -> bool:
        return chain.startswith(tuple(prefixes))

    removed: set[str] = set()
    kept: list[str] = []
    for line in rules.splitlines():
        if line.startswith(":"):
            chain = line[1:].split(" ", 1)[0]
            if ours(chain):
                removed.add(chain)
                continue
        elif line.startswith("-A "):
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            chain = words[1] if len(words) > 1 else ""
            targets = {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")}
            if ours(chain):
                removed.add(chain)
                continue
            if any(ours(t) for t in targets):
                continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else ""), tuple(sorted(removed))


@dataclass(frozen=True)
class FlushChains:
    prefixes: tuple[str, ...] = CHAIN_PREFIXES
    log_name: str = "reset-iptables.log"

    def _what(self) -> str:
        return ", ".join(f"{p}*" for p in self.prefixes)

    def describe(self) -> list[str]:
        return [
            f"flush iptables chains {self._what()}: iptables-save, drop those chains and the"
            " rules that jump to them, iptables-restore (recorded, not run, under a sysroot)"
        ]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = (
                f"iptables: flush {self._what()} (iptables-save | strip | iptables-restore)"
                f" recorded, not run: {ctx.root} is a sysroot"
            )
            ctx.recorded.append(note)
            return note
        log = ctx.log_dir / self.log_name
        saved = ctx.runner.run(["iptables-save"], log=None)
        if saved.returncode != 0:
            raise NodeError(
                f"iptables-save failed: {saved.stderr.strip()}",
                hint="flush the KUBE-* and FLANNEL* chains by hand, or reboot",
            )
        rules, chains = strip_chains(saved.stdout, prefixes=self.prefixes)
        if not chains:
            return "iptables: no KUBE-*/FLANNEL* chains"
        restored = ctx.runner.run(["iptables-restore"], log=log, input=rules)
        if restored.returncode != 0:
            raise NodeError(
                f"iptables-restore failed; see {log}",
                hint="the rules were left as they were; flush the chains by hand",
            )
        return f"iptables: removed {len(chains)} chain(s): {', '.join(chains)}"


@dataclass(frozen=True)
class ResetOptions:
    root: Path = Path("/")
    kubeadm: str = "kubeadm"
    log_dir: str = DEFAULT_LOG_DIR
    store: str = DEFAULT_STORE
    dry_run: bool = False
    cgroup_root: str | None = None  # the kubelet's (node.cgroupRoot for this node)


@dataclass(frozen=True)
class ResetPlan:
    steps: tuple[Step, ...]
    options: ResetOptions

    def render(self) -> str:
        head = [f"airlock cluster reset (root {self.options.root})"]
        tail = [f"keeps: {self.options.store}"]
        return "\n".join([*head, *render_steps(self.steps), *tail]) + "\n"


@dataclass(frozen=True)
class ResetResult:
    dry_run: bool
    plan_text: str
    steps_done: tuple[str, ...] = ()
    recorded: tuple[str, ...] = ()  # what a sysroot run recorded instead of running
    log_dir: str = ""
    message: str = ""


def reset_steps(
    *, kubeadm: str, log_dir: str, store: str, cgroup_root: str | None = None
) -> list[Step]:
    return [
        RunCommand(
            (kubeadm, "reset", "-f"),
            log_name="kubeadm-reset.log",
            purpose=f"output to {log_dir}/kubeadm-reset.log",
            failure_hint="look at the log; `kubeadm reset -f` can be run again safely",
        ),
        StopPods(),
        *(RemovePath(p, keep=(store,), contents_only=p in WATCHED_PATHS) for p in RESET_PATHS),
        FlushChains(),
        DeleteLinks(),
        *([RemoveCgroupRoot(cgroup_root)] if cgroup_root else []),
        RestoreKernelSettings(),
    ]


def plan_reset(*, options: ResetOptions = ResetOptions()) -> ResetPlan:
    steps = reset_steps(
        kubeadm=options.kubeadm,
        log_dir=options.log_dir,
        store=options.store,
        cgroup_root=options.cgroup_root,
    )
    return ResetPlan(tuple(steps), options)


def run_reset(
    plan: ResetPlan,
    *,
    runner: CommandRunner,
    log_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ResetResult:
    root = plan.options.root
    ctx = StepContext(
        root=root,
        runner=runner,
        log_dir=log_dir or host_path(plan.options.log_dir, root),
        progress=progress,
    )
    execute_steps(plan.steps, ctx)
    return ResetResult(
        dry_run=False,
        plan_text=plan.render(),
        steps_done=tuple(ctx.done),
        recorded=tuple(ctx.recorded),
        log_dir=str(ctx.log_dir),
        message=f"node reset with kubeadm; kept {plan.options.store}",
    )


def reset_cluster(
    *,
    options: ResetOptions = ResetOptions(),
    runner: CommandRunner | None = None,
    progress: Callable[[str], None] | None = None,
) -> ResetResult:
    """The `airlock cluster reset` verb."""
    plan = plan_reset(options=options)
    if options.dry_run:
        return ResetResult(dry_run=True, plan_text=plan.render())
    return run_reset(plan, runner=runner or SystemRunner(), progress=progress)
