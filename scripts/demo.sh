#!/usr/bin/env bash
# signalman, end to end on this machine: a real kube-apiserver, moto's SWF and the SSM
# Automation emulator (tests/env), AWS workflows and automations waiting for signals, the
# examples/ applied with the real ids, the operator sending each signal once, and the
# evidence from both sides.
#
#   scripts/demo.sh            # exit 0 only when every signal Succeeded and AWS agrees
#
# The first run on a fresh machine builds the environment (tests/env/setup.sh, minutes);
# after that it takes well under a minute. Everything it starts is stopped when it exits.
# SIGNALMAN_DEMO_TIMEOUT (default 60) bounds the wait for the signals, in seconds;
# SIGNALMAN_DEMO_KEEP=1 keeps the work directory (env file, operator log) after a success.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
NS=demo
TIMEOUT=${SIGNALMAN_DEMO_TIMEOUT:-60}
T0=$(date +%s.%N)

if [ -t 1 ]; then B=$'\033[1m' R=$'\033[1;31m' N=$'\033[0m'; else B= R= N=; fi
heading() { printf '\n%s=== %s ===%s\n' "$B" "$*" "$N"; }
info() { printf '%s\n' "$*"; }
die() { printf '\n%sDEMO FAILED:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/signalman-demo.XXXXXX")
ENV_PID=
OP_PID=
KEEP_WORK=1
stop_pid() { # pid name
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_pid "$OP_PID"
  stop_pid "$ENV_PID"
  wait 2>/dev/null || true
  if [ "$rc" = 0 ] && [ "$KEEP_WORK" = 0 ] && [ "${SIGNALMAN_DEMO_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    printf '(logs kept in %s)\n' "$WORK" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

operator_log_tail() {
  [ -f "$WORK/operator.log" ] || return 0
  printf '\n--- last lines of the operator log (%s) ---\n' "$WORK/operator.log" >&2
  tail -n 40 "$WORK/operator.log" >&2
}

# phases: one "Kind/name=Phase" line per signal in the namespace
phases() {
  kubectl get signals -n "$NS" \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}={.status.phase}{"\n"}{end}'
}

# wait_settled LIMIT_SECONDS [KIND/NAME]: until the one signal (or all) ended
wait_settled() {
  local limit=$1 only=${2:-} start=$SECONDS out pending
  while :; do
    out=$(phases)
    [ -n "$only" ] && out=$(grep "^$only=" <<<"$out" || true)
    pending=$(grep -Ev '=(Succeeded|Failed)$' <<<"$out" || true)
    if [ -n "$out" ] && [ -z "$pending" ]; then return 0; fi
    if (( SECONDS - start >= limit )); then
      printf 'still not done after %ss:\n%s\n' "$limit" "$pending" >&2
      return 1
    fi
    kill -0 "$OP_PID" 2>/dev/null || { echo "the operator exited" >&2; return 1; }
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------
heading "Building (tests/env/setup.sh, signalman, signalman-env)"
bash tests/env/setup.sh 2>&1 || die "tests/env/setup.sh failed"
info "cargo build (quiet; the first build on a machine takes minutes)"
cargo build --quiet --bin signalman -p signalman
cargo build --quiet -p signalman-testenv --bin signalman-env
# Where cargo put them: a CARGO_TARGET_DIR set in the environment is honoured.
BIN_DIR=${CARGO_TARGET_DIR:-target}/debug
info "built in $(elapsed)"

heading "Starting the local environment (kube-apiserver, moto SWF, SSM Automation emulator)"
"$BIN_DIR/signalman-env" up --env-file "$WORK/env.sh" >"$WORK/env.log" 2>&1 &
ENV_PID=$!
for _ in $(seq 600); do
  [ -f "$WORK/env.sh" ] && break
  kill -0 "$ENV_PID" 2>/dev/null || { tail -n 30 "$WORK/env.log" >&2; die "signalman-env exited"; }
  sleep 0.5
done
[ -f "$WORK/env.sh" ] || { tail -n 30 "$WORK/env.log" >&2; die "the environment did not come up in 300s"; }
# shellcheck disable=SC1091
source "$WORK/env.sh"
info "kube-apiserver: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
info "AWS emulator:   $AWS_ENDPOINT_URL (SSM, STS; SWF proxied to moto at $SIGNALMAN_MOTO_URL)"
info "operator signs as IAM user $AWS_ACCESS_KEY_ID, default region $AWS_REGION"

heading "Installing the CRDs, namespace $NS"
kubectl apply --server-side -f crds/
kubectl wait --for condition=Established --timeout=60s \
  crd/workflowsignals.signalman.dev crd/automationsignals.signalman.dev \
  crd/signalpolicies.signalman.dev crd/signalreceipts.signalman.dev
kubectl create namespace "$NS"
# The operator denies by default: the cluster administrator's policy lets "demo" send everything.
kubectl apply -f examples/policies/one-namespace-everything.yaml

heading "AWS side: workflows and automations waiting for signals"
PY="$REPO/.env-cache/venv/bin/python"
[ -n "${SIGNALMAN_ENV_HOME:-}" ] && PY="$SIGNALMAN_ENV_HOME/venv/bin/python"
"$PY" scripts/demo_aws.py setup "$WORK/aws.json"
jget() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]][sys.argv[3]] if len(sys.argv) < 5 else d[sys.argv[2]][sys.argv[3]][sys.argv[4]])' "$WORK/aws.json" "$@"; }

heading "Applying examples/ to namespace $NS (placeholders replaced by the real ids)"
EXEC_PLACEHOLDER=00000000-0000-0000-0000-000000000000
STEP_PLACEHOLDER=00000000-0000-0000-0000-000000000001
RUN_PLACEHOLDER=22Abc0FjHkExampleRunId0000000000000000000000=
RUN_43=$(jget swf order-43 runId) # the pinned-run example signals order-43's run
render() { # file [execution id] [step execution id]
  sed -e "s|$EXEC_PLACEHOLDER|${2:-$EXEC_PLACEHOLDER}|" \
      -e "s|$STEP_PLACEHOLDER|${3:-$STEP_PLACEHOLDER}|" \
      -e "s|$RUN_PLACEHOLDER|$RUN_43|" "examples/$1"
}
apply() { render "$@" | kubectl apply -n "$NS" -f -; }
apply workflowsignal-minimal.yaml
apply workflowsignal-with-input.yaml
apply workflowsignal-pinned-run.yaml
apply automationsignal-approve.yaml "$(jget ssm approve)"
apply automationsignal-reject.yaml "$(jget ssm reject)"
apply automationsignal-resume.yaml "$(jget ssm resume)"
apply automationsignal-revoke.yaml "$(jget ssm revoke)"
apply automationsignal-startstep.yaml "$(jget ssm startstep)"
info "(stop-step-deploy follows once start-step-deploy has started the step it stops)"

heading "Running the operator"
SIGNALMAN_KUBECONFIG=$KUBECONFIG POD_NAME=demo NO_COLOR=1 \
  "$BIN_DIR/signalman" run >"$WORK/operator.log" 2>&1 &
OP_PID=$!
info "signalman run (pid $OP_PID), log: $WORK/operator.log"
SEND_T0=$(date +%s.%N)
wait_settled "$TIMEOUT" AutomationSignal/start-step-deploy \
  || { operator_log_tail; die "start-step-deploy did not finish within ${TIMEOUT}s"; }
phase=$(kubectl get amsig -n "$NS" start-step-deploy -o jsonpath='{.status.phase}')
[ "$phase" = Succeeded ] || { operator_log_tail; die "start-step-deploy ended $phase: $(kubectl get amsig -n "$NS" start-step-deploy -o jsonpath='{.status.message}')"; }
STEP_ID=$("$PY" scripts/demo_aws.py step-execution-id "$WORK/aws.json" deploy)
info "start-step-deploy Succeeded; step 'deploy' runs as step execution $STEP_ID"
apply automationsignal-stopstep.yaml "$(jget ssm stopstep)" "$STEP_ID"

wait_settled "$TIMEOUT" || { kubectl get signals -n "$NS" >&2 || true; operator_log_tail; die "signals did not finish within ${TIMEOUT}s"; }
SETTLED=$(awk -v a="$SEND_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }')
info "all signals ended ${SETTLED} after the operator started"

heading "kubectl get signals -n $NS"
kubectl get signals -n "$NS"
heading "kubectl get signals -n $NS -o wide"
kubectl get signals -n "$NS" -o wide
heading "kubectl describe wfsig approve-order-42 -n $NS"
kubectl describe wfsig approve-order-42 -n "$NS"

heading "AWS side: what landed"
evidence_ok=1
"$PY" scripts/demo_aws.py evidence "$WORK/aws.json" || evidence_ok=0

heading "Operator log ($(wc -l <"$WORK/operator.log") lines; span prefixes cut, long lines shortened)"
sed -E -e 's/reconciling object\{[^}]*\}: //' -e 's/^([^ ]+)  ?/\1 /' "$WORK/operator.log" | cut -c1-200

heading "Result"
not_ok=$(phases | grep -v '=Succeeded$' || true)
total=$(phases | wc -l)
if [ -n "$not_ok" ]; then
  printf '%s\n' "$not_ok" | while IFS='=' read -r obj ph; do
    kind=${obj%%/*}; name=${obj#*/}
    printf '  %s %s: %s\n' "$obj" "$ph" \
      "$(kubectl get "$kind" "$name" -n "$NS" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}: {.status.message}')"
  done
  operator_log_tail
  die "$(grep -c . <<<"$not_ok") of $total signals did not succeed"
fi
[ "$evidence_ok" = 1 ] || { operator_log_tail; die "all $total signals Succeeded, but the AWS side does not show exactly one signal each"; }
KEEP_WORK=0
info "all $total signals Succeeded, each applied exactly once on the AWS side (total $(elapsed))"
