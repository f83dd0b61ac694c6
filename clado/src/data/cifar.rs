//! The binary versions of CIFAR-10 and CIFAR-100 (`cifar-10-binary.tar.gz`,
//! `cifar-100-binary.tar.gz` from https://www.cs.toronto.edu/~kriz/cifar.html).
//!
//! A file is a sequence of fixed-size records: the label byte(s), then 3072 pixel bytes, the
//! 1024 red values of the 32×32 image in row-major order, then the green, then the blue. That is
//! already CHW, so a record maps straight onto one NCHW image. CIFAR-100 records carry the coarse
//! label (20 superclasses) and then the fine label (100 classes); we use the fine one.

use super::{check_dir, read_file, Dataset, Normalization, Split, CIFAR10, CIFAR100};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const CHANNELS: usize = 3;
const SIDE: usize = 32;
const PIXELS: usize = CHANNELS * SIDE * SIDE;

/// What differs between the two CIFAR binary layouts.
#[derive(Clone, Copy, Debug)]
pub(super) enum Layout {
    Cifar10,
    Cifar100,
}

impl Layout {
    fn kind(self) -> &'static str {
        match self {
            Layout::Cifar10 => "cifar10",
            Layout::Cifar100 => "cifar100",
        }
    }

    /// The folder the official archive unpacks to.
    fn folder(self) -> &'static str {
        match self {
            Layout::Cifar10 => "cifar-10-batches-bin",
            Layout::Cifar100 => "cifar-100-binary",
        }
    }

    fn files(self, split: Split) -> Vec<String> {
        match (self, split) {
            (Layout::Cifar10, Split::Train) => (1..=5).map(|k| format!("data_batch_{k}.bin")).collect(),
            (Layout::Cifar10, Split::Test) => vec!["test_batch.bin".into()],
            (Layout::Cifar100, Split::Train) => vec!["train.bin".into()],
            (Layout::Cifar100, Split::Test) => vec!["test.bin".into()],
        }
    }

    /// Each label byte of a record and its number of classes; the last one is the label used.
    fn label_bytes(self) -> &'static [(&'static str, usize)] {
        match self {
            Layout::Cifar10 => &[("label", 10)],
            Layout::Cifar100 => &[("coarse label", 20), ("fine label", 100)],
        }
    }

    fn record_len(self) -> usize {
        self.label_bytes().len() + PIXELS
    }

    fn num_classes(self) -> usize {
        self.label_bytes().last().expect("one label at least").1
    }

    fn normalization(self) -> Normalization {
        match self {
            Layout::Cifar10 => CIFAR10,
            Layout::Cifar100 => CIFAR100,
        }
    }
}

/// The folder that holds the split's files: `dir` itself or `dir/<official folder>`.
fn data_folder(layout: Layout, dir: &Path, first_file: &str) -> Result<PathBuf> {
    check_dir(dir, layout.kind())?;
    if dir.join(first_file).is_file() {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join(layout.folder());
    if nested.join(first_file).is_file() {
        return Ok(nested);
    }
    Err(Error::input(
        dir.display(),
        format!(
            "no {first_file} here or in {}/ (expected the binary version of {})",
            layout.folder(),
            layout.kind()
        ),
    ))
}

/// One split of CIFAR-10 or CIFAR-100, normalised, 3×32×32.
pub(super) fn load(layout: Layout, dir: &Path, split: Split) -> Result<Dataset> {
    let files = layout.files(split);
    let folder = data_folder(layout, dir, &files[0])?;
    let tables: Vec<[f32; 256]> = (0..CHANNELS).map(|c| layout.normalization().table(c)).collect();
    let record_len = layout.record_len();
    let label_at = layout.label_bytes().len() - 1;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in &files {
        let path = folder.join(file);
        let bytes = read_file(&path)?;
        check_records(layout, &path, &bytes)?;
        images.reserve(bytes.len() / record_len * PIXELS);
        for record in bytes.chunks_exact(record_len) {
            labels.push(u32::from(record[label_at]));
            let pixels = &record[label_at + 1..];
            for (c, plane) in pixels.chunks_exact(SIDE * SIDE).enumerate() {
                images.extend(plane.iter().map(|&v| tables[c][usize::from(v)]));
            }
        }
    }
    Dataset::new(
        images,
        labels,
        [CHANNELS, SIDE, SIDE],
        layout.num_classes(),
        folder.display().to_string(),
    )
}

/// Check the bytes of a CIFAR binary file `name` as the loader does; the number of records.
pub(super) fn count_records(layout: Layout, name: &str, bytes: &[u8]) -> Result<usize> {
    check_records(layout, Path::new(name), bytes)?;
    Ok(bytes.len() / layout.record_len())
}

/// A file must be a non-empty whole number of records with every label byte in range.
fn check_records(layout: Layout, path: &Path, bytes: &[u8]) -> Result<()> {
    let record_len = layout.record_len();
    if bytes.is_empty() {
        return Err(Error::input(
            path.display(),
            format!("empty file, expected {record_len}-byte records"),
        ));
    }
    let extra = bytes.len() % record_len;
    if extra != 0 {
        return Err(Error::input(
            path.display(),
            format!(
                "truncated: {} bytes is {} whole {record_len}-byte records and {extra} bytes more",
                bytes.len(),
                bytes.len() / record_len
            ),
        ));
    }
    for (i, record) in bytes.chunks_exact(record_len).enumerate() {
        for (&byte, &(what, classes)) in record.iter().zip(layout.label_bytes()) {
            if usize::from(byte) >= classes {
                return Err(Error::input(
                    path.display(),
                    format!(
                        "{what} {byte} of record {i} is out of range (expected 0..={})",
                        classes - 1
                    ),
                ));
            }
        }
    }
    Ok(())
}
