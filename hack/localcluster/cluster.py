"""Bring the local cluster up and down.

`up` is idempotent: a healthy running cluster is left alone; a half-running one
is stopped and started afresh. `down` stops exactly the processes recorded in
the pidfiles (the node agent first, which stops every pod it runs) and leaves
nothing running. Every component logs to ``.localcluster/logs/<component>.log``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from localcluster import addons, kwok, pki, procs
from localcluster.prometheus import DEFAULT_SCRAPE_INTERVAL, render_config
from localcluster.state import KUBE_VERSION, ClusterInfo, Layout, Ports, repo_root

# Stop order: the node agents first (they stop the pods), etcd last.
COMPONENTS = (
    "localnode",
    "kwok",
    # Add-ons stop before the API server; their webhooks go with the cluster.
    "kueue",
    "jobset",
    "prometheus",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)
# Started only on request (up --kwok-nodes, or kwok_up beside a running cluster): a
# cluster without them is complete, and `status` lists them only while in use.
OPTIONAL = frozenset({"kwok", "kueue", "jobset"})


class ClusterError(RuntimeError):
    """A component failed to start; the message names it and its log."""


def log(msg: str) -> None:
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pick_ports() -> Ports:
    chosen: set[int] = set()
    while len(chosen) < 6:
        chosen.add(_free_port())
    p = sorted(chosen)
    random.shuffle(p)
    return Ports(*p)


def _built(script: str) -> Path:
    """Run a hack/build-*.sh script: it builds once, caches, and prints the bin dir."""
    result = subprocess.run(
        ["bash", str(repo_root() / "hack" / script)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        env={**os.environ, "KUBE_VERSION": KUBE_VERSION},
    )
    if result.returncode != 0:
        raise ClusterError(f"hack/{script} failed (see its messages above)")
    return Path(result.stdout.strip().splitlines()[-1])


@functools.cache
def binaries() -> Path:
    """The cached Kubernetes binaries, built on first use (hack/build-k8s.sh)."""
    return _built("build-k8s.sh")


@functools.cache
def kwok_binary() -> Path:
    """KWOK for simulated GPU nodes, built on first use (hack/build-kwok.sh)."""
    return _built("build-kwok.sh") / "kwok"


def kwok_binary_if_built() -> Path | None:
    """The cached KWOK binary, or None where it was never built (it takes minutes)."""
    result = subprocess.run(
        ["bash", str(repo_root() / "hack" / "build-kwok.sh"), "--cached-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    return Path(result.stdout.strip().splitlines()[-1]) / "kwok"


@functools.cache
def prometheus_binary() -> Path:
    """Upstream Prometheus (Debian's lacks Kubernetes discovery; hack/build-prometheus.sh)."""
    return _built("build-prometheus.sh") / "prometheus"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ClusterError(f"{tool} not found; install Debian's `{package}` package (make setup)")
    return path


class Client:
    """Minimal HTTPS client for readiness probes (client-certificate auth)."""

    def __init__(self, layout: Layout) -> None:
        self.ctx = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
        self.ctx.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
        self.insecure = ssl.create_default_context()
        # kube-controller-manager and kube-scheduler serve /healthz with a
        # self-signed certificate of their own; health is all we read there.
        self.insecure.check_hostname = False
        self.insecure.verify_mode = ssl.CERT_NONE

    def get(self, url: str, *, verify: bool = True, timeout: float = 2.0) -> tuple[int, bytes]:
        ctx = self.ctx if verify else self.insecure
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:  # noqa: S310
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()
        except (OSError, ssl.SSLError) as e:
            return 0, str(e).encode()


def _wait(
    what: str, check: Callable[[], tuple[bool, str]], timeout: float, component: str, layout: Layout
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return
        if component and procs.recorded_pid(layout.pidfile(component)) is None:
            raise ClusterError(
                f"{component} exited while waiting for {what}; "
                f"last lines of {layout.log(component)}:\n{_tail(layout.log(component))}"
            )
        time.sleep(0.1)
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last[:300]}); "
        f"log: {layout.log(component)}\n{_tail(layout.log(component))}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def status(layout: Layout | None = None) -> dict[str, int | None]:
    """Each component's PID (None: not running); optional ones only while in use."""
    layout = layout or Layout()
    return {
        c: procs.recorded_pid(layout.pidfile(c))
        for c in COMPONENTS
        if c not in OPTIONAL or layout.pidfile(c).exists()
    }


def is_healthy(layout: Layout | None = None) -> bool:
    layout = layout or Layout()
    if not layout.cluster_json.exists() or not all(status(layout).values()):
        return False
    info = ClusterInfo.load(layout.cluster_json)
    code, _ = Client(layout).get(f"{info.apiserver_url}/readyz")
    return code == 200


def down(layout: Layout | None = None) -> None:
    layout = layout or Layout()
    for component in COMPONENTS:
        # The node agent needs time to give its pods their grace period.
        if procs.stop(layout.pidfile(component), grace=40.0 if component == "localnode" else 10.0):
            log(f"stopped {component}")
    layout.cluster_json.unlink(missing_ok=True)


def up(
    *,
    nodes: int = 1,
    gpus_per_node: int = 4,
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    kwok_nodes: int = 0,
    kwok_gpus_per_node: int = 8,
    addon_names: list[str] | None = None,
    layout: Layout | None = None,
) -> ClusterInfo:
    """Start the cluster and return once it is ready; on any failure stop what started.

    With kwok_nodes, KWOK and that many simulated GPU nodes come up too; on a running
    cluster they are added beside it (kwok_up). Likewise the add-ons named (addons_up).
    """
    layout = layout or Layout()
    if is_healthy(layout):
        info = ClusterInfo.load(layout.cluster_json)
        log(f"already running: {info.apiserver_url} (kubeconfig {layout.kubeconfig})")
        if kwok_nodes:
            kwok_up(nodes=kwok_nodes, gpus_per_node=kwok_gpus_per_node, layout=layout)
        if addon_names:
            addons_up(addon_names, layout=layout)
        return info
    if any(status(layout).values()):
        log("a previous cluster is partly running; stopping it first")
    down(layout)
    try:
        info = _up(
            nodes=nodes, gpus_per_node=gpus_per_node, scrape_interval=scrape_interval, layout=layout
        )
        if kwok_nodes:
            kwok_up(nodes=kwok_nodes, gpus_per_node=kwok_gpus_per_node, layout=layout)
        if addon_names:
            addons_up(addon_names, layout=layout)
        return info
    except BaseException:
        log("start-up failed; stopping the components that did start")
        down(layout)
        raise


def _up(
    *,
    nodes: int,
    gpus_per_node: int,
    scrape_interval: str,
    layout: Layout,
) -> ClusterInfo:
    t0 = time.monotonic()
    etcd = _need("etcd", "etcd-server")
    _need("openssl", "openssl")
    bindir = binaries()
    prometheus = str(prometheus_binary())
    for d in (layout.root, layout.logs, layout.pids, layout.pods):
        d.mkdir(parents=True, exist_ok=True)
    pki.ensure_pki(layout.pki)

    ports = _pick_ports()
    info = ClusterInfo(ports=ports, pod_ip_octet=random.randint(16, 250), kube_version=KUBE_VERSION)
    server = info.apiserver_url
    pki.write_kubeconfig(layout.kubeconfig, server, layout.pki, "admin")
    for component in ("controller-manager", "scheduler", "localnode"):
        pki.write_kubeconfig(layout.component_kubeconfig(component), server, layout.pki, component)

    # The cluster is ephemeral: a fresh etcd every time it comes up.
    shutil.rmtree(layout.etcd_data, ignore_errors=True)
    shutil.rmtree(layout.prometheus_data, ignore_errors=True)
    for logfile in layout.logs.glob("*.log"):
        logfile.unlink()

    client = Client(layout)
    etcd_url = f"http://127.0.0.1:{ports.etcd_client}"
    peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
    _start(
        layout,
        "etcd",
        [
            etcd,
            "--name=localcluster",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=localcluster={peer_url}",
            "--log-level=warn",
        ],
    )

    def etcd_ok() -> tuple[bool, str]:
        code, body = client.get(f"{etcd_url}/health")
        return code == 200 and b"true" in body, body.decode(errors="replace")

    _wait("etcd /health", etcd_ok, 30, "etcd", layout)

    p = str(layout.pki)
    _start(
        layout,
        "kube-apiserver",
        [
            str(bindir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={p}/apiserver.crt",
            f"--tls-private-key-file={p}/apiserver.key",
            f"--client-ca-file={p}/ca.crt",
            "--authorization-mode=RBAC",
            # PodSecurity is on by default; named so that nobody turns it off by accident.
            "--enable-admission-plugins=PodSecurity",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub",
            f"--service-account-signing-key-file={p}/sa.key",
            "--service-cluster-ip-range=10.96.0.0/16",
            # The `kubernetes` Service endpoint may not be a loopback address.
            "--endpoint-reconciler-type=none",
            f"--requestheader-client-ca-file={p}/front-proxy-ca.crt",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p}/front-proxy-client.crt",
            f"--proxy-client-key-file={p}/front-proxy-client.key",
            "--profiling=false",
            # `kubectl logs` goes through the node agent's kubelet API (node/kubeletapi.py).
            # A node's Hostname address is its name, which nothing resolves; its
            # InternalIP is 127.0.0.1, which the agent's serving certificate names.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={p}/ca.crt",
            f"--kubelet-client-certificate={p}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={p}/apiserver-kubelet-client.key",
            # etcd 3.4 lacks RequestWatchProgress, so with WatchList on, every watch from
            # resourceVersion "" or "0" (which the server turns into a watch-list request)
            # fails at once. client-go reflectors fall back to list-then-watch, but
            # KWOK's informers watch from "0" and would see changes only on relists.
            "--feature-gates=WatchList=false",
        ],
    )

    def apiserver_ok() -> tuple[bool, str]:
        code, body = client.get(f"{server}/readyz")
        return code == 200, f"{code} {body.decode(errors='replace')[-200:]}"

    _wait("kube-apiserver /readyz", apiserver_ok, 60, "kube-apiserver", layout)

    common_auth = [
        f"--authentication-kubeconfig={layout.component_kubeconfig('controller-manager')}",
        f"--authorization-kubeconfig={layout.component_kubeconfig('controller-manager')}",
    ]
    _start(
        layout,
        "kube-controller-manager",
        [
            str(bindir / "kube-controller-manager"),
            f"--kubeconfig={layout.component_kubeconfig('controller-manager')}",
            *common_auth,
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={layout.root / 'controller-manager-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials",
            "--controllers=*",
            f"--service-account-private-key-file={p}/sa.key",
            f"--root-ca-file={p}/ca.crt",
            f"--cluster-signing-cert-file={p}/ca.crt",
            f"--cluster-signing-key-file={p}/ca.key",
            f"--flex-volume-plugin-dir={layout.root / 'flexvolume'}",
            # Default client limits (20 QPS) cap Job -> Pod creation at ~3-4/s.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
    )
    sched_config = layout.root / "scheduler-config.yaml"
    sched_config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
        f"clientConnection:\n  kubeconfig: {layout.component_kubeconfig('scheduler')}\n"
        "  qps: 200\n  burst: 400\nleaderElection:\n  leaderElect: false\n"
    )
    _start(
        layout,
        "kube-scheduler",
        [
            str(bindir / "kube-scheduler"),
            f"--config={sched_config}",
            f"--authentication-kubeconfig={layout.component_kubeconfig('scheduler')}",
            f"--authorization-kubeconfig={layout.component_kubeconfig('scheduler')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--cert-dir={layout.root / 'scheduler-certs'}",
        ],
    )

    # RBAC for Prometheus's pod discovery before Prometheus starts.
    _kubectl_apply(layout, bindir, _prometheus_rbac())
    prom_config = layout.root / "prometheus.yml"
    prom_config.write_text(render_config(server, layout.pki, scrape_interval))
    _start(
        layout,
        "prometheus",
        [
            prometheus,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={layout.prometheus_data}",
            f"--web.listen-address=127.0.0.1:{ports.prometheus}",
            "--storage.tsdb.retention.time=2d",
            "--log.level=warn",
        ],
    )
    info.save(layout.cluster_json)
    _start(
        layout,
        "localnode",
        [
            sys.executable,
            "-m",
            "localcluster.node",
            f"--nodes={nodes}",
            f"--gpus-per-node={gpus_per_node}",
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(repo_root() / "hack"),
            "PYTHONUNBUFFERED": "1",
            "LOCALCLUSTER_DIR": str(layout.root),
        },
    )

    for component, port in (
        ("kube-controller-manager", ports.controller_manager),
        ("kube-scheduler", ports.scheduler),
    ):
        url = f"https://127.0.0.1:{port}/healthz"

        def healthz(url: str = url) -> tuple[bool, str]:
            code, body = client.get(url, verify=False)
            return code == 200, f"{code} {body.decode(errors='replace')[:200]}"

        _wait(f"{component} /healthz", healthz, 60, component, layout)

    def prometheus_ok() -> tuple[bool, str]:
        code, body = client.get(f"{info.prometheus_url}/-/ready")
        return code == 200, body.decode(errors="replace")

    _wait("prometheus /-/ready", prometheus_ok, 60, "prometheus", layout)

    def nodes_ready() -> tuple[bool, str]:
        ready = _ready_nodes(client, server)
        return len(ready) >= nodes, f"ready nodes: {ready}"

    _wait("the local GPU node(s) to be Ready", nodes_ready, 60, "localnode", layout)

    def default_sa() -> tuple[bool, str]:
        code, _ = client.get(f"{server}/api/v1/namespaces/default/serviceaccounts/default")
        return code == 200, f"{code}"

    _wait("the default ServiceAccount", default_sa, 60, "kube-controller-manager", layout)
    layout.prometheus_url_file.write_text(info.prometheus_url + "\n")
    log(f"ready in {time.monotonic() - t0:.1f}s")
    log(f"  kubeconfig:  {layout.kubeconfig}")
    log(f"  apiserver:   {server}")
    log(f"  prometheus:  {info.prometheus_url}  (also in {layout.prometheus_url_file})")
    log(f"  logs:        {layout.logs}/")
    return info


def _ready_nodes(client: Client, server: str, selector: str = "") -> list[str]:
    """Nodes that are Ready and free of the not-ready taint (schedulable at once)."""
    query = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
    code, body = client.get(f"{server}/api/v1/nodes{query}")
    if code != 200:
        return []
    return [
        n["metadata"]["name"]
        for n in json.loads(body)["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
        and not any(
            t.get("key") == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", [])
        )
    ]


def kwok_up(*, nodes: int, gpus_per_node: int, layout: Layout | None = None) -> list[str]:
    """Start KWOK beside the running cluster (unless it runs already) and make sure the
    simulated GPU nodes kwok-gpu-0..nodes-1 exist and are Ready; returns their names.

    Nodes that exist already are left as they are (their GPU count included).
    """
    layout = layout or Layout()
    info = ClusterInfo.load(layout.cluster_json)
    binary = kwok_binary()
    if procs.recorded_pid(layout.pidfile("kwok")) is None:
        # KWOK acts for many nodes at once, like the local node agent: same identity.
        kubeconfig = layout.component_kubeconfig("kwok")
        pki.write_kubeconfig(kubeconfig, info.apiserver_url, layout.pki, "localnode")
        _start(
            layout,
            "kwok",
            kwok.argv(binary, kubeconfig),
            # KWOK would also read ~/.kwok/kwok.yaml: keep a developer's own out of it.
            env={**os.environ, "KWOK_WORKDIR": str(layout.root / "kwok")},
        )
        log(f"started kwok (managing nodes labelled {kwok.SELECTOR})")
    _kubectl_apply(layout, binaries(), kwok.nodes_manifest(nodes, gpus_per_node))
    names = kwok.node_names(nodes)
    client = Client(layout)

    def ready() -> tuple[bool, str]:
        seen = set(_ready_nodes(client, info.apiserver_url, kwok.SELECTOR))
        missing = [n for n in names if n not in seen]
        return not missing, f"not ready yet: {missing[:5]}"

    _wait(f"{nodes} KWOK node(s) to be Ready", ready, 60, "kwok", layout)
    log(f"{nodes} simulated GPU node(s) ready ({kwok.NODE_PREFIX}*, {gpus_per_node} GPUs each)")
    return names


def addons_up(names: list[str], *, layout: Layout | None = None) -> None:
    """Start the named add-ons (kueue, jobset) beside the running cluster, each once:
    build it (cached), apply its CRDs, start its controller, and register its webhooks
    only once they answer (a Job create must never meet a webhook that is not there)."""
    layout = layout or Layout()
    info = ClusterInfo.load(layout.cluster_json)
    bindir = binaries()
    kubectl = [str(bindir / "kubectl"), f"--kubeconfig={layout.kubeconfig}"]
    client = Client(layout)
    for name in addons.parse(",".join(names)):
        if procs.recorded_pid(layout.pidfile(name)) is not None:
            log(f"{name} already running")
            continue
        t0 = time.monotonic()
        try:
            home = addons.build(name)
        except RuntimeError as e:
            raise ClusterError(str(e)) from None
        # CRDs first: the controller sets up its watches and indexes at start.
        result = subprocess.run(
            [*kubectl, "apply", "--server-side", "--force-conflicts"]
            + [f"--filename={c}" for c in addons.crd_files(home)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"applying {name}'s CRDs failed: {result.stderr.strip()[-2000:]}")
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Established", "--timeout=60s"]
            + [f"--filename={c}" for c in addons.crd_files(home)],
            capture_output=True,
            check=False,
        )
        others = {a for a in addons.ADDONS if procs.recorded_pid(layout.pidfile(a)) is not None}
        started = addons.start(
            name, home, layout, info, lambda n, argv, env: _start(layout, n, argv, env), others
        )
        health = f"http://127.0.0.1:{started['ports']['health']}/readyz"

        def ready(url: str = health) -> tuple[bool, str]:
            code, body = client.get(url)
            return code == 200, f"{code} {body.decode(errors='replace')[:200]}"

        _wait(f"{name} /readyz", ready, 120, name, layout)
        _wait(f"{name}'s webhook server", _serving(started["ports"]["webhook"]), 60, name, layout)
        _kubectl_apply(layout, bindir, addons.webhooks(name, started))
        log(f"{name} ready in {time.monotonic() - t0:.1f}s (log {layout.log(name)})")


def addons_down(names: list[str], *, layout: Layout | None = None) -> None:
    """Stop the named add-ons and unregister their webhooks (first: a webhook whose
    server is gone fails every create it intercepts); their CRDs and objects stay."""
    layout = layout or Layout()
    kubectl = [str(binaries() / "kubectl"), f"--kubeconfig={layout.kubeconfig}"]
    for name in addons.parse(",".join(names)):
        subprocess.run(
            [
                *kubectl,
                "delete",
                "mutatingwebhookconfigurations,validatingwebhookconfigurations",
                "-l",
                f"{addons.ADDON_LABEL}={name}",
                "--ignore-not-found",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if procs.stop(layout.pidfile(name)):
            log(f"stopped {name}")


def _serving(port: int) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True, ""
        except OSError as e:
            return False, str(e)

    return check


def kwok_down(layout: Layout | None = None) -> None:
    """Delete the simulated nodes and stop KWOK; the rest of the cluster keeps running.

    Pods still bound to those nodes are left to the pod garbage collector: delete
    them (or their namespace) first, while KWOK still runs to finish them.
    """
    layout = layout or Layout()
    if layout.cluster_json.exists():
        result = subprocess.run(
            [
                str(binaries() / "kubectl"),
                f"--kubeconfig={layout.kubeconfig}",
                "delete",
                "nodes",
                "-l",
                kwok.SELECTOR,
                "--wait=false",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"deleting the KWOK nodes failed: {result.stderr.strip()}")
    if procs.stop(layout.pidfile("kwok")):
        log("stopped kwok")


def _start(layout: Layout, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    # What started it, so that one component can be stopped and started again alone
    # (the reliability suite takes the API server, Prometheus or the node away).
    recipe = layout.pidfile(name).with_suffix(".argv.json")
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(json.dumps({"argv": argv, "env": env}))
    procs.start(name, argv, log=layout.log(name), pidfile=layout.pidfile(name), env=env)


def stop_component(name: str, *, layout: Layout | None = None) -> None:
    """Stop one running component (SIGTERM, then SIGKILL); `start_component` brings it back."""
    layout = layout or Layout()
    if not procs.stop(layout.pidfile(name), grace=40.0 if name == "localnode" else 10.0):
        raise ClusterError(f"{name} is not running")


def crash_node(*, layout: Layout | None = None) -> int:
    """The local node dies at once with every pod process it ran, as on a power loss.

    Returns how many pod processes were killed. Pod processes run in their own
    sessions (as containers do), so they are found by their working directory,
    which is their pod's sandbox unless the pod set `workingDir`.
    """
    layout = layout or Layout()
    pid = procs.recorded_pid(layout.pidfile("localnode"))
    if pid is None:
        raise ClusterError("localnode is not running")
    os.killpg(pid, signal.SIGKILL)
    pods_dir = str(layout.pods.resolve())
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == pods_dir or cwd.startswith(pods_dir + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    layout.pidfile("localnode").unlink(missing_ok=True)
    return killed


def start_component(name: str, *, layout: Layout | None = None) -> None:
    """Start a stopped component again, as `up` started it."""
    layout = layout or Layout()
    if procs.recorded_pid(layout.pidfile(name)) is not None:
        raise ClusterError(f"{name} is already running")
    recipe = json.loads(layout.pidfile(name).with_suffix(".argv.json").read_text())
    _start(layout, name, recipe["argv"], recipe["env"])
    info = ClusterInfo.load(layout.cluster_json)
    ready = {
        "kube-apiserver": f"{info.apiserver_url}/readyz",
        "prometheus": f"{info.prometheus_url}/-/ready",
    }.get(name)
    if ready is not None:
        client = Client(layout)

        def ok() -> tuple[bool, str]:
            code, body = client.get(ready)
            return code == 200, body.decode(errors="replace")

        _wait(ready, ok, 60, name, layout)


def _prometheus_rbac() -> str:
    return """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubetune-localcluster-prometheus}
rules:
# Pod discovery (kubernetes_sd_configs role pod) lists and watches pods everywhere.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubetune-localcluster-prometheus}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kubetune-localcluster-prometheus
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kubetune-prometheus}
"""


def _kubectl_apply(layout: Layout, bindir: Path, manifest: str) -> None:
    result = subprocess.run(
        [str(bindir / "kubectl"), f"--kubeconfig={layout.kubeconfig}", "apply", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"kubectl apply failed: {result.stderr.strip()}")
