//! The quantizer formulas of DESIGN.md ("Quantizers") that the engine applies itself.
//!
//! The engine quantizes activations in its hot path (the input of a quantized layer, image by
//! image) and fake-quantizes weights once per (layer, bits) when asked to from scales. The
//! formulas are DESIGN.md's, computed in f32 with round-half-to-even:
//!
//! - weights: `q = clamp(round(w / s_c), −qmax, qmax) · s_c`, `qmax = 2^(b−1) − 1`;
//! - activations: `n = 2^b − 1`, `s = (hi − lo) / n`, `zp = round(−lo / s)`,
//!   `x_q = (clamp(round(x / s) + zp, 0, n) − zp) · s`.
//!
//! Note for the merge: `clado::quant` holds the same formulas for the other tools; once it
//! lands, these should call it (or it these) so that there is one definition. Tests in
//! `engine::tests` pin the formulas on hand-checked values.

use super::kernels::Isa;
use crate::{Error, Result};

/// Quantization of a layer's input activation: asymmetric, per tensor, `bits` bits over the
/// clipping range `[lo, hi]` (from `calib.json`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    bits: u8,
    lo: f32,
    hi: f32,
    scale: f32,
    zero_point: f32,
    levels: f32,
}

impl ActQuant {
    /// A quantizer over `[lo, hi]`. The range must be finite and contain 0 (DESIGN.md ranges
    /// are `[min(0, min x), max(0, max x)]` or a shrunk version of it), `bits` in 1..=16.
    /// The degenerate range `[0, 0]` (a tensor that was all zeros) maps everything to 0.
    pub fn new(bits: u8, lo: f32, hi: f32) -> Result<Self> {
        if !(1..=16).contains(&bits) {
            return Err(Error::other(format!(
                "activation bits {bits} out of range 1..=16"
            )));
        }
        if !lo.is_finite() || !hi.is_finite() || lo > 0.0 || hi < 0.0 {
            return Err(Error::other(format!(
                "activation range [{lo}, {hi}] must be finite and contain 0"
            )));
        }
        let levels = ((1u32 << bits) - 1) as f32;
        let scale = (hi - lo) / levels;
        let zero_point = if scale > 0.0 {
            (-lo / scale).round_ties_even()
        } else {
            0.0
        };
        Ok(ActQuant {
            bits,
            lo,
            hi,
            scale,
            zero_point,
            levels,
        })
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The clipping range `(lo, hi)`.
    pub fn range(&self) -> (f32, f32) {
        (self.lo, self.hi)
    }

    /// The step `s = (hi − lo) / (2^b − 1)`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// `zp = round(−lo / s)`.
    pub fn zero_point(&self) -> f32 {
        self.zero_point
    }

    /// Fake-quantizes one value.
    #[inline(always)]
    pub fn apply(&self, x: f32) -> f32 {
        if self.scale > 0.0 {
            let q = ((x / self.scale).round_ties_even() + self.zero_point).clamp(0.0, self.levels);
            (q - self.zero_point) * self.scale
        } else {
            0.0
        }
    }

    /// `dst[i] = apply(src[i])`, vectorised where the CPU allows.
    pub(crate) fn apply_into(&self, isa: Isa, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: chosen only when the CPU has AVX-512 (`Isa::detect`).
            Isa::Avx512 => unsafe { apply_avx512(self, src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: chosen only when the CPU has AVX2 and FMA.
            Isa::Avx2 => unsafe { apply_avx2(self, src, dst) },
            _ => apply_body(self, src, dst),
        }
    }
}

#[inline(always)]
fn apply_body(q: &ActQuant, src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = q.apply(x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn apply_avx512(q: &ActQuant, src: &[f32], dst: &mut [f32]) {
    apply_body(q, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2(q: &ActQuant, src: &[f32], dst: &mut [f32]) {
    apply_body(q, src, dst)
}

/// Fake-quantizes weights whose dim 0 is the output channel (`[out, ...]`, PyTorch layout):
/// symmetric, narrow range, `bits` bits, one scale per output channel (`scales.len() == out`)
/// or one for the whole tensor (`scales.len() == 1`).
pub fn fake_quantize_weights(
    weight: &[f32],
    out_channels: usize,
    bits: u8,
    scales: &[f32],
) -> Result<Vec<f32>> {
    if !(2..=16).contains(&bits) {
        return Err(Error::other(format!(
            "weight bits {bits} out of range 2..=16"
        )));
    }
    if scales.len() != out_channels && scales.len() != 1 {
        return Err(Error::other(format!(
            "{} weight scales given, expected {out_channels} (per channel) or 1 (per tensor)",
            scales.len()
        )));
    }
    if let Some((c, s)) = scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        return Err(Error::other(format!(
            "weight scale {s} of channel {c} is not positive and finite"
        )));
    }
    assert_eq!(weight.len() % out_channels, 0);
    let per_channel = weight.len() / out_channels;
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    Ok(weight
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let s = if scales.len() == 1 {
                scales[0]
            } else {
                scales[i / per_channel]
            };
            (w / s).round_ties_even().clamp(-qmax, qmax) * s
        })
        .collect())
}
