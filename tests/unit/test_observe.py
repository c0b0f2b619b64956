"""The watch-fed cache, the trial planner's observations and the Prometheus query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubetune.adapters.prom import pair_steps, study_query
from kubetune.cache import Cache, JobRecord, PodRecord, TrialRecord
from kubetune.lifecycle import JobObservation, PodObservation, TrialStatus
from kubetune.plan import (
    Context,
    DeleteJob,
    TrialObservation,
    TrialView,
    plan,
    plan_trials,
)
from kubetune.spec import parse

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = parse(
    {
        "objective": {"metric": "acc"},
        "parameters": [{"name": "x", "float": {"low": 0, "high": 1}}],
        "budget": {"maxTrials": 2, "parallelism": 2},
        "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }
)


def meta(name: str, uid: str, owner: str | None, rv: int = 1, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": uid,
        "resourceVersion": str(rv),
        "labels": {"kubetune.dev/study": "s"},
        **extra,
    }
    if owner:
        out["ownerReferences"] = [{"uid": owner, "controller": True}]
    return out


def study(uid: str = "S") -> dict[str, Any]:
    return {"metadata": meta("s", uid, None), "spec": {}}


def trial(n: int, owner: str = "S", rv: int = 1) -> TrialRecord:
    return TrialRecord.parse(
        {"metadata": meta(f"s-{n}", f"T{n}", owner, rv), "spec": {"study": "s", "number": n}}
    )


def job(n: int, owner: str | None = None) -> JobRecord:
    return JobRecord.parse({"metadata": meta(f"s-{n}", f"J{n}", owner or f"T{n}"), "spec": {}})


def pod(name: str, owner: str, phase: str = "Running") -> PodRecord:
    return PodRecord.parse({"metadata": meta(name, f"P-{name}", owner), "status": {"phase": phase}})


def test_snapshot_matches_children_by_owner_uid() -> None:
    cache = Cache()
    cache.put_study(study())
    for r in (trial(0), trial(1, owner="OLD"), job(0), job(1), pod("a", "J0"), pod("b", "J9")):
        cache.put(r)
    snap = cache.snapshot(("ns", "s"))
    assert snap is not None
    assert [t.name for t in snap.trials] == ["s-0"], "a Trial of an older Study is not ours"
    assert list(snap.jobs) == ["s-0"], "a Job whose Trial is not ours is not ours"
    assert [p.name for p in snap.pods["s-0"]] == ["a"]


def test_relist_replaces_what_vanished_and_reports_changed_studies() -> None:
    cache = Cache()
    cache.put_study(study())
    cache.put(trial(0))
    cache.put(trial(1))
    changed = cache.replace(TrialRecord, None, [trial(1)])
    assert changed == {("ns", "s")}
    assert list(cache.studies[("ns", "s")].trials) == ["s-1"]
    assert cache.replace(TrialRecord, None, [trial(1)]) == set(), "an unchanged relist is quiet"


def test_deleted_children_leave_the_cache() -> None:
    cache = Cache()
    cache.put(job(0))
    cache.remove(job(0))
    assert cache.studies == {}, "nothing is kept for a Study that is gone"


def obs(name: str, stored: TrialStatus, pods: tuple[PodObservation, ...] = ()) -> TrialObservation:
    return TrialObservation(
        name=name,
        uid="u",
        number=int(name.split("-")[1]),
        params={"x": 0.5},
        source="sampler",
        stored=stored,
        job=JobObservation(exists=True),
        pods=pods,
    )


def test_plan_trials_writes_results_and_says_which_are_results() -> None:
    done = PodObservation(
        "p", "Succeeded", started=NOW, finished=NOW, termination_messages=('{"metrics":{"acc":1}}',)
    )
    running = PodObservation("q", "Running", started=NOW)
    tp = plan_trials(
        SPEC,
        [obs("s-0", TrialStatus("Running"), (done,)), obs("s-1", TrialStatus(), (running,))],
        0,
        NOW,
    )
    assert [(w.trial, w.status.phase, w.result) for w in tp.writes] == [
        ("s-0", "Completed", True),
        ("s-1", "Running", False),
    ]
    assert tp.events == [], "a completion is routine: no Event"
    assert tp.views[1].live_pods == ("q",)
    assert not tp.views[0].recorded, "recorded only once the Trial object says so"


def view(n: int, phase: str, ended: datetime, live: tuple[str, ...] = ()) -> TrialView:
    st = TrialStatus(phase=phase, value=0.5, completion_time=ended)
    return TrialView(f"s-{n}", "u", n, {"x": 0.5}, st, True, recorded=True, live_pods=live)


def test_recorded_trials_lose_their_jobs_after_retention() -> None:
    ctx = Context(now=NOW, created=NOW, retention=(0.0, 600.0))
    trials = [view(0, "Completed", NOW), view(1, "Failed", NOW - timedelta(seconds=100))]
    p = plan(SPEC, trials, {}, 1, ctx)
    assert [a for a in p.actions if isinstance(a, DeleteJob)] == [DeleteJob("s-0")]
    assert p.requeue_after == 500.0, "the failed one's Job goes when its retention ends"


def test_a_recorded_trial_with_a_running_pod_has_it_deleted_at_once() -> None:
    ctx = Context(now=NOW, created=NOW, retention=(600.0, 600.0))
    p = plan(SPEC, [view(0, "Pruned", NOW, live=("p",))], {}, 1, ctx)
    assert DeleteJob("s-0", ("p",)) in p.actions


def test_metrics_condition_says_when_pruning_is_paused() -> None:
    down = plan(SPEC, [], {}, 1, Context(now=NOW, created=NOW, metrics_error="connection refused"))
    cond = next(c for c in down.status["conditions"] if c["type"] == "MetricsAvailable")
    assert (
        cond["status"] == "False"
        and "pruning and intermediate curves are paused" in cond["message"]
    )
    off = plan(SPEC, [], {}, 1, Context(now=NOW, created=NOW))
    assert not any(c["type"] == "MetricsAvailable" for c in off.status["conditions"])


def test_one_query_per_study_pairs_values_with_steps() -> None:
    q = study_query("ns", 's"x', "acc", 12.2)
    assert q.endswith("[13s]") and 'kubetune_dev_study="s\\"x"' in q
    result = [
        {
            "metric": {"__name__": "kubetune_trial_metric", "kubetune_dev_trial": "s-0"},
            "values": [[10.0, "0.5"], [11.0, "0.6"]],
        },
        {
            "metric": {"__name__": "kubetune_trial_metric_step", "kubetune_dev_trial": "s-0"},
            "values": [[10.0, "1"], [11.0, "2"]],
        },
        {
            "metric": {"__name__": "kubetune_trial_metric", "kubetune_dev_trial": "s-1"},
            "values": [[10.0, "0.9"]],
        },
    ]
    assert pair_steps(result) == {"s-0": [(1, 0.5), (2, 0.6)]}, (
        "a value without its step is skipped"
    )


def test_a_job_without_its_trial_is_an_orphan_that_goes_before_new_trials() -> None:
    cache = Cache()
    cache.put_study(study())
    cache.put(trial(0))
    cache.put(job(0, owner="S"))  # owned by the Study, as the operator makes them
    cache.put(job(1, owner="S"))  # its Trial's create failed
    snap = cache.snapshot(("ns", "s"))
    assert snap is not None and list(snap.jobs) == ["s-0"] and snap.orphans == ("s-1",)
    p = plan(SPEC, [], {}, 1, Context(now=NOW, created=NOW, orphans=snap.orphans))
    assert p.actions == [DeleteJob("s-1", orphan=True)], (
        "no trial is created until the orphan is gone"
    )
