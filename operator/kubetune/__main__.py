"""python -m kubetune [--namespace NS ...]: run the operator (cluster-wide by default).

Configuration comes from the environment (the Helm chart sets it):
KUBETUNE_PROMETHEUS_URL, KUBETUNE_NAMESPACES (comma-separated), KUBETUNE_LOG_LEVEL,
KUBETUNE_LEADER_ELECTION (true: hold a Lease before acting; with POD_NAMESPACE and
POD_NAME), KUBETUNE_OPERATOR_METRICS_PORT (serve the operator's metrics),
KUBETUNE_TRIAL_METRICS_PORT, KUBETUNE_STOP_GRACE_SECONDS, KUBETUNE_RESYNC_SECONDS,
KUBETUNE_RESTRICTED_TRIALS (false: leave trial pods' securityContext as templated),
KUBETUNE_JOB_RETENTION_SECONDS (how long a finished trial's Job and pod are kept once
its result is recorded; default 0), KUBETUNE_FAILED_JOB_RETENTION_SECONDS (the same for
failed trials, kept for their logs; default 3600), KUBETUNE_METRICS_POLL_SECONDS (how
often a running Study with a pruner reads Prometheus; default 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

import kopf
from prometheus_client import start_http_server

import kubetune.handlers  # noqa: F401  (registers the handlers)
from kubetune.adapters.kube import load_config
from kubetune.leader import LeaderElector, Liveness
from kubetune.memory import few_malloc_arenas


def main() -> None:
    few_malloc_arenas()  # see kubetune.memory: RSS that tracks data, not threads
    parser = argparse.ArgumentParser(
        prog="kubetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    namespaces = args.namespace or [
        ns for ns in os.environ.get("KUBETUNE_NAMESPACES", "").split(",") if ns
    ]
    level = "DEBUG" if args.verbose else os.environ.get("KUBETUNE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # One INFO line per handler call is noise; our own log says what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    port = int(os.environ.get("KUBETUNE_OPERATOR_METRICS_PORT", "0") or 0)
    if port:
        start_http_server(port, addr=os.environ.get("POD_IP", "0.0.0.0"))  # noqa: S104
    liveness = os.environ.get("KUBETUNE_LIVENESS_ENDPOINT") or None
    elector = None
    if os.environ.get("KUBETUNE_LEADER_ELECTION", "").lower() == "true":
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaderElector(
            load_config(),
            os.environ.get("POD_NAMESPACE", "default"),
            os.environ.get("KUBETUNE_LEASE_NAME", "kubetune-operator"),
            identity,
            lease_seconds=int(os.environ.get("KUBETUNE_LEASE_SECONDS", "15")),
        )
        standby = Liveness(liveness)
        try:
            elector.acquire()
        finally:
            standby.close()
        elector.keep()
    try:
        kopf.run(
            memo=kopf.Memo(namespaces=namespaces),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        if elector is not None:
            elector.release()


if __name__ == "__main__":
    main()
