"""Datasets that need no download: scikit-learn's digits, and a seeded synthetic task."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits  # ships inside scikit-learn: no network
from torch.utils.data import TensorDataset


def digits() -> tuple[torch.Tensor, torch.Tensor, int]:
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    return x, y, 10


def synthetic(
    samples: int = 2000, features: int = 32, classes: int = 4, noise: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Gaussian clusters around random centres; deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 2.0
    y = torch.randint(0, classes, (samples,), generator=g)
    x = centres[y] + noise * torch.randn(samples, features, generator=g)
    return x, y, classes


def split(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int
) -> tuple[TensorDataset, TensorDataset]:
    """A seeded train/validation split (the same for every trial of a Study)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    n_val = max(1, int(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])
