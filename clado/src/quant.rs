//! Quantizers (docs/definitions.md, "Quantizers"): pure Rust on `f32` slices, exact so that every tool
//! quantizes alike and results can be cross-checked.
//!
//! # Weights: symmetric, narrow range, per output channel
//! For `b` bits, `qmax = 2^(b−1) − 1`; channel `c` (dim 0 of a Conv2d `[out,in,kh,kw]` or Linear
//! `[out,in]` weight) gets the scale `s_c = max|W_c| / qmax` (`minmax`), or `s_c = 1` where the
//! channel is all zero, and
//!
//! ```text
//! Wq = clamp(round(W / s_c), −qmax, qmax) · s_c
//! ```
//!
//! With `per_tensor` one scale covers the whole tensor. Two bits give ternary weights `{−s, 0, s}`.
//!
//! # Activations: asymmetric, per tensor
//! From a range (`lo = min(0, min x)`, `hi = max(0, max x)` for `minmax`), `n = 2^b − 1`,
//! `s = (hi − lo) / n`, `zp = round(−lo / s)` and
//!
//! ```text
//! xq = (clamp(round(x / s) + zp, 0, n) − zp) · s
//! ```
//!
//! When `hi == lo` (both 0: the layer's input was all zero during calibration) the formula has
//! `s = 0`; [`ActQuantizer`] then stores `scale = 0`, `zero_point = 0` and maps every input to 0
//! (the range `[0, 0]` holds one level). NaN stays NaN.
//!
//! # Rounding and arithmetic
//! Rounding is round half to even everywhere ([`round_half_even`], as `torch.round`). The
//! quotient is `x / s` as docs/definitions.md writes it (PyTorch's fake-quantize kernels multiply by
//! `1/s`, which can differ by one ulp and so, rarely, at an exact tie). Clamping before or after
//! rounding gives the same integer because the bounds are integers; the loops clamp first so
//! that the fast rounding trick stays exact (`|y| ≤ 255`). NaN inputs stay NaN. Inputs are
//! expected finite: the tools check checkpoints and activations before calibrating.
//!
//! # `mse` calibration
//! As the seed's MQBench `MSEObserver`: the clipping range that minimises the squared error
//! ‖x − q(x)‖² among shrink factors `f` of the `minmax` range. The grid is
//! `f = k / 100, k = 100, 99, …, 1` ([`mse_shrink_factors`]; MQBench tried `1 − 0.01·i` for 80
//! or 95 steps, the same values down to 0.21 or 0.06). Weights: `s_c = (f · max|W_c|) / qmax`
//! per channel (or per tensor). Activations: `[lo·f, hi·f]`, per tensor over *all* calibration
//! data (MQBench searched each batch and kept the running min/max of the per-batch optima).
//! Factor 1 is the `minmax` range and wins ties, so `mse` never gives a larger squared error
//! than `minmax` on the data it calibrated on:
//!
//! - weights are searched exactly: each candidate's error is summed over the channel with the
//!   quantizer's own arithmetic (f64 sums of exact f32 differences);
//! - activations cannot all be kept (a calibration set is ~10⁷ values per layer), so
//!   [`ActObserver`] keeps a histogram of at most [`HISTOGRAM_BINS`] equal bins (1.5 MiB) whose
//!   width is a power of two, each holding count, Σy and Σy² of the offsets `y = x − a` from its
//!   left edge `a`: sufficient statistics, so merging bins when the range grows loses nothing
//!   and batching does not change the result. A candidate's error is exact on bins that lie in
//!   one quantization cell and bounded rigorously on the bins that a rounding threshold cuts
//!   (see [`ActObserver::range`]); a shrunk range is chosen only when its upper bound is below
//!   the lower bound for `minmax`, so that the guarantee holds without the data.
//!
//! Measured (`cargo bench -p clado --bench quant`, 10⁶ values each of Gaussian, post-ReLU Gaussian with
//! outliers, and Laplace data, at 2, 4 and 8 bits): the histogram search picked the exact best
//! factor of the grid in all nine cases; |estimate − exact| was at most 7·10⁻⁵ of the error and
//! the bound at most 1.6·10⁻³ of it (8 bits; 10⁻⁵ and 1.4·10⁻⁴ at 4 bits).
//!
//! # Speed
//! CPU time per call on the build machine (`cargo bench -p clado --bench quant`, AMD EPYC, one
//! thread, 10⁷ Gaussian values, the other core busy): fake-quantizing weights 0.28 ns and
//! activations 0.23 ns per value; observing 0.7 ns (`minmax`) or about 4 ns (`mse`) per value; an
//! `mse` activation range 17–20 ms per bit width; `mse` weight scales 0.63 ns per weight and grid
//! factor, i.e. 0.63 s for 10⁷ weights
//! (a ResNet-56 has 0.85·10⁶) per bit width.

use crate::format::ActRange;
use crate::options::{MAX_BITS, MIN_BITS};
use crate::Error;
use std::fmt;
use std::str::FromStr;

/// Range calibration method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calibration {
    /// The full observed range (docs/definitions.md formulas).
    MinMax,
    /// The shrunk range with the least squared error (see the module docs).
    Mse,
}

impl Calibration {
    /// The name used on the command line and in `calib.json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Calibration::MinMax => "minmax",
            Calibration::Mse => "mse",
        }
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Calibration {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "minmax" => Ok(Calibration::MinMax),
            "mse" => Ok(Calibration::Mse),
            other => Err(Error::usage(format!(
                "calibration '{other}': expected 'minmax' or 'mse'"
            ))),
        }
    }
}

/// Number of shrink factors tried by `mse` calibration: `f = k / MSE_GRID_STEPS`.
pub const MSE_GRID_STEPS: u32 = 100;

/// The `mse` shrink factors, largest first: `1.0, 0.99, …, 0.01` (f32, `k as f32 / 100.0`).
pub fn mse_shrink_factors() -> impl Iterator<Item = f32> {
    (1..=MSE_GRID_STEPS).rev().map(|k| k as f32 / MSE_GRID_STEPS as f32)
}

/// Round half to even (as `torch.round`): `0.5 → 0`, `1.5 → 2`, `-2.5 → -2`.
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

/// `1.5 · 2^23`: adding and subtracting it rounds to an integer, ties to even.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Round half to even for `|y| ≤ 2^22`, in two additions that vectorise on every x86-64 (the
/// library call behind `round_ties_even` does not without SSE4.1). The hot loops clamp to at
/// most ±255 first. The result of rounding a small negative number is `+0.0`, not `-0.0`.
#[inline(always)]
fn round_half_even_small(y: f32) -> f32 {
    (y + ROUND_MAGIC) - ROUND_MAGIC
}

fn check_bits(bits: u8) {
    assert!(
        (MIN_BITS..=MAX_BITS).contains(&bits),
        "quantizer bits {bits} out of range {MIN_BITS}..={MAX_BITS}"
    );
}

/// Largest weight code at `bits`: `2^(bits−1) − 1` (1 for ternary 2-bit weights, 127 at 8 bits).
///
/// # Panics
/// If `bits` is outside `MIN_BITS..=MAX_BITS`.
pub fn weight_qmax(bits: u8) -> f32 {
    check_bits(bits);
    ((1u32 << (bits - 1)) - 1) as f32
}

/// The `minmax` weight scale of a group with largest magnitude `max_abs`: `max_abs / qmax`,
/// or 1 for an all-zero group.
pub fn weight_scale_from_max(max_abs: f32, bits: u8) -> f32 {
    if max_abs == 0.0 {
        1.0
    } else {
        max_abs / weight_qmax(bits)
    }
}

/// Largest magnitude of `values` (NaN is ignored; 0 for an empty slice).
fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn channel_len(weights: &[f32], out_channels: usize) -> usize {
    assert!(out_channels > 0, "a weight tensor needs at least one output channel");
    let per_channel = weights.len() / out_channels;
    assert!(
        per_channel * out_channels == weights.len(),
        "{} weights do not split into {out_channels} output channels",
        weights.len()
    );
    per_channel
}

/// Per-output-channel (or, with `per_tensor`, one) symmetric narrow-range weight scales.
///
/// `weights` is in PyTorch layout with dim 0 the output channel (`len = out_channels ·
/// per_channel`). Returns `out_channels` scales, or one with `per_tensor`. Every scale is
/// positive: 1 for an all-zero group.
///
/// # Panics
/// If `out_channels` is 0 or does not divide `weights.len()`, or `bits` is out of range.
pub fn weight_scales(weights: &[f32], out_channels: usize, bits: u8, per_tensor: bool, calib: Calibration) -> Vec<f32> {
    let per_channel = channel_len(weights, out_channels);
    let qmax = weight_qmax(bits);
    let scale_of = |group: &[f32]| match calib {
        Calibration::MinMax => weight_scale_from_max(max_abs(group), bits),
        Calibration::Mse => weight_mse_scale(group, qmax),
    };
    if per_tensor || per_channel == 0 {
        vec![scale_of(weights); if per_tensor { 1 } else { out_channels }]
    } else {
        weights.chunks_exact(per_channel).map(scale_of).collect()
    }
}

/// The `mse` scale of one group: the grid candidate with the least squared error, computed
/// with the quantizer's own arithmetic; the `minmax` scale (factor 1) wins ties.
fn weight_mse_scale(group: &[f32], qmax: f32) -> f32 {
    let largest = max_abs(group);
    if largest == 0.0 {
        return 1.0;
    }
    let mut best_scale = largest / qmax;
    let mut best_error = weight_squared_error(group, best_scale, qmax);
    for factor in mse_shrink_factors().skip(1) {
        let scale = (largest * factor) / qmax;
        if scale <= 0.0 {
            continue; // underflow of a subnormal group
        }
        let error = weight_squared_error(group, scale, qmax);
        if error < best_error {
            best_scale = scale;
            best_error = error;
        }
    }
    best_scale
}

/// One fake-quantized weight: `clamp(round(w / s), −qmax, qmax) · s`.
#[inline(always)]
fn fake_quantize_weight(w: f32, scale: f32, qmax: f32) -> f32 {
    round_half_even_small((w / scale).clamp(-qmax, qmax)) * scale
}

/// Σ (w − q(w))² in f64 (differences of two f32 are exact in f64), in eight interleaved sums
/// so the loop pipelines; the order is fixed, so the result is deterministic.
fn weight_squared_error(group: &[f32], scale: f32, qmax: f32) -> f64 {
    let mut sums = [0.0f64; 8];
    let chunks = group.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (sum, &w) in sums.iter_mut().zip(chunk) {
            let d = w as f64 - fake_quantize_weight(w, scale, qmax) as f64;
            *sum += d * d;
        }
    }
    for (sum, &w) in sums.iter_mut().zip(tail) {
        let d = w as f64 - fake_quantize_weight(w, scale, qmax) as f64;
        *sum += d * d;
    }
    sums.iter().sum()
}

/// The scale of channel `c` from a per-channel (`len = out_channels`) or per-tensor (`len = 1`)
/// list, checked.
fn scales_per_channel(scales: &[f32], out_channels: usize) -> impl Fn(usize) -> f32 + '_ {
    assert!(
        scales.len() == out_channels || scales.len() == 1,
        "{} weight scales for {out_channels} output channels (expected {out_channels} or 1)",
        scales.len()
    );
    move |c| if scales.len() == 1 { scales[0] } else { scales[c] }
}

/// Fake-quantize `weights` into `out` (same length) with the given scales (`out_channels` of
/// them, or 1 for a per-tensor quantizer). Does not allocate.
///
/// # Panics
/// On mismatched lengths or `bits` out of range (see [`check_weight_scales`] for input checks).
pub fn fake_quantize_weights_into(weights: &[f32], out_channels: usize, bits: u8, scales: &[f32], out: &mut [f32]) {
    assert_eq!(weights.len(), out.len(), "output length differs from the weights'");
    let per_channel = channel_len(weights, out_channels);
    let qmax = weight_qmax(bits);
    let scale_of = scales_per_channel(scales, out_channels);
    if per_channel == 0 {
        return;
    }
    for (c, (src, dst)) in weights
        .chunks_exact(per_channel)
        .zip(out.chunks_exact_mut(per_channel))
        .enumerate()
    {
        let scale = scale_of(c);
        for (d, &w) in dst.iter_mut().zip(src) {
            *d = fake_quantize_weight(w, scale, qmax);
        }
    }
}

/// Fake-quantize weights with given scales (`scales.len() == out_channels`, or 1 per tensor).
pub fn fake_quantize_weights(weights: &[f32], out_channels: usize, bits: u8, scales: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; weights.len()];
    fake_quantize_weights_into(weights, out_channels, bits, scales, &mut out);
    out
}

/// Integer weight codes in `−qmax..=qmax` (for export), with the same rounding and clamping:
/// `fake_quantize_weights(..)[i] == codes[i] as f32 · s_c` exactly. NaN weights give 0.
pub fn weight_codes(weights: &[f32], out_channels: usize, bits: u8, scales: &[f32]) -> Vec<i8> {
    let per_channel = channel_len(weights, out_channels);
    let qmax = weight_qmax(bits);
    let scale_of = scales_per_channel(scales, out_channels);
    if per_channel == 0 {
        return Vec::new();
    }
    let mut codes = Vec::with_capacity(weights.len());
    for (c, src) in weights.chunks_exact(per_channel).enumerate() {
        let scale = scale_of(c);
        codes.extend(
            src.iter()
                .map(|&w| round_half_even_small((w / scale).clamp(-qmax, qmax)) as i8),
        );
    }
    codes
}

/// Check scales read from a file: `out_channels` of them (or 1 for per tensor), each positive
/// and finite. The message names the problem; the caller adds the file and layer.
pub fn check_weight_scales(scales: &[f32], out_channels: usize) -> Result<(), String> {
    if scales.len() != out_channels && scales.len() != 1 {
        return Err(format!(
            "{} weight scales, expected {out_channels} (one per output channel) or 1 (per tensor)",
            scales.len()
        ));
    }
    match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        Some(c) => Err(format!(
            "weight scale {} at channel {c} is not a positive finite number",
            scales[c]
        )),
        None => Ok(()),
    }
}

/// Check an activation range read from a file: `lo ≤ 0 ≤ hi`, with a finite width.
pub fn check_act_range(range: ActRange) -> Result<(), String> {
    if range.lo <= 0.0 && range.hi >= 0.0 && (range.hi - range.lo).is_finite() {
        Ok(())
    } else {
        Err(format!(
            "activation range [{}, {}]: expected finite lo <= 0 <= hi",
            range.lo, range.hi
        ))
    }
}

/// Asymmetric per-tensor activation quantizer (docs/definitions.md): `n = 2^bits − 1` levels,
/// `xq = (clamp(round(x/scale) + zero_point, 0, n) − zero_point) · scale`.
///
/// `scale == 0` (from the range `[0, 0]`) maps every non-NaN input to 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuantizer {
    pub bits: u8,
    pub scale: f32,
    /// An integer in `0..=n`, stored as f32.
    pub zero_point: f32,
}

impl ActQuantizer {
    /// `lo = min(0, range.lo)`, `hi = max(0, range.hi)`, `s = (hi − lo)/n`, `zp = round(−lo/s)`;
    /// `s = zp = 0` when `hi == lo`.
    ///
    /// # Panics
    /// If `bits` is out of range or the range (or its width) is not finite (see
    /// [`check_act_range`]).
    pub fn from_range(bits: u8, range: ActRange) -> Self {
        check_bits(bits);
        assert!(
            range.lo.is_finite() && range.hi.is_finite(),
            "activation range [{}, {}] is not finite",
            range.lo,
            range.hi
        );
        let lo = range.lo.min(0.0);
        let hi = range.hi.max(0.0);
        let scale = (hi - lo) / Self::levels_of(bits);
        assert!(
            scale.is_finite(),
            "activation range [{lo}, {hi}] is wider than f32 can hold"
        );
        if scale == 0.0 {
            return ActQuantizer {
                bits,
                scale: 0.0,
                zero_point: 0.0,
            };
        }
        // -lo/s <= n up to rounding, so the zero point lies in 0..=n; clamp guards the ulp.
        let zero_point = round_half_even(-lo / scale).clamp(0.0, Self::levels_of(bits));
        ActQuantizer {
            bits,
            scale,
            zero_point,
        }
    }

    fn levels_of(bits: u8) -> f32 {
        ((1u32 << bits) - 1) as f32
    }

    /// `n = 2^bits − 1`, the largest code.
    pub fn levels(&self) -> f32 {
        Self::levels_of(self.bits)
    }

    /// The representable range `[−zp·s, (n − zp)·s]` (it can stick out of the calibrated range by
    /// up to half a step, because `zp` is rounded).
    pub fn representable(&self) -> (f32, f32) {
        (
            -self.zero_point * self.scale,
            (self.levels() - self.zero_point) * self.scale,
        )
    }

    /// Integer step index `clamp(round(x/s), −zp, n − zp)` as f32 (`scale > 0`).
    #[inline(always)]
    fn step(&self, x: f32, low: f32, high: f32) -> f32 {
        round_half_even_small((x / self.scale).clamp(low, high))
    }

    fn step_bounds(&self) -> (f32, f32) {
        (-self.zero_point, self.levels() - self.zero_point)
    }

    /// Fake-quantize one value.
    pub fn quantize(&self, x: f32) -> f32 {
        if self.scale == 0.0 {
            return if x.is_nan() { x } else { 0.0 };
        }
        let (low, high) = self.step_bounds();
        self.step(x, low, high) * self.scale
    }

    /// Fake-quantize a tensor in place (no allocation; a tight loop the compiler vectorises).
    pub fn quantize_in_place(&self, x: &mut [f32]) {
        if self.scale == 0.0 {
            for v in x.iter_mut().filter(|v| !v.is_nan()) {
                *v = 0.0;
            }
            return;
        }
        let (low, high) = self.step_bounds();
        let scale = self.scale;
        for v in x.iter_mut() {
            *v = self.step(*v, low, high) * scale;
        }
    }

    /// The stored code `clamp(round(x/s) + zp, 0, n)` of `x` (0 for NaN; `zp` = 0 when
    /// `scale == 0`). `dequantize(code(x)) == quantize(x)`.
    pub fn code(&self, x: f32) -> u8 {
        if self.scale == 0.0 {
            return 0;
        }
        let (low, high) = self.step_bounds();
        (self.step(x, low, high) + self.zero_point) as u8
    }

    /// The value of a code: `(code − zp) · s`.
    pub fn dequantize(&self, code: u8) -> f32 {
        (code as f32 - self.zero_point) * self.scale
    }
}

/// Largest number of histogram bins an [`ActObserver`] keeps for `mse` (24 bytes each).
pub const HISTOGRAM_BINS: usize = 1 << 16;

/// Smallest histogram bin width, `2^-120`: keeps bin edges normal f32 numbers.
const MIN_BIN_EXPONENT: i32 = -120;

/// Observes a layer's FP input over calibration batches, then yields ranges per bit width.
///
/// `minmax` keeps the running minimum and maximum; `mse` also keeps a histogram of the nonzero
/// values (see the module docs); zeros quantize to exactly 0 under every candidate, so they
/// need no bin. Non-finite values are skipped and counted ([`ActObserver::non_finite`]): the
/// caller decides whether they are an error.
#[derive(Clone, Debug)]
pub struct ActObserver {
    calib: Calibration,
    min: f32,
    max: f32,
    finite: u64,
    non_finite: u64,
    histogram: Option<Histogram>,
}

impl ActObserver {
    pub fn new(calib: Calibration) -> Self {
        ActObserver {
            calib,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            finite: 0,
            non_finite: 0,
            histogram: match calib {
                Calibration::MinMax => None,
                Calibration::Mse => Some(Histogram::default()),
            },
        }
    }

    pub fn calibration(&self) -> Calibration {
        self.calib
    }

    /// Finite values observed so far.
    pub fn count(&self) -> u64 {
        self.finite
    }

    /// Non-finite values seen (and skipped) so far.
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// The `minmax` range of everything observed: `[min(0, min x), max(0, max x)]`
    /// (`[0, 0]` before any finite value).
    pub fn minmax_range(&self) -> ActRange {
        ActRange {
            lo: self.min.min(0.0),
            hi: self.max.max(0.0),
        }
    }

    /// Add one batch of the layer's input.
    pub fn observe(&mut self, x: &[f32]) {
        let (min, max, finite) = finite_min_max(x);
        let all_finite = finite == x.len() as u64;
        self.finite += finite;
        self.non_finite += x.len() as u64 - finite;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        let ActRange { lo, hi } = self.minmax_range();
        if let Some(histogram) = &mut self.histogram {
            if hi > lo {
                histogram.cover(lo, hi);
                histogram.add(x, all_finite);
            }
        }
    }

    /// The range for `bits`-bit quantization.
    ///
    /// `minmax`: [`ActObserver::minmax_range`]. `mse`: `[lo·f, hi·f]` for the grid factor `f`
    /// with the least squared error over all observed values. Each candidate is evaluated on the
    /// histogram: a bin whose edges quantize to the same level contributes its exact error
    /// `Σy² − 2dΣy + c·d²` (`d` = level − left edge); a bin cut by a rounding threshold is counted
    /// at the level of its mean, which is off by at most `c · (L_hi − L_lo) · 2 · reach` (`reach`
    /// the largest distance from the bin to the midpoint of its levels, or to its levels when it
    /// spans more than two), plus a margin for f64 rounding. A shrunk range is kept only if its
    /// estimate plus bound is at most the `minmax` estimate minus its bound, so it is never worse
    /// than `minmax` on the observed data; among those the least estimate wins, the larger
    /// factor on ties.
    pub fn range(&self, bits: u8) -> ActRange {
        check_bits(bits);
        let minmax = self.minmax_range();
        let histogram = match &self.histogram {
            Some(h) if minmax.hi > minmax.lo => h,
            _ => return minmax,
        };
        let reference = histogram.error_bounds(&ActQuantizer::from_range(bits, minmax));
        let ceiling = reference.estimate - reference.bound;
        let mut best = (minmax, reference.estimate);
        for factor in mse_shrink_factors().skip(1) {
            let candidate = ActRange {
                lo: minmax.lo * factor,
                hi: minmax.hi * factor,
            };
            let quantizer = ActQuantizer::from_range(bits, candidate);
            if quantizer.scale == 0.0 {
                continue; // the shrunk range underflowed to [0, 0]
            }
            let e = histogram.error_bounds(&quantizer);
            if e.estimate + e.bound <= ceiling && e.estimate < best.1 {
                best = (candidate, e.estimate);
            }
        }
        best.0
    }

    /// The squared error Σ(x − q(x))² of quantizing every observed value to `bits` over `range`,
    /// as `mse` calibration estimates it from the histogram, and a rigorous bound on how far off
    /// that estimate may be: `(estimate, bound)`. `None` for a `minmax` observer, which keeps no
    /// histogram. (What [`ActObserver::range`] compares; public for its accuracy benchmark.)
    pub fn estimated_error(&self, bits: u8, range: ActRange) -> Option<(f64, f64)> {
        check_bits(bits);
        let e = self
            .histogram
            .as_ref()?
            .error_bounds(&ActQuantizer::from_range(bits, range));
        Some((e.estimate, e.bound))
    }
}

/// Minimum, maximum and count of the finite values of `x` (`min > max` when there are none).
fn finite_min_max(x: &[f32]) -> (f32, f32, u64) {
    // Fast path in eight lanes that the compiler vectorises: the comparisons skip NaN, and a
    // flag notes any non-finite value, which sends the batch to the exact filtered loop.
    let mut lows = [f32::INFINITY; 8];
    let mut highs = [f32::NEG_INFINITY; 8];
    let mut non_finite = [false; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for j in 0..8 {
            let v = chunk[j];
            lows[j] = if v < lows[j] { v } else { lows[j] };
            highs[j] = if v > highs[j] { v } else { highs[j] };
            non_finite[j] |= !v.is_finite();
        }
    }
    if !non_finite.contains(&true) && tail.iter().all(|v| v.is_finite()) {
        let low = tail.iter().chain(&lows).fold(f32::INFINITY, |m, &v| m.min(v));
        let high = tail.iter().chain(&highs).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        return (low, high, x.len() as u64);
    }
    x.iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY, 0), |(low, high, n), &v| {
            (low.min(v), high.max(v), n + 1)
        })
}

/// Sufficient statistics of the values in one bin `[a, a + w)`, as offsets `y = x − a ≥ 0`.
#[derive(Clone, Copy, Debug, Default)]
struct Bin {
    count: u64,
    sum: f64,
    sum_sq: f64,
}

/// Equal-width histogram of nonzero values, bin `i` = `[i·w, (i+1)·w)` with `w = 2^exponent`.
/// The bins cover `[lo, hi]` (which always contains 0) densely; `exponent` is the smallest
/// (at least [`MIN_BIN_EXPONENT`]) for which that takes at most [`HISTOGRAM_BINS`] bins. It
/// depends only on `[lo, hi]`, so the histogram does not depend on how the data were batched.
#[derive(Clone, Debug, Default)]
struct Histogram {
    exponent: i32,
    first: i64,
    bins: Vec<Bin>,
    count: u64,
}

/// A squared error estimated from the histogram and a bound on how far off it may be.
#[derive(Clone, Copy, Debug)]
struct ErrorBounds {
    estimate: f64,
    bound: f64,
}

/// `floor(t)` for |t| < 2^62, without a branch or the libm call that f64::floor is on SSE2.
#[inline(always)]
fn floor_i64(t: f64) -> i64 {
    let truncated = t as i64;
    truncated.wrapping_sub(((truncated as f64) > t) as i64)
}

fn bin_index(x: f64, exponent: i32) -> i64 {
    floor_i64(x * (-exponent as f64).exp2())
}

fn bins_needed(lo: f32, hi: f32, exponent: i32) -> i64 {
    bin_index(hi as f64, exponent) - bin_index(lo as f64, exponent) + 1
}

impl Histogram {
    fn width(&self) -> f64 {
        (self.exponent as f64).exp2()
    }

    /// Smallest exponent for `[lo, hi]` (`hi > lo`).
    fn exponent_for(lo: f32, hi: f32) -> i32 {
        let span = hi as f64 - lo as f64;
        // 2^e <= span / (2·(B − 2)) needs more than B bins, so the answer is at least this.
        let start = (span / (2.0 * (HISTOGRAM_BINS - 2) as f64)).log2().floor() as i32;
        let mut exponent = start.max(MIN_BIN_EXPONENT);
        while bins_needed(lo, hi, exponent) > HISTOGRAM_BINS as i64 {
            exponent += 1;
        }
        exponent
    }

    /// Make the bins cover `[lo, hi]` (`lo ≤ 0 ≤ hi`, `hi > lo`), widening them if needed.
    fn cover(&mut self, lo: f32, hi: f32) {
        let exponent = Self::exponent_for(lo, hi);
        let first = bin_index(lo as f64, exponent);
        let last = bin_index(hi as f64, exponent);
        if !self.bins.is_empty()
            && exponent == self.exponent
            && first == self.first
            && last == self.first + self.bins.len() as i64 - 1
        {
            return;
        }
        let mut bins = vec![Bin::default(); (last - first + 1) as usize];
        if !self.bins.is_empty() {
            // exponent only grows with the range: merge 2^shift old bins into each new one.
            let shift = exponent - self.exponent;
            let old_width = self.width();
            let new_width = (exponent as f64).exp2();
            for (k, old) in self.bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
                let i = self.first + k as i64;
                let j = i >> shift;
                let offset = i as f64 * old_width - j as f64 * new_width;
                let bin = &mut bins[(j - first) as usize];
                let c = old.count as f64;
                bin.count += old.count;
                bin.sum += old.sum + c * offset;
                bin.sum_sq += old.sum_sq + 2.0 * offset * old.sum + c * offset * offset;
            }
        }
        self.exponent = exponent;
        self.first = first;
        self.bins = bins;
    }

    /// Add the finite nonzero values of `x` (all inside the covered range).
    fn add(&mut self, x: &[f32], all_finite: bool) {
        let inverse_width = (-self.exponent as f64).exp2();
        let width = self.width();
        let first = self.first;
        let bins = &mut self.bins[..];
        let mut accumulate = |v: f32| {
            let i = floor_i64(v as f64 * inverse_width);
            // Both terms are exact in f64, so y is the exact offset in [0, w).
            let y = v as f64 - i as f64 * width;
            let bin = &mut bins[i.wrapping_sub(first) as usize];
            bin.count += 1;
            bin.sum += y;
            bin.sum_sq += y * y;
        };
        if all_finite {
            // No branch on the data: zeros land in bin 0 (adding 0 to its sums) and are taken
            // out of its count below.
            let mut zeros = 0;
            for &v in x {
                accumulate(v);
                zeros += (v == 0.0) as u64;
            }
            self.bins[first.unsigned_abs() as usize].count -= zeros;
            self.count += x.len() as u64 - zeros;
        } else {
            let mut added = 0;
            for &v in x.iter().filter(|v| v.is_finite() && **v != 0.0) {
                accumulate(v);
                added += 1;
            }
            self.count += added;
        }
    }

    /// Estimated Σ(x − q(x))² over the histogram's values and a rigorous bound on its error
    /// (`quantizer.scale > 0`).
    fn error_bounds(&self, quantizer: &ActQuantizer) -> ErrorBounds {
        let (low, high) = quantizer.step_bounds();
        let scale = quantizer.scale;
        let width = self.width();
        let edge = |i: i64| (i as f64 * width) as f32; // exact: |i| <= B, w >= 2^-120
        let (mut estimate, mut bound, mut magnitude) = (0.0f64, 0.0f64, 0.0f64);
        for (k, bin) in self.bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
            let i = self.first + k as i64;
            let (left, right) = (edge(i), edge(i + 1));
            let (step_left, step_right) = (quantizer.step(left, low, high), quantizer.step(right, low, high));
            let c = bin.count as f64;
            let a = left as f64;
            let step = if step_left == step_right {
                step_left
            } else {
                quantizer.step((a + bin.sum / c) as f32, low, high)
            };
            // d is exact: both are f32 within a few B·w of each other.
            let d = (step * scale) as f64 - a;
            estimate += bin.sum_sq - 2.0 * d * bin.sum + c * d * d;
            magnitude += bin.sum_sq + 2.0 * d.abs() * bin.sum + c * d * d;
            if step_left != step_right {
                let level_lo = (step_left * scale) as f64;
                let level_hi = (step_right * scale) as f64;
                let b = right as f64;
                let reach = if step_right - step_left == 1.0 {
                    let mid = 0.5 * (level_lo + level_hi);
                    (a - mid).abs().max((b - mid).abs())
                } else {
                    [a - level_lo, b - level_lo, a - level_hi, b - level_hi]
                        .iter()
                        .fold(0.0f64, |m, t| m.max(t.abs()))
                };
                bound += c * (level_hi - level_lo) * 2.0 * reach;
            }
        }
        // Rounding: each bin's sums carry at most (its count + merges) relative errors of their
        // terms, the sum over bins at most (occupied bins ≤ count) more.
        bound += magnitude * (2.0 * self.count as f64 + 1024.0) * f64::EPSILON;
        ErrorBounds { estimate, bound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Relative tolerance for hand-computed f32 results: a few roundings of ≤ 1 ulp each.
    const F32_REL: f32 = 4.0 * f32::EPSILON;
    /// Extra error beyond half a step, in steps: `x/s` and `k·s` are each rounded in f32, and
    /// with `|k| ≤ 255` each rounding moves the result by at most 255·2⁻²⁴ steps.
    const STEP_ROUNDING: f32 = 512.0 * f32::EPSILON;
    /// Relative difference of two f64 sums of the same ≤ 10⁵ non-negative terms in different
    /// orders (≤ n·2⁻⁵³ ≈ 10⁻¹¹), with margin.
    const SUM_ORDER_REL: f64 = 1e-9;

    fn squared_error(x: &[f32], q: &[f32]) -> f64 {
        x.iter().zip(q).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum()
    }

    fn close(actual: f32, expected: f32) -> bool {
        (actual - expected).abs() <= F32_REL * expected.abs().max(f32::MIN_POSITIVE)
    }

    fn assert_all_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            assert!(close(a, e), "element {i}: {a} != {e} (relative tolerance {F32_REL})");
        }
    }

    /// Deterministic pseudo-random numbers (SplitMix64) for the larger fixed tests.
    struct Numbers(u64);
    impl Numbers {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f32 {
            let (u, v) = (self.uniform().max(1e-300), self.uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        }
        fn normals(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.normal()).collect()
        }
    }

    #[test]
    fn rounds_half_to_even() {
        for (x, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-2.5, -2.0),
            (-0.5, -0.0),
            (3.5, 4.0),
            (-1.5, -2.0),
            (0.49999997, 0.0),
            (2.6, 3.0),
        ] {
            assert_eq!(round_half_even(x), r, "round_half_even({x})");
            assert_eq!(round_half_even_small(x), r, "round_half_even_small({x})");
        }
        // The fast rounding agrees with the library on every half-integer the loops can meet and
        // on the floats next to them.
        for k in -600..=600 {
            let half = k as f32 * 0.5;
            for x in [
                half,
                f32::from_bits(half.to_bits() + 1),
                f32::from_bits(half.to_bits().max(1) - 1),
            ] {
                assert_eq!(round_half_even_small(x), x.round_ties_even(), "x = {x:e}");
            }
        }
    }

    #[test]
    fn calibration_names_round_trip() {
        for c in [Calibration::MinMax, Calibration::Mse] {
            assert_eq!(c.to_string().parse::<Calibration>().unwrap(), c);
        }
        let e = "kl".parse::<Calibration>().unwrap_err().to_string();
        assert!(e.contains("'kl'") && e.contains("minmax") && e.contains("mse"), "{e}");
    }

    #[test]
    fn weights_match_hand_computation() {
        // Three output channels of three weights at 3 bits: qmax = 3.
        let w = [0.1, -0.4, 0.25, 0.0, 0.0, 0.0, 1.0, -3.0, 2.0];
        assert_eq!(weight_qmax(3), 3.0);
        let s = weight_scales(&w, 3, 3, false, Calibration::MinMax);
        assert_all_close(&s, &[0.4 / 3.0, 1.0, 1.0]);
        // Channel 0: W/s = 0.75, -3, 1.875 → 1, -3, 2.
        let q = fake_quantize_weights(&w, 3, 3, &s);
        assert_all_close(&q, &[0.4 / 3.0, -0.4, 0.8 / 3.0, 0.0, 0.0, 0.0, 1.0, -3.0, 2.0]);
        assert_eq!(weight_codes(&w, 3, 3, &s), [1, -3, 2, 0, 0, 0, 1, -3, 2]);
        // Per tensor: s = 3/3 = 1, so channel 0 rounds to zero.
        let t = weight_scales(&w, 3, 3, true, Calibration::MinMax);
        assert_eq!(t, [1.0]);
        assert_eq!(
            fake_quantize_weights(&w, 3, 3, &t),
            [0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 1.0, -3.0, 2.0]
        );
    }

    #[test]
    fn weight_ties_round_to_even() {
        // 4 bits: qmax = 7; the channel's max |W| = 7 gives s = 1, so W/s are exact halves.
        let w = [0.5, 1.5, 2.5, -2.5, -0.5, 3.5, -7.0, 6.5];
        let s = weight_scales(&w, 1, 4, false, Calibration::MinMax);
        assert_eq!(s, [1.0]);
        assert_eq!(
            fake_quantize_weights(&w, 1, 4, &s),
            [0.0, 2.0, 2.0, -2.0, 0.0, 4.0, -7.0, 6.0]
        );
        assert_eq!(weight_codes(&w, 1, 4, &s), [0, 2, 2, -2, 0, 4, -7, 6]);
    }

    #[test]
    fn two_bit_weights_are_ternary() {
        let w = Numbers(7).normals(64);
        for calib in [Calibration::MinMax, Calibration::Mse] {
            let s = weight_scales(&w, 4, 2, false, calib);
            let q = fake_quantize_weights(&w, 4, 2, &s);
            for (c, chunk) in q.chunks(16).enumerate() {
                assert!(
                    chunk.iter().all(|&v| v == 0.0 || v == s[c] || v == -s[c]),
                    "{calib}: {chunk:?}"
                );
            }
            assert!(weight_codes(&w, 4, 2, &s).iter().all(|k| (-1..=1).contains(k)));
        }
        // minmax: the largest weight of each channel keeps its magnitude.
        let s = weight_scales(&w, 4, 2, false, Calibration::MinMax);
        assert_all_close(&s, &w.chunks(16).map(max_abs).collect::<Vec<_>>());
    }

    #[test]
    fn zero_channels_get_unit_scale_and_stay_zero() {
        let w = [0.0, 0.0, 0.5, -1.0, 0.0, 0.0];
        for calib in [Calibration::MinMax, Calibration::Mse] {
            let s = weight_scales(&w, 3, 4, false, calib);
            assert_eq!(s[0], 1.0, "{calib}");
            assert_eq!(s[2], 1.0, "{calib}");
            let q = fake_quantize_weights(&w, 3, 4, &s);
            assert_eq!([q[0], q[1], q[4], q[5]], [0.0; 4]);
            assert_eq!(weight_scales(&[0.0; 6], 3, 4, true, calib), [1.0]);
        }
    }

    #[test]
    fn per_tensor_scale_is_the_largest_channel_scale() {
        let w = Numbers(3).normals(8 * 27);
        let channel = weight_scales(&w, 8, 4, false, Calibration::MinMax);
        let tensor = weight_scales(&w, 8, 4, true, Calibration::MinMax);
        assert_eq!(tensor.len(), 1);
        assert_eq!(tensor[0], channel.iter().copied().fold(0.0, f32::max));
        // One scale given once or repeated per channel quantizes alike.
        assert_eq!(
            fake_quantize_weights(&w, 8, 4, &tensor),
            fake_quantize_weights(&w, 8, 4, &[tensor[0]; 8])
        );
        // Finer channels: the per-channel error is smaller on this data.
        let e_channel = squared_error(&w, &fake_quantize_weights(&w, 8, 4, &channel));
        let e_tensor = squared_error(&w, &fake_quantize_weights(&w, 8, 4, &tensor));
        assert!(e_channel < e_tensor, "per channel {e_channel} vs per tensor {e_tensor}");
    }

    #[test]
    fn mse_weights_clip_gaussian_tails_at_low_bits() {
        // 2-bit weights of a Gaussian channel: keeping the extreme weight exact zeroes almost
        // everything else, so the best ternary threshold is well inside the range.
        let w = Numbers(11).normals(4096);
        let minmax = weight_scales(&w, 1, 2, false, Calibration::MinMax)[0];
        let mse = weight_scales(&w, 1, 2, false, Calibration::Mse)[0];
        assert!(mse < 0.5 * minmax, "mse scale {mse} vs minmax {minmax}");
        let e_minmax = squared_error(&w, &fake_quantize_weights(&w, 1, 2, &[minmax]));
        let e_mse = squared_error(&w, &fake_quantize_weights(&w, 1, 2, &[mse]));
        assert!(e_mse < 0.6 * e_minmax, "mse error {e_mse} vs minmax {e_minmax}");
    }

    #[test]
    fn scales_and_ranges_from_files_are_checked() {
        assert!(check_weight_scales(&[0.1, 0.2], 2).is_ok());
        assert!(check_weight_scales(&[0.1], 2).is_ok());
        let e = check_weight_scales(&[0.1, 0.2, 0.3], 2).unwrap_err();
        assert!(e.contains("3 weight scales, expected 2"), "{e}");
        let e = check_weight_scales(&[0.1, 0.0], 2).unwrap_err();
        assert!(e.contains("channel 1"), "{e}");
        assert!(check_weight_scales(&[f32::NAN], 1).is_err());
        assert!(check_act_range(ActRange { lo: -1.0, hi: 2.0 }).is_ok());
        assert!(check_act_range(ActRange { lo: 0.5, hi: 2.0 }).is_err());
        assert!(check_act_range(ActRange {
            lo: -1.0,
            hi: f32::INFINITY
        })
        .is_err());
    }

    #[test]
    fn activations_match_hand_computation() {
        // 2 bits: n = 3, [lo, hi] = [-1, 2] → s = 1, zp = 1, steps clamp to [-1, 2].
        let q = ActQuantizer::from_range(2, ActRange { lo: -1.0, hi: 2.0 });
        assert_eq!(
            q,
            ActQuantizer {
                bits: 2,
                scale: 1.0,
                zero_point: 1.0
            }
        );
        assert_eq!(q.representable(), (-1.0, 2.0));
        let mut x = [-1.5, -0.5, 0.4, 0.5, 1.5, 2.6];
        let codes: Vec<u8> = x.iter().map(|&v| q.code(v)).collect();
        assert_eq!(codes, [0, 1, 1, 1, 3, 3]);
        q.quantize_in_place(&mut x);
        assert_eq!(x, [-1.0, 0.0, 0.0, 0.0, 2.0, 2.0]);

        // 4 bits on [-0.3, 1.0]: s = 1.3/15, zp = round(3.4615) = 3, representable [-3s, 12s].
        let q = ActQuantizer::from_range(4, ActRange { lo: -0.3, hi: 1.0 });
        assert!(close(q.scale, 1.3 / 15.0), "scale {}", q.scale);
        assert_eq!(q.zero_point, 3.0);
        let s = 1.3f32 / 15.0;
        for (x, step) in [
            (1.0f32, 12.0f32),
            (-0.3, -3.0),
            (0.05, 1.0),
            (-1.0, -3.0),
            (0.0, 0.0),
            (0.14, 2.0),
        ] {
            assert!(
                close(q.quantize(x), step * s),
                "x = {x}: {} vs {}",
                q.quantize(x),
                step * s
            );
            assert_eq!(q.code(x), (step + 3.0) as u8, "code of {x}");
        }
        // A range that does not contain 0 is widened to it (lo = min(0, min x)).
        assert_eq!(
            ActQuantizer::from_range(8, ActRange { lo: 1.0, hi: 2.55 }),
            ActQuantizer::from_range(8, ActRange { lo: 0.0, hi: 2.55 })
        );
        // Non-negative inputs (after ReLU) have zp = 0, so 0 is exact.
        let q = ActQuantizer::from_range(8, ActRange { lo: 0.0, hi: 6.0 });
        assert_eq!((q.zero_point, q.quantize(0.0)), (0.0, 0.0));
    }

    #[test]
    fn empty_activation_range_maps_everything_to_zero() {
        let q = ActQuantizer::from_range(8, ActRange { lo: 0.0, hi: 0.0 });
        assert_eq!(
            q,
            ActQuantizer {
                bits: 8,
                scale: 0.0,
                zero_point: 0.0
            }
        );
        let mut x = [0.0, 1.5, -2.0, f32::NAN, f32::INFINITY];
        q.quantize_in_place(&mut x);
        assert_eq!(&x[..3], [0.0, 0.0, 0.0]);
        assert!(x[3].is_nan() && x[4] == 0.0);
        assert_eq!((q.code(3.0), q.dequantize(0), q.quantize(-1.0)), (0, 0.0, 0.0));
        for calib in [Calibration::MinMax, Calibration::Mse] {
            let mut observer = ActObserver::new(calib);
            assert_eq!(observer.range(4), ActRange { lo: 0.0, hi: 0.0 }, "{calib} before data");
            observer.observe(&[0.0; 100]);
            assert_eq!(observer.range(4), ActRange { lo: 0.0, hi: 0.0 }, "{calib} on zeros");
        }
    }

    #[test]
    fn observer_keeps_the_range_of_all_batches_and_counts_non_finite_values() {
        let mut observer = ActObserver::new(Calibration::MinMax);
        observer.observe(&[0.5, 1.0, f32::NAN]);
        observer.observe(&[-0.25, f32::INFINITY, 3.0]);
        observer.observe(&[]);
        assert_eq!(observer.range(8), ActRange { lo: -0.25, hi: 3.0 });
        assert_eq!((observer.count(), observer.non_finite()), (4, 2));
        let mut positive = ActObserver::new(Calibration::MinMax);
        positive.observe(&[2.0, 5.0]);
        assert_eq!(positive.range(2), ActRange { lo: 0.0, hi: 5.0 });
        // mse skips non-finite values too: the same range as without them.
        let x = outlier_data(21, 5000);
        let mut clean = ActObserver::new(Calibration::Mse);
        clean.observe(&x);
        let mut dirty = ActObserver::new(Calibration::Mse);
        let mut with_nan = x.clone();
        with_nan.extend([f32::NAN, f32::NEG_INFINITY]);
        dirty.observe(&with_nan);
        assert_eq!(dirty.non_finite(), 2);
        for bits in [2, 8] {
            assert_eq!(clean.range(bits), dirty.range(bits), "{bits} bits");
        }
    }

    /// Gaussian activations with a few large outliers, as after a conv without ReLU.
    fn outlier_data(seed: u64, n: usize) -> Vec<f32> {
        let mut numbers = Numbers(seed);
        let mut x = numbers.normals(n);
        for k in 0..8 {
            x[k * (n / 8)] = 12.0 + k as f32;
        }
        x
    }

    /// Post-ReLU activations with four large outliers.
    fn relu_outlier_data(seed: u64, n: usize) -> Vec<f32> {
        let mut x: Vec<f32> = Numbers(seed).normals(n).into_iter().map(|v| v.max(0.0)).collect();
        for k in 0..4 {
            x[k * (n / 4) + 1] = 30.0 + k as f32;
        }
        x
    }

    #[test]
    fn mse_activation_range_clips_outliers() {
        let x = relu_outlier_data(5, 50_000);
        let mut mse = ActObserver::new(Calibration::Mse);
        mse.observe(&x);
        let minmax = mse.minmax_range();
        assert_eq!(minmax, ActRange { lo: 0.0, hi: 33.0 });
        for bits in [2, 4] {
            let range = mse.range(bits);
            assert!(range.lo == 0.0 && range.hi < 0.5 * minmax.hi, "{bits} bits: {range:?}");
            let error = |r| {
                let mut q = x.clone();
                ActQuantizer::from_range(bits, r).quantize_in_place(&mut q);
                squared_error(&x, &q)
            };
            assert!(
                error(range) < 0.5 * error(minmax),
                "{bits} bits: {} vs {}",
                error(range),
                error(minmax)
            );
        }
    }

    #[test]
    fn mse_range_does_not_depend_on_batching() {
        let x = outlier_data(9, 30_000);
        let mut whole = ActObserver::new(Calibration::Mse);
        whole.observe(&x);
        let mut batched = ActObserver::new(Calibration::Mse);
        // Small first batch: the histogram starts fine and is merged as the range grows.
        for batch in [&x[1..50], &x[50..7000], &x[7000..], &x[..1]] {
            batched.observe(batch);
        }
        for bits in [2, 4, 8] {
            assert_eq!(whole.range(bits), batched.range(bits), "{bits} bits");
        }
    }

    #[test]
    fn histogram_error_bounds_contain_the_exact_error() {
        for x in [outlier_data(13, 50_000), relu_outlier_data(17, 50_000)] {
            check_error_bounds(&x);
        }
    }

    fn check_error_bounds(x: &[f32]) {
        let mut observer = ActObserver::new(Calibration::Mse);
        for batch in x.chunks(4096) {
            observer.observe(batch);
        }
        let histogram = observer.histogram.as_ref().unwrap();
        let minmax = observer.minmax_range();
        for bits in [2, 3, 4, 6, 8] {
            for factor in mse_shrink_factors().step_by(7) {
                let q = ActQuantizer::from_range(
                    bits,
                    ActRange {
                        lo: minmax.lo * factor,
                        hi: minmax.hi * factor,
                    },
                );
                let mut quantized = x.to_vec();
                q.quantize_in_place(&mut quantized);
                let exact = squared_error(x, &quantized);
                let e = histogram.error_bounds(&q);
                assert!(
                    (e.estimate - exact).abs() <= e.bound,
                    "{bits} bits, factor {factor}: estimate {} ± {} vs exact {exact}",
                    e.estimate,
                    e.bound
                );
            }
        }
    }

    fn weights_strategy() -> impl Strategy<Value = (Vec<f32>, usize)> {
        (1usize..6, 1usize..20).prop_flat_map(|(channels, per_channel)| {
            let value = prop_oneof![3 => -4.0f32..4.0, 1 => Just(0.0f32), 1 => -1e-3f32..1e-3];
            (prop::collection::vec(value, channels * per_channel), Just(channels))
        })
    }

    fn calibration_strategy() -> impl Strategy<Value = Calibration> {
        prop_oneof![Just(Calibration::MinMax), Just(Calibration::Mse)]
    }

    proptest! {
        #[test]
        fn fast_rounding_is_exact_where_used(y in -4_194_304.0f32..4_194_304.0) {
            prop_assert_eq!(round_half_even_small(y), y.round_ties_even());
        }

        #[test]
        fn weight_quantizer_properties(
            (w, channels) in weights_strategy(),
            bits in MIN_BITS..=MAX_BITS,
            per_tensor in any::<bool>(),
            calib in calibration_strategy(),
        ) {
            let scales = weight_scales(&w, channels, bits, per_tensor, calib);
            prop_assert_eq!(scales.len(), if per_tensor { 1 } else { channels });
            prop_assert!(scales.iter().all(|s| s.is_finite() && *s > 0.0));
            let q = fake_quantize_weights(&w, channels, bits, &scales);
            let codes = weight_codes(&w, channels, bits, &scales);
            let qmax = weight_qmax(bits);
            let per_channel = w.len() / channels;
            for i in 0..w.len() {
                let s = scales[if per_tensor { 0 } else { i / per_channel }];
                // On the grid: an integer code within ±qmax times the scale.
                prop_assert!((codes[i] as f32).abs() <= qmax);
                prop_assert_eq!(q[i], codes[i] as f32 * s);
                // Within half a step inside the clipping range.
                if w[i].abs() <= qmax * s {
                    let error = (w[i] - q[i]).abs();
                    let bound = s * (0.5 + STEP_ROUNDING);
                    prop_assert!(error <= bound, "w {} q {} s {}", w[i], q[i], s);
                }
            }
            // Idempotent with the same scales.
            prop_assert_eq!(fake_quantize_weights(&q, channels, bits, &scales), q.clone());
            if calib == Calibration::MinMax {
                // minmax clips nothing, and 8 bits are fine relative to the range.
                for (chunk, qchunk) in w.chunks(per_channel).zip(q.chunks(per_channel)) {
                    let range = if per_tensor { max_abs(&w) } else { max_abs(chunk) };
                    let worst =
                        chunk.iter().zip(qchunk).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    prop_assert!(worst <= range / qmax * (0.5 + STEP_ROUNDING));
                    if bits == 8 {
                        prop_assert!(worst <= range * 0.004);
                    }
                }
            } else {
                // mse is never worse than minmax on each group it calibrated.
                let minmax = weight_scales(&w, channels, bits, per_tensor, Calibration::MinMax);
                let q_minmax = fake_quantize_weights(&w, channels, bits, &minmax);
                let groups = if per_tensor { w.len() } else { per_channel };
                let pairs = q.chunks(groups).zip(q_minmax.chunks(groups));
                for (x, (a, b)) in w.chunks(groups).zip(pairs) {
                    let (e_mse, e_minmax) = (squared_error(x, a), squared_error(x, b));
                    prop_assert!(
                        e_mse <= e_minmax * (1.0 + SUM_ORDER_REL),
                        "mse {} > minmax {}", e_mse, e_minmax
                    );
                }
            }
        }

        #[test]
        fn activation_quantizer_properties(
            x in prop::collection::vec(prop_oneof![4 => -3.0f32..8.0, 1 => Just(0.0f32)], 1..200),
            bits in MIN_BITS..=MAX_BITS,
        ) {
            let mut observer = ActObserver::new(Calibration::MinMax);
            observer.observe(&x);
            let range = observer.range(bits);
            let q = ActQuantizer::from_range(bits, range);
            let n = q.levels();
            prop_assert!(q.zero_point >= 0.0 && q.zero_point <= n && q.zero_point.fract() == 0.0);
            let mut quantized = x.clone();
            q.quantize_in_place(&mut quantized);
            for (&v, &qv) in x.iter().zip(&quantized) {
                prop_assert_eq!(qv, q.quantize(v));
                prop_assert_eq!(q.dequantize(q.code(v)), qv);
                prop_assert!(!qv.is_nan());
                if q.scale > 0.0 {
                    // Every calibrated value is within half a step (zp rounding moves the grid by
                    // at most half a step, so [lo, hi] stays within half a step of it).
                    let error = (v - qv).abs();
                    let bound = q.scale * (0.5 + STEP_ROUNDING);
                    prop_assert!(error <= bound, "x {} q {} s {}", v, qv, q.scale);
                    if bits == 8 {
                        prop_assert!((v - qv).abs() <= (range.hi - range.lo) * 0.002);
                    }
                } else {
                    prop_assert_eq!(qv, 0.0);
                }
            }
            // Idempotent.
            let mut twice = quantized.clone();
            q.quantize_in_place(&mut twice);
            prop_assert_eq!(twice, quantized);
        }

        #[test]
        fn mse_activations_never_worse_than_minmax(
            batches in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![6 => -2.0f32..2.0, 1 => Just(0.0f32), 1 => -20.0f32..30.0],
                    0..300,
                ),
                1..4),
            bits in MIN_BITS..=MAX_BITS,
        ) {
            let mut observer = ActObserver::new(Calibration::Mse);
            for batch in &batches {
                observer.observe(batch);
            }
            let all: Vec<f32> = batches.concat();
            let minmax = observer.minmax_range();
            let range = observer.range(bits);
            prop_assert!(range.lo >= minmax.lo && range.hi <= minmax.hi);
            let error = |r| {
                let mut q = all.clone();
                ActQuantizer::from_range(bits, r).quantize_in_place(&mut q);
                squared_error(&all, &q)
            };
            let (e_mse, e_minmax) = (error(range), error(minmax));
            let limit = e_minmax * (1.0 + SUM_ORDER_REL);
            prop_assert!(e_mse <= limit, "mse {} > minmax {}", e_mse, e_minmax);
        }
    }
}
