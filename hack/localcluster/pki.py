"""Certificates for the local control plane, made with the openssl command line.

EC P-256 keys: they are generated in milliseconds, which keeps a cold start fast.
Every client authenticates with a certificate (CN = user, O = group), the way
kubeadm sets up a cluster; nothing uses tokens or anonymous access.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"


@dataclass(frozen=True)
class ClientIdentity:
    name: str  # file stem
    user: str  # certificate CN -> Kubernetes user name
    groups: tuple[str, ...] = ()  # certificate O -> Kubernetes groups


# The identities the local cluster's own components use. The node agent is
# development infrastructure that plays the kubelet for many nodes at once, so it
# is an admin rather than one `system:node:<name>` per node.
CLIENTS = (
    ClientIdentity("admin", "kubetune-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    ClientIdentity("localnode", "kubetune-localnode", ("system:masters",)),
    ClientIdentity("prometheus", "kubetune-prometheus"),
    # What the API server presents to the node agent's kubelet API (`kubectl logs`).
    # In system:masters, as kubeadm made it until 1.29: the node agent authorizes that
    # group, standing in for the kubelet's SubjectAccessReview of nodes/proxy.
    ClientIdentity(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
    ),
)
# The node agent's kubelet API serving certificate: the API server dials the node's
# InternalIP, which is 127.0.0.1 for every local node.
KUBELET_SERVING = ("kubelet", "IP:127.0.0.1,DNS:localhost")
CLIENT_EXT = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=clientAuth\n"
)


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path))
    path.chmod(0o600)


def _ca(pki: Path, name: str, cn: str) -> None:
    _key(pki / f"{name}.key")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        str(pki / f"{name}.key"),
        "-subj",
        f"/CN={cn}",
        "-days",
        DAYS,
        "-out",
        str(pki / f"{name}.crt"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )


def _signed(pki: Path, ca: str, name: str, subject: str, ext: str) -> None:
    _key(pki / f"{name}.key")
    csr = pki / f"{name}.csr"
    extfile = pki / f"{name}.ext"
    extfile.write_text(ext)
    _openssl("req", "-new", "-key", str(pki / f"{name}.key"), "-subj", subject, "-out", str(csr))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki / f"{ca}.crt"),
        "-CAkey",
        str(pki / f"{ca}.key"),
        "-CAcreateserial",
        "-days",
        DAYS,
        "-extfile",
        str(extfile),
        "-out",
        str(pki / f"{name}.crt"),
    )
    csr.unlink()
    extfile.unlink()


def ensure_pki(pki: Path) -> None:
    """Create the CA, serving and client certificates once; later calls reuse them.

    A PKI made before a certificate was added to this file gets just that certificate
    from the same CA, so an existing state directory keeps working.
    """
    if (pki / "complete").exists():
        _leaf_certificates(pki, only_missing=True)
        return
    pki.mkdir(parents=True, exist_ok=True)
    _ca(pki, "ca", "kubetune-localcluster-ca")
    # The aggregation layer's request-header CA. The apiserver refuses to start
    # with --requestheader-client-ca-file unless allowed names are set too.
    _ca(pki, "front-proxy-ca", "kubetune-localcluster-front-proxy-ca")
    _signed(
        pki,
        "ca",
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\n",
    )
    # A new CA: every leaf is made afresh, whatever an interrupted run left behind.
    _leaf_certificates(pki, only_missing=False)
    _signed(pki, "front-proxy-ca", "front-proxy-client", "/CN=front-proxy-client", CLIENT_EXT)
    # Service-account token signing key pair.
    _key(pki / "sa.key")
    _openssl("ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "complete").write_text("ok\n")


def _leaf_certificates(pki: Path, *, only_missing: bool) -> None:
    """The cluster CA's client certificates and the kubelet serving certificate."""
    for client in CLIENTS:
        if only_missing and (pki / f"{client.name}.crt").exists():
            continue
        subject = "".join(f"/O={g}" for g in client.groups) + f"/CN={client.user}"
        _signed(pki, "ca", client.name, subject, CLIENT_EXT)
    name, sans = KUBELET_SERVING
    if not (only_missing and (pki / f"{name}.crt").exists()):
        serving(pki, name, sans)


def serving(pki: Path, name: str, sans: str) -> None:
    """A serving certificate `name`.crt/.key from the cluster CA (add-on webhooks)."""
    _signed(
        pki,
        "ca",
        name,
        f"/CN={name}",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
    )


def write_kubeconfig(path: Path, server: str, pki: Path, client: str) -> None:
    """A kubeconfig that references the certificate files by absolute path."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: kubetune-local
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {client}
  user:
    client-certificate: {pki / f"{client}.crt"}
    client-key: {pki / f"{client}.key"}
contexts:
- name: kubetune-local
  context:
    cluster: kubetune-local
    user: {client}
    namespace: default
current-context: kubetune-local
"""
    )
    path.chmod(0o600)
