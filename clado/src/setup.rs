//! What `quantize`, `perturb` and `evaluate` share before their first forward pass: the flags
//! that name a model and a data set, and loading both with every check done up front.

use crate::calib::CalibSettings;
use crate::data::{self, DataSpec, Dataset, Split};
use crate::engine::Network;
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
    /// (the binary versions) or `npy:X.npy,Y.npy` (float32 NCHW, preprocessed; int labels).
    #[arg(long, default_value = DEFAULT_DATA, value_name = "KIND:PATH")]
    pub data: String,
    /// Part of the data set: train or test.
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
}

/// Load and check the checkpoint against the architecture.
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    let weights = args.weights.clone().unwrap_or_else(|| BUILTIN_WEIGHTS.to_string());
    let (_spec, state) = crate::model::load_checked(&weights, &args.arch)?;
    let net = Network::from_state_dict(&args.arch, &state).map_err(|e| Error::input(&weights, e))?;
    Ok(LoadedModel { net, weights })
}

/// Samples ready to run, and their description for files (`spec` + split).
pub struct LoadedData {
    pub data: Dataset,
    /// E.g. `fashion-mnist:/usr/share/datasets/fashion-mnist:train`.
    pub description: String,
}

/// Parse the flags' values that need no file (so bad flags fail before anything loads).
pub fn check_data_args(args: &DataArgs) -> Result<DataSpec> {
    if args.samples == Some(0) {
        return Err(Error::usage("--samples 0: at least one sample is needed"));
    }
    if args.batch_size == 0 {
        return Err(Error::usage("--batch-size 0: at least one image per batch is needed"));
    }
    DataSpec::parse(&args.data)
}

/// Load the samples and check them against the model: channels, image size, label range.
pub fn load_data(args: &DataArgs, default_split: Split, net: &Network) -> Result<LoadedData> {
    let spec = check_data_args(args)?;
    let split = args.split.unwrap_or(default_split);
    let all = data::load(&spec, split)?;
    let data = data::select(&all, args.samples, args.seed)?;
    let description = format!("{}:{split}", args.data);
    if data.channels != net.in_channels() {
        return Err(Error::input(
            &data.source,
            format!(
                "images have {} channel(s), but the model's conv1 takes {}",
                data.channels,
                net.in_channels()
            ),
        ));
    }
    data.check_labels(net.classes()).map_err(|e| match e {
        Error::Input { path, msg } => Error::input(path, format!("{msg} (the model has {} classes)", net.classes())),
        e => e,
    })?;
    Ok(LoadedData { data, description })
}

/// Read an allocation and match it to the model's layers: every layer named once, no other.
pub fn read_alloc(path: &str, net: &Network) -> Result<Vec<QuantOption>> {
    let alloc: crate::format::Alloc = crate::io::read_json(path)?;
    let name = crate::io::display_name(path, false);
    alloc_choice(&alloc, &name, net)
}

/// The per-layer options of `alloc` (read from `name`) in `net`'s layer order.
pub fn alloc_choice(alloc: &crate::format::Alloc, name: &str, net: &Network) -> Result<Vec<QuantOption>> {
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
