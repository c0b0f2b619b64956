"""Kubernetes timestamps: RFC 3339 in UTC, `Z`-suffixed, as the API server writes them."""

from __future__ import annotations

from datetime import UTC, datetime

SECONDS = "%Y-%m-%dT%H:%M:%SZ"  # metav1.Time
MICROSECONDS = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime (Events, Leases)


def format_time(t: datetime, *, micro: bool = False) -> str:
    return t.strftime(MICROSECONDS if micro else SECONDS)


def parse_time(value: str | datetime | None) -> datetime | None:
    """A timestamp from the API (a string, or a datetime from the typed client)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
