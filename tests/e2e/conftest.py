"""The operator, run as a real process against the local cluster.

Each test gets its own operator watching only its own namespace, so tests never
see each other's operators, and a test can kill and restart its operator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.conftest import Cluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "kubetune.dev", "v1alpha1"


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/studies.kubetune.dev", "crd/trials.kubetune.dev"
    )


class Operator:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log = cluster.layout.logs / f"operator-{namespace}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.python = sys.executable  # another environment's interpreter runs that install
        self.cwd: Path | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "KUBETUNE_PROMETHEUS_URL": self.cluster.prometheus_url,
            "KUBETUNE_STOP_GRACE_SECONDS": "5",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.python, "-m", "kubetune", "--namespace", self.namespace],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, crds: None, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    op = Operator(cluster, namespace)
    if request.node.get_closest_marker("keep_jobs"):
        # Finished trials' Jobs and pods are normally removed at once; these tests
        # inspect them after the Study has ended.
        op.env["KUBETUNE_JOB_RETENTION_SECONDS"] = "3600"
    op.start()
    yield op
    op.stop()


class Studies:
    """Apply Studies and read them and their Trials back."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def apply(self, study: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(study), check=False
        )

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "studies", name
        )
        return obj

    def trials(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "trials", label_selector=f"kubetune.dev/study={name}"
        )["items"]
        return sorted(items, key=lambda t: t["spec"]["number"])

    def wait_phase(self, name: str, *phases: str, timeout: float = 240) -> dict[str, Any]:
        def check() -> tuple[bool, Any]:
            try:
                st = self.get(name).get("status") or {}
            except ApiException as e:
                return False, e.reason
            return st.get("phase") in phases, st

        return dict(wait_for(check, timeout, f"study {name} to reach {phases}", interval=0.5))


@pytest.fixture
def studies(cluster: Cluster, namespace: str) -> Studies:
    return Studies(cluster, namespace)


def example_study(
    example: str, name: str, max_trials: int, parallelism: int, epochs: int
) -> dict[str, Any]:
    """A smaller, renamed copy of an examples/ Study (fewer trials and epochs)."""
    study: dict[str, Any] = yaml.safe_load((ROOT / "examples" / example).read_text())
    study["metadata"] = {"name": name}
    study["spec"]["budget"] = {"maxTrials": max_trials, "parallelism": parallelism}
    args = study["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]["args"]
    at = next(i for i, a in enumerate(args) if a.startswith("--epochs="))
    args[at] = f"--epochs={epochs}"
    return study


def digits_study(
    name: str, max_trials: int, parallelism: int, epochs: int = 3, seed: int = 7
) -> dict[str, Any]:
    """A small version of examples/digits-study.yaml."""
    study = example_study("digits-study.yaml", name, max_trials, parallelism, epochs)
    study["spec"]["sampler"]["seed"] = seed
    return study


def script_study(name: str, code: str, max_trials: int, parallelism: int) -> dict[str, Any]:
    """A Study whose trial runs a Python snippet (given the trial number as argv[1])."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Study",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "direction": "maximize"},
            "parameters": [{"name": "x", "float": {"low": 0.0, "high": 1.0}}],
            "sampler": {"name": "random", "seed": 1},
            "budget": {"maxTrials": max_trials, "parallelism": parallelism},
            "trialTemplate": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "trial",
                                "image": "python:3.11",
                                "command": [
                                    "python3",
                                    "-c",
                                    code,
                                    "${trial.number}",
                                    "${params.x}",
                                ],
                            }
                        ],
                    }
                },
            },
        },
    }
