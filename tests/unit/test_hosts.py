"""The local node's /etc/hosts for pods: their own names and, in a subdomain, their peers'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localcluster.node.hosts import HostsFiles, hostname


def pod(name: str, subdomain: str | None = None, host: str | None = None) -> dict[str, Any]:
    spec = {k: v for k, v in (("subdomain", subdomain), ("hostname", host)) if v}
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def hosts(path: Path) -> dict[str, str]:
    """name -> address, as a resolver reads the file."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            addr, *names = line.split()
            out.update(dict.fromkeys(names, addr))
    return out


def test_pods_of_a_subdomain_find_each_other_by_name_as_they_come_and_go(tmp_path: Path) -> None:
    files = HostsFiles()
    r0, r1, alone = tmp_path / "r0", tmp_path / "r1", tmp_path / "alone"
    files.add("u1", pod("t-w-0-1-abcde", "t", "t-w-0-1"), "127.1.0.3", r1)
    assert hosts(r1)["t-w-0-1"] == "127.1.0.3"
    assert "t-w-0-0.t" not in hosts(r1), "rank 0 has no address yet"
    files.add("u0", pod("t-w-0-0-fghij", "t", "t-w-0-0"), "127.1.0.2", r0)
    files.add("u2", pod("other"), "127.1.0.4", alone)
    # Rank 1's file was rewritten in place: it now resolves rank 0, by every DNS form.
    for name in ("t-w-0-0.t", "t-w-0-0.t.ns", "t-w-0-0.t.ns.svc.cluster.local"):
        assert hosts(r1)[name] == "127.1.0.2"
    assert hosts(r0)["t-w-0-1.t"] == "127.1.0.3"
    assert hosts(alone) == {
        "localhost": "::1",
        "ip6-localhost": "::1",
        "ip6-loopback": "::1",
        "ip6-localnet": "fe00::0",
        "ip6-allnodes": "fe00::1",
        "ip6-allrouters": "fe00::2",
        "other": "127.1.0.4",
    }
    files.remove("u0")
    assert "t-w-0-0.t" not in hosts(r1)


def test_the_hostname_is_spec_hostname_else_the_pod_name() -> None:
    assert hostname(pod("p", host="h")) == "h"
    assert hostname(pod("x" * 70)) == "x" * 63
