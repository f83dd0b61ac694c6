//! Raw SCIP bindings (scip-sys 0.1.28's prebuilt bindings for SCIP 10.0.2), see `build.rs`.
#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(dead_code)]
#![allow(improper_ctypes)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
