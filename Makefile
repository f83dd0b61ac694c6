# CLADO toolkit: the two commands of the README.
#   make demo   set everything up, build, and run the experiment graph on the built-in model
#   make test   set everything up and run the whole test suite
# Other targets: setup (system packages, SCIP, font, Slurm), build (release binaries), bench, fuzz-smoke
# (a few seconds of each fuzz target; part of `make test`), fuzz (FUZZ_SECONDS per target).
#
# `make demo` runs scripts/experiment.mk once per experiment of EXPERIMENTS (JOBS stages at a
# time) and prints each experiment's table. FULL=1: all four experiments and finer budget
# sweeps. Any variable of scripts/experiment.mk passes through, e.g.
#   make demo EXPERIMENTS=main PSD_METHOD=clip SAMPLES=512

CARGO ?= cargo
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
BIN := target/release
FONT ?= /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
JOBS ?= 2
# The reduced graph by default: this project's main experiment (w2a8,w4a8,w8a8); FULL=1 adds the
# seed's binaryWeight (w4,fp), multiWeight (w2,w4,w8) and 9-option general variants and the finer
# budget sweeps.
EXPERIMENTS ?= main $(if $(FULL),binary multi general)
# The built-in models (scripts/experiment.mk's MODEL) and the calibration draws of each
# experiment (REPEATS; empty: one draw, seed 0).
MODELS ?= resnet20 mobilenetv2
REPEATS ?= 2
# The reduced graph of `make demo`, to stay within 15 minutes on a 2-core machine: each of these
# variables of scripts/experiment.mk gets this value unless given (FULL=1: none of them).
demo_default = $(if $(or $(FULL),$(filter-out undefined,$(origin $(1)))),,$(1)='$(2)')
DEMO_VARS = $(call demo_default,BUDGETS,2.5 3 4) $(call demo_default,METRICS,loss) $(call demo_default,SAMPLES,128) \
  $(call demo_default,EVAL_SAMPLES,3000)

# Recipes run under bash with errexit, nounset and pipefail: any failing command fails its target.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

.PHONY: all setup setup-data setup-scip setup-font setup-slurm setup-venv build test fuzz-smoke fuzz demo bench clean

all: build

setup: setup-data setup-scip setup-font setup-slurm setup-venv

# Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files).
setup-data:
	@if [ ! -e $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ] && [ ! -e $(FASHION_DIR)/t10k-images-idx3-ubyte ]; then \
	  echo "setup: installing Debian package dataset-fashion-mnist" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# SCIP 10.0.2 for `allocate` (from the PyPI wheel pyscipopt==6.3.0), into .deps/scip.
setup-scip:
	@bash scripts/setup-scip.sh

# The TrueType font clado-plot draws the PNG's text with (Debian's fonts-dejavu-core).
setup-font:
	@if [ ! -e $(FONT) ]; then \
	  echo "setup: installing Debian package fonts-dejavu-core" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null; \
	fi

# Slurm and munge (Debian's slurm-wlm and munge; the munge package makes /etc/munge/munge.key):
# the client commands of scripts/experiment.mk's LAUNCHER=slurm, and the daemons of the test
# that starts a single-node cluster (tests/tests/slurm.rs).
setup-slurm:
	@if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then \
	  echo "setup: installing Debian packages slurm-wlm and munge" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; \
	fi

# onnxruntime (the ONNX graph tests' reference), onnx, numpy and Pillow (the image decoding
# tests' reference), pinned, in .deps/venv.
VENV := .deps/venv
VENV_PACKAGES := onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 pillow==13.0.0
setup-venv:
	@if ! $(VENV)/bin/python -c 'import onnxruntime, onnx, numpy, PIL' 2>/dev/null; then \
	  echo "setup: installing $(VENV_PACKAGES) into $(VENV)" >&2; \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install -q $(VENV_PACKAGES); \
	fi

build: setup-scip
	$(CARGO) build --release --workspace --bins

test: setup fuzz-smoke
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# Coverage-guided fuzzing on the stable toolchain (scripts/fuzz.sh installs cargo-fuzz into
# .deps/cargo-fuzz). The smoke run skips the two checkpoint targets (they build candle).
FUZZ_SMOKE_SECONDS ?= 4
FUZZ_SECONDS ?= 300
fuzz-smoke:
	bash scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) --smoke

fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

demo: setup build
	@for model in $(MODELS); do for exp in $(EXPERIMENTS); do \
	  echo "== model $$model, experiment $$exp" >&2; \
	  $(MAKE) --no-print-directory -f scripts/experiment.mk -j$(JOBS) MODEL=$$model EXP=$$exp BIN=$(BIN) \
	    REPEATS=$(REPEATS) $(DEMO_VARS); \
	done; done
	@for model in $(MODELS); do for exp in $(EXPERIMENTS); do \
	  d=out/$$model/$$exp; echo; cat $$d/table.md; echo; \
	  echo "Plot: $$d/plot.png (and .svg); CSV: $$d/table.csv$(if $(REPEATS),; each draw in $$d/draw-K/ (its sanity check in sanity.md),; sanity check: $$d/sanity.md)"; \
	done; done

# Speed figures (release builds): forward engine, quantizers, eigendecomposition, allocate's solver.
bench: setup-scip
	$(CARGO) bench -p clado --bench engine
	$(CARGO) bench -p clado --bench quant
	$(CARGO) bench -p psd
	bash scripts/bench-allocate.sh

clean:
	$(CARGO) clean
	rm -rf out
