#!/usr/bin/env bash
# Build upstream Prometheus for the local development cluster, cached outside the
# repository keyed by version (prints the binary's directory).
#
# Why not Debian's package: Debian builds Prometheus without Kubernetes service
# discovery (`kubernetes_sd_configs` is rejected: "field kubernetes_sd_configs not
# found in type config.ScrapeConfig"), and pod discovery through the API server is
# exactly what the local cluster must exercise. The web UI's assets are not
# embedded (that needs an npm build); the HTTP API, which is all we use, is complete.
set -euo pipefail

PROM_MODULE_VERSION="${PROM_MODULE_VERSION:-v0.313.5}"   # Go module tag of Prometheus 3.13.5
CACHE_ROOT="${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}"
OUT_DIR="$CACHE_ROOT/prometheus/$PROM_MODULE_VERSION/bin"

die() { echo "build-prometheus: ERROR: $*" >&2; exit 1; }
log() { echo "build-prometheus: $*" >&2; }

if [[ -x "$OUT_DIR/prometheus" ]]; then
  log "using cached binary in $OUT_DIR"
  echo "$OUT_DIR"
  exit 0
fi
command -v go >/dev/null || die "Go is not installed; it is needed once to build Prometheus"

WORK="$CACHE_ROOT/prometheus/$PROM_MODULE_VERSION/tools-module"
mkdir -p "$WORK" "$OUT_DIR"
cd "$WORK"
mod_json=$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus/prometheus@$PROM_MODULE_VERSION" 2>&1) \
  || die "could not download github.com/prometheus/prometheus@$PROM_MODULE_VERSION: $mod_json"
src_dir=$(printf '%s' "$mod_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
want_go=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src_dir/go.mod")
have_go=$(go env GOVERSION | sed 's/^go//')
if [[ "$(printf '%s\n%s\n' "$want_go" "$have_go" | sort -V | head -1)" != "$want_go" ]]; then
  die "Prometheus $PROM_MODULE_VERSION needs Go >= $want_go; this machine has Go $have_go"
fi

{
  echo "module kubetune.dev/localcluster-prometheus"
  echo
  echo "go ${have_go%.*}"
  echo
  echo "require github.com/prometheus/prometheus $PROM_MODULE_VERSION"
  echo
  # Replace directives of a dependency are ignored by Go; copy Prometheus's own.
  grep '^replace ' "$src_dir/go.mod" || true
} > go.mod
printf 'package tools\n' > tools.go

version="3.$(echo "$PROM_MODULE_VERSION" | sed -E 's/^v0\.3([0-9]+)\.([0-9]+)$/\1.\2/')"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
ldflags+=" -X github.com/prometheus/common/version.Branch=release"
ldflags+=" -X github.com/prometheus/common/version.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"

log "building prometheus $version (cold: ~3 min)"
start=$(date +%s)
if ! CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
      -o "$OUT_DIR/prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus \
      >"$WORK/build.log" 2>&1; then
  tail -30 "$WORK/build.log" >&2
  die "building prometheus failed; full log: $WORK/build.log"
fi
mv "$OUT_DIR/prometheus.tmp" "$OUT_DIR/prometheus"
log "built prometheus in $(( $(date +%s) - start ))s"
echo "$OUT_DIR"
