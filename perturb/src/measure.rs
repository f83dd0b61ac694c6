//! The measurement of one calibration batch: the FP pass, every single-layer Δ, and the
//! pairwise interactions of the work units asked for.
//!
//! Nothing unchanged is recomputed:
//! - the FP state before every variable layer is computed once per batch;
//! - a single d(l, o) runs from the FP state before l;
//! - a unit (l, o) runs the network with l quantized from the FP state before l, stopping
//!   before each later variable layer m; that state is shared by every option of m, and each
//!   (m, o') runs only the rest of the network from there.

use clado::calib::PrecisionTable;
use clado::engine::{log_softmax, Images, Logits, Network, Parallelism, Plan, State};
use clado::format::Metric;
use clado::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Sum and sum of squares of a per-sample quantity, accumulated in f64 in sample order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub sum: f64,
    pub sumsq: f64,
}

impl Moments {
    fn of(values: impl Iterator<Item = f64>) -> Moments {
        let mut m = Moments::default();
        for v in values {
            m.sum += v;
            m.sumsq += v * v;
        }
        m
    }

    pub fn add(&mut self, other: &Moments) {
        self.sum += other.sum;
        self.sumsq += other.sumsq;
    }

    /// Mean and standard error of the mean over `n` samples (SE 0 when n < 2).
    pub fn mean_se(&self, n: usize) -> (f64, f64) {
        let nf = n as f64;
        let mean = self.sum / nf;
        if n < 2 {
            return (mean, 0.0);
        }
        let var = ((self.sumsq - self.sum * self.sum / nf) / (nf - 1.0)).max(0.0);
        (mean, (var / nf).sqrt())
    }
}

/// The result of one work unit (batch, variable layer k, option o).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitResult {
    pub batch: usize,
    /// Index into the variable layers.
    pub layer: usize,
    /// Index into the options.
    pub option: usize,
    /// Samples in the batch.
    pub samples: usize,
    /// Per-sample Δ = metric(l at o) − metric(FP).
    pub single: Moments,
    /// For every later variable layer m and option o' (m-major): the per-sample interaction
    /// Δ(l,o; m,o') − Δ(l,o) − Δ(m,o'). Empty for `--naive`.
    pub pairs: Vec<Moments>,
}

/// FP metrics of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FpBatch {
    pub samples: usize,
    pub loss_sum: f64,
    pub correct: usize,
}

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
        let (fp_batch, fp_values) = self.fp_reference(&fp_logits, labels)?;

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
                            let (a, b) = (single(k, o), single(m, o2));
                            pairs.push(Moments::of((0..n).map(|s| both[s] - a[s] - b[s])));
                        }
                    }
                }
                let result = UnitResult {
                    batch,
                    layer: k,
                    option: o,
                    samples: n,
                    single: Moments::of(single(k, o).iter().copied()),
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
    fn fp_reference(&self, fp_logits: &Logits, labels: &[usize]) -> Result<(FpBatch, Vec<f64>)> {
        let fp_loss = per_sample(fp_logits, labels, fp_logits, Metric::Loss);
        let fp_batch = FpBatch {
            samples: labels.len(),
            loss_sum: fp_loss.iter().sum(),
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
        let (fp_batch, fp_values) = self.fp_reference(&fp_logits, labels)?;
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
                            pairs.push(Moments::of((0..n).map(|s| both[s] - a[s] - b[s])));
                        }
                    }
                }
                results.push(UnitResult {
                    batch,
                    layer: k,
                    option: o,
                    samples: n,
                    single: Moments::of(a.iter().copied()),
                    pairs,
                });
            }
        }
        Ok((fp_batch, results))
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
