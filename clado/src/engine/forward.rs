//! Running the network: full, resumable and calibration forwards over a batch.
//!
//! A run from position `from` to `to` processes the batch image by image: each image is
//! loaded from the source state into a per-thread workspace (a few padded maps, reused from
//! run to run, a few hundred KiB: they stay in L2), taken through layers `from..to`, and its
//! end state is copied out. Images are independent, so they are spread over threads with no
//! effect on the result.

use super::fake_quant::ActQuant;
use super::graph_net::GraphNet;
use super::kernels::{self, Epilogue, MapShape};
use super::metrics::Logits;
use super::network::{Geometry, Layout, Network, Op, Role};
use super::plan::Plan;
use crate::graph::SampleValues;
use crate::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;
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
/// `L` = number of layers, the logits), for a batch of images.
///
/// | position | holds |
/// | --- | --- |
/// | 0 (`conv1`) | the input images (NCHW) |
/// | a block's `conv1` | the block input `x` (it is also the shortcut) |
/// | a block's `conv2` | `relu(bn1(conv1(x)))` and the block input `x` |
/// | a `downsample.0` | the main branch `bn2(conv2(·))` *before* the residual add, and the block input `x`, which is what enters the downsample |
/// | `fc` | the globally average-pooled features `[N, 64]` |
/// | L | the logits `[N, K]` |
///
/// Maps are stored padded NHWC. A state is immutable and shares its buffers: `clone` is cheap,
/// so keeping states (e.g. the FP state before every layer) costs only their memory.
#[derive(Clone)]
pub struct State {
    network: u64,
    position: usize,
    /// `[C, H, W]` of the input images.
    input: [usize; 3],
    batch: usize,
    data: StateData,
}

#[derive(Clone)]
enum StateData {
    Images(Arc<Vec<f32>>),
    Maps {
        main: Arc<Vec<f32>>,
        shortcut: Option<Arc<Vec<f32>>>,
    },
    Vector(Arc<Vec<f32>>),
    /// A graph network's live values, per sample.
    Samples(Arc<Vec<SampleValues>>),
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
            StateData::Images(v) | StateData::Vector(v) => v.len(),
            StateData::Maps { main, shortcut } => main.len() + shortcut.as_ref().map_or(0, |s| s.len()),
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
            .field("input", &self.input)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Where a run reads its input from.
enum Source<'a> {
    Images(&'a [f32]),
    Maps(&'a [f32], Option<&'a [f32]>),
    Vector(&'a [f32]),
}

/// One image's part of a run's input.
enum ImageInput<'a> {
    Image(&'a [f32]),
    Maps(&'a [f32], Option<&'a [f32]>),
    Vector(&'a [f32]),
}

/// One image of a run: its index and where its end state goes (main part, shortcut part).
type ImageJob<'a> = (usize, &'a mut [f32], Option<&'a mut [f32]>);

/// Buffers of one thread, reused across images and runs. Every map buffer keeps a zero border
/// (writers zero it), whatever shape it last held.
#[derive(Default)]
struct Workspace {
    main: Vec<f32>,
    shortcut: Vec<f32>,
    out: Vec<f32>,
    quant: Vec<f32>,
    vector: Vec<f32>,
    logits: Vec<f32>,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// The first `n` floats of `v`, growing it if needed.
fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl Network {
    /// The state before layer 0: the images (copied).
    pub fn input_state(&self, images: Images<'_>) -> Result<State> {
        let input = self.check_images(&images)?;
        if let Some(g) = &self.graph {
            // Nodes before the first layer (e.g. a normalisation) run here, in FP.
            let samples = self.graph_start(g, images.data(), 0, &Plan::fp(self), Parallelism::Rayon);
            return Ok(State {
                network: self.id,
                position: 0,
                input,
                batch: images.batch(),
                data: StateData::Samples(Arc::new(samples)),
            });
        }
        Ok(State {
            network: self.id,
            position: 0,
            input,
            batch: images.batch(),
            data: StateData::Images(Arc::new(images.data().to_vec())),
        })
    }

    /// Full forward: images → logits, with the layers quantized as `plan` says.
    pub fn forward(&self, images: Images<'_>, plan: &Plan, par: Parallelism) -> Result<Logits> {
        let input = self.check_images(&images)?;
        let l = self.layers().len();
        if let Some(g) = &self.graph {
            self.check_plan(plan)?;
            let samples = self.graph_start(g, images.data(), l, plan, par);
            return Ok(self.graph_logits(g, &samples));
        }
        let data = self.execute(Source::Images(images.data()), 0, l, images.batch(), input, plan, par)?;
        match data {
            StateData::Vector(v) => Ok(Logits::from_vec(unwrap_arc(v), images.batch(), self.classes())),
            _ => unreachable!("a run to position L ends with the logits"),
        }
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
        if let Some(g) = &self.graph {
            self.check_plan(plan)?;
            let samples = match &state.data {
                StateData::Samples(s) => self.graph_advance(g, s, to, plan, par),
                StateData::Images(v) => self.graph_start(g, v, to, plan, par),
                _ => unreachable!("graph states hold samples"),
            };
            let data = if to == l {
                StateData::Vector(Arc::new(self.graph_logits(g, &samples).into_vec()))
            } else {
                StateData::Samples(Arc::new(samples))
            };
            return Ok(State {
                position: to,
                data,
                ..state.clone()
            });
        }
        let source = match &state.data {
            StateData::Images(v) => Source::Images(v),
            StateData::Maps { main, shortcut } => Source::Maps(main, shortcut.as_deref().map(|s| &s[..])),
            StateData::Vector(v) => Source::Vector(v),
            StateData::Samples(_) => unreachable!("only graph networks make sample states"),
        };
        let data = self.execute(source, state.position, to, state.batch, state.input, plan, par)?;
        Ok(State {
            position: to,
            data,
            ..state.clone()
        })
    }

    /// Runs `state` to the logits.
    pub fn run_to_logits(&self, state: &State, plan: &Plan, par: Parallelism) -> Result<Logits> {
        let end = self.run(state, self.layers().len(), plan, par)?;
        Ok(match end.data {
            StateData::Vector(v) => Logits::from_vec(unwrap_arc(v), end.batch, self.classes()),
            _ => unreachable!("a run to position L ends with the logits"),
        })
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

    /// The values of the tensor entering layer `state.position()` (for a downsample, the block
    /// input), without padding, into `out` (cleared first).
    pub fn layer_input(&self, state: &State, out: &mut Vec<f32>) -> Result<()> {
        if state.network != self.id {
            return Err(Error::other("state was computed by another network"));
        }
        out.clear();
        if let (Some(g), StateData::Samples(s)) = (&self.graph, &state.data) {
            if state.position < self.layers().len() {
                self.graph_layer_input(g, s, state.position, out);
            }
            return Ok(());
        }
        let geo = self.geometry(state.input[1], state.input[2])?;
        match (&state.data, geo.layouts[state.position]) {
            (StateData::Images(v) | StateData::Vector(v), _) => out.extend_from_slice(v),
            (StateData::Maps { main, shortcut }, Layout::Maps { main: ms, shortcut: ss }) => {
                let downsample = matches!(&self.ops[state.position], Op::Conv(c) if c.role == Role::Downsample);
                let (data, shape) = match (downsample, shortcut, ss) {
                    (true, Some(s), Some(ss)) => (&s[..], ss),
                    _ => (&main[..], ms),
                };
                for map in data.chunks(shape.padded_len()) {
                    kernels::map_interior(map, shape, out);
                }
            }
            _ => unreachable!("state data matches its layout"),
        }
        Ok(())
    }

    fn check_plan(&self, plan: &Plan) -> Result<()> {
        if plan.network() != self.id || plan.len() != self.layers().len() {
            return Err(Error::other("the plan was made for another network"));
        }
        Ok(())
    }

    /// Images of `h×w` pixels for a graph network: exactly its input size.
    pub(crate) fn check_size(&self, g: &GraphNet, h: usize, w: usize) -> Result<()> {
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

    fn check_images(&self, images: &Images<'_>) -> Result<[usize; 3]> {
        let [_, c, h, w] = images.shape();
        if c != self.in_channels() {
            return Err(Error::other(format!(
                "images have {c} channel(s), {} expects {}",
                self.arch(),
                self.in_channels()
            )));
        }
        match &self.graph {
            Some(g) => self.check_size(g, h, w)?,
            None => {
                self.geometry(h, w)?;
            }
        }
        Ok([c, h, w])
    }

    /// Runs every image of the batch from `from` to `to` (`from < to`).
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        source: Source<'_>,
        from: usize,
        to: usize,
        batch: usize,
        input: [usize; 3],
        plan: &Plan,
        par: Parallelism,
    ) -> Result<StateData> {
        if plan.network() != self.id || plan.len() != self.layers().len() {
            return Err(Error::other("the plan was made for another network"));
        }
        let geo = self.geometry(input[1], input[2])?;
        let (in_main, in_short) = geo.layouts[from].lens();
        let (out_main_len, out_short_len) = geo.layouts[to].lens();
        let mut out_main = vec![0.0f32; batch * out_main_len];
        let mut out_short = vec![0.0f32; batch * out_short_len];
        let mut short_chunks = out_short.chunks_mut(out_short_len.max(1));
        let jobs: Vec<ImageJob<'_>> = out_main
            .chunks_mut(out_main_len)
            .enumerate()
            .map(|(i, m)| (i, m, short_chunks.next()))
            .collect();
        let image_input = |i: usize| match &source {
            Source::Images(d) => ImageInput::Image(&d[i * in_main..(i + 1) * in_main]),
            Source::Maps(m, s) => ImageInput::Maps(
                &m[i * in_main..(i + 1) * in_main],
                s.map(|s| &s[i * in_short..(i + 1) * in_short]),
            ),
            Source::Vector(v) => ImageInput::Vector(&v[i * in_main..(i + 1) * in_main]),
        };
        let work = |(i, main, short): ImageJob<'_>| {
            WORKSPACE.with_borrow_mut(|ws| {
                self.run_image(&geo, plan, from, to, image_input(i), main, short, ws);
            })
        };
        match par {
            Parallelism::None => jobs.into_iter().for_each(work),
            Parallelism::Rayon => jobs.into_par_iter().for_each(work),
        }
        Ok(match geo.layouts[to] {
            Layout::Maps { shortcut, .. } => StateData::Maps {
                main: Arc::new(out_main),
                shortcut: shortcut.map(|_| Arc::new(out_short)),
            },
            Layout::Vector(_) => StateData::Vector(Arc::new(out_main)),
            Layout::Images { .. } => unreachable!("runs end after layer 0"),
        })
    }

    /// One image through layers `from..to`.
    #[allow(clippy::too_many_arguments)]
    fn run_image(
        &self,
        geo: &Geometry,
        plan: &Plan,
        from: usize,
        to: usize,
        input: ImageInput<'_>,
        out_main: &mut [f32],
        out_short: Option<&mut [f32]>,
        ws: &mut Workspace,
    ) {
        let isa = self.isa;
        match (input, geo.layouts[from]) {
            (ImageInput::Image(img), Layout::Images { c, h, w }) => {
                let shape = MapShape { h, w, c };
                kernels::image_to_map(img, shape, sized(&mut ws.main, shape.padded_len()));
            }
            (ImageInput::Maps(m, s), _) => {
                sized(&mut ws.main, m.len()).copy_from_slice(m);
                if let Some(s) = s {
                    sized(&mut ws.shortcut, s.len()).copy_from_slice(s);
                }
            }
            (ImageInput::Vector(v), _) => sized(&mut ws.vector, v.len()).copy_from_slice(v),
            _ => unreachable!("image input matches the layout"),
        }
        let fc = self.ops.len() - 1;
        for i in from..to {
            let precision = plan.layer(i);
            match &self.ops[i] {
                Op::Conv(c) => {
                    let shape = geo.convs[i].expect("conv layers have a shape");
                    let (in_len, out_len) = (shape.input.padded_len(), shape.output.padded_len());
                    let Workspace {
                        main,
                        shortcut,
                        out,
                        quant,
                        vector,
                        ..
                    } = ws;
                    let mut src: &[f32] = if c.role == Role::Downsample {
                        &shortcut[..in_len]
                    } else {
                        &main[..in_len]
                    };
                    if let Some(q) = &precision.input {
                        let qbuf = sized(quant, in_len);
                        quantize_map(q, src, shape.input, qbuf);
                        src = qbuf;
                    }
                    let weights = precision.weights.as_ref().map_or(&c.packed, |w| &w.packed);
                    let residual = match c.role {
                        Role::BlockConv2 {
                            downsample_follows: false,
                        } => Some(&shortcut[..out_len]),
                        Role::Downsample => Some(&main[..out_len]),
                        _ => None,
                    };
                    let relu = c.role
                        != Role::BlockConv2 {
                            downsample_follows: true,
                        };
                    let epi = Epilogue {
                        scale: &c.bn_scale,
                        bias: &c.bn_bias,
                        residual,
                        relu,
                    };
                    kernels::conv_image(isa, &shape, src, weights, &epi, sized(out, out_len));
                    if c.role == Role::BlockConv1 {
                        std::mem::swap(shortcut, main);
                    }
                    std::mem::swap(main, out);
                    if i + 1 == fc {
                        kernels::average_pool(&main[..out_len], shape.output, sized(vector, shape.output.c));
                    }
                }
                Op::Fc(f) => {
                    let Workspace {
                        quant, vector, logits, ..
                    } = ws;
                    let n = f.weight.len() / f.bias.len();
                    let mut x: &[f32] = &vector[..n];
                    if let Some(q) = &precision.input {
                        let qbuf = sized(quant, n);
                        q.apply_into(x, qbuf);
                        x = qbuf;
                    }
                    let weights = precision.weights.as_ref().map_or(&f.weight, |w| &w.packed);
                    kernels::linear(x, weights, &f.bias, sized(logits, f.bias.len()));
                }
            }
        }
        let l = self.ops.len();
        let n = out_main.len();
        if to == l {
            out_main.copy_from_slice(&ws.logits[..n]);
        } else if to == fc {
            out_main.copy_from_slice(&ws.vector[..n]);
        } else {
            out_main.copy_from_slice(&ws.main[..n]);
            if let Some(s) = out_short {
                let n = s.len();
                s.copy_from_slice(&ws.shortcut[..n]);
            }
        }
    }
}

/// Fake-quantizes the pixels of a padded map into `dst`, keeping the border zero (so padding is
/// zero after quantization, as when PyTorch pads the quantized tensor).
fn quantize_map(q: &ActQuant, src: &[f32], shape: MapShape, dst: &mut [f32]) {
    kernels::zero_border(dst, shape);
    let row = (shape.w + 2) * shape.c;
    for y in 1..=shape.h {
        let range = y * row + shape.c..(y + 1) * row - shape.c;
        q.apply_into(&src[range.clone()], &mut dst[range]);
    }
}

fn unwrap_arc(v: Arc<Vec<f32>>) -> Vec<f32> {
    Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone())
}

/// An unpadded NCHW tensor: values and `[N, C, H, W]`.
#[cfg(test)]
pub(crate) type Nchw = (Vec<f32>, [usize; 4]);

#[cfg(test)]
impl State {
    /// The main part and the shortcut as NCHW tensors (vectors as `[N, len, 1, 1]`), for
    /// comparing with a reference implementation.
    pub(crate) fn to_nchw(&self, net: &Network) -> (Nchw, Option<Nchw>) {
        let n = self.batch;
        let geo = net.geometry(self.input[1], self.input[2]).unwrap();
        let maps = |data: &[f32], s: MapShape| {
            let mut out = vec![0.0; n * s.c * s.h * s.w];
            for (i, map) in data.chunks(s.padded_len()).enumerate() {
                for y in 0..s.h {
                    for x in 0..s.w {
                        for c in 0..s.c {
                            out[((i * s.c + c) * s.h + y) * s.w + x] = map[((y + 1) * (s.w + 2) + x + 1) * s.c + c];
                        }
                    }
                }
            }
            (out, [n, s.c, s.h, s.w])
        };
        match (&self.data, geo.layouts[self.position]) {
            (StateData::Images(v), _) => ((v.to_vec(), [n, self.input[0], self.input[1], self.input[2]]), None),
            (StateData::Vector(v), Layout::Vector(len)) => ((v.to_vec(), [n, len, 1, 1]), None),
            (StateData::Maps { main, shortcut }, Layout::Maps { main: ms, shortcut: ss }) => {
                let s = match (shortcut, ss) {
                    (Some(s), Some(ss)) => Some(maps(s, ss)),
                    _ => None,
                };
                (maps(main, ms), s)
            }
            _ => unreachable!(),
        }
    }
}
