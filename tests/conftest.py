"""Fixtures shared by every test that talks to the local Kubernetes cluster.

`cluster` (session): the local cluster, started if it is not running and then
stopped at the end of the session; left alone if it was already running.
`namespace` (per test): a fresh namespace, deleted afterwards.
`wait_for`: poll a condition with a timeout; on timeout the failure says what
was seen last, which is what you need when a test fails on a slow machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from localcluster import cluster as localcluster
from localcluster.state import ClusterInfo, Layout

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_for(
    check: Callable[[], tuple[bool, T]], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Call `check` until it returns (True, value); returns the value.

    On timeout fails with the last value seen, so the failure explains itself.
    """
    deadline = time.monotonic() + timeout
    seen: Any = None
    while True:
        try:
            ok, seen = check()
        except ApiException as e:
            ok, seen = False, f"ApiException {e.status}: {e.reason}"
        if ok:
            return seen  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}; last seen: {seen}"
            )
        time.sleep(interval)


@dataclass
class Cluster:
    layout: Layout
    info: ClusterInfo
    api: client.ApiClient

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def prometheus_url(self) -> str:
        return self.info.prometheus_url

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kubectl = localcluster.binaries() / "kubectl"
        return subprocess.run(
            [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def get(self, path: str) -> requests.Response:
        """GET an API server path as the cluster admin (for raw endpoints like /openapi/v2)."""
        pki = self.layout.pki
        return requests.get(
            f"{self.info.apiserver_url}{path}",
            cert=(str(pki / "admin.crt"), str(pki / "admin.key")),
            verify=str(pki / "ca.crt"),
            timeout=10,
        )

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        return list(r.json()["data"]["result"])


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    layout = Layout()
    started_here = not localcluster.is_healthy(layout)
    if started_here:
        localcluster.up(layout=layout)
    info = ClusterInfo.load(layout.cluster_json)
    api = config.new_client_from_config(str(layout.kubeconfig))
    try:
        yield Cluster(layout=layout, info=info, api=api)
    finally:
        api.close()
        if started_here and not os.environ.get("KUBETUNE_KEEP_CLUSTER"):
            localcluster.down(layout)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount ready; deleted afterwards."""
    name = f"t-{_slug(request.node.name)}-{secrets.token_hex(3)}"
    labels = getattr(request, "param", None) or {}
    cluster.core.create_namespace({"metadata": {"name": name, "labels": labels}})
    core = cluster.core

    def default_sa() -> tuple[bool, str]:
        sas = core.list_namespaced_service_account(name).items
        return any(sa.metadata.name == "default" for sa in sas), "no default ServiceAccount yet"

    wait_for(default_sa, 30, f"the default ServiceAccount in {name}")
    yield name
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)


@contextlib.contextmanager
def running_addon(cluster: Cluster, name: str) -> Iterator[None]:
    """A cluster add-on (kueue, jobset) started for a test module, and afterwards stopped
    with its webhooks unregistered, so other tests never meet them."""
    try:
        localcluster.addons_up([name], layout=cluster.layout)
    except localcluster.ClusterError as e:
        pytest.fail(f"{name} did not start: {e}")
    try:
        yield
    finally:
        localcluster.addons_down([name], layout=cluster.layout)


@pytest.fixture
def waiter() -> Callable[..., Any]:
    return wait_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Any test that uses the cluster fixture (directly or not) is a cluster test.
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
