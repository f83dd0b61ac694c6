//! Within-layer terms that make the convex relaxation as strong as the semidefinite one (the
//! QCR idea of Billionnet and Elloumi, for one-hot groups).
//!
//! Two options of one layer are never chosen together, so for any symmetric W supported on
//! pairs of distinct options of one layer, xᵀ(Q + W)x = xᵀQx on every one-hot x: W is free.
//! It is not free for the continuous relaxation, whose bound it decides. (A diagonal shift is
//! one such W on the affine hull of the groups: x_v² − x_v = −Σ_{u∈g, u≠v} x_u x_v there.)
//!
//! The best W comes from Shor's relaxation. Lift y = (1, x) and Y = yyᵀ. On one-hot x,
//! Y ⪰ 0, Y_00 = 1, Y_uv = 0 for distinct options u, v of one layer (the "gangster"
//! entries), the budget rows hold on Y's first row, and Y·(−1, 1_g) = 0 for every layer g
//! (1_gᵀx = 1 and x_v·1_gᵀx = x_v). The last makes Y = V R Vᵀ with R ⪰ 0 for an orthonormal
//! basis V of the vectors orthogonal to every (−1, 1_g) (facial reduction); with the gangster
//! entries it implies Y_vv = Y_0v, the binary identity. The relaxation
//!
//!   min ⟨L, Y⟩  s.t.  Y = V R Vᵀ, R ⪰ 0, Y ∈ 𝒴,   L = [c, bᵀ/2; b/2, Q],
//!
//! (𝒴: Y_00 = 1, gangster entries 0, budget rows on the first row) is solved approximately by
//! ADMM on the split Y = V R Vᵀ (Oliveira, Wolkowicz and Xu, 2018): R ← the PSD part of
//! Vᵀ(Y + Z/β)V, Y ← the projection onto 𝒴 of V R Vᵀ − (L + Z)/β, Z ← Z + γβ(Y − V R Vᵀ).
//! At a solution, K = L + Z is supported on the constrained entries and Vᵀ(L − K)V ⪰ 0
//! (dual feasibility), so W = −K on the gangster entries makes the lifted objective convex on
//! the affine hull, with a relaxation bound that reaches the semidefinite one (a budget's
//! multiplier only moves the linear term, which convexity does not depend on).
//!
//! Nothing here needs to be exact: any W is exact on one-hot x, and [`crate::convex`] shifts
//! what is left of non-convexity away and accounts for rounding. An approximate W only gives
//! a weaker bound.

use crate::convex::{eigh_mat, helmert_columns};
use crate::problem::{BudgetRow, ChoiceQp};
use faer::Mat;
use ndarray::Array2;
use std::time::Instant;

/// ADMM's step length for the multiplier (Fortin and Glowinski's golden-ratio step).
const GAMMA: f64 = 1.618;

/// The ADMM stops when the relative primal and dual residuals are both below this: enough for
/// a bound within a fraction of a per cent of the semidefinite one on the instances measured.
pub const TOLERANCE: f64 = 1e-5;

/// Passes of cyclic projection onto several budget rows (one row is projected exactly).
const BUDGET_PASSES: usize = 20;

/// The within-layer terms W (n × n, zero outside pairs of distinct options of one layer) from
/// at most `iterations` ADMM iterations, stopping at `deadline`.
pub fn within_terms(qp: &ChoiceQp, rows: &[BudgetRow], iterations: usize, deadline: Instant) -> Array2<f64> {
    let n = qp.n();
    let groups = qp.sizes.len();
    let size = n + 1;
    let scale = qp.scale().max(f64::MIN_POSITIVE);
    let group_of: Vec<usize> = (0..groups).flat_map(|g| std::iter::repeat_n(g, qp.sizes[g])).collect();
    let gangster = |i: usize, j: usize| i != j && i > 0 && j > 0 && group_of[i - 1] == group_of[j - 1];
    let lifted = Mat::from_fn(size, size, |i, j| match (i, j) {
        (0, 0) => qp.constant / scale,
        (0, v) | (v, 0) => 0.5 * qp.linear[v - 1] / scale,
        _ => qp.quad[[i - 1, j - 1]] / scale,
    });
    let basis = face_basis(qp);
    // Budget rows on the first row of Y, each scaled to a largest coefficient of 1.
    let budgets: Vec<(Vec<f64>, f64)> = rows
        .iter()
        .map(|r| {
            let unit = r.coef.iter().fold(0.0f64, |m, c| m.max(c.abs())).max(f64::MIN_POSITIVE);
            (r.coef.iter().map(|c| c / unit).collect(), r.capacity() / unit)
        })
        .collect();
    let project = |y: &mut Mat<f64>| {
        for i in 0..size {
            for j in i + 1..size {
                let mean = 0.5 * (y[(i, j)] + y[(j, i)]);
                let value = if gangster(i, j) { 0.0 } else { mean };
                y[(i, j)] = value;
                y[(j, i)] = value;
            }
        }
        y[(0, 0)] = 1.0;
        let passes = if budgets.len() > 1 { BUDGET_PASSES } else { 1 };
        for _ in 0..passes {
            for (a, cap) in &budgets {
                let used: f64 = (0..n).map(|v| a[v] * y[(0, v + 1)]).sum();
                let norm: f64 = a.iter().map(|c| c * c).sum();
                if used > *cap && norm > 0.0 {
                    let step = (used - cap) / norm;
                    for v in 0..n {
                        y[(0, v + 1)] -= step * a[v];
                        y[(v + 1, 0)] = y[(0, v + 1)];
                    }
                }
            }
        }
    };
    let mut y = Mat::<f64>::zeros(size, size);
    project(&mut y);
    let mut z = Mat::<f64>::zeros(size, size);
    let mut beta = 1.0;
    for _ in 0..iterations {
        if Instant::now() >= deadline {
            break;
        }
        // R-step: the PSD part of Vᵀ(Y + Z/β)V, and V R Vᵀ as F Fᵀ.
        let shifted = Mat::from_fn(size, size, |i, j| y[(i, j)] + z[(i, j)] / beta);
        let reduced = basis.transpose() * &shifted * &basis;
        let reduced = Mat::from_fn(reduced.nrows(), reduced.ncols(), |i, j| {
            0.5 * (reduced[(i, j)] + reduced[(j, i)])
        });
        let (values, vectors) = eigh_mat(&reduced);
        let positive: Vec<usize> = (0..values.len()).filter(|&k| values[k] > 0.0).collect();
        let half = Mat::from_fn(reduced.nrows(), positive.len(), |i, c| {
            vectors[(i, positive[c])] * values[positive[c]].sqrt()
        });
        let factor = &basis * &half;
        let vrv = &factor * factor.transpose();
        // Y-step and multiplier.
        let mut next = Mat::from_fn(size, size, |i, j| vrv[(i, j)] - (lifted[(i, j)] + z[(i, j)]) / beta);
        project(&mut next);
        let (mut primal, mut dual, mut norm_y, mut norm_z) = (0.0, 0.0, 0.0f64, 0.0f64);
        for j in 0..size {
            for i in 0..size {
                let r = next[(i, j)] - vrv[(i, j)];
                z[(i, j)] += GAMMA * beta * r;
                primal += r * r;
                let d = next[(i, j)] - y[(i, j)];
                dual += d * d;
                norm_y = norm_y.max(next[(i, j)].abs());
                norm_z = norm_z.max(z[(i, j)].abs());
            }
        }
        let primal = primal.sqrt() / (size as f64 * norm_y.max(1.0));
        let dual = beta * dual.sqrt() / (size as f64 * norm_z.max(1.0));
        y = next;
        if primal < TOLERANCE && dual < TOLERANCE {
            break;
        }
        // Residual balancing: keep the two residuals within a factor of 10 of each other.
        if primal > 10.0 * dual {
            beta *= 2.0;
        } else if dual > 10.0 * primal {
            beta /= 2.0;
        }
    }
    Array2::from_shape_fn((n, n), |(u, v)| {
        if gangster(u + 1, v + 1) {
            -(lifted[(u + 1, v + 1)] + z[(u + 1, v + 1)]) * scale
        } else {
            0.0
        }
    })
}

/// An orthonormal basis of the vectors y = (y_0, x) with Σ_{v∈g} x_v = y_0 for every group
/// g: Helmert vectors within each group (sum 0, y_0 = 0), and (1, 1_g/K_g …) normalised.
fn face_basis(qp: &ChoiceQp) -> Mat<f64> {
    let n = qp.n();
    let m = n - qp.sizes.len() + 1;
    let mut basis = Mat::<f64>::zeros(n + 1, m);
    let norm: f64 = (1.0 + qp.sizes.iter().map(|&k| 1.0 / k as f64).sum::<f64>()).sqrt();
    basis[(0, 0)] = 1.0 / norm;
    for g in 0..qp.sizes.len() {
        for v in qp.group_range(g) {
            basis[(v + 1, 0)] = 1.0 / (qp.sizes[g] as f64 * norm);
        }
    }
    helmert_columns(qp, &mut basis, 1, 1);
    basis
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    /// Symmetrised entries are exact means; the ADMM's own rounding is far below this.
    const SYMMETRIC: f64 = 1e-12;

    #[test]
    fn terms_live_on_pairs_of_options_of_one_layer() {
        let qp = synthetic::random_qp(6, 3, 5);
        let w = within_terms(&qp, &[], 200, Instant::now() + std::time::Duration::from_secs(600));
        let group_of = |v: usize| v / 3;
        let mut nonzero = 0;
        for u in 0..qp.n() {
            for v in 0..qp.n() {
                if u == v || group_of(u) != group_of(v) {
                    assert_eq!(w[[u, v]], 0.0, "entry [{u}, {v}] is outside the layers' pairs");
                } else {
                    assert!((w[[u, v]] - w[[v, u]]).abs() <= SYMMETRIC * qp.scale());
                    nonzero += usize::from(w[[u, v]] != 0.0);
                }
            }
        }
        assert!(nonzero > 0, "the relaxation should move some within-layer entries");
    }
}
