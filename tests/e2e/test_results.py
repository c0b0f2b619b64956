"""Seeing and using results on the local cluster: the demo Study through `kubetune` and
`kubectl tune`, its HTML report in a real browser, its export read back through
optuna-dashboard's HTTP API, and a plain Python function tuned with kubetune.client.tune.

One operator and one namespace for the module: the demo Study (examples/digits-study.yaml,
as `make demo` runs it) is run once and every test reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes.client.exceptions import ApiException

from kubetune.client import Client, Float, tune
from localcluster import cluster as localcluster
from tests.browser import open_page
from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import ROOT, Operator, Studies

BIN = Path(sys.executable).parent  # where pip put the kubetune and kubectl-tune scripts
DEMO = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
NAME = DEMO["metadata"]["name"]


@dataclass
class Demo:
    cluster: Cluster
    namespace: str
    studies: Studies
    operator: Operator

    def env(self) -> dict[str, str]:
        # kubectl finds plugins on the PATH: the virtualenv's bin holds kubectl-tune.
        kubectl_dir = str(localcluster.binaries())
        return {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "PATH": os.pathsep.join([str(BIN), kubectl_dir, os.environ.get("PATH", "")]),
        }

    def kubetune(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "kubetune"), "-n", self.namespace, *argv],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def trials(self) -> list[dict[str, Any]]:
        return self.studies.trials(NAME)


@pytest.fixture(scope="module")
def demo(cluster: Cluster, crds: None) -> Iterator[Demo]:
    namespace = f"t-results-{secrets.token_hex(3)}"
    cluster.core.create_namespace({"metadata": {"name": namespace}})
    wait_for(
        lambda: (bool(cluster.core.list_namespaced_service_account(namespace).items), None),
        30,
        "the default ServiceAccount",
    )
    operator = Operator(cluster, namespace)
    # Keep finished trials' pods: `kubetune logs` reads a finished trial's output.
    operator.env["KUBETUNE_JOB_RETENTION_SECONDS"] = "3600"
    operator.start()
    studies = Studies(cluster, namespace)
    try:
        assert studies.apply(DEMO).returncode == 0
        status = studies.wait_phase(NAME, "Succeeded", "Failed", timeout=600)
        assert status["phase"] == "Succeeded", status
        yield Demo(cluster, namespace, studies, operator)
    finally:
        operator.stop()
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(namespace)


def test_kubectl_tune_lists_studies_through_kubectls_plugin_mechanism(demo: Demo) -> None:
    kubectl = str(localcluster.binaries() / "kubectl")
    plugins = subprocess.run(
        [kubectl, "plugin", "list"], capture_output=True, text=True, env=demo.env(), check=False
    )
    assert str(BIN / "kubectl-tune") in plugins.stdout, plugins.stdout + plugins.stderr
    got = subprocess.run(
        [kubectl, "tune", "get", "-n", demo.namespace],
        capture_output=True,
        text=True,
        env=demo.env(),
        check=False,
    )
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "TRIALS"]
    status = demo.studies.get(NAME)["status"]
    cells = row.split()
    assert cells[:3] == [NAME, "Succeeded", status["progress"]]
    assert status["bestTrial"]["name"] in cells
    assert float(cells[cells.index(status["bestTrial"]["name"]) - 1]) == pytest.approx(
        status["bestTrial"]["value"], rel=1e-5
    )


def test_best_prints_the_best_parameters_ready_for_a_training_run(demo: Demo) -> None:
    best = demo.studies.get(NAME)["status"]["bestTrial"]
    doc = json.loads(demo.kubetune("best", NAME, "-o", "json").stdout)
    assert doc["trial"] == best["name"] and doc["params"] == best["params"]
    params = yaml.safe_load(demo.kubetune("best", NAME, "-o", "params").stdout)
    assert params == best["params"]


def test_watch_shows_progress_and_ends_with_the_studys_outcome(demo: Demo) -> None:
    watched = demo.kubetune("watch", NAME)
    best = demo.studies.get(NAME)["status"]["bestTrial"]
    assert watched.stdout.startswith(f"study {NAME} Succeeded: all 12 trials finished; ")
    assert f"; best {best['name']} = " in watched.stdout
    assert "12/12" in watched.stderr  # the progress bar: every trial finished


def test_clear_errors_for_a_missing_study_and_an_unreachable_cluster(
    demo: Demo, tmp_path: Path
) -> None:
    missing = demo.kubetune("best", "no-such-study", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"error: study 'no-such-study' not found in namespace '{demo.namespace}'"
    )
    config = yaml.safe_load(demo.cluster.kubeconfig.read_text())
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    down = demo.kubetune("--kubeconfig", str(tmp_path / "kubeconfig"), "get", check=False)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert down.stderr.startswith(f"error: cannot reach the cluster at https://127.0.0.1:{port}")


def test_logs_prints_a_finished_trials_output(demo: Demo) -> None:
    trial = demo.trials()[0]["metadata"]["name"]
    out = demo.kubetune("logs", trial).stdout
    assert "epoch 1: val_accuracy=" in out and "epoch 8: val_accuracy=" in out, out


def test_the_report_renders_every_plot_in_a_browser_with_no_errors(
    demo: Demo, tmp_path: Path
) -> None:
    html = tmp_path / "report.html"
    demo.kubetune("report", NAME, "-o", str(html))
    page = open_page(html)
    # Every plot a single-objective Study has (the Pareto front is for several objectives).
    expected = {"history", "curves", "parallel", "importance", "slice", "contour"}
    rendered = {s.key for s in page.sections if s.rendered}
    assert expected <= rendered, page.sections
    assert page.console_errors == [] and page.page_errors == [], page
    assert page.network_requests == []  # offline: nothing but the file itself
    text = html.read_text()
    for t in demo.trials():
        assert t["metadata"]["name"] in text  # the trial table lists every trial
    shot = tmp_path / "report.png"
    page.screenshot(shot)
    assert shot.stat().st_size > 50_000
    if os.environ.get("KUBETUNE_UPDATE_DOCS"):  # refresh the README's picture from a real run
        shutil.copy(shot, ROOT / "docs" / "report.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_export_shows_the_same_trials_and_best_in_optuna_dashboard(
    demo: Demo, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    demo.kubetune("export", NAME, "--storage", storage)
    port = free_port()
    dashboard = subprocess.Popen(
        [str(BIN / "optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def listing() -> tuple[bool, Any]:
            try:
                return True, requests.get(f"{base}/api/studies", timeout=5).json()
            except requests.ConnectionError as e:
                return False, str(e)

        summaries = wait_for(listing, 60, "optuna-dashboard to answer")["study_summaries"]
        (summary,) = summaries
        assert summary["study_name"] == f"{demo.namespace}/{NAME}"
        detail = requests.get(f"{base}/api/studies/{summary['study_id']}", timeout=10).json()
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)

    def attr(trial: dict[str, Any], key: str) -> str:
        return next(a["value"] for a in trial["user_attrs"] if a["key"] == key)

    shown = {attr(t, "kubetune_trial"): t for t in detail["trials"]}
    kubectl = {t["metadata"]["name"]: t["status"] for t in demo.trials()}
    assert shown.keys() == kubectl.keys()
    for name, status in kubectl.items():
        assert shown[name]["state"] == {"Completed": "Complete"}.get(
            status["phase"], status["phase"]
        )
        if status["phase"] == "Completed":
            assert shown[name]["values"] == [pytest.approx(status["value"])]
    (best,) = detail["best_trials"]
    assert attr(best, "kubetune_trial") == demo.studies.get(NAME)["status"]["bestTrial"]["name"]


def quadratic(x: float, y: float) -> float:
    """The function tune() ships to the cluster: smallest at x = 0.3, y = -1."""
    return (x - 0.3) ** 2 + (y + 1.0) ** 2


def test_tune_a_plain_python_function_on_the_cluster(demo: Demo) -> None:
    kt = Client(namespace=demo.namespace, kubeconfig_path=str(demo.cluster.kubeconfig))
    best = tune(
        quadratic,
        {"x": Float(-2.0, 2.0), "y": Float(-2.0, 2.0)},
        direction="minimize",
        max_trials=12,
        parallelism=4,
        sampler={"name": "tpe", "seed": 3},
        name="quadratic",
        client=kt,
        timeout=300,
        progress=True,  # the bar a notebook shows, while the Study runs
    )
    assert isinstance(best, dict) and best.keys() == {"x", "y"}
    study = kt.study("quadratic")
    result = study.refresh()
    assert result.phase == "Succeeded" and len(result.trials) == 12
    values = [t.value for t in result.trials]
    assert all(v is not None for v in values)
    # Each trial's value is what the function returns for the trial's parameters.
    for t in result.trials:
        assert t.value == pytest.approx(quadratic(**t.params))
    assert study.best_value == min(v for v in values if v is not None)
    # The function's source is owned by the Study and goes with it.
    cm = demo.cluster.core.read_namespaced_config_map("quadratic-function", demo.namespace)
    assert cm.metadata.owner_references[0].name == "quadratic"
