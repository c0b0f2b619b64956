"""python -m kubetune_trainer [options]: one trial of a kubetune Study.

Every knob of the tuning literature is a flag, so a Study can search over it:
optimizer and its hyperparameters, learning-rate schedule (with warm-up),
initialisation, model shape, batch size, epochs. `--mode lr-range-test` runs the
learning-rate range test instead of training. Values are reported every epoch
through kubetune.trial (val_accuracy, val_loss, train_loss, lr, samples_per_second).

An empty value (an inactive conditional parameter, `--momentum=`) means "not set".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from kubetune_trainer.models import ACTIVATIONS, INITS
from kubetune_trainer.optim import OPTIMIZERS
from kubetune_trainer.schedules import SCHEDULES


def _maybe(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argument type that reads "" as "not given" (an inactive conditional parameter)."""

    def parse(text: str) -> Any:
        return kind(text) if text.strip() else None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def schedule_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is JSON if it parses (numbers, lists, booleans), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if not raw.strip():
        return key.replace("-", "_"), None  # an inactive conditional parameter: not set
    try:
        return key.replace("-", "_"), json.loads(raw)
    except ValueError:
        return key.replace("-", "_"), raw


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubetune_trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f, i, b, s = _maybe(float), _maybe(int), _maybe(boolean), _maybe(str)
    p.add_argument("--mode", choices=["train", "lr-range-test"], default="train")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["digits", "synthetic", "file"], default="digits")
    g.add_argument("--data-path", type=s, default=None, help="file: an .npz (x, y) or .pt dataset")
    g.add_argument("--samples", type=i, default=2000, help="synthetic: samples")
    g.add_argument("--features", type=i, default=32, help="synthetic: features")
    g.add_argument("--classes", type=i, default=4, help="synthetic: classes")
    g.add_argument("--noise", type=f, default=0.5, help="synthetic: noise")
    g.add_argument("--val-split", type=f, default=0.2)
    g.add_argument("--data-seed", type=i, default=0, help="seed of the data and its split")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    g.add_argument("--layers", type=i, default=2, help="mlp: hidden layers; cnn: conv blocks")
    g.add_argument("--width", type=i, default=64, help="mlp: units per layer")
    g.add_argument("--channels", type=i, default=16, help="cnn: channels of the first block")
    g.add_argument("--dropout", type=f, default=0.0)
    g.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    g.add_argument("--init", choices=INITS, default="default")
    g.add_argument("--init-std", type=f, default=0.01, help="init normal: the std")
    g = p.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    g.add_argument("--lr", type=f, default=0.05)
    g.add_argument("--momentum", type=f, default=0.9, help="sgd")
    g.add_argument("--nesterov", type=b, default=False, help="sgd: true or false")
    g.add_argument("--weight-decay", type=f, default=0.0)
    g.add_argument("--beta1", type=f, default=0.9, help="adam, adamw, nadam")
    g.add_argument("--beta2", type=f, default=0.999, help="adam, adamw, nadam")
    g.add_argument("--eps", type=f, default=1e-8, help="adam, adamw, nadam")
    g = p.add_argument_group("schedule")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant")
    g.add_argument(
        "--schedule-param",
        type=schedule_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. gamma=0.5, milestones=[3,6] (repeatable)",
    )
    g.add_argument("--schedule-unit", choices=["epoch", "batch"], default="epoch")
    g.add_argument("--warmup-steps", type=i, default=0, help="linear warm-up length (units)")
    g.add_argument("--warmup-start-lr", type=f, default=0.0)
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=i, default=64)
    g.add_argument("--epochs", type=i, default=10)
    g.add_argument("--seed", type=i, default=None, help="default: the trial's seed")
    g.add_argument("--checkpoint-dir", type=s, default=None, help="save every epoch; resume")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--bf16", type=b, default=None, help="bf16 autocast (default: on CUDA)")
    g.add_argument("--compile", type=b, default=False, help="torch.compile the model")
    g = p.add_argument_group("lr-range-test")
    g.add_argument("--range-min-lr", type=f, default=1e-5)
    g.add_argument("--range-max-lr", type=f, default=10.0)
    g.add_argument("--range-steps", type=i, default=100)
    g.add_argument("--range-plot", type=s, default=None, help="write the plot (SVG) here")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    for action in p._actions:  # "" (not given) falls back to the default
        if getattr(args, action.dest, 0) is None and action.default is not None:
            setattr(args, action.dest, action.default)
    return args


def main(argv: list[str] | None = None) -> int:
    from kubetune_trainer import train  # noqa: PLC0415 - torch loads only after --help

    args = parse_args(argv)
    try:
        return train.run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"kubetune_trainer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
