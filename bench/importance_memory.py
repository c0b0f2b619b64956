"""The importance worker over many refits: fANOVA before, PED-ANOVA now.

    python bench/importance_memory.py [--fits 100] [--trials 100]

The operator refits every running Study's importance in one spawned worker
process. This runs the same refits (studies of random trials) in two workers, one
after the other in the same run: fANOVA (how the operator computed importance
before; needs scikit-learn) in a plain spawned ProcessPoolExecutor, and
`sampling.importance` (PED-ANOVA) in the operator's own worker lane. It records
each worker's RSS every 10 fits, the seconds per fit, and how often the two agree
on the most important parameter.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna

from kubetune.adapters.sampling import importance
from kubetune.lanes import _worker_process

RESULTS = Path(__file__).resolve().parent / "results"


def trials(n: int, seed: int) -> list[optuna.trial.FrozenTrial]:
    rng = random.Random(seed)
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "depth": optuna.distributions.IntDistribution(1, 8),
        "opt": optuna.distributions.CategoricalDistribution(["sgd", "adam", "rmsprop"]),
    }
    out = []
    for _ in range(n):
        params = {
            "lr": 10 ** rng.uniform(-5, -1),
            "depth": rng.randint(1, 8),
            "opt": rng.choice(["sgd", "adam", "rmsprop"]),
        }
        value = abs(params["lr"] - 0.01) + params["depth"] / 10 + rng.random() / 5
        out.append(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fanova(directions: list[str], ts: list[optuna.trial.FrozenTrial]) -> dict[str, float]:
    """The operator's importance before PED-ANOVA replaced it."""
    study = optuna.create_study(directions=directions)
    study.add_trials(ts)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in scores.items()}


def measure(
    name: str,
    pool: ProcessPoolExecutor,
    submit: Callable[..., Any],
    fn: Callable[..., dict[str, float]],
    fits: int,
    n: int,
) -> tuple[dict[str, Any], list[str]]:
    pid = pool.submit(os.getpid).result()
    series = [(0, round(rss_mib(pid), 1))]
    top = []
    t0 = time.perf_counter()
    for i in range(1, fits + 1):
        scores = submit(fn, ["minimize"], trials(n, seed=i)).result()
        top.append(max(scores, key=scores.__getitem__))
        if i % 10 == 0:
            series.append((i, round(rss_mib(pid), 1)))
    wall = time.perf_counter() - t0
    pool.shutdown()
    peak = max(r for _, r in series)
    print(f"{name:10} rss after first 10 fits {series[1][1]} MiB, peak {peak} MiB, {wall:.0f}s")
    result = {"rss_mib_every_10_fits": series, "peak_mib": peak, "seconds_per_fit": wall / fits}
    return result, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", type=int, default=100)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "importance-memory.json")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load = os.getloadavg()
    plain = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    before, top_before = measure("fanova", plain, plain.submit, fanova, args.fits, args.trials)
    lane = _worker_process()
    after, top_after = measure(
        "ped-anova",
        lane,
        lane.submit,
        importance,
        args.fits,
        args.trials,
    )
    agree = sum(a == b for a, b in zip(top_before, top_after, strict=True)) / args.fits
    result = {
        "bench": "importance-memory",
        "fits": args.fits,
        "trials_per_study": args.trials,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load},
        "fanova_plain_worker": before,
        "ped_anova_operator_lane": after,
        "peak_ratio_ped_anova_to_fanova": round(after["peak_mib"] / before["peak_mib"], 3),
        "seconds_ratio_ped_anova_to_fanova": round(
            after["seconds_per_fit"] / before["seconds_per_fit"], 4
        ),
        "same_most_important_parameter": agree,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
