"""`up` is idempotent and `down` leaves no process behind (a second, private cluster)."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

from localcluster import cluster as localcluster
from localcluster.state import Layout
from tests.conftest import wait_for


def test_up_twice_is_harmless_and_down_leaves_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "state")
    try:
        info = localcluster.up(layout=layout)
        first = localcluster.status(layout)
        assert all(first.values()), first
        assert localcluster.up(layout=layout) == info
        assert localcluster.status(layout) == first, "a second `up` must not restart anything"

        # A pod running when the cluster goes down must not outlive it.
        api = config.new_client_from_config(str(layout.kubeconfig))
        core = client.CoreV1Api(api)
        wait_for(
            lambda: (bool(core.list_namespaced_service_account("default").items), None),
            30,
            "default ServiceAccount",
        )
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "lingering"},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "c", "image": "python", "command": ["sleep", "600"]}],
                },
            },
        )

        def running() -> tuple[bool, str]:
            pod = core.read_namespaced_pod("lingering", "default")
            statuses = pod.status.container_statuses or []
            ok = pod.status.phase == "Running" and statuses and statuses[0].container_id
            return bool(ok), str(pod.status.phase)

        wait_for(running, 60, "the pod to run")
        pod = core.read_namespaced_pod("lingering", "default")
        pod_pid = int(pod.status.container_statuses[0].container_id.split("://")[1])
        api.close()
    finally:
        localcluster.down(layout)

    pids = [*first.values(), pod_pid]
    alive = [p for p in pids if p and os.path.exists(f"/proc/{p}") and not _zombie(p)]
    assert alive == [], f"processes left running after down: {alive}"
    assert not any(localcluster.status(layout).values())


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"
