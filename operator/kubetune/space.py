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

from kubetune.spec import Parameter

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


def is_active(p: Parameter, values: Mapping[str, Any]) -> bool:
    if p.when is None:
        return True
    parent = values.get(p.when.parameter, _ABSENT)
    return parent is not _ABSENT and any(_same(parent, v) for v in p.when.in_)


_ABSENT = object()


def _same(a: Any, b: Any) -> bool:
    # `True == 1` in Python; a boolean choice must not match a number.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


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


def check_values(parameters: Sequence[Parameter], values: Mapping[str, Any]) -> list[str]:
    """Problems with given values (enqueued or warm-started configurations)."""
    known = {p.name for p in parameters}
    problems = [f"unknown parameter {k!r}" for k in values if k not in known]
    for p in parameters:
        if p.name not in values:
            if is_active(p, values):
                problems.append(f"missing parameter {p.name!r}")
        elif not _allowed(p, values[p.name]):
            problems.append(f"{p.name}={values[p.name]!r} is outside its range")
    return problems


def _allowed(p: Parameter, v: Any) -> bool:
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if p.float is not None:
        return number and p.float.low <= v <= p.float.high
    if p.int is not None:
        return number and float(v).is_integer() and p.int.low <= v <= p.int.high
    assert p.categorical is not None
    return any(_same(v, c) for c in p.categorical.choices)


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
