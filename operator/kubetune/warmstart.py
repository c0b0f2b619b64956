"""Warm start: a snapshot of another Study's finished trials, taken when this Study starts.

The snapshot is a ConfigMap owned by the Study (`<study>-warm-start-<uid prefix>`: a
Study deleted and re-created under its name takes a new snapshot), so the
sampler this Study is rebuilt with after a restart learns from exactly the trials
it started with: the source Study may go on running, change, or be deleted. The
trials are stored gzipped (a ConfigMap holds at most 1 MiB); intermediate values
are dropped first if the snapshot would not fit, and a source too large even then
is refused with a message that says so.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from kubetune.labels import LABEL_STUDY
from kubetune.lifecycle import TrialStatus
from kubetune.plan import TrialView
from kubetune.render import MANAGED_BY, Owner
from kubetune.spec import SpecError

KEY = "trials.json.gz"
LIMIT = 1_000_000  # bytes of base64 the ConfigMap may carry (the API server's limit is 1 MiB)
SOURCE_ANNOTATION = "kubetune.dev/warm-start-from"


def config_map_name(study: str, uid: str) -> str:
    return f"{study}-warm-start-{uid[:8]}"


def snapshot(
    namespace: str, study: str, owner: Owner, source: str, views: list[TrialView]
) -> dict[str, Any]:
    """The ConfigMap that holds `views` (the source's trials, as this Study learns them)."""

    def encoded(intermediate: bool) -> str:
        rows = []
        for v in views:
            status = v.status.to_k8s()
            if not intermediate:
                status.pop("intermediate", None)
            rows.append({"name": v.name, "number": v.number, "params": v.params, "status": status})
        raw = json.dumps(rows, separators=(",", ":")).encode()
        return base64.b64encode(gzip.compress(raw, mtime=0)).decode()

    data = encoded(intermediate=True)
    if len(data) > LIMIT:
        data = encoded(intermediate=False)
    if len(data) > LIMIT:
        raise SpecError(
            f"spec.warmStart.fromStudy: {source!r} has too many trials ({len(views)}) "
            "to snapshot for a warm start; start from a smaller Study"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(study, owner.uid),
            "namespace": namespace,
            "labels": {LABEL_STUDY: study, **MANAGED_BY},
            "annotations": {SOURCE_ANNOTATION: source},
            "ownerReferences": [owner.reference()],
        },
        "binaryData": {KEY: data},
    }


def restore(config_map: dict[str, Any]) -> list[TrialView]:
    """The trials a snapshot holds, as the sampler learns them."""
    raw = gzip.decompress(base64.b64decode((config_map.get("binaryData") or {})[KEY]))
    return [
        TrialView(
            row["name"],
            "",
            int(row["number"]),
            dict(row["params"]),
            TrialStatus.from_k8s(row["status"]),
            True,
        )
        for row in json.loads(raw)
    ]
