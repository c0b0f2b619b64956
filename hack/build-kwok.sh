#!/usr/bin/env bash
# Build KWOK (simulated nodes and pods for scale benchmarks) from its Go module, cached
# outside the repository keyed by version; prints the binary's directory.
#
# Why v0.8.0: the Go module proxy serves v0.6.1, v0.7.0 and v0.8.0 (nothing newer), and
# v0.8.0's go.mod asks for go 1.26.0, which the machine's Go satisfies. GOTOOLCHAIN=local
# so a newer go line never makes Go try to download a toolchain (no internet here).
# The plain kwok binary embeds no Stages: the local cluster passes its own
# (hack/localcluster/kwok/*.yaml) with --config.
set -euo pipefail

KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}"
OUT_DIR="$CACHE_ROOT/kwok/$KWOK_VERSION/bin"

if [[ -x "$OUT_DIR/kwok" ]]; then
  echo "build-kwok: using cached binary in $OUT_DIR" >&2
  echo "$OUT_DIR"
  exit 0
fi
# --cached-only: answer whether it is built, never start a build (tests skip instead).
if [[ "${1:-}" == "--cached-only" ]]; then
  echo "build-kwok: kwok $KWOK_VERSION is not built; run hack/build-kwok.sh (or make binaries)" >&2
  exit 3
fi
command -v go >/dev/null || { echo "build-kwok: ERROR: Go is needed once to build kwok" >&2; exit 1; }
echo "build-kwok: building kwok $KWOK_VERSION (cold: ~3 min, ~1.2 GiB of memory)" >&2
mkdir -p "$OUT_DIR"
rm -rf "$OUT_DIR.tmp"
start=$(date +%s)
log="$CACHE_ROOT/kwok/$KWOK_VERSION/build.log"
if ! CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$OUT_DIR.tmp" go install -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
      "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >"$log" 2>&1; then
  tail -30 "$log" >&2
  echo "build-kwok: ERROR: building kwok failed; full log: $log" >&2
  exit 1
fi
# Moved into place only when complete: a half-written binary is never cached.
mv "$OUT_DIR.tmp/kwok" "$OUT_DIR/kwok" && rmdir "$OUT_DIR.tmp"
echo "build-kwok: built kwok in $(( $(date +%s) - start ))s" >&2
echo "$OUT_DIR"
