"""A seeded Study proposes the same trials whether or not the operator restarts.

The operator's Optuna study is a cache: after a restart it is rebuilt from the
Trial objects, which carry what the sampler needs (the trial's and the study's
system attributes, saved when the trial was asked). Here a study is run at
parallelism 1 in process, and "restarted" (rebuilt from the trials so far, as the
reconciler does) between an ask and its tell and between trials; every sampler
must propose exactly what the uninterrupted run proposed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from kubetune.adapters.sampling import StudyModel, propose
from kubetune.lifecycle import TrialStatus
from kubetune.plan import TrialView
from kubetune.spec import StudySpec, parse

PARAMETERS: list[dict[str, Any]] = [
    {"name": "lr", "float": {"low": 1e-4, "high": 1.0, "log": True}},
    {"name": "width", "int": {"low": 16, "high": 256, "step": 16}},
    {"name": "dropout", "float": {"low": 0.0, "high": 0.5, "step": 0.1}},
]
GRID_PARAMETERS: list[dict[str, Any]] = [
    {"name": "width", "int": {"low": 1, "high": 4}},
    {"name": "act", "categorical": {"choices": ["relu", "tanh", "gelu"]}},
]


def study_spec(sampler: str) -> StudySpec:
    multi = sampler == "nsga2"
    objectives: dict[str, Any] = (
        {
            "objectives": [
                {"metric": "loss", "direction": "minimize"},
                {"metric": "ms", "direction": "minimize"},
            ]
        }
        if multi
        else {"objective": {"metric": "loss", "direction": "minimize"}}
    )
    options: dict[str, Any] = {"populationSize": 4} if multi else {}
    if sampler in ("tpe", "gp"):
        options = {"nStartupTrials": 4}
    if sampler == "cmaes":
        options = {"nStartupTrials": 2, "popsize": 4}
    return parse(
        {
            **objectives,
            "parameters": GRID_PARAMETERS if sampler == "grid" else PARAMETERS,
            "sampler": {"name": sampler, "seed": 11, "options": options},
            "budget": {"maxTrials": 12, "parallelism": 1},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )


def objective(params: dict[str, Any]) -> list[float]:
    if "lr" in params:
        loss = (math.log10(params["lr"]) + 2) ** 2 + (params["width"] - 128) ** 2 / 1e4
        loss += params["dropout"]
    else:
        loss = abs(params["width"] - 2) + (params["act"] != "tanh")
    return [loss, float(params.get("width", 1))]


def run(spec: StudySpec, trials: int, restarts: set[float]) -> list[dict[str, Any]]:
    """Trial n is asked at time n and told at n + 0.5; a restart at t rebuilds the model."""
    model = StudyModel(spec)
    views: list[TrialView] = []
    proposed: list[dict[str, Any]] = []
    multi = len(spec.all_objectives) > 1
    for n in range(trials):
        if n in restarts:
            model = StudyModel.rebuild(spec, views)
        ((trial, params),) = model.ask(1)
        model.adopt(n, trial)
        proposed.append(params)
        running = TrialView(
            f"s-{n}",
            f"u{n}",
            n,
            params,
            TrialStatus(phase="Running"),
            True,
            sampler_state=model.sampler_state(n),
        )
        views.append(running)
        if n + 0.5 in restarts:
            model = StudyModel.rebuild(spec, views)
        values = objective(params)
        status = TrialStatus(
            phase="Completed",
            value=values[0],
            values=values if multi else None,
        )
        views[-1] = TrialView(
            running.name,
            running.uid,
            n,
            params,
            status,
            True,
            sampler_state=running.sampler_state,
        )
        model.sync(views)
    return proposed


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random", "qmc", "grid", "nsga2"])
def test_restarts_do_not_change_what_a_seeded_study_proposes(sampler: str) -> None:
    spec = study_spec(sampler)
    trials = 12
    plain = run(spec, trials, set())
    restarted = run(spec, trials, {1, 3.5, 5, 6.5, 9, 10.5})
    assert restarted == plain
    assert len({str(p) for p in plain}) > 3, "the study explored (the test can fail)"


def test_a_proposal_from_another_process_is_what_the_study_would_propose() -> None:
    """GP proposes in a process of its own (sampling.propose): same trials, same answer."""
    spec = study_spec("gp")
    spec_doc = spec.model_dump(by_alias=True, exclude_none=True)
    local, remote = StudyModel(spec), StudyModel(spec)
    views: list[TrialView] = []
    for n in range(7):
        ((trial, params),) = local.ask(1)
        local.adopt(n, trial)
        trials, attrs, warm = remote.proposal_context()
        ((remote_params, state),) = propose(spec_doc, trials, attrs, warm, [n])
        remote.adopt_proposals([n], [(remote_params, state)])
        assert remote_params == params, f"trial {n}"
        assert state.get("trial") == local.sampler_state(n).get("trial"), "what the Trial keeps"
        values = objective(params)
        views.append(
            TrialView(f"s-{n}", "u", n, params, TrialStatus("Completed", value=values[0]), True)
        )
        local.sync(views)
        remote.sync(views)
