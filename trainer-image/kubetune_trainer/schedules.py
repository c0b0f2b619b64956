"""Learning-rate schedules by name, each combinable with a linear warm-up.

torch's schedulers are used where they exist (exponential, step, multi-step,
multiplicative, cosine, cosine with warm restarts, reduce-on-plateau); the rest
are written once here as a factor of the base learning rate:

  piecewise     lr0 * values[i] where boundaries[i-1] <= t < boundaries[i] (values has one more)
  natural-exp   lr0 * exp(-gamma * t)
  polynomial    (lr0 - end_lr) * (1 - t'/T)^power + end_lr, with t' = min(t, T); with cycle,
                T grows to the next multiple of decay_steps past t
  inverse-time  lr0 / (1 + gamma * t)
  noam          lr0 * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5), s = t + 1

`t` counts scheduler steps (epochs by default; batches with `unit: batch`). With a
warm-up of W steps the rate rises linearly from `warmup_start_lr` to lr0 over steps
0..W-1, and the schedule then runs with t - W.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

Factor = Callable[[int], float]


def piecewise(boundaries: list[int], values: list[float]) -> Factor:
    if len(values) != len(boundaries) + 1:
        raise ValueError("piecewise needs one more value than boundaries")
    return lambda t: values[sum(t >= b for b in boundaries)]


def natural_exp(gamma: float) -> Factor:
    return lambda t: math.exp(-gamma * t)


def inverse_time(gamma: float) -> Factor:
    return lambda t: 1.0 / (1.0 + gamma * t)


def polynomial(
    lr0: float, decay_steps: int, end_lr: float = 0.0, power: float = 1.0, cycle: bool = False
) -> Factor:
    def factor(t: int) -> float:
        if cycle:
            span = decay_steps * max(1, math.ceil(t / decay_steps))
        else:
            span, t = decay_steps, min(t, decay_steps)
        return float(((lr0 - end_lr) * (1 - t / span) ** power + end_lr) / lr0)

    return factor


def noam(d_model: int, warmup: int) -> Factor:
    def factor(t: int) -> float:
        s = t + 1
        return float(d_model**-0.5 * min(s**-0.5, s * warmup**-1.5))

    return factor


SCHEDULES = (
    "constant",
    "piecewise",
    "exponential",
    "natural-exp",
    "polynomial",
    "step",
    "multi-step",
    "inverse-time",
    "multiplicative",
    "cosine",
    "cosine-restarts",
    "noam",
    "plateau",
)


def _inner(name: str, optimizer: Optimizer, lr0: float, p: dict[str, Any]) -> Any:
    """The torch scheduler for `name` on `optimizer`."""

    def factor(f: Factor) -> sched.LambdaLR:
        return sched.LambdaLR(optimizer, f)

    match name:
        case "constant":
            return factor(lambda t: 1.0)
        case "piecewise":
            return factor(piecewise(list(p["boundaries"]), list(p["values"])))
        case "exponential":
            return sched.ExponentialLR(optimizer, gamma=p.get("gamma", 0.9))
        case "natural-exp":
            return factor(natural_exp(p.get("gamma", 0.1)))
        case "polynomial":
            return factor(
                polynomial(
                    lr0,
                    int(p.get("decay_steps", 10)),
                    p.get("end_lr", 0.0),
                    p.get("power", 1.0),
                    bool(p.get("cycle", False)),
                )
            )
        case "step":
            return sched.StepLR(
                optimizer, step_size=int(p.get("step_size", 3)), gamma=p.get("gamma", 0.1)
            )
        case "multi-step":
            return sched.MultiStepLR(
                optimizer, milestones=list(p.get("milestones", [5, 8])), gamma=p.get("gamma", 0.1)
            )
        case "inverse-time":
            return factor(inverse_time(p.get("gamma", 0.5)))
        case "multiplicative":
            f = p.get("factor", 0.95)
            return sched.MultiplicativeLR(optimizer, lambda t: f)
        case "cosine":
            return sched.CosineAnnealingLR(
                optimizer, T_max=int(p.get("t_max", 10)), eta_min=p.get("min_lr", 0.0)
            )
        case "cosine-restarts":
            return sched.CosineAnnealingWarmRestarts(
                optimizer,
                T_0=int(p.get("t_0", 5)),
                T_mult=int(p.get("t_mult", 1)),
                eta_min=p.get("min_lr", 0.0),
            )
        case "noam":
            return factor(noam(int(p.get("d_model", 512)), int(p.get("warmup", 4000))))
        case "plateau":
            return sched.ReduceLROnPlateau(
                optimizer,
                mode=p.get("mode", "min"),
                factor=p.get("factor", 0.1),
                patience=int(p.get("patience", 3)),
                cooldown=int(p.get("cooldown", 0)),
                min_lr=p.get("min_lr", 0.0),
            )
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass
class Schedule:
    """A schedule with an optional linear warm-up; call step() once per unit."""

    optimizer: Optimizer
    name: str = "constant"
    params: dict[str, Any] = field(default_factory=dict)
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    t: int = 0

    def __post_init__(self) -> None:
        self.lr0 = float(self.optimizer.param_groups[0]["lr"])
        self.inner = _inner(self.name, self.optimizer, self.lr0, self.params)
        if self.warmup_steps > 0:
            self._set(self.warmup_start_lr)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, metric: float | None = None) -> None:
        """Advance one unit; reduce-on-plateau needs the monitored metric."""
        self.t += 1
        if self.t < self.warmup_steps:
            frac = self.t / self.warmup_steps
            self._set(self.warmup_start_lr + (self.lr0 - self.warmup_start_lr) * frac)
            return
        if self.t == self.warmup_steps:
            # Warm-up done: the schedule starts at its own t = 0 (lr0 x factor(0)).
            last = getattr(self.inner, "get_last_lr", lambda: [self.lr0])()
            self._set(float(last[0]))
            return
        if isinstance(self.inner, sched.ReduceLROnPlateau):
            if metric is not None:
                self.inner.step(metric)
        else:
            self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.inner.load_state_dict(state["inner"])


def lrs(schedule: Schedule, steps: int, metrics: list[float] | None = None) -> list[float]:
    """The learning rate at t = 0..steps-1 (a dry run, for tests and plots)."""
    out = []
    with warnings.catch_warnings():
        # No optimizer.step() in a dry run; torch would warn about the order.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for t in range(steps):
            out.append(schedule.lr)
            schedule.step(metrics[t] if metrics else None)
    return out


def dummy_optimizer(lr: float) -> Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
