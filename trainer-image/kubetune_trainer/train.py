"""The training loop: data, model, optimizer, schedule, checkpoints, reports."""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from kubetune import trial
from kubetune_trainer import checkpoint, data, distributed, lr_range, models, optim
from kubetune_trainer.schedules import Schedule

Loader = DataLoader[tuple[torch.Tensor, ...]]


def device_of(args: argparse.Namespace) -> torch.device:
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no CUDA device is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def dataset(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int]:
    if args.dataset == "digits":
        return data.digits()
    if args.dataset == "file":
        if not args.data_path:
            raise ValueError("--dataset file needs --data-path")
        return data.from_file(args.data_path)
    return data.synthetic(args.samples, args.features, args.classes, args.noise, args.data_seed)


def build_model(args: argparse.Namespace, x: torch.Tensor, classes: int) -> nn.Module:
    if args.model == "cnn":
        if x.dim() != 4:
            raise ValueError("--model cnn needs image-shaped data (N, C, H, W), e.g. digits")
        shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        model = models.cnn(
            shape, classes, args.channels, args.layers, args.dropout, args.activation
        )
    else:
        model = models.mlp(
            int(x[0].numel()), classes, args.layers, args.width, args.dropout, args.activation
        )
    models.initialise(model, args.init, args.init_std)
    return model


def optimizer_config(args: argparse.Namespace) -> optim.OptimizerConfig:
    return optim.OptimizerConfig(
        args.optimizer,
        args.lr,
        args.momentum,
        args.nesterov,
        args.weight_decay,
        args.beta1,
        args.beta2,
        args.eps,
    )


def evaluate(
    model: nn.Module, loader: Loader, device: torch.device, autocast: Any
) -> tuple[float, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct, loss = 0, 0, 0.0
    with torch.no_grad(), autocast():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x).float()
            loss += float(loss_fn(out, y))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    return correct / total, loss / total


def run(args: argparse.Namespace) -> int:
    world = distributed.world_from_env()
    device = device_of(args)
    if world is None or world.leader:
        # Rank 0 stops cleanly on SIGTERM and reports; another rank stopped alone is
        # not a result, so it keeps SIGTERM's default (exit 143) and the workload's
        # failure policy decides what happens to the trial.
        trial.install_sigterm_handler()
    if world is None:
        return _run(args, device, world)[0]
    distributed.init(world, device)
    code, together = _run(args, device, world)
    if together:
        distributed.finish(world)
    # Otherwise (rank 0 stopped or diverged alone) the process just exits: the other
    # ranks' next collective fails at once instead of waiting for a partner.
    return code


def _run(
    args: argparse.Namespace, device: torch.device, world: distributed.World | None
) -> tuple[int, bool]:
    """Train; the exit code, and whether every rank got to the end (all epochs)."""
    leader = world is None or world.leader
    seed = args.seed if args.seed is not None else trial.seed(0)
    torch.manual_seed(seed)
    bf16 = args.bf16 if args.bf16 is not None else device.type == "cuda"
    x, y, classes = dataset(args)
    train_set, val_set = data.split(x, y, args.val_split, args.data_seed)
    pin = device.type == "cuda"
    shuffle = torch.Generator()
    sampler: DistributedSampler[Any] | None = None
    if world is None:
        train_loader: Loader = DataLoader(
            train_set, batch_size=args.batch_size, shuffle=True, generator=shuffle, pin_memory=pin
        )
    else:
        # Each rank trains on its share of every global batch of --batch-size samples.
        sampler = DistributedSampler(train_set, world.size, world.rank, shuffle=True, seed=seed)
        per_rank = max(1, args.batch_size // world.size)
        train_loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, pin_memory=pin)
    val_loader: Loader = DataLoader(val_set, batch_size=1024, pin_memory=pin)
    model = build_model(args, x, classes).to(device)  # the same on every rank: one seed
    opt = optim.make(optimizer_config(args), model.parameters())
    where = f" rank {world.rank}/{world.size}" if world else ""
    print(
        f"trial {trial.trial_name() or '(local)'}{where}: seed={seed} device={device} "
        f"bf16={bf16} params={models.count_parameters(model)} {vars(args)}",
        flush=True,
    )
    if args.mode == "lr-range-test":
        if world is not None:
            raise ValueError("--mode lr-range-test runs in one process; drop WORLD_SIZE")
        return range_test(args, model, opt, train_loader, device), True
    net: nn.Module = torch.compile(model) if args.compile else model  # type: ignore[assignment]
    if world is not None:
        net = DistributedDataParallel(net)  # gradients averaged over the ranks
    params = {k: v for k, v in args.schedule_param if v is not None}
    sched = Schedule(opt, args.schedule, params, args.warmup_steps, args.warmup_start_lr)

    def autocast() -> Any:
        if bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    first = 1
    saved = checkpoint.load(args.checkpoint_dir)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["schedule"])
        checkpoint.restore_rng(saved["rng"])
        first = int(saved["epoch"]) + 1
        print(f"resuming from the checkpoint of epoch {saved['epoch']}", flush=True)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(first, args.epochs + 1):
        shuffle.manual_seed(seed * 100_003 + epoch)  # the same batches after a resume
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        t0 = time.monotonic()
        seen, train_loss = 0, 0.0
        interrupted = False
        for xb, yb in train_loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(net(xb).float(), yb)
            value = float(loss.detach())
            if not math.isfinite(value):
                print(f"epoch {epoch}: loss is {value}; the run diverged", flush=True)
                if leader:
                    trial.report(epoch, val_accuracy=math.nan, val_loss=math.nan, train_loss=value)
                    return 0, False
                return 1, False  # a rank's own NaN: rank 0 sees it on its share, or fails
            loss.backward()
            opt.step()
            seen += len(yb)
            train_loss += value * len(yb)
            if args.schedule_unit == "batch":
                sched.step(value)
            if trial.should_stop():
                interrupted = True
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / max(time.monotonic() - t0, 1e-9) * (world.size if world else 1)
        lr = sched.lr
        if not leader:
            # The schedule steps on rank 0's validation loss: the others get it from rank 0.
            if args.schedule_unit == "epoch":
                sched.step(_from_leader(math.nan, device))
            continue
        # Rank 0 alone: through the DDP wrapper its forward would wait for the others.
        acc, val_loss = evaluate(net if world is None else model, val_loader, device, autocast)
        if args.schedule_unit == "epoch":
            sched.step(_from_leader(val_loss, device) if world else val_loss)
        trial.report(
            epoch,
            val_accuracy=acc,
            val_loss=val_loss,
            train_loss=train_loss / max(seen, 1),
            lr=lr,
            samples_per_second=rate,
        )
        print(
            f"epoch {epoch}: val_accuracy={acc:.4f} val_loss={val_loss:.4f} lr={lr:.3g} "
            f"samples/s={rate:.0f}",
            flush=True,
        )
        # An epoch that SIGTERM cut short (a preemption, a prune) is reported, as the
        # trial contract asks, but never checkpointed: a resumed run starts it again
        # from the last complete epoch and ends exactly where an uninterrupted run ends
        # (its report of this epoch then replaces the partial one).
        if args.checkpoint_dir and not interrupted:
            checkpoint.save(
                args.checkpoint_dir,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(),
                    "rng": checkpoint.rng_state(),
                },
            )
        if trial.should_stop():
            print("SIGTERM: stopping after this epoch's report", flush=True)
            return 0, False
    return 0, True


def _from_leader(value: float, device: torch.device) -> float:
    """Rank 0's `value`, on every rank (a schedule that reads the validation loss must
    step alike everywhere, or the ranks' learning rates drift apart)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def range_test(
    args: argparse.Namespace,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: Loader,
    device: torch.device,
) -> int:
    result = lr_range.run(
        model,
        opt,
        loader,
        min_lr=args.range_min_lr,
        max_lr=args.range_max_lr,
        steps=args.range_steps,
        device=device,
    )
    if len(result.losses) < 3:
        raise ValueError("the range test diverged at once; lower --range-min-lr")
    for step, (lr, loss) in enumerate(zip(result.lrs, result.losses, strict=True), 1):
        print(f"step {step}: lr={lr:.3g} loss={loss:.4f}")
    if args.range_plot:
        Path(args.range_plot).write_text(lr_range.svg(result))
    trial.report(
        len(result.losses),
        suggested_lr=result.suggested_lr,
        steepest_lr=result.steepest_lr,
        min_loss_lr=result.min_loss_lr,
        min_loss=min(result.losses),
    )
    print(
        f"suggested lr {result.suggested_lr:.3g} (a tenth of the loss minimum at "
        f"{result.min_loss_lr:.3g}); steepest descent at {result.steepest_lr:.3g}",
        flush=True,
    )
    return 0
