#!/usr/bin/env bash
# Fuzzes each cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS (default
# 60), one after the other, starting from the checked-in corpus
# (fuzz/corpus/<target>/), which it leaves as it is: new inputs go to a
# scratch directory, $FUZZ_WORK/<target> ($FUZZ_WORK defaults to a temporary
# directory, removed at the end unless set). docs/security.md ("Fuzzing")
# says how to fold what they found back into the corpus.
#
# Needs a nightly toolchain, and installs cargo-fuzz when it is missing;
# without nightly it prints "fuzzing SKIPPED: no nightly toolchain" and
# succeeds. A crash, a hang (over 10 s on one input) or a leak fails it, and
# libFuzzer names the reproducer, under fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh          # 60 s per target, as CI runs it
#   nice scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzzing SKIPPED: no nightly toolchain"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "--- installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if [ -n "${FUZZ_WORK:-}" ]; then
  work=$FUZZ_WORK
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

echo "--- building the fuzz targets ($(cargo +nightly --version))"
cargo +nightly fuzz build
for target in $(cargo +nightly fuzz list); do
  echo "--- fuzzing $target for ${seconds}s"
  mkdir -p "$work/$target"
  cargo +nightly fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
echo "--- fuzzing: no crash in ${seconds}s per target"
