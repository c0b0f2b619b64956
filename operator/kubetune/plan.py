"""The Study's decisions as a pure function: spec + trials -> actions + status.

Level-triggered: the planner never remembers anything; it looks at every Trial
each time and says what should happen next. Running it twice on the same
observation gives the same answer, so any reconcile can be repeated safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune import conditions as cond
from kubetune.lifecycle import TrialStatus
from kubetune.spec import StudySpec


@dataclass(frozen=True)
class TrialView:
    name: str
    uid: str
    number: int
    params: dict[str, Any]
    status: TrialStatus
    has_job: bool


@dataclass(frozen=True)
class CreateTrials:
    """Ask the sampler for `count` new trials and create their Trial and Job."""

    count: int


@dataclass(frozen=True)
class EnsureJob:
    """A Trial without its Job (the operator stopped between the two creates)."""

    trial: str


@dataclass(frozen=True)
class StopTrial:
    trial: str
    phase: str
    reason: str
    message: str


Action = CreateTrials | EnsureJob | StopTrial


@dataclass
class Plan:
    actions: list[Action]
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def best_trial(spec: StudySpec, trials: list[TrialView]) -> TrialView | None:
    done = [t for t in trials if t.status.phase == "Completed" and t.status.value is not None]
    if not done:
        return None
    sign = -1.0 if spec.primary.maximize else 1.0
    return min(done, key=lambda t: (sign * float(t.status.value or 0.0), t.number))


def _counts(trials: list[TrialView]) -> dict[str, int]:
    phases = [t.status.phase for t in trials]
    return {
        "running": sum(p in ("Pending", "Running") for p in phases),
        "completed": phases.count("Completed"),
        "pruned": phases.count("Pruned"),
        "failed": phases.count("Failed"),
        "diverged": sum(t.status.reason == "Diverged" for t in trials),
    }


def invalid(status: dict[str, Any], message: str, generation: int, now: datetime) -> Plan:
    conds = cond.set_condition(
        status.get("conditions") or [], cond.INVALID, True, "InvalidSpec", message, generation, now
    )
    new = {**status, "phase": "Failed", "observedGeneration": generation, "conditions": conds}
    events = []
    if not cond.is_true(status.get("conditions") or [], cond.INVALID):
        events.append(("Warning", "InvalidSpec", message))
    return Plan(actions=[], status=new, events=events)


def plan(
    spec: StudySpec,
    trials: list[TrialView],
    status: dict[str, Any],
    generation: int,
    now: datetime,
) -> Plan:
    trials = sorted(trials, key=lambda t: t.number)
    budget = spec.budget
    counts = _counts(trials)
    active = [t for t in trials if not t.status.terminal]
    finished = len(trials) - len(active)
    gpu_hours = sum(t.status.gpu_seconds for t in trials) / 3600.0
    conds: list[dict[str, Any]] = list(status.get("conditions") or [])
    conds = cond.set_condition(
        conds, cond.INVALID, False, "SpecValid", "the spec is valid", generation, now
    )
    actions: list[Action] = []
    events: list[tuple[str, str, str]] = []
    exhausted_by = (status.get("budget") or {}).get("exhaustedBy")
    phase = status.get("phase") or "Pending"
    if phase == "Failed" and cond.is_true(status.get("conditions") or [], cond.INVALID):
        phase = "Pending"  # the spec was fixed
    if phase == "Succeeded" and exhausted_by == "maxTrials" and len(trials) < budget.max_trials:
        # maxTrials was raised after the Study finished: the search goes on.
        phase, exhausted_by = "Running", None
        conds = cond.set_condition(
            conds,
            cond.COMPLETED,
            False,
            "BudgetRaised",
            f"maxTrials raised to {budget.max_trials}",
            generation,
            now,
        )
        events.append(("Normal", "StudyResumed", f"maxTrials raised to {budget.max_trials}"))

    if phase not in ("Succeeded", "Failed"):
        failed = counts["failed"]
        if budget.max_failed_trials is not None and failed > budget.max_failed_trials:
            phase, exhausted_by = "Failed", "maxFailedTrials"
            msg = f"{failed} trials failed, more than maxFailedTrials={budget.max_failed_trials}"
            conds = cond.set_condition(
                conds, cond.FAILED, True, "MaxFailedTrialsExceeded", msg, generation, now
            )
            actions += [StopTrial(t.name, "Failed", "StudyFailed", msg) for t in active]
            events.append(("Warning", "StudyFailed", msg))
        elif len(trials) >= budget.max_trials and not active:
            phase, exhausted_by = "Succeeded", "maxTrials"
            msg = f"all {budget.max_trials} trials finished"
            conds = cond.set_condition(
                conds, cond.COMPLETED, True, "MaxTrialsReached", msg, generation, now
            )
            events.append(("Normal", "StudySucceeded", msg))
        else:
            phase = "Running"
            room = min(budget.parallelism - len(active), budget.max_trials - len(trials))
            if room > 0:
                actions.append(CreateTrials(room))
            actions += [EnsureJob(t.name) for t in active if not t.has_job]

    running_now = phase == "Running"
    conds = cond.set_condition(
        conds,
        cond.RUNNING,
        running_now,
        "TrialsRunning" if running_now else "Finished",
        f"{counts['running']} running, {finished}/{budget.max_trials} finished",
        generation,
        now,
    )
    new: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "progress": f"{finished}/{budget.max_trials}",
        "conditions": conds,
        "trials": counts,
        "budget": {"trialsUsed": len(trials), "gpuHoursUsed": round(gpu_hours, 6)},
    }
    if exhausted_by:
        new["budget"]["exhaustedBy"] = exhausted_by
    started = [t.status.start_time for t in trials if t.status.start_time]
    if status.get("startTime"):
        new["startTime"] = status["startTime"]
    elif started:
        new["startTime"] = min(started).strftime("%Y-%m-%dT%H:%M:%SZ")
    if phase in ("Succeeded", "Failed"):
        new["completionTime"] = status.get("completionTime") or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        new["completionTime"] = None  # a resumed Study is not complete any more
    best = best_trial(spec, trials)
    if best is not None:
        new["bestTrial"] = {
            "name": best.name,
            "number": best.number,
            "value": best.status.value,
            "params": best.params,
        }
    return Plan(actions=actions, status=new, events=events)
