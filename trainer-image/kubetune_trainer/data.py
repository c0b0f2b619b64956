"""Datasets that need no download: scikit-learn's digits, and a seeded synthetic task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits  # ships inside scikit-learn: no network
from torch.utils.data import TensorDataset


def digits() -> tuple[torch.Tensor, torch.Tensor, int]:
    """8x8 handwritten digits, shaped (N, 1, 8, 8) in [0, 1]."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    return x, y, 10


def from_file(path: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A user-supplied dataset on a mounted path: .npz with arrays x and y, or a .pt
    file holding {"x": tensor, "y": tensor}. x is (N, features) or (N, C, H, W);
    y holds class indices 0..K-1."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist (is the volume mounted?)")
    if p.suffix == ".npz":
        with np.load(p) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise ValueError(f"{path}: an .npz dataset needs arrays 'x' and 'y'")
            x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    elif p.suffix == ".pt":
        blob = torch.load(p, weights_only=True)
        if not isinstance(blob, dict) or "x" not in blob or "y" not in blob:
            raise ValueError(f"{path}: a .pt dataset must hold a dict with 'x' and 'y'")
        x, y = torch.as_tensor(blob["x"]), torch.as_tensor(blob["y"])
    else:
        raise ValueError(f"{path}: use a .npz or .pt file")
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} samples in x but {len(y)} labels in y")
    return x.float(), y.long(), int(y.max()) + 1


def synthetic(
    samples: int = 2000, features: int = 32, classes: int = 4, noise: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Gaussian clusters around random centres; deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 2.0  # fixed by the seed
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
