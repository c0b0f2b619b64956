"""Optuna behind a small interface: samplers by name, and one in-memory study per Study.

The API server is the source of truth. The Optuna study is a cache rebuilt from
the Trial objects whenever the operator has none (at start, after an error), so
a restart loses nothing and no database is needed.
"""

from __future__ import annotations

import inspect
import logging
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import optuna
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import TrialState

from kubetune import metrics, space
from kubetune.lifecycle import finite
from kubetune.plan import TrialView
from kubetune.spec import SpecError, StudySpec

optuna.logging.set_verbosity(logging.WARNING)
log = logging.getLogger("kubetune.sampling")

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


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The Study's sampler, with its startup phase if it has one; SpecError on bad options."""
    cfg = spec.sampler
    main = _sampler(spec, cfg.name, cfg.options, cfg.seed, "spec.sampler.options")
    startup = cfg.startup
    if startup is None:
        return main
    first = _sampler(spec, startup.name, startup.options, cfg.seed, "spec.sampler.startup.options")
    return PhasedSampler(first, main, startup.trials)


def _sampler(
    spec: StudySpec, name: str, raw_options: dict[str, Any], seed: int | None, where: str
) -> optuna.samplers.BaseSampler:
    options = {_camel_to_snake(k): v for k, v in raw_options.items()}
    if name == "gp":
        _need_torch()
    if name == "grid":
        factory: Callable[..., optuna.samplers.BaseSampler] = GridSampler
        kwargs: dict[str, Any] = {"search_space": space.grid_space(spec), "seed": seed}
    else:
        factory = _FACTORIES[name]
        kwargs = {"seed": seed}
        if name == "tpe" and spec.budget.parallelism > 1:
            # Parallel trials: pretend running ones scored badly so TPE spreads out.
            # Optuna 5 does this by default; said explicitly for Optuna 4.x (>= 4.2).
            kwargs["constant_liar"] = True
        if name == "qmc":
            kwargs.update(qmc_type="sobol", scramble=True)
    allowed = set(inspect.signature(factory).parameters) - _RESERVED
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SpecError(
            f"{where}: unknown option(s) {unknown} for sampler {name!r}; valid: {sorted(allowed)}"
        )
    kwargs.update(options)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{where}: {e}") from None


def _need_torch() -> None:
    try:
        import torch  # noqa: PLC0415 - imported only for GP Studies (hundreds of MB)
    except ImportError:
        raise SpecError(
            "spec.sampler.name: gp needs PyTorch in the operator's environment "
            "(pip install 'kubetune[gp]'); use tpe, qmc or random otherwise"
        ) from None
    # One intra-op thread: a GP fit must leave the other cores to the event loop and
    # the other Studies' samplers, not spread over all of them.
    torch.set_num_threads(1)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its `study.stop()` once the grid is covered.

    That call is only valid inside `study.optimize`; told from the operator, it
    raised out of `tell` after the result was stored. The planner ends a grid Study
    itself when every point has run (budget.maxTrials is capped at the grid's size).
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


class PhasedSampler(optuna.samplers.BaseSampler):
    """Explore, then exploit: trials numbered below `switch` come from `first`.

    Optuna numbers trials in creation order, and the operator rebuilds a study from
    its Trials in number order, so the phase of a trial survives a restart.
    """

    def __init__(
        self, first: optuna.samplers.BaseSampler, then: optuna.samplers.BaseSampler, switch: int
    ) -> None:
        self.first, self.then, self.switch = first, then, switch

    def _for(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        return self.first if trial.number < self.switch else self.then

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        result: dict[str, optuna.distributions.BaseDistribution] = self._for(
            trial
        ).infer_relative_search_space(study, trial)
        return result

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._for(trial).sample_relative(study, trial, search_space)
        return result

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.first.reseed_rng()
        self.then.reseed_rng()


_PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "patient": optuna.pruners.PatientPruner,
    "threshold": optuna.pruners.ThresholdPruner,
}


def make_pruner(
    name: str, raw_options: dict[str, Any], where: str = "spec.pruner"
) -> optuna.pruners.BasePruner:
    """An Optuna pruner by name; `patient` wraps another: options {wrapped: {name, options}}."""
    options = {_camel_to_snake(k): v for k, v in raw_options.items()}
    factory = _PRUNERS[name]
    if name == "patient":
        wrapped = options.pop("wrapped", None) or {"name": "median"}
        if not isinstance(wrapped, dict) or wrapped.get("name") not in _PRUNERS:
            raise SpecError(f"{where}.options.wrapped: name one of {sorted(_PRUNERS)}")
        options["wrapped_pruner"] = make_pruner(
            wrapped["name"], wrapped.get("options") or {}, f"{where}.options.wrapped"
        )
        if "patience" not in options:
            raise SpecError(f"{where}.options.patience: required for the patient pruner")
    allowed = set(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - allowed)
    if unknown:
        shown = sorted(a for a in allowed if a != "wrapped_pruner")
        raise SpecError(
            f"{where}.options: unknown option(s) {unknown} for pruner {name!r}; valid: {shown}"
        )
    try:
        with warnings.catch_warnings():
            # PatientPruner is marked experimental upstream; we support it deliberately.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factory(**options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{where}.options: {e}") from None


_MISSING = object()
# Samplers that take seconds of CPU per ask: they propose in a process of their own.
REMOTE_SAMPLERS = frozenset({"gp"})


def propose(
    spec_doc: dict[str, Any],
    trials: Sequence[optuna.trial.FrozenTrial],
    study_attrs: dict[str, Any],
    warm: int,
    numbers: Sequence[int],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Run in a sampler process: the study as `trials` say it is, asked once per number.

    The same trials, study attributes and per-trial seeding give what the operator's
    own study would have proposed (the GP sampler keeps no other state), while its
    fit runs on another core and never holds the operator's GIL.
    """
    from kubetune.spec import parse  # noqa: PLC0415 - the process imports only what it needs

    model = StudyModel(parse(spec_doc))
    storage, study_id = model.study._storage, model.study._study_id
    for key, value in study_attrs.items():
        storage.set_study_system_attr(study_id, key, value)
    model.study_attrs = dict(study_attrs)
    for frozen in trials:
        storage.create_new_trial(study_id, template_trial=frozen)
    model._count_warm(warm)
    out = []
    for number, (trial, params) in zip(numbers, model.ask(len(numbers)), strict=True):
        model.live[number] = trial
        out.append((params, model.sampler_state(number)))
    return out


def reseed(sampler: Any, seed: int, number: int) -> None:
    """Give every random state inside `sampler` a seed derived from (seed, trial number).

    Optuna's samplers keep their randomness in LazyRandomState objects, some in nested
    samplers and strategies (TPE's startup RandomSampler, NSGA-II's crossover); each
    gets its own stream, named by its place in the object graph.
    """
    seen: set[int] = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, LazyRandomState):
            digest = zlib.crc32(f"{seed}/{number}/{path}".encode())
            obj._rng = np.random.RandomState(digest)
            return
        if isinstance(obj, PhasedSampler):
            # Transparent: a startup sampler draws what it would draw on its own.
            walk(obj.first, path, depth + 1)
            walk(obj.then, path, depth + 1)
            return
        if isinstance(obj, optuna.samplers.GPSampler):
            # GP fits start from the previous fit's kernel parameters, which a rebuilt
            # sampler does not have: every fit starts afresh, so both agree.
            obj._gprs_cache_list = None
            obj._constraints_gprs_cache_list = None
        if not (
            isinstance(obj, optuna.samplers.BaseSampler)
            or type(obj).__module__.startswith("optuna.samplers")
        ):
            return
        for name, value in sorted(getattr(obj, "__dict__", {}).items()):
            walk(value, f"{path}.{name}", depth + 1)

    walk(sampler, "sampler", 0)


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
        self.study = optuna.create_study(
            directions=directions(spec),
            sampler=make_sampler(spec),
            pruner=make_pruner(spec.pruner.name, spec.pruner.options),
        )
        self.live: dict[int, optuna.Trial] = {}  # Trial number -> running Optuna trial
        self.reported: dict[int, set[int]] = {}  # Trial number -> steps reported
        self.numbers: set[int] = set()  # every Trial number the study knows
        self.warm = 0  # warm-start trials from another Study
        self.multi = len(spec.all_objectives) > 1
        self.study_attrs: dict[str, Any] = {}  # the study's system attrs at the last ask

    @classmethod
    def rebuild(
        cls,
        spec: StudySpec,
        trials: Sequence[TrialView],
        warm: Sequence[TrialView] = (),
    ) -> StudyModel:
        """The study as the Trials say it is; `warm` are another Study's finished trials."""
        model = cls(spec)
        for view in warm:
            model.study.add_trial(model._frozen(view, {"kubetune_warm_start": view.name}))
        model._count_warm(len(warm))
        for view in sorted(trials, key=lambda t: t.number):
            model._add(view)
        return model

    def _penalty(self, view: TrialView) -> list[float] | None:
        """The value a diverged trial is told with: the worst value seen so far.

        Optuna's TPE, GP and CMA-ES skip failed trials, so a sampler told "FAIL" keeps
        proposing the region where training blows up. Told as the worst completed
        result instead, it learns to avoid it. Before any trial has completed there
        is nothing to compare with, and the trial is told as failed.
        """
        if view.status.reason != "Diverged" or view.status.phase != "Failed":
            return None
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None
        worst = []
        for i, direction in enumerate(self.study.directions):
            values = [t.values[i] for t in done]
            worst.append(min(values) if direction.name == "MAXIMIZE" else max(values))
        return worst

    def _count_warm(self, warm: int) -> None:
        """The study's first `warm` trials are another Study's (warm start)."""
        self.warm = warm
        sampler = self.study.sampler
        if isinstance(sampler, PhasedSampler):
            # Optuna numbers the warm-start trials first: the startup phase counts this
            # Study's own trials only.
            sampler.switch += warm

    def _frozen(self, view: TrialView, attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
        state = _state(view)
        saved = view.sampler_state or {}
        penalty = self._penalty(view)
        if penalty is not None:
            state = TrialState.COMPLETE
            attrs = {**attrs, "kubetune_diverged": True}
        trial = optuna.trial.create_trial(
            params=view.params,
            distributions=space.distributions_for(self.spec.parameters, view.params),
            values=(penalty or _values(view)) if state == TrialState.COMPLETE else None,
            state=TrialState.FAIL if state == TrialState.RUNNING else state,
            intermediate_values={} if self.multi else dict(view.status.intermediate),
            user_attrs=attrs,
            system_attrs=dict(saved.get("trial") or {}),
        )
        if state == TrialState.RUNNING:  # create_trial only makes finished trials
            trial.state, trial.datetime_complete = state, None
        return trial

    def _add(self, view: TrialView) -> None:
        self.numbers.add(view.number)
        if view.source == "repeat":
            return  # seed repeats measure variance; they are not search history
        storage, study_id = self.study._storage, self.study._study_id
        # The study's attributes as they were after this trial was asked (QMC's sample
        # counter, NSGA-II's population cache...): replayed in trial order.
        for key, value in ((view.sampler_state or {}).get("study") or {}).items():
            storage.set_study_system_attr(study_id, key, value)
            self.study_attrs[key] = value
        if _state(view) == TrialState.RUNNING:
            # Re-created as it was asked, without asking the sampler again.
            frozen = self._frozen(view, {"kubetune_trial": view.name})
            trial_id = storage.create_new_trial(study_id, template_trial=frozen)
            self.live[view.number] = optuna.Trial(self.study, trial_id)
            self.reported[view.number] = set()
            self.report(view)
        else:
            self.study.add_trial(self._frozen(view, {"kubetune_trial": view.name}))

    def report(self, view: TrialView) -> None:
        """Pass a running trial's new intermediate values to Optuna (for pruners)."""
        trial = self.live.get(view.number)
        if trial is None or self.multi:
            return  # Optuna keeps no intermediate values for several objectives
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
            penalty = self._penalty(view)
            if state == TrialState.COMPLETE:
                self.study.tell(trial, _values(view))
            elif penalty is not None:
                trial.set_user_attr("kubetune_diverged", True)
                self.study.tell(trial, penalty)
            else:
                self.study.tell(trial, state=state)
            del self.live[view.number]
            told.append(view.number)
        return told

    def ask(
        self, count: int, fixed: Sequence[dict[str, Any]] = ()
    ) -> list[tuple[optuna.Trial, dict[str, Any]]]:
        """Propose `count` new trials, the `fixed` configurations first (blocking)."""
        out = []
        timer = metrics.ASK.labels(sampler=self.spec.sampler.name)
        seed = self.spec.sampler.seed
        for i in range(count):
            with timer.time():
                if i < len(fixed):
                    self.study.enqueue_trial(fixed[i], skip_if_exists=False)
                if seed is not None:
                    # The sampler's randomness for this trial depends on the seed and the
                    # trial's number only, not on how many asks this process made: a
                    # rebuilt study proposes what the uninterrupted one would have.
                    number = len(self.study.get_trials(deepcopy=False))
                    reseed(self.study.sampler, seed, number)
                trial = self.study.ask()
                out.append((trial, space.sample(trial, self.spec.parameters)))
        return out

    def proposal_context(self) -> tuple[list[optuna.trial.FrozenTrial], dict[str, Any], int]:
        """What `propose` needs to stand in for this study in another process."""
        return self.study.get_trials(deepcopy=True), dict(self.study_attrs), self.warm

    def adopt_proposals(
        self, numbers: Sequence[int], proposals: Sequence[tuple[dict[str, Any], dict[str, Any]]]
    ) -> None:
        """Record trials another process proposed (see `propose`) without asking the
        sampler here: every parameter is fixed, so a stand-in sampler samples nothing."""
        real = self.study.sampler
        self.study.sampler = optuna.samplers.RandomSampler()
        storage = self.study._storage
        try:
            for number, (params, state) in zip(numbers, proposals, strict=True):
                self.study.enqueue_trial(params, skip_if_exists=False)
                trial = self.study.ask()
                space.sample(trial, self.spec.parameters)
                for key, value in (state.get("trial") or {}).items():
                    storage.set_trial_system_attr(trial._trial_id, key, value)
                for key, value in (state.get("study") or {}).items():
                    storage.set_study_system_attr(self.study._study_id, key, value)
                    self.study_attrs[key] = value
                self.adopt(number, trial)
        finally:
            self.study.sampler = real

    def sampler_state(self, number: int) -> dict[str, Any]:
        """What the sampler wrote while asking trial `number`, to keep in its Trial object:
        the trial's system attributes and the study's attributes that changed."""
        trial = self.live[number]
        storage, study_id = self.study._storage, self.study._study_id
        attrs = storage.get_trial_system_attrs(trial._trial_id)
        now = storage.get_study_system_attrs(study_id)
        changed = {k: v for k, v in now.items() if self.study_attrs.get(k, _MISSING) != v}
        self.study_attrs = dict(now)
        state: dict[str, Any] = {}
        if attrs:
            state["trial"] = attrs
        if changed:
            state["study"] = changed
        return state

    def to_prune(self) -> list[int]:
        """Running trials the pruner would stop now (after their latest report)."""
        return [n for n, t in self.live.items() if self.reported.get(n) and t.should_prune()]

    def completed(self) -> list[optuna.trial.FrozenTrial]:
        """A copy of the completed trials, for work done apart from this study (importance)."""
        return self.study.get_trials(deepcopy=True, states=(TrialState.COMPLETE,))

    def skip(self, number: int) -> None:
        """A Trial that is not search history (a seed repeat): known, never told."""
        self.numbers.add(number)

    def adopt(self, number: int, trial: optuna.Trial) -> None:
        """The Trial object for `trial` now exists with this number."""
        self.live[number] = trial
        self.reported[number] = set()
        self.numbers.add(number)

    def learned(self) -> int:
        """Finished trials of this Study the sampler has learned from (not warm-start ones)."""
        trials = self.study.get_trials(deepcopy=False)
        return sum(t.state.is_finished() for t in trials) - self.warm


def importance(
    directions: Sequence[Literal["minimize", "maximize"]],
    trials: Sequence[optuna.trial.FrozenTrial],
) -> dict[str, float]:
    """PED-ANOVA importance of each parameter; {} until there is enough to say.

    PED-ANOVA (Watanabe et al., 2023) asks how differently each parameter is spread
    in the best trials than in all of them. It replaced fANOVA here because a fANOVA
    refit fits a random forest: ~1 s of CPU per 100-trial Study and a worker that
    grew ~5 MB per refit (bench/importance_memory.py); PED-ANOVA takes ~20 ms, holds
    nothing between refits, and needs no scikit-learn. The ranking it gives agrees
    with fANOVA's on the benchmark's studies.

    Runs on a copy of the trials in a study of its own, so a refit never holds the
    live study while the sampler needs it.
    """
    if len(trials) < 4 or len(directions) > 1:
        return {}
    study = optuna.create_study(directions=list(directions))
    study.add_trials(trials)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as e:
        # Too little variety so far (one distinct value per parameter): no importance
        # yet, never a failed pass.
        log.debug("no importance: %s", e)
        return {}
    return {k: round(float(v), 4) for k, v in scores.items()}
