"""The search benchmark's tasks (bench/search_tasks.py) and its in-process runner.

The benchmark's conclusions are only as good as its tasks: a curve that changed from
run to run, an optimum that random points beat, or a spec the operator would refuse
would each make its figures meaningless.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from kubetune import space
from kubetune.adapters.sampling import make_pruner, make_sampler
from kubetune.spec import parse

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import search_inprocess  # noqa: E402
import search_report  # noqa: E402
import search_tasks  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
FAST = list(search_tasks.FAST_TASKS.values())
ALL_TASKS: list[Any] = [*FAST, search_tasks.REAL]


def random_points(task: Any, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Points drawn as the random sampler draws them, through the operator's own space."""
    spec = parse(search_tasks.study_spec(task, "random", "none", seed, count))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask(), spec.parameters) for _ in range(count)]


@pytest.mark.parametrize("task", FAST, ids=lambda t: t.name)
def test_curves_are_deterministic_for_a_seed(task: search_tasks.CurveTask) -> None:
    for params in random_points(task, 20):
        assert task.curve(params, 7) == task.curve(params, 7)
        assert task.curve(params, 7) != task.curve(params, 8)  # the seed is the noise
        assert task.curve(params, None) == task.curve(params, None)


@pytest.mark.parametrize("task", FAST, ids=lambda t: t.name)
def test_curves_have_the_declared_length_and_end_at_the_final_value(
    task: search_tasks.CurveTask,
) -> None:
    for params in random_points(task, 50):
        noisy, clean = task.curve(params, 1), task.curve(params, None)
        assert len(noisy) == len(clean) == task.steps == search_tasks.STEPS
        assert all(math.isfinite(v) and task.bounds[0] <= v <= task.bounds[1] for v in noisy)
        assert clean[-1] == pytest.approx(task.final(params))
        # The noise is what the task says it is: observed minus clean, sd about `noise`.
        residual = [a - b for a, b in zip(noisy, clean, strict=True)]
        assert max(abs(r) for r in residual) < 6 * task.noise


@pytest.mark.parametrize("task", FAST, ids=lambda t: t.name)
def test_the_optimum_beats_every_random_point(task: search_tasks.CurveTask) -> None:
    finals = [task.final(p) for p in random_points(task, 500)]
    assert all(task.optimum <= f for f in finals)
    # ... by a margin a search has to work for: the best of 64 random trials is far off.
    best_of_64 = [min(finals[i : i + 64]) for i in range(0, 448, 64)]
    assert statistics.fmean(best_of_64) - task.optimum > 10 * task.noise


def test_hartmann6_is_the_textbook_function() -> None:
    assert search_tasks.hartmann6(search_tasks.HARTMANN6_ARGMIN) == pytest.approx(-3.32237, 1e-5)
    assert search_tasks.HARTMANN6.optimum == pytest.approx(search_tasks.HARTMANN6_MINIMUM, 1e-5)


def test_mixed9_optimum_sits_on_the_zero_penalty_ridge() -> None:
    task = search_tasks.MIXED9
    assert task.optimum == pytest.approx(0.04, abs=1e-4)
    p, under, _, diverged = task.penalties(task.optimum_params)
    assert p < 1e-4 and under < 1e-4 and not diverged


@pytest.mark.parametrize("task", FAST, ids=lambda t: t.name)
def test_curves_cross_so_pruning_has_real_risk(task: search_tasks.CurveTask) -> None:
    """Among good points, some trial that leads at step 1 ends behind another."""
    points = random_points(task, 600)
    points.sort(key=task.final)
    good = [task.curve(p, None) for p in points[:60]]
    crossings = sum(
        (a[0] < b[0]) != (a[-1] < b[-1]) for i, a in enumerate(good) for b in good[i + 1 :]
    )
    assert crossings > 0.05 * len(good) * (len(good) - 1) / 2


def test_mixed9_diverges_above_ten_times_the_right_learning_rate() -> None:
    task = search_tasks.MIXED9
    params = {**task.optimum_params, "lr": 0.5}  # lr / (1 - 0.9) = 5 >= 10 x 0.4
    assert task.curve(params, None) == [search_tasks.CHANCE] * task.steps


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize("sampler", sorted(search_tasks.SAMPLERS))
def test_every_study_spec_parses_and_builds_its_sampler(task: Any, sampler: str) -> None:
    for pruner in search_tasks.PRUNERS:
        for parallelism in (1, 8):
            spec = parse(search_tasks.study_spec(task, sampler, pruner, 3, 64, parallelism))
            assert spec.sampler.seed == 3 and spec.budget.parallelism == parallelism
            make_pruner(spec.pruner.name, spec.pruner.options)
            if sampler != "gp":  # the GP sampler imports PyTorch: covered by the runner
                make_sampler(spec)


def test_real_task_arguments_are_trainer_flags() -> None:
    pytest.importorskip("torch")
    from kubetune_trainer.__main__ import parse_args  # noqa: PLC0415 - imports torch

    task = search_tasks.REAL
    params = random_points(task, 1)[0]
    args = parse_args(task.argv(params, 5))
    assert args.seed == 5 and args.epochs == task.steps
    assert args.lr == params["lr"] and args.width == params["width"]
    assert args.init_std == params["init_std"] and args.batch_size == params["batch_size"]


def test_inprocess_runs_are_deterministic_and_account_for_pruning() -> None:
    task = search_tasks.HARTMANN6
    first = search_inprocess.run(task, "tpe/successive-halving", 0, 24, 2.0)
    again = search_inprocess.run(task, "tpe/successive-halving", 0, 24, 2.0)
    assert [t["params"] for t in first["trials"]] == [t["params"] for t in again["trials"]]
    assert [t["value"] for t in first["trials"]] == [t["value"] for t in again["trials"]]
    pruned = [t for t in first["trials"] if t["state"] == "pruned"]
    assert pruned, "successive halving prunes some of 24 trials"
    for t in first["trials"]:
        assert t["gpu_seconds"] == t["steps"] * 2.0
        if t["state"] == "pruned":
            assert t["steps"] == t["pruned_at"] < task.steps
        else:
            assert t["steps"] == task.steps and t["true_value"] == task.final(t["params"])


def test_inprocess_uses_the_operators_sampler_configuration() -> None:
    """TPE with a QMC startup: the first 10 trials are Sobol points, as in the operator."""
    task = search_tasks.HARTMANN6
    run = search_inprocess.run(task, "tpe-qmc", 1, 12, 1.0)
    spec = parse(search_tasks.study_spec(task, "qmc", "none", 1, 12))
    study = optuna.create_study(sampler=make_sampler(spec))
    sobol = [space.sample(study.ask(), spec.parameters) for _ in range(10)]
    assert [t["params"] for t in run["trials"][:10]] == sobol


def test_report_summarises_runs_and_draws_them(tmp_path: Path) -> None:
    task = search_tasks.HARTMANN6
    runs = [
        search_inprocess.run(task, method, seed, 16, 1.0)
        for method in ("random", "tpe", "tpe/median")
        for seed in (0, 1)
    ]
    records = tmp_path / "runs.json"
    records.write_text(json.dumps(runs))
    assert search_report.main([str(records), "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "search-hartmann6.json").read_text())
    assert report["target"]["trials"] == 16
    series = {s["method"]: s for s in report["series"]}
    assert set(series) == {"random", "tpe", "tpe/median"}
    assert series["random"]["to_target"]["trials"]["runs"] == 2
    assert series["tpe/median"]["saved_fraction"]["mean"] > 0
    assert series["tpe"]["saved_fraction"]["mean"] == 0
    assert len(series["tpe"]["curve_trials"]["mean"]) == 16
    for name in ("search-hartmann6.svg", "search-hartmann6-pruners.svg"):
        assert (tmp_path / name).read_text().startswith("<svg")


def test_the_trial_program_reports_the_curve(tmp_path: Path) -> None:
    """bench/search_trial.py, as a trial pod runs it: its final report is the curve's end."""
    task = search_tasks.MIXED9
    params = dict(task.optimum_params)
    log = tmp_path / "termination-log"
    env = {
        **os.environ,
        "KUBETUNE_PARAMS": json.dumps(params),
        "KUBETUNE_TERMINATION_LOG": str(log),
        "KUBETUNE_TRIAL_SEED": "11",
    }
    env.pop("KUBETUNE_METRICS_PORT", None)
    out = subprocess.run(
        [sys.executable, str(BENCH / "search_trial.py"), "--task=mixed9", "--seconds-per-step=0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    doc = json.loads(log.read_text())
    curve = task.curve(params, 11)
    assert doc["step"] == task.steps
    assert doc["metrics"] == {"val_error": curve[-1]}
    assert [v for _, v in doc["intermediate"]["val_error"]] == curve
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps_reported"] == task.steps and not summary["stopped"]


def test_trial_seeds_match_the_operators() -> None:
    from kubetune.reconcile import _seed  # noqa: PLC0415 - private, pinned on purpose

    spec = parse(search_tasks.study_spec(search_tasks.HARTMANN6, "tpe", "none", 42, 64))
    assert all(_seed(spec, n) == search_tasks.trial_seed(42, n) for n in range(64))


@pytest.mark.parametrize("method", ["tpe", "tpe-qmc", "cmaes"])
def test_kubetune_seeding_proposes_what_the_operators_study_model_proposes(method: str) -> None:
    """--kubetune-seeding at parallelism 1 is the operator's own sampling, trial for trial:
    the check an operator-side run at parallelism 1 without a pruner must pass."""
    from kubetune.adapters.sampling import StudyModel  # noqa: PLC0415

    task = search_tasks.HARTMANN6
    run = search_inprocess.run(task, method, 5, 14, 1.0, kubetune_seeding=True)
    model = StudyModel(parse(search_tasks.study_spec(task, method, "none", 5, 14)))
    proposed = []
    for number in range(14):
        trial, params = model.ask(1)[0]
        proposed.append(params)
        model.study.tell(trial, task.curve(params, search_tasks.trial_seed(5, number))[-1])
    assert [t["params"] for t in run["trials"]] == proposed
