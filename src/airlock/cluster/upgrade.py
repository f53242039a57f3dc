"""`airlock cluster upgrade --to vX.Y.Z`: kubeadm's upgrade procedure, from the node's store.

kubeadm's documented order, one node at a time:

- first control-plane node: install the new kubeadm, `kubeadm upgrade plan vX.Y.Z`,
  `kubeadm upgrade apply vX.Y.Z -y`;
- other control-plane nodes and workers: install the new kubeadm, `kubeadm upgrade node`;
- then, on every node: `kubectl drain NODE --ignore-daemonsets`, install the new kubelet and
  kubectl, restart kubelet (`systemctl daemon-reload`, `systemctl restart kubelet`; recorded,
  never run, under a sysroot), `kubectl uncordon NODE`.

The binaries come from the store `airlock load` filled (the files artifact layers whose version
annotation is the target, for this node's platform), each checked by digest while it is written;
on control-plane nodes every image kubeadm will need for the target must be in the store too.
Kubernetes upgrades one minor version at a time: a skip (v1.27 -> v1.29) and a downgrade are
refused with the path to take; patch upgrades and a rerun at the same version (to finish an
interrupted upgrade) are fine. `--dry-run` prints the plan exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from airlock.atomic import write_atomic
from airlock.bundle.compression import (
    ANNOTATION_CONTENT_DIGEST,
    ANNOTATION_CONTENT_SIZE,
    open_content,
)
from airlock.bundle.layout import (
    ANNOTATION_FILE_PLATFORM,
    ANNOTATION_FILE_URL,
    ANNOTATION_FILE_VERSION,
    FILES_ARTIFACT_TYPE,
)
from airlock.cluster.reset import DEFAULT_LOG_DIR, DEFAULT_STORE
from airlock.cluster.runner import (
    ADMIN_CONF,
    CommandRunner,
    RunCommand,
    Step,
    StepContext,
    SystemRunner,
    execute_steps,
    render_steps,
)
from airlock.errors import DigestMismatch, NodeError, UsageError
from airlock.node.install import LOCAL_BIN, host_platform
from airlock.oci.layout import OciLayout
from airlock.oci.media import ANNOTATION_TITLE
from airlock.resolve.kubernetes import kubeadm_images
from airlock.store import Store
from airlock.system import host_path

__all__ = [
    "APISERVER_MANIFEST",
    "ROLES",
    "CheckStoreImages",
    "InstallBinary",
    "RestartKubelet",
    "Role",
    "StoreFile",
    "UpgradeOptions",
    "UpgradePlan",
    "UpgradeResult",
    "check_upgrade_path",
    "detect_current_version",
    "detect_role",
    "parse_version",
    "plan_upgrade",
    "run_upgrade",
    "store_release_files",
    "upgrade_cluster",
]

Role = Literal["first-control-plane", "control-plane", "worker"]
ROLES: tuple[Role, ...] = ("first-control-plane", "control-plane", "worker")
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
TOOLS = ("kubeadm", "kubelet", "kubectl")
_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)\Z")
_APISERVER_IMAGE_RE = re.compile(r"image:\s*\S*kube-apiserver:(v\d+\.\d+\.\d+)\b")
_CHUNK = 1 << 20


def parse_version(text: str) -> tuple[int, int, int]:
    m = _VERSION_RE.match(text.strip())
    if not m:
        raise UsageError(f"{text!r} is not a Kubernetes version", "write it like v1.28.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check_upgrade_path(current: str, target: str) -> None:
    """Refuse a downgrade, a major change and a minor skip; a patch and the same version pass."""
    c, t = parse_version(current), parse_version(target)
    if t < c:
        raise UsageError(
            f"{target} is older than the cluster's {current}: downgrades are not supported",
            "kubeadm cannot downgrade; restore from a backup (etcd snapshot) instead",
        )
    if t[0] != c[0]:
        raise UsageError(f"cannot upgrade across major versions ({current} -> {target})")
    if t[1] > c[1] + 1:
        steps = " -> ".join(f"v{c[0]}.{m}.x" for m in range(c[1] + 1, t[1] + 1))
        raise UsageError(
            f"{current} -> {target} skips a minor version: Kubernetes upgrades one minor "
            "version at a time",
            f"upgrade in steps: {current} -> {steps}, each with a bundle for that version",
        )


# --- what the store holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoreFile:
    tool: str  # kubeadm | kubelet | kubectl
    name: str  # its title in the bundle
    digest: str
    size: int
    version: str
    platform: str
    blob: Path  # where its bytes are (a store blob)
    compression: str | None = None  # the blob holds them compressed (bundle format 1.1)


def _tool_of(url: str, title: str) -> str | None:
    base = PurePosixPath(url).name if url else title
    return base if base in TOOLS else None


def store_release_files(store: Path, *, version: str, platform: str) -> dict[str, StoreFile]:
    """kubeadm, kubelet and kubectl of `version` for `platform`, from the store's files."""
    layout = OciLayout(store)
    found: dict[str, StoreFile] = {}
    if not layout.index_path.exists():
        return found
    for desc in layout.manifests():
        if desc.get("artifactType") not in (None, FILES_ARTIFACT_TYPE):
            continue
        digest = str(desc.get("digest", ""))
        if not layout.has(digest) or int(desc.get("size", 0)) > 16 << 20:
            continue
        try:
            doc = json.loads(layout.read(digest))
        except ValueError:
            continue
        if doc.get("artifactType") != FILES_ARTIFACT_TYPE:
            continue
        for layer in doc.get("layers", []):
            ann = layer.get("annotations", {})
            tool = _tool_of(ann.get(ANNOTATION_FILE_URL, ""), ann.get(ANNOTATION_TITLE, ""))
            if tool is None or ann.get(ANNOTATION_FILE_VERSION) != version:
                continue
            plat = ann.get(ANNOTATION_FILE_PLATFORM, "")
            if plat not in ("", platform) or not layout.has(layer["digest"]):
                continue
            if tool in found and found[tool].platform == platform:
                continue  # a platform-specific file wins over a generic one
            # stored compressed (bundle format 1.1): the file's own digest and size are in
            # annotations; found on a real upgrade, which installed the zstd bytes as kubeadm
            content = ann.get(ANNOTATION_CONTENT_DIGEST)
            compressed = str(layer.get("mediaType", "")).endswith("+zstd") and bool(content)
            found[tool] = StoreFile(
                tool=tool,
                name=ann.get(ANNOTATION_TITLE, tool),
                digest=str(content) if compressed else layer["digest"],
                size=int(ann.get(ANNOTATION_CONTENT_SIZE, 0)) if compressed else int(layer["size"]),
                version=version,
                platform=plat,
                blob=layout.path(layer["digest"]),
                compression="zstd" if compressed else None,
            )
    return found


# --- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallBinary:
    """Write a binary from the store, checked by digest while it is written (0755, atomic)."""

    path: str
    file: StoreFile

    def describe(self) -> list[str]:
        f = self.file
        return [f"install {self.path}: {f.tool} {f.version} from the store ({f.digest})"]

    def execute(self, ctx: StepContext) -> str:
        dest = ctx.host(self.path)
        want = self.file.digest
        if dest.is_file() and _sha256_file(dest) == want:
            return f"{self.path}: already {self.file.tool} {self.file.version}"
        h = hashlib.sha256()
        chunks: list[bytes] = []
        try:
            with contextlib.ExitStack() as stack:
                fh: BinaryIO = stack.enter_context(self.file.blob.open("rb"))
                if self.file.compression:
                    fh = stack.enter_context(
                        open_content(
                            fh, self.file.compression, size=self.file.size, what=self.file.name
                        )
                    )
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
                    chunks.append(chunk)
        except OSError as exc:
            raise NodeError(
                f"cannot read {self.file.tool} {self.file.version} from the store: {exc.strerror}",
                "load the bundle for that version again",
            ) from None
        got = "sha256:" + h.hexdigest()
        if got != want:
            raise DigestMismatch(
                f"{self.file.name} ({self.file.version}) in the store",
                want,
                got,
                "the store's blob is damaged; nothing was installed; load the bundle again",
            )
        write_atomic(dest, b"".join(chunks), mode=0o755)
        return f"installed {self.path} ({self.file.tool} {self.file.version})"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class RestartKubelet:
    log_name: str = "upgrade-kubelet-restart.log"

    def describe(self) -> list[str]:
        return [
            "restart kubelet: systemctl daemon-reload; systemctl restart kubelet"
            " (recorded, not run, under a sysroot)"
        ]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = f"kubelet restart recorded, not run: {ctx.root} is a sysroot"
            ctx.recorded.append(note)
            return note
        for argv in (("systemctl", "daemon-reload"), ("systemctl", "restart", "kubelet")):
            RunCommand(argv, log_name=self.log_name).execute(ctx)
        return "kubelet restarted"


@dataclass(frozen=True)
class CheckStoreImages:
    """Every image kubeadm needs for the target is in the store (it pulls them through the
    local registry during the upgrade)."""

    images: tuple[str, ...]
    store: str

    def describe(self) -> list[str]:
        return [f"check: the store {self.store} holds {', '.join(self.images)}"]

    def execute(self, ctx: StepContext) -> str:
        have = OciLayout(Path(self.store)).images()
        missing = [i for i in self.images if i not in have]
        if missing:
            raise NodeError(
                f"the store {self.store} lacks {', '.join(missing)}",
                "load the bundle (or delta) for the target version first",
            )
        return f"check: {len(self.images)} images in the store"


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradeOptions:
    target: str
    role: Role | None = (
        None  # None: first-control-plane with a kube-apiserver manifest, else worker
    )
    current: str | None = None  # None: read from the node
    node_name: str | None = None  # None: this host's name (lowercased, as kubeadm does)
    root: Path = Path("/")
    store: Path = Path(DEFAULT_STORE)  # a host path
    platform: str | None = None  # None: this host's
    kubeconfig: str = ADMIN_CONF  # drain/uncordon need cluster-admin rights
    log_dir: str = DEFAULT_LOG_DIR
    kubeadm: str = f"{LOCAL_BIN}/kubeadm"  # the one this upgrade installs
    kubectl: str = "kubectl"
    dry_run: bool = False
    # the spec's node.ignorePreflightErrors: kubeadm upgrade runs its preflight checks again
    ignore_preflight_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpgradePlan:
    current: str
    target: str
    role: Role
    node_name: str
    steps: tuple[Step, ...]
    options: UpgradeOptions
    warnings: tuple[str, ...] = ()

    def render(self) -> str:
        head = [
            f"airlock cluster upgrade: {self.current} -> {self.target} on node {self.node_name}"
            f" ({self.role})",
        ]
        return "\n".join([*head, *render_steps(self.steps)]) + "\n"


@dataclass(frozen=True)
class UpgradeResult:
    dry_run: bool
    plan_text: str
    current: str
    target: str
    role: str
    node_name: str
    steps_done: tuple[str, ...] = ()
    recorded: tuple[str, ...] = ()
    log_dir: str = ""
    warnings: tuple[str, ...] = ()
    message: str = ""


def detect_role(root: Path) -> Role:
    return "first-control-plane" if host_path(APISERVER_MANIFEST, root).exists() else "worker"


def detect_current_version(root: Path, *, runner: CommandRunner) -> str:
    """The cluster's version on a control-plane node (its kube-apiserver manifest), else the
    installed kubelet's."""
    manifest = host_path(APISERVER_MANIFEST, root)
    if manifest.is_file():
        m = _APISERVER_IMAGE_RE.search(manifest.read_text(errors="replace"))
        if m:
            return m.group(1)
    kubelet = host_path(f"{LOCAL_BIN}/kubelet", root)
    if kubelet.is_file():
        res = runner.run([str(kubelet), "--version"])
        m = re.search(r"v\d+\.\d+\.\d+", res.stdout)
        if res.returncode == 0 and m:
            return m.group(0)
    raise NodeError(
        "cannot tell this node's Kubernetes version (no kube-apiserver manifest, no kubelet in"
        f" {LOCAL_BIN})",
        "pass --from vX.Y.Z, the version the node runs now",
    )


def plan_upgrade(
    *,
    current: str,
    role: Role,
    node_name: str,
    files: Mapping[str, StoreFile],
    options: UpgradeOptions,
    images_exact: bool = True,
    images: Sequence[str] = (),
) -> UpgradePlan:
    """Every step of the upgrade of one node (pure: `files` and `images` come from the store)."""
    target = options.target
    check_upgrade_path(current, target)
    platform = options.platform or host_platform()
    missing = [t for t in TOOLS if t not in files]
    if missing:
        raise NodeError(
            f"the store {options.store} has no {', '.join(missing)} {target} for {platform}",
            f"build a bundle (or a delta: `airlock bundle create --since inventory.json`) for"
            f" {target}, carry it in and `airlock load` it first",
        )
    log = options.log_dir
    kubectl = (options.kubectl, "--kubeconfig", options.kubeconfig)
    ignore = (
        (f"--ignore-preflight-errors={','.join(options.ignore_preflight_errors)}",)
        if options.ignore_preflight_errors
        else ()
    )
    steps: list[Step] = []
    if role != "worker" and images:
        steps.append(CheckStoreImages(tuple(images), str(options.store)))
    steps.append(InstallBinary(f"{LOCAL_BIN}/kubeadm", files["kubeadm"]))
    if role == "first-control-plane":
        steps += [
            RunCommand(
                (options.kubeadm, "upgrade", "plan", target, *ignore),
                log_name="kubeadm-upgrade-plan.log",
                purpose=f"output to {log}/kubeadm-upgrade-plan.log",
                failure_hint="kubeadm refused the upgrade; its reasons are in the log",
            ),
            RunCommand(
                (options.kubeadm, "upgrade", "apply", target, "-y", *ignore),
                log_name="kubeadm-upgrade-apply.log",
                purpose=f"output to {log}/kubeadm-upgrade-apply.log",
                failure_hint="kubeadm rolls the control plane back on failure; fix the cause in"
                " the log and rerun the same command",
            ),
        ]
    else:
        steps.append(
            RunCommand(
                (options.kubeadm, "upgrade", "node", *ignore),
                log_name="kubeadm-upgrade-node.log",
                purpose=f"output to {log}/kubeadm-upgrade-node.log",
                failure_hint="upgrade the first control-plane node first (`--role"
                " first-control-plane` there), then rerun",
            )
        )
    steps += [
        RunCommand(
            (*kubectl, "drain", node_name, "--ignore-daemonsets"),
            log_name="kubectl-drain.log",
            purpose="move workloads away before the kubelet changes",
            failure_hint="look at the pods that could not be evicted (PodDisruptionBudgets)",
        ),
        InstallBinary(f"{LOCAL_BIN}/kubelet", files["kubelet"]),
        InstallBinary(f"{LOCAL_BIN}/kubectl", files["kubectl"]),
        RestartKubelet(),
        RunCommand(
            (*kubectl, "uncordon", node_name),
            log_name="kubectl-uncordon.log",
            purpose="let workloads come back",
        ),
    ]
    warnings: tuple[str, ...] = ()
    if role != "worker" and not images_exact:
        warnings = (f"kubeadm's image list for {target} is a guess; the image check may miss one",)
    return UpgradePlan(current, target, role, node_name, tuple(steps), options, warnings)


def _plan_for_node(options: UpgradeOptions, runner: CommandRunner) -> UpgradePlan:
    parse_version(options.target)
    root = options.root
    role = options.role or detect_role(root)
    current = options.current or detect_current_version(root, runner=runner)
    check_upgrade_path(current, options.target)  # before reading the store: the clearer error
    platform = options.platform or host_platform()
    files = store_release_files(options.store, version=options.target, platform=platform)
    carried = bundle_kubeadm_images(options.store, options.target)
    if carried is not None:
        images, exact = carried, True
    else:
        listed = kubeadm_images(options.target)
        images, exact = listed.images, listed.exact
    node = options.node_name or socket.gethostname().lower()
    return plan_upgrade(
        current=current,
        role=role,
        node_name=node,
        files=files,
        options=options,
        images_exact=exact,
        images=images,
    )


def bundle_kubeadm_images(store: Path, target: str) -> tuple[str, ...] | None:
    """The registry.k8s.io images the loaded bundle for `target` resolved (its plan asked the
    target's own kubeadm, or its constants.go); None when no bundle in the store is for it.

    Found on a real upgrade: the built-in table said etcd 3.5.9-0 for v1.28.15, while
    v1.28.15's kubeadm (a patch release bumped etcd) wants 3.5.15-0, which the bundle carries."""
    record = Store.open(store).newest_bundle_record() if Path(store).is_dir() else None
    if not record:
        return None
    version = ((record.get("spec") or {}).get("kubernetes") or {}).get("version")
    if version != target:
        return None
    images = (record.get("resolved") or {}).get("images") or []
    listed = tuple(sorted(str(r) for r in images if str(r).startswith("registry.k8s.io/")))
    return listed or None


def run_upgrade(
    plan: UpgradePlan,
    *,
    runner: CommandRunner,
    log_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> UpgradeResult:
    opts = plan.options
    ctx = StepContext(
        root=opts.root,
        runner=runner,
        log_dir=log_dir or host_path(opts.log_dir, opts.root),
        progress=progress,
    )
    execute_steps(plan.steps, ctx)
    message = f"node {plan.node_name} upgraded {plan.current} -> {plan.target}"
    return UpgradeResult(
        dry_run=False,
        plan_text=plan.render(),
        current=plan.current,
        target=plan.target,
        role=plan.role,
        node_name=plan.node_name,
        steps_done=tuple(ctx.done),
        recorded=tuple(ctx.recorded),
        log_dir=str(ctx.log_dir),
        warnings=plan.warnings,
        message=message,
    )


def upgrade_cluster(
    *,
    options: UpgradeOptions,
    runner: CommandRunner | None = None,
    progress: Callable[[str], None] | None = None,
) -> UpgradeResult:
    """The `airlock cluster upgrade` verb: plan (checks the path and the store), then run."""
    runner = runner or SystemRunner()
    plan = _plan_for_node(options, runner)
    if options.dry_run:
        return UpgradeResult(
            dry_run=True,
            plan_text=plan.render(),
            current=plan.current,
            target=plan.target,
            role=plan.role,
            node_name=plan.node_name,
            warnings=plan.warnings,
            message="dry run: nothing was changed",
        )
    return run_upgrade(plan, runner=runner, progress=progress)
