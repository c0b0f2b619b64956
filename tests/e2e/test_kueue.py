"""Studies behind Kueue: the real Kueue controller (built from its Go module) admits
trial Jobs against a ClusterQueue's GPU quota.

The module starts Kueue beside the session's cluster and, at the end, stops it and
unregisters its webhooks, so the other tests' Jobs never meet them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import watch

from kubetune.timestamps import parse_time
from tests.conftest import Cluster, running_addon, wait_for
from tests.e2e.conftest import Operator, Studies, example_study, script_study

KUEUE = ("kueue.x-k8s.io", "v1beta2")
TRIAL_SECONDS = 4.0


def trial_code(seconds: float) -> str:
    """Each trial holds one GPU for `seconds` and reports a score."""
    return f"""
import sys, time
from kubetune import trial
time.sleep({seconds})
trial.report(1, score=float(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[None]:
    with running_addon(cluster, "kueue"):
        yield


def queue_objects(name: str, gpus: int, namespaces: list[str], cohort: str | None = None) -> str:
    """A ResourceFlavor, a ClusterQueue of `gpus` GPUs and a LocalQueue per namespace."""
    cq: dict[str, Any] = {
        "apiVersion": "/".join(KUEUE),
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": ["nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": "default-flavor",
                            "resources": [{"name": "nvidia.com/gpu", "nominalQuota": str(gpus)}],
                        }
                    ],
                }
            ],
        },
    }
    if cohort:
        cq["spec"]["cohortName"] = cohort
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "/".join(KUEUE),
            "kind": "ResourceFlavor",
            "metadata": {"name": "default-flavor"},
        },
        cq,
    ]
    docs += [
        {
            "apiVersion": "/".join(KUEUE),
            "kind": "LocalQueue",
            "metadata": {"name": "tuning", "namespace": ns},
            "spec": {"clusterQueue": name},
        }
        for ns in namespaces
    ]
    return yaml.safe_dump_all(docs)


def queued_study(
    name: str, max_trials: int, parallelism: int, seconds: float = TRIAL_SECONDS
) -> dict[str, Any]:
    study = script_study(name, trial_code(seconds), max_trials, parallelism)
    study["spec"]["queueName"] = "tuning"
    container = study["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return study


class RunningPods:
    """Counts the namespace's trial pods running at once, from a watch."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.running: set[str] = set()
        self.spans: dict[str, list[float]] = {}  # pod -> [first seen Running, ended]
        self.most = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        w = watch.Watch()
        for event in w.stream(
            self.cluster.core.list_namespaced_pod, self.namespace, timeout_seconds=300
        ):
            pod = event["object"]
            name = pod.metadata.name
            now = time.monotonic()
            if pod.status.phase == "Running" and event["type"] != "DELETED":
                self.running.add(name)
                self.spans.setdefault(name, [now, 0.0])
            else:
                self.running.discard(name)
                if name in self.spans and not self.spans[name][1]:
                    self.spans[name][1] = now
            self.most = max(self.most, len(self.running))
            if self.stop.is_set():
                w.stop()


@pytest.mark.timeout(420)
def test_a_two_gpu_queue_runs_two_trials_at_a_time_and_the_rest_wait(
    cluster: Cluster, namespace: str, operator: Operator, studies: Studies, kueue: None
) -> None:
    cluster.kubectl("apply", "-f", "-", input=queue_objects("two-gpus", 2, [namespace]))
    pods = RunningPods(cluster, namespace)
    started = time.monotonic()
    assert studies.apply(queued_study("queued", 6, 4)).returncode == 0

    def some_wait() -> tuple[bool, Any]:
        st = studies.get("queued").get("status") or {}
        phases = [t.get("status", {}).get("phase") for t in studies.trials("queued")]
        return (st.get("trials") or {}).get("waiting", 0) >= 1 and "Waiting" in phases, phases

    wait_for(some_wait, 120, "a trial shown as Waiting while the quota is used")
    status = studies.wait_phase("queued", "Succeeded", "Failed", timeout=300)
    wall = time.monotonic() - started
    pods.stop.set()
    assert status["phase"] == "Succeeded", status
    assert pods.most <= 2, f"{pods.most} trial pods ran at once with 2 GPUs of quota"
    assert pods.most == 2, "both GPUs were used"
    trials = studies.trials("queued")
    assert [t["status"]["phase"] for t in trials] == ["Completed"] * 6
    # GPU time is the running time only: no trial is charged for its wait, although
    # 4 of the 6 waited at least one trial's duration.
    for t in trials:
        assert t["status"]["gpuSeconds"] < TRIAL_SECONDS + 3, t["status"]
    used = status["budget"]["gpuHoursUsed"] * 3600
    assert used == pytest.approx(sum(t["status"]["gpuSeconds"] for t in trials), abs=1.0)
    assert wall >= 3 * TRIAL_SECONDS, "six trials, two at a time"
    waited = [t for t in trials if _waited(t)]
    assert len(waited) >= 2, "of the first four submitted, two had to wait"
    print(
        f"at most {pods.most} running; wall {wall:.1f} s; gpuHoursUsed {used:.1f} GPU-s = "
        f"sum of trials' running time; {len(waited)} trials waited"
    )


class TwoNamespaceOperator(Operator):
    """One operator for two namespaces (as a cluster-wide install would serve them)."""

    def __init__(self, cluster: Cluster, namespaces: list[str]) -> None:
        super().__init__(cluster, namespaces[0])
        self.namespaces = namespaces

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "KUBETUNE_PROMETHEUS_URL": self.cluster.prometheus_url,
        }
        argv = [self.python, "-m", "kubetune"]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


COHORT_TRIAL_SECONDS = 8.0


class QuotaLog:
    """Kueue's quota decisions in the order the API server made them: one cluster-wide
    watch of Workloads, so events of both teams arrive in a single ordered stream."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.events: list[tuple[str, str, str]] = []  # (namespace, workload, what)
        self._state: dict[tuple[str, str], str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        w = watch.Watch()
        for event in w.stream(
            self.cluster.custom.list_cluster_custom_object,
            *KUEUE,
            "workloads",
            timeout_seconds=400,
        ):
            wl = event["object"]
            key = (wl["metadata"]["namespace"], wl["metadata"]["name"])
            conds = {c["type"]: c for c in (wl.get("status") or {}).get("conditions") or []}
            reserved = conds.get("QuotaReserved", {}).get("status")
            finished = conds.get("Finished", {}).get("status") == "True"
            if event["type"] == "DELETED" or finished:
                now = "released" if self._state.get(key) == "reserved" else "gone"
            elif reserved == "True":
                now = "reserved"
            elif reserved == "False":
                now = "released" if self._state.get(key) == "reserved" else "pending"
            else:
                now = "new"
            if self._state.get(key) != now:
                self._state[key] = now
                self.events.append((*key, now))
            if self.stop.is_set():
                w.stop()

    def ran_through_while_waiting(self, waiting_ns: str, holder_ns: str) -> list[str]:
        """The holder's workloads admitted after `waiting_ns` asked that also ended before
        `waiting_ns` got its first admission: each is a whole trial's run the waiting
        queue sat through (with equal trials: it waited more than one trial's duration)."""
        ev = self.events
        asked = next(i for i, (ns, _, _) in enumerate(ev) if ns == waiting_ns)
        first = next(
            i for i, (ns, _, what) in enumerate(ev) if ns == waiting_ns and what == "reserved"
        )
        admitted = {n for ns, n, what in ev[asked:first] if ns == holder_ns and what == "reserved"}
        return sorted(n for ns, n, what in ev[asked:first] if n in admitted and what == "released")


@pytest.mark.timeout(480)
def test_two_studies_in_a_cohort_share_its_gpus_fairly(
    cluster: Cluster, namespace: str, crds: None, kueue: None
) -> None:
    """Two teams' ClusterQueues of 2 GPUs each in one cohort: alone, a Study borrows the
    other's 2; once both have work each runs about 2, and the second Study's first trial
    is admitted before any trial of the first that started after it asked has ended (no
    preemption: a borrowed GPU comes back when its trial ends)."""
    other = f"{namespace[:50]}-b"
    cluster.core.create_namespace({"metadata": {"name": other}})
    wait_for(
        lambda: (
            any(
                sa.metadata.name == "default"
                for sa in cluster.core.list_namespaced_service_account(other).items
            ),
            "",
        ),
        30,
        "the second namespace's ServiceAccount",
    )
    op = TwoNamespaceOperator(cluster, [namespace, other])
    try:
        for ns, cq in ((namespace, "team-a"), (other, "team-b")):
            cluster.kubectl("apply", "-f", "-", input=queue_objects(cq, 2, [ns], cohort="gpus"))
        op.start()
        first, second = Studies(cluster, namespace), Studies(cluster, other)
        quota = QuotaLog(cluster)
        pods_a, pods_b = RunningPods(cluster, namespace), RunningPods(cluster, other)
        assert first.apply(queued_study("a", 8, 4, COHORT_TRIAL_SECONDS)).returncode == 0
        wait_for(
            lambda: (pods_a.most >= 4, pods_a.most), 120, "team a borrowing all of team b's GPUs"
        )
        submitted = time.monotonic()
        assert second.apply(queued_study("b", 4, 4, COHORT_TRIAL_SECONDS)).returncode == 0

        def admitted() -> tuple[bool, Any]:  # Kueue unsuspends the Job it admits
            jobs = cluster.batch.list_namespaced_job(other).items
            return any(j.spec.suspend is False for j in jobs), [j.spec.suspend for j in jobs]

        wait_for(admitted, 120, "team b's first trial to be admitted", interval=0.1)
        admitted_at = time.monotonic()
        first_admission = admitted_at - submitted
        # While both have work: sample who runs what, every 0.25 s.
        shares: list[tuple[int, int]] = []
        while (second.get("b").get("status") or {}).get("phase") != "Succeeded":
            if (first.get("a").get("status") or {}).get("phase") == "Succeeded":
                break
            shares.append((len(pods_a.running), len(pods_b.running)))
            time.sleep(0.25)
        first.wait_phase("a", "Succeeded", timeout=300)
        second.wait_phase("b", "Succeeded", timeout=300)
        pods_a.stop.set()
        pods_b.stop.set()
        quota.stop.set()
    finally:
        op.stop()
        cluster.core.delete_namespace(other)
    assert len(shares) >= 8, shares
    mean_a = sum(a for a, _ in shares) / len(shares)
    mean_b = sum(b for _, b in shares) / len(shares)
    ran = [end - start for start, end in pods_a.spans.values() if end and start <= submitted]
    print(
        f"team b admitted after {first_admission:.2f} s (team a's trials ran "
        f"{min(ran):.1f}-{max(ran):.1f} s); running while both had work: "
        f"a {mean_a:.2f}, b {mean_b:.2f} GPUs on average over {len(shares)} samples"
    )
    # "Within one trial's duration", as an order in Kueue's own stream of decisions rather
    # than a time (how long b waits is how long a's trials happen to have left, which
    # depends on the machine's load): no trial of a's that started after b asked ran to
    # its end before b's first admission. Kueue may hand a freed GPU back to a once (seen:
    # its next workload was queued before b's was requeued), but b never sits through a
    # whole trial of a's.
    assert ran, pods_a.spans
    assert not quota.ran_through_while_waiting(other, namespace), quota.events
    team = {namespace: "a", other: "b"}
    print("Kueue's order:", " ".join(f"{team.get(ns, ns)}:{what}" for ns, _, what in quota.events))
    assert 0.35 <= mean_b / (mean_a + mean_b) <= 0.65, (mean_a, mean_b, shares)
    assert mean_a + mean_b >= 2.5, "the cohort's 4 GPUs were kept busy"


def _waited(trial: dict[str, Any]) -> bool:
    """The trial's pod started well after the Trial was created (it waited in the queue)."""
    created = parse_time(trial["metadata"]["creationTimestamp"])
    started = parse_time(trial["status"].get("startTime"))
    return created is not None and started is not None and (started - created).total_seconds() > 2


def priority_classes() -> str:
    return yaml.safe_dump_all(
        [
            {
                "apiVersion": "/".join(KUEUE),
                "kind": "WorkloadPriorityClass",
                "metadata": {"name": name},
                "value": value,
            }
            for name, value in (("tuning-low", 10), ("production-high", 1000))
        ]
    )


def preemptible_queue(namespace: str) -> str:
    """One GPU; a higher-priority workload preempts a lower one in the same queue."""
    docs = list(yaml.safe_load_all(queue_objects("one-gpu", 1, [namespace])))
    docs[1]["spec"]["preemption"] = {"withinClusterQueue": "LowerPriority"}
    return yaml.safe_dump_all(docs)


@pytest.mark.keep_jobs
@pytest.mark.timeout(420)
def test_a_preempted_trial_waits_resumes_from_its_checkpoint_and_completes(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    studies: Studies,
    kueue: None,
    tmp_path: Path,
) -> None:
    cluster.kubectl("apply", "-f", "-", input=priority_classes())
    cluster.kubectl("apply", "-f", "-", input=preemptible_queue(namespace))
    study = example_study("knobs-study.yaml", "preempt", max_trials=1, parallelism=1, epochs=6)
    spec = study["spec"]
    spec["queueName"] = "tuning"
    spec["budget"]["maxFailedTrials"] = 0
    pod = spec["trialTemplate"]["template"]
    pod["metadata"] = {"labels": {"kueue.x-k8s.io/priority-class": "tuning-low"}}
    trainer = pod["spec"]["containers"][0]
    trainer["args"] = [a for a in trainer["args"] if not a.startswith("--dataset")] + [
        "--dataset=synthetic",
        "--samples=40000",
        "--checkpoint-dir=/checkpoints/${trial.name}",
    ]
    trainer["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    trainer["volumeMounts"] = [{"name": "checkpoints", "mountPath": "/checkpoints"}]
    pod["spec"]["volumes"] = [
        {"name": "checkpoints", "hostPath": {"path": str(tmp_path), "type": "DirectoryOrCreate"}}
    ]
    assert studies.apply(study).returncode == 0
    checkpoint = tmp_path / "preempt-0" / "checkpoint.pt"
    wait_for(lambda: (checkpoint.exists(), ""), 120, "the trial's first checkpoint")

    # A production Job of higher priority wants the only GPU: Kueue preempts the trial.
    urgent = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "urgent",
            "labels": {
                "kueue.x-k8s.io/queue-name": "tuning",
                "kueue.x-k8s.io/priority-class": "production-high",
            },
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "work",
                            "image": "python:3.11",
                            "command": ["python3", "-c", "import time; time.sleep(4)"],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                }
            },
        },
    }
    cluster.batch.create_namespaced_job(namespace, urgent)

    def preempted() -> tuple[bool, Any]:
        (trial,) = studies.trials("preempt")
        st = trial.get("status") or {}
        return st.get("phase") == "Waiting" and st.get("preemptions", 0) >= 1, st

    wait_for(preempted, 60, "the trial preempted and waiting")
    status = studies.wait_phase("preempt", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", operator.log_tail()
    assert status["trials"]["failed"] == 0
    (trial,) = studies.trials("preempt")
    st = trial["status"]
    assert st["phase"] == "Completed" and st["preemptions"] >= 1, st
    steps = [p["step"] for p in st["intermediate"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6, "steps stay monotonic to the end"
    ran = (parse_time(st["completionTime"]) - parse_time(st["startTime"])).total_seconds()  # type: ignore[operator]
    assert st["gpuSeconds"] <= ran - 3, "the time it waited for the urgent Job is not charged"
    job = cluster.batch.read_namespaced_job("urgent", namespace)
    assert job.status.succeeded == 1
    # The resumed run continued from the checkpoint...
    logs = sorted(cluster.layout.pods.glob(f"{namespace}_preempt-0-*/trainer.log"))
    text = "\n".join(p.read_text() for p in logs)
    assert "resuming from the checkpoint of epoch" in text, text[-2000:]
    # ...and ends exactly where an uninterrupted run ends.
    alone = uninterrupted(cluster, namespace, "preempt-0", tmp_path)
    assert "val_loss" in alone, alone
    alone.pop("samples_per_second")  # throughput, not a result
    for name, value in alone.items():
        assert st["metrics"][name] == pytest.approx(value, rel=1e-9), name
    print(
        f"preempted {st['preemptions']}x, gpuSeconds {st['gpuSeconds']:.1f} of {ran:.1f} s; "
        f"final metrics {st['metrics']} = uninterrupted {alone}"
    )


def uninterrupted(cluster: Cluster, namespace: str, job_name: str, tmp: Path) -> dict[str, float]:
    """Run the trial's exact container (its args and trial environment) as one process
    without a checkpoint directory, and return its final metrics."""
    container = cluster.batch.read_namespaced_job(
        job_name, namespace
    ).spec.template.spec.containers[0]
    args = [a for a in container.args if not a.startswith("--checkpoint-dir")]
    env = {e.name: e.value for e in container.env or [] if e.value is not None}
    out = tmp / "alone-termination-log"
    env.update(
        PATH=os.environ["PATH"],
        KUBETUNE_TERMINATION_LOG=str(out),
        KUBETUNE_METRICS_PORT="0",
    )
    subprocess.run(
        [sys.executable, "-m", "kubetune_trainer", *args],
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    metrics: dict[str, float] = json.loads(out.read_text())["metrics"]
    return metrics
