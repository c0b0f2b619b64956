"""The Study planner: budgets, parallelism, best trial, finishing, conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubetune.lifecycle import TrialStatus
from kubetune.plan import Context, CreateTrials, EnsureJob, StopTrial, TrialView, invalid, plan
from kubetune.spec import parse

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = Context(now=NOW, created=NOW)


def spec(direction: str = "maximize", **budget: Any) -> Any:
    return parse(
        {
            "objective": {"metric": "acc", "direction": direction},
            "parameters": [{"name": "x", "float": {"low": 0, "high": 1}}],
            "budget": {"maxTrials": 5, "parallelism": 2, **budget},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )


def trial(
    n: int,
    phase: str = "Running",
    value: float | None = None,
    reason: str | None = None,
    has_job: bool = True,
) -> TrialView:
    return TrialView(
        f"s-{n}",
        f"u{n}",
        n,
        {"x": n / 10},
        TrialStatus(phase=phase, value=value, reason=reason),
        has_job,
    )


def test_fresh_study_fills_parallelism() -> None:
    p = plan(spec(), [], {}, 1, CTX)
    assert p.actions == [CreateTrials(2, numbers=(0, 1))]
    assert p.status["phase"] == "Running"
    assert p.status["progress"] == "0/5"


def test_never_more_than_parallelism_nor_max_trials() -> None:
    assert plan(spec(), [trial(0), trial(1)], {}, 1, CTX).actions == []
    p = plan(spec(), [trial(0, "Completed", 0.5), trial(1)], {}, 1, CTX)
    assert p.actions == [CreateTrials(1, numbers=(2,))], "the next numbers"
    done = [trial(i, "Completed", 0.1) for i in range(4)] + [trial(4)]
    assert plan(spec(), done, {}, 1, CTX).actions == []


def test_trial_without_job_gets_its_job() -> None:
    p = plan(spec(), [trial(0, has_job=False), trial(1)], {}, 1, CTX)
    assert p.actions == [EnsureJob("s-0")]


def test_all_trials_finished_is_success_with_best_trial() -> None:
    trials = [trial(i, "Completed", v) for i, v in enumerate([0.3, 0.9, 0.9, 0.1])]
    trials.append(trial(4, "Failed", reason="Diverged"))
    p = plan(spec(), trials, {}, 1, CTX)
    assert p.status["phase"] == "Succeeded"
    assert p.status["bestTrial"]["name"] == "s-1"  # ties go to the earlier trial
    assert p.status["trials"] == {
        "running": 0,
        "waiting": 0,
        "completed": 4,
        "pruned": 0,
        "failed": 1,
        "diverged": 1,
    }
    assert p.status["budget"]["exhaustedBy"] == "maxTrials"
    assert ("Normal", "StudySucceeded", "all 5 trials finished") in p.events
    assert plan(spec("minimize"), trials, {}, 1, CTX).status["bestTrial"]["name"] == "s-3"


def test_too_many_failures_fail_the_study_and_stop_running_trials() -> None:
    trials = [trial(0, "Failed", reason="Error"), trial(1, "Failed", reason="Error"), trial(2)]
    p = plan(spec(maxFailedTrials=1), trials, {}, 1, CTX)
    assert p.status["phase"] == "Failed"
    assert p.status["budget"]["exhaustedBy"] == "maxFailedTrials"
    assert p.actions == [
        StopTrial("s-2", "Failed", "StudyFailed", "2 trials failed, more than maxFailedTrials=1")
    ]


def test_finished_study_stays_finished_and_plan_is_repeatable() -> None:
    trials = [trial(i, "Completed", 0.5) for i in range(5)]
    first = plan(spec(), trials, {}, 1, CTX)
    second = plan(spec(), trials, first.status, 1, CTX)
    assert second.status == first.status
    assert second.actions == [] and second.events == []


def test_invalid_spec_and_its_repair() -> None:
    bad = invalid({}, "spec.parameters[0].float: low must be less than high", 1, NOW)
    assert bad.status["phase"] == "Failed"
    cond = next(c for c in bad.status["conditions"] if c["type"] == "Invalid")
    assert cond["status"] == "True" and "low must be" in cond["message"]
    fixed = plan(spec(), [], bad.status, 2, CTX)
    assert fixed.status["phase"] == "Running"
    assert fixed.actions == [CreateTrials(2, numbers=(0, 1))]


def test_raising_max_trials_resumes_a_finished_study() -> None:
    trials = [trial(i, "Completed", 0.5) for i in range(5)]
    done = plan(spec(), trials, {}, 1, CTX)
    assert done.status["phase"] == "Succeeded"
    more = plan(spec(maxTrials=8), trials, done.status, 2, CTX)
    assert more.status["phase"] == "Running"
    assert more.actions == [CreateTrials(2, numbers=(5, 6))]
    assert more.status["completionTime"] is None
    completed = next(c for c in more.status["conditions"] if c["type"] == "Completed")
    assert completed["status"] == "False" and completed["reason"] == "BudgetRaised"


def test_the_status_counts_the_trials_the_plan_creates() -> None:
    """So the pass that sees them created has no Study status to rewrite."""
    first = plan(spec(), [], {}, 1, CTX)
    assert first.status["trials"]["running"] == 2
    assert first.status["budget"]["trialsUsed"] == 2
    after = plan(spec(), [trial(0), trial(1)], {}, 1, CTX)
    for part in ("trials", "budget", "progress"):
        assert after.status[part] == first.status[part], part


def test_waiting_trials_are_submitted_but_not_running() -> None:
    """Behind a Kueue queue parallelism is the most trials submitted, admitted or not."""
    queued = spec().model_copy(update={"queue_name": "gpus"})
    first = plan(queued, [], {}, 1, CTX)
    assert first.status["trials"]["waiting"] == 2 and first.status["trials"]["running"] == 0
    p = plan(queued, [trial(0, "Waiting"), trial(1, "Running")], {}, 1, CTX)
    assert p.actions == [], "waiting trials take their parallelism slot"
    assert p.status["trials"]["waiting"] == 1 and p.status["trials"]["running"] == 1
    after = plan(queued, [trial(0, "Waiting"), trial(1, "Waiting")], {}, 1, CTX)
    assert after.status["trials"] == first.status["trials"], "no rewrite when they appear"
