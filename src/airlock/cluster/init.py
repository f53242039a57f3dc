"""`airlock cluster init`: kubeadm init, the CNI from the bundle, readiness, a join file.

`plan_init` turns spec + node facts into steps; `--dry-run` prints them exactly (the full kubeadm
config, every command). `run_init` executes them:

 1. refuse when a cluster is already here (admin.conf, static Pod manifests) unless `--force`,
    which puts the reset steps first;
 2. the preflight hook (airlock's node checks plug in here);
 3. write the kubeadm config (0600: it holds the bootstrap token and certificate key);
 4. `kubeadm init --config FILE --upload-certs`, output to a log file; on failure the error
    names the log and says a rerun with `--force` resets first;
 5. wait for the API server (deadline, progress callback);
 6. `kubectl apply -f` the CNI manifest exactly as the bundle carries it (its sha256 checked
    first when known): containerd resolves its docker.io names through the mirrors;
 7. wait for the node to be Ready and CoreDNS to be available;
 8. write the join file (0600).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from airlock.cluster.hoststate import EnsureCgroupRoot, RecordKernelSettings
from airlock.cluster.joinfile import JoinFile, ca_cert_hash, write_join_file
from airlock.cluster.kubeadm_config import (
    InitConfigOptions,
    KubeadmConfig,
    NodeFacts,
    detect_node_facts,
    render_init_config,
)
from airlock.cluster.reset import DEFAULT_LOG_DIR, DEFAULT_STORE, reset_steps
from airlock.cluster.runner import (
    ADMIN_CONF,
    ClusterProbe,
    CommandRunner,
    Guard,
    Hook,
    KubectlProbe,
    Progress,
    RunCommand,
    Step,
    StepContext,
    SystemRunner,
    Wait,
    WriteFile,
    execute_steps,
    hide_secrets,
    render_steps,
)
from airlock.errors import NodeError
from airlock.spec import Spec
from airlock.system import host_path

__all__ = [
    "CA_CERT",
    "DEFAULT_INIT_CONFIG",
    "DEFAULT_JOIN_FILE",
    "STALE_CLUSTER_PATHS",
    "InitOptions",
    "InitPlan",
    "InitResult",
    "WriteJoinFile",
    "init_cluster",
    "new_certificate_key",
    "new_token",
    "plan_init",
    "run_init",
]

DEFAULT_INIT_CONFIG = "/etc/airlock/kubeadm-init.yaml"
DEFAULT_JOIN_FILE = "/etc/airlock/join.json"
CA_CERT = "/etc/kubernetes/pki/ca.crt"
STALE_CLUSTER_PATHS = (ADMIN_CONF, "/etc/kubernetes/manifests/*.yaml")
_FORCE_HINT = (
    "rerun with --force: it resets this node first (kubeadm reset -f, CNI and kubelet state,"
    " KUBE-*/FLANNEL* chains; the store is kept) and starts over"
)


def new_token() -> str:
    """A kubeadm bootstrap token: [a-z0-9]{6}.[a-z0-9]{16}."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    pick = "".join(secrets.choice(alphabet) for _ in range(22))
    return f"{pick[:6]}.{pick[6:]}"


def new_certificate_key() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class InitOptions:
    cni_manifest: str  # host path of the CNI manifest `airlock node install` placed
    cni_manifest_sha256: str | None = None  # the bundle's digest of it, checked before apply
    root: Path = Path("/")
    advertise_address: str | None = None
    control_plane_endpoint: str | None = None
    single_node: bool = True
    image_repository: str | None = None
    token: str | None = None  # None: a fresh one
    certificate_key: str | None = None  # None: a fresh one
    token_ttl_hours: int = 24
    registries: tuple[str, ...] = ()  # host:port of the local registries, for the join file
    force: bool = False
    dry_run: bool = False
    config_path: str = DEFAULT_INIT_CONFIG
    join_file: str = DEFAULT_JOIN_FILE
    log_dir: str = DEFAULT_LOG_DIR
    store: str = DEFAULT_STORE
    api_timeout: float = 300
    node_timeout: float = 300
    coredns_timeout: float = 300
    poll_interval: float = 2.0
    kubeadm: str = "kubeadm"
    kubectl: str = "kubectl"
    show_secrets: bool = False  # the plan and result print the token and certificate key


@dataclass(frozen=True)
class WriteJoinFile:
    """The join file, from the CA kubeadm just made."""

    path: str
    api_endpoint: str
    token: str
    certificate_key: str
    kubernetes_version: str
    registries: tuple[str, ...]
    ttl_hours: int

    def describe(self) -> list[str]:
        return [
            f"write {self.path} (mode 0600): the join file",
            f"      api_endpoint: {self.api_endpoint}",
            f"      token: {self.token}",
            f"      ca_cert_hash: sha256 of the SubjectPublicKeyInfo of {CA_CERT}",
            f"      certificate_key: {self.certificate_key}",
            f"      kubernetes_version: {self.kubernetes_version}",
            f"      registries: {', '.join(self.registries) or '(none)'}",
            f"      token_expires: {self.ttl_hours}h after this step",
        ]

    def execute(self, ctx: StepContext) -> str:
        try:
            ca = ctx.host(CA_CERT).read_bytes()
        except OSError as exc:
            raise NodeError(
                f"kubeadm init left no CA at {CA_CERT}: {exc.strerror}",
                hint=f"look at the kubeadm log in {ctx.log_dir}",
            ) from None
        expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
            hours=self.ttl_hours
        )
        join = JoinFile(
            api_endpoint=self.api_endpoint,
            token=self.token,
            ca_cert_hash=ca_cert_hash(ca),
            token_expires=expires.isoformat().replace("+00:00", "Z"),
            kubernetes_version=self.kubernetes_version,
            certificate_key=self.certificate_key,
            registries=self.registries,
        )
        write_join_file(ctx.host(self.path), join)
        return f"wrote the join file {self.path}"


@dataclass(frozen=True)
class InitPlan:
    config: KubeadmConfig
    steps: tuple[Step, ...]
    options: InitOptions
    node: NodeFacts
    reset_first: bool

    def render(self) -> str:
        """Every step; the bootstrap token and certificate key only with `show_secrets`."""
        c = self.config
        iface = self.node.interface_of(c.advertise_address) or "?"
        head = [
            f"airlock cluster init: Kubernetes {c.kubernetes_version}, kubeadm config"
            f" {c.api_version}",
            f"node {c.node_name}: advertise address {c.advertise_address} ({iface}),"
            f" API endpoint {c.api_endpoint}",
        ]
        if self.reset_first:
            head.append("a cluster exists on this node: --force resets it first")
        text = "\n".join([*head, *render_steps(self.steps)]) + "\n"
        secrets = {
            "bootstrap token": self.options.token,
            "certificate key": self.options.certificate_key,
        }
        return hide_secrets(text, secrets, show=self.options.show_secrets)


@dataclass(frozen=True)
class InitResult:
    dry_run: bool
    plan_text: str
    kubernetes_version: str
    api_version: str
    node_name: str
    api_endpoint: str
    join_file: str | None = None
    log_dir: str = ""
    reset_first: bool = False
    steps_done: tuple[str, ...] = ()
    message: str = ""


def plan_init(spec: Spec, *, node: NodeFacts, options: InitOptions) -> InitPlan:
    """Every step of `cluster init`, with the full kubeadm config; reads the root for a cluster."""
    token = options.token or new_token()
    key = options.certificate_key or new_certificate_key()
    config = render_init_config(
        spec,
        node=node,
        options=InitConfigOptions(
            token=token,
            certificate_key=key,
            advertise_address=options.advertise_address,
            control_plane_endpoint=options.control_plane_endpoint,
            single_node=options.single_node,
            image_repository=options.image_repository,
            token_ttl=f"{options.token_ttl_hours}h0m0s",
        ),
    )
    guard = Guard(
        STALE_CLUSTER_PATHS,
        detail="no cluster on this node yet",
        hint=_FORCE_HINT,
    )
    stale = guard.found(options.root)
    if stale and not options.force:
        raise NodeError(
            f"a cluster already exists on this node ({', '.join(stale)})",
            hint=_FORCE_HINT,
        )
    log = options.log_dir
    kubeconfig = ADMIN_CONF
    kubectl = (options.kubectl, "--kubeconfig", kubeconfig)
    steps: list[Step] = []
    cgroup_root = spec.node.cgroup_root_for(config.node_name)
    if stale:
        steps.extend(
            reset_steps(
                kubeadm=options.kubeadm, log_dir=log, store=options.store, cgroup_root=cgroup_root
            )
        )
    steps += [
        guard,
        Hook("preflight", "airlock's node checks"),
        *([EnsureCgroupRoot(cgroup_root)] if cgroup_root else []),
        RecordKernelSettings(),
        WriteFile(options.config_path, config.text, mode=0o600),
        RunCommand(
            (options.kubeadm, "init", "--config", options.config_path, "--upload-certs"),
            log_name="kubeadm-init.log",
            purpose=f"output to {log}/kubeadm-init.log",
            failure_hint=_FORCE_HINT,
        ),
        Wait(
            "api-server",
            options.api_timeout,
            f"the API server (kubectl --kubeconfig {kubeconfig} get --raw /readyz)",
        ),
        RunCommand(
            (*kubectl, "apply", "-f", options.cni_manifest),
            log_name="cni-apply.log",
            purpose=f"the {spec.network.cni} manifest from the bundle, unchanged;"
            f" output to {log}/cni-apply.log",
            failure_hint="the API server answered before; look at the log, then rerun with --force",
            verify_sha256=(
                (options.cni_manifest, options.cni_manifest_sha256)
                if options.cni_manifest_sha256
                else None
            ),
        ),
        Wait(
            "node-ready", options.node_timeout, f"node {config.node_name} Ready", config.node_name
        ),
        Wait("coredns", options.coredns_timeout, "CoreDNS available (kube-system/coredns)"),
        WriteJoinFile(
            options.join_file,
            api_endpoint=config.api_endpoint,
            token=token,
            certificate_key=key,
            kubernetes_version=config.kubernetes_version,
            registries=options.registries,
            ttl_hours=options.token_ttl_hours,
        ),
    ]
    return InitPlan(
        config, tuple(steps), replace(options, token=token, certificate_key=key), node, bool(stale)
    )


def run_init(
    plan: InitPlan,
    *,
    runner: CommandRunner,
    probe: ClusterProbe,
    log_dir: Path | None = None,
    preflight: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> InitResult:
    """Execute an init plan. kubeadm's output goes to `log_dir` (default: the plan's, under root)."""
    opts = plan.options
    ctx = StepContext(
        root=opts.root,
        runner=runner,
        log_dir=log_dir or host_path(opts.log_dir, opts.root),
        probe=probe,
        preflight=preflight,
        progress=progress,
        poll_interval=opts.poll_interval,
    )
    execute_steps(plan.steps, ctx)
    c = plan.config
    message = (
        f"cluster initialised: Kubernetes {c.kubernetes_version}, node {c.node_name} Ready,"
        f" CoreDNS available, API at {c.api_endpoint}; join file: {opts.join_file}"
    )
    return InitResult(
        dry_run=False,
        plan_text=plan.render(),
        kubernetes_version=c.kubernetes_version,
        api_version=c.api_version,
        node_name=c.node_name,
        api_endpoint=c.api_endpoint,
        join_file=opts.join_file,
        log_dir=str(ctx.log_dir),
        reset_first=plan.reset_first,
        steps_done=tuple(ctx.done),
        message=message,
    )


def init_cluster(
    spec: Spec,
    *,
    options: InitOptions,
    node: NodeFacts | None = None,
    runner: CommandRunner | None = None,
    probe: ClusterProbe | None = None,
    preflight: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> InitResult:
    """The `airlock cluster init` verb: plan, then (unless --dry-run) run."""
    plan = plan_init(spec, node=node or detect_node_facts(), options=options)
    c = plan.config
    if options.dry_run:
        return InitResult(
            dry_run=True,
            plan_text=plan.render(),
            kubernetes_version=c.kubernetes_version,
            api_version=c.api_version,
            node_name=c.node_name,
            api_endpoint=c.api_endpoint,
            reset_first=plan.reset_first,
            message="dry run: nothing was changed",
        )
    return run_init(
        plan,
        runner=runner or SystemRunner(),
        probe=probe or KubectlProbe(host_path(ADMIN_CONF, options.root), kubectl=options.kubectl),
        preflight=preflight,
        progress=progress,
    )
