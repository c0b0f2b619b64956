"""Read the chart's Grafana dashboard: its panels' PromQL, with template variables filled in.

Grafana replaces `$name`, `${name}` (also `${name:format}`) and the deprecated
`[[name]]` in a query before sending it to Prometheus; `substitute` does the same
with values a test chooses, so the queries can run against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "kubetune" / "dashboards"
DASHBOARD_FILE = DASHBOARD / "kubetune.json"

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")
# label_values(<selector>, <label>): how a Prometheus query variable lists its values.
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str
    instant: bool  # Grafana evaluates it once, at the end of the range (else over the range)


@dataclass(frozen=True)
class Variable:
    name: str
    selector: str | None  # the series whose label values it offers (None: every series)
    label: str


def load(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves left out."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(dashboard: Mapping[str, Any]) -> list[Target]:
    return [
        Target(
            panel=p.get("title", ""),
            ref_id=t.get("refId", ""),
            expr=t.get("expr", ""),
            instant=bool(t.get("instant")) and not t.get("range"),
        )
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]


def query_variables(dashboard: Mapping[str, Any]) -> list[Variable]:
    """The dashboard's Prometheus query variables (label_values(...) queries)."""
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = _LABEL_VALUES.match(query)
        if m is None:
            raise ValueError(f"variable {v['name']}: not a label_values() query: {query!r}")
        out.append(Variable(v["name"], m.group(1), m.group(2)))
    return out


def variable_names(dashboard: Mapping[str, Any]) -> set[str]:
    return {v["name"] for v in dashboard.get("templating", {}).get("list", [])}


def used_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """`text` with every variable replaced; a variable without a value is an error."""

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        if name not in values:
            raise KeyError(f"no value for ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(one, text)
