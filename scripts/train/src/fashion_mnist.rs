//! A minimal Fashion-MNIST reader for training: IDX files, gzipped or not.
//!
//! The shared crate's data module (`clado::data`) was being written in parallel when this
//! trainer was; this reader is kept to the two IDX files the trainer needs. Preprocessing is the
//! one docs/definitions.md fixes: scale to [0, 1], normalise with mean 0.2860 and std 0.3530, then place the
//! 28×28 image in a 32×32 canvas whose border is 0 in normalised space.

use clado::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Fashion-MNIST training-set mean and standard deviation of pixel values scaled to [0, 1].
pub const MEAN: f32 = 0.2860;
pub const STD: f32 = 0.3530;
/// Side of the stored images and of the CIFAR-ResNet input.
pub const SIDE: usize = 28;
pub const PADDED: usize = 32;
/// Number of classes.
pub const CLASSES: usize = 10;

/// Images normalised but not yet padded (`len × 28 × 28`), and their labels.
pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// The normalised 28×28 image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * SIDE * SIDE..(i + 1) * SIDE * SIDE]
    }
}

/// Read the `train` or `t10k` split from `dir` (`{prefix}-images-idx3-ubyte[.gz]` and
/// `{prefix}-labels-idx1-ubyte[.gz]`).
pub fn read_split(dir: &Path, prefix: &str) -> Result<Split> {
    let (image_path, image_bytes) = read_maybe_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let (label_path, label_bytes) = read_maybe_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (dims, pixels) = parse_idx(&image_path, &image_bytes, 0x0803)?;
    if dims.len() != 3 || dims[1] != SIDE || dims[2] != SIDE {
        return Err(Error::input(
            &image_path,
            format!("images have shape {dims:?}, expected [N, 28, 28]"),
        ));
    }
    let (label_dims, labels) = parse_idx(&label_path, &label_bytes, 0x0801)?;
    if label_dims != [dims[0]] {
        return Err(Error::input(
            &label_path,
            format!(
                "{} labels for {} images in {image_path}",
                label_dims.first().unwrap_or(&0),
                dims[0]
            ),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= CLASSES) {
        return Err(Error::input(
            &label_path,
            format!("label {bad} out of range 0..{CLASSES}"),
        ));
    }
    let images = pixels.iter().map(|&p| (p as f32 / 255.0 - MEAN) / STD).collect();
    Ok(Split {
        images,
        labels: labels.to_vec(),
    })
}

fn read_maybe_gz(dir: &Path, stem: &str) -> Result<(String, Vec<u8>)> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    if plain.exists() {
        let name = plain.display().to_string();
        let bytes = std::fs::read(&plain).map_err(|e| Error::io(&name, e))?;
        return Ok((name, bytes));
    }
    let name = gz.display().to_string();
    let file = std::fs::File::open(&gz).map_err(|e| Error::io(&name, e))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::input(&name, format!("not a valid gzip file: {e}")))?;
    Ok((name, bytes))
}

/// Parse an IDX file of unsigned bytes: big-endian magic, dimensions, then the data.
fn parse_idx<'a>(name: &str, bytes: &'a [u8], magic: u32) -> Result<(Vec<usize>, &'a [u8])> {
    let word = |i: usize| -> Option<u32> { Some(u32::from_be_bytes(bytes.get(4 * i..4 * i + 4)?.try_into().ok()?)) };
    let found = word(0).ok_or_else(|| Error::input(name, "truncated IDX header"))?;
    if found != magic {
        return Err(Error::input(
            name,
            format!("IDX magic {found:#010x}, expected {magic:#010x}"),
        ));
    }
    let rank = (magic & 0xff) as usize;
    let dims = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::input(name, "truncated IDX header"))?;
    let start = 4 * (rank + 1);
    let len: usize = dims.iter().product();
    let data = bytes.get(start..start + len).ok_or_else(|| {
        Error::input(
            name,
            format!("truncated: {} data bytes, expected {len}", bytes.len() - start),
        )
    })?;
    Ok((dims, data))
}

/// Write the 28×28 image into a 32×32 canvas (zeros elsewhere) at offset (`dy`, `dx`), each in
/// 0..=4; (2, 2) centres it. With `flip` the image is mirrored left to right.
pub fn place(image: &[f32], canvas: &mut [f32], dy: usize, dx: usize, flip: bool) {
    canvas.fill(0.0);
    for y in 0..SIDE {
        let row = &image[y * SIDE..(y + 1) * SIDE];
        let out = &mut canvas[(y + dy) * PADDED + dx..(y + dy) * PADDED + dx + SIDE];
        if flip {
            for (o, v) in out.iter_mut().zip(row.iter().rev()) {
                *o = *v;
            }
        } else {
            out.copy_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_header_is_checked() {
        let mut bytes = vec![0, 0, 8, 1, 0, 0, 0, 3];
        bytes.extend([1, 2, 3]);
        let (dims, data) = parse_idx("l", &bytes, 0x0801).unwrap();
        assert_eq!((dims, data), (vec![3], &[1u8, 2, 3][..]));
        assert!(parse_idx("l", &bytes[..9], 0x0801)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert!(parse_idx("l", &bytes, 0x0803)
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }

    #[test]
    fn centred_placement_pads_two_pixels_and_flip_mirrors() {
        let image: Vec<f32> = (0..SIDE * SIDE).map(|i| i as f32 + 1.0).collect();
        let mut canvas = vec![f32::NAN; PADDED * PADDED];
        place(&image, &mut canvas, 2, 2, false);
        assert_eq!(canvas[0], 0.0);
        assert_eq!(canvas[2 * PADDED + 2], 1.0);
        assert_eq!(canvas[29 * PADDED + 29], (SIDE * SIDE) as f32);
        place(&image, &mut canvas, 0, 4, true);
        assert_eq!(canvas[4], SIDE as f32);
        assert_eq!(canvas[4 + SIDE - 1], 1.0);
    }
}
