"""JobSet trials: each trial a JobSet of 2 pods training data-parallel (gloo), run by the
real JobSet controller (built from its Go module) on the local node.

The add-on is started for this module, before the operator (which watches JobSets only
if the API server serves them), and stopped at its end with its webhooks unregistered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, running_addon, wait_for
from tests.e2e.conftest import ROOT, Operator, Studies


@pytest.fixture(scope="module")
def jobset(cluster: Cluster) -> Iterator[None]:
    with running_addon(cluster, "jobset"):
        yield


def jobset_study(name: str, max_trials: int, parallelism: int, epochs: int) -> dict[str, Any]:
    """examples/jobset-study.yaml, renamed and smaller."""
    study: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "jobset-study.yaml").read_text())
    study["metadata"] = {"name": name}
    study["spec"]["budget"] = {
        "maxTrials": max_trials,
        "parallelism": parallelism,
        "maxFailedTrials": 1,
    }
    (workers,) = study["spec"]["trialTemplate"]["spec"]["replicatedJobs"]
    trainer = workers["template"]["spec"]["template"]["spec"]["containers"][0]
    trainer["args"] = [a for a in trainer["args"] if not a.startswith("--epochs=")]
    trainer["args"].append(f"--epochs={epochs}")
    return study


def trial_pods(cluster: Cluster, namespace: str, trial: str) -> list[Any]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"kubetune.dev/trial={trial}"
    ).items
    return sorted(pods, key=lambda p: p.spec.hostname or "")


@pytest.mark.keep_jobs
@pytest.mark.timeout(420)
def test_a_study_of_two_pod_data_parallel_trials_succeeds_with_rank_0_reporting(
    cluster: Cluster, namespace: str, jobset: None, operator: Operator, studies: Studies
) -> None:
    # Two trials at once: four pods on the local node, two rank 0s on the same port,
    # each on its own pod address.
    assert studies.apply(jobset_study("ddp", 2, 2, epochs=2)).returncode == 0
    status = studies.wait_phase("ddp", "Succeeded", "Failed", timeout=360)
    assert status["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("ddp")
    assert [t["status"]["phase"] for t in trials] == ["Completed", "Completed"], trials
    for t in trials:
        name = t["metadata"]["name"]

        def completed(trial: str = name) -> tuple[bool, Any]:
            # A trial ends when rank 0's pod does; the JobSet is marked a moment later.
            js = cluster.custom.get_namespaced_custom_object(
                "jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", trial
            )
            conds = (js.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Completed" and c["status"] == "True" for c in conds), conds

        wait_for(completed, 60, f"JobSet {name} Completed")
        pods = trial_pods(cluster, namespace, name)
        # Each pod has the hostname and subdomain by which the other finds it.
        assert [(p.spec.hostname, p.spec.subdomain) for p in pods] == [
            (f"{name}-workers-0-0", name),
            (f"{name}-workers-0-1", name),
        ]
        assert all(p.status.phase == "Succeeded" for p in pods)
        messages = [p.status.container_statuses[0].state.terminated.message or "" for p in pods]
        rank0 = json.loads(messages[0])
        assert not messages[1], "rank 1 reports nothing"
        assert t["status"]["value"] == rank0["metrics"]["val_accuracy"]
        assert t["status"]["lastStep"] == 2
        logs = [
            next(
                cluster.layout.pods.glob(f"{namespace}_{p.metadata.name}_*/trainer.log")
            ).read_text()
            for p in pods
        ]
        assert "rank 0/2" in logs[0] and "rank 1/2" in logs[1], logs
    print(f"values from rank 0: {[t['status']['value'] for t in trials]}")


@pytest.mark.timeout(420)
def test_a_lost_pod_fails_its_trial_as_the_jobset_failure_policy_says(
    cluster: Cluster, namespace: str, jobset: None, operator: Operator, studies: Studies
) -> None:
    """failurePolicy maxRestarts 0: the JobSet fails when one of its pods is lost; the
    Trial says why and the Study counts it failed. (The trial would run minutes.)"""
    assert studies.apply(jobset_study("lose", 1, 1, epochs=500)).returncode == 0

    def rank1_running() -> tuple[bool, Any]:
        pods = trial_pods(cluster, namespace, "lose-0")
        phases = [p.status.phase for p in pods]
        return phases == ["Running", "Running"], phases

    wait_for(rank1_running, 120, "both pods of the first trial running")
    wait_for(
        lambda: ((studies.trials("lose")[0].get("status") or {}).get("lastStep", 0) >= 1, ""),
        120,
        "the first trial's first epoch",
    )
    rank1 = trial_pods(cluster, namespace, "lose-0")[1]
    cluster.core.delete_namespaced_pod(rank1.metadata.name, namespace)
    status = studies.wait_phase("lose", "Succeeded", "Failed", timeout=360)
    (only,) = studies.trials("lose")
    st = only["status"]
    assert st["phase"] == "Failed" and st["reason"] == "JobFailed", st
    assert "JobSet" in st["message"], st["message"]
    assert status["trials"]["failed"] == 1
    assert st["lastStep"] < 500
    print(f"lost pod: trial {st['phase']} {st['reason']}: {st['message'][:200]}")
