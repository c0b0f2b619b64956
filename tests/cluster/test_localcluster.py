"""The local cluster behaves like Kubernetes where kubetune depends on it."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.conftest import Cluster, wait_for

GPU = "nvidia.com/gpu"


def python_pod(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python3", "-c", textwrap.dedent(code)],
    }
    container.update(spec.pop("container", {}))
    labels = spec.pop("labels", {})
    annotations = spec.pop("annotations", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def pod_phase(cluster: Cluster, ns: str, name: str, *phases: str) -> tuple[bool, Any]:
    pod = cluster.core.read_namespaced_pod(name, ns)
    return pod.status.phase in phases, pod.status


def terminated(cluster: Cluster, ns: str, name: str) -> Any:
    status = wait_for(
        lambda: pod_phase(cluster, ns, name, "Succeeded", "Failed"), 60, f"{name} done"
    )
    return status.container_statuses[0].state.terminated


def pid_of(cluster: Cluster, ns: str, name: str) -> int:
    status = wait_for(lambda: pod_phase(cluster, ns, name, "Running"), 60, f"{name} running")
    return int(status.container_statuses[0].container_id.split("://")[1])


def test_gpu_node_is_ready_and_openapi_is_served(cluster: Cluster) -> None:
    nodes = cluster.core.list_node().items
    assert nodes, "no Node registered"
    node = nodes[0]
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"
    assert node.status.capacity[GPU] == "4"
    assert node.status.allocatable[GPU] == "4"
    assert not any(t.key == "node.kubernetes.io/not-ready" for t in node.spec.taints or [])
    # A broken OpenAPI handler (seen with a mismatched Go) makes kubectl apply fail.
    openapi = cluster.get("/openapi/v2")
    assert openapi.status_code == 200, openapi.text[:300]
    assert "io.k8s.api.batch.v1.Job" in openapi.json()["definitions"]


def test_job_metrics_are_scraped_by_prometheus(cluster: Cluster, namespace: str) -> None:
    # The program serves a gauge on its pod IP and exits once Prometheus has scraped it.
    code = """
        import os, threading, time
        from http.server import ThreadingHTTPServer
        from prometheus_client import Gauge, MetricsHandler
        Gauge("kubetune_test_answer", "a test gauge").set(42)
        scraped = threading.Event()
        class Handler(MetricsHandler):
            def do_GET(self):
                super().do_GET()
                scraped.set()
        server = ThreadingHTTPServer((os.environ["POD_IP"], 9100), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        assert scraped.wait(120), "never scraped"
        time.sleep(0.5)
    """
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    pod = python_pod(
        "scraped",
        code,
        labels={"app": "metrics-probe", "kubetune.dev/scrape": "true"},
        annotations={"prometheus.io/port": "9100"},
        container={"env": [pod_ip]},
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "scraped"},
        "spec": {"backoffLimit": 0, "template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
    }
    cluster.batch.create_namespaced_job(namespace, job)

    def complete() -> tuple[bool, Any]:
        conds = cluster.batch.read_namespaced_job("scraped", namespace).status.conditions or []
        return any(c.type == "Complete" and c.status == "True" for c in conds), conds

    wait_for(complete, 120, "the Job to complete")
    # The pod has finished, so its target is gone and Prometheus marked the series
    # stale: an instant query finds nothing, a range function finds the samples.
    query = (
        f'last_over_time(kubetune_test_answer{{namespace="{namespace}", app="metrics-probe"}}[10m])'
    )
    series = wait_for(lambda: (bool(r := cluster.prometheus_query(query)), r), 30, query)
    labels = series[0]["metric"]
    assert series[0]["value"][1] == "42"
    assert labels["pod"].startswith("scraped-")
    assert labels["kubetune_dev_scrape"] == "true"


@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["clean-exit", "sigkill"])
def test_deleted_pod_process_is_gone_within_grace(
    cluster: Cluster, namespace: str, ignores_sigterm: bool
) -> None:
    grace = 3
    code = "import signal, time\n"
    if ignores_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(600)\n"
    cluster.core.create_namespaced_pod(
        namespace, python_pod("sleeper", code, terminationGracePeriodSeconds=grace)
    )
    pid = pid_of(cluster, namespace, "sleeper")
    assert os.path.exists(f"/proc/{pid}")
    t0 = time.monotonic()
    cluster.core.delete_namespaced_pod("sleeper", namespace)
    wait_for(lambda: (not os.path.exists(f"/proc/{pid}"), pid), grace + 5, f"pid {pid} to exit")
    elapsed = time.monotonic() - t0
    # Within the grace period (plus the agent's reaction time): SIGTERM ends a
    # well-behaved process at once, SIGKILL ends one that ignores SIGTERM.
    assert elapsed < grace + 2, f"process lived {elapsed:.1f}s after deletion (grace {grace}s)"
    if not ignores_sigterm:
        assert elapsed < grace, "a process that honours SIGTERM should not wait for SIGKILL"

    def gone() -> tuple[bool, str]:
        try:
            cluster.core.read_namespaced_pod("sleeper", namespace)
        except ApiException as e:
            return e.status == 404, "deleted"
        return False, "pod object still present"

    wait_for(gone, 15, "the pod object to be removed")


def test_job_wanting_more_gpus_than_any_node_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    pod = python_pod("greedy", "print('never')", container={"resources": {"limits": {GPU: "9"}}})
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "greedy"},
        "spec": {"template": {"spec": pod["spec"]}},
    }
    cluster.batch.create_namespaced_job(namespace, job)

    def failed_scheduling() -> tuple[bool, Any]:
        events = cluster.core.list_namespaced_event(namespace).items
        msgs = [e.message for e in events if e.reason == "FailedScheduling"]
        return any(f"Insufficient {GPU}" in m for m in msgs), msgs

    wait_for(failed_scheduling, 60, "a FailedScheduling event")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=greedy").items
    assert [p.status.phase for p in pods] == ["Pending"]
    assert pods[0].spec.node_name is None


def test_concurrent_gpu_pods_get_different_devices(cluster: Cluster, namespace: str) -> None:
    # Each pod reports its devices, then waits until the other has started too.
    code = """
        import os, pathlib, time
        pathlib.Path("/dev/termination-log").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
        time.sleep(3)
    """
    for name in ("gpu-a", "gpu-b"):
        pod = python_pod(name, code, container={"resources": {"limits": {GPU: "1"}}})
        cluster.core.create_namespaced_pod(namespace, pod)

    def both_running() -> tuple[bool, list[str]]:
        phases = [p.status.phase for p in cluster.core.list_namespaced_pod(namespace).items]
        return phases == ["Running", "Running"], phases

    wait_for(both_running, 60, "both GPU pods running at once")
    devices = [terminated(cluster, namespace, n).message for n in ("gpu-a", "gpu-b")]
    assert all(d.isdigit() for d in devices), devices
    assert devices[0] != devices[1]


def test_termination_message_is_reported(cluster: Cluster, namespace: str) -> None:
    code = """
        import json, pathlib
        pathlib.Path("/dev/termination-log").write_text(json.dumps({"val_accuracy": 0.97}))
    """
    host_file = Path("/dev/termination-log")
    before = host_file.read_bytes() if host_file.exists() else None
    cluster.core.create_namespaced_pod(namespace, python_pod("reporter", code))
    state = terminated(cluster, namespace, "reporter")
    assert state.exit_code == 0
    assert state.reason == "Completed"
    assert state.message == '{"val_accuracy": 0.97}'
    # The default path belongs to each pod alone: the host's file is untouched.
    assert (host_file.read_bytes() if host_file.exists() else None) in (before, b"")


def test_custom_termination_path_and_fallback_to_logs(cluster: Cluster, namespace: str) -> None:
    custom = python_pod(
        "custom-path",
        "open('/tmp/kubetune-result', 'w').write('custom')",
        container={"terminationMessagePath": "/tmp/kubetune-result"},
    )
    fallback = python_pod(
        "fallback",
        "import sys; print('boom: the reason'); sys.exit(3)",
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    cluster.core.create_namespaced_pod(namespace, custom)
    cluster.core.create_namespaced_pod(namespace, fallback)
    assert terminated(cluster, namespace, "custom-path").message == "custom"
    state = terminated(cluster, namespace, "fallback")
    assert state.exit_code == 3
    assert state.reason == "Error"
    assert "boom: the reason" in state.message
    assert cluster.core.read_namespaced_pod("fallback", namespace).status.phase == "Failed"


def test_env_from_field_refs_and_unique_pod_ips(cluster: Cluster, namespace: str) -> None:
    code = """
        import json, os, pathlib, shutil, sys
        keys = ["MY_NAME", "MY_NS", "MY_IP", "MY_TEAM", "MY_NOTE", "GREETING"]
        out = {k: os.environ.get(k) for k in keys}
        out["python"] = sys.executable
        out["python3_on_path"] = shutil.which("python3")
        pathlib.Path("/dev/termination-log").write_text(json.dumps(out))
    """
    env = [
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {
            "name": "MY_NOTE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}},
        },
        {"name": "GREETING", "value": "hello $(MY_NAME)"},
    ]
    for name in ("env-a", "env-b"):
        pod = python_pod(
            name,
            code,
            labels={"team": "tuning"},
            annotations={"note": "hi"},
            container={"env": env},
        )
        cluster.core.create_namespaced_pod(namespace, pod)
    seen = {}
    for name in ("env-a", "env-b"):
        out = json.loads(terminated(cluster, namespace, name).message)
        pod = cluster.core.read_namespaced_pod(name, namespace)
        assert out["MY_NAME"] == name
        assert out["MY_NS"] == namespace
        assert out["MY_TEAM"] == "tuning"
        assert out["MY_NOTE"] == "hi"
        assert out["GREETING"] == f"hello {name}"
        assert out["MY_IP"] == pod.status.pod_ip
        assert out["MY_IP"].startswith("127.")
        # `python3` in a pod is the project's own environment.
        assert out["python3_on_path"] == str(Path(sys.executable).parent / "python3")
        seen[name] = out["MY_IP"]
    assert seen["env-a"] != seen["env-b"]


@pytest.mark.parametrize(
    "namespace", [{"pod-security.kubernetes.io/enforce": "restricted"}], indirect=True
)
def test_restricted_namespace_rejects_privileged_pod(cluster: Cluster, namespace: str) -> None:
    privileged = python_pod(
        "privileged", "print(1)", container={"securityContext": {"privileged": True}}
    )
    with pytest.raises(ApiException) as err:
        cluster.core.create_namespaced_pod(namespace, privileged)
    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body
    assert "privileged" in err.value.body
    # A pod that meets the restricted level is admitted and runs.
    compliant = python_pod(
        "compliant",
        "print('ok')",
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        container={
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
        },
    )
    cluster.core.create_namespaced_pod(namespace, compliant)
    assert terminated(cluster, namespace, "compliant").exit_code == 0


def test_volume_over_the_projects_own_directory_does_not_break_the_pod(
    cluster: Cluster, namespace: str
) -> None:
    # A volume mounted over a directory that holds the project (its Python, the pod
    # sandbox) must not hide them from the pod: CI may check the project out under /tmp.
    shadowed = str(Path(__file__).resolve().parents[3])
    code = """
        import os, pathlib, sys
        here = sorted(os.listdir(os.environ["SHADOWED"]))
        pathlib.Path("/dev/termination-log").write_text(sys.executable + " " + ",".join(here))
    """
    pod = python_pod(
        "shadow",
        code,
        volumes=[{"name": "scratch", "emptyDir": {}}],
        container={
            "volumeMounts": [{"name": "scratch", "mountPath": shadowed}],
            "env": [{"name": "SHADOWED", "value": shadowed}],
        },
    )
    cluster.core.create_namespaced_pod(namespace, pod)
    state = terminated(cluster, namespace, "shadow")
    assert state.exit_code == 0, state.message
    assert state.message.startswith(sys.executable)


def test_probes_gate_readiness_and_a_failing_liveness_probe_restarts_the_container(
    cluster: Cluster, namespace: str
) -> None:
    """The local node runs the probes a pod declares, as a kubelet does."""
    serving = python_pod(
        "serving",
        """
        import http.server, os, time
        time.sleep(3)  # not ready until it serves
        handler = http.server.SimpleHTTPRequestHandler
        http.server.HTTPServer((os.environ["POD_IP"], 8000), handler).serve_forever()
        """,
        restartPolicy="Always",
        container={
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"name": "http", "containerPort": 8000}],
            "livenessProbe": {
                "tcpSocket": {"port": 8000},
                "initialDelaySeconds": 5,
                "periodSeconds": 1,
            },
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        },
    )
    stuck = python_pod(
        "stuck",
        "import time; time.sleep(3600)",
        restartPolicy="Always",
        terminationGracePeriodSeconds=1,
        container={
            "livenessProbe": {
                "exec": {"command": ["python3", "-c", "import sys; sys.exit(1)"]},
                "periodSeconds": 1,
                "failureThreshold": 2,
            }
        },
    )
    cluster.core.create_namespaced_pod(namespace, serving)
    cluster.core.create_namespaced_pod(namespace, stuck)

    def ready(name: str) -> tuple[bool, Any]:
        pod = cluster.core.read_namespaced_pod(name, namespace)
        conds = {c.type: c.status for c in pod.status.conditions or []}
        return conds.get("Ready") == "True", (pod.status.phase, conds)

    wait_for(lambda: pod_phase(cluster, namespace, "serving", "Running"), 30, "serving running")
    assert not ready("serving")[0], "not ready before its readiness probe passes"
    wait_for(lambda: ready("serving"), 30, "the serving pod to become ready")

    def restarted() -> tuple[bool, Any]:
        status = cluster.core.read_namespaced_pod("stuck", namespace).status
        return status.container_statuses[0].restart_count >= 1, status.container_statuses[0]

    wait_for(restarted, 30, "the stuck container to be restarted by its liveness probe")
    events = cluster.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=stuck"
    ).items
    reasons = {e.reason: e.message for e in events}
    assert "Liveness probe failed" in reasons["Unhealthy"]
    assert "will be restarted" in reasons["Killing"]
    time.sleep(3)  # past several liveness periods of the healthy pod
    healthy = cluster.core.read_namespaced_pod("serving", namespace).status
    assert healthy.container_statuses[0].restart_count == 0
    assert healthy.container_statuses[0].ready
