//! What a work unit's file holds, and the checks every unit passes before it counts.
//!
//! A unit keeps, for each entry it measures, the *exact* sum of the per-sample values and of
//! their squares: a short list of f64s whose exact (unrounded) sum is the sum of the samples,
//! the first of them that sum correctly rounded ([`ExactSum`]). Adding units of any batches in
//! any order then gives the same exact total, and G, rounded once from it, the same bits: G
//! does not depend on the batch size, the thread count, the shards or the restarts, as long as
//! every sample's value has the same bits in any batch (the forward engine's contract).

use crate::Job;
use fsum::FSum;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bound on |value| of a per-sample Δ and of its square. A loss or KL from f32 logits stays
/// below about 2·3.4e38 and its square below 1e78, so anything larger was not measured; the
/// bound also keeps every total of a run finite.
pub const MAX_PER_SAMPLE: f64 = 1e100;

/// Most parts an exact sum of f64s needs: each part starts at least 53 bits below the one
/// before, and the f64 range spans 2,098 bits.
const MAX_PARTS: usize = 41;

/// The exact sum of some f64 values, as non-overlapping parts, largest first: the first part
/// is the sum correctly rounded, the second the rest rounded, and so on until nothing is left
/// (no parts for 0). The parts are a function of the exact value alone, so two equal sums
/// have equal parts. In JSON: an array of numbers, `[0.0123, -4.1e-19]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExactSum {
    parts: Vec<f64>,
}

impl ExactSum {
    /// The exact sum of `values` (finite); `None` when it is not finite.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<ExactSum> {
        Self::from_exact(FSum::with_all(values))
    }

    /// The parts of the exact value that `acc` holds.
    fn from_exact(mut acc: FSum) -> Option<ExactSum> {
        let mut parts = Vec::new();
        loop {
            let rounded = acc.value();
            if rounded == 0.0 {
                return Some(ExactSum { parts });
            }
            if !rounded.is_finite() || parts.len() == MAX_PARTS {
                return None;
            }
            parts.push(rounded);
            acc.add(-rounded);
        }
    }

    /// The sum, correctly rounded to f64.
    pub fn value(&self) -> f64 {
        self.parts.first().copied().unwrap_or(0.0)
    }

    /// The parts, largest first.
    pub fn parts(&self) -> &[f64] {
        &self.parts
    }
}

impl Serialize for ExactSum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.parts)
    }
}

/// Any list of finite numbers is read as its exact sum (and so compares equal to every other
/// list with the same sum).
impl<'de> Deserialize<'de> for ExactSum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parts: Vec<f64> = Vec::deserialize(d)?;
        if parts.iter().any(|p| !p.is_finite()) {
            return Err(serde::de::Error::custom("an exact sum holds finite numbers only"));
        }
        ExactSum::from_exact(FSum::with_all(&parts))
            .ok_or_else(|| serde::de::Error::custom("the parts of this exact sum add up beyond the f64 range"))
    }
}

/// Exact sums of many [`ExactSum`]s (of the units of several batches), rounded once at the end.
#[derive(Clone, Debug, Default)]
pub struct ExactTotal(FSum);

impl ExactTotal {
    pub fn add(&mut self, s: &ExactSum) {
        self.0.add_all(s.parts());
    }

    /// The total, correctly rounded.
    pub fn value(&self) -> f64 {
        self.0.value()
    }
}

/// Sum and sum of squares of a per-sample quantity, both exact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moments {
    pub sum: ExactSum,
    pub sumsq: ExactSum,
}

impl Moments {
    /// The moments of per-sample values, or the first sample whose value is not finite or
    /// beyond [`MAX_PER_SAMPLE`].
    pub fn of(values: &[f64]) -> Result<Moments, usize> {
        if let Some(bad) = values
            .iter()
            .position(|v| !(-MAX_PER_SAMPLE..=MAX_PER_SAMPLE).contains(v))
        {
            return Err(bad);
        }
        // Within the bound no sum of fewer than 1e200 samples leaves the f64 range.
        let sum = ExactSum::of(values.iter().copied()).ok_or(0usize)?;
        let sumsq = ExactSum::of(values.iter().map(|v| v * v)).ok_or(0usize)?;
        Ok(Moments { sum, sumsq })
    }

    /// What is wrong with these moments as the sums over `samples` samples, if anything.
    fn problem(&self, samples: usize) -> Option<String> {
        let limit = samples as f64 * MAX_PER_SAMPLE;
        let (sum, sumsq) = (self.sum.value(), self.sumsq.value());
        if !(-limit..=limit).contains(&sum) {
            Some(format!("sum {sum:e} is beyond what {samples} samples can give"))
        } else if !(0.0..=limit).contains(&sumsq) {
            Some(format!(
                "sum of squares {sumsq:e} is not between 0 and what {samples} samples can give"
            ))
        } else {
            None
        }
    }
}

/// [`Moments`] of many units added exactly.
#[derive(Clone, Debug, Default)]
pub struct MomentsTotal {
    sum: ExactTotal,
    sumsq: ExactTotal,
}

impl MomentsTotal {
    pub fn add(&mut self, m: &Moments) {
        self.sum.add(&m.sum);
        self.sumsq.add(&m.sumsq);
    }

    /// Mean and standard error of the mean over `n` samples (SE 0 when n < 2), from the
    /// correctly rounded totals.
    pub fn mean_se(&self, n: usize) -> (f64, f64) {
        let (sum, sumsq) = (self.sum.value(), self.sumsq.value());
        let nf = n as f64;
        let mean = sum / nf;
        if n < 2 {
            return (mean, 0.0);
        }
        let var = ((sumsq - sum * sum / nf) / (nf - 1.0)).max(0.0);
        (mean, (var / nf).sqrt())
    }
}

/// The result of one work unit (batch, variable layer k, option o).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl UnitResult {
    pub fn key(&self) -> (usize, usize, usize) {
        (self.batch, self.layer, self.option)
    }

    /// What is wrong with this unit as a result of `job`, if anything: indices in range, the
    /// batch's sample count, one pair result for every later variable layer and option (none
    /// for `--naive`), sums that samples can give.
    pub fn problem(&self, job: &Job) -> Option<String> {
        let (variables, options) = (job.variables.len(), job.options.len());
        if self.batch >= job.batches() {
            return Some(format!(
                "batch {} does not exist (the run has {} batches of up to {} samples)",
                self.batch,
                job.batches(),
                job.batch_size
            ));
        }
        if self.layer >= variables {
            return Some(format!(
                "variable layer {} does not exist (the run perturbs {variables} layers)",
                self.layer
            ));
        }
        if self.option >= options {
            return Some(format!(
                "option {} does not exist (the run has {options} options)",
                self.option
            ));
        }
        let samples = job.batch_len(self.batch);
        if self.samples != samples {
            return Some(format!(
                "holds {} samples, but batch {} of the run has {samples}",
                self.samples, self.batch
            ));
        }
        let pairs = if job.naive {
            0
        } else {
            (variables - 1 - self.layer) * options
        };
        if self.pairs.len() != pairs {
            return Some(format!(
                "holds {} pair results, expected {pairs} (one per option of every later variable layer{})",
                self.pairs.len(),
                if job.naive { "; none with --naive" } else { "" }
            ));
        }
        if let Some(p) = self.single.problem(samples) {
            return Some(format!("single-layer result: {p}"));
        }
        self.pairs.iter().enumerate().find_map(|(i, m)| {
            m.problem(samples).map(|p| {
                let (later, o2) = (self.layer + 1 + i / options, i % options);
                format!(
                    "pair result with layer '{}' at {}: {p}",
                    job.variable_name(later),
                    job.options[o2]
                )
            })
        })
    }
}

/// FP metrics of one batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpBatch {
    pub samples: usize,
    pub loss_sum: ExactSum,
    pub correct: usize,
}

impl FpBatch {
    /// What is wrong with these metrics as batch `batch` of `job` (in range), if anything.
    pub fn problem(&self, batch: usize, job: &Job) -> Option<String> {
        let samples = job.batch_len(batch);
        if self.samples != samples {
            Some(format!(
                "FP metrics of batch {batch} are over {} samples, but the batch has {samples}",
                self.samples
            ))
        } else if self.correct > samples {
            Some(format!(
                "FP metrics of batch {batch} count {} correct of {samples} samples",
                self.correct
            ))
        } else if !(0.0..=samples as f64 * MAX_PER_SAMPLE).contains(&self.loss_sum.value()) {
            Some(format!(
                "FP loss sum {:e} of batch {batch} is not between 0 and what {samples} samples can give",
                self.loss_sum.value()
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `math.fsum` (CPython's Lib/test/test_math.py, `testFsum`): inputs and the
    /// correctly rounded sums it asserts.
    fn python_fsum_cases() -> Vec<(Vec<f64>, f64)> {
        let p = |e: i32| 2f64.powi(e);
        vec![
            (vec![], 0.0),
            (vec![0.0], 0.0),
            (vec![1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50], 1e-100),
            (vec![p(53), -0.5, -p(-54)], p(53) - 1.0),
            (vec![p(53), 1.0, p(-100)], p(53) + 2.0),
            (vec![p(53) + 10.0, 1.0, p(-100)], p(53) + 12.0),
            (vec![p(53) - 4.0, 0.5, p(-54)], p(53) - 3.0),
            (
                (1..=1000).map(|n| 1.0 / n as f64).collect(),
                f64::from_bits(0x401DF11F45F4E61A),
            ),
            ((1..10).map(|_| 0.1).collect::<Vec<_>>(), 0.9),
            (vec![1e-16, 1.0, 1e16], 1.0000000000000002e16),
            (vec![1e16, 1.0, 1e-16], 1.0000000000000002e16),
        ]
    }

    #[test]
    fn exact_sums_round_like_python_fsum_in_any_order() {
        for (values, want) in python_fsum_cases() {
            let s = ExactSum::of(values.iter().copied()).unwrap();
            assert_eq!(s.value().to_bits(), want.to_bits(), "{values:?}");
            let reversed = ExactSum::of(values.iter().rev().copied()).unwrap();
            assert_eq!(reversed, s, "the parts depend on the exact value only");
            // Split in two at every point and added as two units: the same total.
            for at in 0..values.len() {
                let mut total = ExactTotal::default();
                total.add(&ExactSum::of(values[at..].iter().copied()).unwrap());
                total.add(&ExactSum::of(values[..at].iter().copied()).unwrap());
                assert_eq!(total.value().to_bits(), want.to_bits(), "{values:?} split at {at}");
            }
        }
    }

    #[test]
    fn parts_are_non_overlapping_and_exact() {
        // 1 + 2^-60 + 2^-130: three parts, each the rest of the one before, rounded.
        let values = [1.0, 2f64.powi(-60), 2f64.powi(-130), 0.0];
        let s = ExactSum::of(values).unwrap();
        assert_eq!(s.parts(), &[1.0, 2f64.powi(-60), 2f64.powi(-130)]);
        assert!(ExactSum::of([1.0, -1.0]).unwrap().parts().is_empty());
        // Beyond the f64 range: no sum.
        assert!(ExactSum::of([f64::MAX, f64::MAX]).is_none());
    }

    #[test]
    fn json_keeps_every_part_and_reads_any_list_as_its_sum() {
        let s = ExactSum::of([0.1, 0.2, 0.3, 1e-20]).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        let back: ExactSum = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        // A list that is not in canonical form reads as the same exact sum.
        let loose: ExactSum = serde_json::from_str("[0.5, 0.5, 1e-30]").unwrap();
        assert_eq!(loose, ExactSum::of([1.0, 1e-30]).unwrap());
        for bad in ["[1.7e308, 1.7e308]", "[null]", "0.5", "[\"1\"]"] {
            assert!(serde_json::from_str::<ExactSum>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn moments_refuse_values_that_were_not_measured() {
        assert_eq!(Moments::of(&[0.1, f64::NAN]), Err(1));
        assert_eq!(Moments::of(&[f64::INFINITY]), Err(0));
        assert_eq!(Moments::of(&[0.0, 0.0, -2e100]), Err(2));
        let m = Moments::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m.sum.value(), m.sumsq.value()), (6.0, 14.0));
        let mut t = MomentsTotal::default();
        t.add(&m);
        // Mean 2, sample variance 1, standard error sqrt(1/3).
        assert_eq!(t.mean_se(3), (2.0, (1.0f64 / 3.0).sqrt()));
    }
}
