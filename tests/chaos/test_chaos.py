"""The reliability suite: faults and bad input on the real local cluster.

`make test` runs it in a short form; `make chaos` (KUBETUNE_CHAOS=full) runs the full
one and writes its summary to bench/results/chaos.json: SIGKILLs of the operator
during a Study with a pruner, the API server and Prometheus taken away and brought
back, the node crashing with its pods, and generated Study specs, valid and not.
"""

from __future__ import annotations

import json
import math
import os
import random
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from localcluster import cluster as localcluster
from tests.chaos.specs import mutations
from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import GROUP, ROOT, VERSION, Operator, Studies, script_study
from tests.e2e.test_study import max_concurrent

FULL = os.environ.get("KUBETUNE_CHAOS", "short") == "full"
SIZES: dict[str, dict[str, int]] = {
    # kills, trials of the killed Study; outages (s); generated specs
    "full": {
        "kills": 50,
        "kill_trials": 120,
        "apiserver_down": 30,
        "prometheus_down": 300,
        "specs": 1000,
    },
    "short": {
        "kills": 5,
        "kill_trials": 12,
        "apiserver_down": 10,
        "prometheus_down": 15,
        "specs": 60,
    },
}
SIZE = SIZES["full" if FULL else "short"]
SUMMARY: dict[str, Any] = {"mode": "full" if FULL else "short", "sizes": SIZE}
TERMINAL = ("Completed", "Pruned", "Failed")


@pytest.fixture(scope="module", autouse=True)
def summary(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """Each test adds its figures; the full run's summary is a benchmark result."""
    started = time.monotonic()
    yield SUMMARY
    SUMMARY["total_s"] = round(time.monotonic() - started, 1)
    SUMMARY["machine"] = {"cpus": os.cpu_count(), "loadavg_after": os.getloadavg()}
    name = "chaos.json" if FULL else "chaos-short.json"
    out = ROOT / "bench" / "results" / name if FULL else cluster.layout.logs / name
    out.write_text(json.dumps(SUMMARY, indent=2) + "\n")


def stepped_trial(steps: int, pause: float) -> str:
    """A trial whose curve grows with x, reported step by step (what a pruner reads)."""
    return textwrap.dedent(
        f"""
        import sys, time
        from kubetune import trial
        trial.install_sigterm_handler()
        x = float(sys.argv[2])
        for step in range(1, {steps} + 1):
            time.sleep({pause})
            trial.report(step, score=x * step)
            if trial.should_stop():
                break
        """
    )


def sleeping_trial(seconds: float) -> str:
    return textwrap.dedent(
        f"""
        import sys, time
        from kubetune import trial
        time.sleep({seconds})
        trial.report(1, score=float(sys.argv[2]))
        """
    )


def assert_finished_whole(studies: Studies, name: str, status: dict[str, Any], n: int) -> None:
    """Every Trial there once, numbered 0..n-1, finished, and learned by the sampler."""
    trials = studies.trials(name)
    assert [t["metadata"]["name"] for t in trials] == [f"{name}-{i}" for i in range(n)]
    assert all((t.get("status") or {}).get("phase") in TERMINAL for t in trials)
    assert status["sampler"]["learnedTrials"] == n


def no_running_pods(cluster: Cluster, namespace: str, study: str) -> None:
    """No pod of a finished Trial keeps its GPU (after the stop grace period)."""

    def check() -> tuple[bool, Any]:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"kubetune.dev/study={study}"
        ).items
        running = [p.metadata.name for p in pods if p.status.phase in ("Pending", "Running")]
        return not running, running

    wait_for(check, 20, "the finished Study's pods to be gone")


def test_operator_sigkilled_at_random_moments_loses_and_duplicates_nothing(
    operator: Operator, studies: Studies, cluster: Cluster, namespace: str
) -> None:
    n, parallelism = SIZE["kill_trials"], 4
    # Trials long enough that the Study outlives every kill (about 2.5 s apart) and
    # that the pruner, reading steps a second apart, gets to act.
    body = script_study("killed", stepped_trial(steps=6, pause=1.0), n, parallelism)
    body["spec"]["sampler"] = {"name": "tpe", "seed": 3}
    body["spec"]["pruner"] = {"name": "median", "options": {"nStartupTrials": 3}}
    assert studies.apply(body).returncode == 0
    rng = random.Random(11)
    kills, started = 0, time.monotonic()
    while kills < SIZE["kills"]:
        time.sleep(rng.uniform(0.3, 4.0))  # the operator may still be starting: fair game
        if (studies.get("killed").get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            break
        operator.kill()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.5))
        operator.start()
    status = studies.wait_phase("killed", "Succeeded", "Failed", timeout=600)
    assert status["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("killed")
    phases = [t["status"]["phase"] for t in trials]
    SUMMARY["kills"] = {
        "kills": kills,
        "trials": len(trials),
        "pruned": phases.count("Pruned"),
        "peak_concurrency": max_concurrent(trials),
        "duration_s": round(time.monotonic() - started, 1),
    }
    assert kills == SIZE["kills"], "the Study ended before every kill: give it more trials"
    assert_finished_whole(studies, "killed", status, n)
    assert phases.count("Pruned") >= 1, "the pruner acted across the restarts"
    assert max_concurrent(trials) <= parallelism
    no_running_pods(cluster, namespace, "killed")


def test_the_api_server_stopped_and_restarted_mid_study(
    operator: Operator, studies: Studies, cluster: Cluster
) -> None:
    n = 12
    assert studies.apply(script_study("outage", sleeping_trial(1.0), n, 3)).returncode == 0
    wait_for(lambda: (len(studies.trials("outage")) >= 3, None), 60, "trials to start")
    localcluster.stop_component("kube-apiserver", layout=cluster.layout)
    down = SIZE["apiserver_down"]
    time.sleep(down)
    localcluster.start_component("kube-apiserver", layout=cluster.layout)
    started = time.monotonic()
    status = studies.wait_phase("outage", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", operator.log_tail()
    assert operator.proc is not None and operator.proc.poll() is None, "the operator lived"
    assert_finished_whole(studies, "outage", status, n)
    SUMMARY["apiserver_outage"] = {
        "down_s": down,
        "finished_after_restart_s": round(time.monotonic() - started, 1),
    }


def test_prometheus_stopped_mid_study_pauses_pruning_and_trials_still_complete(
    operator: Operator, studies: Studies, cluster: Cluster
) -> None:
    down = SIZE["prometheus_down"]
    pause, parallelism = (2.0, 4) if FULL else (0.5, 3)
    # Long enough to run through the outage and well past it.
    waves = math.ceil((down + (40 if FULL else 10)) / (3 * pause + 1.0))
    n = waves * parallelism
    body = script_study("blind", stepped_trial(steps=3, pause=pause), n, parallelism)
    body["spec"]["pruner"] = {"name": "median", "options": {"nStartupTrials": 2}}
    assert studies.apply(body).returncode == 0
    wait_for(lambda: (len(studies.trials("blind")) >= parallelism, None), 60, "trials to start")
    localcluster.stop_component("prometheus", layout=cluster.layout)

    def metrics_condition() -> str | None:
        conditions = (studies.get("blind").get("status") or {}).get("conditions") or []
        return next((c["status"] for c in conditions if c["type"] == "MetricsAvailable"), None)

    wait_for(lambda: (metrics_condition() == "False", metrics_condition()), 30, "paused")
    completed_before = sum(
        (t.get("status") or {}).get("phase") == "Completed" for t in studies.trials("blind")
    )
    time.sleep(down)
    completed_during = (
        sum((t.get("status") or {}).get("phase") == "Completed" for t in studies.trials("blind"))
        - completed_before
    )
    assert (studies.get("blind").get("status") or {}).get("phase") == "Running", (
        "the Study outlasts the outage"
    )
    localcluster.start_component("prometheus", layout=cluster.layout)
    wait_for(lambda: (metrics_condition() == "True", metrics_condition()), 60, "resumed")
    status = studies.wait_phase("blind", "Succeeded", "Failed", timeout=600)
    assert status["phase"] == "Succeeded", operator.log_tail()
    assert_finished_whole(studies, "blind", status, n)
    assert completed_during >= 1, "trials completed from their termination messages"
    SUMMARY["prometheus_outage"] = {
        "down_s": down,
        "trials": n,
        "completed_during_outage": completed_during,
    }


def test_the_node_crashing_with_its_pods_fails_those_trials_and_the_study_goes_on(
    operator: Operator, studies: Studies, cluster: Cluster, namespace: str
) -> None:
    n, parallelism = 10, 4
    body = script_study("crash", sleeping_trial(4.0), n, parallelism)
    body["spec"]["budget"]["maxFailedTrials"] = parallelism
    assert studies.apply(body).returncode == 0

    def running() -> tuple[bool, Any]:
        phases = [(t.get("status") or {}).get("phase") for t in studies.trials("crash")]
        return phases.count("Running") >= 2, phases

    wait_for(running, 60, "trials running")
    lost = localcluster.crash_node(layout=cluster.layout)
    time.sleep(2)
    localcluster.start_component("localnode", layout=cluster.layout)
    status = studies.wait_phase("crash", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("crash")
    failed = [t["status"] for t in trials if t["status"]["phase"] == "Failed"]
    assert 1 <= len(failed) <= parallelism
    assert all(f["reason"] == "NodeRestarted" and f.get("message") for f in failed), failed
    assert [t["metadata"]["name"] for t in trials] == [f"crash-{i}" for i in range(n)]
    SUMMARY["node_crash"] = {
        "pod_processes_killed": lost,
        "trials_failed": len(failed),
        "reasons": sorted({f"{f['reason']}: {f['message']}" for f in failed}),
    }


def test_generated_specs_are_refused_or_reach_a_phase_and_never_crash_the_operator(
    operator: Operator, studies: Studies, cluster: Cluster
) -> None:
    base = script_study("fuzz", sleeping_trial(0.2), 2, 1)
    generated = list(mutations(base, SIZE["specs"], seed=2026))
    refused = accepted = invalid = settled = 0
    reasons: dict[str, int] = {}
    batch: list[str] = []

    def create(i: int, spec: Any) -> str | None:
        name = f"fuzz-{i}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Study",
            "metadata": {"name": name},
            "spec": spec,
        }
        try:
            cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, studies.namespace, "studies", body
            )
        except ApiException as e:
            if e.status not in (400, 422):
                raise
            return None
        return name

    def settle(names: list[str]) -> None:
        nonlocal invalid, settled

        def check() -> tuple[bool, Any]:
            waiting = []
            for name in names:
                status = studies.get(name).get("status") or {}
                if not status.get("phase"):
                    waiting.append(name)
            return not waiting, waiting

        wait_for(check, 60, "every accepted Study to reach a phase or Invalid", interval=0.5)
        for name in names:
            status = studies.get(name)["status"]
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            if conditions.get("Invalid", {}).get("status") == "True":
                invalid += 1
                reason = conditions["Invalid"]["message"].split(":")[0][:60]
                reasons[reason] = reasons.get(reason, 0) + 1
            settled += 1
            cluster.custom.delete_namespaced_custom_object(
                GROUP, VERSION, studies.namespace, "studies", name
            )

    started = time.monotonic()
    for i, (_kind, spec) in enumerate(generated):
        name = create(i, spec)
        if name is None:
            refused += 1
            continue
        accepted += 1
        batch.append(name)
        if len(batch) == 8:
            settle(batch)
            batch = []
    settle(batch)
    assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
    assert studies.apply(script_study("after", sleeping_trial(0.2), 3, 2)).returncode == 0
    assert studies.wait_phase("after", "Succeeded", "Failed")["phase"] == "Succeeded"
    SUMMARY["specs"] = {
        "tried": len(generated),
        "refused_by_the_api_server": refused,
        "accepted": accepted,
        "invalid_condition": invalid,
        "ran": accepted - invalid,
        "by_mutation": dict(Counter(kind for kind, _ in generated)),
        "invalid_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:15]),
        "duration_s": round(time.monotonic() - started, 1),
    }
    assert settled == accepted
