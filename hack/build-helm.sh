#!/usr/bin/env bash
# Build Helm (v3) from its Go module, cached outside the repository keyed by version;
# prints the binary's directory. Debian bookworm packages no helm, and Helm's go.mod
# has no replace directives, so `go install` through the Go module proxy works.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}"
OUT_DIR="$CACHE_ROOT/helm/$HELM_VERSION/bin"

# Built as Helm's own Makefile builds it: with the Kubernetes version of its client-go
# (major+1 . minor), which `helm template` and `helm lint` assume offline. Without it they
# assume v1.20 and refuse a chart's kubeVersion. The stamp marks binaries built so.
STAMP="$OUT_DIR/.k8s-capabilities"
if [[ -x "$OUT_DIR/helm" && -f "$STAMP" ]]; then
  echo "build-helm: using cached binary in $OUT_DIR" >&2
  echo "$OUT_DIR"
  exit 0
fi
command -v go >/dev/null || { echo "build-helm: ERROR: Go is needed once to build helm" >&2; exit 1; }
echo "build-helm: building helm $HELM_VERSION (cold: ~2 min)" >&2
mkdir -p "$OUT_DIR"
start=$(date +%s)
log="$CACHE_ROOT/helm/$HELM_VERSION/build.log"
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
client_go=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p' "$gomod")
read -r cg_major cg_minor <<<"$client_go"
[[ -n "${cg_minor:-}" ]] || { echo "build-helm: ERROR: no k8s.io/client-go in $gomod" >&2; exit 1; }
k8s_major=$((cg_major + 1))
pkg=helm.sh/helm/v3
ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION"
ldflags+=" -X $pkg/internal/version.gitTreeState=clean"
ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=$k8s_major -X $pkg/pkg/lint/rules.k8sVersionMinor=$cg_minor"
ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=$k8s_major -X $pkg/pkg/chartutil.k8sVersionMinor=$cg_minor"
if ! CGO_ENABLED=0 GOBIN="$OUT_DIR.tmp" go install -trimpath -ldflags "$ldflags" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$log" 2>&1; then
  tail -30 "$log" >&2
  echo "build-helm: ERROR: building helm failed; full log: $log" >&2
  exit 1
fi
mv "$OUT_DIR.tmp/helm" "$OUT_DIR/helm" && rmdir "$OUT_DIR.tmp"
echo "v$k8s_major.$cg_minor" >"$STAMP"
echo "build-helm: built helm in $(( $(date +%s) - start ))s" >&2
echo "$OUT_DIR"
