"""The operator's worker processes (importance, GP proposals): they never outlive it, and
they yield the CPU to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kubetune.lanes import WORKER_NICENESS, Lanes

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_sigkilled_operator_leaves_no_worker_process_behind() -> None:
    operator = textwrap.dedent(
        """
        import os, time
        from kubetune.lanes import Lanes
        lanes = Lanes()
        for pool in (lanes.background, lanes.remote):
            print(pool.submit(os.getpid).result(), flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", operator],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )
    assert proc.stdout is not None
    workers = [int(proc.stdout.readline()) for _ in range(2)]
    assert all(alive(w) for w in workers)
    proc.send_signal(signal.SIGKILL)  # no chance to shut its pools down
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "orphaned workers"


def test_workers_run_at_a_lower_cpu_priority_than_the_operator() -> None:
    """A GP Study's fits must not take CPU from other Studies' trial turnover."""
    lanes = Lanes()
    try:
        for pool in (lanes.background, lanes.remote):
            worker = pool.submit(os.nice, 0).result(timeout=60)
            assert worker >= min(os.nice(0) + WORKER_NICENESS, 19)
    finally:
        lanes.shutdown()
