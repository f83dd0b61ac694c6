//! The projections themselves: symmetrise, find the spectrum, clip or shift it.
//!
//! Everything here works on in-memory matrices, so unit tests can check it against independent
//! computations; [`crate::run`] adds the files and the report around it.
//!
//! Every method starts with faer's Householder tridiagonalisation G = Q·T·Qᵀ. `none` and `shift`
//! need only λ_min, λ_max, the count below the tolerance and the few most negative eigenvalues,
//! which bisection on T's Sturm counts gives in O(n) each ([`Sturm`]); `clip` runs faer's divide
//! and conquer on T for all eigenpairs and carries only the eigenvectors it needs back through
//! the Householder reflectors. Both are backward stable: the computed eigenvalues are the exact
//! ones of a matrix within about n·ε·‖G‖₂ of G, which is where [`rounding_tolerance`] comes
//! from. [`eigenvalues`] and [`eigen`] (faer's whole eigensolver) serve the tests as an
//! independent computation.

use clado::{Error, Result};
use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
use faer::linalg::evd::{
    self_adjoint_evd, self_adjoint_evd_scratch, tridiagonal_self_adjoint_evd, ComputeEigenvectors,
};
use faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_with_conj;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::{Accum, Col, Conj, Mat, MatMut, MatRef, Par};
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
/// the parts in a fixed order: the output is bit-identical on every machine and thread-pool size
/// (tested), while 2+ cores still share the work. 4 balances a 2-core machine (the tasks share 2
/// threads evenly) against larger ones.
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

/// (G + Gᵀ)/2, exactly symmetric, and the largest |G[i,j] − G[j,i]| found.
///
/// xᵀ((G + Gᵀ)/2)x = xᵀGx for every x, so this never changes an objective.
pub fn symmetrise(g: &Array2<f64>) -> (Array2<f64>, f64) {
    let n = g.nrows();
    assert_eq!(n, g.ncols(), "symmetrise needs a square matrix");
    let mut max_asymmetry = 0.0f64;
    let mut sym = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        sym[[i, i]] = g[[i, i]];
        for j in 0..i {
            let (a, b) = (g[[i, j]], g[[j, i]]);
            max_asymmetry = max_asymmetry.max((a - b).abs());
            let mean = 0.5 * (a + b);
            sym[[i, j]] = mean;
            sym[[j, i]] = mean;
        }
    }
    (sym, max_asymmetry)
}

/// faer's self-adjoint eigendecomposition of `sym` (eigenvectors into `vectors` when given).
fn evd(sym: &Array2<f64>, vectors: Option<&mut Mat<f64>>, par: Par) -> Result<Vec<f64>> {
    let n = sym.nrows();
    assert_eq!(n, sym.ncols(), "the eigendecomposition needs a square matrix");
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
    Ok(values.column_vector().iter().copied().collect())
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

/// sym = Q·T·Qᵀ by faer's Householder reduction: T's diagonal and subdiagonal, and the
/// reflectors of Q stored below them in `reduced` with their block factors.
struct Reduction {
    reduced: Mat<f64>,
    reflector_factors: Mat<f64>,
    diagonal: Col<f64>,
    subdiagonal: Col<f64>,
}

/// Reduce `sym` (n ≥ 1) to tridiagonal form. `stack` needs `tridiag_in_place_scratch`.
fn reduce(sym: &Array2<f64>, par: Par, stack: &mut MemStack) -> Reduction {
    let n = sym.nrows();
    // faer reads the lower triangle; row-major read column-major is the transpose, i.e. sym.
    let row_major = sym.as_standard_layout();
    let data = row_major.as_slice().expect("standard layout is contiguous");
    let mut reduced = Mat::<f64>::zeros(n, n);
    reduced
        .as_mut()
        .copy_from_triangular_lower(MatRef::from_row_major_slice(data, n, n));
    let block = recommended_block_size::<f64>(n, n);
    let mut reflector_factors = Mat::<f64>::zeros(block, n - 1);
    tridiag_in_place(
        reduced.as_mut(),
        reflector_factors.as_mut(),
        par,
        stack,
        Default::default(),
    );
    let diagonal = Col::<f64>::from_fn(n, |i| reduced[(i, i)]);
    let subdiagonal = Col::<f64>::from_fn(n, |i| if i + 1 < n { reduced[(i + 1, i)] } else { 0.0 });
    Reduction {
        reduced,
        reflector_factors,
        diagonal,
        subdiagonal,
    }
}

/// The eigenvalues of a symmetric tridiagonal matrix one at a time, by bisection on Sturm
/// counts: the number of eigenvalues below x is the number of negative pivots of T − xI
/// (Sylvester's law of inertia). `none` and `shift` need only λ_min, λ_max, the count below
/// −tolerance and the few most negative: a handful of O(n) counts each, where all n
/// eigenvalues by the QR algorithm took 0.10 s at N = 2,000. Bisection on Sturm counts is
/// backward stable (each eigenvalue is exact for a T perturbed by a few ε·‖T‖), far inside
/// [`rounding_tolerance`].
pub struct Sturm {
    diagonal: Vec<f64>,
    /// Squared subdiagonal: e²[i] couples rows i and i + 1.
    off_squared: Vec<f64>,
    /// Pivots are kept at least this far from zero (LAPACK's pivmin).
    pivot_min: f64,
    /// Gershgorin bounds: every eigenvalue lies in [lower, upper].
    lower: f64,
    upper: f64,
}

impl Sturm {
    /// The symmetric tridiagonal matrix with this diagonal and subdiagonal (n − 1 entries used).
    pub fn new(diagonal: &[f64], subdiagonal: &[f64]) -> Self {
        let n = diagonal.len();
        let off_squared: Vec<f64> = (0..n.saturating_sub(1))
            .map(|i| subdiagonal[i] * subdiagonal[i])
            .collect();
        let pivot_min = f64::MIN_POSITIVE * off_squared.iter().copied().fold(1.0, f64::max);
        let radius = |i: usize| {
            let left = if i > 0 { subdiagonal[i - 1].abs() } else { 0.0 };
            let right = if i + 1 < n { subdiagonal[i].abs() } else { 0.0 };
            left + right
        };
        let (mut lower, mut upper) = (f64::INFINITY, f64::NEG_INFINITY);
        for (i, &d) in diagonal.iter().enumerate() {
            lower = lower.min(d - radius(i));
            upper = upper.max(d + radius(i));
        }
        // Room for the rounding of the counts at the ends.
        let slack = 2.0 * f64::EPSILON * n as f64 * lower.abs().max(upper.abs()) + pivot_min;
        Sturm {
            diagonal: diagonal.to_vec(),
            off_squared,
            pivot_min,
            lower: lower - slack,
            upper: upper + slack,
        }
    }

    pub fn len(&self) -> usize {
        self.diagonal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diagonal.is_empty()
    }

    /// How many eigenvalues are below `x` (one equal to x may count either way: a zero pivot is
    /// taken as −pivot_min).
    pub fn count_below(&self, x: f64) -> usize {
        let mut count = 0;
        let mut pivot = 1.0;
        for (i, &d) in self.diagonal.iter().enumerate() {
            let coupling = if i > 0 { self.off_squared[i - 1] / pivot } else { 0.0 };
            pivot = d - x - coupling;
            if pivot.abs() < self.pivot_min {
                pivot = -self.pivot_min;
            }
            count += usize::from(pivot < 0.0);
        }
        count
    }

    /// The k-th smallest eigenvalue (k = 0 is λ_min), to a few ε of the largest |λ|.
    pub fn eigenvalue(&self, k: usize) -> f64 {
        assert!(k < self.len(), "eigenvalue {k} of a {0}×{0} matrix", self.len());
        let (mut lo, mut hi) = (self.lower, self.upper);
        // Each step halves [lo, hi]; 2,100 steps would take it from f64::MAX to below a
        // subnormal, so the cap only guards against a NaN entry.
        for _ in 0..2100 {
            let width = hi - lo;
            if width <= 2.0 * f64::EPSILON * lo.abs().max(hi.abs()) + self.pivot_min {
                break;
            }
            let mid = lo + 0.5 * width;
            if mid <= lo || mid >= hi {
                break;
            }
            if self.count_below(mid) > k {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        lo + 0.5 * (hi - lo)
    }
}

/// The tridiagonal form of `sym` for eigenvalues by [`Sturm`] (no eigenvectors).
pub fn sturm(sym: &Array2<f64>, par: Par) -> Sturm {
    let n = sym.nrows();
    assert_eq!(n, sym.ncols(), "the eigenvalues need a square matrix");
    if n == 0 {
        return Sturm::new(&[], &[]);
    }
    let mut buffer = MemBuffer::new(tridiag_in_place_scratch::<f64>(n, par, Default::default()));
    let t = reduce(sym, par, MemStack::new(&mut buffer));
    let diagonal: Vec<f64> = t.diagonal.iter().copied().collect();
    let subdiagonal: Vec<f64> = t.subdiagonal.iter().copied().collect();
    Sturm::new(&diagonal, &subdiagonal)
}

/// The nearest PSD matrix in Frobenius norm: `sym` with its negative eigenvalues set to zero.
/// Returns it with the eigenvalues of `sym` (nondecreasing).
///
/// sym = Q·T·Qᵀ (Householder tridiagonalisation), T = Z·Λ·Zᵀ (divide and conquer), and the
/// eigenvectors of sym are U = Q·Z. With k negative and p positive eigenvalues, the projection is
/// either side of the same identity, whichever needs fewer eigenvectors:
///
/// - k ≤ p: sym + W₋W₋ᵀ with W₋ = U₋·diag(√−λ₋), i.e. sym minus its negative part;
/// - k > p: W₊W₊ᵀ with W₊ = U₊·diag(√λ₊), the positive part itself (PSD by construction).
///
/// Only those m = min(k, p) columns of Z are carried back through the reflectors (2n²m flops
/// instead of 2n³) and W·Wᵀ is formed on the lower triangle only (n²m), then mirrored, so the
/// output is exactly symmetric. The rounding error of the product scales with the part added or
/// kept (‖W‖² ≤ ‖G‖₂), well below [`rounding_tolerance`]; the tests compare both branches with an
/// independent reconstruction.
pub fn clip(sym: Array2<f64>, par: Par) -> Result<(Array2<f64>, Vec<f64>)> {
    let n = sym.nrows();
    assert_eq!(n, sym.ncols(), "clip needs a square matrix");
    if n == 0 {
        return Ok((sym, Vec::new()));
    }
    // faer's workspace for the whole decomposition: enough for each of the steps below in turn.
    let mut buffer = MemBuffer::new(self_adjoint_evd_scratch::<f64>(
        n,
        ComputeEigenvectors::Yes,
        par,
        Default::default(),
    ));
    let stack = MemStack::new(&mut buffer);

    let Reduction {
        reduced,
        reflector_factors,
        diagonal,
        subdiagonal,
    } = reduce(&sym, par, stack);

    // T = Z·Λ·Zᵀ.
    let mut values = Diag::<f64>::zeros(n);
    let mut z = Mat::<f64>::zeros(n, n);
    tridiagonal_self_adjoint_evd(
        diagonal.as_diagonal(),
        subdiagonal.as_diagonal(),
        values.as_mut(),
        Some(z.as_mut()),
        par,
        stack,
        Default::default(),
    )
    .map_err(|e| {
        Error::other(format!(
            "the eigensolver did not converge on the {n}×{n} matrix ({e:?})"
        ))
    })?;
    let values: Vec<f64> = values.column_vector().iter().copied().collect();

    let negatives = values.iter().take_while(|&&l| l < 0.0).count();
    let positives = values.iter().rev().take_while(|&&l| l > 0.0).count();
    let (first, count, keep_positive) = if negatives <= positives {
        (0, negatives, false)
    } else {
        (n - positives, positives, true)
    };
    if count == 0 {
        // Nothing to subtract (sym is PSD), or nothing to keep (negative semidefinite).
        let out = if keep_positive { Array2::zeros((n, n)) } else { sym };
        return Ok((out, values));
    }

    // W = Q·Z[:, selected]·diag(√|λ|): Q acts on rows 1.. (its first reflector starts there).
    let mut w = z.subcols(first, count).to_owned();
    apply_block_householder_sequence_on_the_left_in_place_with_conj(
        reduced.as_ref().submatrix(1, 0, n - 1, n - 1),
        reflector_factors.as_ref(),
        Conj::No,
        w.as_mut().subrows_mut(1, n - 1),
        par,
        stack,
    );
    for (j, lambda) in values[first..first + count].iter().enumerate() {
        let scale = lambda.abs().sqrt();
        w.col_mut(j).iter_mut().for_each(|x| *x *= scale);
    }
    // The output is built in place in `sym`, whose row-major storage read column-major is the
    // same symmetric matrix: its lower triangle gets W·Wᵀ (added for the negative part, in place
    // of sym for the positive part), then is mirrored, so the result is exactly symmetric.
    let mut out = if sym.is_standard_layout() {
        sym
    } else {
        sym.as_standard_layout().into_owned()
    };
    let data = out.as_slice_mut().expect("standard layout is contiguous");
    triangular::matmul(
        MatMut::from_column_major_slice_mut(data, n, n),
        BlockStructure::TriangularLower,
        if keep_positive { Accum::Replace } else { Accum::Add },
        w.as_ref(),
        BlockStructure::Rectangular,
        w.transpose(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    mirror_lower(data, n);
    Ok((out, values))
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

/// The eigenvalues of a symmetric matrix: all of them sorted (from the eigendecomposition that
/// `clip` needs anyway), or the tridiagonal form to find single ones, with λ_min and λ_max
/// found once (0 for an empty matrix).
struct Eigenvalues {
    source: Source,
    min: f64,
    max: f64,
}

enum Source {
    Sorted(Vec<f64>),
    Tridiagonal(Sturm),
}

impl Eigenvalues {
    fn new(source: Source) -> Self {
        let (min, max) = match &source {
            Source::Sorted(v) => (v.first().copied(), v.last().copied()),
            Source::Tridiagonal(t) if t.is_empty() => (None, None),
            Source::Tridiagonal(t) => (Some(t.eigenvalue(0)), Some(t.eigenvalue(t.len() - 1))),
        };
        Eigenvalues {
            source,
            min: min.unwrap_or(0.0),
            max: max.unwrap_or(0.0),
        }
    }

    /// The k-th smallest (k < n).
    fn eigenvalue(&self, k: usize) -> f64 {
        match &self.source {
            Source::Sorted(v) => v[k],
            Source::Tridiagonal(_) if k == 0 => self.min,
            Source::Tridiagonal(t) => t.eigenvalue(k),
        }
    }

    fn count_below(&self, x: f64) -> usize {
        match &self.source {
            Source::Sorted(v) => v.partition_point(|&l| l < x),
            Source::Tridiagonal(t) => t.count_below(x),
        }
    }

    /// λ_min, λ_max and the count below −`tolerance`.
    fn spectrum(&self, tolerance: f64) -> Spectrum {
        Spectrum {
            lambda_min: self.min,
            lambda_max: self.max,
            negative_eigenvalues: self.count_below(-tolerance),
        }
    }
}

/// What a projection did, with the matrix it produced.
#[derive(Clone, Debug)]
pub struct Projection {
    /// The output matrix, exactly symmetric.
    pub matrix: Array2<f64>,
    pub method: Method,
    /// Largest |G[i,j] − G[j,i]| of the input.
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
    let n = g.nrows();
    let (sym, max_asymmetry) = symmetrise(g);
    // The eigenvalues of the symmetrised input, and what the output's are in terms of them.
    let (matrix, values, shift_lambda): (Array2<f64>, Eigenvalues, f64) = match method {
        Method::None => {
            let values = Eigenvalues::new(Source::Tridiagonal(sturm(&sym, par)));
            (sym, values, 0.0)
        }
        Method::Shift => {
            let values = Eigenvalues::new(Source::Tridiagonal(sturm(&sym, par)));
            let lambda = shift_amount(&values.spectrum(0.0));
            (shift(sym, lambda), values, lambda)
        }
        Method::Clip => {
            let (out, values) = clip(sym, par)?;
            (out, Eigenvalues::new(Source::Sorted(values)), 0.0)
        }
    };
    let tolerance = rounding_tolerance(n, values.spectrum(0.0).spectral_norm());
    let before = values.spectrum(tolerance);
    let after = match method {
        Method::None => before,
        Method::Shift => Spectrum {
            lambda_min: before.lambda_min + shift_lambda,
            lambda_max: before.lambda_max + shift_lambda,
            negative_eigenvalues: values.count_below(-tolerance - shift_lambda),
        },
        Method::Clip => Spectrum {
            lambda_min: before.lambda_min.max(0.0),
            lambda_max: before.lambda_max.max(0.0),
            negative_eigenvalues: 0,
        },
    };
    let most_negative = (0..before.negative_eigenvalues.min(MOST_NEGATIVE_LISTED))
        .map(|k| values.eigenvalue(k))
        .collect();
    let frobenius_moved = matrix
        .iter()
        .zip(g.iter())
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let frobenius_input = g.iter().map(|a| a * a).sum::<f64>().sqrt();
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

    #[test]
    fn sturm_bisection_finds_every_known_eigenvalue() {
        // Gapped spectra, and one with a cluster, repeated values and exact zeros.
        let mut cases: Vec<(u64, Vec<f64>, f64)> = [(4, 5, 1.0), (5, 23, 3e-3), (6, 60, 250.0)]
            .into_iter()
            .map(|(seed, n, scale)| (seed, gapped_spectrum(n, scale, &mut rng(seed)), scale))
            .collect();
        cases.push((
            7,
            vec![-2.0, -2.0, -1.0, -1.0 + 1e-9, 0.0, 0.0, 0.5, 3.0, 3.0, 3.0],
            3.0,
        ));
        for (seed, lambda, scale) in cases {
            let n = lambda.len();
            let a = with_eigenvalues(&random_orthogonal(n, &mut rng(seed + 100)), &lambda);
            let t = sturm(&a, Par::Seq);
            let mut sorted = lambda.clone();
            sorted.sort_by(f64::total_cmp);
            for (k, l) in sorted.iter().enumerate() {
                let c = t.eigenvalue(k);
                assert!(
                    (c - l).abs() <= EIGENVALUE_TOL * scale,
                    "seed {seed}: λ_{k} = {c} vs {l}"
                );
            }
            // Counts between eigenvalues that are apart by more than the tolerance.
            for k in 1..n {
                if sorted[k] - sorted[k - 1] > 4.0 * EIGENVALUE_TOL * scale {
                    let between = 0.5 * (sorted[k - 1] + sorted[k]);
                    assert_eq!(t.count_below(between), k, "seed {seed}: count below {between}");
                }
            }
            assert_eq!(t.count_below(sorted[0] - scale), 0);
            assert_eq!(t.count_below(sorted[n - 1] + scale), n);
        }
    }

    #[test]
    fn sturm_counts_survive_zero_pivots_and_split_matrices() {
        // T − 0·I has a zero first pivot; the eigenvalues are ±1.
        let t = Sturm::new(&[0.0, 0.0], &[1.0]);
        assert_eq!(t.count_below(0.0), 1);
        assert!((t.eigenvalue(0) + 1.0).abs() <= 4.0 * f64::EPSILON);
        assert!((t.eigenvalue(1) - 1.0).abs() <= 4.0 * f64::EPSILON);
        // Diagonal (the subdiagonal is zero): the eigenvalues are the sorted diagonal.
        let t = Sturm::new(&[3.0, -1.0, 3.0, 0.0], &[0.0, 0.0, 0.0]);
        for (k, expected) in [-1.0, 0.0, 3.0, 3.0].into_iter().enumerate() {
            assert!((t.eigenvalue(k) - expected).abs() <= 4.0 * f64::EPSILON * 3.0, "λ_{k}");
        }
        assert_eq!(t.count_below(-0.5), 1);
        assert_eq!(t.count_below(2.0), 2);
        // The zero matrix, a 1×1, and a block split by an exact zero coupling.
        let t = Sturm::new(&[0.0; 4], &[0.0; 3]);
        assert!(t.eigenvalue(0).abs() <= f64::MIN_POSITIVE && t.eigenvalue(3).abs() <= f64::MIN_POSITIVE);
        assert!((Sturm::new(&[-7.5], &[]).eigenvalue(0) + 7.5).abs() <= 4.0 * f64::EPSILON * 7.5);
        let t = Sturm::new(&[2.0, 2.0, -5.0, -5.0], &[1.0, 0.0, 2.0]);
        for (k, expected) in [-7.0, -3.0, 1.0, 3.0].into_iter().enumerate() {
            assert!((t.eigenvalue(k) - expected).abs() <= 8.0 * f64::EPSILON * 7.0, "λ_{k}");
        }
    }

    #[test]
    fn none_and_shift_report_the_spectrum_of_the_full_decomposition() {
        let mut r = rng(8);
        for n in [1, 2, 31, 150] {
            let g = random_symmetric(n, 2.0, &mut r);
            let all = eigenvalues(&g, Par::Seq).unwrap();
            let tolerance = rounding_tolerance(n, all[0].abs().max(all[n - 1].abs()));
            let expected = Spectrum::of_sorted(&all, tolerance);
            for method in [Method::None, Method::Shift, Method::Clip] {
                let p = project(&g, method, Par::Seq).unwrap();
                let scale = expected.spectral_norm();
                assert!((p.before.lambda_min - expected.lambda_min).abs() <= EIGENVALUE_TOL * scale);
                assert!((p.before.lambda_max - expected.lambda_max).abs() <= EIGENVALUE_TOL * scale);
                assert_eq!(
                    p.before.negative_eigenvalues, expected.negative_eigenvalues,
                    "{method}, n = {n}"
                );
                let listed = expected.negative_eigenvalues.min(MOST_NEGATIVE_LISTED);
                assert_eq!(p.most_negative.len(), listed, "{method}, n = {n}");
                for (c, l) in p.most_negative.iter().zip(&all) {
                    assert!((c - l).abs() <= EIGENVALUE_TOL * scale, "{method}, n = {n}: {c} vs {l}");
                }
            }
        }
    }

    #[test]
    fn eigenvalues_match_a_matrix_built_from_known_ones() {
        for (seed, n, scale) in [(1, 5, 1.0), (2, 17, 3e-3), (3, 40, 250.0)] {
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
}
