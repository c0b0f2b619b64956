"""Kopf handlers: unpack the event, trigger the reconciler, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from kubetune import render, startup
from kubetune.reconcile import Reconciler

log = logging.getLogger("kubetune")
STUDIES = (render.GROUP, render.VERSION, "studies")
FINISHED = ("Succeeded", "Failed")


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    startup.configure_kopf(settings)
    config = startup.OperatorConfig.from_env()
    memo.reconciler = startup.build_reconciler(config)
    memo.active = {}
    memo.resync = asyncio.get_running_loop().create_task(
        _resync(memo.reconciler, memo.active, config.resync_seconds)
    )
    if not config.prometheus_url:
        log.warning("KUBETUNE_PROMETHEUS_URL is not set: intermediate values are not collected")


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.resync


@kopf.on.event(*STUDIES)
async def on_study(
    event: kopf.RawEvent,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None  # Studies are namespaced
    if event["type"] == "DELETED":
        memo.active.pop((namespace, name), None)
        memo.reconciler.forget(body["metadata"]["uid"])
        return
    if (body.get("status") or {}).get("phase") in FINISHED:
        memo.active.pop((namespace, name), None)
    else:
        memo.active[(namespace, name)] = True
    memo.reconciler.trigger(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={render.LABEL_STUDY: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={render.LABEL_STUDY: kopf.PRESENT})
async def on_trial_child(
    labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    assert namespace is not None  # pods and Jobs are namespaced
    # A trial's pod terminating frees its slot: reconcile now, not at the next resync.
    memo.reconciler.trigger(namespace, labels[render.LABEL_STUDY])


async def _resync(
    reconciler: Reconciler, active: dict[tuple[str, str], bool], every: float
) -> None:
    """Reconcile unfinished Studies periodically: Prometheus values, missed events."""
    while True:
        await asyncio.sleep(every)
        for namespace, name in list(active):
            reconciler.trigger(namespace, name)
