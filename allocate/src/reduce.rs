//! Exact problem reduction by dominance: an option that is never better than another option of
//! the same layer, whatever the other layers choose, and uses at least as much of every budget,
//! can be removed without losing every optimal choice.
//!
//! Option i of layer g is dominated by option j of the same layer when
//!   coef_r(i) ≥ coef_r(j) for every budget row r, and
//!   (Q_ii + b_i) − (Q_jj + b_j) + 2 Σ_{h≠g} min_{k∈h} (Q_ik − Q_jk) ≥ 0,
//! the last sum running over the options of every other layer still alive. Removals repeat
//! until none applies (each makes the minima of the others larger, so more may follow).
//! Options are removed one at a time, so of two equivalent options one always stays.
//!
//! Before that, options that cannot meet a budget even with every other layer at its cheapest
//! option are removed (they are in no feasible choice).

use crate::problem::{BudgetRow, Choice, ChoiceQp};
use ndarray::Array2;

/// A smaller problem and the way back to the original one.
#[derive(Clone, Debug)]
pub struct Reduction {
    pub qp: ChoiceQp,
    pub rows: Vec<BudgetRow>,
    /// Per group, the original positions of the options kept.
    pub kept: Vec<Vec<usize>>,
    /// How many options were removed.
    pub removed: usize,
}

impl Reduction {
    /// The original choice of a reduced one.
    pub fn lift(&self, choice: &[usize]) -> Choice {
        choice.iter().enumerate().map(|(g, &i)| self.kept[g][i]).collect()
    }

    /// The reduced choice of an original one, if it uses kept options only.
    pub fn project(&self, choice: &[usize]) -> Option<Choice> {
        choice
            .iter()
            .enumerate()
            .map(|(g, &i)| self.kept[g].iter().position(|&k| k == i))
            .collect()
    }

    /// The problem restricted to the variables marked alive (every group keeps one at least).
    pub fn keep(qp: &ChoiceQp, rows: &[BudgetRow], alive: &[bool]) -> Reduction {
        Reduction::build(qp, rows, alive)
    }

    /// This reduction followed by `inner`, a reduction of this one's problem.
    pub fn then(&self, inner: Reduction) -> Reduction {
        let kept = inner
            .kept
            .iter()
            .enumerate()
            .map(|(g, k)| k.iter().map(|&i| self.kept[g][i]).collect())
            .collect();
        Reduction {
            qp: inner.qp,
            rows: inner.rows,
            kept,
            removed: self.removed + inner.removed,
        }
    }

    fn build(qp: &ChoiceQp, rows: &[BudgetRow], alive: &[bool]) -> Reduction {
        let groups = qp.sizes.len();
        let kept: Vec<Vec<usize>> = (0..groups)
            .map(|g| (0..qp.sizes[g]).filter(|&i| alive[qp.starts[g] + i]).collect())
            .collect();
        let vars: Vec<usize> = (0..groups)
            .flat_map(|g| kept[g].iter().map(move |&i| (g, i)))
            .map(|(g, i)| qp.starts[g] + i)
            .collect();
        let m = vars.len();
        let quad = Array2::from_shape_fn((m, m), |(a, b)| qp.quad[[vars[a], vars[b]]]);
        let linear = vars.iter().map(|&v| qp.linear[v]).collect();
        let mut reduced = ChoiceQp::new(kept.iter().map(Vec::len).collect(), quad, linear, qp.constant);
        reduced.within = qp
            .within
            .as_ref()
            .map(|w| Array2::from_shape_fn((m, m), |(a, b)| w[[vars[a], vars[b]]]));
        let rows = rows
            .iter()
            .map(|r| BudgetRow {
                coef: vars.iter().map(|&v| r.coef[v]).collect(),
                ..r.clone()
            })
            .collect();
        let removed = alive.iter().filter(|a| !**a).count();
        Reduction {
            qp: reduced,
            rows,
            kept,
            removed,
        }
    }
}

/// Remove options that are infeasible or dominated (see the module documentation).
pub fn dominance(qp: &ChoiceQp, rows: &[BudgetRow]) -> Reduction {
    let n = qp.n();
    let groups = qp.sizes.len();
    let mut alive = vec![true; n];
    for r in rows {
        let least: Vec<f64> = (0..groups)
            .map(|g| qp.group_range(g).map(|i| r.coef[i]).fold(f64::INFINITY, f64::min))
            .collect();
        let total: f64 = least.iter().sum();
        for g in 0..groups {
            for i in qp.group_range(g) {
                if total - least[g] + r.coef[i] > r.capacity() {
                    alive[i] = false;
                }
            }
        }
    }
    loop {
        let mut changed = false;
        for g in 0..groups {
            for i in qp.group_range(g) {
                if !alive[i] {
                    continue;
                }
                let dominated = qp.group_range(g).any(|j| {
                    j != i
                        && alive[j]
                        && rows.iter().all(|r| r.coef[i] >= r.coef[j])
                        && never_better(qp, &alive, g, i, j)
                });
                if dominated {
                    alive[i] = false;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    Reduction::build(qp, rows, &alive)
}

/// Whether option i of group g is never better than option j, whatever the other groups choose.
fn never_better(qp: &ChoiceQp, alive: &[bool], g: usize, i: usize, j: usize) -> bool {
    let mut d = qp.quad[[i, i]] + qp.linear[i] - qp.quad[[j, j]] - qp.linear[j];
    for h in (0..qp.sizes.len()).filter(|&h| h != g) {
        let worst = qp
            .group_range(h)
            .filter(|&k| alive[k])
            .map(|k| qp.quad[[i, k]] - qp.quad[[j, k]])
            .fold(f64::INFINITY, f64::min);
        d += 2.0 * worst;
    }
    d >= 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search;
    use crate::synthetic;

    /// Values of the same choice computed from the original and the reduced data: the same
    /// numbers summed in a different order.
    const SAME: f64 = 1e-12;

    #[test]
    fn reduction_keeps_the_optimum() {
        for seed in 0..20 {
            let qp = synthetic::random_qp(5, 4, seed);
            let red = dominance(&qp, &[]);
            let (full, v_full) = search::enumerate(&qp, &[]).unwrap();
            let (small, v_small) = search::enumerate(&red.qp, &red.rows).unwrap();
            assert!(
                (v_full - v_small).abs() <= SAME * qp.scale(),
                "seed {seed}: {v_full} vs {v_small}"
            );
            assert!((qp.value(&red.lift(&small)) - v_small).abs() <= SAME * qp.scale());
            let _ = full;
        }
    }
}
