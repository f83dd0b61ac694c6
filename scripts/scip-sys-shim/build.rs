//! Link SCIP from the directory prepared by `scripts/setup-scip.sh`.
//!
//! The directory (default `<workspace>/.deps/scip`, override with `CLADO_SCIP_DIR`) holds
//! `lib/libscip.so` (a link to the wheel's `libscip-*.so.10.0`, with its sibling libraries) and
//! `bindings.rs` (scip-sys 0.1.28's `src/bindings/linux.rs`, generated for SCIP 10.0.2).
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=CLADO_SCIP_DIR");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = env::var_os("CLADO_SCIP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../.deps/scip"));
    let lib = dir.join("lib");
    let bindings = dir.join("bindings.rs");
    println!("cargo:rerun-if-changed={}", bindings.display());
    println!("cargo:rerun-if-changed={}", lib.join("libscip.so").display());
    if !bindings.exists() || !lib.join("libscip.so").exists() {
        panic!(
            "SCIP is not set up in {}: run `make setup` (scripts/setup-scip.sh) first; it fetches \
             SCIP 10.0.2 from the PyPI wheel pyscipopt==6.3.0 and scip-sys's prebuilt bindings",
            dir.display()
        );
    }
    let lib = lib.canonicalize().expect("canonical SCIP lib dir");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    std::fs::copy(&bindings, out.join("bindings.rs")).expect("copy SCIP bindings");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=scip");
    println!("cargo:libdir={}", lib.display());
    // Binaries find the library without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
