//! Solving one allocation: infeasibility first, a heuristic incumbent, then exact enumeration
//! or SCIP, and an honest account of the bound and the gap on the original objective.

use crate::convex::{convexify, Convexification, Weights};
use crate::dual;
use crate::mip::{self, Limits, Objective};
use crate::problem::{BudgetRow, Choice, ChoiceQp, Problem};
use crate::reduce;
use crate::search;
use clado::budget::{Budget, BITS_PER_MB};
use clado::{Error, Result};
use std::time::Instant;

/// Gaps are relative to max(|objective|, |bound|), floored at this fraction of the largest
/// entry of the data, so that an objective of (nearly) zero does not make every gap infinite.
pub const GAP_FLOOR: f64 = 1e-9;

/// Options are removed when the dual bound proves them worse than the incumbent by more than
/// this fraction of the data's scale per layer: far above the rounding of the bound's sums.
pub const DUAL_MARGIN: f64 = 1e-12;

/// The default of `--gap`, and the gap within which the branch and bound calls a solve optimal
/// (as SCIP does within its tolerances): one part in a million of the objective.
pub const OPTIMALITY_GAP: f64 = 1e-6;

/// Sweeps of the dual bound when probing one forced option.
pub const PROBE_SWEEPS: usize = 40;

/// Rounds of the iterated local search for a first incumbent.
pub const ITERATED_ROUNDS: usize = 200;

/// Share of the time limit the Lagrangian bound may use before the search.
pub const DUAL_SHARE: f64 = 0.2;

/// Share of the time limit [`Formulation::Auto`] gives the linearisation on a PSD matrix before
/// it turns to the convex form (10 s of the default 60 s).
pub const AUTO_LINEARIZED_SHARE: f64 = 1.0 / 6.0;

/// [`AUTO_LINEARIZED_SHARE`] when the Lagrangian bound of the local polytope (the
/// linearisation's own relaxation, [`crate::dual`]) leaves a relative gap above 1 to the
/// incumbent, i.e. lies below 0 under a positive incumbent (2 s of the default 60 s). On the
/// clipped 9-option matrix of an earlier training of the built-in model (bound −5.39 against 0.134 at avg-bits 4) the
/// linearisation never closes, and its 1/6 was a third of `auto`'s time; the PSD matrices of
/// `make demo` it does close (3 options, bounds below 0 too after `clip`) take ≤ 1.3 s in all,
/// unchanged.
pub const AUTO_LINEARIZED_SHARE_WEAK: f64 = 1.0 / 30.0;

/// Share of the time limit the semidefinite relaxation's ADMM may take ([`crate::sdp`]).
pub const SDP_SHARE: f64 = 0.15;

/// Which way to solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Enumerate when there are at most [`search::ENUMERATION_LIMIT`] choices; else, when G
    /// with its within-layer entries is convex and [`Formulation::Auto`] is asked for,
    /// [`Method::BranchAndBound`] (after the linearisation for [`AUTO_LINEARIZED_SHARE`] of the
    /// time unless the Lagrangian bound is weak); else SCIP.
    Auto,
    /// Exact enumeration, whatever the size.
    Enumerate,
    /// SCIP, whatever the size.
    Scip,
    /// Our branch and bound on the convex relaxation ([`crate::bnb`]), whatever the size and
    /// the matrix (a G not convex with its within-layer entries is shifted until it is: exact,
    /// with a weaker relaxation). [`Method::Auto`] uses it when G is convex.
    BranchAndBound,
}

/// How alloc.json names [`Method::BranchAndBound`]'s solves.
pub const BRANCH_AND_BOUND: &str = "branch-and-bound";

/// The SCIP formulation of the objective (see [`mip::Objective`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formulation {
    /// The default: [`Formulation::Linearized`]; when G, with its own entries between options
    /// of one layer ([`ChoiceQp::within`]), is positive semidefinite, the linearisation for
    /// [`AUTO_LINEARIZED_SHARE`] of the time limit ([`AUTO_LINEARIZED_SHARE_WEAK`] when its
    /// Lagrangian bound is weak) and then, unless it has finished,
    /// [`Formulation::Convex`] with the identity shift from its best choice. (After `psd
    /// --method shift` the linearisation proves optimality in under a second and the identity
    /// form's relaxation is weak; after `psd --method clip` with 9 options only the convex form
    /// closes.)
    Auto,
    /// The local-polytope linearisation (the fastest measured on indefinite G).
    Linearized,
    /// Dense products of binaries, as the seed wrote them.
    Product,
    /// A factored convex form after an exact convexification (`sdp`: within-layer terms from
    /// the semidefinite relaxation, [`crate::sdp`]).
    Convex {
        convexification: Convexification,
        split: bool,
    },
}

impl Formulation {
    /// Every formulation by name, for `--formulation` and the benchmark.
    pub const ALL: [(&'static str, Formulation); 13] = [
        ("auto", Formulation::Auto),
        ("linearized", Formulation::Linearized),
        ("product", Formulation::Product),
        ("projected", convex(Convexification::Projected(Weights::Uniform), false)),
        (
            "projected-split",
            convex(Convexification::Projected(Weights::Uniform), true),
        ),
        (
            "projected-rows",
            convex(Convexification::Projected(Weights::RowSums), false),
        ),
        (
            "projected-rows-split",
            convex(Convexification::Projected(Weights::RowSums), true),
        ),
        (
            "projected-diag",
            convex(Convexification::Projected(Weights::Diagonal), false),
        ),
        (
            "projected-diag-split",
            convex(Convexification::Projected(Weights::Diagonal), true),
        ),
        ("identity", convex(Convexification::Identity, false)),
        ("identity-split", convex(Convexification::Identity, true)),
        ("sdp", convex(Convexification::Sdp, false)),
        ("sdp-split", convex(Convexification::Sdp, true)),
    ];

    pub fn parse(text: &str) -> Result<Formulation> {
        Formulation::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Formulation::ALL.iter().map(|(n, _)| *n).collect();
                Error::usage(format!("--formulation {text}: expected one of {}", names.join(", ")))
            })
    }

    pub fn name(&self) -> &'static str {
        Formulation::ALL
            .iter()
            .find(|(_, f)| f == self)
            .map(|(n, _)| *n)
            .expect("every formulation is listed")
    }
}

/// Whether [`Formulation::Auto`] tries the identity convex form (after a share of the time on
/// the linearisation): when G with its within-layer entries is PSD up to rounding.
fn auto_prefers_convex(qp: &ChoiceQp) -> bool {
    qp.within.as_ref().is_some_and(|within| {
        let filled = &qp.quad + within;
        let scale = filled.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        crate::convex::min_eigenvalue(&filled) >= -1e-9 * scale
    })
}

const fn convex(convexification: Convexification, split: bool) -> Formulation {
    Formulation::Convex { convexification, split }
}

/// How messages name a solve: its budgets joined by commas (`avg-bits=4,bops=1e9`), or
/// `no budget`.
pub fn budget_label(budgets: &[Budget]) -> String {
    if budgets.is_empty() {
        "no budget".to_string()
    } else {
        budgets.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// How to solve, and when to stop.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Seconds for one solve, everything included.
    pub time_limit: f64,
    /// Relative gap at which a solve may stop.
    pub gap: f64,
    pub method: Method,
    pub formulation: Formulation,
    /// Remove infeasible, dominated and dual-fixed options before the search (exact; off only
    /// to measure what it brings and to test the formulations on the whole problem).
    pub reductions: bool,
    /// Let SCIP print its log on stdout (experiments only: it would corrupt the tool's output).
    pub scip_log: bool,
    /// While SCIP searches, a progress line on stderr every this many seconds (none: silent).
    pub progress_every: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            time_limit: 60.0,
            gap: OPTIMALITY_GAP,
            method: Method::Auto,
            formulation: Formulation::Auto,
            reductions: true,
            scip_log: false,
            progress_every: None,
        }
    }
}

/// Why a solve stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every choice was enumerated.
    Exact,
    /// SCIP proved optimality (within its tolerances).
    Optimal,
    /// SCIP reached the requested gap.
    GapLimit,
    /// The time limit: the best choice found, with its gap.
    TimeLimit,
    /// Another SCIP limit or status.
    Other,
}

impl Stop {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stop::Exact => "exact",
            Stop::Optimal => "optimal",
            Stop::GapLimit => "gap_limit",
            Stop::TimeLimit => "time_limit",
            Stop::Other => "stopped",
        }
    }
}

/// One solved allocation.
#[derive(Clone, Debug)]
pub struct Solved {
    pub choice: Choice,
    /// The objective of `choice` (xᵀGx, or its diagonal part under `--naive`).
    pub objective: f64,
    /// A proven lower bound on the objective over every feasible choice.
    pub bound: f64,
    /// (objective − bound) / max(|objective|, |bound|, floor); see [`GAP_FLOOR`].
    pub gap: f64,
    pub stop: Stop,
    pub seconds: f64,
    /// Branch-and-bound nodes (0 for enumeration).
    pub nodes: usize,
    /// `enumeration` or `scip/<formulation>`.
    pub method: String,
    /// The diagonal shift of the convex reformulation (0 for the other methods).
    pub shift: f64,
    /// Options removed by dominance before the search ([`crate::reduce`]).
    pub removed: usize,
}

/// Solves allocations of one problem, for one budget or a sweep of them.
pub struct Allocator<'p> {
    problem: &'p Problem,
    qp: ChoiceQp,
    settings: Settings,
}

impl<'p> Allocator<'p> {
    pub fn new(problem: &'p Problem, settings: Settings) -> Self {
        Allocator {
            problem,
            qp: problem.reduced(),
            settings,
        }
    }

    pub fn problem(&self) -> &Problem {
        self.problem
    }

    pub fn qp(&self) -> &ChoiceQp {
        &self.qp
    }

    /// Minimise under `budgets` (all at once; none = unconstrained). `warm` are earlier answers
    /// (e.g. the previous budget of a sweep): those that meet the budgets seed the search.
    /// An infeasible budget is [`Error::Infeasible`], naming the smallest feasible budget.
    pub fn solve(&self, budgets: &[Budget], warm: &[Choice]) -> Result<Solved> {
        let start = Instant::now();
        let label: std::sync::Arc<str> = budget_label(budgets).into();
        let limits_now = || self.limits(start, &label);
        let qp = &self.qp;
        let rows = self.problem.budget_rows(budgets);
        self.check_feasible(&rows)?;
        let scale = qp.scale();
        let gap_of = |objective: f64, bound: f64| {
            let denom = objective
                .abs()
                .max(bound.abs())
                .max(GAP_FLOOR * scale)
                .max(f64::MIN_POSITIVE);
            ((objective - bound) / denom).max(0.0)
        };
        // Incumbents: earlier answers that still fit, and a local search from the best of them
        // or from the cheapest choice.
        let mut starts: Vec<Choice> = warm
            .iter()
            .filter(|c| search::feasible(qp, &rows, c))
            .cloned()
            .collect();
        let cheapest = search::cheapest(qp, &rows);
        if search::feasible(qp, &rows, &cheapest) {
            let seed = starts
                .iter()
                .min_by(|a, b| qp.value(a).total_cmp(&qp.value(b)))
                .cloned()
                .unwrap_or(cheapest.clone());
            starts.push(search::local_search(qp, &rows, &seed));
            starts.push(search::greedy(qp, &rows, &cheapest));
        }
        // On a convex G the branch and bound needs no more than round 0 of the reductions when
        // the Lagrangian bound is weak (see [`Allocator::reduce`]).
        let convex_search = match self.settings.method {
            Method::BranchAndBound => true,
            Method::Auto => self.settings.formulation == Formulation::Auto && auto_prefers_convex(qp),
            Method::Scip | Method::Enumerate => false,
        };
        let (reduction, dual_bound, pairs) = self.reduce(&rows, &mut starts, start, convex_search);
        let incumbent = starts.iter().map(|c| qp.value(c)).fold(f64::INFINITY, f64::min);
        let margin = DUAL_MARGIN * qp.scale() * qp.sizes.len() as f64;
        let small = &reduction.qp;
        let enumerate = match self.settings.method {
            Method::Enumerate => true,
            Method::Scip | Method::BranchAndBound => false,
            Method::Auto => search::choices(small) <= search::ENUMERATION_LIMIT,
        };
        if enumerate && search::choices(small) > search::ENUMERATION_REFUSED {
            return Err(Error::usage(format!(
                "--method enumerate: {:.3e} choices remain after the reductions, too many to enumerate (use --method auto)",
                search::choices(small)
            )));
        }
        if enumerate {
            let (choice, _) =
                search::enumerate(small, &reduction.rows).ok_or_else(|| self.jointly_infeasible(&rows))?;
            let choice = reduction.lift(&choice);
            let objective = self.problem.objective(&choice);
            return Ok(Solved {
                choice,
                objective,
                bound: objective,
                gap: 0.0,
                stop: Stop::Exact,
                seconds: start.elapsed().as_secs_f64(),
                nodes: 0,
                method: "enumeration".into(),
                shift: 0.0,
                removed: reduction.removed,
            });
        }
        let mut small_starts: Vec<Choice> = starts.iter().filter_map(|c| reduction.project(c)).collect();
        // One SCIP run of a concrete formulation within `limits`: its outcome, the slack to take
        // off its bound, and the convexification's shift.
        let run = |formulation: Formulation, limits: Limits, warm: &[Choice]| match formulation {
            Formulation::Auto => unreachable!("resolved by the caller"),
            Formulation::Linearized => {
                // Pairs the dual bound proves worse than the incumbent are left out.
                let allowed = |i: usize, j: usize| match &pairs {
                    Some(d) => d.allows(small, i, j, incumbent + margin),
                    None => true,
                };
                let objective = Objective::Linearized { allowed: &allowed };
                (mip::solve(small, &reduction.rows, objective, limits, warm), 0.0, 0.0)
            }
            Formulation::Product => (
                mip::solve(small, &reduction.rows, Objective::Product, limits, warm),
                0.0,
                0.0,
            ),
            Formulation::Convex { convexification, split } => {
                let deadline =
                    Instant::now() + std::time::Duration::from_secs_f64(SDP_SHARE * self.settings.time_limit);
                let factored = convexify(small, &reduction.rows, convexification, deadline);
                let limits = Limits {
                    time: limits.time.min(limits_now().time),
                    ..limits
                };
                let objective = Objective::Convex {
                    factored: &factored,
                    split,
                };
                let outcome = mip::solve(small, &reduction.rows, objective, limits, warm);
                (outcome, factored.lower_slack, factored.shift)
            }
        };
        let weak = dual_bound.is_finite() && gap_of(incumbent, dual_bound) > 1.0;
        let (outcome, slack, shift, method) = match self.settings.formulation {
            _ if convex_search => {
                // On a convex G: the branch and bound on the convex relaxation. Unless the
                // Lagrangian bound is weak, the linearisation first, for a share of the time: it
                // proves optimality in well under a second on PSD matrices made by a diagonal
                // shift (`psd --method shift`), where the convex relaxation is weak.
                let mut lin = None;
                if self.settings.method == Method::Auto && !weak {
                    let mut first = limits_now();
                    first.time = first.time.min(AUTO_LINEARIZED_SHARE * self.settings.time_limit);
                    let (outcome, _, _) = run(Formulation::Linearized, first, &small_starts);
                    small_starts.extend(outcome.choice.iter().cloned());
                    lin = Some(outcome);
                }
                match lin {
                    Some(lin)
                        if matches!(
                            lin.status,
                            russcip::Status::Optimal | russcip::Status::GapLimit | russcip::Status::Infeasible
                        ) =>
                    {
                        (lin, 0.0, 0.0, "scip/linearized".to_string())
                    }
                    lin => {
                        let mut outcome = self.branch_and_bound(small, &reduction.rows, &small_starts, limits_now());
                        let method = match &lin {
                            Some(lin) => {
                                // Both bounds hold for the reduced problem: keep the better one.
                                outcome.bound = outcome.bound.max(lin.bound);
                                outcome.nodes += lin.nodes;
                                format!("scip/linearized+{BRANCH_AND_BOUND}")
                            }
                            None => BRANCH_AND_BOUND.to_string(),
                        };
                        (outcome, 0.0, 0.0, method)
                    }
                }
            }
            Formulation::Auto if auto_prefers_convex(small) => {
                // (`--method scip`.) The linearisation first, for a share of the time: it proves optimality in
                // well under a second on PSD matrices made by a diagonal shift (`psd --method
                // shift`), where the identity form's relaxation is weak; then the convex form,
                // which alone closes matrices made PSD by clipping, from the best choice found.
                let mut first = limits_now();
                let share = if weak {
                    AUTO_LINEARIZED_SHARE_WEAK
                } else {
                    AUTO_LINEARIZED_SHARE
                };
                first.time = first.time.min(share * self.settings.time_limit);
                let (lin, _, _) = run(Formulation::Linearized, first, &small_starts);
                if matches!(
                    lin.status,
                    russcip::Status::Optimal | russcip::Status::GapLimit | russcip::Status::Infeasible
                ) {
                    (lin, 0.0, 0.0, "scip/linearized".to_string())
                } else {
                    let identity = convex(Convexification::Identity, false);
                    small_starts.extend(lin.choice.iter().cloned());
                    let (mut outcome, slack, shift) = run(identity, limits_now(), &small_starts);
                    // Both bounds hold for the reduced problem: keep the better one.
                    outcome.bound = (outcome.bound - slack).max(lin.bound) + slack;
                    outcome.nodes += lin.nodes;
                    let method = format!("scip/linearized+{}", identity.name());
                    (outcome, slack, shift, method)
                }
            }
            Formulation::Auto => {
                let (outcome, slack, shift) = run(Formulation::Linearized, limits_now(), &small_starts);
                (outcome, slack, shift, "scip/linearized".to_string())
            }
            chosen => {
                let (outcome, slack, shift) = run(chosen, limits_now(), &small_starts);
                (outcome, slack, shift, format!("scip/{}", chosen.name()))
            }
        };
        if outcome.status == russcip::Status::Infeasible {
            return Err(self.jointly_infeasible(&rows));
        }
        let found = outcome.choice.as_ref().map(|c| reduction.lift(c));
        let best = found
            .iter()
            .chain(&starts)
            .filter(|c| search::feasible(qp, &rows, c))
            .min_by(|a, b| qp.value(a).total_cmp(&qp.value(b)))
            .cloned()
            .ok_or_else(|| {
                Error::other(format!(
                    "no choice meeting the budgets was found within the time limit of {} s",
                    self.settings.time_limit
                ))
            })?;
        let objective = self.problem.objective(&best);
        let bound = (outcome.bound - slack).max(dual_bound).min(objective);
        let stop = match outcome.status {
            russcip::Status::Optimal => Stop::Optimal,
            russcip::Status::GapLimit => Stop::GapLimit,
            russcip::Status::TimeLimit => Stop::TimeLimit,
            _ => Stop::Other,
        };
        Ok(Solved {
            choice: best,
            objective,
            bound,
            gap: gap_of(objective, bound),
            stop,
            seconds: start.elapsed().as_secs_f64(),
            nodes: outcome.nodes,
            method,
            shift,
            removed: reduction.removed,
        })
    }

    /// [`crate::bnb`] on the reduced problem, its outcome in SCIP's terms.
    fn branch_and_bound(&self, qp: &ChoiceQp, rows: &[BudgetRow], warm: &[Choice], limits: Limits) -> mip::MipOutcome {
        let started = Instant::now();
        let model = crate::bnb::Model::new(qp, rows);
        let bb_limits = crate::bnb::Limits {
            deadline: started + std::time::Duration::from_secs_f64(limits.time),
            gap: limits.gap,
            gap_floor: GAP_FLOOR * self.qp.scale(),
            progress: limits.progress,
        };
        let out = crate::bnb::solve(qp, rows, &model, warm, &bb_limits);
        if self.settings.scip_log {
            eprintln!(
                "branch-and-bound: {:?}, {} nodes, {} relaxations, ridge {:.3e}, bound {:.9e}, {:.3} s",
                out.status,
                out.nodes,
                out.relaxations,
                model.ridge,
                out.bound,
                started.elapsed().as_secs_f64()
            );
        }
        mip::MipOutcome {
            status: match out.status {
                crate::bnb::Status::Optimal => russcip::Status::Optimal,
                crate::bnb::Status::GapLimit => russcip::Status::GapLimit,
                crate::bnb::Status::TimeLimit => russcip::Status::TimeLimit,
                crate::bnb::Status::Infeasible => russcip::Status::Infeasible,
            },
            choice: out.choice,
            bound: out.bound,
            nodes: out.nodes,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Remove options that are infeasible or dominated, then those the Lagrangian bound proves
    /// worse than `incumbent`, until nothing changes. Returns the reduction and the best dual
    /// bound (valid for the original problem: the removed options are in no choice better
    /// than the incumbent, so the reduced problem keeps the optimum).
    /// A Lagrangian rounding that improves on the incumbents joins `starts`.
    ///
    /// `convex`: the search after this is the branch and bound on the convex relaxation, so
    /// when the first bound is weak (a relative gap above 1 to the incumbent: below 0 under a
    /// positive incumbent, as on clipped 9-option matrices, −3.4 against 0.016) the rounds
    /// stop after the first: more sweeps and probing (1.3 s there) remove nothing.
    fn reduce(
        &self,
        rows: &[BudgetRow],
        starts: &mut Vec<Choice>,
        start: Instant,
        convex: bool,
    ) -> (reduce::Reduction, f64, Option<dual::DualBound>) {
        let qp = &self.qp;
        let mut incumbent = starts.iter().map(|c| qp.value(c)).fold(f64::INFINITY, f64::min);
        let mut best_bound = f64::NEG_INFINITY;
        let mut last = None;
        if !self.settings.reductions {
            return (reduce::Reduction::keep(qp, rows, &vec![true; qp.n()]), best_bound, last);
        }
        let mut reduction = reduce::dominance(qp, rows);
        if !incumbent.is_finite() {
            return (reduction, best_bound, last);
        }
        let margin = DUAL_MARGIN * qp.scale() * qp.sizes.len() as f64;
        let mut messages: Option<dual::Messages> = None;
        for round in 0..8 {
            let budget = (DUAL_SHARE * self.settings.time_limit - start.elapsed().as_secs_f64()).max(0.0);
            let d = dual::bound(&reduction.qp, &reduction.rows, budget, usize::MAX, messages.as_ref());
            best_bound = best_bound.max(d.bound);
            if round == 0 {
                // The Lagrangian rounding, repaired and improved, and an iterated local search
                // from the best choice may beat the incumbents.
                let small = &reduction.qp;
                let mut candidates = Vec::new();
                if let Some(fixed) = search::repair(small, &reduction.rows, &d.rounding) {
                    candidates.push(search::greedy(small, &reduction.rows, &fixed));
                }
                if let Some(best) = starts
                    .iter()
                    .min_by(|a, b| qp.value(a).total_cmp(&qp.value(b)))
                    .and_then(|c| reduction.project(c))
                {
                    let deadline = start + std::time::Duration::from_secs_f64(DUAL_SHARE * self.settings.time_limit);
                    candidates.push(search::iterated(
                        small,
                        &reduction.rows,
                        &best,
                        ITERATED_ROUNDS,
                        1,
                        deadline,
                    ));
                }
                for candidate in candidates {
                    let candidate = reduction.lift(&candidate);
                    if search::feasible(qp, rows, &candidate) && qp.value(&candidate) < incumbent {
                        incumbent = qp.value(&candidate);
                        starts.push(candidate);
                    }
                }
            }

            if self.settings.scip_log {
                eprintln!(
                    "dual: bound {:.6e} incumbent {incumbent:.6e} sweeps {} n {} t {:.2}",
                    d.bound,
                    d.sweeps,
                    reduction.qp.n(),
                    start.elapsed().as_secs_f64()
                );
            }
            let mut alive: Vec<bool> = d.floor.iter().map(|f| d.bound + f <= incumbent + margin).collect();
            let weak = relative_gap(incumbent, d.bound) > 1.0;
            if convex && weak {
                let fixed = reduce::Reduction::keep(&reduction.qp, &reduction.rows, &alive);
                let again = reduce::dominance(&fixed.qp, &fixed.rows);
                reduction = reduction.then(fixed).then(again);
                break;
            }
            if alive.iter().all(|a| *a) {
                let deadline = start + std::time::Duration::from_secs_f64(DUAL_SHARE * self.settings.time_limit);
                alive = probe(&reduction, &d, incumbent + margin, deadline);
                if alive.iter().all(|a| *a) {
                    last = Some(d);
                    break;
                }
            }
            let fixed = reduce::Reduction::keep(&reduction.qp, &reduction.rows, &alive);
            let again = reduce::dominance(&fixed.qp, &fixed.rows);
            // Positions kept, relative to the problem the messages belong to.
            let kept: Vec<Vec<usize>> = again
                .kept
                .iter()
                .enumerate()
                .map(|(g, k)| k.iter().map(|&i| fixed.kept[g][i]).collect())
                .collect();
            messages = Some(d.messages.restrict(&kept));
            reduction = reduction.then(fixed).then(again);
        }
        (reduction, best_bound, last)
    }

    fn limits(&self, start: Instant, label: &std::sync::Arc<str>) -> Limits {
        Limits {
            time: (self.settings.time_limit - start.elapsed().as_secs_f64()).max(0.0),
            gap: self.settings.gap,
            log: self.settings.scip_log,
            progress: self.settings.progress_every.map(|every| mip::Progress {
                every,
                started: start,
                label: label.clone(),
            }),
        }
    }

    /// Each budget on its own: is the cheapest choice within it?
    fn check_feasible(&self, rows: &[BudgetRow]) -> Result<()> {
        for row in rows {
            let least = row.min_total(&self.qp);
            if least > row.limit * (1.0 + 1e-12) {
                return Err(Error::Infeasible(format!(
                    "budget {} is infeasible: the smallest feasible budget is {}{}",
                    row.budget,
                    smallest(row.budget, least, &self.problem.layers),
                    self.pins_note()
                )));
            }
        }
        Ok(())
    }

    fn jointly_infeasible(&self, rows: &[BudgetRow]) -> Error {
        let each: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} (smallest alone: {})",
                    r.budget,
                    smallest(r.budget, r.min_total(&self.qp), &self.problem.layers)
                )
            })
            .collect();
        Error::Infeasible(format!(
            "no choice meets all budgets together: {}{}",
            each.join(", "),
            self.pins_note()
        ))
    }

    fn pins_note(&self) -> &'static str {
        let fixed = self
            .problem
            .decisions
            .iter()
            .any(|d| !matches!(d, crate::problem::Decision::Free { .. }));
        if fixed {
            " (with the pinned and fixed layers at their options)"
        } else {
            ""
        }
    }
}

/// Probing: for every option that is not the cheapest of its layer in the dual, bound the
/// problem with the layer forced to it (messages warm-started, [`PROBE_SWEEPS`] sweeps at most)
/// and mark it dead when the bound exceeds `cutoff`. Stops marking at `deadline`.
fn probe(reduction: &reduce::Reduction, d: &dual::DualBound, cutoff: f64, deadline: Instant) -> Vec<bool> {
    let small = &reduction.qp;
    let mut alive = vec![true; small.n()];
    for g in 0..small.sizes.len() {
        for i in small.group_range(g) {
            if small.sizes[g] == 1 || d.floor[i] == 0.0 {
                continue;
            }
            let remaining = deadline.saturating_duration_since(Instant::now()).as_secs_f64();
            if remaining == 0.0 {
                return alive;
            }
            let only: Vec<bool> = (0..small.n())
                .map(|k| !small.group_range(g).contains(&k) || k == i)
                .collect();
            let forced = reduce::Reduction::keep(small, &reduction.rows, &only);
            let warm = d.messages.restrict(&forced.kept);
            let b = dual::bound(&forced.qp, &forced.rows, remaining, PROBE_SWEEPS, Some(&warm));
            if b.bound > cutoff {
                alive[i] = false;
            }
        }
    }
    alive
}

/// (objective − bound) / max(|objective|, |bound|), 0 when both are 0.
fn relative_gap(objective: f64, bound: f64) -> f64 {
    let denom = objective.abs().max(bound.abs());
    if denom == 0.0 {
        0.0
    } else {
        ((objective - bound) / denom).max(0.0)
    }
}

/// `usage` (bits or BOPs) written as a budget of the same kind as `b`.
fn smallest(b: Budget, usage: f64, layers: &[clado::format::LayerInfo]) -> String {
    let params: f64 = layers.iter().map(|l| l.params as f64).sum();
    match b {
        Budget::AvgBits(_) => format!("avg-bits={}", round_up(usage / params)),
        Budget::SizeBits(_) => format!("size-bits={usage}"),
        Budget::SizeMb(_) => format!("size-mb={}", round_up(usage / BITS_PER_MB)),
        Budget::Bops(_) => format!("bops={usage}"),
    }
}

/// Round up to 6 significant digits, so the printed budget is itself feasible.
fn round_up(v: f64) -> f64 {
    if v <= 0.0 {
        return v;
    }
    let digits = 6 - 1 - v.log10().floor() as i32;
    let f = 10f64.powi(digits);
    let r = (v * f).ceil() / f;
    // Printing may show more digits than 6 for values like 2.0000000001; that is still exact.
    if r < v {
        v
    } else {
        r
    }
}
