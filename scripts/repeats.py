#!/usr/bin/env python3
"""The experiment graph's report over several calibration draws (scripts/experiment.mk with
REPEATS=K): from the table.csv of each draw directory (written by scripts/table.py), write

  table.csv   one row per (method, budget) and one for FP: table.py's columns holding the mean
              over the draws, then `draws` and the standard deviation of each numeric column
              (`top1_sd`, ...; empty with one draw);
  table.md    test top-1 and measured Δloss by budget and method as mean ± standard deviation,
              and paired comparisons: for each CLADO method against each baseline (naive,
              zeroq) at each budget, the mean over draws of the per-draw difference of test
              top-1 and of measured Δloss, with its standard error (sd / √K), in bold where
              the 95 % t interval (K − 1 degrees of freedom) excludes 0.

Every draw must hold the same methods and budgets. The FP row's numbers do not depend on the
calibration draw (the test set is fixed); they are averaged all the same. Python 3 standard
library only.

    scripts/repeats.py --out out/resnet20/main out/resnet20/main/draw-0 out/resnet20/main/draw-1 ...
"""
import argparse
import csv
import io
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from table import budget_key, write_atomic  # noqa: E402  (the single-draw report's helpers)

ID_COLUMNS = ["method", "budget", "metric"]
SD_COLUMNS = ["top1", "top5", "loss", "kl", "avg_w_bits", "size_mb", "predicted_delta", "measured_delta",
              "measured_delta_loss"]
BASELINES = ["naive", "zeroq"]


class ReportError(Exception):
    pass


def read_table(draw):
    path = os.path.join(draw, "table.csv")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as e:
        raise ReportError(f"{path}: {e}") from e
    for c in ID_COLUMNS + ["top1", "measured_delta_loss"]:
        if c not in columns:
            raise ReportError(f"{path}: no column `{c}` (expected scripts/table.py's table.csv)")
    return path, columns, {(r["method"], r["budget"]): r for r in rows}, [(r["method"], r["budget"]) for r in rows]


def number(path, key, column, text):
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise ReportError(f"{path}: {key[0]} at budget {key[1]}: `{column}` is `{text}`, expected a number") from e
    if not math.isfinite(value):
        raise ReportError(f"{path}: {key[0]} at budget {key[1]}: `{column}` is `{text}`, expected a finite number")
    return value


def mean_sd(values):
    if any(v is None for v in values):
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt_pm(mean, sd, digits):
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def collect(draws):
    tables = [read_table(d) for d in draws]
    path0, columns, _, order = tables[0]
    for path, cols, _, keys in tables[1:]:
        if sorted(keys) != sorted(order):
            missing = sorted(set(order) ^ set(keys))
            raise ReportError(f"{path}: methods and budgets differ from {path0} (e.g. {missing[0][0]} at {missing[0][1]})")
        if cols != columns:
            raise ReportError(f"{path}: columns differ from {path0}")
    numeric = [c for c in columns if c not in ID_COLUMNS + ["solver_status"]]
    rows, values = [], {}
    for key in order:
        row = {c: tables[0][2][key][c] for c in ID_COLUMNS}
        for c in numeric:
            per_draw = [number(path, key, c, t[key][c]) for path, _, t, _ in tables]
            values[(key, c)] = per_draw
            m, sd = mean_sd(per_draw)
            row[c] = m
            if c in SD_COLUMNS:
                row[c + "_sd"] = sd
        statuses = sorted({t[key].get("solver_status", "") for _, _, t, _ in tables} - {""})
        row["solver_status"] = "/".join(statuses)
        row["draws"] = len(tables)
        rows.append(row)
    out_columns = columns + ["draws"] + [c + "_sd" for c in SD_COLUMNS if c in columns]
    return rows, values, out_columns, order


def write_csv(rows, columns):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in columns])
    return buf.getvalue()


def paired(values, a, b, budget, column):
    """Mean and standard error over draws of (a − b) at a budget, or (None, None)."""
    xs, ys = values.get(((a, budget), column)), values.get(((b, budget), column))
    if xs is None or ys is None or any(v is None for v in xs + ys):
        return None, None
    diffs = [x - y for x, y in zip(xs, ys)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return statistics.fmean(diffs), se


# Two-sided 95 % quantiles of Student's t by degrees of freedom (K − 1 for K draws); 1.96 beyond.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df):
    """The tabulated quantile of the largest tabulated df ≤ df (conservative between entries)."""
    return T95[max(d for d in T95 if d <= df)] if df <= 30 else 1.96


def fmt_diff(mean, se, digits, k):
    if mean is None:
        return "n/a"
    text = f"{mean:+.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")
    # Bold where the 95 % confidence interval of the mean difference excludes 0.
    return f"**{text}**" if se is not None and abs(mean) > t95(k - 1) * se else text


def write_markdown(rows, values, order, args, k):
    methods = [m for m, b in order if b != "none" and m != "fp"]
    methods = list(dict.fromkeys(methods))
    budgets = sorted({b for m, b in order if m != "fp" and b != "none"}, key=budget_key)
    by_key = {(r["method"], r["budget"]): r for r in rows}
    fp = by_key.get(("fp", "none"))
    lines = [f"# Experiment `{args.experiment}` on `{args.model}`: options `{args.options}`, budgets {args.budget_kind} "
             f"{', '.join(budgets)}; {k} calibration draws (seeds {args.seeds})", ""]
    if fp:
        lines += [f"FP model on the test set: top-1 {fp['top1']:.2f} %, loss {fp['loss']:.4f}. Cells: mean ± standard "
                  f"deviation over the {k} draws (each draw: other calibration images for calibration, perturbation and "
                  "allocation; the same test images).", ""]

    def grid(title, column, digits):
        out = [f"## {title}", "", "| budget | " + " | ".join(methods) + " |", "| ---: |" + " ---: |" * len(methods)]
        for b in budgets:
            cells = []
            for m in methods:
                r = by_key.get((m, b))
                cells.append("–" if r is None else fmt_pm(r[column], r.get(column + "_sd"), digits))
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        return out + [""]

    lines += grid(f"Test top-1 (%) by budget ({args.budget_kind}) and method", "top1", 2)
    lines += grid("Measured Δloss on the test set (loss − FP loss; lower is better)", "measured_delta_loss", 4)

    clado = [m for m in methods if m.startswith("clado-")]
    for base in [b for b in BASELINES if b in methods]:
        if not clado:
            break
        lines += [f"## Paired with `{base}`: CLADO method − {base}, per draw, then mean ± standard error over draws", "",
                  f"Bold: the 95 % confidence interval of the mean difference (Student's t, {k - 1} degree{'' if k == 2 else 's'} of "
                  f"freedom: ± {t95(k - 1):.3g} standard errors) excludes 0. Top-1 in points (positive: the CLADO "
                  "method is more accurate); Δloss (negative: the CLADO method loses less).", "",
                  "| budget | quantity | " + " | ".join(clado) + " |", "| ---: | --- |" + " ---: |" * len(clado)]
        for b in budgets:
            lines.append(f"| {b} | top-1 | " + " | ".join(fmt_diff(*paired(values, m, base, b, "top1"), 2, k) for m in clado) + " |")
            lines.append(f"| {b} | Δloss | " + " | ".join(
                fmt_diff(*paired(values, m, base, b, "measured_delta_loss"), 4, k) for m in clado) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where table.md and table.csv go")
    parser.add_argument("draws", nargs="+", help="the draw directories (each with scripts/table.py's table.csv)")
    parser.add_argument("--experiment", default="", help="its name, for the titles")
    parser.add_argument("--model", default="", help="the model's name, for the titles")
    parser.add_argument("--options", default="", help="its options, for the titles")
    parser.add_argument("--budget-kind", default="avg-bits", help="the kind of the budgets, for the titles")
    parser.add_argument("--seeds", default="", help="the draws' seeds, for the titles")
    args = parser.parse_args()
    try:
        rows, values, columns, order = collect(args.draws)
        markdown = write_markdown(rows, values, order, args, len(args.draws))
    except ReportError as e:
        print(f"repeats.py: {e}", file=sys.stderr)
        sys.exit(2)
    write_atomic(os.path.join(args.out, "table.csv"), write_csv(rows, columns))
    write_atomic(os.path.join(args.out, "table.md"), markdown)


if __name__ == "__main__":
    main()
