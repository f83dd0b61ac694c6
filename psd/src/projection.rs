//! The projections themselves: symmetrise, find the spectrum, clip or shift it.
//!
//! Everything here works on in-memory matrices, so unit tests can check it against independent
//! computations; [`crate::run`] adds the files and the report around it.
//!
//! The eigenvalues and eigenvectors come from faer's self-adjoint eigensolver (Householder
//! tridiagonalisation, then the QR algorithm for the eigenvalues alone or divide and conquer
//! for the eigenvectors too): all eigenvalues for `none` and `shift`; for `clip` its three steps
//! one by one, every eigenvalue but only the eigenvectors that [`clip`] uses taken back through
//! the Householder reflections. It is backward stable: the computed eigenvalues are the exact ones of a matrix within
//! about n·ε·‖G‖₂ of G, which is where [`rounding_tolerance`] comes from.

use clado::{Error, Result};
use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
use faer::linalg::evd::{
    self_adjoint_evd, self_adjoint_evd_scratch, tridiagonal_self_adjoint_evd, ComputeEigenvectors, SelfAdjointEvdParams,
};
use faer::linalg::householder::{
    apply_block_householder_sequence_on_the_left_in_place_scratch,
    apply_block_householder_sequence_on_the_left_in_place_with_conj,
};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::{Accum, Auto, Col, Conj, Mat, MatMut, MatRef, Par};
use ndarray::Array2;
use serde::Serialize;

/// The shift leaves λ_min of the output at `SHIFT_MARGIN · ‖G‖₂` rather than at zero, so that
/// the output stays positive semidefinite once rounded and re-measured: the rounding in forming
/// G + λI and in any later eigensolver or factorisation is below [`rounding_tolerance`]
/// = 10·n·ε·‖G‖₂, which is 1.1e-11·‖G‖₂ for N = 5,000 and stays below 1e-10·‖G‖₂ up to
/// N = 45,000 (a 16 GB matrix). The price is an extra 1e-10·‖G‖₂ per layer in the offset, far
/// below any measured Δ.
pub const SHIFT_MARGIN: f64 = 1e-10;

/// faer splits its parallel loops into this many parts, whatever the number of cores, and sums
/// the parts in a fixed order: the output is bit-identical for every thread-pool size and core
/// count (tested), while 2+ cores still share the work. (Across CPUs the last bits can differ
/// where faer picks SIMD kernels by CPU, e.g. AVX2 or not.) 4 balances a 2-core machine (the
/// tasks share 2 threads evenly) against larger ones.
pub const PARALLEL_DEGREE: usize = 4;

/// The parallelism `psd` runs with: [`PARALLEL_DEGREE`] parts on the rayon pool.
pub fn parallelism() -> Par {
    Par::rayon(PARALLEL_DEGREE)
}
/// How to make the matrix convex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Nearest PSD matrix in Frobenius norm: zero the negative eigenvalues (the seed's choice;
    /// changes xᵀGx by an amount that depends on x).
    Clip,
    /// G + λI: adds the same λ·L to xᵀGx for every one-hot choice x, so the minimiser is unchanged.
    Shift,
    /// Symmetrise only: (G + Gᵀ)/2, which leaves xᵀGx unchanged for every x.
    None,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Clip => "clip",
            Method::Shift => "shift",
            Method::None => "none",
        })
    }
}

/// The extreme eigenvalues of a symmetric matrix and how many are negative.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spectrum {
    pub lambda_min: f64,
    pub lambda_max: f64,
    /// Eigenvalues below `−tolerance` (see [`rounding_tolerance`]): negative beyond rounding.
    pub negative_eigenvalues: usize,
}

impl Spectrum {
    /// Summarise eigenvalues sorted in nondecreasing order.
    pub fn of_sorted(eigenvalues: &[f64], tolerance: f64) -> Self {
        Spectrum {
            lambda_min: eigenvalues.first().copied().unwrap_or(0.0),
            lambda_max: eigenvalues.last().copied().unwrap_or(0.0),
            negative_eigenvalues: eigenvalues.iter().take_while(|&&l| l < -tolerance).count(),
        }
    }

    /// ‖G‖₂ of a symmetric matrix: the largest eigenvalue in absolute value.
    pub fn spectral_norm(&self) -> f64 {
        self.lambda_min.abs().max(self.lambda_max.abs())
    }
}

/// The constant c in the rounding tolerance c·n·ε·‖G‖₂. Error bounds of stable symmetric
/// eigensolvers are "a modest function of n" times ε·‖G‖₂; c = 1 proved too tight in the tests
/// (1.3·n·ε·‖G‖₂ seen for n = 3), and 10 leaves room while staying far below any real signal.
pub const ROUNDING_CONSTANT: f64 = 10.0;

/// Below this magnitude the sign of a computed eigenvalue means nothing: c·n·ε·‖G‖₂, the size of
/// the backward error of a stable symmetric eigensolver (and of rounding G's entries).
pub fn rounding_tolerance(n: usize, spectral_norm: f64) -> f64 {
    ROUNDING_CONSTANT * n as f64 * f64::EPSILON * spectral_norm
}

/// (G + Gᵀ)/2, exactly symmetric, and the largest `|G[i,j] − G[j,i]|` found.
///
/// xᵀ((G + Gᵀ)/2)x = xᵀGx for every x, so this never changes an objective.
pub fn symmetrise(g: &Array2<f64>) -> (Array2<f64>, f64) {
    let n = g.nrows();
    assert_eq!(n, g.ncols(), "symmetrise needs a square matrix");
    let g = g.as_standard_layout();
    let src = g.as_slice().expect("standard layout is contiguous");
    let mut max_asymmetry = 0.0f64;
    let mut sym = vec![0.0; n * n];
    // Square tiles keep both the row-wise and the column-wise side in cache.
    const TILE: usize = 64;
    for tile_i in (0..n).step_by(TILE) {
        for tile_j in (0..=tile_i).step_by(TILE) {
            for i in tile_i..(tile_i + TILE).min(n) {
                for j in tile_j..(tile_j + TILE).min(i + 1) {
                    let (a, b) = (src[i * n + j], src[j * n + i]);
                    max_asymmetry = max_asymmetry.max((a - b).abs());
                    let mean = 0.5 * (a + b);
                    sym[i * n + j] = mean;
                    sym[j * n + i] = mean;
                }
            }
        }
    }
    let sym = Array2::from_shape_vec((n, n), sym).expect("n × n entries");
    (sym, max_asymmetry)
}

/// ‖a − b‖_F of two matrices of the same shape (b = None: ‖a‖_F), with independent partial
/// sums that the compiler vectorises (a single running sum is one addition per 4 cycles).
fn frobenius_distance(a: &Array2<f64>, b: Option<&Array2<f64>>) -> f64 {
    const LANES: usize = 8;
    let a = a.as_standard_layout();
    let a = a.as_slice().expect("standard layout is contiguous");
    let b = b.map(|b| b.as_standard_layout());
    let b = b.as_ref().map(|b| b.as_slice().expect("standard layout is contiguous"));
    let mut lanes = [0.0f64; LANES];
    let mut rest = 0.0;
    match b {
        Some(b) => {
            assert_eq!(a.len(), b.len());
            let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
            for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
                rest += (x - y) * (x - y);
            }
            for (x, y) in ca.zip(cb) {
                for l in 0..LANES {
                    let d = x[l] - y[l];
                    lanes[l] += d * d;
                }
            }
        }
        None => {
            let ca = a.chunks_exact(LANES);
            rest = ca.remainder().iter().map(|x| x * x).sum();
            for x in ca {
                for l in 0..LANES {
                    lanes[l] += x[l] * x[l];
                }
            }
        }
    }
    (lanes.iter().sum::<f64>() + rest).sqrt()
}

/// Matrices whose largest entry lies outside [2^−`SCALE_EXPONENT`, 2^`SCALE_EXPONENT`] are
/// decomposed after scaling by a power of two (exact, and the eigenvectors do not change):
/// faer's Householder reflectors lose the subdiagonal of subnormal matrices (a 2 × 2 with
/// entries 1e-310 came out diagonal, and `clip` returned it unchanged; tested). Inside it the
/// bits are those of no scaling.
const SCALE_EXPONENT: i32 = 400;

/// 2^k bringing `largest` (> 0, finite) near 1, or 1 when it lies inside
/// [2^−[`SCALE_EXPONENT`], 2^[`SCALE_EXPONENT`]].
fn power_of_two_scale(largest: f64) -> f64 {
    if largest == 0.0 || !largest.is_finite() {
        return 1.0;
    }
    let exponent = largest.log2().round() as i32;
    if exponent.abs() <= SCALE_EXPONENT {
        1.0
    } else {
        // 2^1000 at most: 2^1030 (for subnormal entries) would overflow; 1e-310 comes to 1e-9.
        2f64.powi((-exponent).clamp(-1000, 1000))
    }
}

/// faer's self-adjoint eigendecomposition of `sym`: the eigenvalues in nondecreasing order, the
/// eigenvectors into `vectors` when given.
fn evd(sym: &Array2<f64>, vectors: Option<&mut Mat<f64>>, par: Par) -> Result<Vec<f64>> {
    let n = sym.nrows();
    assert_eq!(n, sym.ncols(), "the eigendecomposition needs a square matrix");
    let scale = power_of_two_scale(sym.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    let scaled;
    let sym = if scale == 1.0 {
        sym
    } else {
        scaled = sym * scale;
        &scaled
    };
    // A row-major symmetric matrix read column-major is its transpose, i.e. itself: no copy
    // (faer reads the lower triangle). Other layouts are copied to row-major first.
    let row_major = sym.as_standard_layout();
    let data = row_major.as_slice().expect("standard layout is contiguous");
    let compute = if vectors.is_some() {
        ComputeEigenvectors::Yes
    } else {
        ComputeEigenvectors::No
    };
    let mut values = Diag::<f64>::zeros(n);
    let mut buffer = MemBuffer::new(self_adjoint_evd_scratch::<f64>(n, compute, par, Default::default()));
    self_adjoint_evd(
        MatRef::from_row_major_slice(data, n, n),
        values.as_mut(),
        vectors.map(|u| u.as_mut()),
        par,
        MemStack::new(&mut buffer),
        Default::default(),
    )
    .map_err(|e| {
        Error::other(format!(
            "the eigensolver did not converge on the {n}×{n} matrix ({e:?})"
        ))
    })?;
    Ok(values.column_vector().iter().map(|l| l / scale).collect())
}

/// Eigenvalues of a symmetric matrix, in nondecreasing order.
pub fn eigenvalues(sym: &Array2<f64>, par: Par) -> Result<Vec<f64>> {
    evd(sym, None, par)
}

/// Eigenvalues (nondecreasing) and orthonormal eigenvectors (columns) of a symmetric matrix.
pub fn eigen(sym: &Array2<f64>, par: Par) -> Result<(Vec<f64>, Mat<f64>)> {
    let n = sym.nrows();
    let mut vectors = Mat::<f64>::zeros(n, n);
    let values = evd(sym, Some(&mut vectors), par)?;
    Ok((values, vectors))
}

/// The nearest PSD matrix in Frobenius norm: `sym` with its negative eigenvalues set to zero.
/// Returns it with the eigenvalues of `sym` (nondecreasing).
///
/// sym = U·Λ·Uᵀ (faer). With k negative and p positive eigenvalues, the projection is either side
/// of the same identity, whichever uses fewer eigenvectors:
///
/// - k ≤ p: sym + W₋W₋ᵀ with W₋ = U₋·diag(√−λ₋), i.e. sym minus its negative part;
/// - k > p: W₊W₊ᵀ with W₊ = U₊·diag(√λ₊), the positive part itself (PSD by construction).
///
/// W·Wᵀ is formed on the lower triangle only, then mirrored, so the output is exactly
/// symmetric. The rounding error of the product scales with the part added or kept
/// (‖W‖² ≤ ‖G‖₂), well below [`rounding_tolerance`]; the tests compare both branches with an
/// independent reconstruction.
pub fn clip(sym: Array2<f64>, par: Par) -> Result<(Array2<f64>, Vec<f64>)> {
    let n = sym.nrows();
    assert_eq!(n, sym.ncols(), "clip needs a square matrix");
    if n == 0 {
        return Ok((sym, Vec::new()));
    }
    // What faer's `self_adjoint_evd` does, in its three public steps, so that only the chosen
    // eigenvectors go through the last one: sym = Q·T·Qᵀ (Householder tridiagonalisation),
    // T = Z·Λ·Zᵀ (divide and conquer), U = Q·Z. The back-transformation U = Q·Z costs 2n² per
    // column; it runs on the min(k, p) columns used instead of all n. The same calls in the same
    // order give the eigenvalues of `eigen` bit for bit; the chosen columns agree with its columns
    // to the last bits (the blocked product is split differently for fewer columns).
    let mut sym = if sym.is_standard_layout() {
        sym
    } else {
        sym.as_standard_layout().into_owned()
    };
    let scale = power_of_two_scale(sym.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    let data = sym.as_slice().expect("standard layout is contiguous");
    // Row-major read column-major is the transpose, i.e. sym itself: one contiguous copy.
    let mut trid = MatRef::from_row_major_slice(data, n, n).transpose().to_owned();
    if scale != 1.0 {
        trid *= faer::Scale(scale);
    }
    let params: SelfAdjointEvdParams = Auto::<f64>::auto();
    let block = recommended_block_size::<f64>(n, n);
    let mut householder = Mat::<f64>::zeros(block, n - 1);
    let mut buffer = MemBuffer::new(StackReq::any_of(&[
        tridiag_in_place_scratch::<f64>(n, par, params.tridiag.into()),
        // Covers `tridiagonal_self_adjoint_evd` (a subset of the whole solver's workspace).
        self_adjoint_evd_scratch::<f64>(n, ComputeEigenvectors::Yes, par, params.into()),
        apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(n - 1, block, n),
    ]));
    let stack = MemStack::new(&mut buffer);
    tridiag_in_place(trid.as_mut(), householder.as_mut(), par, stack, params.tridiag.into());
    let diagonal = Col::<f64>::from_fn(n, |i| trid[(i, i)]);
    let subdiagonal = Col::<f64>::from_fn(n, |i| if i + 1 < n { trid[(i + 1, i)] } else { 0.0 });
    let mut scaled_values = Diag::<f64>::zeros(n);
    let mut z = Mat::<f64>::zeros(n, n);
    tridiagonal_self_adjoint_evd(
        diagonal.as_diagonal(),
        subdiagonal.as_diagonal(),
        scaled_values.as_mut(),
        Some(z.as_mut()),
        par,
        stack,
        params.into(),
    )
    .map_err(|e| {
        Error::other(format!(
            "the eigensolver did not converge on the {n}×{n} matrix ({e:?})"
        ))
    })?;
    let values: Vec<f64> = scaled_values.column_vector().iter().map(|l| l / scale).collect();

    let negatives = values.iter().take_while(|&&l| l < 0.0).count();
    let positives = values.iter().rev().take_while(|&&l| l > 0.0).count();
    let (chosen, keep_positive) = if negatives <= positives {
        (0..negatives, false)
    } else {
        (n - positives..n, true)
    };
    if chosen.is_empty() {
        // Nothing to subtract (sym is PSD), or nothing to keep (negative semidefinite).
        let out = if keep_positive { Array2::zeros((n, n)) } else { sym };
        return Ok((out, values));
    }
    // W = Q·Z[:, chosen]·diag(√|λ|), in place in Z's chosen columns.
    let mut w = z.as_mut().subcols_mut(chosen.start, chosen.len());
    apply_block_householder_sequence_on_the_left_in_place_with_conj(
        trid.as_ref().submatrix(1, 0, n - 1, n - 1),
        householder.as_ref(),
        Conj::No,
        w.as_mut().subrows_mut(1, n - 1),
        par,
        stack,
    );
    for (j, mut column) in w.as_mut().col_iter_mut().enumerate() {
        column *= faer::Scale(values[chosen.start + j].abs().sqrt());
    }
    // The output is built in place in `sym`, whose row-major storage read column-major is the
    // same symmetric matrix: its lower triangle gets W·Wᵀ (added for the negative part, in place
    // of sym for the positive part), then is mirrored, so the result is exactly symmetric.
    let data = sym.as_slice_mut().expect("standard layout is contiguous");
    triangular::matmul(
        MatMut::from_column_major_slice_mut(data, n, n),
        BlockStructure::TriangularLower,
        if keep_positive { Accum::Replace } else { Accum::Add },
        w.as_ref(),
        BlockStructure::Rectangular,
        w.as_ref().transpose(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    mirror_lower(data, n);
    Ok((sym, values))
}

/// Copy the lower triangle of a column-major n×n matrix onto its upper triangle. Square tiles
/// keep both the read and the strided write side in cache.
fn mirror_lower(data: &mut [f64], n: usize) {
    const TILE: usize = 64;
    for tile_j in (0..n).step_by(TILE) {
        for tile_i in (tile_j..n).step_by(TILE) {
            for j in tile_j..(tile_j + TILE).min(n) {
                for i in tile_i.max(j + 1)..(tile_i + TILE).min(n) {
                    data[i * n + j] = data[j * n + i];
                }
            }
        }
    }
}

/// The λ that `shift` adds to the diagonal: the smallest shift that lifts λ_min to
/// `SHIFT_MARGIN · ‖G‖₂`, i.e. max(0, margin − λ_min). For an indefinite G this is
/// −λ_min + margin; a G already positive definite beyond the margin is left unchanged.
pub fn shift_amount(spectrum: &Spectrum) -> f64 {
    let margin = SHIFT_MARGIN * spectrum.spectral_norm();
    (margin - spectrum.lambda_min).max(0.0)
}

/// `sym + λI`.
pub fn shift(mut sym: Array2<f64>, lambda: f64) -> Array2<f64> {
    sym.diag_mut().mapv_inplace(|d| d + lambda);
    sym
}

/// How many of the most negative eigenvalues a [`Projection`] lists (`psd -v` prints them).
pub const MOST_NEGATIVE_LISTED: usize = 10;

/// What a projection did, with the matrix it produced.
#[derive(Clone, Debug)]
pub struct Projection {
    /// The output matrix, exactly symmetric.
    pub matrix: Array2<f64>,
    pub method: Method,
    /// Largest `|G[i,j] − G[j,i]|` of the input.
    pub max_asymmetry: f64,
    /// Spectrum of the symmetrised input.
    pub before: Spectrum,
    /// Spectrum of the output, from the same eigendecomposition: λᵢ + λ for `shift`, max(λᵢ, 0)
    /// for `clip` (exact up to the rounding of forming the output, ≲ [`rounding_tolerance`]; the
    /// tests re-measure it). A second decomposition would double the time.
    pub after: Spectrum,
    /// The most negative eigenvalues of the symmetrised input (below −`tolerance`), ascending, at
    /// most [`MOST_NEGATIVE_LISTED`].
    pub most_negative: Vec<f64>,
    /// Sign threshold for counting negative eigenvalues ([`rounding_tolerance`] of the input).
    pub tolerance: f64,
    /// λ added to the diagonal (`shift`); 0 for the other methods.
    pub shift: f64,
    /// ‖output − input‖_F (including the symmetrisation).
    pub frobenius_moved: f64,
    /// ‖input‖_F, to put the distance in scale.
    pub frobenius_input: f64,
}

/// Apply `method` to a square matrix with finite entries.
///
/// `par` is faer's parallelism: [`parallelism()`] for the tool; for a fixed `par`, the output does
/// not depend on the machine or the size of the thread pool.
pub fn project(g: &Array2<f64>, method: Method, par: Par) -> Result<Projection> {
    match par {
        // Called from outside the rayon pool, each of faer's parallel loops is handed to the pool
        // while this thread sleeps on a lock: a wake-up and a sleep per loop, one loop per column
        // of the tridiagonalisation. Run on a pool thread, the loops are ordinary joins (N = 1,000:
        // the tridiagonalisation takes 0.055 s instead of 0.11 s on 2 cores).
        Par::Rayon(_) => rayon::scope(|_| project_on_this_thread(g, method, par)),
        Par::Seq => project_on_this_thread(g, method, par),
    }
}

fn project_on_this_thread(g: &Array2<f64>, method: Method, par: Par) -> Result<Projection> {
    let n = g.nrows();
    let (sym, max_asymmetry) = symmetrise(g);
    // The eigenvalues of the symmetrised input (nondecreasing), and the output.
    let (matrix, values, shift_lambda) = match method {
        Method::None => {
            let values = eigenvalues(&sym, par)?;
            (sym, values, 0.0)
        }
        Method::Shift => {
            let values = eigenvalues(&sym, par)?;
            let lambda = shift_amount(&Spectrum::of_sorted(&values, 0.0));
            (shift(sym, lambda), values, lambda)
        }
        Method::Clip => {
            let (out, values) = clip(sym, par)?;
            (out, values, 0.0)
        }
    };
    let tolerance = rounding_tolerance(n, Spectrum::of_sorted(&values, 0.0).spectral_norm());
    let before = Spectrum::of_sorted(&values, tolerance);
    let after = match method {
        Method::None => before,
        Method::Shift => Spectrum {
            lambda_min: before.lambda_min + shift_lambda,
            lambda_max: before.lambda_max + shift_lambda,
            negative_eigenvalues: values.partition_point(|&l| l < -tolerance - shift_lambda),
        },
        Method::Clip => Spectrum {
            lambda_min: before.lambda_min.max(0.0),
            lambda_max: before.lambda_max.max(0.0),
            negative_eigenvalues: 0,
        },
    };
    let most_negative = values[..before.negative_eigenvalues.min(MOST_NEGATIVE_LISTED)].to_vec();
    let frobenius_moved = frobenius_distance(&matrix, Some(g));
    let frobenius_input = frobenius_distance(g, None);
    Ok(Projection {
        matrix,
        method,
        max_asymmetry,
        before,
        after,
        most_negative,
        tolerance,
        shift: shift_lambda,
        frobenius_moved,
        frobenius_input,
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Axis};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Computed vs known eigenvalues, relative to max|λ|. The eigensolver is backward stable
    /// (error ≲ n·ε·‖A‖₂ ≈ 9e-15 for n ≤ 40) and building Q·diag(λ)·Qᵀ in floating point adds a
    /// perturbation of the same order; 1e-12 leaves a factor ~100 and still catches any real bug.
    const EIGENVALUE_TOL: f64 = 1e-12;
    /// Clip result vs Q·diag(max(λ, 0))·Qᵀ, entrywise, relative to max|λ|. The projector onto the
    /// negative eigenspace is accurate to about n·ε·‖A‖₂ / gap; the test spectra keep every nonzero
    /// |λ| ≥ 0.08·max|λ| (a zero eigenvalue adds nothing on either side), so that is ≲ 1e-13;
    /// 1e-10 leaves room for the two reconstructions.
    const CLIP_TOL: f64 = 1e-10;
    /// xᵀG'x − xᵀGx − λ·L on brute-force instances, relative to Σ|G| + λ·L: each objective
    /// is a sum of ≤ 400 products, rounded to ≲ 400·ε ≈ 1e-13 of that scale.
    const OBJECTIVE_TOL: f64 = 1e-12;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// A random orthogonal matrix as a product of n Householder reflections I − 2vvᵀ/vᵀv:
    /// independent of faer, orthogonal up to rounding by construction.
    fn random_orthogonal(n: usize, r: &mut ChaCha8Rng) -> Array2<f64> {
        let mut q = Array2::<f64>::eye(n);
        for _ in 0..n {
            let v = Array1::from_shape_fn(n, |_| r.random_range(-1.0..1.0));
            let vv = v.dot(&v);
            // q ← q·(I − 2vvᵀ/vᵀv)
            let qv = q.dot(&v);
            for i in 0..n {
                for j in 0..n {
                    q[[i, j]] -= 2.0 * qv[i] * v[j] / vv;
                }
            }
        }
        q
    }

    /// Q·diag(λ)·Qᵀ, exactly symmetrised.
    fn with_eigenvalues(q: &Array2<f64>, lambda: &[f64]) -> Array2<f64> {
        let scaled = q * &Array1::from(lambda.to_vec()).insert_axis(Axis(0));
        symmetrise(&scaled.dot(&q.t())).0
    }

    /// A spectrum with both signs and a gap around zero: every |λ| in [0.1, 1]·scale.
    fn gapped_spectrum(n: usize, scale: f64, r: &mut ChaCha8Rng) -> Vec<f64> {
        let mut l: Vec<f64> = (0..n)
            .map(|i| {
                let magnitude = r.random_range(0.1..1.0) * scale;
                if i % 3 == 0 {
                    -magnitude
                } else {
                    magnitude
                }
            })
            .collect();
        l.sort_by(f64::total_cmp);
        l
    }

    fn max_abs(a: &Array2<f64>) -> f64 {
        a.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    /// Textbook Cholesky: true when `a` is numerically positive definite. An independent check
    /// of PSD-ness that shares no code with the eigensolver.
    fn cholesky_succeeds(a: &Array2<f64>) -> bool {
        let n = a.nrows();
        let mut l = Array2::<f64>::zeros((n, n));
        for j in 0..n {
            let d = a[[j, j]] - (0..j).map(|k| l[[j, k]] * l[[j, k]]).sum::<f64>();
            if d <= 0.0 {
                return false;
            }
            l[[j, j]] = d.sqrt();
            for i in j + 1..n {
                l[[i, j]] = (a[[i, j]] - (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum::<f64>()) / l[[j, j]];
            }
        }
        true
    }

    /// Every method reports the spectrum of a matrix built from known eigenvalues: λ_min, λ_max,
    /// the count below −tolerance (two eigenvalues of ±1e-16·scale, far inside the tolerance,
    /// count as zero whatever sign they come out with) and the most negative ones, listed.
    #[test]
    fn every_method_reports_the_known_spectrum() {
        let mut r = rng(8);
        for (n, scale) in [(1, 2.0), (2, 0.5), (31, 2.0), (150, 3e-3)] {
            let mut lambda = gapped_spectrum(n, scale, &mut r);
            if n > 2 {
                lambda[n / 2] = 1e-16 * scale;
                lambda[n / 2 + 1] = -1e-16 * scale;
                lambda.sort_by(f64::total_cmp);
            }
            let g = with_eigenvalues(&random_orthogonal(n, &mut r), &lambda);
            let negatives = lambda.iter().filter(|&&l| l < -1e-16 * scale).count();
            for method in [Method::None, Method::Shift, Method::Clip] {
                let p = project(&g, method, Par::Seq).unwrap();
                assert!((p.before.lambda_min - lambda[0]).abs() <= EIGENVALUE_TOL * scale);
                assert!((p.before.lambda_max - lambda[n - 1]).abs() <= EIGENVALUE_TOL * scale);
                assert_eq!(p.before.negative_eigenvalues, negatives, "{method}, n = {n}");
                assert_eq!(
                    p.most_negative.len(),
                    negatives.min(MOST_NEGATIVE_LISTED),
                    "{method}, n = {n}"
                );
                for (c, l) in p.most_negative.iter().zip(&lambda) {
                    assert!((c - l).abs() <= EIGENVALUE_TOL * scale, "{method}, n = {n}: {c} vs {l}");
                }
            }
        }
    }

    /// Known spectra at 1e-170 and 1e170 too, where the squares of the entries underflow or
    /// overflow (the power-of-two scaling brings them back into range).
    #[test]
    fn eigenvalues_match_a_matrix_built_from_known_ones() {
        for (seed, n, scale) in [
            (1, 5, 1.0),
            (2, 17, 3e-3),
            (3, 40, 250.0),
            (21, 60, 1e-170),
            (22, 90, 1e170),
        ] {
            let mut r = rng(seed);
            let lambda = gapped_spectrum(n, scale, &mut r);
            let a = with_eigenvalues(&random_orthogonal(n, &mut r), &lambda);
            let computed = eigenvalues(&a, Par::Seq).unwrap();
            for (c, l) in computed.iter().zip(&lambda) {
                assert!((c - l).abs() <= EIGENVALUE_TOL * scale, "seed {seed}: {c} vs {l}");
            }
            let (values, vectors) = eigen(&a, Par::Seq).unwrap();
            assert_eq!(values, computed, "values with and without vectors");
            // A·U = U·diag(λ) column by column.
            for j in 0..n {
                for i in 0..n {
                    let au: f64 = (0..n).map(|k| a[[i, k]] * vectors[(k, j)]).sum();
                    assert!((au - values[j] * vectors[(i, j)]).abs() <= EIGENVALUE_TOL * scale);
                }
            }
        }
    }

    #[test]
    fn clip_matches_the_independent_projection() {
        for (seed, n, scale) in [(4, 6, 1.0), (5, 24, 0.02), (6, 40, 7.0)] {
            let mut r = rng(seed);
            let lambda = gapped_spectrum(n, scale, &mut r);
            let q = random_orthogonal(n, &mut r);
            let a = with_eigenvalues(&q, &lambda);
            let clipped: Vec<f64> = lambda.iter().map(|l| l.max(0.0)).collect();
            let expected = with_eigenvalues(&q, &clipped);
            let p = project(&a, Method::Clip, Par::Seq).unwrap();
            let err = max_abs(&(&p.matrix - &expected));
            assert!(err <= CLIP_TOL * scale, "seed {seed}: max entry error {err:e}");
            assert_eq!(p.matrix, p.matrix.t(), "clip output is exactly symmetric");
            let negatives = lambda.iter().filter(|&&l| l < 0.0).count();
            assert_eq!(p.before.negative_eigenvalues, negatives);
            assert_eq!(p.after.negative_eigenvalues, 0);
            assert!((p.before.lambda_min - lambda[0]).abs() <= EIGENVALUE_TOL * scale);
            assert!((p.after.lambda_max - lambda[n - 1]).abs() <= EIGENVALUE_TOL * scale);
            // Nearest PSD matrix: it moved exactly the norm of the negative part.
            let negative_norm = lambda.iter().filter(|&&l| l < 0.0).map(|l| l * l).sum::<f64>().sqrt();
            assert!((p.frobenius_moved - negative_norm).abs() <= CLIP_TOL * scale);
        }
    }

    /// `clip` subtracts the negative part when at most half the eigenvalues are negative and keeps
    /// the positive part otherwise: both branches, clusters of equal eigenvalues on either side and
    /// across zero, exact zeros, k = 0 and k = N, against Q·diag(max(λ, 0))·Qᵀ. N = 150 is above
    /// faer's threshold for divide and conquer (128), the others below it.
    #[test]
    fn clip_matches_the_independent_projection_on_both_branches_and_in_clusters() {
        let repeat = |parts: &[(f64, usize)]| -> Vec<f64> {
            parts
                .iter()
                .flat_map(|&(l, count)| std::iter::repeat_n(l, count))
                .collect()
        };
        let mut r = rng(12);
        let cases = [
            (
                "one negative",
                [vec![-0.7], gapped_spectrum(29, 1.0, &mut r).split_off(10)].concat(),
            ),
            ("two thirds negative", {
                let mut l: Vec<f64> = gapped_spectrum(60, 1.0, &mut r).iter().map(|l| -l).collect();
                l.sort_by(f64::total_cmp);
                l
            }),
            (
                "clusters, few negative",
                repeat(&[(-2.0, 5), (-0.5, 3), (0.0, 2), (1.0, 12), (4.0, 8)]),
            ),
            (
                "clusters, mostly negative",
                repeat(&[(-3.0, 9), (-1.0, 10), (0.0, 3), (0.25, 4), (2.0, 4)]),
            ),
            ("half negative, N = 150", gapped_spectrum(150, 1.0, &mut r)),
            ("k = N", repeat(&[(-1.5, 7), (-0.2, 6)])),
            ("k = 0 with zeros", repeat(&[(0.0, 4), (0.3, 5), (2.0, 3)])),
            ("1×1 negative", vec![-3.0]),
            ("1×1 positive", vec![2.0]),
        ];
        for (name, lambda) in cases {
            let n = lambda.len();
            let scale = lambda.iter().fold(0.0f64, |m, l| m.max(l.abs()));
            let q = random_orthogonal(n, &mut r);
            let a = with_eigenvalues(&q, &lambda);
            let clipped: Vec<f64> = lambda.iter().map(|l| l.max(0.0)).collect();
            let expected = with_eigenvalues(&q, &clipped);
            let p = project(&a, Method::Clip, Par::Seq).unwrap();
            let err = max_abs(&(&p.matrix - &expected));
            assert!(err <= CLIP_TOL * scale, "{name}: max entry error {err:e}");
            assert_eq!(p.matrix, p.matrix.t(), "{name}: exactly symmetric");
            let mut sorted = lambda.clone();
            sorted.sort_by(f64::total_cmp);
            let negatives = lambda.iter().filter(|&&l| l < 0.0).count();
            assert_eq!(p.most_negative.len(), negatives.min(MOST_NEGATIVE_LISTED), "{name}");
            for (c, l) in p.most_negative.iter().zip(&sorted) {
                assert!((c - l).abs() <= EIGENVALUE_TOL * scale, "{name}: eigenvalue {c} vs {l}");
            }
            assert_eq!(p.before.negative_eigenvalues, negatives, "{name}");
            assert_eq!(p.after.negative_eigenvalues, 0, "{name}");
            let negative_norm = lambda.iter().filter(|&&l| l < 0.0).map(|l| l * l).sum::<f64>().sqrt();
            assert!((p.frobenius_moved - negative_norm).abs() <= CLIP_TOL * scale, "{name}");
        }
    }

    /// Wigner-like matrices: symmetric, entries uniform in [−1, 1)·scale, strongly indefinite.
    fn random_symmetric(n: usize, scale: f64, r: &mut ChaCha8Rng) -> Array2<f64> {
        let a = Array2::from_shape_fn((n, n), |_| r.random_range(-1.0..1.0) * scale);
        symmetrise(&a).0
    }

    #[test]
    fn outputs_are_psd_up_to_the_rounding_tolerance() {
        for (seed, n, scale) in [(7, 3, 1.0), (8, 30, 1e-4), (9, 120, 1e3)] {
            let g = random_symmetric(n, scale, &mut rng(seed));
            for method in [Method::Clip, Method::Shift] {
                let p = project(&g, method, Par::Seq).unwrap();
                // The output's scale: ‖G + λI‖₂ ≤ 2‖G‖₂.
                let norm = p.before.spectral_norm().max(p.after.spectral_norm());
                let tolerance = rounding_tolerance(n, norm);
                assert!(p.before.lambda_min < 0.0, "the test matrix should be indefinite");
                // Re-measure the output: the report's `after` is derived, this is not.
                let measured = Spectrum::of_sorted(&eigenvalues(&p.matrix, Par::Seq).unwrap(), tolerance);
                assert!(
                    measured.lambda_min >= -tolerance,
                    "{method}: λ_min {:e}",
                    measured.lambda_min
                );
                assert_eq!(measured.negative_eigenvalues, 0);
                assert!(
                    (measured.lambda_min - p.after.lambda_min).abs() <= tolerance,
                    "{method}: derived λ_min"
                );
                assert!(
                    (measured.lambda_max - p.after.lambda_max).abs() <= tolerance,
                    "{method}: derived λ_max {:e} vs {:e}, tol {tolerance:e}",
                    p.after.lambda_max,
                    measured.lambda_max
                );
                // Independently of the eigensolver: adding the tolerance makes it definite.
                let lifted = shift(p.matrix.clone(), 2.0 * tolerance + f64::MIN_POSITIVE);
                assert!(cholesky_succeeds(&lifted), "{method}, seed {seed}");
            }
            // The shift margin makes it strictly positive definite, as measured and by Cholesky.
            let p = project(&g, Method::Shift, Par::Seq).unwrap();
            let margin = SHIFT_MARGIN * p.before.spectral_norm();
            assert_eq!(p.shift, margin - p.before.lambda_min);
            assert!(eigenvalues(&p.matrix, Par::Seq).unwrap()[0] > 0.0);
            assert!(cholesky_succeeds(&p.matrix));
            assert!((p.after.lambda_min - margin).abs() <= rounding_tolerance(n, p.before.spectral_norm()));
        }
    }

    #[test]
    fn shift_leaves_a_positive_definite_matrix_alone() {
        let mut r = rng(10);
        let lambda: Vec<f64> = (0..12).map(|i| 0.5 + i as f64).collect();
        let a = with_eigenvalues(&random_orthogonal(12, &mut r), &lambda);
        let p = project(&a, Method::Shift, Par::Seq).unwrap();
        assert_eq!(p.shift, 0.0);
        assert_eq!(p.matrix, a);
        assert_eq!(p.frobenius_moved, 0.0);
        let p = project(&a, Method::Clip, Par::Seq).unwrap();
        assert_eq!(p.matrix, a, "clip of a positive definite matrix changes nothing");
    }

    #[test]
    fn symmetrise_averages_and_reports_the_asymmetry() {
        let g = ndarray::array![[1.0, 2.0, -1.0], [4.0, 0.5, 0.0], [-1.0, 3.0, -2.0]];
        let (sym, asymmetry) = symmetrise(&g);
        assert_eq!(
            sym,
            ndarray::array![[1.0, 3.0, -1.0], [3.0, 0.5, 1.5], [-1.0, 1.5, -2.0]]
        );
        assert_eq!(asymmetry, 3.0);
        let p = project(&g, Method::None, Par::Seq).unwrap();
        assert_eq!(p.matrix, sym);
        assert_eq!(p.max_asymmetry, 3.0);
        assert_eq!(p.before, p.after);
        // (G + Gᵀ)/2 has the same quadratic form: xᵀGx for a few x (exact in binary here).
        for x in [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]] {
            let x = Array1::from(x.to_vec());
            assert_eq!(x.dot(&g.dot(&x)), x.dot(&sym.dot(&x)));
        }
        let moved = (2.0f64 * 1.0 + 2.0 * 1.5 * 1.5).sqrt();
        assert!(
            (p.frobenius_moved - moved).abs() <= 1e-15,
            "only the two asymmetric pairs move"
        );
    }

    /// A random allocation instance: layers with 2–4 options each (ragged), G with the matrix
    /// convention (same-layer off-diagonals 0), a cost per variable.
    struct Instance {
        layer_of: Vec<usize>,
        options: Vec<usize>,
        g: Array2<f64>,
        cost: Vec<f64>,
    }

    fn random_instance(seed: u64) -> Instance {
        let mut r = rng(seed);
        let layers = r.random_range(3..=5);
        let options: Vec<usize> = (0..layers).map(|_| r.random_range(2..=4)).collect();
        let layer_of: Vec<usize> = options
            .iter()
            .enumerate()
            .flat_map(|(l, &k)| std::iter::repeat_n(l, k))
            .collect();
        let n = layer_of.len();
        let mut g = Array2::<f64>::zeros((n, n));
        for u in 0..n {
            g[[u, u]] = r.random_range(-0.2..1.0);
            for v in 0..u {
                if layer_of[u] != layer_of[v] {
                    let w = r.random_range(-0.5..0.5);
                    g[[u, v]] = w;
                    g[[v, u]] = w;
                }
            }
        }
        let cost = (0..n).map(|_| r.random_range(1.0..10.0)).collect();
        Instance {
            layer_of,
            options,
            g,
            cost,
        }
    }

    impl Instance {
        /// Every one-hot choice: one option index per layer, as the variables chosen.
        fn choices(&self) -> Vec<Vec<usize>> {
            let mut all = vec![vec![]];
            let mut first = 0;
            for &k in &self.options {
                all = all
                    .into_iter()
                    .flat_map(|c: Vec<usize>| (0..k).map(move |o| [c.clone(), vec![first + o]].concat()))
                    .collect();
                first += k;
            }
            all
        }

        fn objective(m: &Array2<f64>, chosen: &[usize]) -> f64 {
            chosen
                .iter()
                .flat_map(|&u| chosen.iter().map(move |&v| m[[u, v]]))
                .sum()
        }

        fn cost(&self, chosen: &[usize]) -> f64 {
            chosen.iter().map(|&v| self.cost[v]).sum()
        }
    }

    fn argmin(choices: &[Vec<usize>], f: impl Fn(&[usize]) -> f64) -> Option<&Vec<usize>> {
        choices.iter().min_by(|a, b| f(a).total_cmp(&f(b)))
    }

    #[test]
    fn shift_keeps_the_argmin_over_one_hot_choices_with_and_without_budgets() {
        for seed in 0..12 {
            let inst = random_instance(100 + seed);
            let p = project(&inst.g, Method::Shift, Par::Seq).unwrap();
            assert!(
                p.before.lambda_min < 0.0,
                "seed {seed}: the instance should be indefinite"
            );
            let layers = inst.options.len();
            assert_eq!(
                inst.layer_of.iter().collect::<std::collections::BTreeSet<_>>().len(),
                layers
            );
            let offset = p.shift * layers as f64;
            let scale = inst.g.iter().map(|v| v.abs()).sum::<f64>() + offset;
            let choices = inst.choices();
            for c in &choices {
                let moved = Instance::objective(&p.matrix, c) - Instance::objective(&inst.g, c);
                assert!(
                    (moved - offset).abs() <= OBJECTIVE_TOL * scale,
                    "seed {seed}: offset {moved} vs λ·L {offset}"
                );
            }
            let mut costs: Vec<f64> = choices.iter().map(|c| inst.cost(c)).collect();
            costs.sort_by(f64::total_cmp);
            // No budget, then budgets that leave about 3/4, 1/2 and 1/10 of the choices feasible.
            for limit in [
                f64::INFINITY,
                costs[costs.len() * 3 / 4],
                costs[costs.len() / 2],
                costs[costs.len() / 10],
            ] {
                let feasible: Vec<Vec<usize>> = choices.iter().filter(|c| inst.cost(c) <= limit).cloned().collect();
                let before = argmin(&feasible, |c| Instance::objective(&inst.g, c));
                let after = argmin(&feasible, |c| Instance::objective(&p.matrix, c));
                assert_eq!(before, after, "seed {seed}, budget {limit}");
            }
        }
    }

    #[test]
    fn clip_can_change_the_argmin_which_is_why_shift_is_the_default() {
        let changed = (0..200).find(|&seed| {
            let inst = random_instance(1000 + seed);
            let p = project(&inst.g, Method::Clip, Par::Seq).unwrap();
            let choices = inst.choices();
            argmin(&choices, |c| Instance::objective(&inst.g, c))
                != argmin(&choices, |c| Instance::objective(&p.matrix, c))
        });
        assert!(
            changed.is_some(),
            "no instance among 200 where clip moves the minimiser"
        );
    }

    #[test]
    fn output_bits_do_not_depend_on_the_thread_pool() {
        // N = 400 is above faer's threshold for parallel tridiagonalisation (≈ 314).
        let g = random_symmetric(400, 1.0, &mut rng(11));
        // Shifted by ∓5 (λ spans about ±23), clip takes each of its branches.
        let cases = [
            (Method::Shift, g.clone()),
            (Method::Clip, shift(g.clone(), -5.0)),
            (Method::Clip, shift(g.clone(), 5.0)),
        ];
        let negatives = |g: &Array2<f64>| eigenvalues(g, Par::Seq).unwrap().iter().filter(|&&l| l < 0.0).count();
        assert!(negatives(&cases[1].1) > 200 && negatives(&cases[2].1) < 200);
        for (method, g) in cases {
            let in_pool = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| project(&g, method, parallelism()).unwrap().matrix)
            };
            let one = in_pool(1);
            assert!(
                one == in_pool(2) && one == in_pool(3),
                "{method}: the bits depend on the pool size"
            );
        }
    }

    #[test]
    fn spectrum_counts_negatives_beyond_the_tolerance_only() {
        let s = Spectrum::of_sorted(&[-2.0, -1e-17, 0.0, 3.0], 1e-15);
        assert_eq!(
            s,
            Spectrum {
                lambda_min: -2.0,
                lambda_max: 3.0,
                negative_eigenvalues: 1
            }
        );
        assert_eq!(s.spectral_norm(), 3.0);
        assert_eq!(shift_amount(&s), 2.0 + SHIFT_MARGIN * 3.0);
    }

    /// V·diag(max(λ, 0))·Vᵀ from faer's whole eigensolver: the reference for matrices whose
    /// spectrum the test does not know in advance.
    fn reference_clip(a: &Array2<f64>) -> Array2<f64> {
        let (values, vectors) = eigen(a, Par::Seq).unwrap();
        let n = a.nrows();
        Array2::from_shape_fn((n, n), |(i, j)| {
            (0..n)
                .map(|k| vectors[(i, k)] * values[k].max(0.0) * vectors[(j, k)])
                .sum()
        })
    }

    /// Above faer's threshold for divide and conquer (N = 128), on both branches of `clip`: its
    /// eigenvalues are `eigen`'s bit for bit (the same faer calls), and its output, sequential or
    /// on the rayon pool from outside it (as the tool runs), is the projection built from the
    /// known spectrum.
    #[test]
    fn clip_past_the_divide_and_conquer_threshold_matches_eigen_and_the_known_projection() {
        let mut r = rng(50);
        // A third of `gapped_spectrum` is negative: k < p as it is, k > p negated.
        for sign in [1.0, -1.0] {
            let mut lambda: Vec<f64> = gapped_spectrum(200, 2.0, &mut r).iter().map(|l| sign * l).collect();
            lambda.sort_by(f64::total_cmp);
            let q = random_orthogonal(200, &mut r);
            let a = with_eigenvalues(&q, &lambda);
            let expected = with_eigenvalues(&q, &lambda.iter().map(|l| l.max(0.0)).collect::<Vec<_>>());
            let (out, values) = clip(a.clone(), Par::Seq).unwrap();
            assert_eq!(values, eigen(&a, Par::Seq).unwrap().0, "sign {sign}");
            let parallel = project(&a, Method::Clip, parallelism()).unwrap().matrix;
            for (how, m) in [("sequential", out), ("parallel", parallel)] {
                let err = max_abs(&(&m - &expected));
                assert!(err <= CLIP_TOL * 2.0, "sign {sign}, {how}: max entry error {err:e}");
            }
        }
    }

    /// Spectra like CLADO's: clusters of eigenvalues 1e-9 apart (20 and 80 of them), exactly
    /// repeated ones, and many small negative eigenvalues next to a few large positive ones.
    #[test]
    fn clip_is_accurate_on_clusters_and_small_eigenvalues() {
        let mut r = rng(32);
        let mut cases = Vec::new();
        for count in [20, 80] {
            let mut lambda: Vec<f64> = (0..count).map(|k| -1.0 - 1e-9 * k as f64).collect();
            lambda.extend(gapped_spectrum(60, 2.0, &mut r).iter().map(|l| l.abs()));
            cases.push((format!("{count} close"), lambda));
        }
        let repeated = [vec![-2.0; 6], vec![-0.5; 4], gapped_spectrum(30, 3.0, &mut r)].concat();
        cases.push(("repeated".into(), repeated));
        // 90 negative eigenvalues in [−0.05, −0.001]·8, the rest positive in [0.1, 8].
        let small: Vec<f64> = (0..300)
            .map(|k| {
                if k < 90 {
                    -8.0 * r.random_range(0.001..0.05)
                } else {
                    8.0 * r.random_range(0.0125..1.0)
                }
            })
            .collect();
        cases.push(("small negatives".into(), small));
        for (name, mut lambda) in cases {
            lambda.sort_by(f64::total_cmp);
            let n = lambda.len();
            let q = random_orthogonal(n, &mut r);
            let a = with_eigenvalues(&q, &lambda);
            let expected = with_eigenvalues(&q, &lambda.iter().map(|l| l.max(0.0)).collect::<Vec<_>>());
            let p = project(&a, Method::Clip, Par::Seq).unwrap();
            let err = max_abs(&(&p.matrix - &expected));
            let scale = lambda[0].abs().max(lambda[n - 1].abs());
            assert!(err <= CLIP_TOL * scale, "{name}: clip error {err:e}");
            let negatives = lambda.iter().filter(|&&l| l < 0.0).count();
            assert_eq!(p.before.negative_eigenvalues, negatives, "{name}");
        }
    }

    /// Extreme magnitudes: a graded matrix (entries 1e-150 next to 1), subnormal entries (1e-310,
    /// where relative accuracy is gone), entries near 1e±170 (whose squares underflow or
    /// overflow), and the zero matrix, under every method.
    #[test]
    fn every_method_survives_graded_tiny_huge_and_zero_matrices() {
        // Graded, already tridiagonal: eigenvalues −1, 0, 1 up to ~1e-150.
        let graded = ndarray::array![[0.0, 1e-150, 0.0], [1e-150, 0.0, 1.0], [0.0, 1.0, -9.999999999e-151]];
        let values = eigenvalues(&graded, Par::Seq).unwrap();
        for (c, l) in values.iter().zip([-1.0, 0.0, 1.0]) {
            assert!((c - l).abs() <= EIGENVALUE_TOL, "graded: {c} vs {l}");
        }
        let (out, _) = clip(graded.clone(), Par::Seq).unwrap();
        let err = max_abs(&(&out - &reference_clip(&graded)));
        assert!(err <= CLIP_TOL, "graded: max entry error {err:e}");

        // Subnormal: eigenvalues ±1e-310, the projection [[1, 1], [1, 1]]·0.5e-310. Relative
        // accuracy is gone down there (53 bits become a few), so the check is that it ends with
        // the right matrix to within a tenth of the scale.
        let tiny = Array2::from_shape_vec((2, 2), vec![0.0, 1e-310, 1e-310, 0.0]).unwrap();
        let (out, _) = clip(tiny, Par::Seq).unwrap();
        for v in out.iter() {
            assert!((v - 0.5e-310).abs() <= 1e-311, "subnormal: {out:?}");
        }

        // Every method on the zero matrix (the scaling's guard), and the spectrum of
        // [[0, s], [s, 0]] (eigenvalues ±s) at 1e-170 and 1e-310.
        for method in [Method::None, Method::Shift, Method::Clip] {
            let p = project(&Array2::zeros((3, 3)), method, Par::Seq).unwrap();
            assert_eq!((p.before.lambda_min, p.before.lambda_max), (0.0, 0.0), "{method}");
            assert_eq!(p.matrix, Array2::<f64>::zeros((3, 3)), "{method}");
            for scale in [1e-170, 1e-310] {
                let a = Array2::from_shape_vec((2, 2), vec![0.0, scale, scale, 0.0]).unwrap();
                let p = project(&a, method, Par::Seq).unwrap();
                let (low, high) = (p.before.lambda_min, p.before.lambda_max);
                assert!(
                    (low + scale).abs() <= 1e-3 * scale && (high - scale).abs() <= 1e-3 * scale,
                    "{method} at {scale:e}: λ in [{low:e}, {high:e}]"
                );
                assert_eq!(p.before.negative_eigenvalues, 1, "{method} at {scale:e}");
            }
        }
        // Clip at 1e±170 against the matrix built from its known spectrum.
        for scale in [1e-170, 1e170] {
            let mut r = rng(40);
            let lambda = gapped_spectrum(30, scale, &mut r);
            let q = random_orthogonal(30, &mut r);
            let a = with_eigenvalues(&q, &lambda);
            let expected = with_eigenvalues(&q, &lambda.iter().map(|l| l.max(0.0)).collect::<Vec<_>>());
            let (out, _) = clip(a, Par::Seq).unwrap();
            let err = max_abs(&(&out - &expected));
            assert!(err <= CLIP_TOL * scale, "scale {scale:e}: max entry error {err:e}");
        }
    }
}
