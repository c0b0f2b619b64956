"""A trial's life as a pure function: observations in, the Trial's status out.

Pending -> Running -> Completed | Pruned | Failed. Terminal phases are sticky. With a
Kueue queue a trial is Waiting while its Job is suspended (not admitted yet).
Every non-success has a reason: Error (non-zero exit), Diverged (NaN or infinite
objective), MetricsMissing (succeeded without reporting the objective),
JobFailed (the Job failed without a pod result, e.g. a deadline), Pruned, Stopped.

The trial ends when its pod terminates, not when the Job controller marks the
Job Complete about a second later: that is when its GPU is free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.timestamps import format_time, parse_time

TERMINAL = ("Completed", "Pruned", "Failed")
# Container states the kubelet keeps retrying but that rarely heal by themselves (a root
# image under runAsNonRoot, a missing ConfigMap, a bad image name, an unpullable image).
STUCK = (
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
)
STUCK_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class PodObservation:
    name: str
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    termination_messages: tuple[str, ...] = ()
    deleting: bool = False
    created: datetime | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    reason: str | None = None  # the pod's own (Evicted, NodeRestarted...): no container ended
    message: str | None = None
    disrupted: str | None = None  # the reason of its DisruptionTarget condition, if any


@dataclass(frozen=True)
class JobObservation:
    exists: bool
    backoff_limit: int = 0
    failed_reason: str | None = None  # the Job's Failed condition, if any
    failed_message: str | None = None
    suspended: bool = False  # spec.suspend: waiting for a queue (Kueue) to admit it
    # Several pods (a JobSet): the pods given are its leader's (rank 0, which reports),
    # and only the workload's Failed condition ends the trial as failed.
    multi_pod: bool = False


@dataclass(frozen=True)
class Report:
    """What a trial reported through its termination message (the exact final values)."""

    metrics: dict[str, float]
    step: int | None
    intermediate: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def parse_report(messages: tuple[str, ...]) -> Report | None:
    """The first termination message that is a kubetune report; None if there is none.

    Tolerant by design: NaN/Infinity (Python's json writes them) and "nan" strings.
    """
    for text in messages:
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
            continue
        metrics = {
            str(k): v
            for k, v in ((k, _number(v)) for k, v in doc["metrics"].items())
            if v is not None
        }
        inter: dict[str, list[tuple[int, float]]] = {}
        for name, pairs in (doc.get("intermediate") or {}).items():
            parsed = []
            for pair in pairs if isinstance(pairs, list) else []:
                if isinstance(pair, list) and len(pair) == 2:
                    v = _number(pair[1])
                    if v is not None:
                        parsed.append((int(pair[0]), v))
            inter[str(name)] = parsed
        step = doc.get("step")
        return Report(metrics, int(step) if isinstance(step, int | float) else None, inter)
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def finite(v: float) -> bool:
    return not (math.isnan(v) or math.isinf(v))


@dataclass
class TrialStatus:
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    value: float | None = None
    values: list[float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    intermediate: list[tuple[int, float]] = field(default_factory=list)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    gpus: int = 0
    gpu_seconds: float = 0.0
    job_name: str | None = None
    preemptions: int = 0
    run_start: datetime | None = None  # the current run's pod start
    ran_seconds: float = 0.0  # in earlier runs, which preemptions ended

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def last_step(self) -> int | None:
        return self.intermediate[-1][0] if self.intermediate else None

    def to_k8s(self) -> dict[str, Any]:
        """The status subresource body. NaN cannot be stored: it is left out (reason says why)."""
        out: dict[str, Any] = {
            "phase": self.phase,
            "gpus": self.gpus,
            "gpuSeconds": round(self.gpu_seconds, 3),
        }
        for key, val in (
            ("reason", self.reason),
            ("message", self.message),
            ("jobName", self.job_name),
        ):
            if val:
                out[key] = val
        if self.value is not None and finite(self.value):
            out["value"] = self.value
        if self.values and all(finite(v) for v in self.values):
            out["values"] = self.values
        finite_metrics = {k: v for k, v in self.metrics.items() if finite(v)}
        if finite_metrics:
            out["metrics"] = finite_metrics
        if self.intermediate:
            out["intermediate"] = [
                {"step": s, "value": v} for s, v in self.intermediate if finite(v)
            ]
            out["lastStep"] = self.intermediate[-1][0]
        if self.start_time:
            out["startTime"] = format_time(self.start_time)
        if self.completion_time:
            out["completionTime"] = format_time(self.completion_time)
        if self.preemptions:
            out["preemptions"] = self.preemptions
            out["ranSeconds"] = round(self.ran_seconds, 3)
        if self.run_start and self.run_start != self.start_time:
            out["lastStartTime"] = format_time(self.run_start)
        return out

    @classmethod
    def from_k8s(cls, status: dict[str, Any] | None) -> TrialStatus:
        s = status or {}
        return cls(
            phase=s.get("phase") or "Pending",
            reason=s.get("reason"),
            message=s.get("message"),
            value=s.get("value"),
            values=s.get("values"),
            metrics=dict(s.get("metrics") or {}),
            intermediate=[(int(p["step"]), float(p["value"])) for p in s.get("intermediate") or []],
            start_time=parse_time(s.get("startTime")),
            completion_time=parse_time(s.get("completionTime")),
            gpus=int(s.get("gpus") or 0),
            gpu_seconds=float(s.get("gpuSeconds") or 0.0),
            job_name=s.get("jobName"),
            preemptions=int(s.get("preemptions") or 0),
            # Written only when it differs from startTime (after a preemption).
            run_start=parse_time(s.get("lastStartTime"))
            or (parse_time(s.get("startTime")) if s.get("phase") == "Running" else None),
            ran_seconds=float(s.get("ranSeconds") or 0.0),
        )


# A Trial's status keeps at most this many intermediate values (an object in etcd is
# limited to ~1.5 MB): the newest KEEP_NEWEST exactly, older ones thinned evenly.
MAX_INTERMEDIATE = 1000
KEEP_NEWEST = 200


def merge_intermediate(*series: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Union by step, later sources winning; sorted by step; bounded (see MAX_INTERMEDIATE)."""
    by_step: dict[int, float] = {}
    for s in series:
        for step, value in s:
            by_step[step] = value
    return bounded(sorted(by_step.items()))


def bounded(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """At most MAX_INTERMEDIATE points: the first, the newest KEEP_NEWEST, and evenly
    spaced ones between, so a curve keeps its shape however long the trial runs."""
    if len(points) <= MAX_INTERMEDIATE:
        return points
    old, new = points[:-KEEP_NEWEST], points[-KEEP_NEWEST:]
    room = MAX_INTERMEDIATE - KEEP_NEWEST
    stride = len(old) / room
    return [old[int(i * stride)] for i in range(room)] + new


def observe(
    current: TrialStatus,
    *,
    job_name: str,
    job: JobObservation,
    pods: list[PodObservation],
    objectives: list[str],
    gpus: int,
    scraped: list[tuple[int, float]],
    now: datetime,
) -> TrialStatus:
    """The Trial's next status from what the cluster shows now."""
    st = TrialStatus(**{**current.__dict__})
    st.gpus = gpus
    st.job_name = job_name if job.exists else st.job_name
    st.intermediate = merge_intermediate(st.intermediate, scraped)
    if st.terminal:
        return st
    # A pod ended by someone else (a preemption, an eviction, a node drain: its
    # DisruptionTarget condition; or deleted, as the Job controller deletes the pods of
    # a Job that Kueue suspends) is not the trial failing: the trial runs again, from
    # its checkpoint if it keeps one. Should the Job give up, its Failed condition says so.
    gone = [p for p in pods if p.phase != "Succeeded" and (p.disrupted or p.deleting)]
    if job.multi_pod:
        # A leader that ends while being deleted was stopped with the others (the JobSet
        # restarts, or is suspended): its exit code says nothing about the trial.
        gone += [p for p in pods if p.phase == "Succeeded" and p.deleting]
    pods = [p for p in pods if p not in gone]
    live = [p for p in pods if p.phase == "Running"]
    if (
        gone
        and st.phase == "Running"
        and not live
        and not job.failed_reason
        and not any(p.phase in ("Succeeded", "Failed") for p in pods)
    ):
        _preempted(st, gone, now)
    if job.exists and not job.failed_reason:
        if job.suspended and not live:
            st.phase = "Waiting"  # no pod runs before admission: no GPU time either
            return st
        if st.phase == "Waiting":
            st.phase = "Pending"  # admitted: its pod is on the way
    if not job.exists or not pods:
        if job.failed_reason:
            return _fail(st, "JobFailed", f"{job.failed_reason}: {job.failed_message or ''}", now)
        return st

    started = [p.started for p in pods if p.started]
    if started and st.start_time is None:
        st.start_time = min(started)
    running = live
    succeeded = [p for p in pods if p.phase == "Succeeded"]
    failed = [p for p in pods if p.phase == "Failed"]

    if succeeded:
        pod = succeeded[-1]
        return _finish_from_report(st, pod, objectives, now)
    if failed and (len(failed) > job.backoff_limit or job.failed_reason):
        pod = failed[-1]
        report = parse_report(pod.termination_messages)
        if report and _diverged(report, objectives):
            return _diverge(st, report, objectives, pod, now)
        if job.multi_pod:  # the workload's verdict first (which pod failed, its policy)
            tail = next((m for m in pod.termination_messages if m), "")
            rank0 = f"rank 0 exit code {pod.exit_code}: {tail[-300:]}".strip()
            why = f"{job.failed_reason}: {job.failed_message or ''}; {rank0}"
            return _fail(st, "JobFailed", why, now, pod)
        if pod.exit_code is None:  # the pod failed around its container (node lost, evicted)
            why = pod.message or "the pod failed before its container ended"
            return _fail(st, pod.reason or "PodFailed", why, now, pod)
        tail = next((m for m in pod.termination_messages if m), "")
        return _fail(st, "Error", f"exit code {pod.exit_code}: {tail[-400:]}".strip(), now, pod)
    if running:
        st.phase = "Running"
        if st.run_start is None:
            st.run_start = max((p.started for p in running if p.started), default=now)
            if st.preemptions:
                st.message = None  # running again: the note of its interruption is done
        st.gpu_seconds = _gpu_seconds(st, now)
        return st
    stuck = [
        p
        for p in pods
        if p.waiting_reason in STUCK
        and p.created is not None
        and (now - p.created).total_seconds() >= STUCK_AFTER_SECONDS
    ]
    if stuck and not any(p.phase in ("Running", "Pending") and p not in stuck for p in pods):
        pod = stuck[-1]
        return _fail(
            st,
            str(pod.waiting_reason),
            f"pod {pod.name} cannot start: {pod.waiting_message or pod.waiting_reason}",
            now,
            pod,
        )
    return st


def _diverged(report: Report, objectives: list[str]) -> bool:
    return any(o in report.metrics and not finite(report.metrics[o]) for o in objectives)


def _finish_from_report(
    st: TrialStatus, pod: PodObservation, objectives: list[str], now: datetime
) -> TrialStatus:
    report = parse_report(pod.termination_messages)
    if report is not None:
        st.metrics = dict(report.metrics)
        st.intermediate = merge_intermediate(
            st.intermediate, report.intermediate.get(objectives[0], [])
        )
    values: list[float] = []
    for o in objectives:
        if report is not None and o in report.metrics:
            values.append(report.metrics[o])
        elif o == objectives[0] and st.intermediate:
            values.append(st.intermediate[-1][1])  # scraped only: the last value seen
        else:
            got = ", ".join(sorted(report.metrics)) if report else "no kubetune report"
            return _fail(
                st,
                "MetricsMissing",
                f"the trial succeeded without reporting {o!r} (reported: {got})",
                now,
                pod,
            )
    if not all(finite(v) for v in values):
        assert report is not None
        return _diverge(st, report, objectives, pod, now)
    st.phase = "Completed"
    st.reason = None
    st.value = values[0]
    st.values = values if len(values) > 1 else None
    return _ended(st, pod, now)


def _diverge(
    st: TrialStatus, report: Report, objectives: list[str], pod: PodObservation, now: datetime
) -> TrialStatus:
    st.metrics = dict(report.metrics)
    bad = [o for o in objectives if o in report.metrics and not finite(report.metrics[o])]
    return _fail(st, "Diverged", f"{', '.join(bad)} is not finite (NaN or infinite)", now, pod)


def _fail(
    st: TrialStatus, reason: str, message: str, now: datetime, pod: PodObservation | None = None
) -> TrialStatus:
    st.phase = "Failed"
    st.reason = reason
    st.message = message
    return _ended(st, pod, now)


def _ended(st: TrialStatus, pod: PodObservation | None, now: datetime) -> TrialStatus:
    if st.run_start is None and st.preemptions and pod and pod.started:
        st.run_start = pod.started  # a resumed run that ended before it was seen running
    st.completion_time = (pod.finished if pod and pod.finished else None) or now
    st.gpu_seconds = _gpu_seconds(st, st.completion_time)
    return st


def _preempted(st: TrialStatus, gone: list[PodObservation], now: datetime) -> None:
    """The run in progress ended without the trial ending: bank its running time."""
    ended = max((p.finished for p in gone if p.finished), default=now)
    start = st.run_start or (st.start_time if not st.preemptions else None)
    if start is not None:
        st.ran_seconds += max(0.0, (ended - start).total_seconds())
    st.run_start = None
    st.preemptions += 1
    st.phase = "Pending"
    st.gpu_seconds = st.ran_seconds * st.gpus
    why = next((p.disrupted for p in gone if p.disrupted), None) or "its pod was deleted"
    st.message = f"run {st.preemptions} ended by {why}; it runs again"


def _gpu_seconds(st: TrialStatus, until: datetime) -> float:
    """GPUs x the time a pod of this trial ran: earlier runs plus the current one."""
    start = st.run_start or (st.start_time if not st.preemptions else None)
    run = max(0.0, (until - start).total_seconds()) if start is not None else 0.0
    return (st.ran_seconds + run) * st.gpus


def stopped(st: TrialStatus, phase: str, reason: str, message: str, now: datetime) -> TrialStatus:
    """The operator ended the trial (pruned, study deadline, study failed)."""
    out = TrialStatus(**{**st.__dict__})
    out.phase = phase
    out.reason = reason
    out.message = message
    return _ended(out, None, now)
