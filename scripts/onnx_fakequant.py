#!/usr/bin/env python3
"""Logits of an ONNX model under an allocation, computed by onnxruntime: an implementation of
the toolkit's quantizers (docs/definitions.md, "Quantizers") outside the Rust engine, which the
tests compare with `evaluate --logits`.

    onnx_fakequant.py MODEL.onnx CALIB.json ALLOC.json X.npy OUT.npy

Each quantized layer's weight is replaced by its fake-quantized copy (numpy: symmetric, per
output channel, with calib.json's scales), and its input goes through inserted ONNX nodes
Div → Clip → Round → Mul (the activation quantizer with calib.json's range), seen by that node
only. The quantizable layers are found here on their own: every Conv, and every Gemm/MatMul
whose weight is a constant, in the file's node order; they must be as many as the allocation
names, and a weight initializer called `NAME.weight` must belong to layer `NAME`.

Needs numpy, onnx and onnxruntime (the venv of `make setup-venv`).
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def act_quantizer(bits, lo, hi):
    """(scale, zero point) as float32, docs/definitions.md's formulas."""
    n = np.float32(2**bits - 1)
    lo, hi = np.float32(min(0.0, lo)), np.float32(max(0.0, hi))
    s = np.float32((hi - lo) / n)
    if s == 0:
        return s, np.float32(0)
    zp = np.clip(np.round(np.float32(-lo / s)), 0, n).astype(np.float32)
    return s, zp


def fake_quantize_weight(w, channel_dim, bits, scales):
    qmax = np.float32(2 ** (bits - 1) - 1)
    shape = [1] * w.ndim
    shape[channel_dim] = -1
    s = np.asarray(scales, dtype=np.float32)
    s = s.reshape(shape) if s.size > 1 else s.reshape([1] * w.ndim)
    return (np.round(np.clip(w / s, -qmax, qmax)) * s).astype(np.float32)


def main(model_path, calib_path, alloc_path, x_path, out_path):
    model = onnx.load(model_path)
    graph = model.graph
    calib = json.load(open(calib_path))
    alloc = json.loads(open(alloc_path).read().splitlines()[0])
    inits = {t.name: t for t in graph.initializer}
    constants = dict(inits)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    constants[node.output[0]] = a.t
    layers = []
    for node in graph.node:
        if node.op_type == "Conv":
            layers.append((node, 0))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in constants and node.input[0] not in constants:
            if node.op_type == "Gemm":
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                layers.append((node, 0 if trans_b else 1))
            else:
                layers.append((node, 1))
    names = [c["name"] for c in alloc["layers"]]
    if len(layers) != len(names):
        sys.exit(f"{model_path}: {len(layers)} quantizable layers, the allocation names {len(names)}")
    by_name = {c["name"]: c for c in calib["layers"]}
    choice = {c["name"]: c for c in alloc["layers"]}
    for k, ((node, channel_dim), name) in enumerate(zip(layers, names)):
        w_name = node.input[1]
        if w_name.endswith(".weight") and w_name[: -len(".weight")] != name:
            sys.exit(f"layer {k}: weight {w_name!r}, but the allocation's layer {k} is {name!r}")
        c = choice[name]
        lc = by_name[name]
        if c["w_bits"] is not None:
            b = c["w_bits"]
            w = numpy_helper.to_array(constants[w_name]).astype(np.float32)
            q = fake_quantize_weight(w, channel_dim, b, lc["weight_scales"][str(b)])
            new = numpy_helper.from_array(q, name=f"{w_name}__fq{k}")
            graph.initializer.append(new)
            node.input[1] = new.name
        if c["a_bits"] is not None:
            b = c["a_bits"]
            r = lc["act_ranges"][str(b)]
            s, zp = act_quantizer(b, r["lo"], r["hi"])
            x = node.input[0]
            p = f"__aq{k}"
            if s == 0:
                graph.initializer.append(numpy_helper.from_array(np.float32(0), p + "_zero"))
                graph.node.append(helper.make_node("Mul", [x, p + "_zero"], [p + "_out"]))
            else:
                n = np.float32(2**b - 1)
                for nm, v in (("_s", s), ("_lo", -zp), ("_hi", n - zp)):
                    graph.initializer.append(numpy_helper.from_array(np.float32(v), p + nm))
                graph.node.extend(
                    [
                        helper.make_node("Div", [x, p + "_s"], [p + "_div"]),
                        helper.make_node("Clip", [p + "_div", p + "_lo", p + "_hi"], [p + "_clip"]),
                        helper.make_node("Round", [p + "_clip"], [p + "_round"]),
                        helper.make_node("Mul", [p + "_round", p + "_s"], [p + "_out"]),
                    ]
                )
            node.input[0] = p + "_out"
    # The appended nodes must come before their readers: sort the node list topologically.
    produced = {i.name for i in graph.input} | set(constants) | {t.name for t in graph.initializer} | {""}
    ordered, pending = [], list(graph.node)
    while pending:
        rest = []
        for node in pending:
            if all(i in produced for i in node.input):
                ordered.append(node)
                produced.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            sys.exit(f"{model_path}: cannot order the graph after inserting the quantizers")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about the replaced weights left unused
    # The graph as written: no fusion that would move the quantizers.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.load(x_path).astype(np.float32)
    np.save(out_path, session.run(None, {session.get_inputs()[0].name: x})[0])


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
