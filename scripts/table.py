#!/usr/bin/env python3
"""Print evaluate's JSON lines (and the predicted Δ of their alloc.json) as a Markdown table."""
import json
import os
import sys

rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))

fp = next((r for r in rows if r["config"] == "fp"), None)
print("| configuration | top-1 % | loss | KL to FP | avg w bits | size MB | predicted Δ | measured Δloss |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    predicted = ""
    name = r["config"]
    if os.path.exists(name) and name.endswith(".json"):
        with open(name) as f:
            alloc = json.load(f)
        predicted = f"{alloc['predicted_delta']:.4f}"
        name = os.path.basename(name)[:-5]
    measured = f"{r['loss'] - fp['loss']:.4f}" if fp else ""
    print(
        f"| {name} | {r['top1']:.2f} | {r['loss']:.4f} | {r['kl']:.4f} | {r['avg_w_bits']:.2f} "
        f"| {r['size_mb']:.3f} | {predicted} | {measured} |"
    )
