//! Exact convex reformulations of min xᵀQx + bᵀx + c over one-hot binary x.
//!
//! Two identities hold on the feasible set and cost nothing:
//! - x binary, so x_v² = x_v: any diagonal shift D moves into the linear term,
//!   xᵀ(Q + D)x − diag(D)ᵀx = xᵀQx;
//! - x lies on the affine hull of the one-hot groups (Σ_{v∈g} x_v = 1), so with
//!   x₀ = Σ_g 1_g/K_g and the projector Π onto {d : Σ_{v∈g} d_v = 0 ∀g}, Πx = x − x₀ and
//!   xᵀMx = xᵀ(ΠMΠ)x + 2(Mx₀)ᵀx − x₀ᵀMx₀ for any symmetric M.
//!
//! [`Convexification::Projected`] uses both: the diagonal moves into the linear term, the
//! remaining hollow matrix A is shifted by λ = −λ_min(ΠAΠ on the subspace) — the smallest
//! uniform shift that makes the objective convex on the affine hull, and negative when A is
//! already convex there, which tightens the relaxation — and ΠMΠ = F Fᵀ is factored.
//! [`Convexification::Identity`] is the shift of docs/definitions.md, G + λI with λ = −λ_min(G): exact too
//! (xᵀx = L), but it ignores the one-hot structure and weakens the continuous relaxation.
//!
//! The factor keeps eigenvalues above rounding level. What dropping the others and the
//! eigensolver's residual can change is bounded and reported ([`Factored::lower_slack`]), so a
//! bound proven on the factored model is turned into a bound on the original objective.

use crate::problem::{BudgetRow, ChoiceQp};
use crate::sdp;
use faer::{Mat, Par};
use ndarray::Array2;
use std::time::Instant;

/// Iterations of the semidefinite relaxation's ADMM at most ([`crate::sdp`]).
pub const SDP_ITERATIONS: usize = 2000;

/// How G is made convex; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convexification {
    /// Diagonal into the linear term, projection onto the one-hot affine hull, smallest shift
    /// t·w with w from [`Weights`].
    Projected(Weights),
    /// G + λI with λ = max(0, −λ_min(G)) (docs/definitions.md's shift), no projection.
    Identity,
    /// Within-layer terms from the semidefinite relaxation ([`crate::sdp`]), then projected
    /// like [`Convexification::Projected`] with a uniform shift (≈ 0 up to the ADMM's accuracy).
    Sdp,
}

/// The direction of the diagonal shift: D = t·diag(w).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// w_v = 1.
    Uniform,
    /// w_v = Σ_u |A_uv| (Gershgorin: t ≤ 1).
    RowSums,
    /// w_v = |G_vv| + mean |G_vv| / 100.
    Diagonal,
}

/// ‖Fᵀx‖² + linearᵀx + constant, equal to the objective on one-hot x up to the slacks.
#[derive(Clone, Debug)]
pub struct Factored {
    /// n × r factor: column k is √μ_k u_k.
    pub factor: Mat<f64>,
    pub linear: Vec<f64>,
    pub constant: f64,
    /// The uniform diagonal shift used.
    pub shift: f64,
    /// For every one-hot x: objective(x) ≥ model(x) − lower_slack.
    pub lower_slack: f64,
    /// For every one-hot x: objective(x) ≤ model(x) + upper_slack.
    pub upper_slack: f64,
}

impl Factored {
    /// The model's value at the one-hot x of `idx` (variable indices, one per group).
    pub fn value(&self, idx: &[usize]) -> f64 {
        let r = self.factor.ncols();
        let quad: f64 = (0..r)
            .map(|k| {
                let z: f64 = idx.iter().map(|&i| self.factor[(i, k)]).sum();
                z * z
            })
            .sum();
        quad + idx.iter().map(|&i| self.linear[i]).sum::<f64>() + self.constant
    }

    /// z = Fᵀx for the one-hot x of `idx`.
    pub fn z(&self, idx: &[usize]) -> Vec<f64> {
        (0..self.factor.ncols())
            .map(|k| idx.iter().map(|&i| self.factor[(i, k)]).sum())
            .collect()
    }
}

/// Reformulate `qp` (see the module documentation). `rows` (the budgets) and `deadline` are
/// used by [`Convexification::Sdp`] only, which aims its terms at the budgeted relaxation.
pub fn convexify(qp: &ChoiceQp, rows: &[BudgetRow], how: Convexification, deadline: Instant) -> Factored {
    let n = qp.n();
    let groups = qp.sizes.len() as f64;
    match how {
        Convexification::Sdp => {
            let w = sdp::within_terms(qp, rows, SDP_ITERATIONS, deadline);
            projected_form(qp, &qp.quad + &w, qp.linear.clone(), &vec![1.0; n])
        }
        Convexification::Identity => {
            // The within-group entries are free (they never count): G's own, when known and
            // more convex, else zeros.
            let mut m = qp.quad.clone();
            let mut lambda = (-min_eigenvalue(&m)).max(0.0);
            if let Some(within) = &qp.within {
                let filled = &qp.quad + within;
                let filled_lambda = (-min_eigenvalue(&filled)).max(0.0);
                if filled_lambda < lambda {
                    (m, lambda) = (filled, filled_lambda);
                }
            }
            for i in 0..n {
                m[[i, i]] += lambda;
            }
            // xᵀx = L for one-hot x.
            let (factor, lower, upper) = factor_psd(&m, groups);
            Factored {
                factor,
                linear: qp.linear.clone(),
                constant: qp.constant - lambda * groups,
                shift: lambda,
                lower_slack: lower,
                upper_slack: upper,
            }
        }
        Convexification::Projected(weights) => {
            let mut a = qp.quad.clone();
            let mut b = qp.linear.clone();
            let diag: Vec<f64> = (0..n).map(|i| a[[i, i]]).collect();
            for i in 0..n {
                b[i] += a[[i, i]];
                a[[i, i]] = 0.0;
            }
            let w: Vec<f64> = match weights {
                Weights::Uniform => vec![1.0; n],
                Weights::RowSums => {
                    let rows: Vec<f64> = (0..n).map(|i| a.row(i).iter().map(|v| v.abs()).sum()).collect();
                    let mean = rows.iter().sum::<f64>() / n as f64;
                    rows.iter().map(|r| r + 1e-3 * mean + f64::MIN_POSITIVE).collect()
                }
                Weights::Diagonal => {
                    let mean = diag.iter().map(|d| d.abs()).sum::<f64>() / n as f64;
                    diag.iter().map(|d| d.abs() + 1e-2 * mean + f64::MIN_POSITIVE).collect()
                }
            };
            projected_form(qp, a, b, &w)
        }
    }
}

/// xᵀAx + bᵀx + c (A's within-group entries as given: they never count) made convex on the
/// affine hull of the groups: the smallest shift t·diag(w) (x_v² = x_v moves it into the
/// linear term), then the projection ΠMΠ, factored.
fn projected_form(qp: &ChoiceQp, a: Array2<f64>, mut b: Vec<f64>, w: &[f64]) -> Factored {
    let n = qp.n();
    let groups = qp.sizes.len() as f64;
    let t = -min_generalized_on_subspace(qp, &a, w);
    let mut m = a;
    for i in 0..n {
        m[[i, i]] += t * w[i];
        b[i] -= t * w[i];
    }
    let x0: Vec<f64> = (0..qp.sizes.len())
        .flat_map(|g| std::iter::repeat_n(1.0 / qp.sizes[g] as f64, qp.sizes[g]))
        .collect();
    let mx0: Vec<f64> = (0..n).map(|i| (0..n).map(|j| m[[i, j]] * x0[j]).sum()).collect();
    let x0mx0: f64 = x0.iter().zip(&mx0).map(|(a, b)| a * b).sum();
    for i in 0..n {
        b[i] += 2.0 * mx0[i];
    }
    let p = projected(qp, &m);
    let (factor, lower, upper) = factor_psd(&p, groups);
    Factored {
        factor,
        linear: b,
        constant: qp.constant - x0mx0,
        shift: t,
        lower_slack: lower,
        upper_slack: upper,
    }
}

/// Writes the Helmert basis of every group, e_j = (1, …, 1, −j, 0, …)/√(j(j+1)) for
/// j = 1..K−1 over the group's variables (orthonormal, each summing to 0), into `basis` from
/// column `first_col`, with variable v on row `row_offset + v`.
pub(crate) fn helmert_columns(qp: &ChoiceQp, basis: &mut Mat<f64>, row_offset: usize, first_col: usize) {
    let mut col = first_col;
    for g in 0..qp.sizes.len() {
        let s = qp.starts[g] + row_offset;
        for j in 1..qp.sizes[g] {
            let norm = ((j * (j + 1)) as f64).sqrt();
            for i in 0..j {
                basis[(s + i, col)] = 1.0 / norm;
            }
            basis[(s + j, col)] = -(j as f64) / norm;
            col += 1;
        }
    }
}

/// The smallest t with Pᵀ(A + t·diag(w))P ⪰ 0 for an orthonormal basis P of the subspace
/// {d : Σ_{v∈g} d_v = 0 ∀g}, as −λ_min of the pencil (PᵀAP, PᵀWP).
fn min_generalized_on_subspace(qp: &ChoiceQp, a: &Array2<f64>, w: &[f64]) -> f64 {
    let n = qp.n();
    let m = n - qp.sizes.len();
    if m == 0 {
        return 0.0;
    }
    let mut basis = Mat::<f64>::zeros(n, m);
    helmert_columns(qp, &mut basis, 0, 0);
    let a_s = basis.transpose() * to_faer(a) * &basis;
    let wb = Mat::from_fn(n, m, |i, j| w[i] * basis[(i, j)]);
    let w_s = basis.transpose() * &wb;
    let llt = w_s.llt(faer::Side::Lower).expect("PᵀWP is positive definite for w > 0");
    let l = llt.L();
    let mut x = a_s.clone();
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(l, x.as_mut(), Par::Seq);
    let mut y = x.transpose().to_owned();
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(l, y.as_mut(), Par::Seq);
    let c = Array2::from_shape_fn((m, m), |(i, j)| 0.5 * (y[(i, j)] + y[(j, i)]));
    min_eigenvalue(&c)
}

/// ΠMΠ for the projector Π = I − Σ_g 1_g1_gᵀ/K_g of the groups of `qp`.
pub(crate) fn projected(qp: &ChoiceQp, m: &Array2<f64>) -> Array2<f64> {
    let n = qp.n();
    let groups = qp.sizes.len();
    // Row means per group block: (M Σ 1_g1_gᵀ/K_g)[i, j] = mean of row i over j's group.
    let mut row_mean = Array2::<f64>::zeros((n, groups));
    for i in 0..n {
        for g in 0..groups {
            let r = qp.group_range(g);
            row_mean[[i, g]] = r.clone().map(|j| m[[i, j]]).sum::<f64>() / qp.sizes[g] as f64;
        }
    }
    let mut block_mean = Array2::<f64>::zeros((groups, groups));
    for g in 0..groups {
        for h in 0..groups {
            block_mean[[g, h]] = qp.group_range(g).map(|i| row_mean[[i, h]]).sum::<f64>() / qp.sizes[g] as f64;
        }
    }
    let group_of: Vec<usize> = (0..groups).flat_map(|g| std::iter::repeat_n(g, qp.sizes[g])).collect();
    Array2::from_shape_fn((n, n), |(i, j)| {
        let (gi, gj) = (group_of[i], group_of[j]);
        m[[i, j]] - row_mean[[i, gj]] - row_mean[[j, gi]] + block_mean[[gi, gj]]
    })
}

fn to_faer(m: &Array2<f64>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[[i, j]])
}

/// Eigenvalues (ascending) and eigenvectors of a symmetric matrix, single-threaded so that the
/// result does not depend on the machine's thread count.
pub fn eigh(m: &Array2<f64>) -> (Vec<f64>, Mat<f64>) {
    eigh_mat(&to_faer(m))
}

/// [`eigh`] of a faer matrix.
pub fn eigh_mat(a: &Mat<f64>) -> (Vec<f64>, Mat<f64>) {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd;
    let n = a.nrows();
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let mut u = Mat::<f64>::zeros(n, n);
    let scratch = evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::Yes, Par::Seq, Default::default());
    evd::self_adjoint_evd(
        a.as_ref(),
        s.as_mut(),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .expect("the symmetric eigensolver converges on finite input");
    let values = (0..n).map(|i| s[i]).collect();
    (values, u)
}

/// The smallest eigenvalue of a symmetric matrix.
pub fn min_eigenvalue(m: &Array2<f64>) -> f64 {
    if m.nrows() == 0 {
        return 0.0;
    }
    eigh(m).0[0]
}

/// Factor a (numerically) PSD matrix P ≈ F Fᵀ, keeping eigenvalues above rounding level.
/// Returns F and the slacks (lower, upper) for one-hot x with `groups` ones (‖x‖² = L and
/// (Σ_v x_v)² = L²): xᵀPx ≥ ‖Fᵀx‖² − lower and xᵀPx ≤ ‖Fᵀx‖² + upper.
fn factor_psd(p: &Array2<f64>, groups: f64) -> (Mat<f64>, f64, f64) {
    let n = p.nrows();
    if n == 0 {
        return (Mat::zeros(0, 0), 0.0, 0.0);
    }
    let (mu, u) = eigh(p);
    let top = mu.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let tol = n as f64 * f64::EPSILON * top.max(f64::MIN_POSITIVE);
    let kept: Vec<usize> = (0..n).filter(|&k| mu[k] > tol).collect();
    let mut f = Mat::<f64>::zeros(n, kept.len());
    for (c, &k) in kept.iter().enumerate() {
        let s = mu[k].sqrt();
        for i in 0..n {
            f[(i, c)] = s * u[(i, k)];
        }
    }
    // Residual of the whole decomposition, max-norm: |xᵀRx| ≤ max|R|·(Σx)².
    let ud = Mat::from_fn(n, n, |i, k| u[(i, k)] * mu[k]);
    let recon = &ud * u.transpose();
    let mut resid = 0.0f64;
    for i in 0..n {
        for j in 0..n {
            resid = resid.max((p[[i, j]] - recon[(i, j)]).abs());
        }
    }
    // Rounding in forming P and the linear term: a few ulps of the largest entry per term.
    let rounding = 16.0 * f64::EPSILON * p.iter().fold(0.0f64, |a, v| a.max(v.abs())) * n as f64;
    let dropped_neg: f64 = mu.iter().filter(|&&m| m < 0.0).map(|m| -m).sum();
    let dropped_pos: f64 = mu.iter().filter(|&&m| m >= 0.0 && m <= tol).sum();
    let common = (resid + rounding) * groups * groups;
    (f, groups * dropped_neg + common, groups * dropped_pos + common)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    /// The reformulation is exact in real arithmetic; in floating point it may differ by
    /// rounding of sums of a few hundred terms of size ≤ 1: far below the 1e-6 gap.
    const EXACTNESS: f64 = 1e-9;

    /// The reformulation without budgets and without a deadline that matters.
    fn form(qp: &ChoiceQp, how: Convexification) -> Factored {
        convexify(qp, &[], how, Instant::now() + std::time::Duration::from_secs(600))
    }

    fn random_choice(qp: &ChoiceQp, seed: u64) -> Vec<usize> {
        let mut rng = synthetic::SplitMix64::new(seed);
        qp.sizes.iter().map(|&k| rng.below(k)).collect()
    }

    #[test]
    fn reformulations_equal_the_objective_on_one_hot_points() {
        let qp = synthetic::random_qp(12, 5, 7);
        for how in [
            Convexification::Projected(Weights::Uniform),
            Convexification::Projected(Weights::RowSums),
            Convexification::Projected(Weights::Diagonal),
            Convexification::Identity,
            Convexification::Sdp,
        ] {
            let f = form(&qp, how);
            for s in 0..50 {
                let c = random_choice(&qp, s);
                let (exact, model) = (qp.value(&c), f.value(&qp.indices(&c)));
                assert!(
                    (exact - model).abs() <= EXACTNESS * qp.scale(),
                    "{how:?}: {exact} vs {model}"
                );
                assert!(model - f.lower_slack <= exact + EXACTNESS && exact <= model + f.upper_slack + EXACTNESS);
            }
        }
    }

    /// A PSD G (e.g. after `psd --method clip`) has entries between options of one layer that
    /// never count; zeroing them makes it indefinite. With them kept aside, the identity form
    /// needs no shift, and it stays exact on one-hot points.
    #[test]
    fn within_group_entries_keep_a_psd_matrix_convex() {
        let (groups, k) = (8, 3);
        let n = groups * k;
        let mut rng = synthetic::SplitMix64::new(11);
        let b = Array2::from_shape_fn((n, n), |_| rng.normal());
        let g = b.dot(&b.t());
        let mut quad = g.clone();
        for i in 0..n {
            for j in 0..n {
                if i != j && i / k == j / k {
                    quad[[i, j]] = 0.0;
                }
            }
        }
        let zeroed = ChoiceQp::new(vec![k; groups], quad.clone(), vec![0.0; n], 0.0);
        assert!(min_eigenvalue(&zeroed.quad) < -1e-3, "the zeroed matrix is indefinite");
        let kept = ChoiceQp::new(vec![k; groups], quad, vec![0.0; n], 0.0).with_within(g);
        let without = form(&zeroed, Convexification::Identity);
        let with = form(&kept, Convexification::Identity);
        assert!(without.shift > 1e-3, "{}", without.shift);
        assert_eq!(with.shift, 0.0);
        for s in 0..50 {
            let c = random_choice(&kept, s);
            let (exact, model) = (kept.value(&c), with.value(&kept.indices(&c)));
            assert!((exact - model).abs() <= EXACTNESS * kept.scale(), "{exact} vs {model}");
        }
    }

    #[test]
    fn projected_shift_is_no_larger_than_the_identity_shift() {
        // Compression onto a subspace cannot lower the smallest eigenvalue (Cauchy interlacing),
        // and the hollow matrix loses the diagonal the identity shift has to cover too.
        let qp = synthetic::random_qp(10, 4, 3);
        let p = form(&qp, Convexification::Projected(Weights::Uniform));
        let i = form(&qp, Convexification::Identity);
        assert!(p.shift <= i.shift + EXACTNESS, "{} > {}", p.shift, i.shift);
        assert!(
            p.factor.ncols() <= qp.n() - qp.sizes.len(),
            "rank above the subspace dimension"
        );
    }

    #[test]
    fn projected_matrix_is_psd() {
        let qp = synthetic::random_qp(8, 3, 11);
        let f = form(&qp, Convexification::Projected(Weights::Uniform));
        let product = &f.factor * f.factor.transpose();
        let m = Array2::from_shape_fn((qp.n(), qp.n()), |(i, j)| product[(i, j)]);
        assert!(min_eigenvalue(&m) >= -EXACTNESS);
    }
}
