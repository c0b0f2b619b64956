"""The Kubernetes API writes the reconciler makes (blocking calls; run them in threads).

Reads come from the watch-fed cache, never from here. Every write is
idempotent (creates of deterministically named objects report AlreadyExists as
None, deletes treat NotFound as success), returns the object the API server
stored (so the cache learns our own writes at once), and has a timeout.
Bodies and responses are plain JSON: the typed client's models cost
milliseconds per object and reject bodies the API server would accept.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubetune import metrics
from kubetune.labels import GROUP, VERSION
from kubetune.render import API_VERSION
from kubetune.timestamps import format_time
from kubetune.workloads import JOBSET_API

log = logging.getLogger("kubetune.kube")
MERGE = "application/merge-patch+json"
CUSTOM = f"/apis/{GROUP}/{VERSION}"
PLURALS = {"Study": "studies", "Trial": "trials"}


def load_config(pool_size: int = 32) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig.

    The connection pool must hold the watches' long-lived connections and the
    I/O threads' requests at once, or requests queue behind each other.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def api_error(e: ApiException) -> str:
    """The API server's message (a Status object's `message`), else the HTTP reason."""
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: tuple[float, float] = (5.0, 15.0),
) -> Any:
    """One raw API request with the client's credentials; the urllib3 response, unread.

    Raises ApiException for any answer but 2xx, as the typed client does.
    """
    method, url, headers, serialized, _ = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, serialized, _request_timeout=timeout).response
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return response


class Kube:
    def __init__(self, api: client.ApiClient, timeout: float = 15.0) -> None:
        self.api = api
        self.timeout = timeout

    def _call(
        self,
        method: str,
        path: str,
        resource: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        metrics.API_REQUESTS.labels(verb=method.lower(), resource=resource).inc()
        resp = request(
            self.api,
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=(min(5.0, self.timeout), self.timeout),
        )
        data = resp.data
        out: dict[str, Any] = json.loads(data) if data else {}
        return out

    @staticmethod
    def _path(kind: str, namespace: str, name: str = "") -> str:
        if kind == "Job":
            base = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        elif kind == "JobSet":
            base = f"/apis/{JOBSET_API}/namespaces/{namespace}/jobsets"
        elif kind == "Pod":
            base = f"/api/v1/namespaces/{namespace}/pods"
        elif kind == "ConfigMap":
            base = f"/api/v1/namespaces/{namespace}/configmaps"
        elif kind == "Event":
            base = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        else:
            base = f"{CUSTOM}/namespaces/{namespace}/{PLURALS[kind]}"
        return f"{base}/{name}" if name else base

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Trial, Job or ConfigMap; None if it already existed (a repeated step)."""
        kind, ns = body["kind"], body["metadata"]["namespace"]
        try:
            return self._call("POST", self._path(kind, ns), kind.lower(), body)
        except ApiException as e:
            if e.status == 409:
                return None
            raise

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object (only for what no watch carries: a warm-start snapshot); None if absent."""
        try:
            return self._call("GET", self._path(kind, namespace, name), kind.lower())
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def validate(self, workload: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
        """Server-side dry runs of a trial's workload (Job, JobSet) and of its pods; the
        refusal's message, or None.

        Admission runs on dry runs too, so this catches a template that Pod Security
        (or any validating webhook) would refuse, before a Job silently makes no pods.
        """
        ns = workload["metadata"]["namespace"]
        try:
            for body in (workload, *pods):
                kind = body["kind"]
                self._call("POST", self._path(kind, ns), kind.lower(), body, [("dryRun", "All")])
        except ApiException as e:
            if e.status == 404 and workload["kind"] != "Job":
                return (
                    f"the API server does not serve {workload['apiVersion']} "
                    f"{workload['kind']}: install its controller (and restart kubetune)"
                )
            if e.status in (400, 403, 422):
                return api_error(e)
            raise
        return None

    def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the stored object, or None if it is gone."""
        try:
            return self._call(
                "PATCH",
                self._path(kind, namespace, name) + "/status",
                f"{kind.lower()}/status",
                {"status": status},
                content_type=MERGE,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete(
        self, kind: str, namespace: str, name: str, grace_seconds: int | None = None
    ) -> None:
        """Delete a Job or JobSet (its pods follow through the garbage collector) or a Pod."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self._call("DELETE", self._path(kind, namespace, name), kind.lower(), body)
        except ApiException as e:
            if e.status != 404:
                raise

    def event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event about `obj` (best effort: never fails a reconcile)."""
        meta = obj["metadata"]
        now = datetime.now(UTC)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # generateName would be validated with its trailing dot and refused.
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "eventTime": format_time(now, micro=True),
            "reportingController": "kubetune.dev/operator",
            "reportingInstance": "kubetune-operator",
            "action": reason,
            "reason": reason,
            "type": kind,
            "note": message[:1024],
            "regarding": {
                "apiVersion": obj.get("apiVersion", API_VERSION),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
        }
        try:
            self._call("POST", self._path("Event", meta["namespace"]), "event", body)
        except Exception as e:  # an Event is never worth failing or blocking a pass for
            log.warning("could not post event %s for %s: %s", reason, meta["name"], e)
