"""The one place that configures Kopf and builds the shared clients.

Only `on.event` handlers are used (the reconciler is level-triggered and keeps no
per-handler progress), so Kopf needs no progress storage and puts no finalizer
on Studies: deleting a Study never waits for the operator. The storages are set
to annotations anyway, so nothing is ever written into the strict status schema.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import kopf

from kubetune.adapters.kube import Kube, load_config
from kubetune.reconcile import Reconciler, Settings

PREFIX = "kubetune.dev"


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str | None
    metrics_port: int
    resync_seconds: float
    stop_grace_seconds: int
    restricted_trials: bool

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            prometheus_url=os.environ.get("KUBETUNE_PROMETHEUS_URL") or None,
            metrics_port=int(os.environ.get("KUBETUNE_TRIAL_METRICS_PORT", "9090")),
            resync_seconds=float(os.environ.get("KUBETUNE_RESYNC_SECONDS", "5")),
            stop_grace_seconds=int(os.environ.get("KUBETUNE_STOP_GRACE_SECONDS", "30")),
            restricted_trials=os.environ.get("KUBETUNE_RESTRICTED_TRIALS", "true").lower()
            != "false",
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
    settings.execution.max_workers = 8


def build_reconciler(config: OperatorConfig) -> Reconciler:
    kube = Kube(load_config())
    return Reconciler(
        kube,
        Settings(
            prometheus_url=config.prometheus_url,
            metrics_port=config.metrics_port,
            stop_grace_seconds=config.stop_grace_seconds,
            restricted_trials=config.restricted_trials,
        ),
    )
