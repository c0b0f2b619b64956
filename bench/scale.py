"""Scale: many Studies at once on simulated GPU nodes (KWOK), the operator as a process.

    PYTHONPATH=hack .venv/bin/python bench/scale.py [--studies 100 --parallelism 20
        --trials 100 --duration 30s --sampler random] [--steps 5x20,25x20,100x20]

Each size (S Studies x parallelism P, maxTrials T each: S*P trials at once, S*T in all)
runs on the local cluster with KWOK nodes (started, or reused when it runs; KWOK is
added beside a running cluster). A trial is a Job on a KWOK node asking for one
nvidia.com/gpu; KWOK "runs" its pod for --duration and then succeeds with the
termination message {"metrics": {"score": <x>}}, so the operator sees exactly what a
real trial reports, and nothing but the control plane and the operator use the CPU.

Measured, written to bench/results/scale-<S>x<P>x<T>.json:
- the operator's RSS and CPU time (its process tree, from /proc, sampled every second:
  start, peak, final) and the same for the cluster's components;
- kube-apiserver's apiserver_request_total before and after, deltas by
  verb/resource/subresource and per trial. They count every client: the Job
  controller, the scheduler and KWOK make most pod requests; the Study, Trial and Job
  writes and the kubetune.dev reads are the operator's (and the bench's few polls);
- turnover (a trial pod seen terminated -> the next Job of its Study seen created),
  p50/p90/p99, from bench/turnover.py's watcher in its own process;
- whether every Study reached Succeeded and recorded exactly maxTrials Trials, all in
  a terminal phase.
The machine's load average is read before each size starts: a busy machine explains
slow figures. Every size has a time limit (--time-limit), and so has the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))  # localcluster: the local cluster's tooling

import requests  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from turnover import TurnoverWatcher  # noqa: E402

from localcluster import cluster as localcluster  # noqa: E402
from localcluster import kwok  # noqa: E402
from localcluster.state import ClusterInfo, Layout  # noqa: E402

GROUP, VERSION = "kubetune.dev", "v1alpha1"
STUDY_LABEL = "kubetune.dev/study"
TERMINAL_TRIAL = ("Completed", "Pruned", "Failed")
TERMINAL_STUDY = ("Succeeded", "Failed")
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(f"scale: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Size:
    studies: int
    parallelism: int
    trials: int

    @property
    def label(self) -> str:
        return f"{self.studies}x{self.parallelism}x{self.trials}"

    @property
    def concurrent(self) -> int:
        return self.studies * self.parallelism

    @property
    def total(self) -> int:
        return self.studies * self.trials


# -- the Study ----------------------------------------------------------------------------


def study(
    name: str, size: Size, duration: str, sampler: str, seed: int, jitter: float = 0.0
) -> dict[str, Any]:
    """One benchmark Study: one float parameter, trials that KWOK plays for `duration`.

    With `jitter`, each trial's duration is drawn from +-jitter around it (a categorical
    parameter the score ignores): real trials do not all take the same time, and with
    identical durations every wave of trials ends in the same second.
    """
    parameters: list[dict[str, Any]] = [{"name": "x", "float": {"low": 0.0, "high": 1.0}}]
    if jitter > 0:
        base = _seconds(duration)
        choices = sorted({round(base * (1 - jitter + 2 * jitter * i / 8)) for i in range(9)})
        parameters.append({"name": "seconds", "categorical": {"choices": choices}})
        duration = "${params.seconds}s"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Study",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "direction": "maximize"},
            "parameters": parameters,
            "sampler": {"name": sampler, "seed": seed},
            "budget": {"maxTrials": size.trials, "parallelism": size.parallelism},
            "trialTemplate": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {
                        "annotations": {
                            kwok.DURATION: duration,
                            # The operator substitutes ${params.x} in every string.
                            kwok.TERMINATION_MESSAGE: '{"metrics": {"score": ${params.x}}}',
                        }
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {kwok.LABEL: "true"},
                        "containers": [
                            {
                                "name": "trial",
                                "image": "python:3.11",
                                # Never executed on a KWOK node; there for realism.
                                "command": ["python3", "-c", "print('trial')"],
                                # A string: the client rejects an integer quantity.
                                "resources": {"limits": {kwok.GPU: "1"}},
                            }
                        ],
                    },
                },
            },
        },
    }


# -- /proc sampling ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, cpu seconds incl. reaped children, rss MiB) of one process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2 :].split()
    cpu = (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK_TCK
    return int(f[1]), cpu, int(f[21]) * PAGE / 2**20


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                kids.setdefault(st[0], []).append(int(entry.name))
    return kids


@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    rss_root: list[float] = field(default_factory=list)  # the root process alone

    def summary(self) -> dict[str, Any]:
        if not self.t:
            return {"samples": 0}
        wall = self.t[-1] - self.t[0]
        cpu = self.cpu[-1] - self.cpu[0]
        # Busiest 10-second window, in cores: the mean hides bursts.
        peak, j = 0.0, 0
        for i in range(len(self.t)):
            while self.t[i] - self.t[j] > 10:
                j += 1
            if self.t[i] - self.t[j] >= 5:
                peak = max(peak, (self.cpu[i] - self.cpu[j]) / (self.t[i] - self.t[j]))
        return {
            "samples": len(self.t),
            "rss_mib": {
                "start": round(self.rss[0], 1),
                "peak": round(max(self.rss), 1),
                "final": round(self.rss[-1], 1),
            },
            "rss_mib_root_process": {
                "peak": round(max(self.rss_root), 1),
                "final": round(self.rss_root[-1], 1),
            },
            "cpu_s": round(cpu, 2),
            "cpu_cores_mean": round(cpu / wall, 3) if wall > 0 else None,
            "cpu_cores_peak_10s": round(peak, 3),
        }


class ProcSampler(threading.Thread):
    """RSS and CPU time of process trees (a root PID and all its descendants), every second."""

    def __init__(self, roots: Mapping[str, int], interval: float = 1.0) -> None:
        super().__init__(name="proc-sampler", daemon=True)
        self.roots = dict(roots)
        self.interval = interval
        self.series = {name: Series() for name in roots}
        self.done = threading.Event()

    def sample(self) -> None:
        kids = _children()
        t = time.monotonic()
        for name, root in self.roots.items():
            cpu = rss = root_rss = 0.0
            stack, alive = [root], False
            while stack:
                pid = stack.pop()
                st = _stat(pid)
                if st is None:
                    continue
                alive = alive or pid == root
                cpu, rss = cpu + st[1], rss + st[2]
                if pid == root:
                    root_rss = st[2]
                stack += kids.get(pid, [])
            if alive:
                s = self.series[name]
                s.t.append(t)
                s.cpu.append(cpu)
                s.rss.append(rss)
                s.rss_root.append(root_rss)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.join(5)
        self.sample()
        return {name: s.summary() for name, s in self.series.items()}


# -- apiserver metrics ------------------------------------------------------------------------


def scrape_requests(layout: Layout, info: ClusterInfo) -> dict[str, dict[tuple[str, ...], float]]:
    """apiserver_request_total by (verb, resource, subresource) and by code, and
    APF's dispatched requests by priority level (it separates the controller-manager
    and scheduler from the system:masters clients: operator, KWOK, watcher, bench)."""
    pki = layout.pki
    r = requests.get(
        f"{info.apiserver_url}/metrics",
        cert=(str(pki / "admin.crt"), str(pki / "admin.key")),
        verify=str(pki / "ca.crt"),
        timeout=30,
    )
    r.raise_for_status()
    out: dict[str, dict[tuple[str, ...], float]] = {"verb": {}, "code": {}, "level": {}}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "apiserver_request_total":
                key = (s.labels["verb"], s.labels["resource"], s.labels.get("subresource", ""))
                out["verb"][key] = out["verb"].get(key, 0.0) + s.value
                code = (s.labels.get("code", ""),)
                out["code"][code] = out["code"].get(code, 0.0) + s.value
            elif s.name == "apiserver_flowcontrol_dispatched_requests_total":
                level = (s.labels.get("priority_level", ""),)
                out["level"][level] = out["level"].get(level, 0.0) + s.value
    return out


def request_deltas(
    before: Mapping[str, Mapping[tuple[str, ...], float]],
    after: Mapping[str, Mapping[tuple[str, ...], float]],
    trials: int,
) -> dict[str, Any]:
    def delta(kind: str) -> list[tuple[tuple[str, ...], float]]:
        d = {k: v - before[kind].get(k, 0.0) for k, v in after[kind].items()}
        return sorted(((k, v) for k, v in d.items() if v > 0), key=lambda kv: -kv[1])

    per = max(trials, 1)
    verbs = delta("verb")
    total = sum(v for _, v in verbs)
    return {
        "total": int(total),
        "per_trial": round(total / per, 2),
        "by_verb_resource": [
            {
                "verb": k[0],
                "resource": k[1],
                "subresource": k[2],
                "count": int(v),
                "per_trial": round(v / per, 3),
            }
            for k, v in verbs
        ],
        "by_code": {k[0]: int(v) for k, v in delta("code")},
        "by_priority_level": {k[0]: int(v) for k, v in delta("level")},
    }


# -- the run --------------------------------------------------------------------------------


class Operator:
    """`python -m kubetune` as its own process, as tests/e2e/conftest.py runs it."""

    def __init__(self, layout: Layout, info: ClusterInfo, namespaces: Sequence[str]) -> None:
        self.log = layout.logs / "operator-scale.log"
        with contextlib.closing(__import__("socket").socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.metrics_port = int(sock.getsockname()[1])
        env = {
            **os.environ,
            "KUBECONFIG": str(layout.kubeconfig),
            "KUBETUNE_PROMETHEUS_URL": info.prometheus_url,
            "KUBETUNE_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "POD_IP": "127.0.0.1",
        }
        argv = [sys.executable, "-m", "kubetune", *(f"--namespace={ns}" for ns in namespaces)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def own_requests(self) -> dict[str, float]:
        """The operator's own API requests (kubetune_api_requests_total), by verb+resource."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        except requests.RequestException:
            return {}
        out: dict[str, float] = {}
        for m in re.finditer(r"^kubetune_api_requests_total\{([^}]*)\} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[f"{labels.get('verb')} {labels.get('resource')}"] = float(m.group(2))
        return out

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _list(api: client.CustomObjectsApi, ns: str, plural: str) -> list[dict[str, Any]]:
    # Raw JSON: thousands of Trials through the typed client cost seconds of CPU.
    resp = api.list_namespaced_custom_object(
        GROUP, VERSION, ns, plural, _preload_content=False, _request_timeout=120
    )
    items: list[dict[str, Any]] = json.loads(resp.data).get("items") or []
    return items


def study_progress(api: client.CustomObjectsApi, namespaces: Sequence[str]) -> dict[str, Any]:
    phases: dict[str, int] = {}
    finished = 0
    for ns in namespaces:
        for s in _list(api, ns, "studies"):
            st = s.get("status") or {}
            phase = st.get("phase") or "Pending"
            phases[phase] = phases.get(phase, 0) + 1
            counts = st.get("trials") or {}
            finished += sum(int(counts.get(k) or 0) for k in ("completed", "pruned", "failed"))
    return {"phases": phases, "finished_trials": finished}


def check_trials(
    api: client.CustomObjectsApi, namespaces: Sequence[str], size: Size
) -> dict[str, Any]:
    """Every Study holds exactly maxTrials Trials, each in a terminal phase."""
    per_study: dict[str, dict[str, int]] = {}
    for ns in namespaces:
        for s in _list(api, ns, "studies"):
            per_study.setdefault(f"{ns}/{s['metadata']['name']}", {})
        for t in _list(api, ns, "trials"):
            key = f"{ns}/{(t['metadata'].get('labels') or {}).get(STUDY_LABEL, '')}"
            phase = (t.get("status") or {}).get("phase") or "Pending"
            counts = per_study.setdefault(key, {})
            counts[phase] = counts.get(phase, 0) + 1
    phases: dict[str, int] = {}
    bad: dict[str, dict[str, int]] = {}
    for key, counts in per_study.items():
        for phase, n in counts.items():
            phases[phase] = phases.get(phase, 0) + n
        n = sum(counts.values())
        terminal = sum(v for k, v in counts.items() if k in TERMINAL_TRIAL)
        if n != size.trials or terminal != n:
            bad[key] = counts
    recorded = sum(phases.values())
    return {
        "expected": size.total,
        "recorded": recorded,
        "phases": phases,
        "studies_ok": len(per_study) - len(bad),
        "studies_not_ok": dict(list(bad.items())[:20]),
        "all_recorded": not bad and recorded == size.total,
    }


def wait_studies(
    api: client.CustomObjectsApi,
    namespaces: Sequence[str],
    size: Size,
    op: Operator,
    deadline: float,
) -> dict[str, Any]:
    t0 = time.monotonic()
    progress: dict[str, Any] = {}
    while True:
        try:
            progress = study_progress(api, namespaces)
        except (ApiException, OSError) as e:  # a slow apiserver is a finding, not the end
            log(f"progress: {type(e).__name__}: {e}")
        done = sum(n for p, n in progress.get("phases", {}).items() if p in TERMINAL_STUDY)
        log(
            f"{time.monotonic() - t0:6.0f}s  studies {progress.get('phases')}  "
            f"trials finished {progress.get('finished_trials')}/{size.total}"
        )
        if done == size.studies:
            return {"timed_out": False, "operator_exited": False, **progress}
        if op.proc.poll() is not None:
            log(f"the operator exited with {op.proc.returncode}; see {op.log}")
            return {"timed_out": False, "operator_exited": True, **progress}
        if time.monotonic() > deadline:
            log("time limit reached")
            return {"timed_out": True, "operator_exited": False, **progress}
        # Coarse on purpose (each poll lists every Study); exact times come from the
        # turnover watcher's records (see "timeline_s").
        time.sleep(2)


@dataclass
class ClusterHandle:
    layout: Layout
    owned: bool  # started by this run (restarted between sizes, stopped at the end)
    kwok_added: bool  # KWOK added to a cluster that ran without it (removed at the end)
    kwok_nodes: int
    gpus_per_node: int

    @property
    def info(self) -> ClusterInfo:
        return ClusterInfo.load(self.layout.cluster_json)


def open_cluster(nodes: int, gpus: int) -> ClusterHandle:
    layout = Layout()
    if localcluster.is_healthy(layout):
        added = "kwok" not in localcluster.status(layout)
        log("reusing the running local cluster" + (" (adding KWOK)" if added else ""))
        localcluster.kwok_up(nodes=nodes, gpus_per_node=gpus, layout=layout)
        return ClusterHandle(layout, False, added, nodes, gpus)
    localcluster.up(kwok_nodes=nodes, kwok_gpus_per_node=gpus, layout=layout)
    return ClusterHandle(layout, True, False, nodes, gpus)


def kwok_gpus(core: client.CoreV1Api) -> int:
    nodes = core.list_node(label_selector=kwok.SELECTOR).items
    return sum(int((n.status.allocatable or {}).get(kwok.GPU, 0)) for n in nodes)


def apply_crds(handle: ClusterHandle) -> None:
    kubectl = str(localcluster.binaries() / "kubectl")
    kc = f"--kubeconfig={handle.layout.kubeconfig}"
    for args in (
        ["apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
        [
            "wait",
            "--for=condition=Established",
            "crd/studies.kubetune.dev",
            "crd/trials.kubetune.dev",
        ],
    ):
        subprocess.run([kubectl, kc, *args], check=True, capture_output=True, text=True)


def delete_namespaces(core: client.CoreV1Api, namespaces: Sequence[str], timeout: float) -> bool:
    for ns in namespaces:
        with contextlib.suppress(ApiException):
            core.delete_namespace(ns)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {n.metadata.name for n in core.list_namespace().items} & set(namespaces)
        if not left:
            return True
        time.sleep(2)
    log(f"namespaces still terminating after {timeout:.0f}s: {sorted(left)[:5]}")
    return False


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_size(handle: ClusterHandle, size: Size, args: argparse.Namespace) -> dict[str, Any]:
    layout, info = handle.layout, handle.info
    api = config.new_client_from_config(str(layout.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    capacity = kwok_gpus(core)
    if capacity < size.concurrent:
        raise SystemExit(
            f"{size.concurrent} trials at once need {size.concurrent} GPUs; the KWOK nodes "
            f"have {capacity} (raise --kwok-nodes or --kwok-gpus-per-node)"
        )
    apply_crds(handle)
    tag = secrets.token_hex(2)
    namespaces = [f"scale-{size.label}-{tag}-{i}" for i in range(args.namespaces)]
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns}})
    load_before = loadavg()
    log(f"size {size.label}: {size.concurrent} at once, {size.total} trials; load {load_before}")

    watcher = TurnoverWatcher(layout.kubeconfig, log=layout.logs / "turnover-scale.log")
    watcher.start(namespaces)
    components = {c: pid for c, pid in localcluster.status(layout).items() if pid}
    requests_before = scrape_requests(layout, info)
    op = Operator(layout, info, namespaces if not args.cluster_wide else [])
    sampler = ProcSampler({"operator": op.proc.pid, **components})
    sampler.start()
    t0 = time.monotonic()
    try:
        for i in range(size.studies):
            ns = namespaces[i % len(namespaces)]
            body = study(f"s{i:04d}", size, args.duration, args.sampler, args.seed + i, args.jitter)
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "studies", body)
        log(f"created {size.studies} Studies in {time.monotonic() - t0:.1f}s")
        waited = wait_studies(custom, namespaces, size, op, t0 + args.time_limit)
        wall = time.monotonic() - t0
        requests_after = scrape_requests(layout, info)
        trials = check_trials(custom, namespaces, size)
    finally:
        procs = sampler.stop()
        own = op.own_requests()
        exit_code = op.stop()
        parallelism = {
            f"{namespaces[i % len(namespaces)]}/s{i:04d}": size.parallelism
            for i in range(size.studies)
        }
        try:
            turnover = watcher.stop(parallelism)
        except RuntimeError as e:
            log(f"turnover watcher: {e}")
            turnover = {"error": str(e)}
        finally:
            watcher.close()
    per_study = turnover.get("studies", {})
    study_p50 = [s["turnover_s"]["p50"] for s in per_study.values() if s["turnover_s"]["p50"]]
    idle = [s["idle_fraction"] for s in per_study.values() if s["idle_fraction"] is not None]
    waves = math.ceil(size.trials / size.parallelism)
    firsts = [v["first_job_monotonic"] for v in per_study.values() if v["first_job_monotonic"]]
    lasts = [v["last_termination_monotonic"] for v in per_study.values()]
    lasts = [t for t in lasts if t]
    result = {
        "bench": "scale",
        "size": {
            "studies": size.studies,
            "parallelism": size.parallelism,
            "max_trials": size.trials,
            "concurrent": size.concurrent,
            "total_trials": size.total,
            "duration": args.duration,
            "duration_jitter": args.jitter,
            "sampler": args.sampler,
            "namespaces": len(namespaces),
            "operator_scope": "cluster" if args.cluster_wide else "namespaces",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "cluster": {
            "reused": not handle.owned,
            "kwok_nodes": handle.kwok_nodes,
            "kwok_gpus": capacity,
        },
        # From the Studies' creation: the operator's first Job seen (start-up included),
        # the last trial pod seen terminated, every Study seen Succeeded (2 s polls).
        "timeline_s": {
            "first_job": round(min(firsts) - t0, 2) if firsts else None,
            "last_trial_end": round(max(lasts) - t0, 2) if lasts else None,
            "all_studies_done": round(wall, 1),
        },
        "wall_s": round(wall, 1),
        # Each Study needs ceil(T/P) rounds of `duration` at the very least.
        "ideal_wall_s": waves * _seconds(args.duration),
        "trials_per_s": round(trials["recorded"] / wall, 2) if wall else None,
        **waited,
        "operator_exit_code": exit_code,
        "studies_succeeded": waited.get("phases", {}).get("Succeeded", 0) == size.studies,
        "trials": trials,
        "operator": procs.pop("operator"),
        "components": procs,
        "apiserver_requests": request_deltas(requests_before, requests_after, trials["recorded"]),
        # What the operator itself sent (its kubetune_api_requests_total), per trial.
        "operator_requests_per_trial": {
            "total": round(sum(own.values()) / max(1, trials["recorded"]), 2),
            **{k: round(v / max(1, trials["recorded"]), 3) for k, v in sorted(own.items())},
        },
        "turnover": {
            "pooled": turnover.get("pooled"),
            "per_study_p50": _summary(study_p50),
            "idle_fraction": _summary(idle),
            "watcher": turnover.get("watcher"),
            "studies": {
                k: {
                    "turnover_s": v["turnover_s"],
                    "wall_s": v["wall_s"],
                    "idle_fraction": v["idle_fraction"],
                    "jobs": v["jobs"],
                    "negative_samples": v["negative_samples"],
                    "late_records": v["late_records"],
                }
                for k, v in per_study.items()
            },
        },
        "operator_log": str(op.log),
    }
    api.close()
    return result


def _seconds(duration: str) -> float:
    """A Go duration's seconds (the subset used here: h, m, s, ms)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|h|m|s)", duration))


def _summary(values: Sequence[float]) -> dict[str, Any]:
    s = sorted(values)
    if not s:
        return {"n": 0}

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, round(p * (len(s) - 1)))], 4)

    return {"n": len(s), "p50": q(0.5), "p90": q(0.9), "max": round(s[-1], 4)}


def parse_steps(text: str, trials: int) -> list[Size]:
    sizes = []
    for part in text.split(","):
        s, p = part.lower().split("x", 1)
        sizes.append(Size(int(s), int(p), trials))
    return sizes


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """The whole run stops by itself: SIGALRM raises in the main thread, cleanup runs."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the run's time limit ({seconds:.0f}s) expired")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(math.ceil(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=20)
    parser.add_argument("--trials", type=int, default=100, help="maxTrials of each Study")
    parser.add_argument("--duration", default="30s", help="each trial's run time (Go duration)")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.25,
        help="trial durations vary by +-this fraction (0: all the same)",
    )
    parser.add_argument("--sampler", choices=["random", "tpe"], default="random")
    parser.add_argument("--seed", type=int, default=1, help="Study i gets seed+i")
    parser.add_argument(
        "--steps", help="several sizes, STUDIESxPARALLELISM,... (e.g. 5x20,25x20,100x20)"
    )
    parser.add_argument("--namespaces", type=int, default=1, help="spread Studies over N")
    parser.add_argument(
        "--cluster-wide", action="store_true", help="run the operator without --namespace"
    )
    parser.add_argument("--kwok-nodes", type=int, default=25)
    parser.add_argument("--kwok-gpus-per-node", type=int, default=100)
    parser.add_argument(
        "--time-limit", type=float, default=1800, help="seconds per size (default 1800)"
    )
    parser.add_argument("--keep-cluster", action="store_true", help="leave it running")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = (
        parse_steps(args.steps, args.trials)
        if args.steps
        else [Size(args.studies, args.parallelism, args.trials)]
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # Per size: its own limit plus cluster (re)start and clean-up.
    with time_limit(len(sizes) * (args.time_limit + 300)):
        handle = open_cluster(args.kwok_nodes, args.kwok_gpus_per_node)
        rows = []
        try:
            for n, size in enumerate(sizes):
                if n and handle.owned:
                    # A fresh cluster per size: no leftovers, comparable apiserver memory.
                    localcluster.down(handle.layout)
                    handle = open_cluster(args.kwok_nodes, args.kwok_gpus_per_node)
                result = run_size(handle, size, args)
                out = args.out_dir / f"scale-{size.label}.json"
                out.write_text(json.dumps(result, indent=2) + "\n")
                log(f"wrote {out}")
                rows.append(result)
                if not handle.owned:
                    api = config.new_client_from_config(str(handle.layout.kubeconfig))
                    ns = [
                        n.metadata.name
                        for n in client.CoreV1Api(api).list_namespace().items
                        if n.metadata.name.startswith(f"scale-{size.label}-")
                    ]
                    delete_namespaces(client.CoreV1Api(api), ns, 600)
                    api.close()
        finally:
            if handle.owned and not args.keep_cluster:
                localcluster.down(handle.layout)
            elif handle.kwok_added and not args.keep_cluster:
                # Leave the shared cluster as found: pods of other users (tests) could
                # otherwise be scheduled onto nodes that run nothing.
                localcluster.kwok_down(handle.layout)
    columns = ("size", "wall_s", "ideal_s", "turnover_p50", "p99", "op_rss_peak", "op_cpu_s")
    print(*columns, "requests/trial", "ok", sep="\t")
    for r in rows:
        t = (r["turnover"]["pooled"] or {}).get("turnover_s") or {}
        op = r["operator"]
        ok = r["studies_succeeded"] and r["trials"]["all_recorded"]
        label = f"{r['size']['studies']}x{r['size']['parallelism']}x{r['size']['max_trials']}"
        print(
            label,
            r["wall_s"],
            r["ideal_wall_s"],
            t.get("p50"),
            t.get("p99"),
            (op.get("rss_mib") or {}).get("peak"),
            op.get("cpu_s"),
            r["apiserver_requests"]["per_trial"],
            ok,
            sep="\t",
        )
    return 0 if all(r["studies_succeeded"] and r["trials"]["all_recorded"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
