#!/usr/bin/env bash
# Builds and installs the local test environment of signalman. Idempotent: a
# re-run with nothing changed takes seconds.
#
#   $SIGNALMAN_ENV_HOME (default <repo>/.env-cache)
#     bin/signalman-apiserver   etcd + kube-apiserver in one process (tests/env/apiserver)
#     bin/kubectl               same Kubernetes version, built from the same module
#     bin/helm                  helm v3
#     bin/signalman-health      kstatus, the Argo CD health Lua and Flux's health expressions
#                               over live objects (tests/health; used by tests/it/health.rs)
#     bin/promtool              Prometheus's rule checker and rule unit tests (tests/monitoring.rs)
#     bin/oras, bin/registry    an OCI client and the CNCF registry (scripts/release.sh, tests/release.rs)
#     venv/                     Python venv with tests/env/moto/requirements.txt
#     stamps/                   hashes of the inputs each of the above was built from
#   with SIGNALMAN_NODE=1 also (a node for `signalman-env up --node`):
#     bin/kubelet, bin/kube-proxy, bin/kube-controller-manager, bin/kube-scheduler
#     containerd/               containerd, ctr, containerd-shim-runc-v2
#     cni-bin/                  the bridge, host-local and loopback CNI plugins
#     images/pause.tar          the sandbox image (tests/env/node/pause.c)
#   and apt-get installs runc, iptables, conntrack, socat and nftables when missing (as root).
#
# Go's default module and build caches are used (keep them between CI runs:
# `go env GOMODCACHE GOCACHE`). A cold build takes many minutes on two cores.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
ENV_HOME=${SIGNALMAN_ENV_HOME:-$REPO_ROOT/.env-cache}
APISERVER_SRC=$SCRIPT_DIR/apiserver
REQUIREMENTS=$SCRIPT_DIR/moto/requirements.txt
HELM_VERSION=v3.22.0
# promtool from the Prometheus module: Prometheus 3.x release v3.X.Y is module version v0.3XX.Y.
PROMETHEUS_MODULE_VERSION=v0.315.1 # Prometheus 3.15.1; its go.mod says go 1.26.0
MIN_GO_MINOR=26 # go.mod of tests/env/apiserver and of helm say go 1.26.0

export GOTOOLCHAIN=local
export CGO_ENABLED=0 # static binaries; no C compiler needed
GO_BUILD_FLAGS=(-trimpath -buildvcs=false)

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
on_error() {
  # -E runs the trap in subshells too: report once, from the top level.
  [ "$BASH_SUBSHELL" -eq 0 ] || return 0
  printf '[setup] FAILED (line %s, exit %s) after %s\n' "$1" "$2" "$(since "$T0")" >&2
}
T0=$(now)
trap 'on_error $LINENO $?' ERR

is_root() { [ "$(id -u)" = 0 ]; }
APT_UPDATED=
apt_install() {
  is_root && command -v apt-get >/dev/null || return 1
  log "apt-get install $*"
  if [ -z "$APT_UPDATED" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------- prerequisites
command -v go >/dev/null || die "go is not on PATH (Go 1.$MIN_GO_MINOR or newer is needed)"
GO_VERSION=$(go env GOVERSION)
go_minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$GO_VERSION")
[[ $go_minor =~ ^[0-9]+$ && $go_minor -ge $MIN_GO_MINOR ]] ||
  die "Go 1.$MIN_GO_MINOR or newer is needed, found $GO_VERSION (GOTOOLCHAIN=local: no toolchain download)"
command -v python3 >/dev/null || apt_install python3 python3-venv || die "python3 is not on PATH"
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  # Debian ships ensurepip in a separate package.
  pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install python3-venv "python$pyver-venv" ||
    die "python3 lacks the venv/ensurepip modules: install python3-venv (apt-get install python3-venv)"
  python3 -c 'import ensurepip, venv' || die "python3 still lacks ensurepip after installing python3-venv"
fi
for tool in sha256sum flock; do
  command -v $tool >/dev/null || apt_install coreutils util-linux || die "$tool is missing"
done

mkdir -p "$ENV_HOME/bin" "$ENV_HOME/stamps"
# Two setups at once (two test binaries, say) take turns.
exec 9>"$ENV_HOME/.setup.lock"
flock 9

# stamp NAME HASH: is NAME built from inputs HASH, and is its output still there?
stamp_ok() { [ -e "$3" ] && [ "$(cat "$ENV_HOME/stamps/$1" 2>/dev/null)" = "$2" ]; }
stamp_write() { printf '%s\n' "$2" >"$ENV_HOME/stamps/$1.tmp" && mv -f "$ENV_HOME/stamps/$1.tmp" "$ENV_HOME/stamps/$1"; }
hash_of() { sha256sum | cut -d' ' -f1; }

GO_ENV_KEY="$GO_VERSION $(go env GOOS GOARCH | tr '\n' ' ') CGO_ENABLED=$CGO_ENABLED ${GO_BUILD_FLAGS[*]}"

# The version a release build stamps in (hack/lib/version.sh); without it the
# server and kubectl report v0.0.0-master+$Format:%H$.
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$APISERVER_SRC/go.mod")
[[ $K8S_VERSION =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "no k8s.io/kubernetes version in $APISERVER_SRC/go.mod"
K8S_LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=${BASH_REMATCH[1]} -X $p.gitMinor=${BASH_REMATCH[2]}"
  K8S_LDFLAGS+=" -X $p.gitTreeState=clean"
done
GO_ENV_KEY+=" $K8S_LDFLAGS"

# go_build NAME PACKAGE INPUT_HASH: build PACKAGE in tests/env/apiserver into bin/NAME.
go_build() {
  local name=$1 pkg=$2 hash=$3 out=$ENV_HOME/bin/$1 t
  if stamp_ok "$name" "$hash" "$out"; then
    log "$name: up to date"
    return
  fi
  log "$name: building $pkg (a cold build takes minutes) ..."
  t=$(now)
  (cd "$APISERVER_SRC" && go build "${GO_BUILD_FLAGS[@]}" -ldflags="$K8S_LDFLAGS" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
  stamp_write "$name" "$hash"
  log "$name: built in $(since "$t")"
}

# ---------------------------------------------------------------- Go binaries
mod_hash=$(cd "$APISERVER_SRC" && cat go.mod go.sum | hash_of)
src_hash=$(cd "$APISERVER_SRC" && { echo "$GO_ENV_KEY"; for f in go.mod go.sum *.go; do echo "== $f"; cat "$f"; done; } | hash_of)
kubectl_hash=$({ echo "$GO_ENV_KEY"; echo "$mod_hash"; } | hash_of)

go_build signalman-apiserver . "$src_hash"
go_build kubectl k8s.io/kubernetes/cmd/kubectl "$kubectl_hash"

helm_hash=$({ echo "$GO_VERSION $(go env GOOS GOARCH) CGO_ENABLED=$CGO_ENABLED ${GO_BUILD_FLAGS[*]}"; echo "helm $HELM_VERSION ldflags-v1"; } | hash_of)
if stamp_ok helm "$helm_hash" "$ENV_HOME/bin/helm"; then
  log "helm: up to date"
else
  log "helm: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION ..."
  t=$(now)
  rm -rf "$ENV_HOME/helm.tmp"
  mkdir -p "$ENV_HOME/helm.tmp"
  # Outside any module: helm's own go.mod decides its dependencies.
  (cd "$ENV_HOME/helm.tmp" && GOBIN="$ENV_HOME/helm.tmp" GOFLAGS= go install "${GO_BUILD_FLAGS[@]}" \
    -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  mv -f "$ENV_HOME/helm.tmp/helm" "$ENV_HOME/bin/helm"
  rm -rf "$ENV_HOME/helm.tmp"
  stamp_write helm "$helm_hash"
  log "helm: built in $(since "$t")"
fi

# ---------------------------------------------------------------- promtool
# `promtool check rules` and `promtool test rules` over the chart's PrometheusRule (tests/monitoring.rs).
[[ $PROMETHEUS_MODULE_VERSION =~ ^v0\.([0-9])([0-9]{2})\.([0-9]+)$ ]] ||
  die "PROMETHEUS_MODULE_VERSION=$PROMETHEUS_MODULE_VERSION is not a v0.3XX.Y module version"
prom_release=v${BASH_REMATCH[1]}.$((10#${BASH_REMATCH[2]})).${BASH_REMATCH[3]} # v0.315.1 -> v3.15.1
PROMTOOL_LDFLAGS="-s -w -X github.com/prometheus/common/version.Version=${prom_release#v}"
PROMTOOL_LDFLAGS+=" -X github.com/prometheus/common/version.Branch=$prom_release"
# Without service discovery (Prometheus's own build tag): promtool's rule checks and tests need
# none of the cloud SDKs it would otherwise compile, which halves a cold build.
PROMTOOL_TAGS=remove_all_sd
promtool_hash=$({ echo "$GO_VERSION $(go env GOOS GOARCH) CGO_ENABLED=$CGO_ENABLED ${GO_BUILD_FLAGS[*]}"; echo "promtool $PROMETHEUS_MODULE_VERSION $PROMTOOL_LDFLAGS $PROMTOOL_TAGS"; } | hash_of)
if stamp_ok promtool "$promtool_hash" "$ENV_HOME/bin/promtool"; then
  log "promtool: up to date"
else
  log "promtool: building github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION ($prom_release; a cold build takes minutes) ..."
  t=$(now)
  # Built inside the module as downloaded from the proxy, as its own main module: its go.mod
  # and go.sum pin every dependency, and its replace directive (which `go install pkg@version`
  # refuses) applies; not its go.work (a development workspace of modules the zip lacks).
  prom_dir=$(cd "$ENV_HOME" && GOFLAGS= go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" |
    sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
  [ -f "$prom_dir/go.mod" ] || die "go mod download github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION gave no module directory"
  (cd "$prom_dir" && GOWORK=off GOFLAGS=-mod=readonly go build "${GO_BUILD_FLAGS[@]}" -tags "$PROMTOOL_TAGS" -ldflags="$PROMTOOL_LDFLAGS" \
    -o "$ENV_HOME/bin/promtool.tmp" ./cmd/promtool)
  mv -f "$ENV_HOME/bin/promtool.tmp" "$ENV_HOME/bin/promtool"
  stamp_write promtool "$promtool_hash"
  log "promtool: built in $(since "$t")"
fi

# ---------------------------------------------------------------- release tools
# scripts/release.sh and its test (tests/release.rs): an OCI registry program and an OCI
# client that copies a multi-arch image layout into a registry, each from its Go module.
ORAS_VERSION=v1.3.6
REGISTRY_VERSION=v3.0.0 # github.com/distribution/distribution/v3, the CNCF registry
# go_install NAME PACKAGE@VERSION: `go install` outside any module (the tool's own go.mod
# decides its dependencies) into bin/NAME.
go_install() {
  local name=$1 pkg=$2 hash t
  hash=$({ echo "$GO_VERSION $(go env GOOS GOARCH) CGO_ENABLED=$CGO_ENABLED ${GO_BUILD_FLAGS[*]}"; echo "$pkg"; } | hash_of)
  if stamp_ok "$name" "$hash" "$ENV_HOME/bin/$name"; then
    log "$name: up to date"
    return
  fi
  log "$name: go install $pkg (a cold build takes minutes) ..."
  t=$(now)
  rm -rf "$ENV_HOME/$name.tmp"
  mkdir -p "$ENV_HOME/$name.tmp"
  (cd "$ENV_HOME/$name.tmp" && GOBIN="$ENV_HOME/$name.tmp" GOFLAGS= go install "${GO_BUILD_FLAGS[@]}" -ldflags="-s -w" "$pkg")
  mv -f "$ENV_HOME/$name.tmp/$(basename "${pkg%@*}")" "$ENV_HOME/bin/$name"
  rm -rf "$ENV_HOME/$name.tmp"
  stamp_write "$name" "$hash"
  log "$name: built in $(since "$t")"
}
go_install oras "oras.land/oras/cmd/oras@$ORAS_VERSION"
go_install registry "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"

# The arm64 half of a release: Rust's standard library for aarch64 and a C cross compiler
# (aws-lc, under rustls, has C in it), linked statically like the amd64 half.
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  log "rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu >&2 || log "no aarch64 standard library: scripts/release.sh cannot build arm64 here"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross ||
    log "no aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu): scripts/release.sh cannot build arm64 here"
fi

# ---------------------------------------------------------------- health checker
# Its own module (the GitOps tools' libraries), outside the API server's.
HEALTH_SRC=$REPO_ROOT/tests/health
health_hash=$(cd "$HEALTH_SRC" && { echo "$GO_ENV_KEY"; for f in go.mod go.sum *.go; do echo "== $f"; cat "$f"; done; } | hash_of)
if stamp_ok signalman-health "$health_hash" "$ENV_HOME/bin/signalman-health"; then
  log "signalman-health: up to date"
else
  log "signalman-health: building tests/health ..."
  t=$(now)
  (cd "$HEALTH_SRC" && go build "${GO_BUILD_FLAGS[@]}" -ldflags="-s -w" -o "$ENV_HOME/bin/signalman-health.tmp" .)
  mv -f "$ENV_HOME/bin/signalman-health.tmp" "$ENV_HOME/bin/signalman-health"
  stamp_write signalman-health "$health_hash"
  log "signalman-health: built in $(since "$t")"
fi

# ---------------------------------------------------------------- node (SIGNALMAN_NODE=1)
# The programs of a real kubelet node (`signalman-env up --node`, tests/it/node.rs): the
# kubelet and the control-plane controllers from the API server's module, containerd, the CNI
# plugins and a sandbox image; and the Debian tools they call.
CONTAINERD_VERSION=v2.4.2
CNI_PLUGINS_VERSION=v1.10.0
NODE_SRC=$SCRIPT_DIR/node
if [ "${SIGNALMAN_NODE:-0}" = 1 ]; then
  need_apt=()
  for tool in runc iptables conntrack socat nft; do
    command -v $tool >/dev/null || [ -x /usr/sbin/$tool ] || need_apt+=("${tool/#nft/nftables}")
  done
  if [ ${#need_apt[@]} -gt 0 ]; then
    apt_install "${need_apt[@]}" || die "the node needs ${need_apt[*]}: apt-get install ${need_apt[*]}"
  fi
  command -v gcc >/dev/null || apt_install gcc libc6-dev || die "gcc is missing (it builds the sandbox image)"

  node_hash=$({ echo "$GO_ENV_KEY"; echo "$mod_hash"; } | hash_of)
  for cmd in kubelet kube-proxy kube-controller-manager kube-scheduler; do
    go_build "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$node_hash"
  done

  # go_install NAME VERSION_HASH_KEY DIR PACKAGE@VERSION...: outside any module, so that each
  # module's own go.mod decides its dependencies.
  go_install() {
    local name=$1 key=$2 dir=$3 t hash
    shift 3
    hash=$({ echo "$GO_VERSION $(go env GOOS GOARCH) CGO_ENABLED=$CGO_ENABLED ${GO_BUILD_FLAGS[*]}"; echo "$key $*"; } | hash_of)
    if stamp_ok "$name" "$hash" "$dir"; then
      log "$name: up to date"
      return
    fi
    log "$name: go install $* ..."
    t=$(now)
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && GOBIN="$dir.tmp" GOFLAGS= go install "${GO_BUILD_FLAGS[@]}" -ldflags="$key" "$@")
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    stamp_write "$name" "$hash"
    log "$name: built in $(since "$t")"
  }
  ctrd=github.com/containerd/containerd/v2
  go_install containerd "-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION" "$ENV_HOME/containerd" \
    "$ctrd/cmd/containerd@$CONTAINERD_VERSION" "$ctrd/cmd/ctr@$CONTAINERD_VERSION" \
    "$ctrd/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  cni=github.com/containernetworking/plugins/plugins
  # loopback too: containerd sets up each pod's lo with it.
  go_install cni-plugins "-s -w" "$ENV_HOME/cni-bin" "$cni/main/bridge@$CNI_PLUGINS_VERSION" \
    "$cni/ipam/host-local@$CNI_PLUGINS_VERSION" "$cni/main/loopback@$CNI_PLUGINS_VERSION"

  pause_hash=$({ gcc --version | head -1; cat "$NODE_SRC/pause.c" "$NODE_SRC/pause_image.py"; } | hash_of)
  if stamp_ok pause-image "$pause_hash" "$ENV_HOME/images/pause.tar"; then
    log "pause image: up to date"
  else
    t=$(now)
    mkdir -p "$ENV_HOME/images"
    gcc -Os -static -o "$ENV_HOME/images/pause" "$NODE_SRC/pause.c"
    strip "$ENV_HOME/images/pause"
    python3 "$NODE_SRC/pause_image.py" "$ENV_HOME/images/pause" registry.local/pause:3.10 "$ENV_HOME/images/pause.tar.tmp"
    mv -f "$ENV_HOME/images/pause.tar.tmp" "$ENV_HOME/images/pause.tar"
    stamp_write pause-image "$pause_hash"
    log "pause image: built in $(since "$t")"
  fi
fi

# ---------------------------------------------------------------- Python venv
if [ ! -f "$REQUIREMENTS" ]; then
  log "$REQUIREMENTS is missing: writing a placeholder"
  mkdir -p "$(dirname "$REQUIREMENTS")"
  echo 'moto[server]==5.2.5' >"$REQUIREMENTS"
fi
VENV=$ENV_HOME/venv
venv_hash=$({ command -v python3; python3 --version; cat "$REQUIREMENTS"; } 2>&1 | hash_of)
if stamp_ok venv "$venv_hash" "$VENV/bin/python"; then
  log "venv: up to date"
else
  log "venv: python3 -m venv + pip install -r ${REQUIREMENTS#"$REPO_ROOT"/} ..."
  t=$(now)
  rm -rf "$VENV" "$ENV_HOME/stamps/venv"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS" >&2
  stamp_write venv "$venv_hash"
  log "venv: installed in $(since "$t")"
fi

log "done in $(since "$T0"): $ENV_HOME/{bin/signalman-apiserver,bin/kubectl,bin/helm,bin/signalman-health,bin/promtool,bin/oras,bin/registry,venv}"
[ "${SIGNALMAN_NODE:-0}" != 1 ] || log "node: $ENV_HOME/{bin/kubelet,bin/kube-*,containerd,cni-bin,images/pause.tar}"
