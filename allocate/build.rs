//! Put SCIP's library directory into the rpath of every binary of this package (the tool, its
//! tests, examples and benches), so they run without LD_LIBRARY_PATH.
//!
//! The directory comes from the scip-sys shim (`links = "scip"`, `cargo:libdir=...`), which Cargo
//! passes only to the build scripts of packages that depend on it directly, as DEP_SCIP_LIBDIR;
//! a `rustc-link-arg` in the shim's own build script reaches only the shim's targets.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_SCIP_LIBDIR");
    if let Ok(dir) = std::env::var("DEP_SCIP_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
