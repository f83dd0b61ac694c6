//! The taps of a depthwise convolution over one (padded, phase-split) input plane: the graph
//! executor prepares the plane and the taps, this computes
//! `dst[r][j] = bias + Σ_t xc[r·pitch + j + offset_t] · w_t`, the products added one at a time in
//! the order of the taps (a multiplication, then an addition: no `fma`), so every instruction
//! set gives the same bits as the executor's scalar definition. Outputs are taken in blocks of
//! up to four registers (several independent sums in flight), the last one of a row partial;
//! rows of at most one register go up to four at a time, a register each.

use super::{F32x1, Isa, Lanes};

/// `rows × cols` outputs into `dst` (row-major) from `xc`, whose row `r` starts at `r·pitch`;
/// `taps` are (offset, weight) pairs; with `clip` the graph's `Clip` follows (`Lanes::clip`).
pub(crate) fn depthwise_plane(
    isa: Isa,
    xc: &[f32],
    taps: &[(usize, f32)],
    bias: f32,
    (rows, cols, pitch): (usize, usize, usize),
    clip: Option<(f32, f32)>,
    dst: &mut [f32],
) {
    // Every read and write of the kernels below lies inside these lengths.
    assert_eq!(dst.len(), rows * cols);
    if dst.is_empty() {
        return;
    }
    let reach = taps.iter().map(|t| t.0).max().unwrap_or(0);
    assert!((rows - 1) * pitch + cols + reach <= xc.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512`/`Avx2` are only chosen when the CPU has the features
        // (`Isa::detect`), and the lengths are checked above.
        Isa::Avx512 => unsafe { avx512(xc, taps, bias, (rows, cols, pitch), clip, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(xc, taps, bias, (rows, cols, pitch), clip, dst) },
        // SAFETY: lengths checked above.
        _ => unsafe { plane::<F32x1, 4>(xc, taps, bias, (rows, cols, pitch), clip, dst) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512(
    xc: &[f32],
    taps: &[(usize, f32)],
    bias: f32,
    shape: (usize, usize, usize),
    clip: Option<(f32, f32)>,
    dst: &mut [f32],
) {
    // SAFETY: the CPU has AVX-512 (the caller's `Isa`); lengths checked by `depthwise_plane`.
    unsafe {
        // 3×3 kernels get a copy in which the number of taps is known, its tap loop unrolled.
        if taps.len() == 9 {
            plane::<super::x86::F32x16, 4>(xc, &taps[..9], bias, shape, clip, dst)
        } else {
            plane::<super::x86::F32x16, 4>(xc, taps, bias, shape, clip, dst)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(
    xc: &[f32],
    taps: &[(usize, f32)],
    bias: f32,
    shape: (usize, usize, usize),
    clip: Option<(f32, f32)>,
    dst: &mut [f32],
) {
    // SAFETY: the CPU has AVX2 (the caller's `Isa`); lengths checked by `depthwise_plane`.
    unsafe { plane::<super::x86::F32x8, 4>(xc, taps, bias, shape, clip, dst) }
}

/// [`depthwise_plane`] with registers `V`, blocks of up to `NV` (at most 4) of them.
#[inline(always)]
unsafe fn plane<V: Lanes, const NV: usize>(
    xc: &[f32],
    taps: &[(usize, f32)],
    bias: f32,
    (rows, cols, pitch): (usize, usize, usize),
    clip: Option<(f32, f32)>,
    dst: &mut [f32],
) {
    let (xp, dp) = (xc.as_ptr(), dst.as_mut_ptr());
    if cols <= V::N && rows > 1 {
        // Rows of at most one register: up to `NV` rows at once, one register each.
        let mut r = 0;
        while r < rows {
            let rows_now = (rows - r).min(NV).min(4);
            // SAFETY: rows r.. of `xc` and `dst`, `cols` columns each, inside the checked
            // lengths.
            unsafe {
                let (x, d) = (xp.add(r * pitch), dp.add(r * cols));
                let s = (pitch, cols, cols);
                match rows_now {
                    1 => narrow::<V, 1>(x, taps, bias, clip, d, s),
                    2 => narrow::<V, 2>(x, taps, bias, clip, d, s),
                    3 => narrow::<V, 3>(x, taps, bias, clip, d, s),
                    _ => narrow::<V, 4>(x, taps, bias, clip, d, s),
                }
            }
            r += rows_now;
        }
        return;
    }
    for r in 0..rows {
        // SAFETY (all three): a block at column j reads xc[r·pitch + j + offset ..] and writes
        // dst[r·cols + j ..] for as many columns as it holds (or `cols − j`), inside the
        // lengths `depthwise_plane` checks.
        unsafe {
            let (x, d) = (xp.add(r * pitch), dp.add(r * cols));
            let mut j = 0;
            while j + NV * V::N <= cols {
                block::<V, NV, false>(x.add(j), taps, bias, clip, d.add(j), V::N);
                j += NV * V::N;
            }
            // The rest as one block of as many registers as it needs, the last one partial.
            let left = cols - j;
            if left > 0 {
                let last = left - (left - 1) / V::N * V::N;
                let (x, d) = (x.add(j), d.add(j));
                match left.div_ceil(V::N) {
                    1 => block::<V, 1, true>(x, taps, bias, clip, d, last),
                    2 => block::<V, 2, true>(x, taps, bias, clip, d, last),
                    3 => block::<V, 3, true>(x, taps, bias, clip, d, last),
                    _ => block::<V, 4, true>(x, taps, bias, clip, d, last),
                }
            }
        }
    }
}

/// `NV` rows of `len` outputs each, one register per row: row `v` reads from `x + v·pitch`
/// and writes to `dst + v·stride`.
#[inline(always)]
unsafe fn narrow<V: Lanes, const NV: usize>(
    x: *const f32,
    taps: &[(usize, f32)],
    bias: f32,
    clip: Option<(f32, f32)>,
    dst: *mut f32,
    (pitch, stride, len): (usize, usize, usize),
) {
    // SAFETY: the caller's bounds.
    unsafe {
        let load = |p: *const f32| if len < V::N { V::load_part(p, len) } else { V::load(p) };
        let mut acc = [V::splat(&bias); NV];
        for &(offset, w) in taps {
            let w = V::splat(&w);
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = acc.add(load(x.add(v * pitch + offset)).mul(w));
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            let acc = clip.map_or(*acc, |(lo, hi)| acc.clip(lo, hi));
            if len < V::N {
                acc.store_part(dst.add(v * stride), len);
            } else {
                acc.store(dst.add(v * stride));
            }
        }
    }
}

/// `NV` registers of outputs: `last` lanes of the last one when `PART` (all of them are
/// written when `last` is the register's width).
#[inline(always)]
unsafe fn block<V: Lanes, const NV: usize, const PART: bool>(
    x: *const f32,
    taps: &[(usize, f32)],
    bias: f32,
    clip: Option<(f32, f32)>,
    dst: *mut f32,
    last: usize,
) {
    // SAFETY: the caller's bounds.
    unsafe {
        let mut acc = [V::splat(&bias); NV];
        for &(offset, w) in taps {
            let w = V::splat(&w);
            let p = x.add(offset);
            for (v, acc) in acc.iter_mut().enumerate() {
                let x = if PART && v == NV - 1 && last < V::N {
                    V::load_part(p.add(v * V::N), last)
                } else {
                    V::load(p.add(v * V::N))
                };
                *acc = acc.add(x.mul(w));
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            let acc = clip.map_or(*acc, |(lo, hi)| acc.clip(lo, hi));
            if PART && v == NV - 1 && last < V::N {
                acc.store_part(dst.add(v * V::N), last);
            } else {
                acc.store(dst.add(v * V::N));
            }
        }
    }
}

/// Planes that [`interleave8`] and [`deinterleave8`] take at once.
pub(crate) const LANES: usize = 8;

/// `LANES` channels of a depthwise convolution side by side: `xt` is their zero-padded input
/// plane of `LANES`-wide pixels, rows `pitch` pixels apart, and output pixel (oy, ox) of `yt`
/// (`rows × cols` pixels, `LANES`-wide) is, lane by lane, `bias + Σ_t xt[at + offsets[t]] ·
/// w[t]` with `at = oy·stride[0]·pitch + ox·stride[1]`, the products added in the order of the
/// taps (a multiplication, then an addition, as [`depthwise_plane`]), then with `clip` the
/// graph's `Clip` (`Lanes::clip`). `w` holds each tap's `LANES` weights. Up to eight pixels at a time (independent sums in flight), one register
/// each where the CPU has AVX2.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lanes_plane(
    isa: Isa,
    xt: &[f32],
    offsets: &[usize],
    w: &[f32],
    bias: &[f32],
    (rows, cols, pitch): (usize, usize, usize),
    stride: [usize; 2],
    clip: Option<(f32, f32)>,
    yt: &mut [f32],
) {
    // Every read and write of the kernels below lies inside these lengths.
    assert_eq!(w.len(), LANES * offsets.len());
    assert_eq!(bias.len(), LANES);
    assert_eq!(yt.len(), LANES * rows * cols);
    if yt.is_empty() {
        return;
    }
    let reach = offsets.iter().copied().max().unwrap_or(0);
    assert!(LANES * ((rows - 1) * stride[0] * pitch + (cols - 1) * stride[1] + reach + 1) <= xt.len());
    let shape = (rows, cols, pitch);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512`/`Avx2` are only chosen when the CPU has AVX2 (`Isa::detect`),
        // and the lengths are checked above.
        Isa::Avx512 | Isa::Avx2 => unsafe { lanes_avx2(xt, offsets, w, bias, shape, stride, clip, yt) },
        _ => {
            for (o, out) in yt.chunks_exact_mut(LANES).enumerate() {
                let at = o / cols * stride[0] * pitch + o % cols * stride[1];
                for (l, y) in out.iter_mut().enumerate() {
                    let s = offsets
                        .iter()
                        .zip(w.chunks_exact(LANES))
                        .fold(bias[l], |s, (&off, wt)| s + xt[LANES * (at + off) + l] * wt[l]);
                    *y = clip.map_or(s, |(lo, hi)| crate::graph::ops::clip(s, lo, hi));
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_avx2(
    xt: &[f32],
    offsets: &[usize],
    w: &[f32],
    bias: &[f32],
    (rows, cols, pitch): (usize, usize, usize),
    [sh, sw]: [usize; 2],
    clip: Option<(f32, f32)>,
    yt: &mut [f32],
) {
    use super::x86::F32x8 as V;
    // SAFETY: the CPU has AVX2 (the caller's `Isa`); every pixel read lies below the reach
    // `lanes_plane` checked, every pixel written below `rows × cols`.
    unsafe {
        let (x, y, w, bias) = (xt.as_ptr(), yt.as_mut_ptr(), w.as_ptr(), V::load(bias.as_ptr()));
        for oy in 0..rows {
            let row = oy * sh * pitch;
            let mut ox = 0;
            while ox < cols {
                let n = (cols - ox).min(8);
                let (at, out) = (x.add(LANES * (row + ox * sw)), y.add(LANES * (oy * cols + ox)));
                match n {
                    8 => lanes_pixels::<8>(at, sw, offsets, w, bias, clip, out),
                    7 => lanes_pixels::<7>(at, sw, offsets, w, bias, clip, out),
                    6 => lanes_pixels::<6>(at, sw, offsets, w, bias, clip, out),
                    5 => lanes_pixels::<5>(at, sw, offsets, w, bias, clip, out),
                    4 => lanes_pixels::<4>(at, sw, offsets, w, bias, clip, out),
                    3 => lanes_pixels::<3>(at, sw, offsets, w, bias, clip, out),
                    2 => lanes_pixels::<2>(at, sw, offsets, w, bias, clip, out),
                    _ => lanes_pixels::<1>(at, sw, offsets, w, bias, clip, out),
                }
                ox += n;
            }
        }
    }
}

/// `Q` output pixels of [`lanes_plane`] into `out`, the first one's taps from `at`, the next
/// ones `step` pixels on.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lanes_pixels<const Q: usize>(
    at: *const f32,
    step: usize,
    offsets: &[usize],
    w: *const f32,
    bias: super::x86::F32x8,
    clip: Option<(f32, f32)>,
    out: *mut f32,
) {
    use super::x86::F32x8 as V;
    // SAFETY: the caller's bounds.
    unsafe {
        let mut acc = [bias; Q];
        for (t, &off) in offsets.iter().enumerate() {
            let wv = V::load(w.add(LANES * t));
            for (q, acc) in acc.iter_mut().enumerate() {
                *acc = acc.add(V::load(at.add(LANES * (q * step + off))).mul(wv));
            }
        }
        for (q, acc) in acc.into_iter().enumerate() {
            let acc = if let Some((lo, hi)) = clip {
                acc.clip(lo, hi)
            } else {
                acc
            };
            acc.store(out.add(LANES * q));
        }
    }
}

/// `LANES` planes of `n` pixels, `w` to a row, interleaved: pixel `p`'s values side by side at
/// pixel `(p / w)·pitch + p % w` of `dst` (`dst[LANES·that + l] = src[l][p]`), so rows can land
/// in a wider, padded plane. 8 × 8 blocks are transposed in registers where the CPU has AVX2.
pub(crate) fn interleave8(isa: Isa, src: [&[f32]; LANES], (n, w, pitch): (usize, usize, usize), dst: &mut [f32]) {
    assert!(w > 0 && w <= pitch && src.iter().all(|s| s.len() >= n));
    if n == 0 {
        return;
    }
    let at = |p: usize| p / w * pitch + p % w;
    assert!(LANES * (at(n - 1) + 1) <= dst.len());
    #[allow(unused_mut)]
    let mut from = 0;
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        let src: [*const f32; LANES] = src.map(|s| s.as_ptr());
        // SAFETY: the CPU has AVX2 (the caller's `Isa`); blocks stay below `n` pixels, inside
        // every source, and land at `at(p)` for p < n, inside `dst` (checked above).
        from = unsafe { x86::transpose_in(src, dst.as_mut_ptr(), (n, w, pitch)) };
    }
    for p in from..n {
        for (l, s) in src.iter().enumerate() {
            dst[LANES * at(p) + l] = s[p];
        }
    }
}

/// `dst[l·plane + p] = src[LANES·p + l]` for `p < plane` and the `dst.len() / plane` lanes
/// `dst` holds planes of (at most `LANES`): the inverse of [`interleave8`].
pub(crate) fn deinterleave8(isa: Isa, src: &[f32], dst: &mut [f32], plane: usize) {
    let lanes = dst.len() / plane;
    assert!(lanes <= LANES && dst.len() == lanes * plane);
    assert_eq!(src.len(), LANES * plane);
    #[allow(unused_mut)]
    let mut from = 0;
    #[cfg(target_arch = "x86_64")]
    if lanes == LANES && matches!(isa, Isa::Avx2 | Isa::Avx512) {
        let base = dst.as_mut_ptr();
        let rows: [*const f32; LANES] = std::array::from_fn(|i| src.as_ptr().wrapping_add(LANES * i));
        // SAFETY: the CPU has AVX2; pixel blocks p..p + 8 ≤ plane: reads src[8p .. 8p + 64] and
        // writes dst[l·plane + p ..][..8], inside the lengths checked above.
        from = unsafe { x86::transpose_out(rows, base, plane) };
    }
    for l in 0..lanes {
        for p in from..plane {
            dst[l * plane + p] = src[LANES * p + l];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// The 8 × 8 transpose: lane `j` of output `i` is lane `i` of input `j`.
    #[inline(always)]
    unsafe fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: the callers enable AVX2.
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ]
        }
    }

    /// For each block of 8 pixels `p` below `n`: 8 floats from each `src[j] + p`, transposed,
    /// output `i` stored at `dst + LANES·at(p + i)`, `at(q) = (q / w)·pitch + q % w`. Returns
    /// the pixels done.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_in(
        src: [*const f32; LANES],
        dst: *mut f32,
        (n, w, pitch): (usize, usize, usize),
    ) -> usize {
        let (mut p, mut row, mut col) = (0, 0, 0);
        while p + 8 <= n {
            // SAFETY: the caller's bounds.
            unsafe {
                let o = transpose(src.map(|s| _mm256_loadu_ps(s.add(p))));
                for v in o {
                    _mm256_storeu_ps(dst.add(LANES * (row * pitch + col)), v);
                    col += 1;
                    if col == w {
                        (row, col) = (row + 1, 0);
                    }
                }
            }
            p += 8;
        }
        p
    }

    /// For each block of 8 pixels `p` below `plane`: the 8 pixels' lanes from `rows[i] +
    /// 8·p`, transposed, lane `l` stored at `dst + l·plane + p`. Returns the pixels done.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_out(rows: [*const f32; LANES], dst: *mut f32, plane: usize) -> usize {
        let mut p = 0;
        while p + 8 <= plane {
            // SAFETY: the caller's bounds.
            unsafe {
                let o = transpose(rows.map(|r| _mm256_loadu_ps(r.add(LANES * p))));
                for (l, v) in o.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add(l * plane + p), v);
                }
            }
            p += 8;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn planes_follow_the_scalar_definition_on_every_isa() {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        // Widths below, at and above one, two and four registers, partial ones included.
        for &(rows, cols, ntaps) in &[
            (1, 1, 9),
            (3, 7, 9),
            (2, 16, 4),
            (5, 63, 9),
            (4, 64, 25),
            (2, 70, 9),
            (3, 131, 6),
        ] {
            let pitch = cols + 3;
            let taps: Vec<(usize, f32)> = (0..ntaps)
                .map(|_| (r.random_range(0..2 * pitch), r.random_range(-1.0..1.0)))
                .collect();
            let reach = taps.iter().map(|t| t.0).max().unwrap();
            let xc: Vec<f32> = (0..(rows - 1) * pitch + cols + reach)
                .map(|_| r.random_range(-4.0..4.0))
                .collect();
            let bias = r.random_range(-1.0..1.0);
            // Without a clip, and with one that cuts both ends.
            for clip in [None, Some((-0.5, 1.0))] {
                let want: Vec<u32> = (0..rows * cols)
                    .map(|i| {
                        let at = i / cols * pitch + i % cols;
                        let s = taps.iter().fold(bias, |s, &(o, w)| s + xc[at + o] * w);
                        clip.map_or(s, |(lo, hi)| crate::graph::ops::clip(s, lo, hi)).to_bits()
                    })
                    .collect();
                for isa in Isa::available() {
                    let mut dst = vec![f32::NAN; rows * cols];
                    depthwise_plane(isa, &xc, &taps, bias, (rows, cols, pitch), clip, &mut dst);
                    let got: Vec<u32> = dst.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "{isa:?} {rows}×{cols}, {ntaps} taps, {clip:?}");
                }
            }
        }
    }
}
