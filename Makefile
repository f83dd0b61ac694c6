# CLADO toolkit: the two commands of the README.
#   make demo   set everything up, build, and run the main job on the built-in model
#   make test   set everything up and run the whole test suite
# Other targets: setup (system packages, SCIP), build (release binaries), bench, fuzz-smoke
# (a few seconds of each fuzz target; part of `make test`), fuzz (FUZZ_SECONDS per target).

CARGO ?= cargo
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
BIN := target/release

.PHONY: all setup setup-data setup-scip build test fuzz-smoke fuzz demo bench clean

all: build

setup: setup-data setup-scip

# Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files).
setup-data:
	@if [ ! -e $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ] && [ ! -e $(FASHION_DIR)/t10k-images-idx3-ubyte ]; then \
	  echo "setup: installing Debian package dataset-fashion-mnist" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# SCIP 10.0.2 for `allocate` (from the PyPI wheel pyscipopt==6.3.0), into .deps/scip.
setup-scip:
	@bash scripts/setup-scip.sh

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
	bash scripts/demo.sh

# Speed figures (release builds): forward engine, psd's eigendecomposition, allocate's solver.
bench: setup-scip
	$(CARGO) bench -p clado --bench engine
	$(CARGO) bench -p psd
	bash scripts/bench-allocate.sh

clean:
	$(CARGO) clean
	rm -rf out
