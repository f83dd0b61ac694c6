//! Model size and compute of a choice of options (docs/definitions.md, "Budgets").
//!
//! params_l = weight elements of layer l (biases stay FP and are not counted);
//! size_bits = Σ_l params_l · w_bits(l), FP counting 32 bits; avg_w_bits = size_bits / Σ params;
//! BOPs = Σ_l MACs_l · w_bits · a_bits (32 for FP), MACs for one input sample.

use crate::format::LayerInfo;
use crate::options::QuantOption;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Bits in a megabyte as printed by the tools (10^6 bytes).
pub const BITS_PER_MB: f64 = 8.0e6;

/// Size and compute of one choice.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub size_bits: u64,
    pub avg_w_bits: f64,
    pub bops: u64,
}

impl Cost {
    pub fn size_mb(&self) -> f64 {
        self.size_bits as f64 / BITS_PER_MB
    }
}

/// Size bits of one layer at one option.
pub fn layer_size_bits(layer: &LayerInfo, o: QuantOption) -> u64 {
    layer.params * u64::from(o.w_bits_counted())
}

/// BOPs of one layer at one option.
pub fn layer_bops(layer: &LayerInfo, o: QuantOption) -> u64 {
    layer.macs * u64::from(o.w_bits_counted()) * u64::from(o.a_bits_counted())
}

/// Cost of choosing `choice[l]` for every layer `layers[l]`.
pub fn cost(layers: &[LayerInfo], choice: &[QuantOption]) -> Cost {
    assert_eq!(layers.len(), choice.len(), "one option per layer");
    let size_bits: u64 = layers.iter().zip(choice).map(|(l, &o)| layer_size_bits(l, o)).sum();
    let params: u64 = layers.iter().map(|l| l.params).sum();
    let bops = layers.iter().zip(choice).map(|(l, &o)| layer_bops(l, o)).sum();
    let avg_w_bits = if params == 0 {
        0.0
    } else {
        size_bits as f64 / params as f64
    };
    Cost {
        size_bits,
        avg_w_bits,
        bops,
    }
}

/// One budget constraint; several may be combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Average weight bits ≤ value.
    AvgBits(f64),
    /// Size in bits ≤ value.
    SizeBits(f64),
    /// Size in MB (10^6 bytes) ≤ value.
    SizeMb(f64),
    /// BOPs ≤ value.
    Bops(f64),
}

impl Budget {
    /// Parse `avg-bits=4`, `size-bits=1e6`, `size-mb=0.1` or `bops=1e9`.
    pub fn parse(text: &str) -> Result<Self> {
        let (kind, value) = text
            .split_once('=')
            .ok_or_else(|| Error::usage(format!("budget '{text}': expected KIND=VALUE, e.g. avg-bits=4")))?;
        let v = parse_positive(kind, value)?;
        Budget::from_kind(kind, v)
    }

    /// Build a budget of a named kind (`avg-bits`, `size-bits`, `size-mb`, `bops`).
    pub fn from_kind(kind: &str, v: f64) -> Result<Self> {
        Ok(match kind.trim() {
            "avg-bits" => Budget::AvgBits(v),
            "size-bits" => Budget::SizeBits(v),
            "size-mb" => Budget::SizeMb(v),
            "bops" => Budget::Bops(v),
            other => {
                return Err(Error::usage(format!(
                    "budget kind '{other}': expected avg-bits, size-bits, size-mb or bops"
                )))
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Budget::AvgBits(_) => "avg-bits",
            Budget::SizeBits(_) => "size-bits",
            Budget::SizeMb(_) => "size-mb",
            Budget::Bops(_) => "bops",
        }
    }

    pub fn value(&self) -> f64 {
        match *self {
            Budget::AvgBits(v) | Budget::SizeBits(v) | Budget::SizeMb(v) | Budget::Bops(v) => v,
        }
    }

    /// The constraint as a linear limit: Σ_l coefficient(l, o) ≤ limit. Returns the limit in
    /// the unit of [`Budget::coefficient`] (bits for sizes and average bits, BOPs for BOPs).
    pub fn limit(&self, layers: &[LayerInfo]) -> f64 {
        match *self {
            Budget::AvgBits(b) => b * layers.iter().map(|l| l.params as f64).sum::<f64>(),
            Budget::SizeBits(b) => b,
            Budget::SizeMb(mb) => mb * BITS_PER_MB,
            Budget::Bops(b) => b,
        }
    }

    /// The linear coefficient of layer `layer` at option `o` in this constraint.
    pub fn coefficient(&self, layer: &LayerInfo, o: QuantOption) -> f64 {
        match self {
            Budget::AvgBits(_) | Budget::SizeBits(_) | Budget::SizeMb(_) => layer_size_bits(layer, o) as f64,
            Budget::Bops(_) => layer_bops(layer, o) as f64,
        }
    }

    /// Whether a choice meets this budget (with a relative slack of 1e-12 for float limits).
    pub fn allows(&self, layers: &[LayerInfo], choice: &[QuantOption]) -> bool {
        let used: f64 = layers.iter().zip(choice).map(|(l, &o)| self.coefficient(l, o)).sum();
        used <= self.limit(layers) * (1.0 + 1e-12)
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.kind(), self.value())
    }
}

fn parse_positive(kind: &str, value: &str) -> Result<f64> {
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|_| Error::usage(format!("budget {kind}: '{value}' is not a number")))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::usage(format!(
            "budget {kind}: {value} must be a positive number"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(params: u64, macs: u64) -> LayerInfo {
        LayerInfo {
            name: "l".into(),
            kind: "conv".into(),
            params,
            macs,
        }
    }

    #[test]
    fn cost_follows_the_design_formulas() {
        let layers = [layer(100, 1000), layer(300, 500)];
        let o = |s: &str| QuantOption::parse(s).unwrap();
        let c = cost(&layers, &[o("w4a8"), o("fp")]);
        assert_eq!(c.size_bits, 100 * 4 + 300 * 32);
        assert_eq!(c.bops, 1000 * 4 * 8 + 500 * 32 * 32);
        assert!((c.avg_w_bits - (400.0 + 9600.0) / 400.0).abs() < 1e-12);
        let c = cost(&layers, &[o("a4"), o("w2")]);
        assert_eq!(c.size_bits, 100 * 32 + 300 * 2);
        assert_eq!(c.bops, 1000 * 32 * 4 + 500 * 2 * 32);
    }

    #[test]
    fn parses_budgets() {
        assert_eq!(Budget::parse("avg-bits=4").unwrap(), Budget::AvgBits(4.0));
        assert_eq!(Budget::parse("size-mb=0.5").unwrap(), Budget::SizeMb(0.5));
        for bad in [
            "avg-bits=0",
            "avg-bits=-1",
            "avg-bits=x",
            "colour=3",
            "avg-bits",
            "bops=inf",
        ] {
            assert!(Budget::parse(bad).is_err(), "{bad}");
        }
        let layers = [layer(100, 1), layer(300, 1)];
        assert_eq!(Budget::AvgBits(4.0).limit(&layers), 1600.0);
        assert_eq!(Budget::SizeMb(1.0).limit(&layers), 8.0e6);
    }
}
