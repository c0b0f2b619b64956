"""The trial state machine, from pod and Job observations."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from kubetune.lifecycle import (
    KEEP_NEWEST,
    MAX_INTERMEDIATE,
    JobObservation,
    PodObservation,
    TrialStatus,
    merge_intermediate,
    observe,
    parse_report,
    stopped,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB = JobObservation(exists=True)


def report(**metrics: float) -> str:
    return json.dumps(
        {
            "step": 3,
            "metrics": metrics,
            "intermediate": {"acc": [[1, 0.5], [2, 0.7], [3, metrics.get("acc")]]},
        }
    )


def run(
    pods: list[PodObservation],
    current: TrialStatus | None = None,
    job: JobObservation = JOB,
    scraped: list[tuple[int, float]] | None = None,
    seconds: float = 60,
) -> TrialStatus:
    return observe(
        current or TrialStatus(),
        job_name="s-0",
        job=job,
        pods=pods,
        objectives=["acc"],
        gpus=2,
        scraped=scraped or [],
        now=T0 + timedelta(seconds=seconds),
    )


def pod(phase: str, *messages: str, code: int | None = None) -> PodObservation:
    finished = T0 + timedelta(seconds=30) if phase in ("Succeeded", "Failed") else None
    return PodObservation(
        "p",
        phase,
        started=T0,
        finished=finished,
        exit_code=code,
        termination_messages=tuple(messages),
    )


def test_pending_then_running_counts_gpu_seconds() -> None:
    assert run([]).phase == "Pending"
    st = run([pod("Running")])
    assert st.phase == "Running"
    assert st.start_time == T0
    assert st.gpu_seconds == 120.0  # 2 GPUs x 60 s so far


def test_completed_with_exact_final_value_and_intermediate() -> None:
    st = run([pod("Succeeded", report(acc=0.9, loss=0.3), code=0)], scraped=[(1, 0.5)])
    assert st.phase == "Completed"
    assert st.value == 0.9
    assert st.metrics == {"acc": 0.9, "loss": 0.3}
    assert st.intermediate == [(1, 0.5), (2, 0.7), (3, 0.9)]
    assert st.completion_time == T0 + timedelta(seconds=30)
    assert st.gpu_seconds == 60.0  # ends when the pod ended, not when we looked


def test_nonzero_exit_is_error_with_message() -> None:
    st = run([pod("Failed", "CUDA out of memory", code=1)])
    assert (st.phase, st.reason) == ("Failed", "Error")
    assert "exit code 1" in (st.message or "")
    assert "CUDA out of memory" in (st.message or "")


def test_a_pod_lost_with_its_node_fails_with_the_pods_own_reason() -> None:
    lost = PodObservation(
        "p", "Failed", started=T0, reason="NodeRestarted", message="the node agent restarted"
    )
    st = run([lost])
    assert (st.phase, st.reason, st.message) == ("Failed", "NodeRestarted", lost.message)


def test_nan_objective_is_diverged_and_not_stored() -> None:
    st = run([pod("Succeeded", report(acc=math.nan), code=0)])
    assert (st.phase, st.reason) == ("Failed", "Diverged")
    body = st.to_k8s()
    assert "value" not in body
    json.dumps(body, allow_nan=False)  # what the API server accepts


def test_missing_objective_is_metrics_missing() -> None:
    st = run([pod("Succeeded", json.dumps({"metrics": {"loss": 1.0}}), code=0)])
    assert (st.phase, st.reason) == ("Failed", "MetricsMissing")
    assert "loss" in (st.message or "")
    assert run([pod("Succeeded", "", code=0)]).reason == "MetricsMissing"


def test_scraped_value_is_the_fallback_for_images_without_termination_message() -> None:
    st = run([pod("Succeeded", "", code=0)], scraped=[(1, 0.4), (2, 0.8)])
    assert (st.phase, st.value) == ("Completed", 0.8)


def test_retries_allowed_by_backoff_limit_keep_the_trial_running() -> None:
    job = JobObservation(exists=True, backoff_limit=1)
    st = run([pod("Failed", code=1), pod("Running")], job=job)
    assert st.phase == "Running"


def test_job_failed_without_pods() -> None:
    job = JobObservation(exists=True, failed_reason="DeadlineExceeded", failed_message="too slow")
    st = run([], job=job)
    assert (st.phase, st.reason) == ("Failed", "JobFailed")


def test_terminal_is_sticky_and_stop_records_reason() -> None:
    done = run([pod("Succeeded", report(acc=0.9), code=0)])
    assert run([pod("Failed", code=1)], current=done).phase == "Completed"
    st = stopped(run([pod("Running")]), "Pruned", "Pruned", "pruned at step 2", T0)
    assert (st.phase, st.reason) == ("Pruned", "Pruned")


def test_status_round_trips_through_kubernetes_shape() -> None:
    st = run([pod("Succeeded", report(acc=0.9), code=0)])
    again = TrialStatus.from_k8s(st.to_k8s())
    assert again.to_k8s() == st.to_k8s()


def test_parse_report_ignores_foreign_messages() -> None:
    assert parse_report(("not json", '{"other": 1}')) is None
    got = parse_report(("garbage", '{"metrics": {"acc": "NaN", "n": 2}, "step": 4}'))
    assert got is not None and math.isnan(got.metrics["acc"]) and got.step == 4


def test_a_pod_that_cannot_start_fails_the_trial_after_a_minute() -> None:
    msg = "container has runAsNonRoot and image will run as root"
    stuck = PodObservation(
        "p", "Pending", created=T0, waiting_reason="CreateContainerConfigError", waiting_message=msg
    )
    assert run([stuck], seconds=30).phase == "Pending", "the kubelet retries: give it a minute"
    late = run([stuck], seconds=61)
    assert (late.phase, late.reason) == ("Failed", "CreateContainerConfigError")
    assert msg in (late.message or "")
    creating = PodObservation("p", "Pending", created=T0, waiting_reason="ContainerCreating")
    assert run([creating], seconds=3600).phase == "Pending"


def test_intermediate_values_stay_bounded_and_keep_the_newest() -> None:
    points: list[tuple[int, float]] = []
    for step in range(1, 20_001, 100):  # a long run, reported in chunks
        points = merge_intermediate(points, [(s, s / 10) for s in range(step, step + 100)])
    assert len(points) == MAX_INTERMEDIATE
    assert points[0] == (1, 0.1), "the curve still starts at the start"
    assert [s for s, _ in points[-KEEP_NEWEST:]] == list(range(20_001 - KEEP_NEWEST, 20_001))
    assert [s for s, _ in points] == sorted({s for s, _ in points})


def test_a_trial_waits_while_its_job_is_not_admitted_and_counts_no_gpu_time() -> None:
    suspended = JobObservation(exists=True, suspended=True)
    waiting = run([], job=suspended, seconds=600)
    assert waiting.phase == "Waiting"
    assert waiting.gpu_seconds == 0.0 and waiting.start_time is None
    admitted = run([], current=waiting, job=JOB)
    assert admitted.phase == "Pending", "admitted: its pod is on the way"
    st = run([pod("Running")], current=admitted)
    assert st.phase == "Running" and st.start_time == T0
    assert st.gpu_seconds == 120.0, "GPU time counts from the pod's start, not from waiting"
    assert run([pod("Succeeded", report(acc=0.9), code=0)], current=st).phase == "Completed"


def test_a_job_suspended_while_its_pod_still_runs_is_running_until_the_pod_goes() -> None:
    suspended = JobObservation(exists=True, suspended=True)
    assert run([pod("Running")], job=suspended).phase == "Running"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_preempted_trial_waits_runs_again_and_is_charged_only_while_it_ran() -> None:
    running = run([pod("Running")], seconds=30)
    assert running.phase == "Running" and running.gpu_seconds == 60.0
    # Kueue suspends the Job; the Job controller deletes the pod (SIGTERM: it fails).
    killed = PodObservation(
        "p", "Failed", started=T0, finished=at(30), exit_code=143, deleting=True
    )
    suspended = JobObservation(exists=True, suspended=True)
    waiting = run([killed], current=running, job=suspended, seconds=90)
    assert waiting.phase == "Waiting", "preempted is not failed"
    assert waiting.preemptions == 1 and waiting.ran_seconds == 30.0
    assert waiting.gpu_seconds == 60.0, "no GPU time while it waits"
    again = PodObservation("p2", "Running", started=at(100))
    resumed = run([again], current=waiting, seconds=160)
    assert resumed.phase == "Running" and resumed.run_start == at(100)
    assert resumed.gpu_seconds == (30 + 60) * 2
    done = PodObservation(
        "p2",
        "Succeeded",
        started=at(100),
        finished=at(170),
        exit_code=0,
        termination_messages=(report(acc=0.9),),
    )
    final = run([done], current=resumed, seconds=200)
    assert final.phase == "Completed" and final.value == 0.9
    assert final.gpu_seconds == (30 + 70) * 2 and final.preemptions == 1
    back = TrialStatus.from_k8s(final.to_k8s())
    assert (back.preemptions, back.ran_seconds, back.run_start) == (1, 30.0, at(100))


def test_an_evicted_pod_is_not_a_failure_the_job_starts_another() -> None:
    running = run([pod("Running")], seconds=30)
    evicted = PodObservation(
        "p",
        "Failed",
        started=T0,
        finished=at(40),
        exit_code=137,
        disrupted="EvictionByEvictionAPI",
    )
    st = run([evicted], current=running, seconds=45)
    assert st.phase == "Pending" and st.preemptions == 1
    assert st.message is not None and "EvictionByEvictionAPI" in st.message
    failed_job = JobObservation(exists=True, failed_reason="BackoffLimitExceeded")
    assert run([evicted], current=st, job=failed_job).phase == "Failed", "unless the Job gives up"


def test_a_resumed_run_seen_only_when_it_ended_is_still_charged() -> None:
    waiting = TrialStatus(phase="Waiting", start_time=T0, gpus=2, preemptions=1, ran_seconds=30)
    done = PodObservation(
        "p2",
        "Succeeded",
        started=at(100),
        finished=at(140),
        exit_code=0,
        termination_messages=(report(acc=0.5),),
    )
    final = run([done], current=waiting, seconds=150)
    assert final.phase == "Completed" and final.gpu_seconds == (30 + 40) * 2
