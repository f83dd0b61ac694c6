//! `imagefolder:DIR`: one folder per class, JPEG and PNG files, as torchvision's `ImageFolder`
//! reads them, preprocessed as its transforms do on PIL images (see `preprocess.rs`).
//!
//! Layout: if DIR has a `train/` or `val/` folder, the train split reads `train/` and the test
//! split `val/`; otherwise DIR itself holds the class folders and both splits read it. The
//! class folders are the folders (not hidden) of that level, sorted by name; the n-th is label
//! n. Each holds its images directly: files ending in `.jpg`, `.jpeg` or `.png` (any case),
//! sorted by name. Hidden entries (a leading `.`) are skipped and files beside the class folders
//! ignored, as torchvision does; any other file or folder inside a class folder is an error, not
//! a sample silently left out.
//!
//! Loading is in three steps, so that nothing is decoded before it is needed and every size is
//! known before anything is allocated: [`Folder::open`] lists the files; [`Folder::outline`]
//! reads the headers of the chosen files (in parallel) and checks every image's size against
//! [`MAX_IMAGE_BYTES`], their common output shape and the whole load against a byte limit;
//! [`Folder::load`] decodes them in parallel (rayon), each into its own slot, so the output is
//! in file order whatever the thread count.

use super::preprocess::{crop_offsets, Preprocess};
use super::{normalised_table, Split};
use crate::{Error, Result};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageDecoder, ImageFormat, ImageReader, Limits};
use rayon::prelude::*;
use std::ffi::OsString;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The most bytes one image may take at any step: its file, the decoder's buffer (for the size
/// its header declares, checked before the decoder allocates), its 8-bit RGB copy and its
/// resized copy. 512 MiB is the `image` crate's own default limit: a 10,000×10,000 RGB photo
/// (300 MB) passes, a 100,000×100,000 PNG header (30 GB) does not.
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// The most bytes the float32 values of one load may take: 4 GiB, about 7,100 images of
/// 3×224×224. A larger selection is refused before anything is decoded, asking for `--samples`.
pub const MAX_LOAD_BYTES: u64 = 4 << 30;

/// File name endings read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// An image folder's split, listed but not decoded.
#[derive(Clone, Debug)]
pub struct Folder {
    /// The folder that holds the class folders (DIR, or DIR/train, DIR/val).
    root: PathBuf,
    /// Class folder names, sorted; the index is the label.
    classes: Vec<OsString>,
    /// (label, file name) of every image, by class then name.
    files: Vec<(u32, OsString)>,
    preprocess: Preprocess,
}

/// What [`Folder::outline`] found: the shape every chosen image comes out with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outline {
    pub image_shape: [usize; 3],
}

impl Folder {
    /// List the class folders and their images of `split` in `dir` (see the module docs). Errors
    /// name the folder or file and what was expected.
    pub fn open(dir: &Path, split: Split, preprocess: &Preprocess) -> Result<Folder> {
        super::check_dir(dir, "imagefolder")?;
        let root = split_root(dir, split)?;
        let mut classes = Vec::new();
        for (name, path) in entries(&root)? {
            if is_dir(&path)? {
                classes.push(name);
            }
        }
        if classes.is_empty() {
            return Err(Error::input(
                root.display(),
                "no class folders (expected one folder per class, holding its .jpg, .jpeg and .png images)",
            ));
        }
        classes.sort();
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let class_dir = root.join(class);
            let mut names = Vec::new();
            for (name, path) in entries(&class_dir)? {
                if is_dir(&path)? {
                    return Err(Error::input(
                        path.display(),
                        "a folder inside a class folder (the images must lie directly in their class folder)",
                    ));
                }
                if !has_image_extension(&path) {
                    return Err(Error::input(
                        path.display(),
                        "not an image file name (every file in a class folder must end in .jpg, .jpeg or .png)",
                    ));
                }
                names.push(name);
            }
            if names.is_empty() {
                return Err(Error::input(
                    class_dir.display(),
                    "class folder without images (expected .jpg, .jpeg or .png files)",
                ));
            }
            names.sort();
            let label = u32::try_from(label).map_err(|_| Error::input(root.display(), "too many classes"))?;
            files.extend(names.into_iter().map(|n| (label, n)));
        }
        Ok(Folder {
            root,
            classes,
            files,
            preprocess: preprocess.clone(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Number of classes (class folders).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The label of image `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.files[i].0
    }

    /// The path of image `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        let (label, name) = &self.files[i];
        self.root.join(&self.classes[*label as usize]).join(name)
    }

    /// Check the images `idx` before decoding any: read their headers (in parallel), check each
    /// size, that all come out with one shape, and that their float32 values fit in
    /// `max_bytes` ([`MAX_LOAD_BYTES`] for the tools). With a crop the shape is known from the
    /// flags, and the byte limit is checked before any header is read. `source` names the data
    /// set in the limit's message.
    pub fn outline(&self, idx: &[usize], max_bytes: u64, source: &str) -> Result<Outline> {
        let channels = self.preprocess.channels();
        if let Some(c) = self.preprocess.crop {
            check_load_bytes(idx.len(), [channels, c as usize, c as usize], max_bytes, source)?;
        }
        let shapes: Vec<Result<[usize; 3]>> = idx
            .par_iter()
            .map(|&i| {
                let path = self.path(i);
                image_shape(&path.display().to_string(), &read_image_file(&path)?, &self.preprocess)
            })
            .collect();
        let mut first: Option<(usize, [usize; 3])> = None;
        for (&i, shape) in idx.iter().zip(shapes) {
            let shape = shape?;
            match first {
                None => first = Some((i, shape)),
                Some((j, s)) if s != shape => {
                    return Err(Error::input(
                        self.path(i).display(),
                        format!(
                        "comes out {}×{} after preprocessing, but {} comes out {}×{}: every image must have one size \
                             (pass --crop N)",
                        shape[2],
                        shape[1],
                        self.path(j).display(),
                        s[2],
                        s[1]
                    ),
                    ))
                }
                Some(_) => {}
            }
        }
        let image_shape = match first {
            Some((_, s)) => s,
            None => return Err(Error::usage("no images selected")),
        };
        check_load_bytes(idx.len(), image_shape, max_bytes, source)?;
        Ok(Outline { image_shape })
    }

    /// Decode and preprocess the images `idx` (checked by [`Folder::outline`] to come out as
    /// `outline.image_shape`), in parallel, in the order of `idx`. The first error in that
    /// order is returned, so the message does not depend on the thread count.
    pub fn load(&self, idx: &[usize], outline: Outline) -> Result<Vec<f32>> {
        let per_image: usize = outline.image_shape.iter().product();
        let mut images = vec![0f32; idx.len() * per_image];
        let errors: Vec<Option<Error>> = images
            .par_chunks_mut(per_image)
            .zip(idx.par_iter())
            .map(|(out, &i)| {
                let path = self.path(i);
                let name = path.display().to_string();
                read_image_file(&path)
                    .and_then(|bytes| decode_into(&name, &bytes, &self.preprocess, outline.image_shape, out))
                    .err()
            })
            .collect();
        match errors.into_iter().flatten().next() {
            Some(e) => Err(e),
            None => Ok(images),
        }
    }
}

/// The folder holding the class folders for `split` (see the module docs).
fn split_root(dir: &Path, split: Split) -> Result<PathBuf> {
    let (train, val) = (dir.join("train"), dir.join("val"));
    if !train.is_dir() && !val.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let (root, name) = match split {
        Split::Train => (train, "train"),
        Split::Test => (val, "val"),
    };
    if root.is_dir() {
        Ok(root)
    } else {
        Err(Error::input(
            dir.display(),
            format!(
                "has a {} folder but no {name}/ (the {split} split reads {name}/)",
                if name == "val" { "train/" } else { "val/" }
            ),
        ))
    }
}

/// The entries of `dir` that are not hidden: (name, path).
fn entries(dir: &Path) -> Result<Vec<(OsString, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))? {
        let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
        let name = entry.file_name();
        if !name.as_encoded_bytes().starts_with(b".") {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

/// Whether `path` is a folder, following symbolic links (as torchvision does).
fn is_dir(path: &Path) -> Result<bool> {
    std::fs::metadata(path)
        .map(|m| m.is_dir())
        .map_err(|e| Error::io(path.display(), e))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Read an image file, refusing one larger than [`MAX_IMAGE_BYTES`] before reading it.
fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path.display(), e))?.len();
    if len > MAX_IMAGE_BYTES {
        return Err(Error::input(
            path.display(),
            format!(
                "{} MiB file, above the {} MiB limit of one image",
                len >> 20,
                MAX_IMAGE_BYTES >> 20
            ),
        ));
    }
    super::read_file(path)
}

/// Refuse a load of `n` images of `shape` whose float32 values exceed `max_bytes`.
fn check_load_bytes(n: usize, shape: [usize; 3], max_bytes: u64, source: &str) -> Result<()> {
    let per_image = 4 * shape.iter().map(|&d| d as u64).product::<u64>();
    let total = per_image.saturating_mul(n as u64);
    if total <= max_bytes {
        return Ok(());
    }
    Err(Error::input(
        source,
        format!(
            "{n} images of {}×{}×{} take {} as float32, above the {} one load may hold: pass --samples N with N at most {}",
            shape[0],
            shape[1],
            shape[2],
            mib(total),
            mib(max_bytes),
            max_bytes / per_image
        ),
    ))
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// The decoding limits: no allocation above [`MAX_IMAGE_BYTES`], checked by the decoder on the
/// declared size before it allocates.
fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_alloc = Some(MAX_IMAGE_BYTES);
    l
}

/// A reader for `bytes` whose content (not its name) is JPEG or PNG.
fn reader<'a>(name: &str, bytes: &'a [u8]) -> Result<(ImageReader<Cursor<&'a [u8]>>, &'static str)> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(name, e))?;
    let format = match reader.format() {
        Some(ImageFormat::Jpeg) if !has_end_after_last_scan(bytes) => {
            return Err(Error::input(
                name,
                "truncated JPEG: no end-of-image marker after its last scan (the file is cut short)",
            ))
        }
        Some(ImageFormat::Jpeg) => "JPEG",
        Some(ImageFormat::Png) => "PNG",
        _ => {
            return Err(Error::input(
                name,
                "not a JPEG or PNG image (its first bytes are neither format's signature)",
            ))
        }
    };
    reader.limits(limits());
    Ok((reader, format))
}

/// Whether a JPEG's end-of-image marker (FF D9) follows its last start-of-scan marker (FF DA).
/// zune-jpeg decodes a file cut short without an error, filling the missing part with gray;
/// Pillow refuses it ("image file is truncated"), and so do we. Inside the coded data an FF
/// byte is always followed by 00 or a restart marker, so these two markers cannot appear there.
fn has_end_after_last_scan(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xff, 0xd9]))
}

fn decode_error(name: &str, format: &str, e: image::ImageError) -> Error {
    Error::input(name, format!("unreadable {format}: {e}"))
}

/// The shape `[C, H, W]` the image in `bytes` comes out with after `pre`, from its header alone;
/// an image whose decoded, 8-bit RGB or resized pixels exceed [`MAX_IMAGE_BYTES`], an empty
/// image, and one smaller than the crop are refused here, before any pixel is decoded.
pub fn image_shape(name: &str, bytes: &[u8], pre: &Preprocess) -> Result<[usize; 3]> {
    let (reader, format) = reader(name, bytes)?;
    let decoder = reader.into_decoder().map_err(|e| decode_error(name, format, e))?;
    let (width, height) = decoder.dimensions();
    check_sizes(name, format, width, height, decoder.total_bytes(), pre)
}

fn check_sizes(
    name: &str,
    format: &str,
    width: u32,
    height: u32,
    decoded_bytes: u64,
    pre: &Preprocess,
) -> Result<[usize; 3]> {
    if width == 0 || height == 0 {
        return Err(Error::input(
            name,
            format!("{format} of {width}×{height} pixels: no pixels"),
        ));
    }
    let (rw, rh) = pre.resized_size(width, height);
    let rgb_bytes = 3 * u64::from(width) * u64::from(height);
    let resized_bytes = 3 * rw * rh;
    let largest = decoded_bytes.max(rgb_bytes).max(resized_bytes);
    if largest > MAX_IMAGE_BYTES {
        let resized = match (rw, rh) == (u64::from(width), u64::from(height)) {
            true => String::new(),
            false => format!(", {rw}×{rh} resized"),
        };
        return Err(Error::input(
            name,
            format!(
                "{format} of {width}×{height} pixels{resized} takes {}, above the {} limit of one image",
                mib(largest),
                mib(MAX_IMAGE_BYTES)
            ),
        ));
    }
    let (w, h) = pre
        .output_size(width, height)
        .map_err(|why| Error::input(name, format!("{format} of {width}×{height} pixels: {why}")))?;
    Ok([pre.channels(), h as usize, w as usize])
}

/// Decode the image in `bytes`, preprocess it with `pre` and write its `shape` (`[C, H, W]`,
/// from [`image_shape`]) float32 values into `out`, channel by channel.
pub fn decode_into(name: &str, bytes: &[u8], pre: &Preprocess, shape: [usize; 3], out: &mut [f32]) -> Result<()> {
    let (reader, format) = reader(name, bytes)?;
    let decoder = reader.into_decoder().map_err(|e| decode_error(name, format, e))?;
    let (width, height) = decoder.dimensions();
    let got = check_sizes(name, format, width, height, decoder.total_bytes(), pre)?;
    if got != shape || out.len() != shape.iter().product::<usize>() {
        return Err(Error::input(
            name,
            format!(
                "comes out {}×{}×{} after preprocessing, expected {}×{}×{}",
                got[0], got[1], got[2], shape[0], shape[1], shape[2]
            ),
        ));
    }
    // As torchvision's loader: `Image.open(f).convert("RGB")` (alpha dropped, palette and gray
    // expanded), then Grayscale's `convert("L")` when asked.
    let rgb = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| decode_error(name, format, e))?
        .into_rgb8()
        .into_raw();
    let (pixels, pixel_type) = match pre.grayscale {
        false => (rgb, PixelType::U8x3),
        true => (rgb.chunks_exact(3).map(pillow_luma).collect(), PixelType::U8),
    };
    let (rw, rh) = pre.resized_size(width, height);
    // Sizes were checked against MAX_IMAGE_BYTES, so they fit in u32.
    let resized = pillow_resize(name, pixels, pixel_type, (width, height), (rw as u32, rh as u32))?;
    let [channels, h, w] = shape;
    let (left, top) = match pre.crop {
        Some(c) => crop_offsets(rw, rh, u64::from(c)),
        None => (0, 0),
    };
    let (left, top, row) = (left as usize, top as usize, rw as usize);
    for c in 0..channels {
        let table = normalised_table(pre.mean[c], pre.std[c]);
        let plane = &mut out[c * h * w..(c + 1) * h * w];
        for (y, out_row) in plane.chunks_exact_mut(w).enumerate() {
            let start = ((top + y) * row + left) * channels + c;
            for (x, v) in out_row.iter_mut().enumerate() {
                *v = table[usize::from(resized[start + x * channels])];
            }
        }
    }
    Ok(())
}

/// Pillow's `resize(size, BILINEAR)` of 8-bit `pixels` from `from` to `to` (width, height):
/// its antialiased convolution (the filter widened by the scale when shrinking), horizontal
/// pass first and rounded to 8 bits, then the vertical pass. `fast_image_resize` ports that
/// convolution, but on 8-bit images runs the vertical pass first, whose different intermediate
/// rounding put 1 of 5 values one level off Pillow's; so each pass is its own call here. An
/// unchanged size returns the pixels as they are (so do Pillow and torchvision).
fn pillow_resize(
    name: &str,
    pixels: Vec<u8>,
    pixel_type: PixelType,
    from: (u32, u32),
    to: (u32, u32),
) -> Result<Vec<u8>> {
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    let mut resizer = Resizer::new();
    let mut pass = |pixels: Vec<u8>, from: (u32, u32), to: (u32, u32)| -> Result<Vec<u8>> {
        if from == to {
            return Ok(pixels);
        }
        let src =
            ImageRef::new(from.0, from.1, &pixels, pixel_type).map_err(|e| Error::other(format!("{name}: {e}")))?;
        let mut dst = Image::new(to.0, to.1, pixel_type);
        resizer
            .resize(&src, &mut dst, &options)
            .map_err(|e| Error::other(format!("{name}: resize: {e}")))?;
        Ok(dst.into_vec())
    };
    let horizontal = pass(pixels, from, (to.0, from.1))?;
    pass(horizontal, (to.0, from.1), to)
}

/// Pillow's RGB → L conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded):
/// `(R·19595 + G·38470 + B·7471 + 2^15) >> 16`.
fn pillow_luma(rgb: &[u8]) -> u8 {
    let [r, g, b] = [rgb[0], rgb[1], rgb[2]].map(u32::from);
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}
