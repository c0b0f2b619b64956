"""The reference trainer: init, optimizers, data files, the range test, resume, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kubetune_trainer import models, optim
from kubetune_trainer.__main__ import parse_args
from kubetune_trainer.data import from_file


@pytest.mark.parametrize(
    "scheme", ["xavier-uniform", "xavier-normal", "kaiming-uniform", "kaiming-normal", "normal"]
)
def test_initialisation_has_the_intended_variance(scheme: str) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(400, 300))
    models.initialise(layer, scheme, std=0.05)
    w = layer[0].weight.detach()
    assert float(w.std()) == pytest.approx(models.expected_std(scheme, 400, 300, 0.05), rel=0.03)
    assert float(layer[0].bias.detach().abs().max()) == 0.0


def test_default_init_is_left_alone_and_unknown_is_refused() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(10, 10)
    before = layer.weight.clone()
    models.initialise(layer, "default")
    assert torch.equal(before, layer.weight)
    with pytest.raises(ValueError, match="unknown init 'orthogonal'"):
        models.initialise(layer, "orthogonal")


def test_cnn_and_mlp_shapes() -> None:
    x = torch.zeros(5, 1, 8, 8)
    assert models.cnn((1, 8, 8), 10, channels=4, depth=3)(x).shape == (5, 10)
    assert models.mlp(64, 10, 2, 16, activation="gelu")(x).shape == (5, 10)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_optimizers_carry_every_hyperparameter(name: str) -> None:
    cfg = optim.OptimizerConfig(
        name=name,
        lr=0.01,
        momentum=0.8,
        nesterov=name == "sgd",
        weight_decay=1e-4,
        beta1=0.8,
        beta2=0.99,
        eps=1e-6,
    )
    group = optim.make(cfg, [torch.nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-4
    if name == "sgd":
        assert group["momentum"] == 0.8 and group["nesterov"] is True
    else:
        assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6


def test_nesterov_without_momentum_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        optim.make(
            optim.OptimizerConfig(momentum=0.0, nesterov=True), [torch.nn.Parameter(torch.zeros(1))]
        )


def test_user_dataset_files(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    y = np.arange(40) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
    for name in ("d.npz", "d.pt"):
        tx, ty, classes = from_file(str(tmp_path / name))
        assert tx.shape == (40, 3) and ty.dtype == torch.long and classes == 2
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(ValueError, match="needs arrays 'x' and 'y'"):
        from_file(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError, match="is the volume mounted"):
        from_file(str(tmp_path / "nowhere.npz"))


def test_empty_values_mean_not_set() -> None:
    args = parse_args(
        ["--momentum=", "--nesterov=", "--lr=0.2", "--schedule-param=milestones=[2,4]"]
    )
    assert args.momentum == 0.9 and args.nesterov is False and args.lr == 0.2
    assert args.schedule_param == [("milestones", [2, 4])]


def report(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text()))


def run_trainer(tmp_path: Path, *argv: str, name: str = "report") -> dict[str, object]:
    """One trainer run as its own process, as in a trial; returns its report."""
    out = tmp_path / name
    env = {**os.environ, "KUBETUNE_TERMINATION_LOG": str(out)}
    result = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return report(out)


def test_range_test_finds_a_rate_that_trains_digits_to_90_percent(tmp_path: Path) -> None:
    plot = tmp_path / "range.svg"
    found = run_trainer(
        tmp_path, "--mode=lr-range-test", "--optimizer=sgd", "--seed=0", f"--range-plot={plot}"
    )
    metrics = found["metrics"]
    assert isinstance(metrics, dict)
    lr = float(metrics["suggested_lr"])
    assert 1e-4 < lr < 1.0
    assert float(metrics["min_loss_lr"]) == pytest.approx(10 * lr)
    assert plot.read_text().startswith("<svg")
    trained = run_trainer(
        tmp_path, "--optimizer=sgd", f"--lr={lr}", "--epochs=5", "--seed=0", name="trained"
    )
    trained_metrics = trained["metrics"]
    assert isinstance(trained_metrics, dict)
    assert float(trained_metrics["val_accuracy"]) >= 0.90


def test_resumed_run_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    common = [
        "--seed=3",
        "--dropout=0.2",
        "--schedule=step",
        "--schedule-param=step_size=1",
        "--schedule-param=gamma=0.7",
    ]
    straight = run_trainer(tmp_path, *common, "--epochs=4", name="straight")
    ckpt = str(tmp_path / "ckpt")
    run_trainer(tmp_path, *common, "--epochs=2", f"--checkpoint-dir={ckpt}", name="part1")
    resumed = run_trainer(tmp_path, *common, "--epochs=4", f"--checkpoint-dir={ckpt}", name="part2")
    intermediate = resumed["intermediate"]
    assert isinstance(intermediate, dict)
    assert [s for s, _ in intermediate["val_accuracy"]] == [3, 4], "epochs continue from 3"
    # Model, optimizer, schedule, RNG and batch order all restored: the same result.
    got, want = resumed["metrics"], straight["metrics"]
    assert isinstance(got, dict) and isinstance(want, dict)
    for key in ("val_accuracy", "val_loss", "lr"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_sigterm_ends_the_run_cleanly_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "termination"
    env = {**os.environ, "KUBETUNE_TERMINATION_LOG": str(out), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubetune_trainer",
            "--dataset=synthetic",
            "--samples=200000",
            "--epochs=50",
            "--batch-size=32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("trial "):
            break
    time.sleep(1.0)  # mid-epoch
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    took = time.monotonic() - sent
    assert code == 0
    assert took < 10, f"took {took:.1f}s to stop"
    doc = report(out)
    assert doc["step"] == 1, "it finished the current step and reported it"
