"""Label-selected list+watch of one resource, as a thread (a minimal informer).

Why our own and not Kopf's: Kopf filters labels client-side, so a handler for
trial pods would stream every pod of the cluster. Here the API server filters
(`labelSelector=kubetune.dev/study`), the stream is read as raw JSON (no typed
client models), and each object is parsed into a compact record in this thread,
so the event loop only receives small records.

The protocol is the API server's: LIST (paged) to get a resourceVersion, then
WATCH from it with bookmarks; `410 Gone` or any broken stream means relist.
Every request has a client-side timeout, so a hung connection cannot stall it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune.adapters.kube import request

log = logging.getLogger("kubetune.watch")

WATCH_SECONDS = 290  # server-side watch timeout; the client waits a little longer
LIST_PAGE = 500


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: /api/v1 (core) or /apis/GROUP/VERSION."""

    prefix: str
    plural: str

    def path(self, namespace: str | None) -> str:
        if namespace:
            return f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.prefix}/{self.plural}"


PODS = Resource("/api/v1", "pods")
JOBS = Resource("/apis/batch/v1", "jobs")


class Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


class Informer(threading.Thread):
    """Keeps calling `on_event(type, obj)` (ADDED/MODIFIED/DELETED) and `on_relist(objs)`.

    Both callbacks run in this thread; they are expected to parse and hand over
    to the event loop (loop.call_soon_threadsafe).
    """

    def __init__(
        self,
        api: client.ApiClient,
        resource: Resource,
        namespace: str | None,
        label_selector: str,
        on_relist: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__(name=f"watch-{resource.plural}-{namespace or 'all'}", daemon=True)
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.selector = label_selector
        self.on_relist = on_relist
        self.on_event = on_event
        self.timeout = request_timeout
        self.synced = threading.Event()
        self.stopping = threading.Event()

    def _get(self, query: list[tuple[str, Any]], read_timeout: float) -> Any:
        return request(
            self.api,
            "GET",
            self.resource.path(self.namespace),
            query=query,
            timeout=(min(10.0, self.timeout), read_timeout),
        )

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("labelSelector", self.selector), ("limit", LIST_PAGE)]
            if token:
                query.append(("continue", token))
            resp = self._get(query, self.timeout)
            body = json.loads(resp.data)
            items += body.get("items") or []
            token = (body.get("metadata") or {}).get("continue") or ""
            if not token:
                return items, str(body["metadata"]["resourceVersion"])

    def _watch(self, rv: str) -> str:
        query = [
            ("labelSelector", self.selector),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", rv),
            ("timeoutSeconds", WATCH_SECONDS),
        ]
        resp = self._get(query, WATCH_SECONDS + 30)
        try:
            buffer = b""
            for chunk in resp.stream(amt=65536, decode_content=False):
                if self.stopping.is_set():
                    return rv
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        rv = self._handle(json.loads(line), rv)
        finally:
            resp.release_conn()
        return rv

    def _handle(self, event: dict[str, Any], rv: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message"))
            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(kind, obj)
        return new_rv

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                items, rv = self._list()
                self.on_relist(items)
                self.synced.set()
                backoff = 0.5
                while not self.stopping.is_set():
                    rv = self._watch(rv)
            except Gone:
                log.debug("%s: resourceVersion too old, relisting", self.name)
            except Exception as e:  # any broken stream or API error: relist after a pause
                if self.stopping.is_set():
                    return
                log.warning("%s: %s; relisting in %.1fs", self.name, e, backoff)
                self.stopping.wait(backoff)
                # Capped low: while the cache is stale no trial turns over, and one
                # operator relisting its own label-selected objects costs the server little.
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self.stopping.set()
