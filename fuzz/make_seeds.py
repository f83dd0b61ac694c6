"""Write the seed inputs of the fuzz targets into fuzz/seeds/<target>/ (committed; rerun after a
format change). One valid input per target, small, so libFuzzer mutates from inside the format.
Needs only the Python standard library (the .pth seed mimics what torch.save writes)."""

import gzip
import io
import json
import pickle
import struct
import sys
import types
import zlib
import zipfile
from collections import OrderedDict
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "seeds"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def npy(descr, shape, payload):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    header = header.ljust(64 - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def main():
    write("npy_matrix", "g2x2.npy", npy("<f8", (2, 2), struct.pack("<4d", 1.0, 0.5, 0.5, 2.0)))
    write("npy_matrix", "g2x2_f32.npy", npy("<f4", (2, 2), struct.pack("<4f", 1.0, 0.5, 0.5, 2.0)))
    write("npy_dataset", "x.npy", npy("<f4", (1, 1, 2, 2), struct.pack("<4f", 0.1, 0.2, 0.3, 0.4)))
    write("npy_dataset", "y.npy", npy("<i8", (3,), struct.pack("<3q", 0, 1, 9)))
    write("npy_dataset", "y32.npy", npy("<i4", (2,), struct.pack("<2i", 3, 4)))

    layers = [{"name": "conv1", "kind": "conv", "params": 144, "macs": 147456},
              {"name": "fc", "kind": "linear", "params": 640, "macs": 640}]
    options = [{"name": "w2a8", "w_bits": 2, "a_bits": 8}, {"name": "w8", "w_bits": 8, "a_bits": None}]
    index = {"version": 2, "model": {"arch": "resnet20", "digest": "8f5e2c1a0b3d4e6f"}, "calib_digest": "0123456789abcdef",
             "matrix": {"rows": 2, "digest": "fedcba9876543210", "se_digest": "0011223344556677"}, "layers": layers, "fixed": {"fc": "fp"}, "options": options,
             "variables": [{"layer": 0, "option": 0}, {"layer": 0, "option": 1}], "metric": "loss", "naive": False,
             "samples": 256, "data": "fashion-mnist:/d:train", "seed": 0, "fp": {"loss": 0.27, "top1": 90.4},
             "diagnostics": {"negative_single": 0, "lambda_min": -0.1, "lambda_max": 1.0, "evaluations": 2, "seconds": 1.5}}
    write("json_index", "index.json", json.dumps(index, indent=1))
    calib = {"version": 2, "model": {"arch": "resnet20", "digest": "8f5e2c1a0b3d4e6f"}, "w_calib": "minmax", "a_calib": "mse", "per_tensor": False, "samples": 8,
             "data": "npy:x.npy,y.npy:train", "seed": 0,
             "layers": [{"name": "conv1", "weight_scales": {"2": [0.5, 0.25], "8": [0.01]}, "act_ranges": {"8": {"lo": -1.0, "hi": 2.5}}}]}
    write("json_calib", "calib.json", json.dumps(calib, indent=1))
    alloc = {"version": 2, "model": {"arch": "resnet20", "digest": "8f5e2c1a0b3d4e6f"}, "layers": [{"name": "conv1", "option": "w4a8", "w_bits": 4, "a_bits": 8},
                                      {"name": "fc", "option": "fp", "w_bits": None, "a_bits": None}],
             "predicted_delta": 0.01, "size_bits": 21056, "avg_w_bits": 26.9, "bops": 4718592, "budget": "avg-bits=4",
             "solver": {"status": "optimal", "objective": 0.01, "bound": 0.0099, "gap": 1e-6, "seconds": 0.1},
             "notes": {"method": "enumerate", "sanity": {"deviating": ["conv1"]}}}
    write("json_alloc", "alloc.json", json.dumps(alloc, indent=1))
    metrics = {"version": 2, "config": "uniform:w4a8", "arch": "resnet20", "data": "fashion-mnist:/d:test", "samples": 10000,
               "top1": 89.9, "top5": 99.7, "loss": 0.2855, "kl": 0.0169, "size_bits": 1082000, "size_mb": 0.135,
               "avg_w_bits": 4.0, "bops": 162000000}
    write("json_metrics", "metrics.json", json.dumps(metrics))

    for name, shard, naive in [("whole.json", (1, 1), False), ("shard2of3.json", (2, 3), False), ("naive.json", (1, 1), True)]:
        write("perturb_units", name, json.dumps(perturb_partial(layers, shard, naive), indent=1))

    for i, text in enumerate(["w{2,4,8}a{2,4,8}", "w4,fp", "w2a8,w4a8,w8a8", "a4,w8"]):
        write("options", f"options{i}.txt", text)
    for i, text in enumerate(["avg-bits=4", "size-bits=1e6", "size-mb=0.1", "bops=2.5e9"]):
        write("budget", f"budget{i}.txt", text)

    # safetensors: an 8-byte little-endian header length, a JSON header, the tensor bytes.
    header = json.dumps({"conv1.weight": {"dtype": "F32", "shape": [2, 1, 1, 1], "data_offsets": [0, 8]},
                         "bn1.num_batches_tracked": {"dtype": "I64", "shape": [], "data_offsets": [8, 16]},
                         "__metadata__": {"format": "pt"}}).encode()
    write("checkpoint_safetensors", "w.safetensors", struct.pack("<Q", len(header)) + header + struct.pack("<2f", 0.5, -0.5) + struct.pack("<q", 3))

    write("idx", "labels-idx1-ubyte", bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([0, 1, 9]))
    images = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 28, 28) + bytes(range(256)) * 3 + bytes(16)
    write("idx", "images-idx3-ubyte", images)
    write("idx", "images-idx3-ubyte.gz", gzip.compress(images, mtime=0))
    write("cifar", "data_batch_1.bin", bytes([3]) + bytes(range(256)) * 12)
    write("cifar", "train.bin", bytes([7, 42]) + bytes(range(256)) * 12)

    write("checkpoint_pth", "tiny.pth", tiny_pth())

    # imagefolder: images. PNGs of 8-bit RGB, gray and RGBA (zlib, stdlib only), and an 8×6 gray
    # baseline JPEG written by Pillow 13 (`Image.save(..., "JPEG", quality=50, optimize=True)`).
    write("images", "rgb.png", png(8, 6, 2, 3))
    write("images", "gray.png", png(5, 5, 0, 1))
    write("images", "rgba.png", png(4, 7, 6, 4))
    write("images", "gray.jpg", bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a1816"
    "16183123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c6567"
    "63ffc0000b080006000801011100ffc40014000100000000000000000000000000000003ffc4001810000203"
    "000000000000000000000000000005032131ffda0008010100003f00358821ac3fffd9"))


def png(width, height, color_type, channels):
    """An 8-bit PNG (no interlace) of a gradient: signature, IHDR, one IDAT, IEND."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + bytes((x * 37 + y * 11 + c * 67) % 256 for x in range(width) for c in range(channels))
                    for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def perturb_partial(layers, shard, naive):
    """A partial result of `perturb --shard K/N` (a whole run for 1/1): 3 samples in batches of
    2, both layers variable, options w4a8 and w8; units are numbered batch-major, then layer,
    then option, and shard K owns the numbers K-1 mod N. Each sum is a list of exact parts."""
    options = ["w4a8", "w8"]
    job = {"version": 1, "arch": "resnet20", "weights_digest": "0b7b43c4a0f9dca6", "data": "npy:x.npy,y.npy:train",
           "samples": 3, "seed": 0, "batch_size": 2, "options": options, "layers": layers, "variables": [0, 1],
           "metric": "loss", "naive": naive, "calib_digest": "90eb90c987c03e73"}
    index, count = shard
    units, batches = [], []
    for number in range(2 * 2 * 2):
        b, k, o = number // 4, number // 2 % 2, number % 2
        if number % count != index - 1:
            continue
        n = 2 if b == 0 else 1
        moments = lambda x: {"sum": [x * n], "sumsq": [x * x * n, -1.5e-25 * x * x]}
        pairs = [] if naive or k == 1 else [moments(0.001 * (o2 + 1)) for o2 in range(2)]
        units.append({"batch": b, "layer": k, "option": o, "samples": n, "single": moments(0.01 * (o + 1)), "pairs": pairs})
        batches.append(b)
    fp = [[b, {"samples": 2 if b == 0 else 1, "loss_sum": [2.3 * (2 if b == 0 else 1)], "correct": 1}]
          for b in sorted(set(batches))]
    return {"version": 1, "job": job, "shard": {"index": index, "count": count}, "fp": fp, "units": units, "seconds": 0.5}


def tiny_pth():
    """A state_dict of one float32 tensor as torch.save writes it: a zip holding a pickle whose
    tensors are torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) with the
    storage as a persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils

    def _rebuild_tensor_v2(*args):
        raise NotImplementedError

    class FloatStorage:
        pass

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    utils._rebuild_tensor_v2, torch.FloatStorage = _rebuild_tensor_v2, FloatStorage

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return (_rebuild_tensor_v2, (Storage(), 0, (2, 1, 1, 1), (1, 1, 1, 1), False, OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", 2) if isinstance(obj, Storage) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(OrderedDict([("conv1.weight", Tensor())]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", struct.pack("<2f", 0.5, -0.5))
        z.writestr("archive/version", "3\n")
    return out.getvalue()


if __name__ == "__main__":
    main()
