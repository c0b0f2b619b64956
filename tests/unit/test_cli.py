"""The `kubetune` command's output and error messages, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubetune import cli
from kubetune.client import Client
from kubetune.results import StudyResult


def study(name: str, **status: Any) -> StudyResult:
    obj = {
        "metadata": {
            "name": name,
            "namespace": "team",
            "creationTimestamp": "2026-12-05T00:00:00Z",
        },
        "spec": {
            "objective": {"metric": "acc", "direction": "maximize"},
            "budget": {"maxTrials": 8},
        },
        "status": status,
    }
    return StudyResult.from_k8s(obj, [])


def test_get_shows_progress_best_and_what_failed() -> None:
    rows = cli.study_rows(
        [
            study(
                "digits",
                phase="Running",
                progress="3/8",
                trials={"running": 2, "waiting": 1},
                bestTrial={"name": "digits-1", "value": 0.9712345},
            ),
            study(
                "broken",
                phase="Failed",
                conditions=[{"type": "Invalid", "status": "True", "message": "bad template"}],
            ),
        ],
        wide=True,
        all_namespaces=True,
    ).splitlines()
    assert rows[0].split() == [
        "NAMESPACE", "NAME", "PHASE", "TRIALS", "RUNNING", "WAITING", "BEST", "BEST-TRIAL",
        "AGE", "SAMPLER", "FAILED", "GPU-HOURS", "MESSAGE",
    ]  # fmt: skip
    assert rows[1].split()[:8] == [
        "team",
        "digits",
        "Running",
        "3/8",
        "2",
        "1",
        "0.971235",
        "digits-1",
    ]
    assert rows[2].split()[:8] == ["team", "broken", "Failed", "0/8", "0", "0", "-", "-"]
    assert rows[2].endswith("bad template")


def test_a_cluster_without_the_crds_is_told_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kt = Client(namespace="team", api=k8s.ApiClient())
    not_found = ApiException(status=404, reason="Not Found")
    monkeypatch.setattr(kt, "_crds_installed", lambda: False)
    assert "kubetune is not installed in this cluster" in str(kt._explain("study 'x'", not_found))
    monkeypatch.setattr(kt, "_crds_installed", lambda: True)
    assert str(kt._explain("study 'x'", not_found)) == "study 'x' not found in namespace 'team'"


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "team", "--context", "lab", "get"],
        ["get", "-n", "team", "--context", "lab"],  # kubectl's way: `kubectl tune get -n team`
        ["--context", "lab", "get", "--namespace", "team"],
    ],
)
def test_cluster_flags_are_taken_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.parser().parse_args(argv)
    assert (args.namespace, args.context) == ("team", "lab")
