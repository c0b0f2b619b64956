#!/usr/bin/env bash
# Build a cluster add-on's controller (Kueue, JobSet) from its Go module, cached outside
# the repository keyed by version, together with the CRDs and webhook manifests of the
# same release (copied from the module source, so the cluster installs exactly what the
# binary serves). Prints the add-on's cache directory (bin/, crds/, webhooks.yaml).
#
#   hack/build-addon.sh kueue|jobset [--cached-only]
#
# Why these releases: Kueue v0.19.2 and JobSet v0.12.0 are the newest the Go module proxy
# serves whose go.mod asks for go 1.26.0, which the machine's Go satisfies. They are
# built inside the downloaded module (`go install module@version` would first read the
# module's version list for deprecations, which the proxy here refuses: 403), with the
# module's own go.sum. GOTOOLCHAIN=local so a newer go line never makes Go try to
# download a toolchain.
set -euo pipefail

name="${1:?usage: build-addon.sh kueue|jobset [--cached-only]}"
case "$name" in
  kueue)
    version="${KUEUE_VERSION:-v0.19.2}"
    module="sigs.k8s.io/kueue"
    package="./cmd/kueue"
    binary="kueue"
    ldflags="-X sigs.k8s.io/kueue/pkg/version.GitVersion=$version"
    webhooks="config/components/webhook/manifests.yaml"
    cold="~10 min, ~3 GiB of memory"
    ;;
  jobset)
    version="${JOBSET_VERSION:-v0.12.0}"
    module="sigs.k8s.io/jobset"
    package="."
    binary="jobset"
    ldflags="-X sigs.k8s.io/jobset/pkg/version.GitVersion=$version"
    webhooks="config/components/webhook/manifests.yaml"
    cold="~5 min, ~1.5 GiB of memory"
    ;;
  *)
    echo "build-addon: unknown add-on '$name' (kueue, jobset)" >&2
    exit 2
    ;;
esac

CACHE_ROOT="${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}"
DIR="$CACHE_ROOT/$name/$version"

if [[ -x "$DIR/bin/$binary" && -f "$DIR/webhooks.yaml" ]]; then
  echo "build-addon: using cached $name in $DIR" >&2
  echo "$DIR"
  exit 0
fi
if [[ "${2:-}" == "--cached-only" ]]; then
  echo "build-addon: $name $version is not built; run hack/build-addon.sh $name" >&2
  exit 3
fi
command -v go >/dev/null || { echo "build-addon: ERROR: Go is needed once to build $name" >&2; exit 1; }
echo "build-addon: building $name $version (cold: $cold)" >&2
mkdir -p "$DIR"
tmp="$DIR.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/crds"
start=$(date +%s)
log="$DIR/build.log"
: >"$log"
if ! src=$(GOTOOLCHAIN=local go mod download -json "$module@$version" 2>>"$log" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || [[ -z "$src" ]]; then
  tail -30 "$log" >&2
  echo "build-addon: ERROR: downloading $module@$version failed; full log: $log" >&2
  exit 1
fi
if ! (cd "$src" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath \
      -ldflags "-s -w $ldflags" -o "$tmp/bin/$binary" "$package") >>"$log" 2>&1; then
  tail -30 "$log" >&2
  echo "build-addon: ERROR: building $name failed; full log: $log" >&2
  exit 1
fi
cp "$src"/config/components/crd/bases/*.yaml "$tmp/crds/"
cp "$src/$webhooks" "$tmp/webhooks.yaml"
chmod -R u+w "$tmp"
# Moved into place only when complete: a half-built add-on is never cached.
rm -rf "${DIR:?}/bin" "$DIR/crds" "$DIR/webhooks.yaml"
mv "$tmp/bin" "$tmp/crds" "$tmp/webhooks.yaml" "$DIR/" && rm -rf "$tmp"
echo "build-addon: built $name in $(( $(date +%s) - start ))s" >&2
echo "$DIR"
