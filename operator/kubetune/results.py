"""A Study's results as plain data: what the CLI, the report, the export and the client read.

Built from the Study object and its Trial objects exactly as the API server returns
them (dicts), so it works the same on a live cluster and on saved YAML. Nothing
here talks to the cluster or imports Optuna: `kubetune.client` stays light.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubetune import conditions as cond
from kubetune.lifecycle import TrialStatus


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize | maximize

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


@dataclass(frozen=True)
class TrialResult:
    name: str
    number: int
    params: dict[str, Any]
    status: TrialStatus
    source: str = "sampler"  # sampler | enqueued | repeat
    seed: int | None = None

    @property
    def phase(self) -> str:
        return self.status.phase

    @property
    def reason(self) -> str:
        return self.status.reason or ""

    @property
    def diverged(self) -> bool:
        return self.status.reason == "Diverged"

    @property
    def values(self) -> list[float] | None:
        """The objective values of a Completed trial (one per objective), else None."""
        if self.status.phase != "Completed":
            return None
        if self.status.values:
            return [float(v) for v in self.status.values]
        return None if self.status.value is None else [float(self.status.value)]

    @property
    def value(self) -> float | None:
        """The first (or only) objective's value of a Completed trial."""
        values = self.values
        return values[0] if values else None

    @staticmethod
    def from_k8s(obj: dict[str, Any]) -> TrialResult:
        spec = obj.get("spec") or {}
        seed = spec.get("seed")
        return TrialResult(
            name=obj["metadata"]["name"],
            number=int(spec.get("number", -1)),
            params=dict(spec.get("params") or {}),
            status=TrialStatus.from_k8s(obj.get("status")),
            source=str(spec.get("source") or "sampler"),
            seed=None if seed is None else int(seed),
        )


@dataclass(frozen=True)
class StudyResult:
    name: str
    namespace: str
    spec: dict[str, Any]
    status: dict[str, Any]
    trials: list[TrialResult] = field(default_factory=list)
    created: str | None = None  # metadata.creationTimestamp

    @staticmethod
    def from_k8s(study: dict[str, Any], trials: Iterable[dict[str, Any]]) -> StudyResult:
        meta = study["metadata"]
        return StudyResult(
            name=meta["name"],
            namespace=meta.get("namespace", ""),
            spec=dict(study.get("spec") or {}),
            status=dict(study.get("status") or {}),
            trials=sorted((TrialResult.from_k8s(t) for t in trials), key=lambda t: t.number),
            created=meta.get("creationTimestamp"),
        )

    # -- the Study as its status says ----------------------------------------------------

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def objectives(self) -> list[Objective]:
        many = self.spec.get("objectives")
        raw = many if many else [self.spec.get("objective") or {}]
        return [
            Objective(str(o.get("metric", "")), str(o.get("direction", "minimize"))) for o in raw
        ]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def _true_message(self, kind: str) -> str | None:
        """The message of condition `kind` if it is True, else None."""
        conditions = self.status.get("conditions") or []
        if not cond.is_true(conditions, kind):
            return None
        return str((cond.get(conditions, kind) or {}).get("message") or "")

    @property
    def message(self) -> str:
        """Why the Study ended or cannot run (the condition a user should read first)."""
        for kind in (cond.INVALID, cond.FAILED, cond.COMPLETED):
            found = self._true_message(kind)
            if found is not None:
                return found
        return ""

    @property
    def boundary_warning(self) -> str:
        return self._true_message(cond.BOUNDARY) or ""

    @property
    def importance(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.status.get("importance") or {}).items()}

    @property
    def progress(self) -> tuple[int, int | None]:
        """(trials used, the most the budget allows or None when unbounded)."""
        budget = self.status.get("budget") or {}
        used = int(budget.get("trialsUsed") or len(self.search_trials))
        most = budget.get("maxTrials") or (self.spec.get("budget") or {}).get("maxTrials")
        return used, None if most is None else int(most)

    # -- the trials ---------------------------------------------------------------------

    @property
    def search_trials(self) -> list[TrialResult]:
        """The trials the search proposed (seed repeats of the best are not search history)."""
        return [t for t in self.trials if t.source != "repeat"]

    @property
    def repeats(self) -> list[TrialResult]:
        return [t for t in self.trials if t.source == "repeat"]

    def trial(self, name: str) -> TrialResult | None:
        return next((t for t in self.trials if t.name == name), None)

    @property
    def best(self) -> TrialResult | None:
        """The best trial as the operator recorded it (status.bestTrial), else computed."""
        named = (self.status.get("bestTrial") or {}).get("name")
        if named:
            found = self.trial(str(named))
            if found is not None:
                return found
        if self.multi_objective:
            return None  # several objectives have a front, not a best (status.paretoFront)
        done = [(v, t) for t in self.search_trials if (v := t.value) is not None]
        if not done:
            return None
        sign = -1.0 if self.objectives[0].maximize else 1.0
        return min(done, key=lambda vt: (sign * vt[0], vt[1].number))[1]

    @property
    def pareto_front(self) -> list[str]:
        return [str(p["name"]) for p in self.status.get("paretoFront") or []]

    # -- what it cost -------------------------------------------------------------------

    @property
    def gpu_seconds(self) -> float:
        return sum(t.status.gpu_seconds for t in self.trials)

    @property
    def gpu_seconds_saved_by_pruning(self) -> float:
        """An estimate: each pruned trial would have run to the last step completed trials
        reached, at the GPU-seconds per step it ran at until it was stopped."""
        full = max(
            (t.status.last_step or 0 for t in self.trials if t.phase == "Completed"), default=0
        )
        saved = 0.0
        for t in self.trials:
            last = t.status.last_step
            if t.phase != "Pruned" or last is None or last >= full:
                continue
            # Steps count from 0 or 1 depending on the trainer; +1 on both is the cautious side.
            saved += t.status.gpu_seconds * ((full + 1) / (last + 1) - 1)
        return saved

    @property
    def repeat_summary(self) -> tuple[float, float, int] | None:
        """(mean, std, runs) of the best parameters over seeds: the best trial's own run
        and its completed repeats, as the operator records them (status.repeatBest)."""
        recorded = self.status.get("repeatBest") or {}
        values = [float(v) for v in recorded.get("values") or []]
        if not values:
            best = self.best
            repeats = [v for t in self.repeats if (v := t.value) is not None]
            if best is None or best.value is None or not repeats:
                return None
            values = [best.value, *repeats]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.fmean(values), std, len(values)


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"
