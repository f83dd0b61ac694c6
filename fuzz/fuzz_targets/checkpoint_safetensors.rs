//! `.safetensors` checkpoints: the 8-byte header length, the JSON header, the tensor views.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clado::checkpoint::safetensors_from_bytes("w.safetensors", data);
});
