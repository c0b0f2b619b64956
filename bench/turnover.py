"""Trial turnover, seen from outside the operator: a watcher in its own process.

    python bench/turnover.py --kubeconfig K --namespace NS [--namespace NS2 ...] --out F.json
    (runs until SIGTERM/SIGINT, prints "ready" once its watches are up, then writes F.json)

or, from another bench:

    watcher = TurnoverWatcher(kubeconfig)
    watcher.start(["ns-a", "ns-b"])      # or None: every namespace
    ...                                  # run Studies
    results = watcher.stop()             # per-Study and pooled figures (see `analyse`)

It watches Jobs and Pods carrying the label `kubetune.dev/study` (a server-side
label selector) and records, per Study, the monotonic time each Job was first seen
and each trial pod first seen Running and first seen terminated (phase Succeeded or
Failed, every container terminated, a deletionTimestamp when the operator deletes a
pruned trial, or a DELETED event). Turnover is the time from a trial pod seen
terminated to the next trial's Job seen created: within a Study, terminations in time
order are matched first-in-first-out with the Jobs after the first `parallelism`
(which replace nothing). Study wall time runs from the first Job seen to the last pod
terminated; the GPU-slot idle fraction is 1 - (sum of pod running time) /
(parallelism x wall time).

Why a separate process: the figures must not depend on how busy the bench's own
threads (or the GIL) are. Why raw JSON: at 2,000 concurrent trials the typed client's
deserialisation of every pod event would cost more CPU than the watch itself, and a
starved watcher reports its own lag as the operator's. Times are CLOCK_MONOTONIC,
which every process on the machine shares, so a caller can compare them with its own
`time.monotonic()`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABEL = "kubetune.dev/study"
GROUP, VERSION = "kubetune.dev", "v1alpha1"
# Server-side watch timeout: the watch is re-opened from the last resourceVersion
# well before the apiserver's own limit, and bookmarks keep that version fresh so a
# re-open rarely meets 410 Gone.
WATCH_SECONDS = 240


# -- the recorder (runs in the child process) ---------------------------------------------


@dataclass
class PodRecord:
    study: str  # "namespace/study"
    job: str
    seen: float
    bound: float | None = None  # first seen with spec.nodeName (the scheduler's part done)
    running: float | None = None
    terminated: float | None = None
    how: str = ""  # Succeeded | Failed | ContainersTerminated | Deleting | Deleted
    late: bool = False  # first seen by a (re)list, not by a watch event: its times are late


@dataclass
class JobRecord:
    study: str
    seen: float
    late: bool = False


@dataclass
class Recorder:
    """What the watch threads have seen; one lock, held only for dict updates."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)  # key "ns/name"
    pods: dict[str, PodRecord] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: dict[str, int] = field(default_factory=lambda: {"pods": 0, "jobs": 0})
    relists: int = 0
    errors: list[str] = field(default_factory=list)

    def job(self, etype: str, obj: Mapping[str, Any], t: float, late: bool) -> None:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        study = f"{meta.get('namespace')}/{(meta.get('labels') or {}).get(LABEL, '')}"
        with self.lock:
            self.events["jobs"] += 1
            if key not in self.jobs and etype != "DELETED":
                self.jobs[key] = JobRecord(study=study, seen=t, late=late)

    def pod(self, etype: str, obj: Mapping[str, Any], t: float, late: bool) -> None:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        labels = meta.get("labels") or {}
        with self.lock:
            self.events["pods"] += 1
            rec = self.pods.get(key)
            if rec is None:
                rec = self.pods[key] = PodRecord(
                    study=f"{meta.get('namespace')}/{labels.get(LABEL, '')}",
                    job=str(labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")),
                    seen=t,
                    late=late,
                )
            if rec.terminated is not None:
                return
            if rec.bound is None and (obj.get("spec") or {}).get("nodeName"):
                rec.bound = t
            states = [cs.get("state") or {} for cs in status.get("containerStatuses") or []]
            if rec.running is None and (
                status.get("phase") == "Running" or any("running" in s for s in states)
            ):
                rec.running = t
            how = ""
            if status.get("phase") in ("Succeeded", "Failed"):
                how = str(status["phase"])
            elif states and all("terminated" in s for s in states):
                # The container's end: the kubelet reports it before (or with) the phase.
                how = "ContainersTerminated"
            elif meta.get("deletionTimestamp"):
                how = "Deleting"
            elif etype == "DELETED":
                how = "Deleted"
            if how:
                rec.terminated, rec.how = t, how


def _lines(resp: Any) -> Iterator[tuple[float, bytes]]:
    """Newline-delimited watch events, each with the time its chunk arrived."""
    rest = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        t = time.monotonic()
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for line in parts:
            if line:
                yield t, line


class WatchThread(threading.Thread):
    """List, then watch, one kind in one namespace (or all); relist on 410 Gone."""

    def __init__(self, api: Any, kind: str, namespace: str | None, rec: Recorder) -> None:
        super().__init__(name=f"watch-{kind}-{namespace or 'all'}", daemon=True)
        from kubernetes import client  # noqa: PLC0415 - the parent process never needs it

        self.kind, self.namespace, self.rec = kind, namespace, rec
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        if kind == "pods":
            self.call: Callable[..., Any] = (
                core.list_pod_for_all_namespaces
                if namespace is None
                else lambda **kw: core.list_namespaced_pod(namespace, **kw)
            )
            self.observe = rec.pod
        else:
            self.call = (
                batch.list_job_for_all_namespaces
                if namespace is None
                else lambda **kw: batch.list_namespaced_job(namespace, **kw)
            )
            self.observe = rec.job
        self.listed = threading.Event()

    def relist(self) -> str:
        resp = self.call(label_selector=LABEL, _preload_content=False, _request_timeout=60)
        t = time.monotonic()
        body = json.loads(resp.data)
        for obj in body.get("items") or []:
            self.observe("ADDED", obj, t, True)
        return str(body["metadata"]["resourceVersion"])

    def run(self) -> None:
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = self.relist()
                    self.listed.set()
                resp = self.call(
                    label_selector=LABEL,
                    watch=True,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _preload_content=False,
                    _request_timeout=(10, WATCH_SECONDS + 30),
                )
                try:
                    for t, line in _lines(resp):
                        event = json.loads(line)
                        etype, obj = event.get("type"), event.get("object") or {}
                        if etype == "ERROR":
                            if obj.get("code") == 410:  # too old: list again
                                with self.rec.lock:
                                    self.rec.relists += 1
                                rv = None
                                break
                            raise RuntimeError(f"watch error: {obj}")
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if etype != "BOOKMARK":
                            self.observe(str(etype), obj, t, False)
                finally:
                    resp.release_conn()
            except Exception as e:  # the watch must go on; errors are reported
                status = getattr(e, "status", None)
                with self.rec.lock:
                    if len(self.rec.errors) < 50:
                        self.rec.errors.append(f"{self.name}: {type(e).__name__}: {e}"[:300])
                    if status == 410:
                        self.rec.relists += 1
                if status == 410:
                    rv = None
                time.sleep(0.5)


def _parallelism(api: Any, namespaces: set[str]) -> dict[str, int]:
    """Each Study's budget.parallelism, read when recording stops (best effort)."""
    from kubernetes import client  # noqa: PLC0415

    custom = client.CustomObjectsApi(api)
    out: dict[str, int] = {}
    for ns in sorted(namespaces):
        try:
            resp = custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "studies", _preload_content=False, _request_timeout=10
            )
        except Exception:  # noqa: S112 - a deleted namespace just has no Studies
            continue
        for s in json.loads(resp.data).get("items") or []:
            p = ((s.get("spec") or {}).get("budget") or {}).get("parallelism")
            if p:
                out[f"{ns}/{s['metadata']['name']}"] = int(p)
    return out


def record(kubeconfig: str, namespaces: Sequence[str] | None, out: Path) -> None:
    """The child process: watch until SIGTERM/SIGINT, then write the raw records to `out`."""
    from kubernetes import client, config  # noqa: PLC0415

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    # One long-lived connection per watch, plus room for the (re)lists.
    cfg.connection_pool_maxsize = 2 * len(namespaces or [None]) + 4
    api = client.ApiClient(cfg)
    rec = Recorder()
    started = time.monotonic()
    scopes: list[str | None] = list(namespaces) if namespaces else [None]
    threads = [WatchThread(api, kind, ns, rec) for ns in scopes for kind in ("jobs", "pods")]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for th in threads:
        th.start()
    deadline = time.monotonic() + 60
    for th in threads:
        if not th.listed.wait(max(0.0, deadline - time.monotonic())):
            print(f"not ready: {th.name} could not list; {rec.errors[-1:]}", flush=True)
            os._exit(1)
    print("ready", flush=True)
    stop.wait()
    stopped = time.monotonic()
    with rec.lock:
        jobs = {k: vars(v).copy() for k, v in rec.jobs.items()}
        pods = {k: vars(v).copy() for k, v in rec.pods.items()}
        events, relists, errors = dict(rec.events), rec.relists, list(rec.errors)
    study_namespaces = {r["study"].split("/", 1)[0] for r in jobs.values()}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    raw = {
        "jobs": jobs,
        "pods": pods,
        "parallelism": _parallelism(api, study_namespaces),
        "watcher": {
            "namespaces": list(namespaces) if namespaces else None,
            "started_monotonic": started,
            "stopped_monotonic": stopped,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "events": events,
            "relists": relists,
            "errors": errors,
        },
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw))
    tmp.replace(out)
    # The watch threads sit in blocking socket reads; nothing of theirs needs cleaning up.
    os._exit(0)


# -- analysis (pure) ---------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max/mean/n in seconds (None where there are no samples)."""
    s = sorted(values)
    if not s:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(s),
        "p50": round(percentile(s, 50), 4),
        "p90": round(percentile(s, 90), 4),
        "p99": round(percentile(s, 99), 4),
        "max": round(s[-1], 4),
        "mean": round(sum(s) / len(s), 4),
    }


def _stages(pods: Sequence[Mapping[str, Any]], jobs: Mapping[str, Any]) -> dict[str, Any]:
    """Where the time between a Job created and its pod ending goes, per pod, as seen by
    this watcher: the job controller (Job -> pod), the scheduler (pod -> bound), the node
    (bound -> Running) and the pod's own run (Running -> ended; minus the trial's sleep,
    what starting and ending a process costs). Only pods whose every step was seen live."""
    steps: dict[str, list[float]] = {"job_to_pod": [], "pod_to_bound": [], "bound_to_running": []}
    steps["running_to_ended"] = []
    for p in pods:
        job = jobs.get(f"{p['study'].split('/', 1)[0]}/{p['job']}")
        times = [job and job["seen"], p["seen"], p.get("bound"), p["running"], p["terminated"]]
        if job is None or job["late"] or p["late"] or any(t is None for t in times):
            continue
        for name, a, b in zip(steps, times, times[1:], strict=False):
            steps[name].append(b - a)
    return {name: summary(values) for name, values in steps.items()}


def analyse(raw: Mapping[str, Any], parallelism: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Per-Study and pooled turnover, wall time and idle fraction from the raw records.

    `parallelism` ("ns/study" -> n) overrides what the watcher read from the Studies;
    without either, the Jobs seen before the Study's first termination stand in for it.
    """
    jobs_by: dict[str, list[float]] = {}
    late_jobs: dict[str, int] = {}
    for j in raw["jobs"].values():
        jobs_by.setdefault(j["study"], []).append(j["seen"])
        late_jobs[j["study"]] = late_jobs.get(j["study"], 0) + int(j["late"])
    pods_by: dict[str, list[Mapping[str, Any]]] = {}
    for p in raw["pods"].values():
        pods_by.setdefault(p["study"], []).append(p)
    par = {**raw.get("parallelism", {}), **(parallelism or {})}
    studies: dict[str, Any] = {}
    pooled: list[float] = []
    for study in sorted(set(jobs_by) | set(pods_by)):
        created = sorted(jobs_by.get(study, []))
        pods = pods_by.get(study, [])
        ends = sorted(p["terminated"] for p in pods if p["terminated"] is not None)
        p_known = par.get(study)
        p_used = p_known or sum(1 for c in created if not ends or c <= ends[0])
        # Jobs beyond the first `parallelism` each replace one finished trial, in order.
        pairs = list(zip(ends, created[p_used:], strict=False))
        samples = [c - e for e, c in pairs]
        pooled += samples
        wall = (max(ends) - created[0]) if created and ends else None
        busy, no_running = 0.0, 0
        for p in pods:
            if p["terminated"] is None:
                continue
            start = p["running"]
            if start is None:  # never seen Running (a very short pod): count from first sight
                start, no_running = p["seen"], no_running + 1
            busy += max(0.0, p["terminated"] - start)
        idle = 1 - busy / (p_used * wall) if wall and p_used else None
        stages = _stages(pods, raw["jobs"])
        how: dict[str, int] = {}
        for p in pods:
            how[p["how"] or "not terminated"] = how.get(p["how"] or "not terminated", 0) + 1
        studies[study] = {
            "parallelism": p_used,
            "parallelism_source": "study" if p_known else "inferred",
            "jobs": len(created),
            "pods": len(pods),
            "terminations": how,
            "turnover_s": summary(samples),
            # A Job seen before the termination it is paired with: the two watch streams
            # arrived out of order, or something other than a finished trial made room.
            "negative_samples": sum(1 for s in samples if s < 0),
            # First seen by a (re)list rather than a watch event: their times are late.
            "late_records": late_jobs.get(study, 0) + sum(1 for p in pods if p["late"]),
            "wall_s": round(wall, 3) if wall is not None else None,
            "pod_running_s": round(busy, 3),
            "pods_never_seen_running": no_running,
            "idle_fraction": round(idle, 4) if idle is not None else None,
            "pod_start_stages_s": stages,
            "first_job_monotonic": created[0] if created else None,
            "last_termination_monotonic": ends[-1] if ends else None,
        }
    return {
        "studies": studies,
        "pooled": {"turnover_s": summary(pooled)},
        "watcher": raw["watcher"],
    }


# -- the parent-side handle --------------------------------------------------------------


class TurnoverWatcher:
    """Start the recorder as a child process; stop() returns `analyse`'s figures."""

    def __init__(
        self,
        kubeconfig: str | Path,
        *,
        python: str = sys.executable,
        log: Path | None = None,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.python = python
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None
        self.raw: dict[str, Any] | None = None

    def start(self, namespaces: Sequence[str] | None, timeout: float = 60) -> None:
        """Watch these namespaces (None: all); returns once the initial lists are done."""
        fd, name = tempfile.mkstemp(prefix="turnover-", suffix=".json")
        os.close(fd)
        self.out = Path(name)
        self.out.unlink()
        argv = [
            self.python,
            str(Path(__file__).resolve()),
            f"--kubeconfig={self.kubeconfig}",
            f"--out={self.out}",
        ]
        argv += [f"--namespace={ns}" for ns in namespaces or []]
        with self.log.open("ab") if self.log else Path(os.devnull).open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self._kill()
            raise RuntimeError(f"turnover watcher did not start within {timeout:.0f}s: {line!r}")

    def stop(
        self, parallelism: Mapping[str, int] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Stop recording; per-Study and pooled figures (see `analyse`)."""
        assert self.proc is not None and self.out is not None, "start() first"
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise RuntimeError("turnover watcher did not write its results in time") from None
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"turnover watcher exited with {self.proc.returncode}")
        self.raw = json.loads(self.out.read_text())
        self.out.unlink()
        return analyse(self.raw, parallelism)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Kill the child if it is still running (for cleanup paths)."""
        self._kill()
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig")
    parser.add_argument("--namespace", action="append", help="repeatable; default: all")
    parser.add_argument("--out", type=Path, help="where to write the raw records (JSON)")
    parser.add_argument("--analyse", type=Path, help="print the figures of a raw-records file")
    args = parser.parse_args()
    if args.analyse:
        print(json.dumps(analyse(json.loads(args.analyse.read_text())), indent=2))
        return 0
    if not (args.kubeconfig and args.out):
        parser.error("--kubeconfig and --out are needed to record")
    record(args.kubeconfig, args.namespace, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
