#!/usr/bin/env bash
# Build the upstream Kubernetes binaries (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) for the local development cluster.
#
# The binaries are built from the upstream Go modules with the machine's Go and
# cached OUTSIDE the repository, keyed by version, so a rebuild happens only
# when the pinned version changes or the cache is wiped. Prints the bin dir.
#
# Why a generated tools module: k8s.io/kubernetes cannot be `go install`ed
# directly because its go.mod replaces every k8s.io staging module with a local
# path that the module zip does not contain. We require k8s.io/kubernetes at the
# pinned release and replace each staging module with its published v0.X.Y.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.2}"
CACHE_ROOT="${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}"
OUT_DIR="$CACHE_ROOT/kubernetes/$KUBE_VERSION/bin"
# kubectl too: a client of the same version avoids skew warnings and surprises.
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

die() { echo "build-k8s: ERROR: $*" >&2; exit 1; }
log() { echo "build-k8s: $*" >&2; }

have_all() {
  for c in "${COMPONENTS[@]}"; do [[ -x "$OUT_DIR/$c" ]] || return 1; done
}

if have_all; then
  log "using cached binaries in $OUT_DIR"
  echo "$OUT_DIR"
  exit 0
fi

command -v go >/dev/null || die "Go is not installed; it is needed once to build the Kubernetes binaries"

WORK="$CACHE_ROOT/kubernetes/$KUBE_VERSION/tools-module"
mkdir -p "$WORK" "$OUT_DIR"
cd "$WORK"

log "fetching k8s.io/kubernetes@$KUBE_VERSION metadata from the Go module proxy"
mod_json=$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" 2>&1) \
  || die "could not download k8s.io/kubernetes@$KUBE_VERSION: $mod_json"
src_dir=$(printf '%s' "$mod_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
commit=$(printf '%s' "$mod_json" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin",{}).get("Hash",""))')

# The release says which Go it was built and tested with. A different minor
# version can build a broken apiserver (seen with Go 1.27: /openapi/v2 -> 503),
# so refuse instead of producing a cluster that fails in confusing ways.
want_go=$(cat "$src_dir/.go-version")
have_go=$(go env GOVERSION | sed 's/^go//')
if [[ "${want_go%.*}" != "${have_go%.*}" ]]; then
  die "Kubernetes $KUBE_VERSION wants Go $want_go (.go-version) but this machine has Go $have_go. \
Pick a KUBE_VERSION whose .go-version matches Go ${have_go%.*}, or install Go ${want_go%.*}."
fi
log "Go $have_go matches the release's .go-version $want_go"

minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
patch=$(echo "$KUBE_VERSION" | cut -d. -f3)
staging_version="v0.$minor.$patch"

{
  echo "module kubetune.dev/localcluster-tools"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//' | cut -d. -f1,2)"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  # Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.M.P".
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$src_dir/go.mod"
  echo ")"
} > go.mod
printf 'package tools\n' > tools.go

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

for c in "${COMPONENTS[@]}"; do
  [[ -x "$OUT_DIR/$c" ]] && { log "$c already built"; continue; }
  note=""
  [[ $c == kube-apiserver ]] && note=" (cold: ~5 min, ~2 GiB of memory)"
  log "building $c $KUBE_VERSION$note"
  start=$(date +%s)
  if ! CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
        -o "$OUT_DIR/$c.tmp" "k8s.io/kubernetes/cmd/$c" >"$WORK/build-$c.log" 2>&1; then
    tail -30 "$WORK/build-$c.log" >&2
    die "building $c failed; full log: $WORK/build-$c.log"
  fi
  mv "$OUT_DIR/$c.tmp" "$OUT_DIR/$c"   # atomic: a half-written binary is never cached
  log "built $c in $(( $(date +%s) - start ))s"
done

echo "$OUT_DIR"
