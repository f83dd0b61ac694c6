//! The integer program in SCIP (through russcip), in one of several formulations.
//!
//! Variables x_v ∈ {0,1}, one set-partitioning constraint per free layer, one knapsack row
//! per budget (integer coefficients divided by their gcd, the right-hand side rounded down, so
//! SCIP's relative feasibility tolerance cannot admit a choice over budget). The objective is
//! scaled so that SCIP's absolute tolerances are relative ones (see [`objective_scale`]).
//! See [`Objective`] for the objective's forms.

use crate::convex::Factored;
use crate::problem::{BudgetRow, Choice, ChoiceQp};
use russcip::prelude::*;
use russcip::{Event, EventMask, Eventhdlr, SCIPEventhdlr, Solving, Status, Variable};
use std::sync::Arc;
use std::time::Instant;

/// SCIP's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Seconds.
    pub time: f64,
    /// Relative gap at which SCIP stops.
    pub gap: f64,
    /// Let SCIP print its log (on stdout: for experiments only, never in the tool).
    pub log: bool,
    /// Progress lines on stderr while SCIP searches.
    pub progress: Option<Progress>,
}

/// Progress lines of a long solve: `allocate: LABEL: still solving after T s: N nodes, best B,
/// gap G` every `every` seconds since `started` (the solve's start, reductions included).
#[derive(Clone, Debug)]
pub struct Progress {
    pub every: f64,
    pub started: Instant,
    pub label: Arc<str>,
}

impl Progress {
    /// Print one line (SCIP's and the branch and bound's): `best` when a choice is known,
    /// `gap` when finite.
    pub fn line(&self, elapsed: f64, nodes: u64, best: Option<f64>, gap: Option<f64>) {
        let best = match best {
            Some(v) => format!("best {v:.6e}"),
            None => "no choice yet".to_string(),
        };
        let gap = match gap {
            Some(g) => format!("gap {g:.2e}"),
            None => "gap unbounded".to_string(),
        };
        eprintln!(
            "allocate: {}: still solving after {elapsed:.0} s: {nodes} nodes, {best}, {gap}",
            self.label
        );
    }
}

/// SCIP calls this after every node and LP solve; it prints when a line is due.
struct ProgressLines {
    progress: Progress,
    next: f64,
    /// SCIP's objective times this is the original one (see [`objective_scale`]).
    scale: f64,
}

impl Eventhdlr for ProgressLines {
    fn get_type(&self) -> EventMask {
        EventMask::NODE_SOLVED | EventMask::LP_SOLVED
    }

    fn execute(&mut self, model: Model<Solving>, _: SCIPEventhdlr, _: Event) {
        let elapsed = self.progress.started.elapsed().as_secs_f64();
        if elapsed < self.next {
            return;
        }
        self.next = elapsed + self.progress.every;
        let scip = model.scip_ptr();
        // SAFETY: `scip` is the live SCIP instance of this callback, in its solving stage, where
        // these getters are valid.
        let (nodes, solutions, primal, gap) = unsafe {
            (
                russcip::ffi::SCIPgetNNodes(scip),
                russcip::ffi::SCIPgetNSols(scip),
                russcip::ffi::SCIPgetPrimalbound(scip),
                russcip::ffi::SCIPgetGap(scip),
            )
        };
        self.progress.line(
            elapsed,
            nodes.max(0) as u64,
            (solutions > 0).then_some(primal * self.scale),
            (gap.is_finite() && gap < 1e6).then_some(gap),
        );
    }
}

/// Priority of SCIP's pseudo-cost branching rule for the linearized form, above reliability
/// branching's 10000 so that it decides. The linearized LP has thousands of pair columns (9170
/// on the raw 9-option matrix of an earlier training of the built-in model) and strong branching's LP solves at the
/// root took 3 of its 5 s of SCIP time, and all 60 s on the hardest seeded ResNet-56 budget,
/// while the trees stay small (≤ 150 nodes measured) without it: that budget went from gap
/// 8.7e-3 at the time limit to optimal in 21.5 CPU-s, the raw matrix from 7.2–9.4 to
/// 5.0–5.9 CPU-s per budget, and the seeded ResNet-20/56 sweeps (seed 1) stayed level.
pub const LINEARIZED_BRANCHING_PRIORITY: i32 = 100_000;

/// Separation rounds per node below the root for the convex forms (SCIP's default: −1, no
/// limit). Every round adds outer-approximation cuts of t ≥ ‖z‖² and re-solves the LP; on the
/// clipped 9-option matrix of an earlier training of the built-in model (identity form, avg-bits 4) the tree stayed at
/// 373 nodes against 383 while a node took 73 ms instead of 120 ms (27.4 s against 45.8 s).
pub const CONVEX_NODE_SEPARATION_ROUNDS: i32 = 1;

/// SCIP's large-neighbourhood and NLP heuristics, switched off for the convex forms: on the
/// instance above the same 373 nodes took 24.2 s without them instead of 27.4 s, the optimum
/// still found by an LP solution. (Switching off the NLP too was slower there, 34.9 s, and
/// the diving heuristics as well, 41.5 s: node counts vary by 2× between such settings.)
pub const CONVEX_HEURISTICS_OFF: [&str; 5] = ["rins", "rens", "alns", "subnlp", "undercover"];

/// What SCIP returned, in the units of the original objective.
#[derive(Clone, Debug)]
pub struct MipOutcome {
    pub status: Status,
    /// The best choice found (over the warm starts and SCIP's own).
    pub choice: Option<Choice>,
    /// SCIP's dual bound in original units, before the reformulation's slack is subtracted.
    pub bound: f64,
    pub nodes: usize,
    pub seconds: f64,
}

/// How the objective reaches SCIP.
pub enum Objective<'a> {
    /// The local-polytope linearisation: y_uv = x_u·x_v for u, v in different layers, with
    /// Σ_{v∈h} y_uv = x_u for every variable u and every other layer h (and the same the other
    /// way). Exact for binary x, and its LP relaxation is exact on every pair of layers.
    /// Pairs for which `allowed(u, v)` is false are left out (x_u and x_v never both 1).
    Linearized { allowed: &'a dyn Fn(usize, usize) -> bool },
    /// min t + bᵀx + c with t ≥ xᵀQx as given: products of binaries, which SCIP linearises
    /// with AND constraints (the seed's form).
    Product,
    /// A factored convex model (see [`crate::convex`]): min t + bᵀx + c with t ≥ ‖z‖²,
    /// z = Fᵀx; `split` writes t_k ≥ z_k² per column instead, whose outer approximation SCIP
    /// refines coordinate by coordinate.
    Convex { factored: &'a Factored, split: bool },
}

/// Build and solve. `warm` are feasible choices handed to SCIP as starting solutions.
pub fn solve(
    qp: &ChoiceQp,
    rows: &[BudgetRow],
    objective: Objective<'_>,
    limits: Limits,
    warm: &[Choice],
) -> MipOutcome {
    let n = qp.n();
    let scale = objective_scale(qp, &objective, warm);
    let model = Model::new();
    let model = if limits.log { model } else { model.hide_output() };
    let mut model = model
        .include_default_plugins()
        .set_real_param("limits/time", limits.time.max(0.0))
        .and_then(|m| m.set_real_param("limits/gap", limits.gap))
        .and_then(|m| m.set_int_param("timing/clocktype", 2))
        .and_then(|m| match objective {
            // Pseudo-cost branching instead of reliability (strong) branching: see
            // [`LINEARIZED_BRANCHING_PRIORITY`].
            Objective::Linearized { .. } => m.set_int_param("branching/pscost/priority", LINEARIZED_BRANCHING_PRIORITY),
            // One separation round per node and no large-neighbourhood heuristics: see
            // [`CONVEX_NODE_SEPARATION_ROUNDS`] and [`CONVEX_HEURISTICS_OFF`].
            Objective::Convex { .. } => CONVEX_HEURISTICS_OFF.iter().try_fold(
                m.set_int_param("separating/maxrounds", CONVEX_NODE_SEPARATION_ROUNDS)?,
                |m, name| m.set_int_param(&format!("heuristics/{name}/freq"), -1),
            ),
            _ => Ok(m),
        })
        .expect("SCIP accepts its own parameters")
        .create_prob("allocate")
        .minimize();
    if let Some(progress) = limits.progress.clone() {
        let next = progress.every;
        model.add(eventhdlr(ProgressLines { progress, next, scale }).name("allocate-progress"));
    }
    let (linear, constant): (Vec<f64>, f64) = match &objective {
        Objective::Convex { factored, .. } => (factored.linear.clone(), factored.constant),
        // x_u² = x_u: the diagonal joins the linear term.
        Objective::Linearized { .. } => ((0..n).map(|i| qp.linear[i] + qp.quad[[i, i]]).collect(), qp.constant),
        Objective::Product => (qp.linear.clone(), qp.constant),
    };
    let mut pairs: Vec<(Variable, usize, usize)> = Vec::new();
    let x: Vec<Variable> = (0..n)
        .map(|i| model.add(var().bin().obj(linear[i] / scale).name(&format!("x{i}"))))
        .collect();
    // The constant as a variable fixed at 1 (presolve turns it into SCIP's objective offset).
    let offset = model.add(var().cont(1.0..=1.0).obj(constant / scale).name("offset"));
    for g in 0..qp.sizes.len() {
        let vars: Vec<&Variable> = qp.group_range(g).map(|i| &x[i]).collect();
        model.add_cons_set_part(vars, &format!("layer{g}"));
    }
    for (r, row) in rows.iter().enumerate() {
        let unit = gcd_of(&row.coef);
        let coefs: Vec<f64> = row.coef.iter().map(|c| c / unit).collect();
        let rhs = (row.capacity() / unit).floor();
        model.add_cons(
            x.iter().collect(),
            &coefs,
            f64::NEG_INFINITY,
            rhs,
            &format!("budget{r}"),
        );
    }
    // The objective's nonlinear part; `aux` are the continuous variables of a warm start.
    let mut aux: Vec<(Variable, WarmValue<'_>)> = vec![(offset, Box::new(|_: &[usize]| 1.0))];
    match objective {
        Objective::Convex { factored: f, split } => {
            let r = f.factor.ncols();
            let root = scale.sqrt();
            let mut z = Vec::with_capacity(r);
            for k in 0..r {
                let col: Vec<f64> = (0..n).map(|i| f.factor[(i, k)] / root).collect();
                // z_k ranges over Σ_g [min, max] of its column within each group.
                let (lo, hi) = (0..qp.sizes.len()).fold((0.0, 0.0), |(lo, hi), g| {
                    let vals = qp.group_range(g).map(|i| col[i]);
                    (
                        lo + vals.clone().fold(f64::INFINITY, f64::min),
                        hi + vals.fold(f64::NEG_INFINITY, f64::max),
                    )
                });
                let zk = model.add(var().cont(lo..=hi).name(&format!("z{k}")));
                let mut vars: Vec<&Variable> = x.iter().collect();
                vars.push(&zk);
                let mut coefs: Vec<f64> = col.iter().map(|c| -c).collect();
                coefs.push(1.0);
                model.add_cons(vars, &coefs, 0.0, 0.0, &format!("factor{k}"));
                let colk = col.clone();
                aux.push((
                    zk.clone(),
                    Box::new(move |idx: &[usize]| idx.iter().map(|&i| colk[i]).sum()),
                ));
                z.push((zk, col));
            }
            if r == 0 {
                // Nothing quadratic is left (e.g. --naive): a linear program in x.
            } else if !split {
                let t = model.add(var().cont(0.0..).obj(1.0).name("t"));
                let zs: Vec<&Variable> = z.iter().map(|(v, _)| v).collect();
                let mut ones = vec![1.0; r];
                model.add_cons_quadratic(
                    vec![&t],
                    &mut [-1.0],
                    zs.clone(),
                    zs,
                    &mut ones,
                    f64::NEG_INFINITY,
                    0.0,
                    "convex",
                );
                let cols: Vec<Vec<f64>> = z.iter().map(|(_, c)| c.clone()).collect();
                aux.push((t, Box::new(move |idx: &[usize]| sum_of_squares(&cols, idx))));
            } else {
                for (k, (zk, col)) in z.iter().enumerate() {
                    let tk = model.add(var().cont(0.0..).obj(1.0).name(&format!("t{k}")));
                    model.add_cons_quadratic(
                        vec![&tk],
                        &mut [-1.0],
                        vec![zk],
                        vec![zk],
                        &mut [1.0],
                        f64::NEG_INFINITY,
                        0.0,
                        &format!("convex{k}"),
                    );
                    let col = col.clone();
                    aux.push((
                        tk,
                        Box::new(move |idx: &[usize]| sum_of_squares(std::slice::from_ref(&col), idx)),
                    ));
                }
            }
        }
        Objective::Linearized { allowed } => {
            let groups = qp.sizes.len();
            for g in 0..groups {
                for h in g + 1..groups {
                    // y[a][b] for the a-th option of g and the b-th of h, if allowed.
                    let y: Vec<Vec<Option<Variable>>> = qp
                        .group_range(g)
                        .map(|i| {
                            qp.group_range(h)
                                .map(|j| {
                                    allowed(i, j).then(|| {
                                        let v = model.add(
                                            var()
                                                .cont(0.0..=1.0)
                                                .obj(2.0 * qp.quad[[i, j]] / scale)
                                                .name(&format!("y{i}_{j}")),
                                        );
                                        pairs.push((v.clone(), i, j));
                                        v
                                    })
                                })
                                .collect()
                        })
                        .collect();
                    let mut marginal = |vars: Vec<&Variable>, xv: &Variable, name: String| {
                        let mut vars = vars;
                        vars.push(xv);
                        let mut coefs = vec![1.0; vars.len()];
                        *coefs.last_mut().expect("x is in the row") = -1.0;
                        model.add_cons(vars, &coefs, 0.0, 0.0, &name);
                    };
                    for (a, i) in qp.group_range(g).enumerate() {
                        marginal(y[a].iter().flatten().collect(), &x[i], format!("m{i}_{h}"));
                    }
                    for (b, j) in qp.group_range(h).enumerate() {
                        marginal(
                            y.iter().filter_map(|r| r[b].as_ref()).collect(),
                            &x[j],
                            format!("m{j}_{g}"),
                        );
                    }
                }
            }
        }
        Objective::Product => {
            let t = model.add(var().cont(..).obj(1.0).name("t"));
            let (mut v1, mut v2, mut coefs) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                for j in i..n {
                    let q = qp.quad[[i, j]] * if i == j { 1.0 } else { 2.0 } / scale;
                    if q != 0.0 {
                        v1.push(&x[i]);
                        v2.push(&x[j]);
                        coefs.push(q);
                    }
                }
            }
            model.add_cons_quadratic(
                vec![&t],
                &mut [-1.0],
                v1,
                v2,
                &mut coefs,
                f64::NEG_INFINITY,
                0.0,
                "product",
            );
            let quad = &qp.quad;
            aux.push((
                t,
                Box::new(move |idx: &[usize]| {
                    idx.iter()
                        .map(|&i| idx.iter().map(|&j| quad[[i, j]]).sum::<f64>())
                        .sum::<f64>()
                        / scale
                }),
            ));
        }
    }
    for start in warm {
        let idx = qp.indices(start);
        let sol = model.create_orig_sol();
        for &i in &idx {
            sol.set_val(&x[i], 1.0);
        }
        for (v, value) in &aux {
            sol.set_val(v, value(&idx));
        }
        for (v, i, j) in &pairs {
            if idx.contains(i) && idx.contains(j) {
                sol.set_val(v, 1.0);
            }
        }
        // A start SCIP finds infeasible within its tolerances is only a missed hint.
        let _ = model.add_sol(sol);
    }
    let solved = model.solve();
    let status = solved.status();
    let choice = solved.best_sol().map(|sol| {
        (0..qp.sizes.len())
            .map(|g| {
                qp.group_range(g)
                    .max_by(|&a, &b| sol.val(&x[a]).total_cmp(&sol.val(&x[b])))
                    .map(|i| i - qp.starts[g])
                    .expect("groups are not empty")
            })
            .collect()
    });
    MipOutcome {
        status,
        choice,
        bound: solved.best_bound() * scale,
        nodes: solved.n_nodes(),
        seconds: solved.solving_time(),
    }
}

/// What the objective is divided by, so that SCIP's absolute tolerances act as relative ones:
/// the largest entry of the data; for the convex forms, the best warm start's |value| when
/// smaller (floored at 1e-6 of the data's scale). There SCIP accepts t ≥ ‖z‖² violated by its
/// feasibility tolerance (1e-6), an error relative to the objective's scale, not the data's: with
/// an optimum 100× below the largest entry the bound was off by 1e-4 relative ("optimal" at a
/// gap of 1e-4).
fn objective_scale(qp: &ChoiceQp, objective: &Objective<'_>, warm: &[Choice]) -> f64 {
    let data = qp.scale().max(f64::MIN_POSITIVE);
    let best = warm.iter().map(|c| qp.value(c)).fold(f64::INFINITY, f64::min);
    match objective {
        Objective::Convex { .. } if best.is_finite() => data.min(best.abs().max(1e-6 * data)),
        _ => data,
    }
}

/// The value of an auxiliary variable at a warm start, from the variable indices chosen.
type WarmValue<'a> = Box<dyn Fn(&[usize]) -> f64 + 'a>;

fn sum_of_squares(cols: &[Vec<f64>], idx: &[usize]) -> f64 {
    cols.iter()
        .map(|c| {
            let z: f64 = idx.iter().map(|&i| c[i]).sum();
            z * z
        })
        .sum()
}

/// The greatest common divisor of integer-valued coefficients (1 when some are not integers).
fn gcd_of(coefs: &[f64]) -> f64 {
    if coefs.iter().any(|c| c.fract() != 0.0 || c.abs() > 9.0e15) {
        return 1.0;
    }
    let g = coefs.iter().fold(0u64, |g, &c| gcd(g, c.abs() as u64));
    if g == 0 {
        1.0
    } else {
        g as f64
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SCIP is linked and answers: max 3x + 2y + z with x, y binary, z ∈ {0..5} integer and
    /// 2x + 2y + z ≤ 3 has the optimum 4 at x = 1, y = 0, z = 1.
    #[test]
    fn scip_solves_a_three_variable_mip() {
        let mut model = Model::default().hide_output().maximize();
        let x = model.add(var().bin().obj(3.0).name("x"));
        let y = model.add(var().bin().obj(2.0).name("y"));
        let z = model.add(var().int(0..=5).obj(1.0).name("z"));
        model.add(cons().name("c").coef(&x, 2.0).coef(&y, 2.0).coef(&z, 1.0).le(3.0));
        let solved = model.solve();
        assert_eq!(solved.status(), Status::Optimal);
        let sol = solved.best_sol().expect("a solution");
        assert_eq!(
            (sol.val(&x).round(), sol.val(&y).round(), sol.val(&z).round()),
            (1.0, 0.0, 1.0)
        );
        assert_eq!(solved.obj_val().round(), 4.0);
    }
}
