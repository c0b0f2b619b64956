"""Each pod's hostname and /etc/hosts, as a kubelet gives them, and the names cluster DNS
would answer for a headless Service's pods (the local cluster runs no DNS).

A kubelet names the pod's host `spec.hostname` (else the pod's name) and writes an
/etc/hosts with localhost and the pod's own names; with `spec.subdomain` its full name
is `<hostname>.<subdomain>.<namespace>.svc.cluster.local`. Pods find each other by those
names through cluster DNS (a JobSet's pods reach rank 0 as `<jobset>-<job>-0-0.<jobset>`).
Here every pod's hosts file also lists the other running pods of its namespace and
subdomain, under the names DNS would resolve, and is rewritten in place (a bind mount
follows the file, not its name) as such pods come and go.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
HEADER = """# Kubernetes-managed hosts file (the local node's; it also stands in for cluster DNS).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def hostname(pod: Mapping[str, Any]) -> str:
    """The pod's hostname: spec.hostname, else its name (at most 63 characters)."""
    spec = pod.get("spec") or {}
    name = str(spec.get("hostname") or pod["metadata"]["name"])
    return name[:63].rstrip("-.")


@dataclass(frozen=True)
class Entry:
    namespace: str
    hostname: str
    subdomain: str
    ip: str
    path: Path

    def names(self) -> list[str]:
        """Its names, the full one first (what a kubelet writes, then the short forms
        that a resolver's search path would complete)."""
        if not self.subdomain:
            return [self.hostname]
        base = f"{self.hostname}.{self.subdomain}.{self.namespace}"
        return [
            f"{base}.svc.{CLUSTER_DOMAIN}",
            f"{base}.svc",
            base,
            f"{self.hostname}.{self.subdomain}",
            self.hostname,
        ]


class HostsFiles:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, Entry] = {}  # pod uid -> entry

    def add(self, uid: str, pod: Mapping[str, Any], ip: str, path: Path) -> None:
        """Write the pod's hosts file (before its containers start) and its peers'."""
        spec = pod.get("spec") or {}
        entry = Entry(
            pod["metadata"]["namespace"],
            hostname(pod),
            str(spec.get("subdomain") or ""),
            ip,
            path,
        )
        with self.lock:
            self.entries[uid] = entry
            self._write_group(entry)

    def remove(self, uid: str) -> None:
        with self.lock:
            entry = self.entries.pop(uid, None)
            if entry is not None and entry.subdomain:
                self._write_group(entry)

    def _write_group(self, changed: Entry) -> None:
        """Rewrite the files that list `changed`: its own and, in a subdomain, its peers'."""
        for e in self._peers(changed) if changed.subdomain else [changed]:
            self._write(e)

    def _peers(self, of: Entry) -> list[Entry]:
        return [
            e
            for e in self.entries.values()
            if (e.namespace, e.subdomain) == (of.namespace, of.subdomain)
        ]

    def _write(self, entry: Entry) -> None:
        lines = [HEADER, "\n# This pod\n", f"{entry.ip}\t{' '.join(entry.names())}\n"]
        others = [p for p in self._peers(entry) if p is not entry] if entry.subdomain else []
        if others:
            lines.append(f"\n# The pods of headless Service {entry.subdomain} (cluster DNS)\n")
            lines += [f"{p.ip}\t{' '.join(p.names())}\n" for p in others]
        text = "".join(lines)
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        # In place, never replaced: containers see the file through a bind mount.
        with open(entry.path, "a+", encoding="utf-8") as f:
            f.seek(0)
            f.truncate()
            f.write(text)
