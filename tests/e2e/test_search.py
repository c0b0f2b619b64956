"""Search strategies, pruning and budgets on the real local cluster."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import GROUP, VERSION, Operator, Studies

# A quick trial: score is a smooth function of the parameters, reported once.
QUICK = textwrap.dedent(
    """
    import json, os
    from kubetune import trial
    p = trial.params()
    score = p["x"] - (p["depth"] - 3) ** 2 / 10 + (0.1 if p["kind"] == "b" else 0.0)
    trial.report(1, score=score, cost=p["depth"] * 1.0)
    """
)

# A slow trial whose curve is its parameter: x * step, over 8 steps of 1.5 s.
CURVE = textwrap.dedent(
    """
    import time
    from kubetune import trial
    trial.install_sigterm_handler()
    x = trial.params()["x"]
    for step in range(1, 9):
        time.sleep(1.5)
        trial.report(step, score=x * step)
        if trial.should_stop():
            break
    """
)


def study(
    name: str,
    code: str,
    *,
    sampler: dict[str, Any],
    max_trials: int,
    parallelism: int,
    pruner: dict[str, Any] | None = None,
    gpus: int = 0,
    objectives: bool = False,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "trial",
        "image": "python:3.11",
        "command": ["python3", "-c", code],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec: dict[str, Any] = {
        "parameters": [
            {"name": "x", "float": {"low": 0.0, "high": 1.0, "step": 0.05}},
            {"name": "depth", "int": {"low": 1, "high": 5}},
            {"name": "kind", "categorical": {"choices": ["a", "b"]}},
        ],
        "sampler": sampler,
        "pruner": pruner or {"name": "none"},
        "budget": {"maxTrials": max_trials, "parallelism": parallelism, **(budget or {})},
        "trialTemplate": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                }
            },
        },
    }
    if objectives:
        spec["objectives"] = [{"metric": "score"}, {"metric": "cost", "direction": "minimize"}]
    else:
        spec["objective"] = {"metric": "score"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Study",
        "metadata": {"name": name},
        "spec": spec,
    }


SAMPLERS = ["tpe", "gp", "cmaes", "random", "grid", "qmc", "nsga2"]


@pytest.mark.parametrize("startup", [False, True], ids=["plain", "startup"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_runs_a_study_and_a_seed_repeats_it(
    operator: Operator, studies: Studies, name: str, startup: bool
) -> None:
    sampler: dict[str, Any] = {"name": name, "seed": 11}
    if startup:
        sampler["startup"] = {"name": "qmc", "trials": 2}
    multi = name == "nsga2"
    first = study("a", QUICK, sampler=sampler, max_trials=4, parallelism=2, objectives=multi)
    second = copy.deepcopy(first)
    second["metadata"]["name"] = "b"
    for s in (first, second):
        result = studies.apply(s)
        assert result.returncode == 0, result.stderr
    for s in ("a", "b"):
        status = studies.wait_phase(s, "Succeeded", "Failed", timeout=120)
        assert status["phase"] == "Succeeded", (status, operator.log_tail())
        assert status["sampler"] == {"name": name, "learnedTrials": 4}
        trials = studies.trials(s)
        assert len(trials) == 4 and all(t["status"]["phase"] == "Completed" for t in trials)
        if multi:
            assert status["paretoFront"], "a multi-objective Study reports its Pareto front"
            assert "bestTrial" not in status
        else:
            assert status["bestTrial"]["value"] == max(t["status"]["value"] for t in trials)
    a, b = studies.trials("a"), studies.trials("b")
    assert a[0]["spec"]["params"] == b[0]["spec"]["params"], "the same seed, the same first trial"


def test_pruning_stops_bad_trials_early_and_saves_gpu_time(
    operator: Operator, studies: Studies, cluster: Cluster, namespace: str
) -> None:
    common = {
        "sampler": {"name": "random", "seed": 5},
        "max_trials": 8,
        "parallelism": 2,
        "gpus": 1,
    }
    median = {"name": "median", "options": {"nStartupTrials": 2, "nWarmupSteps": 2}}
    studies.apply(study("pruned", CURVE, pruner=median, **common))
    studies.apply(study("unpruned", CURVE, **common))
    pruned = studies.wait_phase("pruned", "Succeeded", "Failed", timeout=300)
    unpruned = studies.wait_phase("unpruned", "Succeeded", "Failed", timeout=300)
    assert pruned["phase"] == unpruned["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("pruned")
    stopped = [t for t in trials if t["status"]["phase"] == "Pruned"]
    assert stopped, f"nothing was pruned: {[t['status'] for t in trials]}"
    assert pruned["trials"]["pruned"] == len(stopped)
    for t in stopped:
        assert t["status"]["reason"] == "Pruned"
        assert t["status"]["lastStep"] < 8, "pruned before its last step"
        name = t["metadata"]["name"]

        def pods_gone(name: str = name) -> tuple[bool, Any]:
            # The local node removes a pod object only once its processes have exited.
            pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
            return not pods.items, [p.metadata.name for p in pods.items]

        wait_for(pods_gone, 30, f"the pruned trial {name}'s processes to be gone")
    used = sum(t["status"]["gpuSeconds"] for t in trials)
    baseline = sum(t["status"]["gpuSeconds"] for t in studies.trials("unpruned"))
    print(f"\nGPU-seconds: median pruner {used:.0f}, no pruner {baseline:.0f}")
    assert used < baseline


def test_gpu_hours_budget_ends_the_study(operator: Operator, studies: Studies) -> None:
    budget_hours = 0.006  # 21.6 GPU-seconds; each trial takes about 4
    code = "import time\nfrom kubetune import trial\ntime.sleep(3)\ntrial.report(1, score=1.0)\n"
    studies.apply(
        study(
            "capped",
            code,
            sampler={"name": "random", "seed": 1},
            max_trials=50,
            parallelism=2,
            gpus=1,
            budget={"gpuHours": budget_hours},
        )
    )
    status = studies.wait_phase("capped", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded"
    assert status["budget"]["exhaustedBy"] == "gpuHours"
    completed = next(c for c in status["conditions"] if c["type"] == "Completed")
    assert completed["reason"] == "GpuHoursExhausted"
    seconds = [t["status"]["gpuSeconds"] for t in studies.trials("capped")]
    assert 1 < len(seconds) < 50
    assert sum(seconds) <= budget_hours * 3600 + max(seconds), seconds
    assert abs(status["budget"]["gpuHoursUsed"] - sum(seconds) / 3600) < 1e-3
