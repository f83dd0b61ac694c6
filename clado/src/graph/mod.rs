//! Networks as graphs: tensors, nodes and one topological order, read from ONNX files
//! ([`Graph::from_onnx`]) and run by a general executor ([`Executor`], with the `nn` feature).
//!
//! # The object
//! A [`Graph`] has one input (an NCHW image batch), one or more outputs, constant tensors
//! (initializers and everything folded from them) and the nodes that must run at inference
//! time, in a topological order. Every value computed at run time carries the batch as its
//! dimension 0, and no node mixes samples: the shapes a graph stores are those of **one
//! sample** (dimension 0 equal to 1; shown as `N` in messages), and a batch is `N` independent
//! runs of the same node list. That is what makes each sample's result bitwise independent of
//! the batch it is in and of the thread count, and it lets a symbolic batch dimension resolve at
//! load: `Shape` of a runtime value is known once the batch is fixed at 1, so the
//! `Shape → Gather → Unsqueeze → Concat → Reshape` subgraphs of older exports fold to constants.
//! Nodes that act along dimension 0 (a `Transpose` moving it, a `Concat`, `Softmax` or
//! reduction over it, a `Reshape` that merges it) are refused at load.
//!
//! Nodes carry a typed [`Op`] whose attributes are resolved: a `Reshape`, `Flatten`, `Squeeze`,
//! `Unsqueeze`, `Identity` or `Dropout` becomes [`Op::Reshape`] (the output shape is known), a
//! `Clip`'s bounds and a `Slice`'s starts and ends are numbers in the op. The CIFAR ResNets
//! become the same object from their checkpoints (`resnet_onnx` writes the model that
//! [`Graph::from_onnx_bytes`] reads).
//!
//! # Quantizable layers
//! [`Graph::layers`]: every `Conv`, and every `Gemm`/`MatMul` whose weight is a constant, in
//! graph order, named after the PyTorch module when the file says it (initializer
//! `features.3.conv.1.weight` → `features.3.conv.1`), else after the node's module scope
//! (`pkg.torch.onnx.name_scopes`, or the older exporter's `/features/features.3/conv/Conv`
//! node names), else the node's name; with the weight's output channel dimension (Conv dim 0,
//! depthwise included; Gemm `transB=1` dim 0, `transB=0` dim 1; MatMul's constant `[in, out]`
//! dim 1), its parameter count and its MACs for one sample of the graph's input size.

mod onnx;
pub(crate) mod ops;
mod qdq;
#[cfg(feature = "nn")]
mod resnet;
mod tensor;

#[cfg(feature = "nn")]
mod exec;
#[cfg(all(test, feature = "nn"))]
pub(crate) mod tests;

#[cfg(feature = "nn")]
pub use exec::{Executor, LayerQuant, QuantPlan, SampleValues};
pub use ops::{Binary, ConvAttrs, GemmAttrs, Op, PoolAttrs, SliceAxis, Unary};
pub use qdq::{QdqInput, QdqLayer, QdqSummary, QdqWeight, INT4_OPSET, QDQ_MIN_OPSET};
#[cfg(feature = "nn")]
pub(crate) use resnet::resnet_onnx_at;
#[cfg(feature = "nn")]
pub use resnet::{resnet_onnx, RESNET_OPSET};
pub use tensor::{Data, Tensor};

use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Index of a value (a tensor name) of a [`Graph`].
pub type ValueId = usize;

/// Largest number of elements one tensor may have, for one sample or as a constant: 2^28
/// floats (1 GiB). Declared sizes beyond it are refused before anything is allocated.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

/// Largest number of elements of all constants of a model together: 2^30 (4 GiB of floats;
/// the largest torchvision classifiers have under 2^28 parameters).
pub const MAX_CONSTANT_ELEMENTS: usize = 1 << 30;

/// A named tensor of the graph: its per-sample shape and, for a constant, its data.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Shape for one sample (dimension 0 is the batch, 1) or of the constant.
    pub shape: Vec<usize>,
    pub constant: Option<Arc<Tensor>>,
}

/// One operation to run: a typed op, its inputs and outputs.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's name in the file (or made up from its op and position when it has none).
    pub name: String,
    /// The op type as the file spells it (`Conv`, `Flatten`, …), for messages.
    pub op_type: String,
    pub op: Op,
    /// The values the op reads: runtime values and the constants it needs (weights, biases).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// The PyTorch module the node came from, when the file says it (`layer1.0.conv1`).
    pub scope: Option<String>,
}

/// The kind of a quantizable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Conv,
    Gemm,
    MatMul,
}

impl LayerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerKind::Conv => "Conv",
            LayerKind::Gemm => "Gemm",
            LayerKind::MatMul => "MatMul",
        }
    }
}

/// A quantizable layer of a graph (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Index of its node in [`Graph::nodes`].
    pub node: usize,
    /// The constant weight value.
    pub weight: ValueId,
    /// Dimension of the weight that indexes output channels.
    pub channel_dim: usize,
    pub out_channels: usize,
    /// Weight elements (biases are not counted).
    pub params: usize,
    /// Multiply-accumulates for one sample at the graph's input size.
    pub macs: usize,
}

/// A network as a graph (see the module docs).
#[derive(Clone, Debug)]
pub struct Graph {
    pub(crate) values: Vec<Value>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) input: ValueId,
    pub(crate) outputs: Vec<ValueId>,
    pub(crate) layers: Vec<Layer>,
}

impl Graph {
    /// Reads an ONNX model file (and its external data files), folds its constant subgraphs and
    /// checks every node. Errors are one line naming the file and the node, op or field.
    pub fn from_onnx(path: impl AsRef<std::path::Path>) -> Result<Graph> {
        onnx::read(path.as_ref())
    }

    /// As [`Graph::from_onnx`] from the bytes of a model whose weights are all inside it (an
    /// external data reference is an error); `name` stands for the file in messages.
    pub fn from_onnx_bytes(bytes: &[u8], name: &str) -> Result<Graph> {
        onnx::read_bytes(bytes, name, None)
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The nodes that run, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn input(&self) -> ValueId {
        self.input
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// Shape of one input sample without the batch dimension, e.g. `[3, 224, 224]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.values[self.input].shape[1..]
    }

    /// Shape of one sample of output `i` without the batch dimension, e.g. `[1000]`.
    pub fn output_shape(&self, i: usize) -> &[usize] {
        &self.values[self.outputs[i]].shape[1..]
    }

    /// The quantizable layers, in graph order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The weight of a layer, `[out, in/groups, kh, kw]` for a Conv, as stored in the file.
    pub fn layer_weight(&self, layer: usize) -> &Tensor {
        self.values[self.layers[layer].weight]
            .constant
            .as_deref()
            .expect("a layer's weight is a constant")
    }

    /// A layer's weight with its output channel first, and the shape of that layout: the
    /// stored weight when the channel is dimension 0, the transposed 2-D matrix when it is
    /// dimension 1. Per-channel quantizers take this layout.
    pub fn layer_weight_by_channel(&self, layer: usize) -> (Vec<f32>, Vec<usize>) {
        let l = &self.layers[layer];
        let t = self.layer_weight(layer);
        let w = t.as_f32().expect("a layer's weight holds floats");
        if l.channel_dim == 0 {
            (w.to_vec(), t.shape.clone())
        } else {
            (ops::transpose(w, &t.shape, &[1, 0]), vec![t.shape[1], t.shape[0]])
        }
    }

    /// The value `id`'s constant data, if it is one.
    pub fn constant(&self, id: ValueId) -> Option<&Tensor> {
        self.values[id].constant.as_deref()
    }

    /// For each node, the runtime values whose last reader it is (freed after it runs); the
    /// graph's outputs are never freed.
    pub fn last_uses(&self) -> Vec<Vec<ValueId>> {
        let mut last: HashMap<ValueId, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if self.values[v].constant.is_none() {
                    last.insert(v, i);
                }
            }
        }
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (v, i) in last {
            if !self.outputs.contains(&v) {
                out[i].push(v);
            }
        }
        for list in &mut out {
            list.sort_unstable();
        }
        out
    }
}

/// Shape as messages show it: `[N, 64, 56, 56]` for a runtime value.
pub(crate) struct ShapeDisplay<'a>(pub &'a [usize], pub bool);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            if i == 0 && self.1 {
                write!(f, "N")?;
            } else {
                write!(f, "{d}")?;
            }
        }
        write!(f, "]")
    }
}

/// Builds a [`Graph`] node by node, checking each op against its inputs' shapes: the ONNX
/// reader's back end, and the way a checkpoint's network becomes a graph.
pub struct GraphBuilder {
    values: Vec<Value>,
    by_name: HashMap<String, ValueId>,
    nodes: Vec<Node>,
    input: ValueId,
}

impl GraphBuilder {
    /// A graph whose input takes samples of `shape` (without the batch dimension).
    pub fn new(input_name: &str, shape: &[usize]) -> Result<GraphBuilder> {
        let mut full = vec![1];
        full.extend_from_slice(shape);
        check_elements(&full).map_err(|e| Error::other(format!("input {input_name:?}: {e}")))?;
        let mut b = GraphBuilder {
            values: Vec::new(),
            by_name: HashMap::new(),
            nodes: Vec::new(),
            input: 0,
        };
        b.input = b.push_value(input_name, full, None);
        Ok(b)
    }

    fn push_value(&mut self, name: &str, shape: Vec<usize>, constant: Option<Arc<Tensor>>) -> ValueId {
        let id = self.values.len();
        self.values.push(Value {
            name: name.to_string(),
            shape,
            constant,
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Adds (or replaces) a constant under `name`.
    pub fn constant(&mut self, name: &str, tensor: Arc<Tensor>) -> ValueId {
        self.push_value(name, tensor.shape.clone(), Some(tensor))
    }

    /// The value called `name`, if any.
    pub fn value(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    pub fn shape(&self, id: ValueId) -> &[usize] {
        &self.values[id].shape
    }

    pub fn constant_of(&self, id: ValueId) -> Option<&Arc<Tensor>> {
        self.values[id].constant.as_ref()
    }

    /// Adds a node reading `inputs` (by name); its outputs get the shapes the op computes.
    /// Errors name the node and the op.
    pub fn node(
        &mut self,
        name: &str,
        op_type: &str,
        op: Op,
        inputs: &[ValueId],
        outputs: &[&str],
        scope: Option<String>,
    ) -> Result<Vec<ValueId>> {
        let where_ = || format!("node {name:?} ({op_type})");
        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.values[i].shape.as_slice()).collect();
        let consts: Vec<bool> = inputs.iter().map(|&i| self.values[i].constant.is_some()).collect();
        if consts.iter().all(|&c| c) {
            return Err(Error::other(format!(
                "{}: every input is a constant, nothing to run",
                where_()
            )));
        }
        let out_shapes = op
            .infer(&shapes, &consts, outputs.len())
            .map_err(|e| Error::other(format!("{}: {e}", where_())))?;
        let mut ids = Vec::with_capacity(outputs.len());
        for (out, shape) in outputs.iter().zip(out_shapes) {
            check_elements(&shape).map_err(|e| Error::other(format!("{}: output {out:?}: {e}", where_())))?;
            if shape.first() != Some(&1) {
                return Err(Error::other(format!(
                    "{}: output {out:?} would not keep the batch as its first dimension (one sample gives {}); \
                     nodes that mix samples are not supported",
                    where_(),
                    ShapeDisplay(&shape, false)
                )));
            }
            ids.push(self.push_value(out, shape, None));
        }
        self.nodes.push(Node {
            name: name.to_string(),
            op_type: op_type.to_string(),
            op,
            inputs: inputs.to_vec(),
            outputs: ids.clone(),
            scope,
        });
        Ok(ids)
    }

    /// The finished graph with `outputs` (by id), its quantizable layers named by `layer_name`
    /// (called with the node and its weight value; see the module docs for the ONNX rule).
    pub fn finish(self, outputs: Vec<ValueId>) -> Result<Graph> {
        for &o in &outputs {
            if self.values[o].constant.is_some() {
                return Err(Error::other(format!("output {:?} is a constant", self.values[o].name)));
            }
        }
        let mut graph = Graph {
            values: self.values,
            nodes: self.nodes,
            input: self.input,
            outputs,
            layers: Vec::new(),
        };
        graph.prune();
        graph.layers = find_layers(&graph);
        Ok(graph)
    }
}

impl Graph {
    /// Drops nodes whose outputs nobody reads (dead branches, unused outputs of folded
    /// subgraphs), keeping the order.
    fn prune(&mut self) {
        let mut needed = vec![false; self.values.len()];
        for &o in &self.outputs {
            needed[o] = true;
        }
        let mut keep = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|&o| needed[o]) {
                keep[i] = true;
                for &v in &node.inputs {
                    needed[v] = true;
                }
            }
        }
        let mut i = 0;
        self.nodes.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

fn find_layers(graph: &Graph) -> Vec<Layer> {
    let mut layers: Vec<Layer> = Vec::new();
    let mut used: HashMap<String, usize> = HashMap::new();
    for (index, node) in graph.nodes.iter().enumerate() {
        let shape_of = |v: ValueId| graph.values[v].shape.as_slice();
        let is_const = |v: ValueId| graph.values[v].constant.is_some();
        let (kind, weight, channel_dim) = match &node.op {
            Op::Conv(_) => (LayerKind::Conv, node.inputs[1], 0),
            Op::Gemm(g) if is_const(node.inputs[1]) => (LayerKind::Gemm, node.inputs[1], if g.trans_b { 0 } else { 1 }),
            Op::MatMul if is_const(node.inputs[1]) && shape_of(node.inputs[1]).len() == 2 => {
                (LayerKind::MatMul, node.inputs[1], 1)
            }
            _ => continue,
        };
        let wshape = shape_of(weight);
        let params: usize = wshape.iter().product();
        let out_elems: usize = shape_of(node.outputs[0]).iter().product();
        let macs = match kind {
            // Each output element takes in/groups·kh·kw products.
            LayerKind::Conv => out_elems * wshape[1..].iter().product::<usize>(),
            LayerKind::Gemm | LayerKind::MatMul => out_elems * (params / wshape[channel_dim]),
        };
        let base = module_name(&graph.values[weight].name)
            .or_else(|| node.scope.clone())
            .unwrap_or_else(|| node.name.clone());
        let count = used.entry(base.clone()).or_insert(0);
        *count += 1;
        let name = if *count == 1 { base } else { format!("{base}#{count}") };
        layers.push(Layer {
            name,
            kind,
            node: index,
            weight,
            channel_dim,
            out_channels: wshape[channel_dim],
            params,
            macs,
        });
    }
    layers
}

/// `features.3.conv.1.weight` → `features.3.conv.1`; names the exporter made up
/// (`onnx::Conv_123`, `val_5`, …) give nothing.
fn module_name(initializer: &str) -> Option<String> {
    // A weight of a QDQ file, folded from its DequantizeLinear: `quantize export`'s
    // `conv1.weight_dequantized`, onnxruntime's `conv1.weight_DequantizeLinear_Output`.
    let weight = ["_dequantized", "_DequantizeLinear_Output"]
        .iter()
        .find_map(|s| initializer.strip_suffix(s))
        .unwrap_or(initializer);
    let module = weight.strip_suffix(".weight")?;
    let valid = !module.is_empty()
        && module
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    valid.then(|| module.to_string())
}

/// Checks that a shape's element count is at most [`MAX_TENSOR_ELEMENTS`] without overflowing.
pub(crate) fn check_elements(shape: &[usize]) -> std::result::Result<usize, String> {
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| format!("shape {shape:?} exceeds the limit of {MAX_TENSOR_ELEMENTS} elements"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod name_tests {
    use super::module_name;

    #[test]
    fn module_names_come_from_weight_initializers() {
        assert_eq!(
            module_name("features.3.conv.1.weight").as_deref(),
            Some("features.3.conv.1")
        );
        assert_eq!(module_name("fc.weight").as_deref(), Some("fc"));
        assert_eq!(module_name("onnx::Conv_123"), None);
        assert_eq!(module_name("fc.bias"), None);
        assert_eq!(module_name("a..weight"), None);
        assert_eq!(module_name("conv1.weight_dequantized").as_deref(), Some("conv1"));
        assert_eq!(module_name("fc.weight_DequantizeLinear_Output").as_deref(), Some("fc"));
    }
}
