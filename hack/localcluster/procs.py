"""Start, identify and stop the local cluster's processes by PID.

A pidfile records the PID *and* the process start time from /proc, so `down`
never signals an unrelated process that happens to have reused the PID.
Each component runs in its own session (process group) so it outlives the
`make` that started it and can be signalled as a group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; nothing to stop
        return None
    return int(fields[19])


def start(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    pidfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    record = {"name": name, "pid": proc.pid, "start_time": _start_time(proc.pid), "argv": argv[0]}
    pidfile.write_text(json.dumps(record) + "\n")
    return proc.pid


def recorded_pid(pidfile: Path) -> int | None:
    """The PID in a pidfile if that very process is still alive, else None."""
    try:
        record = json.loads(pidfile.read_text())
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    started = _start_time(pid)
    if started is None or started != record.get("start_time"):
        return None
    return pid


def stop(pidfile: Path, *, grace: float = 10.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL after `grace` seconds.

    Returns True if a live process was found. The pidfile is removed either way.
    """
    pid = recorded_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if recorded_pid(pidfile) is None:
            break
        time.sleep(0.05)
    else:
        _signal_group(pid, signal.SIGKILL)
        while recorded_pid(pidfile) is not None:
            time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        # Not a group leader we own (should not happen): fall back to the process.
        os.kill(pid, sig)
