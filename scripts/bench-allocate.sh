#!/usr/bin/env bash
# Benchmark of `allocate` on seeded ResNet-sized instances (22 and 58 layers × 9 options,
# w{2,4,8}a{2,4,8}, indefinite dense G; see allocate/src/synthetic.rs) or on a real matrix: per
# budget of an avg-bits sweep, the wall and CPU seconds, the solver status, the proven gap and
# the nodes.
#
#   scripts/bench-allocate.sh                      # ResNet-20 and ResNet-56, default method
#   FORMULATIONS=linearized,product,projected scripts/bench-allocate.sh 20
#   EXTRA=--no-reduce scripts/bench-allocate.sh 56 # without the exact reductions
#   CLIPPED=1 scripts/bench-allocate.sh            # the same instances after `psd --method clip`
#   MATRIX=out/resnet20/general/loss/G-clip.npy INDEX=out/resnet20/general/loss/index.json \
#     SWEEP=avg-bits=2.25:7:0.25 scripts/bench-allocate.sh    # a real matrix (depths ignored)
#
# FORMULATIONS: `default` (what the tool does), `branch-and-bound` (--method
# branch-and-bound), or a SCIP formulation (--method scip --formulation NAME).
# Targets (issue 6): ResNet-20 every budget proven optimal (gap ≤ 1e-6) in ≤ 5 s;
# ResNet-56 in ≤ 60 s. Wall times depend on the machine's load: CPU seconds are printed too.
set -euo pipefail
cd "$(dirname "$0")/.."
depths=${*:-20 56}
formulations=${FORMULATIONS:-default}
sweep=${SWEEP:-avg-bits=2:8:0.5}
time_limit=${TIME_LIMIT:-60}
cargo build --release --quiet -p allocate --example bench
bench() {
  target/release/examples/bench --formulations "$formulations" --sweep "$sweep" \
    --time-limit "$time_limit" ${EXTRA:-} "$@"
}
if [ -n "${MATRIX:-}" ]; then
  bench --matrix "$MATRIX" --index "${INDEX:?INDEX=index.json is needed with MATRIX}"
  exit
fi
if [ -n "${CLIPPED:-}" ]; then
  cargo build --release --quiet -p psd
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
for depth in $depths; do
  instance=(--depth "$depth" --options 'w{2,4,8}a{2,4,8}' --seed "${SEED:-1}")
  if [ -n "${CLIPPED:-}" ]; then
    target/release/examples/bench "${instance[@]}" --write "$work" 2>/dev/null
    target/release/psd --method clip "$work/G.npy" -o "$work/G-clip.npy" -q
    echo "# resnet$depth, seed ${SEED:-1}, after psd --method clip"
    bench --matrix "$work/G-clip.npy" --index "$work/index.json"
  else
    bench "${instance[@]}"
  fi
done
