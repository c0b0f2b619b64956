"""The Helm chart: lint, valid manifests, an in-cluster operator with exactly the chart's RBAC."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import ROOT, Studies, digits_study

CHART = ROOT / "charts" / "kubetune"


@pytest.fixture(scope="session")
def helm() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True, check=True
    )
    return str(Path(out.stdout.strip().splitlines()[-1]) / "helm")


def run(cluster: Cluster, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, env=env)


def test_chart_crds_are_the_repository_crds() -> None:
    for crd in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text(), (
            f"charts/kubetune/crds/{crd.name} is stale: cp crds/*.yaml charts/kubetune/crds/"
        )


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={default,kube-public}"],
        ["--set", "replicaCount=2", "--set", "metrics.service.enabled=true"],
    ],
    ids=["cluster-wide", "namespaced", "ha-metrics"],
)
def test_chart_lints_and_renders_manifests_the_api_server_accepts(
    helm: str, cluster: Cluster, values: list[str]
) -> None:
    lint = run(cluster, helm, "lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    rendered = run(
        cluster,
        helm,
        "template",
        "t",
        str(CHART),
        "-n",
        "default",
        "--kube-version",
        "v1.36.2",
        *values,
    ).stdout
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "Role"} <= kinds
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    sc = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_helm_renders_offline_without_being_told_a_kubernetes_version(
    helm: str, cluster: Cluster
) -> None:
    """Helm built as its Makefile builds it knows its Kubernetes version (not v1.20)."""
    result = run(cluster, helm, "template", "t", str(CHART), check=False)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout


def test_unknown_values_are_refused(helm: str, cluster: Cluster) -> None:
    result = run(
        cluster,
        helm,
        "template",
        "t",
        str(CHART),
        "--kube-version",
        "v1.36.2",
        "--set",
        "replicas=2",
        check=False,
    )
    assert result.returncode != 0
    assert "additional properties 'replicas' not allowed" in result.stderr


class Release:
    def __init__(self, helm: str, cluster: Cluster, values: list[str]) -> None:
        suffix = secrets.token_hex(3)
        self.helm, self.cluster = helm, cluster
        self.system, self.team, self.other = (f"kt-{n}-{suffix}" for n in ("sys", "team", "other"))
        for ns in (self.system, self.team, self.other):
            cluster.core.create_namespace(
                {
                    "metadata": {
                        "name": ns,
                        "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                    }
                }
            )
        wait_for(
            lambda: (bool(cluster.core.list_namespaced_service_account(self.team).items), None),
            30,
            "default ServiceAccount",
        )
        self.name = "kt"
        run(
            cluster,
            helm,
            "install",
            self.name,
            str(CHART),
            "-n",
            self.system,
            "--set",
            f"watchNamespaces={{{self.team}}}",
            "--set",
            f"prometheus.url={cluster.prometheus_url}",
            # Keep finished trials' Jobs: the tests read them after the Study ends.
            "--set",
            "trialDefaults.jobRetentionSeconds=3600",
            *values,
        )
        self.sa = f"system:serviceaccount:{self.system}:kt-kubetune"

    def operator_pods(self) -> list[Any]:
        return list(cluster_pods(self.cluster, self.system))

    def close(self) -> None:
        run(self.cluster, self.helm, "uninstall", self.name, "-n", self.system, check=False)
        for ns in (self.system, self.team, self.other):
            with contextlib.suppress(ApiException):
                self.cluster.core.delete_namespace(ns)


def cluster_pods(cluster: Cluster, namespace: str) -> list[Any]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=kubetune"
    )
    return [p for p in pods.items if not p.metadata.deletion_timestamp]


@pytest.fixture
def release(
    helm: str, cluster: Cluster, crds: None, request: pytest.FixtureRequest
) -> Iterator[Release]:
    r = Release(helm, cluster, list(getattr(request, "param", [])))
    yield r
    r.close()


def can_i(cluster: Cluster, sa: str, *what: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *what, f"--as={sa}", check=False)
    return result.stdout.strip() == "yes"


def test_helm_install_runs_a_study_in_cluster_with_only_the_charts_rights(
    release: Release, cluster: Cluster
) -> None:
    def running() -> tuple[bool, Any]:
        pods = release.operator_pods()
        return bool(pods) and pods[0].status.phase == "Running", [p.status.phase for p in pods]

    wait_for(running, 60, "the operator pod")
    studies = Studies(cluster, release.team)
    assert (
        studies.apply(digits_study("helm", max_trials=4, parallelism=2, epochs=2)).returncode == 0
    )
    status = studies.wait_phase("helm", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", status
    # The trial pods met the namespace's `restricted` level through the operator's defaults.
    pod_sc = cluster.batch.read_namespaced_job(
        "helm-0", release.team
    ).spec.template.spec.security_context
    assert pod_sc.run_as_non_root is True and pod_sc.seccomp_profile.type == "RuntimeDefault"

    # The operator's own metrics, on its pod's address.
    (pod,) = release.operator_pods()
    text = requests.get(f"http://{pod.status.pod_ip}:8080/metrics", timeout=5).text
    assert 'kubetune_studies{phase="Succeeded"} 1.0' in text
    assert 'kubetune_trials{state="completed"} 4.0' in text
    assert "kubetune_trial_creation_latency_seconds_count 2.0" in text  # 4 trials, 2 slots
    assert 'kubetune_sampler_ask_seconds_count{sampler="tpe"} 4.0' in text
    assert "kubetune_reconcile_errors_total 0.0" in text

    # The operator runs under its ServiceAccount, with what the chart grants and nothing else.
    sa, team, other = release.sa, release.team, release.other
    assert can_i(cluster, sa, "create", "trials.kubetune.dev", "-n", team)
    assert can_i(cluster, sa, "patch", "studies.kubetune.dev", "--subresource=status", "-n", team)
    assert can_i(cluster, sa, "create", "jobs.batch", "-n", team)
    assert can_i(cluster, sa, "update", "leases.coordination.k8s.io", "-n", release.system)
    assert not can_i(cluster, sa, "get", "secrets", "-n", team)
    assert not can_i(cluster, sa, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, sa, "create", "pods", "-n", other)
    assert not can_i(cluster, sa, "create", "jobs.batch", "-n", other)
    assert not can_i(cluster, sa, "list", "studies.kubetune.dev", "-n", other)
    assert not can_i(cluster, sa, "patch", "studies.kubetune.dev", "-n", team), "spec is the user's"
    listing = cluster.kubectl("auth", "can-i", "--list", f"--as={sa}", "-n", other).stdout
    granted = {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}
    expected = {"customresourcedefinitions.apiextensions.k8s.io", "namespaces"}
    # Beyond the chart: what every authenticated identity may do (self-reviews, discovery).
    default = {
        "selfsubjectreviews.authentication.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
    }
    assert {g for g in granted if not g.startswith("[")} - default == expected, listing

    # A Study whose template asks for a privileged container fails clearly.
    bad = digits_study("privileged", max_trials=2, parallelism=1)
    bad["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]["securityContext"] = {
        "privileged": True
    }
    assert studies.apply(bad).returncode == 0
    failed = studies.wait_phase("privileged", "Failed", timeout=60)
    invalid = next(c for c in failed["conditions"] if c["type"] == "Invalid")
    assert "violates PodSecurity" in invalid["message"] and "privileged" in invalid["message"]
    assert studies.trials("privileged") == []


@pytest.mark.parametrize(
    "release",
    [
        [
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.leaseSeconds=6",
            # Probed often: a standby that stopped answering would be restarted in seconds.
            "--set",
            "livenessProbe.initialDelaySeconds=10",
            "--set",
            "livenessProbe.periodSeconds=1",
            "--set",
            "livenessProbe.failureThreshold=3",
        ]
    ],
    indirect=True,
)
def test_two_replicas_hand_over_without_duplicating_trials(
    release: Release, cluster: Cluster
) -> None:
    def both_running() -> tuple[bool, Any]:
        pods = release.operator_pods()
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods), len(pods)

    wait_for(both_running, 60, "two operator replicas")
    lease_name = "kt-kubetune"

    def leader() -> tuple[bool, Any]:
        holder = client_lease_holder(cluster, release.system, lease_name)
        return holder is not None, holder

    first = wait_for(leader, 30, "a leader")
    studies = Studies(cluster, release.team)
    studies.apply(digits_study("ha", max_trials=6, parallelism=2, epochs=5))
    wait_for(lambda: (len(studies.trials("ha")) >= 2, len(studies.trials("ha"))), 60, "trials")
    # The leader's pod vanishes at once, as on a node failure (a mere container crash
    # would restart it in the same pod, which takes its own Lease straight back).
    cluster.core.delete_namespaced_pod(first, release.system, grace_period_seconds=0)
    second = wait_for(
        lambda: (
            (h := client_lease_holder(cluster, release.system, lease_name)) not in (None, first),
            h,
        ),
        60,
        "the standby to take over",
    )
    assert second != first
    status = studies.wait_phase("ha", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded"
    names = [t["metadata"]["name"] for t in studies.trials("ha")]
    assert names == [f"ha-{i}" for i in range(6)], "no trial duplicated or lost"
    jobs = cluster.batch.list_namespaced_job(release.team, label_selector="kubetune.dev/study=ha")
    assert len(jobs.items) == 6
    # Both replicas answered their liveness probes all along, the waiting one included.
    pods = release.operator_pods()
    assert len(pods) == 2
    assert all(p.status.container_statuses[0].restart_count == 0 for p in pods), [
        (p.metadata.name, p.status.container_statuses[0].restart_count) for p in pods
    ]


def client_lease_holder(cluster: Cluster, namespace: str, name: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(name, namespace)
    except ApiException:
        return None
    return str(lease.spec.holder_identity) if lease.spec.holder_identity else None
