//! IDX files (Fashion-MNIST), gzipped or not, as images (3-D) and labels (1-D).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clado::data::bytes::idx_dims("images-idx3-ubyte", data, 3);
    let _ = clado::data::bytes::idx_dims("labels-idx1-ubyte", data, 1);
});
