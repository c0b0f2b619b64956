"""Simulated GPU nodes for scale benchmarks: KWOK (sigs.k8s.io/kwok) and its Stages.

KWOK plays the kubelet for Node objects that carry the label ``kubetune.dev/kwok=true``:
it keeps their Leases fresh and moves the pods bound to them through the Stages in
this directory (pod-ready, kubetune-pod-complete, pod-delete). Nothing runs: a pod
"runs" for the Go duration in its annotation ``kwok.kubetune.dev/duration`` and then
succeeds with the termination message in ``kwok.kubetune.dev/termination-message``.
Pods on the local GPU node (``localgpu-*``) are untouched; the node agent in turn
ignores pods bound to simulated nodes.

The plain kwok binary embeds no Stages; these files are passed with ``--config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

LABEL = "kubetune.dev/kwok"
SELECTOR = f"{LABEL}=true"
# Node names share a prefix so that other parts of the local cluster (Prometheus's
# scrape config) can tell simulated pods apart without reading Node objects.
NODE_PREFIX = "kwok-gpu-"
GPU = "nvidia.com/gpu"

# Pod annotations the Stages read.
DURATION = "kwok.kubetune.dev/duration"
TERMINATION_MESSAGE = "kwok.kubetune.dev/termination-message"
EXIT_CODE = "kwok.kubetune.dev/exit-code"

# Wide enough for every pod a benchmark can have at once (KWOK's default /24 holds
# 254 pod IPs and then fails to start pods). Outside 127/8, so no pod IP of the local
# GPU node can clash with it.
POD_CIDR = "10.128.0.0/10"
# KWOK renews each node's Lease; 0 would turn Leases off and refresh nodes only
# every ~10 minutes, and the node controller would taint them unreachable.
LEASE_SECONDS = 40

HERE = Path(__file__).resolve().parent
CONFIG_FILES = (
    HERE / "kwok.yaml",
    HERE / "node-initialize.yaml",
    HERE / "pod-ready.yaml",
    HERE / "pod-complete.yaml",
    HERE / "pod-delete.yaml",
)


def node_names(count: int) -> list[str]:
    return [f"{NODE_PREFIX}{i}" for i in range(count)]


def node(name: str, gpus: int) -> dict[str, Any]:
    """A simulated GPU node. Conditions are left unset: the node-initialize Stage makes
    it Ready. No taint: a pod reaches it by nodeSelector kubetune.dev/kwok=true, or by
    the scheduler's choice when it has no selector (keep that in mind on a shared cluster).
    """
    capacity = {
        "cpu": "128",
        "memory": "1Ti",
        "ephemeral-storage": "1Ti",
        # Thousands of short trials per node over a run; the kubelet default (110)
        # would make the scheduler the bottleneck on a few nodes.
        "pods": "1000",
        GPU: str(gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                LABEL: "true",
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "kubetune-kwok",
                "nvidia.com/gpu.present": "true" if gpus else "false",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {},
        # Nodes keep their status on create (kubelets register that way). The address is
        # only a pod's hostIP here: nothing connects to a simulated node.
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def nodes_manifest(count: int, gpus: int) -> str:
    items = [node(name, gpus) for name in node_names(count)]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)


def argv(binary: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        *(f"--config={f}" for f in CONFIG_FILES),
        f"--manage-nodes-with-label-selector={SELECTOR}",
        f"--node-lease-duration-seconds={LEASE_SECONDS}",
        f"--cidr={POD_CIDR}",
    ]
