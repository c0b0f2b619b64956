"""The node agent: registers Nodes, heartbeats, and hands bound pods to runners."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from localcluster.node.hosts import HostsFiles, hostname
from localcluster.node.kubeletapi import KubeletServer
from localcluster.node.runner import PodRunner
from localcluster.node.volumes import decode_secret
from localcluster.state import KUBE_VERSION, ClusterInfo, Layout

HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 40
GPU = "nvidia.com/gpu"
STRATEGIC = "application/strategic-merge-patch+json"


def log(msg: str) -> None:
    print(f"localnode: {msg}", file=sys.stderr, flush=True)


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeSpec:
    name: str
    gpus: int
    cpu: str
    memory: str
    pods: int
    free_gpus: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.free_gpus = set(range(self.gpus))


def gpu_request(pod: Mapping[str, Any]) -> int:
    """GPUs a pod needs: the sum over its containers (init containers run one at a time)."""

    def of(c: Mapping[str, Any]) -> int:
        res = c.get("resources") or {}
        return int((res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU) or 0)

    spec = pod["spec"]
    main = sum(of(c) for c in spec["containers"])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


class Agent:
    def __init__(self, nodes: list[NodeSpec], layout: Layout) -> None:
        self.layout = layout
        self.info = ClusterInfo.load(layout.cluster_json)
        api = config.new_client_from_config(str(layout.component_kubeconfig("localnode")))
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.nodes = {n.name: n for n in nodes}
        self.runners: dict[str, PodRunner] = {}
        self.gpus_of: dict[str, tuple[str, list[int]]] = {}
        self.hosts = HostsFiles()  # each pod's /etc/hosts (see hosts.py)
        self.lock = threading.Lock()
        self.next_ip = 1
        self.stopping = threading.Event()
        images = Path(__file__).with_name("images.yaml")
        self.images: dict[str, dict[str, list[str]]] = yaml.safe_load(images.read_text()) or {}
        self.bin_dir = str(Path(sys.executable).parent)
        self.registered_at = now()
        self.kubelet_port = 0  # the kubelet API's port, once it serves (see run())

    # -- Node objects -----------------------------------------------------------------

    def _node_status(self, n: NodeSpec) -> dict[str, Any]:
        t = now()
        since = self.registered_at
        capacity = {
            "cpu": n.cpu,
            "memory": n.memory,
            "pods": str(n.pods),
            GPU: str(n.gpus),
            "ephemeral-storage": "100Gi",
        }

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": since,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond(
                    "Ready", "True", "KubeletReady", "local GPU node agent is posting ready status"
                ),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": n.name},
            ],
            # Where the API server sends `kubectl logs` (node/kubeletapi.py).
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": f"{KUBE_VERSION}-localnode",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "localnode://processes",
                "osImage": "local processes",
                "kernelVersion": "",
                "machineID": n.name,
                "systemUUID": n.name,
                "bootID": n.name,
            },
        }

    def register(self) -> None:
        for n in self.nodes.values():
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": n.name,
                    "labels": {
                        "kubernetes.io/hostname": n.name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "node.kubernetes.io/instance-type": "kubetune-localnode",
                        "nvidia.com/gpu.present": "true" if n.gpus else "false",
                        "kubetune.dev/local-node": "true",
                    },
                },
                "spec": {},
            }
            try:
                self.core.create_node(body)
                log(f"registered node {n.name} ({n.gpus} GPUs)")
            except ApiException as e:
                if e.status != 409:
                    raise
            self.core.patch_node_status(
                n.name, {"status": self._node_status(n)}, _content_type=STRATEGIC
            )
            self._renew_lease(n)

    def heartbeat(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            for n in self.nodes.values():
                try:
                    self._renew_lease(n)
                    self.core.patch_node_status(
                        n.name, {"status": self._node_status(n)}, _content_type=STRATEGIC
                    )
                except Exception as e:  # a missed beat is retried on the next tick
                    log(f"heartbeat for {n.name} failed: {e}")

    def _renew_lease(self, n: NodeSpec) -> None:
        ns = "kube-node-lease"
        spec = {
            "holderIdentity": n.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_now(),
        }
        try:
            self.coord.patch_namespaced_lease(n.name, ns, {"spec": spec}, _content_type=STRATEGIC)
        except ApiException as e:
            if e.status != 404:
                raise
            node = self.core.read_node(n.name)
            body = {
                "metadata": {
                    "name": n.name,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": n.name,
                            "uid": node.metadata.uid,
                        }
                    ],
                },
                "spec": spec,
            }
            self.coord.create_namespaced_lease(ns, body)

    # -- the runner's Host protocol -------------------------------------------------------

    def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            if kind == "configMap":
                cm = self.core.read_namespaced_config_map(name, namespace)
                return dict(cm.data or {})
            secret = self.core.read_namespaced_secret(name, namespace)
            return decode_secret(secret.data)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def token(self, pod: Mapping[str, Any], sa: str, audience: str | None, seconds: int) -> str:
        meta = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        result = self.core.create_namespaced_service_account_token(
            sa, meta["namespace"], {"spec": spec}
        )
        return str(result.status.token)

    def patch_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> bool:
        """Report a pod's status; retried until the API server takes it (as the kubelet's
        status manager does), so an outage delays a pod's result but never loses it."""
        meta = pod["metadata"]
        attempt = 0
        while not self.stopping.is_set():
            try:
                self.core.patch_namespaced_pod_status(
                    meta["name"], meta["namespace"], {"status": status}, _content_type=STRATEGIC
                )
                return True
            except ApiException as e:
                if e.status == 404:
                    return False
                problem = f"{e.status} {e.reason}"
            except Exception as e:
                problem = str(e)
            if attempt % 10 == 0:
                log(f"status of {meta['namespace']}/{meta['name']} (try {attempt + 1}): {problem}")
            self.stopping.wait(min(0.2 * 2**attempt, 5.0))
            attempt += 1
        return False

    def finished(self, uid: str) -> None:
        self.hosts.remove(uid)
        with self.lock:
            runner = self.runners.get(uid)
            node_gpus = self.gpus_of.pop(uid, None)
            if node_gpus:
                node, gpus = node_gpus
                self.nodes[node].free_gpus.update(gpus)
        if runner is not None and runner.stopping():
            self._delete_finally(runner.pod)

    def base_env(self, pod: Mapping[str, Any]) -> dict[str, str]:
        path = f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return {
            "PATH": path,
            "HOSTNAME": hostname(pod),
            # In-cluster configuration finds the API server through these.
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.info.ports.apiserver),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.info.ports.apiserver),
            "PYTHONUNBUFFERED": "1",
        }

    def event(self, pod: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """An Event about a pod, as the kubelet posts them (best effort)."""
        meta = pod["metadata"]
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:
            log(f"event {reason} for {meta['namespace']}/{meta['name']}: {e.reason}")

    def entrypoint(self, image: str) -> tuple[list[str], list[str]] | None:
        name = image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: name.rindex(":")]
        known = self.images.get(name)
        if known is None:
            return None
        return list(known.get("entrypoint") or []), list(known.get("cmd") or [])

    # -- pods -------------------------------------------------------------------------------

    def _allocate_ip(self) -> str:
        n = self.next_ip
        self.next_ip += 1
        # 127.<cluster octet>.<hi>.<lo>: skip .0 and .255 host parts for clarity.
        while (n & 0xFF) in (0, 255):
            n = self.next_ip
            self.next_ip += 1
        return str(IPv4Address(f"127.{self.info.pod_ip_octet}.0.0") + n)

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        node = pod["spec"].get("nodeName")
        if node not in self.nodes:
            return
        with self.lock:
            runner = self.runners.get(uid)
        if kind == "DELETED":
            if runner is not None:
                runner.request_stop(0)
                if not runner.is_alive():
                    # Ended and gone without a graceful delete (a finished pod is deleted
                    # at once): forget it, or a new pod of that name would show its logs.
                    with self.lock:
                        self.runners.pop(uid, None)
            return
        if meta.get("deletionTimestamp"):
            if runner is not None and runner.is_alive():
                runner.request_stop(float(meta.get("deletionGracePeriodSeconds") or 0))
            else:
                self._delete_finally(pod)
            return
        phase = pod.get("status", {}).get("phase")
        if runner is not None or phase in ("Succeeded", "Failed"):
            return
        if phase == "Running":
            # Bound to us and running, but no process: the agent restarted and lost it.
            self.patch_status(
                pod,
                {
                    "phase": "Failed",
                    "reason": "NodeRestarted",
                    "message": "the local node agent restarted",
                },
            )
            return
        self._admit(pod, node)

    def _admit(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        want = gpu_request(pod)
        with self.lock:
            free = sorted(self.nodes[node].free_gpus)
            if want > len(free):
                # The scheduler should never bind this; reject it as a kubelet would.
                self.patch_status(
                    pod,
                    {
                        "phase": "Failed",
                        "reason": "UnexpectedAdmissionError",
                        "message": f"Allocate failed: want {want} {GPU}, {len(free)} free",
                    },
                )
                return
            gpus = free[:want]
            self.nodes[node].free_gpus.difference_update(gpus)
            self.gpus_of[meta["uid"]] = (node, gpus)
            sandbox = self.layout.pods / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
            runner = PodRunner(self, pod, self._allocate_ip(), "127.0.0.1", gpus, sandbox)
            self.runners[meta["uid"]] = runner
        self.hosts.add(meta["uid"], pod, runner.pod_ip, runner.hosts_file)
        gpu_note = f", GPUs {gpus}" if gpus else ""
        log(f"starting pod {runner.pod_key} on {node} ip {runner.pod_ip}{gpu_note}")
        runner.start()

    def runner_for(self, namespace: str, name: str) -> PodRunner | None:
        """The pod of that name this agent runs or ran, for its logs: the newest, should a
        deleted one of the same name still be on its way out."""
        with self.lock:
            found = [r for r in self.runners.values() if r.pod_key == f"{namespace}/{name}"]
        return found[-1] if found else None

    def _delete_finally(self, pod: Mapping[str, Any]) -> None:
        """The kubelet's last word on a deleted pod: remove it with grace 0."""
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions={"uid": meta["uid"]}
                ),
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log(f"final delete of {meta['namespace']}/{meta['name']}: {e.status} {e.reason}")
        with self.lock:
            self.runners.pop(meta["uid"], None)

    def watch_pods(self, node: str) -> None:
        """List, then watch from the list's resourceVersion; relist on expiry.

        As the kubelet does: only the pods bound to `node` (a server-side field
        selector), read as plain JSON. Every pod event reaches this one thread on the way
        from a pod bound to its process started, so it neither sees the cluster's other
        pods nor turns each event into client model objects it would not use."""
        selector = f"spec.nodeName={node}"
        while not self.stopping.is_set():
            try:
                raw = self.core.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False
                )
                listing = json.loads(raw.data)
                for item in listing["items"]:
                    self.on_pod("ADDED", item)
                resp = self.core.list_pod_for_all_namespaces(
                    field_selector=selector,
                    resource_version=listing["metadata"]["resourceVersion"],
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    watch=True,
                    _preload_content=False,
                )
                try:
                    for line in iter_resp_lines(resp):
                        if self.stopping.is_set():
                            break
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # 410 Gone and the like: relist
                            status = event["object"]
                            log(f"pod watch on {node}: {status.get('code')} {status.get('reason')}")
                            break
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self.on_pod(event["type"], event["object"])
                finally:
                    resp.release_conn()
            except Exception as e:
                if not self.stopping.is_set():
                    log(f"pod watch on {node}: {type(e).__name__}: {e}; relisting")
                    time.sleep(1)

    def shutdown(self, *_: object) -> None:
        self.stopping.set()

    def stop_all_pods(self) -> None:
        with self.lock:
            runners = list(self.runners.values())
        for r in runners:
            r.request_stop(float(r.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        for r in runners:
            r.join(timeout=35)


def run(nodes: list[NodeSpec]) -> None:
    agent = Agent(nodes, Layout())
    signal.signal(signal.SIGTERM, agent.shutdown)
    signal.signal(signal.SIGINT, agent.shutdown)
    # Serving before the nodes register, so that their status names the real port.
    kubelet_api = KubeletServer(agent.runner_for, agent.stopping, agent.layout.pki)
    kubelet_api.start()
    agent.kubelet_port = kubelet_api.port
    agent.register()
    threading.Thread(target=agent.heartbeat, name="heartbeat", daemon=True).start()
    for node in agent.nodes:
        threading.Thread(
            target=agent.watch_pods, args=(node,), name=f"pod-watch-{node}", daemon=True
        ).start()
    agent.stopping.wait()
    log("stopping: terminating every pod")
    agent.stop_all_pods()
    log("stopped")
