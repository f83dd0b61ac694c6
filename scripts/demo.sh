#!/usr/bin/env bash
# The README's main job, on the built-in model (a ResNet-20 trained on Fashion-MNIST):
#   1. evaluate the model at FP and at uniform w8a8, w4a8, w2a8, w4a4 on the 10k test images;
#   2. perturb (3 options, 256 calibration samples) -> psd -> allocate under average-bit budgets
#      -> evaluate each allocation, against uniform precision at the same size.
# Variables: DATA, SAMPLES, OPTIONS, BUDGETS, WEIGHTS, BIN, OUT, EVAL_SAMPLES.
# Results go to out/demo/ (JSON, and a Markdown table printed at the end).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${BIN:-$root/target/release}"
out="${OUT:-$root/out/demo}"
mkdir -p "$out"
data="${DATA:-fashion-mnist:/usr/share/datasets/fashion-mnist}"
samples="${SAMPLES:-256}"
options="${OPTIONS:-w2a8,w4a8,w8a8}"
budgets="${BUDGETS:-3 4 5 6}"
# WEIGHTS=FILE runs the job on another checkpoint (default: the built-in model).
model=(${WEIGHTS:+--weights "$WEIGHTS"})

echo "== 1. uniform precision on the test set" >&2
"$bin/quantize" calibrate "${model[@]}" --data "$data" --samples "$samples" --options "$options,w4a4" -o "$out/calib.json" -q
"$bin/evaluate" "${model[@]}" --data "$data" --calib "$out/calib.json" --fp \
  --uniform w8a8 --uniform w4a8 --uniform w2a8 --uniform w4a4 ${EVAL_SAMPLES:+--samples "$EVAL_SAMPLES"} -q > "$out/uniform.jsonl"

echo "== 2. perturb -> psd -> allocate -> evaluate" >&2
"$bin/perturb" "${model[@]}" --data "$data" --samples "$samples" --calib "$out/calib.json" --options "$options" \
  -o "$out/G.npy" --index "$out/index.json" --se "$out/G.se.npy" --resume "$out/perturb-work"
# G is usually indefinite; allocate solves the indefinite problem exactly (an integer
# program over the local polytope of the pairwise terms). psd reports the spectrum.
"$bin/psd" --method shift --report "$out/psd-report.json" < "$out/G.npy" > "$out/Gpsd.npy"
allocs=()
"$bin/allocate" --matrix "$out/G.npy" --index "$out/index.json" -q > "$out/alloc-none.json"
allocs+=(--alloc "$out/alloc-none.json")
for b in $budgets; do
  "$bin/allocate" --matrix "$out/G.npy" --index "$out/index.json" --avg-bits "$b" -q > "$out/alloc-clado-$b.json"
  "$bin/allocate" --matrix "$out/G.npy" --index "$out/index.json" --avg-bits "$b" --naive -q > "$out/alloc-naive-$b.json"
  allocs+=(--alloc "$out/alloc-clado-$b.json" --alloc "$out/alloc-naive-$b.json")
done
"$bin/evaluate" "${model[@]}" --data "$data" --calib "$out/calib.json" "${allocs[@]}" ${EVAL_SAMPLES:+--samples "$EVAL_SAMPLES"} -q > "$out/allocations.jsonl"

python3 "$root/scripts/table.py" "$out/uniform.jsonl" "$out/allocations.jsonl" | tee "$out/table.md"
