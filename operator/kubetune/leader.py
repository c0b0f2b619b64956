"""Leader election on a coordination.k8s.io Lease, so only one replica acts.

A replica waits until it holds the Lease, then runs the operator and renews the
Lease in a thread. If a renewal fails for longer than the lease lasts (another
replica may have taken over), the process exits at once rather than act beside
the new leader: all state is in the API server, so the restart loses nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune.timestamps import format_time, parse_time

log = logging.getLogger("kubetune.leader")


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
    ) -> None:
        self.coord = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds

    def _try(self) -> bool:
        """One attempt to take or keep the Lease; True if we hold it afterwards."""
        now = _now()
        stamp = format_time(now, micro=True)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": stamp,
        }
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            body = {
                "metadata": {"name": self.name},
                "spec": {
                    **spec,
                    "acquireTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            try:
                self.coord.create_namespaced_lease(self.namespace, body)
                return True
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        holder = lease.spec.holder_identity
        renewed = parse_time(lease.spec.renew_time) or datetime.min.replace(tzinfo=UTC)
        duration = lease.spec.lease_duration_seconds or self.lease_seconds
        if holder != self.identity and now < renewed + timedelta(seconds=duration):
            return False  # someone else holds a live lease
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = (lease.spec.lease_transitions or 0) + 1
            log.info("taking over the lease from %s", holder or "nobody")
        body = {
            "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
            "spec": {**self._spec_dict(lease), **spec},
        }
        try:  # resourceVersion makes this a compare-and-swap: one replica wins
            self.coord.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    @staticmethod
    def _spec_dict(lease: Any) -> dict[str, Any]:
        spec = lease.spec
        out: dict[str, Any] = {}
        acquired = parse_time(spec.acquire_time)
        if acquired is not None:
            out["acquireTime"] = format_time(acquired, micro=True)
        if spec.lease_transitions is not None:
            out["leaseTransitions"] = spec.lease_transitions
        return out

    def acquire(self) -> None:
        log.info("waiting to lead as %s (lease %s/%s)", self.identity, self.namespace, self.name)
        while True:
            try:
                if self._try():
                    log.info("leading as %s", self.identity)
                    return
            except Exception as e:  # the API server may be restarting
                log.warning("lease: %s", e)
            time.sleep(self.renew_seconds / 2)

    def release(self) -> None:
        """Hand the Lease back on a clean shutdown, so a standby leads at once instead
        of waiting for it to expire (as client-go's ReleaseOnCancel does)."""
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            body = {
                "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
                "spec": {
                    **self._spec_dict(lease),
                    "leaseDurationSeconds": 1,
                    "renewTime": format_time(_now(), micro=True),
                },
            }
            self.coord.replace_namespaced_lease(self.name, self.namespace, body)
            log.info("released the lease")
        except Exception as e:  # best effort: the Lease expires anyway
            log.warning("could not release the lease: %s", e)

    def keep(self) -> threading.Thread:
        """Renew in the background; exit the process if the Lease is lost."""

        def loop() -> None:
            last_ok = time.monotonic()
            while True:
                time.sleep(self.renew_seconds)
                try:
                    if self._try():
                        last_ok = time.monotonic()
                        continue
                    log.error("lost the lease to another replica; exiting")
                except Exception as e:
                    log.warning("lease renewal failed: %s", e)
                    if time.monotonic() - last_ok < self.lease_seconds:
                        continue
                    log.error("could not renew the lease for %ss; exiting", self.lease_seconds)
                os._exit(3)

        thread = threading.Thread(target=loop, name="leader-lease", daemon=True)
        thread.start()
        return thread


class Liveness:
    """Answers the liveness probe while a standby waits for the Lease.

    Kopf serves the probe only once it runs, and a standby does not run Kopf until
    it leads; without this, a kubelet would restart every standby over and over.
    The server is closed before Kopf opens the same address.
    """

    def __init__(self, endpoint: str | None) -> None:
        self.server: ThreadingHTTPServer | None = None
        if not endpoint:
            return
        url = urlsplit(endpoint)
        path = url.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path.split("?")[0] == path else 404)
                self.end_headers()
                self.wfile.write(b'{"standby": true}')

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per probe is noise

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Handler)  # noqa: S104
        threading.Thread(target=self.server.serve_forever, name="liveness", daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
