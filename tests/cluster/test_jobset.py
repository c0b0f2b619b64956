"""The JobSet add-on on the local cluster: the real JobSet controller (built from its Go
module) runs a JobSet's pods on the local node and reports it Completed.

Started for this module and stopped at its end (webhooks unregistered first), so other
tests never meet its webhooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster, running_addon, wait_for

GROUP, VERSION = "jobset.x-k8s.io", "v1alpha2"
PRINT_INDEX = "import os; print(os.environ['JOB_COMPLETION_INDEX'])"


@pytest.fixture(scope="module")
def jobset(cluster: Cluster) -> Iterator[None]:
    with running_addon(cluster, "jobset"):
        yield


def test_a_two_pod_jobset_runs_to_completed(cluster: Cluster, namespace: str, jobset: None) -> None:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobSet",
        "metadata": {"name": "pair"},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "parallelism": 2,
                            "completions": 2,
                            "backoffLimit": 0,
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [
                                        {
                                            "name": "w",
                                            "image": "python:3.11",
                                            "command": [
                                                "python3",
                                                "-c",
                                                PRINT_INDEX,
                                            ],
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ]
        },
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "jobsets", body)

    def completed() -> tuple[bool, Any]:
        obj = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "jobsets", "pair"
        )
        conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
        return conds.get("Completed") == "True" or conds.get("Failed") == "True", conds

    conds = wait_for(completed, 120, "the JobSet to finish")
    assert conds.get("Completed") == "True", conds
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="jobset.sigs.k8s.io/jobset-name=pair"
    ).items
    assert sorted(p.status.phase for p in pods) == ["Succeeded", "Succeeded"]
    # The JobSet's webhook gave its pods their identity labels.
    assert {p.metadata.labels.get("jobset.sigs.k8s.io/replicatedjob-name") for p in pods} == {
        "workers"
    }
