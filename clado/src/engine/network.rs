//! The CIFAR ResNet as the engine runs it: built from a [`StateDict`], validated, BatchNorm
//! turned into per-channel affine maps, weights packed for the kernels.

use super::kernels::{self, ConvShape, Isa, MapShape};
use super::plan::PreparedWeights;
use crate::checkpoint::StateDict;
use crate::format::LayerInfo;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// BatchNorm epsilon of the PyTorch models.
pub const BN_EPS: f64 = 1e-5;

/// Input size the MACs of [`Layer::macs`] are counted for (CIFAR and padded Fashion-MNIST).
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
    /// Multiply-accumulates for one sample of [`INPUT_SIZE`]² pixels.
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

/// Where a convolution sits in the network; decides its input, residual and ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `relu(bn1(conv1(image)))`.
    Stem,
    /// `relu(bn1(conv1(x)))` of a block; `x` (the block input) is kept as the shortcut.
    BlockConv1,
    /// `bn2(conv2(·))`; without a downsample, `+ x` and ReLU follow at once.
    BlockConv2 { downsample_follows: bool },
    /// `relu(main + bn(conv1x1(x)))`: reads the shortcut, adds the main branch.
    Downsample,
}

pub(crate) struct ConvOp {
    pub role: Role,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    /// PyTorch layout, for quantizing.
    pub weight: Vec<f32>,
    /// Packed for the kernels.
    pub packed: Vec<f32>,
    /// BatchNorm as `y = x·scale + bias`.
    pub bn_scale: Vec<f32>,
    pub bn_bias: Vec<f32>,
}

pub(crate) struct FcOp {
    /// `[classes, features]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

pub(crate) enum Op {
    Conv(ConvOp),
    Fc(FcOp),
}

/// What is live between two layers, per image (see [`super::State`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// The input images, NCHW.
    Images { c: usize, h: usize, w: usize },
    /// A padded NHWC main map and, inside a block, the block input kept for the shortcut.
    Maps { main: MapShape, shortcut: Option<MapShape> },
    /// A vector per image: pooled features (before `fc`) or logits (after it).
    Vector(usize),
}

impl Layout {
    /// Floats per image: main part and shortcut part.
    pub(crate) fn lens(&self) -> (usize, usize) {
        match *self {
            Layout::Images { c, h, w } => (c * h * w, 0),
            Layout::Maps { main, shortcut } => (main.padded_len(), shortcut.map_or(0, |s| s.padded_len())),
            Layout::Vector(n) => (n, 0),
        }
    }
}

/// Shapes of every layer and state for one input size.
pub(crate) struct Geometry {
    /// Per layer: the convolution shape (`None` for `fc`).
    pub convs: Vec<Option<ConvShape>>,
    /// Per position 0..=L: what a state there holds.
    pub layouts: Vec<Layout>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A CIFAR ResNet ready to run: see the [module docs](super).
pub struct Network {
    pub(crate) id: u64,
    arch: String,
    in_channels: usize,
    classes: usize,
    layers: Vec<Layer>,
    pub(crate) ops: Vec<Op>,
    pub(crate) isa: Isa,
    /// For a network read from a graph file: the graph and its executor (`ops` is then empty).
    pub(crate) graph: Option<super::graph_net::GraphNet>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("arch", &self.arch)
            .field("in_channels", &self.in_channels)
            .field("classes", &self.classes)
            .field("layers", &self.layers.len())
            .field("isa", &self.isa)
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
    /// state dict in the layout of the `pytorch-cifar-models` checkpoints. Input channels and
    /// classes are read from `conv1.weight` `[16, C, 3, 3]` and `fc.weight` `[K, 64]`. Every
    /// tensor is checked (present, shape, finite); a tensor the architecture does not use is
    /// an error too (it usually means the wrong `--arch`). `num_batches_tracked` is ignored.
    pub fn from_state_dict(arch: &str, sd: &StateDict) -> Result<Network> {
        let blocks = blocks_per_stage(arch)?;
        let mut rd = Reader {
            arch,
            sd,
            used: BTreeSet::new(),
        };
        let mut layers = Vec::new();
        let mut ops = Vec::new();

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

        let mut push_conv = |rd: &mut Reader<'_>,
                             name: String,
                             bn: String,
                             role: Role,
                             cin: usize,
                             cout: usize,
                             kernel: usize,
                             stride: usize|
         -> Result<()> {
            let shape = vec![cout, cin, kernel, kernel];
            let weight = rd.tensor(&format!("{name}.weight"), &shape)?.to_vec();
            let (bn_scale, bn_bias) = rd.batch_norm(&bn, cout)?;
            let packed = kernels::pack_conv_weights(&weight, cout, cin, kernel, stride);
            let params = weight.len() as u64;
            layers.push(Layer {
                name,
                kind: LayerKind::Conv,
                weight_shape: shape,
                params,
                macs: 0,
            });
            ops.push(Op::Conv(ConvOp {
                role,
                cout,
                kernel,
                stride,
                weight,
                packed,
                bn_scale,
                bn_bias,
            }));
            Ok(())
        };

        push_conv(&mut rd, "conv1".into(), "bn1".into(), Role::Stem, in_channels, 16, 3, 1)?;
        let mut cin = STAGE_CHANNELS[0];
        for (s, &planes) in STAGE_CHANNELS.iter().enumerate() {
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let p = format!("layer{}.{b}", s + 1);
                let downsample = stride != 1 || cin != planes;
                push_conv(
                    &mut rd,
                    format!("{p}.conv1"),
                    format!("{p}.bn1"),
                    Role::BlockConv1,
                    cin,
                    planes,
                    3,
                    stride,
                )?;
                let role = Role::BlockConv2 {
                    downsample_follows: downsample,
                };
                push_conv(
                    &mut rd,
                    format!("{p}.conv2"),
                    format!("{p}.bn2"),
                    role,
                    planes,
                    planes,
                    3,
                    1,
                )?;
                if downsample {
                    let (conv, bn) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    push_conv(&mut rd, conv, bn, Role::Downsample, cin, planes, 1, stride)?;
                }
                cin = planes;
            }
        }
        let weight = rd.tensor("fc.weight", &[classes, last])?.to_vec();
        let bias = rd.tensor("fc.bias", &[classes])?.to_vec();
        layers.push(Layer {
            name: "fc".into(),
            kind: LayerKind::Linear,
            weight_shape: vec![classes, last],
            params: weight.len() as u64,
            macs: weight.len() as u64,
        });
        ops.push(Op::Fc(FcOp { weight, bias }));
        rd.finish()?;

        let mut net = Network {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            arch: arch.to_string(),
            in_channels,
            classes,
            layers,
            ops,
            isa: Isa::detect(),
            graph: None,
        };
        let geometry = net.geometry(INPUT_SIZE, INPUT_SIZE)?;
        for (layer, conv) in net.layers.iter_mut().zip(&geometry.convs) {
            if let Some(c) = conv {
                layer.macs = (c.output.h * c.output.w) as u64 * layer.params;
            }
        }
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
            ops: Vec::new(),
            isa: Isa::detect(),
            graph: Some(graph),
        }
    }

    /// Whether the network runs a graph read from a file (rather than a built-in architecture).
    pub fn is_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// `[C, H, W]` of the images a graph network takes (`None` for the CIFAR ResNets, which
    /// take any size from 8×8).
    pub fn input_shape(&self) -> Option<[usize; 3]> {
        self.graph.as_ref().map(|g| g.input)
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
        if let Some(g) = &self.graph {
            return self.graph_weights(g, i);
        }
        match &self.ops[i] {
            Op::Conv(c) => &c.weight,
            Op::Fc(f) => &f.weight,
        }
    }

    /// Floats that one image's state holds before each position 0..=L (the main map and the
    /// kept shortcut, padded as stored), for inputs of `h×w` pixels: what keeping a state costs.
    pub fn state_floats_per_image(&self, h: usize, w: usize) -> Result<Vec<usize>> {
        if let Some(g) = &self.graph {
            self.check_size(g, h, w)?;
            return Ok(g.floats.clone());
        }
        let geo = self.geometry(h, w)?;
        Ok(geo
            .layouts
            .iter()
            .map(|l| {
                let (main, shortcut) = l.lens();
                main + shortcut
            })
            .collect())
    }

    /// Runs with the given instruction set (tests compare them; all agree bitwise).
    #[cfg(test)]
    pub(crate) fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// Weights of layer `layer` ready for a [`super::Plan`]: `weights` (PyTorch layout, e.g.
    /// fake-quantized by `clado::quant`) packed for the kernels. `bits` is recorded for
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
        if let Some(g) = &self.graph {
            return Ok(super::graph_net::prepared(
                self,
                layer,
                bits,
                Self::graph_prepare(g, layer, weights),
            ));
        }
        let packed = match &self.ops[layer] {
            Op::Conv(c) => {
                let cin = info.weight_shape[1];
                kernels::pack_conv_weights(weights, c.cout, cin, c.kernel, c.stride)
            }
            Op::Fc(_) => weights.to_vec(),
        };
        Ok(Arc::new(PreparedWeights {
            network: self.id,
            layer,
            bits,
            packed,
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

    /// Shapes for an input of `h×w` pixels.
    pub(crate) fn geometry(&self, h: usize, w: usize) -> Result<Geometry> {
        if h == 0 || w == 0 {
            return Err(Error::other(format!("{}: input images of {h}x{w} pixels", self.arch)));
        }
        let bad = || Error::other(format!("{}: input of {h}x{w} pixels is too small", self.arch));
        let mut convs = Vec::with_capacity(self.ops.len());
        let mut layouts = Vec::with_capacity(self.ops.len() + 1);
        layouts.push(Layout::Images {
            c: self.in_channels,
            h,
            w,
        });
        let mut cur = MapShape {
            h,
            w,
            c: self.in_channels,
        };
        let mut block_input = cur;
        for op in &self.ops {
            match op {
                Op::Conv(c) => {
                    let input = if c.role == Role::Downsample { block_input } else { cur };
                    if c.role == Role::BlockConv1 {
                        block_input = cur;
                    }
                    let shape = ConvShape::new(input, c.cout, c.kernel, c.stride).ok_or_else(bad)?;
                    convs.push(Some(shape));
                    let shortcut = match c.role {
                        Role::BlockConv1
                        | Role::BlockConv2 {
                            downsample_follows: true,
                        } => Some(block_input),
                        _ => None,
                    };
                    if c.role == Role::Downsample && shape.output != cur {
                        return Err(bad());
                    }
                    if let Role::BlockConv2 {
                        downsample_follows: false,
                    } = c.role
                    {
                        if shape.output != block_input {
                            return Err(bad());
                        }
                    }
                    cur = shape.output;
                    layouts.push(Layout::Maps { main: cur, shortcut });
                }
                Op::Fc(_) => {
                    convs.push(None);
                    layouts.push(Layout::Vector(self.classes));
                }
            }
        }
        // The state before `fc` is the pooled feature vector.
        let fc = self.ops.len() - 1;
        layouts[fc] = Layout::Vector(cur.c);
        Ok(Geometry { convs, layouts })
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

    /// BatchNorm `prefix` of `c` channels as `(scale, bias)`: `γ/√(var+ε)`, `β − mean·scale`
    /// (computed in f64, rounded once).
    fn batch_norm(&mut self, prefix: &str, c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let gamma = self.tensor(&format!("{prefix}.weight"), &[c])?;
        let beta = self.tensor(&format!("{prefix}.bias"), &[c])?;
        let mean = self.tensor(&format!("{prefix}.running_mean"), &[c])?;
        let var = self.tensor(&format!("{prefix}.running_var"), &[c])?;
        if let Some(i) = var.iter().position(|&v| v < 0.0) {
            return Err(self.err(format!("tensor '{prefix}.running_var' is negative ({}) at {i}", var[i])));
        }
        let mut scale = Vec::with_capacity(c);
        let mut bias = Vec::with_capacity(c);
        for i in 0..c {
            let s = f64::from(gamma[i]) / (f64::from(var[i]) + BN_EPS).sqrt();
            scale.push(s as f32);
            bias.push((f64::from(beta[i]) - f64::from(mean[i]) * s) as f32);
        }
        Ok((scale, bias))
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
