"""The Argo CD health checks (docs/argocd/*.lua) on the statuses the operator writes.

The statuses come from the operator's own code (`plan`, `invalid`, `TrialStatus.to_k8s`)
and go through JSON, as Argo CD reads them from the API server, so a change to the
status shape that breaks a check fails here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune.lifecycle import TrialStatus
from kubetune.plan import Context, TrialView, invalid, plan
from kubetune.spec import parse
from tests.argocd import health

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = Context(now=NOW, created=NOW)
SPEC: dict[str, Any] = {
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "parameters": [{"name": "x", "float": {"low": 0, "high": 1}}],
    "budget": {"maxTrials": 4, "parallelism": 2, "maxFailedTrials": 1},
    "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
}


def trial(n: int, phase: str, value: float | None = None, **status: Any) -> TrialView:
    st = TrialStatus(phase=phase, value=value, **status)
    return TrialView(f"s-{n}", f"u{n}", n, {"x": n / 10}, st, True)


def study(
    status: dict[str, Any] | None, generation: int = 1, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Study object as the API server returns it (JSON: no tuples, None as null)."""
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "Study",
        "metadata": {"name": "s", "namespace": "team-a", "generation": generation},
        "spec": spec or SPEC,
    }
    if status is not None:
        obj["status"] = status
    loaded: dict[str, Any] = json.loads(json.dumps(obj))
    return loaded


def planned(trials: list[TrialView], status: dict[str, Any] | None = None, **spec: Any) -> Any:
    return plan(parse({**SPEC, **spec}), trials, status or {}, 1, CTX).status


def test_a_study_the_operator_has_not_seen_is_progressing() -> None:
    assert health("Study", study(None)) == (
        "Progressing",
        "waiting for the operator to start the Study",
    )
    assert health("Study", study({"phase": "Pending", "observedGeneration": 1}))[0] == (
        "Progressing"
    )


def test_a_running_study_is_progressing_with_its_progress_and_best_value() -> None:
    status = planned([trial(0, "Completed", 0.75), trial(1, "Running"), trial(2, "Pending")])
    assert status["phase"] == "Running"
    assert health("Study", study(status)) == (
        "Progressing",
        "1/4 trials finished; 2 running; best trial s-0: val_accuracy=0.75 so far",
    )


def test_a_study_waiting_for_queue_admission_says_so() -> None:
    queued = parse(SPEC).model_copy(update={"queue_name": "gpus"})
    status = plan(queued, [trial(0, "Waiting"), trial(1, "Running")], {}, 1, CTX).status
    state, message = health("Study", study({**status, "completionTime": None}))
    assert state == "Progressing"
    assert message == "0/4 trials finished; 1 running; 1 waiting for quota"


def test_a_succeeded_study_is_healthy_with_its_best_trial() -> None:
    trials = [trial(i, "Completed", v) for i, v in enumerate([0.5, 0.9, 0.25, 0.125])]
    status = planned(trials)
    assert status["phase"] == "Succeeded"
    assert health("Study", study(status)) == (
        "Healthy",
        "all 4 trials finished; best trial s-1: val_accuracy=0.9",
    )


def test_an_edit_the_operator_has_not_seen_yet_is_progressing() -> None:
    """Raising maxTrials on a Succeeded Study resumes it: not Healthy until it is done."""
    trials = [trial(i, "Completed", 0.5) for i in range(4)]
    status = planned(trials)
    assert health("Study", study(status, generation=1))[0] == "Healthy"
    assert health("Study", study(status, generation=2)) == (
        "Progressing",
        "the operator has not yet seen generation 2",
    )


def test_a_study_that_failed_trials_beyond_its_budget_is_degraded() -> None:
    trials = [trial(0, "Failed", reason="Error"), trial(1, "Failed", reason="Error")]
    status = planned([*trials, trial(2, "Running")])
    assert status["phase"] == "Failed"
    assert health("Study", study(status)) == (
        "Degraded",
        "2 trials failed, more than maxFailedTrials=1",
    )


def test_an_invalid_study_is_degraded_with_what_to_change() -> None:
    message = "spec.trialTemplate: ${params.lr} names no parameter (parameters: x)"
    status = invalid({}, message, 1, NOW).status
    assert health("Study", study(status)) == ("Degraded", message)
    # Invalid after a failure (a later edit broke the spec): the spec is what to fix.
    failed = planned([trial(0, "Failed", reason="Error"), trial(1, "Failed", reason="Error")])
    both = invalid(failed, message, 2, NOW).status
    assert {c["type"] for c in both["conditions"] if c["status"] == "True"} >= {
        "Failed",
        "Invalid",
    }
    assert health("Study", study(both, generation=2)) == ("Degraded", message)


def test_a_failed_study_without_a_message_still_says_it_failed() -> None:
    status = {"phase": "Failed", "observedGeneration": 1}
    assert health("Study", study(status)) == ("Degraded", "the Study failed")


def test_a_multi_objective_study_reports_its_pareto_front() -> None:
    spec = {
        **{k: v for k, v in SPEC.items() if k != "objective"},
        "objectives": [
            {"metric": "val_accuracy", "direction": "maximize"},
            {"metric": "latency_ms", "direction": "minimize"},
        ],
    }
    values = [[0.9, 20.0], [0.8, 10.0], [0.7, 30.0], [0.6, 5.0]]
    trials = [trial(i, "Completed", values=v) for i, v in enumerate(values)]
    status = plan(parse(spec), trials, {}, 1, CTX).status
    assert status["phase"] == "Succeeded" and status["paretoFrontSize"] == 3
    assert health("Study", study(status, spec=spec)) == (
        "Healthy",
        "all 4 trials finished; 3 Pareto-optimal trials",
    )


def trial_obj(status: TrialStatus | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "Trial",
        "metadata": {"name": "s-0", "namespace": "team-a", "generation": 1},
        "spec": {"study": "s", "number": 0, "params": {"x": 0.5}},
    }
    if status is not None:
        obj["status"] = status.to_k8s()
    loaded: dict[str, Any] = json.loads(json.dumps(obj))
    return loaded


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, ("Progressing", "waiting for its pod to start")),
        (TrialStatus(phase="Pending"), ("Progressing", "waiting for its pod to start")),
        (
            TrialStatus(phase="Waiting"),
            ("Progressing", "waiting for Kueue to admit its Job (quota)"),
        ),
        (TrialStatus(phase="Running"), ("Progressing", "running")),
        (
            TrialStatus(phase="Running", intermediate=[(1, 0.5), (2, 0.75)]),
            ("Progressing", "running, at step 2"),
        ),
        (
            TrialStatus(phase="Completed", value=0.96875, intermediate=[(1, 0.96875)]),
            ("Healthy", "completed with value 0.96875"),
        ),
        (
            TrialStatus(phase="Pruned", reason="Pruned", message="pruned at step 3"),
            ("Healthy", "pruned at step 3"),
        ),
        (
            TrialStatus(phase="Failed", reason="Error", message="exit code 1: out of memory"),
            ("Degraded", "Error: exit code 1: out of memory"),
        ),
        (
            TrialStatus(phase="Failed", reason="Diverged", value=float("nan")),
            ("Degraded", "Diverged"),
        ),
    ],
    ids=[
        "no-status",
        "pending",
        "waiting",
        "running",
        "running-step",
        "completed",
        "pruned",
        "failed",
        "diverged",
    ],
)
def test_trial_health(status: TrialStatus | None, expected: tuple[str, str]) -> None:
    assert health("Trial", trial_obj(status)) == expected
