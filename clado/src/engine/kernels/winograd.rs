//! Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for the 3×3 stride-1 layers: 16 multiplications per 2×2 output tile and
//! input/output channel pair instead of 36, i.e. 2.25× fewer, at the price of cheap additions.
//!
//! With `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]` and
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`, a 2×2 output tile is `Aᵀ [Σ_ic (G g Gᵀ) ⊙ (Bᵀ d B)] A` where
//! `d` is the 4×4 input patch of the tile and `g` the 3×3 kernel of one (ic, oc) pair: the
//! cross-correlation a CNN calls convolution, exactly in real arithmetic.
//!
//! **One arithmetic everywhere**, as for the direct kernels: per output element, the transformed
//! weights `U = G g Gᵀ` are computed once in f64 and rounded to f32 ([`pack_weights`]); the
//! input transform, the products (`acc = 0; for ic { acc = fma(v, u, acc) }` per position), the
//! output transform and the epilogue `fma(y, scale, bias) [+ residual] [relu]` are the fixed
//! sequences of [`input_transform`] and [`output_tile`], done lane by lane. Every instruction set
//! runs the same generic code over its register width ([`Lanes`]), so results are bitwise
//! identical whatever the ISA, tile grouping, batch split or thread count.
//!
//! Accuracy: the transforms only add and subtract (and halve, exactly, in `U`), so each output
//! is the exact result of slightly perturbed inputs, a few ulps of the largest terms like the
//! direct sum; the engine's tests hold it to the same tolerance against candle's conv2d.
//!
//! Odd sizes: a tile that hangs over the bottom or right edge reads zeros where the padded map
//! ends; those inputs only reach the tile's outputs outside the map, which are not written.

use super::{ConvShape, Epilogue, F32x1, Lanes, MapShape};

/// Layers with fewer input channels stay direct: the transforms cost about as much as the
/// products they save when the sum over channels is this short (the first layer has 1 or 3).
pub(crate) const MIN_IN_CHANNELS: usize = 8;

/// Floats of the transformed weights of a layer: 16 positions × `cin` × `cout`.
pub(crate) fn weight_len(cin: usize, cout: usize) -> usize {
    16 * cin * cout
}

/// Transforms PyTorch weights `[out][in][3][3]` into `U = G g Gᵀ`, packed
/// `[position][in channel][out channel]` with position = 4·row + column of the 4×4 tile.
/// Computed in f64 (every term is a weight times ±1, ±½ or ±¼) and rounded once.
pub(crate) fn pack_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    assert_eq!(w.len(), cout * cin * 9);
    let mut packed = vec![0.0; weight_len(cin, cout)];
    for oc in 0..cout {
        for ic in 0..cin {
            let g = &w[(oc * cin + ic) * 9..][..9];
            // gt = G·g (4×3), then U = gt·Gᵀ (4×4).
            let mut gt = [[0.0f64; 3]; 4];
            for (i, row) in gt.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| G[i][k] * g[k * 3 + j] as f64).sum();
                }
            }
            for (i, row) in gt.iter().enumerate() {
                for (j, gj) in G.iter().enumerate() {
                    let u: f64 = (0..3).map(|k| row[k] * gj[k]).sum();
                    packed[((i * 4 + j) * cin + ic) * cout + oc] = u as f32;
                }
            }
        }
    }
    packed
}

/// `Bᵀ d B` of one 4×4 patch, lane-wise: columns first, then rows.
#[inline(always)]
unsafe fn input_transform<V: Lanes>(d: &[[V; 4]; 4]) -> [[V; 4]; 4] {
    unsafe {
        let mut t = [[V::zero(); 4]; 4];
        for c in 0..4 {
            t[0][c] = d[0][c].sub(d[2][c]);
            t[1][c] = d[1][c].add(d[2][c]);
            t[2][c] = d[2][c].sub(d[1][c]);
            t[3][c] = d[1][c].sub(d[3][c]);
        }
        let mut v = [[V::zero(); 4]; 4];
        for r in 0..4 {
            v[r][0] = t[r][0].sub(t[r][2]);
            v[r][1] = t[r][1].add(t[r][2]);
            v[r][2] = t[r][2].sub(t[r][1]);
            v[r][3] = t[r][1].sub(t[r][3]);
        }
        v
    }
}

/// `Aᵀ m A` of one 4×4 tile of products, lane-wise: columns first, then rows.
#[inline(always)]
unsafe fn output_transform<V: Lanes>(m: &[[V; 4]; 4]) -> [[V; 2]; 2] {
    unsafe {
        let mut s = [[V::zero(); 4]; 2];
        for c in 0..4 {
            s[0][c] = m[0][c].add(m[1][c]).add(m[2][c]);
            s[1][c] = m[1][c].sub(m[2][c]).sub(m[3][c]);
        }
        let mut y = [[V::zero(); 2]; 2];
        for r in 0..2 {
            y[r][0] = s[r][0].add(s[r][1]).add(s[r][2]);
            y[r][1] = s[r][1].sub(s[r][2]).sub(s[r][3]);
        }
        y
    }
}

/// Where the tiles of a map lie: `th × tw` tiles of 2×2 output pixels, row-major.
#[derive(Clone, Copy)]
struct Tiles {
    out: MapShape,
    input: MapShape,
    tw: usize,
    count: usize,
}

impl Tiles {
    fn new(shape: &ConvShape) -> Self {
        let tw = shape.output.w.div_ceil(2);
        Tiles {
            out: shape.output,
            input: shape.input,
            tw,
            count: shape.output.h.div_ceil(2) * tw,
        }
    }

    /// Top-left output pixel of tile `t`.
    fn origin(&self, t: usize) -> (usize, usize) {
        (t / self.tw * 2, t % self.tw * 2)
    }

    /// Whether tile `t`'s 4×4 input patch lies inside the stored (padded) input.
    fn inside(&self, t: usize) -> bool {
        let (y, x) = self.origin(t);
        y + 4 <= self.input.h + 2 && x + 4 <= self.input.w + 2
    }
}

/// Transforms the input patches of tiles `first..first + n` (n ≤ `slots`) into `v`, laid out
/// `[position][slot][in channel]` with tile `first + p` in slot `p`; the other slots get zeros.
#[inline(always)]
unsafe fn transform_inputs<V: Lanes>(
    tiles: &Tiles,
    input: &[f32],
    first: usize,
    n: usize,
    slots: usize,
    v: &mut [f32],
) {
    let cin = tiles.input.c;
    let row = (tiles.input.w + 2) * cin;
    let vectors = cin / V::N * V::N;
    let zero = [0.0f32; 1];
    debug_assert!(n <= slots && v.len() >= 16 * slots * cin);
    for p in 0..slots {
        if p >= n {
            for pos in 0..16 {
                v[(pos * slots + p) * cin..][..cin].fill(0.0);
            }
            continue;
        }
        let t = first + p;
        let (y, x) = tiles.origin(t);
        let base = y * row + x * cin;
        let inside = tiles.inside(t);
        // The offset of patch element (r, c), or None where the stored map ends.
        let at = |r: usize, c: usize| -> Option<usize> {
            (inside || (y + r < tiles.input.h + 2 && x + c < tiles.input.w + 2)).then(|| base + r * row + c * cin)
        };
        let vp = v.as_mut_ptr();
        // SAFETY: `at` only gives offsets of stored pixels (+ channel < cin stays inside the
        // pixel); `v` holds 16·slots·cin floats and (pos·slots + p)·cin + ic < 16·slots·cin.
        unsafe {
            let mut ic = 0;
            while ic < vectors {
                transform_channels::<V>(input, &at, ic, vp.add(p * cin + ic), slots * cin, &zero);
                ic += V::N;
            }
            while ic < cin {
                transform_channels::<F32x1>(input, &at, ic, vp.add(p * cin + ic), slots * cin, &zero);
                ic += 1;
            }
        }
    }
}

/// The input transform of `V::N` channels from `ic` of one patch, stored at `dst + pos·stride`.
#[inline(always)]
unsafe fn transform_channels<V: Lanes>(
    input: &[f32],
    at: &impl Fn(usize, usize) -> Option<usize>,
    ic: usize,
    dst: *mut f32,
    stride: usize,
    zero: &[f32; 1],
) {
    unsafe {
        let mut d = [[V::zero(); 4]; 4];
        for (r, row) in d.iter_mut().enumerate() {
            for (c, e) in row.iter_mut().enumerate() {
                *e = match at(r, c) {
                    Some(o) => V::load(input.as_ptr().add(o + ic)),
                    None => V::splat(zero.as_ptr()),
                };
            }
        }
        let v = input_transform(&d);
        for r in 0..4 {
            for c in 0..4 {
                v[r][c].store(dst.add((r * 4 + c) * stride));
            }
        }
    }
}

/// The products of one group: for every position, `m[pos][p][j] = Σ_ic v[pos][p][ic]·u[pos][ic][oc0 + j]`
/// for the NB tiles p and the `CV` registers of output channels from `oc0`. `m` is laid out
/// `[position][tile][CV·N channels]`. `CIN` is the channel count when known at compile time
/// (the addresses of `v` then become constant offsets), else 0.
#[inline(always)]
unsafe fn products<V: Lanes, const CIN: usize, const CV: usize, const NB: usize>(
    v: &[f32],
    u: &[f32],
    cin: usize,
    cout: usize,
    oc0: usize,
    m: &mut [f32],
) {
    let block = CV * V::N;
    debug_assert!(v.len() >= 16 * NB * cin && m.len() >= 16 * NB * block);
    debug_assert!(u.len() >= 16 * cin * cout && oc0 + block <= cout);
    // SAFETY: the reads stay inside v (16·NB·cin) and u (16·cin·cout, oc0 + block ≤ cout), the
    // writes inside m (16·NB·block), as the debug assertions above state for all callers.
    unsafe {
        for pos in 0..16 {
            products_at::<V, CIN, CV, NB>(
                v.as_ptr().add(pos * NB * cin),
                u.as_ptr().add(pos * cin * cout + oc0),
                cin,
                cout,
                m.as_mut_ptr().add(pos * NB * block),
                block,
            );
        }
    }
}

/// The products of NB tiles at one position: `m[p·m_stride + j] = Σ_ic v[p·cin + ic]·u[ic·cout + j]`
/// for `j < CV·N`, as one fma chain over `ic` from zero (the arithmetic of every grouping).
#[inline(always)]
unsafe fn products_at<V: Lanes, const CIN: usize, const CV: usize, const NB: usize>(
    vp: *const f32,
    up: *const f32,
    cin: usize,
    cout: usize,
    mp: *mut f32,
    m_stride: usize,
) {
    let cin = if CIN > 0 { CIN } else { cin };
    // SAFETY: the callers pass pointers to NB·cin floats of v, cin rows of cout floats of u
    // (CV·N of them read per row) and NB rows of m_stride floats of m (CV·N written per row).
    unsafe {
        let mut acc = [[V::zero(); CV]; NB];
        for ic in 0..cin {
            let ur = up.add(ic * cout);
            let mut uv = [V::zero(); CV];
            for (j, r) in uv.iter_mut().enumerate() {
                *r = V::load(ur.add(j * V::N));
            }
            for (p, a) in acc.iter_mut().enumerate() {
                let b = V::splat(vp.add(p * cin + ic));
                for j in 0..CV {
                    a[j] = V::fma(b, uv[j], a[j]);
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            for (j, r) in a.iter().enumerate() {
                r.store(mp.add(p * m_stride + j * V::N));
            }
        }
    }
}

/// Output transform and epilogue of `V::N` channels from `oc` of tile `t`, whose products at
/// position `pos` are at `m[at + pos·pos_stride..]`; written where the tile's pixels lie inside
/// the map.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_tile<V: Lanes>(
    tiles: &Tiles,
    t: usize,
    m: &[f32],
    at: usize,
    pos_stride: usize,
    oc: usize,
    epi: &Epilogue<'_>,
    out: &mut [f32],
) {
    debug_assert!(at + 15 * pos_stride + V::N <= m.len());
    // SAFETY: the callers keep `at + 15·pos_stride + N` within m; output pixels are written
    // only when inside the map, channels oc..oc + N ≤ cout; scale/bias have cout entries and
    // the residual has out's length (checked by `conv_image`).
    unsafe {
        let mut mm = [[V::zero(); 4]; 4];
        for (r, row) in mm.iter_mut().enumerate() {
            for (c, e) in row.iter_mut().enumerate() {
                *e = V::load(m.as_ptr().add(at + (r * 4 + c) * pos_stride));
            }
        }
        let y = output_transform(&mm);
        let sc = V::load(epi.scale.as_ptr().add(oc));
        let bi = V::load(epi.bias.as_ptr().add(oc));
        let (y0, x0) = tiles.origin(t);
        for (dy, row) in y.iter().enumerate() {
            for (dx, &val) in row.iter().enumerate() {
                if y0 + dy >= tiles.out.h || x0 + dx >= tiles.out.w {
                    continue;
                }
                let o = tiles.out.at(y0 + dy, x0 + dx) + oc;
                let mut r = V::fma(val, sc, bi);
                if let Some(res) = epi.residual {
                    r = r.add(V::load(res.as_ptr().add(o)));
                }
                if epi.relu {
                    r = r.relu();
                }
                r.store(out.as_mut_ptr().add(o));
            }
        }
    }
}

/// Transformed weights (floats) beyond which a convolution runs in super-groups
/// ([`conv_blocked`]): 256 KiB, what stays in a core's L2 cache while every group of NB tiles
/// rereads all of it (the CIFAR ResNets' layers are all within it).
const GROUPED_MAX_WEIGHTS: usize = 1 << 16;

/// Transformed inputs and products (floats) that a super-group of tiles keeps: 1 MiB.
const SUPER_GROUP_FLOATS: usize = 1 << 18;

/// Floats that [`conv`] allocates for its transformed inputs and products, at most (NB ≤ 16).
pub(crate) fn scratch_len(cin: usize, cout: usize) -> usize {
    match weight_len(cin, cout) > GROUPED_MAX_WEIGHTS {
        true => SUPER_GROUP_FLOATS.max(16 * 16 * (cin + cout)),
        false => 16 * 16 * (cin + cout),
    }
}

/// The convolution of one image in groups of `NB` tiles and blocks of `CV` registers of output
/// channels; `cout` must be a multiple of `CV·V::N`; `CIN` is the number of input channels or 0
/// (any, known at run time only). Every output is the same fma chain whatever the grouping.
#[inline(always)]
pub(super) unsafe fn conv<V: Lanes, const CIN: usize, const CV: usize, const NB: usize>(
    shape: &ConvShape,
    input: &[f32],
    u: &[f32],
    epi: &Epilogue<'_>,
    out: &mut [f32],
) {
    let (cin, cout) = (shape.input.c, shape.output.c);
    let block = CV * V::N;
    assert!(cout.is_multiple_of(block) && (CIN == 0 || CIN == cin));
    // SAFETY: the callees' requirements are this function's.
    unsafe {
        if weight_len(cin, cout) > GROUPED_MAX_WEIGHTS {
            conv_blocked::<V, CIN, CV, NB>(shape, input, u, epi, out)
        } else {
            conv_grouped::<V, CIN, CV, NB>(shape, input, u, epi, out)
        }
    }
}

/// [`conv`] for layers whose transformed weights stay in cache: group by group of NB tiles,
/// each group's products over all the weights.
#[inline(always)]
unsafe fn conv_grouped<V: Lanes, const CIN: usize, const CV: usize, const NB: usize>(
    shape: &ConvShape,
    input: &[f32],
    u: &[f32],
    epi: &Epilogue<'_>,
    out: &mut [f32],
) {
    let (cin, cout) = (shape.input.c, shape.output.c);
    let block = CV * V::N;
    let tiles = Tiles::new(shape);
    let mut v = vec![0.0f32; 16 * NB * cin];
    let mut m = vec![0.0f32; 16 * NB * block];
    for first in (0..tiles.count).step_by(NB) {
        let n = NB.min(tiles.count - first);
        // SAFETY (all three): the buffer lengths are the ones the callees document, and
        // `conv_image` checked the lengths of input, u, out, scale, bias and residual.
        unsafe { transform_inputs::<V>(&tiles, input, first, n, NB, &mut v) };
        for oc0 in (0..cout).step_by(block) {
            unsafe { products::<V, CIN, CV, NB>(&v, u, cin, cout, oc0, &mut m) };
            for p in 0..n {
                for j in 0..CV {
                    let mc = j * V::N;
                    let at = p * block + mc;
                    unsafe { output_tile::<V>(&tiles, first + p, &m, at, NB * block, oc0 + mc, epi, out) };
                }
            }
        }
    }
}

/// [`conv`] for wide layers, whose transformed weights do not stay in cache: the tiles go in
/// super-groups of S (a multiple of NB) whose transformed inputs and products fit in
/// [`SUPER_GROUP_FLOATS`]; within one, position by position and block by block of output
/// channels, the same slice of the weights (`cin × CV·N`) serves every group of NB tiles. The
/// weights are read once per super-group instead of once per group.
#[inline(always)]
unsafe fn conv_blocked<V: Lanes, const CIN: usize, const CV: usize, const NB: usize>(
    shape: &ConvShape,
    input: &[f32],
    u: &[f32],
    epi: &Epilogue<'_>,
    out: &mut [f32],
) {
    let (cin, cout) = (shape.input.c, shape.output.c);
    let block = CV * V::N;
    let tiles = Tiles::new(shape);
    let s = (SUPER_GROUP_FLOATS / (16 * (cin + cout)) / NB).max(1) * NB;
    let s = s.min(tiles.count.div_ceil(NB) * NB);
    let mut v = vec![0.0f32; 16 * s * cin];
    let mut m = vec![0.0f32; 16 * s * cout];
    for first in (0..tiles.count).step_by(s) {
        let n = s.min(tiles.count - first);
        let groups = n.div_ceil(NB);
        // SAFETY: v holds 16·s·cin floats, n ≤ s; `conv_image` checked the input's length.
        unsafe { transform_inputs::<V>(&tiles, input, first, n, s, &mut v) };
        for pos in 0..16 {
            for oc0 in (0..cout).step_by(block) {
                for g in 0..groups {
                    let at = pos * s + g * NB;
                    // SAFETY: slots at..at + NB < (pos + 1)·s of v (cin each) and m (cout
                    // each, oc0 + block ≤ cout); u's row block of this position and oc0.
                    unsafe {
                        products_at::<V, CIN, CV, NB>(
                            v.as_ptr().add(at * cin),
                            u.as_ptr().add(pos * cin * cout + oc0),
                            cin,
                            cout,
                            m.as_mut_ptr().add(at * cout + oc0),
                            cout,
                        )
                    };
                }
            }
        }
        for p in 0..n {
            for oc in (0..cout).step_by(V::N) {
                // SAFETY: p·cout + oc + 15·s·cout + N ≤ 16·s·cout.
                unsafe { output_tile::<V>(&tiles, first + p, &m, p * cout + oc, s * cout, oc, epi, out) };
            }
        }
    }
}

/// The portable instance (one lane, 4 channels × 4 tiles at a time; any channel count).
pub(super) fn conv_portable(shape: &ConvShape, input: &[f32], u: &[f32], epi: &Epilogue<'_>, out: &mut [f32]) {
    // SAFETY: F32x1 needs no CPU feature; the lengths were checked by `conv_image`.
    unsafe {
        if shape.output.c.is_multiple_of(4) {
            conv::<F32x1, 0, 4, 4>(shape, input, u, epi, out)
        } else {
            conv::<F32x1, 0, 1, 4>(shape, input, u, epi, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{conv_image, pack_conv_weights, zero_border, ConvShape, Epilogue, Isa, MapShape};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Direct cross-correlation in f64 of a padded NHWC map, with the epilogue.
    fn reference(shape: &ConvShape, input: &[f32], w: &[f32], epi: &Epilogue<'_>) -> Vec<f64> {
        let (i, o) = (shape.input, shape.output);
        let mut out = vec![0.0f64; o.padded_len()];
        for y in 0..o.h {
            for x in 0..o.w {
                for oc in 0..o.c {
                    let mut acc = 0.0f64;
                    for kh in 0..3 {
                        for kw in 0..3 {
                            let p = ((y + kh) * (i.w + 2) + x + kw) * i.c;
                            for ic in 0..i.c {
                                acc += input[p + ic] as f64 * w[((oc * i.c + ic) * 3 + kh) * 3 + kw] as f64;
                            }
                        }
                    }
                    let at = o.at(y, x) + oc;
                    let mut v = acc * epi.scale[oc] as f64 + epi.bias[oc] as f64;
                    if let Some(r) = epi.residual {
                        v += r[at] as f64;
                    }
                    out[at] = if epi.relu { v.max(0.0) } else { v };
                }
            }
        }
        out
    }

    /// Winograd vs the f64 direct sum on every ISA, odd and even sizes, channel counts that
    /// are and are not multiples of the register widths; all ISAs bitwise equal. Error bound:
    /// 1e-5 of the largest output (measured: ≤ 2.6e-7), as for the direct kernels a few ulps of
    /// the largest terms; a wrong tap or transform entry moves outputs by O(1).
    #[test]
    fn winograd_matches_the_direct_sum_and_is_bitwise_the_same_on_every_isa() {
        let mut r = ChaCha8Rng::seed_from_u64(7);
        for &(h, w, cin, cout) in &[
            (8, 8, 16, 16),
            (7, 5, 8, 24),
            (16, 16, 32, 32),
            (5, 6, 64, 64),
            (3, 3, 12, 16),
            // Wide enough for super-groups (`conv_blocked`): several, the last one partial.
            (30, 29, 80, 80),
            (5, 6, 96, 128),
        ] {
            let input_shape = MapShape { h, w, c: cin };
            let shape = ConvShape::new(input_shape, cout, 3, 1).unwrap();
            let mut input: Vec<f32> = (0..input_shape.padded_len())
                .map(|_| r.random_range(-2.0..2.0))
                .collect();
            zero_border(&mut input, input_shape);
            let weights: Vec<f32> = (0..cout * cin * 9).map(|_| r.random_range(-0.5..0.5)).collect();
            let scale: Vec<f32> = (0..cout).map(|_| r.random_range(0.5..1.5)).collect();
            let bias: Vec<f32> = (0..cout).map(|_| r.random_range(-0.5..0.5)).collect();
            let mut residual: Vec<f32> = (0..shape.output.padded_len())
                .map(|_| r.random_range(-1.0..1.0))
                .collect();
            zero_border(&mut residual, shape.output);
            let packed = pack_conv_weights(&weights, cout, cin, 3, 1);
            assert_eq!(packed.len(), weight_len(cin, cout));
            for (res, relu) in [(None, false), (Some(&residual[..]), true)] {
                let epi = Epilogue {
                    scale: &scale,
                    bias: &bias,
                    residual: res,
                    relu,
                };
                let exact = reference(&shape, &input, &weights, &epi);
                let mut first: Option<Vec<f32>> = None;
                for isa in Isa::available() {
                    let mut out = vec![f32::NAN; shape.output.padded_len()];
                    conv_image(isa, &shape, &input, &packed, &epi, &mut out);
                    let scale_of = exact.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    let err = out
                        .iter()
                        .zip(&exact)
                        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
                    assert!(
                        err <= 1e-5 * scale_of,
                        "{h}x{w} {cin}->{cout} {isa:?}: error {err:e} of {scale_of}"
                    );
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert!(
                            f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{h}x{w} {cin}->{cout}: {isa:?} differs from the first ISA"
                        ),
                    }
                }
            }
        }
    }

    /// Super-groups and groups give the same bits: the same fma chain per output, whatever the
    /// loop order (what keeps a model's results independent of its layer widths' path).
    #[test]
    fn super_groups_give_the_bits_of_groups() {
        let mut r = ChaCha8Rng::seed_from_u64(11);
        for &(h, w, cin, cout) in &[(9, 7, 24, 32), (30, 29, 80, 80), (4, 4, 8, 12)] {
            let input_shape = MapShape { h, w, c: cin };
            let shape = ConvShape::new(input_shape, cout, 3, 1).unwrap();
            let mut input: Vec<f32> = (0..input_shape.padded_len())
                .map(|_| r.random_range(-2.0..2.0))
                .collect();
            zero_border(&mut input, input_shape);
            let weights: Vec<f32> = (0..cout * cin * 9).map(|_| r.random_range(-0.5..0.5)).collect();
            let u = pack_weights(&weights, cout, cin);
            let scale = vec![1.0; cout];
            let bias: Vec<f32> = (0..cout).map(|_| r.random_range(-0.5..0.5)).collect();
            let epi = Epilogue {
                scale: &scale,
                bias: &bias,
                residual: None,
                relu: true,
            };
            let mut grouped = vec![0.0; shape.output.padded_len()];
            let mut blocked = vec![0.0; shape.output.padded_len()];
            // SAFETY: F32x1 needs no CPU feature; the buffers have the lengths `conv_image` checks.
            unsafe {
                conv_grouped::<F32x1, 0, 4, 4>(&shape, &input, &u, &epi, &mut grouped);
                conv_blocked::<F32x1, 0, 4, 4>(&shape, &input, &u, &epi, &mut blocked);
            }
            assert!(
                grouped.iter().zip(&blocked).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{h}x{w} {cin}->{cout}"
            );
        }
    }
}
