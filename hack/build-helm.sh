#!/usr/bin/env bash
# Build Helm (v3) from its Go module, cached outside the repository keyed by version;
# prints the binary's directory. Debian bookworm packages no helm, and Helm's go.mod
# has no replace directives, so `go install` through the Go module proxy works.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}"
OUT_DIR="$CACHE_ROOT/helm/$HELM_VERSION/bin"

if [[ -x "$OUT_DIR/helm" ]]; then
  echo "build-helm: using cached binary in $OUT_DIR" >&2
  echo "$OUT_DIR"
  exit 0
fi
command -v go >/dev/null || { echo "build-helm: ERROR: Go is needed once to build helm" >&2; exit 1; }
echo "build-helm: building helm $HELM_VERSION (cold: ~2 min)" >&2
mkdir -p "$OUT_DIR"
start=$(date +%s)
log="$CACHE_ROOT/helm/$HELM_VERSION/build.log"
if ! CGO_ENABLED=0 GOBIN="$OUT_DIR.tmp" go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$log" 2>&1; then
  tail -30 "$log" >&2
  echo "build-helm: ERROR: building helm failed; full log: $log" >&2
  exit 1
fi
mv "$OUT_DIR.tmp/helm" "$OUT_DIR/helm" && rmdir "$OUT_DIR.tmp"
echo "build-helm: built helm in $(( $(date +%s) - start ))s" >&2
echo "$OUT_DIR"
