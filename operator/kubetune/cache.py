"""The operator's memory of the cluster: Studies, Trials, trial Jobs and trial Pods.

Filled by label-selected watches (adapters/watch.py) and by the responses of the
operator's own writes, so a reconcile pass reads memory, never the API server,
and costs what changed, not what ever ran. Objects are kept compact: a pod is a
`PodObservation`, a Job a `JobRecord`, a Trial a `TrialRecord`, parsed once when
its event arrives (in the watch thread), not on every pass.

Only the asyncio loop's thread mutates the cache, so it needs no locks. An event
older than what the cache holds (our own write's response arrived first) is
dropped by comparing resourceVersions, which the API server hands out from one
increasing etcd revision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.labels import LABEL_STUDY, LABEL_TRIAL
from kubetune.lifecycle import JobObservation, PodObservation, TrialStatus
from kubetune.timestamps import parse_time
from kubetune.workloads import JOBSET, by_kind

Key = tuple[str, str]  # (namespace, Study name)


def _rv(meta: dict[str, Any]) -> int:
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:  # not an etcd revision (another storage): treat every event as news
        return 0


def _controller_uid(meta: dict[str, Any]) -> str | None:
    return next(
        (r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("controller")), None
    )


@dataclass(frozen=True)
class TrialRecord:
    name: str
    namespace: str
    uid: str
    owner_uid: str | None  # the Study's uid: a re-created Study never adopts old Trials
    study: str
    number: int
    params: dict[str, Any]
    source: str
    status: TrialStatus
    rv: int
    sampler_state: dict[str, Any] | None = None

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> TrialRecord:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            owner_uid=_controller_uid(meta),
            study=str(spec.get("study") or (meta.get("labels") or {}).get(LABEL_STUDY, "")),
            number=int(spec.get("number") or 0),
            params=dict(spec.get("params") or {}),
            source=str(spec.get("source") or "sampler"),
            status=TrialStatus.from_k8s(obj.get("status")),
            rv=_rv(meta),
            sampler_state=spec.get("samplerState"),
        )


@dataclass(frozen=True)
class JobRecord:
    name: str
    namespace: str
    uid: str
    owner_uid: str | None  # the Trial's uid
    study: str
    observation: JobObservation
    deleting: bool
    rv: int
    kind: str = "Job"  # or JobSet

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> JobRecord:
        """A trial's workload: its Job, or its JobSet (see workloads)."""
        meta = obj["metadata"]
        adapter = by_kind(obj)
        record = JobSetRecord if adapter is JOBSET else JobRecord
        return record(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            owner_uid=_controller_uid(meta),
            study=(meta.get("labels") or {}).get(LABEL_STUDY, ""),
            observation=adapter.observe(obj),
            deleting=bool(meta.get("deletionTimestamp")),
            rv=_rv(meta),
            kind=adapter.kind,
        )


class JobSetRecord(JobRecord):
    """A JobSet trial's workload: kept with the Jobs (by Trial name), listed on its own."""


@dataclass(frozen=True)
class PodRecord:
    namespace: str
    uid: str
    owner_uid: str | None  # the Job's uid
    study: str
    observation: PodObservation
    rv: int
    trial: str = ""  # its Trial's name (label)
    group_uid: str | None = None  # the JobSet that made it through one of its Jobs
    leader: bool = True  # the pod that reports the trial's metrics (rank 0)

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> PodRecord:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        return cls(
            namespace=meta["namespace"],
            uid=meta["uid"],
            owner_uid=_controller_uid(meta),
            study=labels.get(LABEL_STUDY, ""),
            observation=pod_observation(obj),
            rv=_rv(meta),
            trial=labels.get(LABEL_TRIAL, ""),
            group_uid=JOBSET.group_uid(labels),
            leader=JOBSET.leader(labels),
        )


def pod_observation(pod: dict[str, Any]) -> PodObservation:
    status = pod.get("status") or {}
    started = parse_time(status.get("startTime"))
    finished: datetime | None = None
    exit_code = None
    messages = []
    waiting: dict[str, Any] = {}
    for cs in status.get("containerStatuses") or []:
        waiting = waiting or (cs.get("state") or {}).get("waiting") or {}
        term = (cs.get("state") or {}).get("terminated")
        running = (cs.get("state") or {}).get("running")
        if running and running.get("startedAt"):
            started = started or parse_time(running["startedAt"])
        if term:
            messages.append(term.get("message") or "")
            if exit_code is None or term.get("exitCode"):
                exit_code = term.get("exitCode")
            done = parse_time(term.get("finishedAt"))
            if done and (finished is None or done > finished):
                finished = done
    return PodObservation(
        name=pod["metadata"]["name"],
        phase=_phase(pod),
        started=started,
        finished=finished,
        exit_code=exit_code,
        termination_messages=tuple(messages),
        deleting=bool(pod["metadata"].get("deletionTimestamp")),
        created=parse_time(pod["metadata"].get("creationTimestamp")),
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        reason=status.get("reason"),
        message=status.get("message"),
        disrupted=next(
            (
                str(c.get("reason") or "DisruptionTarget")
                for c in status.get("conditions") or []
                if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            ),
            None,
        ),
    )


def _phase(pod: dict[str, Any]) -> str:
    """The pod's phase, or where it is bound to go once all its containers have ended.

    A node agent may report the containers' terminated states before the pod's phase
    (two status writes): the trial is over at the first, and so is its GPU's use.
    """
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    statuses = status.get("containerStatuses") or []
    containers = (pod.get("spec") or {}).get("containers") or []
    if phase not in ("Pending", "Running") or not statuses or len(statuses) < len(containers):
        return phase
    ended = [(cs.get("state") or {}).get("terminated") for cs in statuses]
    if not all(ended):
        return phase
    if all(t.get("exitCode") == 0 for t in ended if t):
        return "Succeeded"
    restart = (pod.get("spec") or {}).get("restartPolicy", "Always")
    return "Failed" if restart == "Never" else phase


Record = TrialRecord | JobRecord | PodRecord  # JobSetRecord is a JobRecord


@dataclass
class StudyState:
    """One Study and its children, as last seen."""

    body: dict[str, Any] | None = None
    trials: dict[str, TrialRecord] = field(default_factory=dict)  # by name
    jobs: dict[str, JobRecord] = field(default_factory=dict)  # by name (= Trial name)
    pods: dict[str, PodRecord] = field(default_factory=dict)  # by pod uid

    @property
    def empty(self) -> bool:
        return self.body is None and not (self.trials or self.jobs or self.pods)


@dataclass(frozen=True)
class Snapshot:
    """What one pass sees of a Study: only its own children (matched by owner uid)."""

    study: dict[str, Any]
    trials: list[TrialRecord]
    jobs: dict[str, JobRecord]  # by Trial name: the trial's Job, owned by this Study
    pods: dict[str, list[PodObservation]]  # by Trial name, only pods owned by its Job
    orphans: tuple[str, ...] = ()  # this Study's Jobs without a Trial (a create failed)


class Cache:
    def __init__(self) -> None:
        self.studies: dict[Key, StudyState] = {}

    def _state(self, key: Key) -> StudyState:
        state = self.studies.get(key)
        if state is None:
            state = self.studies[key] = StudyState()
        return state

    def _tidy(self, key: Key) -> None:
        state = self.studies.get(key)
        if state is not None and state.empty:
            del self.studies[key]

    # -- Studies (from Kopf's watch and our status writes) ---------------------------------

    def put_study(self, body: dict[str, Any]) -> bool:
        """Store a Study; False if the cache already held this version or a newer one."""
        meta = body["metadata"]
        state = self._state((meta["namespace"], meta["name"]))
        if state.body is not None and _rv(state.body["metadata"]) >= _rv(meta) > 0:
            return False
        state.body = body
        return True

    def drop_study(self, namespace: str, name: str) -> None:
        state = self.studies.get((namespace, name))
        if state is not None:
            state.body = None
            self._tidy((namespace, name))

    def study(self, key: Key) -> dict[str, Any] | None:
        state = self.studies.get(key)
        return state.body if state else None

    # -- children ---------------------------------------------------------------------------

    def put(self, record: Record) -> bool:
        """Store a child; False if nothing new (an echo of our own write, or older)."""
        key = (record.namespace, record.study)
        if not record.study:
            return False
        state = self._state(key)
        table = _table(state, type(record))
        ident = record.uid if isinstance(record, PodRecord) else record.name
        old = table.get(ident)
        if old is not None and old.rv >= record.rv > 0 and old.uid == record.uid:
            return False
        table[ident] = record
        # A new version that changes nothing a pass looks at (the Job controller's
        # counters, a pod's conditions, the echo of our own write) is stored, not news.
        return old is None or _gist(old) != _gist(record)

    def remove(self, record: Record) -> None:
        key = (record.namespace, record.study)
        state = self.studies.get(key)
        if state is None:
            return
        table = _table(state, type(record))
        ident = record.uid if isinstance(record, PodRecord) else record.name
        old = table.get(ident)
        if old is not None and old.uid == record.uid:
            del table[ident]
        self._tidy(key)

    def replace(
        self, kind: type[Record], namespace: str | None, records: Iterable[Record]
    ) -> set[Key]:
        """A relist: the given records are all there is of `kind` (in `namespace`, or
        everywhere). Returns the Studies whose children changed."""
        fresh: dict[Key, dict[str, Record]] = {}
        for r in records:
            ident = r.uid if isinstance(r, PodRecord) else r.name
            fresh.setdefault((r.namespace, r.study), {})[ident] = r
        changed: set[Key] = set()
        for key, state in list(self.studies.items()):
            if namespace is not None and key[0] != namespace:
                continue
            table = _table(state, kind)
            # Jobs and JobSets share a table (by Trial name): a relist of one keeps the other.
            old = {k: v for k, v in table.items() if type(v) is kind}
            new = fresh.pop(key, {})
            if {k: v.rv for k, v in old.items()} != {k: v.rv for k, v in new.items()}:
                changed.add(key)
            for k in old:
                del table[k]
            table.update(new)
            self._tidy(key)
        for key, new in fresh.items():
            if key[1]:
                _table(self._state(key), kind).update(new)
                changed.add(key)
        return changed

    # -- what a pass reads --------------------------------------------------------------------

    def snapshot(self, key: Key) -> Snapshot | None:
        state = self.studies.get(key)
        if state is None or state.body is None:
            return None
        uid = state.body["metadata"]["uid"]
        trials = [t for t in state.trials.values() if t.owner_uid == uid]
        names = {t.name for t in trials}
        by_uid = {t.uid: t.name for t in trials}
        jobs: dict[str, JobRecord] = {}
        orphans = []
        for j in state.jobs.values():
            if j.owner_uid == uid:  # owned by the Study, named after its Trial
                if j.name in names:
                    jobs[j.name] = j
                else:
                    orphans.append(j.name)
            elif j.owner_uid is not None and by_uid.get(j.owner_uid) == j.name:
                jobs[j.name] = j  # owned by its Trial (made by operators before 0.2)
        # Assumed workloads (creates in flight) have no uid yet: nothing is theirs.
        job_of = {j.uid: name for name, j in jobs.items() if j.uid}
        pods: dict[str, list[PodObservation]] = {}
        for p in state.pods.values():
            # A Job's pods by their owner; a JobSet's (owned by its Jobs) by its uid label,
            # and only its leader, whose pod is the trial's result. A pod whose Job is gone
            # (removed once its trial was recorded) belongs to no trial.
            name = job_of.get(p.owner_uid) if p.owner_uid else None
            if name is None and p.group_uid:
                name = job_of.get(p.group_uid)
            if name is not None and p.leader:
                pods.setdefault(name, []).append(p.observation)
        for observed in pods.values():
            observed.sort(key=_creation_order)
        return Snapshot(
            study=state.body, trials=trials, jobs=jobs, pods=pods, orphans=tuple(sorted(orphans))
        )

    def sizes(self) -> dict[str, int]:
        return {
            "studies": sum(s.body is not None for s in self.studies.values()),
            "trials": sum(len(s.trials) for s in self.studies.values()),
            "jobs": sum(len(s.jobs) for s in self.studies.values()),
            "pods": sum(len(s.pods) for s in self.studies.values()),
        }


def _gist(record: Record) -> Any:
    """What a reconcile pass reads of a record."""
    if isinstance(record, TrialRecord):
        return (record.uid, record.status, record.params, record.sampler_state)
    if isinstance(record, JobRecord):
        return (record.uid, record.observation, record.deleting)
    return (record.uid, record.observation)


def _creation_order(pod: PodObservation) -> tuple[float, str]:
    return (pod.created.timestamp() if pod.created else float("inf"), pod.name)


def _table(state: StudyState, kind: type[Record]) -> dict[str, Any]:
    if kind is TrialRecord:
        return state.trials
    if issubclass(kind, JobRecord):
        return state.jobs
    return state.pods
