"""Kopf handlers: unpack the event, hand it to the reconciler, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from kubetune import labels, startup

log = logging.getLogger("kubetune")
STUDIES = (labels.GROUP, labels.VERSION, "studies")


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    startup.configure_kopf(settings)
    config = startup.OperatorConfig.from_env()
    memo.operator = await startup.start(config, list(memo.get("namespaces") or []))


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await memo.operator.stop()


@kopf.on.event(*STUDIES)
async def on_study(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.operator.study_event(event["type"], event["object"])
