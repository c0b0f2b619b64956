"""python -m kubetune [--namespace NS ...]: run the operator (cluster-wide by default)."""

from __future__ import annotations

import argparse
import logging
import os

import kopf

import kubetune.handlers  # noqa: F401  (registers the handlers)


def main() -> None:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__)
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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # One INFO line per handler call is noise; our own log says what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces)


if __name__ == "__main__":
    main()
