"""The chart's Grafana dashboard: well formed, and asking only for series that exist.

tests/e2e/test_helm.py runs every query against a real Prometheus; these checks catch,
without a cluster, what would make a panel silently empty or misplaced.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from kubetune import metrics
from kubetune.adapters import prom
from tests import grafana

DASHBOARD = grafana.load()
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana itself defines (the ones a query here may use).
BUILTINS = {"__rate_interval", "__interval", "__range"}
# The labels of a trial's series that both the local cluster's scrape config and the
# chart's trialPodMonitor give: the namespace and the pod's kubetune.dev/* labels, plus
# the SDK's own `metric`. (job, instance, container... differ between the two.)
TRIAL_SERIES_LABELS = {"namespace", prom.STUDY_LABEL, prom.TRIAL_LABEL, "metric"}
SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}


def operator_series() -> dict[str, set[str]]:
    """Each operator metric family's name -> the series names Prometheus stores for it."""
    out: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                out[family.name] = {family.name + s for s in SUFFIXES[family.type]}
    return out


def series_names(expr: str) -> set[str]:
    # kubetune_dev_* are label names (the pods' kubetune.dev/* labels), not series.
    return {n for n in re.findall(r"\bkubetune_\w+", expr) if not n.startswith("kubetune_dev_")}


def labels_used(expr: str) -> set[str]:
    """Label names in matchers and in by/without clauses."""
    matchers = {
        name
        for braces in re.findall(r"\{([^}]*)\}", expr)
        for name in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", braces)
    }
    grouped = {
        name.strip()
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for name in clause.split(",")
        if name.strip()
    }
    return matchers | grouped


def test_every_panel_has_queries_with_expressions() -> None:
    for panel in grafana.panels(DASHBOARD):
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no queries"
        ref_ids = [t["refId"] for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), f"panel {panel['title']!r}: refIds {ref_ids}"
        for t in targets:
            assert t.get("expr", "").strip(), f"panel {panel['title']!r} {t['refId']}: no expr"


def test_every_query_uses_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in grafana.panels(DASHBOARD):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == DATASOURCE, (panel["title"], t["refId"])
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DATASOURCE, v["name"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    every = list(DASHBOARD["panels"]) + [
        p for row in DASHBOARD["panels"] for p in row.get("panels", [])
    ]
    ids = [p["id"] for p in every]
    assert len(set(ids)) == len(ids), ids
    taken: dict[tuple[int, int], str] = {}
    for p in every:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (p["title"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{p['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = p["title"]


def test_namespace_and_study_variables_list_the_trial_series_labels() -> None:
    variables = {v.name: v for v in grafana.query_variables(DASHBOARD)}
    assert variables["namespace"].label == "namespace"
    assert variables["study"].label == prom.STUDY_LABEL
    assert variables["study"].selector == f'{prom.VALUE}{{namespace="$namespace"}}'
    for v in variables.values():
        assert v.selector is not None and v.selector.startswith(prom.VALUE), v


def test_queries_use_only_defined_variables() -> None:
    defined = grafana.variable_names(DASHBOARD) | BUILTINS
    texts = [t.expr for t in grafana.targets(DASHBOARD)]
    texts += [v.selector or "" for v in grafana.query_variables(DASHBOARD)]
    for text in texts:
        assert grafana.used_variables(text) <= defined, text
    values = {name: "x" for name in defined}
    assert all("$" not in grafana.substitute(text, values) for text in texts)


def test_queries_name_only_series_the_operator_and_the_trial_sdk_export() -> None:
    families = operator_series()
    known = set().union(*families.values()) | {prom.VALUE, prom.STEP}
    used: set[str] = set()
    for t in grafana.targets(DASHBOARD):
        names = series_names(t.expr)
        assert names, f"{t.panel} {t.ref_id}: no kubetune series in {t.expr!r}"
        assert names <= known, f"{t.panel} {t.ref_id}: unknown {names - known}"
        used |= names
    # ...and every metric the operator exports has a panel.
    unshown = [family for family, names in families.items() if not names & used]
    assert unshown == []
    assert {prom.VALUE, prom.STEP} <= used


def test_trial_queries_use_labels_both_scrape_configs_give() -> None:
    trial_targets = [t for t in grafana.targets(DASHBOARD) if prom.VALUE in t.expr]
    assert trial_targets
    for t in trial_targets:
        assert labels_used(t.expr) <= TRIAL_SERIES_LABELS, (t.panel, t.expr)
        assert 'namespace="$namespace"' in t.expr and f'{prom.STUDY_LABEL}="$study"' in t.expr
    podmonitor = (grafana.DASHBOARD.parent / "templates" / "metrics.yaml").read_text()
    assert "regex: __meta_kubernetes_pod_label_(kubetune_dev_.+)" in podmonitor


def legend_labels(target: dict[str, Any]) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))


def test_legends_name_labels_the_query_keeps() -> None:
    for panel in grafana.panels(DASHBOARD):
        for t in panel["targets"]:
            kept = {
                name.strip()
                for clause in re.findall(r"\bby\s*\(([^)]*)\)", t["expr"])
                for name in clause.split(",")
            }
            assert legend_labels(t) <= kept, (panel["title"], t["refId"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('x{ns="$namespace"}', 'x{ns="team-a"}'),
        ('x{ns="${namespace}"}', 'x{ns="team-a"}'),
        ('x{ns=~"${namespace:regex}"}', 'x{ns=~"team-a"}'),
        ('x{ns="[[namespace]]"}', 'x{ns="team-a"}'),
        ("rate(x[$__rate_interval])", "rate(x[1m])"),
    ],
)
def test_substitute_fills_in_every_variable_syntax(text: str, expected: str) -> None:
    assert grafana.substitute(text, {"namespace": "team-a", "__rate_interval": "1m"}) == expected


def test_substitute_refuses_a_variable_it_has_no_value_for() -> None:
    with pytest.raises(KeyError, match="study"):
        grafana.substitute('x{s="$study"}', {})
