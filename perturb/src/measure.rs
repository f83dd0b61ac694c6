//! The measurement of one calibration batch: the FP pass, every single-layer Δ, and the
//! pairwise interactions of the work units asked for.
//!
//! Nothing unchanged is recomputed:
//! - the FP state before every variable layer is computed once per batch;
//! - a single d(l, o) runs from the FP state before l;
//! - a unit (l, o) runs the network with l quantized from the FP state before l, stopping
//!   before each later variable layer m; that state is shared by every option of m, and each
//!   (m, o') runs only the rest of the network from there.

use crate::units::{FpBatch, Moments, UnitResult};
use clado::calib::PrecisionTable;
use clado::engine::{log_softmax, Images, Logits, Network, Parallelism, Plan, State};
use clado::format::Metric;
use clado::{Error, Result};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is measured, fixed for a run.
pub struct Measure<'a> {
    pub net: &'a Network,
    pub table: &'a PrecisionTable,
    /// Variable layers (indices into the network's layers), in forward order.
    pub variables: &'a [usize],
    pub metric: Metric,
    pub naive: bool,
    /// Forward evaluations finished (for progress), shared across threads.
    pub evaluations: &'a AtomicU64,
    /// Layers run × images (for the benchmark's work count).
    pub layer_runs: &'a AtomicU64,
}

impl Measure<'_> {
    /// Measure batch `batch` for the units `(k, o)` asked for. Returns the FP metrics and the
    /// units' results in the order asked.
    pub fn batch(
        &self,
        batch: usize,
        images: Images<'_>,
        labels: &[usize],
        units: &[(usize, usize)],
        on_unit: &(dyn Fn(&UnitResult) -> Result<()> + Sync),
    ) -> Result<(FpBatch, Vec<UnitResult>)> {
        let net = self.net;
        let n = images.batch();
        let fp = Plan::fp(net);
        let layers = net.layers().len();

        // FP states before each variable layer, and the FP logits.
        let mut states: Vec<State> = Vec::with_capacity(self.variables.len());
        let mut state = net.input_state(images)?;
        for &l in self.variables {
            state = net.run(&state, l, &fp, Parallelism::Rayon)?;
            states.push(state.clone());
        }
        let fp_logits = net.run_to_logits(&state, &fp, Parallelism::Rayon)?;
        self.count_layers(layers, n);
        let (fp_batch, fp_values) = self.fp_reference(batch, &fp_logits, labels)?;

        // Every single Δ of the batch, per sample (all are needed by the units' pairs).
        let options = self.table.options.len();
        let singles: Vec<(usize, usize)> = (0..self.variables.len())
            .flat_map(|k| (0..options).map(move |o| (k, o)))
            .collect();
        let single_deltas: Vec<Vec<f64>> = singles
            .par_iter()
            .with_max_len(1)
            .map(|&(k, o)| {
                let l = self.variables[k];
                let plan = fp.clone().with(l, self.table.get(l, o).clone())?;
                let logits = net.run_to_logits(&states[k], &plan, Parallelism::None)?;
                self.count_layers(layers - l, n);
                self.evaluations.fetch_add(1, Ordering::Relaxed);
                Ok(self.deltas(&logits, labels, &fp_logits, &fp_values))
            })
            .collect::<Result<_>>()?;
        let single = |k: usize, o: usize| &single_deltas[k * options + o];

        // The units: pairs (k, o) × (m, o') for m after k.
        let results: Vec<UnitResult> = units
            .par_iter()
            .with_max_len(1)
            .map(|&(k, o)| {
                let l = self.variables[k];
                let plan = fp.clone().with(l, self.table.get(l, o).clone())?;
                let mut pairs = Vec::new();
                if !self.naive {
                    let mut state = states[k].clone();
                    for m in k + 1..self.variables.len() {
                        let lm = self.variables[m];
                        self.count_layers(lm - state.position(), n);
                        state = net.run(&state, lm, &plan, Parallelism::None)?;
                        for o2 in 0..options {
                            let plan2 = plan.clone().with(lm, self.table.get(lm, o2).clone())?;
                            let logits = net.run_to_logits(&state, &plan2, Parallelism::None)?;
                            self.count_layers(layers - lm, n);
                            self.evaluations.fetch_add(1, Ordering::Relaxed);
                            let both = self.deltas(&logits, labels, &fp_logits, &fp_values);
                            pairs.push(self.interaction(batch, (k, o), (m, o2), &both, single(k, o), single(m, o2))?);
                        }
                    }
                }
                let result = UnitResult {
                    batch,
                    layer: k,
                    option: o,
                    samples: n,
                    single: self.moments(batch, &[(k, o)], single(k, o))?,
                    pairs,
                };
                on_unit(&result)?;
                Ok(result)
            })
            .collect::<Result<_>>()?;
        Ok((fp_batch, results))
    }

    /// What the FP logits of a batch give: its [`FpBatch`] (loss sum, correct count) and the
    /// per-sample FP value of the metric that every Δ is measured from (the loss; 0 for KL,
    /// which compares with the FP predictions themselves).
    fn fp_reference(&self, batch: usize, fp_logits: &Logits, labels: &[usize]) -> Result<(FpBatch, Vec<f64>)> {
        let fp_loss = per_sample(fp_logits, labels, fp_logits, Metric::Loss);
        let fp_batch = FpBatch {
            samples: labels.len(),
            loss_sum: self.moments(batch, &[], &fp_loss)?.sum,
            correct: fp_logits.correct_top_k(labels, 1)?,
        };
        let fp_values = match self.metric {
            Metric::Loss => fp_loss,
            Metric::Kl => vec![0.0; labels.len()],
        };
        Ok((fp_batch, fp_values))
    }

    /// The same results as [`Measure::batch`] for every unit of the batch, the slow way the
    /// seed did it: one full forward pass from the images per single and per pair. Used by
    /// `--reference` to check the fast path.
    pub fn reference_batch(
        &self,
        batch: usize,
        images: Images<'_>,
        labels: &[usize],
    ) -> Result<(FpBatch, Vec<UnitResult>)> {
        let net = self.net;
        let n = images.batch();
        let fp = Plan::fp(net);
        let fp_logits = net.forward(images, &fp, Parallelism::Rayon)?;
        let (fp_batch, fp_values) = self.fp_reference(batch, &fp_logits, labels)?;
        let options = self.table.options.len();
        let k_count = self.variables.len();
        let full = |quantized: &[(usize, usize)]| -> Result<Vec<f64>> {
            let mut plan = fp.clone();
            for &(k, o) in quantized {
                let l = self.variables[k];
                plan.set(l, self.table.get(l, o).clone())?;
            }
            let logits = net.forward(images, &plan, Parallelism::Rayon)?;
            self.evaluations.fetch_add(1, Ordering::Relaxed);
            self.count_layers(net.layers().len(), n);
            Ok(self.deltas(&logits, labels, &fp_logits, &fp_values))
        };
        let mut singles = Vec::with_capacity(k_count * options);
        for k in 0..k_count {
            for o in 0..options {
                singles.push(full(&[(k, o)])?);
            }
        }
        let mut results = Vec::new();
        for k in 0..k_count {
            for o in 0..options {
                let a = &singles[k * options + o];
                let mut pairs = Vec::new();
                if !self.naive {
                    for m in k + 1..k_count {
                        for o2 in 0..options {
                            let both = full(&[(k, o), (m, o2)])?;
                            let b = &singles[m * options + o2];
                            pairs.push(self.interaction(batch, (k, o), (m, o2), &both, a, b)?);
                        }
                    }
                }
                results.push(UnitResult {
                    batch,
                    layer: k,
                    option: o,
                    samples: n,
                    single: self.moments(batch, &[(k, o)], a)?,
                    pairs,
                });
            }
        }
        Ok((fp_batch, results))
    }

    /// The exact moments of per-sample values measured with `quantized` (variable layer,
    /// option) in batch `batch`; a value that is not finite stops the run with the sample.
    fn moments(&self, batch: usize, quantized: &[(usize, usize)], values: &[f64]) -> Result<Moments> {
        Moments::of(values).map_err(|s| {
            let with = match quantized {
                [] => "the FP model".to_string(),
                _ => quantized
                    .iter()
                    .map(|&(k, o)| {
                        let l = self.variables[k];
                        format!("'{}' at {}", self.net.layers()[l].name, self.table.options[o])
                    })
                    .collect::<Vec<_>>()
                    .join(" and "),
            };
            Error::other(format!(
                "the metric of sample {s} of batch {batch} with {with} is {} (not a finite value of at most {:e}): the model or its quantizer parameters give non-finite logits",
                values[s],
                crate::units::MAX_PER_SAMPLE
            ))
        })
    }

    /// The moments of the per-sample interaction Δ(u, v) − Δ(u) − Δ(v).
    fn interaction(
        &self,
        batch: usize,
        u: (usize, usize),
        v: (usize, usize),
        both: &[f64],
        du: &[f64],
        dv: &[f64],
    ) -> Result<Moments> {
        let values: Vec<f64> = both.iter().zip(du).zip(dv).map(|((b, x), y)| b - x - y).collect();
        self.moments(batch, &[u, v], &values)
    }

    /// Per-sample Δ of the metric against the FP values.
    fn deltas(&self, logits: &Logits, labels: &[usize], fp_logits: &Logits, fp_values: &[f64]) -> Vec<f64> {
        let q = per_sample(logits, labels, fp_logits, self.metric);
        q.iter().zip(fp_values).map(|(q, f)| q - f).collect()
    }

    fn count_layers(&self, layers: usize, images: usize) {
        self.layer_runs.fetch_add((layers * images) as u64, Ordering::Relaxed);
    }
}

/// A progress bar on stderr (hidden with `-q` or when stderr is not a terminal… indicatif
/// hides itself then), counting forward evaluations.
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Self {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "perturb: {bar:30} {pos}/{len} evaluations, {per_sec}, ETA {eta}",
                )
                .expect("valid template"),
            );
            b
        };
        Progress { bar }
    }

    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Per-sample metric: cross-entropy against `labels`, or KL(p_fp ‖ p) against `fp`.
pub fn per_sample(logits: &Logits, labels: &[usize], fp: &Logits, metric: Metric) -> Vec<f64> {
    let k = logits.classes();
    let mut logq = vec![0.0f64; k];
    let mut logp = vec![0.0f64; k];
    (0..logits.batch())
        .map(|i| {
            log_softmax(logits.row(i), &mut logq);
            match metric {
                Metric::Loss => -logq[labels[i]],
                Metric::Kl => {
                    log_softmax(fp.row(i), &mut logp);
                    logp.iter().zip(&logq).map(|(&lp, &lq)| lp.exp() * (lp - lq)).sum()
                }
            }
        })
        .collect()
}
