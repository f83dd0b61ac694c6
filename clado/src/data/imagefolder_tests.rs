//! `imagefolder:` data: the flags' grammar, the listing, choosing before decoding, the limits,
//! and the pixels against Pillow (torchvision's own preprocessing, run live).

use super::imagefolder::{Folder, MAX_IMAGE_BYTES};
use super::*;
use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use std::io::Cursor;
use std::path::Path;

fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A photo-like `w`×`h` RGB image: smooth gradients, a few sharp-edged discs and noise, so that
/// the resize meets both flat areas and edges.
fn photo(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let discs: Vec<(f32, f32, f32, [u8; 3])> = (0..6)
        .map(|_| {
            (
                rng.random_range(0.0..w as f32),
                rng.random_range(0.0..h as f32),
                rng.random_range(3.0..(w.min(h) as f32 / 3.0).max(4.0)),
                [rng.random(), rng.random(), rng.random()],
            )
        })
        .collect();
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut p = [
            255.0 * fx,
            255.0 * fy,
            127.5 + 127.5 * ((fx * 7.0).sin() * (fy * 5.0).cos()),
        ];
        for &(cx, cy, r, c) in &discs {
            if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r {
                p = c.map(f32::from);
            }
        }
        Rgb(p.map(|v| (v + rng.random_range(-12.0..12.0)).clamp(0.0, 255.0) as u8))
    })
}

fn save(img: &DynamicImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let format = ImageFormat::from_path(path).unwrap();
    img.save_with_format(path, format).unwrap();
}

fn flags<'a>(preset: Option<&'a str>) -> PreprocessFlags<'a> {
    PreprocessFlags {
        preset,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- Pillow

/// torchvision's evaluation transforms on PIL images, written out from torchvision's code
/// (`Resize`: `_compute_resized_output_size`, then PIL's BILINEAR resize unless the size is
/// unchanged; `CenterCrop`: `int(round((size - crop) / 2.0))`; `ToTensor`: float32 `/ 255`;
/// `Normalize`: float32 `(x - mean) / std`), after `Image.open(f).convert("RGB")` as
/// `ImageFolder` loads. Also writes the JPEG variants of the PNGs with Pillow (libjpeg-turbo,
/// 4:2:0 chroma as Pillow saves by default), as most real photos are stored.
const PILLOW_SCRIPT: &str = r#"
import json, sys
import numpy as np
from PIL import Image
jobs = json.load(open(sys.argv[1]))
for src, dst, quality, mode, subsampling in jobs["jpegs"]:
    img = Image.open(src).convert(mode)
    img.save(dst, quality=quality, subsampling=subsampling)
for j in jobs["refs"]:
    img = Image.open(j["file"]).convert("RGB")
    if j["grayscale"]:
        img = img.convert("L")
    if j["resize"]:
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = j["resize"], int(j["resize"] * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if j["crop"]:
        c = j["crop"]
        w, h = img.size
        top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        img = img.crop((left, top, left + c, top + c))
    x = np.asarray(img, dtype=np.uint8)
    if x.ndim == 2:
        x = x[:, :, None]
    t = x.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.array(j["mean"], dtype=np.float32)[:, None, None]
    std = np.array(j["std"], dtype=np.float32)[:, None, None]
    np.save(j["out"], ((t - mean) / std).astype(np.float32))
"#;

/// The venv's python with Pillow and numpy (`make setup-venv`).
fn pillow_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-venv` (Pillow is the reference)",
        python.display()
    );
    python
}

/// The tolerances are in 8-bit levels: a difference |Δ| in the normalised value is |Δ|·std·255
/// levels (1 level is 0.0175 after ImageNet's smallest std, 0.224).
///
/// PNG decoding is exact, so the PNG differences are the resize's: fast_image_resize rounds its
/// filter weights to 16 bits where Pillow keeps 22, so a sum that falls (almost) exactly
/// between two levels may round the other way: at most 1 level per pass, 2 after the horizontal
/// and vertical passes (seen once, at a 1.25× reduction; 1 elsewhere), in under 1% of values
/// (mean under 0.1 level; 0.07 seen).
const PILLOW_PNG_MAX_LEVELS: f32 = 2.0;
const PILLOW_PNG_MEAN_LEVELS: f32 = 0.1;
/// JPEG adds the decoders' differences, zune-jpeg against Pillow's libjpeg-turbo. In 4:4:4 and
/// gray files they are the IDCT's and colour conversion's rounding: up to 3 levels, mean 0.014.
/// In 4:2:0 files (Pillow's and most cameras' default) zune-jpeg upsamples the chroma in two
/// rounded steps where libjpeg-turbo rounds once, and differs near sharp colour edges: up to 12
/// levels before any resize (4 after the imagenet preset's), mean up to 0.41 level. The bounds
/// are those seen, rounded up: 16 levels, mean 0.5.
const PILLOW_JPEG_MAX_LEVELS: f32 = 16.0;
const PILLOW_JPEG_MEAN_LEVELS: f32 = 0.5;
/// Float32 rounding of the normalised values, in levels.
const LEVEL_SLACK: f32 = 1e-3;

#[test]
fn pixels_match_pillow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Sizes: ImageNet's usual landscape and portrait, an odd one whose crop offsets are halves
    // (257 - 224 = 33: Python's round takes 16.5 to 16), one already 256 on its short side
    // (no resize), an upscale, a large downscale, a thin one.
    let sizes = [
        (500, 375),
        (375, 500),
        (257, 300),
        (256, 320),
        (100, 80),
        (1024, 683),
        (640, 227),
    ];
    let mut files = Vec::new();
    let mut jpegs = Vec::new();
    for (k, &(w, h)) in sizes.iter().enumerate() {
        let png = d.join(format!("p{k}.png"));
        save(&DynamicImage::ImageRgb8(photo(w, h, k as u64)), &png);
        files.push(png.clone());
        // Pillow's default chroma subsampling is 4:2:0 (2); 0 is 4:4:4.
        for (tag, mode, quality, subsampling) in [
            ("420", "RGB", 90, 2),
            ("444", "RGB", 90, 0),
            ("L", "L", 85, 0),
            ("CMYK", "CMYK", 90, 0),
        ] {
            if tag != "420" && k > 1 {
                continue;
            }
            let jpg = d.join(format!("p{k}_{tag}.jpg"));
            jpegs.push(serde_json::json!([png, jpg, quality, mode, subsampling]));
            files.push(jpg);
        }
    }
    // PNG colour types other than RGB: gray, gray+alpha, RGBA (alpha dropped), 16-bit.
    let base = DynamicImage::ImageRgb8(photo(300, 200, 99));
    for (name, img) in [
        ("gray.png", DynamicImage::ImageLuma8(base.to_luma8())),
        ("rgba.png", DynamicImage::ImageRgba8(base.to_rgba8())),
    ] {
        save(&img, &d.join(name));
        files.push(d.join(name));
    }

    let presets: Vec<(&str, Preprocess)> = vec![
        ("imagenet", Preprocess::imagenet()),
        ("decode only", Preprocess::none(3)),
        (
            "grayscale 64/56",
            Preprocess::from_flags(&PreprocessFlags {
                preset: Some("none"),
                resize: Some(64),
                crop: Some(56),
                mean: Some("0.5"),
                std: Some("0.25"),
                grayscale: true,
            })
            .unwrap(),
        ),
        (
            "upscale 600",
            Preprocess::from_flags(&PreprocessFlags {
                resize: Some(600),
                crop: Some(512),
                ..Default::default()
            })
            .unwrap(),
        ),
    ];
    let mut refs = Vec::new();
    for (p, (_, pre)) in presets.iter().enumerate() {
        for (f, file) in files.iter().enumerate() {
            refs.push(serde_json::json!({
                "file": file, "out": d.join(format!("ref_{p}_{f}.npy")),
                "grayscale": pre.grayscale, "resize": pre.resize, "crop": pre.crop,
                "mean": pre.mean, "std": pre.std,
            }));
        }
    }
    let jobs = d.join("jobs.json");
    std::fs::write(&jobs, serde_json::json!({"jpegs": jpegs, "refs": refs}).to_string()).unwrap();
    let out = std::process::Command::new(pillow_python())
        .args(["-c", PILLOW_SCRIPT])
        .arg(&jobs)
        .output()
        .expect("run Pillow");
    assert!(out.status.success(), "Pillow: {}", String::from_utf8_lossy(&out.stderr));

    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for (p, (what, pre)) in presets.iter().enumerate() {
        for (f, file) in files.iter().enumerate() {
            let want: ndarray::ArrayD<f32> = ndarray_npy::read_npy(d.join(format!("ref_{p}_{f}.npy"))).unwrap();
            let bytes = std::fs::read(file).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let (shape, got) = bytes::decode_image(&name, &bytes, pre).unwrap();
            assert_eq!(&shape[..], want.shape(), "{what}: {name}");
            let plane = shape[1] * shape[2];
            // The difference in 8-bit levels: |Δ| · std · 255.
            let levels: Vec<f32> = got
                .iter()
                .zip(want.as_slice().unwrap())
                .enumerate()
                .map(|(i, (a, b))| (a - b).abs() * pre.std[i / plane] * 255.0)
                .collect();
            let max = levels.iter().copied().fold(0f32, f32::max);
            let mean = levels.iter().sum::<f32>() / levels.len() as f32;
            let (max_tol, mean_tol) = match name.ends_with(".png") {
                true => (PILLOW_PNG_MAX_LEVELS, PILLOW_PNG_MEAN_LEVELS),
                false => (PILLOW_JPEG_MAX_LEVELS, PILLOW_JPEG_MEAN_LEVELS),
            };
            let line = format!("{what:16} {name:14} max {max:5.2} levels, mean {mean:.4}");
            if max > max_tol + LEVEL_SLACK || mean > mean_tol {
                failures.push(line.clone());
            }
            report.push(line);
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "beyond the tolerances:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------- flags and sizes

#[test]
fn presets_and_overrides() {
    assert_eq!(Preprocess::from_flags(&flags(None)).unwrap(), Preprocess::imagenet());
    assert_eq!(
        Preprocess::from_flags(&flags(Some("imagenet"))).unwrap(),
        Preprocess::imagenet()
    );
    assert_eq!(
        Preprocess::from_flags(&flags(Some("none"))).unwrap(),
        Preprocess::none(3)
    );
    assert_eq!(
        Preprocess::imagenet().to_string(),
        "resize 256, crop 224, mean 0.485,0.456,0.406, std 0.229,0.224,0.225"
    );
    let gray = Preprocess::from_flags(&PreprocessFlags {
        preset: Some("none"),
        resize: Some(32),
        grayscale: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        gray,
        Preprocess {
            grayscale: true,
            resize: Some(32),
            crop: None,
            mean: vec![0.0],
            std: vec![1.0]
        }
    );
    assert_eq!(gray.to_string(), "grayscale, resize 32, no crop, mean 0, std 1");
    let custom = Preprocess::from_flags(&PreprocessFlags {
        crop: Some(200),
        mean: Some("0.5, 0.5,0.5"),
        std: Some("0.25,0.5,1"),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((custom.resize, custom.crop), (Some(256), Some(200)));
    assert_eq!((custom.mean, custom.std), (vec![0.5; 3], vec![0.25, 0.5, 1.0]));

    let bad = |f: PreprocessFlags<'_>, words: &[&str]| {
        let e = err_text(Preprocess::from_flags(&f));
        assert!(words.iter().all(|w| e.contains(w)), "{e}");
    };
    bad(
        flags(Some("inception")),
        &["--preprocess 'inception'", "imagenet or none"],
    );
    bad(
        PreprocessFlags {
            resize: Some(0),
            ..Default::default()
        },
        &["--resize 0"],
    );
    bad(
        PreprocessFlags {
            crop: Some(0),
            ..Default::default()
        },
        &["--crop 0"],
    );
    bad(
        PreprocessFlags {
            resize: Some(200),
            ..Default::default()
        },
        &["--crop 224", "--resize 200"],
    );
    bad(
        PreprocessFlags {
            mean: Some("0.5,0.5"),
            ..Default::default()
        },
        &["--mean '0.5,0.5'", "3 comma-separated"],
    );
    bad(
        PreprocessFlags {
            mean: Some("a,b,c"),
            ..Default::default()
        },
        &["--mean 'a,b,c'"],
    );
    bad(
        PreprocessFlags {
            mean: Some("nan,0,0"),
            ..Default::default()
        },
        &["--mean 'nan,0,0'", "finite"],
    );
    bad(
        PreprocessFlags {
            std: Some("1,0,1"),
            ..Default::default()
        },
        &["--std '1,0,1'", "positive"],
    );
    bad(
        PreprocessFlags {
            grayscale: true,
            ..Default::default()
        },
        &["--mean", "imagenet preset has 3", "--grayscale gives 1"],
    );
    bad(
        PreprocessFlags {
            grayscale: true,
            mean: Some("0.5"),
            ..Default::default()
        },
        &["--std", "imagenet preset has 3"],
    );
}

#[test]
fn sizes_and_crop_offsets_follow_torchvision() {
    let p = Preprocess::imagenet();
    // int(256 · long / short), the short side 256.
    assert_eq!(p.resized_size(500, 375), (341, 256));
    assert_eq!(p.resized_size(375, 500), (256, 341));
    assert_eq!(p.resized_size(640, 227), (721, 256));
    assert_eq!(p.resized_size(100, 80), (320, 256));
    assert_eq!(p.resized_size(300, 300), (256, 256));
    assert_eq!(Preprocess::none(3).resized_size(500, 375), (500, 375));
    // int(round((size - crop) / 2.0)), halves to even: 16.5 → 16, 17.5 → 18.
    assert_eq!(crop_offsets(257, 300, 224), (16, 38));
    assert_eq!(crop_offsets(259, 259, 224), (18, 18));
    assert_eq!(crop_offsets(224, 224, 224), (0, 0));
    assert_eq!(p.output_size(500, 375), Ok((224, 224)));
    let crop_only = Preprocess {
        resize: None,
        ..Preprocess::imagenet()
    };
    let e = crop_only.output_size(300, 200).unwrap_err();
    assert!(e.contains("300×200") && e.contains("smaller than --crop 224"), "{e}");
}

#[test]
fn spec_takes_the_preprocessing_flags() {
    let spec = DataSpec::parse("imagefolder:/data/imagenet").unwrap();
    assert_eq!(
        spec,
        DataSpec::ImageFolder {
            dir: "/data/imagenet".into(),
            preprocess: Preprocess::imagenet()
        }
    );
    assert_eq!(spec.to_string(), "imagefolder:/data/imagenet");
    let none = spec.clone().with_preprocess(&flags(Some("none"))).unwrap();
    assert_eq!(none.preprocess(), Some(&Preprocess::none(3)));
    let cifar = DataSpec::parse("cifar10:/d").unwrap();
    assert_eq!(cifar.clone().with_preprocess(&flags(None)).unwrap(), cifar);
    let e = err_text(cifar.with_preprocess(&PreprocessFlags {
        crop: Some(32),
        ..Default::default()
    }));
    assert!(
        e.contains("--crop applies to imagefolder: data only") && e.contains("cifar10"),
        "{e}"
    );
    let e = err_text(
        DataSpec::parse("npy:x.npy,y.npy")
            .unwrap()
            .with_preprocess(&PreprocessFlags {
                grayscale: true,
                ..Default::default()
            }),
    );
    assert!(e.contains("--grayscale applies to imagefolder"), "{e}");
}

// ---------------------------------------------------------------- folders

fn png_bytes(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_bytes(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A 4×3 gray image whose every pixel is `v`.
fn flat(v: u8) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 3, image::Luma([v])))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Pixels as they are, scaled to [0, 1], one channel.
fn gray_none() -> Preprocess {
    Preprocess::none(1)
}

/// The value every pixel of each image of `ds` holds (the images are flat).
fn flat_values(ds: &Dataset) -> Vec<u8> {
    (0..ds.len())
        .map(|i| {
            let v = ds.image(i)[0];
            assert!(ds.image(i).iter().all(|&x| x == v));
            (v * 255.0).round() as u8
        })
        .collect()
}

#[test]
fn classes_sorted_by_name_give_the_labels_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Byte order: "B" < "a" < "c10" < "c2"; names of one class likewise.
    for (class, file, v) in [
        ("c2", "x.png", 1),
        ("a", "b.PNG", 2),
        ("a", "a.png", 3),
        ("B", "z.jpeg", 4),
        ("c10", "10.png", 5),
        ("c10", "9.png", 6),
    ] {
        let bytes = match file.ends_with(".jpeg") {
            true => jpeg_bytes(&flat(v * 40)),
            false => png_bytes(&flat(v * 40)),
        };
        write(&d.join(class).join(file), &bytes);
    }
    // Skipped: hidden entries anywhere, files beside the class folders.
    write(&d.join("a/.DS_Store"), b"junk");
    write(&d.join(".cache/x.png"), &png_bytes(&flat(0)));
    write(&d.join("README.txt"), b"classes: ...");

    let f = Folder::open(d, Split::Test, &gray_none()).unwrap();
    assert_eq!((f.len(), f.num_classes()), (6, 4));
    assert_eq!(f.path(0), d.join("B/z.jpeg"));
    let ds = load(
        &DataSpec::ImageFolder {
            dir: d.into(),
            preprocess: gray_none(),
        },
        Split::Test,
    )
    .unwrap();
    assert_eq!(ds.labels, vec![0, 1, 1, 2, 2, 3]);
    assert_eq!(flat_values(&ds), vec![160, 120, 80, 200, 240, 40]);
    assert_eq!((ds.image_shape(), ds.num_classes), ([1, 3, 4], 4));
    assert_eq!(ds.source, format!("imagefolder:{} (test)", d.display()));
}

#[test]
fn train_and_val_folders_are_the_splits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (split, class, v) in [
        ("train", "a", 10),
        ("train", "b", 20),
        ("val", "a", 30),
        ("val", "b", 40),
    ] {
        write(&d.join(split).join(class).join("0.png"), &png_bytes(&flat(v)));
    }
    let spec = DataSpec::ImageFolder {
        dir: d.into(),
        preprocess: gray_none(),
    };
    assert_eq!(flat_values(&load(&spec, Split::Train).unwrap()), vec![10, 20]);
    assert_eq!(flat_values(&load(&spec, Split::Test).unwrap()), vec![30, 40]);
    std::fs::remove_dir_all(d.join("val")).unwrap();
    let e = err_text(load(&spec, Split::Test));
    assert!(
        e.contains("has a train/ folder but no val/") && e.contains("test split reads val/"),
        "{e}"
    );
}

#[test]
fn bad_folders_name_the_folder_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let open = |sub: &str| err_text(Folder::open(&d.join(sub), Split::Test, &gray_none()));
    std::fs::create_dir(d.join("empty")).unwrap();
    let e = open("empty");
    assert!(e.contains("empty") && e.contains("no class folders"), "{e}");
    let e = open("missing");
    assert!(e.contains("missing") && e.contains("no such folder"), "{e}");
    write(&d.join("noimages/a/0.png"), &png_bytes(&flat(1)));
    std::fs::create_dir_all(d.join("noimages/b")).unwrap();
    let e = open("noimages");
    assert!(
        e.contains("noimages/b") && e.contains("class folder without images"),
        "{e}"
    );
    write(&d.join("nested/a/deeper/0.png"), &png_bytes(&flat(1)));
    let e = open("nested");
    assert!(
        e.contains("nested/a/deeper") && e.contains("folder inside a class folder"),
        "{e}"
    );
    write(&d.join("text/a/0.png"), &png_bytes(&flat(1)));
    write(&d.join("text/a/labels.txt"), b"0\n");
    let e = open("text");
    assert!(
        e.contains("text/a/labels.txt") && e.contains(".jpg, .jpeg or .png"),
        "{e}"
    );
}

#[test]
fn only_the_chosen_images_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in 0..6u8 {
        write(&d.join(format!("a/{k}.png")), &png_bytes(&flat(k)));
    }
    // Sorted among them: 0, 1, 2, 3.jpg, 3.png, 4, 5.
    write(&d.join("a/3.jpg"), b"\xff\xd8\xff\xe0 not really a JPEG");
    let f = Folder::open(d, Split::Test, &gray_none()).unwrap();
    assert_eq!(f.path(3), d.join("a/3.jpg"));
    let spec = DataSpec::ImageFolder {
        dir: d.into(),
        preprocess: gray_none(),
    };
    let chosen = open(&spec, Split::Test).unwrap().select(vec![0, 2, 4, 6]).unwrap();
    assert_eq!(chosen.image_shape(), [1, 3, 4]);
    assert_eq!(flat_values(&chosen.load().unwrap()), vec![0, 2, 3, 5]);
    let e = err_text(open(&spec, Split::Test).unwrap().select(vec![1, 3]));
    assert!(e.contains("a/3.jpg") && e.contains("JPEG"), "{e}");
}

#[test]
fn a_selection_loads_the_same_in_chunks_and_a_streamed_one_may_exceed_one_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in 0..7u8 {
        write(
            &d.join(format!("{}/{k}.png", ["a", "b"][usize::from(k % 2)])),
            &png_bytes(&flat(k)),
        );
    }
    let spec = DataSpec::ImageFolder {
        dir: d.into(),
        preprocess: gray_none(),
    };
    let idx = vec![0, 1, 3, 4, 6];
    let whole = open(&spec, Split::Test)
        .unwrap()
        .select(idx.clone())
        .unwrap()
        .load()
        .unwrap();
    for chunk in [1, 2, 5, 9] {
        let parts: Vec<Dataset> = open(&spec, Split::Test)
            .unwrap()
            .select_streamed(idx.clone())
            .unwrap()
            .load_in_chunks(chunk)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(parts.len(), idx.len().div_ceil(chunk));
        assert!(parts.iter().all(|p| p.len() <= chunk));
        let images: Vec<f32> = parts.iter().flat_map(|p| p.images.iter().copied()).collect();
        let labels: Vec<u32> = parts.iter().flat_map(|p| p.labels.iter().copied()).collect();
        assert_eq!(
            (images, labels),
            (whole.images.clone(), whole.labels.clone()),
            "chunks of {chunk}"
        );
    }
    // Headers are still checked when streamed: a broken chosen file is an error up front.
    write(&d.join("b/7.png"), b"not an image");
    let e = err_text(open(&spec, Split::Test).unwrap().select_streamed(vec![7]));
    assert!(e.contains("b/7.png"), "{e}");
}

// ---------------------------------------------------------------- pixels, limits, bad files

#[test]
fn values_are_torchvision_to_tensor_and_normalize() {
    let pixels = [
        [10u8, 200, 30],
        [0, 0, 0],
        [255, 255, 255],
        [1, 128, 254],
        [77, 66, 55],
        [9, 8, 7],
    ];
    let img = RgbImage::from_fn(3, 2, |x, y| Rgb(pixels[(y * 3 + x) as usize]));
    let rgb = DynamicImage::ImageRgb8(img);
    let pre = Preprocess::from_flags(&PreprocessFlags {
        preset: Some("none"),
        mean: Some("0.1,0.2,0.3"),
        std: Some("0.5,0.6,0.7"),
        ..Default::default()
    })
    .unwrap();
    // RGB and RGBA (alpha dropped) come out the same, channel by channel.
    for bytes in [png_bytes(&rgb), png_bytes(&DynamicImage::ImageRgba8(rgb.to_rgba8()))] {
        let (shape, got) = bytes::decode_image("x.png", &bytes, &pre).unwrap();
        assert_eq!(shape, [3, 2, 3]);
        for c in 0..3 {
            for (i, p) in pixels.iter().enumerate() {
                let want = (f32::from(p[c]) / 255.0 - pre.mean[c]) / pre.std[c];
                assert_eq!(got[c * 6 + i], want, "channel {c}, pixel {i}");
            }
        }
    }
    // Pillow's L: (10·19595 + 200·38470 + 30·7471 + 2^15) >> 16 = 124.
    let (shape, got) = bytes::decode_image("x.png", &png_bytes(&rgb), &Preprocess::none(1)).unwrap();
    assert_eq!(shape, [1, 2, 3]);
    assert_eq!(got[0], 124.0 / 255.0);
    // A gray image for a 3-channel input: converted to RGB, the value in every channel.
    let (shape, got) = bytes::decode_image("g.png", &png_bytes(&flat(51)), &Preprocess::none(3)).unwrap();
    assert_eq!(shape, [3, 3, 4]);
    assert!(got.iter().all(|&v| v == 51.0 / 255.0));
}

/// A PNG that is only a header declaring `width`×`height` RGB pixels (and an empty IDAT).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

/// A small JPEG whose frame header is patched to declare `width`×`height`.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg_bytes(&DynamicImage::ImageRgb8(photo(16, 16, 1)));
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn declared_sizes_beyond_the_limit_are_refused_from_the_header() {
    let pre = Preprocess::imagenet();
    let e = err_text(bytes::decode_image("huge.png", &png_header(100_000, 100_000), &pre));
    assert!(
        e.contains("huge.png") && e.contains("PNG of 100000×100000 pixels") && e.contains("above the 512.0 MiB limit"),
        "{e}"
    );
    let e = err_text(bytes::decode_image("huge.jpg", &jpeg_declaring(60_000, 50_000), &pre));
    assert!(
        e.contains("huge.jpg") && e.contains("JPEG of 60000×50000 pixels"),
        "{e}"
    );
    // Small in the file, huge once resized: 1×8000 → 256×2,048,000.
    let thin = png_bytes(&DynamicImage::ImageLuma8(GrayImage::new(1, 8000)));
    let e = err_text(bytes::decode_image("thin.png", &thin, &pre));
    assert!(
        e.contains("256×2048000 resized") && e.contains("limit of one image"),
        "{e}"
    );
    // An empty image.
    let e = err_text(bytes::decode_image("empty.png", &png_header(0, 5), &pre));
    assert!(e.contains("empty.png"), "{e}");
    // A file larger than any image we decode is not read at all (a sparse file here).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("a/big.png");
    write(&big, b"");
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(MAX_IMAGE_BYTES + 1)
        .unwrap();
    let f = Folder::open(dir.path(), Split::Test, &pre).unwrap();
    let e = err_text(f.outline(&[0], u64::MAX, "src"));
    assert!(e.contains("a/big.png") && e.contains("512 MiB file"), "{e}");
}

#[test]
fn corrupt_and_foreign_files_are_input_errors() {
    let pre = Preprocess::imagenet();
    let photo_img = DynamicImage::ImageRgb8(photo(300, 260, 5));
    let (jpg, png) = (jpeg_bytes(&photo_img), png_bytes(&photo_img));
    for (name, bytes, words) in [
        (
            "notes.jpg",
            b"these are not pixels".to_vec(),
            &["notes.jpg", "not a JPEG or PNG"][..],
        ),
        ("empty.png", Vec::new(), &["empty.png", "not a JPEG or PNG"]),
        (
            "gif.png",
            b"GIF89a\x01\x00\x01\x00".to_vec(),
            &["gif.png", "not a JPEG or PNG"],
        ),
        ("cut.png", png[..png.len() / 2].to_vec(), &["cut.png", "unreadable PNG"]),
        ("head.jpg", jpg[..200].to_vec(), &["head.jpg", "truncated JPEG"]),
        ("cut.jpg", jpg[..jpg.len() / 2].to_vec(), &["cut.jpg", "truncated JPEG"]),
        (
            "header.jpg",
            [&jpg[..4], &[0xff; 40][..], &[0xff, 0xda, 0xff, 0xd9]].concat(),
            &["header.jpg", "unreadable JPEG"],
        ),
    ] {
        let e = match bytes::decode_image(name, &bytes, &pre) {
            Ok(_) => panic!("{name}: decoded without an error"),
            Err(e) => e.to_string(),
        };
        assert!(words.iter().all(|w| e.contains(w)), "{name}: {e}");
    }
    // Bytes after the end-of-image marker are ignored, as by Pillow.
    let padded = [&jpg[..], b"trailing bytes"].concat();
    assert_eq!(
        bytes::decode_image("padded.jpg", &padded, &pre).unwrap(),
        bytes::decode_image("photo.jpg", &jpg, &pre).unwrap()
    );
}

#[test]
fn shapes_must_agree_and_fit_before_anything_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("a/0.png"), &png_bytes(&flat(1)));
    write(&d.join("a/1.png"), &png_bytes(&flat(2)));
    write(
        &d.join("b/0.png"),
        &png_bytes(&DynamicImage::ImageLuma8(GrayImage::new(5, 3))),
    );
    let f = Folder::open(d, Split::Test, &gray_none()).unwrap();
    let e = err_text(f.outline(&[0, 1, 2], u64::MAX, "src"));
    assert!(
        e.contains("b/0.png")
            && e.contains("comes out 5×3")
            && e.contains("a/0.png comes out 4×3")
            && e.contains("--crop"),
        "{e}"
    );
    let crop3 = Preprocess {
        crop: Some(3),
        ..gray_none()
    };
    let f = Folder::open(d, Split::Test, &crop3).unwrap();
    assert_eq!(f.outline(&[0, 1, 2], u64::MAX, "src").unwrap().image_shape, [1, 3, 3]);
    // 3 images of 1×3×3 float32 take 108 bytes.
    let e = err_text(f.outline(&[0, 1, 2], 100, "imagefolder:d (test)"));
    assert!(
        e.contains("imagefolder:d (test)")
            && e.contains("3 images of 1×3×3")
            && e.contains("--samples N with N at most 2"),
        "{e}"
    );
    let crop4 = Preprocess {
        crop: Some(4),
        ..gray_none()
    };
    let f = Folder::open(d, Split::Test, &crop4).unwrap();
    let e = err_text(f.outline(&[1], u64::MAX, "src"));
    assert!(
        e.contains("a/1.png") && e.contains("4×3 is smaller than --crop 4"),
        "{e}"
    );
}

#[test]
fn loading_is_the_same_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in 0..9u64 {
        let (w, h) = (260 + 37 * k as u32, 300 - 11 * k as u32);
        let img = DynamicImage::ImageRgb8(photo(w, h, k));
        let bytes = if k % 2 == 0 { png_bytes(&img) } else { jpeg_bytes(&img) };
        write(
            &d.join(format!("c{}/{k}.{}", k % 3, if k % 2 == 0 { "png" } else { "jpg" })),
            &bytes,
        );
    }
    let spec = DataSpec::ImageFolder {
        dir: d.into(),
        preprocess: Preprocess::imagenet(),
    };
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| load(&spec, Split::Train).unwrap())
    };
    let one = on(1);
    assert_eq!((one.len(), one.image_shape()), (9, [3, 224, 224]));
    assert_eq!(one, on(4));
}
