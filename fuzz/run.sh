#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer, stable toolchain) and runs each for SECONDS (default 5)
# from its checked-in corpus; exits non-zero if any target finds a crash, a hang or runaway
# memory. See docs/fuzzing.md.
#
#   fuzz/run.sh [SECONDS [TARGET...]]     (SECONDS 0: build only)
#
# What a run finds that is new goes into a temporary directory, never into fuzz/corpus/; a
# crashing input is written to fuzz/artifacts/TARGET/. Extra libFuzzer options can be passed in
# FUZZ_ARGS (e.g. FUZZ_ARGS="-jobs=2 -workers=2").
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-5}
shift || true
all=(event_decoder avro_record protobuf_record answer_check answer_delete answer_import answer_multi_import backfill_lines usersig)
targets=("${@:-${all[@]}}")

# Built on the stable toolchain with plain `cargo build`, into the main package's target/: the
# fuzz workspace takes the main package's Cargo.lock (plus libfuzzer-sys) and dev profile, and
# rustc-wrapper.sh instruments only the library and the targets, so the dependencies that
# `cargo test` compiled are reused as they are.
cp ../Cargo.lock Cargo.lock
export CARGO_TARGET_DIR="$PWD/../target"
export RUSTC_WRAPPER="$PWD/rustc-wrapper.sh"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build -j "${CARGO_BUILD_JOBS:-2}" "${bins[@]}"
bin=$CARGO_TARGET_DIR/debug
if [ "$seconds" = 0 ]; then
  echo "fuzz: built in target/debug/"
  exit 0
fi

# Inputs larger than this are never tried: an event, an answer, a backfill file of a few lines
# or a UserSig is well within it, and small inputs keep the runs fast.
max_len() {
  case "$1" in
    usersig) echo 1024 ;;
    *) echo 4096 ;;
  esac
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  mkdir -p "artifacts/$t" "$work/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: memory beyond 1 GiB is a finding.
  # libFuzzer's progress lines go to a log; shown are its start, its summary, and on a failure
  # the report (the panic, the input as hex and base64).
  log="$work/$t.log"
  # shellcheck disable=SC2086
  if "$bin/$t" \
      -max_total_time="$seconds" -max_len="$(max_len "$t")" \
      -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" "${dict[@]}" ${FUZZ_ARGS:-} \
      "$work/$t" "corpus/$t" >"$log" 2>&1; then
    grep -E '^(#[0-9]+[[:space:]]+INITED|Done [0-9]+ runs|stat::)' "$log" || true
  else
    failed+=("$t")
    grep -E '^#[0-9]+[[:space:]]+INITED' "$log" || true
    awk '/panicked at|ERROR: libFuzzer/ { shown = 1 } shown' "$log" | head -n 200
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; docs/fuzzing.md says what next)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
