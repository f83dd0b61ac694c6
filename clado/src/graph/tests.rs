//! Unit tests of the graph module: the executor against onnxruntime's outputs on the committed
//! fixtures (`scripts/export_onnx_fixtures.py`), determinism, the quantizable layers, and the
//! reader's refusals of bad and hostile files.

use super::onnx::proto;
use super::*;
use prost::Message;
use std::path::{Path, PathBuf};

/// FP logits may differ from onnxruntime's by this fraction of the largest |logit|: the two
/// sum the products of a convolution in different orders (and onnxruntime uses its own `exp`),
/// which moves float32 results by a few ulps per layer. The fixtures show at most 5.2e-7
/// (`cargo test -p clado --lib graph -- --nocapture` prints each); 1e-4 is the issue's bound.
const LOGIT_TOLERANCE: f32 = 1e-4;

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/onnx")
}

/// Every fixture model (`NAME.onnx` with `NAME.input.npy` and `NAME.output.npy`).
pub(crate) fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures/onnx (made by scripts/export_onnx_fixtures.py)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v
}

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (a.shape().to_vec(), a.iter().copied().collect())
}

/// An `.npy` array: shape and elements.
type Array = (Vec<usize>, Vec<f32>);

/// A fixture's input and onnxruntime's output (`NAME_opsetN.onnx` reads `NAME.input.npy`).
fn io_of(model: &Path) -> (Array, Array) {
    let stem = model.file_stem().unwrap().to_string_lossy().into_owned();
    let base = match stem.rfind("_opset") {
        Some(i) => stem[..i].to_string(),
        None => stem.clone(),
    };
    let dir = model.parent().unwrap();
    (
        npy(&dir.join(format!("{base}.input.npy"))),
        npy(&dir.join(format!("{stem}.output.npy"))),
    )
}

/// Uniform numbers in [−0.5, 0.5) from a seeded linear congruential generator: small test
/// graphs' weights and inputs.
fn lcg(mut seed: u32) -> impl FnMut() -> f32 {
    move || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }
}

/// A 3×3 stride-1 Conv that keeps the input's size (padding 1).
fn same_3x3() -> ConvAttrs {
    ConvAttrs {
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1; 4],
        groups: 1,
    }
}

/// Largest |a − b| relative to the largest |b|.
pub(crate) fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

#[test]
fn fixtures_cover_five_families_and_both_exporters() {
    let names: Vec<String> = fixtures()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for family in ["resnet", "mobilenet", "efficientnet", "shufflenet", "densenet"] {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "no {family} fixture in {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.contains("_opset1")),
        "no older-exporter fixture in {names:?}"
    );
}

#[test]
fn executor_matches_onnxruntime_on_every_fixture() {
    for model in fixtures() {
        let graph = Graph::from_onnx(&model).unwrap_or_else(|e| panic!("{e}"));
        let ((xs, x), (ys, y)) = io_of(&model);
        assert_eq!(&xs[1..], graph.input_shape(), "{}", model.display());
        let out = Executor::new(&graph).unwrap().run(&x, xs[0], true).unwrap();
        assert_eq!(
            out[0].len(),
            y.len(),
            "{}: output size, onnxruntime's {:?}",
            model.display(),
            ys
        );
        let err = relative_error(&out[0], &y);
        eprintln!(
            "{}: relative error {err:.1e}",
            model.file_name().unwrap().to_string_lossy()
        );
        assert!(
            err <= LOGIT_TOLERANCE,
            "{}: relative error {err:e} > {LOGIT_TOLERANCE:e}",
            model.display()
        );
    }
}

/// No layer quantized.
struct Fp;

impl QuantPlan for Fp {
    fn weights(&self, _: usize) -> Option<&[f32]> {
        None
    }
    fn input(&self, _: usize) -> Option<&crate::quant::ActQuantizer> {
        None
    }
}

#[test]
fn results_are_independent_of_batch_split_and_threads() {
    for name in [
        "mobilenet_v3_small.onnx",
        "shufflenet_v2_slim_opset13.onnx",
        "op_coverage.onnx",
    ] {
        let graph = Graph::from_onnx(fixture_dir().join(name)).unwrap();
        let ((xs, x), _) = io_of(&fixture_dir().join(name));
        let exec = Executor::new(&graph).unwrap();
        if name.starts_with("mobilenet") {
            // 1 × 1 Convs on 8 × 8 and 4 × 4 maps, and the head, run on all samples at once.
            assert!(
                exec.batched_nodes() > 2,
                "{name}: {} batched nodes",
                exec.batched_nodes()
            );
        }
        let whole = exec.run(&x, xs[0], true).unwrap();
        let serial = exec.run(&x, xs[0], false).unwrap();
        assert_eq!(whole, serial, "{name}: parallel vs serial");
        let per: usize = xs[1..].iter().product();
        let mut pieces = Vec::new();
        for (i, sample) in x.chunks(per).enumerate() {
            // Each sample alone, and the same sample in a batch of itself and its neighbour.
            let alone = exec.run(sample, 1, false).unwrap().remove(0);
            let pair: Vec<f32> = [sample, x.chunks(per).nth((i + 1) % xs[0]).unwrap()].concat();
            let in_pair = exec.run(&pair, 2, true).unwrap().remove(0);
            assert_eq!(
                alone[..],
                in_pair[..alone.len()],
                "{name}: sample {i} alone vs in a pair"
            );
            // And through `advance` alone, which runs a classifier head and the 1 × 1 Convs of
            // small maps on this sample only, where `run` takes the batch's samples together.
            let mut state = exec.start(sample);
            exec.advance(&mut state, graph.nodes.len(), &Fp);
            let advanced = state.get(graph.outputs()[0]).unwrap();
            assert_eq!(alone[..], advanced[..], "{name}: sample {i} through advance");
            pieces.extend(alone);
        }
        assert_eq!(whole[0], pieces, "{name}: batch vs one sample at a time");
        // 32 samples: groups of sixteen in the batched nodes (see `pointwise_all`).
        let out = pieces.len() / xs[0];
        let x32: Vec<f32> = x.chunks(per).cycle().take(32).flatten().copied().collect();
        let want: Vec<f32> = pieces.chunks(out).cycle().take(32).flatten().copied().collect();
        assert_eq!(exec.run(&x32, 32, true).unwrap()[0], want, "{name}: 32 samples");
        assert_eq!(
            exec.run(&x32, 32, false).unwrap()[0],
            want,
            "{name}: 32 samples, serial"
        );
    }
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let graph = Graph::from_onnx(fixture_dir().join("efficientnet_b0_slim.onnx")).unwrap();
    let ((xs, x), _) = io_of(&fixture_dir().join("efficientnet_b0_slim.onnx"));
    let exec = Executor::new(&graph).unwrap();
    let single = one.install(|| exec.run(&x, xs[0], true).unwrap());
    assert_eq!(single, exec.run(&x, xs[0], true).unwrap(), "one thread vs the pool");
}

#[test]
fn layers_are_named_after_modules_in_graph_order() {
    let graph = Graph::from_onnx(fixture_dir().join("resnet18_slim.onnx")).unwrap();
    let names: Vec<&str> = graph.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names.len(), 21, "{names:?}");
    assert_eq!(
        names[..4],
        ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    );
    assert!(names.contains(&"layer2.0.downsample.0"), "{names:?}");
    assert_eq!(names[20], "fc");
    let conv1 = &graph.layers()[0];
    // 8 output channels of 3×7×7 weights on a 64×64 input, stride 2: 32×32 outputs.
    assert_eq!(
        (conv1.kind, conv1.params, conv1.macs, conv1.out_channels),
        (LayerKind::Conv, 8 * 3 * 49, 8 * 32 * 32 * 3 * 49, 8)
    );
    let fc = &graph.layers()[20];
    assert_eq!(
        (fc.kind, fc.channel_dim, fc.out_channels, fc.params, fc.macs),
        (LayerKind::Gemm, 0, 10, 640, 640)
    );

    // The older exporter keeps BatchNormalization and names weights after the modules too.
    let old = Graph::from_onnx(fixture_dir().join("resnet18_slim_opset13.onnx")).unwrap();
    let old_names: Vec<&str> = old.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(old_names, names);
    assert!(old.nodes().iter().any(|n| matches!(n.op, Op::BatchNorm { .. })));

    // Depthwise: output channel = dim 0 of [C, 1, k, k].
    let mb = Graph::from_onnx(fixture_dir().join("mobilenet_v2_slim.onnx")).unwrap();
    let dw = mb
        .layers()
        .iter()
        .find(|l| mb.layer_weight(mb.layers().iter().position(|x| x == *l).unwrap()).shape[1] == 1)
        .unwrap();
    assert_eq!(dw.channel_dim, 0);
    assert_eq!(dw.out_channels, mb.constant(dw.weight).unwrap().shape[0]);

    // Node names when no module is known; Gemm transB=0 and MatMul [in, out]: dim 1.
    let cov = Graph::from_onnx(fixture_dir().join("op_coverage.onnx")).unwrap();
    let got: Vec<(&str, LayerKind, usize, usize)> = cov
        .layers()
        .iter()
        .map(|l| (l.name.as_str(), l.kind, l.channel_dim, l.out_channels))
        .collect();
    assert_eq!(
        got,
        [
            ("c1", LayerKind::Conv, 0, 8),
            ("c2", LayerKind::Conv, 0, 8),
            ("dw", LayerKind::Conv, 0, 8),
            ("fc", LayerKind::Gemm, 1, 12),
            ("proj", LayerKind::MatMul, 1, 7),
        ]
    );
}

#[test]
fn shape_subgraphs_fold_at_load() {
    let raw = std::fs::read(fixture_dir().join("shufflenet_v2_slim_opset13.onnx")).unwrap();
    let model = proto::ModelProto::decode(&raw[..]).unwrap();
    let in_file = |op: &str| {
        model
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type() == op)
            .count()
    };
    assert!(
        in_file("Shape") > 0 && in_file("Gather") > 0,
        "the fixture should have shape subgraphs"
    );
    let graph = Graph::from_onnx(fixture_dir().join("shufflenet_v2_slim_opset13.onnx")).unwrap();
    for n in graph.nodes() {
        assert!(
            !["Shape", "Gather", "Constant", "Unsqueeze", "ConstantOfShape"].contains(&n.op_type.as_str())
                || matches!(n.op, Op::Reshape { .. }),
            "node {} ({}) left at run time",
            n.name,
            n.op_type
        );
        assert!(
            n.op_type != "Shape" && n.op_type != "Gather",
            "node {} ({}) was not folded",
            n.name,
            n.op_type
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad and hostile files.

fn load_err(path: &Path) -> String {
    match Graph::from_onnx(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg}");
            msg
        }
    }
}

/// A copy of `resnet18_slim` (weights external) in a fresh folder, the model edited by `edit`.
fn edited_copy(edit: impl FnOnce(&mut proto::ModelProto, &Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_dir().join("resnet18_slim.onnx");
    let mut model = proto::ModelProto::decode(&std::fs::read(&src).unwrap()[..]).unwrap();
    std::fs::copy(
        src.with_extension("onnx.data"),
        dir.path().join("resnet18_slim.onnx.data"),
    )
    .unwrap();
    edit(&mut model, dir.path());
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    (dir, path)
}

fn set_external(model: &mut proto::ModelProto, key: &str, value: &str) {
    let t = model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| !t.external_data.is_empty())
        .unwrap();
    match t.external_data.iter_mut().find(|e| e.key() == key) {
        Some(e) => e.value = Some(value.to_string()),
        None => t.external_data.push(proto::StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value.into()),
        }),
    }
}

#[test]
fn bad_files_get_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let not_onnx = dir.path().join("notes.onnx");
    std::fs::write(&not_onnx, "this is a text file, not a model\n").unwrap();
    assert!(load_err(&not_onnx).contains("not an ONNX model"));

    let raw = std::fs::read(fixture_dir().join("op_coverage.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &raw[..raw.len() * 2 / 3]).unwrap();
    let e = load_err(&truncated);
    assert!(
        e.starts_with(&truncated.display().to_string()) && e.contains("not an ONNX model"),
        "{e}"
    );

    // The weights file is missing.
    let lonely = dir.path().join("resnet18_slim.onnx");
    std::fs::copy(fixture_dir().join("resnet18_slim.onnx"), &lonely).unwrap();
    let e = load_err(&lonely);
    assert!(
        e.contains("resnet18_slim.onnx.data") && e.contains("initializer"),
        "{e}"
    );
}

#[test]
fn external_data_must_stay_in_the_model_folder() {
    for location in ["../resnet18_slim.onnx.data", "/etc/passwd", "sub/../../x.data"] {
        let (_d, path) = edited_copy(|m, _| set_external(m, "location", location));
        let e = load_err(&path);
        assert!(
            e.contains(location) && (e.contains("leaves the model's folder") || e.contains("not a relative path")),
            "{e}"
        );
    }
    // A symbolic link inside the folder that points out of it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("resnet18_slim.onnx.data"),
        outside.path().join("w.data"),
    )
    .unwrap();
    let (d, path) = edited_copy(|m, _| set_external(m, "location", "link.data"));
    std::os::unix::fs::symlink(outside.path().join("w.data"), d.path().join("link.data")).unwrap();
    assert!(load_err(&path).contains("leads out of the model's folder"));
}

#[test]
fn external_ranges_and_declared_sizes_are_checked_before_allocation() {
    let size = std::fs::metadata(fixture_dir().join("resnet18_slim.onnx.data"))
        .unwrap()
        .len();
    let (_d, path) = edited_copy(|m, _| set_external(m, "offset", &(size - 8).to_string()));
    assert!(load_err(&path).contains("lies outside"));
    let (_d, path) = edited_copy(|m, _| set_external(m, "offset", &u64::MAX.to_string()));
    assert!(load_err(&path).contains("lies outside"));
    let (_d, path) = edited_copy(|m, _| set_external(m, "length", "4"));
    assert!(load_err(&path).contains("is not the tensor's"));
    // A tensor claiming 2^40 floats (4 TiB).
    let (_d, path) = edited_copy(|m, _| {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.dims = vec![1 << 20, 1 << 20];
    });
    assert!(load_err(&path).contains("exceeds the limit"));
    let (_d, path) = edited_copy(|m, _| {
        m.graph.as_mut().unwrap().initializer[0].dims = vec![i64::MAX, 4];
    });
    assert!(load_err(&path).contains("exceeds the limit"));
    // Five tensors of 2^28 floats each, all reading the same bytes of one file: each is within
    // the per-tensor limit, together they exceed the budget of all constants, which is checked
    // before any of them is read.
    let (d, path) = edited_copy(|m, _| {
        let g = m.graph.as_mut().unwrap();
        let mut big = g.initializer[0].clone();
        big.dims = vec![1 << 28];
        big.external_data.retain(|e| e.key() == "location");
        for e in &mut big.external_data {
            e.value = Some("huge.data".into());
        }
        for i in 0..5 {
            let mut t = big.clone();
            t.name = Some(format!("alias{i}"));
            g.initializer.push(t);
        }
    });
    // A sparse file: 1 GiB of zeros that take no disk space.
    std::fs::File::create(d.path().join("huge.data"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let e = load_err(&path);
    assert!(e.contains("exceed the limit") && e.contains("in all"), "{e}");
}

#[test]
fn unsupported_ops_and_attributes_name_the_node() {
    let (_d, path) = edited_copy(|m, _| {
        let n = m
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type() == "Relu")
            .unwrap();
        n.op_type = Some("Gelu".into());
        n.name = Some("my_gelu".into());
    });
    let e = load_err(&path);
    assert!(
        e.contains("node \"my_gelu\" (Gelu)") && e.contains("not supported"),
        "{e}"
    );
    let (_d, path) = edited_copy(|m, _| {
        let n = m
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type() == "Conv")
            .unwrap();
        n.name = Some("the_conv".into());
        n.attribute.push(proto::AttributeProto {
            name: Some("frobnicate".into()),
            i: Some(1),
            r#type: Some(2),
            ..Default::default()
        });
    });
    let e = load_err(&path);
    assert!(
        e.contains("node \"the_conv\" (Conv)") && e.contains("attribute \"frobnicate\""),
        "{e}"
    );
    // Two graph inputs.
    let (_d, path) = edited_copy(|m, _| {
        let g = m.graph.as_mut().unwrap();
        let mut second = g.input[0].clone();
        second.name = Some("mask".into());
        g.input.push(second);
    });
    assert!(load_err(&path).contains("exactly one"));
    // Only the batch dimension may be symbolic.
    let (_d, path) = edited_copy(|m, _| {
        use proto::tensor_shape_proto::dimension::Value;
        let g = m.graph.as_mut().unwrap();
        let Some(proto::type_proto::Value::TensorType(t)) = g.input[0].r#type.as_mut().unwrap().value.as_mut() else {
            panic!()
        };
        t.shape.as_mut().unwrap().dim[2].value = Some(Value::DimParam("height".into()));
    });
    assert!(load_err(&path).contains("symbolic"));
}

/// One Conv node on the graph input `[c, h, w]` (`m` outputs, weights and bias from `rnd`):
/// the builder, the Conv's output, and a direct f64 loop computing that output from an input.
#[allow(clippy::type_complexity)]
fn one_conv(
    rnd: &mut impl FnMut() -> f32,
    (c, m, [h, w]): (usize, usize, [usize; 2]),
    attrs: ConvAttrs,
) -> (GraphBuilder, ValueId, Box<dyn Fn(&[f32]) -> Vec<f64>>) {
    let ConvAttrs {
        kernel,
        strides,
        dilations,
        pads,
        groups,
    } = attrs.clone();
    let [kh, kw] = kernel;
    let (cg, mg) = (c / groups, m / groups);
    let mut b = GraphBuilder::new("x", &[c, h, w]).unwrap();
    let wt: Vec<f32> = (0..m * cg * kh * kw).map(|_| rnd()).collect();
    let bias: Vec<f32> = (0..m).map(|_| rnd()).collect();
    let wid = b.constant("w", Arc::new(Tensor::f32(vec![m, cg, kh, kw], wt.clone())));
    let bid = b.constant("b", Arc::new(Tensor::f32(vec![m], bias.clone())));
    let x_id = b.value("x").unwrap();
    let y = b
        .node("conv", "Conv", Op::Conv(attrs), &[x_id, wid, bid], &["y"], None)
        .unwrap()[0];
    let [oh, ow] = [0, 1].map(|d| {
        let span = dilations[d] * (kernel[d] - 1) + 1;
        ([h, w][d] + pads[d] + pads[d + 2] - span) / strides[d] + 1
    });
    assert_eq!(b.shape(y), [1, m, oh, ow]);
    let reference = move |x: &[f32]| {
        let mut want = vec![0.0f64; m * oh * ow];
        for oc in 0..m {
            let grp = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[oc] as f64;
                    for ic in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * strides[0] + ky * dilations[0]) as isize - pads[0] as isize;
                                let ix = (ox * strides[1] + kx * dilations[1]) as isize - pads[1] as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    let xv = x[((grp * cg + ic) * h + iy as usize) * w + ix as usize] as f64;
                                    acc += xv * wt[((oc * cg + ic) * kh + ky) * kw + kx] as f64;
                                }
                            }
                        }
                    }
                    want[(oc * oh + oy) * ow + ox] = acc;
                }
            }
        }
        want
    };
    (b, y, Box::new(reference))
}

#[test]
fn small_graphs_built_by_hand() {
    // Convs with every variant off the beaten path (groups, strides of 1 to 3 along either
    // axis, dilation, asymmetric padding, odd widths), compared with a direct loop.
    let mut rnd = lcg(1);
    // (kernel, strides, dilations, pads, input height and width, groups)
    let cases = [
        ([3, 2], [2, 1], [1, 2], [2, 0, 1, 1], [7, 6], 2),
        ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], [9, 13], 1),
        ([7, 7], [2, 2], [1, 1], [3, 3, 3, 3], [11, 12], 1),
        ([3, 3], [3, 3], [1, 2], [0, 2, 1, 0], [10, 17], 2),
        ([2, 3], [1, 2], [2, 1], [1, 0, 0, 2], [6, 9], 1),
    ];
    for (kernel, strides, dilations, pads, [h, w], groups) in cases {
        let (c, m) = (4, 6);
        let attrs = ConvAttrs {
            kernel,
            strides,
            dilations,
            pads,
            groups,
        };
        let (b, y, reference) = one_conv(&mut rnd, (c, m, [h, w]), attrs.clone());
        let graph = b.finish(vec![y]).unwrap();
        let x: Vec<f32> = (0..c * h * w).map(|_| rnd()).collect();
        let got = Executor::new(&graph).unwrap().run(&x, 1, false).unwrap().remove(0);
        let want: Vec<f32> = reference(&x).into_iter().map(|v| v as f32).collect();
        assert!(relative_error(&got, &want) < 1e-6, "{attrs:?}: {got:?}\n{want:?}");
    }

    // A node that would merge the batch into another dimension is refused.
    let mut b = GraphBuilder::new("x", &[4, 2]).unwrap();
    let x_id = b.value("x").unwrap();
    let e = b
        .node("r", "Reshape", Op::Reshape { shape: vec![4, 2] }, &[x_id], &["y"], None)
        .unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
}

/// Depthwise Convs (two outputs per input channel) on both of the kernel's paths (rows of 32
/// or more outputs computed row by row, narrower stride-1 planes along whole padded rows),
/// strides 1, 2 and 3, dilation, asymmetric padding, each with the activation after it that
/// the Conv's step absorbs (ReLU6, SiLU as Sigmoid then Mul, ReLU), against a direct f64 loop.
#[test]
fn depthwise_convs_with_their_activations() {
    /// f32 rounding of sums of a few products of numbers below 1 in magnitude, and of `exp`.
    const TOLERANCE: f32 = 1e-6;
    let mut rnd = lcg(11);
    let (c, m) = (3, 6);
    // (kernel, strides, dilations, pads, input height and width, activation)
    let cases = [
        ([3, 3], [1, 1], [1, 1], [1; 4], [5, 40], "relu6"),
        ([5, 5], [1, 1], [1, 1], [2; 4], [9, 9], "silu"),
        ([3, 3], [2, 2], [1, 1], [0, 1, 1, 0], [8, 67], "relu"),
        ([3, 2], [3, 3], [2, 2], [2, 2, 1, 2], [10, 11], "none"),
        ([3, 3], [2, 2], [1, 1], [1; 4], [14, 13], "relu6"),
        ([3, 3], [2, 1], [1, 2], [1, 2, 0, 3], [9, 40], "silu"),
    ];
    for (kernel, strides, dilations, pads, [h, w], act) in cases {
        let attrs = ConvAttrs {
            kernel,
            strides,
            dilations,
            pads,
            groups: c,
        };
        let (mut b, y, reference) = one_conv(&mut rnd, (c, m, [h, w]), attrs);
        let out = match act {
            "relu6" => b.node(
                "clip",
                "Clip",
                Op::Unary(Unary::Clip { min: 0.0, max: 6.0 }),
                &[y],
                &["a"],
                None,
            ),
            "relu" => b.node("relu", "Relu", Op::Unary(Unary::Relu), &[y], &["a"], None),
            "silu" => {
                let s = b
                    .node("sig", "Sigmoid", Op::Unary(Unary::Sigmoid), &[y], &["s"], None)
                    .unwrap()[0];
                b.node("mul", "Mul", Op::Binary(Binary::Mul), &[y, s], &["a"], None)
            }
            _ => Ok(vec![y]),
        }
        .unwrap();
        let graph = b.finish(out).unwrap();
        let exec = Executor::new(&graph).unwrap();
        assert_eq!(exec.fused_activations(), usize::from(act != "none"), "{act}");
        let x: Vec<f32> = (0..c * h * w).map(|_| 8.0 * rnd()).collect();
        let got = exec.run(&x, 1, false).unwrap().remove(0);
        let want: Vec<f32> = reference(&x)
            .into_iter()
            .map(|acc| match act {
                "relu6" => acc.clamp(0.0, 6.0),
                "relu" => acc.max(0.0),
                "silu" => acc / (1.0 + (-acc).exp()),
                _ => acc,
            } as f32)
            .collect();
        let err = relative_error(&got, &want);
        assert!(err < TOLERANCE, "{kernel:?} {strides:?} {act}: {err}");
    }
}

/// Fast chains whose results other nodes read: Winograd's result as a map for the next fast
/// chain and as an NCHW copy for a Concat, and a Winograd result that only the Concat reads
/// (stored NCHW). Against direct f64 loops.
#[test]
fn fast_chain_results_reach_general_nodes() {
    let (c, h, w) = (16, 6, 5);
    let mut rnd = lcg(7);
    let conv3 = |x: &[f32], wt: &[f32]| -> Vec<f32> {
        let mut y = vec![0.0f32; c * h * w];
        for oc in 0..c {
            for oy in 0..h {
                for ox in 0..w {
                    let mut acc = 0.0f64;
                    for ic in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    let xv = x[(ic * h + iy as usize) * w + ix as usize] as f64;
                                    acc += xv * wt[((oc * c + ic) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                    }
                    y[(oc * h + oy) * w + ox] = acc as f32;
                }
            }
        }
        y
    };
    let mut b = GraphBuilder::new("x", &[c, h, w]).unwrap();
    let attrs = same_3x3();
    let w1: Vec<f32> = (0..c * c * 9).map(|_| rnd()).collect();
    let w2: Vec<f32> = (0..c * c * 9).map(|_| rnd()).collect();
    let w1_id = b.constant("w1", Arc::new(Tensor::f32(vec![c, c, 3, 3], w1.clone())));
    let w2_id = b.constant("w2", Arc::new(Tensor::f32(vec![c, c, 3, 3], w2.clone())));
    let x_id = b.value("x").unwrap();
    let a = b
        .node("c1", "Conv", Op::Conv(attrs.clone()), &[x_id, w1_id], &["a"], None)
        .unwrap()[0];
    let bb = b
        .node("c2", "Conv", Op::Conv(attrs), &[a, w2_id], &["b"], None)
        .unwrap()[0];
    let y = b
        .node("cat", "Concat", Op::Concat { axis: 1 }, &[a, bb], &["y"], None)
        .unwrap();
    let graph = b.finish(y).unwrap();
    let exec = Executor::new(&graph).unwrap();
    assert_eq!(
        exec.fast_convs(),
        (2, 1, 2),
        "both Convs fast, the second one's result NCHW"
    );
    let x: Vec<f32> = (0..c * h * w).map(|_| rnd()).collect();
    let got = exec.run(&x, 1, false).unwrap().remove(0);
    let first = conv3(&x, &w1);
    let mut want = first.clone();
    want.extend(conv3(&first, &w2));
    assert!(relative_error(&got, &want) < 1e-5, "{got:?}\n{want:?}");
}

/// DESIGN's weight quantizer written out independently of `clado::quant`: per output channel
/// `s = max|W_c| / qmax` (1 for an all-zero channel), `clamp(round_half_even(W / s)) · s`.
fn reference_weight_quant(w: &[f32], shape: &[usize], channel_dim: usize, bits: u8) -> Vec<f32> {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let channels = shape[channel_dim];
    let inner: usize = shape[channel_dim + 1..].iter().product();
    let channel = |i: usize| (i / inner) % channels;
    let mut max = vec![0.0f32; channels];
    for (i, v) in w.iter().enumerate() {
        max[channel(i)] = max[channel(i)].max(v.abs());
    }
    let scale: Vec<f32> = max.iter().map(|&m| if m == 0.0 { 1.0 } else { m / qmax }).collect();
    w.iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scale[channel(i)];
            (v / s).round_ties_even().clamp(-qmax, qmax) * s
        })
        .collect()
}

#[test]
fn quantized_layers_match_a_reference_outside_the_executor() {
    use crate::quant::{weight_scales, ActQuantizer, Calibration};
    let graph = Graph::from_onnx(fixture_dir().join("op_coverage.onnx")).unwrap();
    let ((xs, x), _) = io_of(&fixture_dir().join("op_coverage.onnx"));
    let exec = Executor::new(&graph).unwrap();
    for (l, layer) in graph.layers().iter().enumerate() {
        let (by_channel, _) = graph.layer_weight_by_channel(l);
        let scales = weight_scales(&by_channel, layer.out_channels, 3, false, Calibration::MinMax);
        let q = exec.quantized_weights(l, 3, &scales).unwrap();
        let t = graph.layer_weight(l);
        let want = reference_weight_quant(t.as_f32().unwrap(), &t.shape, layer.channel_dim, 3);
        assert_eq!(*q, want, "layer {}: fake-quantized weights", layer.name);
        // The same weights as constants of an FP graph give the same logits, bit for bit.
        let mut edited = graph.clone();
        edited.values[layer.weight].constant = Some(Arc::new(Tensor::f32(t.shape.clone(), want)));
        let mut plan = vec![LayerQuant::default(); l + 1];
        plan[l].weights = Some(q);
        let got = exec.run_quantized(&x, xs[0], true, &plan).unwrap();
        assert_eq!(
            got,
            Executor::new(&edited).unwrap().run(&x, xs[0], true).unwrap(),
            "layer {}",
            layer.name
        );
    }

    // An input quantizer acts on the layer's input: the same as quantizing the graph's input
    // by hand when the layer reads it.
    let mut b = GraphBuilder::new("x", &[2, 5, 5]).unwrap();
    let w = b.constant(
        "c.weight",
        Arc::new(Tensor::f32(
            vec![3, 2, 3, 3],
            (0..54).map(|i| (i as f32 * 0.37).sin()).collect(),
        )),
    );
    let x_id = b.value("x").unwrap();
    let attrs = same_3x3();
    let y = b.node("c", "Conv", Op::Conv(attrs), &[x_id, w], &["y"], None).unwrap();
    let r = b.node("r", "Add", Op::Binary(Binary::Add), &[y[0], x_id], &["r"], None);
    assert!(r.is_err(), "[N,3,5,5] + [N,2,5,5] does not broadcast");
    let g = b.finish(y).unwrap();
    let exec = Executor::new(&g).unwrap();
    let input: Vec<f32> = (0..100).map(|i| (i as f32 * 0.11).cos() * 2.0).collect();
    let aq = ActQuantizer::from_range(4, crate::format::ActRange { lo: -1.5, hi: 1.0 });
    let mut xq = input.clone();
    aq.quantize_in_place(&mut xq);
    assert_ne!(xq, input);
    let plan = [LayerQuant {
        weights: None,
        input: Some(aq),
    }];
    assert_eq!(
        exec.run_quantized(&input, 2, false, &plan).unwrap(),
        exec.run(&xq, 2, false).unwrap()
    );
}

/// onnxruntime from `make setup-venv`, run live on new inputs (batch 3, another seed than the
/// committed ones) with its default graph optimisations, as a user would run it.
#[test]
fn executor_matches_onnxruntime_run_live() {
    use rand::{Rng, SeedableRng};
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-venv` (onnxruntime is the reference)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    let mut jobs = Vec::new();
    for (i, model) in fixtures().iter().enumerate() {
        let graph = Graph::from_onnx(model).unwrap();
        let mut shape = vec![3];
        shape.extend_from_slice(graph.input_shape());
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-2.5f32..2.5))
            .collect();
        let (xp, yp) = (
            dir.path().join(format!("x{i}.npy")),
            dir.path().join(format!("y{i}.npy")),
        );
        ndarray_npy::write_npy(&xp, &ndarray::ArrayD::from_shape_vec(shape, x.clone()).unwrap()).unwrap();
        jobs.push((model.clone(), graph, x, xp, yp));
    }
    let script = "import sys, numpy as np, onnxruntime as ort\n\
        args = sys.argv[1:]\n\
        for m, x, y in zip(args[0::3], args[1::3], args[2::3]):\n\
        \x20   s = ort.InferenceSession(m, providers=['CPUExecutionProvider'])\n\
        \x20   np.save(y, s.run(None, {s.get_inputs()[0].name: np.load(x)})[0])\n";
    let mut cmd = std::process::Command::new(&python);
    cmd.args(["-c", script]);
    for (m, _, _, xp, yp) in &jobs {
        cmd.arg(m).arg(xp).arg(yp);
    }
    let out = cmd.output().expect("run onnxruntime");
    assert!(
        out.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (model, graph, x, _, yp) in &jobs {
        let (_, want) = npy(yp);
        let got = Executor::new(graph).unwrap().run(x, 3, true).unwrap().remove(0);
        let err = relative_error(&got, &want);
        assert!(
            err <= LOGIT_TOLERANCE,
            "{}: relative error {err:e} against live onnxruntime",
            model.display()
        );
    }
}

/// The engine's kernels run every 3×3 stride-1 Conv (Winograd), and every other Conv they fit
/// whose result only fast chains and global pools read: all but the 7×7 stem of the (narrow)
/// torchvision ResNet fixtures.
#[test]
fn fast_kernels_serve_the_resnets() {
    for path in fixtures() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let exec = Executor::new(&Graph::from_onnx(&path).unwrap()).unwrap();
        let (fast, nchw, convs) = exec.fast_convs();
        eprintln!("{name}: {fast} of {convs} Convs fast, {nchw} of them stored NCHW");
        if name.starts_with("resnet") {
            assert_eq!(fast, convs - 1, "{name}");
        }
    }
}

#[test]
fn prefix_broadcasts_are_recognised() {
    use super::ops::prefix_broadcast;
    assert!(prefix_broadcast(&[1, 8, 5, 5], &[8, 1, 1]));
    assert!(prefix_broadcast(&[1, 8, 5, 5], &[1, 8, 1, 1]));
    assert!(prefix_broadcast(&[1, 8, 5, 5], &[1]));
    assert!(prefix_broadcast(&[1, 8, 5, 5], &[]));
    assert!(prefix_broadcast(&[1, 8, 5, 5], &[1, 8, 5, 5]));
    assert!(prefix_broadcast(&[1, 8, 5, 5], &[8, 5, 1]));
    // One number per run is not what these take:
    assert!(!prefix_broadcast(&[1, 8, 5, 5], &[5]));
    assert!(!prefix_broadcast(&[1, 8, 5, 5], &[8, 1, 5]));
    assert!(!prefix_broadcast(&[8, 5], &[1, 8, 5]));
}
