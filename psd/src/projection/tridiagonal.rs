//! Eigenvalues of the symmetric tridiagonal T of [`super::clip`], and eigenvectors for a chosen
//! range of them only.
//!
//! - All eigenvalues by the Pal–Walker–Kahan square-root-free QL/QR iteration (LAPACK's dsterf):
//!   O(n²), backward stable.
//! - Eigenvectors for the chosen ones by inverse iteration (LAPACK's dstein): a pivoted LU of
//!   T − λI, a random start vector from a seed fixed by the eigenvalue's index, two solves; each
//!   vector is reorthogonalised (modified Gram–Schmidt) against the earlier vectors of its
//!   cluster, a run of chosen eigenvalues less than [`REORTHOGONALISE_GAP`]·max|λ|/n apart.
//!   Clusters are independent, so they run in parallel and the bits do not depend on the pool.
//! - A certificate: every residual ‖Tz − λz‖₂ is measured, and |zᵢᵀzⱼ|, weighted by what it
//!   costs `clip` ([`orthogonality_tolerance`]), is bounded for every pair (explicitly for close
//!   eigenvalues, through the residuals for the others); see [`certify`].
//!
//! Anything that would be slow or inaccurate (a cluster larger than [`MAX_CLUSTER`], a vector that
//! does not converge, a certificate above tolerance) returns a [`Fallback`]: `clip` then runs
//! faer's divide and conquer as before, so the result is never worse than that.
//!
//! T splits where a subdiagonal entry is negligible (|eᵢ| ≤ ε·√|dᵢdᵢ₊₁|, dsterf's test): each
//! block is solved on its own and its eigenvectors are zero outside it.

use faer::{Mat, Par};
use rayon::prelude::*;
use std::ops::Range;

/// LAPACK's `dlamch('E')`: the unit roundoff 2⁻⁵³ (half of `f64::EPSILON`).
const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// dsterf gives up after this many QL/QR sweeps per eigenvalue on average (LAPACK's MAXIT).
const MAX_SWEEPS_PER_EIGENVALUE: usize = 30;

/// Consecutive chosen eigenvalues of the same block closer than
/// `REORTHOGONALISE_GAP · max(|λᵢ|, |λⱼ|) / n` join a cluster whose vectors are reorthogonalised
/// against each other. Inverse iteration leaves two vectors with eigenvalue gap g off orthogonal
/// by about κ·ε·‖T‖₂/g (each carries rounding noise of size ε·‖T‖₂ divided by the distance to
/// the other eigenvalue); κ measured at most 0.2 on the benchmark's random matrices (N = 500 and
/// 2,000), so pairs farther apart are within 0.2·n·ε of orthogonal after weighting by
/// max(|λᵢ|, |λⱼ|)/‖T‖₂ ([`orthogonality_tolerance`]), 50 times inside the tolerance, without any
/// work. dstein's own threshold, 10⁻³·‖T‖, is a little above the mean eigenvalue spacing of a
/// random N = 2,000 matrix, so it made the whole spectrum one cluster (O(n·m²) Gram–Schmidt, in
/// sequence); here the benchmark's 1,000 chosen vectors form clusters of one to three.
pub const REORTHOGONALISE_GAP: f64 = 1.0;

/// A cluster larger than this falls back to divide and conquer: Gram–Schmidt costs O(n·c²) and
/// runs in sequence, while divide and conquer deflates close eigenvalues cheaply. At 64, a
/// spectrum made only of such clusters costs at most 2 solves × 63 earlier vectors × 4n ≈ 500·n
/// flops per vector for the reorthogonalisation, about a quarter of what divide and conquer
/// spends per vector on a random N = 2,000 matrix (≈ n² ≈ 2,000·n).
pub const MAX_CLUSTER: usize = 64;

/// At most this many explicit dot products per chosen vector in [`certify`] (pairs whose
/// eigenvalues are too close for the residual bound); beyond it the spectrum is so clustered
/// that divide and conquer is the better tool.
const MAX_CHECKED_PAIRS_PER_VECTOR: usize = 64;

/// Inverse iteration: solves per vector at most (dstein's MAXITS, 5).
const MAX_SOLVES: usize = 5;
/// Solves after the first that met the growth test. Each multiplies the error by about
/// (eigenvalue error)/gap; dstein does 2, but after 1 the vectors were already at the rounding
/// floor (the same max |zᵢᵀzⱼ| and residuals at N = 500 and 2,000) and it saves a quarter of the
/// time.
const EXTRA_SOLVES: usize = 1;

/// Why the fast path gave up; `clip` falls back to divide and conquer on all of T.
#[derive(Clone, Debug, PartialEq)]
pub enum Fallback {
    /// The QL/QR iteration for the eigenvalues did not converge.
    EigenvaluesDidNotConverge,
    /// A cluster of close chosen eigenvalues holds more than [`MAX_CLUSTER`] vectors.
    ClusterTooLarge { size: usize },
    /// Inverse iteration for one vector did not meet its growth test in [`MAX_SOLVES`] solves.
    VectorDidNotConverge { index: usize },
    /// Too many pairs of close eigenvalues to check their vectors' orthogonality cheaply.
    TooManyClosePairs { pairs: usize },
    /// A residual ‖Tz − λz‖₂ above the tolerance.
    Residual {
        index: usize,
        residual: f64,
        tolerance: f64,
    },
    /// A pair of vectors whose weighted |zᵢᵀzⱼ| ([`orthogonality_tolerance`]) is not certified
    /// below the tolerance.
    Orthogonality {
        pair: (usize, usize),
        bound: f64,
        tolerance: f64,
    },
}

/// All eigenvalues of T, sorted, with the block of T each belongs to.
pub struct Eigenvalues {
    /// Nondecreasing.
    pub values: Vec<f64>,
    /// `block[k]` indexes `blocks` for `values[k]`.
    block: Vec<usize>,
    /// Row ranges of T's diagonal blocks, in order.
    blocks: Vec<Range<usize>>,
}

/// Where T splits into unreduced blocks: |eᵢ| ≤ ε·√|dᵢ|·√|dᵢ₊₁| (dsterf's test) counts as zero,
/// a perturbation below ε·‖T‖.
fn blocks(diagonal: &[f64], subdiagonal: &[f64]) -> Vec<Range<usize>> {
    let n = diagonal.len();
    let mut blocks = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let splits = i + 1 == n
            || subdiagonal[i].abs() <= diagonal[i].abs().sqrt() * diagonal[i + 1].abs().sqrt() * UNIT_ROUNDOFF;
        if splits {
            blocks.push(start..i + 1);
            start = i + 1;
        }
    }
    blocks
}

/// T's eigenvalues (`subdiagonal[i]` couples rows i and i + 1; entries from n − 1 on are unused).
pub fn eigenvalues(diagonal: &[f64], subdiagonal: &[f64]) -> Result<Eigenvalues, Fallback> {
    let blocks = blocks(diagonal, subdiagonal);
    let mut tagged: Vec<(f64, usize)> = Vec::with_capacity(diagonal.len());
    for (b, rows) in blocks.iter().enumerate() {
        let mut d = diagonal[rows.clone()].to_vec();
        let mut e = subdiagonal[rows.start..rows.end - 1].to_vec();
        // An overflow inside the sweeps would leave NaN or ∞, which the deflation tests let
        // through: divide and conquer instead.
        if !pal_walker_kahan(&mut d, &mut e) || !d.iter().all(|l| l.is_finite()) {
            return Err(Fallback::EigenvaluesDidNotConverge);
        }
        tagged.extend(d.into_iter().map(|l| (l, b)));
    }
    // By value, ties by block: the order is a function of T alone.
    tagged.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    Ok(Eigenvalues {
        values: tagged.iter().map(|t| t.0).collect(),
        block: tagged.iter().map(|t| t.1).collect(),
        blocks,
    })
}

/// The eigenvalues of one block in place (unsorted), by LAPACK's dsterf: implicit QL or QR
/// (whichever end of the block is larger in magnitude leads), on the squared subdiagonal, with
/// Wilkinson-like shifts and the 2×2 case closed form. `subdiagonal` (length n − 1) is destroyed.
/// False when it needed more than [`MAX_SWEEPS_PER_EIGENVALUE`]·n sweeps.
fn pal_walker_kahan(d: &mut [f64], e: &mut [f64]) -> bool {
    let n = d.len();
    if n <= 1 {
        return true;
    }
    let eps = UNIT_ROUNDOFF;
    let eps2 = eps * eps;
    let safe_min = f64::MIN_POSITIVE;
    let safe_max = 1.0 / safe_min;
    let scale_max = safe_max.sqrt() / 3.0;
    let scale_min = safe_min.sqrt() / eps2;
    let max_sweeps = n * MAX_SWEEPS_PER_EIGENVALUE;
    let mut sweeps = 0;
    let mut next = 0;
    while next < n {
        if next > 0 {
            e[next - 1] = 0.0;
        }
        // The unreduced block next..=end.
        let mut end = next;
        while end + 1 < n {
            if e[end].abs() <= d[end].abs().sqrt() * d[end + 1].abs().sqrt() * eps {
                e[end] = 0.0;
                break;
            }
            end += 1;
        }
        let (first, last) = (next, end);
        next = end + 1;
        if first == last {
            continue;
        }
        // Scale into the range where squaring the subdiagonal neither overflows nor underflows.
        let norm = d[first..=last]
            .iter()
            .chain(&e[first..last])
            .fold(0.0f64, |m, x| m.max(x.abs()));
        if norm == 0.0 {
            continue;
        }
        let scale = if norm > scale_max {
            scale_max / norm
        } else if norm < scale_min {
            scale_min / norm
        } else {
            1.0
        };
        if scale != 1.0 {
            d[first..=last].iter_mut().for_each(|x| *x *= scale);
            e[first..last].iter_mut().for_each(|x| *x *= scale);
        }
        e[first..last].iter_mut().for_each(|x| *x *= *x);
        let converged = if d[last].abs() < d[first].abs() {
            qr_sweeps(d, e, last, first, eps2, &mut sweeps, max_sweeps)
        } else {
            ql_sweeps(d, e, first, last, eps2, &mut sweeps, max_sweeps)
        };
        if scale != 1.0 {
            d[first..=last].iter_mut().for_each(|x| *x /= scale);
        }
        if !converged {
            return false;
        }
    }
    true
}

/// dsterf's QL branch on d[l..=end] with e squared: deflates from the top.
fn ql_sweeps(
    d: &mut [f64],
    e: &mut [f64],
    mut l: usize,
    end: usize,
    eps2: f64,
    sweeps: &mut usize,
    max: usize,
) -> bool {
    loop {
        // Look for a small subdiagonal element.
        let mut m = l;
        while m < end && e[m].abs() > eps2 * (d[m] * d[m + 1]).abs() {
            m += 1;
        }
        if m < end {
            e[m] = 0.0;
        }
        let p = d[l];
        if m == l {
            // d[l] is an eigenvalue.
            l += 1;
            if l <= end {
                continue;
            }
            return true;
        }
        if m == l + 1 {
            let (rt1, rt2) = symmetric_2x2_eigenvalues(d[l], e[l].sqrt(), d[l + 1]);
            d[l] = rt1;
            d[l + 1] = rt2;
            e[l] = 0.0;
            l += 2;
            if l <= end {
                continue;
            }
            return true;
        }
        if *sweeps == max {
            return false;
        }
        *sweeps += 1;
        let mut sweep = Sweep::new(p, e[l], d[l + 1], d[m]);
        for i in (l..m).rev() {
            let (e_before, diagonal) = sweep.rotate(e[i], d[i]);
            if i != m - 1 {
                e[i + 1] = e_before;
            }
            d[i + 1] = diagonal;
        }
        (e[l], d[l]) = sweep.finish();
    }
}

/// dsterf's QR branch on d[end..=l] with e squared: deflates from the bottom.
fn qr_sweeps(
    d: &mut [f64],
    e: &mut [f64],
    mut l: usize,
    end: usize,
    eps2: f64,
    sweeps: &mut usize,
    max: usize,
) -> bool {
    loop {
        // Look for a small superdiagonal element.
        let mut m = l;
        while m > end && e[m - 1].abs() > eps2 * (d[m] * d[m - 1]).abs() {
            m -= 1;
        }
        if m > end {
            e[m - 1] = 0.0;
        }
        let p = d[l];
        if m == l {
            if l > end {
                l -= 1;
                continue;
            }
            return true;
        }
        if m + 1 == l {
            let (rt1, rt2) = symmetric_2x2_eigenvalues(d[l], e[l - 1].sqrt(), d[l - 1]);
            d[l] = rt1;
            d[l - 1] = rt2;
            e[l - 1] = 0.0;
            if l >= end + 2 {
                l -= 2;
                continue;
            }
            return true;
        }
        if *sweeps == max {
            return false;
        }
        *sweeps += 1;
        let mut sweep = Sweep::new(p, e[l - 1], d[l - 1], d[m]);
        for i in m..l {
            let (e_before, diagonal) = sweep.rotate(e[i], d[i + 1]);
            if i != m {
                e[i - 1] = e_before;
            }
            d[i] = diagonal;
        }
        (e[l - 1], d[l]) = sweep.finish();
    }
}

/// One implicit QL or QR sweep of dsterf with the squared off-diagonal: the shift σ and the
/// running c, s, γ and p of its rotations (the two directions differ only in which way they walk).
struct Sweep {
    sigma: f64,
    c: f64,
    s: f64,
    gamma: f64,
    p: f64,
}

impl Sweep {
    /// The shift from the end being deflated (d_end = p, e² next to it, its neighbour d_next),
    /// and the start at d_m, the far end of the unreduced block.
    fn new(p: f64, e_squared: f64, d_next: f64, d_m: f64) -> Self {
        let rte = e_squared.sqrt();
        let mut sigma = (d_next - p) / (2.0 * rte);
        let r = sigma.hypot(1.0);
        sigma = p - rte / (sigma + r.copysign(sigma));
        let gamma = d_m - sigma;
        Sweep {
            sigma,
            c: 1.0,
            s: 0.0,
            gamma,
            p: gamma * gamma,
        }
    }

    /// One rotation against the squared off-diagonal `bb` and the diagonal entry `alpha`: the
    /// previous squared off-diagonal (s·r, written unless this is the first rotation) and the
    /// previous diagonal entry.
    fn rotate(&mut self, bb: f64, alpha: f64) -> (f64, f64) {
        let Sweep { sigma, c, s, gamma, p } = self;
        let r = *p + bb;
        let e_before = *s * r;
        // c = p/r, s = bb/r and p/c = r/p: two independent divisions where dsterf has two in a
        // row on the loop's critical path.
        let (r_inverse, r_over_p) = (1.0 / r, r / *p);
        let old_c = *c;
        *c = *p * r_inverse;
        *s = bb * r_inverse;
        let old_gamma = *gamma;
        *gamma = *c * (alpha - *sigma) - *s * old_gamma;
        let diagonal = old_gamma + (alpha - *gamma);
        *p = if *c == 0.0 {
            old_c * bb
        } else if r_over_p.is_finite() {
            *gamma * *gamma * r_over_p
        } else {
            // c subnormal: r/p overflows where dsterf's γ²/c does not.
            *gamma * *gamma / *c
        };
        (e_before, diagonal)
    }

    /// The squared off-diagonal and the diagonal entry at the deflating end.
    fn finish(&self) -> (f64, f64) {
        (self.s * self.p, self.sigma + self.gamma)
    }
}

/// Eigenvalues of [[a, b], [b, c]], the larger in magnitude first (LAPACK's dlae2).
fn symmetric_2x2_eigenvalues(a: f64, b: f64, c: f64) -> (f64, f64) {
    let sum = a + c;
    let difference = (a - c).abs();
    let twice_b = (b + b).abs();
    let (larger, smaller) = if a.abs() > c.abs() { (a, c) } else { (c, a) };
    let root = if difference > twice_b {
        difference * (1.0 + (twice_b / difference).powi(2)).sqrt()
    } else if difference < twice_b {
        twice_b * (1.0 + (difference / twice_b).powi(2)).sqrt()
    } else {
        twice_b * std::f64::consts::SQRT_2
    };
    if sum == 0.0 {
        return (0.5 * root, -0.5 * root);
    }
    let rt1 = if sum < 0.0 {
        0.5 * (sum - root)
    } else {
        0.5 * (sum + root)
    };
    // The other from the determinant, which keeps its relative accuracy.
    let rt2 = (larger / rt1) * smaller - (b / rt1) * b;
    (rt1, rt2)
}

/// T − σI = P·L·U with partial pivoting (LAPACK's dlagtf): U upper triangular with three
/// diagonals, L unit lower bidiagonal, P the row swaps.
struct ShiftedLu {
    u_diagonal: Vec<f64>,
    /// 1/u_diagonal[k] where [`ShiftedLu::solve`] may multiply by it (the pivot is at least
    /// `tolerance` and a normal number), 0 where it takes dlagts's careful path.
    reciprocal: Vec<f64>,
    u_first: Vec<f64>,
    u_second: Vec<f64>,
    multiplier: Vec<f64>,
    swapped: Vec<bool>,
    /// Pivots of U smaller than this are perturbed in [`ShiftedLu::solve`] (dlagts's tol).
    tolerance: f64,
}

impl ShiftedLu {
    fn new(n: usize) -> Self {
        ShiftedLu {
            u_diagonal: vec![0.0; n],
            reciprocal: vec![0.0; n],
            u_first: vec![0.0; n.saturating_sub(1)],
            u_second: vec![0.0; n.saturating_sub(1)],
            multiplier: vec![0.0; n.saturating_sub(1)],
            swapped: vec![false; n.saturating_sub(1)],
            tolerance: 0.0,
        }
    }

    /// Factor T − σI for the block (d, e) (n ≥ 2).
    fn factor(&mut self, d: &[f64], e: &[f64], sigma: f64) {
        let n = d.len();
        let (a, b, c, dd) = (
            &mut self.u_diagonal,
            &mut self.u_first,
            &mut self.multiplier,
            &mut self.u_second,
        );
        b.copy_from_slice(e);
        c.copy_from_slice(e);
        a[0] = d[0] - sigma;
        let mut scale1 = a[0].abs() + b[0].abs();
        for k in 0..n - 1 {
            a[k + 1] = d[k + 1] - sigma;
            let mut scale2 = c[k].abs() + a[k + 1].abs();
            if k + 2 < n {
                scale2 += b[k + 1].abs();
            }
            // dlagtf swaps when row k + 1 gives the larger pivot relative to its own size,
            // |c|/scale2 > |a|/scale1 (a zero a always loses); cross-multiplied here.
            let swap = c[k] != 0.0 && (a[k] == 0.0 || c[k].abs() * scale1 > a[k].abs() * scale2);
            self.swapped[k] = swap;
            dd[k] = 0.0;
            if swap {
                let mult = a[k] / c[k];
                a[k] = c[k];
                let temp = a[k + 1];
                a[k + 1] = b[k] - mult * temp;
                if k + 2 < n {
                    dd[k] = b[k + 1];
                    b[k + 1] = -mult * dd[k];
                }
                b[k] = temp;
                c[k] = mult;
            } else {
                scale1 = scale2;
                if c[k] != 0.0 {
                    c[k] /= a[k];
                    a[k + 1] -= c[k] * b[k];
                }
            }
        }
        // dlagts's default: ε times the largest entry of U.
        let largest = a
            .iter()
            .chain(b.iter())
            .chain(dd.iter())
            .fold(0.0f64, |m, x| m.max(x.abs()));
        // As dlagts: the product first, then ε if it is zero (an underflow too: entries below
        // 2⁻⁹⁶⁹ would otherwise leave a zero perturbation and `careful_quotient` never ending).
        let tolerance = largest * UNIT_ROUNDOFF;
        self.tolerance = if tolerance == 0.0 { UNIT_ROUNDOFF } else { tolerance };
        let safe = self.tolerance.max(f64::MIN_POSITIVE);
        for (r, &p) in self.reciprocal.iter_mut().zip(a.iter()) {
            *r = if p.abs() >= safe { 1.0 / p } else { 0.0 };
        }
    }

    /// y ← (T − σI)⁻¹·(scale·y), with tiny pivots perturbed so that nothing overflows (dlagts,
    /// job −1). Returns max |yᵢ|.
    fn solve(&self, y: &mut [f64], scale: f64) -> f64 {
        let n = y.len();
        let (b, c, dd) = (&self.u_first, &self.multiplier, &self.u_second);
        // L⁻¹ with the row swaps; the scaling rides along (the branch-free form keeps the
        // unpredictable swaps from stalling the loop).
        y[0] *= scale;
        for k in 1..n {
            let (previous, current) = (y[k - 1], y[k] * scale);
            let swap = self.swapped[k - 1];
            let top = if swap { current } else { previous };
            let other = if swap { previous } else { current };
            y[k - 1] = top;
            y[k] = other - c[k - 1] * top;
        }
        // U⁻¹.
        let big = 1.0 / f64::MIN_POSITIVE;
        let mut largest = 0.0f64;
        for k in (0..n).rev() {
            let temp = if k + 2 < n {
                y[k] - b[k] * y[k + 1] - dd[k] * y[k + 2]
            } else if k + 1 < n {
                y[k] - b[k] * y[k + 1]
            } else {
                y[k]
            };
            let reciprocal = self.reciprocal[k];
            y[k] = if reciprocal != 0.0 && temp.abs() < big * self.u_diagonal[k].abs() {
                temp * reciprocal
            } else {
                self.careful_quotient(temp, self.u_diagonal[k])
            };
            largest = largest.max(y[k].abs());
        }
        largest
    }

    /// temp / pivot as dlagts does it: a pivot that is zero or would overflow the quotient is
    /// pushed away from zero by tolerance, 2·tolerance, 4·tolerance, …
    fn careful_quotient(&self, mut temp: f64, mut pivot: f64) -> f64 {
        let safe_min = f64::MIN_POSITIVE;
        let big = 1.0 / safe_min;
        let mut perturbation = self.tolerance.copysign(pivot);
        loop {
            let magnitude = pivot.abs();
            if magnitude < 1.0 {
                if magnitude < safe_min {
                    if magnitude == 0.0 || temp.abs() * safe_min > magnitude {
                        pivot += perturbation;
                        perturbation *= 2.0;
                        continue;
                    }
                    temp *= big;
                    pivot *= big;
                } else if temp.abs() > magnitude * big {
                    pivot += perturbation;
                    perturbation *= 2.0;
                    continue;
                }
            }
            return temp / pivot;
        }
    }
}

/// A deterministic stream of uniform numbers in [−1, 1) (splitmix64), seeded per eigenvalue so
/// that a vector's bits do not depend on which thread computes it or in which order.
struct StartVector(u64);

impl StartVector {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
    }
}

fn max_abs_index(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    best
}

/// One cluster's work: vectors for `columns` (indices into the chosen range) of one block.
struct Cluster {
    block: Range<usize>,
    columns: Range<usize>,
}

/// Inverse iteration for a cluster's eigenvalues, as dstein: returns the block-sized vectors
/// (column-major, one after another), or the column that did not converge.
fn cluster_vectors(
    diagonal: &[f64],
    subdiagonal: &[f64],
    cluster: &Cluster,
    lambdas: &[f64],
    seeds: &[u64],
) -> Result<Vec<f64>, Fallback> {
    let rows = cluster.block.clone();
    let nb = rows.len();
    let count = cluster.columns.len();
    if nb == 1 {
        return Ok(vec![1.0; count]);
    }
    let d = &diagonal[rows.clone()];
    let e = &subdiagonal[rows.start..rows.end - 1];
    // ‖T_block‖₁ and dstein's growth test: an iterate of ∞-norm ≥ √(0.1/n) grew enough.
    let one_norm = (0..nb)
        .map(|i| {
            let left = if i > 0 { e[i - 1].abs() } else { 0.0 };
            let right = if i + 1 < nb { e[i].abs() } else { 0.0 };
            d[i].abs() + left + right
        })
        .fold(0.0f64, f64::max);
    let mut vectors = vec![0.0; nb * count];
    let grown = (0.1 / nb as f64).sqrt();
    let mut lu = ShiftedLu::new(nb);
    let mut previous_shift = f64::NEG_INFINITY;
    for (j, column) in cluster.columns.clone().enumerate() {
        // Equal eigenvalues get distinct shifts 10ε|λ| apart, so that their factorisations differ.
        let mut shift = lambdas[column];
        let separation = 10.0 * (UNIT_ROUNDOFF * shift).abs();
        if j > 0 && shift - previous_shift < separation {
            shift = previous_shift + separation;
        }
        previous_shift = shift;
        lu.factor(d, e, shift);
        let (done, rest) = vectors.split_at_mut(j * nb);
        let y = &mut rest[..nb];
        let mut start = StartVector(seeds[column]);
        y.iter_mut().for_each(|x| *x = start.next());
        let mut largest = y.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        // Each right-hand side is scaled to ∞-norm n·‖T‖₁·max(ε, |u_nn|), so that a converged
        // solution has norm about 1 (dstein).
        let target = nb as f64 * one_norm * UNIT_ROUNDOFF.max(lu.u_diagonal[nb - 1].abs());
        let mut checks = 0;
        let mut solves = 0;
        loop {
            solves += 1;
            if solves > MAX_SOLVES || !(largest > 0.0 && largest.is_finite()) {
                return Err(Fallback::VectorDidNotConverge { index: column });
            }
            largest = lu.solve(y, target / largest);
            if !done.is_empty() {
                for earlier in done.chunks_exact(nb) {
                    let overlap = dot(earlier, y);
                    y.iter_mut().zip(earlier).for_each(|(x, p)| *x -= overlap * p);
                }
                largest = y.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            }
            if largest < grown {
                continue;
            }
            checks += 1;
            if checks > EXTRA_SOLVES {
                break;
            }
        }
        let norm = y.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(Fallback::VectorDidNotConverge { index: column });
        }
        let sign = if y[max_abs_index(y)] < 0.0 { -1.0 } else { 1.0 };
        y.iter_mut().for_each(|x| *x *= sign / norm);
    }
    Ok(vectors)
}

/// Unit eigenvectors of T for `values.values[chosen]`, as the columns of an n × |chosen| matrix,
/// certified orthogonal to [`orthogonality_tolerance`] (weighted) and with residuals below
/// [`super::rounding_tolerance`]; a [`Fallback`] otherwise.
pub fn eigenvectors(
    diagonal: &[f64],
    subdiagonal: &[f64],
    values: &Eigenvalues,
    chosen: Range<usize>,
    par: Par,
) -> Result<Mat<f64>, Fallback> {
    let n = diagonal.len();
    let lambdas = &values.values[chosen.clone()];
    let blocks_of = &values.block[chosen.clone()];
    let norm = spectral_norm(&values.values);
    // Clusters: chosen eigenvalues of one block, in order, each closer to the previous than
    // REORTHOGONALISE_GAP·max(|λ|)/n of the two.
    let joins = |a: f64, b: f64| b - a < REORTHOGONALISE_GAP * a.abs().max(b.abs()) / n as f64;
    let mut by_block: Vec<Vec<usize>> = vec![Vec::new(); values.blocks.len()];
    for (column, &b) in blocks_of.iter().enumerate() {
        by_block[b].push(column);
    }
    // Columns of one block are consecutive in `chosen` only if no other block interleaves; a
    // cluster is a range of columns, so the columns are permuted to be grouped by block.
    let order: Vec<usize> = by_block.iter().flatten().copied().collect();
    let sorted_lambdas: Vec<f64> = order.iter().map(|&c| lambdas[c]).collect();
    let mut clusters = Vec::new();
    let mut position = 0;
    for (b, columns) in by_block.iter().enumerate() {
        let end = position + columns.len();
        let mut start = position;
        for k in position + 1..=end {
            if k == end || !joins(sorted_lambdas[k - 1], sorted_lambdas[k]) {
                if k - start > MAX_CLUSTER {
                    return Err(Fallback::ClusterTooLarge { size: k - start });
                }
                clusters.push(Cluster {
                    block: values.blocks[b].clone(),
                    columns: start..k,
                });
                start = k;
            }
        }
        position = end;
    }
    // The seed of a vector is its eigenvalue's index in the whole spectrum.
    let seeds: Vec<u64> = order.iter().map(|&c| (chosen.start + c) as u64).collect();
    let computed = in_order(par, clusters.len(), |c| {
        cluster_vectors(diagonal, subdiagonal, &clusters[c], &sorted_lambdas, &seeds)
    })
    .map_err(|fallback| match fallback {
        Fallback::VectorDidNotConverge { index } => Fallback::VectorDidNotConverge { index: order[index] },
        other => other,
    })?;
    let mut z = Mat::<f64>::zeros(n, lambdas.len());
    for (cluster, vectors) in clusters.iter().zip(computed) {
        let nb = cluster.block.len();
        for (k, v) in cluster.columns.clone().zip(vectors.chunks_exact(nb)) {
            let column = order[k];
            z.col_mut(column)
                .subrows_mut(cluster.block.start, nb)
                .iter_mut()
                .zip(v)
                .for_each(|(x, &y)| *x = y);
        }
    }
    certify(diagonal, subdiagonal, values, chosen, &z, norm, par)?;
    Ok(z)
}

/// ‖(T − λI)v‖₂² for the block (d, e), and Σᵢ sᵢ² where sᵢ is the sum of the magnitudes of the
/// terms of entry i (the scale of its rounding error), both of the entries times `scale` (1/‖T‖₂,
/// so that squaring neither underflows for tiny T nor overflows for huge T).
fn residual_and_rounding(d: &[f64], e: &[f64], lambda: f64, v: &[f64], scale: f64) -> (f64, f64) {
    let nb = v.len();
    if nb == 1 {
        let r = (d[0] - lambda) * v[0] * scale;
        let size = (d[0].abs() + lambda.abs()) * v[0].abs() * scale;
        return (r * r, size * size);
    }
    let mut residual = 0.0;
    let mut rounding = 0.0;
    let mut add = |r: f64, size: f64| {
        let (r, size) = (r * scale, size * scale);
        residual += r * r;
        rounding += size * size;
    };
    let diagonal_term = |i: usize| ((d[i] - lambda) * v[i], (d[i].abs() + lambda.abs()) * v[i].abs());
    let (r, size) = diagonal_term(0);
    add(r + e[0] * v[1], size + (e[0] * v[1]).abs());
    for i in 1..nb - 1 {
        let (r, size) = diagonal_term(i);
        let (left, right) = (e[i - 1] * v[i - 1], e[i] * v[i + 1]);
        add(r + left + right, size + left.abs() + right.abs());
    }
    let (r, size) = diagonal_term(nb - 1);
    let left = e[nb - 2] * v[nb - 2];
    add(r + left, size + left.abs());
    (residual, rounding)
}

/// xᵀy summed in eight interleaved parts (in a fixed order, so the bits are reproducible): the
/// one-accumulator sum waits on each addition in turn.
fn dot(x: &[f64], y: &[f64]) -> f64 {
    const PARTS: usize = 8;
    let mut parts = [0.0; PARTS];
    let (x_chunks, y_chunks) = (x.chunks_exact(PARTS), y.chunks_exact(PARTS));
    let tail: f64 = x_chunks
        .remainder()
        .iter()
        .zip(y_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in x_chunks.zip(y_chunks) {
        for k in 0..PARTS {
            parts[k] += a[k] * b[k];
        }
    }
    parts.iter().sum::<f64>() + tail
}

/// Column j of a column-major matrix as a slice.
fn column(z: &Mat<f64>, j: usize) -> &[f64] {
    z.col(j)
        .try_as_col_major()
        .expect("faer's Mat is column-major")
        .as_slice()
}

/// max |λ| of nondecreasing eigenvalues: ‖T‖₂.
fn spectral_norm(sorted: &[f64]) -> f64 {
    match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) => a.abs().max(b.abs()),
        _ => 0.0,
    }
}

/// c·n·ε with c = [`super::ROUNDING_CONSTANT`]: the orthogonality a stable eigensolver delivers
/// (eigenvector errors are a modest function of n times ε‖T‖ per unit of gap), and what keeps
/// `clip`'s output within [`super::rounding_tolerance`].
///
/// [`certify`] requires |zᵢᵀzᵢ − 1| ≤ c·n·ε and, for i ≠ j, |zᵢᵀzⱼ|·max(|λᵢ|, |λⱼ|)/‖T‖₂ ≤ c·n·ε.
/// The weight is what a defect costs `clip`: with W = Z·diag(√|λ|), the error of W·Wᵀ in T's
/// eigenbasis is Cᵢⱼ|λⱼ| + Cⱼᵢ|λᵢ| for Z = V·(I + C), whose symmetric part (ZᵀZ − I)/2 enters
/// with weight |λᵢ| + |λⱼ| and whose antisymmetric part (a rotation within the chosen
/// eigenspace) with |λᵢ| − |λⱼ|, i.e. the gap, times an angle of at most residual/gap. So, entry by entry in the eigenbasis, the
/// weighted test bounds the output error as the plain |zᵢᵀzⱼ| ≤ c·n·ε would for
/// eigenvalues of size ‖T‖₂, while the vectors of small eigenvalues (whose gaps are small
/// relative to ‖T‖₂, so that no eigensolver makes them individually accurate) need not be
/// reorthogonalised against each other: on a random N = 2,000 matrix with 600 chosen
/// eigenvalues in [−0.05, 0]·‖T‖₂ the plain max |zᵢᵀzⱼ| was 4·10⁻¹², the weighted 4·10⁻¹⁴, and
/// W·Wᵀ matched divide and conquer's to 6·10⁻¹⁵·‖T‖₂.
pub fn orthogonality_tolerance(n: usize) -> f64 {
    super::ROUNDING_CONSTANT * n as f64 * f64::EPSILON
}

/// Check the computed vectors Z (columns for `values.values[chosen]`).
///
/// Residuals: ‖Tzᵢ − λᵢzᵢ‖₂ ≤ [`super::rounding_tolerance`]`(n, ‖T‖₂)`, counting the rounding of
/// computing the residual itself (ρᵢ below is the computed norm plus that bound).
///
/// Orthogonality ([`orthogonality_tolerance`], weighted by max(|λᵢ|, |λⱼ|)/‖T‖₂ = wᵢⱼ): for
/// symmetric T, (λᵢ − λⱼ)·zᵢᵀzⱼ = rᵢᵀzⱼ − zᵢᵀrⱼ exactly, so
/// |zᵢᵀzⱼ| ≤ (ρᵢ + ρⱼ)·max‖z‖/|λᵢ − λⱼ|. That certifies every pair of eigenvalues at least
/// 2·max ρ·wᵢⱼ/tolerance apart at O(n) per vector; the closer pairs (a few neighbours each) are
/// checked by their dot products, and |zᵢᵀzᵢ − 1| for every vector. Vectors of different blocks
/// have disjoint supports and are exactly orthogonal.
pub fn certify(
    diagonal: &[f64],
    subdiagonal: &[f64],
    values: &Eigenvalues,
    chosen: Range<usize>,
    z: &Mat<f64>,
    norm: f64,
    par: Par,
) -> Result<(), Fallback> {
    let n = diagonal.len();
    let lambdas = &values.values[chosen.clone()];
    let blocks_of = &values.block[chosen];
    let residual_tolerance = super::rounding_tolerance(n, norm);
    let orthogonality = orthogonality_tolerance(n);
    // A computed sum of n products of unit vectors' entries is within nε of the exact one.
    let dot_rounding = n as f64 * f64::EPSILON;
    let vector = |j: usize| {
        let rows = values.blocks[blocks_of[j]].clone();
        let (d, e) = (&diagonal[rows.clone()], &subdiagonal[rows.start..rows.end - 1]);
        let v = &column(z, j)[rows];
        // Measured relative to ‖T‖₂ (see `residual_and_rounding`); the scaling adds one relative
        // rounding per entry, within the norm's allowance of n·ε.
        let (unit_scale, back) = if norm > 0.0 { (1.0 / norm, norm) } else { (1.0, 1.0) };
        let (residual, rounding) = residual_and_rounding(d, e, lambdas[j], v, unit_scale);
        // Each entry of r is a sum of three products and a difference: at most 5 roundings of
        // terms of size `size`, and the norm adds one relative rounding per entry.
        let bound = back * (residual.sqrt() * (1.0 + dot_rounding) + 5.0 * f64::EPSILON * rounding.sqrt());
        if !at_most(bound, residual_tolerance) {
            return Err(Fallback::Residual {
                index: j,
                residual: bound,
                tolerance: residual_tolerance,
            });
        }
        let unit = (dot(v, v) - 1.0).abs() + dot_rounding;
        if !at_most(unit, orthogonality) {
            return Err(Fallback::Orthogonality {
                pair: (j, j),
                bound: unit,
                tolerance: orthogonality,
            });
        }
        Ok(bound)
    };
    let radius: Vec<f64> = in_order(par, lambdas.len(), vector)?;
    // A pair's defect |zᵢᵀzⱼ| moves W·Wᵀ by about |zᵢᵀzⱼ|·max(|λᵢ|, |λⱼ|) (see
    // [`orthogonality_tolerance`]), so it is weighed by max(|λᵢ|, |λⱼ|)/‖T‖₂ ≤ 1.
    let weight = |i: usize, j: usize| {
        if norm > 0.0 {
            lambdas[i].abs().max(lambdas[j].abs()) / norm
        } else {
            1.0
        }
    };
    // Pairs at least window·weight apart are certified by their residuals:
    // |λᵢ − λⱼ|·|zᵢᵀzⱼ| ≤ ρᵢ‖zⱼ‖ + ρⱼ‖zᵢ‖, with ‖z‖ ≤ 1 + tolerance/2 by the check above and the
    // computed gap within ε of the exact one. The others (a few neighbours each) get a dot product.
    let largest = radius.iter().copied().fold(0.0, f64::max);
    let window = 2.0 * largest * (1.0 + orthogonality) * (1.0 + f64::EPSILON) / orthogonality;
    let close = |i: usize| {
        (i + 1..lambdas.len())
            .take_while(move |&j| lambdas[j] - lambdas[i] < window)
            .filter(move |&j| blocks_of[j] == blocks_of[i] && lambdas[j] - lambdas[i] < window * weight(i, j))
    };
    let pairs: usize = (0..lambdas.len()).map(|i| close(i).count()).sum();
    if pairs > MAX_CHECKED_PAIRS_PER_VECTOR * lambdas.len() {
        return Err(Fallback::TooManyClosePairs { pairs });
    }
    let overlaps = |i: usize| {
        let rows = values.blocks[blocks_of[i]].clone();
        for j in close(i) {
            let overlap = dot(&column(z, i)[rows.clone()], &column(z, j)[rows.clone()]).abs() + dot_rounding;
            let bound = overlap * weight(i, j);
            if !at_most(bound, orthogonality) {
                return Err(Fallback::Orthogonality {
                    pair: (i, j),
                    bound,
                    tolerance: orthogonality,
                });
            }
        }
        Ok(())
    };
    in_order(par, lambdas.len(), overlaps)?;
    Ok(())
}

/// value ≤ limit, false for NaN: every certificate test is written with it, so that a NaN
/// fails it.
fn at_most(value: f64, limit: f64) -> bool {
    value <= limit
}

/// f(0), …, f(count − 1), on the rayon pool unless `par` is sequential; the first error by index.
fn in_order<T: Send>(
    par: Par,
    count: usize,
    f: impl Fn(usize) -> Result<T, Fallback> + Sync + Send,
) -> Result<Vec<T>, Fallback> {
    match par {
        Par::Seq => (0..count).map(f).collect(),
        Par::Rayon(_) => {
            let results: Vec<Result<T, Fallback>> = (0..count).into_par_iter().with_min_len(8).map(&f).collect();
            results.into_iter().collect()
        }
    }
}
