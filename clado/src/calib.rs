//! Quantizer parameters of a model: calibrating them (`calib.json`) and turning them into the
//! engine's per-layer precisions, so that `quantize`, `perturb` and `evaluate` quantize alike.

use crate::data::Dataset;
use crate::engine::{Images, LayerPrecision, Network, Parallelism, Plan, WeightCache};
use crate::format::{Calib, LayerCalib, FORMAT_VERSION};
use crate::options::QuantOption;
use crate::quant::{self, ActObserver, Calibration};
use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// How ranges are calibrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalibSettings {
    pub w_calib: Calibration,
    pub a_calib: Calibration,
    /// One weight scale per tensor instead of per output channel.
    pub per_tensor: bool,
}

/// The weight and activation bit widths that `options` need.
pub fn bits_needed(options: &[QuantOption]) -> (BTreeSet<u8>, BTreeSet<u8>) {
    let w = options.iter().filter_map(|o| o.w_bits).collect();
    let a = options.iter().filter_map(|o| o.a_bits).collect();
    (w, a)
}

/// Calibrate the quantizers of every layer of `net` for the given bit widths on `data` (the FP
/// model's inputs to each layer; docs/definitions.md's `minmax` or the `mse` search).
pub fn calibrate(
    net: &Network,
    data: &Dataset,
    data_spec: &str,
    seed: u64,
    w_bits: &BTreeSet<u8>,
    a_bits: &BTreeSet<u8>,
    settings: CalibSettings,
    batch_size: usize,
) -> Result<Calib> {
    let layers = net.layers();
    let mut observers: Vec<ActObserver> = layers.iter().map(|_| ActObserver::new(settings.a_calib)).collect();
    if !a_bits.is_empty() {
        for (images, _labels) in data.batches(batch_size) {
            let n = images.len() / data.image_len();
            let batch = Images::new(images, [n, data.channels, data.height, data.width])?;
            net.calibrate(batch, Parallelism::Rayon, |layer, values| {
                observers[layer].observe(values)
            })?;
        }
    }
    let mut out = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let weights = net.weights(i);
        let weight_scales = w_bits
            .iter()
            .map(|&b| {
                let s = quant::weight_scales(weights, layer.out_channels(), b, settings.per_tensor, settings.w_calib);
                (b.to_string(), s)
            })
            .collect();
        let act_ranges = a_bits.iter().map(|&b| (b.to_string(), observers[i].range(b))).collect();
        out.push(LayerCalib {
            name: layer.name.clone(),
            weight_scales,
            act_ranges,
        });
    }
    Ok(Calib {
        version: FORMAT_VERSION,
        arch: net.arch().to_string(),
        w_calib: settings.w_calib.to_string(),
        a_calib: settings.a_calib.to_string(),
        per_tensor: settings.per_tensor,
        samples: data.len(),
        data: data_spec.to_string(),
        seed,
        layers: out,
    })
}

/// Check that `calib` (read from `source`) was made for `net` and holds the parameters that
/// `options` need on `layers` (indices into `net.layers()`).
pub fn check_calib(calib: &Calib, source: &str, net: &Network, options: &[QuantOption]) -> Result<()> {
    if calib.arch != net.arch() {
        return Err(Error::input(
            source,
            format!("made for {}, but the model is {}", calib.arch, net.arch()),
        ));
    }
    let names: Vec<&str> = net.layers().iter().map(|l| l.name.as_str()).collect();
    let got: Vec<&str> = calib.layers.iter().map(|l| l.name.as_str()).collect();
    if names != got {
        let missing = names.iter().find(|n| !got.contains(n));
        let extra = got.iter().find(|n| !names.contains(n));
        let what = match (missing, extra) {
            (Some(m), Some(e)) => {
                format!(
                    "names layer '{e}', which {} does not have, and has no entry for layer '{m}'",
                    net.arch()
                )
            }
            (Some(m), None) => format!("has no entry for layer '{m}'"),
            (None, Some(e)) => format!("names layer '{e}', which {} does not have", net.arch()),
            (None, None) => "lists the layers in another order than the model".into(),
        };
        return Err(Error::input(
            source,
            format!("{what} (the model has {} quantizable layers)", names.len()),
        ));
    }
    let (w_bits, a_bits) = bits_needed(options);
    for (layer, lc) in net.layers().iter().zip(&calib.layers) {
        for b in &w_bits {
            match lc.weight_scales.get(&b.to_string()) {
                None => {
                    return Err(Error::input(
                        source,
                        format!(
                            "layer '{}' has no weight scales for {b} bits (calibrated for {})",
                            lc.name,
                            keys(&lc.weight_scales)
                        ),
                    ))
                }
                Some(s) if s.len() != layer.out_channels() && s.len() != 1 => {
                    return Err(Error::input(
                        source,
                        format!(
                            "layer '{}': {} weight scales for {b} bits, expected {} (one per output channel) or 1",
                            lc.name,
                            s.len(),
                            layer.out_channels()
                        ),
                    ))
                }
                Some(s) if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) => {
                    return Err(Error::input(
                        source,
                        format!(
                            "layer '{}': weight scales for {b} bits must be positive and finite",
                            lc.name
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for b in &a_bits {
            match lc.act_ranges.get(&b.to_string()) {
                None => {
                    return Err(Error::input(
                        source,
                        format!(
                            "layer '{}' has no activation range for {b} bits (calibrated for {})",
                            lc.name,
                            keys(&lc.act_ranges)
                        ),
                    ))
                }
                Some(r) if !(r.lo.is_finite() && r.hi.is_finite() && r.lo <= 0.0 && r.hi >= 0.0) => {
                    return Err(Error::input(
                        source,
                        format!(
                            "layer '{}': activation range [{}, {}] must contain 0",
                            lc.name, r.lo, r.hi
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn keys<V>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        "no bit widths".into()
    } else {
        m.keys().map(|k| format!("{k} bits")).collect::<Vec<_>>().join(", ")
    }
}

/// Every layer's precision at every option, prepared once (weights quantized and packed) from
/// checked quantizer parameters: `table[layer][option]`.
pub struct PrecisionTable {
    pub options: Vec<QuantOption>,
    table: Vec<Vec<LayerPrecision>>,
}

impl PrecisionTable {
    /// Prepare the precisions of all layers of `net` for `options` (see [`check_calib`]).
    pub fn new(net: &Network, calib: &Calib, options: &[QuantOption]) -> Result<Self> {
        let mut cache = WeightCache::new();
        let table = calib
            .layers
            .iter()
            .enumerate()
            .map(|(i, lc)| options.iter().map(|&o| cache.layer_precision(net, i, o, lc)).collect())
            .collect::<Result<_>>()?;
        Ok(PrecisionTable {
            options: options.to_vec(),
            table,
        })
    }

    /// Layer `layer` at option number `option` (an index into `self.options`).
    pub fn get(&self, layer: usize, option: usize) -> &LayerPrecision {
        &self.table[layer][option]
    }

    /// The option number of `o`, if prepared.
    pub fn option_index(&self, o: QuantOption) -> Option<usize> {
        self.options.iter().position(|&x| x == o)
    }

    /// A plan with `choice[l]` (option numbers; `None` = FP) for every layer.
    pub fn plan(&self, net: &Network, choice: &[Option<usize>]) -> Result<Plan> {
        let mut plan = Plan::fp(net);
        for (l, c) in choice.iter().enumerate() {
            if let Some(o) = c {
                plan.set(l, self.get(l, *o).clone())?;
            }
        }
        Ok(plan)
    }
}
