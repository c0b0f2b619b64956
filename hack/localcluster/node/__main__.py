"""python -m localcluster.node --nodes N --gpus-per-node G [--cpu 16 --memory 64Gi]"""

from __future__ import annotations

import argparse

from localcluster.node.agent import NodeSpec, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="localcluster.node", description=__doc__)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--cpu", default="16", help="cpu capacity per node (a quantity)")
    parser.add_argument("--memory", default="64Gi", help="memory capacity per node")
    parser.add_argument("--pods", type=int, default=110, help="max pods per node")
    args = parser.parse_args()
    nodes = [
        NodeSpec(f"localgpu-{i}", args.gpus_per_node, args.cpu, args.memory, args.pods)
        for i in range(args.nodes)
    ]
    run(nodes)


if __name__ == "__main__":
    main()
