//! IDX files (the MNIST and Fashion-MNIST format), gzipped or not, and the Fashion-MNIST loader.
//!
//! An IDX file is a 4-byte magic `00 00 08 D` (unsigned bytes, D dimensions), D big-endian u32
//! sizes, then the bytes in row-major order. Gzip is recognised by its magic, not by the name.

use super::{check_dir, read_file, Dataset, Split, FASHION_MNIST};
use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Fashion-MNIST images are 28×28; the CIFAR ResNets take 32×32, so each side gets this many
/// zero (normalised-space) pixels.
const FASHION_SIDE: usize = 28;
const PAD: usize = 2;
const PADDED_SIDE: usize = FASHION_SIDE + 2 * PAD;
const FASHION_CLASSES: usize = 10;

/// The IDX type code of unsigned bytes, the only one Fashion-MNIST uses.
const IDX_UBYTE: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX file of unsigned bytes.
#[derive(Debug, PartialEq)]
pub(super) struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file of unsigned bytes with `ndim` dimensions, gunzipping it if needed.
pub(super) fn read_idx(path: &Path, ndim: usize) -> Result<IdxArray> {
    let name = path.display().to_string();
    let bytes = read_file(path)?;
    decode_idx(&name, bytes, ndim)
}

/// Decode the bytes of an IDX file (gzipped or not) of unsigned bytes with `ndim` dimensions.
pub(super) fn decode_idx(name: &str, bytes: Vec<u8>, ndim: usize) -> Result<IdxArray> {
    let bytes = if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(name, &bytes)?
    } else {
        bytes
    };
    parse_idx(name, &bytes, ndim)
}

fn gunzip(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    // The gzip trailer holds the decoded size mod 2^32: a good capacity hint for these files.
    let size_hint = bytes.len().checked_sub(4).map_or(0, |at| {
        u32::from_le_bytes(bytes[at..].try_into().expect("4 bytes")) as usize
    });
    let mut out = Vec::with_capacity(size_hint);
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::input(name, format!("bad gzip data: {e}")))?;
    Ok(out)
}

/// Parse the bytes of an IDX file (already decompressed).
pub(super) fn parse_idx(name: &str, bytes: &[u8], ndim: usize) -> Result<IdxArray> {
    let expected_magic = u32::from_be_bytes([0, 0, IDX_UBYTE, ndim as u8]);
    let Some(magic) = bytes.get(..4) else {
        return Err(Error::input(
            name,
            format!("truncated: {} bytes, shorter than the IDX magic", bytes.len()),
        ));
    };
    let magic = u32::from_be_bytes(magic.try_into().expect("4 bytes"));
    if magic != expected_magic {
        return Err(Error::input(
            name,
            format!("bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x} (unsigned bytes, {ndim}-D)"),
        ));
    }
    let header_len = 4 + 4 * ndim;
    let Some(header) = bytes.get(4..header_len) else {
        return Err(Error::input(
            name,
            format!(
                "truncated: {} bytes, shorter than the {header_len}-byte IDX header",
                bytes.len()
            ),
        ));
    };
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes(d.try_into().expect("4 bytes")) as usize)
        .collect();
    let found = bytes.len() - header_len;
    let shape = dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×");
    // Four u32 sizes can multiply beyond any file (found by fuzzing: it overflowed usize).
    let Some(expected) = dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d)) else {
        return Err(Error::input(
            name,
            format!("the header announces {shape} bytes of data, more than any file holds; found {found}"),
        ));
    };
    if found != expected {
        let problem = if found < expected { "truncated" } else { "too long" };
        return Err(Error::input(
            name,
            format!("{problem}: the header announces {shape} = {expected} bytes of data, found {found}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// `dir/name`, or `dir/name.gz` when only that exists.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::input(
        dir.display(),
        format!(
            "no {name} or {name}.gz here (Debian's dataset-fashion-mnist installs them in {})",
            super::FASHION_MNIST_DIR
        ),
    ))
}

/// One split of Fashion-MNIST: normalised, zero-padded to 1×32×32.
pub(super) fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    check_dir(dir, "fashion-mnist")?;
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&images_path, 3)?;
    let labels = read_idx(&labels_path, 1)?;
    let images_name = images_path.display();
    let [count, height, width] = images.dims[..] else {
        unreachable!("read_idx checked 3 dimensions")
    };
    if (height, width) != (FASHION_SIDE, FASHION_SIDE) {
        return Err(Error::input(
            images_name,
            format!("images are {height}×{width}, expected {FASHION_SIDE}×{FASHION_SIDE}"),
        ));
    }
    if count == 0 {
        return Err(Error::input(images_name, "holds no images"));
    }
    if labels.dims[0] != count {
        return Err(Error::input(
            labels_path.display(),
            format!("{} labels for the {count} images of {images_name}", labels.dims[0]),
        ));
    }
    if let Some(i) = labels.data.iter().position(|&l| l as usize >= FASHION_CLASSES) {
        return Err(Error::input(
            labels_path.display(),
            format!(
                "label {} of sample {i} is out of range (expected 0..={})",
                labels.data[i],
                FASHION_CLASSES - 1
            ),
        ));
    }
    let pixels = pad_and_normalise(&images.data);
    Dataset::new(
        pixels,
        labels.data.iter().map(|&l| u32::from(l)).collect(),
        [1, PADDED_SIDE, PADDED_SIDE],
        FASHION_CLASSES,
        labels_path.display().to_string(),
    )
}

/// 28×28 byte images → normalised 32×32 float images, 0 (the normalised pad) around them.
fn pad_and_normalise(raw: &[u8]) -> Vec<f32> {
    let table = FASHION_MNIST.table(0);
    let count = raw.len() / (FASHION_SIDE * FASHION_SIDE);
    let mut out = vec![0.0f32; count * PADDED_SIDE * PADDED_SIDE];
    for (src, dst) in raw
        .chunks_exact(FASHION_SIDE * FASHION_SIDE)
        .zip(out.chunks_exact_mut(PADDED_SIDE * PADDED_SIDE))
    {
        for (r, src_row) in src.chunks_exact(FASHION_SIDE).enumerate() {
            let start = (r + PAD) * PADDED_SIDE + PAD;
            for (o, &v) in dst[start..start + FASHION_SIDE].iter_mut().zip(src_row) {
                *o = table[usize::from(v)];
            }
        }
    }
    out
}
