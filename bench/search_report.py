"""Aggregate search-benchmark runs into bench/results/search-<task>.json and .svg.

    python bench/search_report.py bench/results/search-inprocess-hartmann6.json [more.json ...]

Input: JSON lists of run records (bench/search_inprocess.py's docstring has the
format; the operator-side runner writes the same, with "runner": "kubetune", its
parallelism, and trials in the order they finished). Runs are grouped into series by
(runner, parallelism, method) and, per task, summarised over their seeds:

* score of a run after n trials: the noise-free final value of its incumbent (the
  completed trial with the best observed objective) where the task has one, else the
  observed value; against trials and against cumulative GPU-seconds (trials counted
  in the order they finished), mean and standard deviation over seeds.
* target: random search's best-of-64 (in-process random search if present, else any
  runner's), the mean over seeds of its score after min(64, trials) trials; and its
  GPU-seconds for those trials. For every series: how many seeds reached the target,
  and the trials and GPU-seconds they needed (mean and sd over the seeds that did,
  median over all with a seed that never did counting as infinite).
* pruning: GPU-seconds spent, the fraction of trials pruned, the fraction saved
  against running every trial to the end (a full trial costs steps x seconds per
  step on fast tasks, the run's mean completed trial on the real one), and the
  GPU-seconds spent after the pruner's decision: from a trial's
  `gpu_seconds_past_decision` when the runner measured it, else
  (steps - pruned_at) x seconds per step.

The plots are SVGs written by hand, search-<task>.svg for the samplers and
search-<task>-pruners.svg for the pruners (two panels each: best value against trials
and against GPU-seconds, mean line and a +-1 sd band per series, solid in process and
dashed through kubetune; dotted lines at the target and the optimum): matplotlib is
not installed here and plotly's static export needs kaleido, which is not either; an
SVG shows in the README on GitHub as it is.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_tasks

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_TRIALS = 64
GPU_GRID = 80  # points on the GPU-seconds axis

Run = dict[str, Any]
SeriesKey = tuple[str, int, str]  # runner, parallelism, method


def _better(direction: str) -> Any:
    return min if direction == "minimize" else max


def _reached(score: float, target: float, direction: str) -> bool:
    return score <= target if direction == "minimize" else score >= target


def trace(run: Run, direction: str) -> tuple[list[float | None], list[float]]:
    """The run's score after each finished trial, and GPU-seconds spent by then."""
    scores: list[float | None] = []
    spent: list[float] = []
    best: dict[str, Any] | None = None
    total = 0.0
    pick = _better(direction)
    for t in run["trials"]:
        total += float(t["gpu_seconds"])
        if t["state"] == "complete" and math.isfinite(t["value"]):
            best = t if best is None else pick(best, t, key=lambda x: x["value"])
        score = None
        if best is not None:
            score = best["true_value"] if best.get("true_value") is not None else best["value"]
        scores.append(score)
        spent.append(total)
    return scores, spent


def _known(values: Iterable[float | None]) -> list[float]:
    """The values of the runs that have a score yet (one with no completed trial has none)."""
    return [v for v in values if v is not None]


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd, "n": len(values)}


def _at(scores: list[float | None], spent: list[float], budget: float) -> float | None:
    """The score with at most `budget` GPU-seconds spent."""
    score = None
    for s, g in zip(scores, spent, strict=True):
        if g > budget + 1e-9:
            break
        score = s
    return score


def full_trial_cost(run: Run, task: Any) -> float:
    if isinstance(task, search_tasks.CurveTask):
        per_step = run.get("seconds_per_step") or task.seconds_per_step
        return float(task.steps * per_step)
    done = [float(t["gpu_seconds"]) for t in run["trials"] if t["state"] == "complete"]
    return statistics.fmean(done) if done else math.nan


def past_decision(run: Run) -> float:
    per_step = run.get("seconds_per_step") or 0.0
    total = 0.0
    for t in run["trials"]:
        if t["state"] != "pruned":
            continue
        if t.get("gpu_seconds_past_decision") is not None:
            total += float(t["gpu_seconds_past_decision"])
        elif t.get("pruned_at") is not None:
            total += (int(t["steps"]) - int(t["pruned_at"])) * per_step
    return total


def to_target(runs: Sequence[Run], target: float, direction: str) -> dict[str, dict[str, Any]]:
    trials: list[float] = []
    gpu: list[float] = []
    for run in runs:
        scores, spent = trace(run, direction)
        hit = next(
            (i for i, s in enumerate(scores) if s is not None and _reached(s, target, direction)),
            None,
        )
        trials.append(math.inf if hit is None else hit + 1)
        gpu.append(math.inf if hit is None else spent[hit])

    def summary(values: list[float]) -> dict[str, Any]:
        finite = [v for v in values if math.isfinite(v)]
        median = statistics.median(values)
        return {
            "reached": len(finite),
            "runs": len(values),
            **{k: v for k, v in _stats(finite).items() if k != "n"},
            "median": median if math.isfinite(median) else None,
        }

    return {"trials": summary(trials), "gpu_seconds": summary(gpu)}


def summarise(task_name: str, runs: Sequence[Run], sources: Sequence[str]) -> dict[str, Any]:
    task = search_tasks.task_named(task_name)
    direction = task.direction
    groups: dict[SeriesKey, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run["runner"], int(run.get("parallelism", 1)), run["method"])].append(run)
    reference = groups.get(("in-process", 1, "random")) or next(
        (g for (_, _, m), g in sorted(groups.items()) if m == "random"), None
    )
    target: dict[str, Any] | None = None
    if reference:
        n = min(TARGET_TRIALS, *(len(r["trials"]) for r in reference))
        scores = [trace(r, direction)[0][n - 1] for r in reference]
        spent = [trace(r, direction)[1][n - 1] for r in reference]
        finite = [s for s in scores if s is not None]
        target = {
            "definition": f"mean over seeds of random search's best-of-{n}",
            "runner": reference[0]["runner"],
            "trials": n,
            "value": statistics.fmean(finite) if finite else None,
            "value_std": statistics.stdev(finite) if len(finite) > 1 else None,
            "random_gpu_seconds": statistics.fmean(spent),
        }
    max_spent = max(trace(r, direction)[1][-1] for r in runs)
    grid = [max_spent * i / (GPU_GRID - 1) for i in range(GPU_GRID)]
    series = []
    for (runner, parallelism, method), group in sorted(groups.items()):
        traces = [trace(r, direction) for r in group]
        n_trials = min(len(s) for s, _ in traces)
        by_trials = [_stats(_known(s[i] for s, _ in traces)) for i in range(n_trials)]
        limit = min(g[-1] for _, g in traces)
        xs = [x for x in grid if x <= limit + 1e-9]
        by_gpu = []
        for x in xs:
            values = [v for s, g in traces if (v := _at(s, g, x)) is not None]
            by_gpu.append(_stats(values))
        spent = [g[-1] for _, g in traces]
        pruned = [
            sum(t["state"] == "pruned" for t in r["trials"]) / len(r["trials"]) for r in group
        ]
        saved = [
            1.0 - g[-1] / (len(r["trials"]) * full_trial_cost(r, task))
            for r, (_, g) in zip(group, traces, strict=True)
        ]
        entry: dict[str, Any] = {
            "runner": runner,
            "parallelism": parallelism,
            "method": method,
            "seeds": sorted(r["seed"] for r in group),
            "trials": n_trials,
            "final": _stats(_known(s[n_trials - 1] for s, _ in traces)),
            "at_trials": {str(n): by_trials[n - 1] for n in (8, 16, 32, 64, 128) if n <= n_trials},
            "gpu_seconds": _stats(spent),
            "pruned_fraction": statistics.fmean(pruned),
            "saved_fraction": _stats(saved),
            "gpu_seconds_past_decision": _stats([past_decision(r) for r in group]),
            "curve_trials": {
                "mean": [b["mean"] for b in by_trials],
                "std": [b["std"] for b in by_trials],
            },
            "curve_gpu_seconds": {
                "x": xs,
                "mean": [b["mean"] for b in by_gpu],
                "std": [b["std"] for b in by_gpu],
            },
        }
        if target is not None and target["value"] is not None:
            entry["to_target"] = to_target(group, target["value"], direction)
        series.append(entry)
    optimum = getattr(task, "optimum", None)
    return {
        "task": task_name,
        "direction": direction,
        "optimum": optimum,
        "optimum_exact": getattr(task, "optimum_exact", None),
        "score": "noise-free final value of the incumbent (best observed) where the task "
        "has one, else its observed value",
        "target": target,
        "series": series,
        "sources": list(sources),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# -- the plot ------------------------------------------------------------------------------

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
]
# In-process solid; through kubetune dashed at parallelism 8, dotted at 1 (same colour per method).
DASH = {"in-process": "", "kubetune": "6 3", "kubetune-p1": "2 3"}


def _dash(series: dict[str, Any]) -> str:
    runner = str(series["runner"])
    if runner == "kubetune" and int(series.get("parallelism", 1)) == 1:
        runner = "kubetune-p1"
    return DASH.get(runner, "1 2")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo or 1.0
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def svg(report: dict[str, Any], series: list[dict[str, Any]], title: str) -> str:
    """Two panels: best value against trials, and against GPU-seconds."""
    width, height, pad = 1100, 470, 60
    panel_w, panel_h = 470, 330
    values = [
        v
        for s in series
        for key in ("curve_trials", "curve_gpu_seconds")
        for m, sd in zip(s[key]["mean"], s[key]["std"], strict=True)
        if m is not None
        for v in (m - (sd or 0.0), m + (sd or 0.0))
    ]
    extra = [x for x in (report["optimum"], (report["target"] or {}).get("value")) if x is not None]
    y_lo, y_hi = float(min(values + extra)), float(max(values + extra))
    margin = (y_hi - y_lo) * 0.05 or 1.0
    y_lo, y_hi = y_lo - margin, y_hi + margin
    # Colours by method over the whole report, so a method looks the same in every figure.
    colours: dict[str, str] = {}
    for s in report["series"]:
        colours.setdefault(s["method"], PALETTE[len(colours) % len(PALETTE)])
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">'
        f"{html.escape(report['task'])}, {html.escape(title)}: best value "
        f"({report['direction']}), mean and &#177;1 sd over seeds</text>",
    ]
    max_trials = max(s["trials"] for s in series)
    max_gpu = max((s["curve_gpu_seconds"]["x"] or [0.0])[-1] for s in series) or 1.0
    panels = [
        ("trials", pad, 1.0, float(max_trials), "curve_trials"),
        ("GPU-seconds", pad + panel_w + 90, 0.0, max_gpu, "curve_gpu_seconds"),
    ]
    top = 40
    for label, left, x_lo, x_hi, key in panels:

        def px(x: float, left: int = left, x_lo: float = x_lo, x_hi: float = x_hi) -> float:
            return left + (x - x_lo) / ((x_hi - x_lo) or 1.0) * panel_w

        def py(y: float) -> float:
            return top + (y_hi - y) / (y_hi - y_lo) * panel_h

        out.append(
            f'<rect x="{left}" y="{top}" width="{panel_w}" height="{panel_h}" '
            'fill="none" stroke="#444"/>'
        )
        for t in _ticks(y_lo, y_hi):
            out.append(
                f'<line x1="{left}" x2="{left + panel_w}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                'stroke="#eee"/>'
                f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
            )
        for t in _ticks(x_lo, x_hi):
            out.append(
                f'<text x="{px(t):.1f}" y="{top + panel_h + 14}" text-anchor="middle">'
                f"{_fmt(t)}</text>"
            )
        out.append(
            f'<text x="{left + panel_w / 2}" y="{top + panel_h + 30}" '
            f'text-anchor="middle">{label}</text>'
        )
        target = report["target"] or {}
        for name, y, colour in (
            ("optimum", report["optimum"], "#000"),
            (f"random best-of-{target.get('trials')}", target.get("value"), "#d62728"),
        ):
            if y is None:
                continue
            out.append(
                f'<line x1="{left}" x2="{left + panel_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                f'stroke="{colour}" stroke-dasharray="2 3"/>'
                f'<text x="{left + panel_w - 2}" y="{py(y) - 3:.1f}" text-anchor="end" '
                f'fill="{colour}">{name}</text>'
            )
        for s in series:
            xs = s[key]["x"] if key == "curve_gpu_seconds" else list(range(1, s["trials"] + 1))
            pts = [
                (x, m, sd or 0.0)
                for x, m, sd in zip(xs, s[key]["mean"], s[key]["std"], strict=True)
                if m is not None
            ]
            if not pts:
                continue
            colour = colours[s["method"]]
            upper = " ".join(f"{px(x):.1f},{py(m + sd):.1f}" for x, m, sd in pts)
            lower = " ".join(f"{px(x):.1f},{py(m - sd):.1f}" for x, m, sd in reversed(pts))
            line = " ".join(f"{px(x):.1f},{py(m):.1f}" for x, m, _ in pts)
            dash = _dash(s)
            out.append(
                f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.08"/>'
                f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.6" '
                f'stroke-dasharray="{dash}"/>'
            )
    legend_y = top + panel_h + 48
    for i, s in enumerate(series):
        x = pad + (i % 4) * 250
        y = legend_y + (i // 4) * 15
        label = f"{s['method']} ({s['runner']}"
        label += (
            f", p{s['parallelism']})"
            if s["parallelism"] != 1 or s["runner"] != "in-process"
            else ")"
        )
        out.append(
            f'<line x1="{x}" x2="{x + 22}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{colours[s["method"]]}" stroke-width="2" '
            f'stroke-dasharray="{_dash(s)}"/>'
            f'<text x="{x + 27}" y="{y}">{html.escape(label)}</text>'
        )
    rows = (len(series) + 3) // 4
    total_h = max(height, legend_y + rows * 15 + 10)
    out[0] = (
        out[0]
        .replace(f'height="{height}"', f'height="{total_h}"')
        .replace(f'viewBox="0 0 {width} {height}"', f'viewBox="0 0 {width} {total_h}"')
    )
    out[1] = f'<rect width="{width}" height="{total_h}" fill="white"/>'
    out.append("</svg>")
    return "\n".join(out) + "\n"


def figures(report: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(file suffix, title, series): samplers without pruning in one figure; pruners,
    with the same samplers unpruned for reference, in another (ten bands in one
    panel are unreadable)."""
    plain = [s for s in report["series"] if "/" not in s["method"]]
    pruned = [s for s in report["series"] if "/" in s["method"]]
    bases = {s["method"].split("/")[0] for s in pruned}
    out = []
    if plain:
        out.append(("", "samplers", plain))
    if pruned:
        out.append(("-pruners", "pruners", [s for s in plain if s["method"] in bases] + pruned))
    return out


def table(report: dict[str, Any]) -> str:
    """A Markdown table of the summary (for the README and the terminal)."""
    target = report["target"] or {}
    lines = [
        f"{report['task']}: optimum {report['optimum']}, random best-of-"
        f"{target.get('trials')} {_fmt(target['value']) if target.get('value') else '-'} "
        f"({_fmt(target.get('random_gpu_seconds') or 0)} GPU-s)",
        "",
        "| method | runner | seeds | best (mean +- sd) | GPU-s | saved | "
        "reached target | trials to target | GPU-s to target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["series"]:
        tt = s.get("to_target") or {}
        tr, gp = tt.get("trials") or {}, tt.get("gpu_seconds") or {}
        final = s["final"]
        sequential = s["runner"] == "in-process" and s["parallelism"] == 1
        runner = s["runner"] + ("" if sequential else f" p{s['parallelism']}")

        def ms(d: dict[str, Any]) -> str:
            if d.get("mean") is None:
                return "-"
            return f"{_fmt(d['mean'])} +- {_fmt(d['std'])}"

        lines.append(
            f"| {s['method']} | {runner} | {len(s['seeds'])} | {ms(final)} | "
            f"{_fmt(s['gpu_seconds']['mean'])} | {s['saved_fraction']['mean']:.0%} | "
            f"{tr.get('reached', '-')}/{tr.get('runs', '-')} | {ms(tr)} | {ms(gp)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="file stem (default: search-<task>)")
    args = parser.parse_args(argv)
    by_task: dict[str, list[Run]] = defaultdict(list)
    for path in args.records:
        for run in json.loads(path.read_text()):
            by_task[run["task"]].append(run)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for task_name, runs in sorted(by_task.items()):
        report = summarise(task_name, runs, [str(p) for p in args.records])
        stem = args.name or f"search-{task_name}"
        (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        written = [f"{stem}.json"]
        for suffix, title, series in figures(report):
            (args.out_dir / f"{stem}{suffix}.svg").write_text(svg(report, series, title))
            written.append(f"{stem}{suffix}.svg")
        print(table(report))
        print(f"wrote {', '.join(str(args.out_dir / w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
