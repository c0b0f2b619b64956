"""The search space: Study parameters as Optuna distributions, conditions, values.

Conditional parameters (`when`) are sampled define-by-run, in the order they are
listed: a parameter is asked for only if its parent's value is one of `in`, and
an inactive parameter is absent from the trial's params (and renders empty).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.spec import Parameter, SpecError, StudySpec, is_active

ParamValue = str | bool | int | float


def distribution(p: Parameter) -> BaseDistribution:
    if p.float is not None:
        f = p.float
        return FloatDistribution(f.low, f.high, log=f.log, step=f.step)
    if p.int is not None:
        i = p.int
        return IntDistribution(i.low, i.high, log=i.log, step=i.step)
    assert p.categorical is not None
    return CategoricalDistribution(list(p.categorical.choices))


def sample(trial: Any, parameters: Sequence[Parameter]) -> dict[str, ParamValue]:
    """Ask an Optuna trial for every active parameter, in order (define-by-run)."""
    values: dict[str, ParamValue] = {}
    for p in parameters:
        if is_active(p, values):
            values[p.name] = _suggest(trial, p)
    return values


def _suggest(trial: Any, p: Parameter) -> ParamValue:
    if p.float is not None:
        f = p.float
        return float(trial.suggest_float(p.name, f.low, f.high, log=f.log, step=f.step))
    if p.int is not None:
        i = p.int
        return int(trial.suggest_int(p.name, i.low, i.high, log=i.log, step=i.step))
    assert p.categorical is not None
    value: ParamValue = trial.suggest_categorical(p.name, list(p.categorical.choices))
    return value


def distributions_for(
    parameters: Sequence[Parameter], values: Mapping[str, Any]
) -> dict[str, BaseDistribution]:
    """Distributions of the parameters a trial actually has (for rebuilding history)."""
    return {p.name: distribution(p) for p in parameters if p.name in values}


def render_value(value: Any) -> str:
    """How a value appears in ${params.NAME}: plain text, never quoted or escaped.

    Floats use Python's shortest round-tripping form (0.001, 1e-05), so the
    trainer parses back exactly the value the sampler proposed.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value)


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
