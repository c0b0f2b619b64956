"""Tasks for the search-quality benchmark (issue 13), and the Study specs that run them.

Digits cannot tell search methods apart (every method reaches ~0.98 in a few trials),
so this module defines tasks where the search matters. All are minimised, all report
a value per step over ``STEPS`` = 27 steps (27 = 3**3, so successive halving and
Hyperband with reduction factor 3 get rungs at steps 1, 3 and 9 before the end at 27),
and the value at the last step is the objective. Everything is generated from formulas and seeds:
no download, no data file.

Fast tasks (microseconds per curve, numpy only so a trial pod starts quickly)
--------------------------------------------------------------------------------
Both build a learning curve from a noise-free final value ``f(x)`` and a per-point
learning rate ``alpha(x)`` with the power-law shape of Domhan et al. (2015, "pow3"
in their family of learning-curve models, y = c - a * t**-alpha), shifted so that it
starts at an "untrained" value ``y0`` at step 0 and ends exactly at ``f(x)``::

    h(t) = ((t + 1)**-alpha - (T + 1)**-alpha) / (1 - (T + 1)**-alpha)    h(0)=1, h(T)=0
    y(t) = f(x) + (y0 - f(x)) * h(t) [+ a late rise, see mixed9]        t = 1..T

A large alpha learns fast and flattens early; a small one improves almost linearly to
the end. Because alpha is a different function of x than f, curves cross: a trial
that leads at step 3 need not lead at step 27, so a pruner takes real risk.

Observation noise: every reported value gets independent N(0, noise**2) noise from a
generator seeded with the trial's seed (``trial_seed(run_seed, number)``, the seed the
operator gives trial k of a Study seeded run_seed as ${trial.seed}), so a run is
reproducible and the in-process and operator runs of trial k see the same noise.
The benchmark scores a method by the noise-free final value of its incumbent (the
trial with the best *observed* objective), the usual practice in HPO benchmarks
(HPOBench, YAHPO), so the winner's curse of a noisy best-of-64 does not flatter
anyone.

``hartmann6``: the 6-D Hartmann function (Dixon and Szegö, 1978; constants and
optimum as in Surjanovic and Bingham's Virtual Library of Simulation Experiments),
x in [0, 1]**6, minimum -3.32237 at (0.20169, 0.150011, 0.476874, 0.275332,
0.311652, 0.6573). y0 = 0 (where the function sits far from its basins);
alpha(x) = 0.08 * 64**s with s = (x0 + 1 - x5) / 2, so alpha spans [0.08, 5.1] and the
optimum (s = 0.27, alpha = 0.25) learns more slowly than an average point
(s = 0.5, alpha = 0.64): it reads -0.93 at step 1 and -1.72 at step 3 on its way to
-3.32. Among the best 10% of random points the rank correlation of the step-1 value
with the final one is 0.71 (0.83 at step 3, 0.95 at step 9), but the very best points
still lead from step 1: pruning is fairly safe here, a contrast to mixed9. Noise sd
0.05 (1.5% of the function's range).

``mixed9``: a hand-made response surface of a classifier's validation error over
nine hyperparameters of mixed kinds (a categorical optimizer, log-scaled learning
rate and weight decay, log-scaled integer batch size and width, integer depth, and
floats), built from qualitative facts of the tuning literature rather than fitted to
data. Its penalty P(x) >= 0 sums:

* learning rate: 0.25 * (log10(lr_eff / lr_opt) / w)**2, where for sgd
  lr_eff = lr / (1 - momentum) (the effective step of heavy-ball momentum) and
  lr_opt = 0.4 * batch / 128 (the linear scaling rule, Goyal et al. 2017), w = 0.6;
  for adam and rmsprop lr_eff = lr, lr_opt = 1e-3 resp. 3e-4 times sqrt(batch / 128)
  (square-root scaling for adaptive methods, Malladi et al. 2022), w = 0.8 resp. 0.5
  (Adam forgives a mis-set learning rate more). Ten times lr_opt or more diverges:
  the error is 0.9 (chance for ten classes) at every step.
* optimizer floor: 0 for sgd, 0.06 for adam, 0.12 for rmsprop (tuned SGD generalises
  best, Wilson et al. 2017, but its basin is the narrowest).
* capacity c = log2(width / 16) / 7 + (layers - 1) / 7 in [0, 2]:
  0.9 * exp(-2.5 c) + 0.05 c**2 - 0.1167257 (diminishing returns, then too big for
  the data; the constant is the minimum, at c = 1.1794, e.g. 3 layers of 1,223
  units), plus 0.04 * max(0, layers - 4)**2 (deep plain MLPs train worse).
* regularisation reg = dropout + 0.3 * max(0, log10(weight_decay) + 6) must match what
  the capacity needs, need = max(0, 1.5 * (c - 0.6)): under-regularising costs
  0.6 * (need - reg)**2 and shows as a late rise of the curve (overfitting);
  over-regularising costs 0.3 * (reg - need)**2.
* batch: 0.05 * max(0, log2(batch / 128))**2 (large batches generalise worse,
  Keskar et al. 2017).
* eps (Adam's/RMSprop's epsilon) is nearly a dead dimension: 0.02 * max(0,
  log10(eps) + 6) for adaptive optimizers only, as in practice.

The final error is f = 0.04 + 0.86 * (1 - exp(-P)) (in [0.04, 0.9]); 0.04 is reached
where every term is zero (sgd, batch <= 128, lr / (1 - momentum) = lr_opt, c = 1.1794,
reg = need), a ridge rather than a point. The curve starts
at y0 = 0.9; alpha = 2**(1.5 * clip(log10(lr_eff / lr_opt), -3, 1)) *
2**-(c - 0.6) * (1 - 0.6 * dropout): a too-large learning rate looks good early and
ends worse, big or strongly regularised models start slowly. The under-
regularisation part of f is added as a late rise r * (t / T)**2 on top of the curve
without it, so such trials peak early and then get worse, as overfitting models do.
Noise sd 0.005 (the binomial spread of an error rate near 6% on ~2,000 samples).
37% of random points diverge; among the best 10% the rank correlation of the value at
step 1, 3, 9 with the final one is 0.39, 0.55, 0.81, and a sixth of the very best
trail the median at step 1 (too-large steps look good early, overfitting ends badly):
pruning here takes real risk. ``MIXED9_OPTIMUM_PARAMS`` is a point on the ridge (its
value exceeds 0.04 by the rounding of the integer width only); tests check that
nothing random beats it.

Calibration (noise-free finals of uniformly random points, 200 x 64 draws): the best
of 64 random trials averages -1.84 (sd 0.52) on hartmann6 against the optimum -3.32,
and 0.165 (sd 0.058) on mixed9 against 0.04: plenty of room for a search to beat
random search at budgets of 64 trials (in-process TPE, 3 seeds: -3.00 and 0.105).

The real task
-------------
``REAL``: the reference trainer (trainer-image/kubetune_trainer) on its seeded
``synthetic`` data set (Gaussian clusters: 4,000 samples, 32 features, 8 classes,
noise 6, so a Bayes classifier reaches ~64% accuracy; half is held out for
validation), an MLP trained for 27 epochs on CPU, minimising val_loss (cross-entropy:
unlike accuracy it keeps telling good configurations apart, and it rises when a
model over-fits, so the curves cross). Nine parameters, with the interactions that
make random search slow: the normal-init std whose right value depends on the width,
an effective SGD step lr / (1 - momentum) that diverges when too large, regularisation
that must match the capacity. The trainer's --seed (from the trial seed) is the
observation noise: weight init and batch order. One trial took 6.6-15 s of wall time
(3.8-10 s of CPU, ~3 s of it importing PyTorch) on a loaded 2-core machine. Not yet
measured: the issue's requirement that random search's best of 64 sit more than five
seed standard deviations behind a good search; if it does not, widen the ranges
(lr, init_std) or add the activation and more optimizers, which costs random search
more than a model-based sampler.

Cost model
----------
Fast tasks: GPU-seconds = steps run x ``seconds_per_step`` (1.0 by default, so a
complete trial costs 27 GPU-seconds). A pruned trial costs the steps it ran up to and
including the step at which the pruner decided (in process) or up to when it stopped
(through the operator, where the difference is the operator's pruning latency). The
real task's cost is the trial's measured wall time (one trial = one "GPU").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

STEPS = 27
BENCH = Path(__file__).resolve().parent

Params = Mapping[str, Any]
Floats = NDArray[np.float64]


def trial_seed(run_seed: int, number: int) -> int:
    """The observation-noise seed of trial `number` of a run seeded `run_seed`.

    The operator's ${trial.seed} (kubetune.reconcile._seed, for spec.sampler.seed =
    run_seed), so trial k sees the same noise in process and through the operator
    (their parameters may differ; the noise process is the same).
    """
    return (run_seed * 1_000_003 + number) % 2**31


def _progress(alpha: float, steps: int) -> Floats:
    """h(t) for t = 1..steps: 1 at t = 0 (untrained), 0 at t = steps (see the docstring)."""
    t = np.arange(1, steps + 1, dtype=np.float64)
    end = (steps + 1.0) ** -alpha
    result: Floats = ((t + 1.0) ** -alpha - end) / (1.0 - end)
    return result


@dataclass(frozen=True)
class CurveTask:
    """A fast benchmark objective: a noisy learning curve per parameter point."""

    name: str
    metric: str
    parameters: list[dict[str, Any]]
    noise: float
    optimum_params: dict[str, Any]
    optimum_exact: bool
    bounds: tuple[float, float]  # observed values are clipped into this range
    direction: Literal["minimize", "maximize"] = "minimize"
    steps: int = STEPS
    seconds_per_step: float = 1.0

    def noise_free(self, params: Params) -> Floats:
        raise NotImplementedError

    def curve(self, params: Params, seed: int | None) -> list[float]:
        """The observed value at steps 1..steps; seed None gives the noise-free curve."""
        values = self.noise_free(params)
        if seed is not None:
            rng = np.random.default_rng(seed)
            values = values + rng.normal(0.0, self.noise, len(values))
        return [float(v) for v in np.clip(values, *self.bounds)]

    def final(self, params: Params) -> float:
        """The noise-free objective (the curve's last value)."""
        return float(self.noise_free(params)[-1])

    @property
    def optimum(self) -> float:
        return self.final(self.optimum_params)


# -- hartmann6 ---------------------------------------------------------------------------

_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
HARTMANN6_MINIMUM = -3.32237
HARTMANN6_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)


def hartmann6(x: Sequence[float]) -> float:
    z = np.asarray(x, dtype=np.float64)
    inner = np.sum(_H_A * (z - _H_P) ** 2, axis=1)
    return float(-np.sum(_H_ALPHA * np.exp(-inner)))


@dataclass(frozen=True)
class Hartmann6Task(CurveTask):
    def noise_free(self, params: Params) -> Floats:
        x = [float(params[f"x{i}"]) for i in range(6)]
        final = hartmann6(x)
        s = (x[0] + 1.0 - x[5]) / 2.0
        alpha = 0.08 * 64.0**s
        result: Floats = final * (1.0 - _progress(alpha, self.steps))  # y0 = 0
        return result


HARTMANN6 = Hartmann6Task(
    name="hartmann6",
    metric="loss",
    parameters=[{"name": f"x{i}", "float": {"low": 0.0, "high": 1.0}} for i in range(6)],
    noise=0.05,
    optimum_params={f"x{i}": v for i, v in enumerate(HARTMANN6_ARGMIN)},
    optimum_exact=True,
    bounds=(-4.0, 1.0),
)


# -- mixed9 ------------------------------------------------------------------------------

_LR = {"sgd": (0.4, 1.0, 0.6), "adam": (1e-3, 0.5, 0.8), "rmsprop": (3e-4, 0.5, 0.5)}
_FLOOR = {"sgd": 0.0, "adam": 0.06, "rmsprop": 0.12}
CHANCE = 0.9
_CAPACITY_MIN = 0.11672566  # min over c of 0.9 exp(-2.5 c) + 0.05 c**2, at c = 1.17940


@dataclass(frozen=True)
class Mixed9Task(CurveTask):
    def penalties(self, params: Params) -> tuple[float, float, float, bool]:
        """(P without under-regularisation, its under-regularisation part, alpha, diverged)."""
        opt = str(params["optimizer"])
        lr, momentum = float(params["lr"]), float(params["momentum"])
        wd, batch = float(params["weight_decay"]), int(params["batch_size"])
        layers, width = int(params["layers"]), int(params["width"])
        dropout, eps = float(params["dropout"]), float(params["eps"])
        base, power, w = _LR[opt]
        lr_opt = base * (batch / 128.0) ** power
        lr_eff = lr / (1.0 - momentum) if opt == "sgd" else lr
        off = math.log10(lr_eff / lr_opt)
        c = math.log2(width / 16.0) / 7.0 + (layers - 1) / 7.0
        reg = dropout + 0.3 * max(0.0, math.log10(wd) + 6.0)
        need = max(0.0, 1.5 * (c - 0.6))
        p = 0.25 * (off / w) ** 2 + _FLOOR[opt]
        p += 0.9 * math.exp(-2.5 * c) + 0.05 * c * c - _CAPACITY_MIN
        p += 0.04 * max(0, layers - 4) ** 2
        p += 0.3 * max(0.0, reg - need) ** 2
        p += 0.05 * max(0.0, math.log2(batch / 128.0)) ** 2
        if opt != "sgd":
            p += 0.02 * max(0.0, math.log10(eps) + 6.0)
        under = 0.6 * max(0.0, need - reg) ** 2
        alpha = 2.0 ** (1.5 * min(max(off, -3.0), 1.0)) * 2.0 ** -(c - 0.6) * (1 - 0.6 * dropout)
        return p, under, alpha, off >= 1.0

    def noise_free(self, params: Params) -> Floats:
        p, under, alpha, diverged = self.penalties(params)
        if diverged:
            return np.full(self.steps, CHANCE)

        def error(penalty: float) -> float:
            return 0.04 + (CHANCE - 0.04) * (1.0 - math.exp(-penalty))

        best, final = error(p), error(p + under)
        t = np.arange(1, self.steps + 1, dtype=np.float64)
        result: Floats = best + (CHANCE - best) * _progress(alpha, self.steps)
        result = result + (final - best) * (t / self.steps) ** 2  # overfitting: a late rise
        return result


# On the ridge where P = 0: lr / (1 - momentum) = lr_opt = 0.4 at batch 128; width 1223
# for c = 1.1794 at 3 layers; need = 1.5 * (c - 0.6) = 0.8691 = reg = 0.5 + 0.3 * 1.2303.
MIXED9_OPTIMUM_PARAMS: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.04,
    "momentum": 0.9,
    "weight_decay": 10**-4.7697,
    "batch_size": 128,
    "layers": 3,
    "width": 1223,
    "dropout": 0.5,
    "eps": 1e-8,
}

MIXED9 = Mixed9Task(
    name="mixed9",
    metric="val_error",
    parameters=[
        {"name": "optimizer", "categorical": {"choices": ["sgd", "adam", "rmsprop"]}},
        {"name": "lr", "float": {"low": 1e-5, "high": 1.0, "log": True}},
        {"name": "momentum", "float": {"low": 0.0, "high": 0.99}},
        {"name": "weight_decay", "float": {"low": 1e-7, "high": 1e-1, "log": True}},
        {"name": "batch_size", "int": {"low": 16, "high": 1024, "log": True}},
        {"name": "layers", "int": {"low": 1, "high": 8}},
        {"name": "width", "int": {"low": 16, "high": 2048, "log": True}},
        {"name": "dropout", "float": {"low": 0.0, "high": 0.8}},
        {"name": "eps", "float": {"low": 1e-10, "high": 1e-4, "log": True}},
    ],
    noise=0.005,
    optimum_params=MIXED9_OPTIMUM_PARAMS,
    optimum_exact=False,
    bounds=(0.0, 1.0),
)

FAST_TASKS: dict[str, CurveTask] = {t.name: t for t in (HARTMANN6, MIXED9)}


# -- the real task -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerTask:
    """A Study of the reference trainer; one trial takes seconds on CPU."""

    name: str
    metric: str
    parameters: list[dict[str, Any]]
    fixed_args: list[str]
    direction: Literal["minimize", "maximize"] = "minimize"
    steps: int = STEPS
    image: str = "ghcr.io/kubetune/trainer:0.1.0"
    # Flags named after the parameters: --batch-size=${params.batch_size}.
    flags: dict[str, str] = field(default_factory=dict)

    def template_args(self) -> list[str]:
        """The container's args, with kubetune's ${params.X} placeholders."""
        per_param = [
            f"--{self.flags.get(p['name'], p['name'].replace('_', '-'))}=${{params.{p['name']}}}"
            for p in self.parameters
        ]
        return [*self.fixed_args, "--seed=${trial.seed}", *per_param]

    def argv(self, params: Params, seed: int) -> list[str]:
        """The same command line with values filled in (for the in-process baseline)."""
        args = [*self.fixed_args, f"--seed={seed}"]
        for p in self.parameters:
            flag = self.flags.get(p["name"], p["name"].replace("_", "-"))
            args.append(f"--{flag}={params[p['name']]}")
        return args


REAL = TrainerTask(
    name="trainer-synthetic",
    metric="val_loss",
    parameters=[
        {"name": "optimizer", "categorical": {"choices": ["sgd", "adam"]}},
        {"name": "lr", "float": {"low": 1e-5, "high": 1.0, "log": True}},
        {"name": "momentum", "float": {"low": 0.0, "high": 0.99}},
        {"name": "weight_decay", "float": {"low": 1e-6, "high": 1e-1, "log": True}},
        {"name": "batch_size", "int": {"low": 32, "high": 512, "log": True}},
        {"name": "layers", "int": {"low": 1, "high": 4}},
        {"name": "width", "int": {"low": 16, "high": 512, "log": True}},
        {"name": "dropout", "float": {"low": 0.0, "high": 0.7}},
        {"name": "init_std", "float": {"low": 1e-3, "high": 1.0, "log": True}},
    ],
    fixed_args=[
        "--dataset=synthetic",
        "--samples=4000",
        "--features=32",
        "--classes=8",
        "--noise=6",
        "--val-split=0.5",
        "--data-seed=0",
        f"--epochs={STEPS}",
        "--model=mlp",
        "--activation=relu",
        "--init=normal",
        "--schedule=constant",
        "--device=cpu",
    ],
)


# -- methods and Study specs -----------------------------------------------------------------

# Sampler configurations compared (spec.sampler without the seed). TPE's own random
# startup is 10 trials; "tpe-qmc" replaces those 10 with a scrambled Sobol sequence.
SAMPLERS: dict[str, dict[str, Any]] = {
    "random": {"name": "random"},
    "qmc": {"name": "qmc"},
    "tpe": {"name": "tpe"},
    "tpe-qmc": {"name": "tpe", "startup": {"name": "qmc", "trials": 10}},
    "gp": {"name": "gp"},
    "cmaes": {"name": "cmaes"},
}
PRUNERS = ("none", "median", "successive-halving", "hyperband")


def pruner_spec(name: str, steps: int = STEPS) -> dict[str, Any]:
    """spec.pruner. Rungs are set explicitly (1, 3, 9, 27 for 27 steps): Optuna's
    defaults (reduction factor 4; Hyperband's max_resource guessed from the first
    finished trial) would not line up with the task's steps."""
    if name == "successive-halving":
        return {"name": name, "options": {"minResource": 1, "reductionFactor": 3}}
    if name == "hyperband":
        options = {"minResource": 1, "maxResource": steps, "reductionFactor": 3}
        return {"name": name, "options": options}
    if name in ("none", "median"):
        return {"name": name}  # median: 5 startup trials, no warm-up steps (defaults)
    raise ValueError(f"unknown pruner {name!r}; one of {PRUNERS}")


def fast_trial_template(
    task: CurveTask, seconds_per_step: float, python: str = "python"
) -> dict[str, Any]:
    """A Job spec running bench/search_trial.py for one trial of a fast task.

    For the local cluster, whose node runs the command with the project's Python and
    sees the repository (an image with the repository inside would do elsewhere).
    """
    command = [
        python,
        str(BENCH / "search_trial.py"),
        f"--task={task.name}",
        "--seed=${trial.seed}",
        f"--seconds-per-step={seconds_per_step}",
    ]
    container = {
        "name": "trial",
        "image": "python:3.11",
        "command": command,
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    return {
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
    }


def real_trial_template(task: TrainerTask = REAL) -> dict[str, Any]:
    container = {
        "name": "trainer",
        "image": task.image,
        "args": task.template_args(),
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],  # one core per trial
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    return {
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
    }


def study_spec(
    task: CurveTask | TrainerTask,
    sampler: str,
    pruner: str,
    seed: int,
    trials: int,
    parallelism: int = 1,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """spec of the Study for one (task, sampler, pruner, seed): the in-process
    baseline parses the same document, so both build the same sampler and pruner."""
    if template is None:
        if isinstance(task, TrainerTask):
            template = real_trial_template(task)
        else:
            template = fast_trial_template(task, task.seconds_per_step)
    return {
        "objective": {"metric": task.metric, "direction": task.direction},
        "parameters": task.parameters,
        "sampler": {**SAMPLERS[sampler], "seed": seed},
        "pruner": pruner_spec(pruner, task.steps),
        # Failures would end a Study early and make the comparison meaningless.
        "budget": {"maxTrials": trials, "parallelism": parallelism, "maxFailedTrials": trials},
        "trialTemplate": template,
    }


def task_named(name: str) -> CurveTask | TrainerTask:
    if name == REAL.name:
        return REAL
    try:
        return FAST_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; one of {[*FAST_TASKS, REAL.name]}") from None
