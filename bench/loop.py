"""Trial turnover: how long a GPU slot stays empty between one trial and the next.

    python bench/loop.py [--out bench/results/loop.json] [--operator-ref REF]   (make bench-loop)

What it measures, on the local cluster with 16 GPUs and the operator run as its own
process against it (with Prometheus, as in production):

Scenario 1: one `tpe` Study (seeded, four mixed parameters), 64 trials, 8 at a time,
each trial a pod that sleeps 2 s and writes its score to /dev/termination-log.
- Turnover: from a trial pod seen terminated to the next trial's Job seen created,
  as p50/p90/p99/max. A separate watching process (bench/turnover.py) sees both
  through API watches, so the figure includes the operator's whole reaction (its watch,
  the sampler, its API calls) and nothing of this script's own threads.
- Study wall time: first Job seen to last trial pod terminated; and the GPU-slot idle
  fraction, 1 - (sum of trial pods' running time) / (parallelism x wall time).
- In the same run, in-process Optuna with the same sampler (TPESampler with the
  constant liar, as the operator uses at parallelism > 1), the same parameters, an
  objective that sleeps 2 s, n_trials=64, n_jobs=8: its wall time, and the ratio
  Study wall / Optuna wall. Optuna's own turnover (a trial's end to the next trial's
  start) is the floor a perfect operator would reach.

Scenario 2: a `gp` Study of 150 short trials (0.3 s, 4 at a time) runs; once it has
30 finished trials (so its asks are expensive) a `tpe` Study like scenario 1 starts
beside it, in the same namespace and operator. Reported: both Studies' turnover, and
whether the GP Study was still running when the TPE Study ended.

The operator's own histogram (kubetune_trial_creation_latency_seconds, its own view of
the same interval) is scraped as a cross-check. Targets (recorded with `met` flags):
turnover p50 <= 50 ms and p99 <= 250 ms; Study wall <= 1.2 x in-process Optuna; the
TPE Study's p99 beside a GP Study <= 300 ms.

The cluster is reused if it is up with 16 GPUs, restarted with 16 if it has fewer (it
is ephemeral), started otherwise, and stopped at the end only if this run started it.
LOCALCLUSTER_DIR=/some/dir gives the run a cluster of its own, apart from the one that
tests in the same checkout share. `machine_cpu_busy` (the fraction of all cores busy
during a scenario) tells whether something else competed for the machine.
`--operator-ref` runs the operator from a git ref (exported to a temporary directory)
instead of the working tree, to measure a landed version while operator/ is being
edited. Results: bench/results/loop.json with the machine's load and CPU count and the
operator's commit. Every wait has a deadline and the whole run a time limit; the
operator, the watcher and the namespace are cleaned up on every path.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import requests
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "bench"))
from turnover import TurnoverWatcher, summary  # noqa: E402

from localcluster import cluster as localcluster  # noqa: E402
from localcluster.state import ClusterInfo, Layout  # noqa: E402

GROUP, VERSION = "kubetune.dev", "v1alpha1"
LOCAL_NODE = "kubetune.dev/local-node"
GPUS = 16
SEED = 7

# The trial: plain Python without site-packages (-S), so a pod costs a process start
# and nothing more; the score is a smooth function of the four parameters (the same
# formula as `score` below, for the in-process run).
TRIAL_CODE = """\
import json, math, sys, time
time.sleep(float(sys.argv[1]))
x, lr, depth, act = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = -((x - 1) ** 2) - (math.log10(lr) + 2) ** 2 - 0.1 * depth + (0.5 if act == "gelu" else 0.0)
with open("/dev/termination-log", "w") as f:
    f.write(json.dumps({"metrics": {"score": s}}))
"""
PARAMETERS: list[dict[str, Any]] = [
    {"name": "x", "float": {"low": -5.0, "high": 5.0}},
    {"name": "lr", "float": {"low": 1.0e-4, "high": 0.1, "log": True}},
    {"name": "depth", "int": {"low": 1, "high": 4}},
    {"name": "act", "categorical": {"choices": ["relu", "tanh", "gelu"]}},
]
TARGETS = {"p50": 0.050, "p99": 0.250, "wall_ratio": 1.2, "p99_beside_gp": 0.300}


def score(x: float, lr: float, depth: int, act: str) -> float:
    return -((x - 1) ** 2) - (math.log10(lr) + 2) ** 2 - 0.1 * depth + (0.5 if act == "gelu" else 0)


def log(msg: str) -> None:
    print(f"bench-loop: {msg}", file=sys.stderr, flush=True)


class Deadline:
    """The run's time limit; every wait takes the smaller of its own limit and what is left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("bench-loop: the run's time limit is spent")
        return min(cap, left)


def wait_until(check: Callable[[], tuple[bool, Any]], timeout: float, what: str) -> Any:
    """Poll `check` once a second (light on the API server) until it holds; its last value."""
    end = time.monotonic() + timeout
    seen: Any = None
    while True:
        try:
            ok, seen = check()
        except ApiException as e:
            ok, seen = False, f"ApiException {e.status} {e.reason}"
        if ok:
            return seen
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {seen}")
        time.sleep(1.0)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_since(start: tuple[int, int]) -> float:
    """The fraction of all cores busy since `start` (this run's cluster included): on a
    shared machine, a high value means the figures are noisy."""
    busy, total = cpu_ticks()
    return round((busy - start[0]) / max(1, total - start[1]), 3)


# -- the cluster -------------------------------------------------------------------------


def local_gpus(api: client.ApiClient) -> int:
    nodes = client.CoreV1Api(api).list_node(label_selector=f"{LOCAL_NODE}=true").items
    return sum(int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) for n in nodes)


def localcluster_cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "hack")}
    subprocess.run([sys.executable, "-m", "localcluster", *args], env=env, check=True)


def ensure_cluster(layout: Layout) -> tuple[ClusterInfo, bool, str]:
    """The local cluster with GPUS GPUs: (info, started by this run, what was done)."""
    if localcluster.is_healthy(layout):
        api = new_client_from_config(str(layout.kubeconfig))
        try:
            have = local_gpus(api)
        finally:
            api.close()
        if have >= GPUS:
            return ClusterInfo.load(layout.cluster_json), False, f"reused ({have} GPUs)"
        log(f"the running local cluster has {have} GPUs, {GPUS} needed: restarting it")
        localcluster_cli("down")
        how = f"restarted ({have} -> {GPUS} GPUs)"
    else:
        how = "started"
    localcluster_cli("up", "--gpus-per-node", str(GPUS))
    return ClusterInfo.load(layout.cluster_json), True, how


def kubectl(layout: Layout, *args: str) -> None:
    exe = localcluster.binaries() / "kubectl"
    subprocess.run(
        [str(exe), f"--kubeconfig={layout.kubeconfig}", *args], check=True, capture_output=True
    )


# -- the operator ------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextlib.contextmanager
def operator_source(ref: str | None) -> Iterator[tuple[Path, Path | None, dict[str, Any]]]:
    """(crds/ to apply, PYTHONPATH for the operator or None for the working tree, what it is)."""
    if ref is None:
        dirty = bool(git("status", "--porcelain", "--", "operator", "crds"))
        info = {"source": "working tree", "commit": git("rev-parse", "HEAD"), "dirty": dirty}
        yield ROOT / "crds", None, info
        return
    commit = git("rev-parse", f"{ref}^{{commit}}")
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "operator", "crds"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory(prefix="bench-loop-operator-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(tmp, filter="data")
        # PYTHONPATH comes before the editable install's finder, so this copy is imported;
        # its CRDs go with it, as the schema and the operator change together.
        info = {"source": f"git {ref}", "commit": commit, "dirty": False}
        yield Path(tmp) / "crds", Path(tmp) / "operator", info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """`python -m kubetune --namespace NS` as its own process, as tests/e2e runs it."""

    def __init__(self, layout: Layout, info: ClusterInfo, namespace: str, pythonpath: Path | None):
        self.log = layout.logs / f"operator-{namespace}.log"
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(layout.kubeconfig),
            "KUBETUNE_PROMETHEUS_URL": info.prometheus_url,
            # Its own histogram of the same interval, read as a cross-check.
            "KUBETUNE_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "POD_IP": "127.0.0.1",
        }
        if pythonpath:
            env["PYTHONPATH"] = str(pythonpath)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubetune", "--namespace", namespace],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """The operator's own counters for trial creation latency and sampler asks."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except requests.RequestException:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(
                ("kubetune_trial_creation_latency_seconds_", "kubetune_sampler_ask_seconds_")
            ) and ("_sum" in line or "_count" in line):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def self_report(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Means over this scenario of what the operator measured itself (histogram deltas)."""
    out: dict[str, Any] = {}
    for name, count in sorted(after.items()):
        if "_count" not in name:
            continue
        total = name.replace("_count", "_sum", 1)  # labels, if any, follow the suffix
        n = count - before.get(name, 0)
        if n:
            mean = (after.get(total, 0) - before.get(total, 0)) / n
            out[name.replace("_count", "", 1)] = {"n": int(n), "mean_s": round(mean, 4)}
    return out


# -- Studies -----------------------------------------------------------------------------


def study_manifest(
    name: str, sampler: str, trials: int, parallelism: int, sleep: float
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Study",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "direction": "maximize"},
            "parameters": PARAMETERS,
            "sampler": {"name": sampler, "seed": SEED},
            # Failures would end the Study early and make the figures meaningless.
            "budget": {"maxTrials": trials, "parallelism": parallelism, "maxFailedTrials": 0},
            "trialTemplate": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        # Only on the local GPU node(s), should other (fake) nodes be registered.
                        "nodeSelector": {LOCAL_NODE: "true"},
                        "containers": [
                            {
                                "name": "trial",
                                "image": "python:3.11",
                                "command": [
                                    "python3",
                                    "-S",
                                    "-c",
                                    TRIAL_CODE,
                                    str(sleep),
                                    "${params.x}",
                                    "${params.lr}",
                                    "${params.depth}",
                                    "${params.act}",
                                ],
                                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            }
                        ],
                    }
                },
            },
        },
    }


class Studies:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, manifest: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "studies", manifest
        )

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "studies", name
        )
        return dict(obj.get("status") or {})

    def wait_done(self, name: str, timeout: float, operator: Operator) -> dict[str, Any]:
        def check() -> tuple[bool, Any]:
            if not operator.alive():
                raise RuntimeError(f"the operator exited; see {operator.log}")
            st = self.status(name)
            return st.get("phase") in ("Succeeded", "Failed"), st

        return dict(wait_until(check, timeout, f"Study {name} to finish"))


# -- in-process Optuna -------------------------------------------------------------------


def fifo_turnover(ends: list[float], starts: list[float], parallelism: int) -> list[float]:
    """The watcher's pairing: the k-th end with the (parallelism + k)-th start."""
    return [s - e for e, s in zip(sorted(ends), sorted(starts)[parallelism:], strict=False)]


def inprocess_optuna(trials: int, parallelism: int, sleep: float) -> dict[str, Any]:
    """study.optimize with the operator's sampler, an objective that only sleeps."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=SEED, constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5.0, 5.0)
        lr = trial.suggest_float("lr", 1.0e-4, 0.1, log=True)
        depth = trial.suggest_int("depth", 1, 4)
        act = str(trial.suggest_categorical("act", ["relu", "tanh", "gelu"]))
        time.sleep(sleep)
        return score(x, lr, depth, act)

    t0 = time.monotonic()
    study.optimize(objective, n_trials=trials, n_jobs=parallelism)
    wall = time.monotonic() - t0
    done = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    starts = [t.datetime_start.timestamp() for t in done if t.datetime_start]
    ends = [t.datetime_complete.timestamp() for t in done if t.datetime_complete]
    busy = sum(e - s for s, e in zip(starts, ends, strict=True))
    return {
        "wall_s": round(wall, 3),
        # The same definition as the cluster's, with a trial's time counted from its ask.
        "idle_fraction": round(1 - busy / (parallelism * wall), 4),
        "trials": len(study.trials),
        "best_value": round(study.best_value, 4),
        # Start is taken before the sampler runs; end after the objective returns.
        "turnover_s": summary(fifo_turnover(ends, starts, parallelism)),
    }


# -- the scenarios -----------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = Deadline(args.time_limit)
        self.layout = Layout()

    def scenario_1(
        self, api: client.ApiClient, ns: str, operator: Operator, results: dict[str, Any]
    ) -> None:
        n, par, sleep = self.args.trials, self.args.parallelism, self.args.sleep
        name = "loop-tpe"
        studies = Studies(api, ns)
        watcher = TurnoverWatcher(self.layout.kubeconfig, log=self.layout.logs / "turnover.log")
        watcher.start([ns])
        ticks = cpu_ticks()
        try:
            before = operator.metrics()
            log(f"scenario 1: Study {name}, {n} trials x {sleep} s, parallelism {par}")
            studies.create(study_manifest(name, "tpe", n, par, sleep))
            status = studies.wait_done(name, self.deadline.left(900), operator)
            time.sleep(1.0)  # the watcher's last events are in flight
            figures = watcher.stop(parallelism={f"{ns}/{name}": par})
        finally:
            watcher.close()
        mine = figures["studies"].get(f"{ns}/{name}", {})
        results["scenario_1"] = {
            "study": name,
            "sampler": "tpe",
            "trials": n,
            "parallelism": par,
            "sleep_s": sleep,
            "phase": status.get("phase"),
            "status_trials": status.get("trials"),
            "best_value": (status.get("bestTrial") or {}).get("value"),
            "turnover_s": mine.get("turnover_s"),
            "wall_s": mine.get("wall_s"),
            "idle_fraction": mine.get("idle_fraction"),
            "watch": mine,
            "watcher": figures["watcher"],
            "operator_self_report": self_report(before, operator.metrics()),
            "machine_cpu_busy": busy_since(ticks),
        }
        log(f"scenario 1: {status.get('phase')}, turnover {mine.get('turnover_s')}")
        log(f"in-process Optuna: {n} trials, n_jobs={par}, {sleep} s each")
        inproc = inprocess_optuna(n, par, sleep)
        results["scenario_1"]["inprocess_optuna"] = inproc
        wall = mine.get("wall_s")
        results["scenario_1"]["wall_ratio"] = round(wall / inproc["wall_s"], 3) if wall else None

    def scenario_2(
        self, api: client.ApiClient, ns: str, operator: Operator, results: dict[str, Any]
    ) -> None:
        a = self.args
        gp, tpe = "beside-gp", "beside-tpe"
        studies = Studies(api, ns)
        watcher = TurnoverWatcher(self.layout.kubeconfig, log=self.layout.logs / "turnover.log")
        watcher.start([ns])
        ticks = cpu_ticks()
        overlap: dict[str, Any] = {}
        try:
            before = operator.metrics()
            log(f"scenario 2: gp Study {gp}, {a.gp_trials} trials x {a.gp_sleep} s, par {a.gp_par}")
            studies.create(study_manifest(gp, "gp", a.gp_trials, a.gp_par, a.gp_sleep))

            def gp_head_start() -> tuple[bool, Any]:
                st = studies.status(gp)
                t = st.get("trials") or {}
                done = sum(int(t.get(k, 0) or 0) for k in ("completed", "failed", "pruned"))
                return done >= a.gp_head_start or st.get("phase") in ("Succeeded", "Failed"), done

            overlap["gp_finished_at_tpe_start"] = wait_until(
                gp_head_start, self.deadline.left(600), f"{gp} to finish {a.gp_head_start} trials"
            )
            log(f"scenario 2: tpe Study {tpe} starts beside it")
            studies.create(study_manifest(tpe, "tpe", a.trials, a.parallelism, a.sleep))
            tpe_status = studies.wait_done(tpe, self.deadline.left(900), operator)
            gp_now = studies.status(gp)
            overlap["gp_phase_at_tpe_end"] = gp_now.get("phase")
            overlap["gp_trials_at_tpe_end"] = gp_now.get("trials")
            overlap["gp_still_running_at_tpe_end"] = gp_now.get("phase") not in (
                "Succeeded",
                "Failed",
            )
            gp_status = studies.wait_done(gp, self.deadline.left(900), operator)
            time.sleep(1.0)
            figures = watcher.stop(
                parallelism={f"{ns}/{gp}": a.gp_par, f"{ns}/{tpe}": a.parallelism}
            )
        finally:
            watcher.close()

        def part(name: str, status: dict[str, Any]) -> dict[str, Any]:
            mine = figures["studies"].get(f"{ns}/{name}", {})
            return {
                "phase": status.get("phase"),
                "status_trials": status.get("trials"),
                "turnover_s": mine.get("turnover_s"),
                "wall_s": mine.get("wall_s"),
                "idle_fraction": mine.get("idle_fraction"),
                "watch": mine,
            }

        results["scenario_2"] = {
            "tpe": {"trials": a.trials, "parallelism": a.parallelism, "sleep_s": a.sleep}
            | part(tpe, tpe_status),
            "gp": {"trials": a.gp_trials, "parallelism": a.gp_par, "sleep_s": a.gp_sleep}
            | part(gp, gp_status),
            "overlap": overlap,
            "pooled_turnover_s": figures["pooled"]["turnover_s"],
            "watcher": figures["watcher"],
            "operator_self_report": self_report(before, operator.metrics()),
            "machine_cpu_busy": busy_since(ticks),
        }
        log(f"scenario 2: tpe turnover {results['scenario_2']['tpe']['turnover_s']}")

    def main(self) -> dict[str, Any]:
        a = self.args
        t0 = time.monotonic()
        results: dict[str, Any] = {
            "bench": "loop",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpu_count": os.cpu_count(),
                "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
            },
            "targets": {},
        }
        info, started_here, how = ensure_cluster(self.layout)
        results["cluster"] = {"gpus": GPUS, "how": how, "kube_version": info.kube_version}
        api = new_client_from_config(str(self.layout.kubeconfig))
        core = client.CoreV1Api(api)
        ns = f"bench-loop-{secrets.token_hex(3)}"
        operator: Operator | None = None
        try:
            busy = [
                f"{p.metadata.namespace}/{p.metadata.name}"
                for p in core.list_pod_for_all_namespaces(
                    field_selector="status.phase=Running"
                ).items
            ]
            results["cluster"]["other_running_pods"] = len(busy)
            if busy:
                log(f"warning: other pods are running on the cluster: {busy[:5]}")
            core.create_namespace({"metadata": {"name": ns}})

            def default_sa() -> tuple[bool, str]:
                names = [s.metadata.name for s in core.list_namespaced_service_account(ns).items]
                return "default" in names, str(names)

            wait_until(default_sa, self.deadline.left(60), f"the default ServiceAccount in {ns}")
            with operator_source(a.operator_ref) as (crds, pythonpath, source):
                results["operator"] = source
                kubectl(self.layout, "apply", "--server-side", "--force-conflicts", "-f", str(crds))
                kubectl(
                    self.layout,
                    "wait",
                    "--for=condition=Established",
                    "crd/studies.kubetune.dev",
                    "crd/trials.kubetune.dev",
                )
                operator = Operator(self.layout, info, ns, pythonpath)
                results["operator"]["log"] = str(operator.log)
                if not a.skip_1:
                    self.scenario_1(api, ns, operator, results)
                if not a.skip_2:
                    self.scenario_2(api, ns, operator, results)
                # Before its exported source directory goes away.
                operator.stop()
        finally:
            if operator is not None:
                operator.stop()
            with contextlib.suppress(ApiException):
                core.delete_namespace(ns)
            api.close()
            if started_here and not a.keep_cluster:
                log("stopping the local cluster this run started")
                localcluster_cli("down")
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        results["duration_s"] = round(time.monotonic() - t0, 1)
        results["targets"] = targets(results)
        return results


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each acceptance target with the measured value and whether it is met."""
    out: dict[str, Any] = {}

    def add(key: str, value: float | None, limit: float) -> None:
        out[key] = {"value": value, "target": limit, "met": value is not None and value <= limit}

    s1 = results.get("scenario_1") or {}
    t1 = s1.get("turnover_s") or {}
    add("turnover_p50_s", t1.get("p50"), TARGETS["p50"])
    add("turnover_p99_s", t1.get("p99"), TARGETS["p99"])
    add("wall_ratio_vs_inprocess_optuna", s1.get("wall_ratio"), TARGETS["wall_ratio"])
    t2 = ((results.get("scenario_2") or {}).get("tpe") or {}).get("turnover_s") or {}
    add("tpe_beside_gp_p99_s", t2.get("p99"), TARGETS["p99_beside_gp"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loop.json")
    parser.add_argument("--operator-ref", help="run the operator from this git ref")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds per trial")
    parser.add_argument("--gp-trials", type=int, default=150)
    parser.add_argument("--gp-par", type=int, default=4)
    parser.add_argument("--gp-sleep", type=float, default=0.3)
    parser.add_argument("--gp-head-start", type=int, default=30, help="gp trials before tpe")
    parser.add_argument("--skip-1", action="store_true", help="skip scenario 1")
    parser.add_argument("--skip-2", action="store_true", help="skip scenario 2")
    parser.add_argument("--keep-cluster", action="store_true", help="leave a started cluster up")
    parser.add_argument("--time-limit", type=float, default=2400, help="seconds for the run")
    args = parser.parse_args()
    if args.parallelism + args.gp_par > GPUS:
        parser.error(f"parallelism + gp-par must fit in {GPUS} GPUs")

    # SIGTERM (and, as a backstop, the alarm a while after the time limit) unwind
    # through the cleanup in Run.main instead of leaving an operator or namespace behind.
    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"bench-loop: signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(int(args.time_limit) + 300)
    results = Run(args).main()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results in {args.out} ({results['duration_s']} s)")
    for key, t in results["targets"].items():
        verdict = "met" if t["met"] else "NOT met"
        log(f"  {key:34} {t['value']!s:>8}  target <= {t['target']}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
