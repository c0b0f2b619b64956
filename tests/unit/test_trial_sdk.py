"""The trial SDK: params in, reports out, the 4096-byte termination message."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from kubetune.trial import MAX_TERMINATION_MESSAGE, termination_message


def test_long_histories_are_trimmed_oldest_first() -> None:
    history = {"acc": [[s, 0.123456789 + s] for s in range(2000)]}
    doc = termination_message(1999, {"acc": 2000.0}, history)
    assert len(doc.encode()) <= MAX_TERMINATION_MESSAGE
    parsed = json.loads(doc)
    assert parsed["metrics"] == {"acc": 2000.0}
    steps = [s for s, _ in parsed["intermediate"]["acc"]]
    assert steps[-1] == 1999 and steps == sorted(steps)
    assert steps == list(range(steps[0], 2000)), "the newest values, none skipped"
    assert len(doc.encode()) > MAX_TERMINATION_MESSAGE - 40, "the space is used"


def test_several_metrics_share_the_message() -> None:
    history = {m: [[s, s / 3] for s in range(1000)] for m in ("acc", "loss", "lr")}
    doc = termination_message(999, {"acc": 1.0, "loss": 0.1, "lr": 0.01}, history)
    parsed = json.loads(doc)
    assert len(doc.encode()) <= MAX_TERMINATION_MESSAGE
    counts = [len(parsed["intermediate"][m]) for m in ("acc", "loss", "lr")]
    assert min(counts) > 10 and max(counts) - min(counts) <= 1, counts


def test_sdk_imports_nothing_heavy_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "termination-log"
    code = (
        "import sys\n"
        "from kubetune import trial\n"
        "assert trial.params() == {'lr': 0.1}\n"
        "trial.report(1, acc=0.5)\n"
        "trial.report(2, acc=float('nan'))\n"
        "heavy = {'torch', 'optuna', 'kopf', 'kubernetes', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {
        "KUBETUNE_PARAMS": '{"lr": 0.1}',
        "KUBETUNE_TRIAL_NAME": "s-0",
        "KUBETUNE_TERMINATION_LOG": str(out),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    doc = json.loads(out.read_text())
    assert doc["step"] == 2
    assert math.isnan(doc["metrics"]["acc"])
    assert doc["intermediate"]["acc"][0] == [1, 0.5]
