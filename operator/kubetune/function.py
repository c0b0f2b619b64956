"""Run one trial of a plain Python function: ``python -m kubetune.function FILE NAME``.

`kubetune.client.tune()` puts the function's source in a ConfigMap that the trial
pod mounts; this runs it with the trial's parameters (KUBETUNE_PARAMS) and reports
what it returns through the trial SDK, so the operator reads it like any trial's
result. Like the SDK, it imports nothing heavier than prometheus-client.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune import trial


def load(path: Path, name: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {"__name__": "__kubetune_function__"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - the user's own code
    fn: Callable[..., Any] | None = namespace.get(name)
    if not callable(fn):
        raise SystemExit(f"kubetune.function: {path} defines no function {name!r}")
    return fn


def call(fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    """Keyword arguments, or one dict when the function takes a single non-parameter argument."""
    sig = inspect.signature(fn)
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if len(names) == 1 and names[0] not in params:
        return fn(params)
    return fn(**params)


def metrics_of(result: Any, metric: str) -> dict[str, float]:
    if isinstance(result, dict):
        out = {str(k): float(v) for k, v in result.items()}
        if metric not in out:
            raise SystemExit(
                f"kubetune.function: the function returned {sorted(out)}, without {metric!r}, "
                "the Study's objective"
            )
        return out
    if isinstance(result, bool) or not isinstance(result, int | float):
        raise SystemExit(
            f"kubetune.function: the function must return a number (the objective {metric!r}) "
            f"or a dict of metrics, not {type(result).__name__}"
        )
    return {metric: float(result)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.function")
    parser.add_argument("file", type=Path)
    parser.add_argument("name")
    parser.add_argument("--metric", default="value")
    args = parser.parse_args(argv)
    trial.install_sigterm_handler()
    fn = load(args.file, args.name)
    params = trial.params()
    try:
        result = call(fn, params)
    except Exception:
        traceback.print_exc()
        return 1
    if result is None:
        # The function reported through kubetune.trial.report itself.
        return 0
    metrics = metrics_of(result, args.metric)
    step = trial.last_step()
    trial.report(step if step is not None else 0, **metrics)
    print(
        f"kubetune.function: {args.name}({params}) = "
        + ", ".join(f"{k}={v}" for k, v in metrics.items())
        + (
            " (not finite: the trial diverged)"
            if not all(map(math.isfinite, metrics.values()))
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
