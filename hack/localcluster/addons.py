"""Cluster add-ons: the real Kueue and JobSet controllers beside the local control plane.

Each add-on is its upstream controller binary, built from its Go module
(hack/build-addon.sh), run as a host process like the other components, with:

- its CRDs, applied as the release ships them;
- its webhook server on 127.0.0.1 with a serving certificate from the cluster's CA,
  and its webhook configurations rewritten from in-cluster Services to that URL (the
  pattern controller-runtime's envtest uses: there is no Service network here);
- certificate management, leader election and every port of its own turned off or
  moved to free loopback ports.

Kueue reads its metrics certificate from a fixed path (/etc/kueue/metrics/certs) when
it does not manage certificates itself; it runs through podexec, which gives it a
private mount namespace where that path is bound to the cluster's own files.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localcluster import pki
from localcluster.state import ClusterInfo, Layout, repo_root

ADDON_LABEL = "localcluster.kubetune.dev/addon"  # on what the cluster made for an add-on
PODEXEC = repo_root() / "hack" / "localcluster" / "node" / "podexec.py"


@dataclass(frozen=True)
class Addon:
    name: str
    # Webhook paths this cluster registers (the controllers serve more, for frameworks
    # not enabled here; registering those would send their objects to a handler that
    # is not running).
    webhook_paths: frozenset[str]
    config: Callable[[Path, dict[str, int], set[str]], list[str]]


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.add(int(s.getsockname()[1]))
    return sorted(ports)


def _kueue(workdir: Path, ports: dict[str, int], others: set[str]) -> list[str]:
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}"},
        "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(workdir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "clientConnection": {"qps": 300, "burst": 500},
        # JobSets only beside JobSet: Kueue skips a framework whose CRD is missing, and
        # its webhook for them would then not be served.
        "integrations": {
            "frameworks": ["batch/job"] + (["jobset.x-k8s.io/jobset"] if "jobset" in others else [])
        },
        # The visibility API server needs certificates at another fixed path and an
        # APIService; nothing here uses it.
        "featureGates": {"VisibilityOnDemand": False},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return [f"--config={path}", "--zap-log-level=info"]


def _jobset(workdir: Path, ports: dict[str, int], others: set[str]) -> list[str]:
    config = {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}", "certDir": str(workdir)},
        "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(workdir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "clientConnection": {"qps": 300, "burst": 500},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return [f"--config={path}"]


ADDONS: dict[str, Addon] = {
    "kueue": Addon(
        "kueue",
        frozenset(
            {
                "/mutate-batch-v1-job",
                "/validate-batch-v1-job",
                "/mutate-jobset-x-k8s-io-v1alpha2-jobset",
                "/validate-jobset-x-k8s-io-v1alpha2-jobset",
                "/mutate-kueue-x-k8s-io-v1beta2-clusterqueue",
                "/validate-kueue-x-k8s-io-v1beta2-clusterqueue",
                "/validate-kueue-x-k8s-io-v1beta2-cohort",
                "/mutate-kueue-x-k8s-io-v1beta2-resourceflavor",
                "/validate-kueue-x-k8s-io-v1beta2-resourceflavor",
                "/mutate-kueue-x-k8s-io-v1beta2-workload",
                "/validate-kueue-x-k8s-io-v1beta2-workload",
            }
        ),
        _kueue,
    ),
    "jobset": Addon("jobset", frozenset(), _jobset),  # every JobSet webhook
}


def log(msg: str) -> None:
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def parse(spec: str | None) -> list[str]:
    """ "kueue,jobset" (or with spaces) -> ["kueue", "jobset"], checked."""
    names = [n for n in (spec or "").replace(",", " ").split() if n]
    unknown = [n for n in names if n not in ADDONS]
    if unknown:
        raise ValueError(f"unknown add-on(s) {unknown}; known: {sorted(ADDONS)}")
    # JobSet before Kueue: Kueue's JobSet integration wants the JobSet CRD present.
    return sorted(set(names), key=["jobset", "kueue"].index)


def build(name: str, *, cached_only: bool = False) -> Path:
    argv = ["bash", str(repo_root() / "hack" / "build-addon.sh"), name]
    if cached_only:
        argv.append("--cached-only")
    result = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"hack/build-addon.sh {name} failed (exit {result.returncode})")
    return Path(result.stdout.strip().splitlines()[-1])


def serving_cert(layout: Layout) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 from the cluster's CA (made once)."""
    crt, key = layout.pki / "addon-webhooks.crt", layout.pki / "addon-webhooks.key"
    if not crt.exists():
        pki.serving(layout.pki, "addon-webhooks", "IP:127.0.0.1,DNS:localhost")
    return crt, key


def webhook_configurations(
    manifest: str, addon: Addon, port: int, ca_bundle: str, others: set[str]
) -> list[dict[str, Any]]:
    """The release's webhook configurations, pointed at https://127.0.0.1:port.

    Names are prefixed with the add-on's (the release names them generically, and the
    kustomize overlay that would prefix them is not used here).
    """
    out = []
    for doc in yaml.safe_load_all(manifest):
        if not doc or doc.get("kind") not in (
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ):
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            service = (hook.get("clientConfig") or {}).get("service") or {}
            path = service.get("path", "")
            if addon.webhook_paths and path not in addon.webhook_paths:
                continue
            if "jobset" in path and addon.name != "jobset" and "jobset" not in others:
                continue
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            if addon.name == "jobset" and path.endswith("--v1-pod"):
                # As the release's kustomize patch does: only the JobSet's own pods.
                hook["objectSelector"] = {
                    "matchExpressions": [
                        {"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}
                    ]
                }
            hook["timeoutSeconds"] = 10
            hooks.append(hook)
        if hooks:
            doc["metadata"] = {
                "name": f"{addon.name}-{doc['metadata']['name']}",
                "labels": {ADDON_LABEL: addon.name},  # how addons_down finds them
            }
            doc["webhooks"] = hooks
            out.append(doc)
    return out


def start(
    name: str,
    home: Path,
    layout: Layout,
    info: ClusterInfo,
    starter: Callable[[str, list[str], dict[str, str] | None], None],
    others: set[str],
) -> dict[str, Any]:
    """Build (once), configure and start one add-on; returns what `install` needs."""
    addon = ADDONS[name]
    workdir = layout.root / "addons" / name
    workdir.mkdir(parents=True, exist_ok=True)
    crt, key = serving_cert(layout)
    for src, dst in ((crt, "tls.crt"), (key, "tls.key")):
        (workdir / dst).write_bytes(src.read_bytes())
    ports = dict(zip(("health", "metrics", "webhook"), _free_ports(3), strict=True))
    args = addon.config(workdir, ports, others)
    kubeconfig = layout.component_kubeconfig(name)
    pki.write_kubeconfig(kubeconfig, info.apiserver_url, layout.pki, "admin")
    binary = str(home / "bin" / name)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBECONFIG": str(kubeconfig),
        # controller-runtime's default webhook certificate directory lives under TMPDIR.
        "TMPDIR": str(workdir),
    }
    argv = [binary, f"--kubeconfig={kubeconfig}", *args]
    if name == "kueue":
        spec = {
            "argv": argv,
            "env": env,
            "cwd": str(workdir),
            "mounts": [
                {"source": str(workdir), "target": "/etc/kueue/metrics/certs", "readOnly": True}
            ],
            "keep": [],
        }
        spec_file = workdir / "podexec.json"
        spec_file.write_text(json.dumps(spec))
        argv = [sys.executable, "-E", "-S", str(PODEXEC), str(spec_file)]
    starter(name, argv, env)
    return {"home": home, "ports": ports, "crt": crt, "others": others}


def crd_files(home: Path) -> list[Path]:
    return sorted((home / "crds").glob("*.yaml"))


def webhooks(name: str, started: dict[str, Any]) -> str:
    """The add-on's webhook configurations as one YAML stream."""
    home: Path = started["home"]
    # The serving certificate is signed by the cluster's CA: that CA is the bundle.
    ca_bundle = base64.b64encode((started["crt"].parent / "ca.crt").read_bytes()).decode()
    hooks = webhook_configurations(
        (home / "webhooks.yaml").read_text(),
        ADDONS[name],
        started["ports"]["webhook"],
        ca_bundle,
        started["others"],
    )
    return yaml.safe_dump_all(hooks)
