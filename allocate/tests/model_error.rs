//! The model-error rule (`--pessimistic`): what it minimises is the pairwise prediction with the
//! benefits of interaction dropped (an upper estimate relative to x₀), the solver minimises it
//! exactly, and on a model whose true Δ saturates it keeps the answer at the highest precision
//! where the plain pairwise model extrapolates into predictions no loss can reach.

mod common;

use allocate::problem::{Choice, Problem};
use allocate::solve::{Allocator, Settings};
use allocate::synthetic::{perturbation_instance, SplitMix64};
use clado::budget::Budget;
use clado::options::QuantOption;
use common::{all_choices, brute_force_min, close, layers, SAME_VALUE};
use ndarray::Array2;

fn settings() -> Settings {
    Settings {
        gap: 1e-9,
        ..Settings::default()
    }
}

/// A perturbation-like instance with cross terms of both signs, as large as the diagonal.
fn mixed_instance(seed: u64) -> Problem {
    let options = QuantOption::parse_list("w2a8,w4a8,w8a8").unwrap();
    let (mut g, index) = perturbation_instance("test", &layers(&[144, 2304, 2304, 4608, 640]), &options, seed);
    let (n, k) = (g.nrows(), options.len());
    let scale = g.diag().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    for u in 0..n {
        for v in u + 1..n {
            if u / k != v / k {
                let x = 0.4 * scale * rng.normal() / (n as f64).sqrt();
                g[[u, v]] += x;
                g[[v, u]] += x;
            }
        }
    }
    Problem::new(&index, "index.json", g, "G.npy", &[], false).unwrap()
}

#[test]
fn the_objective_is_the_prediction_without_the_benefits_of_interaction() {
    for seed in 0..3 {
        let mut problem = mixed_instance(seed);
        // Sums of the same entries in different orders: equal up to rounding of Σ|G|.
        let scale: f64 = problem.matrix.iter().map(|v| v.abs()).sum();
        let near = |a: f64, b: f64| (a - b).abs() <= SAME_VALUE * scale;
        let highest = problem.highest_precision();
        let before = problem.objective(&highest);
        problem.apply_pessimism();
        // x₀ keeps its score: the rule only changes entries that are not x₀'s own.
        assert!(near(problem.objective(&highest), before));
        assert_eq!(problem.ignored_benefit(&highest), 0.0);
        for choice in all_choices(&problem) {
            let delta = problem.predicted_delta(&choice) - problem.predicted_delta(&highest);
            let ignored = problem.ignored_benefit(&choice);
            let pessimistic = problem.objective(&choice) - problem.objective(&highest);
            // Independently: every cross entry of x that is not x₀'s own, clipped at 0.
            let x0 = problem.chosen_vars(&highest);
            let vars = problem.chosen_vars(&choice);
            let mut expected = -problem.predicted_delta(&highest);
            for &u in &vars {
                for &v in &vars {
                    let g = problem.matrix[[u, v]];
                    let own = x0.contains(&u) && x0.contains(&v);
                    let cross = problem.var_layer[u] != problem.var_layer[v];
                    expected += if cross && !own { g.max(0.0) } else { g };
                }
            }
            assert!(ignored <= 0.0, "{choice:?}: ignored {ignored}");
            assert!(
                close(pessimistic, delta - ignored),
                "{choice:?}: {pessimistic} vs {delta} − {ignored}"
            );
            assert!(near(pessimistic, expected), "{choice:?}: {pessimistic} vs {expected}");
            assert!(pessimistic >= delta - 1e-12, "{choice:?}: below the plain prediction");
        }
    }
}

#[test]
fn the_solver_minimises_the_pessimistic_objective_exactly() {
    for seed in 0..3 {
        let mut problem = mixed_instance(seed);
        problem.apply_pessimism();
        for budgets in [vec![], vec![Budget::AvgBits(4.0)], vec![Budget::AvgBits(6.0)]] {
            let best = brute_force_min(&problem, &budgets, |c| problem.objective(c));
            let solved = Allocator::new(&problem, settings()).solve(&budgets, &[]).unwrap();
            let got = problem.objective(&solved.choice);
            assert!(
                close(got, best),
                "seed {seed}, {budgets:?}: solver {got} vs brute force {best}"
            );
        }
    }
}

/// C of the saturating model: its true Δ lies in [0, C) for every choice.
const SATURATION: f64 = 1.0;
/// Rounding of the objective's f64 sums over 5 layers (entries of order 1).
const SUM_ROUNDING: f64 = 1e-9;

/// A model whose true Δ saturates: Δ(S) = C·(1 − exp(−A(S)/C)) with A additive over the chosen
/// options (a cross-entropy cannot grow without bound). G holds its exact singles and pairs,
/// as a noise-free `perturb` would measure them: every cross term is negative, and their sum
/// over many layers is far below anything Δ can reach.
fn saturating_model(layers_count: usize, seed: u64) -> (Problem, impl Fn(&Problem, &Choice) -> f64) {
    const C: f64 = SATURATION;
    let options = QuantOption::parse_list("w2a8,w4a8,w8a8").unwrap();
    let params = vec![2304u64; layers_count];
    let (_, index) = perturbation_instance("saturating", &layers(&params), &options, seed);
    let mut rng = SplitMix64::new(seed);
    // A per variable: 2 bits hurt a lot, 4 bits some, 8 bits almost nothing.
    let a: Vec<f64> = index
        .variables
        .iter()
        .map(|v| [0.8, 0.15, 1e-3][v.option] * (0.5 + rng.uniform()))
        .collect();
    let f = |x: f64| C * (1.0 - (-x / C).exp());
    let n = a.len();
    let mut g = Array2::zeros((n, n));
    for u in 0..n {
        g[[u, u]] = f(a[u]);
        for v in 0..n {
            if index.variables[u].layer != index.variables[v].layer {
                g[[u, v]] = (f(a[u] + a[v]) - f(a[u]) - f(a[v])) / 2.0;
            }
        }
    }
    let problem = Problem::new(&index, "index.json", g, "G.npy", &[], false).unwrap();
    let truth = move |p: &Problem, choice: &Choice| f(p.chosen_vars(choice).iter().map(|&v| a[v]).sum());
    (problem, truth)
}

#[test]
fn on_a_saturating_model_the_rule_stays_at_the_highest_precision() {
    for seed in 0..5 {
        let (mut problem, truth) = saturating_model(12, seed);
        let highest = problem.highest_precision();
        let plain = Allocator::new(&problem, settings()).solve(&[], &[]).unwrap().choice;
        // The pairwise model extrapolates: its unconstrained optimum leaves 8 bits and predicts
        // a change below −C, although every true change lies in [0, C).
        assert_ne!(
            plain, highest,
            "seed {seed}: the plain rule stayed at the highest precision"
        );
        let predicted = problem.predicted_delta(&plain);
        assert!(
            predicted < -SATURATION,
            "seed {seed}: predicted {predicted}, not below −C = {}",
            -SATURATION
        );
        assert!(truth(&problem, &plain) > truth(&problem, &highest));
        problem.apply_pessimism();
        let pessimistic = Allocator::new(&problem, settings()).solve(&[], &[]).unwrap().choice;
        assert_eq!(pessimistic, highest, "seed {seed}");
    }
    // Relative to x₀ the rule's estimate is above the true change for every choice (all 3⁵).
    for seed in 0..5 {
        let (mut small, truth) = saturating_model(5, seed);
        small.apply_pessimism();
        let highest = small.highest_precision();
        let (offset, base) = (small.objective(&highest), truth(&small, &highest));
        for choice in all_choices(&small) {
            let estimate = small.objective(&choice) - offset;
            let actual = truth(&small, &choice) - base;
            assert!(
                estimate >= actual - SUM_ROUNDING,
                "seed {seed} {choice:?}: estimate {estimate} below the true change {actual}"
            );
        }
    }
}
