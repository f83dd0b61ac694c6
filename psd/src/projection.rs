//! The projections themselves: symmetrise, find the spectrum, clip or shift it.
//!
//! Everything here works on in-memory matrices, so unit tests can check it against independent
//! computations; [`crate::run`] adds the files and the report around it.
//!
//! Every method starts with a blocked Householder tridiagonalisation G = Q·T·Qᵀ (module
//! `householder`, LAPACK's dsytrd in faer's storage). `none` and `shift`
//! need only λ_min, λ_max, the count below the tolerance and the few most negative eigenvalues,
//! which bisection on T's Sturm counts gives in O(n) each ([`Sturm`]). `clip` needs T's
//! eigenvalues and the eigenvectors on one side of zero only: it finds all eigenvalues by the
//! Pal–Walker–Kahan QL/QR iteration and just those eigenvectors by inverse iteration, certifies
//! their residuals and orthogonality, and carries them back through the Householder reflectors
//! (module `tridiagonal`); when the certificate fails or the chosen eigenvalues cluster too
//! tightly it runs faer's divide and conquer on T for all eigenpairs instead. All of these are
//! backward stable: the computed eigenvalues are the exact ones of a matrix within about
//! n·ε·‖G‖₂ of G, which is where [`rounding_tolerance`] comes from. [`eigenvalues`] and [`eigen`]
//! (faer's whole eigensolver) serve the tests as an independent computation.

use clado::{Error, Result};
use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{
    self_adjoint_evd, self_adjoint_evd_scratch, tridiagonal_self_adjoint_evd, ComputeEigenvectors,
};
use faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_with_conj;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::{Accum, Col, Conj, Mat, MatMut, MatRef, Par};
use ndarray::Array2;
use serde::Serialize;

mod householder;
mod team;
mod tridiagonal;

/// The shift leaves λ_min of the output at `SHIFT_MARGIN · ‖G‖₂` rather than at zero, so that
/// the output stays positive semidefinite once rounded and re-measured: the rounding in forming
/// G + λI and in any later eigensolver or factorisation is below [`rounding_tolerance`]
/// = 10·n·ε·‖G‖₂, which is 1.1e-11·‖G‖₂ for N = 5,000 and stays below 1e-10·‖G‖₂ up to
/// N = 45,000 (a 16 GB matrix). The price is an extra 1e-10·‖G‖₂ per layer in the offset, far
/// below any measured Δ.
pub const SHIFT_MARGIN: f64 = 1e-10;

/// faer and the tridiagonalisation split their parallel loops into this many parts, whatever the
/// number of cores, and sum the parts in a fixed order: the output is bit-identical for every
/// thread-pool size and core count (tested), while 2+ cores still share the work. (Across CPUs
/// the last bits can differ where faer and the tridiagonalisation pick SIMD kernels by CPU, e.g.
/// AVX2 or not.) 4 balances a 2-core machine (the tasks share 2 threads evenly) against larger
/// ones.
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

/// sym = Q·T·Qᵀ by the blocked Householder reduction: T's diagonal and subdiagonal, and the
/// reflectors of Q stored below them in `reduced` with faer's block factors.
struct Reduction {
    reduced: Mat<f64>,
    reflector_factors: Mat<f64>,
    /// T of `scale`·sym (a power of two, see [`power_of_two_scale`]): in the range where the
    /// tridiagonal solvers' products of two entries neither overflow nor underflow.
    diagonal: Col<f64>,
    subdiagonal: Col<f64>,
    scale: f64,
}

/// Matrices whose largest entry lies outside [2^−`SCALE_EXPONENT`, 2^`SCALE_EXPONENT`] are
/// reduced after scaling by a power of two (exact): faer's Householder reflectors lose the
/// subdiagonal of subnormal matrices (a 2 × 2 with entries 1e-310 came out diagonal), and the
/// squares of the later steps need the same range. Inside it the bits are those of no scaling.
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

/// Reduce `sym` (n ≥ 1) to tridiagonal form ([`householder::tridiagonalise`]).
fn reduce(sym: &Array2<f64>, par: Par) -> Reduction {
    let n = sym.nrows();
    // The reduction reads the lower triangle; row-major read column-major is the transpose,
    // i.e. sym.
    let row_major = sym.as_standard_layout();
    let data = row_major.as_slice().expect("standard layout is contiguous");
    let mut reduced = Mat::<f64>::zeros(n, n);
    reduced
        .as_mut()
        .copy_from_triangular_lower(MatRef::from_row_major_slice(data, n, n));
    let scale = power_of_two_scale(data.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    if scale != 1.0 {
        for j in 0..n {
            for i in j..n {
                reduced[(i, j)] *= scale;
            }
        }
    }
    let block = recommended_block_size::<f64>(n, n);
    let mut reflector_factors = Mat::<f64>::zeros(block, n - 1);
    householder::tridiagonalise(reduced.as_mut(), reflector_factors.as_mut(), par);
    // The reflectors do not depend on the scale; T does: T of `sym` is this one divided by
    // `scale`.
    let diagonal = Col::<f64>::from_fn(n, |i| reduced[(i, i)]);
    let subdiagonal = Col::<f64>::from_fn(n, |i| if i + 1 < n { reduced[(i + 1, i)] } else { 0.0 });
    Reduction {
        reduced,
        reflector_factors,
        diagonal,
        subdiagonal,
        scale,
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
    /// The stored T is this power of two times the matrix's (see [`power_of_two_scale`]):
    /// queries and answers are mapped through it.
    scale: f64,
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
            scale: 1.0,
        }
    }

    /// The same counts and eigenvalues for a T given times `scale` (an exact power of two).
    fn scaled(self, scale: f64) -> Self {
        Sturm { scale, ..self }
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
        self.count_below_stored(x * self.scale)
    }

    fn count_below_stored(&self, x: f64) -> usize {
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
            if self.count_below_stored(mid) > k {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        (lo + 0.5 * (hi - lo)) / self.scale
    }
}

/// The tridiagonal form of `sym` for eigenvalues by [`Sturm`] (no eigenvectors).
pub fn sturm(sym: &Array2<f64>, par: Par) -> Sturm {
    let n = sym.nrows();
    assert_eq!(n, sym.ncols(), "the eigenvalues need a square matrix");
    if n == 0 {
        return Sturm::new(&[], &[]);
    }
    let t = reduce(sym, par);
    // Bisection on T as reduced (scaled into the range where e² neither underflows nor
    // overflows), its answers scaled back.
    let diagonal: Vec<f64> = t.diagonal.iter().copied().collect();
    let subdiagonal: Vec<f64> = t.subdiagonal.iter().copied().collect();
    Sturm::new(&diagonal, &subdiagonal).scaled(t.scale)
}

/// The nearest PSD matrix in Frobenius norm: `sym` with its negative eigenvalues set to zero.
/// Returns it with the eigenvalues of `sym` (nondecreasing).
///
/// sym = Q·T·Qᵀ (Householder tridiagonalisation), T = Z·Λ·Zᵀ, and the eigenvectors of sym are
/// U = Q·Z. With k negative and p positive eigenvalues, the projection is either side of the same
/// identity, whichever needs fewer eigenvectors:
///
/// - k ≤ p: sym + W₋W₋ᵀ with W₋ = U₋·diag(√−λ₋), i.e. sym minus its negative part;
/// - k > p: W₊W₊ᵀ with W₊ = U₊·diag(√λ₊), the positive part itself (PSD by construction).
///
/// Λ comes from the Pal–Walker–Kahan iteration (O(n²)), and only those m = min(k, p) columns of
/// Z are computed, by inverse iteration (O(n·m), in parallel), with every residual
/// ‖Tz − λz‖₂ ≤ [`rounding_tolerance`] certified, and every |zᵢᵀzᵢ − 1| and
/// |zᵢᵀzⱼ|·max(|λᵢ|, |λⱼ|)/‖G‖₂ ≤ 10·n·ε (the amount by which a defect moves W·Wᵀ, relative to
/// ‖G‖₂); failing that (or with more than 64 chosen eigenvalues in one cluster) all of Z comes
/// from faer's divide and conquer, as before. The m columns are carried back through the
/// reflectors (2n²m flops instead of 2n³) and W·Wᵀ is formed on the lower triangle only (n²m),
/// then mirrored, so the output is exactly symmetric. The rounding error of the product scales
/// with the part added or kept (‖W‖² ≤ ‖G‖₂), well below [`rounding_tolerance`]; the tests
/// compare both branches with an independent reconstruction.
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
        scale,
    } = reduce(&sym, par);

    // T's eigenvalues and the m eigenvectors the projection needs: by inverse iteration when it
    // certifies them, else by divide and conquer for all of T.
    let d: Vec<f64> = diagonal.iter().copied().collect();
    let e: Vec<f64> = subdiagonal.iter().copied().collect();
    // Both on T of scale·sym (the vectors are the same); the eigenvalues scaled back.
    let (mut values, chosen, z) = match chosen_eigenpairs(&d, &e, par) {
        Ok(found) => found,
        Err(_) => divide_and_conquer(&diagonal, &subdiagonal, par, stack)?,
    };
    if scale != 1.0 {
        values.iter_mut().for_each(|l| *l /= scale);
    }
    let Chosen {
        first,
        count,
        keep_positive,
    } = chosen;
    if count == 0 {
        // Nothing to subtract (sym is PSD), or nothing to keep (negative semidefinite).
        let out = if keep_positive { Array2::zeros((n, n)) } else { sym };
        return Ok((out, values));
    }

    // W = Q·Z·diag(√|λ|): Q acts on rows 1.. (its first reflector starts there).
    let mut w = z;
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

/// Which eigenpairs `clip` needs: `count` from `first` in the sorted spectrum, the negative ones
/// (`keep_positive` false) or the positive ones, whichever are fewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chosen {
    first: usize,
    count: usize,
    keep_positive: bool,
}

impl Chosen {
    fn of_sorted(values: &[f64]) -> Self {
        let n = values.len();
        let negatives = values.iter().take_while(|&&l| l < 0.0).count();
        let positives = values.iter().rev().take_while(|&&l| l > 0.0).count();
        if negatives <= positives {
            Chosen {
                first: 0,
                count: negatives,
                keep_positive: false,
            }
        } else {
            Chosen {
                first: n - positives,
                count: positives,
                keep_positive: true,
            }
        }
    }
}

/// T's eigenvalues (nondecreasing), the choice, and the chosen eigenvectors of T (n × count), by
/// the Pal–Walker–Kahan iteration and certified inverse iteration ([`tridiagonal`]).
fn chosen_eigenpairs(
    diagonal: &[f64],
    subdiagonal: &[f64],
    par: Par,
) -> std::result::Result<(Vec<f64>, Chosen, Mat<f64>), tridiagonal::Fallback> {
    let values = tridiagonal::eigenvalues(diagonal, subdiagonal)?;
    let chosen = Chosen::of_sorted(&values.values);
    let z = if chosen.count == 0 {
        Mat::zeros(diagonal.len(), 0)
    } else {
        tridiagonal::eigenvectors(
            diagonal,
            subdiagonal,
            &values,
            chosen.first..chosen.first + chosen.count,
            par,
        )?
    };
    Ok((values.values, chosen, z))
}

/// The same by faer's divide and conquer, which finds all n eigenvectors of T.
fn divide_and_conquer(
    diagonal: &Col<f64>,
    subdiagonal: &Col<f64>,
    par: Par,
    stack: &mut MemStack,
) -> Result<(Vec<f64>, Chosen, Mat<f64>)> {
    let n = diagonal.nrows();
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
    let chosen = Chosen::of_sorted(&values);
    let z = z.subcols(chosen.first, chosen.count).to_owned();
    Ok((values, chosen, z))
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

    // The tridiagonal eigensolver of `clip`'s fast path: Pal–Walker–Kahan eigenvalues, inverse
    // iteration vectors, the certificate and the fallback.

    /// T as a dense matrix, for faer's whole eigensolver.
    fn dense_tridiagonal(d: &[f64], e: &[f64]) -> Array2<f64> {
        let n = d.len();
        Array2::from_shape_fn((n, n), |(i, j)| match i.abs_diff(j) {
            0 => d[i],
            1 => e[i.min(j)],
            _ => 0.0,
        })
    }

    /// The diagonal and subdiagonal (length n, last entry 0) of the Householder form of `a`.
    fn tridiagonal_of(a: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
        let t = reduce(a, Par::Seq);
        (
            t.diagonal.iter().map(|x| x / t.scale).collect(),
            t.subdiagonal.iter().map(|x| x / t.scale).collect(),
        )
    }

    /// A random tridiagonal matrix, entries uniform in [−1, 1): its eigenvectors are localised,
    /// so far-apart rows give pairs of eigenvalues much closer than ‖T‖/n (clusters).
    fn random_tridiagonal(n: usize, r: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
        let d = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
        let e = (0..n)
            .map(|i| if i + 1 < n { r.random_range(-1.0..1.0) } else { 0.0 })
            .collect();
        (d, e)
    }

    /// Everything the fast path promises for T's chosen eigenvectors, against faer's whole
    /// eigensolver on the dense T:
    /// - eigenvalues within 2·[`rounding_tolerance`] of faer's (both are backward stable, each
    ///   within the tolerance of the exact ones);
    /// - residuals ‖Tz − λz‖₂, |zᵢᵀzᵢ − 1| and the weighted |zᵢᵀzⱼ| (all pairs, by a full Gram
    ///   matrix, not the certificate's shortcut) within the certificate's tolerances;
    /// - each vector within √2·2·tolerance/gap of ± faer's: both have residuals below the
    ///   tolerance, so by Davis–Kahan each is within tolerance/gap of the exact eigenvector
    ///   (sin θ), gap being the distance to the rest of the spectrum.
    ///
    /// Returns the vectors, or the fallback the fast path took.
    fn check_chosen_eigenvectors(
        name: &str,
        d: &[f64],
        e: &[f64],
        chosen: std::ops::Range<usize>,
    ) -> std::result::Result<Mat<f64>, tridiagonal::Fallback> {
        let n = d.len();
        let (exact, vectors) = eigen(&dense_tridiagonal(d, &e[..n - 1]), Par::Seq).unwrap();
        let values = tridiagonal::eigenvalues(d, e)?;
        let norm = exact[0].abs().max(exact[n - 1].abs());
        let tolerance = rounding_tolerance(n, norm);
        for (k, (c, l)) in values.values.iter().zip(&exact).enumerate() {
            assert!((c - l).abs() <= 2.0 * tolerance, "{name}: λ_{k} = {c} vs faer's {l}");
        }
        let z = tridiagonal::eigenvectors(d, e, &values, chosen.clone(), Par::Seq)?;
        assert_eq!((z.nrows(), z.ncols()), (n, chosen.len()));
        let mut gram = Mat::<f64>::zeros(chosen.len(), chosen.len());
        faer::linalg::matmul::matmul(gram.as_mut(), Accum::Replace, z.transpose(), z.as_ref(), 1.0, Par::Seq);
        let orthogonality = tridiagonal::orthogonality_tolerance(n);
        for (j, k) in chosen.clone().enumerate() {
            for (i, l) in chosen.clone().enumerate() {
                let weight = if i == j {
                    1.0
                } else {
                    values.values[k].abs().max(values.values[l].abs()) / norm
                };
                let defect = (gram[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs() * weight;
                assert!(defect <= orthogonality, "{name}: weighted |z{i}ᵀz{j} − δ| = {defect:e}");
            }
            let lambda = values.values[k];
            let residual = (0..n)
                .map(|i| {
                    let mut r = (d[i] - lambda) * z[(i, j)];
                    if i > 0 {
                        r += e[i - 1] * z[(i - 1, j)];
                    }
                    if i + 1 < n {
                        r += e[i] * z[(i + 1, j)];
                    }
                    r * r
                })
                .sum::<f64>()
                .sqrt();
            assert!(residual <= tolerance, "{name}: residual {residual:e} of vector {k}");
            let gap = (0..n)
                .filter(|&o| o != k)
                .map(|o| (exact[o] - exact[k]).abs())
                .fold(f64::INFINITY, f64::min);
            let sign = if (0..n).map(|i| z[(i, j)] * vectors[(i, k)]).sum::<f64>() < 0.0 {
                -1.0
            } else {
                1.0
            };
            let distance = (0..n)
                .map(|i| (z[(i, j)] - sign * vectors[(i, k)]).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                distance <= std::f64::consts::SQRT_2 * 2.0 * tolerance / gap + orthogonality,
                "{name}: vector {k} is {distance:e} from faer's (gap {gap:e})"
            );
        }
        Ok(z)
    }

    #[test]
    fn tridiagonal_eigenvalues_match_known_spectra_at_any_scale() {
        // Through the Householder form of Q·diag(λ)·Qᵀ, with scales that take dsterf's scaling
        // branches (squared entries would overflow or underflow).
        for (seed, n, scale) in [(20, 7, 1.0), (21, 60, 1e-170), (22, 90, 1e170), (23, 200, 3.0)] {
            let mut r = rng(seed);
            let lambda = gapped_spectrum(n, scale, &mut r);
            let (d, e) = tridiagonal_of(&with_eigenvalues(&random_orthogonal(n, &mut r), &lambda));
            let values = tridiagonal::eigenvalues(&d, &e).unwrap();
            for (c, l) in values.values.iter().zip(&lambda) {
                assert!((c - l).abs() <= EIGENVALUE_TOL * scale, "seed {seed}: {c} vs {l}");
            }
        }
        // The 2×2 closed form and the 1×1.
        let values = tridiagonal::eigenvalues(&[2.0, 2.0], &[1.0, 0.0]).unwrap();
        assert_eq!(values.values, [1.0, 3.0]);
        assert_eq!(tridiagonal::eigenvalues(&[-4.5], &[0.0]).unwrap().values, [-4.5]);
    }

    #[test]
    fn inverse_iteration_matches_faer_on_random_and_reduced_matrices() {
        let mut r = rng(30);
        // Random tridiagonals (localised vectors, many pairs closer than ‖T‖/n), chosen ranges
        // at either end and in the middle.
        for (n, chosen) in [(40, 0..13), (300, 0..150), (300, 200..300), (257, 60..190)] {
            let (d, e) = random_tridiagonal(n, &mut r);
            check_chosen_eigenvectors(&format!("random n = {n}"), &d, &e, chosen).unwrap();
        }
        // The bench's kind of matrix, Wigner-like, through the Householder form.
        let (d, e) = tridiagonal_of(&random_symmetric(400, 1.0, &mut r));
        check_chosen_eigenvectors("reduced Wigner", &d, &e, 0..200).unwrap();
    }

    #[test]
    fn inverse_iteration_on_tiny_diagonal_and_split_matrices() {
        // n = 1 and n = 2 (eigenvalues 1 and 3, vectors (1, ∓1)/√2).
        let z = check_chosen_eigenvectors("1×1", &[-2.0], &[0.0], 0..1).unwrap();
        assert_eq!(z[(0, 0)], 1.0);
        let z = check_chosen_eigenvectors("2×2", &[2.0, 2.0], &[1.0, 0.0], 0..2).unwrap();
        let half = std::f64::consts::FRAC_1_SQRT_2;
        for (j, other) in [(0, -half), (1, half)] {
            assert!((z[(0, j)] - half).abs() <= 4.0 * f64::EPSILON, "2×2 vector {j}");
            assert!((z[(1, j)] - other).abs() <= 4.0 * f64::EPSILON, "2×2 vector {j}");
        }
        // Diagonal, with a repeated entry: every block is 1×1, the vectors are unit vectors.
        let d = [3.0, -1.0, 0.5, -1.0, 2.0];
        let z = check_chosen_eigenvectors("diagonal", &d, &[0.0; 5], 0..3).unwrap();
        for (j, row) in [1, 3, 2].into_iter().enumerate() {
            let expected = Array1::from_shape_fn(5, |i| if i == row { 1.0 } else { 0.0 });
            assert_eq!(
                z.col(j).iter().copied().collect::<Array1<f64>>(),
                expected,
                "unit vector {j}"
            );
        }
        // Split by an exact zero and by a negligible coupling: two random blocks whose spectra
        // interleave; each vector lives on one block.
        let (mut d, mut e) = random_tridiagonal(120, &mut r_split());
        e[49] = 0.0;
        e[89] = 1e-300;
        for k in 50..90 {
            d[k] *= 0.5; // a third block with its own spectrum
        }
        let z = check_chosen_eigenvectors("split", &d, &e, 0..70).unwrap();
        let blocks = [0..50, 50..90, 90..120];
        for j in 0..z.ncols() {
            let support: Vec<usize> = (0..3)
                .filter(|&b| blocks[b].clone().any(|i| z[(i, j)] != 0.0))
                .collect();
            assert_eq!(support.len(), 1, "vector {j} lives on one block");
        }
    }

    fn r_split() -> ChaCha8Rng {
        rng(31)
    }

    #[test]
    fn clusters_are_reorthogonalised_or_fall_back() {
        let mut r = rng(32);
        // Close eigenvalues (1e-9 apart, far below ‖T‖/n) in one unreduced block: 20 of them make
        // one cluster, reorthogonalised; 80 make a cluster above MAX_CLUSTER, which falls back.
        for (count, falls_back) in [(20, false), (80, true)] {
            let n = count + 60;
            let mut lambda: Vec<f64> = (0..count).map(|k| -1.0 - 1e-9 * k as f64).collect();
            lambda.extend(gapped_spectrum(60, 2.0, &mut r).iter().map(|l| l.abs()));
            lambda.sort_by(f64::total_cmp);
            let (d, e) = tridiagonal_of(&with_eigenvalues(&random_orthogonal(n, &mut r), &lambda));
            let result = check_chosen_eigenvectors(&format!("{count} close"), &d, &e, 0..count);
            match result {
                Err(tridiagonal::Fallback::ClusterTooLarge { size }) => {
                    assert!(falls_back && size > tridiagonal::MAX_CLUSTER, "cluster of {size}")
                }
                Err(other) => panic!("{count} close: unexpected fallback {other:?}"),
                Ok(_) => assert!(!falls_back, "{count} close should have fallen back"),
            }
            // Either way clip is the nearest PSD matrix.
            let q = random_orthogonal(n, &mut r);
            let a = with_eigenvalues(&q, &lambda);
            let expected = with_eigenvalues(&q, &lambda.iter().map(|l| l.max(0.0)).collect::<Vec<_>>());
            let p = project(&a, Method::Clip, Par::Seq).unwrap();
            let err = max_abs(&(&p.matrix - &expected));
            assert!(err <= CLIP_TOL * 2.0, "{count} close: clip error {err:e}");
        }
        // Exactly repeated eigenvalues: the Householder form splits (an unreduced tridiagonal
        // has simple eigenvalues), and the copies land in different blocks.
        let lambda: Vec<f64> = [vec![-2.0; 6], vec![-0.5; 4], gapped_spectrum(30, 3.0, &mut r)]
            .concat()
            .into_iter()
            .map(|l| if l > -0.5 { l.abs() } else { l })
            .collect();
        let mut sorted = lambda.clone();
        sorted.sort_by(f64::total_cmp);
        let (d, e) = tridiagonal_of(&with_eigenvalues(&random_orthogonal(40, &mut r), &sorted));
        check_chosen_eigenvectors("repeated", &d, &e, 0..10).unwrap();
    }

    /// CLADO matrices have few large eigenvalues and many small ones. When the chosen side is
    /// mostly small eigenvalues, their gaps are far below ‖T‖/n: the plain |zᵢᵀzⱼ| ≤ 10·n·ε would
    /// make them one cluster too large to reorthogonalise (MAX_CLUSTER), the weighted test (what
    /// the defect costs W·Wᵀ) keeps the fast path, and clip stays as accurate.
    #[test]
    fn many_small_chosen_eigenvalues_keep_the_fast_path() {
        let mut r = rng(35);
        let n = 300;
        // 90 negative eigenvalues in [−0.05, −0.001]·8, the rest positive in [0.1, 8].
        let mut lambda: Vec<f64> = (0..n)
            .map(|k| {
                if k < 90 {
                    -8.0 * r.random_range(0.001..0.05)
                } else {
                    8.0 * r.random_range(0.0125..1.0)
                }
            })
            .collect();
        lambda.sort_by(f64::total_cmp);
        let q = random_orthogonal(n, &mut r);
        let a = with_eigenvalues(&q, &lambda);
        let (d, e) = tridiagonal_of(&a);
        // Mean gap 0.4/90 ≈ 0.004 against ‖T‖/n ≈ 0.027: the plain rule would chain all 90.
        check_chosen_eigenvectors("small negatives", &d, &e, 0..90).unwrap();
        let expected = with_eigenvalues(&q, &lambda.iter().map(|l| l.max(0.0)).collect::<Vec<_>>());
        let p = project(&a, Method::Clip, Par::Seq).unwrap();
        let err = max_abs(&(&p.matrix - &expected));
        assert!(err <= CLIP_TOL * 8.0, "clip error {err:e}");
        assert_eq!(p.before.negative_eigenvalues, 90);
    }

    #[test]
    fn the_certificate_rejects_vectors_that_are_not_orthogonal_or_not_eigenvectors() {
        let (d, e) = random_tridiagonal(200, &mut rng(33));
        let values = tridiagonal::eigenvalues(&d, &e).unwrap();
        let norm = values.values[0].abs().max(values.values[199].abs());
        let z = tridiagonal::eigenvectors(&d, &e, &values, 0..100, Par::Seq).unwrap();
        tridiagonal::certify(&d, &e, &values, 0..100, &z, norm, Par::Seq).unwrap();
        // Two neighbours rotated into each other by 1e-6: still orthonormal, but no longer
        // eigenvectors (the residual certificate catches it)...
        let (c, s) = (1e-6f64.cos(), 1e-6f64.sin());
        let mut rotated = z.clone();
        for i in 0..200 {
            let (a, b) = (z[(i, 40)], z[(i, 41)]);
            rotated[(i, 40)] = c * a - s * b;
            rotated[(i, 41)] = s * a + c * b;
        }
        let result = tridiagonal::certify(&d, &e, &values, 0..100, &rotated, norm, Par::Seq);
        assert!(
            matches!(result, Err(tridiagonal::Fallback::Residual { .. })),
            "{result:?}"
        );
        // ...and 1e-10 of one vector added to its closest neighbour (a gap below 1e-3: the
        // residual moves by less than 1e-13) breaks orthogonality only.
        let closest = (0..99)
            .min_by(|&a, &b| {
                let gap = |k: usize| values.values[k + 1] - values.values[k];
                gap(a).total_cmp(&gap(b))
            })
            .unwrap();
        assert!(values.values[closest + 1] - values.values[closest] < 1e-3);
        let mut skewed = z.clone();
        for i in 0..200 {
            skewed[(i, closest + 1)] += 1e-10 * z[(i, closest)];
        }
        let result = tridiagonal::certify(&d, &e, &values, 0..100, &skewed, norm, Par::Seq);
        assert!(
            matches!(result, Err(tridiagonal::Fallback::Orthogonality { .. })),
            "{result:?}"
        );
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

    /// Scales where the fast path's arithmetic leaves the normal range (found in review):
    /// - a graded T where the QL sweep's c = p/r is subnormal, so r/p overflowed and NaN
    ///   eigenvalues made `clip` return its input unchanged;
    /// - subnormal entries, where ε times the largest pivot underflowed to a zero perturbation
    ///   and inverse iteration never ended;
    /// - entries near 1e-170, where the residual's squares underflowed and the certificate
    ///   passed any vector.
    #[test]
    fn clip_survives_graded_and_subnormal_matrices() {
        // The graded T (already tridiagonal): eigenvalues −1, 0, 1 up to ~1e-150.
        let (d, e) = ([0.0, 0.0, -9.999999999e-151], [1e-150, 1.0, 0.0]);
        match tridiagonal::eigenvalues(&d, &e) {
            Ok(values) => {
                for (c, l) in values.values.iter().zip([-1.0, 0.0, 1.0]) {
                    assert!((c - l).abs() <= EIGENVALUE_TOL, "graded T: {c} vs {l}");
                }
            }
            Err(fallback) => assert_eq!(fallback, tridiagonal::Fallback::EigenvaluesDidNotConverge),
        }
        let graded = dense_tridiagonal(&d, &e[..2]);
        let (out, values) = clip(graded.clone(), Par::Seq).unwrap();
        assert!(values.iter().all(|l| l.is_finite()), "{values:?}");
        let err = max_abs(&(&out - &reference_clip(&graded)));
        assert!(err <= CLIP_TOL, "graded T: max entry error {err:e}");

        // Subnormal: eigenvalues ±1e-310, the projection [[1, 1], [1, 1]]·0.5e-310. Relative
        // accuracy is gone down there (53 bits become a few), so the check is that it ends with
        // the right matrix to within a tenth of the scale.
        let tiny = Array2::from_shape_vec((2, 2), vec![0.0, 1e-310, 1e-310, 0.0]).unwrap();
        let (out, _) = clip(tiny, Par::Seq).unwrap();
        for v in out.iter() {
            assert!((v - 0.5e-310).abs() <= 1e-311, "subnormal: {out:?}");
        }
        let values = tridiagonal::eigenvalues(&[0.0, 0.0], &[1e-310, 0.0]).unwrap();
        // Ends (a vector or a fallback, either is fine).
        let _ = tridiagonal::eigenvectors(&[0.0, 0.0], &[1e-310, 0.0], &values, 0..1, Par::Seq);

        // 1e-170·[[2, 1], [1, 2]] (eigenvalues 1e-170 and 3e-170): (1, 0) is no eigenvector, its
        // residual 1e-170·(1, 1)·… is far above the tolerance ~1e-184.
        let (d, e) = ([2e-170, 2e-170], [1e-170, 0.0]);
        let values = tridiagonal::eigenvalues(&d, &e).unwrap();
        let norm = values.values[1].abs();
        let mut wrong = Mat::<f64>::zeros(2, 1);
        wrong[(0, 0)] = 1.0;
        let result = tridiagonal::certify(&d, &e, &values, 0..1, &wrong, norm, Par::Seq);
        assert!(
            matches!(result, Err(tridiagonal::Fallback::Residual { .. })),
            "{result:?}"
        );
        // And the real eigenvectors pass at that scale, as at 1 and at 1e100. (Near 1e170 the
        // pivot tests' products overflow and inverse iteration falls back; `clip` hands it T of
        // a matrix scaled into [2^-400, 2^400], see `power_of_two_scale`.)
        for scale in [1e-170, 1.0, 1e100] {
            let (d, e) = ([2.0 * scale, 2.0 * scale, -scale], [scale, 0.5 * scale, 0.0]);
            check_chosen_eigenvectors(&format!("scale {scale:e}"), &d, &e, 0..2).unwrap();
        }
        // Every method on the zero matrix (the scaling's guard), and the spectrum `none` and
        // `shift` report at 1e-170 and 1e-310, where T's squared subdiagonal underflowed in the
        // bisection before it ran on the scaled T.
        for method in [Method::None, Method::Shift, Method::Clip] {
            let p = project(&Array2::zeros((3, 3)), method, Par::Seq).unwrap();
            // Bisection ends within pivmin (the least normal number) of 0.
            let (low, high) = (p.before.lambda_min, p.before.lambda_max);
            assert!(
                low.abs() <= 1e-300 && high.abs() <= 1e-300,
                "{method:?}: [{low:e}, {high:e}]"
            );
            for scale in [1e-170, 1e-310] {
                let a = Array2::from_shape_vec((2, 2), vec![0.0, scale, scale, 0.0]).unwrap();
                let p = project(&a, method, Par::Seq).unwrap();
                let (low, high) = (p.before.lambda_min, p.before.lambda_max);
                assert!(
                    (low + scale).abs() <= 1e-3 * scale && (high - scale).abs() <= 1e-3 * scale,
                    "{method:?} at {scale:e}: λ in [{low:e}, {high:e}]"
                );
                assert_eq!(p.before.negative_eigenvalues, 1, "{method:?} at {scale:e}");
            }
        }
        // ... and clip at those scales matches the reference.
        for scale in [1e-170, 1e170] {
            let mut r = rng(40);
            let lambda = gapped_spectrum(30, scale, &mut r);
            let a = with_eigenvalues(&random_orthogonal(30, &mut r), &lambda);
            let (out, _) = clip(a.clone(), Par::Seq).unwrap();
            let err = max_abs(&(&out - &reference_clip(&a)));
            assert!(err <= CLIP_TOL * scale, "scale {scale:e}: max entry error {err:e}");
        }
    }

    #[test]
    fn inverse_iteration_bits_do_not_depend_on_the_thread_pool() {
        let (d, e) = random_tridiagonal(600, &mut rng(34));
        let values = tridiagonal::eigenvalues(&d, &e).unwrap();
        let sequential = tridiagonal::eigenvectors(&d, &e, &values, 100..400, Par::Seq).unwrap();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let pooled = pool.install(|| tridiagonal::eigenvectors(&d, &e, &values, 100..400, parallelism()).unwrap());
            assert!(pooled == sequential, "{threads} threads");
        }
    }
}
