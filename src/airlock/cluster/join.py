"""`airlock cluster join FILE [--control-plane]`: join this node with a join file.

The join file is checked first (0600, token not expired, the cluster's CA matches the pinned
hash: read from the cluster-info ConfigMap, or a CA file given). The plan then writes a
JoinConfiguration (v1beta3 below v1.31, v1beta4 from v1.31; 0600, it holds the token) and runs
`kubeadm join --config FILE`, output to a log. A node that already joined is refused unless
`--force`, which resets it first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airlock.cluster.hoststate import EnsureCgroupRoot, RecordKernelSettings
from airlock.cluster.joinfile import JoinFile, fetch_cluster_ca, read_join_file, verify_ca
from airlock.cluster.kubeadm_config import (
    KubeadmConfig,
    NodeFacts,
    detect_node_facts,
    render_join_config,
)
from airlock.cluster.reset import DEFAULT_LOG_DIR, DEFAULT_STORE, reset_steps
from airlock.cluster.runner import (
    CommandRunner,
    Guard,
    Hook,
    Progress,
    RunCommand,
    Step,
    StepContext,
    SystemRunner,
    WriteFile,
    execute_steps,
    hide_secrets,
    render_steps,
)
from airlock.errors import NodeError, UsageError
from airlock.spec import NodeSettings
from airlock.system import host_path

__all__ = [
    "DEFAULT_JOIN_CONFIG",
    "JOINED_PATHS",
    "JoinOptions",
    "JoinPlan",
    "JoinResult",
    "join_cluster",
    "plan_join",
    "run_join",
]

DEFAULT_JOIN_CONFIG = "/etc/airlock/kubeadm-join.yaml"
JOINED_PATHS = ("/etc/kubernetes/kubelet.conf",)
_FORCE_HINT = (
    "rerun with --force: it resets this node first (kubeadm reset -f, CNI and kubelet state,"
    " KUBE-*/FLANNEL* chains; the store is kept) and joins again"
)


@dataclass(frozen=True)
class JoinOptions:
    root: Path = Path("/")
    control_plane: bool = False
    advertise_address: str | None = None
    force: bool = False
    dry_run: bool = False
    ca_file: Path | None = None  # the cluster's CA; None: read it from the API server
    config_path: str = DEFAULT_JOIN_CONFIG
    log_dir: str = DEFAULT_LOG_DIR
    store: str = DEFAULT_STORE
    kubeadm: str = "kubeadm"
    show_secrets: bool = False  # the plan and result print the token and certificate key
    settings: NodeSettings | None = None  # the spec's node settings (cgroup root, preflight)


@dataclass(frozen=True)
class JoinPlan:
    join: JoinFile
    config: KubeadmConfig
    control_plane: bool
    steps: tuple[Step, ...]
    options: JoinOptions
    node: NodeFacts
    reset_first: bool

    def render(self) -> str:
        c = self.config
        role = "control-plane node" if self.control_plane else "worker"
        iface = self.node.interface_of(c.advertise_address) or "?"
        head = [
            f"airlock cluster join as a {role}: Kubernetes {c.kubernetes_version}, kubeadm"
            f" config {c.api_version}",
            f"node {c.node_name}: address {c.advertise_address} ({iface}), API endpoint"
            f" {c.api_endpoint}",
            f"registries for this node's mirrors: {', '.join(self.join.registries) or '(none)'}",
        ]
        if self.reset_first:
            head.append("this node already joined a cluster: --force resets it first")
        text = "\n".join([*head, *render_steps(self.steps)]) + "\n"
        secrets = {
            "bootstrap token": self.join.token,
            "certificate key": self.join.certificate_key,
        }
        return hide_secrets(text, secrets, show=self.options.show_secrets)


@dataclass(frozen=True)
class JoinResult:
    dry_run: bool
    plan_text: str
    kubernetes_version: str
    api_version: str
    node_name: str
    api_endpoint: str
    control_plane: bool
    registries: tuple[str, ...] = ()
    log_dir: str = ""
    reset_first: bool = False
    steps_done: tuple[str, ...] = ()
    message: str = ""


def plan_join(
    joinfile: JoinFile,
    *,
    control_plane: bool,
    node: NodeFacts,
    options: JoinOptions = JoinOptions(),
) -> JoinPlan:
    config = render_join_config(
        kubernetes_version=joinfile.kubernetes_version,
        api_endpoint=joinfile.api_endpoint,
        token=joinfile.token,
        ca_cert_hash=joinfile.ca_cert_hash,
        node=node,
        advertise_address=options.advertise_address,
        certificate_key=joinfile.certificate_key if control_plane else None,
        control_plane=control_plane,
        settings=options.settings,
    )
    guard = Guard(JOINED_PATHS, detail="this node has not joined a cluster", hint=_FORCE_HINT)
    stale = guard.found(options.root)
    if stale and not options.force:
        raise NodeError(
            f"this node is already part of a cluster ({', '.join(stale)})", hint=_FORCE_HINT
        )
    settings = options.settings or NodeSettings.model_validate({})
    cgroup_root = settings.cgroup_root_for(config.node_name)
    steps: list[Step] = []
    if stale:
        steps.extend(
            reset_steps(
                kubeadm=options.kubeadm,
                log_dir=options.log_dir,
                store=options.store,
                cgroup_root=cgroup_root,
            )
        )
    steps += [
        guard,
        Hook("preflight", "airlock's node checks"),
        *([EnsureCgroupRoot(cgroup_root)] if cgroup_root else []),
        RecordKernelSettings(),
        WriteFile(options.config_path, config.text, mode=0o600),
        RunCommand(
            (options.kubeadm, "join", "--config", options.config_path),
            log_name="kubeadm-join.log",
            purpose=f"output to {options.log_dir}/kubeadm-join.log",
            failure_hint=_FORCE_HINT,
        ),
    ]
    return JoinPlan(joinfile, config, control_plane, tuple(steps), options, node, bool(stale))


def run_join(
    plan: JoinPlan,
    *,
    runner: CommandRunner,
    log_dir: Path | None = None,
    preflight: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> JoinResult:
    opts = plan.options
    ctx = StepContext(
        root=opts.root,
        runner=runner,
        log_dir=log_dir or host_path(opts.log_dir, opts.root),
        preflight=preflight,
        progress=progress,
    )
    execute_steps(plan.steps, ctx)
    c = plan.config
    role = "control-plane node" if plan.control_plane else "worker"
    message = f"joined {c.api_endpoint} as a {role} (node {c.node_name})"
    return JoinResult(
        dry_run=False,
        plan_text=plan.render(),
        kubernetes_version=c.kubernetes_version,
        api_version=c.api_version,
        node_name=c.node_name,
        api_endpoint=c.api_endpoint,
        control_plane=plan.control_plane,
        registries=plan.join.registries,
        log_dir=str(ctx.log_dir),
        reset_first=plan.reset_first,
        steps_done=tuple(ctx.done),
        message=message,
    )


def join_cluster(
    path: Path,
    *,
    options: JoinOptions = JoinOptions(),
    node: NodeFacts | None = None,
    runner: CommandRunner | None = None,
    preflight: Callable[[], None] | None = None,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> JoinResult:
    """The `airlock cluster join FILE` verb: check the join file, plan, then (unless --dry-run) run.

    A dry run checks the CA only when `options.ca_file` is given (it never dials the API server).
    """
    joinfile = read_join_file(path, now=now)
    if options.ca_file is not None:
        try:
            verify_ca(joinfile, options.ca_file.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read the CA file {options.ca_file}: {exc.strerror}") from None
    elif not options.dry_run:
        verify_ca(joinfile, fetch_cluster_ca(joinfile.api_endpoint))
    plan = plan_join(
        joinfile,
        control_plane=options.control_plane,
        node=node or detect_node_facts(),
        options=options,
    )
    if options.dry_run:
        c = plan.config
        return JoinResult(
            dry_run=True,
            plan_text=plan.render(),
            kubernetes_version=c.kubernetes_version,
            api_version=c.api_version,
            node_name=c.node_name,
            api_endpoint=c.api_endpoint,
            control_plane=plan.control_plane,
            registries=joinfile.registries,
            reset_first=plan.reset_first,
            message="dry run: nothing was changed",
        )
    return run_join(plan, runner=runner or SystemRunner(), preflight=preflight, progress=progress)
