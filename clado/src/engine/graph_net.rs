//! How a [`Network`] runs its [`Graph`] (an ONNX file's, or a CIFAR ResNet's built from its
//! checkpoint) on the graph executor: layers, plans, resumable states and calibration.
//!
//! **Positions.** Position `i < L` is the point of the graph's topological order just before
//! the node of quantizable layer `i`; position `L` is the end (the logits). A state there holds,
//! for each sample, every runtime value still live at that point: skip branches, the inputs
//! of a later concatenation, a squeeze-and-excitation input, not only the layer's own input.
//! Running on from it is the same steps on the same values as a full pass, so resuming is
//! bitwise the full forward, and each sample's result depends on that sample only (see
//! [`crate::graph::Executor`]).
//!
//! **Weights.** [`Network::weights`] gives a layer's weight with its output channel first
//! (what the per-channel quantizers read, and PyTorch's layout for a Linear): the stored weight
//! for a Conv or a `transB` Gemm, the transposed matrix for a MatMul's `[in, out]` constant.
//! Prepared weights are in the executor's layout ([`Executor::prepare_weights`]).

use super::metrics::Logits;
use super::network::{Layer, LayerKind, Network};
use super::plan::Plan;
use super::Parallelism;
use crate::graph::{self, Executor, Graph, QuantPlan, SampleValues};
use crate::quant::ActQuantizer;
use crate::{Error, Result};
use rayon::prelude::*;

/// What a graph network keeps besides the common [`Network`] fields.
pub(crate) struct GraphNet {
    pub exec: Executor,
    /// `[C, H, W]` of one input sample.
    pub input: [usize; 3],
    /// Node index of each position `0..=L` (`L`: the number of nodes).
    pub position_nodes: Vec<usize>,
    /// For layers whose stored weight does not have the output channel first: the weight with it
    /// first (see the module docs).
    pub by_channel: Vec<Option<Vec<f32>>>,
    /// Floats live per sample at each position `0..=L`.
    pub floats: Vec<usize>,
}

impl QuantPlan for Plan {
    fn weights(&self, layer: usize) -> Option<&[f32]> {
        self.layer(layer).weights.as_deref().map(|w| w.packed.as_slice())
    }
    fn input(&self, layer: usize) -> Option<&ActQuantizer> {
        self.layer(layer).input.as_ref().map(|a| a.quantizer())
    }
}

impl Network {
    /// A network that runs `graph`, named `name` in messages (e.g. `m.onnx`). The graph must
    /// take one image batch `[N, C, H, W]` and give the logits `[N, K]` as its first output.
    pub fn from_graph(graph: &Graph, name: &str) -> Result<Network> {
        let input: [usize; 3] = graph.input_shape().try_into().map_err(|_| {
            Error::other(format!(
                "the graph's input has shape {:?} per sample; images [C, H, W] expected",
                graph.input_shape()
            ))
        })?;
        let classes = match graph.output_shape(0) {
            [k] if *k > 0 => *k,
            s => {
                return Err(Error::other(format!(
                    "the graph's first output has shape {s:?} per sample; logits [K] expected"
                )))
            }
        };
        if graph.layers().is_empty() {
            return Err(Error::other(
                "the graph has no quantizable layer (Conv, or Gemm/MatMul with a constant weight)",
            ));
        }
        let mut layers = Vec::with_capacity(graph.layers().len());
        let mut by_channel = Vec::with_capacity(graph.layers().len());
        let mut position_nodes = Vec::with_capacity(graph.layers().len() + 1);
        for (i, l) in graph.layers().iter().enumerate() {
            if position_nodes.last().is_some_and(|&n| n >= l.node) {
                return Err(Error::other(format!(
                    "layer {:?} does not follow the previous layer in the node order",
                    l.name
                )));
            }
            position_nodes.push(l.node);
            let (w, shape) = graph.layer_weight_by_channel(i);
            by_channel.push((l.channel_dim != 0).then_some(w));
            layers.push(Layer {
                name: l.name.clone(),
                kind: match l.kind {
                    graph::LayerKind::Conv => LayerKind::Conv,
                    graph::LayerKind::Gemm | graph::LayerKind::MatMul => LayerKind::Linear,
                },
                weight_shape: shape,
                params: l.params as u64,
                macs: l.macs as u64,
            });
        }
        position_nodes.push(graph.nodes().len());
        let exec = Executor::new(graph)?;
        let floats = live_floats(&exec, &position_nodes);
        Ok(Network::with_graph(
            name,
            input[0],
            classes,
            layers,
            GraphNet {
                exec,
                input,
                position_nodes,
                by_channel,
                floats,
            },
        ))
    }

    /// The layer's weight with its output channel first, for a graph network.
    pub(crate) fn graph_weights(&self, i: usize) -> &[f32] {
        let g = &self.graph;
        match &g.by_channel[i] {
            Some(w) => w,
            None => {
                let graph = g.exec.graph();
                graph.layer_weight(i).as_f32().expect("a layer's weight holds floats")
            }
        }
    }

    /// Each sample of `data` (N·C·H·W) advanced from the start to `position`.
    pub(crate) fn graph_start(
        &self,
        data: &[f32],
        position: usize,
        plan: &Plan,
        par: Parallelism,
    ) -> Vec<SampleValues> {
        let g = &self.graph;
        let per = g.input.iter().product::<usize>().max(1);
        let to = g.position_nodes[position];
        let parallel = matches!(par, Parallelism::Rayon);
        let mut states: Vec<SampleValues> = if parallel {
            data.par_chunks(per).map(|x| g.exec.start(x)).collect()
        } else {
            data.chunks(per).map(|x| g.exec.start(x)).collect()
        };
        g.exec.advance_all(&mut states, to, plan, parallel);
        states
    }

    /// The samples advanced to `position` (cloned: the given states are kept).
    pub(crate) fn graph_advance(
        &self,
        samples: &[SampleValues],
        position: usize,
        plan: &Plan,
        par: Parallelism,
    ) -> Vec<SampleValues> {
        let g = &self.graph;
        let to = g.position_nodes[position];
        let mut states = samples.to_vec();
        g.exec
            .advance_all(&mut states, to, plan, matches!(par, Parallelism::Rayon));
        states
    }

    /// The logits of samples that ran to the end.
    pub(crate) fn graph_logits(&self, samples: &[SampleValues]) -> Logits {
        let g = &self.graph;
        let out = g.exec.graph().outputs()[0];
        let mut data = Vec::with_capacity(samples.len() * self.classes());
        for s in samples {
            data.extend_from_slice(s.get(out).expect("outputs are computed"));
        }
        Logits::from_vec(data, samples.len(), self.classes())
    }

    /// The input values of layer `position` of every sample, concatenated.
    pub(crate) fn graph_layer_input(&self, samples: &[SampleValues], position: usize, out: &mut Vec<f32>) {
        for s in samples {
            self.graph.exec.layer_input(s, position, out);
        }
    }
}

/// Floats live per sample before each position's node, as stored: the input, and every value
/// computed before it that a later node reads or that is a graph output.
fn live_floats(exec: &Executor, position_nodes: &[usize]) -> Vec<usize> {
    let graph = exec.graph();
    let last_uses = graph.last_uses();
    let size = |v: usize| exec.stored_len(v);
    let mut live = size(graph.input());
    let mut out = Vec::with_capacity(position_nodes.len());
    let mut positions = position_nodes.iter().peekable();
    for (i, node) in graph.nodes().iter().enumerate() {
        while positions.next_if(|&&p| p == i).is_some() {
            out.push(live);
        }
        live += node.outputs.iter().map(|&o| size(o)).sum::<usize>();
        live -= last_uses[i].iter().map(|&v| size(v)).sum::<usize>();
    }
    while positions.next().is_some() {
        out.push(live);
    }
    out
}
