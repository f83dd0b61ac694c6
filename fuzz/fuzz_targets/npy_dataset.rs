//! The `npy:X.npy,Y.npy` data set files: images (float32 N×C×H×W) and labels (int64/int32).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clado::data::bytes::images_from_npy_bytes("x.npy", data);
    let _ = clado::data::bytes::labels_from_npy_bytes("y.npy", data);
});
