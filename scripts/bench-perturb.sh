#!/usr/bin/env bash
# Benchmark of `perturb` (issue 4) on the built-in Fashion-MNIST ResNet-20, release build,
# 256 calibration samples, with the thread count of RAYON_NUM_THREADS (default 2). For each
# option set it prints: wall seconds, CPU seconds, evaluations, layer work done against the
# naive count (one full forward pass per evaluation), effective images per second
# (evaluations × samples / wall: what full passes would have to reach) and peak RSS.
#
#   scripts/bench-perturb.sh                 # 3 options, then 9 options
#   SETS='w2a8,w4a8,w8a8' scripts/bench-perturb.sh
#   SAMPLES=1024 BATCH=256 scripts/bench-perturb.sh
#   REPEAT=3 scripts/bench-perturb.sh        # median of 3 runs per option set
#   MODEL=target/onnx-bench/resnet18.onnx DATA=npy:X.npy,Y.npy SAMPLES=64 BATCH=64 \
#     SETS=w2a8,w4a8,w8a8 scripts/bench-perturb.sh          # an ONNX model (see --model)
#   PERTURB=/tmp/old/perturb scripts/bench-perturb.sh       # another build, side by side
#
# Targets (issue 4): 3 options (2,145 evaluations) ≤ 60 s; 9 options (18,909) ≤ 10 min.
# For scale: a full forward pass per evaluation (the seed's method, PyTorch CPU) takes ~0.2 s
# per evaluation here, ~7 min and ~64 min.
set -euo pipefail
cd "$(dirname "$0")/.."
sets=${SETS:-'w2a8,w4a8,w8a8 w{2,4,8}a{2,4,8}'}
samples=${SAMPLES:-256}
batch=${BATCH:-256}
repeat=${REPEAT:-1}
data=${DATA:-fashion-mnist:/usr/share/datasets/fashion-mnist}
model=${MODEL:+--model $MODEL}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
if [ -z "${PERTURB:-}" ]; then
  cargo build --release --quiet -p perturb
  PERTURB=target/release/perturb
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '%-22s %6s %9s %9s %11s %11s %10s %9s\n' options run wall_s cpu_s evaluations layer_work img_per_s peak_MiB
for opts in $sets; do
  walls=()
  for r in $(seq 1 "$repeat"); do
    rm -f "$work"/G.npy "$work"/index.json
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
      "$PERTURB" $model --data "$data" --samples "$samples" --batch-size "$batch" --options "$opts" \
      -o "$work/G.npy" --index "$work/index.json" 2> "$work/log"
    read -r wall user sys rss < "$work/time"
    # "N evaluations in S s; layers run × images: R (P% of T for full passes)"
    line=$(grep 'evaluations in' "$work/log" | tail -1)
    evals=$(sed -E 's/.*perturb: ([0-9]+) evaluations.*/\1/' <<< "$line")
    share=$(sed -E 's/.*\(([0-9.]+)% of.*/\1/' <<< "$line")
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')
    rate=$(awk -v e="$evals" -v n="$samples" -v w="$wall" 'BEGIN { printf "%.0f", e * n / w }')
    printf '%-22s %6s %9s %9s %11s %10s%% %10s %9.0f\n' "$opts" "$r/$repeat" "$wall" "$cpu" "$evals" "$share" "$rate" \
      "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
    walls+=("$wall")
  done
  if [ "$repeat" -gt 1 ]; then
    printf '%-22s median wall %s s over %s runs\n' "$opts" \
      "$(printf '%s\n' "${walls[@]}" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')" "$repeat"
  fi
done
echo "threads: $RAYON_NUM_THREADS; samples: $samples; batch: $batch; load average before the last run: $(cut -d' ' -f1-3 /proc/loadavg)"
