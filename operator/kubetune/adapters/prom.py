"""Prometheus's HTTP API: a trial's intermediate values with their steps.

The trial SDK exports `kubetune_trial_metric{metric}` (latest value) and
`kubetune_trial_metric_step{metric}` (its step). Both are scraped together, so
samples with the same timestamp pair a value with its step. Raw samples come from
a range selector, which also finds series of pods that have finished (an instant
query skips them once Prometheus has marked them stale).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

import requests

log = logging.getLogger("kubetune.prometheus")


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _matrix(self, promql: str) -> list[dict[str, object]]:
        try:
            r = self.session.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
            )
            r.raise_for_status()
            body = r.json()
        except (requests.RequestException, ValueError) as e:
            raise PrometheusError(f"query {promql!r} failed: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r}: {body.get('error')}")
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def intermediate(
        self, namespace: str, trial: str, metric: str, since: datetime, now: datetime
    ) -> list[tuple[int, float]]:
        """(step, value) pairs the trial reported for `metric`, oldest first."""
        window = max(1, math.ceil((now - since).total_seconds()) + 60)
        sel = f'{{namespace="{namespace}", kubetune_dev_trial="{trial}", metric="{metric}"}}'
        values = self._matrix(f"kubetune_trial_metric{sel}[{window}s]")
        steps = self._matrix(f"kubetune_trial_metric_step{sel}[{window}s]")
        step_at: dict[float, int] = {}
        for series in steps:
            for ts, v in series["values"]:  # type: ignore[attr-defined]
                step_at[float(ts)] = int(float(v))
        by_step: dict[int, float] = {}
        for series in values:
            for ts, v in series["values"]:  # type: ignore[attr-defined]
                step = step_at.get(float(ts))
                if step is not None:
                    by_step[step] = float(v)
        return sorted(by_step.items())
