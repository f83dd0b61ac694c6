#!/usr/bin/env python3
"""Where the low bits go and how much the cross-layer terms weigh, over the calibration draws of
an experiment graph run with REPEATS=K (scripts/experiment.mk). Reads, for each draw directory
OUT/draw-k: loss/G.npy and loss/index.json (the raw loss matrix), alloc/METHOD/BUDGET.json and
table.csv (measured Δloss on the test set). Writes markdown to stdout:

  1. per layer (graph order): its weights, whether it is depthwise (with --model FILE.onnx:
     a Conv whose group equals its input channels), and in how many draws each method put it
     at the lowest weight precision at each budget;
  2. per method and budget, over draws (mean ± sd): the raw loss G's prediction for the
     method's allocation split into its single-layer part (the diagonal, what naive and ZeroQ
     add up) and its cross-layer part (every off-diagonal term), and the Δloss measured on the
     test images. The cross-layer share is the mean cross-layer part over the mean prediction.

Needs numpy (and onnx with --model): make setup-venv installs both into .deps/venv.

    .deps/venv/bin/python scripts/layers.py out/mobilenetv2/main --model models/fmnist-mobilenetv2.onnx \\
        --methods naive,zeroq,clado-loss-clip --budgets 2.5,3
"""
import argparse
import csv
import glob
import json
import os
import statistics
import sys

import numpy as np


def fail(msg):
    print(f"layers.py: {msg}", file=sys.stderr)
    sys.exit(2)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")


def depthwise_layers(model):
    """Names of the depthwise Conv layers of an ONNX file (layer = weight initializer's name
    without `.weight`, as the tools name them; else the node's name)."""
    import onnx

    m = onnx.load(model, load_external_data=False)
    shapes = {t.name: list(t.dims) for t in m.graph.initializer}
    out = set()
    for node in m.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = shapes[node.input[1]]
        # Depthwise: as many groups as input channels (weight [C_out, 1, kh, kw]).
        if group > 1 and len(w) == 4 and w[1] == 1:
            name = node.input[1]
            out.add(name[: -len(".weight")] if name.endswith(".weight") else node.name)
    return out


def load_draw(d):
    index = read_json(os.path.join(d, "loss", "index.json"))
    g = np.load(os.path.join(d, "loss", "G.npy"))
    layers = [l["name"] for l in index["layers"]]
    options = [o["name"] for o in index["options"]]
    var = {(layers[v["layer"]], options[v["option"]]): i for i, v in enumerate(index["variables"])}
    measured = {}
    with open(os.path.join(d, "table.csv")) as f:
        for row in csv.DictReader(f):
            if row.get("measured_delta_loss"):
                measured[(row["method"], row["budget"])] = float(row["measured_delta_loss"])
    return index, g, var, measured


def choice(d, method, budget):
    path = os.path.join(d, "alloc", method, f"{budget}.json")
    if not os.path.exists(path):
        return None
    return {l["name"]: (l["option"], l["w_bits"]) for l in read_json(path)["layers"]}


def split_prediction(g, var, chosen):
    """(single-layer part, cross-layer part) of xᵀGx for the one-hot x of `chosen`."""
    idx = [var[(name, opt)] for name, (opt, _) in chosen.items() if (name, opt) in var]
    sub = g[np.ix_(idx, idx)]
    single = float(np.trace(sub))
    return single, float(sub.sum()) - single


def pm(xs, digits):
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the experiment's output folder (with draw-0, draw-1, ...)")
    p.add_argument("--methods", default="naive,zeroq,clado-loss-clip,clado-loss-conf")
    p.add_argument("--budgets", default="2.5,3")
    p.add_argument("--model", help="the ONNX file, to mark depthwise layers")
    args = p.parse_args()
    draws = sorted(glob.glob(os.path.join(args.out, "draw-*")), key=lambda d: int(d.rsplit("-", 1)[1]))
    if not draws:
        fail(f"{args.out}: no draw-K folders (run the graph with REPEATS=K)")
    methods, budgets = args.methods.split(","), args.budgets.split(",")
    data = [load_draw(d) for d in draws]
    index = data[0][0]
    dw = depthwise_layers(args.model) if args.model else set()
    low = min(o["w_bits"] for o in index["options"] if o["w_bits"] is not None)
    k = len(draws)

    print(f"# Layers and cross-layer terms: `{args.out}`, {k} calibration draws\n")
    print(f"## Layers at {low}-bit weights, in how many of {k} draws\n")
    cols = [(m, b) for b in budgets for m in methods]
    print("| layer | weights | " + " | ".join(f"{m} {b}" for m, b in cols) + " |")
    print("| --- | ---: |" + " ---: |" * len(cols))
    chosen = {(m, b): [choice(d, m, b) for d in draws] for m, b in cols}
    for layer in index["layers"]:
        name = layer["name"] + (" (dw)" if layer["name"] in dw else "")
        cells = []
        for c in cols:
            n = sum(1 for ch in chosen[c] if ch and ch.get(layer["name"], (None, None))[1] == low)
            cells.append(str(n) if n else "·")
        print(f"| {name} | {layer['params']:,} | " + " | ".join(cells) + " |")
    if dw:
        print("\nShare of the low-bit weights in depthwise layers (mean over draws):\n")
        dw_params = sum(l["params"] for l in index["layers"] if l["name"] in dw)
        all_params = sum(l["params"] for l in index["layers"])
        print(f"- depthwise layers hold {100 * dw_params / all_params:.1f} % of the weights")
        for m, b in cols:
            shares = []
            for ch in filter(None, chosen[(m, b)]):
                low_layers = [l for l in index["layers"] if ch.get(l["name"], (None, None))[1] == low]
                low_params = sum(l["params"] for l in low_layers)
                dw_low = sum(l["params"] for l in low_layers if l["name"] in dw)
                shares.append(100 * dw_low / low_params if low_params else 0.0)
            print(f"- {m} at {b}: {pm(shares, 1)} % of the {low}-bit weights are depthwise")

    print("\n## The raw loss G's prediction for each allocation: single-layer and cross-layer parts\n")
    print(f"Mean ± sd over {k} draws; predicted on the calibration images, measured on the test images.\n")
    print("| method | budget | single-layer | cross-layer | cross share | predicted | measured |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in budgets:
        for m in methods:
            singles, crosses, preds, meas = [], [], [], []
            for (_, g, var, measured), ch in zip(data, chosen[(m, b)]):
                if not ch:
                    continue
                s, x = split_prediction(g, var, ch)
                singles.append(s)
                crosses.append(x)
                preds.append(s + x)
                if (m, b) in measured:
                    meas.append(measured[(m, b)])
            share = f"{100 * statistics.fmean(crosses) / statistics.fmean(preds):.0f} %" if preds and statistics.fmean(preds) else "–"
            print(f"| {m} | {b} | {pm(singles, 3)} | {pm(crosses, 3)} | {share} | {pm(preds, 3)} | {pm(meas, 3)} |")


if __name__ == "__main__":
    main()
