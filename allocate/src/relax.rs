//! The continuous relaxation at a node of the branch and bound ([`crate::bnb`]): a strictly
//! convex quadratic over the product of the groups' simplices and the budget rows,
//!
//!   min ½·xᵀHx + cᵀx + constant   s.t.  x ≥ 0,  Σ_{i∈g} x_i = 1 for every group g,
//!                                        R·x ≤ cap,  x_i = 0 for the options removed,
//!
//! solved exactly by a primal active-set method (Nocedal and Wright, *Numerical Optimization*,
//! algorithm 16.3) from a feasible start, usually the parent node's solution.
//!
//! # A bound that does not trust the solver
//! For convex f, any point x and any prices ν ≥ 0 of the rows, every s of the node's polytope
//! P satisfies f(s) ≥ f(x) + ∇f(x)ᵀ(s − x) ≥ f(x) − ∇f(x)ᵀx − νᵀcap + Σ_g min_{i∈g} (∇f(x) +
//! Rᵀν)_i, since νᵀ(R·s − cap) ≤ 0 and s is a distribution over each group's options
//! ([`Qp::certificate`]). At the solver's optimum with its row multipliers this equals f(x); at
//! any other point it is still a valid bound, so an early stop or rounding in the active-set
//! steps can only weaken a bound, never make it wrong. The same inequality bounds every child of
//! the node before it is solved: with x_g forced to option v the minimum over g becomes the
//! reduced cost of v ([`Relaxed::reduced`]).

use std::ops::Range;

/// A strictly convex QP over groups of options (see the module documentation). Variables
/// outside every group are only bounded below by 0 (the slacks of [`Qp::phase_one`]).
#[derive(Clone, Debug)]
pub struct Qp {
    pub n: usize,
    /// H, row-major n × n, symmetric positive definite.
    pub hess: Vec<f64>,
    pub linear: Vec<f64>,
    pub constant: f64,
    pub groups: Vec<Range<usize>>,
    /// The group of every variable, `usize::MAX` for a variable outside every group.
    pub group_of: Vec<usize>,
    /// Inequality rows R (each of length n) and their right-hand sides.
    pub rows: Vec<Vec<f64>>,
    pub caps: Vec<f64>,
}

/// Why [`Qp::feasible_start`] found no point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoStart {
    /// The node's polytope is empty, proven: a row its cheapest options exceed, or phase one's
    /// own certificate (a least violation above zero over every point).
    Empty,
    /// Phase one stopped above zero violation without proving it: the node may hold points.
    Unproven,
}

/// The relaxation's solution at a node.
#[derive(Clone, Debug)]
pub struct Relaxed {
    pub x: Vec<f64>,
    /// The objective at `x`.
    pub value: f64,
    /// A lower bound over the node's polytope ([`Qp::certificate`]).
    pub bound: f64,
    /// ∇f(x) = Hx + c.
    pub grad: Vec<f64>,
    /// Prices ν ≥ 0 of the rows (the multipliers of the active ones).
    pub prices: Vec<f64>,
    /// Active-set iterations.
    pub iterations: usize,
    /// Whether the active-set method reached its optimality test.
    pub converged: bool,
}

impl Relaxed {
    /// (∇f + Rᵀν)_i for every variable: the priced gradient whose least entry over each group's
    /// options enters [`Qp::certificate`].
    pub fn priced(&self, qp: &Qp) -> Vec<f64> {
        let mut p = self.grad.clone();
        for (row, &nu) in qp.rows.iter().zip(&self.prices) {
            if nu > 0.0 {
                for (pi, ri) in p.iter_mut().zip(row) {
                    *pi += nu * ri;
                }
            }
        }
        p
    }

    /// Reduced costs over `alive`: the priced gradient minus its least value over the
    /// variable's group (0 for variables not alive). Forcing x_i = 1 lifts the bound to at
    /// least `bound + reduced[i]`.
    pub fn reduced(&self, qp: &Qp, alive: &[bool]) -> Vec<f64> {
        let priced = self.priced(qp);
        let mut out = vec![0.0; qp.n];
        for range in &qp.groups {
            let least = range
                .clone()
                .filter(|&i| alive[i])
                .map(|i| priced[i])
                .fold(f64::INFINITY, f64::min);
            for i in range.clone().filter(|&i| alive[i]) {
                out[i] = priced[i] - least;
            }
        }
        out
    }
}

/// Relative size below which a step of the active-set method counts as zero (x lies in [0, 1]).
const STEP_TOLERANCE: f64 = 1e-12;

/// A multiplier counts as negative below −this · (1 + largest |∇f|): rounding of the gradient's
/// sums is far smaller, and a smaller multiplier changes the objective by less than that times
/// the step, which the bound then accounts for.
const MULTIPLIER_TOLERANCE: f64 = 1e-11;

/// A Cholesky pivot below this fraction of its diagonal entry marks a row of the working set as
/// dependent on the others (it is then left out: the others imply it).
const DEPENDENT_ROW: f64 = 1e-10;

/// Phase one's point is accepted with rows broken by up to this fraction of max(1, |cap|) (see
/// [`Qp::feasible_start`]): its ridge leaves the active-set steps accurate to a few 1e-7.
const PHASE_ONE_SLACK: f64 = 1e-6;

/// Active-set iterations at most, per variable (plus a constant): far above what warm starts
/// need (a few to a few dozen), a guard against cycling on degenerate vertices.
const ITERATIONS_PER_VARIABLE: usize = 4;

/// Rows count as violated beyond this fraction of max(1, |cap|) (rows are normalised by their
/// capacity): the active-set steps keep active rows at their capacity only up to rounding,
/// which drifts by a few 1e-12 over dozens of steps (seen in the tests). A point that far
/// outside is harmless: the bound holds from any point.
const ROW_TOLERANCE: f64 = 1e-10;

impl Qp {
    pub fn value(&self, x: &[f64]) -> f64 {
        self.value_with(x, &self.gradient(x))
    }

    /// The objective at x from its gradient there: ½xᵀHx + cᵀx = ½xᵀ(∇f + c).
    fn value_with(&self, x: &[f64], grad: &[f64]) -> f64 {
        let mut v = 0.0;
        for i in 0..self.n {
            if x[i] != 0.0 {
                v += x[i] * (grad[i] + self.linear[i]);
            }
        }
        0.5 * v + self.constant
    }

    /// ∇f(x) = Hx + c, as c plus the rows of H (= its columns) of x's nonzero entries.
    pub fn gradient(&self, x: &[f64]) -> Vec<f64> {
        let mut g = self.linear.clone();
        for (i, &xi) in x.iter().enumerate() {
            if xi != 0.0 {
                axpy(&mut g, xi, self.row(i));
            }
        }
        g
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.hess[i * self.n..(i + 1) * self.n]
    }

    /// The lower bound of the module documentation at any x (not necessarily feasible) with
    /// prices ν (negative prices count as 0): valid over every point of the node's polytope.
    /// −∞ when a variable outside every group has a negative priced gradient (unbounded).
    pub fn certificate(&self, alive: &[bool], x: &[f64], grad: &[f64], prices: &[f64]) -> f64 {
        let mut priced = grad.to_vec();
        let mut total = self.value_with(x, grad) - dot(grad, x);
        for ((row, &cap), &nu) in self.rows.iter().zip(&self.caps).zip(prices) {
            let nu = nu.max(0.0);
            if nu > 0.0 {
                total -= nu * cap;
                for (p, r) in priced.iter_mut().zip(row) {
                    *p += nu * r;
                }
            }
        }
        for range in &self.groups {
            let least = range
                .clone()
                .filter(|&i| alive[i])
                .map(|i| priced[i])
                .fold(f64::INFINITY, f64::min);
            total += least;
        }
        for i in 0..self.n {
            if self.group_of[i] == usize::MAX && alive[i] && priced[i] < 0.0 {
                return f64::NEG_INFINITY;
            }
        }
        total
    }

    fn row_usage(&self, r: usize, x: &[f64]) -> f64 {
        dot(&self.rows[r], x)
    }

    fn row_slack_tolerance(&self, r: usize) -> f64 {
        ROW_TOLERANCE * self.caps[r].abs().max(1.0)
    }

    /// Whether `x` meets every row (up to rounding).
    pub fn meets_rows(&self, x: &[f64]) -> bool {
        (0..self.rows.len()).all(|r| self.row_usage(r, x) <= self.caps[r] + self.row_slack_tolerance(r))
    }

    /// A point of the node's polytope near `hint` (the groups' alive entries of it, renormalised,
    /// then moved towards feasibility of the rows), or why there is none.
    pub fn feasible_start(&self, alive: &[bool], hint: &[f64]) -> Result<Vec<f64>, NoStart> {
        let mut x = vec![0.0; self.n];
        for range in &self.groups {
            let mass: f64 = range.clone().filter(|&i| alive[i]).map(|i| hint[i].max(0.0)).sum();
            if mass > 0.0 {
                for i in range.clone().filter(|&i| alive[i]) {
                    x[i] = hint[i].max(0.0) / mass;
                }
            } else {
                // The option of least use of the first row (or the first alive one).
                let best = range
                    .clone()
                    .filter(|&i| alive[i])
                    .min_by(|&a, &b| {
                        let key = |i: usize| self.rows.first().map_or(0.0, |r| r[i]);
                        key(a).total_cmp(&key(b))
                    })
                    .ok_or(NoStart::Empty)?;
                x[best] = 1.0;
            }
        }
        if self.meets_rows(&x) {
            return Ok(x);
        }
        if self.rows.len() == 1 {
            // Move mass to each group's cheapest option, the groups that save most per unit of
            // mass first, just as far as needed: few changes of support, so few active-set steps.
            let row = &self.rows[0];
            let cap = self.caps[0];
            let mut moves: Vec<(f64, usize, usize)> = Vec::new();
            let mut least = 0.0;
            for range in &self.groups {
                let cheap = range
                    .clone()
                    .filter(|&i| alive[i])
                    .min_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .ok_or(NoStart::Empty)?;
                least += row[cheap];
                for i in range.clone().filter(|&i| x[i] > 0.0 && row[i] > row[cheap]) {
                    moves.push((row[i] - row[cheap], i, cheap));
                }
            }
            if least > cap + self.row_slack_tolerance(0) {
                return Err(NoStart::Empty);
            }
            moves.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut excess = dot(row, &x) - cap;
            for (saving, from, to) in moves {
                if excess <= 0.0 {
                    break;
                }
                let mass = x[from].min(excess / saving);
                let mass = if mass >= x[from] * (1.0 - 1e-12) { x[from] } else { mass };
                x[from] -= mass;
                x[to] += mass;
                excess -= mass * saving;
            }
            if !self.meets_rows(&x) {
                // Rounding: the cheapest point itself.
                x.iter_mut().for_each(|v| *v = 0.0);
                for range in &self.groups {
                    let cheap = range
                        .clone()
                        .filter(|&i| alive[i])
                        .min_by(|&a, &b| row[a].total_cmp(&row[b]))
                        .ok_or(NoStart::Empty)?;
                    x[cheap] = 1.0;
                }
            }
            return Ok(x);
        }
        self.phase_one(alive, &x)
    }

    /// Several rows: minimise the total violation Σ t_r over the groups' simplices with
    /// R·x − t ≤ cap, t ≥ 0 (an LP, solved with a small ridge by the same method), from `x`.
    /// Emptiness is not taken from the solver: its certificate must prove that every point
    /// violates the rows (the least objective above what the ridge alone can add at t = 0).
    fn phase_one(&self, alive: &[bool], x: &[f64]) -> Result<Vec<f64>, NoStart> {
        let (n, m) = (self.n, self.rows.len());
        let size = n + m;
        let ridge = 1e-9;
        let mut hess = vec![0.0; size * size];
        for i in 0..size {
            hess[i * size + i] = ridge;
        }
        let mut linear = vec![0.0; size];
        for r in 0..m {
            linear[n + r] = 1.0;
        }
        let rows: Vec<Vec<f64>> = (0..m)
            .map(|r| {
                let mut row = self.rows[r].clone();
                row.resize(size, 0.0);
                row[n + r] = -1.0;
                row
            })
            .collect();
        let mut group_of = self.group_of.clone();
        group_of.resize(size, usize::MAX);
        let aux = Qp {
            n: size,
            hess,
            linear,
            constant: 0.0,
            groups: self.groups.clone(),
            group_of,
            rows,
            caps: self.caps.clone(),
        };
        let mut start = x.to_vec();
        for r in 0..m {
            start.push((self.row_usage(r, x) - self.caps[r]).max(0.0));
        }
        let mut alive_aux = alive.to_vec();
        alive_aux.resize(size, true);
        let solved = aux.solve(&alive_aux, start);
        let tolerance = (0..m).map(|r| self.row_slack_tolerance(r)).sum::<f64>();
        let x = solved.x[..n].to_vec();
        // With the ridge the steps are accurate to a few 1e-7 only (the Hessian's condition is
        // ~1e9): t = 0 may come with rows broken by that much. Such a start is harmless — the
        // active-set method keeps a broken row active and never breaks it further, and every
        // bound is certified from whatever point it reaches — while calling the node empty
        // would lose it. Whatever t the solver left, x is what counts.
        let nearly =
            (0..m).all(|r| self.row_usage(r, &x) <= self.caps[r] + PHASE_ONE_SLACK * self.caps[r].abs().max(1.0));
        if nearly {
            return Ok(x);
        }
        // At a point with t = 0 the objective is the ridge's ½·ε·Σx² ≤ ½·ε·groups; a certified
        // least objective above that leaves no such point. Prices above 1 would make a slack's
        // priced gradient negative (the bound −∞); any ν in [0, 1] is as valid.
        let prices: Vec<f64> = solved.prices.iter().map(|p| p.clamp(0.0, 1.0)).collect();
        let least = aux.certificate(&alive_aux, &solved.x, &solved.grad, &prices);
        let ridge_at_most = 0.5 * ridge * self.groups.len() as f64;
        if least > ridge_at_most + tolerance {
            Err(NoStart::Empty)
        } else {
            Err(NoStart::Unproven)
        }
    }

    /// Minimise from a feasible `x` (see [`Qp::feasible_start`]) over the alive variables. With
    /// options removed, the problem over the alive ones alone is solved (every step costs
    /// O(alive · free) instead of O(n · free): deep in the search a fifth of n is alive).
    pub fn solve(&self, alive: &[bool], x: Vec<f64>) -> Relaxed {
        let kept: Vec<usize> = (0..self.n).filter(|&i| alive[i]).collect();
        if kept.len() == self.n {
            return self.solve_alive(alive, x);
        }
        let small = self.restrict(&kept);
        let start: Vec<f64> = kept.iter().map(|&i| x[i]).collect();
        let sol = small.solve_alive(&vec![true; kept.len()], start);
        let lift = |v: &[f64]| {
            let mut full = vec![0.0; self.n];
            for (a, &i) in kept.iter().enumerate() {
                full[i] = v[a];
            }
            full
        };
        Relaxed {
            x: lift(&sol.x),
            grad: lift(&sol.grad),
            ..sol
        }
    }

    /// The problem over the variables `kept` (in order; every group keeps one at least), whose
    /// groups stay contiguous.
    fn restrict(&self, kept: &[usize]) -> Qp {
        let m = kept.len();
        let mut hess = vec![0.0; m * m];
        for (a, &i) in kept.iter().enumerate() {
            let row = self.row(i);
            for (b, &j) in kept.iter().enumerate() {
                hess[a * m + b] = row[j];
            }
        }
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut group_of = Vec::with_capacity(m);
        let mut a = 0;
        while a < m {
            let g = self.group_of[kept[a]];
            let start = a;
            while a < m && self.group_of[kept[a]] == g {
                a += 1;
            }
            if g == usize::MAX {
                group_of.extend(std::iter::repeat_n(usize::MAX, a - start));
            } else {
                group_of.extend(std::iter::repeat_n(groups.len(), a - start));
                groups.push(start..a);
            }
        }
        Qp {
            n: m,
            hess,
            linear: kept.iter().map(|&i| self.linear[i]).collect(),
            constant: self.constant,
            groups,
            group_of,
            rows: self.rows.iter().map(|r| kept.iter().map(|&i| r[i]).collect()).collect(),
            caps: self.caps.clone(),
        }
    }

    fn solve_alive(&self, alive: &[bool], mut x: Vec<f64>) -> Relaxed {
        let n = self.n;
        let m = self.rows.len();
        for i in 0..n {
            if !alive[i] {
                x[i] = 0.0;
            }
        }
        let mut grad = self.gradient(&x);
        let mut at_zero: Vec<bool> = (0..n).map(|i| alive[i] && x[i] <= 0.0).collect();
        for i in 0..n {
            if at_zero[i] {
                x[i] = 0.0;
            }
        }
        let mut row_on: Vec<bool> = (0..m)
            .map(|r| self.row_usage(r, &x) >= self.caps[r] - self.row_slack_tolerance(r))
            .collect();
        let mut prices = vec![0.0; m];
        let max_iterations = ITERATIONS_PER_VARIABLE * n + 50;
        let mut eqp = Eqp::default();
        let mut converged = false;
        let mut iterations = 0;
        while iterations < max_iterations {
            iterations += 1;
            let free: Vec<usize> = (0..n).filter(|&i| alive[i] && !at_zero[i]).collect();
            if !eqp.solve(self, &free, &row_on, &grad) {
                break;
            }
            let largest = free.iter().map(|&i| eqp.step[i].abs()).fold(0.0, f64::max);
            let mut full_step = true;
            if largest > STEP_TOLERANCE {
                // Ratio test: the first bound or row the step would cross.
                let mut alpha = 1.0;
                let mut blocking = Blocking::None;
                for &i in &free {
                    let p = eqp.step[i];
                    if p < 0.0 && x[i] + alpha * p < 0.0 {
                        alpha = x[i] / -p;
                        blocking = Blocking::Bound(i);
                    }
                }
                for r in 0..m {
                    if row_on[r] && !eqp.dependent[r] {
                        continue;
                    }
                    let change: f64 = free.iter().map(|&i| self.rows[r][i] * eqp.step[i]).sum();
                    if change > 0.0 {
                        let room = (self.caps[r] - self.row_usage(r, &x)).max(0.0);
                        if room < alpha * change {
                            alpha = room / change;
                            blocking = Blocking::Row(r);
                        }
                    }
                }
                for &i in &free {
                    x[i] += alpha * eqp.step[i];
                }
                for &i in &free {
                    if eqp.step[i] != 0.0 {
                        axpy(&mut grad, alpha * eqp.step[i], self.row(i));
                    }
                }
                match blocking {
                    Blocking::Bound(i) => {
                        x[i] = 0.0;
                        at_zero[i] = true;
                        full_step = false;
                    }
                    Blocking::Row(r) => {
                        row_on[r] = true;
                        full_step = false;
                    }
                    Blocking::None => {}
                }
            }
            if !full_step {
                continue;
            }
            // At the minimum over the working set: the multipliers decide.
            eqp.group_multipliers(self, &grad);
            let scale = 1.0 + grad.iter().fold(0.0f64, |a, g| a.max(g.abs()));
            let mut worst = -MULTIPLIER_TOLERANCE * scale;
            let mut release = Blocking::None;
            for i in 0..n {
                if alive[i] && at_zero[i] {
                    let s = grad[i] - eqp.constraint_term(self, i);
                    if s < worst {
                        worst = s;
                        release = Blocking::Bound(i);
                    }
                }
            }
            for r in 0..m {
                prices[r] = if row_on[r] && !eqp.dependent[r] {
                    -eqp.row_multiplier[r]
                } else {
                    0.0
                };
                if prices[r] < worst {
                    worst = prices[r];
                    release = Blocking::Row(r);
                }
            }
            match release {
                Blocking::Bound(i) => at_zero[i] = false,
                Blocking::Row(r) => row_on[r] = false,
                Blocking::None => {
                    converged = true;
                    break;
                }
            }
        }
        let grad = self.gradient(&x);
        let bound = self.certificate(alive, &x, &grad, &prices);
        Relaxed {
            value: self.value_with(&x, &grad),
            bound,
            x,
            grad,
            prices: prices.iter().map(|p| p.max(0.0)).collect(),
            iterations,
            converged,
        }
    }
}

enum Blocking {
    None,
    Bound(usize),
    Row(usize),
}

/// The equality-constrained step over the free variables F: min ½pᵀHp + gᵀp over p supported
/// on F with each group's sum and each row of the working set unchanged, by the null-space
/// method: in every group one free variable (the reference) absorbs the others,
/// p = Z·u with columns e_j − e_ref, so the group sums hold for every u; the reduced problem
/// min ½uᵀ(ZᵀHZ)u + (Zᵀg)ᵀu subject to the rows, C·u = 0, is solved by the range-space
/// method: ZᵀHZ = LLᵀ, λ from (C B⁻¹ Cᵀ)λ = C B⁻¹ Zᵀg, u = B⁻¹(Cᵀλ − Zᵀg). Its size is the
/// number of free variables less the number of groups (a few dozen), against all free
/// variables for the range-space method on the whole problem.
#[derive(Default)]
struct Eqp {
    /// The step, indexed by variable (0 outside F).
    step: Vec<f64>,
    /// λ of every row in the working set (0 for the others).
    row_multiplier: Vec<f64>,
    /// Rows of the working set that the other constraints imply on F.
    dependent: Vec<bool>,
    /// The reference variable of every group (`usize::MAX` where none is free).
    reference: Vec<usize>,
    /// λ of every group at the current point (set by [`Eqp::group_multipliers`]).
    group_multiplier: Vec<f64>,
}

impl Eqp {
    /// (Aᵀλ)_i for variable i.
    fn constraint_term(&self, qp: &Qp, i: usize) -> f64 {
        let g = qp.group_of[i];
        let mut t = if g == usize::MAX { 0.0 } else { self.group_multiplier[g] };
        for (r, row) in qp.rows.iter().enumerate() {
            t += self.row_multiplier[r] * row[i];
        }
        t
    }

    /// The groups' multipliers at the minimum over the working set, from the gradient there:
    /// ∇f_ref = λ_g + Σ_r λ_r R_r,ref at every group's reference.
    fn group_multipliers(&mut self, qp: &Qp, grad: &[f64]) {
        self.group_multiplier.clear();
        self.group_multiplier.resize(qp.groups.len(), 0.0);
        for g in 0..qp.groups.len() {
            let r = self.reference[g];
            if r != usize::MAX {
                let rows: f64 = qp
                    .rows
                    .iter()
                    .zip(&self.row_multiplier)
                    .map(|(row, l)| l * row[r])
                    .sum();
                self.group_multiplier[g] = grad[r] - rows;
            }
        }
    }

    /// False when ZᵀHZ is not positive definite (H is required to be).
    fn solve(&mut self, qp: &Qp, free: &[usize], row_on: &[bool], grad: &[f64]) -> bool {
        let n = qp.n;
        let m = qp.rows.len();
        self.step.clear();
        self.step.resize(n, 0.0);
        self.row_multiplier.clear();
        self.row_multiplier.resize(m, 0.0);
        self.dependent.clear();
        self.dependent.resize(m, false);
        self.reference.clear();
        self.reference.resize(qp.groups.len(), usize::MAX);
        // Columns of Z: (variable, its group's reference or usize::MAX).
        let mut columns: Vec<(usize, usize)> = Vec::with_capacity(free.len());
        for &i in free {
            let g = qp.group_of[i];
            if g == usize::MAX {
                columns.push((i, usize::MAX));
            } else if self.reference[g] == usize::MAX {
                self.reference[g] = i;
            } else {
                columns.push((i, self.reference[g]));
            }
        }
        let d = columns.len();
        if d == 0 {
            return true;
        }
        let h = |i: usize, j: usize| qp.hess[i * n + j];
        let mut l = vec![0.0; d * d];
        for (a, &(ja, ra)) in columns.iter().enumerate() {
            for (b, &(jb, rb)) in columns.iter().enumerate().take(a + 1) {
                let mut v = h(ja, jb);
                if rb != usize::MAX {
                    v -= h(ja, rb);
                }
                if ra != usize::MAX {
                    v -= h(ra, jb);
                    if rb != usize::MAX {
                        v += h(ra, rb);
                    }
                }
                l[a * d + b] = v;
            }
        }
        if !cholesky(&mut l, d) {
            return false;
        }
        let reduce = |v: &[f64]| -> Vec<f64> {
            columns
                .iter()
                .map(|&(j, r)| if r == usize::MAX { v[j] } else { v[j] - v[r] })
                .collect()
        };
        let mut y = reduce(grad);
        cholesky_solve(&l, d, &mut y);
        let active: Vec<usize> = (0..m).filter(|&r| row_on[r]).collect();
        let k = active.len();
        let c: Vec<Vec<f64>> = active.iter().map(|&r| reduce(&qp.rows[r])).collect();
        let w: Vec<Vec<f64>> = c
            .iter()
            .map(|ca| {
                let mut v = ca.clone();
                cholesky_solve(&l, d, &mut v);
                v
            })
            .collect();
        // M = C B⁻¹ Cᵀ, factored with dependent rows left out.
        let mut kept = vec![true; k];
        let mut lm = vec![0.0; k * k];
        for a in 0..k {
            for b in 0..=a {
                if !kept[b] {
                    continue;
                }
                let mut s = dot(&c[a], &w[b]);
                for e in 0..b {
                    if kept[e] {
                        s -= lm[a * k + e] * lm[b * k + e];
                    }
                }
                if a == b {
                    let diag = dot(&c[a], &w[a]);
                    if s <= DEPENDENT_ROW * diag.max(f64::MIN_POSITIVE) {
                        kept[a] = false;
                        self.dependent[active[a]] = true;
                    } else {
                        lm[a * k + a] = s.sqrt();
                    }
                } else {
                    lm[a * k + b] = s / lm[b * k + b];
                }
            }
        }
        let mut lambda: Vec<f64> = (0..k).map(|a| if kept[a] { dot(&c[a], &y) } else { 0.0 }).collect();
        for a in 0..k {
            if kept[a] {
                let mut s = lambda[a];
                for e in 0..a {
                    if kept[e] {
                        s -= lm[a * k + e] * lambda[e];
                    }
                }
                lambda[a] = s / lm[a * k + a];
            }
        }
        for a in (0..k).rev() {
            if kept[a] {
                let mut s = lambda[a];
                for e in a + 1..k {
                    if kept[e] {
                        s -= lm[e * k + a] * lambda[e];
                    }
                }
                lambda[a] = s / lm[a * k + a];
            }
        }
        // u = Σ λ_a w_a − y, then p = Z·u.
        let mut u: Vec<f64> = y.iter().map(|v| -v).collect();
        for a in 0..k {
            if kept[a] && lambda[a] != 0.0 {
                for (uv, wv) in u.iter_mut().zip(&w[a]) {
                    *uv += lambda[a] * wv;
                }
            }
            self.row_multiplier[active[a]] = lambda[a];
        }
        for (a, &(j, r)) in columns.iter().enumerate() {
            self.step[j] += u[a];
            if r != usize::MAX {
                self.step[r] -= u[a];
            }
        }
        true
    }
}

/// y += a·x.
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// In-place Cholesky factor of the lower triangle of a row-major f × f matrix; false when a
/// pivot is not positive.
fn cholesky(l: &mut [f64], f: usize) -> bool {
    for a in 0..f {
        for b in 0..=a {
            let mut s = l[a * f + b];
            for c in 0..b {
                s -= l[a * f + c] * l[b * f + c];
            }
            if a == b {
                if s <= 0.0 || !s.is_finite() {
                    return false;
                }
                l[a * f + a] = s.sqrt();
            } else {
                l[a * f + b] = s / l[b * f + b];
            }
        }
    }
    true
}

/// Solve L Lᵀ v = b in place.
fn cholesky_solve(l: &[f64], f: usize, v: &mut [f64]) {
    for a in 0..f {
        let mut s = v[a];
        for c in 0..a {
            s -= l[a * f + c] * v[c];
        }
        v[a] = s / l[a * f + a];
    }
    for a in (0..f).rev() {
        let mut s = v[a];
        for c in a + 1..f {
            s -= l[c * f + a] * v[c];
        }
        v[a] = s / l[a * f + a];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bnb::Model;
    use crate::problem::ChoiceQp;
    use crate::synthetic::{random_convex_qp, random_row, SplitMix64};

    /// The active-set solution is exact up to rounding in its steps: the certificate (a lower
    /// bound, independent of the solver) meets the value at the returned point within this
    /// fraction of the objective's scale. Rounding of sums of a few hundred terms is ~1e-14;
    /// the ridge's conditioning (1e8) costs a few orders more.
    const OPTIMALITY: f64 = 1e-9;

    fn model(qp: &ChoiceQp, rows: &[crate::problem::BudgetRow]) -> Model {
        Model::new(qp, rows)
    }

    /// The relaxation over `alive`, solved from a feasible start near a random point.
    fn solve_from_random_point(qp: &Qp, alive: &[bool], rng: &mut SplitMix64) -> Relaxed {
        let start = qp.feasible_start(alive, &random_point(qp, alive, rng)).unwrap();
        qp.solve(alive, start)
    }

    /// A random point of the product of the groups' simplices over `alive`.
    fn random_point(qp: &Qp, alive: &[bool], rng: &mut SplitMix64) -> Vec<f64> {
        let mut x = vec![0.0; qp.n];
        for range in &qp.groups {
            let weights: Vec<f64> = range
                .clone()
                .map(|i| if alive[i] { rng.uniform() } else { 0.0 })
                .collect();
            let total: f64 = weights.iter().sum();
            for (i, w) in range.clone().zip(weights) {
                x[i] = w / total;
            }
        }
        x
    }

    fn scale(qp: &Qp) -> f64 {
        1.0 + qp.hess.iter().fold(0.0f64, |a, v| a.max(v.abs()))
    }

    #[test]
    fn the_solution_is_optimal_by_its_own_certificate() {
        for seed in 0..20 {
            let cq = random_convex_qp(6, 4, 8 + seed as usize % 10, seed);
            let rows: Vec<_> = (0..(seed % 3))
                .map(|r| random_row(&cq, 0.3 + 0.2 * r as f64, seed * 7 + r))
                .collect();
            let m = model(&cq, &rows);
            let qp = &m.qp;
            let mut rng = SplitMix64::new(seed);
            let mut alive = vec![true; qp.n];
            for g in &qp.groups {
                // Remove up to two options of some groups, keeping one at least.
                for i in g.clone().skip(1) {
                    if rng.uniform() < 0.25 {
                        alive[i] = false;
                    }
                }
            }
            let hint = random_point(qp, &alive, &mut rng);
            let Ok(start) = qp.feasible_start(&alive, &hint) else {
                continue;
            };
            assert!(qp.meets_rows(&start), "seed {seed}: the start meets the rows");
            let sol = qp.solve(&alive, start);
            assert!(sol.converged, "seed {seed}: {} iterations", sol.iterations);
            assert!(
                qp.meets_rows(&sol.x),
                "seed {seed}: the solution meets the rows: {:?} vs {:?}",
                qp.rows.iter().map(|r| dot(r, &sol.x)).collect::<Vec<_>>(),
                qp.caps
            );
            for (g, range) in qp.groups.iter().enumerate() {
                let sum: f64 = range.clone().map(|i| sol.x[i]).sum();
                assert!((sum - 1.0).abs() < 1e-12, "seed {seed}: group {g} sums to {sum}");
                assert!(range.clone().all(|i| sol.x[i] >= 0.0 && (alive[i] || sol.x[i] == 0.0)));
            }
            assert!(
                sol.value - sol.bound <= OPTIMALITY * scale(qp),
                "seed {seed}: value {} certificate {}",
                sol.value,
                sol.bound
            );
        }
    }

    #[test]
    fn the_certificate_bounds_every_point_of_the_polytope_from_any_point() {
        for seed in 0..10 {
            let cq = random_convex_qp(5, 3, 6, 100 + seed);
            let rows = vec![random_row(&cq, 0.5, seed)];
            let m = model(&cq, &rows);
            let qp = &m.qp;
            let alive = vec![true; qp.n];
            let mut rng = SplitMix64::new(seed);
            // From the optimum and from arbitrary points with arbitrary prices.
            let sol = solve_from_random_point(qp, &alive, &mut rng);
            let anywhere = random_point(qp, &alive, &mut rng);
            let bounds = [
                sol.bound,
                qp.certificate(&alive, &anywhere, &qp.gradient(&anywhere), &[rng.uniform()]),
            ];
            for _ in 0..200 {
                let s = random_point(qp, &alive, &mut rng);
                if !qp.meets_rows(&s) {
                    continue;
                }
                for b in bounds {
                    assert!(
                        qp.value(&s) >= b - 1e-12 * scale(qp),
                        "seed {seed}: {} < {b}",
                        qp.value(&s)
                    );
                }
            }
        }
    }

    #[test]
    fn warm_and_cold_starts_reach_the_same_optimum() {
        for seed in 0..10 {
            let cq = random_convex_qp(7, 4, 12, 200 + seed);
            let rows = vec![random_row(&cq, 0.4, seed)];
            let m = model(&cq, &rows);
            let qp = &m.qp;
            let alive = vec![true; qp.n];
            let mut rng = SplitMix64::new(seed);
            let a = solve_from_random_point(qp, &alive, &mut rng);
            let uniform: Vec<f64> = qp
                .groups
                .iter()
                .flat_map(|r| r.clone().map(|_| 1.0 / r.len() as f64))
                .collect();
            let b = qp.solve(&alive, qp.feasible_start(&alive, &uniform).unwrap());
            assert!(
                (a.value - b.value).abs() <= OPTIMALITY * scale(qp),
                "seed {seed}: {} vs {}",
                a.value,
                b.value
            );
        }
    }

    /// Two rows that no point meets together make the node empty; rows that only the cheap
    /// corners meet need the phase-one solve, which must find such a point.
    #[test]
    fn phase_one_finds_a_point_exactly_when_there_is_one() {
        let cq = random_convex_qp(4, 3, 6, 7);
        let n = cq.n();
        // Row A charges option 0 of every group, row B option 2: both at most 1.5 of 4 groups'
        // worth means two groups on option 1 at least.
        let row = |charged: usize, limit: f64| crate::problem::BudgetRow {
            budget: clado::budget::Budget::SizeBits(limit),
            coef: (0..n).map(|i| if i % 3 == charged { 1.0 } else { 0.0 }).collect(),
            fixed_use: 0.0,
            limit,
        };
        let m = model(&cq, &[row(0, 1.5), row(2, 1.5)]);
        let qp = &m.qp;
        let alive = vec![true; n];
        // Start from option 0 everywhere (row A used 4 times).
        let hint: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
        let x = qp.feasible_start(&alive, &hint).expect("option 1 meets both rows");
        assert!(qp.meets_rows(&x));
        let sol = qp.solve(&alive, x);
        assert!(qp.meets_rows(&sol.x) && sol.value - sol.bound <= OPTIMALITY * scale(qp));
        // Without option 1 the rows ask for more than four groups can give.
        let no_middle: Vec<bool> = (0..n).map(|i| i % 3 != 1).collect();
        assert_eq!(qp.feasible_start(&no_middle, &hint), Err(NoStart::Empty));
    }
}
