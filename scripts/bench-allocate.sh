#!/usr/bin/env bash
# Benchmark of `allocate` on seeded ResNet-sized instances (22 and 58 layers × 9 options,
# w{2,4,8}a{2,4,8}, indefinite dense G; see allocate/src/synthetic.rs): per budget of an
# avg-bits sweep, the wall and CPU seconds, the solver status, the proven gap and the nodes.
#
#   scripts/bench-allocate.sh                      # ResNet-20 and ResNet-56, default formulation
#   FORMULATIONS=linearized,product,projected scripts/bench-allocate.sh 20
#   EXTRA=--no-reduce scripts/bench-allocate.sh 56 # without the exact reductions
#
# Targets (issue 6): ResNet-20 every budget proven optimal (gap ≤ 1e-6) in ≤ 5 s;
# ResNet-56 in ≤ 60 s. Wall times depend on the machine's load: CPU seconds are printed too.
set -euo pipefail
cd "$(dirname "$0")/.."
depths=${*:-20 56}
formulations=${FORMULATIONS:-default}
sweep=${SWEEP:-avg-bits=2:8:0.5}
time_limit=${TIME_LIMIT:-60}
cargo build --release --quiet -p allocate --example bench
for depth in $depths; do
  target/release/examples/bench --depth "$depth" --options 'w{2,4,8}a{2,4,8}' --seed "${SEED:-1}" \
    --formulations "$formulations" --sweep "$sweep" --time-limit "$time_limit" ${EXTRA:-}
done
