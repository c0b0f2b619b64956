"""Models (an MLP and a small CNN) and the classic initialisation schemes."""

from __future__ import annotations

import math

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky-relu": nn.LeakyReLU,
}
INITS = (
    "default",
    "xavier-uniform",
    "xavier-normal",
    "kaiming-uniform",
    "kaiming-normal",
    "normal",
)


def mlp(
    inputs: int,
    classes: int,
    layers: int,
    width: int,
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    act = ACTIVATIONS[activation]
    blocks: list[nn.Module] = [nn.Flatten()]
    size = inputs
    for _ in range(layers):
        blocks += [nn.Linear(size, width), act(), nn.Dropout(dropout)]
        size = width
    blocks.append(nn.Linear(size, classes))
    return nn.Sequential(*blocks)


def cnn(
    shape: tuple[int, int, int],
    classes: int,
    channels: int = 16,
    depth: int = 2,
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """Conv(3x3, same) -> act blocks, doubling channels and halving size where it can."""
    act = ACTIVATIONS[activation]
    c, h, w = shape
    blocks: list[nn.Module] = []
    for i in range(depth):
        out = channels * 2**i
        blocks += [nn.Conv2d(c, out, 3, padding=1), act()]
        if min(h, w) >= 4:
            blocks.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = out
    blocks += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, classes)]
    return nn.Sequential(*blocks)


def initialise(model: nn.Module, scheme: str = "default", std: float = 0.01) -> None:
    """Re-initialise every Linear and Conv weight (biases to zero) with `scheme`.

    kaiming-* assume ReLU (gain sqrt(2)); `normal` is a fixed-variance N(0, std^2);
    `default` keeps PyTorch's own initialisation.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme == "default":
        return
    for module in model.modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        w = module.weight
        match scheme:
            case "xavier-uniform":
                nn.init.xavier_uniform_(w)
            case "xavier-normal":
                nn.init.xavier_normal_(w)
            case "kaiming-uniform":
                nn.init.kaiming_uniform_(w, nonlinearity="relu")
            case "kaiming-normal":
                nn.init.kaiming_normal_(w, nonlinearity="relu")
            case "normal":
                nn.init.normal_(w, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def expected_std(scheme: str, fan_in: int, fan_out: int, std: float = 0.01) -> float:
    """The weight standard deviation each scheme aims for (for tests)."""
    return {
        "xavier-uniform": math.sqrt(2.0 / (fan_in + fan_out)),
        "xavier-normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming-uniform": math.sqrt(2.0 / fan_in),
        "kaiming-normal": math.sqrt(2.0 / fan_in),
        "normal": std,
    }[scheme]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
