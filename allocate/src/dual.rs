//! A fast Lagrangian lower bound, and the options it proves useless (reduced-cost fixing).
//!
//! Write the objective as f(x) = c + Σ_g u(x_g) + Σ_{g<h} θ_gh(x_g, x_h), with u_i = Q_ii + b_i
//! and θ_ij = 2Q_ij. For any messages λ (one number per option i of g and per other layer h),
//! the reparametrisation ũ_i = u_i + Σ_h λ_gh(i), θ̃_ij = θ_ij − λ_gh(i) − λ_hg(j) leaves f
//! unchanged on every choice; for any budget prices μ_r ≥ 0, adding Σ_r μ_r(usage_r − C_r) ≤ 0
//! only lowers it on feasible choices. Taking minima term by term gives, for every λ and μ ≥ 0,
//!
//!   f(x) ≥ L(λ, μ) = c − Σ_r μ_r C_r + Σ_g min_i (ũ_i + Σ_r μ_r c_ri) + Σ_{g<h} min_ij θ̃_ij,
//!
//! the Lagrangian dual of the local-polytope relaxation. The messages are improved by exact
//! block-coordinate ascent on one pair of layers at a time (MPLP's edge update), the prices by
//! bisection on the subgradient; the bound is valid at every step, whatever the convergence.
//!
//! Reduced costs: with x_g = i, every term of L is at least its minimum plus the slack of i in
//! it: the node term by r_i = ũ_i + μ·c_i − min_k(ũ_k + μ·c_k), and every pair term (g,h) by
//! min_j θ̃_ij − min θ̃. A choice using i is worth at least L + floor_i, the sum of those
//! slacks; options whose floor lifts L above an incumbent's value cannot improve on it and are
//! removed. Pairs of options likewise.

use crate::problem::{BudgetRow, ChoiceQp};
use std::time::Instant;

/// A lower bound and every option's reduced cost with respect to it.
#[derive(Clone, Debug)]
pub struct DualBound {
    /// Valid for every choice that meets the budget rows.
    pub bound: f64,
    /// floor_i ≥ 0 per variable: a choice with variable i is worth at least bound + floor_i.
    pub floor: Vec<f64>,
    /// Per pair of layers (g < h, in order), row-major over g's and h's options: the slack
    /// θ̃_ij − min θ̃ ≥ 0.
    pub pair_cost: Vec<Vec<f64>>,
    /// Sweeps over all pairs done.
    pub sweeps: usize,
    /// The messages of the bound, to warm-start another bound on a restriction of the problem.
    pub messages: Messages,
    /// Per group, the option of least priced reparametrised cost (a Lagrangian rounding).
    pub rounding: Vec<usize>,
}

/// The messages λ of every pair of layers (g < h, in order): on g's options, on h's.
#[derive(Clone, Debug)]
pub struct Messages(Vec<(Vec<f64>, Vec<f64>)>);

impl Messages {
    /// The messages of the options kept (`kept[g]`: positions kept in group g, in order).
    pub fn restrict(&self, kept: &[Vec<usize>]) -> Messages {
        let groups = kept.len();
        let mut out = Vec::with_capacity(self.0.len());
        let mut e = 0;
        for g in 0..groups {
            for h in g + 1..groups {
                let (to_g, to_h) = &self.0[e];
                out.push((
                    kept[g].iter().map(|&i| to_g[i]).collect(),
                    kept[h].iter().map(|&j| to_h[j]).collect(),
                ));
                e += 1;
            }
        }
        Messages(out)
    }
}

impl Messages {
    /// The messages of a sub-problem, as a warm start: `parent[g]` are the variables (ids of
    /// any common numbering) of group g of the problem these messages belong to; every group
    /// of the sub-problem, `child[a] = (g, vars)`, keeps some variables of parent group g, in
    /// order, with the parent groups increasing in a. Edges between two such groups keep
    /// their messages on the variables kept.
    pub fn restrict_groups(&self, parent: &[Vec<usize>], child: &[(usize, Vec<usize>)]) -> Messages {
        let groups = parent.len();
        let edge = |g: usize, h: usize| g * groups - g * (g + 1) / 2 + (h - g - 1);
        let positions: Vec<Vec<usize>> = child
            .iter()
            .map(|(g, vars)| {
                vars.iter()
                    .map(|v| {
                        parent[*g]
                            .iter()
                            .position(|p| p == v)
                            .expect("a kept variable of the group")
                    })
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity(child.len() * child.len().saturating_sub(1) / 2);
        for a in 0..child.len() {
            for b in a + 1..child.len() {
                let (to_g, to_h) = &self.0[edge(child[a].0, child[b].0)];
                out.push((
                    positions[a].iter().map(|&i| to_g[i]).collect(),
                    positions[b].iter().map(|&j| to_h[j]).collect(),
                ));
            }
        }
        Messages(out)
    }
}

impl DualBound {
    /// Whether a choice with both variables i and j (of different groups) may be worth at most
    /// `cutoff`.
    pub fn allows(&self, qp: &ChoiceQp, i: usize, j: usize, cutoff: f64) -> bool {
        let group_of = |v: usize| qp.starts.partition_point(|&s| s <= v) - 1;
        let (gi, gj) = (group_of(i), group_of(j));
        let ((g, a), (h, b)) = if gi < gj {
            ((gi, i), (gj, j))
        } else {
            ((gj, j), (gi, i))
        };
        let groups = qp.sizes.len();
        // Edges are listed (0,1), (0,2), …, (1,2), …
        let edge = g * groups - g * (g + 1) / 2 + (h - g - 1);
        let (x, y, kh) = (a - qp.starts[g], b - qp.starts[h], qp.sizes[h]);
        let slacks = &self.pair_cost[edge];
        let slack = slacks[x * kh + y];
        // floor_a counts this edge's row minimum and floor_b its column minimum: swap them for
        // the slack of the pair itself.
        let row = slacks[x * kh..(x + 1) * kh]
            .iter()
            .fold(f64::INFINITY, |m, &v| m.min(v));
        let col = (0..qp.sizes[g])
            .map(|r| slacks[r * kh + y])
            .fold(f64::INFINITY, f64::min);
        self.bound + self.floor[a] + self.floor[b] - row - col + slack <= cutoff
    }
}

/// Messages of one pair of layers (g < h): λ_gh on g's options, λ_hg on h's, and the pairwise
/// terms θ_ij = 2Q_ij, row-major over g's and h's options.
struct Edge {
    g: usize,
    h: usize,
    to_g: Vec<f64>,
    to_h: Vec<f64>,
    theta: Vec<f64>,
}

/// The ascent stops when five sweeps improve the bound by less than this fraction.
pub const STALL: f64 = 1e-6;

/// The best point so far: reparametrised unaries, prices and the messages of every edge, flat.
type State = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Improve the bound for at most `seconds` and `max_sweeps` sweeps (or until it stops
/// improving), from `warm` messages if given (they must belong to a problem with the same
/// groups and option counts).
pub fn bound(qp: &ChoiceQp, rows: &[BudgetRow], seconds: f64, max_sweeps: usize, warm: Option<&Messages>) -> DualBound {
    let start = Instant::now();
    let groups = qp.sizes.len();
    let n = qp.n();
    let unary: Vec<f64> = (0..n).map(|i| qp.quad[[i, i]] + qp.linear[i]).collect();
    let mut edges: Vec<Edge> = Vec::with_capacity(groups * groups.saturating_sub(1) / 2);
    for g in 0..groups {
        for h in g + 1..groups {
            let theta = qp
                .group_range(g)
                .flat_map(|i| qp.group_range(h).map(move |j| 2.0 * qp.quad[[i, j]]))
                .collect();
            edges.push(Edge {
                g,
                h,
                to_g: vec![0.0; qp.sizes[g]],
                to_h: vec![0.0; qp.sizes[h]],
                theta,
            });
        }
    }
    if let Some(Messages(m)) = warm {
        for (e, (to_g, to_h)) in edges.iter_mut().zip(m) {
            if to_g.len() == e.to_g.len() && to_h.len() == e.to_h.len() {
                e.to_g.clone_from(to_g);
                e.to_h.clone_from(to_h);
            }
        }
    }
    // ũ_i = u_i + Σ_e λ_e(i), kept up to date.
    let mut reparam = unary.clone();
    for e in &edges {
        for (x, v) in e.to_g.iter().enumerate() {
            reparam[qp.starts[e.g] + x] += v;
        }
        for (y, v) in e.to_h.iter().enumerate() {
            reparam[qp.starts[e.h] + y] += v;
        }
    }
    let mut mu = vec![0.0; rows.len()];
    let priced = |reparam: &[f64], mu: &[f64], i: usize| -> f64 {
        reparam[i] + rows.iter().zip(mu).map(|(r, m)| m * r.coef[i]).sum::<f64>()
    };
    let evaluate = |reparam: &[f64], mu: &[f64], edges: &[Edge]| -> f64 {
        let nodes: f64 = (0..groups)
            .map(|g| {
                qp.group_range(g)
                    .map(|i| priced(reparam, mu, i))
                    .fold(f64::INFINITY, f64::min)
            })
            .sum();
        let pairs: f64 = edges.iter().map(edge_min).sum();
        qp.constant + nodes + pairs - rows.iter().zip(mu).map(|(r, m)| m * r.capacity()).sum::<f64>()
    };
    let mut best = f64::NEG_INFINITY;
    let mut best_state: Option<State> = None;
    let mut scratch = Scratch::default();
    let mut sweeps = 0;
    let tolerance = 1e-12 * qp.scale().max(f64::MIN_POSITIVE);
    loop {
        optimise_prices(qp, rows, &reparam, &mut mu);
        let value = evaluate(&reparam, &mu, &edges);
        if value > best + tolerance || best_state.is_none() {
            let improved = value - best;
            best = value;
            // The messages, flat (the slacks follow from them at the end).
            let mut flat = best_state.take().map(|(_, _, f)| f).unwrap_or_default();
            flat.clear();
            for e in &edges {
                flat.extend_from_slice(&e.to_g);
                flat.extend_from_slice(&e.to_h);
            }
            best_state = Some((reparam.clone(), mu.clone(), flat));
            if improved.is_finite() && improved < STALL * best.abs().max(tolerance) {
                break;
            }
        } else {
            break;
        }
        if start.elapsed().as_secs_f64() > seconds || sweeps >= max_sweeps {
            break;
        }
        let price: Vec<f64> = (0..n)
            .map(|i| rows.iter().zip(&mu).map(|(r, m)| m * r.coef[i]).sum())
            .collect();
        for _ in 0..5 {
            for e in edges.iter_mut() {
                update_edge(qp, &price, e, &mut reparam, &mut scratch);
            }
            sweeps += 1;
        }
    }
    let (reparam, mu, flat) = best_state.expect("one evaluation at least");
    let mut at = 0;
    for e in edges.iter_mut() {
        let (kg, kh) = (e.to_g.len(), e.to_h.len());
        e.to_g.copy_from_slice(&flat[at..at + kg]);
        e.to_h.copy_from_slice(&flat[at + kg..at + kg + kh]);
        at += kg + kh;
    }
    let pair_cost = edge_slacks(&edges);
    let messages = Messages(edges.into_iter().map(|e| (e.to_g, e.to_h)).collect());
    let mut floor = vec![0.0; n];
    let mut rounding = vec![0; groups];
    for g in 0..groups {
        let least = qp
            .group_range(g)
            .map(|i| priced(&reparam, &mu, i))
            .fold(f64::INFINITY, f64::min);
        for i in qp.group_range(g) {
            floor[i] = priced(&reparam, &mu, i) - least;
            if floor[i] == 0.0 {
                rounding[g] = i - qp.starts[g];
            }
        }
    }
    let mut e = 0;
    for g in 0..groups {
        for h in g + 1..groups {
            let (kg, kh) = (qp.sizes[g], qp.sizes[h]);
            let slacks = &pair_cost[e];
            for x in 0..kg {
                floor[qp.starts[g] + x] += slacks[x * kh..(x + 1) * kh]
                    .iter()
                    .fold(f64::INFINITY, |m, &v| m.min(v));
            }
            for y in 0..kh {
                floor[qp.starts[h] + y] += (0..kg).map(|x| slacks[x * kh + y]).fold(f64::INFINITY, f64::min);
            }
            e += 1;
        }
    }
    DualBound {
        bound: best,
        floor,
        pair_cost,
        sweeps,
        messages,
        rounding,
    }
}

/// θ̃_ij − min θ̃ of every edge.
fn edge_slacks(edges: &[Edge]) -> Vec<Vec<f64>> {
    edges
        .iter()
        .map(|e| {
            let least = edge_min(e);
            let kh = e.to_h.len();
            e.theta
                .iter()
                .enumerate()
                .map(|(k, t)| t - e.to_g[k / kh] - e.to_h[k % kh] - least)
                .collect()
        })
        .collect()
}

/// min_ij θ̃_ij of one edge.
fn edge_min(e: &Edge) -> f64 {
    let kh = e.to_h.len();
    let mut least = f64::INFINITY;
    for (a, row) in e.theta.chunks_exact(kh).enumerate() {
        for (b, t) in row.iter().enumerate() {
            least = least.min(t - e.to_g[a] - e.to_h[b]);
        }
    }
    least
}

/// Buffers reused by every edge update.
#[derive(Default)]
struct Scratch {
    a: Vec<f64>,
    b: Vec<f64>,
    row_min: Vec<f64>,
    col_min: Vec<f64>,
}

/// MPLP's edge update: the exact maximiser of the bound over this edge's messages, others fixed.
/// With a_i = ũ'_i − λ_gh(i) and b_j likewise, it sets λ_gh(i) = (min_j(θ_ij + b_j) − a_i)/2
/// and λ_hg(j) = (min_i(θ_ij + a_i) − b_j)/2, which makes the three terms sum to
/// min_ij(a_i + θ_ij + b_j), their largest possible sum. `price` is μ·c per variable.
fn update_edge(qp: &ChoiceQp, price: &[f64], e: &mut Edge, reparam: &mut [f64], s: &mut Scratch) {
    let (sg, sh) = (qp.starts[e.g], qp.starts[e.h]);
    let (kg, kh) = (e.to_g.len(), e.to_h.len());
    for buffer in [&mut s.a, &mut s.row_min] {
        if buffer.len() < kg {
            buffer.resize(kg, 0.0);
        }
    }
    for buffer in [&mut s.b, &mut s.col_min] {
        if buffer.len() < kh {
            buffer.resize(kh, 0.0);
        }
    }
    let (a, row_min) = (&mut s.a[..kg], &mut s.row_min[..kg]);
    let (b, col_min) = (&mut s.b[..kh], &mut s.col_min[..kh]);
    for (x, ax) in a.iter_mut().enumerate() {
        *ax = reparam[sg + x] + price[sg + x] - e.to_g[x];
    }
    for (y, by) in b.iter_mut().enumerate() {
        *by = reparam[sh + y] + price[sh + y] - e.to_h[y];
    }
    col_min.fill(f64::INFINITY);
    for ((row, &ax), rm) in e.theta.chunks_exact(kh).zip(a.iter()).zip(row_min.iter_mut()) {
        let mut least = f64::INFINITY;
        for ((&t, &by), cm) in row.iter().zip(b.iter()).zip(col_min.iter_mut()) {
            let via_b = t + by;
            if via_b < least {
                least = via_b;
            }
            let via_a = t + ax;
            if via_a < *cm {
                *cm = via_a;
            }
        }
        *rm = least;
    }
    for x in 0..kg {
        let new = 0.5 * (row_min[x] - a[x]);
        reparam[sg + x] += new - e.to_g[x];
        e.to_g[x] = new;
    }
    for y in 0..kh {
        let new = 0.5 * (col_min[y] - b[y]);
        reparam[sh + y] += new - e.to_h[y];
        e.to_h[y] = new;
    }
}

/// Maximise Σ_g min_i(ũ_i + μ·c_i) − μ·C over μ ≥ 0, one price at a time, by bisection on the
/// subgradient (usage of the minimisers minus capacity): the function is concave in each price.
fn optimise_prices(qp: &ChoiceQp, rows: &[BudgetRow], reparam: &[f64], mu: &mut [f64]) {
    let groups = qp.sizes.len();
    let n = qp.n();
    // Each variable's cost without row r's price, then row r's coefficient: the usage and the
    // value at a trial price are one pass over those two arrays.
    let mut base = vec![0.0; n];
    for _round in 0..if rows.len() > 1 { 3 } else { 1 } {
        for r in 0..rows.len() {
            let coef = &rows[r].coef;
            for (i, b) in base.iter_mut().enumerate() {
                *b = reparam[i]
                    + rows
                        .iter()
                        .zip(mu.iter())
                        .enumerate()
                        .filter(|(k, _)| *k != r)
                        .map(|(_, (row, m))| m * row.coef[i])
                        .sum::<f64>();
            }
            // Usage of the minimisers at price p (ties: the cheaper option, so the subgradient
            // is the smallest one) and the priced minimum Σ_g min_i(base_i + p·c_i).
            let at = |p: f64| -> (f64, f64) {
                let mut usage = 0.0;
                let mut value = 0.0;
                for g in 0..groups {
                    let range = qp.group_range(g);
                    let mut best = range.start;
                    let mut best_cost = base[best] + p * coef[best];
                    for i in range.skip(1) {
                        let cost = base[i] + p * coef[i];
                        if cost < best_cost || (cost == best_cost && coef[i] < coef[best]) {
                            best = i;
                            best_cost = cost;
                        }
                    }
                    usage += coef[best];
                    value += best_cost;
                }
                (usage, value)
            };
            let cap = rows[r].capacity();
            if at(0.0).0 <= cap {
                mu[r] = 0.0;
                continue;
            }
            // Some price makes the cheapest options the minimisers: find one, then bisect.
            let spread = reparam
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()))
                .max(f64::MIN_POSITIVE);
            let least_coef = coef
                .iter()
                .fold(f64::INFINITY, |m, &c| if c > 0.0 { m.min(c) } else { m });
            let mut hi = (spread / least_coef.max(f64::MIN_POSITIVE)).max(f64::MIN_POSITIVE);
            let mut lo = 0.0;
            for _ in 0..200 {
                if at(hi).0 <= cap {
                    break;
                }
                lo = hi;
                hi *= 2.0;
            }
            // To a relative width of 1e-12: the bound moves by less than that times the
            // price's scale (60 halvings of an initial bracket that is usually within 2×).
            for _ in 0..60 {
                if hi - lo <= 1e-12 * hi {
                    break;
                }
                let mid = 0.5 * (lo + hi);
                if at(mid).0 > cap {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            // The maximum sits at the breakpoint between lo and hi: evaluate both, keep the better.
            let value = |p: f64| at(p).1 - p * cap;
            mu[r] = if value(lo) >= value(hi) { lo } else { hi };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search;
    use crate::synthetic;

    /// The bound is a sum of a few hundred terms; rounding may shift it by far less than this.
    const ROUNDING: f64 = 1e-9;

    #[test]
    fn the_bound_is_below_the_optimum_and_reduced_costs_are_sound() {
        for seed in 0..10 {
            let qp = synthetic::random_qp(6, 3, seed);
            let d = bound(&qp, &[], 1.0, usize::MAX, None);
            let (best, v) = search::enumerate(&qp, &[]).unwrap();
            assert!(
                d.bound <= v + ROUNDING,
                "seed {seed}: bound {} above optimum {v}",
                d.bound
            );
            // Every choice is worth at least the bound plus the floor of any of its options,
            // and plus the cost of any pair of them.
            let mut rng = synthetic::SplitMix64::new(seed);
            for _ in 0..50 {
                let c: Vec<usize> = qp.sizes.iter().map(|&k| rng.below(k)).collect();
                let idx = qp.indices(&c);
                let v = qp.value(&c);
                for &i in &idx {
                    assert!(v >= d.bound + d.floor[i] - ROUNDING);
                    for &j in idx.iter().filter(|&&j| j != i) {
                        assert!(d.allows(&qp, i, j, v + ROUNDING), "pair ({i}, {j}) wrongly excluded");
                    }
                }
            }
            let _ = best;
        }
    }
}
