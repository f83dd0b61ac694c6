//! The engine's side of the quantizers: the formulas themselves are [`crate::quant`]'s
//! (docs/definitions.md, "Quantizers"), so that the engine, `quantize apply` and every other tool
//! quantize bit for bit alike. This module adds the checked constructor the plans use.

use crate::format::ActRange;
use crate::options::{MAX_BITS, MIN_BITS};
use crate::quant::{self, ActQuantizer};
use crate::{Error, Result};

/// Quantization of a layer's input activation: asymmetric, per tensor, `bits` bits over the
/// clipping range `[lo, hi]` (from `calib.json`), as [`quant::ActQuantizer`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    range: ActRange,
    quantizer: ActQuantizer,
}

impl ActQuant {
    /// A quantizer over `[lo, hi]`: `bits` in `MIN_BITS..=MAX_BITS`, a finite range that
    /// contains 0 ([`quant::check_act_range`]). The range `[0, 0]` (an input that was all
    /// zeros) maps everything to 0.
    pub fn new(bits: u8, lo: f32, hi: f32) -> Result<Self> {
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::other(format!(
                "activation bits {bits} out of range {MIN_BITS}..={MAX_BITS}"
            )));
        }
        let range = ActRange { lo, hi };
        quant::check_act_range(range).map_err(Error::other)?;
        Ok(ActQuant {
            range,
            quantizer: ActQuantizer::from_range(bits, range),
        })
    }

    pub fn bits(&self) -> u8 {
        self.quantizer.bits
    }

    /// The clipping range `(lo, hi)`.
    pub fn range(&self) -> (f32, f32) {
        (self.range.lo, self.range.hi)
    }

    /// The quantizer (step `scale`, `zero_point`).
    pub fn quantizer(&self) -> &ActQuantizer {
        &self.quantizer
    }

    /// Fake-quantizes one value.
    pub fn apply(&self, x: f32) -> f32 {
        self.quantizer.quantize(x)
    }
}

/// Fake-quantizes weights whose dim 0 is the output channel (PyTorch layout) with checked
/// scales: one per output channel, or one for the whole tensor.
pub(crate) fn fake_quantize_weights(weight: &[f32], out_channels: usize, bits: u8, scales: &[f32]) -> Result<Vec<f32>> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(Error::other(format!(
            "weight bits {bits} out of range {MIN_BITS}..={MAX_BITS}"
        )));
    }
    quant::check_weight_scales(scales, out_channels).map_err(Error::other)?;
    Ok(quant::fake_quantize_weights(weight, out_channels, bits, scales))
}
