//! The general executor of a [`Graph`]: FP32, NCHW, one sample at a time.
//!
//! [`Executor::new`] prepares one [`Step`] per node (weights of a Conv split per group,
//! BatchNorm's scale and shift, …); [`Executor::run`] runs the steps in the graph's order on
//! each sample of a batch, the samples spread over the rayon pool. A sample's values live in a
//! table indexed by value id and are freed after their last reader ([`Graph::last_uses`]).
//!
//! Convolutions: depthwise ones (one input channel per group) run as a direct loop over the
//! taps; 1×1 stride-1 unpadded ones as one matrix product of the weight `[M, C]` and the input
//! `[C, H·W]`; the others as im2col and a matrix product per group. Matrix products are the
//! `gemm` crate's, single-threaded (parallelism is over samples).
//!
//! **Determinism.** A sample's result depends only on that sample: the same steps run on it
//! in the same order whatever the batch, its position in it or the thread count, and no step
//! reads another sample. So results are bitwise independent of batch split and thread count.
//!
//! **Quantization.** [`Executor::run_quantized`] takes a [`LayerQuant`] per quantizable layer:
//! fake-quantized weights (made by [`Executor::quantized_weights`] with `clado::quant`'s
//! per-output-channel quantizer, in the file's layout) replace the layer's weight, and an
//! activation quantizer acts on a copy of the layer's input only (other readers of the same
//! tensor see it unquantized).
//!
//! Where the ResNet engine's kernels (`engine::kernels`: Winograd and direct 3×3/1×1 convs in
//! padded NHWC with fused BN, residual add and ReLU) fit a node's shapes, they become one more
//! kind of [`Step`]; see `Step`'s docs.

use super::ops::{self, ConvAttrs, Op};
use super::{Graph, ValueId};
use crate::matmul::matmul;
use crate::quant::{self, ActQuantizer};
use crate::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// How one quantizable layer runs: FP (the default), with fake-quantized weights, with a
/// quantized input, or both.
#[derive(Clone, Debug, Default)]
pub struct LayerQuant {
    /// The layer's weight after fake quantization, in the file's layout.
    pub weights: Option<Arc<Vec<f32>>>,
    /// The quantizer of the layer's input activation.
    pub input: Option<ActQuantizer>,
}

/// A node prepared for running. The variants are the plug-in point for faster kernels: a
/// step that runs a chain of nodes (Conv + BN + Add + Relu) in another layout would carry its
/// packed weights here and convert at its boundaries.
enum Step {
    Conv(ConvStep),
    /// `Y = alpha·A·B' + beta·C`: `b` as `[K, N]` strides, `c` broadcast to `[N]`.
    Gemm {
        b: Vec<f32>,
        k: usize,
        n: usize,
        b_strides: (usize, usize),
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
}

/// What a run needs of a quantization plan: for each quantizable layer (by index in
/// [`Graph::layers`]), the weights to use instead of the FP ones (in the file's layout) and the
/// quantizer of its input. `[LayerQuant]` is one; the engine's `Plan` is another.
pub trait QuantPlan: Sync {
    fn weights(&self, layer: usize) -> Option<&[f32]>;
    fn input(&self, layer: usize) -> Option<&ActQuantizer>;
}

impl QuantPlan for [LayerQuant] {
    fn weights(&self, layer: usize) -> Option<&[f32]> {
        self.get(layer).and_then(|q| q.weights.as_deref()).map(Vec::as_slice)
    }
    fn input(&self, layer: usize) -> Option<&ActQuantizer> {
        self.get(layer).and_then(|q| q.input.as_ref())
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

    /// Value `v`, if it is live.
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
                    let b_strides = if g.trans_b { (1, k) } else { (n, 1) };
                    Step::Gemm {
                        b: constant(node.inputs[1])?,
                        k,
                        n,
                        b_strides,
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
                    let scale: Vec<f32> = s.iter().zip(&var).map(|(s, v)| s / (v + epsilon).sqrt()).collect();
                    let shift = b.iter().zip(&mean).zip(&scale).map(|((b, m), sc)| b - m * sc).collect();
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
        let in_place = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let x = node.inputs[0];
                let elementwise = match &node.op {
                    Op::Unary(_) | Op::BatchNorm { .. } | Op::Reshape { .. } | Op::Softmax { .. } => true,
                    // The second operand the same shape (a residual add) or a scalar.
                    Op::Binary(_) => {
                        let b = &graph.values[node.inputs[1]].shape;
                        graph.values[node.outputs[0]].shape == graph.values[x].shape
                            && (*b == graph.values[x].shape || b.iter().product::<usize>() == 1)
                    }
                    _ => false,
                };
                elementwise
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
        })
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
        for (l, q) in plan.iter().enumerate() {
            if let Some(w) = &q.weights {
                if w.len() != self.graph.layers[l].params {
                    return Err(Error::other(format!(
                        "layer {:?}: {} weights given, {} expected",
                        self.graph.layers[l].name,
                        w.len(),
                        self.graph.layers[l].params
                    )));
                }
            }
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
        let samples: Vec<Vec<Vec<f32>>> = if parallel {
            input.par_chunks(per.max(1)).map(|x| self.run_sample(x, plan)).collect()
        } else {
            input.chunks(per.max(1)).map(|x| self.run_sample(x, plan)).collect()
        };
        let mut outs: Vec<Vec<f32>> = self
            .graph
            .outputs
            .iter()
            .map(|&o| Vec::with_capacity(batch * self.graph.values[o].shape.iter().product::<usize>()))
            .collect();
        for sample in samples {
            for (out, part) in outs.iter_mut().zip(sample) {
                out.extend_from_slice(&part);
            }
        }
        Ok(outs)
    }

    /// One sample through every node: the graph's outputs.
    fn run_sample(&self, x: &[f32], plan: &[LayerQuant]) -> Vec<Vec<f32>> {
        let mut s = self.start(x);
        self.advance(&mut s, self.graph.nodes.len(), plan);
        self.graph
            .outputs
            .iter()
            .map(|&o| s.get(o).expect("outputs are computed").to_vec())
            .collect()
    }

    /// The state of one sample before the first node: its input `x` (one sample of
    /// [`Graph::input_shape`]; the caller checks the length).
    pub fn start(&self, x: &[f32]) -> SampleValues {
        let mut vals = vec![None; self.graph.values.len()];
        vals[self.graph.input] = Some(Arc::new(x.to_vec()));
        SampleValues { vals, next: 0 }
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
            for (&o, v) in node.outputs.iter().zip(outs) {
                vals[o] = Some(Arc::new(v));
            }
            for &v in &self.last_uses[i] {
                vals[v] = None;
            }
        }
        s.next = to;
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
        // A quantized layer's input: a quantized copy, seen by this node only.
        let quantized_input: Option<Vec<f32>> = quant.and_then(|(_, q)| q).map(|q| {
            let mut x = vals[node.inputs[0]]
                .as_deref()
                .expect("a layer's input is computed")
                .clone();
            q.quantize_in_place(&mut x);
            x
        });
        let weights = quant.and_then(|(w, _)| w);
        let input = |k: usize| -> &[f32] {
            let v = node.inputs[k];
            if k == 0 {
                if let Some(x) = &quantized_input {
                    return x;
                }
            }
            match &g.values[v].constant {
                Some(t) => t.as_f32().expect("float constant"),
                None => vals[v]
                    .as_deref()
                    .map(Vec::as_slice)
                    .expect("inputs are computed before their readers"),
            }
        };
        let shape = |k: usize| g.values[node.inputs[k]].shape.as_slice();
        let out_shape = |k: usize| g.values[node.outputs[k]].shape.as_slice();
        match (&self.steps[i], &node.op) {
            (Step::Conv(c), _) => vec![conv(input(0), c, weights.unwrap_or(&c.weight))],
            (
                Step::Gemm {
                    b,
                    k,
                    n,
                    b_strides,
                    c,
                    alpha,
                },
                _,
            ) => {
                let rows = shape(0)[0];
                let mut y = match c {
                    Some(c) => c.repeat(rows),
                    None => vec![0.0; rows * n],
                };
                matmul(
                    (rows, *n, *k),
                    &mut y,
                    c.is_some(),
                    input(0),
                    (*k, 1),
                    weights.unwrap_or(b),
                    *b_strides,
                    *alpha,
                );
                vec![y]
            }
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
                let mut y = input(0).to_vec();
                ops::channel_affine(&mut y, scale.len(), scale, shift);
                vec![y]
            }
            (Step::Other, op) => match op {
                Op::Unary(u) => {
                    let mut y = input(0).to_vec();
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
                Op::MaxPool(p) => vec![ops::pool(input(0), shape(0), p, out_shape(0), true)],
                Op::AveragePool(p) => vec![ops::pool(input(0), shape(0), p, out_shape(0), false)],
                Op::GlobalAveragePool => {
                    let s = shape(0);
                    vec![ops::reduce_mean(input(0), s, &(2..s.len()).collect::<Vec<_>>())]
                }
                Op::ReduceMean { axes, .. } => vec![ops::reduce_mean(input(0), shape(0), axes)],
                Op::Reshape { .. } => vec![input(0).to_vec()],
                Op::Transpose { perm } => vec![ops::transpose(input(0), shape(0), perm)],
                Op::Concat { axis } => {
                    let parts: Vec<(&[f32], &[usize])> = (0..node.inputs.len()).map(|k| (input(k), shape(k))).collect();
                    vec![ops::concat(&parts, *axis)]
                }
                Op::Split { axis, sizes } => ops::split(input(0), shape(0), *axis, sizes),
                Op::Slice { axes } => vec![ops::slice(input(0), shape(0), axes)],
                Op::Softmax { axis, flatten } => {
                    let mut y = input(0).to_vec();
                    ops::softmax(&mut y, shape(0), *axis, *flatten);
                    vec![y]
                }
                Op::Conv(_) | Op::Gemm(_) | Op::MatMul | Op::BatchNorm { .. } => unreachable!("prepared steps"),
            },
        }
    }
}

/// One sample's convolution (see the module docs for the three paths).
fn conv(x: &[f32], c: &ConvStep, weight: &[f32]) -> Vec<f32> {
    let a = &c.attrs;
    let [cin, h, w] = c.input;
    let [m, oh, ow] = c.output;
    let g = a.groups;
    let (cin_g, m_g) = (cin / g, m / g);
    let [kh, kw] = a.kernel;
    let plane = oh * ow;
    let mut y = vec![0.0f32; m * plane];
    for (oc, out) in y.chunks_exact_mut(plane).enumerate() {
        out.fill(c.bias[oc]);
    }
    if cin_g == 1 {
        depthwise(x, c, weight, &mut y);
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
        matmul((m_g, plane, k), yg, true, wg, (k, 1), rhs, (plane, 1), 1.0);
    }
    if !pointwise {
        COLUMNS.with(|c| c.replace(col));
    }
    y
}

thread_local! {
    /// Scratch space of [`conv`]'s im2col matrices, one per thread.
    static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Range of output positions `o` whose input position `o·stride − pad + tap` lies in `0..len`.
fn valid_range(out_len: usize, stride: usize, pad: usize, tap: usize, len: usize) -> (usize, usize) {
    // o·s + tap ≥ pad  and  o·s + tap < len + pad
    let lo = if tap >= pad { 0 } else { (pad - tap).div_ceil(stride) };
    let hi = if len + pad > tap {
        (len + pad - tap).div_ceil(stride).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// `col[(c·kh + ky)·kw + kx][oy·OW + ox] = x[c][oy·sh − pt + ky·dh][ox·sw − pl + kx·dw]`, 0 in
/// the padding.
fn im2col(x: &[f32], c: &ConvStep, col: &mut [f32]) {
    let a = &c.attrs;
    let [_, h, w] = c.input;
    let [_, oh, ow] = c.output;
    let cin_g = c.input[0] / a.groups;
    let [kh, kw] = a.kernel;
    let [sh, sw] = a.strides;
    let [dh, dw] = a.dilations;
    let (pt, pl) = (a.pads[0], a.pads[1]);
    let plane = oh * ow;
    for ch in 0..cin_g {
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        for ky in 0..kh {
            let (y_lo, y_hi) = valid_range(oh, sh, pt, ky * dh, h);
            for kx in 0..kw {
                let row = &mut col[((ch * kh + ky) * kw + kx) * plane..][..plane];
                let (x_lo, x_hi) = valid_range(ow, sw, pl, kx * dw, w);
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
                        for (j, v) in r[x_lo..x_hi].iter_mut().enumerate() {
                            *v = src[x0 + j * sw];
                        }
                    }
                }
            }
        }
    }
}

/// Convolution with one input channel per group: each output adds its taps in (ky, kx)
/// order to the bias already in `y`.
fn depthwise(x: &[f32], c: &ConvStep, weight: &[f32], y: &mut [f32]) {
    let a = &c.attrs;
    let [_, h, w] = c.input;
    let [m, oh, ow] = c.output;
    let per_group = m / a.groups;
    let [kh, kw] = a.kernel;
    let [sh, sw] = a.strides;
    let [dh, dw] = a.dilations;
    let (pt, pl) = (a.pads[0], a.pads[1]);
    for oc in 0..m {
        let xc = &x[(oc / per_group) * h * w..][..h * w];
        let wc = &weight[oc * kh * kw..(oc + 1) * kh * kw];
        let yc = &mut y[oc * oh * ow..(oc + 1) * oh * ow];
        for ky in 0..kh {
            let (y_lo, y_hi) = valid_range(oh, sh, pt, ky * dh, h);
            for kx in 0..kw {
                let wv = wc[ky * kw + kx];
                let (x_lo, x_hi) = valid_range(ow, sw, pl, kx * dw, w);
                if x_lo >= x_hi {
                    continue;
                }
                for oy in y_lo..y_hi {
                    let iy = oy * sh + ky * dh - pt;
                    let src = &xc[iy * w..(iy + 1) * w];
                    let dst = &mut yc[oy * ow..(oy + 1) * ow];
                    let x0 = x_lo * sw + kx * dw - pl;
                    if sw == 1 {
                        for (d, s) in dst[x_lo..x_hi].iter_mut().zip(&src[x0..]) {
                            *d += s * wv;
                        }
                    } else {
                        for (j, d) in dst[x_lo..x_hi].iter_mut().enumerate() {
                            *d += src[x0 + j * sw] * wv;
                        }
                    }
                }
            }
        }
    }
}
