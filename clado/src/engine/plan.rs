//! Per-layer precision: which layers run with fake-quantized weights and/or a fake-quantized
//! input activation.

use super::fake_quant::ActQuant;
use super::network::Network;
use crate::format::LayerCalib;
use crate::options::QuantOption;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Weights of one layer ready for the kernels (fake-quantized or not, packed). Made by
/// [`Network::prepare_weights`] or [`Network::quantized_weights`], once per (layer, bits), and
/// shared by `Arc` among all the plans that use them.
pub struct PreparedWeights {
    pub(crate) network: u64,
    pub(crate) layer: usize,
    pub(crate) bits: Option<u8>,
    pub(crate) packed: Vec<f32>,
}

impl PreparedWeights {
    /// The layer these weights belong to.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Weight bits (`None`: FP weights).
    pub fn bits(&self) -> Option<u8> {
        self.bits
    }
}

impl std::fmt::Debug for PreparedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedWeights")
            .field("layer", &self.layer)
            .field("bits", &self.bits)
            .finish()
    }
}

/// How one layer runs. The default is full precision.
#[derive(Clone, Debug, Default)]
pub struct LayerPrecision {
    /// Weights to use instead of the FP ones.
    pub weights: Option<Arc<PreparedWeights>>,
    /// Quantizer of the layer's input activation (the tensor entering the layer; for a
    /// downsample, the block input on the shortcut branch only).
    pub input: Option<ActQuant>,
}

impl LayerPrecision {
    pub fn is_fp(&self) -> bool {
        self.weights.is_none() && self.input.is_none()
    }
}

/// A precision for every quantizable layer of one [`Network`]; any subset may be quantized.
#[derive(Clone, Debug)]
pub struct Plan {
    network: u64,
    layers: Vec<LayerPrecision>,
}

impl Plan {
    /// Every layer at full precision.
    pub fn fp(net: &Network) -> Plan {
        Plan {
            network: net.id,
            layers: vec![LayerPrecision::default(); net.layers().len()],
        }
    }

    /// Sets the precision of layer `layer`; the weights must have been prepared for it.
    pub fn set(&mut self, layer: usize, precision: LayerPrecision) -> Result<()> {
        let n = self.layers.len();
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::other(format!("layer index {layer} out of range (the network has {n} layers)")))?;
        if let Some(w) = &precision.weights {
            if w.network != self.network || w.layer != layer {
                return Err(Error::other(format!(
                    "weights prepared for layer {} of another network or layer used for layer {layer}",
                    w.layer
                )));
            }
        }
        *slot = precision;
        Ok(())
    }

    /// `self` with layer `layer` set (see [`Plan::set`]).
    pub fn with(mut self, layer: usize, precision: LayerPrecision) -> Result<Plan> {
        self.set(layer, precision)?;
        Ok(self)
    }

    /// The precision of layer `layer`.
    pub fn layer(&self, layer: usize) -> &LayerPrecision {
        &self.layers[layer]
    }

    /// Number of layers (that of the network).
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub(crate) fn network(&self) -> u64 {
        self.network
    }
}

/// Prepared weights by (layer, bits): each is quantized and packed once, then shared.
#[derive(Default)]
pub struct WeightCache {
    prepared: HashMap<(usize, u8), Arc<PreparedWeights>>,
}

impl WeightCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The weights of `layer` at `bits`, quantized with `scales()` on first use
    /// ([`Network::quantized_weights`]). The cache assumes one set of scales per (layer, bits).
    pub fn get(
        &mut self,
        net: &Network,
        layer: usize,
        bits: u8,
        scales: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<Arc<PreparedWeights>> {
        if let Some(w) = self.prepared.get(&(layer, bits)) {
            if w.network == net.id {
                return Ok(Arc::clone(w));
            }
        }
        let w = net.quantized_weights(layer, bits, &scales()?)?;
        self.prepared.insert((layer, bits), Arc::clone(&w));
        Ok(w)
    }
}

impl WeightCache {
    /// The precision of layer `layer` at `option` with the quantizer parameters of its
    /// `calib.json` entry: weight scales for `option.w_bits`, activation range for
    /// `option.a_bits`. Weights come from (and go into) the cache.
    pub fn layer_precision(
        &mut self,
        net: &Network,
        layer: usize,
        option: QuantOption,
        calib: &LayerCalib,
    ) -> Result<LayerPrecision> {
        let name = &net
            .layers()
            .get(layer)
            .ok_or_else(|| Error::other(format!("layer index {layer} out of range")))?
            .name;
        if calib.name != *name {
            return Err(Error::other(format!(
                "calibration of layer '{}' given for layer '{name}'",
                calib.name
            )));
        }
        let missing = |what: &str, bits: u8, keys: Vec<&String>| {
            let have: Vec<&str> = keys.into_iter().map(String::as_str).collect();
            Error::other(format!(
                "layer '{name}': no {what} for {bits} bits (calibrated: {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ))
        };
        let weights = match option.w_bits {
            Some(bits) => Some(self.get(net, layer, bits, || {
                calib
                    .weight_scales
                    .get(&bits.to_string())
                    .cloned()
                    .ok_or_else(|| missing("weight scales", bits, calib.weight_scales.keys().collect()))
            })?),
            None => None,
        };
        let input = match option.a_bits {
            Some(bits) => {
                let r = calib
                    .act_ranges
                    .get(&bits.to_string())
                    .ok_or_else(|| missing("activation range", bits, calib.act_ranges.keys().collect()))?;
                let q = ActQuant::new(bits, r.lo, r.hi).map_err(|e| Error::other(format!("layer '{name}': {e}")))?;
                Some(q)
            }
            None => None,
        };
        Ok(LayerPrecision { weights, input })
    }
}
