"""Per-epoch checkpoints: a preempted or retried trial continues where it stopped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FILE = "checkpoint.pt"


def save(directory: str, state: dict[str, Any]) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{FILE}.tmp"
    torch.save(state, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(d / FILE)


def load(directory: str | None) -> dict[str, Any] | None:
    if not directory:
        return None
    path = Path(directory) / FILE
    if not path.exists():
        return None
    # Our own file, written by save(); it holds RNG states (tensors) and plain data.
    state: dict[str, Any] = torch.load(path, weights_only=False)
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
