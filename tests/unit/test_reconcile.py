"""The reconciler against a fake API server: what a pass writes, and nothing more.

The fake stores what is created and patched (giving each object a uid and an
increasing resourceVersion, as the API server does) and counts requests; the
cache is fed the way the watches feed it. No cluster needed.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import time
from collections import Counter
from typing import Any

import pytest

from kubetune import labels, metrics, reconcile, render
from kubetune.cache import Cache, JobRecord, PodRecord, TrialRecord
from kubetune.lanes import CreatesFirst
from kubetune.reconcile import IMPORTANCE_CPU_SHARE, Reconciler, Settings, _with_removals

NS, NAME = "team-a", "s"
KEY = (NS, NAME)


class FakeKube:
    """The write side of the Kubernetes API, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.rv = itertools.count(100)
        self.fail_next: Exception | None = None
        self.failures = 0  # the next this many creates fail
        self.order: list[str] = []  # requests as the server received them
        self.create_seconds = 0.0  # how long a create takes (a busy API server)

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self.rv))
        return copy.deepcopy(obj)

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        self.requests[f"create {body['kind']}"] += 1
        self.order.append(f"create {body['kind']}")
        time.sleep(self.create_seconds)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.failures:
            self.failures -= 1
            raise RuntimeError("etcd is on fire")
        key = (body["kind"], body["metadata"]["name"])
        if key in self.objects:
            return None
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = f"uid-{body['kind']}-{body['metadata']['name']}"
        self.objects[key] = obj
        return self._stamp(obj)

    def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.requests[f"patch {kind}"] += 1
        self.order.append(f"patch {kind}")
        obj = self.objects.get((kind, name))
        if obj is None:
            return None
        obj["status"] = {**(obj.get("status") or {}), **status}
        return self._stamp(obj)

    def delete(self, kind: str, namespace: str, name: str, grace: int | None = None) -> None:
        self.requests[f"delete {kind}"] += 1
        self.order.append(f"delete {kind}")
        self.objects.pop((kind, name), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests[f"get {kind}"] += 1
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj is not None else None

    def validate(self, job: dict[str, Any], pod: dict[str, Any]) -> str | None:
        self.requests["validate"] += 1
        return None

    def event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.requests[f"event {reason}"] += 1


def study(max_trials: int = 4, parallelism: int = 2, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": render.API_VERSION,
        "kind": "Study",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": "study-uid",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "objective": {"metric": "acc"},
            "parameters": [{"name": "x", "float": {"low": 0, "high": 1}}],
            "sampler": {"name": "random", "seed": 3},
            "budget": {"maxTrials": max_trials, "parallelism": parallelism},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            **spec,
        },
    }
    return body


def pod(job: dict[str, Any], phase: str, message: str = "", rv: int = 1) -> PodRecord:
    terminated = {"exitCode": 0 if phase == "Succeeded" else 1, "message": message}
    obj = {
        "metadata": {
            "name": f"{job['metadata']['name']}-abcde",
            "namespace": NS,
            "uid": f"pod-{job['metadata']['name']}",
            "resourceVersion": str(rv),
            "labels": {labels.LABEL_STUDY: NAME},
            "creationTimestamp": "2026-01-01T00:00:01Z",
            "ownerReferences": [{"uid": job["metadata"]["uid"], "controller": True}],
        },
        "status": {
            "phase": phase,
            "startTime": "2026-01-01T00:00:02Z",
            "containerStatuses": [
                {"state": {"terminated": terminated} if phase != "Running" else {"running": {}}}
            ],
        },
    }
    return PodRecord.parse(obj)


class Harness:
    def __init__(self, body: dict[str, Any], **settings: Any) -> None:
        self.kube = FakeKube()
        self.cache = Cache()
        self.cache.put_study(body)
        self.kube.objects[("Study", NAME)] = copy.deepcopy(body)
        self.rec = Reconciler(self.kube, Settings(**settings), self.cache)  # type: ignore[arg-type]

    def run(self) -> None:
        async def passes() -> None:
            # Through the work queue, until the reconciler and its background work are idle.
            self.rec.trigger(*KEY)
            while self.rec.tasks:
                await asyncio.gather(*list(self.rec.tasks))
            for timer in self.rec.timers.values():
                timer.cancel()

        asyncio.run(passes())

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {n: o for (k, n), o in self.kube.objects.items() if k == "Job"}

    def trials(self) -> dict[str, dict[str, Any]]:
        return {n: o for (k, n), o in self.kube.objects.items() if k == "Trial"}

    def finish(self, name: str, value: float) -> None:
        job = self.jobs()[name]
        self.cache.put(pod(job, "Succeeded", json.dumps({"metrics": {"acc": value}})))


def test_a_pass_creates_numbered_trials_and_jobs_and_reads_no_api() -> None:
    h = Harness(study())
    h.run()
    assert sorted(h.trials()) == ["s-0", "s-1"]
    assert sorted(h.jobs()) == ["s-0", "s-1"]
    # The created objects went into the cache at once: the next pass sees them.
    assert sorted(h.cache.studies[KEY].trials) == ["s-0", "s-1"]
    assert set(h.kube.requests) == {"create Trial", "create Job", "validate", "patch Study"}


def test_a_finished_pod_frees_its_slot_records_the_result_and_removes_its_job() -> None:
    h = Harness(study())
    h.run()
    h.finish("s-0", 0.7)
    h.run()
    trials = h.trials()
    assert trials["s-0"]["status"]["phase"] == "Completed"
    assert trials["s-0"]["status"]["value"] == 0.7
    assert "s-2" in trials, "the next trial starts as soon as the pod ends"
    assert "s-0" not in h.jobs(), "a recorded trial's Job is removed (retention 0)"
    assert "s-0" in h.trials(), "the Trial stays"
    assert h.kube.requests["event TrialCompleted"] == 0, "routine: no Event"


def test_the_next_trials_creates_go_out_before_the_finished_ones_writes() -> None:
    """On a busy API server the result write and the Job removal (and the Study status)
    compete with the next trial's creates; the creates decide how long a GPU sits idle."""
    h = Harness(study())
    h.run()
    h.kube.create_seconds = 0.05
    h.kube.order.clear()
    h.finish("s-0", 0.7)
    h.run()
    order = h.kube.order
    creates = [i for i, r in enumerate(order) if r.startswith("create")]
    others = [i for i, r in enumerate(order) if not r.startswith("create")]
    assert sorted(order[i] for i in creates) == ["create Job", "create Trial"]
    assert {order[i] for i in others} >= {"patch Trial", "delete Job"}
    assert max(creates) < min(others), order
    assert h.trials()["s-0"]["status"]["phase"] == "Completed", "the result still lands"


def test_background_writes_wait_for_creates_only_so_long() -> None:
    async def scenario() -> float:
        gate = CreatesFirst(limit=0.05)
        gate.hold()  # a create that never returns
        t = time.monotonic()
        await gate.wait()
        return time.monotonic() - t

    assert 0.04 <= asyncio.run(scenario()) < 1.0, "a stuck create delays writes, boundedly"


def test_failed_trials_keep_their_job_for_the_retention_time() -> None:
    h = Harness(study())
    h.run()
    job = h.jobs()["s-1"]
    h.cache.put(pod(job, "Failed", "boom"))
    h.run()
    assert h.trials()["s-1"]["status"]["phase"] == "Failed"
    assert "s-1" in h.jobs(), "kept for its logs"
    assert h.rec.timers, "and looked at again when the retention ends"


def test_whole_study_runs_to_success_with_few_requests_per_trial() -> None:
    h = Harness(study(max_trials=6, parallelism=2))
    h.run()
    for n in range(6):
        h.finish(f"s-{n}", n / 10)
        h.run()
    status = h.cache.study(KEY)["status"]  # type: ignore[index]
    assert status["phase"] == "Succeeded"
    assert status["bestTrial"]["name"] == "s-5"
    assert h.jobs() == {}
    per_trial = {k: v / 6 for k, v in h.kube.requests.items()}
    assert per_trial["create Trial"] == 1 and per_trial["create Job"] == 1
    assert per_trial["delete Job"] == 1
    assert per_trial["patch Trial"] == 1, "the result is one write (the pod went straight to done)"


def test_running_trials_cost_no_writes_as_their_gpu_time_grows() -> None:
    """At 2,000 running trials a write per trial per minute of GPU time was most of the
    operator's API traffic: a running trial is written when it starts and when it ends."""
    gpu = {"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}
    h = Harness(study(trialTemplate={"template": {"spec": {"containers": [gpu]}}}))
    h.run()
    for job in h.jobs().values():
        h.cache.put(pod(job, "Running", rv=5))
    h.run()
    assert {t["status"]["phase"] for t in h.trials().values()} == {"Running"}
    writes = Counter(h.kube.requests)
    for _ in range(3):  # every pass sees more GPU-seconds (the pods started long ago)
        h.run()
    assert h.kube.requests["patch Trial"] == writes["patch Trial"], "no Trial rewritten"
    assert h.kube.requests["patch Study"] == writes["patch Study"], (
        "the Study's GPU-hours wait for the minute"
    )
    h.cache.put(pod(h.jobs()["s-0"], "Succeeded", json.dumps({"metrics": {"acc": 0.5}}), rv=9))
    h.run()
    done = h.trials()["s-0"]["status"]
    assert done["phase"] == "Completed" and done["gpuSeconds"] > 0, "final GPU-seconds written"


def test_a_recorded_stop_whose_job_survived_is_cleaned_up_on_the_next_pass() -> None:
    """The operator died between writing a stop and deleting the Job: level-triggered."""
    h = Harness(study())
    h.run()
    job = h.jobs()["s-0"]
    h.cache.put(pod(job, "Running", rv=5))
    trial = h.trials()["s-0"]
    trial["status"] = {
        "phase": "Pruned",
        "reason": "Pruned",
        "completionTime": "2026-01-01T00:00:09Z",
    }
    trial["metadata"]["resourceVersion"] = "999"
    h.cache.put(TrialRecord.parse(trial))
    h.run()
    assert "s-0" not in h.jobs()
    assert h.kube.requests["delete Pod"] == 1, "its running pod is deleted at once"


def test_a_job_of_a_recreated_study_is_not_adopted() -> None:
    """Children are matched by owner uid, not by name."""
    h = Harness(study())
    h.run()
    # The Study is deleted and re-created under the same name: a new uid.
    fresh = study()
    fresh["metadata"]["uid"] = "new-uid"
    fresh["metadata"]["resourceVersion"] = "2000"
    h.cache.put_study(fresh)
    snap = h.cache.snapshot(KEY)
    assert snap is not None and snap.trials == [] and snap.jobs == {}


def test_a_failed_create_is_retried_with_a_rebuilt_model() -> None:
    h = Harness(study())
    before = metrics.RECONCILE_ERRORS._value.get()
    h.kube.fail_next = RuntimeError("apiserver hiccup")
    h.run()
    assert metrics.RECONCILE_ERRORS._value.get() == before + 1
    h.run()
    assert sorted(h.trials()) == ["s-0", "s-1"] and sorted(h.jobs()) == ["s-0", "s-1"]
    numbers = sorted(t["spec"]["number"] for t in h.trials().values())
    assert numbers == [0, 1], "no number skipped by the failed create"


def test_old_watch_events_do_not_overwrite_newer_writes() -> None:
    h = Harness(study())
    h.run()
    job = h.jobs()["s-0"]
    stale = copy.deepcopy(job)
    stale["metadata"]["resourceVersion"] = "1"
    assert not h.cache.put(JobRecord.parse(stale))
    assert h.cache.studies[KEY].jobs["s-0"].rv == int(job["metadata"]["resourceVersion"])


def test_a_changed_sampler_applies_at_once() -> None:
    h = Harness(study())
    h.run()
    assert h.rec.models["study-uid"].spec.sampler.name == "random"
    changed = study(sampler={"name": "tpe", "seed": 3})
    changed["metadata"].update(generation=2, resourceVersion="5000")
    h.cache.put_study(changed)
    h.finish("s-0", 0.5)
    h.run()
    assert h.rec.models["study-uid"].spec.sampler.name == "tpe"
    assert "s-2" in h.trials(), "the next trial comes from the new sampler"


def test_failing_creates_are_counted_and_told_once_per_distinct_error() -> None:
    h = Harness(study())
    before = metrics.RECONCILE_ERRORS._value.get()
    h.kube.failures = 3
    for _ in range(6):  # each run retries what failed (the retry timer is not waited for)
        h.run()
    assert metrics.RECONCILE_ERRORS._value.get() - before == 3
    assert h.kube.requests["event ReconcileError"] == 1, "one Event per distinct error"
    assert sorted(h.trials()) == ["s-0", "s-1"] and sorted(h.jobs()) == ["s-0", "s-1"]


def test_a_new_best_trial_without_a_conditional_parameter_loses_the_old_ones() -> None:
    old = {"bestTrial": {"params": {"opt": "sgd", "momentum": 0.9}}, "budget": {"exhaustedBy": "x"}}
    new = {"bestTrial": {"params": {"opt": "adam"}}, "budget": {}}
    assert _with_removals(old, new) == {
        "bestTrial": {"params": {"opt": "adam", "momentum": None}},
        "budget": {"exhaustedBy": None},
    }


def test_warm_start_learns_from_a_snapshot_that_outlives_its_source() -> None:
    source = study()
    source["metadata"].update(name="src", uid="src-uid")
    h = Harness(study(warmStart={"fromStudy": "src"}))
    h.cache.put_study(source)
    for n, x in enumerate([0.2, 0.4, 0.6]):
        done = render.render_trial(
            render.TrialIdentity(NS, "src", n, 0), {"x": x}, render.Owner("Study", "src", "src-uid")
        )
        done["metadata"].update(uid=f"src-{n}", resourceVersion=str(10 + n))
        done["status"] = {"phase": "Completed", "value": x, "values": [x]}
        h.cache.put(TrialRecord.parse(done))
    h.run()
    assert h.rec.models["study-uid"].warm == 3
    (snapshot,) = (o for (k, _), o in h.kube.objects.items() if k == "ConfigMap")
    assert snapshot["metadata"]["ownerReferences"][0]["uid"] == "study-uid"
    # The source is deleted and the operator restarts: the rebuild reads the snapshot.
    h.cache.drop_study(NS, "src")
    h.rec.models.clear()
    h.finish("s-0", 0.5)
    h.run()
    model = h.rec.models["study-uid"]
    assert model.warm == 3 and model.learned() == 1
    assert [t.params["x"] for t in model.study.trials[:3]] == [0.2, 0.4, 0.6]
    assert h.kube.requests["create ConfigMap"] == 1, "the snapshot is taken once"


def test_importance_refits_of_all_studies_keep_to_their_share_of_a_core() -> None:
    """Refits during Studies take turns, each waiting long enough after the last that
    refits use at most IMPORTANCE_CPU_SHARE of a core however many Studies run."""
    h = Harness(study())
    starts: list[float] = []

    async def fake_run(pool: Any, fn: Any, *args: Any) -> dict[str, float]:
        starts.append(time.monotonic())
        await asyncio.sleep(0.05)  # a refit's CPU time
        return {"x": 1.0}

    h.rec.lanes.run = fake_run  # type: ignore[method-assign]

    class Model:
        def completed(self) -> list[Any]:
            return []

    async def three_studies() -> None:
        refit = h.rec._throttled_refit
        await asyncio.gather(*(refit(["minimize"], Model()) for _ in range(3)))  # type: ignore[arg-type]

    asyncio.run(three_studies())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2
    assert all(g >= 0.05 / IMPORTANCE_CPU_SHARE for g in gaps), gaps


def test_a_finished_study_counts_what_its_sampler_learned_from_its_trials_not_a_stale_status() -> (
    None
):
    """An operator killed after writing Succeeded with a count from before its last
    trials were told: its successor, with no sampler to build, still reports them all."""
    h = Harness(study(max_trials=2, parallelism=2))
    h.run()
    h.finish("s-0", 0.1)
    h.finish("s-1", 0.2)
    h.run()
    stored = h.cache.study(KEY)
    assert stored is not None and stored["status"]["phase"] == "Succeeded"
    assert stored["status"]["sampler"]["learnedTrials"] == 2
    stale = copy.deepcopy(stored)
    stale["status"]["sampler"]["learnedTrials"] = 1
    restarted = Harness(stale)
    for record in h.cache.studies[KEY].trials.values():
        restarted.cache.put(record)
    restarted.kube.objects[("Study", NAME)] = copy.deepcopy(stale)
    restarted.run()
    assert restarted.rec.models == {}, "a finished Study needs no sampler"
    status = restarted.kube.objects[("Study", NAME)]["status"]
    assert status["sampler"]["learnedTrials"] == 2, status


def test_a_jobset_study_without_jobsets_watched_is_invalid_and_creates_nothing() -> None:
    """JobSet installed after kubetune started: its trials would never be seen to run."""
    pod_template = {"spec": {"containers": [{"name": "c", "image": "i"}]}}
    template = {
        "kind": "JobSet",
        "spec": {
            "replicatedJobs": [{"name": "w", "template": {"spec": {"template": pod_template}}}]
        },
    }
    h = Harness(study(trialTemplate=template))
    h.run()
    assert h.trials() == {} and not any(k == "JobSet" for k, _ in h.kube.objects)
    status = h.kube.objects[("Study", NAME)]["status"]
    (invalid,) = [c for c in status["conditions"] if c["type"] == "Invalid"]
    assert invalid["status"] == "True"
    assert "restart kubetune" in invalid["message"], invalid
    h.rec.watched_kinds.add("JobSet")  # what the watches do when the API is served
    h.rec.validated.clear()
    h.kube.objects[("Study", NAME)]["metadata"]["generation"] = 2
    body = copy.deepcopy(h.kube.objects[("Study", NAME)])
    body["metadata"]["resourceVersion"] = "99999"
    h.cache.put_study(body)
    h.run()
    assert sorted(h.trials()) == ["s-0", "s-1"]
    assert sorted(n for k, n in h.kube.objects if k == "JobSet") == ["s-0", "s-1"]


def test_a_pass_that_does_not_end_logs_where_it_waits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stuck pass would stop its Study without a word: after a while the log shows
    every coroutine's and thread's stack."""
    monkeypatch.setattr(reconcile, "STUCK_PASS_SECONDS", 0.1)
    h = Harness(study())
    slow = h.kube.validate

    def validate(*args: Any) -> str | None:
        time.sleep(0.5)
        return slow(*args)

    h.kube.validate = validate  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="kubetune.reconcile"):
        h.run()
    (record,) = [r for r in caplog.records if "has run" in r.getMessage()]
    text = record.getMessage()
    assert f"reconcile of study {NS}/{NAME} has run" in text
    assert "in validate" in text and "time.sleep(0.5)" in text, text
    assert sorted(h.trials()) == ["s-0", "s-1"], "and the pass still ends"


def test_a_pod_whose_job_is_gone_is_never_taken_for_a_trial_being_created() -> None:
    """A recorded trial's Job is removed while its pod lingers; the next trial's Job is
    in the cache as an assumed object without a uid until its create returns. The pod
    must not be read as the new trial's (it once completed it with the old result)."""
    h = Harness(study(max_trials=3, parallelism=1))
    h.run()
    old_job = h.jobs()["s-0"]
    h.finish("s-0", 0.7)
    h.run()  # s-0 recorded, its Job removed; s-1 created
    assert "s-0" not in h.jobs() and "s-1" in h.jobs()
    state = h.cache.studies[KEY]
    assert any(p.owner_uid == old_job["metadata"]["uid"] for p in state.pods.values())
    # s-1's create is in flight: the cache holds its assumed Job (no uid).
    state.jobs["s-1"] = JobRecord.parse(reconcile._assumed(h.jobs()["s-1"]))
    snap = h.cache.snapshot(KEY)
    assert snap is not None
    assert "s-1" not in snap.pods, snap.pods
