"""Optuna behind the adapter: samplers by name, options, and rebuilding from Trials."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.adapters.sampling import StudyModel, grid_size, make_sampler
from kubetune.lifecycle import TrialStatus
from kubetune.plan import TrialView
from kubetune.spec import SpecError, parse


def spec(sampler: dict[str, Any] | None = None, parallelism: int = 1) -> Any:
    return parse(
        {
            "objective": {"metric": "acc"},
            "parameters": [
                {"name": "opt", "categorical": {"choices": ["sgd", "adam"]}},
                {"name": "lr", "float": {"low": 1e-4, "high": 1.0, "log": True}},
                {
                    "name": "momentum",
                    "float": {"low": 0.0, "high": 0.9, "step": 0.3},
                    "when": {"parameter": "opt", "in": ["sgd"]},
                },
                {"name": "layers", "int": {"low": 1, "high": 4}},
            ],
            "sampler": sampler or {"name": "tpe", "seed": 3},
            "budget": {"maxTrials": 20, "parallelism": parallelism},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )


def test_conditional_parameters_are_sampled_only_when_active() -> None:
    model = StudyModel(spec())
    for _, params in model.ask(20):
        assert ("momentum" in params) == (params["opt"] == "sgd")
        assert 1e-4 <= params["lr"] <= 1.0
        assert params["layers"] in (1, 2, 3, 4)


def test_seed_gives_the_same_first_trials() -> None:
    first = [p for _, p in StudyModel(spec()).ask(3)]
    again = [p for _, p in StudyModel(spec()).ask(3)]
    assert first == again


def test_unknown_sampler_option_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"unknown option\(s\) \['n_startup'\].*n_startup_trials"):
        make_sampler(spec({"name": "tpe", "options": {"nStartup": 3}}))
    assert make_sampler(spec({"name": "tpe", "options": {"nStartupTrials": 3}}))


def test_grid_needs_an_enumerable_space() -> None:
    with pytest.raises(SpecError, match="grid cannot"):
        make_sampler(spec({"name": "grid"}))


def views(model_params: list[dict[str, Any]], values: list[float | None]) -> list[TrialView]:
    out = []
    for i, (params, value) in enumerate(zip(model_params, values, strict=True)):
        phase = "Running" if value is None else "Completed"
        out.append(
            TrialView(
                f"s-{i}",
                f"u{i}",
                i,
                params,
                TrialStatus(phase=phase, value=value, intermediate=[(1, value or 0.0)]),
                True,
            )
        )
    return out


def test_rebuild_from_trials_reproduces_the_history() -> None:
    live = StudyModel(spec(parallelism=2))
    asked = live.ask(6)
    for n, (trial, _) in enumerate(asked):
        live.adopt(n, trial)
    values: list[float | None] = [0.1, 0.5, 0.9, 0.3, None, None]
    trials = views([p for _, p in asked], values)
    assert live.sync(trials) == [0, 1, 2, 3]
    rebuilt = StudyModel.rebuild(spec(parallelism=2), trials)
    assert rebuilt.learned() == live.learned() == 4
    assert rebuilt.study.best_value == live.study.best_value == 0.9
    assert rebuilt.study.best_params == trials[2].params
    # The running trials are running in the rebuilt study, and can be told later.
    finished = views([p for _, p in asked], [0.1, 0.5, 0.9, 0.3, 0.95, 0.2])
    assert rebuilt.sync(finished) == [4, 5]
    assert rebuilt.learned() == 6
    assert rebuilt.study.best_value == 0.95


def test_failed_and_pruned_trials_are_learned_as_such() -> None:
    model = StudyModel(spec())
    ((trial, params),) = model.ask(1)
    model.adopt(0, trial)
    failed = TrialView("s-0", "u0", 0, params, TrialStatus(phase="Failed", reason="Diverged"), True)
    model.sync([failed])
    assert model.study.trials[0].state.name == "FAIL"


def test_grid_size() -> None:
    s = parse(
        {
            "objective": {"metric": "m"},
            "parameters": [
                {"name": "a", "int": {"low": 1, "high": 3}},
                {"name": "b", "categorical": {"choices": ["x", "y"]}},
            ],
            "sampler": {"name": "grid"},
            "budget": {"maxTrials": 6},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )
    assert grid_size(s) == 6
