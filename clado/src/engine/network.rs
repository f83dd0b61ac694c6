//! [`Network`]: the quantizable layers of a graph and its executor; the CIFAR ResNets are
//! checked against their architecture and built as graphs from their checkpoints.

#[cfg(test)]
use super::kernels::Isa;
use super::plan::PreparedWeights;
use crate::checkpoint::StateDict;
use crate::format::LayerInfo;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// BatchNorm epsilon of the PyTorch models.
pub const BN_EPS: f64 = 1e-5;

/// Input size of the CIFAR ResNets built from checkpoints (CIFAR and padded Fashion-MNIST), and
/// so of their [`Layer::macs`].
pub const INPUT_SIZE: usize = 32;

/// Channels of the stem and of the three stages.
const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];

/// Depths of the CIFAR ResNets (6n + 2 layers, n BasicBlocks per stage).
pub const ARCHS: [(&str, usize); 5] = [
    ("resnet20", 3),
    ("resnet32", 5),
    ("resnet44", 7),
    ("resnet56", 9),
    ("resnet110", 18),
];

/// Kind of a quantizable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Conv,
    Linear,
}

impl LayerKind {
    /// `conv` or `linear`, as in `index.json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Linear => "linear",
        }
    }
}

/// A quantizable layer (Conv2d or Linear), in forward order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// PyTorch module name, e.g. `layer2.0.downsample.0`.
    pub name: String,
    pub kind: LayerKind,
    /// PyTorch weight shape: `[out, in, kh, kw]` or `[out, in]`.
    pub weight_shape: Vec<usize>,
    /// Weight elements (biases stay FP and are not counted).
    pub params: u64,
    /// Multiply-accumulates for one sample of the network's input size.
    pub macs: u64,
}

impl Layer {
    /// The layer as written in `index.json`.
    pub fn info(&self) -> LayerInfo {
        LayerInfo {
            name: self.name.clone(),
            kind: self.kind.as_str().to_string(),
            params: self.params,
            macs: self.macs,
        }
    }

    /// Output channels (dim 0 of the weight): the length of a per-channel scale vector.
    pub fn out_channels(&self) -> usize {
        self.weight_shape[0]
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A network ready to run: a CIFAR ResNet built from its checkpoint, or a graph read from an
/// ONNX file, both on the graph executor (see the [module docs](super)).
pub struct Network {
    pub(crate) id: u64,
    arch: String,
    in_channels: usize,
    classes: usize,
    layers: Vec<Layer>,
    /// The graph and its executor.
    pub(crate) graph: super::graph_net::GraphNet,
    /// Whether the graph was read from a file (rather than built from a checkpoint).
    from_file: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("arch", &self.arch)
            .field("in_channels", &self.in_channels)
            .field("classes", &self.classes)
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// BasicBlocks per stage of `arch` (`resnet20` → 3).
pub fn blocks_per_stage(arch: &str) -> Result<usize> {
    ARCHS
        .iter()
        .find(|(name, _)| *name == arch)
        .map(|&(_, n)| n)
        .ok_or_else(|| {
            let known: Vec<&str> = ARCHS.iter().map(|(name, _)| *name).collect();
            Error::usage(format!(
                "unknown architecture '{arch}' (expected one of {})",
                known.join(", ")
            ))
        })
}

impl Network {
    /// Builds `arch` (`resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110`) from a
    /// state dict in the layout of the `pytorch-cifar-models` checkpoints, for 32×32 inputs.
    /// Input channels and classes are read from `conv1.weight` `[16, C, 3, 3]` and `fc.weight`
    /// `[K, 64]`. Every tensor is checked (present, shape, finite); a tensor the architecture
    /// does not use is an error too (it usually means the wrong `--arch`).
    /// `num_batches_tracked` is ignored.
    pub fn from_state_dict(arch: &str, sd: &StateDict) -> Result<Network> {
        Self::from_state_dict_at(arch, sd, [INPUT_SIZE; 2])
    }

    /// As [`Network::from_state_dict`] for inputs of `[h, w]` pixels.
    pub fn from_state_dict_at(arch: &str, sd: &StateDict, [h, w]: [usize; 2]) -> Result<Network> {
        let blocks = blocks_per_stage(arch)?;
        let mut rd = Reader {
            arch,
            sd,
            used: BTreeSet::new(),
        };
        let stem = rd.get_any("conv1.weight")?;
        if stem.shape.len() != 4 || stem.shape[0] != STAGE_CHANNELS[0] || stem.shape[2..] != [3, 3] {
            return Err(rd.err(format!(
                "tensor 'conv1.weight' has shape {:?}, expected [16, C, 3, 3]",
                stem.shape
            )));
        }
        let in_channels = stem.shape[1];
        if in_channels == 0 {
            return Err(rd.err("tensor 'conv1.weight' has 0 input channels"));
        }
        let fc_shape = &rd.get_any("fc.weight")?.shape;
        let last = STAGE_CHANNELS[2];
        if fc_shape.len() != 2 || fc_shape[1] != last || fc_shape[0] == 0 {
            return Err(rd.err(format!(
                "tensor 'fc.weight' has shape {fc_shape:?}, expected [K, {last}] with K >= 1 classes"
            )));
        }
        let classes = fc_shape[0];
        let spec = crate::model::ArchSpec {
            depth: 6 * blocks + 2,
            blocks_per_stage: blocks,
            in_channels,
            num_classes: classes,
        };
        rd.conv("conv1", "bn1", [STAGE_CHANNELS[0], in_channels, 3, 3])?;
        for b in spec.blocks() {
            let (p, cin, cout) = (&b.name, b.in_channels, b.out_channels);
            rd.conv(&format!("{p}.conv1"), &format!("{p}.bn1"), [cout, cin, 3, 3])?;
            rd.conv(&format!("{p}.conv2"), &format!("{p}.bn2"), [cout, cout, 3, 3])?;
            if b.downsample {
                rd.conv(
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    [cout, cin, 1, 1],
                )?;
            }
        }
        rd.tensor("fc.weight", &[classes, last])?;
        rd.tensor("fc.bias", &[classes])?;
        rd.finish()?;
        if h == 0 || w == 0 {
            return Err(Error::other(format!("{arch}: input images of {h}x{w} pixels")));
        }
        let bytes = crate::graph::resnet_onnx_at(&spec, sd, [h, w])?;
        let graph = crate::graph::Graph::from_onnx_bytes(&bytes, arch)?;
        let mut net = Network::from_graph(&graph, arch)?;
        net.from_file = false;
        Ok(net)
    }

    /// A network over a graph (see `graph_net`).
    pub(crate) fn with_graph(
        name: &str,
        in_channels: usize,
        classes: usize,
        layers: Vec<Layer>,
        graph: super::graph_net::GraphNet,
    ) -> Network {
        Network {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            arch: name.to_string(),
            in_channels,
            classes,
            layers,
            graph,
            from_file: true,
        }
    }

    /// Whether the network runs a graph read from a file (rather than a built-in architecture).
    pub fn is_graph(&self) -> bool {
        self.from_file
    }

    /// `[C, H, W]` of the images the network takes.
    pub fn input_shape(&self) -> [usize; 3] {
        self.graph.input
    }

    /// Architecture name, e.g. `resnet20`; for a graph, the name it was loaded with.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Input channels (1 for Fashion-MNIST, 3 for CIFAR).
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output classes K.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The quantizable layers in forward order; layer `i` is position `i` of a [`super::State`].
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Index of the layer named `name`.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// The FP weights of layer `i` in PyTorch layout (what a weight quantizer reads).
    pub fn weights(&self, i: usize) -> &[f32] {
        self.graph_weights(i)
    }

    /// Floats that one image's state holds before each position 0..=L (every value live there,
    /// maps padded as stored), for inputs of `h×w` pixels: what keeping a state costs.
    pub fn state_floats_per_image(&self, h: usize, w: usize) -> Result<Vec<usize>> {
        self.check_size(h, w)?;
        Ok(self.graph.floats.clone())
    }

    /// Floats that layer `i`'s prepared weights ([`Network::prepare_weights`]) hold: its
    /// parameters, or more where the kernels pack them (Winograd).
    pub fn prepared_floats(&self, i: usize) -> usize {
        self.graph.exec.prepared_len(i)
    }

    /// Bytes of scratch space one thread may keep for running this network (see
    /// [`crate::graph::Executor::scratch_floats`]).
    pub fn scratch_bytes_per_thread(&self) -> usize {
        4 * self.graph.exec.scratch_floats()
    }

    /// Runs with the given instruction set (tests compare them; all agree bitwise).
    #[cfg(test)]
    pub(crate) fn with_isa(mut self, isa: Isa) -> Self {
        self.graph.exec.set_isa(isa);
        self
    }

    /// Weights of layer `layer` ready for a [`super::Plan`]: `weights` (PyTorch layout, e.g.
    /// fake-quantized by `clado::quant`) in the executor's layout. `bits` is recorded for
    /// reference only (`None` = FP).
    pub fn prepare_weights(&self, layer: usize, bits: Option<u8>, weights: &[f32]) -> Result<Arc<PreparedWeights>> {
        let info = self.layer_checked(layer)?;
        if weights.len() as u64 != info.params {
            return Err(Error::other(format!(
                "layer '{}': {} weights given, expected {} (shape {:?})",
                info.name,
                weights.len(),
                info.params,
                info.weight_shape
            )));
        }
        Ok(Arc::new(PreparedWeights {
            network: self.id,
            layer,
            bits,
            packed: self.graph.exec.prepare_weights(layer, weights),
        }))
    }

    /// Fake-quantized weights of layer `layer` at `bits` bits with the given scales (one per
    /// output channel, or one per tensor), by docs/definitions.md's weight quantizer, packed.
    pub fn quantized_weights(&self, layer: usize, bits: u8, scales: &[f32]) -> Result<Arc<PreparedWeights>> {
        let info = self.layer_checked(layer)?;
        let q = super::fake_quant::fake_quantize_weights(self.weights(layer), info.out_channels(), bits, scales)
            .map_err(|e| Error::other(format!("layer '{}': {e}", info.name)))?;
        self.prepare_weights(layer, Some(bits), &q)
    }

    fn layer_checked(&self, layer: usize) -> Result<&Layer> {
        self.layers.get(layer).ok_or_else(|| {
            Error::other(format!(
                "layer index {layer} out of range ({} has {} layers)",
                self.arch,
                self.layers.len()
            ))
        })
    }
}

/// Reads tensors from a state dict, remembering which were used.
struct Reader<'a> {
    arch: &'a str,
    sd: &'a StateDict,
    used: BTreeSet<&'a str>,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::other(format!("{}: {msg}", self.arch))
    }

    /// A tensor of any shape (data length and finiteness checked).
    fn get_any(&mut self, name: &str) -> Result<&'a crate::checkpoint::Tensor32> {
        let Some((key, t)) = self.sd.get_key_value(name) else {
            return Err(self.err(format!(
                "checkpoint has no tensor '{name}' (is the architecture right?)"
            )));
        };
        let n: usize = t.shape.iter().product();
        if t.data.len() != n {
            return Err(self.err(format!(
                "tensor '{name}' of shape {:?} holds {} values, expected {n}",
                t.shape,
                t.data.len()
            )));
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(self.err(format!("tensor '{name}' holds {} at index {i}", t.data[i])));
        }
        self.used.insert(key.as_str());
        Ok(t)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<&'a [f32]> {
        let t = self.get_any(name)?;
        if t.shape != shape {
            return Err(self.err(format!("tensor '{name}' has shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok(&t.data)
    }

    /// Checks the convolution `name` (weight of `shape`) and its BatchNorm `bn`.
    fn conv(&mut self, name: &str, bn: &str, shape: [usize; 4]) -> Result<()> {
        self.tensor(&format!("{name}.weight"), &shape)?;
        let c = shape[0];
        for field in ["weight", "bias", "running_mean"] {
            self.tensor(&format!("{bn}.{field}"), &[c])?;
        }
        let var = self.tensor(&format!("{bn}.running_var"), &[c])?;
        if let Some(i) = var.iter().position(|&v| v < 0.0) {
            return Err(self.err(format!("tensor '{bn}.running_var' is negative ({}) at {i}", var[i])));
        }
        Ok(())
    }

    /// Fails on tensors the architecture does not use.
    fn finish(&self) -> Result<()> {
        let unused: Vec<&str> = self
            .sd
            .keys()
            .map(String::as_str)
            .filter(|k| !self.used.contains(k) && !k.ends_with("num_batches_tracked"))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(3).copied().collect();
        Err(self.err(format!(
            "checkpoint has {} tensor(s) this architecture does not use: {}{} (is the architecture right?)",
            unused.len(),
            shown.join(", "),
            if unused.len() > shown.len() { ", ..." } else { "" }
        )))
    }
}
