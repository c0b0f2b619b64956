"""The Helm chart: lint, valid manifests, an in-cluster operator with exactly the chart's RBAC."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests import grafana
from tests.argocd import health
from tests.conftest import Cluster, wait_for
from tests.e2e.conftest import ROOT, Studies, digits_study, script_study

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
        [
            "--set",
            "grafana.dashboard.enabled=true",
            "--set",
            "grafana.dashboard.annotations.grafana_folder=kubetune",
        ],
    ],
    ids=["cluster-wide", "namespaced", "ha-metrics", "grafana-dashboard"],
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


def prometheus_api(cluster: Cluster, path: str, **params: Any) -> Any:
    """The `data` of a Prometheus HTTP API answer; fails with Prometheus's error."""
    r = requests.get(f"{cluster.prometheus_url}{path}", params=params, timeout=10)
    body = r.json()
    assert body.get("status") == "success", (path, params, body.get("error"))
    return body["data"]


def instant(cluster: Cluster, promql: str) -> list[dict[str, Any]]:
    return list(prometheus_api(cluster, "/api/v1/query", query=promql)["result"])


def finite_samples(series: dict[str, Any]) -> list[float]:
    samples = series.get("values") or [series["value"]]
    return [v for v in (float(s[1]) for s in samples) if math.isfinite(v)]


def check_dashboard(
    cluster: Cluster, release: Release, study: str, metric: str, since: float
) -> None:
    """Every query of the dashboard the release installed, run as Grafana runs it (with
    the template variables set to the Study) against the local Prometheus, shows data."""
    cm = cluster.core.read_namespaced_config_map("kt-kubetune-dashboard", release.system)
    assert cm.metadata.labels["grafana_dashboard"] == "1"  # the Grafana sidecar's default
    dashboard = json.loads(cm.data["kubetune.json"])
    assert dashboard == grafana.load()
    team = release.team
    trial_series = f'kubetune_trial_metric{{namespace="{team}", kubetune_dev_study="{study}"}}'
    wait_for(
        lambda: (bool(r := instant(cluster, f"last_over_time({trial_series}[10m])")), r),
        30,
        f"the trial series of {study} in Prometheus",
    )
    end = time.time()
    values = {
        "namespace": team,
        "study": study,
        "metric": metric,
        "__rate_interval": "1m",  # Grafana's: at least 4 scrape intervals
        "__interval": "2s",
        "__range": f"{math.ceil(end - since)}s",
    }
    # The variables' drop-downs offer this Study (Grafana's label_values: the label API).
    offered = {"namespace": team, "study": study, "metric": metric}
    for var in grafana.query_variables(dashboard):
        params: dict[str, Any] = {"start": since, "end": end}
        if var.selector:
            params["match[]"] = grafana.substitute(var.selector, values)
        got = prometheus_api(cluster, f"/api/v1/label/{var.label}/values", **params)
        assert offered[var.name] in got, (var, got)
    for target in grafana.targets(dashboard):
        expr = grafana.substitute(target.expr, values)
        if target.instant:
            data = prometheus_api(cluster, "/api/v1/query", query=expr, time=end)
        else:
            data = prometheus_api(
                cluster, "/api/v1/query_range", query=expr, start=since, end=end, step=2
            )
        result = data["result"]
        what = f"panel {target.panel!r} {target.ref_id}: {expr}"
        assert result, f"{what}: no data"
        assert any(finite_samples(s) for s in result), f"{what}: only NaN: {result}"
        trials = {s["metric"].get("kubetune_dev_trial") for s in result} - {None}
        assert all(t.startswith(f"{study}-") for t in trials), (what, trials)


# A trial that reports a curve for ~12 s: long enough for Prometheus to scrape it (it
# picks up new pods within seconds; the digits trials end in under a second).
CURVE_TRIAL = """
import sys, time
from kubetune import trial
for step in range(1, 7):
    trial.report(step, score=float(sys.argv[2]) * step)
    time.sleep(2)
"""

# The dashboard, and the operator's pod scraped by the local Prometheus (which honours
# this annotation and scrapes the container port named `metrics`).
GRAFANA_VALUES = [
    "--set",
    "grafana.dashboard.enabled=true",
    "--set-string",
    "podAnnotations.prometheus\\.io/scrape=true",
]


@pytest.mark.parametrize("release", [GRAFANA_VALUES], indirect=True, ids=["grafana"])
def test_helm_install_runs_a_study_in_cluster_with_only_the_charts_rights(
    release: Release, cluster: Cluster
) -> None:
    def running() -> tuple[bool, Any]:
        pods = release.operator_pods()
        return bool(pods) and pods[0].status.phase == "Running", [p.status.phase for p in pods]

    wait_for(running, 60, "the operator pod")
    # Scraped before the Study starts, so the dashboard's rates see all of its run.
    scraped = f'kubetune_reconcile_errors_total{{namespace="{release.system}"}}'
    wait_for(lambda: (bool(instant(cluster, scraped)), None), 30, "the operator to be scraped")
    started = time.time()
    studies = Studies(cluster, release.team)
    assert (
        studies.apply(digits_study("helm", max_trials=4, parallelism=2, epochs=2)).returncode == 0
    )

    def progressing() -> tuple[bool, Any]:
        """Argo CD's view of the Study while it runs (its health check on the live object)."""
        obj = studies.get("helm")
        phase = (obj.get("status") or {}).get("phase")
        assert phase not in ("Succeeded", "Failed"), "the Study ended before it was seen running"
        hs = health("Study", obj)
        return phase == "Running" and hs[0] == "Progressing", (phase, hs)

    _, (_, message) = wait_for(progressing, 60, "the running Study to be Progressing")
    assert "trials finished" in message
    status = studies.wait_phase("helm", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", status
    state, message = health("Study", studies.get("helm"))
    assert state == "Healthy", message
    assert f"best trial {status['bestTrial']['name']}: val_accuracy=" in message
    completed = next(t for t in studies.trials("helm") if t["status"]["phase"] == "Completed")
    state, message = health("Trial", completed)
    assert state == "Healthy" and message.startswith("completed with value "), message
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
    assert health("Study", studies.get("privileged")) == ("Degraded", invalid["message"])

    # The Grafana dashboard shows the operator and a Study's trial curves.
    curves = script_study("curves", CURVE_TRIAL, max_trials=2, parallelism=2)
    assert studies.apply(curves).returncode == 0
    assert studies.wait_phase("curves", "Succeeded", "Failed", timeout=120)["phase"] == "Succeeded"
    final = f'kubetune_studies{{namespace="{release.system}", phase="Succeeded"}} == 2'
    wait_for(lambda: (bool(instant(cluster, final)), None), 30, "the operator's last gauges")
    check_dashboard(cluster, release, "curves", "score", since=started)


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
