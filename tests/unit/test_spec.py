"""Spec parsing: what the CRD schema cannot check is reported naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubetune.spec import SpecError, parse, parse_duration

BASE: dict[str, Any] = {
    "objective": {"metric": "val_accuracy"},
    "parameters": [
        {"name": "optimizer", "categorical": {"choices": ["sgd", "adam"]}},
        {"name": "lr", "float": {"low": 1e-4, "high": 0.1, "log": True}},
        {
            "name": "momentum",
            "float": {"low": 0.0, "high": 0.99},
            "when": {"parameter": "optimizer", "in": ["sgd"]},
        },
    ],
    "budget": {"maxTrials": 4, "parallelism": 2},
    "trialTemplate": {
        "template": {
            "spec": {
                "containers": [
                    {"name": "t", "image": "img", "args": ["--lr=${params.lr}", "${trial.name}"]}
                ]
            }
        }
    },
}


def spec(**changes: Any) -> dict[str, Any]:
    s = copy.deepcopy(BASE)
    s.update(changes)
    return s


def test_valid_spec_gets_defaults() -> None:
    parsed = parse(spec())
    assert parsed.primary.metric == "val_accuracy"
    assert parsed.primary.maximize
    assert parsed.sampler.name == "tpe"
    assert parsed.pruner.name == "none"
    assert parsed.budget.parallelism == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"parameters": [{"name": "lr", "float": {"low": 1.0, "high": 0.1}}]},
            "spec.parameters[0].float: low (1.0) must be less than high (0.1)",
        ),
        (
            {"parameters": [{"name": "lr", "int": {"low": 0, "high": 10, "log": True}}]},
            "spec.parameters[0].int: low must be positive when log is true",
        ),
        (
            {
                "parameters": [
                    {"name": "a", "float": {"low": 0, "high": 1}, "int": {"low": 0, "high": 1}}
                ]
            },
            "needs exactly one of float, int or categorical",
        ),
        ({"parameters": []}, "spec.parameters"),
        ({"budget": {"maxTrials": 2, "parallelism": 3}}, "parallelism must not exceed maxTrials"),
        ({"budget": {"maxTrials": 2, "timeout": "soon"}}, "is not a duration"),
        ({"sampler": {"name": "bayes"}}, "spec.sampler.name"),
    ],
)
def test_schema_level_errors_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(
        SpecError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        parse(spec(**changes))


def test_unknown_placeholder_is_reported() -> None:
    s = spec()
    s["trialTemplate"]["template"]["spec"]["containers"][0]["args"] = ["--x=${params.nope}"]
    with pytest.raises(SpecError, match=r"\$\{params.nope\} names no parameter"):
        parse(s)
    s["trialTemplate"]["template"]["spec"]["containers"][0]["args"] = ["${trial.color}"]
    with pytest.raises(SpecError, match=r"unknown placeholder \$\{trial.color\}"):
        parse(s)


def test_condition_must_refer_to_an_earlier_parameter_and_its_choices() -> None:
    s = spec()
    s["parameters"][2]["when"] = {"parameter": "layers", "in": [1]}
    with pytest.raises(SpecError, match="must name a parameter listed before"):
        parse(s)
    s["parameters"][2]["when"] = {"parameter": "optimizer", "in": ["rmsprop"]}
    with pytest.raises(SpecError, match=r"\['rmsprop'\] are not choices of 'optimizer'"):
        parse(s)


def test_objective_xor_objectives() -> None:
    with pytest.raises(SpecError, match="exactly one of objective or objectives"):
        parse(spec(objectives=[{"metric": "a"}, {"metric": "b", "direction": "minimize"}]))
    multi = spec(objectives=[{"metric": "a"}, {"metric": "b", "direction": "minimize"}])
    del multi["objective"]
    assert [o.direction for o in parse(multi).all_objectives] == ["maximize", "minimize"]


def test_restart_policy_always_is_refused() -> None:
    s = spec()
    s["trialTemplate"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(SpecError, match="Never or OnFailure"):
        parse(s)


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("1h30m", 5400), ("500ms", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
