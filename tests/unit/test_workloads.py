"""JobSet trials: rendering, validation, the cache's view of their pods, their lifecycle."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune.cache import Cache, JobRecord, JobSetRecord, PodRecord
from kubetune.lifecycle import JobObservation, PodObservation, TrialStatus, observe
from kubetune.render import Owner, TrialIdentity
from kubetune.spec import SpecError, parse
from kubetune.workloads import JOB, JOBSET, dry_run_pods, kind_of
from tests.unit.test_observe import meta, study, trial

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDENT = TrialIdentity("ns", "s", 3, 42)
OWNER = Owner(kind="Study", name="s", uid="S")


def worker(name: str, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "trainer", "image": "img", "args": ["--lr=${params.lr}"]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {"metadata": {"labels": {"team": name}}, "spec": {"containers": [container]}}


def jobset_spec(**extra: Any) -> dict[str, Any]:
    return {
        "objective": {"metric": "acc"},
        "parameters": [{"name": "lr", "float": {"low": 0.001, "high": 0.1}}],
        "budget": {"maxTrials": 4, "parallelism": 2},
        "trialTemplate": {
            "kind": "JobSet",
            "spec": {
                "failurePolicy": {"maxRestarts": 1},
                "replicatedJobs": [
                    {
                        "name": "workers",
                        "replicas": 2,
                        "template": {
                            "spec": {"parallelism": 2, "completions": 2, "template": worker("a", 1)}
                        },
                    },
                    {"name": "eval", "template": {"spec": {"template": worker("b")}}},
                ],
            },
        },
        **extra,
    }


def test_a_jobset_trial_renders_every_replicated_job_as_a_trial_job() -> None:
    spec = parse(jobset_spec(queueName="tuning"))
    assert kind_of(spec.trial_template) is JOBSET
    js = JOBSET.render(spec, IDENT, {"lr": 0.01}, OWNER)
    assert (js["apiVersion"], js["kind"], js["metadata"]["name"]) == (
        "jobset.x-k8s.io/v1alpha2",
        "JobSet",
        "s-3",
    )
    # Kueue admits the JobSet as a whole: its label and suspend are on the JobSet.
    assert js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "tuning"
    assert js["spec"]["suspend"] is True
    assert js["spec"]["failurePolicy"] == {"maxRestarts": 1}, "the user's policy is kept"
    for rj in js["spec"]["replicatedJobs"]:
        job = rj["template"]["spec"]
        assert job["backoffLimit"] == 0
        pod = job["template"]
        assert pod["metadata"]["labels"]["kubetune.dev/trial"] == "s-3"
        assert pod["metadata"]["labels"]["team"] in ("a", "b"), "template labels kept"
        (container,) = pod["spec"]["containers"]
        assert container["args"] == ["--lr=0.01"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KUBETUNE_TRIAL_NAME"] == "s-3"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # 2 Jobs x 2 pods x 1 GPU, and the eval pod without one.
    assert JOBSET.gpus(spec.trial_template) == 4
    pods = dry_run_pods(js)
    assert [p["metadata"]["name"] for p in pods] == ["s-3-validate-0", "s-3-validate-1"]


def test_a_job_trial_template_may_say_kind_job() -> None:
    spec = parse(
        {
            **jobset_spec(),
            "trialTemplate": {"kind": "Job", "template": worker("a", 2)},
        }
    )
    job = JOB.render(spec, IDENT, {"lr": 0.01}, OWNER)
    assert "kind" not in job["spec"], "kind names the template's kind, not a JobSpec field"
    assert JOB.gpus(spec.trial_template) == 2


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"kind": "TFJob", "spec": {}}, "spec.trialTemplate.kind: 'TFJob' is not a kind"),
        ({"kind": "JobSet", "spec": {"replicatedJobs": []}}, "lists at least one replicated Job"),
        (
            {
                "kind": "JobSet",
                "spec": {"replicatedJobs": [{"name": "w", "template": {"spec": {"template": {}}}}]},
            },
            "replicatedJobs[0].template.spec.template.spec.containers: list at least one",
        ),
    ],
)
def test_bad_jobset_templates_are_refused_with_the_path_to_fix(
    template: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse({**jobset_spec(), "trialTemplate": template})


def jobset_record(uid: str = "JS3", failed: str | None = None) -> JobRecord:
    status = (
        {"conditions": [{"type": "Failed", "status": "True", "reason": failed, "message": "m"}]}
        if failed
        else {}
    )
    return JobRecord.parse(
        {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "metadata": meta("s-0", uid, "S"),
            "spec": {},
            "status": status,
        }
    )


def jobset_pod(name: str, global_index: str, completion: str, js: str = "JS3") -> PodRecord:
    labels = {
        "kubetune.dev/study": "s",
        "jobset.sigs.k8s.io/jobset-uid": js,
        "jobset.sigs.k8s.io/job-global-index": global_index,
        "batch.kubernetes.io/job-completion-index": completion,
    }
    return PodRecord.parse(
        {
            "metadata": {**meta(name, f"P-{name}", "child-job"), "labels": labels},
            "status": {"phase": "Running"},
        }
    )


def test_a_jobset_trial_sees_its_rank_0_pod_and_a_job_relist_keeps_it() -> None:
    cache = Cache()
    cache.put_study(study())
    cache.put(trial(0))
    record = jobset_record()
    assert isinstance(record, JobSetRecord) and record.kind == "JobSet"
    cache.put(record)
    for p in (
        jobset_pod("rank0", "0", "0"),
        jobset_pod("rank1", "0", "1"),
        jobset_pod("eval", "1", "0"),
        jobset_pod("other", "0", "0", js="JS9"),
    ):
        cache.put(p)
    snap = cache.snapshot(("ns", "s"))
    assert snap is not None
    assert [p.name for p in snap.pods["s-0"]] == ["rank0"], "only rank 0 reports"
    # The Job informer's relist knows nothing of JobSets: the JobSet stays.
    cache.replace(JobRecord, "ns", [])
    assert "s-0" in cache.studies[("ns", "s")].jobs
    cache.replace(JobSetRecord, "ns", [])
    assert "s-0" not in cache.studies[("ns", "s")].jobs


MULTI = JobObservation(exists=True, backoff_limit=1 << 30, multi_pod=True)


def leader(phase: str, *, deleting: bool = False, code: int | None = None) -> PodObservation:
    ended = phase in ("Succeeded", "Failed")
    return PodObservation(
        "rank0",
        phase,
        started=T0,
        finished=T0 + timedelta(seconds=20) if ended else None,
        exit_code=code,
        termination_messages=('{"metrics": {"acc": 0.5}, "step": 1}',) if ended else (),
        deleting=deleting,
    )


def step(st: TrialStatus, job: JobObservation, pods: list[PodObservation], s: float) -> TrialStatus:
    return observe(
        st,
        job_name="s-0",
        job=job,
        pods=pods,
        objectives=["acc"],
        gpus=4,
        scraped=[],
        now=T0 + timedelta(seconds=s),
    )


def test_a_jobset_restart_is_not_the_trials_end() -> None:
    st = step(TrialStatus(), MULTI, [leader("Running")], 10)
    assert st.phase == "Running"
    # Another rank failed; the JobSet restarts all pods: rank 0 stops (exit 0) while
    # being deleted. Not a result: the trial waits for its next run.
    st = step(st, MULTI, [leader("Succeeded", deleting=True, code=0)], 25)
    assert st.phase == "Pending" and st.preemptions == 1, st
    assert st.ran_seconds == 20.0
    # A failed rank 0 without the JobSet's verdict does not end it either.
    st = step(st, MULTI, [leader("Failed", code=1)], 26)
    assert st.phase == "Pending"
    st = step(st, MULTI, [replace(leader("Running"), started=T0 + timedelta(seconds=30))], 40)
    assert st.phase == "Running" and st.gpu_seconds == (20 + 10) * 4


def test_a_failed_jobset_fails_its_trial_with_the_jobsets_reason() -> None:
    failed = replace(MULTI, failed_reason="JobSetFailedJobs", failed_message="first failed: w-0")
    st = step(TrialStatus(phase="Running", start_time=T0), failed, [leader("Failed", code=1)], 30)
    assert (st.phase, st.reason) == ("Failed", "JobFailed")
    assert st.message is not None
    assert st.message.startswith("JobSetFailedJobs: first failed: w-0; rank 0 exit code 1")
    # Rank 0 already gone (deleted with the JobSet): the JobSet's word alone.
    st = step(TrialStatus(phase="Running", start_time=T0), failed, [], 30)
    assert (st.phase, st.reason, st.preemptions) == ("Failed", "JobFailed", 0)
