"""The one place that configures Kopf and builds the operator's parts.

Kopf watches Studies (its `on.event` handler feeds the cache); our own
label-selected watches (watching.py) feed Trials, Jobs and Pods. Only
`on.event` handlers are used (the reconciler is level-triggered and keeps no
per-handler progress), so Kopf needs no progress storage and puts no finalizer
on Studies: deleting a Study never waits for the operator. The storages are set
to annotations anyway, so nothing is ever written into the strict status schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import kopf

from kubetune import metrics
from kubetune.adapters.kube import Kube, load_config
from kubetune.reconcile import FINISHED, Reconciler, Settings
from kubetune.watching import Watches

PREFIX = "kubetune.dev"
log = logging.getLogger("kubetune")
SYNC_TIMEOUT_SECONDS = 120.0


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str | None
    metrics_port: int
    resync_seconds: float
    stop_grace_seconds: int
    restricted_trials: bool
    job_retention_seconds: float
    failed_job_retention_seconds: float
    poll_seconds: float

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            prometheus_url=os.environ.get("KUBETUNE_PROMETHEUS_URL") or None,
            metrics_port=int(os.environ.get("KUBETUNE_TRIAL_METRICS_PORT", "9090")),
            resync_seconds=_env_float("KUBETUNE_RESYNC_SECONDS", 30.0),
            stop_grace_seconds=int(os.environ.get("KUBETUNE_STOP_GRACE_SECONDS", "30")),
            restricted_trials=os.environ.get("KUBETUNE_RESTRICTED_TRIALS", "true").lower()
            != "false",
            job_retention_seconds=_env_float("KUBETUNE_JOB_RETENTION_SECONDS", 0.0),
            failed_job_retention_seconds=_env_float(
                "KUBETUNE_FAILED_JOB_RETENTION_SECONDS", 3600.0
            ),
            poll_seconds=_env_float("KUBETUNE_METRICS_POLL_SECONDS", 1.0),
        )

    def settings(self) -> Settings:
        return Settings(
            prometheus_url=self.prometheus_url,
            metrics_port=self.metrics_port,
            stop_grace_seconds=self.stop_grace_seconds,
            restricted_trials=self.restricted_trials,
            job_retention_seconds=self.job_retention_seconds,
            failed_job_retention_seconds=self.failed_job_retention_seconds,
            poll_seconds=self.poll_seconds,
            poll_seconds_unpruned=max(self.poll_seconds, 5.0),
        )


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Our own Events say what happened; Kopf's log-to-Event posting is for warnings only.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Kopf waits this long for more events of one Study before handling them; our
    # reconciler coalesces by itself, so waiting only adds latency.
    settings.batching.batch_window = 0.01
    settings.execution.max_workers = 4


class Operator:
    """The running operator: cache, watches, reconciler and its periodic loops."""

    def __init__(self, config: OperatorConfig, namespaces: list[str]) -> None:
        self.config = config
        api = load_config()
        self.reconciler = Reconciler(Kube(api), config.settings())
        self.watches = Watches(api, self.reconciler, namespaces, asyncio.get_running_loop())
        self.loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # Sampler threads (a GP fit runs seconds of Python) hold the GIL in slices of the
        # switch interval; 1 ms instead of 5 keeps the event loop and the I/O threads,
        # which hand it back and forth on every request, from queueing behind them.
        sys.setswitchinterval(0.001)
        self.watches.start()
        synced = await asyncio.to_thread(self.watches.wait_synced, SYNC_TIMEOUT_SECONDS)
        if not synced:
            # Reconciling from a half-filled cache could re-create trials that exist.
            raise kopf.PermanentError("the Trial/Job/Pod watches did not sync; see the log")
        loop = asyncio.get_running_loop()
        self.loops = [
            loop.create_task(self._every(self.config.resync_seconds, self._resync)),
            loop.create_task(self._every(0.25, self.reconciler.poll_metrics)),
        ]
        if not self.config.prometheus_url:
            log.warning("KUBETUNE_PROMETHEUS_URL is not set: intermediate values are not collected")

    async def stop(self) -> None:
        for task in self.loops:
            task.cancel()
        for task in self.loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.watches.stop()
        self.reconciler.lanes.shutdown()

    def study_event(self, event: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        reconciler = self.reconciler
        if event == "DELETED":
            reconciler.cache.drop_study(*key)
            reconciler.forget(meta["uid"])
            reconciler.forget_key(key)
            metrics.record_study(meta["uid"], None, None)
            return
        if reconciler.cache.put_study(body):
            reconciler.trigger(*key)

    async def _resync(self) -> None:
        """Reconcile every Study now and then: a safety net for anything missed."""
        for key, state in list(self.reconciler.cache.studies.items()):
            if state.body is None:
                continue
            phase = (state.body.get("status") or {}).get("phase")
            if phase not in FINISHED or state.jobs:
                self.reconciler.trigger(*key)

    async def _every(self, seconds: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except Exception:
                log.exception("periodic %s failed", getattr(fn, "__name__", fn))


async def start(config: OperatorConfig, namespaces: list[str]) -> Operator:
    operator = Operator(config, namespaces)
    await operator.start()
    return operator
