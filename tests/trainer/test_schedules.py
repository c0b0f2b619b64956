"""Each learning-rate schedule follows its formula; warm-up composes with each."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from kubetune_trainer.schedules import SCHEDULES, Schedule, dummy_optimizer, lrs

LR0 = 0.1
N = 25


def run(
    name: str,
    params: dict[str, Any],
    warmup: int = 0,
    start: float = 0.0,
    metrics: list[float] | None = None,
) -> list[float]:
    s = Schedule(dummy_optimizer(LR0), name, params, warmup_steps=warmup, warmup_start_lr=start)
    return lrs(s, N, metrics)


# name, params, the formula lr(t) for t = 0, 1, ...
CASES: list[tuple[str, dict[str, Any], Callable[[int], float]]] = [
    ("constant", {}, lambda t: LR0),
    (
        "piecewise",
        {"boundaries": [5, 10], "values": [1.0, 0.5, 0.1]},
        lambda t: LR0 * (1.0 if t < 5 else 0.5 if t < 10 else 0.1),
    ),
    ("exponential", {"gamma": 0.9}, lambda t: LR0 * 0.9**t),
    ("natural-exp", {"gamma": 0.2}, lambda t: LR0 * math.exp(-0.2 * t)),
    (
        "polynomial",
        {"decay_steps": 10, "end_lr": 0.01, "power": 2.0},
        lambda t: (LR0 - 0.01) * (1 - min(t, 10) / 10) ** 2 + 0.01,
    ),
    (
        "polynomial",
        {"decay_steps": 10, "end_lr": 0.01, "power": 1.0, "cycle": True},
        lambda t: (LR0 - 0.01) * (1 - t / (10 * max(1, math.ceil(t / 10)))) + 0.01,
    ),
    ("step", {"step_size": 4, "gamma": 0.5}, lambda t: LR0 * 0.5 ** (t // 4)),
    (
        "multi-step",
        {"milestones": [3, 7], "gamma": 0.1},
        lambda t: LR0 * 0.1 ** sum(t >= m for m in (3, 7)),
    ),
    ("inverse-time", {"gamma": 0.5}, lambda t: LR0 / (1 + 0.5 * t)),
    ("multiplicative", {"factor": 0.95}, lambda t: LR0 * 0.95**t),
    (
        "cosine",
        {"t_max": 10, "min_lr": 0.001},
        lambda t: (
            0.001
            + (LR0 - 0.001)
            * (1 + math.cos(math.pi * (t % 20 if t % 20 <= 10 else 20 - t % 20) / 10))
            / 2
        ),
    ),
    (
        "cosine-restarts",
        {"t_0": 5, "min_lr": 0.0},
        lambda t: LR0 * (1 + math.cos(math.pi * (t % 5) / 5)) / 2,
    ),
    (
        "noam",
        {"d_model": 64, "warmup": 4},
        lambda t: LR0 * 64**-0.5 * min((t + 1) ** -0.5, (t + 1) * 4**-1.5),
    ),
]


@pytest.mark.parametrize(
    ("name", "params", "formula"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_schedule_matches_its_formula(
    name: str, params: dict[str, Any], formula: Callable[[int], float]
) -> None:
    assert run(name, params) == pytest.approx([formula(t) for t in range(N)], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "params", "formula"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_warmup_then_schedule(
    name: str, params: dict[str, Any], formula: Callable[[int], float]
) -> None:
    w, start = 5, 0.001
    got = run(name, params, warmup=w, start=start)
    ramp = [start + (LR0 - start) * t / w for t in range(w)]
    assert got[:w] == pytest.approx(ramp)
    assert got[w:] == pytest.approx([formula(t) for t in range(N - w)], rel=1e-6, abs=1e-12)


def test_reduce_on_plateau_waits_patience_then_cools_down() -> None:
    # The loss improves for 3 steps, then stalls.
    metrics = [1.0, 0.9, 0.8] + [0.8] * (N - 3)
    got = run(
        "plateau", {"factor": 0.5, "patience": 2, "cooldown": 3, "min_lr": 0.02}, metrics=metrics
    )
    # lr(t) is the rate before step t's metric is seen. Stalled from step 3 on: two
    # bad steps are tolerated, the third halves the rate; then a cool-down of 3.
    assert got[:6] == pytest.approx([LR0] * 6)
    assert got[6] == pytest.approx(0.05)
    assert got[7:12] == pytest.approx([0.05] * 5)
    assert got[12] == pytest.approx(0.025)
    assert min(got) == pytest.approx(0.02), "never below min_lr"


def test_every_named_schedule_is_covered() -> None:
    assert {c[0] for c in CASES} | {"plateau"} == set(SCHEDULES)


def test_unknown_schedule_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'linear'; choose one of"):
        Schedule(dummy_optimizer(LR0), "linear")
