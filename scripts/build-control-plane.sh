#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, helm) and Prometheus with promtool from Go modules through the configured Go module proxy, into a
# cache outside the repository. Idempotent: a binary already present is not rebuilt (helm: unless it reports another
# version than HELM_VERSION, so changing the pin rebuilds it).
#
# k8s.io/kubernetes and etcd's server module cannot be `go install`ed directly: their go.mod
# replaces sibling modules with local paths (./staging/..., ../api). The remedy is a small
# wrapper module that requires the real module and points each replaced path at the
# published version of that sibling module.
set -euo pipefail

KUBE_VERSION="${TOKENWORKS_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${TOKENWORKS_ETCD_VERSION:-v3.6.8}"      # the etcd that k8s 1.36 itself pins
KWOK_VERSION="${TOKENWORKS_KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${TOKENWORKS_HELM_VERSION:-v4.3.1}"  # Helm 4: server-side apply by default (docs/install.md)
PROMETHEUS_VERSION="${TOKENWORKS_PROMETHEUS_VERSION:-v0.316.0}"  # the Go module version of Prometheus 3.16

CACHE="${TOKENWORKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenworks}"
BIN="$CACHE/bin/k8s-$KUBE_VERSION"
SRC="$CACHE/src"
mkdir -p "$BIN" "$SRC"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[control-plane] %s\n' "$*" >&2; }
have() { [ -x "$BIN/$1" ]; }

staging_minor_version() {  # v1.36.3 -> v0.36.3
  echo "v0.${KUBE_VERSION#v1.}"
}

build_kubernetes() {
  if have kube-apiserver && have kube-controller-manager && have kube-scheduler && have kubectl; then
    return
  fi
  local dir="$SRC/kubernetes-$KUBE_VERSION" staging
  staging="$(staging_minor_version)"
  log "building kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); a cold build takes about 20 minutes on 2 cores"
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init tokenworks.local/kube-build >/dev/null 2>&1
  go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
  local upstream_mod
  upstream_mod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
  # Mirror the upstream go directive and godebug default so the binaries behave as released.
  go mod edit -go="$(awk '/^go /{print $2; exit}' "$upstream_mod")"
  local godebug; godebug="$(awk '/^godebug /{print $2; exit}' "$upstream_mod")"
  [ -n "$godebug" ] && go mod edit -godebug="$godebug"
  go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
  local module
  for module in $(awk '$2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$upstream_mod"); do
    go mod edit -replace="$module=$module@$staging"
  done
  log "resolving module graph"
  local cmds="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  # An explicit @version on each: a bare path would mean @upgrade (the newest release).
  go get $(for c in $cmds; do printf '%s@%s ' "$c" "$KUBE_VERSION"; done) >/dev/null
  local major minor ldflags pkg
  major="${KUBE_VERSION#v}"; major="${major%%.*}"
  minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "compiling (progress: one line per binary)"
  # shellcheck disable=SC2086
  go build -ldflags "$ldflags" -o "$BIN/" $cmds
  log "kubernetes $KUBE_VERSION built into $BIN"
}

build_etcd() {
  have etcd && return
  local dir="$SRC/etcd-$ETCD_VERSION"
  log "building etcd $ETCD_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init tokenworks.local/etcd-build >/dev/null 2>&1
  go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  local upstream_mod module
  upstream_mod="$(go env GOMODCACHE)/cache/download/go.etcd.io/etcd/server/v3/@v/$ETCD_VERSION.mod"
  go mod edit -go="$(awk '/^go /{print $2; exit}' "$upstream_mod")"
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  for module in $(awk '$2=="=>" && $3 ~ /^\.\./ {print $1}' "$upstream_mod"); do
    go mod edit -replace="$module=$module@$ETCD_VERSION"
  done
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_plain() {  # binary, package@version: modules whose go.mod has no local replaces
  have "$1" && return
  log "building $1 ($2)"
  GOBIN="$BIN" go install -ldflags "-s -w" "$2"
}

build_helm() {
  # `go install` leaves Helm's version at its source default ("v4.3" for every v4.3.x), so the release is stamped as
  # Helm's Makefile does (-X .../internal/version.version), and a cached helm reporting another version is rebuilt.
  local major="${HELM_VERSION#v}"; major="${major%%.*}"
  local module="helm.sh/helm/v$major"
  if have helm && [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
    return
  fi
  log "building helm ($module/cmd/helm@$HELM_VERSION)"
  rm -f "$BIN/helm"
  GOBIN="$BIN" go install -ldflags "-s -w -X $module/internal/version.version=$HELM_VERSION" \
    "$module/cmd/helm@$HELM_VERSION"
}

build_etcd
build_plain kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
build_helm
build_kubernetes
# No web UI assets (the `builtinassets` tag): tests use the HTTP API only.
build_plain prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
build_plain promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
echo "$BIN"
