//! JPEG and PNG files of `imagefolder:` data: any bytes give an image of the shape the header
//! announced or an input error, never a panic, and nothing is allocated beyond the one-image
//! size limit (the shape is checked from the header first, as the loader does). Each input goes
//! through three preprocessings: none (RGB and grayscale) and a resize with a centre crop.
#![no_main]
use clado::data::imagefolder::{decode_into, image_shape};
use clado::data::Preprocess;
use libfuzzer_sys::fuzz_target;

/// Decoded outputs above this many values are skipped (the decoder's own limit is 512 MiB,
/// too much for a fuzzer's memory limit; its check is what the header test exercises).
const MAX_VALUES: usize = 1 << 22;

fuzz_target!(|data: &[u8]| {
    let resized = Preprocess { resize: Some(6), crop: Some(4), ..Preprocess::none(3) };
    for pre in [Preprocess::none(3), Preprocess::none(1), resized] {
        let Ok(shape) = image_shape("x.img", data, &pre) else { continue };
        assert_eq!(shape[0], pre.channels());
        let n: usize = shape.iter().product();
        if n > MAX_VALUES {
            continue;
        }
        let mut out = vec![f32::NAN; n];
        if decode_into("x.img", data, &pre, shape, &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()), "a decoded image holds a non-finite value");
        }
    }
});
