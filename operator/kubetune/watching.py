"""The watches that fill the cache: Trials, trial Jobs (and JobSets) and Pods, label-selected.

One informer per resource (per watched namespace, or cluster-wide). Objects are
parsed into compact records in the informer's thread; the cache is changed and
the Study triggered on the event loop's thread. An event that tells the cache
nothing new (the echo of the operator's own write) triggers nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune.adapters.kube import request
from kubetune.adapters.watch import JOBS, PODS, Informer, Resource
from kubetune.cache import JobRecord, JobSetRecord, PodRecord, Record, TrialRecord
from kubetune.labels import LABEL_STUDY
from kubetune.reconcile import Reconciler
from kubetune.render import API_VERSION
from kubetune.workloads import JOBSET_API

log = logging.getLogger("kubetune.watching")
ENDED = ("Succeeded", "Failed")
TRIALS = Resource(f"/apis/{API_VERSION}", "trials")
KINDS: tuple[tuple[Resource, type[Record]], ...] = (
    (TRIALS, TrialRecord),
    (JOBS, JobRecord),
    (PODS, PodRecord),
)
JOBSETS = Resource(f"/apis/{JOBSET_API}", "jobsets")


def served(api: client.ApiClient, resource: Resource) -> bool:
    """Whether the API server serves `resource` (an add-on's CRD may not be installed)."""
    try:
        request(api, "GET", resource.prefix).release_conn()
    except ApiException as e:
        if e.status != 404:
            log.warning("cannot tell whether %s is served (%s): not watching it", resource, e)
        return False
    return True


class Watches:
    def __init__(
        self,
        api: client.ApiClient,
        reconciler: Reconciler,
        namespaces: list[str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.reconciler = reconciler
        self.loop = loop
        kinds = list(KINDS)
        # JobSet trials need JobSet's CRD; without it their Studies are told so (Invalid)
        # when the trial template is validated, and nothing is watched here.
        if served(api, JOBSETS):
            kinds.append((JOBSETS, JobSetRecord))
            reconciler.watched_kinds.add("JobSet")
        else:
            log.info("%s is not served: JobSet trials are unavailable", JOBSET_API)
        self.informers = [
            Informer(
                api,
                resource,
                namespace,
                LABEL_STUDY,
                on_relist=self._relister(kind, namespace),
                on_event=self._eventer(kind),
            )
            for resource, kind in kinds
            for namespace in (list[str | None](namespaces) or [None])
        ]

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Block until every informer has listed once (call from a thread)."""
        return all(i.synced.wait(timeout) for i in self.informers)

    # -- callbacks: parse in the informer's thread, apply on the loop ----------------------

    def _eventer(self, kind: type[Record]) -> Callable[[str, dict[str, Any]], None]:
        def on_event(event: str, obj: dict[str, Any]) -> None:
            try:
                record = kind.parse(obj)
            except (KeyError, TypeError, ValueError) as e:  # a malformed object: skip it
                log.warning("ignoring a %s event: %s", kind.__name__, e)
                return
            self.loop.call_soon_threadsafe(self._apply, event, record)

        return on_event

    def _relister(
        self, kind: type[Record], namespace: str | None
    ) -> Callable[[list[dict[str, Any]]], None]:
        def on_relist(objs: list[dict[str, Any]]) -> None:
            records = []
            for obj in objs:
                try:
                    records.append(kind.parse(obj))
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("ignoring a listed %s: %s", kind.__name__, e)
            self.loop.call_soon_threadsafe(self._replace, kind, namespace, records)

        return on_relist

    def _apply(self, event: str, record: Record) -> None:
        cache = self.reconciler.cache
        key = (record.namespace, record.study)
        if isinstance(record, PodRecord) and record.observation.phase in ENDED:
            state = cache.studies.get(key)
            old = state.pods.get(record.uid) if state else None
            if (old is None or old.observation.phase not in ENDED) and record.trial:
                ended = self.reconciler.pods_ended.setdefault(key, {})
                ended.setdefault(record.trial, time.monotonic())
        if event == "DELETED":
            cache.remove(record)
            changed = True
        else:
            changed = cache.put(record)
        if changed and cache.study((record.namespace, record.study)) is not None:
            self.reconciler.trigger(record.namespace, record.study)

    def _replace(self, kind: type[Record], namespace: str | None, records: list[Record]) -> None:
        cache = self.reconciler.cache
        for key in cache.replace(kind, namespace, records):
            if cache.study(key) is not None:
                self.reconciler.trigger(*key)
