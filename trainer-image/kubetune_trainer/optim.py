"""Optimizers with every hyperparameter the literature tunes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer

OPTIMIZERS = ("sgd", "adam", "adamw", "nadam")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


def make(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> Optimizer:
    betas = (cfg.beta1, cfg.beta2)
    match cfg.name:
        case "sgd":
            # PyTorch refuses Nesterov without momentum; say so in our words.
            if cfg.nesterov and cfg.momentum <= 0:
                raise ValueError("nesterov needs momentum > 0")
            return torch.optim.SGD(
                params,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
            )
        case "adam":
            return torch.optim.Adam(
                params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay
            )
        case "adamw":
            return torch.optim.AdamW(
                params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay
            )
        case "nadam":
            return torch.optim.NAdam(
                params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay
            )
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")
