//! Data sets for the tools, chosen with `--data KIND:PATH`, as plain `Vec<f32>` (no candle).
//!
//! | spec | files | images |
//! | --- | --- | --- |
//! | `fashion-mnist:DIR` | `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` | 1×32×32 (28×28 zero-padded) |
//! | `cifar10:DIR` | `data_batch_{1..5}.bin`, `test_batch.bin` (`cifar-10-batches-bin`) | 3×32×32 |
//! | `cifar100:DIR` | `train.bin`, `test.bin` (`cifar-100-binary`), fine labels | 3×32×32 |
//! | `npy:X.npy,Y.npy` | float32 N×C×H×W, already preprocessed; int64 or int32 labels of length N | C×H×W |
//! | `imagefolder:DIR` | one folder per class of `.jpg`/`.jpeg`/`.png` files, in DIR or in DIR`/train` and DIR`/val` | 3×224×224 by default (see [`Preprocess`]) |
//!
//! For the CIFAR kinds `DIR` may also be the folder that holds `cifar-10-batches-bin` or
//! `cifar-100-binary`. Debian's `dataset-fashion-mnist` installs Fashion-MNIST in
//! [`FASHION_MNIST_DIR`].
//!
//! `imagefolder:DIR` is torchvision's `ImageFolder` (classes sorted by name give the labels;
//! the layout and the files read are in `imagefolder.rs`'s docs): the train split reads
//! DIR`/train` and the test split DIR`/val` when DIR has either folder, else both read DIR.
//! Its images are decoded after the samples are chosen, and only those.
//!
//! # Preprocessing
//! Exactly as torchvision's `ToTensor()` + `Normalize(mean, std)`, in float32: a byte `v` of
//! channel `c` becomes `(v / 255 - mean[c]) / std[c]`. Fashion-MNIST images are then zero-padded
//! by 2 pixels on every side, 28×28 → 32×32, so that they fit the CIFAR ResNets; the pad is 0 in
//! normalised space (docs/definitions.md). The constants are [`FASHION_MNIST`], [`CIFAR10`] and
//! [`CIFAR100`]:
//!
//! - Fashion-MNIST: mean 0.2860, std 0.3530 (docs/definitions.md; the training set's statistics).
//! - CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010);
//!   CIFAR-100: mean (0.5070, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2761). These are the values
//!   the public `chenyaofo/pytorch-cifar-models` checkpoints were trained and evaluated with (the
//!   `data.mean`/`data.std` of their training logs, e.g. `logs/cifar10/resnet20/default.log`).
//!   Note that the CIFAR-10 std is the widely copied (0.2023, 0.1994, 0.2010), not the training
//!   set's true per-channel std (0.2470, 0.2435, 0.2616): a checkpoint must see the inputs it was
//!   trained on, so we follow the checkpoints. For other normalisations use `npy:`.
//!
//! `imagefolder:` images go through torchvision's transforms on PIL images, chosen with
//! `--preprocess` and its override flags ([`Preprocess`]): by default the `imagenet` preset,
//! `Resize(256)` (Pillow's antialiased bilinear resize of the shorter side), `CenterCrop(224)`,
//! `ToTensor()`, `Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))`. JPEG and PNG are
//! decoded by the `image` crate (zune-jpeg, png), converted to 8-bit RGB as Pillow's
//! `convert("RGB")` does (or to its `L` with `--grayscale`), resized by `fast_image_resize`'s
//! port of Pillow's convolution. Against Pillow 13 the normalised values differ by at most the
//! tolerances in `tests.rs` (`PILLOW_PNG_TOL`, `PILLOW_JPEG_TOL`, with the reasons).
//!
//! # Sample selection
//! [`select`] picks `--samples N` of a split with `--seed S`: the first N positions of a partial
//! Fisher–Yates shuffle of `0..len` driven by ChaCha8 seeded with `seed_from_u64(S)` (each draw an
//! unbiased integer from one 64-bit output by rejection), then sorted into file order. The
//! algorithm is spelled out here rather than borrowed from `rand::seq`, so the same seed picks
//! the same samples on every machine and across `rand` upgrades.

mod cifar;
mod idx;
#[cfg(feature = "images")]
pub mod imagefolder;
mod npy;
mod preprocess;

pub use preprocess::{crop_offsets, Preprocess, PreprocessFlags, IMAGENET_MEAN, IMAGENET_STD, PRESETS};

use crate::{Error, Result};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Per-channel normalisation `(x - mean) / std` of pixels scaled to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: &'static [f32],
    pub std: &'static [f32],
}

/// Fashion-MNIST (docs/definitions.md).
pub const FASHION_MNIST: Normalization = Normalization {
    mean: &[0.2860],
    std: &[0.3530],
};
/// CIFAR-10 as used by the pytorch-cifar-models checkpoints (see the module docs).
pub const CIFAR10: Normalization = Normalization {
    mean: &[0.4914, 0.4822, 0.4465],
    std: &[0.2023, 0.1994, 0.2010],
};
/// CIFAR-100 as used by the pytorch-cifar-models checkpoints (see the module docs).
pub const CIFAR100: Normalization = Normalization {
    mean: &[0.5070, 0.4865, 0.4409],
    std: &[0.2673, 0.2564, 0.2761],
};

impl Normalization {
    /// The normalised value of every byte 0..=255 in `channel`, computed as torchvision does
    /// (`v / 255`, then `(x - mean) / std`, all in float32).
    pub fn table(&self, channel: usize) -> [f32; 256] {
        normalised_table(self.mean[channel], self.std[channel])
    }
}

/// The normalised value of every byte 0..=255 as torchvision computes it in float32: `v / 255`
/// (`ToTensor`), then `(x - mean) / std` (`Normalize`).
pub fn normalised_table(mean: f32, std: f32) -> [f32; 256] {
    std::array::from_fn(|v| (v as f32 / 255.0 - mean) / std)
}

/// A data set named on the command line: `KIND:PATH`.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    FashionMnist(PathBuf),
    Cifar10(PathBuf),
    Cifar100(PathBuf),
    Npy {
        images: PathBuf,
        labels: PathBuf,
    },
    /// The preprocessing is the `imagenet` preset once parsed; the flags replace it
    /// ([`DataSpec::with_preprocess`]).
    ImageFolder {
        dir: PathBuf,
        preprocess: Preprocess,
    },
}

/// The kinds `--data` understands, in the order messages list them.
pub const KINDS: [&str; 5] = [
    "fashion-mnist:DIR",
    "cifar10:DIR",
    "cifar100:DIR",
    "npy:X.npy,Y.npy",
    "imagefolder:DIR",
];

impl DataSpec {
    /// Parse `fashion-mnist:DIR`, `cifar10:DIR`, `cifar100:DIR`, `npy:X.npy,Y.npy` or
    /// `imagefolder:DIR`. Nothing is opened yet; [`open`] checks the files.
    pub fn parse(text: &str) -> Result<Self> {
        let expected = || format!("expected one of {}", KINDS.join(", "));
        let (kind, path) = text
            .split_once(':')
            .ok_or_else(|| Error::usage(format!("data '{text}': missing KIND:, {}", expected())))?;
        if path.is_empty() {
            return Err(Error::usage(format!(
                "data '{text}': empty path after '{kind}:', {}",
                expected()
            )));
        }
        match kind {
            "fashion-mnist" => Ok(DataSpec::FashionMnist(path.into())),
            "cifar10" => Ok(DataSpec::Cifar10(path.into())),
            "cifar100" => Ok(DataSpec::Cifar100(path.into())),
            "imagefolder" => Ok(DataSpec::ImageFolder {
                dir: path.into(),
                preprocess: Preprocess::imagenet(),
            }),
            "npy" => match path.split_once(',') {
                Some((images, labels)) if !images.is_empty() && !labels.is_empty() && !labels.contains(',') => {
                    Ok(DataSpec::Npy {
                        images: images.into(),
                        labels: labels.into(),
                    })
                }
                _ => Err(Error::usage(format!(
                    "data '{text}': npy takes two files, images and labels: npy:X.npy,Y.npy"
                ))),
            },
            _ => Err(Error::usage(format!(
                "data '{text}': unknown kind '{kind}', {}",
                expected()
            ))),
        }
    }

    /// The kind as written in the spec, e.g. `cifar10`.
    pub fn kind(&self) -> &'static str {
        match self {
            DataSpec::FashionMnist(_) => "fashion-mnist",
            DataSpec::Cifar10(_) => "cifar10",
            DataSpec::Cifar100(_) => "cifar100",
            DataSpec::Npy { .. } => "npy",
            DataSpec::ImageFolder { .. } => "imagefolder",
        }
    }

    /// The fixed normalisation the loader applies; `None` for `npy` (already preprocessed) and
    /// `imagefolder` (its [`Preprocess`]).
    pub fn normalization(&self) -> Option<Normalization> {
        match self {
            DataSpec::FashionMnist(_) => Some(FASHION_MNIST),
            DataSpec::Cifar10(_) => Some(CIFAR10),
            DataSpec::Cifar100(_) => Some(CIFAR100),
            DataSpec::Npy { .. } | DataSpec::ImageFolder { .. } => None,
        }
    }

    /// The preprocessing of an `imagefolder` spec; `None` for the other kinds.
    pub fn preprocess(&self) -> Option<&Preprocess> {
        match self {
            DataSpec::ImageFolder { preprocess, .. } => Some(preprocess),
            _ => None,
        }
    }

    /// The spec with the preprocessing the flags ask for. The flags apply to `imagefolder` only:
    /// with another kind, any flag given is a usage error naming it.
    pub fn with_preprocess(self, flags: &PreprocessFlags<'_>) -> Result<Self> {
        match self {
            DataSpec::ImageFolder { dir, .. } => Ok(DataSpec::ImageFolder {
                dir,
                preprocess: Preprocess::from_flags(flags)?,
            }),
            other => match flags.first_given() {
                None => Ok(other),
                Some(flag) => Err(Error::usage(format!(
                    "{flag} applies to imagefolder: data only ({} data comes preprocessed as its checkpoints expect)",
                    other.kind()
                ))),
            },
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::FashionMnist(dir) | DataSpec::Cifar10(dir) | DataSpec::Cifar100(dir) => {
                write!(f, "{}:{}", self.kind(), dir.display())
            }
            DataSpec::Npy { images, labels } => write!(f, "npy:{},{}", images.display(), labels.display()),
            DataSpec::ImageFolder { dir, .. } => write!(f, "imagefolder:{}", dir.display()),
        }
    }
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

/// Which part of a data set: `train` or `test`. `npy` data sets have one part and ignore it;
/// `imagefolder` reads `train/` or `val/` when DIR has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(Error::usage(format!("split '{text}': expected train or test"))),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Preprocessed images and their labels, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// N·C·H·W values, NCHW order, preprocessed (normalised, padded).
    pub images: Vec<f32>,
    /// One class index per image, each below `num_classes`.
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// Where the data came from, for messages: the spec and split, or the labels file.
    pub source: String,
}

impl Dataset {
    /// A data set from parts, checking that the sizes agree and every label is below
    /// `num_classes`.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u32>,
        [channels, height, width]: [usize; 3],
        num_classes: usize,
        source: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        let per_image = channels * height * width;
        if per_image == 0 || images.len() != labels.len() * per_image {
            return Err(Error::input(
                &source,
                format!(
                    "{} image values for {} labels of {channels}×{height}×{width} images, expected {}",
                    images.len(),
                    labels.len(),
                    labels.len() * per_image
                ),
            ));
        }
        let ds = Dataset {
            images,
            labels,
            channels,
            height,
            width,
            num_classes,
            source,
        };
        ds.check_labels(num_classes)?;
        Ok(ds)
    }

    /// Number of samples N.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image, C·H·W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Image `i` (C·H·W values). Panics when `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The samples at `idx`, in that order. Panics on an index out of range (a caller's bug:
    /// indices come from [`select_indices`] or from `0..len()`).
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            source: self.source.clone(),
        }
    }

    /// Consecutive batches of up to `batch_size` samples: (B·C·H·W image values, B labels).
    /// The last batch may be smaller. Panics when `batch_size` is 0.
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = (&[f32], &[u32])> + '_ {
        assert!(batch_size > 0, "batch size must be positive");
        self.images
            .chunks(batch_size * self.image_len())
            .zip(self.labels.chunks(batch_size))
    }

    /// Check that every label is a class of a model with `num_classes` outputs; the error names
    /// the source, the first offending sample and its label.
    pub fn check_labels(&self, num_classes: usize) -> Result<()> {
        check_labels(&self.labels, num_classes, &self.source)
    }
}

/// Check that every label is below `num_classes`; the error names `source`, the first offending
/// sample (its position in `labels`) and its label.
pub fn check_labels(labels: &[u32], num_classes: usize, source: &str) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= num_classes) {
        None => Ok(()),
        Some(i) => Err(Error::input(
            source,
            format!(
                "label {} of sample {i} is out of range for {num_classes} classes (expected 0..={})",
                labels[i],
                num_classes.saturating_sub(1)
            ),
        )),
    }
}

/// One split of a data set, opened: read whole and checked (every kind but `imagefolder`), or
/// listed, its images to be decoded once the samples are chosen ([`Opened::select`]).
#[derive(Debug)]
pub struct Opened {
    source: String,
    content: Content,
}

#[derive(Debug)]
enum Content {
    Loaded(Dataset),
    #[cfg(feature = "images")]
    Folder(imagefolder::Folder),
}

/// Open one split of a data set. Every file of the in-memory kinds is read and checked (magic,
/// sizes, counts, label ranges); an image folder is listed. Errors name the file and the problem.
pub fn open(spec: &DataSpec, split: Split) -> Result<Opened> {
    let source = match spec {
        DataSpec::Npy { .. } => spec.to_string(),
        _ => format!("{spec} ({split})"),
    };
    let loaded = |mut ds: Dataset| {
        ds.source = source.clone();
        Content::Loaded(ds)
    };
    let content = match spec {
        DataSpec::FashionMnist(dir) => loaded(idx::load_fashion_mnist(dir, split)?),
        DataSpec::Cifar10(dir) => loaded(cifar::load(cifar::Layout::Cifar10, dir, split)?),
        DataSpec::Cifar100(dir) => loaded(cifar::load(cifar::Layout::Cifar100, dir, split)?),
        DataSpec::Npy { images, labels } => loaded(npy::load(images, labels)?),
        #[cfg(feature = "images")]
        DataSpec::ImageFolder { dir, preprocess } => {
            Content::Folder(imagefolder::Folder::open(dir, split, preprocess)?)
        }
        #[cfg(not(feature = "images"))]
        DataSpec::ImageFolder { .. } => {
            return Err(Error::usage(
                "imagefolder: data needs the `images` feature of the clado crate",
            ))
        }
    };
    Ok(Opened { source, content })
}

impl Opened {
    /// Where the data comes from, for messages: the spec and split, or the `npy` files.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of samples of the split.
    pub fn len(&self) -> usize {
        match &self.content {
            Content::Loaded(ds) => ds.len(),
            #[cfg(feature = "images")]
            Content::Folder(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Choose the samples `idx` (increasing, as [`select_indices`] gives them) and check them
    /// without decoding: their labels, and for an image folder every chosen image's header, the
    /// one shape they all come out with and the size of the load (`MAX_LOAD_BYTES` in
    /// `imagefolder.rs`). Panics on an index out of range (a caller's bug).
    pub fn select(self, idx: Vec<usize>) -> Result<Selection> {
        self.select_within(idx, LoadLimit::Whole)
    }

    /// [`select`](Self::select) for a caller that loads the selection in chunks
    /// ([`Selection::load_in_chunks`]): every chosen image's header is still checked, but the
    /// whole selection may exceed the limit of one load (each chunk stays within it).
    pub fn select_streamed(self, idx: Vec<usize>) -> Result<Selection> {
        self.select_within(idx, LoadLimit::Chunked)
    }

    #[cfg_attr(not(feature = "images"), allow(unused_variables))]
    fn select_within(self, idx: Vec<usize>, limit: LoadLimit) -> Result<Selection> {
        assert!(idx.iter().all(|&i| i < self.len()), "sample index out of range");
        let (image_shape, labels, num_classes) = match &self.content {
            Content::Loaded(ds) => (
                ds.image_shape(),
                idx.iter().map(|&i| ds.labels[i]).collect(),
                ds.num_classes,
            ),
            #[cfg(feature = "images")]
            Content::Folder(f) => {
                let max_bytes = match limit {
                    LoadLimit::Whole => imagefolder::MAX_LOAD_BYTES,
                    LoadLimit::Chunked => u64::MAX,
                };
                let outline = f.outline(&idx, max_bytes, &self.source)?;
                (
                    outline.image_shape,
                    idx.iter().map(|&i| f.label(i)).collect(),
                    f.num_classes(),
                )
            }
        };
        Ok(Selection {
            opened: self,
            idx,
            image_shape,
            labels,
            num_classes,
        })
    }
}

/// Whether a selection is loaded at once (within the image folders' limit of one load) or in
/// chunks.
#[derive(Clone, Copy, Debug)]
enum LoadLimit {
    Whole,
    Chunked,
}

/// Samples chosen from an opened split, checked but (for an image folder) not yet decoded.
#[derive(Debug)]
pub struct Selection {
    opened: Opened,
    idx: Vec<usize>,
    image_shape: [usize; 3],
    labels: Vec<u32>,
    num_classes: usize,
}

impl Selection {
    /// Where the data comes from, for messages.
    pub fn source(&self) -> &str {
        &self.opened.source
    }

    /// `[C, H, W]` of every chosen image as the model will see it.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    /// The labels of the chosen samples, in order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Number of classes of the data set (for an image folder, its class folders).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of chosen samples.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// The chosen samples, preprocessed, in order (an image folder's decoded in parallel).
    pub fn load(self) -> Result<Dataset> {
        match self.opened.content {
            // Every sample of a loaded set (the indices are increasing): the set itself.
            Content::Loaded(ds) if self.idx.len() == ds.len() => Ok(ds),
            _ => self.load_range(0..self.idx.len()),
        }
    }

    /// The chosen samples in order, as consecutive data sets of at most `chunk` samples, each
    /// loaded (an image folder's decoded, in parallel) only when the iterator reaches it.
    pub fn load_in_chunks(self, chunk: usize) -> Box<dyn Iterator<Item = Result<Dataset>>> {
        assert!(chunk > 0, "chunk size must be positive");
        if self.idx.len() <= chunk {
            return Box::new(std::iter::once(self.load()));
        }
        let starts = (0..self.idx.len()).step_by(chunk);
        Box::new(starts.map(move |start| self.load_range(start..(start + chunk).min(self.idx.len()))))
    }

    /// The chosen samples `range` (positions in the selection), preprocessed, in order.
    fn load_range(&self, range: std::ops::Range<usize>) -> Result<Dataset> {
        let idx = &self.idx[range.clone()];
        match &self.opened.content {
            Content::Loaded(ds) => Ok(ds.subset(idx)),
            #[cfg(feature = "images")]
            Content::Folder(f) => {
                let outline = imagefolder::Outline {
                    image_shape: self.image_shape,
                };
                Dataset::new(
                    f.load(idx, outline)?,
                    self.labels[range].to_vec(),
                    self.image_shape,
                    self.num_classes,
                    self.opened.source.clone(),
                )
            }
        }
    }
}

/// Load one whole split of a data set, preprocessed (see [`open`]).
pub fn load(spec: &DataSpec, split: Split) -> Result<Dataset> {
    let opened = open(spec, split)?;
    let all = (0..opened.len()).collect();
    opened.select(all)?.load()
}

/// The parsers of the data set files as functions of one file's bytes (what the loaders run
/// on each file; the fuzz targets in `fuzz/` call them).
pub mod bytes {
    use super::{cifar, idx};
    use crate::{Error, Result};

    /// One image file of an image folder, decoded and preprocessed as the loader does it: the
    /// header checked first (format, sizes against the limits), then the pixels.
    #[cfg(feature = "images")]
    pub fn decode_image(name: &str, bytes: &[u8], pre: &super::Preprocess) -> Result<([usize; 3], Vec<f32>)> {
        let shape = super::imagefolder::image_shape(name, bytes, pre)?;
        let mut out = vec![0f32; shape.iter().product()];
        super::imagefolder::decode_into(name, bytes, pre, shape, &mut out)?;
        Ok((shape, out))
    }

    pub use super::npy::{images_from_npy_bytes, labels_from_npy_bytes};

    /// The dimensions of an IDX file of unsigned bytes with `ndim` dimensions (gzipped or not).
    pub fn idx_dims(name: &str, bytes: &[u8], ndim: usize) -> Result<Vec<usize>> {
        Ok(idx::decode_idx(name, bytes.to_vec(), ndim)?.dims)
    }

    /// The number of records of a CIFAR binary file (`kind`: `cifar10` or `cifar100`).
    pub fn cifar_records(kind: &str, name: &str, bytes: &[u8]) -> Result<usize> {
        let layout = match kind {
            "cifar10" => cifar::Layout::Cifar10,
            "cifar100" => cifar::Layout::Cifar100,
            other => {
                return Err(Error::usage(format!(
                    "CIFAR kind '{other}': expected cifar10 or cifar100"
                )))
            }
        };
        cifar::count_records(layout, name, bytes)
    }
}

/// The indices [`select`] picks: all of `0..len` in order for `None`, else `samples` distinct
/// indices chosen by `seed` (see the module docs), in increasing order. `samples` of 0 or above
/// `len` is a usage error that names the count available in `source`.
pub fn select_indices(len: usize, samples: Option<usize>, seed: u64, source: &str) -> Result<Vec<usize>> {
    let Some(samples) = samples else {
        return Ok((0..len).collect());
    };
    if samples == 0 {
        return Err(Error::usage("--samples 0: expected at least 1 sample"));
    }
    if samples > len {
        return Err(Error::usage(format!(
            "--samples {samples}: {source} has only {len} samples"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..len).collect();
    for i in 0..samples {
        let j = i + uniform_below(&mut rng, (len - i) as u64) as usize;
        order.swap(i, j);
    }
    order.truncate(samples);
    order.sort_unstable();
    Ok(order)
}

/// `--samples N --seed S` of a loaded split (see [`select_indices`]); `None` keeps everything.
/// The tools choose before loading instead ([`Opened::select`]), so that an image folder decodes
/// only the chosen images.
pub fn select(ds: &Dataset, samples: Option<usize>, seed: u64) -> Result<Dataset> {
    if samples.is_none() {
        return Ok(ds.clone());
    }
    let idx = select_indices(ds.len(), samples, seed, &ds.source)?;
    Ok(ds.subset(&idx))
}

/// An unbiased integer in `0..n` (n > 0) from 64-bit outputs: outputs below 2^64 mod n are
/// rejected, so the accepted range is a whole number of copies of `0..n`.
fn uniform_below(rng: &mut impl RngCore, n: u64) -> u64 {
    let reject_below = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= reject_below {
            return x % n;
        }
    }
}

/// Check that a data set folder exists before looking for its files.
fn check_dir(dir: &Path, kind: &str) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::input(
            dir.display(),
            format!("no such folder (expected the {kind} data set folder)"),
        ))
    }
}

/// Read a whole file; a missing file is an input error naming it.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(path.display(), "no such file"),
        _ => Error::io(path.display(), e),
    })
}

#[cfg(all(test, feature = "images"))]
mod imagefolder_tests;
#[cfg(test)]
mod tests;
