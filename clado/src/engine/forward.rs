//! Running the network: full, resumable and calibration forwards over a batch. A run takes
//! each image of the batch through the graph's nodes (see `graph_net`); images are
//! independent, so they are spread over threads with no effect on the result.

use super::metrics::Logits;
use super::network::Network;
use super::plan::Plan;
use crate::graph::SampleValues;
use crate::{Error, Result};
use std::sync::Arc;

/// How a run uses threads. Results are bitwise identical either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Everything on the calling thread: for many small independent runs that the caller
    /// already spreads over threads.
    None,
    /// Images spread over the current rayon pool (all cores by default).
    #[default]
    Rayon,
}

/// A batch of images, NCHW float32 (as the data loaders give them), borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    data: &'a [f32],
    shape: [usize; 4],
}

impl<'a> Images<'a> {
    /// `shape` is `[N, C, H, W]`; `data` must hold exactly `N·C·H·W` values.
    pub fn new(data: &'a [f32], shape: [usize; 4]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::other(format!(
                "image batch of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Images { data, shape })
    }

    pub fn batch(&self) -> usize {
        self.shape[0]
    }

    /// `[N, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    pub fn data(&self) -> &'a [f32] {
        self.data
    }
}

/// Everything live in the network just before quantizable layer `position` (or, at position
/// `L` = number of layers, the logits), for a batch of images: per image, every value of the
/// graph computed before the layer's node that a later node reads (skip branches, the inputs of
/// a later concatenation, not only the layer's input). A state is immutable and shares its
/// buffers: `clone` is cheap, so keeping states (e.g. the FP state before every layer) costs
/// only their memory.
#[derive(Clone)]
pub struct State {
    network: u64,
    position: usize,
    batch: usize,
    data: StateData,
}

#[derive(Clone)]
enum StateData {
    /// The live values, per image.
    Samples(Arc<Vec<SampleValues>>),
    /// The logits `[N, K]`.
    Vector(Arc<Vec<f32>>),
}

impl State {
    /// The quantizable layer this state is the input of (`L` for logits).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Number of images.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The logits `[N, K]` row-major, if this is the final state.
    pub fn logits(&self, net: &Network) -> Option<Logits> {
        match &self.data {
            StateData::Vector(v) if self.position == net.layers().len() => {
                Some(Logits::from_vec(v.to_vec(), self.batch, net.classes()))
            }
            _ => None,
        }
    }

    /// Bytes held (shared buffers counted once per state).
    pub fn bytes(&self) -> usize {
        let floats = match &self.data {
            StateData::Vector(v) => v.len(),
            StateData::Samples(s) => s.iter().map(SampleValues::floats).sum(),
        };
        floats * std::mem::size_of::<f32>()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("position", &self.position)
            .field("batch", &self.batch)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Network {
    /// The state before layer 0: the images, and whatever nodes come before the first layer
    /// (e.g. a normalisation) run in FP.
    pub fn input_state(&self, images: Images<'_>) -> Result<State> {
        self.check_images(&images)?;
        let samples = self.graph_start(images.data(), 0, &Plan::fp(self), Parallelism::Rayon);
        Ok(State {
            network: self.id,
            position: 0,
            batch: images.batch(),
            data: StateData::Samples(Arc::new(samples)),
        })
    }

    /// Full forward: images → logits, with the layers quantized as `plan` says.
    pub fn forward(&self, images: Images<'_>, plan: &Plan, par: Parallelism) -> Result<Logits> {
        self.check_images(&images)?;
        self.check_plan(plan)?;
        let samples = self.graph_start(images.data(), self.layers().len(), plan, par);
        Ok(self.graph_logits(&samples))
    }

    /// Resumes from `state` (before layer `state.position()`) up to the state before layer
    /// `to` (`to` = number of layers: the logits). Layers `state.position()..to` run as `plan`
    /// says; the plan's other layers are ignored. Same arithmetic as [`Network::forward`], so
    /// chaining runs gives bitwise the same logits as one full forward with the same plan.
    pub fn run(&self, state: &State, to: usize, plan: &Plan, par: Parallelism) -> Result<State> {
        if state.network != self.id {
            return Err(Error::other("state was computed by another network"));
        }
        let l = self.layers().len();
        if to < state.position || to > l {
            return Err(Error::other(format!(
                "cannot run from position {} to {to} (positions are 0..={l} and runs go forward)",
                state.position
            )));
        }
        if to == state.position {
            return Ok(state.clone());
        }
        self.check_plan(plan)?;
        let samples = match &state.data {
            StateData::Samples(s) => self.graph_advance(s, to, plan, par),
            StateData::Vector(_) => unreachable!("only position L holds logits"),
        };
        let data = if to == l {
            StateData::Vector(Arc::new(self.graph_logits(&samples).into_vec()))
        } else {
            StateData::Samples(Arc::new(samples))
        };
        Ok(State {
            position: to,
            data,
            ..state.clone()
        })
    }

    /// Runs `state` to the logits.
    pub fn run_to_logits(&self, state: &State, plan: &Plan, par: Parallelism) -> Result<Logits> {
        let end = self.run(state, self.layers().len(), plan, par)?;
        Ok(end.logits(self).expect("a run to position L ends with the logits"))
    }

    /// FP forward that shows `observe(layer, values)` the input activation of every
    /// quantizable layer, in forward order, for the whole batch (values only: the order of the
    /// values is unspecified, padding is not included). Returns the logits, bitwise equal to
    /// [`Network::forward`] with an FP plan.
    pub fn calibrate(
        &self,
        images: Images<'_>,
        par: Parallelism,
        mut observe: impl FnMut(usize, &[f32]),
    ) -> Result<Logits> {
        let fp = Plan::fp(self);
        let mut state = self.input_state(images)?;
        let mut values = Vec::new();
        for layer in 0..self.layers().len() {
            self.layer_input(&state, &mut values)?;
            observe(layer, &values);
            state = self.run(&state, layer + 1, &fp, par)?;
        }
        Ok(state.logits(self).expect("the last state holds the logits"))
    }

    /// The values of the tensor entering layer `state.position()`, without padding, into `out`
    /// (cleared first; empty at position L).
    pub fn layer_input(&self, state: &State, out: &mut Vec<f32>) -> Result<()> {
        if state.network != self.id {
            return Err(Error::other("state was computed by another network"));
        }
        out.clear();
        if let StateData::Samples(s) = &state.data {
            self.graph_layer_input(s, state.position, out);
        }
        Ok(())
    }

    fn check_plan(&self, plan: &Plan) -> Result<()> {
        if plan.network() != self.id || plan.len() != self.layers().len() {
            return Err(Error::other("the plan was made for another network"));
        }
        Ok(())
    }

    /// Images of `h×w` pixels: exactly the network's input size.
    pub(crate) fn check_size(&self, h: usize, w: usize) -> Result<()> {
        let g = &self.graph;
        if [h, w] != [g.input[1], g.input[2]] {
            return Err(Error::other(format!(
                "images of {h}×{w} pixels, but {} takes {}×{}",
                self.arch(),
                g.input[1],
                g.input[2]
            )));
        }
        Ok(())
    }

    fn check_images(&self, images: &Images<'_>) -> Result<()> {
        let [_, c, h, w] = images.shape();
        if c != self.in_channels() {
            return Err(Error::other(format!(
                "images have {c} channel(s), {} expects {}",
                self.arch(),
                self.in_channels()
            )));
        }
        self.check_size(h, w)
    }
}

/// A batch tensor: values and shape `[N, …]`.
#[cfg(test)]
pub(crate) type Nchw = (Vec<f32>, Vec<usize>);

#[cfg(test)]
impl State {
    /// For comparing with a reference implementation: the last value the state holds (by
    /// value id, i.e. the latest computed: what the CIFAR ResNets' layers call the main branch)
    /// and the one before it (a block input kept for the shortcut), each NCHW over the batch.
    pub(crate) fn to_nchw(&self, net: &Network) -> (Nchw, Option<Nchw>) {
        let n = self.batch;
        match &self.data {
            StateData::Vector(v) => ((v.to_vec(), vec![n, net.classes()]), None),
            StateData::Samples(samples) => {
                let per: Vec<Vec<Nchw>> = samples.iter().map(|s| net.graph.exec.live_nchw(s)).collect();
                let batch = |k: usize| {
                    let mut data = Vec::new();
                    for live in &per {
                        data.extend_from_slice(&live[k].0);
                    }
                    let mut shape = per[0][k].1.clone();
                    shape[0] = n;
                    (data, shape)
                };
                let count = per[0].len();
                assert!((1..=2).contains(&count), "{count} live values");
                (batch(count - 1), (count == 2).then(|| batch(0)))
            }
        }
    }
}
