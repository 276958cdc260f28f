#!/usr/bin/env bash
# RUSTC_WRAPPER of fuzz/run.sh: adds libFuzzer's coverage instrumentation to the fuzzed code only,
# the library (package account-sync) and the targets (account-sync-fuzz), never to a dependency
# or a build script. So every dependency is compiled exactly as the main package's tests compile
# it, and the build reuses what `cargo test` left in target/.
#
# The options are those cargo-fuzz passes with `--sanitizer none`, all stable rustc options.
rustc=$1
shift
crate=
prev=
for arg in "$@"; do
  [ "$prev" = --crate-name ] && crate=$arg
  prev=$arg
done
case "${CARGO_PKG_NAME:-}:$crate" in
  account-sync:build_script_build | account-sync-fuzz:build_script_build) ;;
  account-sync:* | account-sync-fuzz:*)
    exec "$rustc" "$@" \
      -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
      --cfg fuzzing
    ;;
esac
exec "$rustc" "$@"
