//! `allocate`: one quantization option per layer, minimising the predicted change xᵀGx of the
//! metric under budgets, solved exactly with a proven bound (docs/definitions.md, "The matrix G").
//!
//! # How a solve goes
//! 1. [`problem`]: index, matrix and pins are checked against each other; pinned layers fold
//!    into a [`problem::ChoiceQp`] over the free layers (min xᵀQx + bᵀx + c, one option per
//!    layer), budgets into [`problem::BudgetRow`]s. An infeasible budget stops here (exit 1).
//! 2. Incumbents ([`search`]): earlier answers of a sweep that still fit, a greedy fill by
//!    objective gained per budget spent, a local search over one- and two-layer moves, and
//!    later an iterated local search and a Lagrangian rounding.
//! 3. Exact reductions ([`reduce`], [`dual`]): options over budget or dominated by another
//!    option of their layer go; then a Lagrangian bound — the dual of the local-polytope
//!    relaxation, improved by MPLP's block-coordinate ascent with budget prices found by
//!    bisection — proves options and pairs of options worse than the incumbent (reduced-cost
//!    fixing, then probing each remaining option). Every removal keeps an optimal choice.
//! 4. The rest is enumerated when small ([`search::enumerate`]) or solved by SCIP ([`mip`]).
//! 5. The bound reported is the best of SCIP's and the Lagrangian bound, on the original
//!    objective; the gap is (objective − bound) / max(|objective|, |bound|).
//!
//! # Which formulation, measured
//! Seeded ResNet-shaped instances ([`synthetic`]: 22 and 58 layers × w{2,4,8}a{2,4,8},
//! indefinite dense G with λ_min ≈ −0.6 and −0.9), gap 1e-6, release build, on a shared 2-core
//! machine (load 3–11, so CPU seconds are given too), with `scripts/bench-allocate.sh`.
//!
//! Formulations on the whole problem (`--no-reduce`), ResNet-20, avg-bits 3, 5, 7, 30 s limit:
//!
//! | formulation | proven optimal | time or gap at the limit |
//! | --- | --- | --- |
//! | `product` (the seed's dense products; SCIP's AND linearisation) | 0 of 3 | gap 0.75–1.7 |
//! | `identity` (G + λI, λ = −λ_min(G), factored convex) | 0 of 3 | gap ≥ 1.0 |
//! | `projected` (one-hot-aware smallest shift, factored convex) | 0 of 3 | gap ≥ 1.0 |
//! | `linearized` (local polytope) | 3 of 3 | 5.2–8.6 s (CPU 1.7–3.3 s) |
//!
//! The convex forms fail because the PSD shift G needs (0.1–0.6 uniform; 1.7–3.8× the diagonal
//! when weighted by it) dwarfs the 8-bit entries, whose cross terms are estimation noise, and
//! the relaxation's bound falls below zero. On ResNet-56 even `linearized` proves nothing in
//! 30 s without reductions: its root LP has 52k columns.
//!
//! The default formulation, `auto`, uses `linearized` for these (indefinite) instances and the
//! `identity` convex form when G with its own within-layer entries ([`problem::ChoiceQp::within`],
//! free because they never count) is PSD, e.g. after `psd --method clip`: there the convex
//! relaxation is strong (the clipped 9-option matrix of an earlier training of the built-in model: gap 9.3e-5 in 57 s,
//! where `linearized` proves a negative bound).
//!
//! The default (`linearized` after the reductions), 60 s limit:
//! - ResNet-20, avg-bits=2:8:0.25: 25 of 25 proven optimal, median 0.10 s, max 0.32 s;
//!   bops=2e8:2e9:3e8: 7 of 7, max 0.21 s.
//! - ResNet-56, seed 1, avg-bits=2:8:0.5: 13 of 13, median 3.0 s, max 8.4 s (CPU 6.6 s);
//!   seed 3, avg-bits=2:8:1: 7 of 7, max 18 s; seed 2: 6 of 7, avg-bits=6 stops at the limit
//!   with gap 9.6e-3.
//! - ResNet-56, bops=1e9:8e9:1e9: 6 of 8 (max 43 s); bops=5e9 and 6e9 stop at the limit with
//!   gaps 4.8e-2 and 0.22. There the local-polytope relaxation itself is weak (root LP 0.149
//!   against the best answer 0.202; 300 s of SCIP lift the bound to 0.175 only).
//!
//! `constraints/nonlinear/assumeconvex` is never set. [`convex`] keeps the exact convex
//! reformulations (diagonal into the linear term, projection onto the one-hot affine hull,
//! smallest uniform or weighted shift, eigen-factorisation with a rigorous slack) for
//! comparison and for data where G is close to PSD.
//!
//! # Noise
//! With `--se` and `--confidence Z` the objective becomes an upper confidence bound of the
//! predicted change against the highest precision everywhere ([`problem::Problem::apply_confidence`]
//! has the derivation): G + Z·P, a quadratic form of the same shape, so every step above applies
//! unchanged, and alloc.json's `notes.confidence` reports the plain estimate beside the bound.
//!
//! # Model error
//! With `--pessimistic` the negative cross terms that are not x₀'s own count as 0
//! ([`problem::Problem::apply_pessimism`]): the pairwise model is exact for two layers, but its
//! benefits of interaction, summed over many pairs, extrapolate past anything measured. Also a
//! penalty added to G, so the solver is the same; `notes.pessimistic` reports what was ignored.
//!
//! [`run`] is the whole tool; `main.rs` only parses the command line.

pub mod bnb;
pub mod cli;
pub mod convex;
pub mod dual;
pub mod mip;
pub mod problem;
pub mod reduce;
pub mod relax;
pub mod sanity;
pub mod sdp;
pub mod search;
pub mod solve;
pub mod synthetic;

use clado::budget::Budget;
use clado::cli::Verbosity;
use clado::format::{Alloc, Index, LayerChoice, SolverReport, FORMAT_VERSION};
use clado::io::display_name;
use clado::{Error, Result};
use cli::Config;
use problem::{Choice, Problem};
use serde_json::{json, Value};
use solve::{Allocator, Solved, Stop};
use std::collections::BTreeMap;
use std::io::Write;

/// Read the inputs, solve, write the allocation(s). Every input is checked before solving.
pub fn run(config: &Config) -> Result<()> {
    let index_name = display_name(&config.index, false);
    let matrix_name = display_name(&config.matrix, false);
    let index: Index = clado::io::read_json(&config.index)?;
    let matrix = clado::io::read_matrix(&config.matrix)?;
    let mut problem = Problem::new(&index, &index_name, matrix, &matrix_name, &config.pins, config.naive)?;
    if let Some(path) = &config.se {
        problem.set_se(clado::io::read_matrix(path)?, &display_name(path, false))?;
        if config.confidence > 0.0 {
            problem.apply_confidence(config.confidence);
        }
    }
    if config.pessimistic {
        problem.apply_pessimism();
    }
    let allocator = Allocator::new(&problem, config.settings);
    match &config.sweep {
        None => {
            let solved = allocator.solve(&config.budgets, &[])?;
            let alloc = report(config, &problem, &config.budgets, &solved);
            clado::io::write_json(&config.output, &alloc)
        }
        Some(sweep) => run_sweep(config, &allocator, sweep),
    }
}

/// One solve per budget of the sweep, each warm-started from the answers before it. Infeasible
/// budgets are skipped with a warning; if every budget is infeasible, the last error stands.
fn run_sweep(config: &Config, allocator: &Allocator<'_>, sweep: &cli::Sweep) -> Result<()> {
    let problem = allocator.problem();
    let mut lines = Vec::new();
    let mut answers: Vec<Choice> = Vec::new();
    let mut last_infeasible = None;
    let to_stdout = config.output == "-";
    for &value in &sweep.values {
        let mut budgets = config.budgets.clone();
        budgets.push(Budget::from_kind(sweep.kind, value)?);
        // The previous answer fits a looser budget; the best earlier answers seed every solve.
        let warm: Vec<Choice> = answers.iter().rev().take(2).cloned().collect();
        match allocator.solve(&budgets, &warm) {
            Ok(solved) => {
                let line = clado::io::json_line(&report(config, problem, &budgets, &solved))?;
                answers.push(solved.choice);
                if to_stdout {
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .map_err(|e| Error::io("<stdout>", e))?;
                } else {
                    lines.push(line);
                }
            }
            Err(Error::Infeasible(msg)) => {
                if config.verbosity > Verbosity::Quiet {
                    eprintln!("allocate: warning: skipping {}={value}: {msg}", sweep.kind);
                }
                last_infeasible = Some(msg);
            }
            Err(e) => return Err(e),
        }
    }
    if answers.is_empty() {
        return Err(Error::Infeasible(
            last_infeasible.unwrap_or_else(|| "no budget in the sweep".into()),
        ));
    }
    if !to_stdout {
        clado::io::write_bytes(&config.output, lines.concat().as_bytes())?;
    }
    Ok(())
}

/// The alloc.json document of one solve, with its notes; logs the solve on stderr.
fn report(config: &Config, problem: &Problem, budgets: &[Budget], solved: &Solved) -> Alloc {
    let options = problem.layer_options(&solved.choice);
    let cost = clado::budget::cost(&problem.layers, &options);
    debug_assert!(
        budgets.iter().all(|b| b.allows(&problem.layers, &options)),
        "the answer meets every budget"
    );
    let budget = if budgets.is_empty() {
        "none".to_string()
    } else {
        solve::budget_label(budgets)
    };
    let mut notes: BTreeMap<String, Value> = BTreeMap::new();
    notes.insert("method".into(), json!(solved.method));
    notes.insert("nodes".into(), json!(solved.nodes));
    notes.insert("options_removed".into(), json!(solved.removed));
    if solved.shift != 0.0 {
        notes.insert("diagonal_shift".into(), json!(solved.shift));
    }
    if let Some(c) = problem.confidence_report(&solved.choice, config.confidence) {
        let mut value = serde_json::to_value(&c).expect("plain data serialises");
        let rule = if config.confidence > 0.0 {
            "minimised delta_vs_highest + z·delta_vs_highest_se_bound (allocate --help, Noise)"
        } else {
            "plain objective; standard errors reported only"
        };
        value["rule"] = json!(rule);
        notes.insert("confidence".into(), value);
    }
    if config.pessimistic {
        notes.insert(
            "pessimistic".into(),
            json!({
                "ignored_benefit": problem.ignored_benefit(&solved.choice),
                "rule": "negative cross terms not x₀'s own counted as 0 (allocate --help, Model error)",
            }),
        );
    }
    if !config.pins.is_empty() {
        let pins: BTreeMap<&str, &str> = config.pins.iter().map(|(l, o)| (l.as_str(), o.as_str())).collect();
        notes.insert("pinned".into(), json!(pins));
    }
    if problem.naive {
        notes.insert(
            "naive".into(),
            json!("optimised the diagonal of G only; solver.objective is Σ G[v,v], predicted_delta the whole xᵀGx"),
        );
    }
    let label = solve::budget_label(budgets);
    if config.verbosity >= Verbosity::Verbose {
        eprintln!(
            "allocate: {label}: {} in {:.3} s ({}, {} nodes, {} options removed): objective {:.9e}, bound {:.9e}, gap {:.2e}",
            solved.stop.as_str(),
            solved.seconds,
            solved.method,
            solved.nodes,
            solved.removed,
            solved.objective,
            solved.bound,
            solved.gap
        );
    }
    if solved.stop == Stop::TimeLimit || solved.gap > config.settings.gap {
        let msg = format!(
            "{label}: stopped ({}) after {:.1} s with gap {:.3e} (objective {:.6e}, proven bound {:.6e}); writing the best allocation found",
            solved.stop.as_str(),
            solved.seconds,
            solved.gap,
            solved.objective,
            solved.bound
        );
        eprintln!("allocate: warning: {msg}");
        notes.insert("warning".into(), json!(msg));
    }
    if budgets.is_empty() {
        let sanity = sanity::check(problem, &solved.choice);
        if config.verbosity > Verbosity::Quiet {
            eprintln!("allocate: {}", sanity.summary());
        }
        notes.insert(
            "sanity".into(),
            serde_json::to_value(&sanity).expect("plain data serialises"),
        );
    }
    Alloc {
        version: FORMAT_VERSION,
        layers: problem
            .layers
            .iter()
            .zip(&options)
            .map(|(l, o)| LayerChoice {
                name: l.name.clone(),
                option: o.to_string(),
                w_bits: o.w_bits,
                a_bits: o.a_bits,
            })
            .collect(),
        predicted_delta: problem.predicted_delta(&solved.choice),
        size_bits: cost.size_bits,
        avg_w_bits: cost.avg_w_bits,
        bops: cost.bops,
        budget,
        solver: SolverReport {
            status: solved.stop.as_str().into(),
            objective: solved.objective,
            bound: solved.bound,
            gap: solved.gap,
            seconds: solved.seconds,
        },
        notes,
    }
}
