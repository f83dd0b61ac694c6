#!/usr/bin/env python3
"""Exports the ONNX fixtures of the graph reader's tests, and onnxruntime's outputs on them.

    .deps/torch-venv/bin/python scripts/export_onnx_fixtures.py            # tests/fixtures/onnx/
    .deps/torch-venv/bin/python scripts/export_onnx_fixtures.py --bench    # full-size, target/onnx-bench/

PyTorch is needed only here (never by `make test`): a venv with torch, torchvision, onnx,
onnxscript and onnxruntime, e.g. `python3 -m venv .deps/torch-venv &&
.deps/torch-venv/bin/pip install torch torchvision onnx onnxscript onnxruntime`.

Fixtures (tests/fixtures/onnx/): torchvision models of five families with random weights and
randomised BatchNorm statistics, at reduced widths and 64x64 inputs so that the files stay
small, exported by `torch.onnx.export`'s default exporter (dynamo, opset 18, weights in an
external data file `NAME.onnx.data`, dynamic batch) and, for some, by the older TorchScript
exporter (`dynamo=False`, opset 13-17, no constant folding: separate BatchNormalization,
GlobalAveragePool, Flatten, Identity/Constant nodes and Shape/Gather/Unsqueeze/Concat
subgraphs), plus one hand-built graph (onnx.helper) with the op variants torchvision does not
export (asymmetric pads, dilations, grouped convolutions, ceil-mode pooling, ...; opset 14). For each
NAME.onnx: NAME.output.npy (onnxruntime's logits, all graph optimisations off, one thread) on
NAME.input.npy (float32 [2, C, H, W], seeded); an older export NAME_opsetN.onnx shares
NAME.input.npy.

--bench: ResNet-18, MobileNetV2 and EfficientNet-B0 at full width (random weights), 224x224,
default exporter, into target/onnx-bench/ (gitignored; ~70 MB) for `cargo bench -p clado
--bench graph`.
"""
import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
from onnx import TensorProto, helper, numpy_helper
from torchvision.models import efficientnet as tv_effnet
from torchvision.models import resnet as tv_resnet

SEED = 0
BATCH = 2


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights (the constructors' init) and random BatchNorm statistics, eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def slim_resnet(block, layers, base, num_classes=10):
    """torchvision's ResNet with stage widths base, 2·base, 4·base, 8·base instead of 64..512."""
    m = tv_resnet.ResNet(block, layers, num_classes=num_classes)
    m.inplanes = base
    m.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(base)
    m.layer1 = m._make_layer(block, base, layers[0])
    m.layer2 = m._make_layer(block, 2 * base, layers[1], stride=2)
    m.layer3 = m._make_layer(block, 4 * base, layers[2], stride=2)
    m.layer4 = m._make_layer(block, 8 * base, layers[3], stride=2)
    m.fc = nn.Linear(8 * base * block.expansion, num_classes)
    return m


def slim_efficientnet_b0(num_classes=10):
    setting, last = tv_effnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.5)
    return tv_effnet.EfficientNet(setting, dropout=0.2, last_channel=last, num_classes=num_classes)


def fixture_models():
    torch.manual_seed(SEED)
    tv = torchvision.models
    return {
        "resnet18_slim": lambda: slim_resnet(tv_resnet.BasicBlock, [2, 2, 2, 2], 8),
        "resnet50_slim": lambda: slim_resnet(tv_resnet.Bottleneck, [1, 1, 1, 1], 4),
        "mobilenet_v2_slim": lambda: tv.mobilenet_v2(num_classes=10, width_mult=0.25),
        "mobilenet_v3_small": lambda: tv.MobileNetV3(
            *tv.mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25), num_classes=10),
        "efficientnet_b0_slim": slim_efficientnet_b0,
        "shufflenet_v2_slim": lambda: tv.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10),
        "densenet_slim": lambda: tv.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16,
                                             bn_size=2, num_classes=10),
    }


# (name, model, opset) exported by the older TorchScript exporter as well.
OLD_STYLE = [("resnet18_slim", 13), ("shufflenet_v2_slim", 13), ("mobilenet_v3_small", 17), ("densenet_slim", 15)]


def export_dynamo(model, x, path):
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(model, (x,), path, dynamo=True, opset_version=18, external_data=True,
                      input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}})
    # The exporter names the data file after the model (NAME.onnx.data): check it did.
    if not os.path.exists(path + ".data"):
        sys.exit(f"export_onnx_fixtures: {path}: expected the weights in {path}.data")
    # Drop the per-node stack traces and FX dumps (half the file, and this machine's paths);
    # the module scopes (pkg.torch.onnx.name_scopes) stay.
    m = onnx.load(path, load_external_data=False)
    for node in m.graph.node:
        keep = [p for p in node.metadata_props if p.key not in ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(m, path)


def export_old(model, x, path, opset):
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


def run_ort(path, x):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def write_io(path, x, with_input=True):
    base = path[: -len(".onnx")]
    if with_input:
        np.save(base + ".input.npy", x)
    np.save(base + ".output.npy", run_ort(path, x).astype(np.float32))


def op_coverage_model(path):
    """Op variants torchvision does not export, in one graph (opset 13): asymmetric pads,
    dilations, a grouped (not depthwise) and a depthwise conv, MaxPool with ceil_mode,
    AveragePool with ceil_mode and count_include_pad, LeakyRelu, HardSigmoid, HardSwish, Clip,
    Sub/Div broadcasting, Transpose, Split, Slice, Concat, ReduceMean, Unsqueeze, Flatten,
    Softmax, Gemm with transB=0, MatMul + Add, a Shape subgraph folded at load (opset 14)."""
    rng = np.random.default_rng(SEED)

    def w(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def i64(name, values):
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    inits = [
        w("c1.weight", 8, 3, 3, 3), w("c1.bias", 8),
        w("c2.weight", 8, 4, 3, 3),              # group 2
        w("dw.weight", 8, 1, 3, 3), w("dw.bias", 8),  # depthwise, dilation 2
        w("bias4", 1, 8, 1, 1),
        w("fc.weight", 32, 6),                   # Gemm transB=0: [in, out]... sized below
        w("proj.weight", 12, 7), w("proj.bias", 7),
        i64("split", [4, 4]), i64("axes_un", [1]),
        i64("st", [1]), i64("en", [7]), i64("ax", [1]), i64("sp", [2]),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(4.0, dtype=np.float32), "four"),
        numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two"),
        i64("gidx", [0]), i64("minus1", [-1]),
    ]
    # Fix the Gemm weight shape: input features 8*? computed below.
    nodes = [
        helper.make_node("Conv", ["x", "c1.weight", "c1.bias"], ["a1"], name="c1",
                         pads=[1, 0, 2, 1], strides=[2, 1]),
        helper.make_node("LeakyRelu", ["a1"], ["a2"], alpha=0.1),
        helper.make_node("Conv", ["a2", "c2.weight"], ["b1"], name="c2", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["b1"], ["b2"], alpha=0.25, beta=0.4),
        helper.make_node("Mul", ["b1", "b2"], ["b3"]),
        helper.make_node("Conv", ["b3", "dw.weight", "dw.bias"], ["d1"], name="dw", group=8,
                         dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("HardSwish", ["d1"], ["d2"]),
        helper.make_node("Sub", ["d2", "bias4"], ["d3"]),
        helper.make_node("Div", ["d3", "two"], ["d4"]),
        helper.make_node("Clip", ["d4", "zero", "four"], ["d5"]),
        helper.make_node("MaxPool", ["d5"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("AveragePool", ["d5"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         ceil_mode=1, count_include_pad=1),
        helper.make_node("Split", ["p2", "split"], ["s1", "s2"], axis=1),
        helper.make_node("Concat", ["s2", "p1", "s1"], ["cat"], axis=1),
        helper.make_node("Transpose", ["cat"], ["t1"], perm=[0, 2, 3, 1]),
        helper.make_node("Slice", ["t1", "st", "en", "ax", "sp"], ["t2"]),
        helper.make_node("ReduceMean", ["t2"], ["r1"], axes=[1, 2], keepdims=0),   # [N, 16]
        helper.make_node("Shape", ["r1"], ["shp"]),
        helper.make_node("Gather", ["shp", "gidx"], ["nb"], axis=0),
        helper.make_node("Concat", ["nb", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["r1", "newshape"], ["r2"]),
        helper.make_node("Gemm", ["r2", "fcw"], ["g1"], name="fc", alpha=0.5, beta=1.0),
        helper.make_node("Relu", ["g1"], ["g2"]),
        helper.make_node("Unsqueeze", ["g2", "axes_un"], ["u1"]),                 # [N, 1, 12]
        helper.make_node("MatMul", ["u1", "proj.weight"], ["m1"], name="proj"),
        helper.make_node("Add", ["m1", "proj.bias"], ["m2"]),
        helper.make_node("Softmax", ["m2"], ["sm"], axis=-1),
        helper.make_node("Flatten", ["sm"], ["logits"], axis=1),
    ]
    inits = [t for t in inits if t.name != "fc.weight"]
    inits.append(w("fcw", 16, 12))
    graph = helper.make_graph(
        nodes, "op_coverage",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 21, 19])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 7])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def fixtures(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.endswith((".onnx", ".onnx.data", ".npy")):
            os.remove(os.path.join(out_dir, f))
    models = fixture_models()
    for i, (name, make) in enumerate(models.items()):
        torch.manual_seed(SEED + i)
        model = randomise(make(), SEED + i)
        x = torch.from_numpy(np.random.default_rng(SEED + i).standard_normal((BATCH, 3, 64, 64)).astype(np.float32))
        path = os.path.join(out_dir, f"{name}.onnx")
        with torch.no_grad():
            export_dynamo(model, x, path)
        write_io(path, x.numpy())
        print(f"{path}: {os.path.getsize(path + '.data') / 1e6:.2f} MB of weights", file=sys.stderr)
    for opset_name, opset in OLD_STYLE:
        i = list(models).index(opset_name)
        torch.manual_seed(SEED + i)
        model = randomise(models[opset_name](), SEED + i)
        x = np.load(os.path.join(out_dir, f"{opset_name}.input.npy"))
        path = os.path.join(out_dir, f"{opset_name}_opset{opset}.onnx")
        with torch.no_grad():
            export_old(model, torch.from_numpy(x), path, opset)
        write_io(path, x, with_input=False)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB", file=sys.stderr)
    path = os.path.join(out_dir, "op_coverage.onnx")
    op_coverage_model(path)
    write_io(path, np.random.default_rng(SEED).standard_normal((BATCH, 3, 21, 19)).astype(np.float32))


def bench(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tv = torchvision.models
    for name, make in [("resnet18", tv.resnet18), ("mobilenet_v2", tv.mobilenet_v2),
                       ("efficientnet_b0", tv.efficientnet_b0)]:
        torch.manual_seed(SEED)
        model = randomise(make(), SEED)
        x = torch.randn(2, 3, 224, 224)
        path = os.path.join(out_dir, f"{name}.onnx")
        with torch.no_grad():
            export_dynamo(model, x, path)
        print(f"{path}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", action="store_true", help="full-size models for the benchmark instead")
    p.add_argument("--out", help="output folder (default tests/fixtures/onnx or target/onnx-bench)")
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if a.bench:
        bench(a.out or os.path.join(root, "target", "onnx-bench"))
    else:
        fixtures(a.out or os.path.join(root, "tests", "fixtures", "onnx"))


if __name__ == "__main__":
    main()
