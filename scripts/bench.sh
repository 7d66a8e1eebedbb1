#!/usr/bin/env bash
# The benchmark (bench/README.md): latency, throughput against the emulator's ceiling, quota
# fidelity (known and unknown quotas), memory and restart along a scale curve (1k, 10k, 100k
# finished signals, plotted), instructions per signal under callgrind, the aws CLI, cost per
# signal, all in one run on the local environment, written to bench/results/<name>.md, .json
# and <name>-scale.png, with issue 12's targets judged row by row beside the previous run.
#
#   scripts/bench.sh                      full run, release builds, results in bench/results/results.*
#   scripts/bench.sh --name mine          another name; any signalman-bench flag passes through
#   scripts/bench.sh --smoke              tiny sizes, debug builds, results in bench/results/tmp/
#
# The operator measured is the release build (`cargo build --release -p signalman`; a cold
# release build of kube and the AWS SDKs takes several minutes on 2 cores). The benchmark
# binary hosts the AWS emulator and the ceiling loop, so it is built in the same profile.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/env/setup.sh

# The aws CLI (scenario 6), pinned, in a venv of its own.
venv=.env-cache/bench-venv
if ! cmp -s bench/requirements.txt "$venv/requirements.txt" 2>/dev/null || [ ! -x "$venv/bin/aws" ]; then
  echo "== installing the aws CLI into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
  cp bench/requirements.txt "$venv/requirements.txt"
fi

target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = "--smoke" ]; then
  shift
  cargo build -p signalman -p signalman-bench
  exec "$target/debug/signalman-bench" --smoke --name smoke --out-dir bench/results/tmp "$@"
fi

# Instruction counts need valgrind (callgrind): installed here when the machine lets us; the
# benchmark skips that scenario when it is missing. CI runs only --smoke, which never needs it.
if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install valgrind (instruction counts)"
    apt-get install -y -qq valgrind >/dev/null || echo "== valgrind not installed: instruction counts skipped"
  else
    echo "== no valgrind (apt-get install valgrind): instruction counts skipped"
  fi
fi

echo "== cargo build --release -p signalman -p signalman-bench"
cargo build --release -p signalman -p signalman-bench
echo "== load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
exec "$target/release/signalman-bench" "$@"
