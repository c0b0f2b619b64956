"""Optuna behind a small interface: samplers by name, and one in-memory study per Study.

The API server is the source of truth. The Optuna study is a cache rebuilt from
the Trial objects whenever the operator has none (at start, after an error), so
a restart loses nothing and no database is needed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from kubetune import space
from kubetune.lifecycle import finite
from kubetune.plan import TrialView
from kubetune.spec import Sampler, SpecError, StudySpec

optuna.logging.set_verbosity(logging.WARNING)

_FACTORIES: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}
# Options the operator sets itself; a user cannot pass them through `options`.
_RESERVED = {"seed", "search_space"}


def _camel_to_snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def grid_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The full grid, or SpecError if a parameter cannot be enumerated."""
    grid: dict[str, list[Any]] = {}
    for p in spec.parameters:
        if p.when is not None:
            raise SpecError(f"spec.sampler: grid cannot search conditional parameter {p.name!r}")
        if p.categorical is not None:
            grid[p.name] = list(p.categorical.choices)
        elif p.int is not None:
            grid[p.name] = list(range(p.int.low, p.int.high + 1, p.int.step))
        elif p.float is not None and (step := p.float.step) is not None:
            f = p.float
            n = round((f.high - f.low) / step)
            grid[p.name] = [round(f.low + i * step, 12) for i in range(n + 1)]
        else:
            raise SpecError(
                f"spec.sampler: grid cannot enumerate float parameter {p.name!r}; give it a "
                "step, or use random, qmc or tpe"
            )
    return grid


def grid_size(spec: StudySpec) -> int:
    size = 1
    for values in grid_space(spec).values():
        size *= len(values)
    return size


def make_sampler(spec: StudySpec, cfg: Sampler | None = None) -> optuna.samplers.BaseSampler:
    """An Optuna sampler from the Study's sampler section; SpecError on bad options."""
    cfg = cfg or spec.sampler
    options = {_camel_to_snake(k): v for k, v in cfg.options.items()}
    if cfg.name == "grid":
        factory: Callable[..., optuna.samplers.BaseSampler] = optuna.samplers.GridSampler
        kwargs: dict[str, Any] = {"search_space": grid_space(spec), "seed": cfg.seed}
    else:
        factory = _FACTORIES[cfg.name]
        kwargs = {"seed": cfg.seed}
        if cfg.name == "tpe" and spec.budget.parallelism > 1:
            # Parallel trials: pretend running ones scored badly so TPE spreads out.
            kwargs["constant_liar"] = True
        if cfg.name == "qmc":
            kwargs.update(qmc_type="sobol", scramble=True)
    allowed = set(inspect.signature(factory).parameters) - _RESERVED
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SpecError(
            f"spec.sampler.options: unknown option(s) {unknown} for sampler {cfg.name!r}; "
            f"valid: {sorted(allowed)}"
        )
    kwargs.update(options)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError(f"spec.sampler.options: {e}") from None


def directions(spec: StudySpec) -> list[Literal["minimize", "maximize"]]:
    return [o.direction for o in spec.all_objectives]


def _values(view: TrialView) -> list[float]:
    if view.status.values:
        return list(view.status.values)
    assert view.status.value is not None, f"{view.name} is Completed without a value"
    return [view.status.value]


def _state(view: TrialView) -> TrialState:
    return {
        "Completed": TrialState.COMPLETE,
        "Pruned": TrialState.PRUNED,
        "Failed": TrialState.FAIL,
    }.get(view.status.phase, TrialState.RUNNING)


class StudyModel:
    """The Optuna study of one Study, kept in step with its Trial objects."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.study = optuna.create_study(directions=directions(spec), sampler=make_sampler(spec))
        self.live: dict[int, optuna.Trial] = {}  # Trial number -> running Optuna trial
        self.reported: dict[int, set[int]] = {}  # Trial number -> steps reported
        self.numbers: set[int] = set()  # every Trial number the study knows

    @classmethod
    def rebuild(cls, spec: StudySpec, trials: Sequence[TrialView]) -> StudyModel:
        model = cls(spec)
        for view in sorted(trials, key=lambda t: t.number):
            model._add(view)
        return model

    def _add(self, view: TrialView) -> None:
        state = _state(view)
        dists = space.distributions_for(self.spec.parameters, view.params)
        intermediate = {s: v for s, v in view.status.intermediate}
        if state == TrialState.RUNNING:
            self.study.enqueue_trial(view.params, skip_if_exists=False)
            trial = self.study.ask()
            space.sample(trial, self.spec.parameters)
            self.live[view.number] = trial
            self.reported[view.number] = set()
            self.report(view)
        else:
            values = _values(view) if state == TrialState.COMPLETE else None
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=view.params,
                    distributions=dists,
                    values=values,
                    state=state,
                    intermediate_values=intermediate,
                    user_attrs={"kubetune_trial": view.name},
                )
            )
        self.numbers.add(view.number)

    def report(self, view: TrialView) -> None:
        """Pass a running trial's new intermediate values to Optuna (for pruners)."""
        trial = self.live.get(view.number)
        if trial is None:
            return
        done = self.reported.setdefault(view.number, set())
        for step, value in view.status.intermediate:
            if step not in done and finite(value):
                trial.report(value, step)
                done.add(step)

    def sync(self, trials: Sequence[TrialView]) -> list[int]:
        """Tell Optuna about trials that finished since the last sync; returns their numbers."""
        told = []
        for view in trials:
            if view.number not in self.numbers:
                self._add(view)
                continue
            trial = self.live.get(view.number)
            if trial is None:
                continue
            self.report(view)
            state = _state(view)
            if state == TrialState.RUNNING:
                continue
            if state == TrialState.COMPLETE:
                self.study.tell(trial, _values(view))
            else:
                self.study.tell(trial, state=state)
            del self.live[view.number]
            told.append(view.number)
        return told

    def ask(self, count: int) -> list[tuple[optuna.Trial, dict[str, Any]]]:
        """Propose `count` new trials (blocking: run it off the event loop)."""
        out = []
        for _ in range(count):
            trial = self.study.ask()
            out.append((trial, space.sample(trial, self.spec.parameters)))
        return out

    def adopt(self, number: int, trial: optuna.Trial) -> None:
        """The Trial object for `trial` now exists with this number."""
        self.live[number] = trial
        self.reported[number] = set()
        self.numbers.add(number)

    def learned(self) -> int:
        """Finished trials the sampler has learned from (complete, pruned or failed)."""
        return sum(t.state.is_finished() for t in self.study.get_trials(deepcopy=False))
