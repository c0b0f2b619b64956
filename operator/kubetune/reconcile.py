"""Level-triggered reconciliation of one Study: observe -> plan -> act.

The whole critical path is `Reconciler._pass`: a trial's pod ends (the pod watch
triggers the Study), the pass reads the cache (no API calls), the planner
decides, Optuna is told and asked in the Study's sampler lane, and the next
Trial and Job are created beside the write of the finished trial's result.
Everything else (Events, the Study's status, importance, cleanup, Prometheus)
happens after that or in the background.

Triggers for one Study coalesce: while a pass runs, further triggers only mark
it dirty, and one more pass follows. Work runs in separate pools (lanes.py):
Kubernetes writes, Prometheus reads and Events never wait behind a sampler, and
a slow sampler (GP) only delays its own Study.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from kubernetes.client.exceptions import ApiException

from kubetune import metrics, render, warmstart
from kubetune.adapters.kube import Kube, api_error
from kubetune.adapters.prom import Prometheus, PrometheusError
from kubetune.adapters.sampling import (
    REMOTE_SAMPLERS,
    StudyModel,
    directions,
    importance,
    propose,
)
from kubetune.cache import Cache, JobRecord, Key, Snapshot, TrialRecord
from kubetune.lanes import CreatesFirst, Lanes
from kubetune.lifecycle import JobObservation, stopped
from kubetune.plan import (
    Context,
    CreateTrials,
    DeleteJob,
    EnsureJob,
    Event,
    Plan,
    StopTrial,
    TrialObservation,
    TrialView,
    WriteTrialStatus,
    invalid,
    plan,
    plan_trials,
    significant,
)
from kubetune.space import grid_size
from kubetune.spec import SpecError, StudySpec, check_values, parse
from kubetune.timestamps import parse_time
from kubetune.workloads import dry_run_pods, kind_of

log = logging.getLogger("kubetune.reconcile")
T = TypeVar("T")
FINISHED = ("Succeeded", "Failed")
# Importance is refitted during a Study at most this often (and once at the end).
IMPORTANCE_EVERY_SECONDS = 60.0
# Refits during Studies, all Studies together, use at most this share of one core (with
# fANOVA, 100 Studies' refits took a third of a 2-core machine from the control loop;
# PED-ANOVA is ~15x cheaper, and this keeps any number of Studies from adding up). With
# many Studies, each one's refits come further apart. An ending Study's final fit does
# not wait its turn.
IMPORTANCE_CPU_SHARE = 0.25
# A running Study's status (counts, GPU-hours) is rewritten at most this often; a phase
# or condition change is written at once.
STATUS_EVERY_SECONDS = 1.0
# The Study's GPU-hours while trials run are rewritten at most this often: at 2,000
# running trials any finer figure would be a status write every few milliseconds.
GPU_HOURS_EVERY_SECONDS = 60.0
# The same error is told (as an Event) again only after this long.
ERROR_EVENT_SECONDS = 600.0


@dataclass(frozen=True)
class Settings:
    prometheus_url: str | None = None
    metrics_port: int = render.DEFAULT_METRICS_PORT
    stop_grace_seconds: int = 30
    # Fill in the restricted Pod Security settings a trial template leaves unset.
    restricted_trials: bool = True
    # How long finished trials' Jobs and pods are kept once the result is recorded.
    job_retention_seconds: float = 0.0
    failed_job_retention_seconds: float = 3600.0
    # Prometheus polls per running Study: with a pruner (decisions wait on it), without.
    poll_seconds: float = 1.0
    poll_seconds_unpruned: float = 5.0


STUCK_PASS_SECONDS = 120.0


def _log_stuck_pass(key: Key) -> None:
    """Log every coroutine's and thread's stack: what a pass that does not end waits on."""
    lines = [f"reconcile of study {key[0]}/{key[1]} has run {STUCK_PASS_SECONDS:.0f} s"]
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        lines.append(out.getvalue())
    for ident, frame in sys._current_frames().items():
        lines.append(f"thread {ident}:\n{''.join(traceback.format_stack(frame))}")
    log.error("\n".join(line for line in lines if line))


def _study_changed(current: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What changed in the Study's status: None, "gpuHours" (only the GPU-hours of
    running trials, which grow with every pass) or "status" (anything else).
    """

    def strip(status: dict[str, Any]) -> tuple[dict[str, Any], float]:
        s = {k: status.get(k) for k in new}
        budget = dict(s.get("budget") or {})
        used = float(budget.pop("gpuHoursUsed", 0.0) or 0.0)
        s["budget"] = budget
        return s, used

    a, used_a = strip(current)
    b, used_b = strip(new)
    if a != b:
        return "status"
    return "gpuHours" if used_a != used_b else None


def _urgent(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """A change users wait for (the phase, a condition's status or reason): written at
    once. Counts, the best trial and condition messages follow within a second."""

    def gist(status: dict[str, Any]) -> tuple[Any, list[tuple[Any, Any, Any]]]:
        conditions = [
            (c.get("type"), c.get("status"), c.get("reason"))
            for c in status.get("conditions") or []
        ]
        return status.get("phase"), conditions

    return gist(current) != gist(new)


def observations(
    snap: Snapshot, scraped: dict[str, list[tuple[int, float]]]
) -> list[TrialObservation]:
    """The planner's input from a cache snapshot: pure, no API calls."""
    out = []
    for t in snap.trials:
        job = snap.jobs.get(t.name)
        out.append(
            TrialObservation(
                name=t.name,
                uid=t.uid,
                number=t.number,
                params=t.params,
                source=t.source,
                stored=t.status,
                job=job.observation if job else JobObservation(exists=False),
                pods=tuple(snap.pods.get(t.name, ())),
                scraped=tuple(scraped.get(t.name, ())),
                sampler_state=t.sampler_state,
            )
        )
    return out


class Reconciler:
    def __init__(self, kube: Kube, settings: Settings, cache: Cache | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache or Cache()
        self.prom = Prometheus(settings.prometheus_url) if settings.prometheus_url else None
        self.lanes = Lanes()
        self.creates_first = CreatesFirst()
        self.models: dict[str, StudyModel] = {}  # by Study uid
        self.specs: dict[str, tuple[int, StudySpec]] = {}  # by Study uid: (generation, spec)
        self.done: set[str] = set()  # Study uids whose last plan finished them
        self.status_memo: dict[str, dict[str, Any]] = {}  # by Study uid: the status last queued
        self.importance: dict[str, dict[str, float]] = {}  # by Study uid: the latest fit
        self.importance_pending: set[str] = set()  # Study uids with a fit queued or running
        self.importance_at: dict[str, float] = {}  # by Study uid: monotonic time of last fit
        self.refit_turn = asyncio.Lock()  # refits during Studies take turns...
        self.refit_free_at = 0.0  # ...and the next starts no earlier than this (monotonic)
        self.validated: dict[str, int] = {}  # by Study uid: the generation whose template passed
        # Workload kinds the watches follow (JobSet only where its API was served at start):
        # a trial of another kind would never be seen to run.
        self.watched_kinds: set[str] = {"Job"}
        self.freed: dict[str, list[float]] = {}  # by Study uid: when trial slots freed
        # When the watch saw each trial's pod end (by Trial name), for the turnover metric.
        self.pods_ended: dict[Key, dict[str, float]] = {}
        self.status_wanted: dict[Key, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.status_writing: set[Key] = set()  # Studies with a status write in flight
        self.status_written: dict[Key, dict[str, Any]] = {}  # the status last written
        self.trial_wanted: dict[tuple[Key, str], tuple[WriteTrialStatus, dict[str, Any]]] = {}
        self.trial_inflight: dict[tuple[Key, str], tuple[WriteTrialStatus, dict[str, Any]]] = {}
        self.deleting: set[tuple[Key, str]] = set()  # trials whose Job is being removed
        self.status_at: dict[Key, float] = {}  # monotonic time of the last Study status write
        self.scraped: dict[Key, dict[str, list[tuple[int, float]]]] = {}  # new values by trial
        self.polled_at: dict[Key, float] = {}  # wall time of the last Prometheus answer
        self.metrics_error: dict[Key, str] = {}  # "" while Prometheus answers
        self.polling: set[Key] = set()  # Studies with a Prometheus query in flight
        self.poll_clock: dict[Key, float] = {}  # monotonic time of the last query
        self.running: set[Key] = set()
        self.dirty: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.last_error: dict[Key, tuple[str, float]] = {}  # the last error told, and when
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- triggers ------------------------------------------------------------------------

    def trigger(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key in self.running:
            self.dirty.add(key)
            return
        self.running.add(key)
        self._spawn(self._loop(key))

    def trigger_after(self, key: Key, seconds: float) -> None:
        """Reconcile `key` again in `seconds` (the earliest such request wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        timer = self.timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self.timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self.timers.pop(key, None)
        self.trigger(*key)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _loop(self, key: Key) -> None:
        try:
            while True:
                self.dirty.discard(key)
                # A pass waits only on bounded work; one that does not return was never
                # meant to happen and would stop its Study silently: say where it waits.
                watchdog = asyncio.get_running_loop().call_later(
                    STUCK_PASS_SECONDS, _log_stuck_pass, key
                )
                try:
                    with metrics.RECONCILE.time():
                        again = await self._pass(key)
                except Exception as e:
                    metrics.RECONCILE_ERRORS.inc()
                    log.exception("reconcile of study %s/%s failed; retrying", *key)
                    self._report_error(key, e)
                    self.trigger_after(key, 5.0)
                    again = False
                finally:
                    watchdog.cancel()
                if again:
                    self.dirty.add(key)
                if key not in self.dirty:
                    break
        finally:
            self.running.discard(key)

    def _report_error(self, key: Key, error: BaseException) -> None:
        """Tell the Study's owner, once per distinct error, that the operator is stuck."""
        text = f"{type(error).__name__}: {error}"
        clock = time.monotonic()
        last = self.last_error.get(key)
        if last is not None and last[0] == text and clock - last[1] < ERROR_EVENT_SECONDS:
            return
        self.last_error[key] = (text, clock)
        study = self.cache.study(key)
        if study is not None:
            self._event(study, ("Warning", "ReconcileError", f"{text} (retrying)"))

    def forget(self, uid: str) -> None:
        for table in (self.models, self.specs, self.importance, self.importance_at):
            table.pop(uid, None)
        self.status_memo.pop(uid, None)
        self.validated.pop(uid, None)
        self.freed.pop(uid, None)
        self.done.discard(uid)

    def forget_key(self, key: Key) -> None:
        for table in (self.status_at, self.polled_at, self.poll_clock):
            table.pop(key, None)
        self.status_written.pop(key, None)
        self.pods_ended.pop(key, None)
        self.scraped.pop(key, None)
        self.metrics_error.pop(key, None)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    # -- I/O helpers --------------------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.lanes.run(self.lanes.io, fn, *args)

    def _event(self, obj: dict[str, Any], event: Event) -> None:
        """Post an Event in the background: it never delays a pass."""
        self._spawn(self.lanes.run(self.lanes.events, self.kube.event, obj, *event))

    # -- one pass --------------------------------------------------------------------------

    def _spec(self, study: dict[str, Any]) -> StudySpec:
        uid = study["metadata"]["uid"]
        generation = int(study["metadata"].get("generation") or 0)
        cached = self.specs.get(uid)
        if cached is not None and cached[0] == generation:
            return cached[1]
        spec = parse(study.get("spec") or {})
        self.specs[uid] = (generation, spec)
        return spec

    async def _pass(self, key: Key) -> bool:
        """One pass; returns True if another pass should follow at once."""
        snap = self.cache.snapshot(key)
        if snap is None:
            return False
        study = snap.study
        meta = study["metadata"]
        uid = meta["uid"]
        generation = int(meta.get("generation") or 0)
        # The status this operator last decided (its write may still be in flight): planning
        # from the cache's older copy could write an older status over the newer one.
        status = self.status_memo.get(uid) or study.get("status") or {}
        now = datetime.now(UTC)
        try:
            spec = self._spec(study)
            grid = grid_size(spec) if spec.sampler.name == "grid" else None
            gpus = kind_of(spec.trial_template).gpus(spec.trial_template)
        except SpecError as e:
            return await self._invalid(key, study, e, now)
        trials = plan_trials(spec, observations(snap, self.scraped.get(key, {})), gpus, now)
        # The cache may not show the final status yet (it is written in the background).
        finished = status.get("phase") in FINISHED or uid in self.done
        model = self.models.get(uid)
        active = any(not v.status.terminal for v in trials.views)
        prune: frozenset[str] = frozenset()
        if model is not None or not finished or active:
            try:
                model = await self._model(key, uid, spec, trials.views)
            except SpecError as e:
                return await self._invalid(key, study, e, now)
            prune = await self._sync(spec, model, trials.views)
        ctx = Context(
            now=now,
            created=parse_time(meta.get("creationTimestamp")) or now,
            prune=prune,
            grid_size=grid,
            retention=(
                self.settings.job_retention_seconds,
                self.settings.failed_job_retention_seconds,
            ),
            metrics_error=self.metrics_error.get(key) if self.prom else None,
            orphans=snap.orphans,
        )
        result = plan(spec, trials.views, status, generation, ctx)
        creates = [a for a in result.actions if isinstance(a, CreateTrials)]
        if creates:
            try:
                await self._validate_template(spec, study, generation)
                if model is None:  # a finished Study resumed (maxTrials raised)
                    model = await self._model(key, uid, spec, trials.views)
                    await self._sync(spec, model, trials.views)
            except SpecError as e:
                return await self._invalid(key, study, e, now)
        # Without a model (a finished Study, after a restart) count what a rebuilt one
        # would have learned: every finished trial but seed repeats. Not the stored count:
        # an operator killed between telling Optuna its last trials and the pass that
        # wrote them left a stale one behind.
        learned = (
            model.learned()
            if model is not None
            else sum(v.status.terminal and v.source != "repeat" for v in trials.views)
        )
        result.status["sampler"] = {"name": spec.sampler.name, "learnedTrials": learned}

        # The critical path: the finished trials' results are recorded while the next
        # trials are created; a stopped trial's status is written before its Job goes.
        stopping = {a.trial for a in result.actions if isinstance(a, StopTrial)}
        by_name = {v.name: v for v in trials.views}
        # The trial-creation metric counts from when the watch saw a trial's pod end
        # (or from now, for a stop) to the next Job created.
        ended = self.pods_ended.get(key, {})
        freed = [ended.pop(w.trial) for w in trials.writes if w.result and w.trial in ended]
        freed += [time.monotonic()] * len(stopping)
        if freed:
            self.freed.setdefault(uid, []).extend(sorted(freed))
        # The results are queued now but sent once the next trials' creates are out
        # (CreatesFirst): they compete for the same API server.
        if creates:
            self.creates_first.hold()
        try:
            for write in trials.writes:
                queued = write.trial not in stopping and self._queue_trial_write(key, write)
                if queued and write.event:
                    self._event(study, write.event)
            # After the results are on their way: a Study's last pass waits for its final
            # importance fit, and no trial's result should wait with it.
            await self._importance(key, uid, model, status, result)
            critical: list[Awaitable[Any]] = []
            for action in result.actions:
                if isinstance(action, CreateTrials):
                    assert model is not None
                    critical.append(self._create_trials(key, spec, study, model, action))
                elif isinstance(action, StopTrial):
                    critical.append(self._stop(key, by_name[action.trial], action, now))
                elif isinstance(action, EnsureJob):
                    critical.append(self._ensure_job(key, spec, study, by_name[action.trial]))
            outcomes = await asyncio.gather(*critical, return_exceptions=True)
        finally:
            if creates:
                self.creates_first.release()
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        again = any(o is True for o in outcomes)

        for event in result.events:
            self._event(study, event)
        if errors:
            raise errors[0]
        # Off the critical path: a pass ends here, so the next trial's pod ending never
        # waits behind a cleanup or a status write of this one.
        for action in result.actions:
            if (
                isinstance(action, DeleteJob)
                and (key, action.trial) not in self.deleting
                and not self._job_going(key, action.trial)
            ):
                self.deleting.add((key, action.trial))
                self._spawn(self._cleanup(key, action))
        await self._write_study(key, study, status, result)
        metrics.record_study(uid, result.status["phase"], result.status["trials"])
        if result.status["phase"] in FINISHED:
            self.done.add(uid)
        else:
            self.done.discard(uid)
        if result.status["phase"] in FINISHED and not any(
            not v.status.terminal for v in trials.views
        ):
            # A finished Study needs no sampler: release it (rebuilt if the Study resumes).
            self.models.pop(uid, None)
        if result.requeue_after is not None:
            self.trigger_after(key, max(0.05, result.requeue_after))
        return again

    async def _sync(
        self, spec: StudySpec, model: StudyModel, views: list[TrialView]
    ) -> frozenset[str]:
        """Tell Optuna what finished and what was reported; which trials to prune."""

        def work() -> list[int]:
            model.sync(views)
            return model.to_prune()

        numbers = {v.number: v.name for v in views}
        prune = await self.lanes.run(self.lanes.sampler(spec), work)
        return frozenset(numbers[n] for n in prune if n in numbers)

    async def _invalid(
        self, key: Key, study: dict[str, Any], error: SpecError, now: datetime
    ) -> bool:
        """Report a spec error as the Invalid condition; nothing else happens."""
        meta = study["metadata"]
        status = self.status_memo.get(meta["uid"]) or study.get("status") or {}
        self.forget(meta["uid"])
        result = invalid(status, str(error), int(meta.get("generation") or 0), now)
        for event in result.events:
            self._event(study, event)
        await self._write_study(key, study, status, result, urgent=True)
        metrics.record_study(meta["uid"], result.status["phase"], status.get("trials"))
        return False

    # -- the model (Optuna) -------------------------------------------------------------------

    async def _model(
        self, key: Key, uid: str, spec: StudySpec, views: list[TrialView]
    ) -> StudyModel:
        model = self.models.get(uid)
        if model is not None and (model.spec.sampler, model.spec.pruner) != (
            spec.sampler,
            spec.pruner,
        ):
            model = None  # the sampler or pruner was changed: it applies from now on
        if model is None:
            warm = await self._warm_start(key, uid, spec)
            model = await self.lanes.run(
                self.lanes.sampler(spec), StudyModel.rebuild, spec, views, warm
            )
            self.models[uid] = model
            log.info(
                "rebuilt the Optuna study of %s/%s from %d trials (%d warm-start)",
                *key,
                len(views),
                len(warm),
            )
        return model

    async def _warm_start(self, key: Key, uid: str, spec: StudySpec) -> list[TrialView]:
        """The warm-start trials: this Study's snapshot, taken on its first rebuild."""
        if spec.warm_start is None:
            return []
        name = warmstart.config_map_name(key[1], uid)
        stored = await self._io(self.kube.get, "ConfigMap", key[0], name)
        if stored is None:
            views = self._warm_start_source(key, spec)
            owner = render.Owner(kind="Study", name=key[1], uid=uid)
            body = warmstart.snapshot(key[0], key[1], owner, spec.warm_start.from_study, views)
            created = await self._io(self.kube.create, body)
            if created is not None:
                return views
            # Another pass (or replica) took it first: learn from the one stored.
            stored = await self._io(self.kube.get, "ConfigMap", key[0], name)
            if stored is None:
                raise RuntimeError(f"warm-start snapshot {name} vanished after its create")
        return warmstart.restore(stored)

    def _warm_start_source(self, key: Key, spec: StudySpec) -> list[TrialView]:
        """The source Study's completed trials (from the cache), checked against this space."""
        assert spec.warm_start is not None
        namespace = key[0]
        source = spec.warm_start.from_study
        where = f"spec.warmStart.fromStudy: {source!r}"
        other = self.cache.snapshot((namespace, source))
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
        for trial in sorted(other.trials, key=lambda t: t.number):
            if trial.status.phase != "Completed" or trial.source == "repeat":
                continue
            problems = check_values(spec.parameters, trial.params)
            if problems:
                raise SpecError(
                    f"{where}: trial {trial.name} does not fit this search "
                    f"space ({'; '.join(problems)})"
                )
            views.append(
                TrialView(trial.name, trial.uid, trial.number, trial.params, trial.status, True)
            )
        return views

    async def _importance(
        self,
        key: Key,
        uid: str,
        model: StudyModel | None,
        status: dict[str, Any],
        result: Plan,
    ) -> None:
        """Parameter importance: refitted in the background every few minutes while
        running; at the end, before the final status is written (no trial waits then),
        so a finished Study shows its importance. The status carries the latest fit."""
        latest = self.importance.get(uid) or status.get("importance")
        if latest:
            result.status["importance"] = latest
        if model is None:
            return
        finished = result.status["phase"] in FINISHED
        last = self.importance_at.get(uid)
        clock = time.monotonic()
        stale = last is None or clock - last >= IMPORTANCE_EVERY_SECONDS
        ending = finished and status.get("phase") != result.status["phase"]
        if not (ending or (stale and (not finished or "importance" not in status))):
            return
        if uid in self.importance_pending and not ending:
            return  # at most one refit per Study waits in the worker's queue
        self.importance_at[uid] = clock
        dirs = directions(model.spec)

        async def fit() -> bool:
            self.importance_pending.add(uid)
            try:
                if ending:
                    trials = model.completed()
                    scores = await self.lanes.run(self.lanes.background, importance, dirs, trials)
                else:
                    scores = await self._throttled_refit(dirs, model)
            finally:
                self.importance_pending.discard(uid)
            if scores and scores != self.importance.get(uid):
                self.importance[uid] = scores
                return True
            return False

        if ending and not any(isinstance(a, CreateTrials) for a in result.actions):
            if await fit():
                result.status["importance"] = self.importance[uid]
            return

        async def refit() -> None:
            if await fit():
                self.trigger(*key)

        self._spawn(refit())

    async def _throttled_refit(
        self, dirs: Sequence[Literal["minimize", "maximize"]], model: StudyModel
    ) -> dict[str, float]:
        """A refit during a Study, in turn, keeping refits to IMPORTANCE_CPU_SHARE; it
        fits the trials finished when its turn comes, not when it was queued."""
        async with self.refit_turn:
            await asyncio.sleep(max(0.0, self.refit_free_at - time.monotonic()))
            trials = model.completed()
            started = time.monotonic()
            try:
                return await self.lanes.run(self.lanes.background, importance, dirs, trials)
            finally:
                took = time.monotonic() - started
                self.refit_free_at = time.monotonic() + took * (1 / IMPORTANCE_CPU_SHARE - 1)

    # -- actions ------------------------------------------------------------------------------

    def _ident(self, spec: StudySpec, meta: dict[str, Any], number: int) -> render.TrialIdentity:
        return render.TrialIdentity(meta["namespace"], meta["name"], number, _seed(spec, number))

    def _job(
        self,
        spec: StudySpec,
        ident: render.TrialIdentity,
        params: dict[str, Any],
        owner: render.Owner,
    ) -> dict[str, Any]:
        return kind_of(spec.trial_template).render(
            spec, ident, params, owner, self.settings.metrics_port, self.settings.restricted_trials
        )

    async def _validate_template(
        self, spec: StudySpec, study: dict[str, Any], generation: int
    ) -> None:
        """Dry-run the trial Job and pod once per generation: refusals become Invalid."""
        meta = study["metadata"]
        if self.validated.get(meta["uid"]) == generation:
            return
        kind = kind_of(spec.trial_template)
        if kind.kind not in self.watched_kinds:
            raise SpecError(
                f"spec.trialTemplate.kind: {kind.kind} trials need {kind.api_version} served "
                "when kubetune starts, and it was not: install JobSet, then restart kubetune"
            )
        ident = self._ident(spec, meta, 0)
        owner = render.Owner(kind="Study", name=meta["name"], uid=meta["uid"])
        job = self._job(spec, ident, render.sample_params(spec), owner)
        job["metadata"]["name"] = f"{meta['name']}-validate"
        refusal = await self._io(self.kube.validate, job, dry_run_pods(job))
        if refusal:
            raise SpecError(
                f"spec.trialTemplate: the API server refuses the trial's {job['kind']} "
                f"or its pods: {refusal}"
            )
        self.validated[meta["uid"]] = generation

    async def _write_trial(self, key: Key, write: WriteTrialStatus) -> None:
        stored = await self._io(
            self.kube.patch_status, "Trial", key[0], write.trial, write.status.to_k8s()
        )
        if stored is not None:
            self.cache.put(TrialRecord.parse(stored))

    def _queue_trial_write(self, key: Key, write: WriteTrialStatus) -> bool:
        """Write a trial's status in the background, the latest one, one write at a time.

        Beside the next trial's creation, not before it: until the write lands, each
        pass derives the same status again from the pod (which stays until then).
        """
        slot = (key, write.trial)
        body = write.status.to_k8s()
        # Until the write lands, each pass derives this status again, its GPU-seconds a
        # little higher: only news is queued behind the write in flight.
        for pending in (self.trial_inflight.get(slot), self.trial_wanted.get(slot)):
            if pending is not None and not significant(pending[0].status, write.status):
                return False
        self.trial_wanted[slot] = (write, body)
        if slot not in self.trial_inflight:
            self._spawn(self._trial_writer(slot))
        return True

    async def _trial_writer(self, slot: tuple[Key, str]) -> None:
        key = slot[0]
        try:
            while slot in self.trial_wanted:
                write, body = self.trial_wanted.pop(slot)
                self.trial_inflight[slot] = (write, body)
                try:
                    await self.creates_first.wait()
                    await self._write_trial(key, write)
                except Exception as e:
                    metrics.RECONCILE_ERRORS.inc()
                    log.warning("status of trial %s: %s; retrying", write.trial, e)
                    self._report_error(key, e)
                    self.trigger_after(key, 5.0)
                    return
                if write.result:
                    self.trigger(*key)  # recorded: its Job can go now
        finally:
            self.trial_inflight.pop(slot, None)

    async def _stop(self, key: Key, view: TrialView, action: StopTrial, now: datetime) -> None:
        """Record the stop first, then delete the Job: a stop is never forgotten."""
        status = stopped(view.status, action.phase, action.reason, action.message, now)
        await self._write_trial(key, WriteTrialStatus(view.name, status, result=True))
        await self._delete_job(key, DeleteJob(view.name, view.live_pods))

    async def _delete_job(self, key: Key, action: DeleteJob) -> None:
        grace = self.settings.stop_grace_seconds
        state = self.cache.studies.get(key)
        record = state.jobs.get(action.trial) if state is not None else None
        kind = record.kind if record is not None else "Job"
        await self._io(self.kube.delete, kind, key[0], action.trial, grace)
        # The garbage collector deletes the pods later; a running one is deleted now,
        # so its GPU is handed back at once (it still gets its grace period).
        await asyncio.gather(
            *(self._io(self.kube.delete, "Pod", key[0], pod, grace) for pod in action.pods)
        )
        if state is not None:
            state.jobs.pop(action.trial, None)

    async def _ensure_job(
        self, key: Key, spec: StudySpec, study: dict[str, Any], view: TrialView
    ) -> None:
        """A Trial without its Job (the operator stopped between the two creates)."""
        meta = study["metadata"]
        owner = render.Owner(kind="Study", name=meta["name"], uid=meta["uid"])
        ident = self._ident(spec, meta, view.number)
        job = await self._io(self.kube.create, self._job(spec, ident, view.params, owner))
        if job is not None:
            self.cache.put(JobRecord.parse(job))

    async def _create_trials(
        self,
        key: Key,
        spec: StudySpec,
        study: dict[str, Any],
        model: StudyModel,
        action: CreateTrials,
    ) -> bool:
        """Ask the sampler, then create the Trials and Jobs in the background.

        The new trials go into the cache at once as assumed objects (as the
        scheduler's assume cache does), so the next pass counts them and numbers
        past them while their creates are still in flight: a pod that ends meanwhile
        does not wait for this pass's API round trips.
        """
        meta = study["metadata"]
        if action.params is not None:  # seed repeats of the best trial: no sampler involved
            asked: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
                (dict(action.params), None)
            ] * action.count
            sources = [action.source] * action.count
            for number in action.numbers:
                model.skip(number)
        elif spec.sampler.name in REMOTE_SAMPLERS and not action.fixed:
            trials, attrs, warm = await self.lanes.run(
                self.lanes.sampler(spec), model.proposal_context
            )
            numbers = list(action.numbers)
            proposals = await self.lanes.run(
                self.lanes.remote, propose, study.get("spec") or {}, trials, attrs, warm, numbers
            )
            await self.lanes.run(
                self.lanes.sampler(spec), model.adopt_proposals, numbers, proposals
            )
            asked = [(params, state) for params, state in proposals]
            sources = ["sampler"] * action.count
        else:

            def ask() -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
                out: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
                asked = model.ask(action.count, list(action.fixed))
                for number, (trial, params) in zip(action.numbers, asked, strict=True):
                    model.adopt(number, trial)
                    out.append((params, model.sampler_state(number)))
                return out

            asked = await self.lanes.run(self.lanes.sampler(spec), ask)
            sources = [
                "enqueued" if i < len(action.fixed) else "sampler" for i in range(action.count)
            ]
        owner = render.Owner(kind="Study", name=meta["name"], uid=meta["uid"])
        for number, (params, state), source in zip(action.numbers, asked, sources, strict=True):
            ident = self._ident(spec, meta, number)
            trial = render.render_trial(ident, params, owner, source, state)
            # The Job is owned by the Study (not the Trial, whose uid is not known before
            # it exists), so both are created at once: one round trip on the critical
            # path, not two. A Job whose Trial failed to appear is an orphan the next
            # pass removes.
            job = self._job(spec, ident, params, owner)
            assumed = (TrialRecord.parse(_assumed(trial)), JobRecord.parse(_assumed(job)))
            for record in assumed:
                self.cache.put(record)
            self.creates_first.hold()  # released by _materialize once both creates return
            self._spawn(self._materialize(key, study, trial, job, assumed))
        return False

    async def _materialize(
        self,
        key: Key,
        study: dict[str, Any],
        trial: dict[str, Any],
        job: dict[str, Any],
        assumed: tuple[TrialRecord, JobRecord],
    ) -> None:
        uid = study["metadata"]["uid"]
        critical = self.lanes.critical
        try:
            results = await asyncio.gather(
                self.lanes.run(critical, self.kube.create, trial),
                self.lanes.run(critical, self.kube.create, job),
                return_exceptions=True,
            )
        finally:
            self.creates_first.release()
        created, made = results
        if isinstance(made, dict):
            self.cache.put(JobRecord.parse(made))
        if isinstance(created, dict):
            self.cache.put(TrialRecord.parse(created))
            freed = self.freed.get(uid)
            if freed:
                waited = time.monotonic() - freed.pop(0)
                metrics.TRIAL_CREATION.observe(waited)
                log.debug(
                    "%s created %.1f ms after a slot freed", trial["metadata"]["name"], waited * 1e3
                )
            if not isinstance(made, BaseException):
                return
        # A create failed, or the Trial existed already (another operator?): the Optuna
        # study holds a trial no Trial object backs. Forget the assumed objects and
        # rebuild the study from the Trials.
        for record in assumed:
            self.cache.remove(record)
        self.models.pop(uid, None)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is None:
            self.trigger(*key)
            return
        if _refusal(failure):
            # The API server refuses a rendered Trial or Job (a field of the wrong type
            # inside the free-form template, say): the spec must change, retrying won't help.
            assert isinstance(failure, ApiException)
            message = f"spec.trialTemplate: the API server refuses the trial: {api_error(failure)}"
            await self._invalid(key, study, SpecError(message), datetime.now(UTC))
            return
        metrics.RECONCILE_ERRORS.inc(sum(isinstance(r, BaseException) for r in results))
        log.warning("creating %s: %s; retrying", trial["metadata"]["name"], failure)
        self._report_error(key, failure)
        self.trigger_after(key, 1.0)

    async def _write_study(
        self,
        key: Key,
        study: dict[str, Any],
        current: dict[str, Any],
        result: Plan,
        urgent: bool = False,
    ) -> None:
        changed = _study_changed(current, result.status)
        if changed is None:
            return
        clock = time.monotonic()
        every = STATUS_EVERY_SECONDS if changed == "status" else GPU_HOURS_EVERY_SECONDS
        wait = self.status_at.get(key, -1e9) + every - clock
        if wait > 0 and not urgent and not _urgent(current, result.status):
            self.trigger_after(key, wait)  # write the latest status then
            return
        self.status_at[key] = clock
        self.status_memo[study["metadata"]["uid"]] = result.status
        wanted = key not in self.status_wanted
        self.status_wanted[key] = (study, result.status)
        if wanted and key not in self.status_writing:
            self._spawn(self._status_writer(key))

    async def _status_writer(self, key: Key) -> None:
        """Write a Study's latest wanted status in the background, one write at a time."""
        self.status_writing.add(key)
        try:
            while key in self.status_wanted:
                await self.creates_first.wait()
                study, status = self.status_wanted.pop(key)
                meta = study["metadata"]
                # A merge patch only removes what it sets to null: a best trial whose
                # params lack a conditional parameter would keep the previous one's.
                cached = self.cache.study(key) or {}
                old = _union(cached.get("status") or {}, self.status_written.get(key) or {})
                patch = _with_removals(old, status)
                try:
                    stored = await self._io(
                        self.kube.patch_status, "Study", meta["namespace"], meta["name"], patch
                    )
                    self.status_written[key] = status
                except Exception as e:
                    metrics.RECONCILE_ERRORS.inc()
                    log.warning("status of study %s/%s: %s; retrying", *key, e)
                    self.status_memo.pop(meta["uid"], None)  # not written: decide it again
                    self._report_error(key, e)
                    self.trigger_after(key, 5.0)
                    return
                if stored is not None:
                    self.cache.put_study(stored)
        finally:
            self.status_writing.discard(key)

    def _job_going(self, key: Key, name: str) -> bool:
        """The Job is being deleted already (its deletion seen by the watch)."""
        state = self.cache.studies.get(key)
        job = state.jobs.get(name) if state else None
        return job is not None and job.deleting

    async def _cleanup(self, key: Key, action: DeleteJob) -> None:
        try:
            await self.creates_first.wait()
            await self._delete_job(key, action)
        except Exception as e:
            log.warning("removing the Job of %s: %s; retrying", action.trial, e)
            self.trigger_after(key, 5.0)
            return
        finally:
            self.deleting.discard((key, action.trial))
        if action.orphan:
            self.trigger(*key)  # the trial it blocked can be created now

    # -- Prometheus -------------------------------------------------------------------------

    async def poll_metrics(self) -> None:
        """Read new intermediate values of running trials, one query per Study."""
        if self.prom is None:
            return
        clock = time.monotonic()
        for key, state in list(self.cache.studies.items()):
            if state.body is None or key in self.polling:
                continue
            if not any(p.observation.phase == "Running" for p in state.pods.values()):
                continue
            spec = self.specs.get(state.body["metadata"]["uid"])
            pruned = spec is not None and spec[1].pruner.name != "none"
            every = self.settings.poll_seconds if pruned else self.settings.poll_seconds_unpruned
            if clock - self.poll_clock.get(key, -1e9) < every:
                continue
            self.poll_clock[key] = clock
            self.polling.add(key)
            self._spawn(self._poll(key, state.body))

    async def _poll(self, key: Key, study: dict[str, Any]) -> None:
        assert self.prom is not None
        try:
            spec = self._spec(study)
        except SpecError:
            self.polling.discard(key)
            return
        state = self.cache.studies.get(key)
        trials = {
            t.name: t
            for t in (state.trials.values() if state else ())
            if not t.status.terminal and t.owner_uid == study["metadata"]["uid"]
        }
        now = time.time()
        since = self.polled_at.get(key)
        if since is None:
            starts = [t.status.start_time for t in trials.values() if t.status.start_time]
            since = min((s.timestamp() for s in starts), default=now) - 60
        # Overlap the previous window a little: a sample is stamped with its scrape's
        # start, and becomes queryable a moment later.
        window = now - since + 3
        try:
            found = await self.lanes.run(
                self.lanes.prometheus,
                self.prom.study_intermediate,
                key[0],
                key[1],
                spec.primary.metric,
                window,
            )
        except PrometheusError as e:
            metrics.PROMETHEUS_ERRORS.inc()
            if self.metrics_error.get(key) != str(e):
                log.warning("%s", e)
                self.metrics_error[key] = str(e)
                self.trigger(*key)
            return
        finally:
            self.polling.discard(key)
        self.polled_at[key] = now
        news = False
        scraped = self.scraped.setdefault(key, {})
        for name in list(scraped):
            if name not in trials:
                del scraped[name]
        for name, pairs in found.items():
            trial = trials.get(name)
            if trial is None:
                continue
            known = dict(trial.status.intermediate) | dict(scraped.get(name, []))
            new = [(s, v) for s, v in pairs if known.get(s) != v]
            if new:
                scraped[name] = sorted((dict(scraped.get(name, [])) | dict(new)).items())
                news = True
        if self.metrics_error.get(key) != "":
            self.metrics_error[key] = ""
            news = True
        if news:
            self.trigger(*key)


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Every key of either (values of `b` win; nested dicts merged)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _union(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with_removals(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from `old` to `new`: keys `new` lacks become null."""
    out = dict(new)
    for k, v in old.items():
        if k not in new:
            out[k] = None
        elif isinstance(v, dict) and isinstance(new[k], dict):
            out[k] = _with_removals(v, new[k])
    return out


def _assumed(body: dict[str, Any]) -> dict[str, Any]:
    """An object about to be created, as the cache holds it until the API server answers
    (no uid yet, resourceVersion 0: any real version of it replaces it)."""
    return {**body, "metadata": {**body["metadata"], "uid": "", "resourceVersion": "0"}}


def _refusal(error: BaseException) -> bool:
    """An API error that says the object itself is wrong (not a transient failure)."""
    return isinstance(error, ApiException) and error.status in (400, 422)


def _seed(spec: StudySpec, number: int) -> int:
    """A trial's seed: distinct per trial, reproducible for a seeded Study."""
    return ((spec.sampler.seed or 0) * 1_000_003 + number) % (2**31)
