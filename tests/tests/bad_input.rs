//! Hostile inputs through the real binaries, one table per tool.
//!
//! Every case must end the same way (docs/definitions.md, "Files between the tools"):
//! - exit code 2;
//! - exactly one line on stderr, `TOOL: ...`, that names the problem: the file (or flag) and
//!   what was wrong or expected (each case lists words the line must contain);
//! - nothing on stdout;
//! - no output file created, and an output file that existed before left byte for byte as it
//!   was (each case runs twice: outputs absent, then outputs holding an earlier result), and no
//!   temporary file of the atomic writer left behind.
//!
//! The inputs are small (a PyTorch-saved random ResNet-20, 16 preprocessed images as `npy:`
//! data) so that a debug build runs the whole table in seconds.

use clado::format::{Alloc, Index};
use clado_tests::{alloc_of, choice, fixture_checkpoint, resnet20_layer_names, run_in, test_index, workspace_root};
use ndarray::{Array1, Array2, Array3, Array4};
use ndarray_npy::WriteNpyExt;
use serde_json::{json, Value};
use std::path::Path;

/// What an output file holds before a failing run: it must still hold it afterwards.
const EARLIER_RESULT: &[u8] = b"an earlier result that a failed run must leave alone\n";

/// Images in the `npy:` data set (the tests use at most 8 of them).
const IMAGES: usize = 16;

/// One malformed input: the arguments, what the message must contain.
struct Case {
    what: &'static str,
    args: Vec<String>,
    stdin: Vec<u8>,
    expect: Vec<&'static str>,
}

/// `base` with the value of each flag in `set` replaced (or the flag appended when absent). A
/// flag set to `None` is removed with its value; flags given as `("--flag", Some(""))` with an
/// empty value are appended bare (switches).
fn with(base: &[&str], set: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for (flag, value) in set {
        match args.iter().position(|a| a == flag) {
            Some(at) => match value {
                Some(v) => args[at + 1] = v.to_string(),
                None => {
                    args.drain(at..at + 2);
                }
            },
            None => {
                if let Some(v) = value {
                    args.push(flag.to_string());
                    if !v.is_empty() {
                        args.push(v.to_string());
                    }
                }
            }
        }
    }
    args
}

fn case(what: &'static str, args: Vec<String>, expect: &[&'static str]) -> Case {
    Case {
        what,
        args,
        stdin: Vec::new(),
        expect: expect.to_vec(),
    }
}

/// Run every case in `dir` (twice: outputs absent, then present) and report every failure.
fn check_all(tool: &str, dir: &Path, outputs: &[&str], cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        for preexisting in [false, true] {
            for o in outputs {
                let p = dir.join(o);
                if preexisting {
                    std::fs::write(&p, EARLIER_RESULT).unwrap();
                } else if p.exists() {
                    std::fs::remove_file(&p).unwrap();
                }
            }
            let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            let r = run_in(tool, &args, &c.stdin, Some(dir));
            let mut problems = Vec::new();
            if r.status != Some(2) {
                problems.push(format!("exit {:?}, expected 2", r.status));
            }
            let lines: Vec<&str> = r.stderr.lines().collect();
            if lines.len() != 1 {
                problems.push(format!("{} lines on stderr, expected 1", lines.len()));
            }
            if !r.stderr.starts_with(&format!("{tool}: ")) {
                problems.push(format!("stderr does not start with '{tool}: '"));
            }
            for e in &c.expect {
                if !r.stderr.contains(e) {
                    problems.push(format!("message lacks '{e}'"));
                }
            }
            if !r.stdout.is_empty() {
                problems.push(format!("{} bytes on stdout", r.stdout.len()));
            }
            for o in outputs {
                let p = dir.join(o);
                match (preexisting, std::fs::read(&p)) {
                    (false, Ok(_)) => problems.push(format!("{o} was created")),
                    (true, Ok(bytes)) if bytes != EARLIER_RESULT => problems.push(format!("{o} was changed")),
                    (true, Err(_)) => problems.push(format!("{o} was removed")),
                    _ => {}
                }
            }
            for e in std::fs::read_dir(dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    problems.push(format!("temporary file {name} left behind"));
                    std::fs::remove_file(dir.join(&name)).unwrap();
                }
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{tool} [{}] {:?} (outputs {}): {}\n    stderr: {}",
                    c.what,
                    c.args,
                    if preexisting { "present" } else { "absent" },
                    problems.join("; "),
                    r.stderr.trim_end().replace('\n', "\n            ")
                ));
                break;
            }
        }
    }
    for o in outputs {
        let _ = std::fs::remove_file(dir.join(o));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn npy_bytes<T: WriteNpyExt + ?Sized>(a: &T) -> Vec<u8> {
    let mut b = Vec::new();
    a.write_npy(&mut b).unwrap();
    b
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn write_json(dir: &Path, name: &str, v: &Value) {
    write(dir, name, serde_json::to_vec_pretty(v).unwrap());
}

/// A JSON document with `edit` applied to its value.
fn edited<T: serde::Serialize>(doc: &T, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = serde_json::to_value(doc).unwrap();
    edit(&mut v);
    v
}

/// Files that are broken whatever they stand for.
fn write_generic_bad_files(dir: &Path) {
    write(dir, "empty.npy", b"");
    write(dir, "empty.json", b"");
    write(dir, "text.npy", b"G,1,2\n3,4\n");
    write(dir, "text.json", b"version: 1\nlayers: []\n");
}

/// A matrix file in every broken way, beside the good `G.npy` (N×N).
fn write_bad_matrices(dir: &Path, g: &Array2<f64>) {
    let n = g.nrows();
    let good = npy_bytes(g);
    write(dir, "G.npy", &good);
    write(dir, "G_trunc.npy", &good[..good.len() - 8]);
    write(dir, "G_header.npy", &good[..40]);
    write(dir, "G_i64.npy", npy_bytes(&g.mapv(|v| (v * 1e6) as i64)));
    write(dir, "G_1d.npy", npy_bytes(&Array1::from_iter(g.iter().copied())));
    write(
        dir,
        "G_3d.npy",
        npy_bytes(&Array3::from_shape_fn((1, n, n), |(_, i, j)| g[[i, j]])),
    );
    write(
        dir,
        "G_rect.npy",
        npy_bytes(&g.slice(ndarray::s![.., ..n - 1]).to_owned()),
    );
    write(
        dir,
        "G_small.npy",
        npy_bytes(&g.slice(ndarray::s![..n - 3, ..n - 3]).to_owned()),
    );
    let mut nan = g.clone();
    nan[[1, 2]] = f64::NAN;
    write(dir, "G_nan.npy", npy_bytes(&nan));
    let mut inf = g.clone();
    inf[[3, 3]] = f64::INFINITY;
    write(dir, "G_inf.npy", npy_bytes(&inf));
}

/// The matrix cases shared by `psd` and `allocate`; `m(file)` is the command line reading the
/// matrix from `file`.
fn matrix_cases(m: impl Fn(&'static str) -> Vec<String>) -> Vec<Case> {
    vec![
        case("truncated data", m("G_trunc.npy"), &["G_trunc.npy", "truncated"]),
        case("truncated header", m("G_header.npy"), &["G_header.npy", "truncated"]),
        case("wrong dtype", m("G_i64.npy"), &["G_i64.npy", "float64"]),
        case("1-D", m("G_1d.npy"), &["G_1d.npy", "2-D"]),
        case("3-D", m("G_3d.npy"), &["G_3d.npy", "2-D"]),
        case("not square", m("G_rect.npy"), &["G_rect.npy", "×"]),
        case("NaN entry", m("G_nan.npy"), &["G_nan.npy", "[1, 2]", "NaN"]),
        case("infinite entry", m("G_inf.npy"), &["G_inf.npy", "[3, 3]", "inf"]),
        case("empty file", m("empty.npy"), &["empty.npy", "empty"]),
        case("not a .npy", m("text.npy"), &["text.npy", "not a .npy"]),
        case("missing file", m("nowhere.npy"), &["nowhere.npy"]),
    ]
}

/// A perturb-like index of 6 layers × 3 options and its matrix.
fn small_problem() -> (Index, Array2<f64>) {
    const OPTIONS: [&str; 3] = ["w2a8", "w4a8", "w8a8"];
    const PARAMS: [u64; 6] = [144, 2304, 2304, 4608, 512, 640];
    let index = test_index(&PARAMS, &OPTIONS);
    let k = OPTIONS.len();
    let n = PARAMS.len() * k;
    let g = Array2::from_shape_fn((n, n), |(u, v)| {
        let d = |x: usize| 4f64.powi(-(2 << (x % k)) / 2) * (1.0 + (x / k) as f64);
        if u == v {
            d(u)
        } else if u / k == v / k {
            0.0
        } else {
            0.01 * (d(u) * d(v)).sqrt()
        }
    });
    (index, g)
}

/// Index files in every broken way, beside the good `index.json`.
fn write_bad_indexes(dir: &Path, index: &Index) {
    write_json(dir, "index.json", &serde_json::to_value(index).unwrap());
    write_json(dir, "index_v1.json", &edited(index, |v| v["version"] = json!(1)));
    write_json(
        dir,
        "index_nover.json",
        &edited(index, |v| drop(v.as_object_mut().unwrap().remove("version"))),
    );
    write_json(dir, "index_field.json", &edited(index, |v| v["colour"] = json!("blue")));
    write_json(dir, "index_type.json", &edited(index, |v| v["samples"] = json!("many")));
    write_json(
        dir,
        "index_var.json",
        &edited(index, |v| v["variables"][4]["layer"] = json!(99)),
    );
    write_json(
        dir,
        "index_short.json",
        &edited(index, |v| {
            v["variables"].as_array_mut().unwrap().truncate(15);
        }),
    );
    write(dir, "index_trunc.json", &serde_json::to_vec(index).unwrap()[..100]);
}

fn index_cases(base: &[&str]) -> Vec<Case> {
    let i = |file: &'static str| with(base, &[("--index", Some(file))]);
    vec![
        case(
            "index: other version",
            i("index_v1.json"),
            &["index_v1.json", "older version"],
        ),
        case(
            "index: no version",
            i("index_nover.json"),
            &["index_nover.json", "version"],
        ),
        case(
            "index: unknown field",
            i("index_field.json"),
            &["index_field.json", "colour"],
        ),
        case(
            "index: wrong type",
            i("index_type.json"),
            &["index_type.json", "samples"],
        ),
        case(
            "index: size mismatch",
            i("index_short.json"),
            &["index_short.json", "15"],
        ),
        case("index: truncated", i("index_trunc.json"), &["index_trunc.json", "JSON"]),
        case("index: empty", i("empty.json"), &["empty.json", "empty"]),
        case("index: not JSON", i("text.json"), &["text.json", "JSON"]),
    ]
}

#[test]
fn psd_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (index, g) = small_problem();
    write_generic_bad_files(d);
    write_bad_matrices(d, &g);
    write_bad_indexes(d, &index);
    let base = [
        "G.npy",
        "-o",
        "out.npy",
        "--report",
        "report.json",
        "--index",
        "index.json",
    ];
    // psd takes the matrix as its first argument.
    let mut cases = matrix_cases(|file| {
        let mut a = with(&base, &[]);
        a[0] = file.to_string();
        a
    });
    cases.extend(index_cases(&base));
    cases.extend([
        case(
            "bad method",
            with(&base, &[("--method", Some("magic"))]),
            &["magic", "--method"],
        ),
        case(
            "conflicting -q and -v",
            with(&base, &[("-q", Some("")), ("-v", Some(""))]),
            &["--quiet", "--verbose"],
        ),
        case(
            "two outputs on stdout",
            with(&base, &[("-o", Some("-")), ("--report", Some("-"))]),
            &["--report -"],
        ),
        case(
            "conflict: -o and --report the same file",
            with(&base, &[("--report", Some("out.npy"))]),
            &["-o out.npy", "--report out.npy"],
        ),
        case(
            "output folder missing",
            with(&base, &[("-o", Some("no/such/dir/out.npy"))]),
            &["no/such/dir"],
        ),
        case(
            "unknown flag",
            with(&base, &[("--colour", Some("blue"))]),
            &["--colour"],
        ),
    ]);
    check_all("psd", d, &["out.npy", "report.json"], &cases);
}

#[test]
fn allocate_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (index, g) = small_problem();
    write_generic_bad_files(d);
    write_bad_matrices(d, &g);
    write_bad_indexes(d, &index);
    write_json(
        d,
        "index_dup.json",
        &edited(&index, |v| v["layers"][2]["name"] = json!("layer1")),
    );
    write_json(
        d,
        "index_opt.json",
        &edited(&index, |v| v["options"][0]["w_bits"] = json!(3)),
    );
    let base = [
        "--matrix",
        "G.npy",
        "--index",
        "index.json",
        "--avg-bits",
        "4",
        "-o",
        "alloc.json",
    ];
    let mut cases = matrix_cases(|file| with(&base, &[("--matrix", Some(file))]));
    cases.push(case(
        "matrix smaller than the index",
        with(&base, &[("--matrix", Some("G_small.npy"))]),
        &["G_small.npy", "15×15", "18 variables"],
    ));
    cases.extend(index_cases(&base));
    let set = |pairs: &[(&str, Option<&str>)]| with(&base, pairs);
    cases.extend([
        case(
            "index: variable of no layer",
            set(&[("--index", Some("index_var.json"))]),
            &["index_var.json", "99"],
        ),
        case(
            "index: layer twice",
            set(&[("--index", Some("index_dup.json"))]),
            &["index_dup.json", "layer1", "more than once"],
        ),
        case(
            "index: option bits disagree with its name",
            set(&[("--index", Some("index_opt.json"))]),
            &["index_opt.json", "w2a8"],
        ),
        case(
            "budget: not a number",
            set(&[("--avg-bits", Some("four"))]),
            &["--avg-bits four", "number"],
        ),
        case(
            "budget: negative",
            set(&[("--avg-bits", Some("-1"))]),
            &["--avg-bits -1"],
        ),
        case("budget: zero", set(&[("--size-mb", Some("0"))]), &["--size-mb 0"]),
        case(
            "budget: trailing junk",
            set(&[("--bops", Some("1e9x"))]),
            &["--bops 1e9x"],
        ),
        case(
            "budget: NaN",
            set(&[("--size-bits", Some("NaN"))]),
            &["--size-bits NaN"],
        ),
        case(
            "sweep: two numbers",
            set(&[("--avg-bits", None), ("--sweep", Some("avg-bits=2:8"))]),
            &["--sweep avg-bits=2:8", "START:STOP:STEP"],
        ),
        case(
            "sweep: unknown kind",
            set(&[("--avg-bits", None), ("--sweep", Some("colour=1:2:1"))]),
            &["colour", "budget kind"],
        ),
        case(
            "sweep: backwards",
            set(&[("--avg-bits", None), ("--sweep", Some("avg-bits=3:2:1"))]),
            &["--sweep avg-bits=3:2:1"],
        ),
        case(
            "sweep: too many",
            set(&[("--avg-bits", None), ("--sweep", Some("avg-bits=1:1e9:1e-3"))]),
            &["at most"],
        ),
        case(
            "conflict: sweep and the same budget",
            set(&[("--sweep", Some("avg-bits=2:3:1"))]),
            &["--sweep", "--avg-bits", "conflict"],
        ),
        case(
            "conflict: both inputs on stdin",
            set(&[("--matrix", Some("-")), ("--index", Some("-"))]),
            &["stdin"],
        ),
        case(
            "time limit zero",
            set(&[("--time-limit", Some("0"))]),
            &["--time-limit 0"],
        ),
        case("gap above one", set(&[("--gap", Some("2"))]), &["--gap 2"]),
        case(
            "pin: no '='",
            set(&[("--pin", Some("layer0"))]),
            &["--pin layer0", "LAYER=OPTION"],
        ),
        case(
            "pin: unknown layer",
            set(&[("--pin", Some("layer9=w4a8"))]),
            &["layer9"],
        ),
        case("pin: bad option", set(&[("--pin", Some("layer0=w3x"))]), &["w3x"]),
        case(
            "pin: option not measured",
            set(&[("--pin", Some("layer0=w2a2"))]),
            &["w2a2"],
        ),
        case(
            "bad method",
            set(&[("--method", Some("guess"))]),
            &["guess", "--method"],
        ),
        case("bad formulation", set(&[("--formulation", Some("magic"))]), &["magic"]),
        case(
            "missing --index",
            with(&["--matrix", "G.npy", "-o", "alloc.json"], &[]),
            &["--index"],
        ),
    ]);
    check_all("allocate", d, &["alloc.json"], &cases);
}

/// `npy:` data (16 images of 1×32×32, labels 0..9) and every broken variant; a bad IDX
/// (Fashion-MNIST) folder and a bad CIFAR-10 folder; broken checkpoints.
fn write_model_inputs(dir: &Path) {
    write_generic_bad_files(dir);
    let x = Array4::from_shape_fn((IMAGES, 1, 32, 32), |(n, _, h, w)| {
        ((n * 31 + h * 7 + w) as f32 * 0.1).sin()
    });
    let y = Array1::from_iter((0..IMAGES).map(|i| (i % 10) as i64));
    let xb = npy_bytes(&x);
    write(dir, "x.npy", &xb);
    write(dir, "y.npy", npy_bytes(&y));
    write(dir, "x_trunc.npy", &xb[..xb.len() - 100]);
    write(dir, "x_header.npy", &xb[..30]);
    write(dir, "x_f64.npy", npy_bytes(&x.mapv(f64::from)));
    write(
        dir,
        "x_3d.npy",
        npy_bytes(&x.index_axis(ndarray::Axis(1), 0).to_owned()),
    );
    write(dir, "x_rgb.npy", npy_bytes(&Array4::<f32>::zeros((IMAGES, 3, 32, 32))));
    let mut nan = x.clone();
    nan[[3, 0, 5, 5]] = f32::NAN;
    write(dir, "x_nan.npy", npy_bytes(&nan));
    let mut inf = x.clone();
    inf[[0, 0, 0, 1]] = f32::NEG_INFINITY;
    write(dir, "x_inf.npy", npy_bytes(&inf));
    write(
        dir,
        "y_short.npy",
        npy_bytes(&y.slice(ndarray::s![..IMAGES - 1]).to_owned()),
    );
    write(dir, "y_f32.npy", npy_bytes(&y.mapv(|v| v as f32)));
    write(
        dir,
        "y_2d.npy",
        npy_bytes(&y.clone().into_shape_with_order((IMAGES, 1)).unwrap()),
    );
    let mut neg = y.clone();
    neg[4] = -1;
    write(dir, "y_neg.npy", npy_bytes(&neg));
    let mut big = y.clone();
    big[7] = 10;
    write(dir, "y_big.npy", npy_bytes(&big));

    // Fashion-MNIST: the images file's header announces more images than it holds.
    let fm = dir.join("fm_bad");
    std::fs::create_dir(&fm).unwrap();
    for split in ["train", "t10k"] {
        let mut images = vec![0, 0, 8, 3];
        for d in [100u32, 28, 28] {
            images.extend(d.to_be_bytes());
        }
        images.extend(vec![7u8; 28 * 28 * 10]);
        std::fs::write(fm.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        let mut labels = vec![0, 0, 8, 1];
        labels.extend(100u32.to_be_bytes());
        labels.extend(vec![1u8; 100]);
        std::fs::write(fm.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
    // CIFAR-10: one training file cut in the middle of a record.
    let cifar = dir.join("cifar_bad");
    std::fs::create_dir(&cifar).unwrap();
    for k in 1..=5 {
        let records = if k == 3 { 2 * 3073 + 1000 } else { 2 * 3073 };
        std::fs::write(cifar.join(format!("data_batch_{k}.bin")), vec![1u8; records]).unwrap();
    }
    std::fs::write(cifar.join("test_batch.bin"), vec![1u8; 2 * 3073 + 5]).unwrap();
    // A CIFAR-10 folder that is fine, but 3-channel: the model takes 1.
    let rgb = dir.join("cifar_ok");
    std::fs::create_dir(&rgb).unwrap();
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        std::fs::write(rgb.join(name), vec![2u8; 8 * 3073]).unwrap();
    }

    // Image folders: ten class folders c0..c9 of 32×32 gray PNGs, which the model takes with
    // `--preprocess none --grayscale`, and each way of breaking them.
    let good = gray_png(32, 32);
    image_folder(dir, "if_ok", 10, &good);
    std::fs::create_dir(dir.join("if_empty")).unwrap();
    image_folder(dir, "if_cut", 10, &good[..good.len() / 2]);
    image_folder(dir, "if_text", 10, b"these are not pixels\n");
    image_folder(dir, "if_huge", 10, &png_declaring(&good, 100_000, 100_000));
    image_folder(dir, "if_two", 2, &good);

    // Checkpoints.
    let pth = std::fs::read(fixture_checkpoint()).unwrap();
    write(dir, "trunc.pth", &pth[..pth.len() / 2]);
    write(dir, "empty.pth", b"");
    write(dir, "text.pth", b"these are not the weights you are looking for\n");
    let st = std::fs::read(workspace_root().join("models/fmnist-resnet20.safetensors")).unwrap();
    write(dir, "trunc.safetensors", &st[..st.len() / 2]);
    let mut huge = (1u64 << 40).to_le_bytes().to_vec();
    huge.extend(b"{}");
    write(dir, "huge_header.safetensors", huge);
    let mut garbled = 12u64.to_le_bytes().to_vec();
    garbled.extend(b"{not json!!}");
    write(dir, "garbled.safetensors", garbled);
}

/// A `width`×`height` 8-bit gray PNG.
fn gray_png(width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(width, height, |x, y| image::Luma([(x * 7 + y * 3) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `png` with its header (IHDR, with a valid checksum) declaring `width`×`height` pixels.
fn png_declaring(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = png.to_vec();
    // Signature (8), IHDR's length (4), "IHDR" (4), width and height (4 each), 5 more bytes, CRC.
    out[16..20].copy_from_slice(&width.to_be_bytes());
    out[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&out[12..29]);
    out[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    out
}

/// `dir/name/cK/` for K < `classes`, holding `8 / classes` (at least one) copies of `bytes`,
/// named as a PNG.
fn image_folder(dir: &Path, name: &str, classes: usize, bytes: &[u8]) {
    for k in 0..classes {
        let class = dir.join(name).join(format!("c{k}"));
        std::fs::create_dir_all(&class).unwrap();
        for i in 0..(8 / classes).max(1) {
            std::fs::write(class.join(format!("{i}.png")), bytes).unwrap();
        }
    }
}

/// Data and checkpoint cases shared by the three tools that run the network.
fn model_input_cases(base: &[&str]) -> Vec<Case> {
    let data = |spec: &'static str| with(base, &[("--data", Some(spec))]);
    let weights = |file: &'static str| with(base, &[("--weights", Some(file))]);
    let folder = |spec: &'static str, gray: bool| {
        let gray = if gray { Some("") } else { None };
        with(
            base,
            &[("--data", Some(spec)), ("--preprocess", Some("none")), ("--grayscale", gray)],
        )
    };
    vec![
        case(
            "images: truncated data",
            data("npy:x_trunc.npy,y.npy"),
            &["x_trunc.npy", "truncated"],
        ),
        case(
            "images: truncated header",
            data("npy:x_header.npy,y.npy"),
            &["x_header.npy"],
        ),
        case(
            "images: wrong dtype",
            data("npy:x_f64.npy,y.npy"),
            &["x_f64.npy", "float32"],
        ),
        case("images: 3-D", data("npy:x_3d.npy,y.npy"), &["x_3d.npy", "4-D"]),
        case("images: NaN", data("npy:x_nan.npy,y.npy"), &["x_nan.npy", "NaN"]),
        case("images: infinite", data("npy:x_inf.npy,y.npy"), &["x_inf.npy", "inf"]),
        case(
            "images: empty file",
            data("npy:empty.npy,y.npy"),
            &["empty.npy", "empty"],
        ),
        case(
            "images: not a .npy",
            data("npy:text.npy,y.npy"),
            &["text.npy", "not a .npy"],
        ),
        case(
            "images: 3 channels for a 1-channel model",
            data("npy:x_rgb.npy,y.npy"),
            &["x_rgb.npy", "3 channel"],
        ),
        case(
            "labels: fewer than images",
            data("npy:x.npy,y_short.npy"),
            &["y_short.npy", "15 labels"],
        ),
        case("labels: float", data("npy:x.npy,y_f32.npy"), &["y_f32.npy", "int64"]),
        case("labels: 2-D", data("npy:x.npy,y_2d.npy"), &["y_2d.npy", "1-D"]),
        case("labels: negative", data("npy:x.npy,y_neg.npy"), &["y_neg.npy", "-1"]),
        case(
            "labels: beyond the classes",
            data("npy:x.npy,y_big.npy"),
            &["y_big.npy", "10 classes"],
        ),
        case("data: unknown kind", data("mnist:/nowhere"), &["mnist", "unknown kind"]),
        case(
            "data: missing folder",
            data("cifar10:/nowhere"),
            &["/nowhere", "no such folder"],
        ),
        case(
            "IDX: truncated images",
            data("fashion-mnist:fm_bad"),
            &["images-idx3-ubyte", "truncated"],
        ),
        case(
            "CIFAR: truncated record",
            data("cifar10:cifar_bad"),
            &["cifar_bad/", "truncated", "3073-byte records"],
        ),
        case(
            "CIFAR: 3 channels for a 1-channel model",
            data("cifar10:cifar_ok"),
            &["cifar10", "3 channel"],
        ),
        case(
            "image folder: no class folders",
            folder("imagefolder:if_empty", true),
            &["if_empty", "no class folders"],
        ),
        case(
            "image folder: truncated PNGs",
            folder("imagefolder:if_cut", true),
            &["if_cut/c", ".png", "unreadable PNG"],
        ),
        case(
            "image folder: text named .png",
            folder("imagefolder:if_text", true),
            &["if_text/c", "not a JPEG or PNG"],
        ),
        case(
            "image folder: a header declaring 100,000 × 100,000 pixels",
            folder("imagefolder:if_huge", true),
            &["if_huge/c", "100000×100000", "limit"],
        ),
        case(
            "image folder: images smaller than the crop",
            {
                let mut args = folder("imagefolder:if_ok", true);
                args.extend(["--crop".to_string(), "40".to_string()]);
                args
            },
            &["if_ok/c", "smaller than --crop 40"],
        ),
        case(
            "image folder: 3 channels for a 1-channel model",
            folder("imagefolder:if_ok", false),
            &["if_ok", "3 channel"],
        ),
        case(
            "image folder: 2 classes for a 10-class model",
            folder("imagefolder:if_two", true),
            &["if_two", "2 class folders", "10 classes"],
        ),
        case(
            "image folder: preprocessing flags on other data",
            with(base, &[("--grayscale", Some(""))]),
            &["--grayscale", "imagefolder"],
        ),
        case("weights: truncated .pth", weights("trunc.pth"), &["trunc.pth"]),
        case("weights: empty", weights("empty.pth"), &["empty.pth"]),
        case(
            "weights: not a checkpoint",
            weights("text.pth"),
            &["text.pth", "not a checkpoint"],
        ),
        case(
            "weights: truncated .safetensors",
            weights("trunc.safetensors"),
            &["trunc.safetensors"],
        ),
        case(
            "weights: .safetensors header length beyond the file",
            weights("huge_header.safetensors"),
            &["huge_header.safetensors"],
        ),
        case(
            "weights: .safetensors header not JSON",
            weights("garbled.safetensors"),
            &["garbled.safetensors"],
        ),
        case("weights: missing", weights("nowhere.pth"), &["nowhere.pth"]),
        case(
            "weights: other architecture",
            with(base, &[("--arch", Some("resnet56"))]),
            &["resnet56"],
        ),
        case(
            "unknown architecture",
            with(base, &[("--arch", Some("vgg16"))]),
            &["vgg16"],
        ),
        case(
            "samples: zero",
            with(base, &[("--samples", Some("0"))]),
            &["--samples 0"],
        ),
        case(
            "samples: more than the data set",
            with(base, &[("--samples", Some("17"))]),
            &["--samples 17", "16"],
        ),
        case(
            "samples: not a number",
            with(base, &[("--samples", Some("many"))]),
            &["many", "--samples"],
        ),
        case(
            "batch size zero",
            with(base, &[("--batch-size", Some("0"))]),
            &["--batch-size 0"],
        ),
        case(
            "split: unknown",
            with(base, &[("--split", Some("validation"))]),
            &["validation"],
        ),
    ]
}

/// `calib.json` and `alloc.json` in every broken way, from good ones written by the tools.
fn write_bad_calib_and_alloc(dir: &Path) {
    let fx = fixture_checkpoint();
    run_in(
        "quantize",
        &[
            "calibrate",
            "--weights",
            &fx,
            "--data",
            "npy:x.npy,y.npy",
            "--samples",
            "8",
            "--options",
            "w{4,8}a8,w8",
            "-o",
            "calib.json",
            "-q",
        ],
        b"",
        Some(dir),
    )
    .success();
    let calib: Value = serde_json::from_slice(&std::fs::read(dir.join("calib.json")).unwrap()).unwrap();
    write_json(dir, "calib_v1.json", &edited(&calib, |v| v["version"] = json!(1)));
    write_json(
        dir,
        "calib_field.json",
        &edited(&calib, |v| v["colour"] = json!("blue")),
    );
    write_json(
        dir,
        "calib_layer.json",
        &edited(&calib, |v| v["layers"][3]["name"] = json!("layer9.0.conv1")),
    );
    write_json(
        dir,
        "calib_arch.json",
        &edited(&calib, |v| v["model"]["arch"] = json!("resnet56")),
    );
    write_json(
        dir,
        "calib_scales.json",
        &edited(&calib, |v| v["layers"][2]["weight_scales"]["4"] = json!([1.0, 2.0])),
    );
    write_json(
        dir,
        "calib_range.json",
        &edited(&calib, |v| {
            v["layers"][1]["act_ranges"]["8"] = json!({"lo": 1.0, "hi": 2.0})
        }),
    );
    write(
        dir,
        "calib_trunc.json",
        &std::fs::read(dir.join("calib.json")).unwrap()[..200],
    );

    let alloc = alloc_all("w4a8");
    write_json(dir, "alloc.json", &serde_json::to_value(&alloc).unwrap());
    write_json(dir, "alloc_v1.json", &edited(&alloc, |v| v["version"] = json!(1)));
    write_json(
        dir,
        "alloc_model.json",
        &edited(&alloc, |v| v["model"]["digest"] = json!("0123456789abcdef")),
    );
    write_json(
        dir,
        "alloc_field.json",
        &edited(&alloc, |v| v["colour"] = json!("blue")),
    );
    write_json(
        dir,
        "alloc_layer.json",
        &edited(&alloc, |v| v["layers"][3]["name"] = json!("layer9.0.conv1")),
    );
    write_json(
        dir,
        "alloc_missing.json",
        &edited(&alloc, |v| drop(v["layers"].as_array_mut().unwrap().remove(5))),
    );
    write_json(
        dir,
        "alloc_twice.json",
        &edited(&alloc, |v| v["layers"][2]["name"] = v["layers"][1]["name"].clone()),
    );
    write_json(
        dir,
        "alloc_mismatch.json",
        &edited(&alloc, |v| v["layers"][4]["w_bits"] = json!(8)),
    );
    write_json(
        dir,
        "alloc_bits.json",
        &edited(&alloc, |v| v["layers"][0]["w_bits"] = json!(300)),
    );
    write_json(dir, "alloc_w2.json", &serde_json::to_value(alloc_all("w2a8")).unwrap());
    write(dir, "alloc_trunc.json", &serde_json::to_vec(&alloc).unwrap()[..150]);
}

fn calib_cases(base: &[&str]) -> Vec<Case> {
    let c = |file: &'static str| with(base, &[("--calib", Some(file))]);
    vec![
        case(
            "calib: other version",
            c("calib_v1.json"),
            &["calib_v1.json", "older version"],
        ),
        case(
            "calib: unknown field",
            c("calib_field.json"),
            &["calib_field.json", "colour"],
        ),
        case(
            "calib: unknown layer",
            c("calib_layer.json"),
            &["calib_layer.json", "layer9.0.conv1"],
        ),
        case(
            "calib: other architecture",
            c("calib_arch.json"),
            &["calib_arch.json", "resnet56"],
        ),
        case(
            "calib: scales of the wrong length",
            c("calib_scales.json"),
            &["calib_scales.json", "layer1.0.conv2", "expected 16"],
        ),
        case(
            "calib: range without 0",
            c("calib_range.json"),
            &["calib_range.json", "layer1.0.conv1", "contain 0"],
        ),
        case("calib: truncated", c("calib_trunc.json"), &["calib_trunc.json", "JSON"]),
        case("calib: empty", c("empty.json"), &["empty.json", "empty"]),
        case("calib: not JSON", c("text.json"), &["text.json", "JSON"]),
        case("calib: missing", c("nowhere.json"), &["nowhere.json"]),
    ]
}

fn alloc_cases(base: &[&str]) -> Vec<Case> {
    let a = |file: &'static str| with(base, &[("--alloc", Some(file))]);
    vec![
        case(
            "alloc: other version",
            a("alloc_v1.json"),
            &["alloc_v1.json", "older version"],
        ),
        case(
            "alloc: another model",
            a("alloc_model.json"),
            &[
                "alloc_model.json",
                "model: made for resnet20 with weights digest 0123456789abcdef",
            ],
        ),
        case(
            "alloc: unknown field",
            a("alloc_field.json"),
            &["alloc_field.json", "colour"],
        ),
        case(
            "alloc: unknown layer",
            a("alloc_layer.json"),
            &["alloc_layer.json", "layer9.0.conv1"],
        ),
        case(
            "alloc: a layer missing",
            a("alloc_missing.json"),
            &["alloc_missing.json", "no option for layer"],
        ),
        case(
            "alloc: a layer twice",
            a("alloc_twice.json"),
            &["alloc_twice.json", "twice"],
        ),
        case(
            "alloc: bits disagree with the option",
            a("alloc_mismatch.json"),
            &["alloc_mismatch.json", "does not match"],
        ),
        case(
            "alloc: bits out of range",
            a("alloc_bits.json"),
            &["alloc_bits.json", "300"],
        ),
        case(
            "alloc: bits the calibration lacks",
            a("alloc_w2.json"),
            &["calib.json", "2 bits"],
        ),
        case("alloc: truncated", a("alloc_trunc.json"), &["alloc_trunc.json", "JSON"]),
        case("alloc: empty", a("empty.json"), &["empty.json", "empty"]),
        case("alloc: not JSON", a("text.json"), &["text.json", "JSON"]),
    ]
}

#[test]
fn perturb_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model_inputs(d);
    write_bad_calib_and_alloc(d);
    let fx = fixture_checkpoint();
    let base = [
        "--weights",
        &fx,
        "--data",
        "npy:x.npy,y.npy",
        "--samples",
        "8",
        "--batch-size",
        "4",
        "--options",
        "w4a8,w8a8",
        "--layers",
        "conv1,fc",
        "-o",
        "G.npy",
        "--index",
        "index.json",
        "--se",
        "se.npy",
    ];
    let mut cases = model_input_cases(&base);
    let with_calib = with(&base, &[("--calib", Some("calib.json"))]);
    let with_calib: Vec<&str> = with_calib.iter().map(String::as_str).collect();
    cases.extend(calib_cases(&with_calib));
    let set = |pairs: &[(&str, Option<&str>)]| with(&base, pairs);
    cases.extend([
        case(
            "calib: bits it lacks",
            with(&with_calib, &[("--options", Some("w2a8"))]),
            &["calib.json", "2 bits"],
        ),
        case(
            "options: bits out of range",
            set(&[("--options", Some("w9a8"))]),
            &["w9a8", "9 bits"],
        ),
        case(
            "options: unclosed brace",
            set(&[("--options", Some("w{2,4a8"))]),
            &["w{2,4a8"],
        ),
        case(
            "options: twice",
            set(&[("--options", Some("w4a8,w4a8"))]),
            &["w4a8", "more than once"],
        ),
        case("options: not an option", set(&[("--options", Some("int8"))]), &["int8"]),
        case(
            "unknown layer",
            set(&[("--layers", Some("conv1,conv9"))]),
            &["conv9", "not in the model"],
        ),
        case(
            "unknown excluded layer",
            set(&[("--exclude", Some("layer9.0.conv1"))]),
            &["layer9.0.conv1"],
        ),
        case(
            "no layer left",
            set(&[("--exclude", Some("conv1,fc"))]),
            &["no layer left"],
        ),
        case(
            "bad metric",
            set(&[("--metric", Some("accuracy"))]),
            &["accuracy", "--metric"],
        ),
        case(
            "bad calibration method",
            set(&[("--w-calib", Some("percentile"))]),
            &["--w-calib", "percentile", "minmax"],
        ),
        case(
            "conflict: --calib and --a-calib",
            with(&with_calib, &[("--a-calib", Some("mse"))]),
            &["--calib", "--a-calib"],
        ),
        case(
            "conflict: --shard writes no index",
            set(&[("--shard", Some("1/2")), ("--se", None)]),
            &["--index", "merge"],
        ),
        case(
            "conflict: --shard and --se",
            set(&[("--shard", Some("1/2")), ("--index", None)]),
            &["--se", "--shard"],
        ),
        case(
            "conflict: --reference and --resume",
            set(&[("--reference", Some("")), ("--resume", Some("work"))]),
            &["--reference", "--resume"],
        ),
        case(
            "shard: bad grammar",
            set(&[("--shard", Some("3/2")), ("--index", None), ("--se", None)]),
            &["3/2", "K/N"],
        ),
        case(
            "conflict: -o and --index the same file",
            set(&[("--index", Some("./G.npy"))]),
            &["-o G.npy", "--index ./G.npy", "same file"],
        ),
        case(
            "conflict: --se on stdout beside -o -",
            set(&[("-o", Some("-")), ("--se", Some("-"))]),
            &["stdout"],
        ),
        case(
            "memory: the estimate does not fit",
            set(&[("--max-memory", Some("16M"))]),
            &["--max-memory 16M", "estimated peak", "FP states"],
        ),
        case(
            "memory: bad size",
            set(&[("--max-memory", Some("4X"))]),
            &["--max-memory 4X", "4G"],
        ),
        case("missing --options", set(&[("--options", None)]), &["--options"]),
        case("missing -o", set(&[("-o", None)]), &["--output"]),
    ]);
    check_all("perturb", d, &["G.npy", "index.json", "se.npy"], &cases);
    assert!(!d.join("work").exists(), "a refused run creates no --resume folder");
}

#[test]
fn quantize_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model_inputs(d);
    write_bad_calib_and_alloc(d);
    let fx = fixture_checkpoint();
    let calibrate = [
        "calibrate",
        "--weights",
        &fx,
        "--data",
        "npy:x.npy,y.npy",
        "--samples",
        "8",
        "--options",
        "w4a8",
        "-o",
        "calib_out.json",
    ];
    let mut cases = model_input_cases(&calibrate);
    let set = |pairs: &[(&str, Option<&str>)]| with(&calibrate, pairs);
    cases.extend([
        case(
            "options: bits out of range",
            set(&[("--options", Some("w4a17"))]),
            &["w4a17", "17 bits"],
        ),
        case(
            "options: unclosed brace",
            set(&[("--options", Some("w{2,4}a{8"))]),
            &["w{2,4}a{8"],
        ),
        case(
            "bad calibration method",
            set(&[("--a-calib", Some("kl"))]),
            &["--a-calib", "kl", "minmax"],
        ),
    ]);
    let apply = [
        "apply",
        "--weights",
        &fx,
        "--alloc",
        "alloc.json",
        "--calib",
        "calib.json",
        "-o",
        "q.safetensors",
        "--export-int",
        "int.safetensors",
    ];
    let mut apply_cases = alloc_cases(&apply);
    apply_cases.extend(
        calib_cases(&apply)
            .into_iter()
            .filter(|c| !c.what.contains("range without 0")),
    );
    apply_cases.extend([
        case(
            "weights: truncated .pth",
            with(&apply, &[("--weights", Some("trunc.pth"))]),
            &["trunc.pth"],
        ),
        case(
            "weights: other architecture",
            with(&apply, &[("--arch", Some("resnet32"))]),
            &["resnet32"],
        ),
        case("missing --alloc", with(&apply, &[("--alloc", None)]), &["--alloc"]),
        case("no subcommand", vec!["--weights".into(), fx.clone()], &["--weights"]),
    ]);
    // --export-int and -o naming the same file would leave one output overwriting the other.
    apply_cases.push(case(
        "conflict: -o and --export-int the same file",
        with(&apply, &[("--export-int", Some("q.safetensors"))]),
        &["q.safetensors", "--export-int"],
    ));
    cases.extend(apply_cases);
    check_all(
        "quantize",
        d,
        &["calib_out.json", "q.safetensors", "int.safetensors"],
        &cases,
    );
}

#[test]
fn evaluate_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model_inputs(d);
    write_bad_calib_and_alloc(d);
    let fx = fixture_checkpoint();
    // The FP line would come first: a bad later input must still leave stdout empty.
    let base = [
        "--weights",
        &fx,
        "--data",
        "npy:x.npy,y.npy",
        "--samples",
        "8",
        "--calib",
        "calib.json",
        "--fp",
        "--alloc",
        "alloc.json",
    ];
    let mut cases = model_input_cases(&base);
    cases.extend(calib_cases(&base));
    cases.extend(alloc_cases(&base));
    let set = |pairs: &[(&str, Option<&str>)]| with(&base, pairs);
    cases.extend([
        case("uniform: bad option", set(&[("--uniform", Some("w3x"))]), &["w3x"]),
        case(
            "uniform: bits the calibration lacks",
            set(&[("--uniform", Some("w2a8"))]),
            &["calib.json", "2 bits"],
        ),
        case(
            "two --alloc - on one stdin",
            set(&[("--alloc", Some("-")), ("--uniform", Some("w8"))])
                .into_iter()
                .chain(["--alloc".into(), "-".into()])
                .collect(),
            &["stdin"],
        ),
        case(
            "conflict: --calib and --calib-samples",
            set(&[("--calib-samples", Some("4"))]),
            &["--calib", "--calib-samples"],
        ),
        case(
            "bad calibration method",
            set(&[("--calib", None), ("--w-calib", Some("max"))]),
            &["--w-calib", "max", "minmax"],
        ),
        case(
            "calibration samples beyond the data",
            set(&[("--calib", None), ("--calib-samples", Some("100"))]),
            &["100", "16"],
        ),
    ]);
    check_all("evaluate", d, &[], &cases);
}

/// An allocation giving every layer of the ResNet-20 `option`.
fn alloc_all(option: &str) -> Alloc {
    alloc_of(resnet20_layer_names().iter().map(|n| choice(n, option)).collect())
}

/// The job every merge and resume case edits: 8 images in batches of 3 (the last one short),
/// 2 layers × 2 options: 3 batches × 4 units, dealt to 2 shards.
fn small_perturb_job(fx: &str) -> Vec<String> {
    [
        "--weights",
        fx,
        "--data",
        "npy:x.npy,y.npy",
        "--samples",
        "8",
        "--batch-size",
        "3",
        "--options",
        "w4a8,w8a8",
        "--layers",
        "conv1,fc",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_ok(dir: &Path, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_in("perturb", &args, b"", Some(dir)).success();
}

fn read_json(dir: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// The unit (batch, layer, option) of a part or resume file's unit object.
fn unit_key(u: &Value) -> (u64, u64, u64) {
    let n = |f: &str| u[f].as_u64().unwrap();
    (n("batch"), n("layer"), n("option"))
}

/// Every way a shard's partial result can be wrong: each merge exits 2 naming the file and
/// (where there is one) the unit, and writes nothing.
#[test]
fn perturb_merge_refuses_bad_parts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model_inputs(d);
    let fx = fixture_checkpoint();
    let job = small_perturb_job(&fx);
    let shard = |k: &str, out: &str, extra: &[&str]| {
        let mut a = job.clone();
        a.extend(["--shard", k, "-o", out].iter().map(|s| s.to_string()));
        a.extend(extra.iter().map(|s| s.to_string()));
        run_ok(d, &a);
    };
    shard("1/2", "part1.json", &[]);
    shard("2/2", "part2.json", &[]);
    // The same shard of another run (other samples).
    shard("2/2", "other2.json", &["--seed", "1"]);
    shard("1/3", "third1.json", &[]);
    let part1 = read_json(d, "part1.json");
    let part2 = read_json(d, "part2.json");
    assert_eq!(part1["units"].as_array().unwrap().len(), 6, "12 units, every other one");
    // Shard 1 holds the units numbered 0, 2, 4, … : (0, 0, 0), (0, 1, 0), (1, 0, 0), …
    assert_eq!(unit_key(&part1["units"][0]), (0, 0, 0));
    let edit = |name: &str, doc: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = doc.clone();
        f(&mut v);
        write_json(d, name, &v);
    };
    edit("p_nopairs.json", &part1, &|v| v["units"][0]["pairs"] = json!([]));
    edit("p_samples.json", &part1, &|v| v["units"][0]["samples"] = json!(5));
    edit("p_lastsamples.json", &part1, &|v| {
        let last = v["units"].as_array_mut().unwrap().last_mut().unwrap();
        last["samples"] = json!(3);
    });
    edit("p_batch.json", &part1, &|v| {
        let mut u = v["units"][0].clone();
        u["batch"] = json!(7);
        v["units"].as_array_mut().unwrap().push(u);
    });
    edit("p_layer.json", &part1, &|v| v["units"][0]["layer"] = json!(99));
    edit("p_twice.json", &part1, &|v| {
        let u = v["units"][1].clone();
        v["units"].as_array_mut().unwrap().push(u);
    });
    edit("p_missing.json", &part1, &|v| {
        v["units"].as_array_mut().unwrap().remove(3);
    });
    edit("p_foreign.json", &part1, &|v| {
        let u = part2["units"][0].clone();
        v["units"].as_array_mut().unwrap().push(u);
    });
    edit("p_nofp.json", &part1, &|v| {
        v["fp"].as_array_mut().unwrap().remove(1);
    });
    edit("p_fpsamples.json", &part1, &|v| v["fp"][0][1]["samples"] = json!(8));
    edit("p_fpdiffer.json", &part2, &|v| v["fp"][0][1]["loss_sum"] = json!([2.5]));
    edit("p_sum.json", &part1, &|v| {
        v["units"][0]["single"]["sum"] = json!([1e300])
    });
    edit("p_sumsq.json", &part1, &|v| {
        v["units"][0]["pairs"][0]["sumsq"] = json!([-0.5])
    });
    edit("p_overflow.json", &part1, &|v| {
        v["units"][0]["single"]["sum"] = json!([1.7e308, 1.7e308])
    });
    edit("p_shard.json", &part1, &|v| v["shard"]["count"] = json!(0));
    edit("p_jobbatch.json", &part1, &|v| v["job"]["batch_size"] = json!(0));
    edit("p_oldsum.json", &part1, &|v| {
        v["units"][0]["single"]["sum"] = json!(0.25)
    });
    let bytes = std::fs::read(d.join("part1.json")).unwrap();
    write(d, "p_trunc.json", &bytes[..bytes.len() / 2]);
    write_generic_bad_files(d);

    let merge = |parts: &[&str]| {
        let mut a: Vec<String> = vec!["merge".into()];
        a.extend(parts.iter().map(|s| s.to_string()));
        a.extend(
            ["-o", "G.npy", "--index", "index.json", "--se", "se.npy"]
                .iter()
                .map(|s| s.to_string()),
        );
        a
    };
    let bad1 = |file: &'static str| merge(&[file, "part2.json"]);
    let u000 = "unit (batch 0, layer 'conv1', option w4a8)";
    let cases = vec![
        case(
            "pair results removed",
            bad1("p_nopairs.json"),
            &["p_nopairs.json", u000, "0 pair results, expected 2"],
        ),
        case(
            "wrong sample count",
            bad1("p_samples.json"),
            &["p_samples.json", u000, "5 samples", "batch 0 of the run has 3"],
        ),
        case(
            "last batch's sample count",
            bad1("p_lastsamples.json"),
            &[
                "p_lastsamples.json",
                "unit (batch 2, layer 'fc', option w4a8)",
                "3 samples",
                "has 2",
            ],
        ),
        case(
            "a unit of a batch that does not exist",
            bad1("p_batch.json"),
            &[
                "p_batch.json",
                "unit (batch 7, layer 'conv1', option w4a8)",
                "batch 7 does not exist",
                "3 batches",
            ],
        ),
        case(
            "layer out of range",
            bad1("p_layer.json"),
            &[
                "p_layer.json",
                "unit (batch 0, layer 99, option w4a8)",
                "layer 99 does not exist",
            ],
        ),
        case(
            "a unit twice",
            bad1("p_twice.json"),
            &["p_twice.json", "unit (batch 0, layer 'fc', option w4a8)", "twice"],
        ),
        case(
            "a unit missing",
            bad1("p_missing.json"),
            &[
                "p_missing.json",
                "unit (batch 1, layer 'fc', option w4a8)",
                "missing",
                "5 of the 6 units of shard 1/2",
            ],
        ),
        case(
            "another shard's unit",
            bad1("p_foreign.json"),
            &[
                "p_foreign.json",
                "unit (batch 0, layer 'conv1', option w8a8)",
                "belongs to shard 2/2",
            ],
        ),
        case(
            "FP metrics of a batch missing",
            bad1("p_nofp.json"),
            &["p_nofp.json", "no FP metrics of batch 1"],
        ),
        case(
            "FP metrics over the wrong sample count",
            bad1("p_fpsamples.json"),
            &["p_fpsamples.json", "batch 0", "8 samples", "has 3"],
        ),
        case(
            "FP metrics that differ between shards",
            merge(&["part1.json", "p_fpdiffer.json"]),
            &["p_fpdiffer.json", "FP metrics of batch 0", "part1.json"],
        ),
        case(
            "a sum no samples can give",
            bad1("p_sum.json"),
            &["p_sum.json", u000, "single-layer result", "1e300"],
        ),
        case(
            "a negative sum of squares",
            bad1("p_sumsq.json"),
            &[
                "p_sumsq.json",
                u000,
                "pair result with layer 'fc' at w4a8",
                "sum of squares",
            ],
        ),
        case(
            "a sum beyond the f64 range",
            bad1("p_overflow.json"),
            &["p_overflow.json", "units[0].single.sum", "f64 range"],
        ),
        case(
            "a sum in the old format (one number)",
            bad1("p_oldsum.json"),
            &["p_oldsum.json", "units[0].single.sum", "sequence"],
        ),
        case("a bad shard", bad1("p_shard.json"), &["p_shard.json", "shard 1/0"]),
        case(
            "a job without batches",
            merge(&["p_jobbatch.json"]),
            &["p_jobbatch.json", "batches of 0"],
        ),
        case(
            "a shard missing",
            merge(&["part1.json"]),
            &["shard 2/2 is missing", "all 2 shards"],
        ),
        case(
            "the first shard missing",
            merge(&["part2.json"]),
            &["shard 1/2 is missing"],
        ),
        case(
            "a shard twice",
            merge(&["part1.json", "part2.json", "./part1.json"]),
            &["./part1.json", "shard 1/2", "like part1.json"],
        ),
        case(
            "shards of two runs",
            merge(&["part1.json", "other2.json"]),
            &["other2.json", "another run than part1.json", "other samples"],
        ),
        case(
            "shards of two splits",
            merge(&["part1.json", "part2.json", "third1.json"]),
            &["third1.json", "shard 1/3", "part1.json is shard 1/2"],
        ),
        case("truncated", bad1("p_trunc.json"), &["p_trunc.json", "JSON"]),
        case("empty", bad1("empty.json"), &["empty.json", "empty"]),
        case("not JSON", bad1("text.json"), &["text.json", "JSON"]),
    ];
    check_all("perturb", d, &["G.npy", "index.json", "se.npy"], &cases);
    // The good parts merge.
    run_ok(d, &merge(&["part2.json", "part1.json"]));
}

/// Every way a `--resume` directory's files can be wrong: the rerun exits 2 naming the file
/// and the unit, before measuring anything, and writes nothing.
#[test]
fn perturb_resume_refuses_bad_unit_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model_inputs(d);
    let fx = fixture_checkpoint();
    let job = small_perturb_job(&fx);
    let with_resume = |work: &str| {
        let mut a = job.clone();
        a.extend(
            ["-o", "G.npy", "--index", "index.json", "--resume", work]
                .iter()
                .map(|s| s.to_string()),
        );
        a
    };
    run_ok(d, &with_resume("good"));
    std::fs::remove_file(d.join("G.npy")).unwrap();
    std::fs::remove_file(d.join("index.json")).unwrap();
    let unit = read_json(&d.join("good"), "unit-b0-v0-o0.json");
    // A copy of the finished directory with one file edited.
    let variant = |work: &str, file: &str, contents: Option<Vec<u8>>| {
        let w = d.join(work);
        std::fs::create_dir(&w).unwrap();
        for e in std::fs::read_dir(d.join("good")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), w.join(e.file_name())).unwrap();
        }
        match contents {
            Some(c) => std::fs::write(w.join(file), c).unwrap(),
            None => std::fs::remove_file(w.join(file)).unwrap(),
        }
    };
    let edited_unit = |f: &dyn Fn(&mut Value)| {
        let mut v = unit.clone();
        f(&mut v["value"]);
        Some(serde_json::to_vec_pretty(&v).unwrap())
    };
    variant(
        "nopairs",
        "unit-b0-v0-o0.json",
        edited_unit(&|u| u["pairs"] = json!([])),
    );
    variant(
        "samples",
        "unit-b0-v0-o0.json",
        edited_unit(&|u| u["samples"] = json!(8)),
    );
    variant("layer", "unit-b0-v0-o0.json", edited_unit(&|u| u["layer"] = json!(99)));
    variant(
        "sum",
        "unit-b0-v0-o0.json",
        edited_unit(&|u| u["single"]["sumsq"] = json!([-1.0])),
    );
    variant("batch", "unit-b9-v0-o0.json", edited_unit(&|u| u["batch"] = json!(9)));
    let bytes = std::fs::read(d.join("good/unit-b0-v0-o0.json")).unwrap();
    variant("trunc", "unit-b0-v0-o0.json", Some(bytes[..bytes.len() / 2].to_vec()));
    let mut fp = read_json(&d.join("good"), "fp-b2.json");
    fp["value"]["samples"] = json!(3);
    variant("fp", "fp-b2.json", Some(serde_json::to_vec(&fp).unwrap()));
    let mut other = read_json(&d.join("good"), "job.json");
    other["job"]["batch_size"] = json!(4);
    variant("batchsize", "job.json", Some(serde_json::to_vec(&other).unwrap()));

    let u000 = "unit (batch 0, layer 'conv1', option w4a8)";
    let cases = vec![
        case(
            "pair results removed",
            with_resume("nopairs"),
            &[
                "nopairs/unit-b0-v0-o0.json",
                u000,
                "0 pair results, expected 2",
                "delete the file",
            ],
        ),
        case(
            "wrong sample count",
            with_resume("samples"),
            &["samples/unit-b0-v0-o0.json", u000, "8 samples"],
        ),
        case(
            "layer out of range",
            with_resume("layer"),
            &[
                "layer/unit-b0-v0-o0.json",
                u000,
                "holds unit (batch 0, layer 99, option w4a8)",
            ],
        ),
        case(
            "a negative sum of squares",
            with_resume("sum"),
            &["sum/unit-b0-v0-o0.json", u000, "sum of squares"],
        ),
        case(
            "a unit of a batch that does not exist",
            with_resume("batch"),
            &[
                "batch/unit-b9-v0-o0.json",
                "unit (batch 9, layer 'conv1', option w4a8)",
                "not part of this run",
            ],
        ),
        case(
            "truncated unit file",
            with_resume("trunc"),
            &["trunc/unit-b0-v0-o0.json", "JSON"],
        ),
        case(
            "FP metrics over the wrong sample count",
            with_resume("fp"),
            &["fp/fp-b2.json", "batch 2", "3 samples", "has 2"],
        ),
        case(
            "a directory of another batch size",
            with_resume("batchsize"),
            &[
                "batchsize/job.json",
                "--batch-size 4 there, 3 here",
                "fresh --resume directory",
            ],
        ),
    ];
    check_all("perturb", d, &["G.npy", "index.json"], &cases);
    // A unit file removed (as a killed run leaves it) is measured again.
    variant("cut", "unit-b1-v1-o1.json", None);
    run_ok(d, &with_resume("cut"));
}
