#!/usr/bin/env python3
"""The experiment graph's report (scripts/experiment.mk): from the files of one experiment
directory, write

  table.csv   one row per (method, budget) and one for FP, numbers at full precision;
  table.md    top-1 by budget and method, the full table, and the correlation of predicted and
              measured Δ per method;
  sanity.md   with no budget: each method's option per layer, whether it is the highest
              precision everywhere, and if not the negative estimates that make it deviate.

Files read, under --out DIR (as experiment.mk writes them):
  eval/fp.jsonl, eval/METHOD.jsonl   evaluate's JSON lines (test split); a line's `config` is the
                                     path of the allocation it evaluated, alloc/METHOD/BUDGET.json
  alloc/METHOD/BUDGET.json           allocate's answer: predicted_delta, sizes, solver report
  alloc/METHOD/none.json             the sanity check (no budget): notes.sanity
  METRIC/index.json                  perturb's index (negative single-layer estimates of raw G)
  the psd report given per method    its objective_offset (shift's λ·L) is subtracted from the
                                     predicted Δ, so every prediction is on the metric's scale

Predicted Δ is the method's own objective xᵀGx (the matrix it allocated with, minus shift's
constant); measured Δ is the same metric on the test set: loss − FP loss for loss methods,
KL(p_fp ‖ p_quant) for kl methods (KL of FP to itself is 0). Python 3 standard library only.
"""
import argparse
import csv
import io
import json
import math
import os
import sys

CSV_COLUMNS = [
    "method", "budget", "metric", "top1", "top5", "loss", "kl", "avg_w_bits", "size_mb", "size_bits",
    "bops", "predicted_delta", "measured_delta", "measured_delta_loss", "solver_status", "solver_gap",
]


class ReportError(Exception):
    pass


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: {e}") from e


def read_jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: {e}") from e


def ranks(values):
    """Ranks 1..n, ties sharing their mean rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def pearson(xs, ys):
    """Pearson's r, or None with fewer than 3 points or a constant variable."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman(xs, ys):
    return pearson(ranks(xs), ranks(ys)) if len(xs) >= 3 else None


def fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def parse_method(text):
    """NAME=METRIC[:PSD_REPORT]"""
    name, sep, rest = text.partition("=")
    metric, _, psd = rest.partition(":")
    if not sep or not name or metric not in ("loss", "kl"):
        raise ReportError(f"--method {text!r}: expected NAME=loss|kl[:PSD_REPORT.json]")
    return name, metric, psd or None


def psd_offset(psd_report):
    """The constant psd added to xᵀGx of every valid choice (shift's λ·L; 0 for clip, none or
    no psd stage: clip's change depends on x and is part of that method's prediction)."""
    if not psd_report:
        return 0.0
    return read_json(psd_report).get("objective_offset") or 0.0


def shifted(value, by):
    return None if value is None else value + by


def budget_key(budget):
    try:
        return (0, float(budget))
    except ValueError:
        return (1, budget)


def collect(out, methods):
    """Rows of the table: the FP row, then one per (method, budget) in method order."""
    fp_lines = read_jsonl(os.path.join(out, "eval", "fp.jsonl"))
    fp = next((m for m in fp_lines if m["config"] == "fp"), None)
    if fp is None:
        raise ReportError(f"{out}/eval/fp.jsonl: no line with config `fp`")
    rows = [{
        "method": "fp", "budget": "none", "metric": "", "top1": fp["top1"], "top5": fp["top5"], "loss": fp["loss"],
        "kl": fp["kl"], "avg_w_bits": fp["avg_w_bits"], "size_mb": fp["size_mb"], "size_bits": fp["size_bits"],
        "bops": fp["bops"], "predicted_delta": None, "measured_delta": 0.0, "measured_delta_loss": 0.0,
        "solver_status": "", "solver_gap": None,
    }]
    for name, metric, psd_report in methods:
        offset = psd_offset(psd_report)
        eval_path = os.path.join(out, "eval", f"{name}.jsonl")
        for m in read_jsonl(eval_path):
            alloc_path = m["config"]
            budget = os.path.splitext(os.path.basename(alloc_path))[0]
            if os.path.basename(os.path.dirname(alloc_path)) != name:
                raise ReportError(f"{eval_path}: config {alloc_path!r} is not an allocation of method {name}")
            alloc = read_json(alloc_path)
            rows.append({
                "method": name, "budget": budget, "metric": metric, "top1": m["top1"], "top5": m["top5"],
                "loss": m["loss"], "kl": m["kl"], "avg_w_bits": alloc["avg_w_bits"], "size_mb": m["size_mb"],
                "size_bits": alloc["size_bits"], "bops": alloc["bops"],
                "predicted_delta": alloc["predicted_delta"] - offset,
                "measured_delta": m["loss"] - fp["loss"] if metric == "loss" else m["kl"],
                "measured_delta_loss": m["loss"] - fp["loss"],
                "solver_status": alloc["solver"]["status"], "solver_gap": alloc["solver"]["gap"],
            })
    return rows


def write_csv(rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_markdown(rows, methods, args):
    fp = rows[0]
    data = rows[1:]
    names = [m[0] for m in methods]
    budgets = sorted({r["budget"] for r in data}, key=budget_key)
    by = {(r["method"], r["budget"]): r for r in data}
    lines = [
        f"# Experiment `{args.experiment}`: options `{args.options}`, budgets {args.budget_kind} "
        f"{', '.join(budgets)}",
        "",
        f"FP model on the test set: top-1 {fp['top1']:.2f} %, loss {fp['loss']:.4f}, "
        f"{fp['size_mb']:.3f} MB of weights ({fp['avg_w_bits']:g} bits per weight).",
        "",
        f"## Test top-1 (%) by budget ({args.budget_kind}) and method",
        "",
        "| budget | " + " | ".join(names) + " |",
        "| ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for b in budgets:
        cells = [fmt(by[(n, b)]["top1"], 2) if (n, b) in by else "" for n in names]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every allocation",
        "",
        "Predicted Δ: the method's objective xᵀGx on the calibration samples (for `shift`, minus "
        "the constant λ·L it adds). Measured Δ: the same metric on the test set (held out): "
        "loss − FP loss for loss methods, KL to FP for kl methods.",
        "",
        "| budget | method | top-1 % | loss | KL to FP | avg w bits | size MB | predicted Δ | measured Δ "
        "| measured Δloss | solver |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for b in budgets:
        for n in names:
            r = by.get((n, b))
            if r is None:
                continue
            lines.append(
                f"| {b} | {n} | {r['top1']:.2f} | {r['loss']:.4f} | {r['kl']:.4f} | {r['avg_w_bits']:.3f} "
                f"| {r['size_mb']:.4f} | {fmt(r['predicted_delta'], 4)} | {fmt(r['measured_delta'], 4)} "
                f"| {r['measured_delta_loss']:.4f} | {r['solver_status']} |"
            )
    lines += [
        "",
        "## Predicted against measured Δ",
        "",
        "Over each method's budgets (and pooled over the methods of one metric): Pearson's r and "
        "Spearman's ρ of predicted Δ against measured Δ; n/a below 3 points or for a constant.",
        "",
        "| method | metric | points | Pearson r | Spearman ρ |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, metric, _ in methods:
        pts = [(r["predicted_delta"], r["measured_delta"]) for r in data if r["method"] == name]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        lines.append(f"| {name} | {metric} | {len(pts)} | {fmt(pearson(xs, ys), 3)} | {fmt(spearman(xs, ys), 3)} |")
    for metric in ("loss", "kl"):
        pts = [(r["predicted_delta"], r["measured_delta"]) for r in data if r["metric"] == metric]
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            lines.append(f"| all {metric} methods | {metric} | {len(pts)} | {fmt(pearson(xs, ys), 3)} "
                         f"| {fmt(spearman(xs, ys), 3)} |")
    return "\n".join(lines) + "\n"


def write_sanity(out, methods, args):
    lines = [
        f"# Sanity check of experiment `{args.experiment}` (options `{args.options}`)",
        "",
        "With no budget every method should pick the highest-precision option everywhere. "
        "`allocate` without a budget reports the deviations and the negative estimates (single-layer "
        "G[v,v] < 0 or cross terms) of the matrix it was given that make each deviation pay. "
        "Objectives are predicted Δ of the method's metric (for `shift` without its constant λ·L); "
        "the estimates listed for `shift` methods are those of the shifted matrix, whose diagonal "
        "is raised by λ (same minimiser as the raw G).",
        "",
    ]
    for metric in ("loss", "kl"):
        path = os.path.join(out, metric, "index.json")
        if os.path.exists(path):
            index = read_json(path)
            d = index.get("diagnostics") or {}
            lines.append(
                f"- Raw `{metric}` G ({index['samples']} calibration samples, {len(index['variables'])} variables): "
                f"{d.get('negative_single', 'n/a')} negative single-layer estimates, λ_min "
                f"{fmt(d.get('lambda_min'), 6)}, λ_max {fmt(d.get('lambda_max'), 6)}."
            )
    sanity_methods = [m for m in methods if m[0] != "uniform"]
    allocs = {name: read_json(os.path.join(out, "alloc", name, "none.json")) for name, _, _ in sanity_methods}
    offsets = {name: psd_offset(psd) for name, _, psd in sanity_methods}
    lines += ["", "| method | passed | avg w bits | objective | objective at highest | deviating layers |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, alloc in allocs.items():
        s = alloc.get("notes", {}).get("sanity", {})
        lines.append(
            f"| {name} | {'yes' if s.get('passed') else 'no'} | {alloc['avg_w_bits']:.3f} | "
            f"{fmt(shifted(s.get('objective'), -offsets[name]), 5)} | "
            f"{fmt(shifted(s.get('objective_highest'), -offsets[name]), 5)} | {len(s.get('deviations', []))} |"
        )
    if allocs:
        first = next(iter(allocs.values()))
        layer_names = [layer["name"] for layer in first["layers"]]
        lines += ["", "## Option per layer with no budget", "",
                  "| layer | " + " | ".join(allocs) + " |", "| --- | " + " | ".join("---" for _ in allocs) + " |"]
        for i, layer in enumerate(layer_names):
            lines.append(f"| {layer} | " + " | ".join(a["layers"][i]["option"] for a in allocs.values()) + " |")
    for name, alloc in allocs.items():
        s = alloc.get("notes", {}).get("sanity", {})
        deviations = s.get("deviations", [])
        if not deviations:
            continue
        lines += ["", f"## Why `{name}` deviates", "",
                  f"Negative estimates in its matrix: {s.get('negative_single', 'n/a')} single-layer, "
                  f"{s.get('negative_cross', 'n/a')} cross terms.", ""]
        for d in deviations:
            negatives = ", ".join(
                f"{e['layer']}={e['option']}" + (f" with {e['other_layer']}={e['other_option']}" if "other_layer" in e else "")
                + f": {e['value']:.3g}" for e in d.get("negative_estimates", []))
            lines.append(
                f"- `{d['layer']}` picks {d['chosen']} instead of {d['highest']}: single {fmt(d.get('single_chosen'), 5)} "
                f"vs {fmt(d.get('single_highest'), 5)}, cross {fmt(d.get('cross_chosen'), 5)} vs "
                f"{fmt(d.get('cross_highest'), 5)}" + (f"; largest negative estimates: {negatives}" if negatives else "")
            )
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the experiment directory")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=METRIC[:PSD_REPORT]",
                        help="a method, its metric (loss or kl) and, for psd methods, psd's report (repeatable)")
    parser.add_argument("--experiment", default="", help="its name, for the titles")
    parser.add_argument("--options", default="", help="its options, for the titles")
    parser.add_argument("--budget-kind", default="avg-bits", help="the kind of the budgets, for the titles")
    args = parser.parse_args()
    try:
        methods = [parse_method(m) for m in args.method]
        rows = collect(args.out, methods)
        markdown = write_markdown(rows, methods, args)
        sanity = write_sanity(args.out, methods, args)
    except (ReportError, KeyError) as e:
        print(f"table.py: {e}", file=sys.stderr)
        sys.exit(2)
    write_atomic(os.path.join(args.out, "table.csv"), write_csv(rows))
    write_atomic(os.path.join(args.out, "table.md"), markdown)
    write_atomic(os.path.join(args.out, "sanity.md"), sanity)


if __name__ == "__main__":
    main()
