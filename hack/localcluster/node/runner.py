"""Run one pod's containers as local processes and report status as a kubelet does."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from localcluster.node import envvars, hosts, volumes
from localcluster.node.probes import Probe, ProbeError, ProbeWorker, check, probes_of

PODEXEC = str(Path(__file__).with_name("podexec.py"))
REPO = Path(__file__).resolve().parents[3]
# The kubelet caps a termination message at 4096 bytes, and falls back to the last
# 80 lines / 2048 bytes of the log under FallbackToLogsOnError.
MAX_MESSAGE = 4096
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Host(Protocol):
    """What a runner needs from its node agent."""

    def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None: ...
    def token(self, pod: Mapping[str, Any], sa: str, audience: str | None, seconds: int) -> str: ...
    def patch_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> bool: ...
    def finished(self, uid: str) -> None: ...
    def base_env(self, pod: Mapping[str, Any]) -> dict[str, str]: ...
    def entrypoint(self, image: str) -> tuple[list[str], list[str]] | None: ...
    def event(self, pod: Mapping[str, Any], kind: str, reason: str, message: str) -> None: ...


@dataclass
class Run:
    """One run of a container: its process, and where its output lies in the log file.

    Every run appends to the container's one log file, so these offsets are what tell
    `kubectl logs` (the latest run) from `kubectl logs --previous` (the one before).
    """

    proc: subprocess.Popen[bytes]
    log_start: int
    log_end: int | None = None  # set when the next run starts; None: up to the end


@dataclass
class Container:
    spec: dict[str, Any]
    init: bool
    log: Path
    termination_log: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    message: str = ""
    restart_count: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)
    waiting: tuple[str, str] = ("ContainerCreating", "")
    probes: list[Probe] = field(default_factory=list)
    started_ok: bool = True  # its startup probe has passed (or it has none)
    probe_ready: bool = True  # its readiness probe passes (or it has none)
    prober: ProbeWorker | None = None
    runs: list[Run] = field(default_factory=list)  # the latest two, oldest first

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def ready(self) -> bool:
        return self.running and self.started_ok and self.probe_ready

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def terminated_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": "Completed" if self.exit_code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.message:
            state["message"] = self.message
        return state

    @property
    def container_id(self) -> str:
        return f"localnode://{self.proc.pid if self.proc else 0}"

    def status(self) -> dict[str, Any]:
        if self.running:
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.exit_code is not None:
            state = {"terminated": self.terminated_state()}
        else:
            reason, message = self.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        image = str(self.spec.get("image", ""))
        out: dict[str, Any] = {
            "name": self.name,
            "image": image,
            "imageID": f"localnode://{image}",
            "ready": self.ready,
            "started": self.running and self.started_ok,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            out["containerID"] = self.container_id
        return out


class ConfigError(Exception):
    """The container cannot be created yet (missing config, unsupported volume...)."""


class PodRunner(threading.Thread):
    def __init__(
        self,
        host: Host,
        pod: dict[str, Any],
        pod_ip: str,
        host_ip: str,
        gpus: list[int],
        sandbox: Path,
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.host = host
        self.pod = pod
        self.uid = str(meta["uid"])
        self.pod_ip = pod_ip
        self.host_ip = host_ip
        self.gpus = gpus
        self.sandbox = sandbox
        self.restart_policy = pod["spec"].get("restartPolicy", "Always")
        self.wake = threading.Event()
        self.stop_grace: float | None = None  # set when the pod is being deleted
        self.lock = threading.Lock()
        self.report_lock = threading.Lock()  # probe workers report too
        self.reported_final = False
        self.start_time = now()
        self.init_done = False
        spec = pod["spec"]
        self.init_containers = [self._container(c, True) for c in spec.get("initContainers") or []]
        self.containers = [self._container(c, False) for c in spec["containers"]]

    # -- called from the agent's watch thread -------------------------------------------

    def request_stop(self, grace: float) -> None:
        with self.lock:
            self.stop_grace = grace if self.stop_grace is None else min(self.stop_grace, grace)
        self.wake.set()

    # -- the pod's life ----------------------------------------------------------------

    @property
    def hosts_file(self) -> Path:
        return self.sandbox / "etc-hosts"

    def container(self, name: str) -> Container | None:
        """The pod's container or init container of that name."""
        return next((c for c in self.init_containers + self.containers if c.name == name), None)

    def _container(self, spec: dict[str, Any], init: bool) -> Container:
        return Container(
            spec=spec,
            init=init,
            log=self.sandbox / f"{spec['name']}.log",
            termination_log=self.sandbox / f"{spec['name']}.termination-log",
        )

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # never let one pod take the agent down
            print(f"localnode: pod {self.pod_key}: {type(e).__name__}: {e}", file=sys.stderr)
            self._kill_all(signal.SIGKILL)
            self._report(final=True)  # the pod ends Failed, not Running forever
        finally:
            self.host.finished(self.uid)

    @property
    def pod_key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def stopping(self) -> bool:
        """A method, not a property: it changes under our feet (the watch thread sets it)."""
        return self.stop_grace is not None

    def _run(self) -> None:
        self.sandbox.mkdir(parents=True, exist_ok=True)
        if not self._prepare():
            self._finish()
            return
        for c in self.init_containers:
            while True:
                self._start(c)
                self._report()
                self._sleep_until(functools.partial(self._exited, c))
                if self.stopping():
                    self._finish()
                    return
                self._reap(c)
                if c.exit_code == 0:
                    break
                if self.restart_policy == "Never":
                    self._finish()
                    return
                self._restart_later(c)
        self.init_done = True
        for c in self.containers:
            self._start(c)
        self._report()
        # Level-triggered: every wake-up looks at every container.
        while True:
            self._sleep_until(lambda: any(self._exited(c) for c in self.containers))
            if self.stopping():
                break
            exited = [c for c in self.containers if self._exited(c)]
            for c in exited:
                self._reap(c)
            if exited:
                self._report()
            for c in exited:
                if self._should_restart(c):
                    self._restart_later(c)
                    if self.stopping():
                        break
                    self._start(c)
                    self._report()
            if all(c.exit_code is not None for c in self.containers):
                break
        self._finish()

    @staticmethod
    def _exited(c: Container) -> bool:
        return c.proc is not None and c.exit_code is None and c.proc.poll() is not None

    def _sleep_until(self, ready: Callable[[], bool]) -> None:
        """Block until `ready()` holds or a stop is requested; no polling."""
        while not self.stopping() and not ready():
            self.wake.wait()
            self.wake.clear()

    def _should_restart(self, c: Container) -> bool:
        if self.stopping():
            return False
        return self.restart_policy == "Always" or (
            self.restart_policy == "OnFailure" and c.exit_code != 0
        )

    def _restart_later(self, c: Container) -> None:
        c.last_state = {"terminated": c.terminated_state()}
        c.restart_count += 1
        c.exit_code = None
        c.proc = None
        c.waiting = ("CrashLoopBackOff", f"back-off restarting failed container {c.name}")
        self._report()
        # A short, growing back-off (the kubelet's starts at 10 s; this is a dev cluster).
        self._sleep_for(min(2.0 * c.restart_count, 10.0))

    def _sleep_for(self, seconds: float) -> None:
        """Sleep, but wake at once for a stop request."""
        deadline = time.monotonic() + seconds
        while not self.stopping() and (left := deadline - time.monotonic()) > 0:
            self.wake.wait(left)
            self.wake.clear()

    def _prepare(self) -> bool:
        """Volumes, env and argv for every container; retries while config is missing."""
        delay = 0.5
        while not self.stopping():
            try:
                self._configure()
                return True
            except (ConfigError, envvars.EnvError) as e:
                for c in self.init_containers + self.containers:
                    c.waiting = ("CreateContainerConfigError", str(e))
                self._report()
            except Exception as e:  # the API server is away (a ConfigMap, a token): retry
                print(f"localnode: pod {self.pod_key}: preparing: {e}; retrying", file=sys.stderr)
            self._sleep_for(delay)
            delay = min(delay * 2, 5.0)
        return False

    def _configure(self) -> None:
        pod_view = json.loads(json.dumps(self.pod))
        pod_view.setdefault("status", {}).update(podIP=self.pod_ip, hostIP=self.host_ip)
        ns = self.pod["metadata"]["namespace"]

        def lookup(kind: str, name: str) -> Mapping[str, str] | None:
            return self.host.lookup(kind, ns, name)

        def token(sa: str, audience: str | None, seconds: int) -> str:
            return self.host.token(self.pod, sa, audience, seconds)

        vols = volumes.materialise(pod_view, self.sandbox / "volumes", lookup, token)
        base = self.host.base_env(pod_view)
        if self.gpus:
            ids = ",".join(str(g) for g in self.gpus)
            base.update(CUDA_VISIBLE_DEVICES=ids, NVIDIA_VISIBLE_DEVICES=ids)
        home = self.sandbox / "home"
        home.mkdir(exist_ok=True)
        base.setdefault("HOME", str(home))
        for c in self.init_containers + self.containers:
            c.env = envvars.build_env(pod_view, c.spec, base, lookup)
            c.argv = self._argv(c)
            if not c.init:
                try:
                    c.probes = probes_of(c.spec)
                except ProbeError as e:
                    raise ConfigError(str(e)) from None
            c.mounts = [{"source": str(c.termination_log), "target": self._term_path(c)}]
            if self.hosts_file.exists():  # written by the agent (see hosts.py)
                c.mounts.append({"source": str(self.hosts_file), "target": "/etc/hosts"})
            for vm in c.spec.get("volumeMounts") or []:
                if vm["name"] not in vols:
                    raise ConfigError(f"volumeMount {vm['name']!r} names no volume of the pod")
                source = vols[vm["name"]] / vm.get("subPath", "")
                c.mounts.append(
                    {
                        "source": str(source),
                        "target": vm["mountPath"],
                        "readOnly": bool(vm.get("readOnly")),
                    }
                )

    @staticmethod
    def _term_path(c: Container) -> str:
        return str(c.spec.get("terminationMessagePath") or "/dev/termination-log")

    def _argv(self, c: Container) -> list[str]:
        command = list(c.spec.get("command") or [])
        args = list(c.spec.get("args") or [])
        image = str(c.spec.get("image", ""))
        if not command:
            known = self.host.entrypoint(image)
            if known is None:
                raise ConfigError(
                    f"container {c.name}: the local node pulls no images, so image {image!r} "
                    "needs an explicit `command` (or an entry in localcluster/node/images.yaml)"
                )
            command, default_args = known
            if not c.spec.get("args"):
                args = default_args
        argv = [envvars.expand(a, c.env) for a in command + args]
        if not argv:
            raise ConfigError(f"container {c.name}: nothing to run")
        return argv

    def _exec_spec(self, c: Container, argv: list[str], suffix: str = "") -> Path:
        """The podexec spec that runs `argv` in container `c` (its files, env and cwd)."""
        spec = {
            "argv": argv,
            "env": c.env,
            "cwd": str(c.spec.get("workingDir") or self.sandbox),
            "mounts": c.mounts,
            "hostname": hosts.hostname(self.pod),
            # What the process itself runs from; kept visible under any volume.
            "keep": [str(REPO), sys.prefix, sys.base_prefix],
        }
        spec_file = self.sandbox / f"{c.name}{suffix}.spec.json"
        spec_file.write_text(json.dumps(spec))
        return spec_file

    @staticmethod
    def _podexec(spec_file: Path) -> list[str]:
        return [sys.executable, "-E", "-S", PODEXEC, str(spec_file)]

    def _start(self, c: Container) -> None:
        c.termination_log.write_bytes(b"")
        if c.spec.get("workingDir"):
            Path(c.spec["workingDir"]).mkdir(parents=True, exist_ok=True)
        spec_file = self._exec_spec(c, c.argv)
        with c.log.open("ab") as out:
            log_start = out.tell()  # append mode: the end of the earlier runs' output
            c.proc = subprocess.Popen(
                self._podexec(spec_file),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd=self.sandbox,
                start_new_session=True,
            )
        if c.runs:
            c.runs[-1].log_end = log_start
        # As a kubelet keeps one dead container per container: logs reach back one run.
        c.runs = [*c.runs[-1:], Run(c.proc, log_start)]
        c.started_at = now()
        c.exit_code = None
        c.message = ""
        proc = c.proc
        threading.Thread(target=self._waiter, args=(proc,), daemon=True).start()
        self._start_probes(c, proc)

    # -- probes -------------------------------------------------------------------------

    def _start_probes(self, c: Container, proc: subprocess.Popen[bytes]) -> None:
        if c.prober is not None:
            c.prober.stop()
        kinds = {p.kind for p in c.probes}
        # As the kubelet: not started until the startup probe passes, not ready until
        # the readiness probe does.
        c.started_ok = "startupProbe" not in kinds
        c.probe_ready = "readinessProbe" not in kinds
        if not c.probes:
            c.prober = None
            return

        def alive() -> bool:
            return c.proc is proc and proc.poll() is None and not self.stopping()

        c.prober = ProbeWorker(
            f"probe-{self.pod_key}/{c.name}",
            c.probes,
            alive,
            functools.partial(self._probe_once, c),
            functools.partial(self._on_probe, c, proc),
        )
        c.prober.start()

    def _probe_once(self, c: Container, probe: Probe) -> tuple[bool, str]:
        def run_exec(argv: list[str], timeout: float) -> int:
            spec_file = self._exec_spec(c, argv, ".probe")
            return subprocess.run(
                self._podexec(spec_file),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd=self.sandbox,
                timeout=timeout,
                check=False,
            ).returncode

        return check(probe, c.spec, self.pod_ip, run_exec)

    def _on_probe(
        self,
        c: Container,
        proc: subprocess.Popen[bytes],
        probe: Probe,
        outcome: str,
        message: str,
    ) -> None:
        if outcome == "unhealthy":
            self.host.event(
                self.pod, "Warning", "Unhealthy", f"{probe.title} probe failed: {message}"
            )
            return
        if outcome == "kill":
            self.host.event(
                self.pod,
                "Normal",
                "Killing",
                f"Container {c.name} failed {probe.kind.removesuffix('Probe')} probe, "
                "will be restarted",
            )
            grace = probe.spec.get("terminationGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._kill_container(proc, float(grace))
            return
        if outcome == "started":
            c.started_ok = True
        else:
            c.probe_ready = outcome == "ready"
        if c.proc is proc:
            self._report()

    def _kill_container(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        """SIGTERM, SIGKILL after the grace period; the pod's loop restarts it (or not)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _waiter(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.wake.set()

    def _reap(self, c: Container) -> None:
        assert c.proc is not None
        code = c.proc.wait()
        # A signal death is reported as 128 + signal, as container runtimes do.
        c.exit_code = 128 - code if code < 0 else code
        c.finished_at = now()
        c.message = self._termination_message(c)

    def _termination_message(self, c: Container) -> str:
        try:
            data = c.termination_log.read_bytes()[:MAX_MESSAGE]
        except OSError:
            data = b""
        if (
            not data
            and c.exit_code != 0
            and c.spec.get("terminationMessagePolicy") == ("FallbackToLogsOnError")
        ):
            with contextlib.suppress(OSError):
                tail = c.log.read_bytes().splitlines()[-FALLBACK_LINES:]
                data = b"\n".join(tail)[-FALLBACK_BYTES:]
        return data.decode(errors="replace")

    def _terminate(self) -> None:
        """SIGTERM every container's process group, SIGKILL after the grace period."""
        grace = self.stop_grace or 0.0
        self._kill_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in self.init_containers + self.containers:
            if c.proc is not None and c.exit_code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        self._kill_all(signal.SIGKILL)
        for c in self.init_containers + self.containers:
            if c.proc is not None and c.exit_code is None:
                self._reap(c)
        # Whatever else the processes left in their groups goes too.
        self._kill_all(signal.SIGKILL, all_groups=True)

    def _kill_all(self, sig: signal.Signals, *, all_groups: bool = False) -> None:
        for c in self.init_containers + self.containers:
            if c.proc is not None and (all_groups or c.exit_code is None):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, sig)

    def _finish(self) -> None:
        if self.stopping():
            self._terminate()
        else:
            # A process's children may outlive it; the pod's life ends with its containers.
            self._kill_all(signal.SIGKILL, all_groups=True)
        self._report(final=True)

    # -- status ---------------------------------------------------------------------------

    def _phase(self, final: bool) -> str:
        every = self.init_containers + self.containers
        if not final:
            return (
                "Running"
                if self.init_done and any(c.running for c in self.containers)
                else ("Pending")
            )
        if any(c.exit_code is None for c in self.containers) or any(
            c.exit_code not in (None, 0) for c in every
        ):
            return "Failed"
        return "Succeeded"

    def _report(self, *, final: bool = False) -> None:
        with self.report_lock:
            if self.reported_final:
                return  # a probe's late news must not bring an ended pod back
            self.reported_final = final
            self._report_now(final)

    def _report_now(self, final: bool) -> None:
        phase = self._phase(final)
        running = phase == "Running" and all(c.ready for c in self.containers)
        t = now()
        not_ready_reason = "PodCompleted" if final else "ContainersNotReady"

        def cond(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
            c: dict[str, Any] = {
                "type": kind,
                "status": "True" if ok else "False",
                "lastTransitionTime": t,
                "lastProbeTime": None,
            }
            if reason and not ok:
                c["reason"] = reason
            return c

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond(
                    "Initialized",
                    self.init_done or not self.init_containers,
                    "ContainersNotInitialized",
                ),
                cond("ContainersReady", running, not_ready_reason),
                cond("Ready", running, not_ready_reason),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        self.host.patch_status(self.pod, status)
