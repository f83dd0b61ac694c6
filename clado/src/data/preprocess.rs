//! How `imagefolder:` images become tensors: torchvision's `Resize(N)`, `CenterCrop(N)`,
//! `ToTensor()` and `Normalize(mean, std)` on PIL images, with an optional `Grayscale()` first.
//! This part is the arithmetic of sizes and offsets and the flags' grammar; the pixels are
//! decoded and resized in `imagefolder.rs`.

use crate::{Error, Result};
use std::fmt;

/// torchvision's ImageNet statistics (`torchvision.models` weights' `transforms()`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The `imagenet` preset's sizes: torchvision's `Resize(256)` then `CenterCrop(224)`.
pub const IMAGENET_RESIZE: u32 = 256;
pub const IMAGENET_CROP: u32 = 224;

/// The presets `--preprocess` names, in the order messages list them.
pub const PRESETS: [&str; 2] = ["imagenet", "none"];

/// The preprocessing of one image folder, in the order it is applied: convert to RGB (or to
/// Pillow's `L` when `grayscale`), resize the shorter side, crop the centre, then
/// `(pixel / 255 - mean[c]) / std[c]` in float32.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// One channel (Pillow's `convert("L")` of the RGB image) instead of three.
    pub grayscale: bool,
    /// The shorter side's length after resizing; `None` keeps the decoded size.
    pub resize: Option<u32>,
    /// The side of the central square kept; `None` keeps the whole image.
    pub crop: Option<u32>,
    /// One value per channel.
    pub mean: Vec<f32>,
    /// One value per channel, each positive.
    pub std: Vec<f32>,
}

impl Preprocess {
    /// The `imagenet` preset: resize 256, crop 224, torchvision's ImageNet mean and std.
    pub fn imagenet() -> Self {
        Preprocess {
            grayscale: false,
            resize: Some(IMAGENET_RESIZE),
            crop: Some(IMAGENET_CROP),
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }

    /// The `none` preset for `channels` channels: no resize, no crop, mean 0, std 1 (pixels
    /// scaled to [0, 1] only).
    pub fn none(channels: usize) -> Self {
        Preprocess {
            grayscale: channels == 1,
            resize: None,
            crop: None,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The preprocessing the flags ask for: the preset (default `imagenet`), then each flag given
    /// overrides its part. A usage error names the flag and what it accepts.
    pub fn from_flags(flags: &PreprocessFlags<'_>) -> Result<Self> {
        let channels = if flags.grayscale { 1 } else { 3 };
        let preset = flags.preset.unwrap_or("imagenet");
        let mut p = match preset {
            "imagenet" => Preprocess::imagenet(),
            "none" => Preprocess::none(channels),
            other => {
                return Err(Error::usage(format!(
                    "--preprocess '{other}': expected {}",
                    PRESETS.join(" or ")
                )))
            }
        };
        p.grayscale = flags.grayscale;
        if let Some(n) = flags.resize {
            p.resize = Some(positive_side("--resize", n)?);
        }
        if let Some(n) = flags.crop {
            p.crop = Some(positive_side("--crop", n)?);
        }
        if let Some(text) = flags.mean {
            p.mean = per_channel("--mean", text, channels, |_| true, "finite numbers")?;
        }
        if let Some(text) = flags.std {
            p.std = per_channel("--std", text, channels, |v| v > 0.0, "positive numbers")?;
        }
        if let (Some(r), Some(c)) = (p.resize, p.crop) {
            if c > r {
                return Err(Error::usage(format!(
                    "--crop {c} is larger than the resized shorter side (--resize {r}): expected a crop of at most {r}"
                )));
            }
        }
        for (flag, values) in [("--mean", &p.mean), ("--std", &p.std)] {
            if values.len() != channels {
                return Err(Error::usage(format!(
                    "{flag}: the {preset} preset has {} value(s), but --grayscale gives {channels} channel(s): \
                     pass --mean and --std with {channels} value(s)",
                    values.len()
                )));
            }
        }
        Ok(p)
    }

    /// Channels of the output: 1 with `grayscale`, else 3.
    pub fn channels(&self) -> usize {
        if self.grayscale {
            1
        } else {
            3
        }
    }

    /// The size `(width, height)` an image of `width`×`height` has after the resize: the
    /// shorter side becomes N and the longer `int(N · long / short)`, as torchvision computes
    /// it (a float division, truncated). Unchanged without a resize.
    pub fn resized_size(&self, width: u32, height: u32) -> (u64, u64) {
        let (w, h) = (u64::from(width), u64::from(height));
        let Some(n) = self.resize.map(u64::from) else {
            return (w, h);
        };
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        if short == 0 {
            return (w, h);
        }
        let new_long = (n as f64 * long as f64 / short as f64) as u64;
        if w <= h {
            (n, new_long)
        } else {
            (new_long, n)
        }
    }

    /// The output `(width, height)` of an image of `width`×`height`, or why it cannot be
    /// preprocessed: a crop larger than the resized image.
    pub fn output_size(&self, width: u32, height: u32) -> std::result::Result<(u64, u64), String> {
        let (w, h) = self.resized_size(width, height);
        match self.crop.map(u64::from) {
            None => Ok((w, h)),
            Some(c) if c <= w && c <= h => Ok((c, c)),
            Some(c) => Err(format!(
                "{w}×{h} {}is smaller than --crop {c} (pass --resize {c} or more)",
                if self.resize.is_some() { "after the resize " } else { "" }
            )),
        }
    }
}

/// The top-left corner `(left, top)` of the centre crop of `crop`×`crop` pixels in an image of
/// `width`×`height`: torchvision's `int(round((size - crop) / 2.0))`, Python's `round` taking
/// halves to the even neighbour.
pub fn crop_offsets(width: u64, height: u64, crop: u64) -> (u64, u64) {
    let offset = |size: u64| ((size - crop) as f64 / 2.0).round_ties_even() as u64;
    (offset(width), offset(height))
}

impl fmt::Display for Preprocess {
    /// E.g. `resize 256, crop 224, mean 0.485,0.456,0.406, std 0.229,0.224,0.225`: every part
    /// spelled out, so that two runs with different preprocessing never describe their data
    /// the same way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        if self.grayscale {
            f.write_str("grayscale, ")?;
        }
        match self.resize {
            Some(n) => write!(f, "resize {n}, ")?,
            None => f.write_str("no resize, ")?,
        }
        match self.crop {
            Some(n) => write!(f, "crop {n}, ")?,
            None => f.write_str("no crop, ")?,
        }
        write!(f, "mean {}, std {}", list(&self.mean), list(&self.std))
    }
}

/// The preprocessing flags as given (see `setup::PreprocessArgs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PreprocessFlags<'a> {
    pub preset: Option<&'a str>,
    pub resize: Option<u32>,
    pub crop: Option<u32>,
    pub mean: Option<&'a str>,
    pub std: Option<&'a str>,
    pub grayscale: bool,
}

impl PreprocessFlags<'_> {
    /// The first flag given, for "applies to imagefolder: only" messages.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("--preprocess", self.preset.is_some()),
            ("--resize", self.resize.is_some()),
            ("--crop", self.crop.is_some()),
            ("--mean", self.mean.is_some()),
            ("--std", self.std.is_some()),
            ("--grayscale", self.grayscale),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

fn positive_side(flag: &str, n: u32) -> Result<u32> {
    if n == 0 {
        Err(Error::usage(format!("{flag} 0: expected a side of at least 1 pixel")))
    } else {
        Ok(n)
    }
}

/// `text` as `channels` comma-separated float32 values, each passing `ok`.
fn per_channel(flag: &str, text: &str, channels: usize, ok: impl Fn(f32) -> bool, what: &str) -> Result<Vec<f32>> {
    let bad = || {
        Error::usage(format!(
            "{flag} '{text}': expected {channels} comma-separated {what} (one per channel{})",
            if channels == 1 { ", --grayscale" } else { ": R,G,B" }
        ))
    };
    let values = text
        .split(',')
        .map(|s| s.trim().parse::<f32>().ok().filter(|v| v.is_finite() && ok(*v)))
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(bad)?;
    if values.len() != channels {
        return Err(bad());
    }
    Ok(values)
}
