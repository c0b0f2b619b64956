"""A Study's search as one self-contained HTML page (`kubetune report`).

The page works offline: plotly.js is inlined once in the head, nothing is fetched
(no CDN, no web fonts). The plots are Optuna's own (optuna.visualization) drawn on
the Study exported with `kubetune.export.to_optuna`; only the intermediate-value
curves are drawn here, because Optuna's plot does not tell a pruned trial from a
diverged or failed one. A plot that cannot be made yet (too few completed trials,
nothing varies) becomes a short note saying why, never a failed report.

This module imports Optuna and plotly at once: only the CLI's report command imports
it (lazily, so `kubetune` itself starts without plotly, and a missing plotly is an
ImportError there that says which extra to install).
"""

from __future__ import annotations

import dataclasses
import html
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.importance import BaseImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import (
    plot_contour,
    plot_optimization_history,
    plot_parallel_coordinate,
    plot_param_importances,
    plot_pareto_front,
    plot_slice,
)
from plotly.offline import get_plotlyjs

from kubetune.export import to_optuna
from kubetune.results import StudyResult, TrialResult, format_value

# plotly ships no type information: its figures are Any here.
Figure = Any
# What a single-objective plot shows of a trial (None: its only value).
Target = Callable[[FrozenTrial], float] | None

# System fonts only: the page must not fetch a web font.
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
SLICES_PER_ROW = 3  # plot_slice gives each parameter 300 px; more per row overflow the page

# How each outcome looks in the intermediate-value curves: (colour, dash, end marker).
OUTCOMES: dict[str, tuple[str, str, str | None]] = {
    "completed": ("#1f77b4", "solid", None),
    "pruned": ("#ff7f0e", "dash", "x"),
    "diverged": ("#d62728", "dot", "star-triangle-up"),
    "failed": ("#7f7f7f", "dashdot", "circle-open"),
    "running": ("#2ca02c", "solid", None),
}
OUTCOME_LABELS = {
    "completed": "completed",
    "pruned": "pruned (✕ where stopped)",
    "diverged": "diverged (▲ last finite value)",
    "failed": "failed (○ last value)",
    "running": "running or waiting",
}


@dataclass(frozen=True)
class Plot:
    """One section of plots: its figures, or a note saying why there are none."""

    key: str  # the section is id="plot-<key>", data-plot="<key>"
    title: str
    figures: list[Figure] = field(default_factory=list)
    note: str = ""  # why there is no plot, or what the reader should know about it
    height: int = 420


def render(result: StudyResult) -> str:
    """The report of `result` as one HTML document."""
    # Seed repeats of the best re-run its parameters: they are not search history, and
    # as extra points at the best spot they would skew importance and the slices.
    search = dataclasses.replace(result, trials=result.search_trials)
    study = to_optuna(search)
    plots = _plots(result, study)
    body = "\n".join(
        [
            _header(result),
            _boundary(result),
            _summary(result),
            _repeats(result),
            *(_plot_section(p) for p in plots),
            _trial_table(result),
        ]
    )
    return _page(result, body, with_plotly=any(p.figures for p in plots))


def write(result: StudyResult, path: str | Path) -> None:
    Path(path).write_text(render(result), encoding="utf-8")


# -- plots -------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning (its plots call experimental helpers) and
    nothing else: other warnings still say something about the data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _plots(result: StudyResult, study: optuna.Study) -> list[Plot]:
    ranking, ranking_note = _importance(result, study)
    plots = [
        _history(result, study),
        _curves(result),
        _parallel(result, study),
        _importances(result, study, ranking, ranking_note),
        _slices(result, study),
        _contour(result, study, ranking),
    ]
    if result.multi_objective:
        plots.append(_pareto(result, study))
    return plots


def _attempt(key: str, title: str, make: Callable[[], Plot]) -> Plot:
    """`make()`, or a note when Optuna finds the data unfit for this plot."""
    try:
        with _quiet():
            return make()
    except (ValueError, RuntimeError) as e:
        return Plot(key, title, note=f"This plot could not be made: {e}")


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _varying(trials: Sequence[FrozenTrial]) -> list[str]:
    """Parameters that take more than one value among `trials` (only those can be plotted
    against the objective)."""
    seen: dict[str, set[str]] = {}
    for t in trials:
        for name, value in t.params.items():
            seen.setdefault(name, set()).add(repr(value))
    return [name for name, values in seen.items() if len(values) > 1]


def _too_few(study: optuna.Study, needed: int = 2) -> str:
    """Why a plot of parameters against the objective cannot be made yet ("" if it can)."""
    done = _completed(study)
    if len(done) < needed:
        return f"Needs at least {needed} completed trials; this Study has {len(done)}."
    if not _varying(done):
        return "No parameter takes more than one value among the completed trials."
    return ""


def _target(result: StudyResult) -> tuple[Target, str, str]:
    """(target, its name, a note) for the plots that show one objective.

    A multi-objective Study shows its first objective there; the Pareto front shows all.
    """
    first = result.objectives[0]
    if not result.multi_objective:
        return None, first.metric, ""
    note = (
        f"Multi-objective Study: this plot shows the first objective, {first.metric} "
        f"({first.direction}); the Pareto front below shows all of them."
    )
    return _nth_value(0), first.metric, note


def _history(result: StudyResult, study: optuna.Study) -> Plot:

    title = "Optimization history"
    if not _completed(study):
        return Plot("history", title, note="No trial has completed yet.")

    def make() -> Plot:
        if not result.multi_objective:
            fig = plot_optimization_history(study, target_name=result.objectives[0].metric)
            return Plot("history", title, [fig])
        # One history per objective: "best so far" means nothing across objectives.
        figs = [
            plot_optimization_history(
                study, target=_nth_value(i), target_name=f"{o.metric} ({o.direction})"
            )
            for i, o in enumerate(result.objectives)
        ]
        note = "Multi-objective Study: one history per objective."
        return Plot("history", title, figs, note=note, height=360)

    return _attempt("history", title, make)


def _nth_value(i: int) -> Callable[[FrozenTrial], float]:
    return lambda t: float(t.values[i])


def _parallel(result: StudyResult, study: optuna.Study) -> Plot:

    title = "Parallel coordinates"
    why = _too_few(study)
    if why:
        return Plot("parallel", title, note=why)
    target, name, note = _target(result)

    def make() -> Plot:
        fig = plot_parallel_coordinate(study, target=target, target_name=name)
        return Plot("parallel", title, [fig], note=note, height=460)

    return _attempt("parallel", title, make)


def _importance(result: StudyResult, study: optuna.Study) -> tuple[dict[str, float], str]:
    """Each parameter's importance, most important first, and where it comes from.

    The Study's own status.importance when the operator has computed one (it is what
    `kubectl get study -o yaml` shows), else Optuna's default evaluator (PED-ANOVA),
    on the Pareto front for a multi-objective Study rather than on any one objective.
    """
    if result.importance:
        ranked = sorted(result.importance.items(), key=lambda kv: -kv[1])
        return dict(ranked), "From the Study's status.importance (PED-ANOVA, by the operator)."
    if _too_few(study):
        return {}, ""
    try:
        with _quiet():
            scores = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return {}, ""
    what = "reaching the Pareto front" if result.multi_objective else result.objectives[0].metric
    return dict(scores), f"Computed for this report by Optuna's PED-ANOVA evaluator ({what})."


class Known(BaseImportanceEvaluator):
    """Hands Optuna's importance plot the importances already known, so the plot shows
    the Study's own (or the one fit the contour also used), not a second, different fit."""

    def __init__(self, importances: dict[str, float]) -> None:
        self.importances = dict(importances)

    def evaluate(
        self, study: optuna.Study, params: list[str] | None = None, *, target: Target = None
    ) -> dict[str, float]:
        return dict(self.importances)


def _importances(
    result: StudyResult, study: optuna.Study, ranking: dict[str, float], source: str
) -> Plot:

    title = "Parameter importance"
    why = _too_few(study)
    if why or not ranking:
        return Plot("importance", title, note=why or "Optuna could not rank the parameters.")

    # A multi-objective plot needs a target; Known ignores it (the ranking is on the front).
    target = _nth_value(0) if result.multi_objective else None
    name = "reaching the Pareto front" if result.multi_objective else result.objectives[0].metric

    def make() -> Plot:
        fig = plot_param_importances(
            study, evaluator=Known(ranking), target=target, target_name=name
        )
        return Plot("importance", title, [fig], note=source, height=140 + 36 * len(ranking))

    return _attempt("importance", title, make)


def _slices(result: StudyResult, study: optuna.Study) -> Plot:

    title = "Slice plots"
    why = _too_few(study)
    if why:
        return Plot("slice", title, note=why)
    target, name, note = _target(result)
    names = sorted({p for t in _completed(study) for p in t.params})

    def make() -> Plot:
        figs = []
        for i in range(0, len(names), SLICES_PER_ROW):
            fig = plot_slice(
                study, params=names[i : i + SLICES_PER_ROW], target=target, target_name=name
            )
            fig.update_layout(width=None)  # Optuna fixes 300 px per parameter; fit the page
            figs.append(fig)
        return Plot("slice", title, figs, note=note, height=380)

    return _attempt("slice", title, make)


def _contour_pair(study: optuna.Study, ranking: dict[str, float]) -> list[str]:
    """The two most important parameters that vary together among completed trials
    (a conditional parameter is absent from some trials: the pair needs both)."""
    done = _completed(study)
    ranked = [p for p in ranking if any(p in t.params for t in done)]
    for i, a in enumerate(ranked):
        for b in ranked[i + 1 :]:
            both = [t for t in done if a in t.params and b in t.params]
            varying = _varying(both)
            if a in varying and b in varying:
                return [a, b]
    return []


def _contour(result: StudyResult, study: optuna.Study, ranking: dict[str, float]) -> Plot:

    title = "Contour of the two most important parameters"
    why = _too_few(study)
    if why:
        return Plot("contour", title, note=why)
    pair = _contour_pair(study, ranking)
    if not pair:
        why = "Needs two parameters that both vary among the completed trials."
        return Plot("contour", title, note=why if ranking else "No parameter importance yet.")
    target, name, note = _target(result)

    def make() -> Plot:
        fig = plot_contour(study, params=pair, target=target, target_name=name)
        return Plot("contour", f"{title}: {pair[0]} and {pair[1]}", [fig], note=note, height=520)

    return _attempt("contour", title, make)


def _pareto(result: StudyResult, study: optuna.Study) -> Plot:

    title = "Pareto front"
    n = len(result.objectives)
    if n > 3:
        return Plot("pareto", title, note=f"Optuna draws 2 or 3 objectives; this Study has {n}.")
    if not _completed(study):
        return Plot("pareto", title, note="No trial has completed yet.")
    names = [f"{o.metric} ({o.direction})" for o in result.objectives]

    def make() -> Plot:
        fig = plot_pareto_front(study, target_names=names)
        size = result.status.get("paretoFrontSize")
        note = f"{size} Pareto-optimal trials (status.paretoFrontSize)." if size else ""
        return Plot("pareto", title, [fig], note=note, height=520)

    return _attempt("pareto", title, make)


def _outcome(t: TrialResult) -> str:
    if t.phase == "Completed":
        return "completed"
    if t.phase == "Pruned":
        return "pruned"
    if t.diverged:
        return "diverged"
    return "failed" if t.phase == "Failed" else "running"


def _curves(result: StudyResult) -> Plot:
    """Each trial's intermediate values, styled by how the trial ended.

    Drawn with plotly directly: Optuna's plot_intermediate_values colours trials
    alike, and a pruned trial (the pruner's choice) should not look like a diverged one
    (the training's fault).
    """
    title = "Intermediate values"
    trials = [t for t in result.search_trials if t.status.intermediate]
    if not trials:
        note = "No trial reported intermediate values (steps) for the objective."
        return Plot("curves", title, note=note)
    best = result.best
    fig = go.Figure()
    counts = {o: sum(_outcome(t) == o for t in trials) for o in OUTCOMES}
    shown: set[str] = set()
    for t in trials:
        outcome = _outcome(t)
        colour, dash, marker = OUTCOMES[outcome]
        steps = [s for s, _ in t.status.intermediate]
        values = [v for _, v in t.status.intermediate]
        is_best = best is not None and t.name == best.name
        hover = f"{t.name} ({outcome})<br>step %{{x}}: %{{y:.6g}}<extra></extra>"
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=values,
                mode="lines",
                name=f"best: {t.name}"
                if is_best
                else f"{OUTCOME_LABELS[outcome]} ({counts[outcome]})",
                legendgroup=t.name if is_best else outcome,
                showlegend=is_best or outcome not in shown,
                line={"color": colour, "dash": dash, "width": 4 if is_best else 1.5},
                opacity=1.0 if is_best else 0.75,
                hovertemplate=hover,
            )
        )
        if not is_best:
            shown.add(outcome)
        if marker is not None:
            fig.add_trace(
                go.Scatter(
                    x=steps[-1:],
                    y=values[-1:],
                    mode="markers",
                    legendgroup=outcome,
                    showlegend=False,
                    marker={"symbol": marker, "size": 11, "color": colour, "line": {"width": 2}},
                    hovertemplate=hover,
                )
            )
    metric = result.objectives[0].metric
    fig.update_layout(xaxis_title="step", yaxis_title=metric, legend_title_text="trials")
    note = (
        f"Multi-objective Study: the curves are of the first objective, {metric}."
        if result.multi_objective
        else ""
    )
    return Plot("curves", title, [fig], note=note, height=460)


# -- HTML --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _figure_html(fig: Figure, key: str, n: int, height: int) -> str:
    fig.update_layout(
        title=None,  # the section's heading names the plot
        height=height,
        template="plotly_white",
        font={"family": FONT},
        margin={"t": 30, "b": 50, "l": 60, "r": 30},
    )
    out: str = fig.to_html(
        full_html=False,
        # plotly.js is inlined once in the page's head, before any figure's script runs.
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=f"fig-{key}-{n}",
        default_width="100%",
        config={"displaylogo": False, "responsive": True},
    )
    return out


def _plot_section(plot: Plot) -> str:
    parts = [f"<h2>{_e(plot.title)}</h2>"]
    if plot.note:
        parts.append(f'<p class="note">{_e(plot.note)}</p>')
    parts += [
        f'<div class="figure">{_figure_html(fig, plot.key, i, plot.height)}</div>'
        for i, fig in enumerate(plot.figures)
    ]
    state = "plot" if plot.figures else "note"
    return (
        f'<section id="plot-{_e(plot.key)}" class="plot" data-plot="{_e(plot.key)}" '
        f'data-state="{state}">\n' + "\n".join(parts) + "\n</section>"
    )


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_param_value(v)}" for k, v in params.items())


def _param_value(v: Any) -> str:
    return format_value(v) if isinstance(v, float) else str(v)


def _spec_text(block: dict[str, Any] | None, default: str) -> str:
    """A sampler or pruner as the spec sets it: "tpe, seed 7, nStartupTrials=4"."""
    if not block:
        return f"{default} (default)"
    parts = [str(block.get("name") or default)]
    if block.get("seed") is not None:
        parts.append(f"seed {block['seed']}")
    options = block.get("options") or {}
    parts += [f"{k}={json.dumps(v)}" for k, v in sorted(options.items())]
    startup = block.get("startup")
    if startup:  # the spec's defaults: 10 qmc trials
        parts.append(f"first {startup.get('trials', 10)} trials by {startup.get('name', 'qmc')}")
    return ", ".join(parts)


def _hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.2f}" if h >= 1 else f"{h:.3g}"


def _header(result: StudyResult) -> str:
    phase = result.phase
    message = f'<p class="message">{_e(result.message)}</p>' if result.message else ""
    return (
        '<header id="study">\n'
        f'<h1>{_e(result.name)} <span class="ns">in namespace {_e(result.namespace)}</span></h1>\n'
        f'<p><span class="phase phase-{_e(phase.lower())}">{_e(phase)}</span></p>\n'
        f"{message}\n</header>"
    )


def _boundary(result: StudyResult) -> str:
    warning = result.boundary_warning
    if not warning:
        return ""
    return (
        '<div id="boundary-warning" class="warning" role="alert">'
        "<strong>⚠ Search-space boundary:</strong> the best trials lie at the edge of the "
        f"search space, so a better value may lie outside it. {_e(warning)}</div>"
    )


def _objectives_text(result: StudyResult) -> str:
    return "; ".join(f"{o.direction} {o.metric}" for o in result.objectives)


def _best_rows(result: StudyResult) -> list[tuple[str, str]]:
    if result.multi_objective:
        front = result.pareto_front
        shown = ", ".join(front[:10]) + (f" and {len(front) - 10} more" if len(front) > 10 else "")
        return [("Pareto front", f"{len(front)} trials: {shown}" if front else "none yet")]
    best = result.best
    if best is None:
        return [("Best trial", "none completed yet")]
    recorded = result.status.get("bestTrial") or {}
    value = recorded.get("value") if recorded.get("name") == best.name else None
    value = value if value is not None else _first_value(best)
    over_seeds = " (mean over seeds)" if recorded.get("singleRunValue") is not None else ""
    return [
        ("Best trial", f"{best.name} (#{best.number}): {format_value(value)}{over_seeds}"),
        ("Best parameters", _params_text(best.params)),
    ]


def _progress_text(result: StudyResult) -> str:
    used, most = result.progress
    counts = result.status.get("trials") or {}
    parts = [
        f"{counts[k]} {k}"
        for k in ("running", "waiting", "completed", "pruned", "failed", "diverged")
        if counts.get(k)
    ]
    text = f"{used} of {most} trials" if most is not None else f"{used} trials (no limit)"
    exhausted = (result.status.get("budget") or {}).get("exhaustedBy")
    return (
        text
        + (f" ({', '.join(parts)})" if parts else "")
        + (f"; ended by {exhausted}" if exhausted else "")
    )


def _saved_text(result: StudyResult) -> str:
    if not any(t.phase == "Pruned" for t in result.trials):
        return "none (no trial was pruned)"
    return f"~{_hours(result.gpu_seconds_saved_by_pruning)} (estimate)"


def _summary(result: StudyResult) -> str:
    budget_hours = (result.spec.get("budget") or {}).get("gpuHours")
    spent = _hours(result.gpu_seconds) + (f" of {budget_hours} budgeted" if budget_hours else "")
    rows = [
        ("Objective" + ("s" if result.multi_objective else ""), _objectives_text(result)),
        *_best_rows(result),
        ("Sampler", _spec_text(result.spec.get("sampler"), "tpe")),
        ("Pruner", _spec_text(result.spec.get("pruner"), "none")),
        ("Progress", _progress_text(result)),
        ("GPU-hours spent", spent),
        ("GPU-hours saved by pruning", _saved_text(result)),
    ]
    items = "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    how = (
        "The saving is an estimate: each pruned trial is assumed to have run on to the last "
        "step the completed trials reached, at the GPU-seconds per step it ran at until it "
        "was stopped. GPU-hours are the GPUs a trial requested multiplied by the time its pod ran."
    )
    return (
        f'<section id="summary">\n<h2>Summary</h2>\n<dl>\n{items}\n</dl>\n'
        f'<p class="note" id="saved-estimate">{_e(how)}</p>\n</section>'
    )


def _repeats(result: StudyResult) -> str:
    summary = result.repeat_summary
    if summary is None and not result.repeats:
        return ""
    named = (result.status.get("repeatBest") or {}).get("trial")
    original = result.trial(str(named)) if named else result.best
    lines = []
    if summary is not None:
        mean, std, count = summary
        lines.append(
            f'<p class="repeat-summary"><strong>{_e(format_value(mean))} ± '
            f"{_e(format_value(std))}</strong> (mean ± sample standard deviation over seeds "
            f"of the best parameters: {count} runs, the best trial's own and its completed "
            "repeats)</p>"
        )
    # The best trial's own run first: the operator's mean counts it with the repeats.
    runs = ([original] if original is not None else []) + result.repeats
    rows = "\n".join(_repeat_row(t, t is original) for t in runs)
    return (
        '<section id="repeats">\n<h2>Seed repeats of the best trial</h2>\n'
        + "\n".join(lines)
        + "\n<table><thead><tr><th>Trial</th><th>Seed</th><th>Phase</th><th>Value</th>"
        + f"</tr></thead>\n<tbody>\n{rows}\n</tbody></table>\n</section>"
    )


def _repeat_row(t: TrialResult, original: bool) -> str:
    name = _e(t.name) + (" (the best trial's own run)" if original else "")
    seed = _e(t.seed) if t.seed is not None else "-"
    value = _e(format_value(_first_value(t)))
    return (
        f"<tr><td>{name}</td><td>{seed}</td><td>{_phase_cell(t)}</td>"
        f'<td class="num">{value}</td></tr>'
    )


def _first_value(t: TrialResult) -> float | None:
    return t.values[0] if t.values else None


def _phase_cell(t: TrialResult) -> str:
    return f'<span class="phase phase-{_e(t.phase.lower())}">{_e(t.phase)}</span>'


def _trial_table(result: StudyResult) -> str:
    metrics = [o.metric for o in result.objectives]
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in ["#", "Name", "Phase", "Reason", *metrics, "Parameters", "GPU-s", "Source"]
    )
    best = result.best
    front = set(result.pareto_front)
    rows = "\n".join(
        _trial_row(t, len(metrics), best is not None and t.name == best.name, t.name in front)
        for t in result.trials
    )
    return (
        '<section id="trials">\n<h2>Trials</h2>\n<div class="table-wrap"><table>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>\n</section>"
    )


def _trial_row(t: TrialResult, n_values: int, best: bool, pareto: bool) -> str:
    marks = [m for m, on in (("best", best), ("pareto", pareto)) if on]
    badges = "".join(f' <span class="mark">{m}</span>' for m in marks)
    values = [format_value(v) for v in t.values or []] or ["-"] * n_values
    cells = "".join(f'<td class="num">{_e(v)}</td>' for v in values)
    # Why a trial did not complete, in the user's words: the reason and its message.
    why = t.status.message if t.phase != "Completed" else None
    reason = _e(t.reason) + (f'<div class="why">{_e(why)}</div>' if why else "")
    source = t.source + (f" (seed {t.seed})" if t.seed is not None else "")
    return (
        f'<tr class="{" ".join(marks)}"><td class="num">{t.number}</td>'
        f'<td class="name">{_e(t.name)}{badges}</td><td>{_phase_cell(t)}</td>'
        f"<td>{reason}</td>{cells}"
        f'<td class="params">{_e(_params_text(t.params))}</td>'
        f'<td class="num">{t.status.gpu_seconds:,.0f}</td><td>{_e(source)}</td></tr>'
    )


CSS = """
:root { color-scheme: light; }
body { font-family: FONT; margin: 0; background: #f6f7f9; color: #1d232b; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
  box-shadow: 0 0 0 1px #e3e6ea; min-height: 100vh; }
h1 { font-size: 1.7rem; margin: 0 0 6px; }
h1 .ns { font-size: 1rem; font-weight: normal; color: #5c6773; }
h2 { font-size: 1.2rem; margin: 0 0 8px; }
section { margin: 28px 0 0; padding-top: 18px; border-top: 1px solid #e3e6ea; }
.message { margin: 6px 0 0; color: #39424d; }
.note { color: #5c6773; font-size: 0.9rem; margin: 4px 0 10px; }
.warning { margin: 18px 0 0; padding: 12px 16px; background: #fff4e5; border: 1px solid #f0b35b;
  border-left: 6px solid #e8890c; border-radius: 4px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px; margin: 0; }
dt { font-weight: 600; color: #39424d; }
dd { margin: 0; overflow-wrap: anywhere; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 0.85rem;
  background: #e8ebef; color: #39424d; }
.phase-succeeded, .phase-completed { background: #e3f4e8; color: #1c6b34; }
.phase-failed { background: #fde8e8; color: #9b1c1c; }
.phase-pruned { background: #fff1df; color: #8a4b00; }
.phase-running { background: #e4efff; color: #1d4f91; }
.repeat-summary { font-size: 1.05rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.88rem; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e6ea;
  vertical-align: top; }
thead th { background: #f0f2f5; white-space: nowrap; }
td.name { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.best { background: #eef7ee !important; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.params { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 0.8rem; overflow-wrap: anywhere; min-width: 20em; }
.why { color: #5c6773; font-size: 0.8rem; max-width: 20em; }
.mark { font-size: 0.75rem; padding: 0 6px; border-radius: 8px; background: #1c6b34; color: #fff; }
.figure { width: 100%; }
footer { margin-top: 32px; color: #8a939e; font-size: 0.8rem; }
""".replace("FONT", FONT)


def _page(result: StudyResult, body: str, *, with_plotly: bool) -> str:
    script = ""
    if with_plotly:
        # Inlined, not a CDN <script src>: the report opens offline and from a mail.
        script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    title = f"{result.namespace}/{result.name}" if result.namespace else result.name
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>kubetune report: {_e(title)}</title>\n"
        f"<style>{CSS}</style>\n{script}\n</head>\n<body>\n<main>\n{body}\n"
        "<footer>Made by kubetune report from the Study and its Trial objects.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )
