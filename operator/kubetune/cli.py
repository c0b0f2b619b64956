"""The `kubetune` command (also `kubectl tune`, as the kubectl plugin `kubectl-tune`).

    kubetune get [STUDY] [-A] [-o wide|yaml|json]   Studies with progress and best
    kubetune watch STUDY                            a live progress bar until it ends
    kubetune best STUDY [-o yaml|json]              the best parameters, ready to train with
    kubetune report STUDY -o study.html             one self-contained HTML report
    kubetune export STUDY --storage URL [--follow]  into an Optuna storage (optuna-dashboard)
    kubetune logs TRIAL [-f] [-c CONTAINER]         a trial's container output

Cluster, context and namespace follow kubectl: $KUBECONFIG or --kubeconfig, --context,
-n/--namespace (else the context's namespace). Problems a user can fix (no cluster,
no CRDs, no such Study) are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from kubetune.client import Client, KubetuneError
from kubetune.results import StudyResult, format_value
from kubetune.timestamps import parse_time


def _age(created: str | None) -> str:
    start = parse_time(created)
    if start is None:
        return "-"
    seconds = int((datetime.now(UTC) - start).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _best_value(s: StudyResult) -> str:
    best = s.status.get("bestTrial") or {}
    if s.multi_objective:
        return f"front of {s.status.get('paretoFrontSize', len(s.pareto_front))}"
    return format_value(best.get("value"))


def study_rows(studies: list[StudyResult], wide: bool, all_namespaces: bool) -> str:
    head = ["NAME", "PHASE", "TRIALS", "RUNNING", "WAITING", "BEST", "BEST-TRIAL", "AGE"]
    if wide:
        head += ["SAMPLER", "FAILED", "GPU-HOURS", "MESSAGE"]
    if all_namespaces:
        head = ["NAMESPACE", *head]
    rows = [head]
    for s in studies:
        counts = s.status.get("trials") or {}
        used, most = s.progress
        row = [
            s.name,
            s.phase,
            str(s.status.get("progress") or f"{used}/{most if most is not None else '-'}"),
            str(counts.get("running", 0)),
            str(counts.get("waiting", 0)),
            _best_value(s),
            str((s.status.get("bestTrial") or {}).get("name") or "-"),
            _age(s.created),
        ]
        if wide:
            budget = s.status.get("budget") or {}
            row += [
                str((s.spec.get("sampler") or {}).get("name", "tpe")),
                str(counts.get("failed", 0)),
                format_value(budget.get("gpuHoursUsed")),
                s.message[:80] or "-",
            ]
        if all_namespaces:
            row = [s.namespace, *row]
        rows.append(row)
    return _table(rows)


def _dump(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=2, default=str)
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip()


# -- subcommands ------------------------------------------------------------------------------


def cmd_get(kt: Client, args: argparse.Namespace) -> int:
    if args.study:
        obj = kt.study_object(args.study)
        if args.output in ("yaml", "json"):
            print(_dump(obj, args.output))
            return 0
        print(study_rows([StudyResult.from_k8s(obj, [])], args.output == "wide", False))
        return 0
    studies = kt.studies(all_namespaces=args.all_namespaces)
    if args.output in ("yaml", "json"):
        print(
            _dump(
                [{"name": s.name, "namespace": s.namespace, "status": s.status} for s in studies],
                args.output,
            )
        )
        return 0
    if not studies:
        where = "any namespace" if args.all_namespaces else f"namespace {kt.namespace!r}"
        print(f"No studies found in {where}.", file=sys.stderr)
        return 0
    print(study_rows(studies, args.output == "wide", args.all_namespaces))
    return 0


def cmd_best(kt: Client, args: argparse.Namespace) -> int:
    result = kt.results(args.study)
    best = result.best
    if best is None:
        why = (
            "has several objectives: see its Pareto front (kubetune get -o yaml)"
            if result.multi_objective
            else "has no completed trial yet"
        )
        raise KubetuneError(f"study {args.study!r} {why}")
    if args.output == "params":
        print(_dump(best.params, "yaml"))
        return 0
    doc: dict[str, Any] = {
        "study": result.name,
        "trial": best.name,
        "number": best.number,
        "value": best.value,
        "params": best.params,
    }
    summary = result.repeat_summary
    if summary is not None:
        doc["repeats"] = {"mean": summary[0], "std": summary[1], "runs": summary[2]}
    print(_dump(doc, args.output))
    return 0


def cmd_watch(kt: Client, args: argparse.Namespace) -> int:
    study = kt.study(args.study)
    result = study.wait(timeout=args.timeout, progress=True, interval=args.interval)
    best = result.best
    print(
        f"study {result.name} {result.phase}"
        + (f": {result.message}" if result.message else "")
        + (f"; best {best.name} = {format_value(best.value)}" if best else "")
    )
    return 0 if result.phase == "Succeeded" else 1


def cmd_report(kt: Client, args: argparse.Namespace) -> int:
    try:
        from kubetune import report  # noqa: PLC0415 - plotly, only for this command
    except ImportError as e:
        raise KubetuneError(
            f"the report needs plotly: pip install 'kubetune[report]' ({e})"
        ) from None
    result = kt.results(args.study)
    out = args.output or f"{args.study}.html"
    report.write(result, out)
    print(f"wrote {out} ({len(result.trials)} trials, study {result.phase})")
    return 0


def cmd_export(kt: Client, args: argparse.Namespace) -> int:
    from kubetune import export  # noqa: PLC0415 - Optuna, only for this command

    result = kt.results(args.study)
    study = export.open_study(result, args.storage)
    changed = export.sync(result, study)
    print(
        f"exported {len(result.trials)} trials of {result.name} to {args.storage} "
        f"as study {study.study_name!r}",
        flush=True,
    )
    while args.follow and not result.finished:
        time.sleep(args.interval)
        result = kt.results(args.study)
        changed = export.sync(result, study)
        if changed:
            print(
                f"{datetime.now(UTC):%H:%M:%S} {changed} changes; study {result.phase}", flush=True
            )
    return 0


def cmd_logs(kt: Client, args: argparse.Namespace) -> int:
    trial = kt.trial_object(args.trial)  # a clear error when the Trial does not exist
    pods = kt.trial_pods(args.trial)
    if not pods:
        status = trial.get("status") or {}
        raise KubetuneError(
            f"trial {args.trial!r} ({status.get('phase', 'Pending')}) has no pod now: "
            + (
                "kubetune removes a finished trial's Job and pods once its result is recorded "
                "(keep them longer with the operator's KUBETUNE_JOB_RETENTION_SECONDS, the "
                "chart's trialDefaults.jobRetentionSeconds)"
                if status.get("phase") in ("Completed", "Pruned", "Failed")
                else "its pod has not been created yet"
            )
        )
    chosen = pods if args.all_pods else pods[:1]
    for pod in chosen:
        if len(chosen) > 1:
            print(f"==> {pod.metadata.name} <==", flush=True)
        for chunk in kt.logs(pod.metadata.name, args.container, args.follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    return 0


# -- the parser -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    prog = "kubectl tune" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "kubetune"
    # kubectl takes its global flags anywhere (`kubectl tune get -n team`): so do we. On a
    # subcommand they are SUPPRESSed when absent, so they never undo one given before it.
    cluster = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    cluster.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    cluster.add_argument("--context", help="the kubeconfig context to use")
    cluster.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    p = argparse.ArgumentParser(
        prog=prog, description="See and use kubetune Studies.", parents=[cluster]
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[cluster], **kwargs)

    get = command("get", aliases=["list"], help="Studies with their progress and best")
    get.add_argument("study", nargs="?")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=["wide", "yaml", "json"])
    get.set_defaults(run=cmd_get)

    watch = command("watch", help="a live progress bar and the best value until it ends")
    watch.add_argument("study")
    watch.add_argument("--timeout", type=float, help="give up after this many seconds")
    watch.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    watch.set_defaults(run=cmd_watch)

    best = command("best", help="the best parameters (YAML or JSON)")
    best.add_argument("study")
    best.add_argument(
        "-o",
        "--output",
        choices=["yaml", "json", "params"],
        default="yaml",
        help="params: only the parameters, as YAML",
    )
    best.set_defaults(run=cmd_best)

    rep = command("report", help="write a self-contained HTML report")
    rep.add_argument("study")
    rep.add_argument("-o", "--output", help="the HTML file (default: STUDY.html)")
    rep.set_defaults(run=cmd_report)

    exp = command("export", help="write the Study into an Optuna storage")
    exp.add_argument("study")
    exp.add_argument("--storage", required=True, help="an Optuna storage URL: sqlite:///study.db")
    exp.add_argument("--follow", action="store_true", help="keep it in step until the Study ends")
    exp.add_argument("--interval", type=float, default=2.0, help="seconds between updates")
    exp.set_defaults(run=cmd_export)

    logs = command("logs", help="a trial's container output")
    logs.add_argument("trial")
    logs.add_argument("-c", "--container")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--all-pods", action="store_true", help="every pod of a multi-pod trial")
    logs.set_defaults(run=cmd_logs)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        kt = Client(
            namespace=getattr(args, "namespace", None),
            context=getattr(args, "context", None),
            kubeconfig_path=getattr(args, "kubeconfig", None),
        )
        code: int = args.run(kt, args)
        return code
    except KubetuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
