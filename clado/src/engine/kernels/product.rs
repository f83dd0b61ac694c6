//! The matrix product of the graph executor's general convolutions, bias and activation
//! included: `y = act(bias + w·x)` with `w` `[m, k]` (a Conv's weights, as the file stores
//! them), `x` `[k, n]` (the input channels × pixels of a 1×1 Conv, or an im2col matrix) and
//! `y` `[m, n]`, all row-major.
//!
//! Outputs are computed in tiles of `R` rows × `NV` registers of pixels held in registers
//! while the depth streams by (the weights broadcast one at a time, the pixels loaded a
//! register at a time straight from `x`: nothing is packed). The pixels are taken in column
//! blocks small enough that the block of `x` stays in cache for all the rows; once a block of
//! `R` rows is finished, `done` is called on each row's part while it is in cache (where the
//! executor applies the Conv's activation). So each output is written once, where a library
//! product with a separate bias fill and activation pass goes over it three times more.
//!
//! **Arithmetic.** Each output is `bias + s₁ + s₂ + …`, added in that order, where the depth is
//! cut into the fewest blocks of at most [`DEPTH_BLOCK`], of equal length but the last, and
//! `sᵢ` sums its block's products with `fma` from 0 in order of depth. Every instruction set
//! does exactly this (the lanes are independent), so results are the same bits on each. It is
//! also the order of the `gemm` crate's kernels on this project's machines, which the executor
//! used before, so results did not change with this kernel.

use super::{F32x1, Isa, Lanes};

/// The most products each partial sum takes.
pub(crate) const DEPTH_BLOCK: usize = 512;

/// Floats of `x` a column block should keep in cache (256 KiB).
const BLOCK_FLOATS: usize = 64 * 1024;

/// `y[i][j] = bias[i] + Σ_l w[i][l]·x[l][j]` for `i < m`, `j < n` (see the module docs for the
/// order of the additions), then with `clip = Some((lo, hi))` the graph's `Clip` (`Lanes::clip`)
/// applied in registers; `done` gets each finished run of a row of `y`, once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    w: &[f32],
    x: &[f32],
    bias: &[f32],
    clip: Option<(f32, f32)>,
    y: &mut [f32],
    done: &mut dyn FnMut(&mut [f32]),
) {
    // Every read and write of the kernels below lies inside these lengths.
    assert!(m > 0 && n > 0 && k > 0);
    assert_eq!(w.len(), m * k);
    assert_eq!(x.len(), k * n);
    assert_eq!(bias.len(), m);
    assert_eq!(y.len(), m * n);
    let args = Args {
        m,
        n,
        k,
        w,
        x,
        bias,
        clip,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512`/`Avx2` are only chosen when the CPU has the features
        // (`Isa::detect`), and the lengths are checked above.
        Isa::Avx512 => unsafe { avx512(&args, y, done) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(&args, y, done) },
        // SAFETY: lengths checked above.
        _ => unsafe { blocks::<F32x1, 8, 1>(&args, y, done) },
    }
}

struct Args<'a> {
    m: usize,
    n: usize,
    k: usize,
    w: &'a [f32],
    x: &'a [f32],
    bias: &'a [f32],
    clip: Option<(f32, f32)>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512(a: &Args<'_>, y: &mut [f32], done: &mut dyn FnMut(&mut [f32])) {
    // SAFETY: the CPU has AVX-512 (the caller's `Isa`); lengths checked by `product`.
    unsafe { blocks::<super::x86::F32x16, 8, 3>(a, y, done) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(a: &Args<'_>, y: &mut [f32], done: &mut dyn FnMut(&mut [f32])) {
    // SAFETY: the CPU has AVX2 and FMA (the caller's `Isa`); lengths checked by `product`.
    // 6 × 2 registers: twelve sums in flight cover two FMA pipes' latency, for two loads and
    // six broadcasts per step of depth (8 × 1 kept eight: MobileNetV2 went from 0.70 to 0.82
    // of onnxruntime's throughput with this on a Zen 2).
    unsafe { blocks::<super::x86::F32x8, 6, 2>(a, y, done) }
}

/// The whole product: column blocks, then `R` rows at a time, tiles of `NV` registers, then
/// of one, then one partial register.
#[inline(always)]
unsafe fn blocks<V: Lanes, const R: usize, const NV: usize>(
    a: &Args<'_>,
    y: &mut [f32],
    done: &mut dyn FnMut(&mut [f32]),
) {
    let Args {
        m,
        n,
        k,
        w,
        x,
        bias,
        clip,
    } = *a;
    let depth_blocks = k.div_ceil(DEPTH_BLOCK);
    let kb = k.div_ceil(depth_blocks);
    let wide = NV * V::N;
    let cols = (BLOCK_FLOATS / k / wide).max(1) * wide;
    let (wp, xp, yp) = (w.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    for j0 in (0..n).step_by(cols) {
        let j1 = (j0 + cols).min(n);
        for i0 in (0..m).step_by(R) {
            let rows = R.min(m - i0);
            // Rows past the end repeat the last one (computed, not stored).
            let wr: [*const f32; R] = std::array::from_fn(|r| {
                // SAFETY: row i0 + min(r, rows − 1) < m of `w` ([m, k]).
                unsafe { wp.add((i0 + r.min(rows - 1)) * k) }
            });
            let b: [f32; R] = std::array::from_fn(|r| bias[i0 + r.min(rows - 1)]);
            let t = Tile {
                w: wr,
                bias: &b,
                n,
                k,
                kb,
                rows,
                clip,
            };
            let mut j = j0;
            // SAFETY (all three): a tile at column j reads columns j.. of `x`'s k rows and
            // writes columns j.. of y's rows i0..i0 + rows, as many as its registers hold (or
            // `j1 − j` for the partial one), all below n and m.
            unsafe {
                // The first tile also brings the next rows' weights (contiguous in `w`) into
                // cache: where the plane is small they are most of what the product reads, and
                // each row is too short for the hardware's stream prefetch to catch it.
                let mut ahead = (i0 + R < m).then(|| wp.wrapping_add((i0 + R) * k));
                while j + wide <= j1 {
                    t.run::<V, NV, false>(xp.add(j), yp.add(i0 * n + j), V::N, ahead.take());
                    j += wide;
                }
                while j + V::N <= j1 {
                    t.run::<V, 1, false>(xp.add(j), yp.add(i0 * n + j), V::N, None);
                    j += V::N;
                }
                if j < j1 {
                    t.run::<V, 1, true>(xp.add(j), yp.add(i0 * n + j), j1 - j, None);
                }
            }
            for r in 0..rows {
                let row = (i0 + r) * n;
                done(&mut y[row + j0..row + j1]);
            }
        }
    }
}

/// What the tiles of `R` rows share.
struct Tile<'a, const R: usize> {
    /// The rows of `w`.
    w: [*const f32; R],
    bias: &'a [f32; R],
    /// Row length of `x` and `y`; depth; depth block.
    n: usize,
    k: usize,
    kb: usize,
    /// Rows to store.
    rows: usize,
    /// Bounds of the `Clip` applied to finished outputs.
    clip: Option<(f32, f32)>,
}

impl<const R: usize> Tile<'_, R> {
    /// `R × NV` registers of outputs from column `x` on: `last` lanes of the last register when
    /// `PART`, all of them otherwise; meanwhile the `R·k` floats from `ahead` are prefetched,
    /// `R` per step of depth.
    #[inline(always)]
    unsafe fn run<V: Lanes, const NV: usize, const PART: bool>(
        &self,
        x: *const f32,
        y: *mut f32,
        last: usize,
        ahead: Option<*const f32>,
    ) {
        let load = |p: *const f32, v: usize| {
            // SAFETY: the caller's bounds.
            unsafe {
                if PART && v == NV - 1 {
                    V::load_part(p, last)
                } else {
                    V::load(p)
                }
            }
        };
        let mut k0 = 0;
        while k0 < self.k {
            let k1 = (k0 + self.kb).min(self.k);
            // SAFETY: the caller's bounds.
            unsafe {
                let mut acc = [[V::zero(); NV]; R];
                for l in k0..k1 {
                    if let Some(p) = ahead {
                        super::prefetch(p.wrapping_add(l * R));
                    }
                    let xr = x.add(l * self.n);
                    let b: [V; NV] = std::array::from_fn(|v| load(xr.add(v * V::N), v));
                    for r in 0..R {
                        let a = V::splat(self.w[r].add(l));
                        for v in 0..NV {
                            acc[r][v] = V::fma(a, b[v], acc[r][v]);
                        }
                    }
                }
                for r in 0..self.rows {
                    for v in 0..NV {
                        let p = y.add(r * self.n + v * V::N);
                        let before = if k0 == 0 { V::splat(&self.bias[r]) } else { load(p, v) };
                        let mut s = before.add(acc[r][v]);
                        if let (Some((lo, hi)), true) = (self.clip, k1 == self.k) {
                            s = s.clip(lo, hi);
                        }
                        if PART && v == NV - 1 {
                            s.store_part(p, last);
                        } else {
                            s.store(p);
                        }
                    }
                }
            }
            k0 = k1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Largest difference from the f64 product relative to the sum of |terms| of that output:
    /// f32 accumulation of up to ~1200 terms stays well inside this.
    const TOLERANCE: f64 = 1e-6;

    /// The order the module docs promise, one output at a time in scalar code.
    fn documented(m: usize, n: usize, k: usize, w: &[f32], x: &[f32], bias: &[f32]) -> Vec<f32> {
        let kb = k.div_ceil(k.div_ceil(DEPTH_BLOCK));
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut out = bias[i];
                for k0 in (0..k).step_by(kb) {
                    let s = (k0..(k0 + kb).min(k)).fold(0.0f32, |s, l| w[i * k + l].mul_add(x[l * n + j], s));
                    out += s;
                }
                y[i * n + j] = out;
            }
        }
        y
    }

    #[test]
    fn products_follow_the_documented_order_on_every_isa() {
        let mut r = ChaCha8Rng::seed_from_u64(7);
        // Rows not a multiple of 8, columns with partial registers and several column
        // blocks, depths of one, two and three blocks (the last one shorter).
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 48, 16),
            (13, 49, 27),
            (20, 196, 96),
            (3, 7, 1100),
            (17, 300, 513),
            (9, 1000, 700),
            (80, 49, 160),
        ] {
            let w: Vec<f32> = (0..m * k).map(|_| r.random_range(-1.0..1.0)).collect();
            let x: Vec<f32> = (0..k * n).map(|_| r.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..m).map(|_| r.random_range(-1.0..1.0)).collect();
            let want = documented(m, n, k, &w, &x, &bias);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 =
                        bias[i] as f64 + (0..k).map(|l| w[i * k + l] as f64 * x[l * n + j] as f64).sum::<f64>();
                    let scale: f64 =
                        bias[i].abs() as f64 + (0..k).map(|l| (w[i * k + l] * x[l * n + j]).abs() as f64).sum::<f64>();
                    let d = (want[i * n + j] as f64 - exact).abs() / scale;
                    assert!(d <= TOLERANCE, "{m}×{n}×{k} at ({i}, {j}): {d:e}");
                }
            }
            // Without a clip, and with one that cuts both ends (applied before `done`).
            for (isa, clip) in Isa::available()
                .into_iter()
                .flat_map(|i| [(i, None), (i, Some((-0.25, 0.5)))])
            {
                let mut y = vec![f32::NAN; m * n];
                let base = y.as_ptr() as usize;
                // Each output is handed to `done` once, after it is final.
                let mut seen = vec![0u8; m * n];
                product(isa, (m, n, k), &w, &x, &bias, clip, &mut y, &mut |run: &mut [f32]| {
                    let at = (run.as_ptr() as usize - base) / 4;
                    for (s, v) in seen[at..at + run.len()].iter_mut().zip(run.iter_mut()) {
                        *s += 1;
                        *v = -*v;
                    }
                });
                let negated: Vec<u32> = want
                    .iter()
                    .map(|&v| clip.map_or(v, |(lo, hi)| crate::graph::ops::clip(v, lo, hi)))
                    .map(|v| (-v).to_bits())
                    .collect();
                let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, negated, "{isa:?} {m}×{n}×{k} {clip:?}");
                assert!(seen.iter().all(|&s| s == 1), "{isa:?} {m}×{n}×{k}: runs");
            }
        }
    }
}
