"""Launcher for one container process: private mount namespace, bind mounts, the pod's
hostname, exec.

Run as ``python -m localcluster.node.podexec SPEC.json``. It unshares the mount
namespace so that each pod sees its own files at fixed paths (above all the
default ``/dev/termination-log``, and volumes such as the service-account token),
then execs the container's command directly: no shell ever sees the arguments.
If mount namespaces are unavailable it says so on stderr and runs without them.

It runs once per container start, on the path from a pod bound to its process
running, so it imports only what is cheap: `ctypes.util.find_library` alone would
pull in subprocess, shutil and lzma (~40 ms a start on this machine) to find the libc
that `CDLL(None)` already reaches through the interpreter itself, and pathlib costs
another ~10 ms that `os.path` does not.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _libc() -> ctypes.CDLL:
    # The interpreter links libc; dlopen(NULL) resolves unshare and mount from it.
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _bind(libc: ctypes.CDLL, fd: int, is_dir: bool, target: str, read_only: bool) -> None:
    # The mount point must exist; create it the way a container runtime would.
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    source = f"/proc/self/fd/{fd}".encode()
    _check(libc.mount(source, target.encode(), None, MS_BIND | MS_REC, None), f"bind {target}")
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC
        _check(libc.mount(None, target.encode(), None, flags, None), "remount ro")


def _under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def _mount_all(libc: ctypes.CDLL, spec: dict[str, object]) -> None:
    mounts = spec["mounts"]
    keep = spec.get("keep") or []
    assert isinstance(mounts, list) and isinstance(keep, list)
    # Shallow targets first, as container runtimes do: /tmp before /tmp/result.
    mounts = sorted(mounts, key=lambda m: len(os.path.normpath(m["target"]).split(os.sep)))
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Mounts made from here on must not leak back into the host namespace.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    # Open every source, and every path the process itself needs (the project, its
    # Python), before mounting anything: a volume mounted over /tmp must not hide a
    # project that lives under /tmp. Binding from /proc/self/fd reaches them anyway.
    # (Opened after unshare: a bind source must be in the caller's mount namespace.)
    sources = [(os.open(m["source"], os.O_PATH), os.path.isdir(m["source"]), m) for m in mounts]
    kept = [(os.open(p, os.O_PATH), p) for p in keep if os.path.isdir(p)]
    for fd, is_dir, m in sources:
        _bind(libc, fd, is_dir, m["target"], bool(m.get("readOnly")))
    for fd, path in kept:
        if any(_under(path, m["target"]) for m in mounts):
            _bind(libc, fd, True, path, False)  # shadowed by a volume: show it again


def _set_hostname(libc: ctypes.CDLL, name: str) -> None:
    """The pod's own hostname (its UTS namespace), as every container of a pod sees it."""
    _check(libc.unshare(CLONE_NEWUTS), "unshare(CLONE_NEWUTS)")
    raw = name.encode()
    _check(libc.sethostname(raw, len(raw)), "sethostname")


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    libc = _libc()
    try:
        _mount_all(libc, spec)
    except OSError as e:
        print(f"localnode: WARNING: no private mounts for this container ({e})", file=sys.stderr)
    if spec.get("hostname"):
        try:
            _set_hostname(libc, spec["hostname"])
        except OSError as e:
            print(f"localnode: WARNING: the node's hostname, not the pod's ({e})", file=sys.stderr)
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 - exec without a shell is the point
    except OSError as e:
        print(f"localnode: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
