#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds the local environment (cached after
# the first run), checks formatting and lints, then runs every unit and integration test
# against the real kube-apiserver, moto's SWF and the SSM Automation emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

# As root, also a real node's programs: tests/it/node.rs runs the chart's pods on it
# (SIGNALMAN_NODE=0 leaves it out; the test then says so and passes).
if [ "$(id -u)" = 0 ]; then export SIGNALMAN_NODE=${SIGNALMAN_NODE:-1}; fi
bash tests/env/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# Integration tests share one environment per test binary; two threads keep a 2-core
# machine responsive while the API server, moto and the operator processes run.
cargo test --workspace --no-fail-fast -- --test-threads="${SIGNALMAN_TEST_THREADS:-4}"

echo "== exactly-once tests again, with the AWS side lagging"
# The emulators hide every write from readers for 1.5-3 s (longer than the operator's settle
# time in tests), as AWS does for a while after a send; verification must read again after
# the recheck wait instead of sending twice.
SIGNALMAN_EMU_LAG=1500-3000 SIGNALMAN_TEST_VERIFY_RECHECK_MS=5000 \
  cargo test -p signalman --test it --no-fail-fast -- --test-threads="${SIGNALMAN_TEST_THREADS:-4}" \
  crash:: faults:: leader:: lag:: gitops::a_signal_deleted_and_created_again_is_not_sent_twice

echo "== kill, burst and fault tests again, sending as a role a SignalPolicy names"
# Every test namespace's policy names this role: the operator assumes it (STS AssumeRole at the
# emulator) for every send and verification; exactly once must not depend on the identity.
SIGNALMAN_TEST_POLICY_ROLE=arn:aws:iam::123456789012:role/SignalmanTeam \
  cargo test -p signalman --test it --no-fail-fast -- --test-threads="${SIGNALMAN_TEST_THREADS:-4}" \
  crash:: faults::applied faults::server_error faults::throttling leader::

echo "== kill, burst, fault and recreation tests again, on IRSA credentials"
# No static keys: every operator assumes a role with a projected ServiceAccount token from the
# real API server (TokenRequest), exchanged at the emulator's STS; every process and every
# refresh signs as another session of the role, as on EKS by default.
SIGNALMAN_TEST_IRSA=1 \
  cargo test -p signalman --test it --no-fail-fast -- --test-threads="${SIGNALMAN_TEST_THREADS:-4}" \
  crash:: faults::applied faults::server_error faults::throttling leader:: \
  evidence::deleted evidence::a_failed_check evidence::a_label evidence::two_processes
