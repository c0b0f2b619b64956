"""`kubetune report`: one offline HTML page showing a Study's search.

The Studies here are built as the API server returns them (Trial statuses through
TrialStatus.to_k8s, the Study's status in the CRD's shape), rendered, checked as
HTML, and then opened in Debian's chromium to see that every plot draws with no
error and no network request.
"""

from __future__ import annotations

import html
import math
import re
import statistics
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from kubetune import report
from kubetune.lifecycle import TrialStatus
from kubetune.results import StudyResult
from tests import browser

START = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
# User-provided strings that would run script if the report did not escape them. The
# short one is a categorical choice, so it also lands in plotly's data (inside <script>).
INJECTED = "</script><script>console.error('injected')</script><img src=x onerror=alert(1)>"
CHOICE = "tanh</script>"
PARAMETERS: list[dict[str, Any]] = [
    {"name": "optimizer", "categorical": {"choices": ["sgd", "adam"]}},
    {"name": "lr", "float": {"low": 1.0e-4, "high": 0.5, "log": True}},
    {
        "name": "momentum",
        "float": {"low": 0.0, "high": 0.99},
        "when": {"parameter": "optimizer", "in": ["sgd"]},
    },
    {"name": "layers", "int": {"low": 1, "high": 3}},
    {"name": "dropout", "float": {"low": 0.0, "high": 0.5}},
    {"name": "activation", "categorical": {"choices": ["relu", "gelu", CHOICE]}},
]
TEMPLATE = {
    "backoffLimit": 0,
    "template": {
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "trainer",
                    "image": "ghcr.io/kubetune/trainer:0.1.0",
                    "args": ["--lr=${params.lr}", "--layers=${params.layers}"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        }
    },
}


def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": "2025-05-01T10:30:00Z",
    }


def trial_obj(
    study: str,
    number: int,
    params: dict[str, Any],
    status: TrialStatus,
    *,
    source: str = "sampler",
    seed: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"study": study, "number": number, "params": params, "source": source}
    if seed is not None:
        spec["seed"] = seed
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "Trial",
        "metadata": {
            "name": f"{study}-{number}",
            "namespace": "team-a",
            "labels": {"kubetune.dev/study": study},
        },
        "spec": spec,
        "status": status.to_k8s(),
    }


def curve(final: float, steps: int) -> list[tuple[int, float]]:
    """A learning curve rising towards `final` over 8 epochs, cut after `steps`."""
    return [(s, round(final * (1 - 0.6 * math.exp(-s / 2)), 4)) for s in range(1, steps + 1)]


def run(
    number: int,
    phase: str,
    seconds: float,
    *,
    value: float | None = None,
    values: list[float] | None = None,
    steps: int = 0,
    reason: str | None = None,
    message: str | None = None,
) -> TrialStatus:
    start = START + timedelta(minutes=3 * number)
    return TrialStatus(
        phase=phase,
        reason=reason,
        message=message,
        value=value,
        values=values,
        metrics={"val_accuracy": value} if value is not None else {},
        intermediate=curve(value or 0.5, steps),
        start_time=start,
        completion_time=start + timedelta(seconds=seconds),
        gpus=1,
        gpu_seconds=seconds,
        job_name=f"digits-mlp-{number}",
    )


# (params, status) of the twelve search trials of the single-objective Study.
def search_trials() -> list[tuple[dict[str, Any], TrialStatus]]:
    sgd = {"optimizer": "sgd", "momentum": 0.9}
    adam = {"optimizer": "adam"}
    done = [
        ({**sgd, "lr": 0.3, "layers": 2, "dropout": 0.1, "activation": "relu"}, 0.962),
        ({**adam, "lr": 0.001, "layers": 3, "dropout": 0.2, "activation": "gelu"}, 0.948),
        ({**sgd, "lr": 0.05, "layers": 1, "dropout": 0.3, "activation": "relu"}, 0.921),
        ({**adam, "lr": 0.01, "layers": 2, "dropout": 0.05, "activation": CHOICE}, 0.955),
        ({**sgd, "lr": 0.45, "layers": 3, "dropout": 0.15, "activation": "gelu"}, 0.971),
        ({**adam, "lr": 0.0003, "layers": 1, "dropout": 0.4, "activation": "relu"}, 0.902),
        ({**sgd, "lr": 0.48, "layers": 2, "dropout": 0.1, "activation": "gelu"}, 0.975),
        ({**adam, "lr": 0.003, "layers": 2, "dropout": 0.25, "activation": "relu"}, 0.940),
    ]
    out = [(p, run(i, "Completed", 600, value=v, steps=8)) for i, (p, v) in enumerate(done)]
    out += [
        (
            {**adam, "lr": 0.0001, "layers": 1, "dropout": 0.5, "activation": "relu"},
            run(8, "Pruned", 225, steps=3, reason="Pruned", message="below the median at step 3"),
        ),
        (
            {**sgd, "lr": 0.0002, "layers": 3, "dropout": 0.45, "activation": "gelu"},
            run(9, "Pruned", 300, steps=4, reason="Pruned", message="below the median at step 4"),
        ),
        (
            {**sgd, "lr": 0.5, "layers": 3, "dropout": 0.0, "activation": "relu"},
            run(
                10,
                "Failed",
                150,
                steps=2,
                reason="Diverged",
                message=f"val_accuracy is not finite (NaN or infinite) {INJECTED}",
            ),
        ),
        (
            {**adam, "lr": 0.02, "layers": 2, "dropout": 0.3, "activation": "gelu"},
            run(11, "Failed", 40, reason="Error", message="exit code 1: CUDA out of memory"),
        ),
    ]
    return out


BEST = 6  # digits-mlp-6: 0.975
REPEAT_VALUES = [0.969, 0.973]


def single_study() -> StudyResult:
    trials = [trial_obj("digits-mlp", n, p, st) for n, (p, st) in enumerate(search_trials())]
    best_params = trials[BEST]["spec"]["params"]
    for i, v in enumerate(REPEAT_VALUES):
        n = 12 + i
        st = run(n, "Completed", 600, value=v, steps=8)
        trials.append(trial_obj("digits-mlp", n, best_params, st, source="repeat", seed=101 + i))
    runs = [0.975, *REPEAT_VALUES]
    study = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "Study",
        "metadata": {"name": "digits-mlp", "namespace": "team-a", "generation": 1},
        "spec": {
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "parameters": PARAMETERS,
            "sampler": {"name": "tpe", "seed": 7, "options": {"nStartupTrials": 4}},
            "pruner": {"name": "median", "options": {"nWarmupSteps": 2}},
            "budget": {"maxTrials": 12, "parallelism": 4, "maxFailedTrials": 4, "gpuHours": 10},
            "repeatBest": {"count": 2},
            "trialTemplate": TEMPLATE,
        },
        "status": {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "progress": "12/12",
            "startTime": "2025-05-01T09:00:00Z",
            "completionTime": "2025-05-01T10:30:00Z",
            "conditions": [
                condition("Invalid", "False", "SpecValid", "the spec is valid"),
                condition(
                    "Completed", "True", "BudgetSpent", f"maxTrials reached (12 trials) {INJECTED}"
                ),
                condition(
                    "SearchSpaceBoundary",
                    "True",
                    "BestAtEdge",
                    "lr: the best values are at the high edge (0.5); widen the range above 0.5",
                ),
            ],
            "trials": {"running": 0, "completed": 10, "pruned": 2, "failed": 2, "diverged": 1},
            "budget": {
                "trialsUsed": 12,
                "maxTrials": 12,
                "gpuHoursUsed": 1.98,
                "gpuHours": 10,
                "exhaustedBy": "maxTrials",
            },
            "sampler": {"name": "tpe", "learnedTrials": 12},
            "importance": {
                "lr": 0.52,
                "optimizer": 0.21,
                "layers": 0.14,
                "dropout": 0.09,
                "momentum": 0.03,
                "activation": 0.01,
            },
            "repeatBest": {
                "trial": "digits-mlp-6",
                "values": runs,
                "mean": statistics.fmean(runs),
                "std": statistics.stdev(runs),
                "failed": 0,
            },
            "bestTrial": {
                "name": "digits-mlp-6",
                "number": BEST,
                "value": statistics.fmean(runs),
                "singleRunValue": 0.975,
                "params": best_params,
            },
        },
    }
    return StudyResult.from_k8s(study, trials)


def multi_study() -> StudyResult:
    """Accuracy against latency: NSGA-II, no pruner, a Pareto front of four."""
    points = [
        (0.91, 3.1), (0.95, 7.9), (0.97, 15.2), (0.93, 4.0), (0.90, 6.5),
        (0.96, 9.8), (0.94, 12.0), (0.89, 2.2), (0.92, 8.8),
    ]  # fmt: skip
    trials = []
    for n, (acc, lat) in enumerate(points):
        params = {
            "optimizer": "adam" if n % 2 else "sgd",
            "lr": round(0.001 * (n + 1) ** 2, 6),
            "layers": 1 + n % 3,
            "dropout": round(0.05 * n, 2),
            "activation": "relu",
        }
        if n % 2 == 0:
            params["momentum"] = 0.8
        st = run(n, "Completed", 420, value=acc, values=[acc, lat], steps=6)
        trials.append(trial_obj("latency", n, params, st))
    failed = run(9, "Failed", 30, reason="MetricsMissing", message="no latency_ms reported")
    trials.append(trial_obj("latency", 9, {"optimizer": "adam", "lr": 0.2, "layers": 1}, failed))
    front = [0, 1, 2, 3, 5, 7]
    study = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "Study",
        "metadata": {"name": "latency", "namespace": "team-b"},
        "spec": {
            "objectives": [
                {"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "latency_ms", "direction": "minimize"},
            ],
            "parameters": PARAMETERS,
            "sampler": {"name": "nsga2", "seed": 3},
            "budget": {"maxTrials": 10, "parallelism": 2},
            "trialTemplate": TEMPLATE,
        },
        "status": {
            "phase": "Succeeded",
            "conditions": [condition("Completed", "True", "BudgetSpent", "maxTrials reached")],
            "trials": {"completed": 9, "failed": 1},
            "budget": {"trialsUsed": 10, "maxTrials": 10, "exhaustedBy": "maxTrials"},
            "paretoFront": [
                {
                    "name": f"latency-{n}",
                    "number": n,
                    "values": list(points[n]),
                    "params": trials[n]["spec"]["params"],
                }
                for n in front
            ],
            "paretoFrontSize": len(front),
        },
    }
    return StudyResult.from_k8s(study, trials)


def lonely_study() -> StudyResult:
    """One completed trial: most plots cannot be made yet, and the report says so."""
    st = run(0, "Completed", 60, value=0.8, steps=3)
    trials = [trial_obj("early", 0, {"optimizer": "adam", "lr": 0.01, "layers": 1}, st)]
    study = {
        "metadata": {"name": "early", "namespace": "team-a"},
        "spec": {
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "parameters": PARAMETERS,
            "budget": {"maxTrials": 20, "parallelism": 1},
            "trialTemplate": TEMPLATE,
        },
        "status": {"phase": "Running", "trials": {"completed": 1}},
    }
    return StudyResult.from_k8s(study, trials)


SINGLE_PLOTS = ["history", "curves", "parallel", "importance", "slice", "contour"]
MULTI_PLOTS = [*SINGLE_PLOTS, "pareto"]


@pytest.fixture(scope="module")
def single_html() -> str:
    return report.render(single_study())


@pytest.fixture(scope="module")
def multi_html() -> str:
    return report.render(multi_study())


def plot_sections(page: str) -> dict[str, str]:
    """data-plot key -> data-state, in page order."""
    return dict(re.findall(r'<section [^>]*data-plot="([^"]+)" data-state="([^"]+)"', page))


def section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}".*?</section>', page, re.S)
    assert match, f"no section {ident}"
    return match.group(0)


def visible_text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


# -- the HTML ----------------------------------------------------------------------------


def test_every_plot_is_drawn_in_its_own_section(single_html: str, multi_html: str) -> None:
    assert plot_sections(single_html) == dict.fromkeys(SINGLE_PLOTS, "plot")
    assert plot_sections(multi_html) == dict.fromkeys(MULTI_PLOTS, "plot")
    for key in SINGLE_PLOTS:
        assert f'<section id="plot-{key}"' in single_html


def test_the_page_is_offline_with_plotly_inlined_once(single_html: str) -> None:
    # One copy of plotly.js (its banner once) that draws every figure...
    assert len(re.findall(r"\* plotly\.js v\d", single_html)) == 1
    assert single_html.count("Plotly.newPlot(") == 7  # the slices take two rows of three
    # ...and nothing of ours that would fetch anything: no script or stylesheet by URL,
    # no web font, no link (the library's own strings name plotly.com; the browser test
    # shows it requests nothing).
    ours = single_html.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]+src=", ours)
    assert not re.search(r"<link[^>]+href=", ours)
    assert not re.search(r"@import|@font-face|url\(", ours)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", ours)


def test_the_header_says_what_the_study_is_and_where_it_stands(single_html: str) -> None:
    head = visible_text(section_or_header(single_html))
    assert "digits-mlp" in head and "team-a" in head and "Succeeded" in head
    assert "maxTrials reached (12 trials)" in head
    summary = visible_text(section(single_html, "summary"))
    assert "maximize val_accuracy" in summary
    assert "digits-mlp-6 (#6)" in summary and "mean over seeds" in summary
    assert "lr=0.48" in summary and "optimizer=sgd" in summary
    assert "Sampler tpe, seed 7, nStartupTrials=4 " in summary
    assert "Pruner median, nWarmupSteps=2 " in summary
    assert "12 of 12 trials" in summary and "2 pruned" in summary and "1 diverged" in summary


def section_or_header(page: str) -> str:
    match = re.search(r'<header id="study">.*?</header>', page, re.S)
    assert match
    return match.group(0)


def test_gpu_hours_spent_and_saved_by_pruning_are_shown(single_html: str) -> None:
    result = single_study()
    summary = visible_text(section(single_html, "summary"))
    # 10 runs of 600 s, pruned 225 s and 300 s, failed 150 s and 40 s.
    assert result.gpu_seconds == 10 * 600 + 225 + 300 + 150 + 40
    assert f"GPU-hours spent {result.gpu_seconds / 3600:.2f} of 10 budgeted" in summary
    # Pruned at steps 3 and 4 of 8: 225*(9/4-1) + 300*(9/5-1) GPU-seconds, about 0.145 h.
    saved = 225 * (9 / 4 - 1) + 300 * (9 / 5 - 1)
    assert result.gpu_seconds_saved_by_pruning == pytest.approx(saved)
    assert f"~{saved / 3600:.3g} (estimate)" in summary
    assert "estimate" in summary and "last step the completed trials reached" in summary


def test_seed_repeats_show_mean_and_spread(single_html: str) -> None:
    runs = [0.975, *REPEAT_VALUES]
    text = visible_text(section(single_html, "repeats"))
    assert f"{statistics.fmean(runs):.6g} ± {statistics.stdev(runs):.6g}" in text
    assert "3 runs, the best trial's own and its completed repeats" in text
    # Every run the mean is over: the best trial's own and each repeat, with its seed.
    assert "digits-mlp-6 (the best trial's own run) - Completed 0.975" in text
    assert "digits-mlp-12 101 Completed 0.969" in text
    assert "digits-mlp-13 102 Completed 0.973" in text


def test_the_boundary_warning_is_prominent(single_html: str) -> None:
    warning = re.search(r'<div id="boundary-warning"[^>]*role="alert">(.*?)</div>', single_html)
    assert warning, "the boundary warning is missing"
    assert "widen the range above 0.5" in warning.group(1)
    # Above the plots, right under the header: a reader sees it before any chart.
    assert single_html.index("boundary-warning") < single_html.index('id="plot-history"')


def test_the_trial_table_lists_every_trial(single_html: str) -> None:
    table = section(single_html, "trials")
    rows = re.findall(r"<tr[ >].*?</tr>", table.split("<tbody>")[1], re.S)
    assert len(rows) == 14
    text = [visible_text(r) for r in rows]
    assert "Diverged" in text[10] and "Failed" in text[10]
    assert "Pruned" in text[8] and "225" in text[8]
    assert "0.975" in text[6] and "best" in text[6] and "lr=0.48" in text[6]
    assert "repeat (seed 101)" in text[12]
    assert "CUDA out of memory" in text[11]


def test_user_provided_text_is_escaped(single_html: str) -> None:
    body = single_html.split("</head>", 1)[1]
    # Escaped where it is HTML, and JSON-escaped (no closing tag) inside plotly's data.
    assert "<script>console.error('injected')" not in body
    assert "<img src=x" not in body
    assert html.escape(INJECTED) in body
    assert CHOICE not in body  # plotly's JSON writes it as tanh<\/script>
    assert html.escape(CHOICE) in body  # the trial table


def test_multi_objective_shows_the_pareto_front(multi_html: str) -> None:
    summary = visible_text(section(multi_html, "summary"))
    assert "maximize val_accuracy; minimize latency_ms" in summary
    assert "Pareto front 6 trials: latency-0, latency-1" in summary
    assert "Pruner none (default)" in summary
    assert "saved by pruning none (no trial was pruned)" in summary
    history = visible_text(section(multi_html, "plot-history"))
    assert "one history per objective" in history
    assert section(multi_html, "plot-history").count("plotly-graph-div") == 2
    assert "first objective, val_accuracy" in visible_text(section(multi_html, "plot-slice"))
    table = section(multi_html, "trials")
    assert table.count('class="pareto"') == 6
    assert "<th>latency_ms</th>" in table


def test_a_young_study_gets_notes_instead_of_plots() -> None:
    page = report.render(lonely_study())
    states = plot_sections(page)
    assert states["history"] == "plot" and states["curves"] == "plot"
    for key in ("parallel", "importance", "slice", "contour"):
        assert states[key] == "note"
        assert "Needs at least 2 completed trials; this Study has 1" in section(page, f"plot-{key}")
    assert "boundary-warning" not in page and 'id="repeats"' not in page


def test_without_trials_there_is_no_plotly_at_all() -> None:
    result = StudyResult.from_k8s(
        {"metadata": {"name": "new", "namespace": "x"}, "spec": single_study().spec}, []
    )
    page = report.render(result)
    assert set(plot_sections(page).values()) == {"note"}
    assert "<script" not in page
    assert "No trial has completed yet." in page


def test_write_saves_the_page(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    report.write(lonely_study(), out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# -- in a browser --------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not browser.available(),
    reason=f"{browser.CHROMIUM} is missing (hack/system-deps.sh installs Debian's chromium)",
)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@needs_chromium
@pytest.mark.parametrize(
    ("make", "plots"), [(single_study, SINGLE_PLOTS), (multi_study, MULTI_PLOTS)]
)
def test_the_report_draws_every_plot_in_chromium(
    make: Any, plots: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    report.write(make(), path)
    page = browser.open_page(path)

    assert page.page_errors == []
    assert page.console_errors == []
    assert page.network_requests == []
    assert [s.key for s in page.sections] == plots
    for s in page.sections:
        assert s.rendered, f"{s.key}: {s.drawn} of {s.graphs} graphs drawn: {s.text!r}"
    assert page.title.startswith("kubetune report: team-")

    shot = page.screenshot(tmp_path / "report.png")
    data = shot.read_bytes()
    width, height = png_size(data)
    # A full page of plots: wide as the viewport, several screens tall, and not blank.
    assert width == browser.VIEWPORT["width"] and height > 3000
    assert len(data) > 100_000


@needs_chromium
def test_notes_instead_of_plots_still_load_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    report.write(lonely_study(), path)
    page = browser.open_page(path)
    assert page.page_errors == [] and page.console_errors == [] and page.network_requests == []
    drawn = {s.key for s in page.sections if s.rendered}
    assert drawn == {"history", "curves"}
