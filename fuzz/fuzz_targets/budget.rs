//! The budget grammar (`avg-bits=4`, `bops=1e9`, ...).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(b) = clado::budget::Budget::parse(&text) {
        assert!(b.value().is_finite() && b.value() > 0.0, "{text}: {b}");
    }
});
