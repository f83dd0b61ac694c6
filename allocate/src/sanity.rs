//! The sanity check of an unconstrained allocation (docs/definitions.md, "The sanity check").
//!
//! Without a budget the least predicted change should come from the highest-precision option
//! everywhere. When it does not, some estimates say that quantizing more *lowers* the metric:
//! a negative single-layer estimate d(v) < 0, or negative cross terms G\[u,v\] < 0 that reward
//! two layers quantized together. The report names every deviating layer, what keeping it at
//! the highest precision would cost (split into its single and cross parts), and the negative
//! estimates responsible.

use crate::problem::{Choice, Problem};
use serde::Serialize;

/// At most this many negative estimates are listed per deviating layer (most negative first).
pub const MAX_LISTED: usize = 5;

/// One negative entry of G.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NegativeEstimate {
    pub layer: String,
    pub option: String,
    /// The partner of a cross term; absent for a single-layer estimate G\[v,v\].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_option: Option<String>,
    pub value: f64,
}

/// A layer whose answer is below its highest-precision option.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Deviation {
    pub layer: String,
    pub chosen: String,
    pub highest: String,
    /// G\[v,v\] of the chosen and of the highest option.
    pub single_chosen: f64,
    pub single_highest: f64,
    /// 2·Σ_u G\[v,u\] over the other chosen variables u, for the chosen and the highest option.
    pub cross_chosen: f64,
    pub cross_highest: f64,
    /// Negative estimates that favour the chosen option: its G\[v,v\] if negative, and its most
    /// negative cross terms with the other chosen options.
    pub negative_estimates: Vec<NegativeEstimate>,
}

/// The sanity check's findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sanity {
    /// Whether every free layer got its highest-precision option.
    pub passed: bool,
    pub deviations: Vec<Deviation>,
    /// Predicted Δ of the answer and of the highest precision everywhere.
    pub objective: f64,
    pub objective_highest: f64,
    /// How many single-layer estimates G\[v,v\] are negative, over the whole matrix.
    pub negative_single: usize,
    /// How many cross terms G\[u,v\] (u < v, different layers) are negative.
    pub negative_cross: usize,
}

impl Sanity {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        if self.passed {
            return "sanity check passed: the unconstrained answer is the highest precision everywhere".into();
        }
        let layers: Vec<String> = self
            .deviations
            .iter()
            .map(|d| format!("{} at {} (not {})", d.layer, d.chosen, d.highest))
            .collect();
        format!(
            "sanity check failed: {} layer(s) below the highest precision: {}; predicted Δ {:.6e} vs {:.6e} at the highest \
             precision, because of negative estimates ({} single, {} cross terms in G; see notes.sanity)",
            self.deviations.len(),
            layers.join(", "),
            self.objective,
            self.objective_highest,
            self.negative_single,
            self.negative_cross
        )
    }
}

/// Check an unconstrained answer.
pub fn check(problem: &Problem, choice: &Choice) -> Sanity {
    let g = &problem.matrix;
    let highest = problem.highest_precision();
    let chosen = problem.chosen_vars(choice);
    let name = |v: usize| problem.layers[problem.var_layer[v]].name.clone();
    let option = |v: usize| problem.option_of(v).to_string();
    // Cross terms are off under --naive: the optimiser saw only the diagonal.
    let cross = |v: usize, layer: usize| -> f64 {
        if problem.naive {
            return 0.0;
        }
        chosen
            .iter()
            .filter(|&&u| problem.var_layer[u] != layer)
            .map(|&u| 2.0 * g[[v, u]])
            .sum()
    };
    let mut deviations = Vec::new();
    for (group, (&c, &h)) in choice.iter().zip(&highest).enumerate() {
        if c == h {
            continue;
        }
        let (v, w) = (problem.groups[group].vars[c], problem.groups[group].vars[h]);
        let layer = problem.groups[group].layer;
        let mut negative = Vec::new();
        if g[[v, v]] < 0.0 {
            negative.push(NegativeEstimate {
                layer: name(v),
                option: option(v),
                other_layer: None,
                other_option: None,
                value: g[[v, v]],
            });
        }
        if !problem.naive {
            let mut cross_terms: Vec<NegativeEstimate> = chosen
                .iter()
                .filter(|&&u| problem.var_layer[u] != layer && g[[v, u]] < 0.0)
                .map(|&u| NegativeEstimate {
                    layer: name(v),
                    option: option(v),
                    other_layer: Some(name(u)),
                    other_option: Some(option(u)),
                    value: g[[v, u]],
                })
                .collect();
            cross_terms.sort_by(|a, b| a.value.total_cmp(&b.value));
            negative.extend(cross_terms);
        }
        negative.truncate(MAX_LISTED);
        deviations.push(Deviation {
            layer: name(v),
            chosen: option(v),
            highest: option(w),
            single_chosen: g[[v, v]],
            single_highest: g[[w, w]],
            cross_chosen: cross(v, layer),
            cross_highest: cross(w, layer),
            negative_estimates: negative,
        });
    }
    let n = g.nrows();
    let negative_single = (0..n).filter(|&v| g[[v, v]] < 0.0).count();
    let negative_cross = (0..n)
        .flat_map(|u| (u + 1..n).map(move |v| (u, v)))
        .filter(|&(u, v)| problem.var_layer[u] != problem.var_layer[v] && g[[u, v]] < 0.0)
        .count();
    Sanity {
        passed: deviations.is_empty(),
        deviations,
        objective: problem.objective(choice),
        objective_highest: problem.objective(&highest),
        negative_single,
        negative_cross,
    }
}
