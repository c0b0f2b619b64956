"""One trial of a fast search-benchmark task, as a kubetune trial pod runs it.

    python bench/search_trial.py --task=hartmann6 --seed=${trial.seed} --seconds-per-step=1

Reads the parameters from KUBETUNE_PARAMS (kubetune.trial.params), computes the
task's learning curve for them (bench/search_tasks.py, seeded observation noise) and
reports one value per step through kubetune.trial.report, after sleeping
--seconds-per-step for each step: the sleep stands in for a step of GPU work, so the
Trial's measured gpuSeconds and the operator's pruning latency are in the same units
as the in-process baseline's cost model (steps run x seconds per step).

SIGTERM (a prune) is honoured within ~20 ms, mid-step as a trainer checks between
batches: the unfinished step is not reported (its value would be made up) and the
process exits 0, as the trial contract asks. The last line of output is a JSON summary
(steps reported, whether it was stopped, seconds elapsed) for `kubetune logs`.

Imports only numpy and prometheus-client (through kubetune.trial), so a pod starts in
a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # search_tasks, beside this file

import search_tasks

from kubetune import trial

# How often a step's sleep looks for SIGTERM: a trainer checks between batches.
POLL_S = 0.02


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(search_tasks.FAST_TASKS))
    parser.add_argument("--seed", type=int, default=None, help="default: KUBETUNE_TRIAL_SEED")
    parser.add_argument("--seconds-per-step", type=float, default=1.0)
    args = parser.parse_args(argv)
    trial.install_sigterm_handler()  # before any work: a prune may come at once
    task = search_tasks.FAST_TASKS[args.task]
    seed = args.seed if args.seed is not None else trial.seed(0)
    params = trial.params()
    curve = task.curve(params, seed)
    start = time.monotonic()
    reported, stopped = 0, False
    for step, value in enumerate(curve, 1):
        # Deadlines from the start, so the sleeps' overshoot does not add up over steps.
        deadline = start + step * args.seconds_per_step
        while (left := deadline - time.monotonic()) > 0 and not trial.should_stop():
            time.sleep(min(POLL_S, left))
        if trial.should_stop():
            stopped = True
            break
        trial.report(step, **{task.metric: value})
        reported = step
    summary = {
        "task": task.name,
        "seed": seed,
        "steps_reported": reported,
        "stopped": stopped,
        "elapsed_s": round(time.monotonic() - start, 3),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
