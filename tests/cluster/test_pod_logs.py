"""`kubectl logs` works on the local cluster as on a real one (the node agent serves
the kubelet's container-log API)."""

from __future__ import annotations

import queue
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from localcluster import cluster as localcluster
from tests.conftest import Cluster, wait_for


def python_pod(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python3", "-u", "-c", textwrap.dedent(code)],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def kubectl(cluster: Cluster) -> list[str]:
    """kubectl's command line, for the runs that need a Popen or a timeout."""
    return [str(localcluster.binaries() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]


def phase(cluster: Cluster, namespace: str, name: str, *phases: str) -> tuple[bool, str]:
    pod = cluster.core.read_namespaced_pod(name, namespace)
    return pod.status.phase in phases, str(pod.status.phase)


def finished(cluster: Cluster, namespace: str, name: str) -> None:
    done = wait_for(lambda: phase(cluster, namespace, name, "Succeeded", "Failed"), 60, name)
    assert done == "Succeeded", done


def test_logs_of_a_finished_pod_whole_tail_and_limited(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(
        namespace, python_pod("talker", "for i in range(5): print(f'line {i}')")
    )
    finished(cluster, namespace, "talker")

    logs = cluster.kubectl("logs", "-n", namespace, "talker")
    assert logs.stdout == "".join(f"line {i}\n" for i in range(5))
    assert cluster.kubectl("logs", "-n", namespace, "talker", "--tail=1").stdout == "line 4\n"
    limited = cluster.kubectl("logs", "-n", namespace, "talker", "--limit-bytes=6")
    assert limited.stdout == "line 0"
    # The Python client (kubetune's `logs` command) goes the same way.
    read = cluster.core.read_namespaced_pod_log("talker", namespace, tail_lines=2)
    assert read == "line 3\nline 4\n"

    previous = cluster.kubectl("logs", "-n", namespace, "talker", "--previous", check=False)
    assert previous.returncode != 0
    assert 'previous terminated container "main" in pod "talker" not found' in previous.stderr


def test_logs_previous_shows_the_run_before_a_restart(cluster: Cluster, namespace: str) -> None:
    # Fails on its first run, succeeds on its second; the emptyDir outlives the first.
    code = """
        import os, sys
        if os.path.exists("/state/ran"):
            print("second run")
            sys.exit(0)
        open("/state/ran", "w").close()
        print("first run")
        sys.exit(1)
    """
    pod = python_pod(
        "flaky",
        code,
        restartPolicy="OnFailure",
        volumes=[{"name": "state", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "state", "mountPath": "/state"}]},
    )
    cluster.core.create_namespaced_pod(namespace, pod)
    finished(cluster, namespace, "flaky")

    assert cluster.kubectl("logs", "-n", namespace, "flaky").stdout == "second run\n"
    previous = cluster.kubectl("logs", "-n", namespace, "flaky", "--previous")
    assert previous.stdout == "first run\n"


def test_logs_follow_streams_new_output_and_ends_when_the_container_exits(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # The container prints a line, then more only once the test says so (a file in a
    # hostPath volume), so the later lines are surely printed after `logs -f` began.
    code = """
        import os, time
        print("waiting", flush=True)
        while not os.path.exists("/trigger/go"):
            time.sleep(0.1)
        for i in range(3):
            print(f"after {i}", flush=True)
            time.sleep(0.3)
    """
    pod = python_pod(
        "streamer",
        code,
        volumes=[{"name": "trigger", "hostPath": {"path": str(tmp_path), "type": "Directory"}}],
        container={"volumeMounts": [{"name": "trigger", "mountPath": "/trigger"}]},
    )
    cluster.core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: phase(cluster, namespace, "streamer", "Running"), 60, "streamer running")

    follow = subprocess.Popen(
        [*kubectl(cluster), "logs", "-f", "-n", namespace, "streamer"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert lines.get(timeout=30) == "waiting\n"
        time.sleep(1)
        assert follow.poll() is None, "`logs -f` must keep streaming while the container runs"
        (tmp_path / "go").touch()
        got = [lines.get(timeout=30) for _ in range(3)]
        assert got == ["after 0\n", "after 1\n", "after 2\n"]
        # It ends by itself once the container has exited.
        assert follow.wait(timeout=30) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert lines.empty()
    finished(cluster, namespace, "streamer")


def test_logs_of_an_unknown_container_fail_at_once(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, python_pod("quiet", "print('hello')"))
    finished(cluster, namespace, "quiet")
    t0 = time.monotonic()
    for follow in ([], ["-f"]):
        result = subprocess.run(
            [*kubectl(cluster), "logs", "-n", namespace, "quiet", "-c", "nope", *follow],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode != 0
        assert "container nope is not valid for pod quiet" in result.stderr, result.stderr
    assert time.monotonic() - t0 < 20
