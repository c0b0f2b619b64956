"""The Kubernetes API, as the reconciler needs it (blocking calls; run them in threads).

Every write is idempotent: creates of deterministically named objects treat
AlreadyExists as success, deletes treat NotFound as success.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubetune.render import API_VERSION, GROUP, LABEL_STUDY, VERSION
from kubetune.timestamps import format_time

log = logging.getLogger("kubetune.kube")
MERGE = "application/merge-patch+json"


def load_config() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@dataclass
class Observed:
    """Everything the reconciler reads about one Study, in one go."""

    study: dict[str, Any]
    trials: list[dict[str, Any]]
    jobs: dict[str, dict[str, Any]]  # by Job name
    pods: dict[str, list[dict[str, Any]]]  # by job-name label


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.events = client.EventsV1Api(api)

    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            study: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "studies", name
            )
            return study
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def observe(self, namespace: str, name: str) -> Observed | None:
        study = self.get_study(namespace, name)
        if study is None:
            return None
        selector = f"{LABEL_STUDY}={name}"
        trials = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "trials", label_selector=selector
        )["items"]
        jobs = self.api.sanitize_for_serialization(
            self.batch.list_namespaced_job(namespace, label_selector=selector).items
        )
        pods = self.api.sanitize_for_serialization(
            self.core.list_namespaced_pod(namespace, label_selector=selector).items
        )
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            job = (pod["metadata"].get("labels") or {}).get("job-name")
            if job:
                by_job.setdefault(job, []).append(pod)
        return Observed(
            study=study,
            trials=[t for t in trials if _owned_by(t, study)],
            jobs={j["metadata"]["name"]: j for j in jobs},
            pods=by_job,
        )

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Trial or Job; None if it already existed (a repeated step)."""
        ns = body["metadata"]["namespace"]
        try:
            if body["kind"] == "Job":
                job = self.batch.create_namespaced_job(ns, body)
                created: dict[str, Any] = self.api.sanitize_for_serialization(job)
            else:
                created = self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, ns, "trials", body
                )
            return created
        except ApiException as e:
            if e.status == 409:
                return None
            raise

    def validate(self, job: dict[str, Any], pod: dict[str, Any]) -> str | None:
        """Server-side dry runs of a trial's Job and pod; the refusal's message, or None.

        Admission runs on dry runs too, so this catches a template that Pod Security
        (or any validating webhook) would refuse, before a Job silently makes no pods.
        """
        ns = job["metadata"]["namespace"]
        try:
            self.batch.create_namespaced_job(ns, job, dry_run="All")
            self.core.create_namespaced_pod(ns, pod, dry_run="All")
        except ApiException as e:
            if e.status in (400, 403, 422):
                try:
                    return str(json.loads(e.body).get("message") or e.reason)
                except (TypeError, ValueError):
                    return str(e.reason)
            raise
        return None

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        plural = {"Study": "studies", "Trial": "trials"}[kind]
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status}, _content_type=MERGE
        )

    def delete_job(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        """Delete a trial's Job and (foreground) its pods, giving them their grace period."""
        body = client.V1DeleteOptions(
            propagation_policy="Background", grace_period_seconds=grace_seconds
        )
        try:
            self.batch.delete_namespaced_job(name, namespace, body=body)
        except ApiException as e:
            if e.status != 404:
                raise
        # Background propagation deletes the pods later; delete them now so the
        # GPU is handed back at once (each pod still gets its grace period).
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        for pod in pods:
            try:
                self.core.delete_namespaced_pod(
                    pod.metadata.name, namespace, grace_period_seconds=grace_seconds
                )
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
            self.events.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:
            log.warning("could not post event %s for %s: %s", reason, meta["name"], e.reason)


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])
