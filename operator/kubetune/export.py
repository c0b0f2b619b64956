"""A Study's trials as an Optuna study: for optuna-dashboard, notebooks and the report.

Every Trial becomes an Optuna trial with its parameters (and their distributions
from the Study's search space), values, state, intermediate values and the
kubetune facts as user attributes. `sync` writes into any Optuna storage (an RDB
URL such as ``sqlite:///study.db``, a journal file, or in memory) and can be
called again while the Study runs: it adds new trials and brings running ones up
to date, so ``kubetune export --follow`` keeps optuna-dashboard in step.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kubetune import space
from kubetune.results import StudyResult, TrialResult
from kubetune.spec import SpecError, StudySpec, parse

# The user attribute that ties an Optuna trial to its Trial object (numbers may differ).
TRIAL_ATTR = "kubetune_trial"
STUDY_ATTR = "kubetune_study"

_STATES = {
    "Completed": TrialState.COMPLETE,
    "Pruned": TrialState.PRUNED,
    "Failed": TrialState.FAIL,
    "Running": TrialState.RUNNING,
}


def state_of(trial: TrialResult) -> TrialState:
    # Pending and Waiting (queued by Kueue) trials have not started: Optuna calls that WAITING.
    return _STATES.get(trial.phase, TrialState.WAITING)


def _distributions(spec: StudySpec | None, params: dict[str, Any]) -> dict[str, BaseDistribution]:
    if spec is None:
        # An invalid Study has no trials worth plotting; its parameters still need a home.
        return {
            name: optuna.distributions.CategoricalDistribution([v]) for name, v in params.items()
        }
    return space.distributions_for(spec.parameters, params)


def _spec(result: StudyResult) -> StudySpec | None:
    try:
        return parse(result.spec)
    except SpecError:
        return None


def _naive(t: datetime | None) -> datetime | None:
    """Optuna's datetimes are naive local time (datetime.now()); the API's are UTC."""
    return None if t is None else t.astimezone().replace(tzinfo=None)


def user_attrs(trial: TrialResult) -> dict[str, Any]:
    st = trial.status
    attrs: dict[str, Any] = {
        TRIAL_ATTR: trial.name,
        "kubetune_number": trial.number,
        "phase": st.phase,
        "source": trial.source,
        "gpu_seconds": round(st.gpu_seconds, 3),
    }
    optional = {
        "reason": st.reason,
        "message": st.message,
        "seed": trial.seed,
        "preemptions": st.preemptions or None,
        "metrics": {k: v for k, v in st.metrics.items() if math.isfinite(v)} or None,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


def frozen(result: StudyResult, trial: TrialResult, spec: StudySpec | None) -> FrozenTrial:
    state = state_of(trial)
    values = trial.values if state == TrialState.COMPLETE else None
    if state == TrialState.COMPLETE and values is None:
        state = TrialState.FAIL  # Completed without a value cannot be stored as COMPLETE
    finished = state.is_finished()
    out = optuna.trial.create_trial(
        params=trial.params,
        distributions=_distributions(spec, trial.params),
        values=values,
        state=TrialState.FAIL if not finished else state,
        # Optuna keeps intermediate values for single-objective studies only.
        intermediate_values={}
        if result.multi_objective
        else {s: v for s, v in trial.status.intermediate if math.isfinite(v)},
        user_attrs=user_attrs(trial),
    )
    if not finished:  # create_trial makes finished trials only
        out.state, out.datetime_complete = state, None
    out.datetime_start = _naive(trial.status.start_time) if state != TrialState.WAITING else None
    if finished:
        out.datetime_complete = _naive(trial.status.completion_time) or out.datetime_complete
        out.datetime_start = out.datetime_start or out.datetime_complete
    return out


def directions(result: StudyResult) -> list[StudyDirection]:
    return [StudyDirection[o.direction.upper()] for o in result.objectives]


def open_study(result: StudyResult, storage: str | BaseStorage | None) -> optuna.Study:
    """The Optuna study this Study is exported to (created when missing).

    Its name is ``<namespace>/<name>``. An existing study of that name must have the
    same directions: a different study under the same name is refused, not mixed in.
    """
    name = f"{result.namespace}/{result.name}"
    wanted = directions(result)
    study = optuna.create_study(
        storage=storage, study_name=name, directions=wanted, load_if_exists=True
    )
    if study.directions != wanted:
        raise ValueError(
            f"the storage already holds a study {name!r} with other directions "
            f"({[d.name.lower() for d in study.directions]}); export to another storage"
        )
    study.set_user_attr(STUDY_ATTR, name)
    study.set_user_attr("objectives", [o.metric for o in result.objectives])
    return study


def sync(result: StudyResult, study: optuna.Study) -> int:
    """Bring `study` in step with `result`; returns how many trials were added or changed."""
    storage, study_id = study._storage, study._study_id
    have = {t.user_attrs.get(TRIAL_ATTR): t for t in study.get_trials(deepcopy=False)}
    spec = _spec(result)
    changed = 0
    for trial in result.trials:
        old = have.get(trial.name)
        new = frozen(result, trial, spec)
        if old is None:
            storage.create_new_trial(study_id, template_trial=new)
            changed += 1
            continue
        if old.state.is_finished():
            continue  # finished trials never change (Optuna refuses to update them)
        steps = set(old.intermediate_values)
        for step, value in new.intermediate_values.items():
            if step not in steps:
                storage.set_trial_intermediate_value(old._trial_id, step, value)
                changed += 1
        if new.state != old.state:
            for key, value in new.user_attrs.items():
                storage.set_trial_user_attr(old._trial_id, key, value)
            if new.state == TrialState.RUNNING:
                storage.set_trial_state_values(old._trial_id, TrialState.RUNNING)
            elif new.state.is_finished():
                storage.set_trial_state_values(old._trial_id, new.state, new.values)
            changed += 1
    return changed


def to_optuna(result: StudyResult, storage: str | BaseStorage | None = None) -> optuna.Study:
    """The Study as an Optuna study (in memory unless `storage` is given)."""
    study = open_study(result, storage)
    sync(result, study)
    return study
