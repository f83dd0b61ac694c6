#!/usr/bin/env python3
"""Top-1 of an exported built-in model on the 10,000 Fashion-MNIST test images, through
onnxruntime and through `evaluate`.

    .deps/venv/bin/python scripts/qdq_top1.py --uniform w4a8
    .deps/venv/bin/python scripts/qdq_top1.py --alloc alloc.json --calib calib.json

Without --calib, `quantize calibrate` calibrates the built-in ResNet-20 on --samples training
images for the allocation's bit widths. --uniform OPTION puts every layer at OPTION (the
allocation's size_bits are `evaluate`'s). Then `evaluate --calib --alloc` gives the simulated
top-1, `quantize export` writes the allocation as a QDQ ONNX model, and onnxruntime (default
session options) runs it on the same images, preprocessed as the loader does (float32
`(v/255 - 0.2860)/0.3530`, zero-padded to 32x32). Prints one JSON line; exit status 1 when the
two top-1 differ by more than --max-diff points.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = np.float32(0.2860), np.float32(0.3530)


def run(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout.decode()


def test_images(data):
    with gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
    with gzip.open(os.path.join(data, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], np.uint8).astype(np.int64)
    x = (raw.astype(np.float32) / np.float32(255) - MEAN) / STD
    return np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None], labels


def uniform_alloc(calib, option, w_bits, a_bits):
    layers = [
        {"name": l["name"], "option": option, "w_bits": w_bits, "a_bits": a_bits} for l in calib["layers"]
    ]
    return {
        "version": calib["version"],
        "model": calib["model"],
        "layers": layers,
        "predicted_delta": 0.0,
        "size_bits": 0,
        "avg_w_bits": 0.0,
        "bops": 0,
        "budget": f"uniform:{option}",
        "solver": {"status": "exact", "objective": 0.0, "bound": 0.0, "gap": 0.0, "seconds": 0.0},
        "notes": {},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--uniform", metavar="OPTION", help="every layer at OPTION, e.g. w4a8")
    which.add_argument("--alloc", metavar="FILE", help="an allocation of the built-in model")
    p.add_argument("--calib", metavar="FILE", help="its calib.json (default: calibrate here)")
    p.add_argument("--samples", type=int, default=256, help="calibration samples (without --calib)")
    p.add_argument("--bin", default="target/release", help="folder of the tools (default target/release)")
    p.add_argument("--data", default=DATA, help="Fashion-MNIST folder")
    p.add_argument("--max-diff", type=float, default=0.05, help="largest top-1 difference, points")
    p.add_argument("--keep", metavar="DIR", help="write the files here instead of a temporary folder")
    args = p.parse_args()
    tool = lambda name: os.path.join(args.bin, name)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        if args.uniform:
            option = args.uniform
            w = int(option.split("a")[0][1:]) if option.startswith("w") else None
            a = int(option.split("a")[1]) if "a" in option else None
        calib_path = args.calib or os.path.join(work, "calib.json")
        if not args.calib:
            options = args.uniform or ",".join(
                sorted({l["option"] for l in json.load(open(args.alloc))["layers"]} - {"fp"})
            )
            run([tool("quantize"), "calibrate", "--samples", str(args.samples), "--options", options,
                 "-o", calib_path, "-q"])
        alloc_path = args.alloc
        if args.uniform:
            alloc = uniform_alloc(json.load(open(calib_path)), option, w, a)
            alloc_path = os.path.join(work, "alloc.json")
            with open(alloc_path, "w") as f:
                json.dump(alloc, f)
        data = f"fashion-mnist:{args.data}"
        metrics = json.loads(run([tool("evaluate"), "--data", data, "--split", "test", "--calib", calib_path,
                                  "--alloc", alloc_path, "-q"]).splitlines()[-1])
        if args.uniform:
            for k in ("size_bits", "avg_w_bits", "bops"):
                alloc[k] = metrics[k]
            with open(alloc_path, "w") as f:
                json.dump(alloc, f)
        model = os.path.join(work, "model.qdq.onnx")
        run([tool("quantize"), "export", "--calib", calib_path, "--alloc", alloc_path, "-o", model, "-q"])
        x, y = test_images(args.data)
        s = ort.InferenceSession(model)
        logits = s.run(None, {s.get_inputs()[0].name: x})[0]
        ort_top1 = 100.0 * float((logits.argmax(1) == y).mean())
        out = {
            "allocation": args.uniform or args.alloc,
            "images": len(y),
            "evaluate_top1": metrics["top1"],
            "onnxruntime_top1": round(ort_top1, 4),
            "difference": round(ort_top1 - metrics["top1"], 4),
            "onnxruntime": ort.__version__,
        }
        print(json.dumps(out))
        if abs(out["difference"]) > args.max_diff or metrics["samples"] != len(y):
            sys.exit(1)


if __name__ == "__main__":
    main()
