//! Blocked Householder tridiagonalisation of a symmetric matrix (LAPACK's dsytrd with dlatrd,
//! lower triangle), in faer's storage so that faer's block reflectors carry `clip`'s
//! eigenvectors back.
//!
//! faer's own `tridiag_in_place` applies each rank-2 update to the whole trailing triangle as it
//! goes (fused with the next product): every column reads and writes that triangle once. Here
//! the updates of a panel of [`PANEL`] columns are deferred: each column only reads the trailing
//! triangle once (a symmetric matrix–vector product, [`symv_columns`], with corrections from the
//! panel's earlier reflectors), and the whole panel's rank-2·[`PANEL`] update is one matrix
//! product on faer's GEMM. At N = 2,000 the reduction is bound by the speed at which the
//! triangle comes from the caches, so halving that traffic is what counts.
//!
//! The result is that of faer's routine: T's diagonal and subdiagonal in place, the essential
//! parts of the reflectors below the subdiagonal, and faer's block factors of them in
//! `householder` (built by the same faer call that `tridiag_in_place` ends with). The rounding
//! differs only in the order of the sums: both are backward stable.

use super::team::{with_team, Team};
use faer::linalg::householder::{make_householder_in_place, upgrade_householder_factor};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use std::ops::Range;
use std::sync::Mutex;

/// Columns per panel: their updates are deferred and applied as one rank-2·PANEL product.
/// LAPACK's dsytrd uses 32.
const PANEL: usize = 32;

/// Trailing matrices smaller than this are handled in one part (the work does not pay for the
/// hand-over), and matrices smaller than this get no [`Team`].
const PARALLEL_ROWS: usize = 256;

/// Reduce the symmetric `a` (lower triangle read; the strict upper one is neither read nor
/// written) to tridiagonal form Qᵀ·a·Q = T in place, with faer's layout: see the module
/// documentation. `householder` is b × (n − 1) for faer's block size b. The work is split into
/// `par.degree()` parts, run on up to that many threads of a [`Team`] (no more than the rayon
/// pool has, nor the machine cores): the bits depend on the degree, never on the pool.
pub fn tridiagonalise(mut a: MatMut<'_, f64>, mut householder: MatMut<'_, f64>, par: Par) {
    let n = a.nrows();
    assert_eq!(n, a.ncols(), "tridiagonalisation needs a square matrix");
    assert_eq!(householder.ncols(), n.saturating_sub(1));
    assert!(householder.nrows() >= 1, "faer's block size is at least 1");
    if n < 2 {
        return;
    }
    let parts = par.degree();
    let threads = if n < PARALLEL_ROWS {
        1
    } else {
        parts.min(rayon::current_num_threads())
    };
    // τ of each reflector H = I − v·vᵀ/τ, as faer keeps them.
    let mut taus = vec![0.0; n - 1];
    with_team(threads, |team| {
        let mut work = Panel::new(n, parts);
        let mut k = 0;
        while k < n - 1 {
            let width = PANEL.min(n - 1 - k);
            work.reduce(team, a.rb_mut(), k, width, &mut taus);
            let next = k + width;
            if next < n {
                work.update_trailing(team, a.rb_mut().submatrix_mut(next, next, n - next, n - next), width);
            }
            k = next;
        }
    });
    // faer's block factors, exactly as its `tridiag_in_place` builds them from the τ's.
    let m = n - 1;
    let essentials = a.rb().submatrix(1, 0, m, m);
    let block = householder.nrows();
    let mut j = 0;
    while j < m {
        let b = block.min(m - j);
        let mut factor = householder.rb_mut().submatrix_mut(0, j, b, b);
        for i in 0..b {
            factor[(i, i)] = taus[j + i];
        }
        upgrade_householder_factor(factor, essentials.submatrix(j, j, m - j, b), b, 1, par);
        j += b;
    }
}

/// The first column of part `p` of `parts` over m columns of a lower triangle, so that the
/// parts hold equal areas: the area left of column c is m² − (m − c)².
fn part_start(m: usize, parts: usize, p: usize) -> usize {
    let share = p as f64 / parts as f64;
    (((1.0 - (1.0 - share).sqrt()) * m as f64).round() as usize).min(m)
}

fn part_columns(m: usize, parts: usize, p: usize) -> Range<usize> {
    part_start(m, parts, p)..part_start(m, parts, p + 1)
}

/// A panel's reflectors and workspace: V and W (n × PANEL, row r holding matrix row k + r for a
/// panel starting at k), the product y, and one partial product per part.
struct Panel {
    v: Mat<f64>,
    w: Mat<f64>,
    y: Vec<f64>,
    partial: Vec<Mutex<Vec<f64>>>,
    /// [V W] and [W V] of the rows below the panel, for the trailing update.
    left: Mat<f64>,
    right: Mat<f64>,
    /// Wᵀv and Vᵀv of the column being reduced.
    wt_v: Mat<f64>,
    vt_v: Mat<f64>,
}

impl Panel {
    fn new(n: usize, parts: usize) -> Self {
        Panel {
            v: Mat::zeros(n, PANEL),
            w: Mat::zeros(n, PANEL),
            y: vec![0.0; n],
            partial: (0..parts).map(|_| Mutex::new(vec![0.0; n])).collect(),
            left: Mat::zeros(n, 2 * PANEL),
            right: Mat::zeros(n, 2 * PANEL),
            wt_v: Mat::zeros(PANEL, 1),
            vt_v: Mat::zeros(PANEL, 1),
        }
    }

    /// Reduce columns k..k + width (each k + i < n − 1) by dlatrd: column j = k + i is first
    /// brought up to date with the panel's earlier reflectors (its rows j.. only), then its
    /// reflector H = I − τ⁻¹·v·vᵀ is made, and w = τ⁻¹·(A₂₂·v − V·(Wᵀ·v) − W·(Vᵀ·v)), corrected
    /// by −½·τ⁻¹·(wᵀ·v)·v, so that H·A₂₂·H = A₂₂ − v·wᵀ − w·vᵀ with A₂₂ as updated so far. v and
    /// w are kept in rows j + 1 − k.. of column i of V and W (rows above are zero).
    fn reduce(&mut self, team: &mut Team<'_>, mut a: MatMut<'_, f64>, k: usize, width: usize, taus: &mut [f64]) {
        let n = a.nrows();
        let Panel {
            v,
            w,
            y,
            partial,
            wt_v,
            vt_v,
            ..
        } = self;
        v.fill(0.0);
        w.fill(0.0);
        for i in 0..width {
            let j = k + i;
            let r = j - k;
            if i > 0 {
                // a[j.., j] −= V[j.., ..i]·W[j, ..i]ᵀ + W[j.., ..i]·V[j, ..i]ᵀ.
                let rows = n - j;
                let (vs, ws) = (v.as_ref().submatrix(r, 0, rows, i), w.as_ref().submatrix(r, 0, rows, i));
                let mut column = a.rb_mut().submatrix_mut(j, j, rows, 1);
                matmul(
                    column.rb_mut(),
                    Accum::Add,
                    vs,
                    ws.row(0).transpose().as_mat(),
                    -1.0,
                    Par::Seq,
                );
                matmul(
                    column.rb_mut(),
                    Accum::Add,
                    ws,
                    vs.row(0).transpose().as_mat(),
                    -1.0,
                    Par::Seq,
                );
            }
            // The reflector of a[j + 1.., j]: β replaces its head, v's essential part its tail.
            let rows = n - j - 1;
            let tau = {
                let column = a.rb_mut().col_mut(j).subrows_mut(j + 1, rows);
                let (mut head, tail) = column.split_at_row_mut(1);
                make_householder_in_place(&mut head[0], tail).tau
            };
            taus[j] = tau;
            let tau_inv = tau.recip();
            let mut vi = v.as_mut().col_mut(i).subrows_mut(r + 1, rows);
            vi[0] = 1.0;
            for t in 1..rows {
                vi[t] = a[(j + 1 + t, j)];
            }
            // y = A₂₂·v on the trailing triangle as it was when the panel began.
            let vi = v.as_ref().col(i).subrows(r + 1, rows);
            let x = vi.try_as_col_major().expect("columns are contiguous").as_slice();
            let y = &mut y[..rows];
            symv_lower(team, a.rb().submatrix(j + 1, j + 1, rows, rows), x, y, partial);
            // The panel's deferred updates: y −= V·(Wᵀv) + W·(Vᵀv), over rows j + 1.. .
            if i > 0 {
                let vs = v.as_ref().submatrix(r + 1, 0, rows, i);
                let ws = w.as_ref().submatrix(r + 1, 0, rows, i);
                let mut wt_v = wt_v.as_mut().subrows_mut(0, i);
                let mut vt_v = vt_v.as_mut().subrows_mut(0, i);
                matmul(
                    wt_v.rb_mut(),
                    Accum::Replace,
                    ws.transpose(),
                    vi.as_mat(),
                    1.0,
                    Par::Seq,
                );
                matmul(
                    vt_v.rb_mut(),
                    Accum::Replace,
                    vs.transpose(),
                    vi.as_mat(),
                    1.0,
                    Par::Seq,
                );
                let mut ym = MatMut::from_column_major_slice_mut(&mut *y, rows, 1);
                matmul(ym.rb_mut(), Accum::Add, vs, wt_v.rb(), -1.0, Par::Seq);
                matmul(ym.rb_mut(), Accum::Add, ws, vt_v.rb(), -1.0, Par::Seq);
            }
            // w = τ⁻¹·y − ½·τ⁻¹·(τ⁻¹·yᵀv)·v.
            let mut wi = w.as_mut().col_mut(i).subrows_mut(r + 1, rows);
            let mut dot = 0.0;
            for t in 0..rows {
                wi[t] = y[t] * tau_inv;
                dot += wi[t] * vi[t];
            }
            let alpha = -0.5 * tau_inv * dot;
            for t in 0..rows {
                wi[t] += alpha * vi[t];
            }
        }
    }

    /// The panel's deferred update of the trailing triangle (rows and columns k + width..):
    /// A₂₂ −= V·Wᵀ + W·Vᵀ = [V W]·[W V]ᵀ, lower triangle only, in column parts of equal area.
    fn update_trailing(&mut self, team: &mut Team<'_>, a: MatMut<'_, f64>, width: usize) {
        let rest = a.nrows();
        let (vs, ws) = (
            self.v.as_ref().submatrix(width, 0, rest, width),
            self.w.as_ref().submatrix(width, 0, rest, width),
        );
        let mut left = self.left.as_mut().submatrix_mut(0, 0, rest, 2 * width);
        let mut right = self.right.as_mut().submatrix_mut(0, 0, rest, 2 * width);
        left.rb_mut().subcols_mut(0, width).copy_from(vs);
        left.rb_mut().subcols_mut(width, width).copy_from(ws);
        right.rb_mut().subcols_mut(0, width).copy_from(ws);
        right.rb_mut().subcols_mut(width, width).copy_from(vs);
        let (left, right) = (left.rb(), right.rb());
        let parts = if rest < PARALLEL_ROWS { 1 } else { self.partial.len() };
        // Column blocks of `a`, one per part, each below its own diagonal.
        let mut blocks = Vec::with_capacity(parts);
        let mut remaining = a;
        for p in 0..parts {
            let columns = part_columns(rest, parts, p);
            let (block, others) = remaining.split_at_col_mut(columns.len());
            blocks.push(Mutex::new((
                columns.start,
                block.subrows_mut(columns.start, rest - columns.start),
            )));
            remaining = others;
        }
        team.run(parts, &|p| {
            let mut guard = blocks[p].lock().expect("each part is locked once");
            let (first, ref mut block) = *guard;
            let count = block.ncols();
            let (top, bottom) = block.rb_mut().split_at_row_mut(count);
            let r = right.subrows(first, count).transpose();
            triangular::matmul(
                top,
                BlockStructure::TriangularLower,
                Accum::Add,
                left.subrows(first, count),
                BlockStructure::Rectangular,
                r,
                BlockStructure::Rectangular,
                -1.0,
                Par::Seq,
            );
            matmul(
                bottom,
                Accum::Add,
                left.subrows(first + count, rest - first - count),
                r,
                -1.0,
                Par::Seq,
            );
        });
    }
}

/// y = A·x for the symmetric A (m × m) given by its lower triangle (column-major, contiguous
/// columns), reading each stored entry once. Large ones are split into `partial.len()` column
/// parts of equal area, each summing into its own partial product; those are added in order.
fn symv_lower(team: &mut Team<'_>, a: MatRef<'_, f64>, x: &[f64], y: &mut [f64], partial: &[Mutex<Vec<f64>>]) {
    let m = a.nrows();
    let parts = if m < PARALLEL_ROWS { 1 } else { partial.len() };
    if parts == 1 {
        y.fill(0.0);
        symv_columns(a, x, y, 0..m);
        return;
    }
    team.run(parts, &|p| {
        let mut part = partial[p].lock().expect("each part is locked once");
        let columns = part_columns(m, parts, p);
        // Columns c.. touch rows c.. only.
        let rows = &mut part[columns.start..m];
        rows.fill(0.0);
        symv_columns(a, x, &mut part[..m], columns);
    });
    y.fill(0.0);
    for (p, part) in partial[..parts].iter().enumerate() {
        let part = part.lock().expect("the parts are done");
        let first = part_start(m, parts, p);
        for (yi, pi) in y[first..].iter_mut().zip(&part[first..m]) {
            *yi += pi;
        }
    }
}

/// y += (the contribution of columns `columns` of the lower triangle of A, and of their mirror
/// images above the diagonal) · x. Four columns at a time: their 4 × 4 diagonal block entry by
/// entry, then one pass over the rows below it ([`four_columns`]).
fn symv_columns(a: MatRef<'_, f64>, x: &[f64], y: &mut [f64], columns: Range<usize>) {
    let m = a.nrows();
    let column = |c: usize| -> &[f64] { &a.col(c).try_as_col_major().expect("columns are contiguous").as_slice()[c..] };
    let mut c = columns.start;
    while c < columns.end {
        let width = 4.min(columns.end - c);
        let mut dots = [0.0f64; 4];
        for p in 0..width {
            let col = column(c + p);
            y[c + p] += col[0] * x[c + p];
            for q in p + 1..width {
                y[c + q] += col[q - p] * x[c + p];
                dots[p] += col[q - p] * x[c + q];
            }
        }
        let below = c + width;
        if width == 4 {
            let cols = [
                &column(c)[4..],
                &column(c + 1)[3..],
                &column(c + 2)[2..],
                &column(c + 3)[1..],
            ];
            let s = [x[c], x[c + 1], x[c + 2], x[c + 3]];
            let found = four_columns(cols, s, &x[below..m], &mut y[below..m]);
            for p in 0..4 {
                dots[p] += found[p];
            }
        } else {
            for p in 0..width {
                let col = &column(c + p)[width - p..];
                let xp = x[c + p];
                for (t, value) in col.iter().enumerate() {
                    y[below + t] += value * xp;
                    dots[p] += value * x[below + t];
                }
            }
        }
        for p in 0..width {
            y[c + p] += dots[p];
        }
        c += width;
    }
}

/// For four columns a₀..a₃ of equal length with multipliers s: y += Σ sₚ·aₚ, and returns the
/// four dot products aₚ·x. Vectorised where the CPU allows.
fn four_columns(a: [&[f64]; 4], s: [f64; 4], x: &[f64], y: &mut [f64]) -> [f64; 4] {
    let len = x.len();
    assert!(y.len() == len && a.iter().all(|c| c.len() == len));
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for, and the slices
            // have the lengths it reads (checked above).
            return unsafe { four_columns_avx2(a, s, x, y) };
        }
    }
    four_columns_portable(a, s, x, y, [0.0; 4])
}

/// [`four_columns`] without SIMD intrinsics, adding onto `dots` (other CPUs, and the AVX2
/// kernel's last rows; its sums run in another order, so the last bits can differ from the
/// AVX2 kernel's).
fn four_columns_portable(a: [&[f64]; 4], s: [f64; 4], x: &[f64], y: &mut [f64], mut dots: [f64; 4]) -> [f64; 4] {
    for t in 0..x.len() {
        y[t] += s[0] * a[0][t] + s[1] * a[1][t] + s[2] * a[2][t] + s[3] * a[3][t];
        for p in 0..4 {
            dots[p] += a[p][t] * x[t];
        }
    }
    dots
}

/// [`four_columns`] in AVX2 with FMA: eight rows per step, two accumulators per column so that
/// the FMA latency is hidden.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn four_columns_avx2(a: [&[f64]; 4], s: [f64; 4], x: &[f64], y: &mut [f64]) -> [f64; 4] {
    use std::arch::x86_64::*;
    let len = x.len();
    let steps = len / 8;
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let pa = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
    let sv = [
        _mm256_set1_pd(s[0]),
        _mm256_set1_pd(s[1]),
        _mm256_set1_pd(s[2]),
        _mm256_set1_pd(s[3]),
    ];
    let mut lo = [_mm256_setzero_pd(); 4];
    let mut hi = [_mm256_setzero_pd(); 4];
    for q in 0..steps {
        let t = q * 8;
        // SAFETY: t + 8 ≤ len for every slice.
        unsafe {
            let x0 = _mm256_loadu_pd(px.add(t));
            let x1 = _mm256_loadu_pd(px.add(t + 4));
            let mut y0 = _mm256_loadu_pd(py.add(t));
            let mut y1 = _mm256_loadu_pd(py.add(t + 4));
            for p in 0..4 {
                let a0 = _mm256_loadu_pd(pa[p].add(t));
                let a1 = _mm256_loadu_pd(pa[p].add(t + 4));
                y0 = _mm256_fmadd_pd(a0, sv[p], y0);
                y1 = _mm256_fmadd_pd(a1, sv[p], y1);
                lo[p] = _mm256_fmadd_pd(a0, x0, lo[p]);
                hi[p] = _mm256_fmadd_pd(a1, x1, hi[p]);
            }
            _mm256_storeu_pd(py.add(t), y0);
            _mm256_storeu_pd(py.add(t + 4), y1);
        }
    }
    let mut dots = [0.0; 4];
    for p in 0..4 {
        let mut lanes = [0.0; 4];
        // SAFETY: `lanes` holds four doubles.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo[p], hi[p])) };
        dots[p] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    }
    // The rows left over, carrying on the same sums.
    let done = steps * 8;
    let rest = [&a[0][done..], &a[1][done..], &a[2][done..], &a[3][done..]];
    four_columns_portable(rest, s, &x[done..], &mut y[done..], dots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::householder::{
        apply_block_householder_sequence_on_the_left_in_place_scratch,
        apply_block_householder_sequence_on_the_left_in_place_with_conj,
    };
    use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
    use faer::Conj;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Sizes around the panel width, the parallel threshold and their multiples.
    const SIZES: [usize; 14] = [1, 2, 3, 4, 5, 31, 32, 33, 64, 65, 255, 256, 257, 300];

    fn random_lower(n: usize, seed: u64) -> Mat<f64> {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let mut a = Mat::<f64>::zeros(n, n);
        for j in 0..n {
            for i in j..n {
                a[(i, j)] = r.random_range(-1.0..1.0);
            }
        }
        a
    }

    fn symmetric(lower: &Mat<f64>) -> Mat<f64> {
        Mat::from_fn(lower.nrows(), lower.ncols(), |i, j| lower[(i.max(j), i.min(j))])
    }

    /// `a` reduced in place, with the block factors faer's back-transformation needs.
    fn reduced(a: &Mat<f64>, par: Par) -> (Mat<f64>, Mat<f64>) {
        let n = a.nrows();
        let mut out = a.clone();
        let mut factors = Mat::<f64>::zeros(recommended_block_size::<f64>(n, n), n.saturating_sub(1));
        tridiagonalise(out.as_mut(), factors.as_mut(), par);
        (out, factors)
    }

    /// T and Q of the reduced form, Q applied by faer (as `clip` applies it) to the identity.
    fn t_and_q(reduced: &Mat<f64>, factors: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
        let n = reduced.nrows();
        let t = Mat::from_fn(n, n, |i, j| match i.abs_diff(j) {
            0 => reduced[(i, i)],
            1 => reduced[(i.max(j), i.min(j))],
            _ => 0.0,
        });
        let mut q = Mat::<f64>::identity(n, n);
        if n > 1 {
            let mut buffer = MemBuffer::new(apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(
                n - 1,
                factors.nrows(),
                n,
            ));
            apply_block_householder_sequence_on_the_left_in_place_with_conj(
                reduced.as_ref().submatrix(1, 0, n - 1, n - 1),
                factors.as_ref(),
                Conj::No,
                q.as_mut().subrows_mut(1, n - 1),
                Par::Seq,
                MemStack::new(&mut buffer),
            );
        }
        (t, q)
    }

    fn max_abs(a: faer::MatRef<'_, f64>) -> f64 {
        let mut m = 0.0f64;
        for j in 0..a.ncols() {
            for i in 0..a.nrows() {
                m = m.max(a[(i, j)].abs());
            }
        }
        m
    }

    #[test]
    fn the_reduction_is_an_orthogonal_similarity_at_every_boundary() {
        for (seed, &n) in SIZES.iter().enumerate() {
            let a = random_lower(n, seed as u64);
            let full = symmetric(&a);
            // Independent: faer's own eigensolver on the full matrix.
            let expected = full.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
            for par in [Par::Seq, Par::rayon(4)] {
                let (form, factors) = reduced(&a, par);
                let (t, q) = t_and_q(&form, &factors);
                // Backward error of a Householder reduction: a modest multiple of n·ε·‖A‖
                // (entries of A lie in [−1, 1), so ‖A‖₂ ≤ n).
                let tolerance = 10.0 * n as f64 * f64::EPSILON * (n as f64);
                let orthogonality = max_abs((q.transpose() * &q - Mat::<f64>::identity(n, n)).as_ref());
                let error = max_abs((&q * &t * q.transpose() - &full).as_ref());
                assert!(
                    orthogonality <= tolerance && error <= tolerance,
                    "n = {n}, {par:?}: ‖QᵀQ − I‖max = {orthogonality:.2e}, ‖QTQᵀ − A‖max = {error:.2e} > {tolerance:.2e}"
                );
                let found = t.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
                for (k, (x, y)) in found.iter().zip(&expected).enumerate() {
                    assert!(
                        (x - y).abs() <= tolerance,
                        "n = {n}, {par:?}: eigenvalue {k} of T is {x}, of A {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_matrices_and_other_degrees_in_the_parallel_range() {
        // Blocks ending at columns 40 and 300 give reflectors with a zero tail (τ = ∞) while the
        // trailing matrix is still split into parts; degrees 3 and 5 cut it differently.
        let n = 600;
        let mut a = random_lower(n, 21);
        for j in 0..n {
            for i in j..n {
                let block = |x: usize| usize::from(x > 40) + usize::from(x > 300);
                if block(i) != block(j) {
                    a[(i, j)] = 0.0;
                }
            }
        }
        let full = symmetric(&a);
        let expected = full.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
        let tolerance = 10.0 * n as f64 * f64::EPSILON * (n as f64);
        for degree in [3, 5] {
            let (form, factors) = reduced(&a, Par::rayon(degree));
            let (t, q) = t_and_q(&form, &factors);
            let error = max_abs((&q * &t * q.transpose() - &full).as_ref());
            assert!(error <= tolerance, "degree {degree}: ‖QTQᵀ − A‖max = {error:.2e}");
            let found = t.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
            for (x, y) in found.iter().zip(&expected) {
                assert!(
                    (x - y).abs() <= tolerance,
                    "degree {degree}: eigenvalue {x} against {y}"
                );
            }
        }
    }

    #[test]
    fn the_upper_triangle_is_never_read_nor_written() {
        for n in [5, 40, 300] {
            let a = random_lower(n, 100 + n as u64);
            let mut poisoned = a.clone();
            for j in 0..n {
                for i in 0..j {
                    poisoned[(i, j)] = f64::NAN;
                }
            }
            let (clean, clean_factors) = reduced(&a, Par::rayon(4));
            let (dirty, dirty_factors) = reduced(&poisoned, Par::rayon(4));
            for j in 0..n {
                for i in 0..n {
                    if i >= j {
                        assert_eq!(clean[(i, j)].to_bits(), dirty[(i, j)].to_bits(), "n = {n}, ({i}, {j})");
                    } else {
                        assert!(dirty[(i, j)].is_nan(), "n = {n}: ({i}, {j}) was written");
                    }
                }
            }
            assert!(clean_factors == dirty_factors, "n = {n}: the block factors changed");
        }
    }

    #[test]
    fn the_portable_kernel_agrees_with_the_dispatched_one() {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        for len in [0, 1, 7, 8, 9, 100, 1001] {
            let mut column = || (0..len).map(|_| r.random_range(-1.0..1.0)).collect::<Vec<f64>>();
            let a = [column(), column(), column(), column()];
            let x = column();
            let y0 = column();
            let s = [0.3, -1.2, 0.7, 2.0];
            let cols = [&a[0][..], &a[1][..], &a[2][..], &a[3][..]];
            let (mut y1, mut y2) = (y0.clone(), y0.clone());
            let d1 = four_columns(cols, s, &x, &mut y1);
            let d2 = four_columns_portable(cols, s, &x, &mut y2, [0.0; 4]);
            let tolerance = 1e-14 * (len as f64 + 1.0);
            for (u, v) in y1.iter().zip(&y2).chain(d1.iter().zip(&d2)) {
                assert!((u - v).abs() <= tolerance, "len {len}: {u} ≠ {v}");
            }
            for p in 0..4 {
                let exact: f64 = (0..len).map(|t| a[p][t] * x[t]).sum();
                assert!((d2[p] - exact).abs() <= tolerance, "len {len}: dot {p}");
            }
        }
    }

    #[test]
    fn the_bits_depend_on_the_parts_not_on_the_pool() {
        let a = random_lower(300, 7);
        let in_pool = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| reduced(&a, Par::rayon(4)))
        };
        let (one, factors) = in_pool(1);
        for threads in [2, 3, 4] {
            let (other, other_factors) = in_pool(threads);
            assert!(
                one == other && factors == other_factors,
                "{threads} threads changed the bits"
            );
        }
    }

    #[test]
    fn the_symmetric_product_reads_the_lower_triangle_only() {
        // The strict upper triangle holds NaN: it must not reach y.
        for m in [1, 3, 4, 5, 8, 9, 17, 40] {
            let lower = random_lower(m, m as u64);
            let mut a = lower.clone();
            for j in 0..m {
                for i in 0..j {
                    a[(i, j)] = f64::NAN;
                }
            }
            let x: Vec<f64> = (0..m).map(|i| 1.0 - 0.37 * i as f64).collect();
            let mut y = vec![0.0; m];
            symv_columns(a.as_ref(), &x, &mut y, 0..m);
            let full = symmetric(&lower);
            for i in 0..m {
                let expected: f64 = (0..m).map(|j| full[(i, j)] * x[j]).sum();
                assert!(
                    (y[i] - expected).abs() <= 1e-13 * m as f64,
                    "m = {m}, row {i}: {} ≠ {expected}",
                    y[i]
                );
            }
        }
    }
}
