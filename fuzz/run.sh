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
all=(event_decoder answer_check answer_import answer_multi_import backfill_lines usersig)
targets=("${@:-${all[@]}}")

# What cargo-fuzz passes with `--sanitizer none`: libFuzzer's coverage instrumentation, all of it
# stable rustc options. Given to the fuzzed crates only (`--target`), not to build scripts and
# proc macros. Panics on overflow and failed debug assertions: the release profile in Cargo.toml.
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 --cfg fuzzing"
export CARGO_TARGET_DIR="$PWD/target"
host=$(rustc -vV | sed -n 's/^host: //p')
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --locked --release -j "${CARGO_BUILD_JOBS:-2}" --target "$host" "${bins[@]}"
if [ "$seconds" = 0 ]; then
  echo "fuzz: built in fuzz/target/$host/release/"
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
  if "target/$host/release/$t" \
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
