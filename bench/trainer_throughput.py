"""Trainer throughput: training samples per second for the MLP and the CNN.

    python bench/trainer_throughput.py [--device cpu|cuda] [--out bench/results/...json]

Each configuration trains on digits for a few epochs after a warm-up epoch; the
median epoch rate is reported, with its ratio to the baseline (MLP, fp32, batch 64)
measured in the same process, so results compare across machines. On CUDA the
bf16-autocast variants run too, with the GPU's utilisation sampled by nvidia-smi.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from kubetune_trainer import data, models
from torch import nn
from torch.utils.data import DataLoader


def epoch_rates(
    model: nn.Module, loader: DataLoader[Any], device: torch.device, bf16: bool, epochs: int
) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    for epoch in range(epochs + 1):  # epoch 0 warms up (allocator, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            ctx = (
                torch.autocast(device.type, dtype=torch.bfloat16)
                if bf16
                else contextlib.nullcontext()
            )
            with ctx:
                loss = loss_fn(model(x).float(), y)
            loss.backward()
            opt.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            rates.append(seen / (time.perf_counter() - t0))
    return rates


def gpu_utilisation() -> float | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    try:
        return float(out.split()[0])
    except (IndexError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=8, help="dataset copies (bigger epochs)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x, y, classes = data.digits()
    x, y = x.repeat(args.repeat, 1, 1, 1), y.repeat(args.repeat)
    dataset = torch.utils.data.TensorDataset(x, y)
    configs = [("mlp", 64, False), ("mlp", 256, False), ("cnn", 64, False), ("cnn", 256, False)]
    if device.type == "cuda":
        configs += [("mlp", 256, True), ("cnn", 256, True)]
    results = []
    baseline = None
    for model_name, batch, bf16 in configs:
        torch.manual_seed(0)
        model = (
            models.mlp(64, classes, 2, 256)
            if model_name == "mlp"
            else models.cnn((1, 8, 8), classes, channels=32, depth=2)
        ).to(device)
        loader = DataLoader(
            dataset, batch_size=batch, shuffle=True, pin_memory=device.type == "cuda"
        )
        rates = epoch_rates(model, loader, device, bf16, args.epochs)
        rate = statistics.median(rates)
        baseline = baseline or rate
        row = {
            "model": model_name,
            "batch_size": batch,
            "bf16": bf16,
            "samples_per_second": round(rate, 1),
            "spread": round((max(rates) - min(rates)) / rate, 3),
            "ratio_to_baseline": round(rate / baseline, 3),
            "parameters": models.count_parameters(model),
            "gpu_utilisation_percent": None,
        }
        if device.type == "cuda":
            row["gpu_utilisation_percent"] = gpu_utilisation()
        results.append(row)
        print(
            f"{model_name:4} batch {batch:4} bf16={bf16!s:5} {rate:10.0f} samples/s "
            f"(x{rate / baseline:.2f} of baseline)",
            flush=True,
        )
    report = {
        "benchmark": "trainer_throughput",
        "baseline": "mlp, batch 64, fp32 (same process)",
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "samples_per_epoch": len(dataset),
        "results": results,
    }
    out = Path(
        args.out or Path(__file__).parent / "results" / f"trainer-throughput-{device.type}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
