#!/usr/bin/env bash
# A real Kubernetes node next to signalman-env's API server (`signalman-env up --node`,
# signalman_testenv::Node): containerd + runc + the bridge CNI plugin, a kubelet registered as
# node 127.0.0.1, kube-proxy, kube-controller-manager and kube-scheduler, and relays from the
# bridge's gateway to loopback services (pods cannot reach the host's 127.0.0.1).
#
#   node.sh STATE_DIR KUBECONFIG APISERVER_DIR [PORT...]
#
# APISERVER_DIR holds the API server's ca.crt and sa.key. Each PORT (the API server's first)
# is relayed from 10.244.77.1:PORT to 127.0.0.1:PORT; the API server's also backs the
# `kubernetes` Service, so pods use in-cluster config. Prints "ready 127.0.0.1" once the node
# is Ready, then runs until SIGTERM/SIGINT, and then stops everything and undoes every change
# to the machine (sysctls, iptables, mounts, cgroups, the bridge, directories it created). It
# works without the API server (which may die first), so a killed test binary (PDEATHSIG)
# still leaves the machine as it was. Root only; one node per machine at a time (a lock).
set -uo pipefail

S=$1 KUBECONFIG=$2 APIDIR=$3
shift 3
API_PORT=$1
RELAY_PORTS=("$@")
export KUBECONFIG
HOME_DIR=${SIGNALMAN_ENV_HOME:?}
BIN=$HOME_DIR/bin
export PATH=$HOME_DIR/containerd:$BIN:$PATH
NODE=127.0.0.1
BRIDGE=rn0
GATEWAY=10.244.77.1
POD_CIDR=10.244.77.0/24
SOCK=$S/containerd/containerd.sock
TAG=signalman-node # the comment on our own iptables rule
# What kubelet, kube-proxy and the bridge plugin may set, restored on exit.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Host paths the programs create whatever their flags say; removed on exit if they were absent.
HOST_PATHS=(/run/netns /var/log/pods /var/log/containers /var/lib/cni /run/containerd /var/lib/containerd
  /var/lib/kubelet /etc/kubernetes /run/runc /opt/cni /etc/cni /var/run/kubernetes)

log() { printf '[node %(%T)T] %s\n' -1 "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
[ "$(id -u)" = 0 ] || die "the node needs root (mounts, cgroups, iptables)"
for f in kubelet kube-proxy kube-controller-manager kube-scheduler; do
  [ -x "$BIN/$f" ] || die "$BIN/$f is missing: SIGNALMAN_NODE=1 tests/env/setup.sh"
done
mkdir -p "$S"/{containerd,cni/net.d,cni/data,kubelet,logs}
exec 8>/run/lock/signalman-node.lock
flock -w 600 8 || die "another node runs on this machine"

declare -A PIDS=()
start() { # start NAME CMD...: in the background, logging to $S/logs/NAME.log, dying with us
  local name=$1
  shift
  # Not holding the lock (8): a straggler would keep the next node from starting.
  setpriv --pdeathsig KILL -- "$@" >"$S/logs/$name.log" 2>&1 8>&- &
  PIDS[$name]=$!
}
stop() { # stop NAME...: SIGTERM, then SIGKILL after 10 s
  local name pid i
  for name in "$@"; do
    pid=${PIDS[$name]:-}
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "PIDS[$name]"
  done
}

# ---------------------------------------------------------------- record, then undo on exit
for k in "${SYSCTLS[@]}"; do
  v=$(sysctl -n "$k" 2>/dev/null) && printf '%s=%s\n' "$k" "$v"
done >"$S/sysctl.saved"
for p in "${HOST_PATHS[@]}"; do [ -e "$p" ] || echo "$p"; done >"$S/paths.absent"
nft list tables >"$S/nft.before" 2>/dev/null || die "nft is missing (apt-get install nftables)"
cgroup_before=$(ls -d /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods 2>/dev/null)
[ -z "$cgroup_before" ] || die "kubepods cgroups exist already ($cgroup_before): another kubelet?"

restore_sysctls() {
  local line
  while IFS= read -r line; do sysctl -qw "$line" 2>/dev/null; done <"$S/sysctl.saved"
}

# Delete every rule that jumps to a KUBE-* chain and every KUBE-* chain (kubelet's and
# kube-proxy's), and our own FORWARD rule, in every table of both families.
clean_iptables() {
  local fam table rule chain
  for fam in iptables ip6tables; do
    command -v $fam >/dev/null || continue
    $fam -w -D FORWARD -s $POD_CIDR ! -d $POD_CIDR -m comment --comment $TAG -j DROP 2>/dev/null
    for table in filter nat mangle raw; do
      $fam-save -t $table 2>/dev/null | grep -E '^-A [^ ]+ .*-j KUBE-' | while IFS= read -r rule; do
        eval "$fam -w -t $table -D ${rule#-A }" 2>/dev/null
      done
      for chain in $($fam-save -t $table 2>/dev/null | sed -nE 's/^:(KUBE-[^ ]+) .*/\1/p'); do
        $fam -w -t $table -F "$chain" 2>/dev/null
      done
      for chain in $($fam-save -t $table 2>/dev/null | sed -nE 's/^:(KUBE-[^ ]+) .*/\1/p'); do
        $fam -w -t $table -X "$chain" 2>/dev/null
      done
    done
  done
}

cleanup() {
  trap '' TERM INT
  log "stopping"
  stop kube-scheduler kube-controller-manager kube-proxy
  for name in "${!PIDS[@]}"; do [[ $name == relay-* ]] && stop "$name"; done
  stop kubelet
  if [ -S "$SOCK" ]; then
    # Every container, sandboxes too: the API server may be gone, so not through the kubelet.
    for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr -a "$SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1
    done
    sleep 0.5
    for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr -a "$SOCK" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1
      ctr -a "$SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1
    done
  fi
  stop containerd
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null # only our own shims
  "$BIN/kube-proxy" --cleanup >"$S/logs/kube-proxy-cleanup.log" 2>&1
  # Pod network namespaces (their veths go with them), then every mount under the state dir.
  for ns in $(ls /run/netns 2>/dev/null); do
    grep -qxF "$ns" "$S/netns.before" 2>/dev/null || ip netns delete "$ns" 2>/dev/null
  done
  findmnt -rn -o TARGET | grep -F "$S/" | sort -r | while IFS= read -r m; do umount -l "$m"; done
  findmnt -rn -o TARGET | grep -qxF "$S/kubelet" && umount -l "$S/kubelet"
  for d in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do # v2, v1
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  ip link del $BRIDGE 2>/dev/null
  clean_iptables
  # iptables-nft leaves the tables it made, empty: drop those that were not there before.
  nft list tables 2>/dev/null | grep -vxF -f "$S/nft.before" | while read -r _ family table; do
    nft delete table "$family" "$table"
  done
  restore_sysctls
  while IFS= read -r p; do
    [ -n "$p" ] && rm -rf "$p"
  done <"$S/paths.absent"
  log "stopped; the machine is as it was"
}
trap cleanup EXIT
trap 'exit 0' TERM INT
ls /run/netns 2>/dev/null >"$S/netns.before"

# ---------------------------------------------------------------- configuration
cat >"$S/containerd/config.toml" <<EOF
version = 4
root = '$S/containerd/root'
state = '$S/containerd/state'
[plugins.'io.containerd.server.v1.grpc']
  address = '$SOCK'
[plugins.'io.containerd.server.v1.ttrpc']
  address = '$SOCK.ttrpc'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.local/pause:3.10'
[plugins.'io.containerd.cri.v1.runtime']
  # This VM's root lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$HOME_DIR/cni-bin']
    conf_dir = '$S/cni/net.d'
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(command -v runc)'
        SystemdCgroup = false
EOF
# ipMasq off and a FORWARD drop: pod traffic stays on this machine.
cat >"$S/cni/net.d/10-signalman.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "signalman", "plugins": [{"type": "bridge", "bridge": "$BRIDGE",
 "isGateway": true, "ipMasq": false, "hairpinMode": true, "ipam": {"type": "host-local",
 "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$S/cni/data"}}]}
EOF
# Anonymous + AlwaysAllow: the API server reaches the kubelet (logs, exec, proxy) without a
# client certificate. Low eviction and image GC thresholds: a busy shared disk must not evict
# the pods or delete the imported images.
cat >"$S/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$SOCK
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
rotateCertificates: false
serverTLSBootstrap: false
evictionHard: {memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: $S/pod-logs
EOF
# Zero conntrack settings: kube-proxy leaves the kernel's alone.
cat >"$S/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE
bindAddress: 127.0.0.1
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: $KUBECONFIG}
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF

# ---------------------------------------------------------------- start
t0=$(date +%s.%N)
iptables -w -I FORWARD -s $POD_CIDR ! -d $POD_CIDR -m comment --comment $TAG -j DROP ||
  die "iptables FORWARD rule"
# The bridge exists before any pod, so that the relays can bind its gateway address.
ip link add $BRIDGE type bridge && ip addr add $GATEWAY/24 dev $BRIDGE && ip link set $BRIDGE up ||
  die "creating bridge $BRIDGE"

start containerd containerd --config "$S/containerd/config.toml"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "containerd did not start: $(tail -5 "$S/logs/containerd.log")"
ctr -a "$SOCK" -n k8s.io images import "$HOME_DIR/images/pause.tar" >/dev/null ||
  die "importing the pause image"

for port in "${RELAY_PORTS[@]}"; do
  start "relay-$port" socat "TCP-LISTEN:$port,bind=$GATEWAY,fork,reuseaddr" "TCP:127.0.0.1:$port"
done

start kubelet "$BIN/kubelet" --config "$S/kubelet.yaml" --kubeconfig "$KUBECONFIG" \
  --root-dir "$S/kubelet" --cert-dir "$S/kubelet/pki" --hostname-override $NODE
start kube-proxy "$BIN/kube-proxy" --config "$S/kube-proxy.yaml"
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
  --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
  --service-account-private-key-file "$APIDIR/sa.key" --root-ca-file "$APIDIR/ca.crt" \
  --use-service-account-credentials=false --controllers '*'
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG" \
  --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false

# The `kubernetes` Service (10.96.0.1:443) has no endpoints (the API server listens on loopback
# only, which an EndpointSlice may not hold): back it with the relay of the API server's port.
kubectl apply -f - >/dev/null <<EOF || die "the kubernetes EndpointSlice"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-node-relay
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes}
addressType: IPv4
endpoints: [{addresses: ["$GATEWAY"], conditions: {ready: true}}]
ports: [{name: https, port: $API_PORT, protocol: TCP}]
EOF

until kubectl wait --for=condition=Ready node/$NODE --timeout=5s >/dev/null 2>&1; do
  for name in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$name]}" 2>/dev/null || die "$name exited: $(tail -5 "$S/logs/$name.log")"
  done
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { exit !(b - a > 180) }' && die "node not Ready in 180 s"
  sleep 1
done
# The kubelet sets kernel tunables once at start; this machine is shared.
restore_sysctls
log "node $NODE Ready in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }') (logs in $S/logs)"
echo "ready $NODE"

# Runs until a signal; a component that dies ends the node.
wait -n "${PIDS[@]}"
log "a component exited; stopping the node"
exit 1
