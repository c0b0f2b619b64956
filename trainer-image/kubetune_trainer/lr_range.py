"""The learning-rate range test: find a good learning rate before searching.

The rate rises exponentially from `min_lr` to `max_lr` over `steps` batches while
the (smoothed) training loss is recorded; the run stops early once the loss
explodes (four times its minimum, or not finite). Two suggestions come out: an
order of magnitude below the rate at the loss minimum, and the rate where the loss
falls fastest (steepest descent of loss against log learning rate).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim import Optimizer

Loader = torch.utils.data.DataLoader[tuple[torch.Tensor, ...]]
EXPLODE = 4.0
SMOOTH = 0.9


@dataclass
class RangeResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    stopped_early: bool = False

    @property
    def min_loss_lr(self) -> float:
        return self.lrs[min(range(len(self.losses)), key=self.losses.__getitem__)]

    @property
    def suggested_lr(self) -> float:
        return self.min_loss_lr / 10.0

    @property
    def steepest_lr(self) -> float:
        """Where d(loss)/d(log lr) is most negative, before the minimum."""
        end = min(range(len(self.losses)), key=self.losses.__getitem__)
        if end < 2:
            return self.lrs[0]
        slopes = [
            (self.losses[i + 1] - self.losses[i - 1])
            / (math.log(self.lrs[i + 1]) - math.log(self.lrs[i - 1]))
            for i in range(1, end)
        ]
        return self.lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def _batches(
    loader: Loader,
) -> Iterator[tuple[torch.Tensor, ...]]:
    while True:
        yield from loader


def run(
    model: nn.Module,
    optimizer: Optimizer,
    loader: Loader,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    steps: int = 100,
    device: torch.device | None = None,
) -> RangeResult:
    if not 0 < min_lr < max_lr:
        raise ValueError("the range test needs 0 < min_lr < max_lr")
    device = device or torch.device("cpu")
    loss_fn = nn.CrossEntropyLoss()
    ratio = (max_lr / min_lr) ** (1.0 / max(1, steps - 1))
    result = RangeResult()
    avg, best = 0.0, math.inf
    model.train()
    batches = _batches(loader)
    for i in range(steps):
        lr = min_lr * ratio**i
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            result.stopped_early = True
            break
        loss.backward()
        optimizer.step()
        avg = SMOOTH * avg + (1 - SMOOTH) * value
        smoothed = avg / (1 - SMOOTH ** (i + 1))  # bias-corrected moving average
        result.lrs.append(lr)
        result.losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > EXPLODE * best and i > 10:
            result.stopped_early = True
            break
    return result


def _el(tag: str, body: str = "", **attrs: object) -> str:
    """One SVG element; attribute names use _ for - (stroke_width -> stroke-width)."""
    text = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f"<{tag} {text}>{body}</{tag}>" if body else f"<{tag} {text}/>"


def svg(result: RangeResult, width: int = 640, height: int = 360) -> str:
    """A plot of loss against learning rate (log axis), with both suggestions marked."""
    pad = 50
    bottom = height - pad
    lx = [math.log10(lr) for lr in result.lrs]
    lo_x, hi_x = min(lx), max(lx)
    # The explosion at the end would flatten everything else: clip the axis.
    lo_y = min(result.losses)
    hi_y = min(max(result.losses), result.losses[0] * 1.3)

    def px(v: float) -> float:
        return round(pad + (v - lo_x) / (hi_x - lo_x or 1) * (width - 2 * pad), 1)

    def py(v: float) -> float:
        return round(bottom - (min(v, hi_y) - lo_y) / (hi_y - lo_y or 1) * (height - 2 * pad), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        _el("rect", width=width, height=height, fill="white"),
        _el("line", x1=pad, y1=bottom, x2=width - pad, y2=bottom, stroke="black"),
        _el("line", x1=pad, y1=pad, x2=pad, y2=bottom, stroke="black"),
    ]
    for decade in range(math.ceil(lo_x), math.floor(hi_x) + 1):
        x = px(decade)
        parts.append(_el("line", x1=x, y1=bottom, x2=x, y2=bottom + 5, stroke="black"))
        parts.append(_el("text", f"1e{decade}", x=x, y=bottom + 18, text_anchor="middle"))
    points = " ".join(f"{px(x)},{py(y)}" for x, y in zip(lx, result.losses, strict=True))
    parts.append(_el("polyline", points=points, fill="none", stroke="#1f77b4", stroke_width=2))
    marks = (
        (result.suggested_lr, "#2ca02c", "suggested", 14),
        (result.steepest_lr, "#d62728", "steepest", 30),
    )
    for lr, colour, label, dy in marks:
        x = px(math.log10(lr))
        parts.append(
            _el("line", x1=x, y1=pad, x2=x, y2=bottom, stroke=colour, stroke_dasharray="4 3")
        )
        parts.append(
            _el("text", f"{label} {lr:.2g}", x=x - 4, y=pad + dy, fill=colour, text_anchor="end")
        )
    parts.append(_el("text", "learning rate", x=width / 2, y=height - 10, text_anchor="middle"))
    parts.append(
        _el(
            "text",
            "smoothed training loss",
            x=14,
            y=height / 2,
            text_anchor="middle",
            transform=f"rotate(-90 14 {height / 2})",
        )
    )
    parts.append("</svg>")
    return "\n".join(parts)
