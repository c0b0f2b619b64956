"""The CRDs teach the API (`kubectl explain`) and agree with the operator's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.spec import StudySpec

CRDS = Path(__file__).resolve().parents[2] / "crds"


def schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"kubetune.dev_{name}.yaml").read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def undescribed(node: dict[str, Any], path: str) -> list[str]:
    missing = []
    for key, child in (node.get("properties") or {}).items():
        where = f"{path}.{key}"
        if key != "metadata" and not isinstance(child.get("description"), str):
            missing.append(where)
        missing += undescribed(child, where)
    if isinstance(node.get("items"), dict):
        missing += undescribed(node["items"], f"{path}[]")
    return missing


@pytest.mark.parametrize("name", ["studies", "trials"])
def test_every_field_is_described(name: str) -> None:
    assert undescribed(schema(name), name) == []


def test_study_spec_fields_match_the_parser() -> None:
    crd_fields = set(schema("studies")["properties"]["spec"]["properties"])
    model_fields = {f.alias or k for k, f in StudySpec.model_fields.items()}
    assert crd_fields == model_fields
