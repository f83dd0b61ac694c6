//! Search without a solver: exact enumeration for small problems, and a local search that gives
//! the solver a good first incumbent.

use crate::problem::{BudgetRow, Choice, ChoiceQp};

/// Problems with at most this many choices are enumerated exactly.
pub const ENUMERATION_LIMIT: f64 = 2e5;

/// Enumeration is refused beyond this many choices, even when asked for: it would not finish.
pub const ENUMERATION_REFUSED: f64 = 1e9;

/// The number of choices of `qp` (as a float: it overflows integers quickly).
pub fn choices(qp: &ChoiceQp) -> f64 {
    qp.sizes.iter().map(|&k| k as f64).product()
}

/// Whether a choice meets every budget row.
pub fn feasible(qp: &ChoiceQp, rows: &[BudgetRow], choice: &[usize]) -> bool {
    rows.iter().all(|r| r.usage(qp, choice) <= r.capacity())
}

/// The exact minimum by depth-first enumeration (ties: the first choice in lexicographic order).
/// Partial choices that cannot meet a budget even at the cheapest remaining options are cut.
/// `None` when no choice meets the budgets.
pub fn enumerate(qp: &ChoiceQp, rows: &[BudgetRow]) -> Option<(Choice, f64)> {
    let groups = qp.sizes.len();
    // Least usage of groups g.. for every row, to cut infeasible branches.
    let tail_min: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let mut t = vec![0.0; groups + 1];
            for g in (0..groups).rev() {
                t[g] = t[g + 1] + qp.group_range(g).map(|i| r.coef[i]).fold(f64::INFINITY, f64::min);
            }
            t
        })
        .collect();
    let mut best: Option<(Choice, f64)> = None;
    let mut choice = vec![0; groups];
    let mut used = vec![0.0; rows.len()];
    descend(qp, rows, &tail_min, 0, qp.constant, &mut choice, &mut used, &mut best);
    best
}

#[allow(clippy::too_many_arguments)]
fn descend(
    qp: &ChoiceQp,
    rows: &[BudgetRow],
    tail_min: &[Vec<f64>],
    g: usize,
    value: f64,
    choice: &mut Choice,
    used: &mut [f64],
    best: &mut Option<(Choice, f64)>,
) {
    if g == qp.sizes.len() {
        if best.as_ref().is_none_or(|(_, b)| value < *b) {
            *best = Some((choice.clone(), value));
        }
        return;
    }
    for i in 0..qp.sizes[g] {
        let v = qp.starts[g] + i;
        if rows
            .iter()
            .zip(used.iter())
            .enumerate()
            .any(|(r, (row, u))| u + row.coef[v] + tail_min[r][g + 1] > row.capacity())
        {
            continue;
        }
        let cross: f64 = (0..g).map(|h| qp.quad[[v, qp.starts[h] + choice[h]]]).sum();
        for (r, row) in rows.iter().enumerate() {
            used[r] += row.coef[v];
        }
        choice[g] = i;
        descend(
            qp,
            rows,
            tail_min,
            g + 1,
            value + qp.quad[[v, v]] + qp.linear[v] + 2.0 * cross,
            choice,
            used,
            best,
        );
        for (r, row) in rows.iter().enumerate() {
            used[r] -= row.coef[v];
        }
    }
}

/// The choice of least usage under the first row (ties broken by the others), or the first
/// option everywhere without rows: a starting point that is feasible whenever one budget is.
pub fn cheapest(qp: &ChoiceQp, rows: &[BudgetRow]) -> Choice {
    (0..qp.sizes.len())
        .map(|g| {
            qp.group_range(g)
                .min_by(|&a, &b| {
                    let key = |i: usize| rows.iter().map(|r| r.coef[i]).collect::<Vec<f64>>();
                    key(a).partial_cmp(&key(b)).expect("finite coefficients")
                })
                .map(|i| i - qp.starts[g])
                .unwrap_or(0)
        })
        .collect()
}

/// Make a choice feasible: while a budget is exceeded, make the one-layer change that saves
/// the most budget (normalised by capacity, summed over the exceeded rows) per unit of
/// objective it costs. Returns `None` if no change helps any more.
pub fn repair(qp: &ChoiceQp, rows: &[BudgetRow], start: &[usize]) -> Option<Choice> {
    let mut choice = start.to_vec();
    for _ in 0..=qp.n() {
        let used: Vec<f64> = rows.iter().map(|r| r.usage(qp, &choice)).collect();
        let over: Vec<bool> = rows.iter().zip(&used).map(|(r, u)| *u > r.capacity()).collect();
        if !over.iter().any(|o| *o) {
            return Some(choice);
        }
        let value = qp.value(&choice);
        let mut best: Option<(f64, usize, usize)> = None;
        for g in 0..qp.sizes.len() {
            let from = choice[g];
            for to in 0..qp.sizes[g] {
                let saved: f64 = rows
                    .iter()
                    .zip(&over)
                    .filter(|(_, o)| **o)
                    .map(|(r, _)| {
                        (r.coef[qp.starts[g] + from] - r.coef[qp.starts[g] + to]) / r.capacity().abs().max(1.0)
                    })
                    .sum();
                if to == from || saved <= 0.0 {
                    continue;
                }
                let mut next = choice.clone();
                next[g] = to;
                let cost = (qp.value(&next) - value).max(0.0);
                let score = saved / (cost + f64::MIN_POSITIVE);
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, g, to));
                }
            }
        }
        let (_, g, to) = best?;
        choice[g] = to;
    }
    None
}

/// Improve a feasible choice greedily: repeatedly make the one-layer change with the largest
/// decrease of the objective per unit of budget used (budgets normalised by their capacity;
/// changes that use no budget first), as long as one fits. Then [`local_search`].
pub fn greedy(qp: &ChoiceQp, rows: &[BudgetRow], start: &[usize]) -> Choice {
    let n = qp.n();
    let groups = qp.sizes.len();
    let mut choice = start.to_vec();
    let mut used: Vec<f64> = rows.iter().map(|r| r.usage(qp, &choice)).collect();
    let mut field: Vec<f64> = (0..n)
        .map(|v| (0..groups).map(|h| qp.quad[[v, qp.starts[h] + choice[h]]]).sum())
        .collect();
    let tolerance = 1e-12 * qp.scale().max(f64::MIN_POSITIVE);
    for _ in 0..(n * groups).max(1) {
        let mut best: Option<(f64, usize, usize)> = None;
        for g in 0..groups {
            let from = qp.starts[g] + choice[g];
            for to in qp.group_range(g).filter(|&t| t != from) {
                if !rows
                    .iter()
                    .zip(&used)
                    .all(|(r, u)| u + r.coef[to] - r.coef[from] <= r.capacity())
                {
                    continue;
                }
                let d = qp.quad[[to, to]] - qp.quad[[from, from]] + qp.linear[to] - qp.linear[from]
                    + 2.0 * (field[to] - (field[from] - qp.quad[[from, from]]));
                if d >= -tolerance {
                    continue;
                }
                let spend: f64 = rows
                    .iter()
                    .map(|r| (r.coef[to] - r.coef[from]) / r.capacity().abs().max(1.0))
                    .sum();
                // Decrease per unit spent; free or budget-saving improvements rank first.
                let score = if spend <= 0.0 { f64::INFINITY } else { -d / spend };
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, g, to));
                }
            }
        }
        let Some((_, g, to)) = best else { break };
        let from = qp.starts[g] + choice[g];
        for (r, row) in rows.iter().enumerate() {
            used[r] += row.coef[to] - row.coef[from];
        }
        for v in 0..n {
            field[v] += qp.quad[[v, to]] - qp.quad[[v, from]];
        }
        choice[g] = to - qp.starts[g];
    }
    local_search(qp, rows, &choice)
}

/// Iterated local search: from the best choice so far, change a few random layers, repair the
/// budgets, improve greedily and locally; keep the result when it is better. `rounds` rounds,
/// seeded, so the result is deterministic (unless `deadline` stops it early).
pub fn iterated(
    qp: &ChoiceQp,
    rows: &[BudgetRow],
    start: &[usize],
    rounds: usize,
    seed: u64,
    deadline: std::time::Instant,
) -> Choice {
    let mut rng = crate::synthetic::SplitMix64::new(seed);
    let mut best = start.to_vec();
    let mut best_value = qp.value(&best);
    let groups = qp.sizes.len();
    for round in 0..rounds {
        if std::time::Instant::now() > deadline {
            break;
        }
        let mut trial = best.clone();
        let kicks = 2 + round % 4;
        for _ in 0..kicks.min(groups) {
            let g = rng.below(groups);
            trial[g] = rng.below(qp.sizes[g]);
        }
        let Some(fixed) = repair(qp, rows, &trial) else {
            continue;
        };
        let candidate = greedy(qp, rows, &fixed);
        let value = qp.value(&candidate);
        if value < best_value && feasible(qp, rows, &candidate) {
            best = candidate;
            best_value = value;
        }
    }
    best
}

/// Improve a feasible choice by moves of one layer, then of two layers at once (trading budget
/// between them), until no such move lowers the objective. Deterministic.
pub fn local_search(qp: &ChoiceQp, rows: &[BudgetRow], start: &[usize]) -> Choice {
    let n = qp.n();
    let groups = qp.sizes.len();
    let mut choice = start.to_vec();
    let mut used: Vec<f64> = rows.iter().map(|r| r.usage(qp, &choice)).collect();
    // field[v] = Σ_h quad[v, chosen_h] over every group h.
    let mut field: Vec<f64> = (0..n)
        .map(|v| (0..groups).map(|h| qp.quad[[v, qp.starts[h] + choice[h]]]).sum())
        .collect();
    // Value change when a group moves from variable `from` to `to` of the same group (whose
    // cross entry quad[to, from] is zero).
    let gain = |field: &[f64], from: usize, to: usize| -> f64 {
        qp.quad[[to, to]] - qp.quad[[from, from]] + qp.linear[to] - qp.linear[from]
            + 2.0 * (field[to] - (field[from] - qp.quad[[from, from]]))
    };
    let fits = |used: &[f64], deltas: &[(usize, usize)]| {
        rows.iter()
            .zip(used)
            .all(|(r, u)| u + deltas.iter().map(|&(to, from)| r.coef[to] - r.coef[from]).sum::<f64>() <= r.capacity())
    };
    let apply = |choice: &mut Choice, used: &mut Vec<f64>, field: &mut Vec<f64>, g: usize, to: usize| {
        let from = qp.starts[g] + choice[g];
        for (r, row) in rows.iter().enumerate() {
            used[r] += row.coef[to] - row.coef[from];
        }
        for v in 0..n {
            field[v] += qp.quad[[v, to]] - qp.quad[[v, from]];
        }
        choice[g] = to - qp.starts[g];
    };
    let tolerance = 1e-12 * qp.scale().max(f64::MIN_POSITIVE);
    for _round in 0..1000 {
        let mut improved = false;
        for g in 0..groups {
            let from = qp.starts[g] + choice[g];
            let best = qp
                .group_range(g)
                .filter(|&to| to != from && fits(&used, &[(to, from)]))
                .map(|to| (gain(&field, from, to), to))
                .min_by(|a, b| a.partial_cmp(b).expect("finite"));
            if let Some((d, to)) = best {
                if d < -tolerance {
                    apply(&mut choice, &mut used, &mut field, g, to);
                    improved = true;
                }
            }
        }
        if improved {
            continue;
        }
        // Pairs: move g and h together (the cross term of the two moves is corrected exactly).
        let mut best: Option<(f64, usize, usize, usize, usize)> = None;
        for g in 0..groups {
            let fg = qp.starts[g] + choice[g];
            for tg in qp.group_range(g).filter(|&t| t != fg) {
                let dg = gain(&field, fg, tg);
                for h in g + 1..groups {
                    let fh = qp.starts[h] + choice[h];
                    for th in qp.group_range(h).filter(|&t| t != fh) {
                        let dh = gain(&field, fh, th);
                        let cross =
                            2.0 * (qp.quad[[tg, th]] - qp.quad[[tg, fh]] - qp.quad[[fg, th]] + qp.quad[[fg, fh]]);
                        let d = dg + dh + cross;
                        if d < -tolerance && best.is_none_or(|b| d < b.0) && fits(&used, &[(tg, fg), (th, fh)]) {
                            best = Some((d, g, tg, h, th));
                        }
                    }
                }
            }
        }
        match best {
            Some((_, g, tg, h, th)) => {
                apply(&mut choice, &mut used, &mut field, g, tg);
                apply(&mut choice, &mut used, &mut field, h, th);
            }
            None => break,
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn local_search_never_worsens_and_stays_feasible() {
        let qp = synthetic::random_qp(8, 4, 5);
        let start = vec![0; 8];
        let better = local_search(&qp, &[], &start);
        assert!(qp.value(&better) <= qp.value(&start));
        let (best, v) = enumerate(&qp, &[]).unwrap();
        assert!(v <= qp.value(&better));
        assert_eq!(qp.value(&best), v);
    }
}
