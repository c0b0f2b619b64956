"""A Study's results, read from its objects and exported as an Optuna study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from kubetune import export
from kubetune.results import StudyResult

SPEC: dict[str, Any] = {
    "objective": {"metric": "val_loss", "direction": "minimize"},
    "parameters": [
        {"name": "lr", "float": {"low": 1e-4, "high": 0.1, "log": True}},
        {"name": "layers", "int": {"low": 1, "high": 4}},
        {"name": "opt", "categorical": {"choices": ["sgd", "adam"]}},
    ],
    "budget": {"maxTrials": 6, "parallelism": 2},
    "trialTemplate": {"template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}},
}


def trial(number: int, phase: str, value: float | None = None, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "gpus": 1, "gpuSeconds": 10.0 * (number + 1)}
    if value is not None:
        status["value"] = value
    status.update(extra)
    return {
        "metadata": {"name": f"s-{number}", "namespace": "team"},
        "spec": {
            "study": "s",
            "number": number,
            "params": {"lr": 0.01 * (number + 1), "layers": 1 + number % 4, "opt": "sgd"},
            "seed": 100 + number,
            "source": extra.pop("source", "sampler") if "source" in extra else "sampler",
        },
        "status": status,
    }


def curve(*values: float) -> list[dict[str, Any]]:
    return [{"step": i, "value": v} for i, v in enumerate(values)]


def study(trials: list[dict[str, Any]], **status: Any) -> StudyResult:
    obj = {
        "metadata": {"name": "s", "namespace": "team", "creationTimestamp": "2026-12-05T00:00:00Z"},
        "spec": SPEC,
        "status": {"phase": "Running", **status},
    }
    return StudyResult.from_k8s(obj, trials)


TRIALS = [
    trial(0, "Completed", 0.5, intermediate=curve(0.9, 0.7, 0.5)),
    trial(1, "Completed", 0.3, intermediate=curve(0.8, 0.4, 0.3)),
    trial(2, "Pruned", intermediate=curve(1.2), reason="Pruned"),
    trial(3, "Failed", reason="Diverged", message="val_loss was NaN at step 1"),
    trial(4, "Running", intermediate=curve(0.6)),
    trial(5, "Waiting"),
]


def test_results_read_the_best_the_cost_and_what_pruning_saved() -> None:
    result = study(TRIALS)
    assert result.best is not None and result.best.name == "s-1"  # lowest val_loss
    assert result.gpu_seconds == pytest.approx(sum(10.0 * (n + 1) for n in range(6)))
    # Trial 2 stopped after step 0 of 3 (steps 0..2): it would have run 3x as long.
    assert result.gpu_seconds_saved_by_pruning == pytest.approx(30.0 * 2)
    named = study(TRIALS, bestTrial={"name": "s-0", "value": 0.5})
    assert named.best is not None and named.best.name == "s-0"  # the operator's word wins


def test_export_writes_every_trial_with_its_state_values_and_curve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    export.to_optuna(study(TRIALS), url)
    loaded = optuna.load_study(study_name="team/s", storage=url)
    by_name = {t.user_attrs["kubetune_trial"]: t for t in loaded.get_trials()}
    assert [by_name[f"s-{n}"].state for n in range(6)] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.RUNNING,
        TrialState.WAITING,
    ]
    assert loaded.best_trial.user_attrs["kubetune_trial"] == "s-1"
    assert loaded.best_value == 0.3
    assert by_name["s-0"].intermediate_values == {0: 0.9, 1: 0.7, 2: 0.5}
    assert by_name["s-3"].user_attrs["reason"] == "Diverged"
    assert by_name["s-1"].params == {"lr": pytest.approx(0.02), "layers": 2, "opt": "sgd"}
    assert by_name["s-1"].distributions["lr"] == optuna.distributions.FloatDistribution(
        1e-4, 0.1, log=True
    )
    assert by_name["s-2"].user_attrs["gpu_seconds"] == 30.0


def test_follow_brings_running_trials_up_to_date_and_adds_new_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = export.to_optuna(study(TRIALS), url)
    later = [
        *TRIALS[:4],
        trial(4, "Completed", 0.2, intermediate=curve(0.6, 0.2)),
        trial(5, "Running", intermediate=curve(0.9)),
        trial(6, "Running"),
    ]
    changed = export.sync(study(later), first)
    assert changed == 5  # s-4: a step and its end; s-5: started, a step; s-6: new
    loaded = optuna.load_study(study_name="team/s", storage=url)
    by_name = {t.user_attrs["kubetune_trial"]: t for t in loaded.get_trials()}
    assert len(by_name) == 7
    assert by_name["s-4"].state == TrialState.COMPLETE and by_name["s-4"].value == 0.2
    assert by_name["s-4"].intermediate_values == {0: 0.6, 1: 0.2}
    assert by_name["s-5"].state == TrialState.RUNNING
    assert loaded.best_trial.user_attrs["kubetune_trial"] == "s-4"
    assert export.sync(study(later), first) == 0  # nothing new: nothing written


def test_export_refuses_to_mix_into_a_study_with_other_directions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="team/s", direction="maximize")
    with pytest.raises(ValueError, match="other directions"):
        export.to_optuna(study(TRIALS), url)


def test_exported_trials_have_times_optuna_can_compute_with() -> None:
    timed = [
        trial(
            0,
            "Completed",
            0.5,
            startTime="2026-12-05T10:00:00Z",
            completionTime="2026-12-05T10:01:30Z",
        ),
        trial(1, "Failed", reason="Error"),  # no times recorded
    ]
    exported = export.to_optuna(study(timed))
    first, second = exported.get_trials()
    assert first.duration is not None and first.duration.total_seconds() == 90
    assert second.datetime_complete is not None
    assert len(exported.trials_dataframe()) == 2  # mixes no aware and naive times
