//! What the solver tests share: small layer tables and brute-force enumeration of choices,
//! written independently of the solver's own search.

use allocate::problem::{Choice, Problem};
use clado::budget::Budget;
use clado::format::LayerInfo;

/// Sums of the same entries in different orders differ by rounding only: the solver's answers
/// must match the references to this relative precision (and the gaps the tests request, 1e-9,
/// are far below any difference between distinct choices of their instances).
pub const SAME_VALUE: f64 = 1e-9;

/// Conv layers `layer0`, `layer1`, … with these parameter counts and MACs per parameter
/// cycling through 16, 8, 4 (so that BOPs budgets differ from size budgets).
pub fn layers(params: &[u64]) -> Vec<LayerInfo> {
    params
        .iter()
        .enumerate()
        .map(|(i, &p)| LayerInfo {
            name: format!("layer{i}"),
            kind: "conv".into(),
            params: p,
            macs: p * (16 >> (i % 3)),
        })
        .collect()
}

/// Every choice of the free layers of `problem`, in odometer order (the first layer fastest).
pub fn all_choices(problem: &Problem) -> Vec<Choice> {
    let sizes: Vec<usize> = problem.groups.iter().map(|g| g.vars.len()).collect();
    let mut out = Vec::new();
    let mut choice = vec![0; sizes.len()];
    loop {
        out.push(choice.clone());
        let mut g = 0;
        loop {
            if g == sizes.len() {
                return out;
            }
            choice[g] += 1;
            if choice[g] < sizes[g] {
                break;
            }
            choice[g] = 0;
            g += 1;
        }
    }
}

/// The smallest `value` over every choice that meets all `budgets`, by enumeration (∞ if none).
#[allow(dead_code)] // each test binary compiles this module; exact.rs keeps the arg-min too
pub fn brute_force_min(problem: &Problem, budgets: &[Budget], value: impl Fn(&Choice) -> f64) -> f64 {
    all_choices(problem)
        .into_iter()
        .filter(|c| {
            budgets
                .iter()
                .all(|b| b.allows(&problem.layers, &problem.layer_options(c)))
        })
        .map(|c| value(&c))
        .fold(f64::INFINITY, f64::min)
}

/// `a` and `b` equal up to [`SAME_VALUE`] relative precision.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= SAME_VALUE * a.abs().max(b.abs()).max(1e-12)
}
