#!/usr/bin/env bash
# Fetch SCIP 10.0.2 for the `allocate` tool, into .deps/scip (ignored by git):
#   - the shared library from the PyPI wheel pyscipopt==6.3.0 (pyscipopt.libs/libscip-*.so.10.0
#     and the libraries it needs), linked as lib/libscip.so;
#   - scip-sys 0.1.28's prebuilt bindings for SCIP 10.0.2 (src/bindings/linux.rs) from crates.io.
# Idempotent: does nothing when both are already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/scip"
if [ -e "$dest/lib/libscip.so" ] && [ -s "$dest/bindings.rs" ]; then exit 0; fi
case "$(uname -sm)" in
  "Linux x86_64") ;;
  *) echo "setup-scip: only Linux x86_64 is supported (got $(uname -sm))" >&2; exit 2 ;;
esac
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" pyscipopt==6.3.0
python3 - "$work/wheel" "$work/x" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/pyscipopt-6.3.0-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("pyscipopt.libs/"):
            z.extract(n, sys.argv[2])
PY
mkdir -p "$dest.new/lib"
cp "$work"/x/pyscipopt.libs/* "$dest.new/lib/"
scip=$(cd "$dest.new/lib" && ls libscip-*.so.10.0 | head -n 1)
[ -n "$scip" ] || { echo "setup-scip: no libscip-*.so.10.0 in the pyscipopt wheel" >&2; exit 1; }
ln -s "$scip" "$dest.new/lib/libscip.so"
# scip-sys's crate archive, through cargo's own client (fetches it into the registry cache).
(cd "$work" && cargo new --quiet --lib probe && cd probe \
  && cargo add --quiet scip-sys@=0.1.28 --no-default-features && cargo fetch --quiet)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/scip-sys-0.1.28 | head -n 1)
cp "$src/src/bindings/linux.rs" "$dest.new/bindings.rs"
rm -rf "$dest"; mv "$dest.new" "$dest"
echo "setup-scip: SCIP 10.0.2 ready in $dest" >&2
