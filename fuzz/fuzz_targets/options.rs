//! The option grammar with brace expansion (`--options 'w{2,4,8}a{2,4,8}'`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(options) = clado::options::QuantOption::parse_list(&text) {
        // Every parsed option prints as a name that parses back to itself.
        for o in options {
            assert_eq!(clado::options::QuantOption::parse(&o.to_string()).ok(), Some(o));
        }
    }
});
