#!/usr/bin/env bash
# The core integration tests on an independent implementation of the Kafka protocol: tansu
# (Apache-2.0, https://github.com/tansu-io/tansu), on loopback. The mock cluster of every other
# test is librdkafka's own; a behaviour of it taken for one of the worker shows up here.
#
#   .ci/tansu.sh install   builds tansu from crates.io (pinned, --locked; about 9 minutes on 2
#                          cores) unless it is already installed: it is kept outside the checkout
#                          (in $TANSU_ROOT, by default under CARGO_HOME), so it is built once per
#                          machine.
#   .ci/tansu.sh test      starts tansu on a free loopback port, runs the core tests against it
#                          (ACCOUNT_SYNC_TEST_BROKERS, ACCOUNT_SYNC_TEST_BROKER_KIND=tansu), stops it.
#
# What tansu lacks or does wrong, and how the tests deal with it: docs/kafka.md, "Testing on tansu".
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
root="${TANSU_ROOT:-${CARGO_HOME:-$HOME/.cargo}/tansu-$TANSU_VERSION}"
bin="$root/bin/tansu"

# The core: the pipeline end to end (worker, worker_input, lifecycle), kill and restart (crash), members
# joining and leaving, API faults and the systemic pauses (reliability, outage), dead-letter replay
# (dlq_replay). Within them, tests that need what tansu lacks (the mock's fault injection, KIP-848,
# cooperative-sticky) print "SKIPPED <test>: needs …" and return.
core_tests=(worker worker_input lifecycle crash reliability outage dlq_replay)

install() {
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "tansu $TANSU_VERSION: already installed at $bin"
    return
  fi
  # The SQLite storage engine (libsql): it stores records one by one. Not the in-memory one
  # (dynostore, memory://): a fetch from an offset inside a stored batch skips the rest of that
  # batch, so a consumer that resumes from a committed offset mid-batch never sees those records
  # (and ListOffsets answers the last batch's first offset + 1 for the end of the log).
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
    --root "$root" --quiet
  "$bin" --version
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_tests() {
  [ -x "$bin" ] || { echo "tansu is not installed: run .ci/tansu.sh install first" >&2; exit 1; }
  local port dir log pid
  port=$(free_port)
  # Its own directory, for its database (in memory where /dev/shm is: SQLite syncs every
  # produce) and because tansu reads a .env from where it starts.
  dir=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
  log="$PWD/target/tansu-broker.log"
  mkdir -p target
  (cd "$dir" && exec "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine sqlite://tansu.db) >"$log" 2>&1 &
  pid=$!
  trap 'kill '"$pid"' 2>/dev/null || true; rm -rf '"$dir" EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "tansu exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "tansu $TANSU_VERSION listening on 127.0.0.1:$port (log: $log)"
  local args=()
  for t in "${core_tests[@]}"; do args+=(--test "$t"); done
  ACCOUNT_SYNC_TEST_BROKERS="127.0.0.1:$port" ACCOUNT_SYNC_TEST_BROKER_KIND=tansu \
    cargo test -j2 --no-fail-fast "${args[@]}"
}

case "${1:-}" in
  install) install ;;
  test) run_tests ;;
  *) echo "usage: $0 install|test" >&2; exit 2 ;;
esac
