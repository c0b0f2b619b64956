"""metav1.Condition helpers: the Study's status API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune.timestamps import format_time

INVALID = "Invalid"
RUNNING = "Running"
COMPLETED = "Completed"
FAILED = "Failed"
BOUNDARY = "SearchSpaceBoundary"
METRICS = "MetricsAvailable"


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """A new list with `kind` set; lastTransitionTime changes only when the status does."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == kind), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value else None
    new = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or format_time(now),
    }
    if old is None:
        return [*conditions, new]
    # In place: a stable order keeps an unchanged status byte-for-byte unchanged.
    return [new if c is old else c for c in conditions]


def get(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def is_true(conditions: list[dict[str, Any]], kind: str) -> bool:
    c = get(conditions, kind)
    return c is not None and c.get("status") == "True"
