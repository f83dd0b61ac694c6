//! `index` JSON documents (Index): any bytes give a document or an input error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clado::io::json_from_bytes::<clado::format::Index>("index.json", data);
});
