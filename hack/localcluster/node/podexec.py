"""Launcher for one container process: private mount namespace, bind mounts, exec.

Run as ``python -m localcluster.node.podexec SPEC.json``. It unshares the mount
namespace so that each pod sees its own files at fixed paths (above all the
default ``/dev/termination-log``, and volumes such as the service-account token),
then execs the container's command directly: no shell ever sees the arguments.
If mount namespaces are unavailable it says so on stderr and runs without them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _bind(libc: ctypes.CDLL, source: str, target: str, read_only: bool) -> None:
    src = Path(source)
    dst = Path(target)
    # The mount point must exist; create it the way a container runtime would.
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    elif not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch()
    _check(libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), "bind")
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC
        _check(libc.mount(None, target.encode(), None, flags, None), "remount ro")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    libc = _libc()
    try:
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Mounts made from here on must not leak back into the host namespace.
        _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for m in spec["mounts"]:
            _bind(libc, m["source"], m["target"], bool(m.get("readOnly")))
    except OSError as e:
        print(f"localnode: WARNING: no private mounts for this container ({e})", file=sys.stderr)
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 - exec without a shell is the point
    except OSError as e:
        print(f"localnode: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
