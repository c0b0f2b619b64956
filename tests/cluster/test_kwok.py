"""KWOK's simulated GPU nodes (scale benchmarks) behave as bench/scale.py relies on.

The session cluster starts without KWOK; this module starts it beside the running
cluster with one simulated node, and removes both again afterwards so that the pods of
later tests cannot be scheduled onto a node that runs nothing. Skipped when the kwok
binary was never built (hack/build-kwok.sh takes minutes; `make binaries` builds it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from localcluster import cluster as localcluster
from localcluster import kwok
from tests.conftest import Cluster, wait_for

MESSAGE = '{"metrics": {"score": 0.25}}'


@pytest.fixture(scope="module")
def kwok_node(cluster: Cluster) -> Iterator[str]:
    if localcluster.kwok_binary_if_built() is None:
        pytest.skip("kwok is not built: run hack/build-kwok.sh (~3 min) to test simulated nodes")
    started_here = "kwok" not in localcluster.status(cluster.layout)
    node = localcluster.kwok_up(nodes=1, gpus_per_node=8, layout=cluster.layout)[0]
    yield node
    if not started_here:
        return
    core = cluster.core

    # The test namespaces are being deleted: let KWOK finish their pods first.
    def no_pods() -> tuple[bool, list[str]]:
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
        return not pods, [p.metadata.name for p in pods]

    try:
        wait_for(no_pods, 30, f"the pods on {node} to be deleted", interval=0.5)
    finally:
        # Whatever happened, no simulated node may outlive this module.
        localcluster.kwok_down(cluster.layout)


def job(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {kwok.LABEL: "true"},
                    "containers": [
                        {
                            "name": "trial",
                            "image": "python:3.11",
                            # Never run: KWOK only plays the pod's status.
                            "command": ["python3", "-c", "raise SystemExit(3)"],
                            "resources": {"limits": {kwok.GPU: "1"}},
                        }
                    ],
                },
            },
        },
    }


def pod_of(cluster: Cluster, ns: str, job_name: str) -> tuple[bool, Any]:
    pods = cluster.core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items
    return bool(pods), pods[0] if pods else None


def phase_of(cluster: Cluster, ns: str, job_name: str, *phases: str) -> Any:
    def check() -> tuple[bool, Any]:
        found, pod = pod_of(cluster, ns, job_name)
        return found and pod.status.phase in phases, pod.status if pod else None

    return wait_for(check, 20, f"the pod of {job_name} to be {phases}")


def job_condition(cluster: Cluster, ns: str, name: str, kind: str) -> None:
    def check() -> tuple[bool, Any]:
        conds = cluster.batch.read_namespaced_job_status(name, ns).status.conditions or []
        return any(c.type == kind and c.status == "True" for c in conds), conds

    wait_for(check, 15, f"Job {name} {kind}")


def seconds(stamp: Any) -> float:
    return stamp.timestamp() if isinstance(stamp, datetime) else float("nan")


def test_simulated_trial_succeeds_after_its_duration_with_its_message(
    cluster: Cluster, namespace: str, kwok_node: str
) -> None:
    batch = cluster.batch
    batch.create_namespaced_job(
        namespace,
        job("timed", {kwok.DURATION: "3s", kwok.TERMINATION_MESSAGE: MESSAGE}),
    )
    batch.create_namespaced_job(namespace, job("endless", {}))
    batch.create_namespaced_job(
        namespace, job("failing", {kwok.DURATION: "1s", kwok.EXIT_CODE: "2"})
    )

    running = phase_of(cluster, namespace, "timed", "Running")
    seen_running = time.monotonic()
    assert running.container_statuses[0].state.running is not None
    _, pod = pod_of(cluster, namespace, "timed")
    assert pod.spec.node_name == kwok_node

    done = phase_of(cluster, namespace, "timed", "Succeeded", "Failed")
    waited = time.monotonic() - seen_running
    assert done.phase == "Succeeded"
    term = done.container_statuses[0].state.terminated
    assert term.exit_code == 0
    assert term.message == MESSAGE
    # startTime has whole-second precision; the end is startTime + 3 s, played at once.
    ran = seconds(term.finished_at) - seconds(done.start_time)
    assert 3 <= ran <= 5, f"ran {ran}s (startTime {done.start_time}, finished {term.finished_at})"
    assert 1.5 <= waited <= 6, f"seen Running to Succeeded: {waited:.1f}s"
    job_condition(cluster, namespace, "timed", "Complete")

    failed = phase_of(cluster, namespace, "failing", "Succeeded", "Failed")
    assert failed.phase == "Failed"
    assert failed.container_statuses[0].state.terminated.exit_code == 2
    job_condition(cluster, namespace, "failing", "Failed")

    # No duration: it runs until deleted, and a deleted pod goes away at once.
    assert phase_of(cluster, namespace, "endless", "Running").phase == "Running"
    _, endless = pod_of(cluster, namespace, "endless")
    batch.delete_namespaced_job("endless", namespace, propagation_policy="Background")

    def gone() -> tuple[bool, Any]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=endless")
        return not pods.items, [p.metadata.name for p in pods.items]

    wait_for(gone, 15, f"pod {endless.metadata.name} to be deleted")
