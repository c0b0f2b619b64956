"""The operator's own Prometheus metrics (served when KUBETUNE_OPERATOR_METRICS_PORT is set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STUDIES = Gauge("kubetune_studies", "Studies by phase", ["phase"])
TRIALS = Gauge("kubetune_trials", "Trials by state, over all Studies", ["state"])
TRIAL_CREATION = Histogram(
    "kubetune_trial_creation_latency_seconds",
    "From the operator seeing a trial's slot free (its pod ended) to the next trial's Job created",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ASK = Histogram(
    "kubetune_sampler_ask_seconds",
    "Time to propose one trial (Optuna ask + sampling)",
    ["sampler"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
)
PROMETHEUS_ERRORS = Counter("kubetune_prometheus_query_errors_total", "Failed Prometheus queries")
RECONCILE_ERRORS = Counter(
    "kubetune_reconcile_errors_total",
    "Failed reconcile work: passes, and the API writes made beside them (each retried)",
)
RECONCILE = Histogram(
    "kubetune_reconcile_seconds",
    "Duration of one reconcile pass",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
API_REQUESTS = Counter(
    "kubetune_api_requests_total", "Kubernetes API requests the operator made", ["verb", "resource"]
)

_phases: dict[str, str] = {}
_trials: dict[str, dict[str, int]] = {}


def record_study(uid: str, phase: str | None, trials: dict[str, int] | None) -> None:
    """Keep the per-phase and per-state gauges equal to the sum over known Studies."""
    if phase is None:
        _phases.pop(uid, None)
        _trials.pop(uid, None)
    else:
        _phases[uid] = phase
        _trials[uid] = dict(trials or {})
    for p in ("Pending", "Running", "Succeeded", "Failed"):
        STUDIES.labels(phase=p).set(sum(v == p for v in _phases.values()))
    for state in ("running", "waiting", "completed", "pruned", "failed", "diverged"):
        TRIALS.labels(state=state).set(sum(t.get(state, 0) for t in _trials.values()))
