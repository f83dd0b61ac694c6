# CLADO toolkit: the two commands of the README.
#   make demo   set everything up, build, and run the main job on the built-in model
#   make test   set everything up and run the whole test suite
# Other targets: setup (system packages, SCIP), build (release binaries), bench.

CARGO ?= cargo
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
BIN := target/release

.PHONY: all setup setup-data setup-scip build test demo bench clean

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

test: setup
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

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
