"""Cluster bring-up on the offline node: kubeadm init, join and reset, the CNI, Helm apps.

One verb per module, each `verb(inputs, *, options) -> Result` with plain-data results:
`init.init_cluster`, `join.join_cluster`, `reset.reset_cluster`, `apps.deploy_app` and
`apps.list_apps`. Each verb is a plan (steps that `--dry-run` prints exactly) and a run of it
through two seams (`runner.CommandRunner`, `runner.ClusterProbe`). `kubeadm_config` writes the
kubeadm config (v1beta3 below v1.31, v1beta4 from v1.31); `joinfile` the 0600 join file.
"""

from __future__ import annotations

from airlock.cluster.apps import AppDeployOptions, AppInfo, AppResult, deploy_app, list_apps
from airlock.cluster.init import InitOptions, InitResult, init_cluster
from airlock.cluster.join import JoinOptions, JoinResult, join_cluster
from airlock.cluster.kubeadm_config import NodeFacts, detect_node_facts
from airlock.cluster.reset import ResetOptions, ResetResult, reset_cluster

__all__ = [
    "AppDeployOptions",
    "AppInfo",
    "AppResult",
    "InitOptions",
    "InitResult",
    "JoinOptions",
    "JoinResult",
    "NodeFacts",
    "ResetOptions",
    "ResetResult",
    "deploy_app",
    "detect_node_facts",
    "init_cluster",
    "join_cluster",
    "list_apps",
    "reset_cluster",
]
