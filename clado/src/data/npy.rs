//! `npy:X.npy,Y.npy`: images already preprocessed (float32, N×C×H×W) and their labels (int64 or
//! int32, length N), e.g. written by numpy from any pipeline we do not implement.

use super::Dataset;
use crate::{Error, Result};
use ndarray::{Array1, Array4};
use ndarray_npy::{ReadNpyError, ReadNpyExt};
use std::io::{BufReader, Cursor};
use std::path::Path;

/// Load and check the pair; `num_classes` is the largest label + 1 (the tools check it against
/// the model with [`Dataset::check_labels`]).
pub(super) fn load(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    let images_name = images_path.display();
    let (count, channels, height, width) = images.dim();
    if count == 0 || channels * height * width == 0 {
        return Err(Error::input(
            images_name,
            format!(
                "shape ({count}, {channels}, {height}, {width}) holds no images, expected N×C×H×W with no zero size"
            ),
        ));
    }
    if labels.len() != count {
        return Err(Error::input(
            labels_path.display(),
            format!("{} labels for the {count} images of {images_name}", labels.len()),
        ));
    }
    if let Some((at, v)) = images.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::input(images_name, format!("value {v} at {at:?} is not finite")));
    }
    let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let pixels = if images.is_standard_layout() {
        images.into_raw_vec_and_offset().0
    } else {
        images.iter().copied().collect()
    };
    Dataset::new(
        pixels,
        labels,
        [channels, height, width],
        num_classes,
        labels_path.display().to_string(),
    )
}

fn read_images(path: &Path) -> Result<Array4<f32>> {
    let file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path.display(), e))?.len();
    images_from_reader(&path.display().to_string(), len, BufReader::new(file))
}

/// Images from a `.npy` stream of `len` bytes read from `name`.
fn images_from_reader(name: &str, len: u64, reader: impl std::io::Read) -> Result<Array4<f32>> {
    if len == 0 {
        return Err(Error::input(
            name,
            "empty file, expected a .npy array of float32 images",
        ));
    }
    Array4::<f32>::read_npy(reader).map_err(|e| Error::input(name, describe(e, "float32 ('<f4')", "4-D N×C×H×W")))
}

/// The images of an `npy:` data set from the bytes of the file `name` (float32 N×C×H×W).
pub fn images_from_npy_bytes(name: &str, bytes: &[u8]) -> Result<Array4<f32>> {
    images_from_reader(name, bytes.len() as u64, Cursor::new(bytes))
}

fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(|e| open_error(path, e))?;
    labels_from_npy_bytes(&path.display().to_string(), &bytes)
}

/// The labels of an `npy:` data set from the bytes of the file `name`: u32 from int64 or
/// int32; negative or oversized labels are errors.
pub fn labels_from_npy_bytes(name: &str, bytes: &[u8]) -> Result<Vec<u32>> {
    const EXPECTED_DTYPE: &str = "int64 ('<i8') or int32 ('<i4')";
    const EXPECTED_RANK: &str = "1-D";
    if bytes.is_empty() {
        return Err(Error::input(
            name,
            "empty file, expected a .npy array of int64 or int32 labels",
        ));
    }
    let wide: Vec<i64> = match Array1::<i64>::read_npy(Cursor::new(bytes)) {
        Ok(a) => a.to_vec(),
        Err(ReadNpyError::WrongDescriptor(_)) => Array1::<i32>::read_npy(Cursor::new(bytes))
            .map_err(|e| Error::input(name, describe(e, EXPECTED_DTYPE, EXPECTED_RANK)))?
            .iter()
            .map(|&l| i64::from(l))
            .collect(),
        Err(e) => return Err(Error::input(name, describe(e, EXPECTED_DTYPE, EXPECTED_RANK))),
    };
    wide.iter()
        .enumerate()
        .map(|(i, &l)| {
            u32::try_from(l).map_err(|_| {
                Error::input(
                    name,
                    format!("label {l} of sample {i} is out of range (expected 0 or more, below 2^32)"),
                )
            })
        })
        .collect()
}

fn open_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(path.display(), "no such file"),
        _ => Error::io(path.display(), e),
    }
}

/// One line for a `.npy` that cannot be used, saying what was expected.
fn describe(e: ReadNpyError, dtype: &str, rank: &str) -> String {
    match e {
        ReadNpyError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "truncated .npy header".into(),
        ReadNpyError::Io(e) => format!("reading .npy: {e}"),
        ReadNpyError::ParseHeader(e) => format!("not a .npy file: {e}"),
        ReadNpyError::WrongDescriptor(d) => format!("dtype {d}, expected {dtype}"),
        ReadNpyError::WrongNdim(_, got) => format!("a {got}-D array, expected {rank}"),
        ReadNpyError::MissingData => "truncated: the data is shorter than the header's shape says".into(),
        ReadNpyError::ExtraBytes(n) => format!("{n} bytes after the data the header's shape announces"),
        other => format!("bad .npy data: {other}"),
    }
}
