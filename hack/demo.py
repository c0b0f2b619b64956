"""`make demo`: the digits Study end to end on the local cluster, then a report.

Starts the local cluster (unless it is running), installs the CRDs, starts the
operator, applies examples/digits-study.yaml, shows progress, prints the best
trial and a table of all trials, writes the HTML report (reports/digits-mlp.html),
and stops what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from localcluster import cluster
from localcluster.state import Layout, repo_root

EXAMPLE = repo_root() / "examples" / "digits-study.yaml"
NAMESPACE = "kubetune-demo"
TIMEOUT = 30 * 60


def kubectl(*args: str) -> None:
    subprocess.run(
        [str(cluster.binaries() / "kubectl"), *args],
        check=True,
        env={**os.environ, "KUBECONFIG": str(Layout().kubeconfig)},
    )


def table(trials: list[dict[str, Any]]) -> str:
    rows = [("TRIAL", "PHASE", "VAL_ACCURACY", "PARAMS")]
    for t in sorted(trials, key=lambda t: t["spec"]["number"]):
        st = t.get("status") or {}
        value = st.get("value")
        params = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(t["spec"]["params"].items()))
        rows.append(
            (
                t["metadata"]["name"],
                st.get("phase", "Pending") + (f" ({st['reason']})" if st.get("reason") else ""),
                f"{value:.4f}" if isinstance(value, float) else "-",
                params,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows
    )


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> int:
    t0 = time.monotonic()
    layout = Layout()
    started_cluster = not cluster.is_healthy(layout)
    operator: subprocess.Popen[bytes] | None = None
    try:
        info = cluster.up(layout=layout)
        kubectl("apply", "--server-side", "-f", str(repo_root() / "crds"))
        kubectl(
            "wait",
            "--for=condition=Established",
            "crd/studies.kubetune.dev",
            "crd/trials.kubetune.dev",
        )
        log = (layout.logs / "operator.log").open("ab")
        operator = subprocess.Popen(
            [sys.executable, "-m", "kubetune"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "KUBECONFIG": str(layout.kubeconfig),
                "KUBETUNE_PROMETHEUS_URL": info.prometheus_url,
            },
        )
        print(f"demo: operator started (log: {layout.logs / 'operator.log'})", flush=True)
        api = config.new_client_from_config(str(layout.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        try:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
        except ApiException as e:
            if e.status != 409:
                raise
        study = yaml.safe_load(EXAMPLE.read_text())
        name = study["metadata"]["name"]
        try:
            custom.delete_namespaced_custom_object(
                "kubetune.dev", "v1alpha1", NAMESPACE, "studies", name
            )
            while True:  # a previous demo's Study: wait until it is gone
                custom.get_namespaced_custom_object(
                    "kubetune.dev", "v1alpha1", NAMESPACE, "studies", name
                )
                time.sleep(0.5)
        except ApiException as e:
            if e.status != 404:
                raise
        kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        print(f"demo: applied {EXAMPLE.relative_to(repo_root())} in namespace {NAMESPACE}")
        last = ""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            st = (
                custom.get_namespaced_custom_object(
                    "kubetune.dev", "v1alpha1", NAMESPACE, "studies", name
                ).get("status")
                or {}
            )
            best = (st.get("bestTrial") or {}).get("value")
            line = (
                f"phase={st.get('phase', 'Pending')} trials={st.get('progress', '-')} "
                f"running={(st.get('trials') or {}).get('running', 0)} "
                f"best={best if best is None else round(best, 4)}"
            )
            if line != last:
                print(f"demo: [{time.monotonic() - t0:5.0f}s] {line}", flush=True)
                last = line
            if st.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        trials = custom.list_namespaced_custom_object(
            "kubetune.dev",
            "v1alpha1",
            NAMESPACE,
            "trials",
            label_selector=f"kubetune.dev/study={name}",
        )["items"]
        print()
        print(table(trials))
        print()
        best_trial = st.get("bestTrial") or {}
        if best_trial:
            print(f"best trial: {best_trial['name']}  val_accuracy={best_trial['value']:.4f}")
            print(
                "  params: "
                + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best_trial["params"].items()))
            )
        print(f"study {name}: {st.get('phase')} in {time.monotonic() - t0:.0f}s")
        if st.get("phase") != "Succeeded":
            return 1
        # The same as `kubetune report digits-mlp -n kubetune-demo -o reports/digits-mlp.html`.
        report = repo_root() / "reports" / f"{name}.html"
        report.parent.mkdir(exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kubetune.cli",
                "-n",
                NAMESPACE,
                "report",
                name,
                "-o",
                str(report),
            ],
            check=True,
            env={**os.environ, "KUBECONFIG": str(layout.kubeconfig)},
        )
        print(f"demo: open {report.relative_to(repo_root())} in a browser to see the search")
        return 0
    finally:
        if operator is not None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                operator.kill()
        if started_cluster and not os.environ.get("KUBETUNE_KEEP_CLUSTER"):
            cluster.down(layout)


if __name__ == "__main__":
    sys.exit(main())
