"""The reference trainer as a trial: checkpoint resume after a kill, and a search over its knobs."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import Operator, Studies, example_study


def knobs(name: str, max_trials: int, parallelism: int, epochs: int) -> dict[str, Any]:
    study = example_study("knobs-study.yaml", name, max_trials, parallelism, epochs)
    study["spec"]["sampler"]["startup"]["trials"] = 2
    return study


@pytest.mark.keep_jobs
def test_killed_trial_resumes_from_its_checkpoint(
    operator: Operator, studies: Studies, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    study = knobs("resume", max_trials=1, parallelism=1, epochs=6)
    spec = study["spec"]
    spec["trialTemplate"]["backoffLimit"] = 1  # a retried pod continues the same trial
    pod = spec["trialTemplate"]["template"]["spec"]
    trainer = pod["containers"][0]
    trainer["args"] = [a for a in trainer["args"] if not a.startswith("--dataset")] + [
        "--dataset=synthetic",
        "--samples=40000",
        "--checkpoint-dir=/checkpoints/${trial.name}",
    ]
    trainer["volumeMounts"] = [{"name": "checkpoints", "mountPath": "/checkpoints"}]
    pod["volumes"] = [
        {"name": "checkpoints", "hostPath": {"path": str(tmp_path), "type": "DirectoryOrCreate"}}
    ]
    assert studies.apply(study).returncode == 0

    def second_epoch_saved() -> tuple[bool, Any]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=resume-0").items
        ready = (
            (tmp_path / "resume-0" / "checkpoint.pt").exists()
            and pods
            and pods[0].status.phase == "Running"
        )
        statuses = (pods[0].status.container_statuses or []) if pods else []
        return bool(ready and statuses), [p.status.phase for p in pods]

    wait_for(second_epoch_saved, 90, "the first checkpoint")
    first = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=resume-0").items[0]
    pid = int(first.status.container_statuses[0].container_id.split("://")[1])
    os.kill(pid, signal.SIGKILL)  # preempted without warning

    status = studies.wait_phase("resume", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", operator.log_tail()
    (trial,) = studies.trials("resume")
    assert trial["status"]["phase"] == "Completed"
    steps = [p["step"] for p in trial["status"]["intermediate"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6, "steps stay monotonic to the end"
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=resume-0").items
    assert sorted(p.status.phase for p in pods) == ["Failed", "Succeeded"]
    retry = next(p for p in pods if p.status.phase == "Succeeded")
    log = next(
        cluster.layout.pods.glob(f"{namespace}_{retry.metadata.name}_*/trainer.log")
    ).read_text()
    assert "resuming from the checkpoint of epoch" in log
    resumed_at = int(log.split("resuming from the checkpoint of epoch ")[1].split()[0])
    assert 1 <= resumed_at < 6
    assert f"epoch {resumed_at + 1}:" in log and "epoch 1:" not in log, "epochs continue"


def test_search_over_schedule_optimizer_and_init_finishes(
    operator: Operator, studies: Studies
) -> None:
    assert studies.apply(knobs("knobs", max_trials=6, parallelism=3, epochs=3)).returncode == 0
    status = studies.wait_phase("knobs", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("knobs")
    assert len(trials) == 6
    assert all(t["status"]["phase"] in ("Completed", "Pruned") for t in trials), [
        t["status"] for t in trials
    ]
    seen = {k: {t["spec"]["params"][k] for t in trials} for k in ("schedule", "optimizer", "init")}
    assert all(len(v) >= 2 for v in seen.values()), seen
    assert status["bestTrial"]["value"] > 0.5
