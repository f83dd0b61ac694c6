#!/usr/bin/env python3
"""Print the `allocate --pin` flags that put every layer at one option: the highest-precision
option of index.json whose uniform model fits the budget (the experiment graph's `uniform`
method). Budgets follow docs/definitions.md: FP counts 32 bits; layers fixed in the index count at
their fixed option. The experiment graph writes the flags to a file, a stage of its own:

    uniform.py index.json --avg-bits 4 > 4.pins
    allocate --matrix G.npy --index index.json --avg-bits 4 $(< 4.pins)

Exit status 1 (and a message on stderr) when no option fits; 2 on bad usage or input.
"""
import argparse
import json
import re
import sys

FP_BITS = 32


def bits(value):
    return FP_BITS if value is None else value


def option_bits(name):
    """(w_bits, a_bits) of an option name (docs/definitions.md's grammar): `w4a8`, `w4`, `a8`, `fp`."""
    w = re.search(r"w(\d+)", name)
    a = re.search(r"a(\d+)", name)
    return (int(w.group(1)) if w else FP_BITS, int(a.group(1)) if a else FP_BITS)


def cost(index, w_bits, a_bits, kind):
    """The budget measure of the model with every variable layer at (w_bits, a_bits)."""
    total_params = 0
    size_bits = 0
    bops = 0
    for layer in index["layers"]:
        w, a = (w_bits, a_bits)
        if layer["name"] in index.get("fixed", {}):
            w, a = option_bits(index["fixed"][layer["name"]])
        total_params += layer["params"]
        size_bits += layer["params"] * w
        bops += layer["macs"] * w * a
    return {
        "avg-bits": size_bits / total_params,
        "size-bits": size_bits,
        "size-mb": size_bits / 8e6,
        "bops": bops,
    }[kind]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", help="index.json written by perturb")
    kinds = parser.add_mutually_exclusive_group(required=True)
    for kind in ("avg-bits", "size-bits", "size-mb", "bops"):
        kinds.add_argument(f"--{kind}", type=float, metavar="B", help=f"budget of kind {kind}")
    args = parser.parse_args()
    kind, budget = next((k, getattr(args, k.replace("-", "_"))) for k in ("avg-bits", "size-bits", "size-mb", "bops")
                        if getattr(args, k.replace("-", "_")) is not None)
    try:
        with open(args.index) as f:
            index = json.load(f)
        options = [(bits(o["w_bits"]), bits(o["a_bits"]), o["name"]) for o in index["options"]]
        variable_layers = sorted({v["layer"] for v in index["variables"]})
        names = [index["layers"][i]["name"] for i in variable_layers]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        print(f"uniform.py: {args.index}: not a readable index.json ({e!r})", file=sys.stderr)
        sys.exit(2)
    fitting = [o for o in options if cost(index, o[0], o[1], kind) <= budget * (1 + 1e-12)]
    if not fitting:
        smallest = min(cost(index, o[0], o[1], kind) for o in options)
        print(f"uniform.py: {args.index}: no uniform option fits {kind}={budget:g} "
              f"(the smallest uniform model needs {kind}={smallest:g})", file=sys.stderr)
        sys.exit(1)
    w, a, name = max(fitting)
    print(" ".join(f"--pin {layer}={name}" for layer in names))


if __name__ == "__main__":
    main()
