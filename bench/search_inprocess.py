"""The in-process baseline of the search benchmark: sequential Optuna, no operator.

    python bench/search_inprocess.py --task hartmann6 --seeds 2 --trials 16
    python bench/search_inprocess.py --task mixed9 --methods tpe,tpe/hyperband --seeds 10
    python bench/search_inprocess.py --task trainer-synthetic --methods random --seeds 3

For each method (a sampler, optionally "/pruner") and seed, builds the Study spec the
operator would get (search_tasks.study_spec, parallelism 1), parses it with
kubetune.spec.parse and takes the sampler and pruner from kubetune's own
make_sampler/make_pruner, so both sides run the same configuration (TPE without the
constant liar, as the operator uses at parallelism 1; Sobol QMC; the phased QMC
startup). Then it asks, runs and tells one trial at a time, reporting every step's
value so the pruner sees what it would see through the operator, minus the latency.

By default the sampler keeps Optuna's own random stream ("Optuna alone"). With
--kubetune-seeding it is reseeded before each ask from (seed, trial number) as the
operator does (kubetune.adapters.sampling.reseed), so at parallelism 1 without a pruner
the operator must propose exactly these trials: a check of the operator-side runner.

Cost: a fast task's trial costs steps run x seconds per step (search_tasks docstring);
a pruned trial stops at the step at which the pruner decided. The pruner is asked after
every step but the last: a trial that ran every step is complete, as through the
operator, whose trial pod has exited by then (Optuna's study.optimize would still
prune it at the last rung, having already paid for it). A real-task trial runs
`python -m kubetune_trainer` as a subprocess (one CPU thread) and costs its wall time;
a pruned one is killed as soon as the pruner decides, as an in-process training loop
would stop. A diverged (NaN) real trial is told as the worst completed value, as the
operator tells it.

Output (--out, default bench/results/search-inprocess-<task>.json): a JSON list of
run records, the input of bench/search_report.py::

    {"runner": "in-process", "task", "method", "sampler", "pruner", "seed",
     "parallelism": 1, "seconds_per_step", "wall_s", "ask_s",
     "trials": [{"number", "params", "state": complete|pruned|diverged, "value",
                 "true_value", "steps", "pruned_at", "gpu_seconds"}, ...]}

`trials` are in the order they finished (here, their numbers); `value` is the
observed objective (the last reported value for a pruned trial), `true_value` the
noise-free final value (fast tasks; null for the real task).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from kubetune import space
from kubetune.adapters.sampling import make_pruner, make_sampler, reseed
from kubetune.spec import parse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_tasks
from search_tasks import CurveTask, TrainerTask

optuna.logging.set_verbosity(optuna.logging.ERROR)
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_METHODS = [
    *search_tasks.SAMPLERS,
    "tpe/median",
    "tpe/successive-halving",
    "tpe/hyperband",
    "random/hyperband",  # Hyperband as published: random configurations
]
EPOCH_LINE = re.compile(r"^epoch (\d+): val_accuracy=(\S+) val_loss=(\S+)")

# Called with (step, value) after each step; True means "prune now".
Prune = Callable[[int, float], bool]


def run_curve_trial(
    task: CurveTask, params: dict[str, Any], seed: int, seconds_per_step: float, prune: Prune
) -> dict[str, Any]:
    curve = task.curve(params, seed)
    for step, value in enumerate(curve, 1):
        # Not asked after the last step: a trial that ran every step is complete, as it
        # is through the operator (its pod has ended by the time the pruner could ask).
        if step < len(curve) and prune(step, value):
            return {
                "state": "pruned",
                "value": value,
                "steps": step,
                "pruned_at": step,
                "gpu_seconds": step * seconds_per_step,
            }
    return {
        "state": "complete",
        "value": curve[-1],
        "steps": len(curve),
        "pruned_at": None,
        "gpu_seconds": len(curve) * seconds_per_step,
    }


def run_trainer_trial(
    task: TrainerTask, params: dict[str, Any], seed: int, prune: Prune
) -> dict[str, Any]:
    """One real trial: the reference trainer in a subprocess, read epoch by epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        term = Path(tmp) / "termination-log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "KUBETUNE_TERMINATION_LOG": str(term)}
        env.pop("KUBETUNE_METRICS_PORT", None)  # no metrics server for a local run
        argv = [sys.executable, "-m", "kubetune_trainer", *task.argv(params, seed)]
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        last: tuple[int, float] | None = None
        pruned_at: int | None = None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-20:], line]
            match = EPOCH_LINE.match(line)
            if not match:
                continue
            step, value = int(match.group(1)), float(match.group(3))
            last = (step, value)
            if step < task.steps and math.isfinite(value) and prune(step, value):
                pruned_at = step
                proc.send_signal(signal.SIGKILL)  # in process, training stops at once
                break
        proc.wait()
        gpu_seconds = time.monotonic() - start
        if pruned_at is not None:
            assert last is not None
            return {
                "state": "pruned",
                "value": last[1],
                "steps": pruned_at,
                "pruned_at": pruned_at,
                "gpu_seconds": gpu_seconds,
            }
        if proc.returncode != 0 or not term.exists():
            raise RuntimeError(f"trainer exited {proc.returncode}: {''.join(tail)}")
        final = json.loads(term.read_text())
        value = float(final["metrics"][task.metric])
        return {
            "state": "complete" if math.isfinite(value) else "diverged",
            "value": value,
            "steps": int(final["step"]),
            "pruned_at": None,
            "gpu_seconds": gpu_seconds,
        }


def run(
    task: CurveTask | TrainerTask,
    method: str,
    seed: int,
    trials: int,
    seconds_per_step: float,
    kubetune_seeding: bool = False,
) -> dict[str, Any]:
    """One sequential Optuna run of `method` ("sampler" or "sampler/pruner")."""
    sampler_name, _, pruner_name = method.partition("/")
    pruner_name = pruner_name or "none"
    spec = parse(search_tasks.study_spec(task, sampler_name, pruner_name, seed, trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            direction=task.direction,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec.pruner.name, spec.pruner.options),
        )
    records: list[dict[str, Any]] = []
    started, ask_s = time.monotonic(), 0.0
    for number in range(trials):
        t0 = time.monotonic()
        with warnings.catch_warnings():
            # CMA-ES and GP warn about categorical or independent sampling every trial.
            warnings.simplefilter("ignore")
            if kubetune_seeding:
                reseed(study.sampler, seed, number)
            trial = study.ask()
            params = space.sample(trial, spec.parameters)
        ask_s += time.monotonic() - t0

        def prune(step: int, value: float, trial: optuna.Trial = trial) -> bool:
            trial.report(value, step)
            decision: bool = trial.should_prune()
            return decision

        noise_seed = search_tasks.trial_seed(seed, number)
        if isinstance(task, TrainerTask):
            outcome = run_trainer_trial(task, params, noise_seed, prune)
            true_value = None
        else:
            outcome = run_curve_trial(task, params, noise_seed, seconds_per_step, prune)
            true_value = task.final(params)
        t0 = time.monotonic()
        if outcome["state"] == "complete":
            study.tell(trial, outcome["value"])
        elif outcome["state"] == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            penalty = _penalty(study, task.direction)
            if penalty is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, penalty)
        ask_s += time.monotonic() - t0
        records.append({"number": number, "params": params, "true_value": true_value, **outcome})
    return {
        "runner": "in-process",
        "task": task.name,
        "method": method if pruner_name != "none" else sampler_name,
        "sampler": sampler_name,
        "pruner": pruner_name,
        "seed": seed,
        "parallelism": 1,
        "kubetune_seeding": kubetune_seeding,
        "seconds_per_step": seconds_per_step if isinstance(task, CurveTask) else None,
        "wall_s": round(time.monotonic() - started, 3),
        "ask_s": round(ask_s, 3),
        "trials": records,
    }


def run_parallel(
    task: CurveTask, method: str, seed: int, trials: int, parallelism: int, seconds_per_step: float
) -> dict[str, Any]:
    """In-process Optuna as the operator drives it at `parallelism` > 1, without a pruner:
    `parallelism` trials asked up front (TPE with the constant liar, as make_sampler
    configures it for parallel Studies), then, as each ends (equal durations: in the
    order they started), it is told and the next one asked. This separates what
    parallel search costs by itself from what going through the operator adds."""
    sampler_name, _, pruner_name = method.partition("/")
    if pruner_name and pruner_name != "none":
        raise ValueError("run_parallel compares samplers only (no pruner)")
    spec = parse(
        search_tasks.study_spec(task, sampler_name, "none", seed, trials, parallelism=parallelism)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction=task.direction, sampler=make_sampler(spec))
    started = time.monotonic()
    running: list[tuple[int, optuna.Trial, dict[str, Any]]] = []
    records: list[dict[str, Any]] = []
    asked = 0
    while len(records) < trials:
        while asked < trials and len(running) < parallelism:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask()
                params = space.sample(trial, spec.parameters)
            running.append((asked, trial, params))
            asked += 1
        number, trial, params = running.pop(0)
        noise_seed = search_tasks.trial_seed(seed, number)
        outcome = run_curve_trial(task, params, noise_seed, seconds_per_step, lambda *_: False)
        study.tell(trial, outcome["value"])
        records.append(
            {"number": number, "params": params, "true_value": task.final(params), **outcome}
        )
    return {
        "runner": "in-process",
        "task": task.name,
        "method": sampler_name,
        "sampler": sampler_name,
        "pruner": "none",
        "seed": seed,
        "parallelism": parallelism,
        "kubetune_seeding": False,
        "seconds_per_step": seconds_per_step,
        "wall_s": round(time.monotonic() - started, 3),
        "ask_s": None,
        "trials": records,
    }


def _penalty(study: optuna.Study, direction: str) -> float | None:
    """How a diverged trial is told: the worst completed value, as the operator does
    (kubetune.adapters.sampling.StudyModel._penalty); None (failed) before any completed."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = [float(t.value) for t in trials if t.value is not None]
    if not done:
        return None
    return max(done) if direction == "minimize" else min(done)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [*search_tasks.FAST_TASKS, search_tasks.REAL.name]
    parser.add_argument("--task", required=True, choices=names)
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated SAMPLER or SAMPLER/PRUNER (default: %(default)s)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (or from --seed0)")
    parser.add_argument("--seed0", type=int, default=0)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--seconds-per-step", type=float, default=None)
    parser.add_argument("--kubetune-seeding", action="store_true")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="> 1: trials in flight as the operator runs them (fast tasks, no pruner)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    task = search_tasks.task_named(args.task)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        sampler, _, pruner = m.partition("/")
        if sampler not in search_tasks.SAMPLERS or (pruner and pruner not in search_tasks.PRUNERS):
            parser.error(f"unknown method {m!r}")
    per_step = args.seconds_per_step
    if per_step is None:
        per_step = task.seconds_per_step if isinstance(task, CurveTask) else 0.0
    runs = []
    for method in methods:
        for seed in range(args.seed0, args.seed0 + args.seeds):
            if args.parallelism > 1:
                assert isinstance(task, CurveTask), "--parallelism is for the fast tasks"
                result = run_parallel(task, method, seed, args.trials, args.parallelism, per_step)
            else:
                result = run(task, method, seed, args.trials, per_step, args.kubetune_seeding)
            best = _best(result, task.direction)
            spent = sum(t["gpu_seconds"] for t in result["trials"])
            print(
                f"{task.name} {method:<24} seed {seed:>3}: best {best:.4f} "
                f"gpu-s {spent:8.1f} wall {result['wall_s']:6.2f} s",
                flush=True,
            )
            runs.append(result)
    out = args.out or RESULTS / f"search-inprocess-{task.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1) + "\n")
    print(f"{len(runs)} runs in {out}")
    return 0


def _best(result: dict[str, Any], direction: str) -> float:
    """The incumbent's score: noise-free where known, else observed (search_report's rule)."""
    done = [t for t in result["trials"] if t["state"] == "complete"]
    if not done:
        return math.nan
    pick = min if direction == "minimize" else max
    best = pick(done, key=lambda t: t["value"])
    score: float = best["true_value"] if best["true_value"] is not None else best["value"]
    return score


if __name__ == "__main__":
    sys.exit(main())
