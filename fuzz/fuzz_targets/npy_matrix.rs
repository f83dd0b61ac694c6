//! `.npy` matrices (G.npy, the psd output): any bytes give a matrix or an input error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = clado::io::matrix_from_npy_bytes("G.npy", data) {
        let _ = clado::io::check_finite("G.npy", &m);
    }
});
