"""A Study applied with kubectl runs to its end on the real local cluster."""

from __future__ import annotations

import textwrap
import time
from datetime import datetime
from typing import Any

import pytest

from kubetune.space import render_value
from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import Operator, Studies, digits_study, script_study


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def max_concurrent(trials: list[dict[str, Any]]) -> int:
    """Most trials running at one instant, from their start and completion times.

    Times have one-second resolution; intervals are half-open, so a trial that
    started in the second another one ended did not overlap it.
    """
    points = []
    for t in trials:
        st = t["status"]
        points += [(_t(st["startTime"]), 1), (_t(st["completionTime"]), -1)]
    running = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        running += delta
        peak = max(peak, running)
    return peak


def test_study_runs_to_success(
    operator: Operator, studies: Studies, cluster: Cluster, namespace: str
) -> None:
    result = studies.apply(digits_study("digits", max_trials=6, parallelism=2))
    assert result.returncode == 0, result.stderr
    jobs: dict[str, Any] = {}

    def every_job_seen() -> tuple[bool, Any]:
        # Jobs are removed once their Trial has its result: read them while they run.
        for job in cluster.batch.list_namespaced_job(namespace).items:
            jobs.setdefault(job.metadata.name, job)
        return len(jobs) == 6, sorted(jobs)

    wait_for(every_job_seen, 240, "every trial's Job", interval=0.2)
    status = studies.wait_phase("digits", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", (status, operator.log_tail())
    trials = studies.trials("digits")
    assert [t["spec"]["number"] for t in trials] == list(range(6))
    assert all(t["status"]["phase"] == "Completed" for t in trials)
    assert max_concurrent(trials) <= 2
    assert status["trials"]["completed"] == 6
    assert status["budget"]["trialsUsed"] == 6
    assert status["sampler"]["learnedTrials"] == 6
    assert status["budget"]["exhaustedBy"] == "maxTrials"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Completed"]["status"] == "True"
    assert conditions["Completed"]["observedGeneration"] == 1
    # The best trial in status is the best of the Trials' values.
    best = max(trials, key=lambda t: t["status"]["value"])
    assert status["bestTrial"]["name"] == best["metadata"]["name"]
    assert status["bestTrial"]["value"] == best["status"]["value"]
    assert status["bestTrial"]["params"] == best["spec"]["params"]
    assert 0.5 < best["status"]["value"] <= 1.0
    for t in trials:
        name, params = t["metadata"]["name"], t["spec"]["params"]
        job = jobs[name]
        args = job.spec.template.spec.containers[0].args
        # Each Job's args hold that Trial's own parameter values, as data.
        assert f"--lr={render_value(params['lr'])}" in args
        assert f"--layers={params['layers']}" in args
        expected = f"--momentum={render_value(params.get('momentum'))}"
        assert expected in args, "an inactive conditional parameter renders empty"
        assert job.metadata.owner_references[0].kind == "Study", "deleted with its Study"
        assert t["metadata"]["ownerReferences"][0]["kind"] == "Study"
        # Intermediate values came through (termination message and Prometheus).
        steps = [p["step"] for p in t["status"]["intermediate"]]
        assert steps == [1, 2, 3]
        assert t["status"]["intermediate"][-1]["value"] == t["status"]["value"]
    reasons = {e.reason for e in cluster.core.list_namespaced_event(namespace).items}
    assert "StudySucceeded" in reasons
    assert "TrialCompleted" not in reasons, "routine completions are no Events"

    def jobs_removed() -> tuple[bool, Any]:
        left = [j.metadata.name for j in cluster.batch.list_namespaced_job(namespace).items]
        return not left, left

    wait_for(jobs_removed, 30, "finished trials' Jobs to be removed (retention 0)")


@pytest.mark.keep_jobs
def test_operator_killed_mid_study_loses_nothing(
    operator: Operator, studies: Studies, cluster: Cluster, namespace: str
) -> None:
    studies.apply(digits_study("restart", max_trials=8, parallelism=3, epochs=6))

    def three_running() -> tuple[bool, Any]:
        phases = [(t.get("status") or {}).get("phase") for t in studies.trials("restart")]
        return phases.count("Running") >= 2 and len(phases) >= 3, phases

    wait_for(three_running, 60, "trials running")
    operator.kill()  # SIGKILL: no chance to clean up
    before = {t["metadata"]["name"] for t in studies.trials("restart")}
    time.sleep(2)
    operator.start()
    status = studies.wait_phase("restart", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("restart")
    names = [t["metadata"]["name"] for t in trials]
    assert names == [f"restart-{i}" for i in range(8)], "no Trial duplicated or lost"
    assert before <= set(names)
    assert all(t["status"]["phase"] == "Completed" for t in trials)
    jobs = cluster.batch.list_namespaced_job(namespace, label_selector="kubetune.dev/study=restart")
    assert sorted(j.metadata.name for j in jobs.items) == sorted(names), "one Job per Trial"
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="kubetune.dev/study=restart")
    assert len(pods.items) == 8, "no trial ran twice"
    assert status["sampler"]["learnedTrials"] == 8, "the sampler's history is complete"
    assert max_concurrent(trials) <= 3


QUICK_TRIAL = textwrap.dedent(
    """
    import sys, time
    from kubetune import trial
    time.sleep(0.3)
    x = float(sys.argv[2])
    trial.report(1, score=-(x - 0.3) ** 2)
    """
)


@pytest.mark.parametrize("sampler", ["cmaes", "tpe"])
def test_a_seeded_study_proposes_the_same_trials_across_operator_kills(
    sampler: str, operator: Operator, studies: Studies
) -> None:
    """The sampler's state lives in the Trial objects: SIGKILLs change nothing."""

    def seeded(name: str) -> dict[str, Any]:
        study = script_study(name, QUICK_TRIAL, max_trials=8, parallelism=1)
        study["spec"]["sampler"] = {"name": sampler, "seed": 5, "options": {"nStartupTrials": 2}}
        study["spec"]["parameters"].append({"name": "w", "float": {"low": -1.0, "high": 1.0}})
        return study

    assert studies.apply(seeded("calm")).returncode == 0
    assert studies.wait_phase("calm", "Succeeded", "Failed")["phase"] == "Succeeded"
    assert studies.apply(seeded("killed")).returncode == 0
    for at in (2, 5):

        def reached(at: int = at) -> tuple[bool, Any]:
            return len(studies.trials("killed")) > at, len(studies.trials("killed"))

        wait_for(reached, 60, f"trial {at} of the study to be killed")
        operator.kill()
        operator.start()
    assert studies.wait_phase("killed", "Succeeded", "Failed")["phase"] == "Succeeded"
    calm = [t["spec"]["params"] for t in studies.trials("calm")]
    killed = [t["spec"]["params"] for t in studies.trials("killed")]
    assert len(calm) == 8 and killed == calm


FAILING_TRIALS = textwrap.dedent(
    """
    import sys
    from kubetune import trial
    number = int(sys.argv[1])
    if number == 0:
        print("crashing on purpose"); sys.exit(3)
    if number == 1:
        trial.report(1, score=float("nan"))
    if number == 2:
        trial.report(1, other_metric=1.0)   # never reports the objective
    if number >= 3:
        trial.report(1, score=float(sys.argv[2]))
    """
)


def test_failed_diverged_and_silent_trials_do_not_stop_the_study(
    operator: Operator, studies: Studies
) -> None:
    studies.apply(script_study("faulty", FAILING_TRIALS, max_trials=5, parallelism=2))
    status = studies.wait_phase("faulty", "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded", operator.log_tail()
    by_number = {t["spec"]["number"]: t["status"] for t in studies.trials("faulty")}
    assert by_number[0]["phase"] == "Failed"
    assert by_number[0]["reason"] == "Error"
    assert "exit code 3" in by_number[0]["message"]
    assert by_number[1]["phase"] == "Failed"
    assert by_number[1]["reason"] == "Diverged"
    assert "value" not in by_number[1]
    assert by_number[2]["phase"] == "Failed"
    assert by_number[2]["reason"] == "MetricsMissing"
    assert "other_metric" in by_number[2]["message"]
    assert by_number[3]["phase"] == by_number[4]["phase"] == "Completed"
    assert status["trials"] == {
        "running": 0,
        "waiting": 0,
        "completed": 2,
        "pruned": 0,
        "failed": 3,
        "diverged": 1,
    }
    assert status["sampler"]["learnedTrials"] == 5


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (
            lambda s: s["spec"]["parameters"][1]["float"].update(low=1.0, high=0.1),
            "spec.parameters[1].float",
            "low must be less than",
        ),
        (
            lambda s: s["spec"]["sampler"].update(name="bayes"),
            "spec.sampler.name",
            "Unsupported value",
        ),
        (lambda s: s["spec"].update(parameters=[]), "spec.parameters", "at least 1"),
        (
            lambda s: s["spec"]["budget"].update(parallelism=20),
            "spec.budget",
            "parallelism must not exceed",
        ),
        (
            lambda s: s["spec"]["parameters"][1]["float"].update(low=-1.0),
            "spec.parameters[1].float",
            "positive when log",
        ),
        (
            lambda s: s["spec"]["parameters"][0].update(int={"low": 1, "high": 2}),
            "spec.parameters[0]",
            "exactly one of float, int or categorical",
        ),
        (
            lambda s: s["spec"]["trialTemplate"].update(kind="JobSet"),
            "spec.trialTemplate",
            "a JobSet trial (kind: JobSet) gives spec",
        ),
    ],
    ids=[
        "low-above-high",
        "unknown-sampler",
        "no-parameters",
        "parallelism",
        "log-negative",
        "two-kinds",
        "jobset-without-spec",
    ],
)
def test_invalid_study_is_rejected_by_kubectl_apply(
    studies: Studies, crds: None, mutate: Any, field: str, words: str
) -> None:
    study = digits_study("invalid", max_trials=4, parallelism=2)
    mutate(study)
    result = studies.apply(study)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_spec_errors_the_schema_cannot_see_become_a_condition(
    operator: Operator, studies: Studies
) -> None:
    study = digits_study("typo", max_trials=2, parallelism=1)
    args = study["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]["args"]
    args.append("--lr=${params.learning_rate}")
    assert studies.apply(study).returncode == 0
    status = studies.wait_phase("typo", "Failed", timeout=30)
    invalid = next(c for c in status["conditions"] if c["type"] == "Invalid")
    assert invalid["status"] == "True"
    assert "${params.learning_rate} names no parameter" in invalid["message"]
    assert studies.trials("typo") == []


def test_search_space_objective_and_template_are_immutable(
    studies: Studies, cluster: Cluster, crds: None
) -> None:
    assert studies.apply(digits_study("frozen", max_trials=2, parallelism=1)).returncode == 0

    def patch(body: str) -> Any:
        return cluster.kubectl(
            "patch",
            "study",
            "frozen",
            "-n",
            studies.namespace,
            "--type",
            "merge",
            "-p",
            body,
            check=False,
        )

    for body, words in [
        (
            '{"spec":{"parameters":[{"name":"lr","float":{"low":0.1,"high":0.2}}]}}',
            "parameters are immutable",
        ),
        (
            '{"spec":{"objective":{"metric":"val_loss","direction":"minimize"}}}',
            "objective is immutable",
        ),
        ('{"spec":{"trialTemplate":{"backoffLimit":3}}}', "trialTemplate is immutable"),
    ]:
        result = patch(body)
        assert result.returncode != 0 and words in result.stderr, result.stderr
    assert patch('{"spec":{"budget":{"maxTrials":3,"parallelism":1}}}').returncode == 0


def test_without_prometheus_trials_complete_and_the_study_says_pruning_is_paused(
    cluster: Cluster, namespace: str, crds: None, studies: Studies
) -> None:
    op = Operator(cluster, namespace)
    op.env["KUBETUNE_PROMETHEUS_URL"] = "http://127.0.0.1:9"  # nothing listens there
    op.start()
    try:
        slow = QUICK_TRIAL.replace("time.sleep(0.3)", "time.sleep(2)")
        study = script_study("blind", slow, max_trials=3, parallelism=1)
        study["spec"]["pruner"] = {"name": "median"}
        assert studies.apply(study).returncode == 0

        def paused() -> tuple[bool, Any]:
            conds = {
                c["type"]: c
                for c in (studies.get("blind").get("status") or {}).get("conditions") or []
            }
            metrics = conds.get("MetricsAvailable") or {}
            return metrics.get("status") == "False", metrics

        condition = wait_for(paused, 60, "the MetricsAvailable condition to say False")
        assert "pruning and intermediate curves are paused" in condition["message"]
        status = studies.wait_phase("blind", "Succeeded", "Failed")
        assert status["phase"] == "Succeeded", op.log_tail()
        assert status["trials"]["completed"] == 3, "termination messages carry the results"
    finally:
        op.stop()
