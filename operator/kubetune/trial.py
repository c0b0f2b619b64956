"""The trial SDK: what a training program uses to take part in a kubetune Study.

Two lines in a training script::

    from kubetune import trial
    params = trial.params()                      # {"lr": 0.01, "layers": 3, ...}
    ...
    trial.report(epoch, val_accuracy=acc, val_loss=loss)   # every epoch

This module imports nothing heavier than prometheus-client, so any training image
can carry it. The contract it implements (for other languages, see the README):

* In: ``KUBETUNE_PARAMS`` (JSON object of parameter values), ``KUBETUNE_TRIAL_NAME``,
  ``KUBETUNE_TRIAL_NUMBER``, ``KUBETUNE_STUDY_NAME``, ``KUBETUNE_METRICS_ADDR`` and
  ``KUBETUNE_METRICS_PORT`` (where to serve metrics), ``KUBETUNE_TERMINATION_LOG``.
* Out, for Prometheus: gauges ``kubetune_trial_metric{metric="<name>"}`` (latest
  value) and ``kubetune_trial_metric_step{metric="<name>"}`` (the step it belongs
  to), served on ``KUBETUNE_METRICS_ADDR:KUBETUNE_METRICS_PORT``.
* Out, exactly: after every report the termination message file holds
  ``{"step": N, "metrics": {...}, "intermediate": {"<name>": [[step, value], ...]}}``
  (the last report's metrics are the trial's final metrics; ``intermediate`` is
  trimmed, oldest first, to fit the kubelet's 4096-byte limit). NaN and infinite
  values are written as JSON's ``NaN``/``Infinity`` and mean the trial diverged.
* SIGTERM means "pruned or preempted": :func:`should_stop` turns True; finish the
  step, report, and exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

MAX_TERMINATION_MESSAGE = 4096
# More pairs than this never fit in a termination message (each takes 10+ bytes).
HISTORY_KEPT = 400

_lock = threading.Lock()
_stop = threading.Event()
_state: dict[str, Any] = {"started": False, "history": {}, "registry": None}


def params() -> dict[str, Any]:
    """This trial's parameter values (absent conditional parameters are missing)."""
    raw = os.environ.get("KUBETUNE_PARAMS", "{}")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"KUBETUNE_PARAMS must be a JSON object, got {raw[:80]!r}")
    return value


def trial_name() -> str:
    return os.environ.get("KUBETUNE_TRIAL_NAME", "")


def trial_number() -> int:
    return int(os.environ.get("KUBETUNE_TRIAL_NUMBER", "0") or 0)


def seed(default: int = 0) -> int:
    """A seed for this trial (``KUBETUNE_TRIAL_SEED``; repeats of the best trial differ)."""
    return int(os.environ.get("KUBETUNE_TRIAL_SEED", default) or default)


def should_stop() -> bool:
    """True once SIGTERM arrived (the trial was pruned, preempted or the study ended)."""
    return _stop.is_set()


def _on_sigterm(signum: int, frame: object) -> None:
    _stop.set()


def _start() -> None:
    """Serve metrics and catch SIGTERM; once, on the first report."""
    if _state["started"]:
        return
    _state["started"] = True
    registry = CollectorRegistry()
    _state["value"] = Gauge(
        "kubetune_trial_metric",
        "Latest reported value of a trial metric",
        ["metric"],
        registry=registry,
    )
    _state["step"] = Gauge(
        "kubetune_trial_metric_step",
        "Step of the latest reported value",
        ["metric"],
        registry=registry,
    )
    _state["registry"] = registry
    # Serve only inside a trial (the operator sets the port): a local run opens no socket.
    port = int(os.environ.get("KUBETUNE_METRICS_PORT", "0") or 0)
    addr = os.environ.get("KUBETUNE_METRICS_ADDR", "0.0.0.0")  # noqa: S104 - the pod IP when set
    if port > 0:
        try:
            start_http_server(port, addr=addr, registry=registry)
        except OSError as e:  # metrics are best effort; the termination message is exact
            print(f"kubetune.trial: cannot serve metrics on {addr}:{port}: {e}", flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def install_sigterm_handler() -> None:
    """Catch SIGTERM early (before the first report), so a pruned trial exits cleanly."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def report(step: int, **metrics: float) -> None:
    """Report metric values for `step` (an epoch, say). The last report is final."""
    if not metrics:
        raise ValueError("report() needs at least one metric, e.g. report(3, val_accuracy=0.9)")
    with _lock:
        _start()
        history: dict[str, list[list[float]]] = _state["history"]
        for name, value in metrics.items():
            v = float(value)
            _state["value"].labels(metric=name).set(v)
            _state["step"].labels(metric=name).set(step)
            series = history.setdefault(name, [])
            if series and series[-1][0] == step:
                series[-1][1] = v
            else:
                series.append([step, v])
                if len(series) > 2 * HISTORY_KEPT:
                    del series[:HISTORY_KEPT]  # amortised O(1): only the newest can be sent
        _write_termination_message(step, {k: float(v) for k, v in metrics.items()}, history)


def last_step() -> int | None:
    """The step of the latest report, or None before the first."""
    with _lock:
        steps = [int(series[-1][0]) for series in _state["history"].values() if series]
    return max(steps) if steps else None


def termination_message(
    step: int, metrics: dict[str, float], history: dict[str, list[list[float]]]
) -> str:
    """The JSON document, the newest intermediate values that fit in 4096 bytes.

    Costs the same at step 10 and step 100,000: pairs are taken newest first,
    round-robin over the metrics, by their serialised size, and at most the
    newest HISTORY_KEPT pairs of a metric are ever looked at.
    """
    base = json.dumps({"step": step, "metrics": metrics, "intermediate": {}}, separators=(",", ":"))
    budget = MAX_TERMINATION_MESSAGE - len(base.encode())
    newest = {k: v[-HISTORY_KEPT:] for k, v in history.items()}
    budget -= sum(len(json.dumps(k).encode()) + 4 for k in newest)  # "name":[],
    taken: dict[str, int] = dict.fromkeys(newest, 0)
    progress = True
    while progress:
        progress = False
        for name, series in newest.items():
            n = taken[name]
            if n < len(series):
                cost = len(json.dumps(series[-1 - n], separators=(",", ":")).encode()) + 1
                if cost <= budget:
                    budget -= cost
                    taken[name] = n + 1
                    progress = True
    while True:
        kept = {k: v[len(v) - taken[k] :] for k, v in newest.items() if taken[k]}
        doc = json.dumps(
            {"step": step, "metrics": metrics, "intermediate": kept}, separators=(",", ":")
        )
        if len(doc.encode()) <= MAX_TERMINATION_MESSAGE or not kept:
            return doc
        longest = max(kept, key=lambda k: taken[k])  # an estimate was off: drop one more
        taken[longest] -= 1


def _write_termination_message(
    step: int, metrics: dict[str, float], history: dict[str, list[list[float]]]
) -> None:
    doc = termination_message(step, metrics, history)
    explicit = os.environ.get("KUBETUNE_TERMINATION_LOG")
    if not explicit and not trial_name():
        return  # not in a trial: leave the machine's /dev alone
    path = Path(explicit or "/dev/termination-log")
    try:
        path.write_text(doc)
    except OSError as e:
        print(f"kubetune.trial: cannot write {path}: {e}; final metrics: {doc}", flush=True)
