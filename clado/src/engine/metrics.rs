//! Metrics on logits, accumulated in f64: mean cross-entropy, mean KL(p_fp ‖ p_q), top-k.
//!
//! Softmax is computed in f64 from the f32 logits as a log-softmax with the row maximum
//! subtracted (`log p_k = z_k − m − ln Σ exp(z_j − m)`), so it neither overflows nor loses the
//! small probabilities that KL needs. Samples are summed in order, so results are
//! deterministic.

use crate::{Error, Result};

/// Logits of a batch, `[N, K]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    batch: usize,
    classes: usize,
    data: Vec<f32>,
}

impl Logits {
    /// Wraps `data` of `batch × classes` values.
    pub fn new(data: Vec<f32>, batch: usize, classes: usize) -> Result<Self> {
        if data.len() != batch * classes || classes == 0 {
            return Err(Error::other(format!(
                "{} logits do not form {batch} rows of {classes} classes",
                data.len()
            )));
        }
        Ok(Logits { batch, classes, data })
    }

    pub(crate) fn from_vec(data: Vec<f32>, batch: usize, classes: usize) -> Self {
        debug_assert_eq!(data.len(), batch * classes);
        Logits { batch, classes, data }
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All logits, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The logits of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.classes..(i + 1) * self.classes]
    }

    fn check_labels(&self, labels: &[usize]) -> Result<()> {
        if labels.len() != self.batch {
            return Err(Error::other(format!(
                "{} labels for {} samples",
                labels.len(),
                self.batch
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= self.classes) {
            return Err(Error::other(format!(
                "label {l} of sample {i} is out of range for {} classes",
                self.classes
            )));
        }
        Ok(())
    }

    /// Mean cross-entropy (natural log) against `labels`.
    pub fn mean_cross_entropy(&self, labels: &[usize]) -> Result<f64> {
        self.check_labels(labels)?;
        let mut logp = vec![0.0f64; self.classes];
        let mut sum = 0.0f64;
        for (i, &label) in labels.iter().enumerate() {
            log_softmax(self.row(i), &mut logp);
            sum -= logp[label];
        }
        Ok(sum / self.batch.max(1) as f64)
    }

    /// The cross-entropy (natural log) of each sample against its label, in sample order: summed
    /// over batches in sample order, they give a mean that does not depend on the batch size.
    pub fn cross_entropy_each(&self, labels: &[usize]) -> Result<Vec<f64>> {
        self.check_labels(labels)?;
        let mut logp = vec![0.0f64; self.classes];
        Ok(labels
            .iter()
            .enumerate()
            .map(|(i, &label)| {
                log_softmax(self.row(i), &mut logp);
                -logp[label]
            })
            .collect())
    }

    /// KL(p_reference ‖ p_self) of each sample, in sample order (see [`Self::cross_entropy_each`]).
    pub fn kl_each_from(&self, reference: &Logits) -> Result<Vec<f64>> {
        if reference.batch != self.batch || reference.classes != self.classes {
            return Err(Error::other(format!(
                "KL between logits of {}x{} and {}x{}",
                reference.batch, reference.classes, self.batch, self.classes
            )));
        }
        let mut logp = vec![0.0f64; self.classes];
        let mut logq = vec![0.0f64; self.classes];
        Ok((0..self.batch)
            .map(|i| {
                log_softmax(reference.row(i), &mut logp);
                log_softmax(self.row(i), &mut logq);
                logp.iter().zip(&logq).map(|(&lp, &lq)| lp.exp() * (lp - lq)).sum()
            })
            .collect())
    }

    /// Mean over samples of KL(p_reference ‖ p_self), e.g. `quantized.mean_kl_from(&fp)`.
    pub fn mean_kl_from(&self, reference: &Logits) -> Result<f64> {
        if reference.batch != self.batch || reference.classes != self.classes {
            return Err(Error::other(format!(
                "KL between logits of {}x{} and {}x{}",
                reference.batch, reference.classes, self.batch, self.classes
            )));
        }
        let mut logp = vec![0.0f64; self.classes];
        let mut logq = vec![0.0f64; self.classes];
        let mut sum = 0.0f64;
        for i in 0..self.batch {
            log_softmax(reference.row(i), &mut logp);
            log_softmax(self.row(i), &mut logq);
            let kl: f64 = logp.iter().zip(&logq).map(|(&lp, &lq)| lp.exp() * (lp - lq)).sum();
            sum += kl;
        }
        Ok(sum / self.batch.max(1) as f64)
    }

    /// Samples whose label is among the `k` largest logits. Ties are broken towards the lower
    /// class index (as `argmax` does): the label counts if fewer than `k` classes beat it, a
    /// class beating it when its logit is larger, or equal with a lower index.
    pub fn correct_top_k(&self, labels: &[usize], k: usize) -> Result<usize> {
        self.check_labels(labels)?;
        let mut correct = 0;
        for (i, &label) in labels.iter().enumerate() {
            let row = self.row(i);
            let z = row[label];
            let beaten_by = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > z || (v == z && j < label))
                .count();
            if beaten_by < k {
                correct += 1;
            }
        }
        Ok(correct)
    }

    /// Index of the largest logit of each sample (lowest index on ties).
    pub fn argmax(&self) -> Vec<usize> {
        (0..self.batch)
            .map(|i| {
                let row = self.row(i);
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = j;
                    }
                }
                best
            })
            .collect()
    }
}

/// `out[k] = log softmax(z)_k` in f64.
pub fn log_softmax(z: &[f32], out: &mut [f64]) {
    let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = z.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    let log_norm = m + sum.ln();
    for (o, &v) in out.iter_mut().zip(z) {
        *o = f64::from(v) - log_norm;
    }
}
