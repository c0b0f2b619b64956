"""Where the local cluster keeps its state, and the layout of that state.

All state lives in ``.localcluster/`` at the repository root (gitignored). The
cluster is ephemeral: ``up`` from a stopped cluster starts with a fresh etcd, so
tests and the demo never inherit pods or objects from an earlier run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

KUBE_VERSION = os.environ.get("KUBE_VERSION", "v1.36.2")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    override = os.environ.get("LOCALCLUSTER_DIR")
    return Path(override).resolve() if override else repo_root() / ".localcluster"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one cluster; picked free at ``up`` so two clones can coexist."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    prometheus: int


@dataclass(frozen=True)
class ClusterInfo:
    """What a running cluster publishes in ``.localcluster/cluster.json``."""

    ports: Ports
    # Second octet of 127.X.0.0/16 from which this cluster's pod IPs come; random
    # per cluster so two clusters on one machine do not hand out the same pod IP.
    pod_ip_octet: int
    kube_version: str

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClusterInfo:
        raw = json.loads(path.read_text())
        return cls(
            ports=Ports(**raw["ports"]),
            pod_ip_octet=int(raw["pod_ip_octet"]),
            kube_version=str(raw["kube_version"]),
        )


class Layout:
    """Paths inside the state directory. One place, so nothing guesses a path."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus"

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def prometheus_url_file(self) -> Path:
        return self.root / "prometheus-url"

    @property
    def cluster_json(self) -> Path:
        return self.root / "cluster.json"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pidfile(self, component: str) -> Path:
        return self.pids / f"{component}.pid"
