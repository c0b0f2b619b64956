"""Memory of the importance worker process over many fANOVA refits.

    python bench/importance_memory.py [--fits 150] [--trials 100]

The operator refits every running Study's importance in one spawned worker
process. This runs the same refits (`sampling.importance` on studies of random
trials) in two workers, one after the other in the same run: a plain spawned
ProcessPoolExecutor (how the operator ran it before) and the operator's own
worker lane (`lanes._worker_process` with its per-task wrapper: two malloc arenas,
memory trimmed after each task). It records each worker's RSS every 10 fits.
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
from kubetune.lanes import _task, _worker_process

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


def measure(
    name: str, pool: ProcessPoolExecutor, submit: Callable[..., Any], fits: int, n: int
) -> dict[str, Any]:
    pid = pool.submit(os.getpid).result()
    series = [(0, round(rss_mib(pid), 1))]
    t0 = time.perf_counter()
    for i in range(1, fits + 1):
        submit(importance, ["minimize"], trials(n, seed=i)).result()
        if i % 10 == 0:
            series.append((i, round(rss_mib(pid), 1)))
    wall = time.perf_counter() - t0
    pool.shutdown()
    peak = max(r for _, r in series)
    print(f"{name:10} rss after first 10 fits {series[1][1]} MiB, peak {peak} MiB, {wall:.0f}s")
    return {"rss_mib_every_10_fits": series, "peak_mib": peak, "seconds_per_fit": wall / fits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", type=int, default=150)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "importance-memory.json")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load = os.getloadavg()
    plain = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    before = measure("plain", plain, plain.submit, args.fits, args.trials)
    lane = _worker_process()
    after = measure("lane", lane, lambda fn, *a: lane.submit(_task, fn, *a), args.fits, args.trials)
    result = {
        "bench": "importance-memory",
        "fits": args.fits,
        "trials_per_study": args.trials,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load},
        "plain_spawned_worker": before,
        "operator_worker_lane": after,
        "peak_ratio_lane_to_plain": round(after["peak_mib"] / before["peak_mib"], 3),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
