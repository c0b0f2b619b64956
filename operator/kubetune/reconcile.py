"""Level-triggered reconciliation of one Study: observe -> plan -> act.

The same code runs for every trigger (Study created or changed, operator start,
the periodic timer, a trial pod changing), so there is one path to get right.
Triggers for one Study coalesce: while a pass runs, further triggers only mark
it dirty, and one more pass follows. Blocking work (API calls, Optuna's ask,
Prometheus) runs in threads, so a slow sampler never stalls other Studies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubetune import lifecycle, metrics, render
from kubetune.adapters.kube import Kube, Observed
from kubetune.adapters.prom import Prometheus, PrometheusError
from kubetune.adapters.sampling import StudyModel
from kubetune.lifecycle import JobObservation, PodObservation, TrialStatus
from kubetune.plan import (
    Context,
    CreateTrials,
    EnsureJob,
    Plan,
    StopTrial,
    TrialView,
    invalid,
    plan,
)
from kubetune.space import grid_size
from kubetune.spec import SpecError, StudySpec, check_values, parse
from kubetune.timestamps import parse_time

log = logging.getLogger("kubetune.reconcile")
T = TypeVar("T")
Key = tuple[str, str]
# Rewriting a running trial's GPU-seconds on every pass is churn; this much change is news.
GPU_SECONDS_RESOLUTION = 60.0
# fANOVA refits a forest each time: during a Study, at most this often (and once at the end).
IMPORTANCE_EVERY_SECONDS = 300.0


@dataclass(frozen=True)
class Settings:
    prometheus_url: str | None = None
    metrics_port: int = render.DEFAULT_METRICS_PORT
    stop_grace_seconds: int = 30
    # Fill in the restricted Pod Security settings a trial template leaves unset.
    restricted_trials: bool = True


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
        phase=status.get("phase") or "Pending",
        started=started,
        finished=finished,
        exit_code=exit_code,
        termination_messages=tuple(messages),
        deleting=bool(pod["metadata"].get("deletionTimestamp")),
        created=parse_time(pod["metadata"].get("creationTimestamp")),
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
    )


def job_observation(job: dict[str, Any] | None) -> JobObservation:
    if job is None:
        return JobObservation(exists=False)
    failed = next(
        (
            c
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        None,
    )
    return JobObservation(
        exists=True,
        backoff_limit=int((job.get("spec") or {}).get("backoffLimit") or 0),
        failed_reason=failed.get("reason") if failed else None,
        failed_message=failed.get("message") if failed else None,
    )


def _study_changed(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the Study's status needs writing.

    GPU-hours of running trials grow with every pass; writing each small increase
    would trigger the next pass through the Study's own watch event, forever.
    """

    def strip(status: dict[str, Any]) -> tuple[dict[str, Any], float]:
        s = {k: status.get(k) for k in new}
        budget = dict(s.get("budget") or {})
        used = float(budget.pop("gpuHoursUsed", 0.0) or 0.0)
        s["budget"] = budget
        return s, used

    a, used_a = strip(current)
    b, used_b = strip(new)
    return a != b or abs(used_a - used_b) * 3600 >= GPU_SECONDS_RESOLUTION


def _significant(a: TrialStatus, b: TrialStatus) -> bool:
    """Whether writing `b` over `a` tells anyone something new."""
    da, db = a.to_k8s(), b.to_k8s()
    ga, gb = da.pop("gpuSeconds", 0.0), db.pop("gpuSeconds", 0.0)
    return da != db or abs(ga - gb) >= GPU_SECONDS_RESOLUTION


class Reconciler:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.prom = Prometheus(settings.prometheus_url) if settings.prometheus_url else None
        self.models: dict[str, StudyModel] = {}  # by Study uid
        self.importance_at: dict[str, float] = {}  # by Study uid: monotonic time of last fit
        self.validated: dict[str, int] = {}  # by Study uid: the generation whose template passed
        self.freed: dict[str, list[float]] = {}  # by Study uid: when trial slots freed
        self.running: set[Key] = set()
        self.last_error: dict[Key, str] = {}
        self.dirty: set[Key] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kubetune")

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- triggers ------------------------------------------------------------------------

    def trigger(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key in self.running:
            self.dirty.add(key)
            return
        self.running.add(key)
        task = asyncio.get_running_loop().create_task(self._loop(key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _loop(self, key: Key) -> None:
        try:
            while True:
                self.dirty.discard(key)
                try:
                    again = await self.reconcile(*key)
                except Exception:
                    log.exception(
                        "reconcile of study %s/%s failed; retrying on the next trigger", *key
                    )
                    again = False
                if again:
                    self.dirty.add(key)
                if key not in self.dirty:
                    break
        finally:
            self.running.discard(key)

    async def _report_error(self, key: Key, error: Exception) -> None:
        """Tell the Study's owner, once per distinct error, that the operator is stuck."""
        text = f"{type(error).__name__}: {error}"
        if self.last_error.get(key) == text:
            return
        self.last_error[key] = text
        with contextlib.suppress(Exception):
            study = await self._io(self.kube.get_study, *key)
            if study is not None:
                await self._io(
                    self.kube.event, study, "Warning", "ReconcileError", f"{text} (retrying)"
                )

    def forget(self, uid: str) -> None:
        self.models.pop(uid, None)
        self.importance_at.pop(uid, None)
        self.validated.pop(uid, None)
        self.freed.pop(uid, None)

    # -- one pass --------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> bool:
        """One pass; returns True if another pass should follow at once."""
        with metrics.RECONCILE.time():
            return await self._reconcile(namespace, name)

    async def _reconcile(self, namespace: str, name: str) -> bool:
        obs = await self._io(self.kube.observe, namespace, name)
        if obs is None:
            return False
        study = obs.study
        uid = study["metadata"]["uid"]
        generation = int(study["metadata"].get("generation") or 0)
        status = study.get("status") or {}
        now = datetime.now(UTC)
        try:
            spec = parse(study.get("spec") or {})
            views = await self._observe_trials(spec, obs, now)
            model = await self._model(uid, spec, views, obs)
            grid = grid_size(spec) if spec.sampler.name == "grid" else None
        except SpecError as e:
            return await self._invalid(obs, e, now)
        await self._io(model.sync, views)
        numbers = {v.number: v.name for v in views}
        prune = frozenset(numbers[n] for n in await self._io(model.to_prune) if n in numbers)
        created = parse_time(study["metadata"].get("creationTimestamp")) or now
        ctx = Context(now=now, created=created, prune=prune, grid_size=grid)
        result = plan(spec, views, status, generation, ctx)
        if any(isinstance(a, CreateTrials) for a in result.actions):
            # Only new trials need the template checked; finished Studies never do.
            try:
                await self._validate_template(spec, obs, generation)
            except SpecError as e:
                return await self._invalid(obs, e, now)
        result.status["sampler"] = {"name": spec.sampler.name, "learnedTrials": model.learned()}
        await self._importance(uid, model, status, result)
        again = await self._act(spec, obs, model, views, result, now)
        await self._write_study(obs, status, result)
        metrics.record_study(uid, result.status["phase"], result.status["trials"])
        return again

    async def _invalid(self, obs: Observed, error: SpecError, now: datetime) -> bool:
        """Report a spec error as the Invalid condition; nothing else happens."""
        meta = obs.study["metadata"]
        status = obs.study.get("status") or {}
        self.forget(meta["uid"])
        result = invalid(status, str(error), int(meta.get("generation") or 0), now)
        await self._write_study(obs, status, result)
        metrics.record_study(meta["uid"], result.status["phase"], status.get("trials"))
        return False

    def _ident(self, spec: StudySpec, meta: dict[str, Any], number: int) -> render.TrialIdentity:
        return render.TrialIdentity(meta["namespace"], meta["name"], number, _seed(spec, number))

    def _job(
        self,
        spec: StudySpec,
        ident: render.TrialIdentity,
        params: dict[str, Any],
        owner: render.Owner,
    ) -> dict[str, Any]:
        return render.render_job(
            spec, ident, params, owner, self.settings.metrics_port, self.settings.restricted_trials
        )

    async def _validate_template(self, spec: StudySpec, obs: Observed, generation: int) -> None:
        """Dry-run the trial Job and pod once per generation: refusals become Invalid."""
        meta = obs.study["metadata"]
        if self.validated.get(meta["uid"]) == generation:
            return
        ident = self._ident(spec, meta, 0)
        owner = render.Owner(kind="Study", name=meta["name"], uid=meta["uid"])
        job = self._job(spec, ident, render.sample_params(spec), owner)
        job["metadata"]["name"] = f"{meta['name']}-validate"
        refusal = await self._io(self.kube.validate, job, render.dry_run_pod(job))
        if refusal:
            raise SpecError(
                f"spec.trialTemplate: the API server refuses the trial's pod: {refusal}"
            )
        self.validated[meta["uid"]] = generation

    async def _importance(
        self, uid: str, model: StudyModel, status: dict[str, Any], result: Plan
    ) -> None:
        """Parameter importance: every few minutes while running, once more at the end."""
        finished = result.status["phase"] in ("Succeeded", "Failed")
        last = self.importance_at.get(uid)
        clock = asyncio.get_running_loop().time()
        stale = last is None or clock - last >= IMPORTANCE_EVERY_SECONDS
        ending = finished and status.get("phase") != result.status["phase"]
        # A finished Study without importance (too few trials, say) is retried at the same
        # pace as a running one, not on every event.
        if ending or (stale and (not finished or "importance" not in status)):
            self.importance_at[uid] = clock
            importance = await self._io(model.importance)
            if importance:
                result.status["importance"] = importance
        elif status.get("importance"):
            result.status["importance"] = status["importance"]

    async def _model(
        self, uid: str, spec: StudySpec, views: list[TrialView], obs: Observed
    ) -> StudyModel:
        model = self.models.get(uid)
        if model is None:
            warm = await self._warm_start(spec, obs)
            model = await self._io(StudyModel.rebuild, spec, views, warm)
            self.models[uid] = model
            log.info(
                "rebuilt the Optuna study of %s/%s from %d trials (%d warm-start)",
                obs.study["metadata"]["namespace"],
                obs.study["metadata"]["name"],
                len(views),
                len(warm),
            )
        return model

    async def _warm_start(self, spec: StudySpec, obs: Observed) -> list[TrialView]:
        """Another Study's completed trials, checked against this Study's space."""
        if spec.warm_start is None:
            return []
        namespace = obs.study["metadata"]["namespace"]
        source = spec.warm_start.from_study
        where = f"spec.warmStart.fromStudy: {source!r}"
        other = await self._io(self.kube.observe, namespace, source)
        if other is None:
            raise SpecError(f"{where} is not a Study in namespace {namespace}")
        try:
            other_spec = parse(other.study.get("spec") or {})
        except SpecError as e:
            raise SpecError(f"{where} has an invalid spec ({e})") from None
        mine = [(o.metric, o.direction) for o in spec.all_objectives]
        theirs = [(o.metric, o.direction) for o in other_spec.all_objectives]
        if mine != theirs:
            raise SpecError(f"{where} optimises {theirs}, this Study {mine}")
        views = []
        for trial in other.trials:
            st = TrialStatus.from_k8s(trial.get("status"))
            params = dict(trial["spec"].get("params") or {})
            if st.phase != "Completed" or trial["spec"].get("source") == "repeat":
                continue
            problems = check_values(spec.parameters, params)
            if problems:
                raise SpecError(
                    f"{where}: trial {trial['metadata']['name']} does not fit this search "
                    f"space ({'; '.join(problems)})"
                )
            views.append(
                TrialView(
                    trial["metadata"]["name"],
                    trial["metadata"]["uid"],
                    int(trial["spec"]["number"]),
                    params,
                    st,
                    True,
                )
            )
        return views

    async def _observe_trials(
        self, spec: StudySpec, obs: Observed, now: datetime
    ) -> list[TrialView]:
        views = []
        objectives = [o.metric for o in spec.all_objectives]
        gpus = render.gpus_requested(spec.trial_template)
        for trial in obs.trials:
            name = trial["metadata"]["name"]
            current = TrialStatus.from_k8s(trial.get("status"))
            pods = [pod_observation(p) for p in obs.pods.get(name, [])]
            scraped: list[tuple[int, float]] = []
            started = current.start_time or min(
                (p.started for p in pods if p.started), default=None
            )
            if self.prom and not current.terminal and started is not None:
                try:
                    ns = obs.study["metadata"]["namespace"]
                    scraped = await self._io(
                        self.prom.intermediate, ns, name, objectives[0], started, now
                    )
                except PrometheusError as e:
                    metrics.PROMETHEUS_ERRORS.inc()
                    log.warning("%s", e)
            new = lifecycle.observe(
                current,
                job_name=name,
                job=job_observation(obs.jobs.get(name)),
                pods=pods,
                objectives=objectives,
                gpus=gpus,
                scraped=scraped,
                now=now,
            )
            if _significant(current, new):
                await self._io(
                    self.kube.patch_status,
                    "Trial",
                    trial["metadata"]["namespace"],
                    name,
                    new.to_k8s(),
                )
                if new.phase != current.phase and new.terminal:
                    self.freed.setdefault(obs.study["metadata"]["uid"], []).append(time.monotonic())
                    await self._trial_event(obs.study, name, new)
            views.append(
                TrialView(
                    name=name,
                    uid=trial["metadata"]["uid"],
                    number=int(trial["spec"]["number"]),
                    params=dict(trial["spec"].get("params") or {}),
                    status=new,
                    has_job=name in obs.jobs,
                    source=trial["spec"].get("source") or "sampler",
                )
            )
        return views

    async def _trial_event(self, study: dict[str, Any], name: str, st: TrialStatus) -> None:
        if st.phase == "Completed":
            event = ("Normal", "TrialCompleted", f"{name} completed with value {st.value}")
        elif st.phase == "Pruned":
            event = ("Normal", "TrialPruned", f"{name} pruned at step {st.last_step}")
        else:
            event = ("Warning", "TrialFailed", f"{name} failed ({st.reason}): {st.message}")
        await self._io(self.kube.event, study, *event)

    async def _act(
        self,
        spec: StudySpec,
        obs: Observed,
        model: StudyModel,
        views: list[TrialView],
        result: Plan,
        now: datetime,
    ) -> bool:
        study = obs.study
        meta = study["metadata"]
        owner = render.Owner(kind="Study", name=meta["name"], uid=meta["uid"])
        again = False
        by_name = {v.name: v for v in views}
        for action in result.actions:
            if isinstance(action, CreateTrials):
                again |= await self._create_trials(spec, study, owner, model, views, action)
            elif isinstance(action, EnsureJob):
                view = by_name[action.trial]
                trial_owner = render.Owner(kind="Trial", name=view.name, uid=view.uid)
                ident = self._ident(spec, meta, view.number)
                await self._io(self.kube.create, self._job(spec, ident, view.params, trial_owner))
            elif isinstance(action, StopTrial):
                self.freed.setdefault(meta["uid"], []).append(time.monotonic())
                view = by_name[action.trial]
                stopped = lifecycle.stopped(
                    view.status, action.phase, action.reason, action.message, now
                )
                await self._io(
                    self.kube.patch_status, "Trial", meta["namespace"], view.name, stopped.to_k8s()
                )
                await self._io(
                    self.kube.delete_job,
                    meta["namespace"],
                    view.name,
                    self.settings.stop_grace_seconds,
                )
                again = True
        return again

    async def _create_trials(
        self,
        spec: StudySpec,
        study: dict[str, Any],
        owner: render.Owner,
        model: StudyModel,
        views: list[TrialView],
        action: CreateTrials,
    ) -> bool:
        meta = study["metadata"]
        if action.params is not None:  # seed repeats of the best trial: no sampler involved
            asked: list[tuple[Any, dict[str, Any]]] = [(None, dict(action.params))] * action.count
            sources = [action.source] * action.count
        else:
            searched = sum(v.source != "repeat" for v in views)
            fixed = spec.enqueue[searched:]
            asked = await self._io(model.ask, action.count, fixed)
            sources = ["enqueued" if i < len(fixed) else "sampler" for i in range(action.count)]
        number = max((v.number for v in views), default=-1) + 1
        for (trial, params), source in zip(asked, sources, strict=True):
            ident = self._ident(spec, meta, number)
            body = render.render_trial(ident, params, owner, source)
            try:
                created = await self._io(self.kube.create, body)
            except Exception:
                # The Optuna study now holds a trial no Trial object backs: rebuild it.
                self.forget(meta["uid"])
                raise
            if created is None:
                # Someone created it before us (another pass or operator): start afresh.
                self.forget(meta["uid"])
                return True
            if trial is not None:
                model.adopt(number, trial)
            else:
                model.skip(number)
            trial_owner = render.Owner(
                kind="Trial", name=ident.name, uid=created["metadata"]["uid"]
            )
            await self._io(self.kube.create, self._job(spec, ident, params, trial_owner))
            freed = self.freed.get(meta["uid"])
            if freed:
                metrics.TRIAL_CREATION.observe(time.monotonic() - freed.pop(0))
            await self._io(
                self.kube.event,
                study,
                "Normal",
                "TrialCreated",
                f"{ident.name} ({source}): {params}",
            )
            number += 1
        return True

    async def _write_study(self, obs: Observed, current: dict[str, Any], result: Plan) -> None:
        meta = obs.study["metadata"]
        if _study_changed(current, result.status):
            await self._io(
                self.kube.patch_status, "Study", meta["namespace"], meta["name"], result.status
            )
        for kind, reason, message in result.events:
            await self._io(self.kube.event, obs.study, kind, reason, message)


def _seed(spec: StudySpec, number: int) -> int:
    """A trial's seed: distinct per trial, reproducible for a seeded Study."""
    return ((spec.sampler.seed or 0) * 1_000_003 + number) % (2**31)
