//! The files between the tools (docs/definitions.md, "Files between the tools").
//!
//! | file | written by | read by |
//! | --- | --- | --- |
//! | `G.npy` (float64 N×N, see [`crate::io::read_matrix`]) | perturb, psd | psd, allocate |
//! | [`Index`] `index.json` | perturb | allocate, evaluate, scripts |
//! | [`Calib`] `calib.json` | quantize | perturb, evaluate |
//! | [`Alloc`] `alloc.json` | allocate | quantize, evaluate |
//! | [`Metrics`] metrics JSON | evaluate | scripts |
//!
//! Every document carries `version`; readers reject other versions and unknown fields.
//! Matrix convention: variable v = (layer, option) in the order of [`Index::variables`];
//! xᵀGx is the predicted change of the metric for a one-hot choice x.

use crate::io::Versioned;
use crate::options::QuantOption;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of every JSON format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// A quantizable layer (Conv2d or Linear) as PyTorch names its module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerInfo {
    /// PyTorch module name, e.g. `layer2.0.downsample.0`.
    pub name: String,
    /// `conv` or `linear`.
    pub kind: String,
    /// Number of weight elements (biases stay FP and are not counted).
    pub params: u64,
    /// Multiply-accumulates for one input sample.
    pub macs: u64,
}

/// Which metric the Δ values measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Mean cross-entropy (natural log).
    Loss,
    /// Mean over samples of KL(p_fp ‖ p_quant).
    Kl,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::Loss => "loss",
            Metric::Kl => "kl",
        })
    }
}

/// One option as written in files: its canonical name and bits (`null` = FP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionInfo {
    pub name: String,
    pub w_bits: Option<u8>,
    pub a_bits: Option<u8>,
}

impl From<QuantOption> for OptionInfo {
    fn from(o: QuantOption) -> Self {
        OptionInfo {
            name: o.to_string(),
            w_bits: o.w_bits,
            a_bits: o.a_bits,
        }
    }
}

impl OptionInfo {
    pub fn option(&self) -> QuantOption {
        QuantOption {
            w_bits: self.w_bits,
            a_bits: self.a_bits,
        }
    }
}

/// Variable v = (layer, option): indices into [`Index::layers`] and [`Index::options`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub layer: usize,
    pub option: usize,
}

/// Metrics of the FP model on the calibration samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpReference {
    pub loss: f64,
    pub top1: f64,
}

/// What `perturb` noticed about the matrix it wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    /// Count of single-layer estimates d(v) below zero.
    pub negative_single: usize,
    /// Smallest eigenvalue of G.
    pub lambda_min: f64,
    /// Largest eigenvalue of G.
    pub lambda_max: f64,
    /// Forward evaluations done (single + pairwise).
    pub evaluations: u64,
    /// Wall-clock seconds of the perturbation.
    pub seconds: f64,
    /// How the estimates compare with their standard errors (absent in files from before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseSummary>,
}

/// Which estimates of G are distinguishable from 0 at `z` standard errors (|value| > z·se).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseSummary {
    pub z: f64,
    /// Single-layer estimates d(v) within z standard errors of 0, and how many there are.
    pub single_within: usize,
    pub single: usize,
    /// Of the negative d(v), how many are significantly negative (d(v) < −z·se).
    pub single_significantly_negative: usize,
    /// Cross terms G\[u,v\] (u < v, different layers) within z standard errors of 0, of how many.
    pub cross_within: usize,
    pub cross: usize,
}

/// `index.json`: what each row and column of `G.npy` means, and how it was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub version: u32,
    /// Architecture, e.g. `resnet20`.
    pub arch: String,
    /// Every quantizable layer of the model, in forward order (also those not perturbed).
    pub layers: Vec<LayerInfo>,
    /// Names of layers that are not variables (excluded or pinned at `fixed_option`).
    #[serde(default)]
    pub fixed: BTreeMap<String, String>,
    pub options: Vec<OptionInfo>,
    /// Matrix order of the variables.
    pub variables: Vec<Variable>,
    pub metric: Metric,
    /// True when only the diagonal was measured.
    pub naive: bool,
    /// Calibration samples used.
    pub samples: usize,
    /// Data spec and split the samples came from, e.g. `fashion-mnist:/usr/share/...`.
    pub data: String,
    pub seed: u64,
    pub fp: FpReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
}

impl Index {
    /// An index in which every layer is a variable with every option, in the matrix order
    /// `perturb` writes (layer-major), for a problem that was not measured: metric `loss`,
    /// nothing fixed, 0 samples, data `synthetic`, seed 0, FP loss 0 and top-1 0. Synthetic
    /// instances (allocate's benchmarks, the tests) change what they need with struct update
    /// syntax: `Index { seed, ..Index::all_options(...) }`.
    pub fn all_options(arch: &str, layers: Vec<LayerInfo>, options: &[QuantOption]) -> Index {
        let k = options.len();
        Index {
            version: FORMAT_VERSION,
            arch: arch.into(),
            variables: (0..layers.len())
                .flat_map(|l| (0..k).map(move |o| Variable { layer: l, option: o }))
                .collect(),
            layers,
            fixed: BTreeMap::new(),
            options: options.iter().map(|&o| OptionInfo::from(o)).collect(),
            metric: Metric::Loss,
            naive: false,
            samples: 0,
            data: "synthetic".into(),
            seed: 0,
            fp: FpReference { loss: 0.0, top1: 0.0 },
            diagnostics: None,
        }
    }
}

impl Versioned for Index {
    const KIND: &'static str = "index.json";
    const VERSION: u32 = FORMAT_VERSION;
}

/// Activation clipping range of one layer's input at one bit width.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActRange {
    pub lo: f32,
    pub hi: f32,
}

/// Quantizer parameters of one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerCalib {
    pub name: String,
    /// Weight scales per bit width (key: bits as a string, e.g. `"4"`): one per output channel,
    /// or one value for a per-tensor quantizer.
    pub weight_scales: BTreeMap<String, Vec<f32>>,
    /// Input activation range per bit width (key: bits as a string).
    pub act_ranges: BTreeMap<String, ActRange>,
}

/// `calib.json`: quantizer parameters, so that every tool quantizes exactly alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calib {
    pub version: u32,
    pub arch: String,
    /// `minmax` or `mse`.
    pub w_calib: String,
    pub a_calib: String,
    pub per_tensor: bool,
    pub samples: usize,
    pub data: String,
    pub seed: u64,
    pub layers: Vec<LayerCalib>,
}

impl Versioned for Calib {
    const KIND: &'static str = "calib.json";
    const VERSION: u32 = FORMAT_VERSION;
}

/// The precision chosen for one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerChoice {
    pub name: String,
    pub option: String,
    pub w_bits: Option<u8>,
    pub a_bits: Option<u8>,
}

impl LayerChoice {
    pub fn option(&self) -> QuantOption {
        QuantOption {
            w_bits: self.w_bits,
            a_bits: self.a_bits,
        }
    }
}

/// How the solver ended and how good the answer is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolverReport {
    /// `optimal`, `time_limit`, `gap_limit`, or `exact` for closed-form answers.
    pub status: String,
    /// Objective of the answer (xᵀGx with the matrix given).
    pub objective: f64,
    /// Proven lower bound on the objective.
    pub bound: f64,
    /// Relative gap between objective and bound.
    pub gap: f64,
    pub seconds: f64,
}

/// `alloc.json`: one option per layer, what it is predicted to cost, and how sure we are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alloc {
    pub version: u32,
    /// Every quantizable layer in forward order.
    pub layers: Vec<LayerChoice>,
    /// Predicted change of the metric: xᵀGx.
    pub predicted_delta: f64,
    pub size_bits: u64,
    pub avg_w_bits: f64,
    pub bops: u64,
    /// The budget asked for, as text (e.g. `avg-bits=4`), `none` without one.
    pub budget: String,
    pub solver: SolverReport,
    /// Free-form facts for the reader (sanity check, warnings); may be empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, serde_json::Value>,
}

impl Versioned for Alloc {
    const KIND: &'static str = "alloc.json";
    const VERSION: u32 = FORMAT_VERSION;
}

/// Metrics JSON written by `evaluate`, one object per evaluated configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub version: u32,
    /// What was evaluated: `fp`, `uniform:w4a8`, or the alloc file's path.
    pub config: String,
    pub arch: String,
    pub data: String,
    pub samples: usize,
    /// Top-1 and top-5 accuracy in percent.
    pub top1: f64,
    pub top5: f64,
    /// Mean cross-entropy (natural log).
    pub loss: f64,
    /// Mean KL(p_fp ‖ p_quant); 0 for the FP model.
    pub kl: f64,
    pub size_bits: u64,
    pub size_mb: f64,
    pub avg_w_bits: f64,
    pub bops: u64,
}

impl Versioned for Metrics {
    const KIND: &'static str = "metrics JSON";
    const VERSION: u32 = FORMAT_VERSION;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::json_from_bytes;

    #[test]
    fn rejects_unknown_fields_and_other_versions() {
        let ok = br#"{"version":1,"layers":[],"predicted_delta":0,"size_bits":0,"avg_w_bits":0,
            "bops":0,"budget":"none","solver":{"status":"optimal","objective":0,"bound":0,"gap":0,"seconds":0}}"#;
        json_from_bytes::<Alloc>("a.json", ok).unwrap();
        let unknown = String::from_utf8_lossy(ok).replace("\"bops\":0", "\"bops\":0,\"colour\":1");
        let e = json_from_bytes::<Alloc>("a.json", unknown.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.json") && e.contains("unknown field `colour`"), "{e}");
        let v2 = String::from_utf8_lossy(ok).replace("\"version\":1", "\"version\":2");
        let e = json_from_bytes::<Alloc>("a.json", v2.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 2 is not supported"), "{e}");
        let e = json_from_bytes::<Alloc>("a.json", b"{}").unwrap_err().to_string();
        assert!(e.contains("missing field `version`"), "{e}");
    }
}
