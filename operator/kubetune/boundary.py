"""Search-space boundary check: best values at the edge mean the range was too small."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kubetune.spec import Parameter

EDGE = 0.05  # the outer 5% of a range, on each side
TOP = 0.10  # "most of the top 10%"


def _position(p: Parameter, value: float) -> float | None:
    """Where `value` lies in the range, 0..1 (in log space for log ranges)."""
    rng = p.float or p.int
    if rng is None:
        return None
    low, high = float(rng.low), float(rng.high)
    if rng.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return (value - low) / (high - low)


def _edge(p: Parameter, value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    pos = _position(p, float(value))
    if pos is None:
        return None
    if pos <= EDGE:
        return "low"
    if pos >= 1 - EDGE:
        return "high"
    return None


def at_boundary(
    parameters: Sequence[Parameter], ranked: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """Parameters whose best values sit at an edge: name -> "low" | "high".

    `ranked` holds completed trials' params, best first. A parameter is flagged when
    the best trial's value is at an edge, or when most of the top 10% are at one edge.
    """
    if not ranked:
        return {}
    top = ranked[: max(1, math.ceil(len(ranked) * TOP))]
    found: dict[str, str] = {}
    for p in parameters:
        edge = _edge(p, ranked[0].get(p.name))
        if edge is None and len(top) > 1:
            edges = [_edge(p, t.get(p.name)) for t in top if p.name in t]
            for side in ("low", "high"):
                if edges and edges.count(side) > len(edges) / 2:
                    edge = side
        if edge is not None:
            found[p.name] = edge
    return found


def message(parameters: Sequence[Parameter], found: dict[str, str]) -> str:
    parts = []
    for p in parameters:
        side = found.get(p.name)
        if side is None:
            continue
        rng = p.float or p.int
        assert rng is not None
        bound = rng.low if side == "low" else rng.high
        parts.append(
            f"{p.name}: the best values are at the {side} edge ({bound}); "
            f"widen the range {'below' if side == 'low' else 'above'} {bound}"
        )
    return "; ".join(parts)
