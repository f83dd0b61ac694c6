//! What `quantize`, `perturb` and `evaluate` share before their first forward pass: the flags
//! that name a model and a data set, and loading both with every check done up front.

use crate::calib::CalibSettings;
use crate::data::{self, DataSpec, Dataset, PreprocessFlags, Split};
use crate::engine::Network;
use crate::format::{Alloc, ModelId};
use crate::options::QuantOption;
use crate::quant::Calibration;
use crate::{Error, Result};

/// The built-in model: a ResNet-20 trained on Fashion-MNIST by `scripts/train`
/// (see `models/fmnist-resnet20.json`).
pub const BUILTIN_WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fmnist-resnet20.safetensors");

/// The default data set: Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it.
pub const DEFAULT_DATA: &str = "fashion-mnist:/usr/share/datasets/fashion-mnist";

/// Flags naming the model.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A network as an ONNX file (opset 11–23, e.g. from `torch.onnx.export`; an external data
    /// file `FILE.onnx.data` beside it is read too). Its quantizable layers are every Conv and
    /// every Gemm/MatMul with a constant weight, named after the PyTorch module. Instead of
    /// `--arch`/`--weights`.
    #[arg(long, value_name = "FILE.onnx", conflicts_with_all = ["arch", "weights"])]
    pub model: Option<String>,
    /// Architecture: resnet20, resnet32, resnet44 or resnet56 (checked against the checkpoint).
    #[arg(long, default_value = "resnet20", value_name = "ARCH")]
    pub arch: String,
    /// Checkpoint: a PyTorch `.pth` state_dict (also nested under `state_dict`) or a
    /// `.safetensors` file, in the layout of the pytorch-cifar-models ResNets. Default: the
    /// built-in Fashion-MNIST ResNet-20.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<String>,
}

/// Flags naming the samples.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// Data set: `fashion-mnist:DIR` (IDX files, .gz or not), `cifar10:DIR`, `cifar100:DIR`
    /// (the binary versions), `npy:X.npy,Y.npy` (float32 NCHW, preprocessed; int labels) or
    /// `imagefolder:DIR` (one folder per class of JPEG and PNG images, classes sorted by name
    /// give the labels; preprocessed as the flags below say).
    #[arg(long, default_value = DEFAULT_DATA, value_name = "KIND:PATH")]
    pub data: String,
    /// Part of the data set: train or test. An `imagefolder:DIR` with a `train/` or `val/`
    /// folder reads `train/` for train and `val/` for test; without, both read DIR.
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<Split>,
    /// Number of samples, drawn without replacement by a seeded generator (default: all, but
    /// 256 for perturb).
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Seed of the sample selection.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Images per forward batch (bounds memory; results do not depend on it).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub batch_size: usize,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// How `imagefolder:` images become the model's input, as torchvision's transforms on PIL
/// images: [Grayscale()], Resize(N), CenterCrop(N), ToTensor(), Normalize(mean, std). A preset,
/// then each flag given replaces its part.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Image folders (imagefolder: data only)")]
pub struct PreprocessArgs {
    /// Preset: `imagenet` (the default: --resize 256 --crop 224 --mean 0.485,0.456,0.406 --std
    /// 0.229,0.224,0.225, torchvision's ImageNet evaluation) or `none` (no resize, no crop, mean
    /// 0, std 1: pixel / 255).
    #[arg(long, value_name = "PRESET")]
    pub preprocess: Option<String>,
    /// Resize the shorter side to N pixels and the longer in proportion (rounded down), with
    /// Pillow's antialiased bilinear filter, as torchvision's `Resize(N)`.
    #[arg(long, value_name = "N")]
    pub resize: Option<u32>,
    /// Keep the central N×N pixels, as torchvision's `CenterCrop(N)`; an image smaller than N is
    /// refused. Without a crop every image must come out with the same size.
    #[arg(long, value_name = "N")]
    pub crop: Option<u32>,
    /// Mean subtracted from pixel / 255, one value per channel: `R,G,B` (one with --grayscale).
    #[arg(long, value_name = "R,G,B")]
    pub mean: Option<String>,
    /// Standard deviation the result is divided by, one positive value per channel.
    #[arg(long, value_name = "R,G,B")]
    pub std: Option<String>,
    /// One channel instead of three: Pillow's `convert("L")` of the RGB image, as torchvision's
    /// `Grayscale()`. Images are otherwise converted to RGB whatever they hold (gray, palette,
    /// alpha dropped), as torchvision's `ImageFolder` loads them.
    #[arg(long)]
    pub grayscale: bool,
}

impl PreprocessArgs {
    /// The flags as given, for [`DataSpec::with_preprocess`].
    pub fn flags(&self) -> PreprocessFlags<'_> {
        PreprocessFlags {
            preset: self.preprocess.as_deref(),
            resize: self.resize,
            crop: self.crop,
            mean: self.mean.as_deref(),
            std: self.std.as_deref(),
            grayscale: self.grayscale,
        }
    }
}

/// Flags choosing how quantizer ranges are calibrated when a tool calibrates itself (instead of
/// reading a `calib.json`): the same three flags, help and errors in `quantize`, `perturb` and
/// `evaluate`.
#[derive(clap::Args, Clone, Debug)]
pub struct CalibArgs {
    /// Weight range calibration: `minmax` (max |w| per channel, docs/definitions.md's formula) or `mse`
    /// (the clipping that minimises the squared error over a grid of shrink factors).
    #[arg(long, default_value = "minmax", value_name = "METHOD")]
    pub w_calib: String,
    /// Activation range calibration: `minmax` or `mse`.
    #[arg(long, default_value = "minmax", value_name = "METHOD")]
    pub a_calib: String,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
}

impl CalibArgs {
    /// The settings, or a usage error naming the flag and what it accepts.
    pub fn settings(&self) -> Result<CalibSettings> {
        let parse = |flag: &str, text: &str| -> Result<Calibration> {
            text.parse()
                .map_err(|_| Error::usage(format!("{flag} '{text}': expected minmax or mse")))
        };
        Ok(CalibSettings {
            w_calib: parse("--w-calib", &self.w_calib)?,
            a_calib: parse("--a-calib", &self.a_calib)?,
            per_tensor: self.per_tensor,
        })
    }
}

/// A model ready to run, and where it came from.
pub struct LoadedModel {
    pub net: Network,
    /// The checkpoint path as given (or the built-in model's).
    pub weights: String,
    /// What files made for this model record: the architecture and the checkpoint's digest.
    pub id: ModelId,
}

impl LoadedModel {
    /// Where the model comes from, for messages: `--weights r20.pth` (or `the built-in model`).
    pub fn describe(&self) -> String {
        if self.net.is_graph() {
            format!("--model {}", self.weights)
        } else if self.weights == BUILTIN_WEIGHTS {
            "the built-in model".into()
        } else {
            format!("--weights {}", self.weights)
        }
    }
}

/// Load and check the model: an ONNX file, or a checkpoint against its architecture.
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    if let Some(path) = &args.model {
        let graph = crate::graph::Graph::from_onnx(path)?;
        let name = std::path::Path::new(path)
            .file_name()
            .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned());
        let net = Network::from_graph(&graph, &name).map_err(|e| Error::input(path, e))?;
        let id = ModelId {
            arch: ONNX_ARCH.into(),
            digest: graph_digest(path, &graph)?,
        };
        return Ok(LoadedModel {
            net,
            weights: path.clone(),
            id,
        });
    }
    let weights = args.weights.clone().unwrap_or_else(|| BUILTIN_WEIGHTS.to_string());
    let (_spec, state) = crate::model::load_checked(&weights, &args.arch)?;
    let net = Network::from_state_dict(&args.arch, &state).map_err(|e| Error::input(&weights, e))?;
    let id = ModelId {
        arch: net.arch().to_string(),
        digest: crate::io::file_digest(&weights)?,
    };
    Ok(LoadedModel { net, weights, id })
}

/// What [`ModelId::arch`] says of a model read from an ONNX file.
pub const ONNX_ARCH: &str = "onnx";

/// The digest of an ONNX model: [`crate::io::digest`] over the file's bytes followed by every
/// constant of the graph as read (so the external data is covered, and so are files that differ
/// only in how they split it).
fn graph_digest(path: &str, graph: &crate::graph::Graph) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut d = crate::io::Digest::new();
    d.update(&bytes);
    for v in graph.values() {
        if let Some(t) = &v.constant {
            match &t.data {
                crate::graph::Data::F32(x) => x.iter().for_each(|f| d.update(&f.to_le_bytes())),
                crate::graph::Data::I64(x) => x.iter().for_each(|i| d.update(&i.to_le_bytes())),
            }
        }
    }
    Ok(d.finish())
}

/// Samples ready to run, and their description for files (`spec` + split).
pub struct LoadedData {
    pub data: Dataset,
    /// E.g. `fashion-mnist:/usr/share/datasets/fashion-mnist:train`; an image folder's adds its
    /// preprocessing: `imagefolder:/data/imagenet:test (resize 256, crop 224, mean …, std …)`.
    pub description: String,
}

/// Parse the flags' values that need no file (so bad flags fail before anything loads): the
/// data spec, with the preprocessing flags applied.
pub fn check_data_args(args: &DataArgs) -> Result<DataSpec> {
    if args.samples == Some(0) {
        return Err(Error::usage("--samples 0: at least one sample is needed"));
    }
    if args.batch_size == 0 {
        return Err(Error::usage("--batch-size 0: at least one image per batch is needed"));
    }
    DataSpec::parse(&args.data)?.with_preprocess(&args.preprocess.flags())
}

/// Load the samples and check them against the model: channels and label range are checked
/// on the chosen samples before their images are decoded (an image folder decodes only those).
pub fn load_data(args: &DataArgs, default_split: Split, net: &Network) -> Result<LoadedData> {
    let selected = select_data(args, default_split, net, false)?;
    let data = selected.selection.load()?;
    Ok(LoadedData {
        data,
        description: selected.description,
    })
}

/// Samples chosen and checked against a model, not loaded yet (see [`select_data`]).
pub struct SelectedData {
    pub selection: data::Selection,
    /// As [`LoadedData::description`].
    pub description: String,
}

/// Choose the samples and check them against the model as [`load_data`] does, without loading
/// them. `streamed`: the caller loads them in chunks ([`data::Selection::load_in_chunks`]), so
/// the whole selection may be larger than one load may take.
pub fn select_data(args: &DataArgs, default_split: Split, net: &Network, streamed: bool) -> Result<SelectedData> {
    let spec = check_data_args(args)?;
    let split = args.split.unwrap_or(default_split);
    let opened = data::open(&spec, split)?;
    let idx = data::select_indices(opened.len(), args.samples, args.seed, opened.source())?;
    let chosen = match streamed {
        true => opened.select_streamed(idx)?,
        false => opened.select(idx)?,
    };
    let description = match spec.preprocess() {
        Some(p) => format!("{}:{split} ({p})", args.data),
        None => format!("{}:{split}", args.data),
    };
    let [channels, _, _] = chosen.image_shape();
    if channels != net.in_channels() {
        return Err(Error::input(
            chosen.source(),
            format!(
                "images have {channels} channel(s), but {} takes {}",
                net.arch(),
                net.in_channels()
            ),
        ));
    }
    let [_, h, w] = net.input_shape();
    let [_, dh, dw] = chosen.image_shape();
    if [dh, dw] != [h, w] {
        return Err(Error::input(
            chosen.source(),
            format!(
                "images are {dh}×{dw} pixels, but {} takes {h}×{w} (for an image folder, set --crop)",
                net.arch()
            ),
        ));
    }
    // An image folder's labels are its class folders' ranks by name: they mean the model's
    // classes only when the folder has exactly those (a 10-class subset of ImageNet would label
    // its classes 0..9 whatever the model's indices for them).
    if matches!(spec, DataSpec::ImageFolder { .. }) && chosen.num_classes() != net.classes() {
        return Err(Error::input(
            chosen.source(),
            format!(
                "{} class folders, but the model has {} classes (label n is the n-th class folder by name, so the \
                 folders must be the model's classes)",
                chosen.num_classes(),
                net.classes()
            ),
        ));
    }
    data::check_labels(chosen.labels(), net.classes(), chosen.source()).map_err(|e| match e {
        Error::Input { path, msg } => Error::input(path, format!("{msg} (the model has {} classes)", net.classes())),
        e => e,
    })?;
    Ok(SelectedData {
        selection: chosen,
        description,
    })
}

/// The per-layer options of `alloc` (read from `name`) in the model's layer order: the
/// allocation must be made for this model (its `model`) and name every layer once, no other.
pub fn alloc_choice(alloc: &Alloc, name: &str, model: &LoadedModel) -> Result<Vec<QuantOption>> {
    model.id.check(&model.describe(), name, &alloc.model)?;
    let net = &model.net;
    let layers = net.layers();
    for c in &alloc.layers {
        if !layers.iter().any(|l| l.name == c.name) {
            return Err(Error::input(
                name,
                format!(
                    "layer '{}' is not in the model ({} has {} quantizable layers)",
                    c.name,
                    net.arch(),
                    layers.len()
                ),
            ));
        }
        let o = c.option();
        if QuantOption::parse(&c.option).ok() != Some(o) {
            return Err(Error::input(
                name,
                format!(
                    "layer '{}': option '{}' does not match w_bits {:?} / a_bits {:?}",
                    c.name, c.option, c.w_bits, c.a_bits
                ),
            ));
        }
    }
    layers
        .iter()
        .map(|l| {
            let mut found = alloc.layers.iter().filter(|c| c.name == l.name);
            match (found.next(), found.next()) {
                (Some(c), None) => Ok(c.option()),
                (None, _) => Err(Error::input(
                    name,
                    format!(
                        "has no option for layer '{}' (every layer of the model needs one)",
                        l.name
                    ),
                )),
                (Some(_), Some(_)) => Err(Error::input(name, format!("names layer '{}' twice", l.name))),
            }
        })
        .collect()
}
