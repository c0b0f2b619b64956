"""Prometheus's HTTP API: new intermediate values of a Study's running trials.

The trial SDK exports `kubetune_trial_metric{metric}` (latest value) and
`kubetune_trial_metric_step{metric}` (its step), scraped together, so samples
with the same timestamp pair a value with its step. One range query per Study
fetches both series of every trial (selected by the pods' study label), over a
window that only reaches back to the previous query: the cost of a poll does
not grow with the age of the trials. A range selector also finds series of pods
that have just finished (an instant query skips them once they are stale).
"""

from __future__ import annotations

import logging
import math

import requests

log = logging.getLogger("kubetune.prometheus")

VALUE = "kubetune_trial_metric"
STEP = "kubetune_trial_metric_step"
TRIAL_LABEL = "kubetune_dev_trial"  # the pod label kubetune.dev/trial, as Prometheus names it
STUDY_LABEL = "kubetune_dev_study"


class PrometheusError(RuntimeError):
    pass


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def study_query(namespace: str, study: str, metric: str, window_seconds: float) -> str:
    """One PromQL range selector for both series of every trial of a Study."""
    window = max(2, math.ceil(window_seconds))
    return (
        f'{{__name__=~"{VALUE}|{STEP}", namespace="{_quote(namespace)}", '
        f'{STUDY_LABEL}="{_quote(study)}", metric="{_quote(metric)}"}}[{window}s]'
    )


def pair_steps(result: list[dict[str, object]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs per trial from a matrix of value and step series, by step."""
    steps: dict[str, dict[float, int]] = {}
    values: dict[str, list[tuple[float, float]]] = {}
    for series in result:
        labels: dict[str, str] = series["metric"]  # type: ignore[assignment]
        trial = labels.get(TRIAL_LABEL)
        if not trial:
            continue
        samples: list[list[object]] = series["values"]  # type: ignore[assignment]
        if labels.get("__name__") == STEP:
            at = steps.setdefault(trial, {})
            for ts, v in samples:
                at[float(ts)] = int(float(v))  # type: ignore[arg-type]
        else:
            values.setdefault(trial, []).extend(
                (float(ts), float(v))  # type: ignore[arg-type]
                for ts, v in samples
            )
    out: dict[str, list[tuple[int, float]]] = {}
    for trial, pairs in values.items():
        step_at = steps.get(trial, {})
        by_step: dict[int, float] = {}
        for ts, value in sorted(pairs):
            step = step_at.get(ts)
            if step is not None:
                by_step[step] = value
        if by_step:
            out[trial] = sorted(by_step.items())
    return out


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def query(self, promql: str) -> list[dict[str, object]]:
        try:
            r = self.session.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
            )
            r.raise_for_status()
            body = r.json()
        except (requests.RequestException, ValueError) as e:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r}: {body.get('error')}")
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def study_intermediate(
        self, namespace: str, study: str, metric: str, window_seconds: float
    ) -> dict[str, list[tuple[int, float]]]:
        """Each trial's (step, value) pairs seen in the last `window_seconds`."""
        return pair_steps(self.query(study_query(namespace, study, metric, window_seconds)))
