"""python -m localcluster {up,down,status,env}: the local development cluster."""

from __future__ import annotations

import argparse
import sys

from localcluster import addons, cluster
from localcluster.prometheus import DEFAULT_SCRAPE_INTERVAL
from localcluster.state import Layout


def main() -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (no-op if it is running)")
    up.add_argument("--nodes", type=int, default=1, help="local GPU nodes (default 1)")
    up.add_argument("--gpus-per-node", type=int, default=4, help="GPUs per node (default 4)")
    up.add_argument("--scrape-interval", default=DEFAULT_SCRAPE_INTERVAL)
    up.add_argument(
        "--kwok-nodes",
        type=int,
        default=0,
        help="simulated GPU nodes run by KWOK, for scale benchmarks (default 0: no KWOK)",
    )
    up.add_argument(
        "--kwok-gpus-per-node", type=int, default=8, help="GPUs per KWOK node (default 8)"
    )
    up.add_argument(
        "--addons",
        default="",
        help="add-ons to start too, comma-separated: kueue, jobset (built once from their "
        "Go modules; default: none)",
    )
    sub.add_parser("down", help="stop every process the cluster started")
    sub.add_parser("status", help="show each component's PID")
    sub.add_parser("binaries", help="build or find the Kubernetes binaries; print their dir")
    args = parser.parse_args()
    try:
        if args.command == "up":
            cluster.up(
                nodes=args.nodes,
                gpus_per_node=args.gpus_per_node,
                scrape_interval=args.scrape_interval,
                kwok_nodes=args.kwok_nodes,
                kwok_gpus_per_node=args.kwok_gpus_per_node,
                addon_names=addons.parse(args.addons),
            )
        elif args.command == "down":
            cluster.down()
        elif args.command == "binaries":
            print(cluster.binaries())
        else:
            layout = Layout()
            for name, pid in cluster.status(layout).items():
                print(f"{name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
            return 0 if cluster.is_healthy(layout) else 1
    except (cluster.ClusterError, ValueError) as e:
        print(f"localcluster: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
