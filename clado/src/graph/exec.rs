//! The executor of a [`Graph`]: FP32, one sample at a time, NCHW except where the engine's
//! kernels run (see *Fast convolutions* below).
//!
//! [`Executor::new`] prepares one [`Step`] per node (weights of a Conv split per group,
//! BatchNorm's scale and shift, …); [`Executor::run`] runs the steps in the graph's order on
//! each sample of a batch, the samples spread over the rayon pool. A sample's values live in a
//! table indexed by value id and are freed after their last reader ([`Graph::last_uses`]).
//! The exceptions are nodes that [`Executor::advance_all`] runs once for all the samples,
//! where one sample alone would read the weights for very little work: a classifier head (a
//! Gemm that is the last node and gives the only output; each thread's samples in one pass
//! over its weights), and 1×1 Convs on maps of 16 to 64 pixels (the pixels of groups of
//! samples side by side as the columns of one matrix product).
//!
//! Convolutions: depthwise ones (one input channel per group) run as a direct loop over the
//! taps on a zero-padded copy of the input: for outputs up to 16 wide, eight channels at a
//! time interleaved in the lanes of a register; wider ones plane by plane
//! (`engine::kernels::depthwise_plane`; the plane split by stride phase, so that strided taps
//! read consecutive floats too; along whole padded rows when the output is 17 to 127 wide). 1×1
//! stride-1 unpadded ones as one matrix product of the weight `[M, C]` and the input
//! `[C, H·W]`; the others as im2col and a matrix product per group. Matrix products are
//! `engine::kernels::product` (the bias added and the activation applied while each block of
//! outputs is in cache), or the `gemm` crate's for planes of fewer than 16 pixels; both
//! single-threaded (parallelism is over samples). A Conv whose result only an activation reads
//! (a unary node such as ReLU6, or Sigmoid then Mul, SiLU) applies it itself, in place (a
//! depthwise one plane by plane or block by block, while it is in cache), with the same
//! arithmetic as the nodes it replaces.
//!
//! **Determinism.** A sample's result depends only on that sample: the same steps run on it
//! in the same order whatever the batch, its position in it or the thread count, and no step
//! reads another sample (the batched nodes compute each output exactly as for that sample
//! alone: every output of the products depends only on its own row and column). So results
//! are bitwise independent of batch split and thread count.
//!
//! **Quantization.** [`Executor::run_quantized`] takes a [`LayerQuant`] per quantizable layer:
//! fake-quantized weights (made by [`Executor::quantized_weights`] with `clado::quant`'s
//! per-output-channel quantizer, in the file's layout) replace the layer's weight, and an
//! activation quantizer acts on a copy of the layer's input only (other readers of the same
//! tensor see it unquantized).
//!
//! **Fast convolutions.** Where the engine's kernels (`engine::kernels`: Winograd F(2×2, 3×3)
//! and direct 3×3/1×1 convolutions of one group, in padded NHWC, with BatchNorm, a residual add
//! and ReLU applied as the sums are written) fit a Conv's shapes, the Conv and the nodes right
//! after it that they can absorb (a BatchNormalization, an Add of another map, a Relu, each the
//! only reader of the one before) run as one step. Its result is stored as a padded NHWC map
//! when one of its readers takes maps: another fast chain (as its input or as its residual),
//! or a global average pool (`GlobalAveragePool`, `ReduceMean` over H and W); else it goes
//! back to NCHW. Other nodes reading a map get an NCHW copy; a fast chain whose input or
//! residual is an NCHW value converts it on the way in. Winograd serves every 3×3 stride-1
//! Conv with 8 or more input channels and a multiple of 16 output channels, whatever reads it. The direct kernels serve a Conv
//! only when every reader of its result takes maps and its packed weights stay in cache
//! (`FAST_MAX_WEIGHTS`): they lose to im2col and `gemm` where conversions follow (MobileNetV2's
//! pointwise layers) and on wide layers. The CIFAR ResNets run entirely on the kernels, as do
//! all but the stem of the torchvision ResNets.
//!
//! **Weights as the executor takes them** ([`Executor::prepare_weights`]): packed for the
//! kernels for a fast Conv, `[K, N]` for a Gemm or MatMul, the file's layout for other Convs.
//! A Gemm computes each output as `fma` over the inputs in order (`engine::kernels::dense_rows`),
//! then scales by alpha and adds the bias.

use super::ops::{self, ConvAttrs, Op, Unary};
use super::{Graph, ValueId};
use crate::engine::kernels::{self, ConvShape, Epilogue, Isa, MapShape};
use crate::matmul::matmul;
use crate::quant::{self, ActQuantizer};
use crate::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// How one quantizable layer runs: FP (the default), with fake-quantized weights, with a
/// quantized input, or both.
#[derive(Clone, Debug, Default)]
pub struct LayerQuant {
    /// The layer's weight after fake quantization, in the file's layout (as
    /// [`Executor::quantized_weights`] gives it).
    pub weights: Option<Arc<Vec<f32>>>,
    /// The quantizer of the layer's input activation.
    pub input: Option<ActQuantizer>,
}

/// A node prepared for running.
enum Step {
    Conv(ConvStep),
    /// A Conv and the nodes it absorbs, on the engine's kernels (see the module docs).
    Fast(Box<FastConv>),
    /// A node that the fast step before it computes.
    Fused,
    /// `Y = alpha·A·B' + beta·C`: `w` is `B'` as `[K, N]`, `c` broadcast to `[N]`.
    Gemm {
        w: Vec<f32>,
        k: usize,
        n: usize,
        c: Option<Vec<f32>>,
        alpha: f32,
    },
    MatMul {
        b: Vec<f32>,
        k: usize,
        n: usize,
    },
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// `Sigmoid(x)` whose only reader is the next node, `Mul` of it and `x`: both as one pass
    /// `x · sigmoid(x)` (SiLU, the same bits), written to the Mul's output.
    Silu {
        output: ValueId,
    },
    /// Kernels of `ops` on the node's op as it is.
    Other,
}

struct ConvStep {
    attrs: ConvAttrs,
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// Input `[C, H, W]` and output `[M, OH, OW]` of one sample.
    input: [usize; 3],
    output: [usize; 3],
    /// The activation after the Conv that the step applies (see [`fuse_activations`]), and
    /// the value it then writes instead of the Conv's output.
    act: Option<(Activation, ValueId)>,
}

/// An element-wise function of a Conv's result: a unary node, or `x · sigmoid(x)` (a
/// [`Step::Silu`] pair).
#[derive(Clone, Copy, Debug)]
enum Activation {
    Unary(Unary),
    Silu,
}

impl Activation {
    /// The bounds of a `Clip`, which the kernels apply in registers (`Lanes::clip`) instead of
    /// a pass over the result. (Not a `Relu`'s: it turns −0 into +0, a clip to [0, ∞] keeps it.)
    fn bounds(self) -> Option<(f32, f32)> {
        match self {
            Activation::Unary(Unary::Clip { min, max }) => Some((min, max)),
            _ => None,
        }
    }

    /// In place, with the arithmetic of the nodes it replaces (the same bits).
    fn apply(self, x: &mut [f32]) {
        match self {
            Activation::Unary(u) => ops::unary(u, x),
            Activation::Silu => ops::silu_in_place(x),
        }
    }
}

/// A chain Conv [→ BatchNormalization] [→ Add] [→ Relu] run by `kernels::conv_image`.
struct FastConv {
    shape: ConvShape,
    /// The FP weights, packed.
    packed: Vec<f32>,
    /// `y = fma(acc, scale, bias)` per output channel (BatchNorm and the Conv's bias).
    scale: Vec<f32>,
    bias: Vec<f32>,
    /// The map added before the ReLU (the other operand of the absorbed Add).
    residual: Option<ValueId>,
    relu: bool,
    /// The chain's last value, stored as a padded map when one of its readers takes maps,
    /// else converted to NCHW.
    output: ValueId,
    output_map: bool,
}

/// What a run needs of a quantization plan: for each quantizable layer (by index in
/// [`Graph::layers`]), the weights to use instead of the FP ones, as
/// [`Executor::prepare_weights`] gives them, and the quantizer of its input. The engine's
/// `Plan` is one.
pub trait QuantPlan: Sync {
    fn weights(&self, layer: usize) -> Option<&[f32]>;
    fn input(&self, layer: usize) -> Option<&ActQuantizer>;
}

/// A `[LayerQuant]` plan with its weights prepared for the executor.
struct PreparedPlan {
    weights: Vec<Option<Vec<f32>>>,
    input: Vec<Option<ActQuantizer>>,
}

impl QuantPlan for PreparedPlan {
    fn weights(&self, layer: usize) -> Option<&[f32]> {
        self.weights.get(layer).and_then(|w| w.as_deref())
    }
    fn input(&self, layer: usize) -> Option<&ActQuantizer> {
        self.input.get(layer).and_then(|q| q.as_ref())
    }
}

/// The values of one sample that are live at some point of the node order, indexed by value id
/// (see [`Executor::start`]). Cloning shares the buffers.
#[derive(Clone, Debug)]
pub struct SampleValues {
    vals: Vec<Option<Arc<Vec<f32>>>>,
    /// The index of the next node to run.
    next: usize,
}

impl SampleValues {
    /// The index of the next node to run.
    pub fn next_node(&self) -> usize {
        self.next
    }

    /// Value `v` as stored, if it is live: NCHW, or a padded NHWC map for the result of a fast
    /// chain (see the module docs). Graph outputs are always NCHW.
    pub fn get(&self, v: ValueId) -> Option<&[f32]> {
        self.vals[v].as_deref().map(Vec::as_slice)
    }

    /// Floats held by the live values.
    pub fn floats(&self) -> usize {
        self.vals.iter().flatten().map(|v| v.len()).sum()
    }
}

/// Runs a [`Graph`] (see the module docs).
pub struct Executor {
    graph: Arc<Graph>,
    steps: Vec<Step>,
    last_uses: Vec<Vec<ValueId>>,
    /// For each node, its index in [`Graph::layers`] if it is a quantizable layer.
    layer_of: Vec<Option<usize>>,
    /// For each node, whether it may overwrite its first input: an element-wise op whose
    /// output has that input's shape, that input being a runtime value it is the last reader
    /// of (and read once, not a graph output). Same arithmetic either way.
    in_place: Vec<bool>,
    /// For each value, its map shape if it is stored as a padded NHWC map.
    maps: Vec<Option<MapShape>>,
    isa: Isa,
}

/// The shortest decimal that the f32 `x` stands for, as an f64: a BatchNorm ε written as
/// `1e-5` in PyTorch is 1e-5, not the f32 nearest to it.
fn decimal_f64(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
}

/// BatchNorm as `y = x·scale + shift`: `γ/√(var+ε)` and `β + (bias − mean)·scale`, computed in
/// f64 and rounded once (`bias`: a preceding Conv's, folded in).
fn batch_norm_affine(
    [gamma, beta, mean, var]: [&[f32]; 4],
    epsilon: f32,
    bias: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let eps = decimal_f64(epsilon);
    let mut scale = Vec::with_capacity(gamma.len());
    let mut shift = Vec::with_capacity(gamma.len());
    for c in 0..gamma.len() {
        let s = f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt();
        scale.push(s as f32);
        let t = match bias {
            None => f64::from(beta[c]) - f64::from(mean[c]) * s,
            Some(b) => f64::from(beta[c]) + (f64::from(b[c]) - f64::from(mean[c])) * s,
        };
        shift.push(t as f32);
    }
    (scale, shift)
}

/// Largest packed weight (floats) of a Conv the engine's direct kernels run: 256 KiB, which
/// stays in L2 while they reread it for every tile of pixels. Every Conv of the CIFAR ResNets
/// is within it. (Winograd has no such limit: it takes wide layers in super-groups of tiles.)
const FAST_MAX_WEIGHTS: usize = 1 << 16;

/// The kernels' shape for a Conv node, if they run it: one group, no dilation, a square 3×3
/// kernel with padding 1 or 1×1 with none, equal strides, the graph's output size, and Winograd
/// or packed weights of at most [`FAST_MAX_WEIGHTS`] floats.
fn fast_shape(graph: &Graph, node: &super::Node, a: &ConvAttrs) -> Option<ConvShape> {
    let k = a.kernel[0];
    let x = &graph.values[node.inputs[0]].shape;
    let y = &graph.values[node.outputs[0]].shape;
    let ok = a.groups == 1
        && a.dilations == [1, 1]
        && a.kernel == [k, k]
        && (k == 1 || k == 3)
        && a.strides[0] == a.strides[1]
        && a.pads == [k / 2; 4]
        && graph.values[node.inputs[0]].constant.is_none()
        && x.len() == 4;
    if !ok {
        return None;
    }
    let input = MapShape {
        c: x[1],
        h: x[2],
        w: x[3],
    };
    let shape = ConvShape::new(input, y[1], k, a.strides[0])?;
    if !shape.winograd() && shape.weight_len() > FAST_MAX_WEIGHTS {
        return None;
    }
    (shape.output.h == y[2] && shape.output.w == y[3]).then_some(shape)
}

/// Whether `op` reading a map as input `k` takes it as a map: a global average pool.
fn pools_maps(op: &Op, k: usize, shape: &[usize]) -> bool {
    k == 0
        && match op {
            Op::GlobalAveragePool => shape.len() == 4,
            Op::ReduceMean { axes, .. } => shape.len() == 4 && axes[..] == [2, 3],
            _ => false,
        }
}

impl Executor {
    /// Prepares `graph` for running (it keeps a copy; constants are shared, not copied).
    pub fn new(graph: &Graph) -> Result<Executor> {
        let constant = |v: ValueId| -> Result<Vec<f32>> {
            let t = graph.constant(v).expect("checked at load: a constant");
            t.as_f32().map(|d| d.to_vec()).ok_or_else(|| {
                Error::other(format!(
                    "constant {:?} holds integers, floats expected",
                    graph.values[v].name
                ))
            })
        };
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let shape = |i: usize| graph.values[node.inputs[i]].shape.as_slice();
            let step = match &node.op {
                Op::Conv(a) => {
                    let (x, y) = (shape(0), &graph.values[node.outputs[0]].shape);
                    let m = y[1];
                    Step::Conv(ConvStep {
                        attrs: a.clone(),
                        weight: constant(node.inputs[1])?,
                        bias: match node.inputs.get(2) {
                            Some(&b) => constant(b)?,
                            None => vec![0.0; m],
                        },
                        input: [x[1], x[2], x[3]],
                        output: [m, y[2], y[3]],
                        act: None,
                    })
                }
                Op::Gemm(g) => {
                    let bs = shape(1);
                    let (k, n) = if g.trans_b { (bs[1], bs[0]) } else { (bs[0], bs[1]) };
                    let c = match node.inputs.get(2) {
                        Some(&c) => {
                            let data = constant(c)?;
                            let cs = &graph.values[c].shape;
                            let row = ops::binary_f32(ops::Binary::Add, &vec![0.0; n], &[1, n], &data, cs, &[1, n]);
                            Some(row.iter().map(|v| v * g.beta).collect())
                        }
                        None => None,
                    };
                    let b = constant(node.inputs[1])?;
                    Step::Gemm {
                        w: if g.trans_b {
                            ops::transpose(&b, &[n, k], &[1, 0])
                        } else {
                            b
                        },
                        k,
                        n,
                        c,
                        alpha: g.alpha,
                    }
                }
                Op::MatMul => {
                    let bs = shape(1);
                    Step::MatMul {
                        b: constant(node.inputs[1])?,
                        k: bs[0],
                        n: bs[1],
                    }
                }
                Op::BatchNorm { epsilon } => {
                    let [s, b, mean, var] = [1, 2, 3, 4].map(|i| constant(node.inputs[i]));
                    let (s, b, mean, var) = (s?, b?, mean?, var?);
                    let (scale, shift) = batch_norm_affine([&s, &b, &mean, &var], *epsilon, None);
                    Step::BatchNorm { scale, shift }
                }
                _ => Step::Other,
            };
            steps.push(step);
        }
        let mut layer_of = vec![None; graph.nodes.len()];
        for (l, layer) in graph.layers.iter().enumerate() {
            layer_of[layer.node] = Some(l);
        }
        let last_uses = graph.last_uses();
        let maps = fuse_fast_convs(graph, &mut steps, &constant)?;
        fuse_silu(graph, &mut steps);
        fuse_activations(graph, &mut steps);
        let in_place = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let x = node.inputs[0];
                let elementwise = match &node.op {
                    Op::Unary(_) | Op::BatchNorm { .. } | Op::Reshape { .. } | Op::Softmax { .. } => true,
                    // The second operand the same shape (a residual add), a scalar, or one number
                    // per leading index (a squeeze-and-excitation scale `[C, 1, 1]`).
                    Op::Binary(_) => {
                        let b = &graph.values[node.inputs[1]].shape;
                        graph.values[node.outputs[0]].shape == graph.values[x].shape
                            && ops::prefix_broadcast(&graph.values[x].shape, b)
                    }
                    _ => false,
                };
                elementwise
                    && !matches!(steps[i], Step::Fused)
                    && maps[x].is_none()
                    && layer_of[i].is_none()
                    && graph.values[x].constant.is_none()
                    && last_uses[i].contains(&x)
                    && node.inputs.iter().filter(|&&v| v == x).count() == 1
            })
            .collect();
        Ok(Executor {
            graph: Arc::new(graph.clone()),
            steps,
            last_uses,
            layer_of,
            in_place,
            maps,
            isa: Isa::detect(),
        })
    }

    /// Runs the kernels with the given instruction set (tests compare them; all agree bitwise).
    #[cfg(test)]
    pub(crate) fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    /// Floats that value `v` takes for one sample as stored.
    pub(crate) fn stored_len(&self, v: ValueId) -> usize {
        match self.maps[v] {
            Some(m) => m.padded_len(),
            None => self.graph.values[v].shape.iter().product(),
        }
    }

    /// Floats of scratch space a thread may keep for this graph between runs, or use at once:
    /// im2col matrices, the fast chains' converted and quantized inputs, recycled buffers, and
    /// the Winograd kernel's transforms.
    pub fn scratch_floats(&self) -> usize {
        let (mut columns, mut map, mut kernel) = (0, 0, 0);
        for step in &self.steps {
            match step {
                Step::Conv(c) => {
                    let [kh, kw] = c.attrs.kernel;
                    let pointwise = kh == 1 && kw == 1 && c.attrs.strides == [1, 1] && c.attrs.pads == [0; 4];
                    if !pointwise && c.input[0] != c.attrs.groups {
                        let k = c.input[0] / c.attrs.groups * kh * kw;
                        columns = columns.max(k * c.output[1] * c.output[2]);
                    }
                }
                Step::Fast(f) => {
                    map = map.max(f.shape.input.padded_len()).max(f.shape.output.padded_len());
                    kernel = kernel.max(f.shape.scratch_len());
                }
                _ => {}
            }
        }
        // Recycled buffers may be of any value's size.
        let largest = (0..self.graph.values.len())
            .filter(|&v| self.graph.values[v].constant.is_none())
            .map(|v| self.stored_len(v))
            .max()
            .unwrap_or(0);
        // The fast chains' three scratch maps, and maps converted back to NCHW (one at a time).
        columns + kernel + 4 * map + FREE_BUFFERS * largest.max(map)
    }

    /// Floats of layer `layer`'s weights as the executor takes them (Winograd's packing holds
    /// 16 numbers per 9 weights).
    pub fn prepared_len(&self, layer: usize) -> usize {
        let l = &self.graph.layers[layer];
        match &self.steps[l.node] {
            Step::Fast(f) => f.shape.weight_len(),
            _ => l.params,
        }
    }

    /// Layer `layer`'s weights as the executor takes them (see the module docs) from
    /// `by_channel`, the weights with the output channel first
    /// ([`Graph::layer_weight_by_channel`]'s layout).
    pub fn prepare_weights(&self, layer: usize, by_channel: &[f32]) -> Vec<f32> {
        let l = &self.graph.layers[layer];
        match &self.steps[l.node] {
            Step::Fast(f) => kernels::pack_conv_weights(
                by_channel,
                f.shape.output.c,
                f.shape.input.c,
                f.shape.kernel,
                f.shape.stride,
            ),
            // By channel is [N, K]; the executor takes [K, N].
            Step::Gemm { k, n, .. } | Step::MatMul { k, n, .. } => ops::transpose(by_channel, &[*n, *k], &[1, 0]),
            _ => by_channel.to_vec(),
        }
    }

    /// Layer `layer`'s weight fake-quantized to `bits` with per-output-channel `scales`
    /// (`clado::quant`'s symmetric quantizer along the layer's output channel dimension), in
    /// the file's layout.
    pub fn quantized_weights(&self, layer: usize, bits: u8, scales: &[f32]) -> Result<Arc<Vec<f32>>> {
        let l = &self.graph.layers[layer];
        if let Err(e) = quant::check_weight_scales(scales, l.out_channels) {
            return Err(Error::other(format!("layer {:?}: {e}", l.name)));
        }
        let (by_channel, shape) = self.graph.layer_weight_by_channel(layer);
        let q = quant::fake_quantize_weights(&by_channel, l.out_channels, bits, scales);
        Ok(Arc::new(if l.channel_dim == 0 {
            q
        } else {
            ops::transpose(&q, &shape, &[1, 0])
        }))
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs a batch: `input` holds `batch` samples of [`Graph::input_shape`]; returns each
    /// output as `batch` samples of [`Graph::output_shape`], concatenated. With `parallel`, the
    /// samples are spread over the rayon pool (same results, see the module docs).
    pub fn run(&self, input: &[f32], batch: usize, parallel: bool) -> Result<Vec<Vec<f32>>> {
        self.run_quantized(input, batch, parallel, &[])
    }

    /// As [`Executor::run`] with layer `i` quantized as `plan[i]` says (layers past the end
    /// of `plan` run in FP).
    pub fn run_quantized(
        &self,
        input: &[f32],
        batch: usize,
        parallel: bool,
        plan: &[LayerQuant],
    ) -> Result<Vec<Vec<f32>>> {
        if plan.len() > self.graph.layers.len() {
            return Err(Error::other(format!(
                "a plan for {} layers, the graph has {}",
                plan.len(),
                self.graph.layers.len()
            )));
        }
        let mut prepared = PreparedPlan {
            weights: Vec::with_capacity(plan.len()),
            input: plan.iter().map(|q| q.input).collect(),
        };
        for (l, q) in plan.iter().enumerate() {
            let layer = &self.graph.layers[l];
            prepared.weights.push(match &q.weights {
                Some(w) if w.len() != layer.params => {
                    return Err(Error::other(format!(
                        "layer {:?}: {} weights given, {} expected",
                        layer.name,
                        w.len(),
                        layer.params
                    )))
                }
                Some(w) => {
                    let shape = &self.graph.layer_weight(l).shape;
                    let by_channel = if layer.channel_dim == 0 {
                        w.to_vec()
                    } else {
                        ops::transpose(w, shape, &[1, 0])
                    };
                    Some(self.prepare_weights(l, &by_channel))
                }
                None => None,
            });
        }
        let per: usize = self.graph.input_shape().iter().product();
        if input.len() != batch * per {
            return Err(Error::other(format!(
                "input holds {} floats, {batch} samples of {:?} need {}",
                input.len(),
                self.graph.input_shape(),
                batch * per
            )));
        }
        let mut states: Vec<SampleValues> = if parallel {
            input.par_chunks(per.max(1)).map(|x| self.start(x)).collect()
        } else {
            input.chunks(per.max(1)).map(|x| self.start(x)).collect()
        };
        self.advance_all(&mut states, self.graph.nodes.len(), &prepared, parallel);
        let samples = states.iter().map(|s| {
            self.graph
                .outputs
                .iter()
                .map(|&o| s.get(o).expect("outputs are computed"))
                .collect::<Vec<_>>()
        });
        let mut outs: Vec<Vec<f32>> = self
            .graph
            .outputs
            .iter()
            .map(|&o| Vec::with_capacity(batch * self.graph.values[o].shape.iter().product::<usize>()))
            .collect();
        for sample in samples {
            for (out, part) in outs.iter_mut().zip(sample) {
                out.extend_from_slice(part);
            }
        }
        Ok(outs)
    }

    /// The state of one sample before the first node: its input `x` (one sample of
    /// [`Graph::input_shape`]; the caller checks the length).
    pub fn start(&self, x: &[f32]) -> SampleValues {
        let mut vals = vec![None; self.graph.values.len()];
        vals[self.graph.input] = Some(Arc::new(x.to_vec()));
        SampleValues { vals, next: 0 }
    }

    /// The input of layer `layer` in `s` (which must be just before the layer's node), without
    /// a map's padding, appended to `out`.
    pub(crate) fn layer_input(&self, s: &SampleValues, layer: usize, out: &mut Vec<f32>) {
        let x = self.graph.nodes[self.graph.layers[layer].node].inputs[0];
        let data = s.get(x).expect("a layer's input is live before it");
        match self.maps[x] {
            Some(m) => kernels::map_interior(data, m, out),
            None => out.extend_from_slice(data),
        }
    }

    /// Runs the nodes from `s`'s next node up to (not including) node `to`, quantizable layers
    /// as `plan` says. Values are freed after their last reader, so `s` then holds exactly what
    /// is live before node `to`. Resuming a clone of a state is bitwise the same as running
    /// through: the same steps on the same values (a shared buffer that an element-wise node
    /// would overwrite is copied first).
    pub fn advance(&self, s: &mut SampleValues, to: usize, plan: &(impl QuantPlan + ?Sized)) {
        let g = &*self.graph;
        assert!(s.next <= to && to <= g.nodes.len(), "runs go forward within the graph");
        let vals = &mut s.vals;
        for i in s.next..to {
            let node = &g.nodes[i];
            let quant = self.layer_of[i].map(|l| (plan.weights(l), plan.input(l)));
            match &self.steps[i] {
                Step::Fused => {}
                Step::Silu { output } => {
                    let x = vals[node.inputs[0]]
                        .as_deref()
                        .expect("inputs are computed before their readers");
                    let mut y = reuse(x.len());
                    ops::silu(x, &mut y);
                    vals[*output] = Some(Arc::new(y));
                }
                Step::Fast(f) => {
                    let y = self.run_fast(f, node.inputs[0], vals, quant);
                    vals[f.output] = Some(Arc::new(y));
                }
                _ => {
                    let outs = if self.in_place[i] && quant.is_none() {
                        // The node is its input's last reader: it works on that buffer.
                        let x = vals[node.inputs[0]]
                            .take()
                            .expect("inputs are computed before their readers");
                        let x = Arc::try_unwrap(x).unwrap_or_else(|shared| (*shared).clone());
                        vec![self.run_in_place(i, x, vals)]
                    } else {
                        self.run_node(i, vals, quant)
                    };
                    let targets = match &self.steps[i] {
                        Step::Conv(ConvStep { act: Some((_, o)), .. }) => std::slice::from_ref(o),
                        _ => &node.outputs[..],
                    };
                    for (&o, v) in targets.iter().zip(outs) {
                        vals[o] = Some(Arc::new(v));
                    }
                }
            }
            for &v in &self.last_uses[i] {
                if let Some(Ok(buf)) = vals[v].take().map(Arc::try_unwrap) {
                    recycle(buf);
                }
            }
        }
        s.next = to;
    }

    /// [`Executor::advance`] on each of `states` to node `to` (spread over the rayon pool with
    /// `parallel`), except for the nodes that run on all the samples at once (see
    /// `batched`): each sample is advanced to such a node, the node runs once for
    /// all of them, and so on. The same bits as one sample at a time.
    pub fn advance_all(
        &self,
        states: &mut [SampleValues],
        to: usize,
        plan: &(impl QuantPlan + ?Sized),
        parallel: bool,
    ) {
        loop {
            let ahead = states.iter().map(|s| s.next).max().unwrap_or(to);
            let batched = (ahead..to).find(|&i| self.batched(i));
            let stop = batched.unwrap_or(to);
            if parallel {
                states.par_iter_mut().for_each(|s| self.advance(s, stop, plan));
            } else {
                states.iter_mut().for_each(|s| self.advance(s, stop, plan));
            }
            let Some(i) = batched else { return };
            let outs = match &self.steps[i] {
                Step::Conv(c) => self.pointwise_all(i, c, states, plan, parallel),
                _ => self.head_all(i, states, plan, parallel),
            };
            let node = &self.graph.nodes[i];
            let target = match &self.steps[i] {
                Step::Conv(ConvStep { act: Some((_, o)), .. }) => *o,
                _ => node.outputs[0],
            };
            for (s, y) in states.iter_mut().zip(outs) {
                s.vals[target] = Some(Arc::new(y));
                for &v in &self.last_uses[i] {
                    if let Some(Ok(buf)) = s.vals[v].take().map(Arc::try_unwrap) {
                        recycle(buf);
                    }
                }
                s.next = i + 1;
            }
        }
    }

    /// Whether [`Executor::advance_all`] runs node `i` once for all its samples: the batched
    /// head (see `batched_head`), and the 1 × 1 Convs of small planes (at least
    /// `PRODUCT_MIN_PLANE` pixels, at most `BATCHED_MAX_PLANE`). One sample's product on such a
    /// plane reads the whole weight matrix for a few dozen columns, the last register of each
    /// row mostly empty (7 × 7 = 49 = 6 · 8 + 1); the samples' columns side by side make one
    /// product of full registers that reads the weights once per column block. Each output
    /// of `kernels::product` depends only on its own column, so the bits are the same.
    fn batched(&self, i: usize) -> bool {
        match &self.steps[i] {
            Step::Conv(c) => {
                let a = &c.attrs;
                let plane = c.output[1] * c.output[2];
                a.groups == 1
                    && a.kernel == [1, 1]
                    && a.strides == [1, 1]
                    && a.pads == [0; 4]
                    && (PRODUCT_MIN_PLANE..=BATCHED_MAX_PLANE).contains(&plane)
                    && self.maps[self.graph.nodes[i].inputs[0]].is_none()
            }
            _ => self.batched_head() == Some(i),
        }
    }

    /// 1 × 1 Conv node `i` (a [`Executor::batched`] one) on every sample: each sample's output.
    fn pointwise_all(
        &self,
        i: usize,
        c: &ConvStep,
        states: &[SampleValues],
        plan: &(impl QuantPlan + ?Sized),
        parallel: bool,
    ) -> Vec<Vec<f32>> {
        let x = self.graph.nodes[i].inputs[0];
        let layer = self.layer_of[i];
        let input = layer.and_then(|l| plan.input(l));
        let weight = layer.and_then(|l| plan.weights(l)).unwrap_or(&c.weight);
        let ([k, ..], [m, oh, ow]) = (c.input, c.output);
        let n = oh * ow;
        // Groups of samples, one product each: sixteen when every thread still gets as many
        // groups as the others (MobileNetV2's 7 × 7 maps: 16 · 49 = 784 columns fill whole
        // tiles of 16, where 8 · 49 = 392 leaves 8 to one-register tiles), else eight.
        let threads = if parallel { rayon::current_num_threads() } else { 1 };
        let group = if states.len().is_multiple_of(16 * threads) {
            16
        } else {
            8
        };
        let run = |group: &[SampleValues]| -> Vec<Vec<f32>> {
            let cols = group.len() * n;
            let mut xs = reuse(k * cols);
            for (j, s) in group.iter().enumerate() {
                let data = s.get(x).expect("inputs are computed before their readers");
                for (ch, src) in data.chunks_exact(n).enumerate() {
                    xs[ch * cols + j * n..][..n].copy_from_slice(src);
                }
            }
            if let Some(q) = input {
                q.quantize_in_place(&mut xs);
            }
            let mut ys = reuse(m * cols);
            let clip = c.act.and_then(|(act, _)| act.bounds());
            let mut done = |run: &mut [f32]| {
                if let (Some((act, _)), None) = (c.act, clip) {
                    act.apply(run);
                }
            };
            kernels::product(self.isa, (m, cols, k), weight, &xs, &c.bias, clip, &mut ys, &mut done);
            recycle(xs);
            let outs = (0..group.len())
                .map(|j| {
                    let mut y = reuse(m * n);
                    for (oc, dst) in y.chunks_exact_mut(n).enumerate() {
                        dst.copy_from_slice(&ys[oc * cols + j * n..][..n]);
                    }
                    y
                })
                .collect();
            recycle(ys);
            outs
        };
        let groups: Vec<Vec<Vec<f32>>> = if parallel {
            states.par_chunks(group).map(run).collect()
        } else {
            states.chunks(group).map(run).collect()
        };
        groups.concat()
    }

    /// The batched head (node `i`) on every sample: each sample's output.
    fn head_all(
        &self,
        i: usize,
        states: &[SampleValues],
        plan: &(impl QuantPlan + ?Sized),
        parallel: bool,
    ) -> Vec<Vec<f32>> {
        let node = &self.graph.nodes[i];
        let layer = self.layer_of[i];
        let mut rows = Vec::new();
        for s in states {
            rows.extend_from_slice(s.get(node.inputs[0]).expect("the head's input is live"));
        }
        if let Some(q) = layer.and_then(|l| plan.input(l)) {
            q.quantize_in_place(&mut rows);
        }
        let weights = layer.and_then(|l| plan.weights(l));
        // One group of samples' rows per thread: one pass over the weights each.
        let threads = if parallel { rayon::current_num_threads() } else { 1 };
        let per_sample = rows.len() / states.len().max(1);
        let group = (states.len().div_ceil(threads) * per_sample).max(1);
        let y: Vec<Vec<f32>> = if parallel {
            rows.par_chunks(group).map(|x| self.gemm(i, x, weights)).collect()
        } else {
            rows.chunks(group).map(|x| self.gemm(i, x, weights)).collect()
        };
        let y = y.concat();
        let per = y.len() / states.len().max(1);
        y.chunks_exact(per.max(1)).map(<[f32]>::to_vec).collect()
    }

    /// The Conv nodes that run on the engine's kernels, those of them whose result is stored
    /// NCHW, and how many Convs there are.
    #[cfg(test)]
    pub(crate) fn fast_convs(&self) -> (usize, usize, usize) {
        let fast = self.steps.iter().filter(|s| matches!(s, Step::Fast(_))).count();
        let nchw = self
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Fast(f) if !f.output_map))
            .count();
        let convs = self.graph.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_))).count();
        (fast, nchw, convs)
    }

    /// The nodes that [`Executor::advance_all`] runs on all samples at once.
    #[cfg(test)]
    pub(crate) fn batched_nodes(&self) -> usize {
        (0..self.steps.len()).filter(|&i| self.batched(i)).count()
    }

    /// The Conv steps that apply the activation after them.
    #[cfg(test)]
    pub(crate) fn fused_activations(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Conv(c) if c.act.is_some()))
            .count()
    }

    /// The values live in `s`, by value id, NCHW (maps unpadded) with their shapes.
    #[cfg(test)]
    pub(crate) fn live_nchw(&self, s: &SampleValues) -> Vec<(Vec<f32>, Vec<usize>)> {
        let mut out = Vec::new();
        for (v, data) in s.vals.iter().enumerate() {
            let Some(data) = data else { continue };
            let shape = self.graph.values[v].shape.clone();
            let values = match self.maps[v] {
                None => data.to_vec(),
                Some(m) => {
                    let mut nchw = vec![0.0; m.c * m.h * m.w];
                    for y in 0..m.h {
                        for x in 0..m.w {
                            for c in 0..m.c {
                                nchw[(c * m.h + y) * m.w + x] = data[((y + 1) * (m.w + 2) + x + 1) * m.c + c];
                            }
                        }
                    }
                    nchw
                }
            };
            out.push((values, shape));
        }
        out
    }

    /// A fast chain on one sample: its result as a padded map.
    fn run_fast(
        &self,
        f: &FastConv,
        x: ValueId,
        vals: &[Option<Arc<Vec<f32>>>],
        quant: Option<(Option<&[f32]>, Option<&ActQuantizer>)>,
    ) -> Vec<f32> {
        let get = |v: ValueId| -> &[f32] { vals[v].as_deref().expect("inputs are computed before their readers") };
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch {
                input,
                residual,
                quantized,
            } = scratch;
            let shape = &f.shape;
            let mut src: &[f32] = match self.maps[x] {
                Some(_) => get(x),
                None => {
                    let buf = sized(input, shape.input.padded_len());
                    kernels::image_to_map(get(x), shape.input, buf);
                    buf
                }
            };
            if let Some(q) = quant.and_then(|(_, q)| q) {
                let buf = sized(quantized, shape.input.padded_len());
                quantize_map(q, src, shape.input, buf);
                src = buf;
            }
            let res: Option<&[f32]> = f.residual.map(|r| match self.maps[r] {
                Some(_) => get(r),
                None => {
                    let buf = sized(residual, shape.output.padded_len());
                    kernels::image_to_map(get(r), shape.output, buf);
                    &*buf
                }
            });
            let weights = quant.and_then(|(w, _)| w).unwrap_or(&f.packed);
            let epi = Epilogue {
                scale: &f.scale,
                bias: &f.bias,
                residual: res,
                relu: f.relu,
            };
            // `conv_image` writes every element: a recycled buffer needs no clearing.
            let mut y = reuse(shape.output.padded_len());
            kernels::conv_image(self.isa, shape, src, weights, &epi, &mut y);
            if f.output_map {
                return y;
            }
            let o = shape.output;
            let mut image = reuse(o.c * o.h * o.w);
            kernels::map_to_image(&y, o, &mut image);
            recycle(y);
            image
        })
    }

    /// Gemm node `i` on the rows `x` (of one sample or several, `[rows, K]`), with `weights`
    /// in place of its own when given: each output `alpha·(Σ x·B') + C` (`kernels::dense_rows`
    /// for the sum), the same bits for a row whatever the other rows.
    fn gemm(&self, i: usize, x: &[f32], weights: Option<&[f32]>) -> Vec<f32> {
        let Step::Gemm { w, k, n, c, alpha } = &self.steps[i] else {
            unreachable!("node {i} is a Gemm")
        };
        let rows = x.len() / k;
        let mut y = vec![0.0; rows * n];
        kernels::dense_rows(self.isa, (rows, *n, *k), x, weights.unwrap_or(w), &mut y);
        for out in y.chunks_exact_mut(*n) {
            for (j, v) in out.iter_mut().enumerate() {
                // alpha = 1, beta = 1: `acc + bias`, the engine's `linear`.
                let acc = if *alpha == 1.0 { *v } else { *alpha * *v };
                *v = match c {
                    Some(c) => acc + c[j],
                    None => acc,
                };
            }
        }
        y
    }

    /// The node that [`Executor::advance_all`] runs once for all its samples: the last node,
    /// when it is a Gemm (a classifier head) whose output is the graph's only output and whose
    /// input is an NCHW runtime value. Per sample, its weights are most of what it reads
    /// (1280 × 1000 floats for MobileNetV2's, for 1.3 M multiply-adds); together the samples'
    /// rows read them once per thread's group.
    fn batched_head(&self) -> Option<usize> {
        let g = &*self.graph;
        let i = g.nodes.len().checked_sub(1)?;
        let node = &g.nodes[i];
        let x = node.inputs[0];
        (matches!(self.steps[i], Step::Gemm { .. })
            && g.outputs[..] == node.outputs[..]
            && g.values[x].constant.is_none()
            && self.maps[x].is_none())
        .then_some(i)
    }

    /// Element-wise nodes, on their first input's buffer (see `in_place`).
    fn run_in_place(&self, i: usize, mut x: Vec<f32>, vals: &[Option<Arc<Vec<f32>>>]) -> Vec<f32> {
        let g = &*self.graph;
        let node = &g.nodes[i];
        match (&self.steps[i], &node.op) {
            (Step::BatchNorm { scale, shift }, _) => ops::channel_affine(&mut x, scale.len(), scale, shift),
            (_, Op::Unary(u)) => ops::unary(*u, &mut x),
            (_, Op::Reshape { .. }) => {}
            (_, Op::Softmax { axis, flatten }) => {
                ops::softmax(&mut x, &g.values[node.inputs[0]].shape, *axis, *flatten)
            }
            (_, Op::Binary(b)) => {
                let v = node.inputs[1];
                let y = match &g.values[v].constant {
                    Some(t) => t.as_f32().expect("float constant"),
                    None => vals[v]
                        .as_deref()
                        .map(Vec::as_slice)
                        .expect("inputs are computed before their readers"),
                };
                ops::binary_in_place(*b, &mut x, y);
            }
            _ => unreachable!("only element-wise nodes run in place"),
        }
        x
    }

    fn run_node(
        &self,
        i: usize,
        vals: &[Option<Arc<Vec<f32>>>],
        quant: Option<(Option<&[f32]>, Option<&ActQuantizer>)>,
    ) -> Vec<Vec<f32>> {
        let g = &*self.graph;
        let node = &g.nodes[i];
        let stored = |v: ValueId| -> &[f32] {
            match &g.values[v].constant {
                Some(t) => t.as_f32().expect("float constant"),
                None => vals[v]
                    .as_deref()
                    .map(Vec::as_slice)
                    .expect("inputs are computed before their readers"),
            }
        };
        // Inputs stored as maps, back in NCHW for this node (a global pool takes the map).
        let nchw: Vec<Option<Vec<f32>>> = node
            .inputs
            .iter()
            .enumerate()
            .map(|(k, &v)| match self.maps[v] {
                Some(m) if !pools_maps(&node.op, k, &g.values[v].shape) => {
                    let mut image = vec![0.0; m.c * m.h * m.w];
                    kernels::map_to_image(stored(v), m, &mut image);
                    Some(image)
                }
                _ => None,
            })
            .collect();
        let raw = |k: usize| -> &[f32] { nchw[k].as_deref().unwrap_or_else(|| stored(node.inputs[k])) };
        // A quantized layer's input: a quantized copy, seen by this node only.
        let quantized_input: Option<Vec<f32>> = quant.and_then(|(_, q)| q).map(|q| {
            let mut x = raw(0).to_vec();
            q.quantize_in_place(&mut x);
            x
        });
        let weights = quant.and_then(|(w, _)| w);
        let input = |k: usize| -> &[f32] {
            match (k, &quantized_input) {
                (0, Some(x)) => x,
                _ => raw(k),
            }
        };
        let shape = |k: usize| g.values[node.inputs[k]].shape.as_slice();
        let out_shape = |k: usize| g.values[node.outputs[k]].shape.as_slice();
        match (&self.steps[i], &node.op) {
            (Step::Conv(c), _) => vec![conv(self.isa, input(0), c, weights.unwrap_or(&c.weight))],
            (Step::Gemm { .. }, _) => vec![self.gemm(i, input(0), weights)],
            (Step::MatMul { b, k, n }, _) => {
                let rows = input(0).len() / k;
                let mut y = vec![0.0; rows * n];
                matmul(
                    (rows, *n, *k),
                    &mut y,
                    false,
                    input(0),
                    (*k, 1),
                    weights.unwrap_or(b),
                    (*n, 1),
                    1.0,
                );
                vec![y]
            }
            (Step::BatchNorm { scale, shift }, _) => {
                let mut y = copied(input(0));
                ops::channel_affine(&mut y, scale.len(), scale, shift);
                vec![y]
            }
            (Step::Fast(_) | Step::Fused | Step::Silu { .. }, _) => unreachable!("fused steps run in `advance`"),
            (Step::Other, op) => match op {
                Op::Unary(u) => {
                    let mut y = copied(input(0));
                    ops::unary(*u, &mut y);
                    vec![y]
                }
                Op::Binary(b) => vec![ops::binary_f32(
                    *b,
                    input(0),
                    shape(0),
                    input(1),
                    shape(1),
                    out_shape(0),
                )],
                Op::MaxPool(p) => vec![ops::max_pool(input(0), shape(0), p, out_shape(0))],
                Op::AveragePool(p) => vec![ops::average_pool(input(0), shape(0), p, out_shape(0))],
                Op::GlobalAveragePool | Op::ReduceMean { .. } if self.maps[node.inputs[0]].is_some() => {
                    let m = self.maps[node.inputs[0]].expect("a map");
                    let mut y = vec![0.0; m.c];
                    kernels::average_pool(input(0), m, &mut y);
                    vec![y]
                }
                Op::GlobalAveragePool => {
                    let s = shape(0);
                    vec![ops::reduce_mean(input(0), s, &(2..s.len()).collect::<Vec<_>>())]
                }
                Op::ReduceMean { axes, .. } => vec![ops::reduce_mean(input(0), shape(0), axes)],
                Op::Reshape { .. } => vec![copied(input(0))],
                Op::Transpose { perm } => vec![ops::transpose(input(0), shape(0), perm)],
                Op::Concat { axis } => {
                    let parts: Vec<(&[f32], &[usize])> = (0..node.inputs.len()).map(|k| (input(k), shape(k))).collect();
                    vec![ops::concat(&parts, *axis)]
                }
                Op::Split { axis, sizes } => ops::split(input(0), shape(0), *axis, sizes),
                Op::Slice { axes } => vec![ops::slice(input(0), shape(0), axes)],
                Op::Softmax { axis, flatten } => {
                    let mut y = copied(input(0));
                    ops::softmax(&mut y, shape(0), *axis, *flatten);
                    vec![y]
                }
                Op::Conv(_) | Op::Gemm(_) | Op::MatMul | Op::BatchNorm { .. } => unreachable!("prepared steps"),
            },
        }
    }
}

/// Turns `Sigmoid(x)` followed by `Mul(x, ·)` of its result, its only reader, into
/// [`Step::Silu`] and [`Step::Fused`].
fn fuse_silu(graph: &Graph, steps: &mut [Step]) {
    let nodes = &graph.nodes;
    for i in 0..nodes.len().saturating_sub(1) {
        let (sig, mul) = (&nodes[i], &nodes[i + 1]);
        let s = sig.outputs[0];
        let x = sig.inputs[0];
        let pair = matches!(sig.op, Op::Unary(Unary::Sigmoid))
            && mul.op == Op::Binary(ops::Binary::Mul)
            && (mul.inputs[..] == [x, s] || mul.inputs[..] == [s, x])
            && graph.values[x].constant.is_none()
            && !graph.outputs.contains(&s)
            && nodes.iter().filter(|n| n.inputs.contains(&s)).count() == 1
            && matches!(steps[i], Step::Other)
            && matches!(steps[i + 1], Step::Other);
        if pair {
            steps[i] = Step::Silu { output: mul.outputs[0] };
            steps[i + 1] = Step::Fused;
        }
    }
}

/// Gives a [`Step::Conv`] the activation right after it when the Conv's result has no other
/// reader: a unary node, or a [`Step::Silu`] pair of that result. The activation's steps
/// become [`Step::Fused`].
fn fuse_activations(graph: &Graph, steps: &mut [Step]) {
    let nodes = &graph.nodes;
    for i in 0..nodes.len().saturating_sub(1) {
        let y = nodes[i].outputs[0];
        let next = &nodes[i + 1];
        if !matches!(steps[i], Step::Conv(_)) || graph.outputs.contains(&y) || next.inputs[0] != y {
            continue;
        }
        let readers: Vec<usize> = (0..nodes.len()).filter(|&j| nodes[j].inputs.contains(&y)).collect();
        let fused = match (&steps[i + 1], &next.op) {
            (Step::Other, Op::Unary(u)) if readers == [i + 1] => Some((Activation::Unary(*u), next.outputs[0], 1)),
            // `fuse_silu` checked that the Mul after the Sigmoid reads `y` and the Sigmoid.
            (Step::Silu { output }, _) if readers == [i + 1, i + 2] => Some((Activation::Silu, *output, 2)),
            _ => None,
        };
        if let (Some((act, output, n)), Step::Conv(c)) = (fused, &mut steps[i]) {
            c.act = Some((act, output));
            for step in &mut steps[i + 1..=i + n] {
                *step = Step::Fused;
            }
        }
    }
}

/// Finds the chains the engine's kernels run (see the module docs), turns their steps into
/// [`Step::Fast`] and [`Step::Fused`], and returns which values are stored as maps. Nodes are
/// visited last to first, so that whether a chain's readers take maps is known when the chain
/// is decided.
fn fuse_fast_convs(
    graph: &Graph,
    steps: &mut [Step],
    constant: &dyn Fn(ValueId) -> Result<Vec<f32>>,
) -> Result<Vec<Option<MapShape>>> {
    let nodes = &graph.nodes;
    let mut readers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); graph.values.len()];
    for (i, node) in nodes.iter().enumerate() {
        for (k, &v) in node.inputs.iter().enumerate() {
            readers[v].push((i, k));
        }
    }
    let only_reader =
        |v: ValueId, j: usize| readers[v].len() == 1 && readers[v][0].0 == j && !graph.outputs.contains(&v);
    let same_shape = |a: ValueId, b: ValueId| graph.values[a].shape == graph.values[b].shape;
    let mut maps = vec![None; graph.values.len()];
    let mut fast_start = vec![false; nodes.len()];
    let mut fused_residual: Vec<Option<ValueId>> = vec![None; nodes.len()];
    for i in (0..nodes.len()).rev() {
        let node = &nodes[i];
        let Op::Conv(attrs) = &node.op else { continue };
        let Some(shape) = fast_shape(graph, node, attrs) else {
            continue;
        };
        let mut cur = node.outputs[0];
        let mut j = i + 1;
        let mut bn = None;
        if let Some(n) = nodes.get(j) {
            if let Op::BatchNorm { epsilon } = n.op {
                if n.inputs[0] == cur && only_reader(cur, j) {
                    bn = Some((j, epsilon));
                    cur = n.outputs[0];
                    j += 1;
                }
            }
        }
        let mut residual = None;
        if let Some(n) = nodes.get(j).filter(|n| n.op == Op::Binary(ops::Binary::Add)) {
            let other = match n.inputs[..] {
                [a, b] if a == cur => Some(b),
                [a, b] if b == cur => Some(a),
                _ => None,
            };
            if let Some(r) = other.filter(|&r| {
                r != cur
                    && graph.values[r].constant.is_none()
                    && same_shape(r, cur)
                    && same_shape(n.outputs[0], cur)
                    && only_reader(cur, j)
            }) {
                residual = Some((j, r));
                cur = n.outputs[0];
                j += 1;
            }
        }
        let mut relu = false;
        if let Some(n) = nodes.get(j) {
            if n.op == Op::Unary(Unary::Relu) && n.inputs[0] == cur && only_reader(cur, j) {
                relu = true;
                cur = n.outputs[0];
                j += 1;
            }
        }
        let takes_map = |&(r, k): &(usize, usize)| {
            (fast_start[r] && k == 0)
                || fused_residual[r] == Some(cur)
                || pools_maps(&nodes[r].op, k, &graph.values[cur].shape)
        };
        let output_map = !graph.outputs.contains(&cur) && readers[cur].iter().any(takes_map);
        // Winograd beats the general kernels on any 3×3 layer; the direct kernels only where
        // no conversion back to NCHW follows (MobileNetV2's pointwise layers, read by
        // depthwise ones, ran at 0.3× of `gemm`'s speed with it).
        let direct_pays = output_map && readers[cur].iter().all(takes_map);
        // (Winograd's SIMD tiles take 16 output channels at a time; others run lane by lane.)
        let winograd_pays = shape.winograd() && shape.output.c.is_multiple_of(16);
        if !winograd_pays && !direct_pays {
            continue;
        }
        let (m, c, k) = (shape.output.c, shape.input.c, shape.kernel);
        let weight = constant(node.inputs[1])?;
        let conv_bias = node.inputs.get(2).map(|&b| constant(b)).transpose()?;
        let (scale, bias) = match bn {
            Some((b, epsilon)) => {
                let [g, beta, mean, var] = [1, 2, 3, 4].map(|q| constant(nodes[b].inputs[q]));
                let (g, beta, mean, var) = (g?, beta?, mean?, var?);
                batch_norm_affine([&g, &beta, &mean, &var], epsilon, conv_bias.as_deref())
            }
            None => (vec![1.0; m], conv_bias.unwrap_or_else(|| vec![0.0; m])),
        };
        steps[i] = Step::Fast(Box::new(FastConv {
            shape,
            packed: kernels::pack_conv_weights(&weight, m, c, k, shape.stride),
            scale,
            bias,
            residual: residual.map(|(_, r)| r),
            relu,
            output: cur,
            output_map,
        }));
        for step in &mut steps[i + 1..j] {
            *step = Step::Fused;
        }
        if let Some((add, r)) = residual {
            fused_residual[add] = Some(r);
        }
        fast_start[i] = true;
        if output_map {
            maps[cur] = Some(shape.output);
        }
    }
    Ok(maps)
}

/// Buffers of one thread for the fast chains: converted inputs and residuals, quantized inputs.
#[derive(Default)]
struct Scratch {
    input: Vec<f32>,
    residual: Vec<f32>,
    quantized: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

thread_local! {
    /// Buffers of freed values, for the next fast chain's result (allocating and clearing
    /// them anew cost a tenth of a ResNet's time).
    static FREE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept per thread: enough that most results find one of their own length (a
/// network's blocks repeat a few sizes).
const FREE_BUFFERS: usize = 8;

/// `x` in a recycled buffer.
fn copied(x: &[f32]) -> Vec<f32> {
    let mut y = reuse(x.len());
    y.copy_from_slice(x);
    y
}

/// Keeps `buf` for [`reuse`]; when all places are taken, in place of the smallest buffer
/// if `buf` is larger.
fn recycle(buf: Vec<f32>) {
    FREE.with_borrow_mut(|free| {
        if free.len() < FREE_BUFFERS {
            free.push(buf);
        } else if let Some(i) = (0..free.len()).min_by_key(|&i| free[i].len()) {
            if free[i].len() < buf.len() {
                free[i] = buf;
            }
        }
    });
}

/// A buffer of `n` floats, recycled if one is large enough (its contents are left over from
/// its last use).
fn reuse(n: usize) -> Vec<f32> {
    let found = FREE.with_borrow_mut(|free| {
        // One of the same length first (growing a shorter one clears the new part), else
        // the shortest that holds `n`.
        let i = (free.iter().position(|b| b.len() == n)).or_else(|| {
            (0..free.len())
                .filter(|&i| free[i].capacity() >= n)
                .min_by_key(|&i| free[i].capacity())
        })?;
        Some(free.swap_remove(i))
    });
    let mut buf = found.unwrap_or_default();
    buf.resize(n, 0.0);
    buf
}

/// The first `n` floats of `v`, growing it if needed.
fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Fake-quantizes the pixels of a padded map into `dst`, keeping the border zero (so padding is
/// zero after quantization, as when PyTorch pads the quantized tensor).
fn quantize_map(q: &ActQuantizer, src: &[f32], shape: MapShape, dst: &mut [f32]) {
    kernels::zero_border(dst, shape);
    let row = (shape.w + 2) * shape.c;
    for y in 1..=shape.h {
        let range = y * row + shape.c..(y + 1) * row - shape.c;
        dst[range.clone()].copy_from_slice(&src[range.clone()]);
        q.quantize_in_place(&mut dst[range]);
    }
}

/// One sample's convolution (see the module docs for the three paths).
fn conv(isa: Isa, x: &[f32], c: &ConvStep, weight: &[f32]) -> Vec<f32> {
    let a = &c.attrs;
    let [cin, h, w] = c.input;
    let [m, oh, ow] = c.output;
    let g = a.groups;
    let (cin_g, m_g) = (cin / g, m / g);
    let [kh, kw] = a.kernel;
    let plane = oh * ow;
    // Every element is written (from the bias): a recycled buffer needs no clearing.
    let mut y = reuse(m * plane);
    if cin_g == 1 {
        depthwise(isa, x, c, weight, &mut y);
        return y;
    }
    let k = cin_g * kh * kw;
    let pointwise = kh == 1 && kw == 1 && a.strides == [1, 1] && a.pads == [0; 4];
    // The im2col matrix lives in a buffer kept per thread (im2col writes every element):
    // allocating it per call cost page faults and zeroing.
    let mut col = if pointwise {
        Vec::new()
    } else {
        COLUMNS.with(|c| c.take())
    };
    if !pointwise && col.len() < k * plane {
        col.resize(k * plane, 0.0);
    }
    // Planes narrower than a register (squeeze-and-excitation's 1×1 maps) go to `gemm`, whose
    // products of one column are vectorised along the rows.
    let narrow = plane < PRODUCT_MIN_PLANE;
    if narrow {
        for (oc, out) in y.chunks_exact_mut(plane).enumerate() {
            out.fill(c.bias[oc]);
        }
    }
    for grp in 0..g {
        let xg = &x[grp * cin_g * h * w..(grp + 1) * cin_g * h * w];
        let rhs: &[f32] = if pointwise {
            xg
        } else {
            im2col(xg, c, &mut col[..k * plane]);
            &col[..k * plane]
        };
        let wg = &weight[grp * m_g * k..(grp + 1) * m_g * k];
        let yg = &mut y[grp * m_g * plane..(grp + 1) * m_g * plane];
        if narrow {
            matmul((m_g, plane, k), yg, true, wg, (k, 1), rhs, (plane, 1), 1.0);
        } else {
            let bias = &c.bias[grp * m_g..(grp + 1) * m_g];
            let clip = c.act.and_then(|(act, _)| act.bounds());
            let mut done = |run: &mut [f32]| {
                if let (Some((act, _)), None) = (c.act, clip) {
                    act.apply(run);
                }
            };
            kernels::product(isa, (m_g, plane, k), wg, rhs, bias, clip, yg, &mut done);
        }
    }
    if !pointwise {
        COLUMNS.with(|c| c.replace(col));
    }
    if let (true, Some((act, _))) = (narrow, c.act) {
        act.apply(&mut y);
    }
    y
}

/// Output planes of at least this many pixels run on [`kernels::product`], smaller ones on
/// `gemm`.
const PRODUCT_MIN_PLANE: usize = 16;

/// The largest plane of a 1 × 1 Conv that [`Executor::advance_all`] runs on all samples at once.
const BATCHED_MAX_PLANE: usize = 64;

thread_local! {
    /// Scratch space of [`conv`]'s im2col matrices, one per thread.
    static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

ops::wide!(
    /// `col[(c·kh + ky)·kw + kx][oy·OW + ox] = x[c][oy·sh − pt + ky·dh][ox·sw − pl + kx·dw]`, 0
    /// in the padding.
    fn im2col = im2col_body(x: &[f32], c: &ConvStep, col: &mut [f32]));

#[inline(always)]
fn im2col_body(x: &[f32], c: &ConvStep, col: &mut [f32]) {
    let a = &c.attrs;
    let [_, h, w] = c.input;
    let [_, oh, ow] = c.output;
    let cin_g = c.input[0] / a.groups;
    let [kh, kw] = a.kernel;
    let [sh, sw] = a.strides;
    let [dh, dw] = a.dilations;
    let (pt, pl) = (a.pads[0], a.pads[1]);
    let plane = oh * ow;
    // Strided Convs read each channel's columns split by stride phase (phase `p` holds columns
    // p, p + sw, …; see `split_row`), so each row of the matrix is a contiguous copy.
    let wq = w.div_ceil(sw);
    // (Positions past a row's end in a phase are never read: a recycled buffer will do.)
    let mut phases = if sw > 1 { reuse(sw * h * wq) } else { Vec::new() };
    for ch in 0..cin_g {
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        if sw > 1 {
            for (iy, src) in xc.chunks_exact(w).enumerate() {
                ops::split_row(src, 0, sw, &mut phases, iy * wq, h * wq);
            }
        }
        for ky in 0..kh {
            let (y_lo, y_hi) = ops::valid_range(oh, sh, pt, ky * dh, h);
            for kx in 0..kw {
                let row = &mut col[((ch * kh + ky) * kw + kx) * plane..][..plane];
                let (x_lo, x_hi) = ops::valid_range(ow, sw, pl, kx * dw, w);
                for oy in 0..oh {
                    let r = &mut row[oy * ow..(oy + 1) * ow];
                    if oy < y_lo || oy >= y_hi {
                        r.fill(0.0);
                        continue;
                    }
                    let iy = oy * sh + ky * dh - pt;
                    let src = &xc[iy * w..(iy + 1) * w];
                    r[..x_lo].fill(0.0);
                    r[x_hi..].fill(0.0);
                    let x0 = x_lo * sw + kx * dw - pl;
                    if sw == 1 {
                        r[x_lo..x_hi].copy_from_slice(&src[x0..x0 + (x_hi - x_lo)]);
                    } else {
                        let at = (x0 % sw) * h * wq + iy * wq + x0 / sw;
                        r[x_lo..x_hi].copy_from_slice(&phases[at..at + (x_hi - x_lo)]);
                    }
                }
            }
        }
    }
    if sw > 1 {
        recycle(phases);
    }
}

/// Convolution with one input channel per group: each output is its bias plus the products of
/// its taps in (ky, kx) order, padding included, then `act`. Outputs at most
/// [`LANES_MAX_WIDTH`] wide run on [`depthwise_lanes`], wider ones plane by plane (the same
/// bits).
fn depthwise(isa: Isa, x: &[f32], c: &ConvStep, weight: &[f32], y: &mut [f32]) {
    if c.output[2] <= LANES_MAX_WIDTH {
        depthwise_lanes(isa, x, c, weight, y)
    } else {
        depthwise_planes(isa, x, c, weight, y)
    }
}

/// The widest depthwise output that [`depthwise_lanes`] takes: narrower planes spend most of
/// their time on per-plane work in `depthwise_planes` (7 × 7 and 14 × 14 MobileNetV2 layers
/// took 1.7 and 1.2 times as long there), wider ones are as fast there (28 × 28).
const LANES_MAX_WIDTH: usize = 16;

ops::wide!(
    /// [`depthwise`] one plane at a time (`act` applied to each plane while it is in cache).
    fn depthwise_planes = depthwise_planes_body(isa: Isa, x: &[f32], c: &ConvStep, weight: &[f32], y: &mut [f32]));

#[inline(always)]
fn depthwise_planes_body(isa: Isa, x: &[f32], c: &ConvStep, weight: &[f32], y: &mut [f32]) {
    let a = &c.attrs;
    let [_, h, w] = c.input;
    let [m, oh, ow] = c.output;
    let per_group = m / a.groups;
    let [kh, kw] = a.kernel;
    let [sh, sw] = a.strides;
    let [dh, dw] = a.dilations;
    let [pt, pl, pb, pr] = a.pads;
    // Each input plane is copied into a zero-padded one, so every tap of every output exists:
    // an output is its bias plus all `kh·kw` products in (ky, kx) order, padding included. The
    // padded plane is stored as `sh × sw` phase planes (phase (py, px) holds the padded rows
    // py, py + sh, … and columns px, px + sw, …, each `hq × wq`), so that a tap reads
    // consecutive positions of one phase plane for consecutive outputs whatever the stride:
    // output (oy, ox), tap (ky, kx) reads phase ((ky·dh) mod sh, (kx·dw) mod sw) at row
    // oy + ⌊ky·dh / sh⌋, column ox + ⌊kx·dw / sw⌋. A tail of zeros follows, which the flat
    // path's discarded outputs may read.
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
    let phase = |py: usize, px: usize| (py * sw + px) * hq * wq;
    let tail = (kw - 1) * dw + 32;
    let offsets: Vec<usize> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| phase(ky * dh % sh, kx * dw % sw) + ky * dh / sh * wq + kx * dw / sw))
        .collect();
    let mut taps: Vec<(usize, f32)> = Vec::with_capacity(kh * kw);
    let mut padded = PADDED.with(|p| p.take());
    padded.clear();
    padded.resize(sh * sw * hq * wq + tail, 0.0);
    // Outputs 17 to 127 wide run along whole phase-plane rows (`oh × wq` outputs, the last
    // `wq − ow` of each row discarded): one long run per plane in blocks of four registers
    // instead of short rows. Narrower ones go row by row, several rows at once.
    let flat_path = ow > 16 && ow < 128;
    let clip = c.act.and_then(|(act, _)| act.bounds());
    let mut flat = if flat_path { vec![0.0f32; oh * wq] } else { Vec::new() };
    for oc in 0..m {
        let xc = &x[(oc / per_group) * h * w..][..h * w];
        for (row, src) in xc.chunks_exact(w).enumerate() {
            let (py, r) = ((row + pt) % sh, (row + pt) / sh);
            ops::split_row(src, pl, sw, &mut padded[phase(py, 0)..], r * wq, hq * wq);
        }
        taps.clear();
        taps.extend(
            offsets
                .iter()
                .copied()
                .zip(weight[oc * kh * kw..(oc + 1) * kh * kw].iter().copied()),
        );
        let bias = c.bias[oc];
        let yc = &mut y[oc * oh * ow..(oc + 1) * oh * ow];
        if flat_path {
            kernels::depthwise_plane(isa, &padded, &taps, bias, (1, oh * wq, 0), clip, &mut flat);
            for (row, dst) in flat.chunks_exact(wq).zip(yc.chunks_exact_mut(ow)) {
                dst.copy_from_slice(&row[..ow]);
            }
        } else {
            kernels::depthwise_plane(isa, &padded, &taps, bias, (oh, ow, wq), clip, yc);
        }
        if let (Some((act, _)), None) = (c.act, clip) {
            act.apply(yc);
        }
    }
    PADDED.with(|p| p.replace(padded));
}

const LANES: usize = kernels::LANES;

ops::wide!(
    /// [`depthwise`] with `LANES` output channels side by side (channel `c0 + l` in lane `l`):
    /// the planes are interleaved into one zero-padded plane of `LANES`-wide pixels, and each
    /// output pixel of the block is then one register's sum. The same arithmetic per output
    /// as `depthwise_planes`: its bias, then each tap's product (padding included) in (ky, kx)
    /// order, a multiplication then an addition (lanes are independent). The per-plane work
    /// (padding, short rows, partial registers) is shared by `LANES` channels.
    fn depthwise_lanes = depthwise_lanes_body(isa: Isa, x: &[f32], c: &ConvStep, weight: &[f32], y: &mut [f32]));

#[inline(always)]
fn depthwise_lanes_body(isa: Isa, x: &[f32], c: &ConvStep, weight: &[f32], y: &mut [f32]) {
    type Px = [f32; LANES];
    let a = &c.attrs;
    let [_, h, w] = c.input;
    let [m, oh, ow] = c.output;
    let per_group = m / a.groups;
    let [kh, kw] = a.kernel;
    let [sh, sw] = a.strides;
    let [dh, dw] = a.dilations;
    let [pt, pl, pb, pr] = a.pads;
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    let (plane, taps) = (oh * ow, kh * kw);
    let offsets: Vec<usize> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| ky * dh * wp + kx * dw))
        .collect();
    // Lanes past the last channel repeat it: computed, never stored.
    let mut xt: Vec<Px> = vec![[0.0; LANES]; hp * wp];
    let mut yt: Vec<Px> = vec![[0.0; LANES]; plane];
    let mut wt: Vec<Px> = vec![[0.0; LANES]; taps];
    let mut bias: Px = [0.0; LANES];
    let clip = c.act.and_then(|(act, _)| act.bounds());
    for c0 in (0..m).step_by(LANES) {
        let lanes = LANES.min(m - c0);
        let channel = |l: usize| c0 + l.min(lanes - 1);
        let planes: [&[f32]; LANES] = std::array::from_fn(|l| &x[(channel(l) / per_group) * h * w..][..h * w]);
        kernels::interleave8(isa, planes, (h * w, w, wp), xt[pt * wp + pl..].as_flattened_mut());
        for l in 0..LANES {
            let oc = channel(l);
            bias[l] = c.bias[oc];
            for (t, &v) in weight[oc * taps..(oc + 1) * taps].iter().enumerate() {
                wt[t][l] = v;
            }
        }
        kernels::lanes_plane(
            isa,
            xt.as_flattened(),
            &offsets,
            wt.as_flattened(),
            &bias,
            (oh, ow, wp),
            [sh, sw],
            clip,
            yt.as_flattened_mut(),
        );
        if let (Some((act, _)), None) = (c.act, clip) {
            act.apply(yt.as_flattened_mut());
        }
        kernels::deinterleave8(isa, yt.as_flattened(), &mut y[c0 * plane..(c0 + lanes) * plane], plane);
    }
}

thread_local! {
    /// The depthwise kernel's padded plane, kept per thread.
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two depthwise paths give the same bits, on every instruction set: strides,
    /// dilations, asymmetric pads, two outputs per input channel, channel counts that are not
    /// a multiple of `LANES`, each activation the step applies.
    #[test]
    fn depthwise_lanes_are_the_planes_bit_for_bit() {
        let mut seed = 17u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        };
        const RELU6: Option<Activation> = Some(Activation::Unary(Unary::Clip { min: 0.0, max: 6.0 }));
        const RELU: Option<Activation> = Some(Activation::Unary(Unary::Relu));
        const SILU: Option<Activation> = Some(Activation::Silu);
        // (input channels, outputs per channel), kernel, strides, dilations, pads, (h, w), act
        type Case = (
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 4],
            [usize; 2],
            Option<Activation>,
        );
        let cases: [Case; 7] = [
            ([16, 1], [3, 3], [1, 1], [1, 1], [1; 4], [7, 7], RELU6),
            ([13, 1], [5, 5], [1, 1], [1, 1], [2; 4], [14, 14], SILU),
            ([9, 2], [3, 3], [2, 2], [1, 1], [0, 1, 1, 0], [15, 13], RELU),
            ([3, 1], [3, 2], [3, 3], [2, 2], [2, 2, 1, 2], [10, 11], None),
            ([24, 1], [3, 3], [2, 1], [1, 2], [1, 2, 0, 3], [9, 12], SILU),
            ([8, 1], [1, 1], [1, 1], [1, 1], [0; 4], [3, 16], None),
            ([5, 3], [3, 3], [1, 1], [1, 1], [1; 4], [1, 1], None),
        ];
        for ([cin, mult], kernel, strides, dilations, pads, [h, w], act) in cases {
            let m = cin * mult;
            let out =
                |i: usize| ([h, w][i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1) / strides[i] + 1;
            let (oh, ow) = (out(0), out(1));
            assert!(ow <= LANES_MAX_WIDTH);
            let step = ConvStep {
                attrs: ConvAttrs {
                    kernel,
                    strides,
                    dilations,
                    pads,
                    groups: cin,
                },
                weight: (0..m * kernel[0] * kernel[1]).map(|_| rnd()).collect(),
                bias: (0..m).map(|_| rnd()).collect(),
                input: [cin, h, w],
                output: [m, oh, ow],
                act: act.map(|a| (a, 0)),
            };
            let x: Vec<f32> = (0..cin * h * w).map(|_| 4.0 * rnd()).collect();
            let mut want = vec![f32::NAN; m * oh * ow];
            depthwise_planes(Isa::detect(), &x, &step, &step.weight, &mut want);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; m * oh * ow];
                depthwise_lanes(isa, &x, &step, &step.weight, &mut got);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{isa:?} {cin}×{mult} {kernel:?} {strides:?} {h}×{w}"
                );
            }
        }
    }
}
