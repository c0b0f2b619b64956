"""The search benchmark through kubetune: each (method, seed) as a Study on the local cluster.

    python bench/search_operator.py --task hartmann6 --methods tpe,tpe/median --seeds 3 \\
        --trials 64 --parallelism 8 --seconds-per-step 0.1

For each method ("sampler" or "sampler/pruner") and seed, a Study with exactly the spec
the in-process baseline parses (search_tasks.study_spec, at this run's parallelism),
whose trials run bench/search_trial.py as pods: the task's curve, one step per
--seconds-per-step, each step reported through the trial SDK (Prometheus for the
pruner, the termination message for the result). The operator runs as its own
process with Prometheus, as in production (bench/loop.py's cluster and operator).
Several Studies run at once when the GPUs allow (16 GPUs / parallelism), each with
its own seed; they share one operator, as Studies on a cluster do.

Per trial, from its Trial object once the Study has ended: the state (complete,
pruned, diverged, failed), the observed value, the noise-free value of its
parameters, the last step it reported, the step at which the pruner decided (the
operator's "pruned at step N"), and its measured gpuSeconds (the pod's running time:
pod start, every step run, and the time between the pruner's decision and the pod's
exit: the pruning latency, paid in GPU time). Trials are listed in the order they
finished, as the report's traces expect.

Output (--out, default bench/results/search-kubetune-<task>.json): run records in the
format of search_inprocess.py, with runner "kubetune", the parallelism, the Study's wall
time and the operator's commit; merged into an existing file by (method, seed,
parallelism), so runs may be made in several sittings.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.config import new_client_from_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_tasks
from loop import (
    GPUS,
    ROOT,
    Deadline,
    Operator,
    Studies,
    busy_since,
    cpu_ticks,
    ensure_cluster,
    git,
    kubectl,
    localcluster_cli,
)
from search_tasks import CurveTask

from kubetune.timestamps import parse_time
from localcluster.state import Layout

RESULTS = ROOT / "bench" / "results"
PRUNED_AT = re.compile(r"pruned at step (\d+)")


def log(msg: str) -> None:
    print(f"bench-search: {msg}", file=sys.stderr, flush=True)


def study_name(task: str, method: str, seed: int, parallelism: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{task}-{method}").strip("-")
    return f"{slug}-s{seed}-p{parallelism}"[:52]


def record(
    task: CurveTask,
    method: str,
    seed: int,
    parallelism: int,
    seconds_per_step: float,
    status: dict[str, Any],
    trials: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """One run record (search_inprocess.py's format) from the Study and its Trials."""
    sampler, _, pruner = method.partition("/")
    rows = []
    for t in sorted(
        trials,
        key=lambda t: ((t.get("status") or {}).get("completionTime") or "", t["spec"]["number"]),
    ):
        st = t.get("status") or {}
        steps = [int(p["step"]) for p in st.get("intermediate") or []]
        phase, reason = st.get("phase"), st.get("reason")
        state = {"Completed": "complete", "Pruned": "pruned"}.get(str(phase)) or (
            "diverged" if reason == "Diverged" else "failed"
        )
        decided = PRUNED_AT.search(st.get("message") or "")
        rows.append(
            {
                "number": t["spec"]["number"],
                "params": t["spec"]["params"],
                "state": state,
                "value": st.get("value")
                if state == "complete"
                else (st.get("intermediate") or [{}])[-1].get("value"),
                "true_value": task.final(t["spec"]["params"]),
                "steps": max(steps) if steps else 0,
                "pruned_at": int(decided.group(1)) if decided and state == "pruned" else None,
                "gpu_seconds": float(st.get("gpuSeconds") or 0.0),
            }
        )
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    return {
        "runner": "kubetune",
        "task": task.name,
        "method": method if pruner and pruner != "none" else sampler,
        "sampler": sampler,
        "pruner": pruner or "none",
        "seed": seed,
        "parallelism": parallelism,
        "seconds_per_step": seconds_per_step,
        "wall_s": (end - start).total_seconds() if start and end else None,
        "phase": status.get("phase"),
        "trials": rows,
    }


def merge(path: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This sitting's runs over the file's, keyed by (method, seed, parallelism)."""
    old: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []

    def key(r: dict[str, Any]) -> tuple[str, int, int]:
        return (str(r["method"]), int(r["seed"]), int(r["parallelism"]))

    fresh = {key(r) for r in runs}
    return [r for r in old if key(r) not in fresh] + runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="hartmann6", choices=sorted(search_tasks.FAST_TASKS))
    parser.add_argument("--methods", default="random,tpe,tpe/median")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--seconds-per-step", type=float, default=0.1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--time-limit", type=float, default=3600)
    args = parser.parse_args(argv)
    task = search_tasks.FAST_TASKS[args.task]
    assert isinstance(task, CurveTask)
    out = args.out or RESULTS / f"search-kubetune-{task.name}.json"
    deadline = Deadline(args.time_limit)
    layout = Layout()
    info, started, how = ensure_cluster(layout)
    log(f"local cluster {how}")
    kubectl(layout, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    api = new_client_from_config(str(layout.kubeconfig))
    namespace = f"bench-search-{secrets.token_hex(3)}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    operator = Operator(layout, info, namespace, None)
    studies = Studies(api, namespace)
    todo = [
        (m, s)
        for m in args.methods.split(",")
        for s in range(args.first_seed, args.first_seed + args.seeds)
    ]
    at_once = max(1, GPUS // args.parallelism)
    template = search_tasks.fast_trial_template(task, args.seconds_per_step)
    runs: list[dict[str, Any]] = []
    cpu = cpu_ticks()
    t0 = time.monotonic()
    try:
        running: dict[str, tuple[str, int]] = {}
        while todo or running:
            while todo and len(running) < at_once:
                method, seed = todo.pop(0)
                sampler, _, pruner = method.partition("/")
                name = study_name(task.name, method, seed, args.parallelism)
                spec = search_tasks.study_spec(
                    task, sampler, pruner or "none", seed, args.trials, args.parallelism, template
                )
                studies.create({"apiVersion": "kubetune.dev/v1alpha1", "kind": "Study",
                                "metadata": {"name": name}, "spec": spec})  # fmt: skip
                running[name] = (method, seed)
                log(f"started {name}")
            time.sleep(min(2.0, deadline.left(2.0)))
            if not operator.alive():
                raise RuntimeError(f"the operator exited; see {operator.log}")
            for name in list(running):
                status = studies.status(name)
                if status.get("phase") not in ("Succeeded", "Failed"):
                    continue
                method, seed = running.pop(name)
                trials = studies.custom.list_namespaced_custom_object(
                    "kubetune.dev", "v1alpha1", namespace, "trials",
                    label_selector=f"kubetune.dev/study={name}",
                )["items"]  # fmt: skip
                runs.append(
                    record(
                        task, method, seed, args.parallelism, args.seconds_per_step, status, trials
                    )
                )
                best = (status.get("bestTrial") or {}).get("value")
                log(f"{name} {status.get('phase')} ({len(trials)} trials, best {best})")
    finally:
        operator.stop()
        core.delete_namespace(namespace)
        api.close()
        if started and not args.keep_cluster:
            localcluster_cli("down")
    meta = {
        "commit": git("rev-parse", "HEAD"),
        "machine_cpu_busy": busy_since(cpu),
        "duration_s": round(time.monotonic() - t0, 1),
    }
    for r in runs:
        r["meta"] = meta
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merge(out, runs), indent=1) + "\n")
    busy = meta["machine_cpu_busy"]
    log(f"{len(runs)} runs in {meta['duration_s']} s (machine busy {busy}); {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
