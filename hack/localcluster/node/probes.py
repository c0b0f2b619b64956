"""Container probes (liveness, readiness, startup), run as the kubelet runs them.

Without them a pod that a real kubelet would restart (a liveness endpoint that
never answers) runs happily here, and tests pass that fail on a real cluster.
Handlers: httpGet (a 2xx or 3xx answer passes), tcpSocket (a connection passes),
exec (exit status 0 passes; run like the container itself, through podexec, so it
sees the container's files and environment). gRPC probes are refused as a
configuration error rather than silently skipped.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("startupProbe", "livenessProbe", "readinessProbe")


class ProbeError(Exception):
    """A probe the local node cannot run (its spec is wrong or unsupported)."""


@dataclass(frozen=True)
class Probe:
    kind: str  # startupProbe | livenessProbe | readinessProbe
    spec: Mapping[str, Any]

    @property
    def initial_delay(self) -> float:
        return float(self.spec.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds") or 1)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)

    @property
    def title(self) -> str:
        return {"startupProbe": "Startup", "livenessProbe": "Liveness"}.get(self.kind, "Readiness")


def probes_of(container: Mapping[str, Any]) -> list[Probe]:
    out = []
    for kind in KINDS:
        spec = container.get(kind)
        if spec:
            if not any(h in spec for h in ("httpGet", "tcpSocket", "exec")):
                raise ProbeError(
                    f"container {container['name']}: {kind} has no handler the local node "
                    "runs (httpGet, tcpSocket or exec; grpc is not supported)"
                )
            out.append(Probe(kind, spec))
    return out


def port_of(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ProbeError(f"container {container['name']}: the probe's port {port!r} names no port")


def check(
    probe: Probe,
    container: Mapping[str, Any],
    pod_ip: str,
    run_exec: Callable[[list[str], float], int],
) -> tuple[bool, str]:
    """One probe: (passed, why it failed)."""
    spec = probe.spec
    try:
        if "exec" in spec:
            command = [str(a) for a in spec["exec"].get("command") or []]
            code = run_exec(command, probe.timeout)
            return code == 0, f"command {command} exited with {code}"
        if "tcpSocket" in spec:
            handler = spec["tcpSocket"]
            host = handler.get("host") or pod_ip
            port = port_of(container, handler["port"])
            with socket.create_connection((host, port), timeout=probe.timeout):
                return True, ""
        handler = spec["httpGet"]
        host = handler.get("host") or pod_ip
        port = port_of(container, handler["port"])
        conn: http.client.HTTPConnection
        if str(handler.get("scheme") or "HTTP").upper() == "HTTPS":
            # The kubelet does not verify a probe's certificate either.
            insecure = ssl._create_unverified_context()  # noqa: S323
            conn = http.client.HTTPSConnection(host, port, timeout=probe.timeout, context=insecure)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=probe.timeout)
        headers = {h["name"]: h["value"] for h in handler.get("httpHeaders") or []}
        headers.setdefault("User-Agent", "kube-probe/localnode")
        try:
            conn.request("GET", handler.get("path") or "/", headers=headers)
            status = conn.getresponse().status
        finally:
            conn.close()
        return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {probe.timeout:g}s"
    except (OSError, http.client.HTTPException) as e:
        return False, f"{type(e).__name__}: {e}"


class ProbeWorker(threading.Thread):
    """Probes one started container until it exits or its pod stops.

    `on_result(probe, outcome, message)` is told what the kubelet would act on:
    "unhealthy" (one failed probe: an Event), "kill" (startup or liveness failed
    `failureThreshold` times in a row: the container is killed), "started",
    "ready" and "unready" (the container's status changes).
    """

    def __init__(
        self,
        name: str,
        probes: list[Probe],
        alive: Callable[[], bool],
        probe_once: Callable[[Probe], tuple[bool, str]],
        on_result: Callable[[Probe, str, str], None],
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.probes = probes
        self.alive = alive
        self.probe_once = probe_once
        self.on_result = on_result
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def _wait_until(self, deadline: float) -> bool:
        """Sleep; False once the container is gone (the worker then ends)."""
        return not self.stopped.wait(max(0.0, deadline - time.monotonic())) and self.alive()

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a probe bug must not take the node down
            print(f"localnode: probe worker {self.name}: {type(e).__name__}: {e}", flush=True)

    def _probe(self, probe: Probe) -> tuple[bool, str]:
        passed, message = self.probe_once(probe)
        if not passed and self.alive():
            self.on_result(probe, "unhealthy", message)
        return passed, message

    def _run(self) -> None:
        startup = next((p for p in self.probes if p.kind == "startupProbe"), None)
        others = [p for p in self.probes if p.kind != "startupProbe"]
        if startup is not None and not self._until_started(startup):
            return
        # Each probe keeps its own schedule; one thread ticks them all.
        start = time.monotonic()
        due = {p.kind: start + p.initial_delay for p in others}
        streak = {p.kind: (0, 0) for p in others}  # (passes, failures) in a row
        ready: bool | None = None
        while others:
            probe = min(others, key=lambda p: due[p.kind])
            if not self._wait_until(due[probe.kind]):
                return
            due[probe.kind] += probe.period
            passed, message = self._probe(probe)
            passes, failures = streak[probe.kind]
            passes, failures = (passes + 1, 0) if passed else (0, failures + 1)
            streak[probe.kind] = (passes, failures)
            if probe.kind == "livenessProbe":
                if failures >= probe.failure_threshold:
                    self.on_result(probe, "kill", message)
                    return
            elif ready is not True and passes >= probe.success_threshold:
                ready = True
                self.on_result(probe, "ready", "")
            elif ready is not False and failures >= probe.failure_threshold:
                ready = False
                self.on_result(probe, "unready", message)

    def _until_started(self, probe: Probe) -> bool:
        deadline = time.monotonic() + probe.initial_delay
        failures = 0
        while self._wait_until(deadline):
            deadline += probe.period
            passed, message = self._probe(probe)
            if passed:
                self.on_result(probe, "started", "")
                return True
            failures += 1
            if failures >= probe.failure_threshold:
                self.on_result(probe, "kill", message)
                return False
        return False
