"""The part of the kubelet's HTTPS API that `kubectl logs` needs: container logs.

The API server answers ``GET pods/NAME/log`` by proxying to the pod's node at
``https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/NS/POD/CONTAINER``.
One server in the agent process serves every node the agent plays (all of them are
127.0.0.1); it finds the log in the agent's own record of the pods it ran, so a pod
whose containers have ended still shows its output for as long as the agent keeps it.

As the kubelet: TLS with a certificate from the cluster CA, a client certificate from
that CA required, status codes and messages as the kubelet words them (the API
server passes them on to kubectl). Unlike it: authorization is by certificate group
(system:masters, which the API server's kubelet client certificate carries) instead
of a SubjectAccessReview, and stdout and stderr share one file, so only the
combined stream is served.
"""

from __future__ import annotations

import select
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

from localcluster.node.runner import Container, PodRunner, Run

# Who may read logs: what RBAC grants nodes/proxy to among the local cluster's
# identities (see pki.CLIENTS), the API server's kubelet client included.
AUTHORIZED_GROUP = "system:masters"
CHUNK = 64 * 1024
FOLLOW_POLL_SECONDS = 0.2
# A client that stalls mid-handshake or stops reading must not hold a thread forever.
SOCKET_TIMEOUT_SECONDS = 60.0

FindPod = Callable[[str, str], PodRunner | None]


def log(msg: str) -> None:
    print(f"localnode: kubelet API: {msg}", file=sys.stderr, flush=True)


class LogError(Exception):
    """A request the kubelet would refuse: the HTTP status and the kubelet's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LogOptions:
    """The query of /containerLogs (v1.PodLogOptions as the API server encodes it).

    `timestamps`, `sinceSeconds` and `sinceTime` are accepted and ignored: the log
    file keeps no time per line, so there is nothing to prefix or to filter by.
    """

    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: str) -> LogOptions:
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        # stdout and stderr go to one file (runner.py), so they cannot be told apart.
        stream = q.get("stream", "All")
        if stream != "All":
            raise LogError(
                400,
                f"unable to return the given log stream: {stream!r}: the local node keeps "
                "a container's stdout and stderr in one log; ask for stream=All",
            )
        # The kubelet still takes the old `tail` parameter ("all": no limit).
        tail = q.get("tailLines", q.get("tail"))
        return cls(
            follow=_flag(q.get("follow")),
            previous=_flag(q.get("previous")),
            tail_lines=None if tail in (None, "all") else _count(tail),
            limit_bytes=_count(q.get("limitBytes"), least=1),
        )


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _count(value: str | None, least: int = 0) -> int | None:
    # The kubelet's own words for a query it cannot decode, or one that fails validation.
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise LogError(400, '{"message": "Unable to decode query."}') from None
    if n < least:
        raise LogError(422, '{"message": "Invalid request."}')
    return n


def select_run(c: Container, pod: str, previous: bool) -> Run:
    """The run of `c` whose log is asked for, as the kubelet picks the container ID:
    the latest run, or with `previous` the last one that has terminated before it."""
    runs = list(c.runs)  # the runner replaces the list; this is one consistent view
    backing_off = c.proc is None and bool(runs)  # the last run ended, the next not begun
    if previous:
        if backing_off:
            return runs[-1]
        if len(runs) >= 2:
            return runs[-2]
        raise LogError(400, f'previous terminated container "{c.name}" in pod "{pod}" not found')
    if not runs:
        reason = c.waiting[0]
        raise LogError(400, f'container "{c.name}" in pod "{pod}" is waiting to start: {reason}')
    return runs[-1]


def tail_start(f: BinaryIO, start: int, end: int, lines: int) -> int:
    """Where the last `lines` lines of f[start:end] begin; read backwards in blocks, as a
    training run's log can be large."""
    if lines == 0:
        return end
    # A final newline ends the last line rather than beginning another one.
    pos, found = end - 1, 0
    while pos > start:
        block_start = max(start, pos - CHUNK)
        f.seek(block_start)
        block = f.read(pos - block_start)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            found += 1
            if found == lines:
                return block_start + i + 1
        pos = block_start
    return start


class KubeletServer(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1 at a free port; `port` is what the nodes' status advertises."""

    daemon_threads = True  # a `kubectl logs -f` in progress must not delay shutdown

    def __init__(self, find_pod: FindPod, stopping: threading.Event, pki: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki / "kubelet.crt"), str(pki / "kubelet.key"))
        ctx.load_verify_locations(str(pki / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        # The handshake happens in the request's own thread (see _Handler.setup): done
        # in accept(), one slow client would hold up every other.
        self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.find_pod = find_pod
        self.stopping = stopping

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="kubelet-api", daemon=True).start()
        log(f"serving container logs on https://127.0.0.1:{self.port}")

    def handle_error(self, request: object, client_address: object) -> None:
        # One line, not socketserver's traceback: a refused handshake is routine.
        log(f"{client_address}: {sys.exc_info()[1]}")


class _Handler(BaseHTTPRequestHandler):
    server: KubeletServer
    connection: ssl.SSLSocket
    # HTTP/1.1 for a chunked body: its last chunk tells the API server that the log
    # is complete, rather than a closed connection that might be a broken one.
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the API server's audit trail has every request; errors are logged

    def do_GET(self) -> None:
        self.close_connection = True  # one request per connection; nothing to keep alive
        try:
            self._authorize()
            url = urlsplit(self.path)
            parts = url.path.split("/")
            if len(parts) != 5 or parts[1] != "containerLogs" or not all(parts[2:]):
                raise LogError(
                    404,
                    f"{url.path} not found: the local node serves only "
                    "/containerLogs/{namespace}/{pod}/{container}",
                )
            _, _, namespace, pod, container = parts
            options = LogOptions.parse(url.query)
            runner = self.server.find_pod(namespace, pod)
            if runner is None:
                raise LogError(404, f'pod "{pod}" does not exist')
            c = runner.container(container)
            if c is None:
                raise LogError(404, f'container "{container}" not found in pod "{pod}"')
            run = select_run(c, pod, options.previous)
        except LogError as e:
            self._refuse(e.status, str(e))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()  # now, so that a follow with no output yet is not left waiting
        try:
            with c.log.open("rb") as f:
                self._stream(f, run, options)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away (kubectl interrupted): nothing left to tell it

    def _authorize(self) -> None:
        # The handshake has verified the certificate against the cluster CA already.
        subject = (self.connection.getpeercert() or {}).get("subject", ())
        names = [pair for rdn in subject for pair in rdn if isinstance(pair, tuple)]
        user = next((str(v) for k, v in names if k == "commonName"), "")
        groups = [str(v) for k, v in names if k == "organizationName"]
        if AUTHORIZED_GROUP not in groups:
            raise LogError(
                403, f"Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)"
            )

    def _refuse(self, status: int, message: str) -> None:
        # Plain text, as the kubelet writes errors: the API server quotes the body.
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, f: BinaryIO, run: Run, options: LogOptions) -> None:
        # Without follow, the log as it is now: a busy container must not keep us reading.
        now_end = run.log_end if run.log_end is not None else f.seek(0, 2)
        pos = run.log_start
        if options.tail_lines is not None:
            pos = tail_start(f, run.log_start, now_end, options.tail_lines)
        left = options.limit_bytes
        while True:
            # Looked at before reading: output written before the process exited is
            # then read in this pass, and a follow ends with all of it.
            ended = run.proc.poll() is not None or self.server.stopping.is_set()
            end = run.log_end if options.follow else now_end
            while True:
                want = CHUNK
                if end is not None:
                    want = min(want, end - pos)
                if left is not None:
                    want = min(want, left)
                if want <= 0:
                    break
                f.seek(pos)
                data = f.read(want)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                pos += len(data)
                if left is not None:
                    left -= len(data)
            if not options.follow or ended or left == 0 or self._client_gone():
                return
            self.server.stopping.wait(FOLLOW_POLL_SECONDS)

    def _client_gone(self) -> bool:
        """Whether the client has closed the connection (it sends nothing after its
        request), so that a follow of a quiet container does not outlive its reader."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.settimeout(0)
            try:
                return sock.recv(1) == b""
            finally:
                sock.settimeout(self.timeout)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except (OSError, ValueError):
            return True
