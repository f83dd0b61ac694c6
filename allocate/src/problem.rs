//! The allocation problem, checked: which layers are decided, by which rows and columns of G,
//! and what every budget leaves for them.
//!
//! A layer of the index is either *fixed* (`index.fixed`: not a variable, counted in budgets at
//! its fixed option), *pinned* (a variable layer forced to one option by `--pin`: counted in
//! budgets and in xᵀGx) or *free* (one option to choose: a [`Group`] of matrix indices).

use clado::budget::Budget;
use clado::format::{Index, LayerInfo};
use clado::options::QuantOption;
use clado::{Error, Result};
use ndarray::Array2;
use std::collections::BTreeMap;

/// Relative asymmetry of G tolerated (and then averaged away): rounding in the writer, not data.
pub const SYMMETRY_TOLERANCE: f64 = 1e-9;

/// How one layer of the model gets its precision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Not a variable (`index.fixed`): counted in budgets only.
    Fixed(QuantOption),
    /// A variable layer forced to the option of matrix index `var`.
    Pinned { var: usize },
    /// A variable layer whose option is chosen: index into [`Problem::groups`].
    Free { group: usize },
}

/// The options of one free layer: matrix indices of its variables, in matrix order.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Index into [`Problem::layers`].
    pub layer: usize,
    /// Matrix indices of the layer's variables.
    pub vars: Vec<usize>,
}

/// A choice for every free layer: position within [`Group::vars`], one per group.
pub type Choice = Vec<usize>;

/// The checked problem: layers, options, decisions, and the matrix in use.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The model the index was measured on (copied into every alloc.json).
    pub model: clado::format::ModelId,
    /// Every quantizable layer, in forward order.
    pub layers: Vec<LayerInfo>,
    /// The options of the index.
    pub options: Vec<QuantOption>,
    /// Option index of every matrix row.
    pub var_option: Vec<usize>,
    /// Layer index of every matrix row.
    pub var_layer: Vec<usize>,
    /// One decision per layer.
    pub decisions: Vec<Decision>,
    /// The free layers, in forward order.
    pub groups: Vec<Group>,
    /// G as given (symmetrised).
    pub matrix: Array2<f64>,
    /// Whether only the diagonal of G is optimised (`--naive`); [`Problem::matrix`] stays whole
    /// so that the predicted Δ can include the cross terms.
    pub naive: bool,
    /// Standard errors of G's entries (`--se`), checked like G.
    pub se: Option<Array2<f64>>,
    /// What the objective adds to G: Z·P of the confidence rule ([`Problem::apply_confidence`])
    /// and the model-error rule's terms ([`Problem::apply_pessimism`]).
    pub penalty: Option<Array2<f64>>,
}

/// What the confidence rule says about one choice x, against the reference x₀ (the highest
/// precision everywhere). See [`Problem::apply_confidence`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConfidenceReport {
    pub z: f64,
    /// Σ of the standard errors of x's entries: a bound on the standard error of xᵀGx.
    pub predicted_delta_se_bound: f64,
    /// xᵀGx − x₀ᵀGx₀: the predicted change against the highest precision everywhere.
    pub delta_vs_highest: f64,
    /// Σ of the standard errors of the entries in x or x₀ but not both: a bound on the
    /// standard error of `delta_vs_highest`.
    pub delta_vs_highest_se_bound: f64,
    /// `delta_vs_highest + z · delta_vs_highest_se_bound`: what was minimised, up to a constant.
    pub delta_vs_highest_upper: f64,
}

impl Problem {
    /// Check the index, the matrix and the pins against each other. `index_name` and
    /// `matrix_name` name the files in messages. Pins are (layer name, option text).
    pub fn new(
        index: &Index,
        index_name: &str,
        mut matrix: Array2<f64>,
        matrix_name: &str,
        pins: &[(String, String)],
        naive: bool,
    ) -> Result<Problem> {
        let bad = |msg: String| Error::input(index_name, msg);
        if index.layers.is_empty() {
            return Err(bad("no layers".into()));
        }
        let mut layer_of: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, l) in index.layers.iter().enumerate() {
            if layer_of.insert(l.name.as_str(), i).is_some() {
                return Err(bad(format!("layer \"{}\" appears more than once", l.name)));
            }
        }
        let mut options = Vec::with_capacity(index.options.len());
        for (i, o) in index.options.iter().enumerate() {
            let parsed = QuantOption::parse(&o.name).map_err(|e| bad(format!("options[{i}]: {e}")))?;
            if parsed != o.option() {
                return Err(bad(format!(
                    "options[{i}] \"{}\" says w_bits {:?}, a_bits {:?}, which is not what its name means",
                    o.name, o.w_bits, o.a_bits
                )));
            }
            if options.contains(&parsed) {
                return Err(bad(format!("option \"{}\" appears more than once", o.name)));
            }
            options.push(parsed);
        }
        let n = index.variables.len();
        if n == 0 {
            return Err(bad("no variables".into()));
        }
        if matrix.nrows() != n || matrix.ncols() != n {
            return Err(Error::input(
                matrix_name,
                format!(
                    "matrix is {}×{}, but {index_name} lists {n} variables (expected {n}×{n})",
                    matrix.nrows(),
                    matrix.ncols()
                ),
            ));
        }
        clado::io::check_finite(matrix_name, &matrix)?;
        symmetrise(matrix_name, &mut matrix)?;

        let mut var_of: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        let (mut var_layer, mut var_option) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (v, var) in index.variables.iter().enumerate() {
            if var.layer >= index.layers.len() || var.option >= options.len() {
                return Err(bad(format!(
                    "variables[{v}] = (layer {}, option {}) is out of range ({} layers, {} options)",
                    var.layer,
                    var.option,
                    index.layers.len(),
                    options.len()
                )));
            }
            if var_of.insert((var.layer, var.option), v).is_some() {
                return Err(bad(format!(
                    "variables[{v}]: layer \"{}\" at option \"{}\" appears more than once",
                    index.layers[var.layer].name, options[var.option]
                )));
            }
            var_layer.push(var.layer);
            var_option.push(var.option);
        }

        let mut decisions: Vec<Option<Decision>> = vec![None; index.layers.len()];
        for (name, option) in &index.fixed {
            let &l = layer_of
                .get(name.as_str())
                .ok_or_else(|| bad(format!("fixed layer \"{name}\" is not among the layers")))?;
            if var_layer.contains(&l) {
                return Err(bad(format!("layer \"{name}\" is both fixed and a variable")));
            }
            let o = QuantOption::parse(option).map_err(|e| bad(format!("fixed layer \"{name}\": {e}")))?;
            decisions[l] = Some(Decision::Fixed(o));
        }
        for (name, option) in pins {
            let Some(&l) = layer_of.get(name.as_str()) else {
                return Err(Error::usage(format!(
                    "--pin {name}={option}: no layer \"{name}\" in {index_name} (layers: {})",
                    list(index.layers.iter().map(|l| l.name.as_str()))
                )));
            };
            let o = QuantOption::parse(option).map_err(|e| Error::usage(format!("--pin {name}={option}: {e}")))?;
            match &decisions[l] {
                Some(Decision::Fixed(f)) if *f == o => continue,
                Some(Decision::Fixed(f)) => {
                    return Err(Error::usage(format!(
                        "--pin {name}={option}: layer \"{name}\" is fixed at {f} in {index_name} and is not a variable"
                    )))
                }
                Some(Decision::Pinned { .. }) => {
                    return Err(Error::usage(format!(
                        "--pin: layer \"{name}\" is pinned more than once"
                    )))
                }
                _ => {}
            }
            let var = options
                .iter()
                .position(|&x| x == o)
                .and_then(|oi| var_of.get(&(l, oi)).copied());
            let Some(var) = var else {
                let mut have: Vec<String> = var_of
                    .range((l, 0)..(l + 1, 0))
                    .map(|(&(_, oi), _)| options[oi].to_string())
                    .collect();
                have.dedup();
                return Err(Error::usage(format!(
                    "--pin {name}={option}: layer \"{name}\" has no variable for option {o} (its options: {})",
                    have.join(",")
                )));
            };
            decisions[l] = Some(Decision::Pinned { var });
        }
        let mut groups = Vec::new();
        for l in 0..index.layers.len() {
            if decisions[l].is_some() {
                continue;
            }
            let vars: Vec<usize> = var_of.range((l, 0)..(l + 1, 0)).map(|(_, &v)| v).collect();
            if vars.is_empty() {
                return Err(bad(format!(
                    "layer \"{}\" has no variables and is not fixed (every layer must be one or the other)",
                    index.layers[l].name
                )));
            }
            let mut vars = vars;
            vars.sort_unstable();
            decisions[l] = Some(Decision::Free { group: groups.len() });
            groups.push(Group { layer: l, vars });
        }
        let decisions = decisions
            .into_iter()
            .map(|d| d.expect("every layer decided above"))
            .collect();
        Ok(Problem {
            model: index.model.clone(),
            layers: index.layers.clone(),
            options,
            var_option,
            var_layer,
            decisions,
            groups,
            matrix,
            naive,
            se: None,
            penalty: None,
        })
    }

    /// Attach the standard errors of G's entries (same shape as G, finite, ≥ 0, symmetric).
    pub fn set_se(&mut self, mut se: Array2<f64>, se_name: &str) -> Result<()> {
        let n = self.matrix.nrows();
        if se.dim() != (n, n) {
            return Err(Error::input(
                se_name,
                format!(
                    "standard errors are {}×{}, but G is {n}×{n} (expected the same shape)",
                    se.nrows(),
                    se.ncols()
                ),
            ));
        }
        clado::io::check_finite(se_name, &se)?;
        if let Some(((i, j), v)) = se.indexed_iter().find(|(_, v)| **v < 0.0) {
            return Err(Error::input(
                se_name,
                format!("entry [{i}, {j}] is {v}: a standard error must be ≥ 0"),
            ));
        }
        symmetrise(se_name, &mut se)?;
        self.se = Some(se);
        Ok(())
    }

    /// The confidence rule: minimise an upper confidence bound of the predicted change against
    /// x₀, the highest precision everywhere, instead of xᵀGx.
    ///
    /// Let E(x) be the entries of G that count in xᵀGx (the diagonal entries of the chosen
    /// variables and the pairs between them) and s_e the standard error of entry e. Then
    /// Δ(x) − Δ(x₀) is the sum of the entries in E(x) \ E(x₀) minus those in E(x₀) \ E(x), and
    /// since the standard deviation of a sum is at most the sum of the standard deviations
    /// (for any correlation), its standard error is at most
    /// Σ_{e ∈ E(x) Δ E(x₀)} s_e = Σ_{e ∈ E(x)} s_e·(1 − 2·[e ∈ E(x₀)]) + Σ_{e ∈ E(x₀)} s_e.
    /// So Δ(x) − Δ(x₀) + Z·bound = xᵀ(G + Z·P)x + constant, with P = S where an entry is not x₀'s
    /// own and −S where it is: a quadratic form of the same shape, solved by the same machinery.
    /// x₀ scores exactly 0 on the bound, so another choice wins only where it is better by more
    /// than Z standard errors (bounded): noise is not chased. Needs [`Problem::set_se`].
    pub fn apply_confidence(&mut self, z: f64) {
        let in_reference = self.in_reference();
        let se = self.se.as_ref().expect("set_se before apply_confidence");
        let penalty = Array2::from_shape_fn(se.dim(), |(u, v)| {
            let sign = if in_reference[u] && in_reference[v] { -1.0 } else { 1.0 };
            z * sign * se[[u, v]]
        });
        self.add_penalty(penalty);
    }

    /// The model-error rule (`--pessimistic`): count on no benefit from quantizing layers
    /// together. A negative cross term G\[u,v\] (u, v in different layers) says that the pair
    /// hurts less than the sum of its parts; that is exact for the two layers measured, but a
    /// sum over many such pairs extrapolates the pairwise model far past what was measured (with
    /// 9 options the raw minimiser predicted a loss change of −9 nats, below minus the FP loss,
    /// which no cross-entropy can reach). The rule scores such entries as 0 unless both
    /// variables are x₀'s (the highest precision everywhere), i.e. it adds −G\[u,v\] to them.
    ///
    /// Relative to x₀, Δ(x) − Δ(x₀) adds the entries of x not in x₀ and subtracts those of x₀
    /// not in x. Raising the added entries to max(G, 0) and leaving the subtracted ones as they
    /// are can only raise the estimate: the result is an upper estimate of the pairwise
    /// prediction, and of the true change whenever the interactions it drops are not harmful
    /// (saturation: a layer already quantized leaves less for the next to destroy). x₀ keeps
    /// its score, so without a budget a layer leaves x₀ only on its own estimates (with
    /// `--confidence`, only when they are significant). Combines with the confidence rule.
    pub fn apply_pessimism(&mut self) {
        let in_reference = self.in_reference();
        let penalty = Array2::from_shape_fn(self.matrix.dim(), |(u, v)| {
            let cross = self.var_layer[u] != self.var_layer[v];
            if cross && !(in_reference[u] && in_reference[v]) {
                (-self.matrix[[u, v]]).max(0.0)
            } else {
                0.0
            }
        });
        self.add_penalty(penalty);
    }

    /// For each variable, whether it is x₀'s (the highest precision everywhere).
    fn in_reference(&self) -> Vec<bool> {
        let mut mask = vec![false; self.matrix.nrows()];
        for v in self.chosen_vars(&self.highest_precision()) {
            mask[v] = true;
        }
        mask
    }

    /// Add `extra` to the penalty the objective adds to G.
    fn add_penalty(&mut self, extra: Array2<f64>) {
        self.penalty = Some(match self.penalty.take() {
            Some(p) => p + extra,
            None => extra,
        });
    }

    /// What the model-error rule drops for a choice: the sum of the negative cross terms of x
    /// that are not x₀'s own (0 when there are none).
    pub fn ignored_benefit(&self, choice: &[usize]) -> f64 {
        let chosen = self.chosen_vars(choice);
        let in_reference = self.in_reference();
        let mut sum = 0.0;
        for &u in &chosen {
            for &v in &chosen {
                let both_reference = in_reference[u] && in_reference[v];
                if self.var_layer[u] != self.var_layer[v] && !both_reference {
                    sum += self.matrix[[u, v]].min(0.0);
                }
            }
        }
        sum + 0.0
    }

    /// The confidence rule's view of a choice (None without `--se`).
    pub fn confidence_report(&self, choice: &[usize], z: f64) -> Option<ConfidenceReport> {
        let se = self.se.as_ref()?;
        let chosen = self.chosen_vars(choice);
        let reference = self.chosen_vars(&self.highest_precision());
        let entries = |vars: &[usize]| -> std::collections::BTreeSet<(usize, usize)> {
            let counted = |u: usize, v: usize| u == v || (self.var_layer[u] != self.var_layer[v] && !self.naive);
            vars.iter()
                .flat_map(|&u| vars.iter().map(move |&v| (u, v)))
                .filter(|&(u, v)| counted(u, v))
                .collect()
        };
        let (mine, theirs) = (entries(&chosen), entries(&reference));
        // + 0.0: an empty sum of f64 is −0.0.
        let bound: f64 = mine
            .symmetric_difference(&theirs)
            .map(|&(u, v)| se[[u, v]])
            .sum::<f64>()
            + 0.0;
        let own: f64 = mine.iter().map(|&(u, v)| se[[u, v]]).sum();
        let delta = self.objective_plain(choice) - self.objective_plain(&self.highest_precision());
        Some(ConfidenceReport {
            z,
            predicted_delta_se_bound: own,
            delta_vs_highest: delta,
            delta_vs_highest_se_bound: bound,
            delta_vs_highest_upper: delta + z * bound,
        })
    }

    /// Entry (u, v) of the matrix the solver minimises: G plus the penalties of the rules.
    fn objective_entry(&self, u: usize, v: usize) -> f64 {
        self.matrix[[u, v]] + self.penalty.as_ref().map_or(0.0, |p| p[[u, v]])
    }

    /// Matrix indices of every chosen variable: pinned ones, then one per group.
    pub fn chosen_vars(&self, choice: &[usize]) -> Vec<usize> {
        assert_eq!(choice.len(), self.groups.len(), "one choice per free layer");
        let mut vars: Vec<usize> = self
            .decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Pinned { var } => Some(*var),
                _ => None,
            })
            .collect();
        vars.extend(self.groups.iter().zip(choice).map(|(g, &i)| g.vars[i]));
        vars
    }

    /// xᵀMx for the one-hot x of `choice` (pinned layers included).
    pub fn quadratic_form(&self, m: &Array2<f64>, choice: &[usize]) -> f64 {
        let vars = self.chosen_vars(choice);
        vars.iter().map(|&u| vars.iter().map(|&v| m[[u, v]]).sum::<f64>()).sum()
    }

    /// The objective being minimised: xᵀGx (plus the confidence penalty when applied), with
    /// only the diagonal under `--naive`.
    pub fn objective(&self, choice: &[usize]) -> f64 {
        let vars = self.chosen_vars(choice);
        if self.naive {
            vars.iter().map(|&v| self.objective_entry(v, v)).sum()
        } else {
            vars.iter()
                .map(|&u| vars.iter().map(|&v| self.objective_entry(u, v)).sum::<f64>())
                .sum()
        }
    }

    /// [`Problem::objective`] without the confidence penalty.
    pub fn objective_plain(&self, choice: &[usize]) -> f64 {
        if self.naive {
            self.chosen_vars(choice).iter().map(|&v| self.matrix[[v, v]]).sum()
        } else {
            self.predicted_delta(choice)
        }
    }

    /// xᵀGx with the whole matrix: the predicted change of the metric.
    pub fn predicted_delta(&self, choice: &[usize]) -> f64 {
        self.quadratic_form(&self.matrix, choice)
    }

    /// The option of every layer, in forward order.
    pub fn layer_options(&self, choice: &[usize]) -> Vec<QuantOption> {
        self.decisions
            .iter()
            .map(|d| match *d {
                Decision::Fixed(o) => o,
                Decision::Pinned { var } => self.options[self.var_option[var]],
                Decision::Free { group } => self.options[self.var_option[self.groups[group].vars[choice[group]]]],
            })
            .collect()
    }

    /// The option of matrix index `v`.
    pub fn option_of(&self, v: usize) -> QuantOption {
        self.options[self.var_option[v]]
    }

    /// The reduced quadratic program over the free layers (see [`ChoiceQp`]).
    pub fn reduced(&self) -> ChoiceQp {
        let sizes: Vec<usize> = self.groups.iter().map(|g| g.vars.len()).collect();
        let vars: Vec<usize> = self.groups.iter().flat_map(|g| g.vars.iter().copied()).collect();
        let group_of: Vec<usize> = sizes
            .iter()
            .enumerate()
            .flat_map(|(g, &k)| std::iter::repeat_n(g, k))
            .collect();
        let pinned = self.chosen_vars(&vec![0; self.groups.len()]);
        let pinned = &pinned[..pinned.len() - self.groups.len()];
        let n = vars.len();
        let quad = Array2::from_shape_fn((n, n), |(i, j)| {
            if i == j || (group_of[i] != group_of[j] && !self.naive) {
                self.objective_entry(vars[i], vars[j])
            } else {
                // x_u x_v = 0 for two options of one layer: these entries never count.
                0.0
            }
        });
        let entry = |u: usize, v: usize| {
            if u == v || !self.naive {
                self.objective_entry(u, v)
            } else {
                0.0
            }
        };
        let linear = vars
            .iter()
            .map(|&v| pinned.iter().map(|&p| 2.0 * entry(p, v)).sum())
            .collect();
        let constant = pinned
            .iter()
            .map(|&p| pinned.iter().map(|&q| entry(p, q)).sum::<f64>())
            .sum();
        let qp = ChoiceQp::new(sizes, quad, linear, constant);
        if self.naive {
            qp
        } else {
            let full = Array2::from_shape_fn((n, n), |(i, j)| self.objective_entry(vars[i], vars[j]));
            qp.with_within(full)
        }
    }

    /// The budget rows over the free layers' variables (see [`BudgetRow`]).
    pub fn budget_rows(&self, budgets: &[Budget]) -> Vec<BudgetRow> {
        budgets
            .iter()
            .map(|b| {
                let coef: Vec<f64> = self
                    .groups
                    .iter()
                    .flat_map(|g| {
                        g.vars
                            .iter()
                            .map(|&v| b.coefficient(&self.layers[g.layer], self.option_of(v)))
                    })
                    .collect();
                let fixed_use: f64 = self
                    .decisions
                    .iter()
                    .zip(&self.layers)
                    .map(|(d, layer)| match *d {
                        Decision::Fixed(o) => b.coefficient(layer, o),
                        Decision::Pinned { var } => b.coefficient(layer, self.option_of(var)),
                        Decision::Free { .. } => 0.0,
                    })
                    .sum();
                let limit = b.limit(&self.layers);
                BudgetRow {
                    budget: *b,
                    coef,
                    fixed_use,
                    limit,
                }
            })
            .collect()
    }

    /// The highest-precision option's position in every group ([`QuantOption::precision_key`]).
    pub fn highest_precision(&self) -> Choice {
        self.groups
            .iter()
            .map(|g| {
                (0..g.vars.len())
                    .max_by_key(|&i| self.option_of(g.vars[i]).precision_key())
                    .expect("groups are not empty")
            })
            .collect()
    }
}

/// One budget as a linear constraint over the free variables: Σ coef·x ≤ limit − fixed_use.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetRow {
    pub budget: Budget,
    /// Coefficient of every free variable, in [`ChoiceQp`] order (bits or BOPs: integers).
    pub coef: Vec<f64>,
    /// What fixed and pinned layers use.
    pub fixed_use: f64,
    /// The budget's limit over the whole model.
    pub limit: f64,
}

impl BudgetRow {
    /// What is left for the free layers, with the relative slack of [`Budget::allows`].
    pub fn capacity(&self) -> f64 {
        self.limit * (1.0 + 1e-12) - self.fixed_use
    }

    /// Usage of a choice (free layers only) under this row.
    pub fn usage(&self, qp: &ChoiceQp, choice: &[usize]) -> f64 {
        choice
            .iter()
            .enumerate()
            .map(|(g, &i)| self.coef[qp.starts[g] + i])
            .sum()
    }

    /// The least usage over all choices (each free layer at its cheapest option), whole model.
    pub fn min_total(&self, qp: &ChoiceQp) -> f64 {
        self.fixed_use
            + (0..qp.sizes.len())
                .map(|g| qp.group_range(g).map(|i| self.coef[i]).fold(f64::INFINITY, f64::min))
                .sum::<f64>()
    }
}

/// min xᵀQx + bᵀx + c over one-hot x (one variable per group), with the groups laid out
/// contiguously. Within-group off-diagonal entries of `quad` are zero.
#[derive(Clone, Debug)]
pub struct ChoiceQp {
    pub sizes: Vec<usize>,
    /// Start of every group in the variable order.
    pub starts: Vec<usize>,
    pub quad: Array2<f64>,
    pub linear: Vec<f64>,
    pub constant: f64,
    /// Entries between two options of one group, which never count (x_u·x_v = 0 there) and are
    /// 0 in `quad`: the values G had there, when known. Only the convex reformulations use
    /// them, since any values are exact and G's own keep a PSD G (e.g. after `psd --method
    /// clip`) PSD, where zeros would make it indefinite and the relaxation weak.
    pub within: Option<Array2<f64>>,
}

impl ChoiceQp {
    pub fn new(sizes: Vec<usize>, quad: Array2<f64>, linear: Vec<f64>, constant: f64) -> ChoiceQp {
        let starts = sizes
            .iter()
            .scan(0, |s, &k| {
                let start = *s;
                *s += k;
                Some(start)
            })
            .collect();
        let n: usize = sizes.iter().sum();
        assert_eq!(quad.dim(), (n, n));
        assert_eq!(linear.len(), n);
        ChoiceQp {
            sizes,
            starts,
            quad,
            linear,
            constant,
            within: None,
        }
    }

    /// `quad` with the within-group entries filled in where they are known ([`ChoiceQp::within`]):
    /// the same objective on one-hot choices, convex where G was.
    pub fn filled(&self) -> Array2<f64> {
        match &self.within {
            Some(w) => &self.quad + w,
            None => self.quad.clone(),
        }
    }

    /// The same problem, with the within-group entries of `full` kept aside (see
    /// [`ChoiceQp::within`]); `full` is n × n in this problem's variable order.
    pub fn with_within(mut self, full: Array2<f64>) -> ChoiceQp {
        assert_eq!(full.dim(), self.quad.dim());
        let n = self.n();
        let mut within = Array2::zeros((n, n));
        for g in 0..self.sizes.len() {
            for i in self.group_range(g) {
                for j in self.group_range(g) {
                    if i != j {
                        within[[i, j]] = full[[i, j]];
                    }
                }
            }
        }
        self.within = Some(within);
        self
    }

    pub fn n(&self) -> usize {
        self.linear.len()
    }

    pub fn group_range(&self, g: usize) -> std::ops::Range<usize> {
        self.starts[g]..self.starts[g] + self.sizes[g]
    }

    /// Variable indices of a choice.
    pub fn indices(&self, choice: &[usize]) -> Vec<usize> {
        choice.iter().enumerate().map(|(g, &i)| self.starts[g] + i).collect()
    }

    /// The objective of a choice.
    pub fn value(&self, choice: &[usize]) -> f64 {
        let idx = self.indices(choice);
        let quad: f64 = idx
            .iter()
            .map(|&i| idx.iter().map(|&j| self.quad[[i, j]]).sum::<f64>())
            .sum();
        quad + idx.iter().map(|&i| self.linear[i]).sum::<f64>() + self.constant
    }

    /// The largest absolute entry of the data, to put tolerances on the problem's own scale.
    pub fn scale(&self) -> f64 {
        let q = self.quad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let b = self.linear.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        q.max(b).max(self.constant.abs())
    }
}

fn symmetrise(name: &str, m: &mut Array2<f64>) -> Result<()> {
    let n = m.nrows();
    let scale = m.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(f64::MIN_POSITIVE);
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (m[[i, j]], m[[j, i]]);
            if (a - b).abs() > SYMMETRY_TOLERANCE * scale {
                return Err(Error::input(
                    name,
                    format!("matrix is not symmetric: entry [{i}, {j}] is {a} but [{j}, {i}] is {b}"),
                ));
            }
            let mean = 0.5 * (a + b);
            m[[i, j]] = mean;
            m[[j, i]] = mean;
        }
    }
    Ok(())
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.len() > 8 {
        format!("{}, ... ({} in all)", names[..8].join(", "), names.len())
    } else {
        names.join(", ")
    }
}
