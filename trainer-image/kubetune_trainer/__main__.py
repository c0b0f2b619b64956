"""python -m kubetune_trainer --lr 0.01 --layers 2 ... : one trial of a kubetune Study.

Reports val_accuracy and val_loss every epoch (kubetune.trial.report). A loss
that becomes NaN or infinite is reported as such (the trial is Diverged) and the
run stops. SIGTERM (pruned or preempted) ends the run after the current batch,
with a final report and exit code 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from kubetune import trial
from kubetune_trainer import data


def _maybe(kind: type[float] | type[int]) -> object:
    """An argument type that reads "" as "not given" (an inactive conditional parameter)."""

    def parse(text: str) -> float | int | None:
        return kind(text) if text.strip() else None

    parse.__name__ = kind.__name__
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kubetune_trainer", description=__doc__)
    p.add_argument("--dataset", choices=["digits", "synthetic"], default="digits")
    p.add_argument("--samples", type=int, default=2000, help="synthetic: number of samples")
    p.add_argument("--noise", type=float, default=0.5, help="synthetic: noise level")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    p.add_argument("--lr", type=_maybe(float), default=0.05)
    p.add_argument("--momentum", type=_maybe(float), default=0.9)
    p.add_argument("--weight-decay", type=_maybe(float), default=0.0)
    p.add_argument("--layers", type=_maybe(int), default=2, help="hidden layers")
    p.add_argument("--width", type=_maybe(int), default=64, help="units per hidden layer")
    p.add_argument("--dropout", type=_maybe(float), default=0.0)
    p.add_argument("--batch-size", type=_maybe(int), default=64)
    p.add_argument("--epochs", type=_maybe(int), default=10)
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=None, help="default: the trial's seed")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data split")
    args = p.parse_args(argv)
    for action in p._actions:  # "" (not given) falls back to the default
        if getattr(args, action.dest, 0) is None and action.default is not None:
            setattr(args, action.dest, action.default)
    return args


def mlp(inputs: int, classes: int, layers: int, width: int, dropout: float) -> nn.Module:
    blocks: list[nn.Module] = []
    size = inputs
    for _ in range(layers):
        blocks += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
        size = width
    blocks.append(nn.Linear(size, classes))
    return nn.Sequential(*blocks)


def optimizer(args: argparse.Namespace, params: object) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=args.lr,
            momentum=args.momentum,  # type: ignore[arg-type]
            weight_decay=args.weight_decay,
        )
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=args.lr, weight_decay=args.weight_decay)  # type: ignore[arg-type]


def evaluate(model: nn.Module, loader: DataLoader[tuple[torch.Tensor, ...]]) -> tuple[float, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct, loss = 0, 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += float(loss_fn(out, y))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    return correct / total, loss / total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trial.install_sigterm_handler()
    seed = args.seed if args.seed is not None else trial.seed(0)
    torch.manual_seed(seed)
    if args.dataset == "digits":
        x, y, classes = data.digits()
    else:
        x, y, classes = data.synthetic(args.samples, noise=args.noise, seed=args.data_seed)
    train_set, val_set = data.split(x, y, args.val_split, args.data_seed)
    train = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val = DataLoader(val_set, batch_size=512)
    model = mlp(x.shape[1], classes, args.layers, args.width, args.dropout)
    opt = optimizer(args, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    print(f"trial {trial.trial_name() or '(local)'}: {vars(args)} seed={seed}", flush=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.monotonic()
        for xb, yb in train:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            if not math.isfinite(float(loss.detach())):
                print(
                    f"epoch {epoch}: loss is {float(loss.detach())}; the run diverged", flush=True
                )
                trial.report(epoch, val_accuracy=float("nan"), val_loss=float("nan"))
                return 0
            loss.backward()
            opt.step()
            if trial.should_stop():
                break
        acc, val_loss = evaluate(model, val)
        rate = len(train_set) / max(time.monotonic() - t0, 1e-9)
        trial.report(epoch, val_accuracy=acc, val_loss=val_loss, samples_per_second=rate)
        print(f"epoch {epoch}: val_accuracy={acc:.4f} val_loss={val_loss:.4f}", flush=True)
        if trial.should_stop():
            print("SIGTERM: stopping after this epoch's report", flush=True)
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
