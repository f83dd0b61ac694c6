#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every parser the tools expose to outside
# files: .npy matrices and data sets, index/calib/alloc/metrics JSON, perturb's partial results
# and resume unit files, the option and budget grammars, .pth and .safetensors checkpoints, IDX
# and CIFAR binary files, ONNX models, JPEG and PNG images.
#
#   scripts/fuzz.sh [SECONDS] [--smoke]
#
# Runs each target for SECONDS (default 60). Default: an optimised build of all 15 targets.
# --smoke: a quick unoptimised build of the 13 targets that do not need candle (the checkpoint
# targets build candle, several minutes on 2 cores), for CI (`make fuzz-smoke`).
# FUZZ_TARGETS="idx options" restricts the targets. Works on the stable toolchain: no sanitizer
# (--sanitizer none), so no nightly flag is needed.
#
# The corpus grows in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>, kept between runs);
# a crash stops the script with exit 1 and leaves its input in fuzz/artifacts/<target>/. Turn it
# into a regression test (see clado/src/data/tests.rs, mod fuzz_regressions) and copy the input
# to fuzz/seeds/<target>/ so every later run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=60
SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [--smoke]" >&2; exit 2 ;;
    *) SECONDS_PER_TARGET=$arg ;;
  esac
done

ROOT=.deps/cargo-fuzz
if [ ! -x "$ROOT/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $ROOT" >&2
  cargo install cargo-fuzz --locked --root "$ROOT" --quiet
fi
export PATH="$PWD/$ROOT/bin:$PATH"

NN_FREE="npy_matrix npy_dataset json_index json_calib json_alloc json_metrics perturb_units options budget idx cifar onnx images"
if [ "$SMOKE" = 1 ]; then
  BUILD=(--dev --sanitizer none)
  DEFAULT_TARGETS=$NN_FREE
else
  BUILD=(--sanitizer none --features nn)
  DEFAULT_TARGETS="$NN_FREE checkpoint_safetensors checkpoint_pth"
fi
TARGETS=${FUZZ_TARGETS:-$DEFAULT_TARGETS}

cd fuzz
cargo fuzz build "${BUILD[@]}" >&2
status=0
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
  log=$(mktemp)
  if cargo fuzz run "${BUILD[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "fuzz: $t: ${execs:-?} inputs in ${SECONDS_PER_TARGET} s (${rate:-?}/s), corpus $(ls "corpus/$t" | wc -l) files"
  else
    echo "fuzz: $t: CRASH" >&2
    grep -E "panicked|ERROR|Test unit written|^SUMMARY" "$log" >&2 || tail -20 "$log" >&2
    status=1
  fi
  rm -f "$log"
done
exit $status
