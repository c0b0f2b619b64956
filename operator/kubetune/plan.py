"""The Study's decisions as a pure function: spec + trials -> actions + status.

Level-triggered: the planner never remembers anything; it looks at every Trial
each time and says what should happen next. Running it twice on the same
observation gives the same answer, so any reconcile can be repeated safely.

Budgets end the search at the first limit reached: maxTrials (search trials; seed
repeats come on top), gpuHours (no trial starts that would not fit the remainder
at the running average, running trials finish), timeout (running trials are
stopped at the deadline), maxFailedTrials (the Study fails).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune import boundary, lifecycle
from kubetune import conditions as cond
from kubetune.lifecycle import JobObservation, PodObservation, TrialStatus, finite
from kubetune.spec import StudySpec
from kubetune.timestamps import format_time

# The Study's status lists at most this many Pareto-optimal trials (all are Trials anyway).
MAX_PARETO_FRONT = 100


@dataclass(frozen=True)
class TrialView:
    name: str
    uid: str
    number: int
    params: dict[str, Any]
    status: TrialStatus
    has_job: bool
    source: str = "sampler"  # sampler | enqueued | repeat
    recorded: bool = False  # the Trial object itself says the trial is over
    live_pods: tuple[str, ...] = ()  # its pods still running and not being deleted
    sampler_state: dict[str, Any] | None = None  # what the sampler saved when asking it


@dataclass(frozen=True)
class TrialObservation:
    """One Trial as the cache shows it: its stored status, its Job and pods, new metrics."""

    name: str
    uid: str
    number: int
    params: dict[str, Any]
    source: str
    stored: TrialStatus
    job: JobObservation
    pods: tuple[PodObservation, ...] = ()
    scraped: tuple[tuple[int, float], ...] = ()
    sampler_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class CreateTrials:
    """Create `count` Trials with these `numbers`: asked from the sampler (the `fixed`
    configurations first), or with `params` (seed repeats)."""

    count: int
    params: dict[str, Any] | None = None
    source: str = "sampler"
    numbers: tuple[int, ...] = ()
    fixed: tuple[dict[str, Any], ...] = ()


Event = tuple[str, str, str]  # (type, reason, message)


@dataclass(frozen=True)
class WriteTrialStatus:
    """Record a trial's new status; `result` marks the end of a trial (critical path)."""

    trial: str
    status: TrialStatus
    result: bool = False
    event: Event | None = None  # to post once the write is under way (not per pass)


@dataclass(frozen=True)
class DeleteJob:
    """Remove a recorded trial's Job; `pods` still running are deleted at once too."""

    trial: str
    pods: tuple[str, ...] = ()
    orphan: bool = False  # no Trial: trials wait for it to be gone


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


Action = CreateTrials | EnsureJob | StopTrial | WriteTrialStatus | DeleteJob


@dataclass(frozen=True)
class Context:
    """What the planner needs beyond the spec and the trials."""

    now: datetime
    created: datetime  # the Study's creation: the timeout counts from here
    prune: frozenset[str] = frozenset()  # running trials the pruner says to stop
    grid_size: int | None = None  # the grid sampler's number of points
    # How long a finished trial's Job (and pod) is kept once the Trial has its result:
    # (completed or pruned, failed). Failed ones are kept longer, for their logs.
    retention: tuple[float, float] = (0.0, 3600.0)
    # Prometheus: None when not configured, "" when answering, else the error.
    metrics_error: str | None = None
    orphans: tuple[str, ...] = ()  # the Study's Jobs whose Trial was never created


@dataclass
class Plan:
    actions: list[Action]
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # look again after this many seconds


@dataclass
class TrialsPlan:
    """The trials' next statuses, what to write of them, and what to tell people."""

    views: list[TrialView]
    writes: list[WriteTrialStatus]
    events: list[Event]


def significant(a: TrialStatus, b: TrialStatus) -> bool:
    """Whether writing `b` over `a` tells anyone something new."""
    if a.phase == b.phase == "Pending" and not b.intermediate:
        return False  # a trial's first status write is when it starts running
    # A running trial's GPU-seconds grow every second but are news to nobody: the
    # budget is computed from the start time, and the Study's status sums them. They
    # ride along with the trial's other writes and are final with its result, so a
    # trial costs two status writes (running, result) plus one per reported step.
    da, db = a.to_k8s(), b.to_k8s()
    da.pop("gpuSeconds", None)
    db.pop("gpuSeconds", None)
    return da != db


def trial_event(name: str, st: TrialStatus) -> Event:
    if st.phase == "Completed":
        return ("Normal", "TrialCompleted", f"{name} completed with value {st.value}")
    if st.phase == "Pruned":
        return ("Normal", "TrialPruned", f"{name} pruned at step {st.last_step}")
    return ("Warning", "TrialFailed", f"{name} failed ({st.reason}): {st.message}")


def plan_trials(
    spec: StudySpec, observed: list[TrialObservation], gpus: int, now: datetime
) -> TrialsPlan:
    """Each trial's next status from what the cluster shows (the trial state machine)."""
    objectives = [o.metric for o in spec.all_objectives]
    views, writes, events = [], [], []
    for o in observed:
        if o.stored.terminal and not o.pods and not o.job.exists and not o.scraped:
            # Recorded and cleaned up: nothing can change (terminal phases are sticky),
            # so a long Study's finished trials cost a pass next to nothing.
            views.append(
                TrialView(
                    o.name,
                    o.uid,
                    o.number,
                    o.params,
                    o.stored,
                    False,
                    o.source,
                    recorded=True,
                    sampler_state=o.sampler_state,
                )
            )
            continue
        new = lifecycle.observe(
            o.stored,
            job_name=o.name,
            job=o.job,
            pods=list(o.pods),
            objectives=objectives,
            gpus=gpus,
            scraped=list(o.scraped),
            now=now,
        )
        if significant(o.stored, new):
            ended = new.terminal and not o.stored.terminal
            # A completed trial is routine (its Trial and the Study's status say it); an
            # Event per trial would be one more write per trial at scale.
            event = trial_event(o.name, new) if ended and new.phase != "Completed" else None
            writes.append(WriteTrialStatus(o.name, new, result=ended, event=event))
            if event is not None:
                events.append(event)
        live = tuple(p.name for p in o.pods if p.phase in ("Pending", "Running") and not p.deleting)
        views.append(
            TrialView(
                name=o.name,
                uid=o.uid,
                number=o.number,
                params=o.params,
                status=new,
                has_job=o.job.exists,
                source=o.source,
                recorded=o.stored.terminal,
                live_pods=live,
                sampler_state=o.sampler_state,
            )
        )
    return TrialsPlan(views, writes, events)


def ranked(spec: StudySpec, trials: list[TrialView]) -> list[TrialView]:
    """Completed search trials, best first; ties go to the earlier trial.

    Seed repeats do not compete: they measure the best trial's spread.
    """
    done = [
        t
        for t in trials
        if t.status.phase == "Completed" and t.status.value is not None and t.source != "repeat"
    ]
    sign = -1.0 if spec.primary.maximize else 1.0
    return sorted(done, key=lambda t: (sign * float(t.status.value or 0.0), t.number))


def best_trial(spec: StudySpec, trials: list[TrialView]) -> TrialView | None:
    best = ranked(spec, trials)
    return best[0] if best else None


def pareto_front(spec: StudySpec, trials: list[TrialView]) -> list[TrialView]:
    """Completed trials that no other completed trial dominates."""
    signs = [1.0 if o.maximize else -1.0 for o in spec.all_objectives]
    done = [t for t in trials if t.status.phase == "Completed" and t.status.values]

    def key(t: TrialView) -> list[float]:
        return [s * v for s, v in zip(signs, t.status.values or [], strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [t for t in done if not any(dominates(key(o), key(t)) for o in done)]


def _counts(trials: list[TrialView]) -> dict[str, int]:
    phases = [t.status.phase for t in trials]
    return {
        "running": sum(p in ("Pending", "Running") for p in phases),
        "waiting": phases.count("Waiting"),
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


def _nonfinite_step(st: TrialStatus) -> int | None:
    return next((s for s, v in st.intermediate if not finite(v)), None)


def _stops(active: list[TrialView], ctx: Context) -> list[StopTrial]:
    """Running trials to end now: diverged on the way, or pruned."""
    out = []
    for t in active:
        step = _nonfinite_step(t.status)
        if step is not None:
            out.append(
                StopTrial(
                    t.name,
                    "Failed",
                    "Diverged",
                    f"the objective was not finite (NaN or infinite) at step {step}",
                )
            )
        elif t.name in ctx.prune:
            out.append(
                StopTrial(t.name, "Pruned", "Pruned", f"pruned at step {t.status.last_step}")
            )
    return out


@dataclass
class _GpuBudget:
    used_seconds: float
    room: float  # how many more trials fit (math.inf without a gpuHours budget)

    @property
    def can_start(self) -> bool:
        return self.room >= 1


def _gpu_budget(spec: StudySpec, trials: list[TrialView]) -> _GpuBudget:
    used = sum(t.status.gpu_seconds for t in trials)
    limit = spec.budget.gpu_hours
    if limit is None:
        return _GpuBudget(used, math.inf)
    finished = [t.status.gpu_seconds for t in trials if t.status.terminal and t.status.gpu_seconds]
    if not finished:  # no average yet: start while anything is left
        return _GpuBudget(used, math.inf if used < limit * 3600 else 0)
    average = statistics.fmean(finished)
    # Running trials will use at least the average; each new one about as much.
    projected = sum(
        t.status.gpu_seconds if t.status.terminal else max(t.status.gpu_seconds, average)
        for t in trials
    )
    return _GpuBudget(used, max(0, math.floor((limit * 3600 - projected) / average)))


def plan(
    spec: StudySpec,
    trials: list[TrialView],
    status: dict[str, Any],
    generation: int,
    ctx: Context,
) -> Plan:
    now = ctx.now
    trials = sorted(trials, key=lambda t: t.number)
    budget = spec.budget
    search = [t for t in trials if t.source != "repeat"]
    repeats = [t for t in trials if t.source == "repeat"]
    active = [t for t in trials if not t.status.terminal]
    max_trials = min(budget.max_trials, ctx.grid_size or budget.max_trials)
    gpu = _gpu_budget(spec, trials)
    deadline = (
        ctx.created.timestamp() + budget.timeout_seconds if budget.timeout_seconds else math.inf
    )
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
    if phase == "Succeeded" and exhausted_by == "maxTrials" and len(search) < max_trials:
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

    def finish(ok: bool, reason: str, message: str) -> None:
        nonlocal phase, conds
        phase = "Succeeded" if ok else "Failed"
        kind = cond.COMPLETED if ok else cond.FAILED
        conds = cond.set_condition(conds, kind, True, reason, message, generation, now)
        events.append(("Normal" if ok else "Warning", f"Study{phase}", message))

    best = best_trial(spec, trials)
    counts = _counts(trials)
    if phase not in ("Succeeded", "Failed"):
        phase = "Running"
        stops = _stops(active, ctx)
        actions += stops
        stopping = {s.trial for s in stops}
        active = [t for t in active if t.name not in stopping]
        failed = counts["failed"] + sum(s.phase == "Failed" for s in stops)
        if budget.max_failed_trials is not None and failed > budget.max_failed_trials:
            exhausted_by = "maxFailedTrials"
            msg = f"{failed} trials failed, more than maxFailedTrials={budget.max_failed_trials}"
            actions += [StopTrial(t.name, "Failed", "StudyFailed", msg) for t in active]
            finish(False, "MaxFailedTrialsExceeded", msg)
        elif now.timestamp() >= deadline:
            exhausted_by = "timeout"
            msg = f"the timeout of {budget.timeout} was reached"
            actions += [StopTrial(t.name, "Failed", "DeadlineExceeded", msg) for t in active]
            finish(best is not None, "Timeout", msg + ("" if best else "; no trial completed"))
        else:
            search_left = max_trials - len(search)
            gpu_spent = not gpu.can_start
            searching = search_left > 0 and not gpu_spent
            room = budget.parallelism - len(active)

            # The plan numbers the new trials: the lowest numbers no Trial has, so the
            # numbers stay 0..N-1 even when a create failed (its Trial never existed).
            def numbers(count: int) -> tuple[int, ...]:
                taken = {t.number for t in trials}
                free = (n for n in range(len(taken) + count) if n not in taken)
                return tuple(next(free) for _ in range(count))

            if searching and room > 0:
                count = int(min(room, search_left, gpu.room))
                fixed = tuple(spec.enqueue[len(search) : len(search) + count])
                actions.append(CreateTrials(count, numbers=numbers(count), fixed=fixed))
            elif not searching and not any(t.source != "repeat" for t in active):
                want = spec.repeat_best.count if spec.repeat_best and best and not gpu_spent else 0
                if len(repeats) < want and room > 0:
                    assert best is not None
                    count = min(room, want - len(repeats))
                    actions.append(
                        CreateTrials(
                            count, params=best.params, source="repeat", numbers=numbers(count)
                        )
                    )
                elif not active:
                    exhausted_by = "gpuHours" if gpu_spent else "maxTrials"
                    if best is None and len(spec.all_objectives) == 1:
                        finish(
                            False, "NoTrialCompleted", f"none of the {len(search)} trials completed"
                        )
                    elif gpu_spent:
                        finish(
                            True,
                            "GpuHoursExhausted",
                            f"the gpuHours budget ({budget.gpu_hours}) is spent",
                        )
                    else:
                        grid = " (the whole grid)" if max_trials < budget.max_trials else ""
                        finish(True, "MaxTrialsReached", f"all {max_trials} trials finished{grid}")
            actions += [EnsureJob(t.name) for t in active if not t.has_job]
        events += [_stop_event(a) for a in actions if isinstance(a, StopTrial)]
        # The status written with this plan counts the trials it stops.
        phase_of = {t.name: t.status.phase for t in trials}
        for stop in (a for a in actions if isinstance(a, StopTrial)):
            counts["waiting" if phase_of.get(stop.trial) == "Waiting" else "running"] -= 1
            counts["failed" if stop.phase == "Failed" else "pruned"] += 1
            counts["diverged"] += stop.reason == "Diverged"
    cleanup, requeue = _cleanup(trials, ctx)
    actions += cleanup
    if ctx.orphans:
        # A trial's Trial and Job are created together; when only the Job was, it goes,
        # and no trial is created until it is gone (the next one would reuse its name).
        actions = [a for a in actions if not isinstance(a, CreateTrials)]
        actions += [DeleteJob(name, orphan=True) for name in ctx.orphans]
    # ...and the trials it creates: the next pass, which sees them, then has nothing new
    # to write (one Study status write per trial turnover, not two).
    created = [a for a in actions if isinstance(a, CreateTrials)]
    # (Behind a queue, a new trial's Job is created suspended: it starts out Waiting.)
    counts["waiting" if spec.queue_name else "running"] += sum(c.count for c in created)
    created_search = sum(c.count for c in created if c.source != "repeat")
    if phase == "Running" and budget.timeout_seconds:
        until_deadline = max(0.0, deadline - now.timestamp())
        requeue = until_deadline if requeue is None else min(requeue, until_deadline)
    conds = _metrics_condition(conds, ctx, phase, generation, now)

    finished_n = len(search) - sum(not t.status.terminal for t in search)
    running_now = phase == "Running"
    conds = cond.set_condition(
        conds,
        cond.RUNNING,
        running_now,
        "TrialsRunning" if running_now else "Finished",
        f"{counts['running']} running, {finished_n}/{max_trials} finished",
        generation,
        now,
    )
    budget_status: dict[str, Any] = {
        "trialsUsed": len(search) + created_search,
        "maxTrials": max_trials,
        "gpuHoursUsed": round(gpu.used_seconds / 3600.0, 6),
        "failedTrials": counts["failed"],
    }
    if budget.gpu_hours is not None:
        budget_status["gpuHours"] = budget.gpu_hours
    if budget.timeout_seconds is not None:
        budget_status["deadline"] = format_time(datetime.fromtimestamp(deadline, tz=now.tzinfo))
    if exhausted_by:
        budget_status["exhaustedBy"] = exhausted_by
    new: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "progress": f"{finished_n}/{max_trials}",
        "conditions": conds,
        "trials": counts,
        "budget": budget_status,
    }
    started = [t.status.start_time for t in trials if t.status.start_time]
    if status.get("startTime"):
        new["startTime"] = status["startTime"]
    elif started:
        new["startTime"] = format_time(min(started))
    if phase in ("Succeeded", "Failed"):
        new["completionTime"] = status.get("completionTime") or format_time(now)
        new["conditions"] = _boundary_condition(spec, trials, new["conditions"], generation, now)
    else:
        new["completionTime"] = None  # a resumed Study is not complete any more
    if len(spec.all_objectives) > 1:
        front = pareto_front(spec, trials)
        new["paretoFront"] = [
            {"name": t.name, "number": t.number, "values": t.status.values, "params": t.params}
            for t in _spread(front, MAX_PARETO_FRONT)
        ]
        new["paretoFrontSize"] = len(front)
    elif best is not None:
        new["bestTrial"] = {
            "name": best.name,
            "number": best.number,
            "value": best.status.value,
            "params": best.params,
        }
        if spec.repeat_best is not None:
            _repeat_status(new, best, repeats)
    return Plan(actions=actions, status=new, events=events, requeue_after=requeue)


def _spread(front: list[TrialView], most: int) -> list[TrialView]:
    """At most `most` Pareto-optimal trials, evenly spread along the first objective."""
    if len(front) <= most:
        return front
    ordered = sorted(front, key=lambda t: (t.status.values or [0.0])[0])
    return [ordered[round(i * (len(ordered) - 1) / (most - 1))] for i in range(most)]


def _stop_event(stop: StopTrial) -> Event:
    kind = "Normal" if stop.phase == "Pruned" else "Warning"
    return (kind, f"Trial{stop.phase}", f"{stop.trial} {stop.phase.lower()}: {stop.message}")


def _cleanup(trials: list[TrialView], ctx: Context) -> tuple[list[Action], float | None]:
    """Jobs of trials whose result is recorded go, after their retention time.

    Level-triggered: whatever happened in between (an operator killed after
    writing a stop but before deleting the Job), a recorded trial with a Job
    left gets it deleted, its still-running pods at once.
    """
    actions: list[Action] = []
    requeue: float | None = None
    for t in trials:
        if not (t.recorded and t.has_job):
            continue
        keep = ctx.retention[1] if t.status.phase == "Failed" else ctx.retention[0]
        ended = t.status.completion_time or ctx.now
        left = ended.timestamp() + keep - ctx.now.timestamp()
        if left <= 0 or t.live_pods:
            actions.append(DeleteJob(t.name, t.live_pods))
        else:
            requeue = left if requeue is None else min(requeue, left)
    return actions, requeue


def _metrics_condition(
    conds: list[dict[str, Any]], ctx: Context, phase: str, generation: int, now: datetime
) -> list[dict[str, Any]]:
    """Whether intermediate values (pruning, curves) are flowing; absent without Prometheus."""
    if ctx.metrics_error is None or phase not in ("Running", "Pending"):
        return conds
    if ctx.metrics_error:
        return cond.set_condition(
            conds,
            cond.METRICS,
            False,
            "PrometheusUnreachable",
            f"pruning and intermediate curves are paused ({ctx.metrics_error}); "
            "trials still complete from their termination messages",
            generation,
            now,
        )
    return cond.set_condition(
        conds,
        cond.METRICS,
        True,
        "PrometheusAnswering",
        "intermediate values are read from Prometheus",
        generation,
        now,
    )


def _repeat_status(new: dict[str, Any], best: TrialView, repeats: list[TrialView]) -> None:
    """Mean and spread of the best parameters over seeds; the best value becomes the mean."""
    done = [
        t.status.value
        for t in repeats
        if t.status.phase == "Completed" and t.status.value is not None
    ]
    values = [float(best.status.value or 0.0), *(float(v) for v in done if v is not None)]
    new["repeatBest"] = {
        "trial": best.name,
        "values": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "failed": sum(t.status.phase == "Failed" for t in repeats),
    }
    if done and all(t.status.terminal for t in repeats):
        new["bestTrial"]["value"] = new["repeatBest"]["mean"]
        new["bestTrial"]["singleRunValue"] = best.status.value


def _boundary_condition(
    spec: StudySpec,
    trials: list[TrialView],
    conds: list[dict[str, Any]],
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    if len(spec.all_objectives) > 1:
        return conds
    found = boundary.at_boundary(spec.parameters, [t.params for t in ranked(spec, trials)])
    if found:
        return cond.set_condition(
            conds,
            cond.BOUNDARY,
            True,
            "BestAtEdge",
            boundary.message(spec.parameters, found),
            generation,
            now,
        )
    return cond.set_condition(
        conds,
        cond.BOUNDARY,
        False,
        "WithinRange",
        "the best values lie inside their ranges",
        generation,
        now,
    )
