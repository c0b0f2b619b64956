"""Budgets, pruning and divergence stops, seed repeats, Pareto front, boundary check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubetune.boundary import at_boundary
from kubetune.lifecycle import TrialStatus
from kubetune.plan import Context, CreateTrials, StopTrial, TrialView, plan
from kubetune.spec import parse

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(**extra: Any) -> Any:
    budget = {"maxTrials": 10, "parallelism": 2, **extra.pop("budget", {})}
    return parse(
        {
            "objective": {"metric": "acc"},
            "parameters": [
                {"name": "lr", "float": {"low": 1e-4, "high": 1.0, "log": True}},
                {"name": "width", "int": {"low": 8, "high": 512}},
            ],
            "budget": budget,
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            **extra,
        }
    )


def trial(
    n: int,
    phase: str = "Completed",
    value: float | None = 0.5,
    gpu: float = 100.0,
    intermediate: list[tuple[int, float]] | None = None,
    source: str = "sampler",
    params: dict[str, Any] | None = None,
) -> TrialView:
    st = TrialStatus(
        phase=phase,
        value=value if phase == "Completed" else None,
        gpu_seconds=gpu,
        intermediate=intermediate or [],
        reason="Error" if phase == "Failed" else None,
    )
    return TrialView(f"s-{n}", f"u{n}", n, params or {"lr": 0.01, "width": 64}, st, True, source)


def ctx(seconds: float = 0, **kw: Any) -> Context:
    return Context(now=T0 + timedelta(seconds=seconds), created=T0, **kw)


def test_gpu_budget_stops_new_trials_by_the_running_average() -> None:
    s = spec(budget={"gpuHours": 0.1})  # 360 GPU-seconds
    # 2 finished at 100 s each, 1 running at 50 s: projected 100+100+100, +100 > 360.
    trials = [trial(0), trial(1), trial(2, "Running", gpu=50.0)]
    p = plan(s, trials, {}, 1, ctx())
    assert not any(isinstance(a, CreateTrials) for a in p.actions)
    assert p.status["phase"] == "Running", "running trials are allowed to finish"
    done = plan(s, [trial(0), trial(1), trial(2)], p.status, 1, ctx())
    assert done.status["phase"] == "Succeeded"
    assert done.status["budget"]["exhaustedBy"] == "gpuHours"
    assert done.status["budget"]["gpuHoursUsed"] == round(300 / 3600, 6)
    # With room for one more at the average, one more starts.
    assert plan(s, [trial(0), trial(1)], {}, 1, ctx()).actions == [CreateTrials(1, numbers=(2,))]


def test_timeout_stops_running_trials_at_the_deadline() -> None:
    s = spec(budget={"timeout": "10m"})
    trials = [trial(0), trial(1, "Running")]
    assert plan(s, trials, {}, 1, ctx(599)).status["phase"] == "Running"
    p = plan(s, trials, {}, 1, ctx(600))
    assert p.status["phase"] == "Succeeded"
    assert p.status["budget"]["exhaustedBy"] == "timeout"
    assert p.status["budget"]["deadline"] == "2026-01-01T00:10:00Z"
    assert p.actions == [
        StopTrial("s-1", "Failed", "DeadlineExceeded", "the timeout of 10m was reached")
    ]


def test_pruned_and_diverged_running_trials_are_stopped() -> None:
    trials = [
        trial(0, "Running", intermediate=[(1, 0.2)]),
        trial(1, "Running", intermediate=[(1, 0.3), (2, float("nan"))]),
    ]
    p = plan(spec(), trials, {}, 1, ctx(prune=frozenset({"s-0"})))
    assert StopTrial("s-0", "Pruned", "Pruned", "pruned at step 1") in p.actions
    assert (
        StopTrial(
            "s-1", "Failed", "Diverged", "the objective was not finite (NaN or infinite) at step 2"
        )
        in p.actions
    )
    assert CreateTrials(2, numbers=(2, 3)) in p.actions, (
        "their GPUs are free for the next trials at once"
    )


def test_seed_repeats_after_the_search_and_the_mean_becomes_the_best() -> None:
    s = spec(budget={"maxTrials": 3, "parallelism": 2}, repeatBest={"count": 3})
    search = [
        trial(0, value=0.7),
        trial(1, value=0.9, params={"lr": 0.1, "width": 32}),
        trial(2, value=0.8),
    ]
    p = plan(s, search, {}, 1, ctx())
    assert p.actions == [
        CreateTrials(2, params={"lr": 0.1, "width": 32}, source="repeat", numbers=(3, 4))
    ]
    assert p.status["phase"] == "Running"
    reps = [
        trial(3, value=0.85, source="repeat"),
        trial(4, value=0.8, source="repeat"),
        trial(5, value=0.95, source="repeat"),
    ]
    done = plan(s, search + reps, p.status, 1, ctx())
    assert done.status["phase"] == "Succeeded"
    rb = done.status["repeatBest"]
    assert rb["trial"] == "s-1" and rb["values"] == [0.9, 0.85, 0.8, 0.95]
    assert abs(rb["mean"] - 0.875) < 1e-9 and rb["std"] > 0
    assert done.status["bestTrial"]["value"] == rb["mean"]
    assert done.status["bestTrial"]["singleRunValue"] == 0.9
    assert done.status["bestTrial"]["name"] == "s-1", "a repeat never becomes the best trial"


def test_pareto_front_for_two_objectives() -> None:
    s = parse(
        {
            "objectives": [{"metric": "acc"}, {"metric": "latency", "direction": "minimize"}],
            "parameters": [{"name": "x", "float": {"low": 0, "high": 1}}],
            "budget": {"maxTrials": 4},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )

    def t(n: int, acc: float, lat: float) -> TrialView:
        return TrialView(
            f"s-{n}",
            "u",
            n,
            {"x": 0.1},
            TrialStatus(phase="Completed", value=acc, values=[acc, lat]),
            True,
        )

    p = plan(s, [t(0, 0.9, 10), t(1, 0.8, 5), t(2, 0.7, 8), t(3, 0.95, 20)], {}, 1, ctx())
    assert [e["name"] for e in p.status["paretoFront"]] == ["s-0", "s-1", "s-3"]
    assert "bestTrial" not in p.status


def test_grid_smaller_than_max_trials_ends_with_the_grid() -> None:
    p = plan(spec(), [trial(i) for i in range(4)], {}, 1, ctx(grid_size=4))
    assert p.status["phase"] == "Succeeded"
    assert p.status["progress"] == "4/4"


def test_no_completed_trial_is_a_failed_study() -> None:
    trials = [trial(i, "Failed") for i in range(10)]
    p = plan(spec(), trials, {}, 1, ctx())
    assert p.status["phase"] == "Failed"
    assert next(c for c in p.status["conditions"] if c["type"] == "Failed")["reason"] == (
        "NoTrialCompleted"
    )


def test_boundary_condition_names_the_edge_to_widen() -> None:
    s = spec()
    params = [{"lr": 0.9, "width": 200}, {"lr": 0.95, "width": 100}, {"lr": 0.001, "width": 300}]
    trials = [
        trial(i, value=v, params=p)
        for i, (v, p) in enumerate(zip([0.9, 0.8, 0.1], params, strict=True))
    ]
    trials += [trial(3 + i, value=0.05, params={"lr": 0.001, "width": 256}) for i in range(7)]
    done = plan(s, trials, {}, 1, ctx())
    c = next(c for c in done.status["conditions"] if c["type"] == "SearchSpaceBoundary")
    assert c["status"] == "True"
    assert (
        "lr: the best values are at the high edge (1.0); widen the range above 1.0" in c["message"]
    )
    assert "width" not in c["message"]


def test_boundary_uses_log_space_and_the_top_ten_percent() -> None:
    s = spec()
    p = s.parameters[0]  # lr in [1e-4, 1] log: 1.5e-4 is at the low edge in log space
    assert at_boundary([p], [{"lr": 1.5e-4}]) == {"lr": "low"}
    assert at_boundary([p], [{"lr": 0.001}]) == {}
    # Best inside, but most of the top 10% at the high edge.
    top = [{"lr": 0.01}] + [{"lr": 0.95}] * 2 + [{"lr": 0.01}] * 27
    assert at_boundary([p], top) == {"lr": "high"}


def test_the_status_that_ends_a_study_counts_the_trials_it_stops() -> None:
    trials = [trial(0, "Running", intermediate=[(1, float("nan"))])]
    p = plan(spec(budget={"maxTrials": 1, "parallelism": 1}), trials, {}, 1, ctx())
    assert p.status["phase"] == "Failed", "its only trial diverged"
    assert p.status["trials"]["diverged"] == 1 and p.status["trials"]["running"] == 0
