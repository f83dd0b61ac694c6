//! The rows of a fully connected layer: `out[r][j] = Σ_l x[r][l]·w[l][j]` for the rows `x`
//! `[rows, k]` of one or more samples and the weights `w` `[k, n]` (a Gemm's `B'`, a
//! classifier head's weights), all row-major.
//!
//! **Arithmetic.** Each output is `fma` over the inputs in order from 0: `o ← x[r][l]·w[l][j] +
//! o`, `l` = 0, 1, …, one rounding each, on every instruction set (the lanes are independent).
//! So a row gives the same bits alone or among others.
//!
//! Up to `R` rows share each load of `w` into a register, and every group of `R` rows passes
//! over a tile of `w` while it is in cache: with one sample at a time a classifier head's
//! weights (5 MB for 1280 × 1000) are most of what the layer reads, so rows taken together read
//! them from memory once. The depth is taken in blocks of [`DEPTH_BLOCK`] rows of `w`, the
//! partial sums stored in `out` between blocks, so that the rows of `w` a block walks down stay
//! in the TLB while every column tile passes over them.

use super::{F32x1, Isa, Lanes};

/// Rows of `x` whose outputs one tile holds.
const R: usize = 8;

/// Rows of `w` one pass over the columns covers.
const DEPTH_BLOCK: usize = 128;

/// `out = x·w` with `x` `[rows, k]`, `w` `[k, n]`, `out` `[rows, n]` (see the module docs).
pub(crate) fn dense_rows(isa: Isa, (rows, n, k): (usize, usize, usize), x: &[f32], w: &[f32], out: &mut [f32]) {
    // Every read and write of the kernels below lies inside these lengths.
    assert_eq!(x.len(), rows * k);
    assert_eq!(w.len(), k * n);
    assert_eq!(out.len(), rows * n);
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let a = Args { rows, n, k, x, w };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512`/`Avx2` are only chosen when the CPU has the features
        // (`Isa::detect`), and the lengths are checked above.
        Isa::Avx512 => unsafe { avx512(&a, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(&a, out) },
        // SAFETY: lengths checked above.
        _ => unsafe { blocks::<F32x1, 1>(&a, out) },
    }
}

struct Args<'a> {
    rows: usize,
    n: usize,
    k: usize,
    x: &'a [f32],
    w: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512(a: &Args<'_>, out: &mut [f32]) {
    // SAFETY: the CPU has AVX-512 (the caller's `Isa`); lengths checked by `dense_rows`.
    unsafe { blocks::<super::x86::F32x16, 2>(a, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(a: &Args<'_>, out: &mut [f32]) {
    // SAFETY: the CPU has AVX2 and FMA (the caller's `Isa`); lengths checked by `dense_rows`.
    unsafe { blocks::<super::x86::F32x8, 1>(a, out) }
}

/// Depth blocks, then tiles of `NV` registers of columns, of one, then one partial register,
/// each over the groups of `R` rows.
#[inline(always)]
unsafe fn blocks<V: Lanes, const NV: usize>(a: &Args<'_>, out: &mut [f32]) {
    let Args { rows, n, k, x, w } = *a;
    let wide = NV * V::N;
    // Rows past the end of a group repeat its last one (computed, not stored).
    let tiles: Vec<Tile> = (0..rows)
        .step_by(R)
        .map(|r0| {
            let group = R.min(rows - r0);
            Tile {
                x: std::array::from_fn(|r| x[(r0 + r.min(group - 1)) * k..].as_ptr()),
                rows: group,
                n,
            }
        })
        .collect();
    let o = out.as_mut_ptr();
    // Each column tile of a depth block passes over every group of rows while its block of
    // `w` is in cache: `w` comes from memory once, whatever the number of rows.
    for l0 in (0..k).step_by(DEPTH_BLOCK) {
        let l1 = (l0 + DEPTH_BLOCK).min(k);
        let mut j = 0;
        // SAFETY (all three): a tile at column j reads rows l0..l1 of `w` from column j and
        // the tile's rows of `x` (below `rows`), and reads and writes columns j.. of those
        // rows of `out`, as many as its registers hold (`n − j` for the partial one).
        unsafe {
            while j + wide <= n {
                for (g, t) in tiles.iter().enumerate() {
                    t.run::<V, NV, false>(w.as_ptr().add(j), o.add(g * R * n + j), (l0, l1), V::N);
                }
                j += wide;
            }
            while j + V::N <= n {
                for (g, t) in tiles.iter().enumerate() {
                    t.run::<V, 1, false>(w.as_ptr().add(j), o.add(g * R * n + j), (l0, l1), V::N);
                }
                j += V::N;
            }
            if j < n {
                for (g, t) in tiles.iter().enumerate() {
                    t.run::<V, 1, true>(w.as_ptr().add(j), o.add(g * R * n + j), (l0, l1), n - j);
                }
            }
        }
    }
}

/// What the tiles of a group of rows share.
struct Tile {
    /// The group's rows of `x` (the last one repeated past `rows`).
    x: [*const f32; R],
    /// Rows to store; row length of `w` and `out`.
    rows: usize,
    n: usize,
}

impl Tile {
    /// `rows × NV` registers of outputs from column `w`/`o` on, continuing their sums over
    /// depths `l0..l1` (from 0 when `l0` is 0): `last` lanes of the last register when `PART`.
    #[inline(always)]
    unsafe fn run<V: Lanes, const NV: usize, const PART: bool>(
        &self,
        w: *const f32,
        o: *mut f32,
        (l0, l1): (usize, usize),
        last: usize,
    ) {
        let part = |v: usize| PART && v == NV - 1;
        // SAFETY: the caller's bounds; rows of `out` past `self.rows` are neither read nor
        // written (the repeated rows read the last one's partial sums).
        unsafe {
            let mut acc = [[V::zero(); NV]; R];
            if l0 > 0 {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (v, a) in acc.iter_mut().enumerate() {
                        let p = o.add(r.min(self.rows - 1) * self.n + v * V::N);
                        *a = if part(v) { V::load_part(p, last) } else { V::load(p) };
                    }
                }
            }
            for l in l0..l1 {
                let wr = w.add(l * self.n);
                let b: [V; NV] = std::array::from_fn(|v| {
                    if part(v) {
                        V::load_part(wr.add(v * V::N), last)
                    } else {
                        V::load(wr.add(v * V::N))
                    }
                });
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = V::splat(self.x[r].add(l));
                    for v in 0..NV {
                        acc[v] = V::fma(a, b[v], acc[v]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(self.rows) {
                for (v, a) in acc.iter().enumerate() {
                    let p = o.add(r * self.n + v * V::N);
                    if part(v) {
                        a.store_part(p, last);
                    } else {
                        a.store(p);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Each output bit for bit as the module docs define it (one row at a time, scalar), on
    /// every instruction set, alone or among other rows: rows not a multiple of the group,
    /// columns with partial registers, depths of one to several blocks.
    #[test]
    fn rows_follow_the_documented_order_on_every_isa() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for &(rows, n, k) in &[
            (1, 1, 1),
            (1, 1000, 1280),
            (3, 17, 5),
            (8, 48, 128),
            (13, 100, 300),
            (32, 1000, 512),
        ] {
            let x: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut want = vec![0.0f32; rows * n];
            for r in 0..rows {
                for j in 0..n {
                    want[r * n + j] = (0..k).fold(0.0f32, |o, l| x[r * k + l].mul_add(w[l * n + j], o));
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; rows * n];
                dense_rows(isa, (rows, n, k), &x, &w, &mut out);
                assert_eq!(bits(&out), bits(&want), "{isa:?} {rows}×{n}×{k}");
                // One row alone.
                let mut one = vec![f32::NAN; n];
                dense_rows(isa, (1, n, k), &x[(rows - 1) * k..], &w, &mut one);
                assert_eq!(bits(&one), bits(&want[(rows - 1) * n..]), "{isa:?} last row alone");
            }
        }
    }
}
