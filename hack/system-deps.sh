#!/usr/bin/env bash
# Debian packages the project needs: etcd (the local cluster's store), openssl
# (its certificates), python3-venv, chromium (browser tests). Installs only what is missing.
set -euo pipefail
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# The report's browser test (tests/e2e/test_report.py) renders it in headless chromium.
command -v chromium >/dev/null || need+=(chromium)
[[ ${#need[@]} -eq 0 ]] && exit 0
echo "system-deps: installing ${need[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "system-deps: ERROR: need root (or sudo) to install ${need[*]}" >&2; exit 1; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's etcd package enables a systemd unit; the local cluster runs its own etcd.
