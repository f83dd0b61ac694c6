//! Tests of the engine against a straightforward candle-core NCHW reference (conv2d, BN as
//! `(x − mean)/√(var + ε)·γ + β`, matmul), on random weights with non-trivial BN statistics.

use super::kernels::Isa;
use super::*;
use crate::checkpoint::{StateDict, Tensor32};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Full network vs reference, as max |difference| / max(1, max |reference logit|). Both sum
/// in f32 but differently (the engine: Winograd F(2×2, 3×3) for 3×3 stride-1 layers, else one
/// fma chain per output over taps and channels; candle: im2col + blocked gemm), and BN is
/// `x·scale + bias` here vs `(x − mean)/σ·γ + β` there: each layer differs by a few ulps of its
/// largest terms. Measured: at most 4.9e-7 on ResNet-20/32 with random weights (3.3e-7 with
/// direct convolutions only); the bound leaves a margin of ~6 while still catching any real
/// error (a wrong tap or channel moves logits by O(1)).
const NETWORK_TOLERANCE: f32 = 3e-6;

/// One layer vs reference on identical inputs (same measure): only the summation (or Winograd
/// transform) and the BN form differ. Measured: at most 7.5e-7 (3.6e-7 with direct
/// convolutions only).
const LAYER_TOLERANCE: f32 = 3e-6;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn put(sd: &mut StateDict, name: &str, shape: &[usize], data: Vec<f32>) {
    sd.insert(
        name.to_string(),
        Tensor32 {
            shape: shape.to_vec(),
            data,
        },
    );
}

fn put_conv(sd: &mut StateDict, r: &mut ChaCha8Rng, name: &str, cout: usize, cin: usize, k: usize) {
    let a = (6.0 / (cin * k * k) as f32).sqrt();
    put(
        sd,
        &format!("{name}.weight"),
        &[cout, cin, k, k],
        uniform(r, cout * cin * k * k, -a, a),
    );
}

fn put_bn(sd: &mut StateDict, r: &mut ChaCha8Rng, prefix: &str, c: usize) {
    put(sd, &format!("{prefix}.weight"), &[c], uniform(r, c, 0.5, 1.5));
    put(sd, &format!("{prefix}.bias"), &[c], uniform(r, c, -0.3, 0.3));
    put(sd, &format!("{prefix}.running_mean"), &[c], uniform(r, c, -0.3, 0.3));
    put(sd, &format!("{prefix}.running_var"), &[c], uniform(r, c, 0.5, 2.0));
}

/// A random CIFAR ResNet state dict with `blocks` blocks per stage.
fn random_state_dict(blocks: usize, in_channels: usize, classes: usize, seed: u64) -> StateDict {
    let mut r = rng(seed);
    let mut sd = StateDict::new();
    put_conv(&mut sd, &mut r, "conv1", 16, in_channels, 3);
    put_bn(&mut sd, &mut r, "bn1", 16);
    put(&mut sd, "bn1.num_batches_tracked", &[], vec![100.0]);
    let mut cin = 16;
    for (s, planes) in [16, 32, 64].into_iter().enumerate() {
        for b in 0..blocks {
            let p = format!("layer{}.{b}", s + 1);
            put_conv(&mut sd, &mut r, &format!("{p}.conv1"), planes, cin, 3);
            put_bn(&mut sd, &mut r, &format!("{p}.bn1"), planes);
            put_conv(&mut sd, &mut r, &format!("{p}.conv2"), planes, planes, 3);
            put_bn(&mut sd, &mut r, &format!("{p}.bn2"), planes);
            if cin != planes {
                put_conv(&mut sd, &mut r, &format!("{p}.downsample.0"), planes, cin, 1);
                put_bn(&mut sd, &mut r, &format!("{p}.downsample.1"), planes);
            }
            cin = planes;
        }
    }
    let a = (6.0f32 / 64.0).sqrt();
    put(
        &mut sd,
        "fc.weight",
        &[classes, 64],
        uniform(&mut r, classes * 64, -a, a),
    );
    put(&mut sd, "fc.bias", &[classes], uniform(&mut r, classes, -0.1, 0.1));
    sd
}

fn random_images(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    uniform(&mut rng(seed), n * c * h * w, -2.0, 2.0)
}

/// Per-channel max-abs scales for `bits`, as `minmax` calibration would give.
fn minmax_scales(net: &Network, layer: usize, bits: u8) -> Vec<f32> {
    let w = net.weights(layer);
    let out = net.layers()[layer].out_channels();
    let qmax = ((1 << (bits - 1)) - 1) as f32;
    w.chunks(w.len() / out)
        .map(|c| {
            let m = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if m > 0.0 {
                m / qmax
            } else {
                1.0
            }
        })
        .collect()
}

/// How the reference quantizes one layer.
#[derive(Clone, Default)]
struct RefPrecision {
    weights: Option<(u8, Vec<f32>)>,
    input: Option<(u8, f32, f32)>,
}

// ---------------------------------------------------------------- the reference (candle, NCHW)

fn tensor(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn sd_tensor(sd: &StateDict, name: &str) -> Tensor {
    let t = &sd[name];
    tensor(t.data.clone(), &t.shape)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// docs/definitions.md's weight quantizer, written out independently of the engine.
fn reference_weight_quant(w: &[f32], out: usize, bits: u8, scales: &[f32]) -> Vec<f32> {
    let qmax = ((1 << (bits - 1)) - 1) as f32;
    let per = w.len() / out;
    w.iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[i / per];
            (v / s).round_ties_even().max(-qmax).min(qmax) * s
        })
        .collect()
}

/// docs/definitions.md's activation quantizer, written out independently of the engine.
fn reference_act_quant(t: &Tensor, q: Option<(u8, f32, f32)>) -> Tensor {
    let Some((bits, lo, hi)) = q else {
        return t.clone();
    };
    let n = ((1u32 << bits) - 1) as f32;
    let s = (hi - lo) / n;
    let zp = (-lo / s).round_ties_even();
    let v: Vec<f32> = values(t)
        .into_iter()
        .map(|x| (((x / s).round_ties_even() + zp).max(0.0).min(n) - zp) * s)
        .collect();
    tensor(v, t.dims())
}

fn reference_bn(x: &Tensor, sd: &StateDict, prefix: &str) -> Tensor {
    let c = sd[&format!("{prefix}.weight")].shape[0];
    let p = |n: &str| sd_tensor(sd, &format!("{prefix}.{n}")).reshape((1, c, 1, 1)).unwrap();
    let sigma = (p("running_var") + BN_EPS).unwrap().sqrt().unwrap();
    x.broadcast_sub(&p("running_mean"))
        .unwrap()
        .broadcast_div(&sigma)
        .unwrap()
        .broadcast_mul(&p("weight"))
        .unwrap()
        .broadcast_add(&p("bias"))
        .unwrap()
}

/// Layer `i` of the reference on a state `(main, shortcut)` (NCHW), like the engine's `run`.
fn reference_layer(
    sd: &StateDict,
    layers: &[Layer],
    i: usize,
    main: Tensor,
    shortcut: Option<Tensor>,
    p: &RefPrecision,
) -> (Tensor, Option<Tensor>) {
    let name = layers[i].name.as_str();
    let mut w = sd_tensor(sd, &format!("{name}.weight"));
    if let Some((bits, scales)) = &p.weights {
        let q = reference_weight_quant(&values(&w), layers[i].out_channels(), *bits, scales);
        w = tensor(q, w.dims());
    }
    if name == "fc" {
        let x = reference_act_quant(&main.flatten_from(1).unwrap(), p.input);
        let y = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&sd_tensor(sd, "fc.bias"))
            .unwrap();
        return (y, None);
    }
    let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
    let (main, shortcut) = if name == "conv1" {
        let x = reference_act_quant(&main, p.input);
        (
            reference_bn(&x.conv2d(&w, 1, 1, 1, 1).unwrap(), sd, "bn1")
                .relu()
                .unwrap(),
            None,
        )
    } else if name.ends_with(".conv1") {
        let stride = if sd.contains_key(&format!("{prefix}.downsample.0.weight")) {
            2
        } else {
            1
        };
        let x = reference_act_quant(&main, p.input);
        let y = reference_bn(&x.conv2d(&w, 1, stride, 1, 1).unwrap(), sd, &format!("{prefix}.bn1"));
        (y.relu().unwrap(), Some(main))
    } else if name.ends_with(".conv2") {
        let x = reference_act_quant(&main, p.input);
        let y = reference_bn(&x.conv2d(&w, 1, 1, 1, 1).unwrap(), sd, &format!("{prefix}.bn2"));
        if sd.contains_key(&format!("{prefix}.downsample.0.weight")) {
            (y, shortcut)
        } else {
            ((y + shortcut.unwrap()).unwrap().relu().unwrap(), None)
        }
    } else {
        assert!(name.ends_with(".downsample.0"), "{name}");
        let block = prefix.trim_end_matches(".downsample");
        let x = reference_act_quant(&shortcut.unwrap(), p.input);
        let y = reference_bn(&x.conv2d(&w, 0, 2, 1, 1).unwrap(), sd, &format!("{block}.downsample.1"));
        ((main + y).unwrap().relu().unwrap(), None)
    };
    if i + 2 == layers.len() {
        let n = main.dims()[0];
        let c = main.dims()[1];
        let pooled = main.flatten_from(2).unwrap().mean(2).unwrap().reshape((n, c)).unwrap();
        return (pooled, None);
    }
    (main, shortcut)
}

fn reference_forward(
    sd: &StateDict,
    layers: &[Layer],
    images: &[f32],
    shape: [usize; 4],
    precision: &dyn Fn(usize) -> RefPrecision,
) -> Vec<f32> {
    let mut state = (tensor(images.to_vec(), &shape), None);
    for i in 0..layers.len() {
        state = reference_layer(sd, layers, i, state.0, state.1, &precision(i));
    }
    values(&state.0)
}

/// max |a − b| / max(1, max |b|).
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn resnet20_layers_params_and_macs() {
    let sd = random_state_dict(3, 3, 10, 1);
    let net = Network::from_state_dict("resnet20", &sd).unwrap();
    let layers = net.layers();
    assert_eq!(layers.len(), 22);
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    );
    assert_eq!(
        &names[7..10],
        ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"]
    );
    assert_eq!(names[21], "fc");
    assert_eq!(layers[9].weight_shape, [32, 16, 1, 1]);
    assert_eq!(layers[9].macs, 16 * 16 * 32 * 16);
    assert_eq!(layers[21].kind, LayerKind::Linear);
    assert_eq!((layers[21].params, layers[21].macs), (640, 640));
    // The published count for ResNet-20 on 32×32×3 inputs: 40.81 M MACs.
    assert_eq!(layers.iter().map(|l| l.macs).sum::<u64>(), 40_813_184);
    assert_eq!((net.in_channels(), net.classes()), (3, 10));
}

#[test]
fn depths_have_their_layer_counts() {
    for (arch, blocks) in ARCHS.into_iter().take(4) {
        let net = Network::from_state_dict(arch, &random_state_dict(blocks, 1, 10, 2)).unwrap();
        assert_eq!(net.layers().len(), 6 * blocks + 2 + 2, "{arch}");
    }
}

#[test]
fn fp_forward_matches_reference() {
    // ResNet-20 on 1-channel 32×32 (the SIMD tiles), ResNet-32 with 3 channels and 100
    // classes on odd 13×11 images (tile tails, portable paths).
    for (arch, blocks, c, k, h, w, n) in [("resnet20", 3, 1, 10, 32, 32, 3), ("resnet32", 5, 3, 100, 13, 11, 2)] {
        let sd = random_state_dict(blocks, c, k, 3);
        let net = Network::from_state_dict_at(arch, &sd, [h, w]).unwrap();
        let x = random_images(n, c, h, w, 4);
        let images = Images::new(&x, [n, c, h, w]).unwrap();
        let got = net.forward(images, &Plan::fp(&net), Parallelism::Rayon).unwrap();
        let want = reference_forward(&sd, net.layers(), &x, [n, c, h, w], &|_| RefPrecision::default());
        let d = relative_difference(got.data(), &want);
        assert!(d <= NETWORK_TOLERANCE, "{arch}: relative difference {d:e}");
        assert_eq!((got.batch(), got.classes()), (n, k));
    }
}

#[test]
fn weight_quantized_network_matches_reference() {
    let sd = random_state_dict(3, 1, 10, 5);
    let net = Network::from_state_dict("resnet20", &sd).unwrap();
    let (n, c, h, w) = (2, 1, 32, 32);
    let x = random_images(n, c, h, w, 6);
    let bits = |i: usize| [2u8, 4, 8][i % 3];
    let mut plan = Plan::fp(&net);
    for i in 0..net.layers().len() {
        let weights = net
            .quantized_weights(i, bits(i), &minmax_scales(&net, i, bits(i)))
            .unwrap();
        plan.set(
            i,
            LayerPrecision {
                weights: Some(weights),
                input: None,
            },
        )
        .unwrap();
    }
    let got = net
        .forward(Images::new(&x, [n, c, h, w]).unwrap(), &plan, Parallelism::Rayon)
        .unwrap();
    let want = reference_forward(&sd, net.layers(), &x, [n, c, h, w], &|i| RefPrecision {
        weights: Some((bits(i), minmax_scales(&net, i, bits(i)))),
        input: None,
    });
    let d = relative_difference(got.data(), &want);
    assert!(d <= NETWORK_TOLERANCE, "relative difference {d:e}");
}

/// Every layer kind (stem, block conv1/conv2 with and without downsample, downsample, fc)
/// quantized at w4a4, from the engine's FP state before it, against the reference on the same
/// values. (Through a whole network, activation quantization amplifies ulp differences into
/// whole quantization steps now and then, so layers are compared one at a time.)
#[test]
fn each_quantized_layer_matches_reference() {
    for (arch, blocks, h, w) in [("resnet20", 3, 32, 32), ("resnet32", 5, 9, 7)] {
        let sd = random_state_dict(blocks, 3, 10, 7);
        let net = Network::from_state_dict_at(arch, &sd, [h, w]).unwrap();
        let (n, c) = (2, 3);
        let x = random_images(n, c, h, w, 8);
        let fp = Plan::fp(&net);
        let mut state = net.input_state(Images::new(&x, [n, c, h, w]).unwrap()).unwrap();
        let mut inputs = Vec::new();
        for i in 0..net.layers().len() {
            net.layer_input(&state, &mut inputs).unwrap();
            let lo = inputs.iter().fold(0.0f32, |m, &v| m.min(v));
            let hi = inputs.iter().fold(0.0f32, |m, &v| m.max(v)) * 0.8; // some clipping too
            let scales = minmax_scales(&net, i, 4);
            let precision = LayerPrecision {
                weights: Some(net.quantized_weights(i, 4, &scales).unwrap()),
                input: Some(ActQuant::new(4, lo, hi).unwrap()),
            };
            let plan = fp.clone().with(i, precision).unwrap();
            let got = net.run(&state, i + 1, &plan, Parallelism::None).unwrap().to_nchw(&net);

            let ((main, mshape), short) = state.to_nchw(&net);
            let rp = RefPrecision {
                weights: Some((4, scales)),
                input: Some((4, lo, hi)),
            };
            let (want_main, want_short) = reference_layer(
                &sd,
                net.layers(),
                i,
                tensor(main, &mshape),
                short.map(|(s, shape)| tensor(s, &shape)),
                &rp,
            );
            let name = &net.layers()[i].name;
            let d = relative_difference(&got.0 .0, &values(&want_main));
            assert!(d <= LAYER_TOLERANCE, "{arch} {name}: relative difference {d:e}");
            assert_eq!(got.1.is_some(), want_short.is_some(), "{name}");
            if let (Some((s, _)), Some(ws)) = (&got.1, &want_short) {
                assert_eq!(bits_of(s), bits_of(&values(ws)), "{name}: shortcut");
            }
            state = net.run(&state, i + 1, &fp, Parallelism::None).unwrap();
        }
    }
}

/// Resuming from the FP state before layer i with layer i (and later layers) quantized is
/// bitwise the full forward with the same plan.
#[test]
fn resume_is_bitwise_the_full_forward() {
    let sd = random_state_dict(3, 1, 10, 9);
    let net = Network::from_state_dict("resnet20", &sd).unwrap();
    let (n, c, h, w) = (3, 1, 32, 32);
    let x = random_images(n, c, h, w, 10);
    let images = Images::new(&x, [n, c, h, w]).unwrap();
    let fp = Plan::fp(&net);
    let l = net.layers().len();
    let mut states = vec![net.input_state(images).unwrap()];
    for i in 0..l {
        states.push(net.run(&states[i], i + 1, &fp, Parallelism::Rayon).unwrap());
    }
    let fp_logits = net.forward(images, &fp, Parallelism::Rayon).unwrap();
    assert_eq!(
        bits_of(states[l].logits(&net).unwrap().data()),
        bits_of(fp_logits.data())
    );

    let quantized = |i: usize| LayerPrecision {
        weights: Some(net.quantized_weights(i, 3, &minmax_scales(&net, i, 3)).unwrap()),
        input: Some(ActQuant::new(6, -1.5, 4.0).unwrap()),
    };
    for i in 0..l {
        let plan = fp.clone().with(i, quantized(i)).unwrap();
        let full = net.forward(images, &plan, Parallelism::Rayon).unwrap();
        let resumed = net.run_to_logits(&states[i], &plan, Parallelism::Rayon).unwrap();
        assert_eq!(bits_of(full.data()), bits_of(resumed.data()), "layer {i}");
    }
    // Pairs: FP state before i → quantized i → … → state before j → quantized j → logits.
    for (i, j) in [(0, 1), (1, 2), (2, 3), (7, 9), (8, 9), (9, 10), (3, 21), (20, 21)] {
        let plan = fp.clone().with(i, quantized(i)).unwrap().with(j, quantized(j)).unwrap();
        let full = net.forward(images, &plan, Parallelism::Rayon).unwrap();
        let mid = net.run(&states[i], j, &plan, Parallelism::None).unwrap();
        let resumed = net.run_to_logits(&mid, &plan, Parallelism::None).unwrap();
        assert_eq!(bits_of(full.data()), bits_of(resumed.data()), "layers {i}, {j}");
    }
}

/// Thread count, batch split and instruction set do not change a single bit.
#[test]
fn results_are_bitwise_independent_of_threads_batch_and_isa() {
    let sd = random_state_dict(3, 3, 10, 11);
    let (n, c) = (4, 3);
    for (h, w) in [(32, 32), (10, 13)] {
        let x = random_images(n, c, h, w, 12);
        let images = Images::new(&x, [n, c, h, w]).unwrap();
        let base = Network::from_state_dict_at("resnet20", &sd, [h, w]).unwrap();
        let mut plan = Plan::fp(&base);
        for i in [0, 4, 9, 15, 21] {
            let q = LayerPrecision {
                weights: Some(base.quantized_weights(i, 4, &minmax_scales(&base, i, 4)).unwrap()),
                input: Some(ActQuant::new(5, -2.0, 3.0).unwrap()),
            };
            plan.set(i, q).unwrap();
        }
        let want = base.forward(images, &plan, Parallelism::Rayon).unwrap();
        let single = base.forward(images, &plan, Parallelism::None).unwrap();
        assert_eq!(bits_of(want.data()), bits_of(single.data()));
        for i in 0..n {
            let one = &x[i * c * h * w..(i + 1) * c * h * w];
            let got = base
                .forward(Images::new(one, [1, c, h, w]).unwrap(), &plan, Parallelism::None)
                .unwrap();
            assert_eq!(bits_of(got.data()), bits_of(want.row(i)), "image {i} alone");
        }
        for isa in Isa::available() {
            let net = Network::from_state_dict_at("resnet20", &sd, [h, w])
                .unwrap()
                .with_isa(isa);
            let mut p = Plan::fp(&net);
            for i in [0, 4, 9, 15, 21] {
                let q = LayerPrecision {
                    weights: Some(net.quantized_weights(i, 4, &minmax_scales(&net, i, 4)).unwrap()),
                    input: Some(ActQuant::new(5, -2.0, 3.0).unwrap()),
                };
                p.set(i, q).unwrap();
            }
            let got = net.forward(images, &p, Parallelism::Rayon).unwrap();
            assert_eq!(bits_of(got.data()), bits_of(want.data()), "{isa:?} at {h}x{w}");
        }
    }
}

#[test]
fn calibration_sees_every_layer_input() {
    let sd = random_state_dict(3, 1, 10, 13);
    let net = Network::from_state_dict("resnet20", &sd).unwrap();
    let (n, c, h, w) = (2, 1, 32, 32);
    let x = random_images(n, c, h, w, 14);
    let images = Images::new(&x, [n, c, h, w]).unwrap();
    let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
    let logits = net
        .calibrate(images, Parallelism::Rayon, |i, v| seen.push((i, v.to_vec())))
        .unwrap();
    assert_eq!(
        seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..22).collect::<Vec<_>>()
    );
    let fp = net.forward(images, &Plan::fp(&net), Parallelism::Rayon).unwrap();
    assert_eq!(bits_of(logits.data()), bits_of(fp.data()));
    assert_eq!(seen[0].1, x);
    let sizes: Vec<usize> = seen.iter().map(|(_, v)| v.len() / n).collect();
    assert_eq!(&sizes[..3], [1024, 16 * 1024, 16 * 1024]);
    assert_eq!(sizes[9], 16 * 1024, "downsample sees the block input");
    assert_eq!(
        seen[9].1, seen[7].1,
        "downsample and conv1 of layer2.0 share their input"
    );
    assert_eq!(sizes[21], 64, "fc sees the pooled features");
    // Values after a ReLU are non-negative; the pooled features too.
    assert!(seen[1].1.iter().all(|&v| v >= 0.0) && seen[21].1.iter().all(|&v| v >= 0.0));
}

/// The engine quantizes with `crate::quant`; these pin the values it gets through its own
/// entry points (hand-checked against docs/definitions.md) and the checks on their inputs.
#[test]
fn quantizers_follow_design() {
    // Activations: 2 bits over [-1, 2]: n = 3, s = 1, zp = 1; ties go to even.
    let q = ActQuant::new(2, -1.0, 2.0).unwrap();
    assert_eq!((q.quantizer().scale, q.quantizer().zero_point), (1.0, 1.0));
    let got: Vec<f32> = [0.5, 1.5, 2.5, -3.0, -0.5, 0.0, 7.0]
        .iter()
        .map(|&v| q.apply(v))
        .collect();
    assert_eq!(got, [0.0, 2.0, 2.0, -1.0, 0.0, 0.0, 2.0]);
    // 8 bits over [-0.5, 3.0]: s = 3.5/255, zp = round(36.43) = 36; x in range is within s/2.
    let q = ActQuant::new(8, -0.5, 3.0).unwrap();
    assert_eq!(q.quantizer().zero_point, 36.0);
    for i in 0..=100 {
        let x = -0.45 + i as f32 * 0.0345;
        let s = q.quantizer().scale;
        assert!((q.apply(x) - x).abs() <= s / 2.0 * (1.0 + 1e-5), "{x}");
    }
    assert_eq!(ActQuant::new(4, 0.0, 0.0).unwrap().apply(3.0), 0.0);
    assert!(ActQuant::new(4, 0.5, 1.0).is_err(), "range without 0");
    assert!(ActQuant::new(1, -1.0, 1.0).is_err() && ActQuant::new(9, -1.0, 1.0).is_err());
    assert!(ActQuant::new(4, f32::NEG_INFINITY, 1.0).is_err());

    // Weights: 2 bits is ternary {-s, 0, s}, per output channel.
    let mut sd = random_state_dict(3, 1, 10, 22);
    let w = [0.9, -0.2, 0.6, -1.0, 0.2, 0.0, 0.1, 0.3, 0.4];
    sd.get_mut("conv1.weight").unwrap().data[..9].copy_from_slice(&w);
    let net = Network::from_state_dict("resnet20", &sd).unwrap();
    let mut scales = vec![1.0; 16];
    scales[0] = 0.5;
    let got = net.quantized_weights(0, 2, &scales).unwrap();
    let want = crate::quant::fake_quantize_weights(net.weights(0), 16, 2, &scales);
    assert_eq!(&want[..9], [0.5, 0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5]);
    let plan = Plan::fp(&net)
        .with(
            0,
            LayerPrecision {
                weights: Some(got),
                input: None,
            },
        )
        .unwrap();
    let same = net.prepare_weights(0, Some(2), &want).unwrap();
    let plan2 = Plan::fp(&net)
        .with(
            0,
            LayerPrecision {
                weights: Some(same),
                input: None,
            },
        )
        .unwrap();
    let x = random_images(1, 1, 32, 32, 23);
    let images = Images::new(&x, [1, 1, 32, 32]).unwrap();
    let a = net.forward(images, &plan, Parallelism::None).unwrap();
    let b = net.forward(images, &plan2, Parallelism::None).unwrap();
    assert_eq!(bits_of(a.data()), bits_of(b.data()));
    let err = |bits: u8, scales: &[f32]| net.quantized_weights(0, bits, scales).unwrap_err().to_string();
    assert!(err(4, &[0.1; 3]).contains("3 weight scales, expected 16"));
    assert!(err(4, &[0.0; 16]).contains("weight scale 0 at channel 0"));
    assert!(err(9, &[0.1; 16]).contains("weight bits 9 out of range 2..=8"));
    assert!(net.quantized_weights(0, 4, &[0.1]).is_ok(), "per tensor");
}

#[test]
fn metrics_are_hand_checked() {
    let l = Logits::new(vec![0.0, 0.0, 1000.0, 0.0, 2.0, 1.0, 3.0, 3.0, 3.0], 3, 3).unwrap();
    let ce = l.mean_cross_entropy(&[0, 0, 2]).unwrap();
    // Sample 0: p_0 = 1/(2 + e^1000) → CE = 1000 (stable); 1: ln(1 + e² + e); 2: ln 3.
    let want = (1000.0 + (1.0 + 2f64.exp() + 1f64.exp()).ln() + 3f64.ln()) / 3.0;
    assert!((ce - want).abs() < 1e-12, "{ce} vs {want}");
    assert_eq!(l.mean_kl_from(&l).unwrap(), 0.0);
    // KL([ln .75, ln .25] ‖ [0, 0]) = .75 ln 1.5 + .25 ln .5.
    let p = Logits::new(vec![0.75f32.ln(), 0.25f32.ln()], 1, 2).unwrap();
    let q = Logits::new(vec![0.0, 0.0], 1, 2).unwrap();
    let want = 0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln();
    assert!((q.mean_kl_from(&p).unwrap() - want).abs() < 1e-7);
    // Top-k with ties: the lower index wins a tie.
    assert_eq!(l.correct_top_k(&[2, 1, 0], 1).unwrap(), 3);
    assert_eq!(l.correct_top_k(&[2, 0, 2], 1).unwrap(), 1);
    assert_eq!(l.correct_top_k(&[0, 2, 2], 2).unwrap(), 2);
    assert_eq!(l.correct_top_k(&[0, 2, 2], 3).unwrap(), 3);
    assert_eq!(l.argmax(), [2, 1, 0]);
    assert!(l.mean_cross_entropy(&[0, 3, 0]).is_err());
    assert!(l.mean_cross_entropy(&[0]).is_err());
}

#[test]
fn bad_state_dicts_are_explained() {
    let err = |arch: &str, sd: &StateDict| Network::from_state_dict(arch, sd).unwrap_err().to_string();
    let good = random_state_dict(3, 1, 10, 15);
    assert!(err("resnet21", &good).contains("unknown architecture 'resnet21'"));
    let mut sd = good.clone();
    sd.remove("layer3.2.bn2.running_var");
    assert!(err("resnet20", &sd).contains("no tensor 'layer3.2.bn2.running_var'"));
    let mut sd = good.clone();
    sd.get_mut("layer2.1.conv1.weight").unwrap().shape = vec![32, 32, 1, 9];
    let e = err("resnet20", &sd);
    assert!(
        e.contains("'layer2.1.conv1.weight' has shape [32, 32, 1, 9], expected [32, 32, 3, 3]"),
        "{e}"
    );
    let mut sd = good.clone();
    sd.get_mut("fc.bias").unwrap().data.pop();
    assert!(err("resnet20", &sd).contains("holds 9 values, expected 10"));
    let mut sd = good.clone();
    sd.get_mut("layer1.0.bn1.weight").unwrap().data[3] = f32::NAN;
    assert!(err("resnet20", &sd).contains("holds NaN at index 3"));
    let e = err("resnet20", &random_state_dict(5, 1, 10, 16));
    assert!(e.contains("does not use: layer1.3.bn1.bias"), "{e}");
    assert!(err("resnet32", &good).contains("no tensor 'layer1.3.conv1.weight'"));
}

#[test]
fn misuse_is_an_error() {
    let a = Network::from_state_dict("resnet20", &random_state_dict(3, 1, 10, 17)).unwrap();
    let b = Network::from_state_dict("resnet20", &random_state_dict(3, 1, 10, 18)).unwrap();
    let x = random_images(1, 1, 32, 32, 19);
    let images = Images::new(&x, [1, 1, 32, 32]).unwrap();
    let w = a.quantized_weights(3, 4, &minmax_scales(&a, 3, 4)).unwrap();
    let precision = LayerPrecision {
        weights: Some(w),
        input: None,
    };
    assert!(
        Plan::fp(&a).with(4, precision.clone()).is_err(),
        "weights of layer 3 on layer 4"
    );
    assert!(Plan::fp(&b).with(3, precision).is_err(), "weights of another network");
    assert!(
        b.forward(images, &Plan::fp(&a), Parallelism::None).is_err(),
        "plan of another network"
    );
    let s = a.input_state(images).unwrap();
    assert!(
        b.run(&s, 3, &Plan::fp(&b), Parallelism::None).is_err(),
        "state of another network"
    );
    let s3 = a.run(&s, 3, &Plan::fp(&a), Parallelism::None).unwrap();
    assert!(a.run(&s3, 2, &Plan::fp(&a), Parallelism::None).is_err(), "backwards");
    assert!(Images::new(&x, [1, 3, 32, 32]).is_err());
    let three = random_images(1, 3, 32, 32, 20);
    let e = a.forward(
        Images::new(&three, [1, 3, 32, 32]).unwrap(),
        &Plan::fp(&a),
        Parallelism::None,
    );
    assert!(e.unwrap_err().to_string().contains("3 channel(s), resnet20 expects 1"));
}

#[test]
fn precisions_come_from_calibration_entries() {
    use crate::format::{ActRange, LayerCalib};
    use crate::options::QuantOption;
    let net = Network::from_state_dict("resnet20", &random_state_dict(3, 1, 10, 21)).unwrap();
    let scales = minmax_scales(&net, 4, 4);
    let calib = LayerCalib {
        name: "layer1.1.conv2".into(),
        weight_scales: [("4".to_string(), scales.clone())].into(),
        act_ranges: [("8".to_string(), ActRange { lo: -1.0, hi: 3.0 })].into(),
    };
    let mut cache = WeightCache::new();
    let option = QuantOption::parse("w4a8").unwrap();
    let p = cache.layer_precision(&net, 4, option, &calib).unwrap();
    assert_eq!(p.weights.as_ref().unwrap().bits(), Some(4));
    assert_eq!(p.input.unwrap(), ActQuant::new(8, -1.0, 3.0).unwrap());
    let again = cache
        .layer_precision(&net, 4, QuantOption::parse("w4").unwrap(), &calib)
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(
        p.weights.as_ref().unwrap(),
        again.weights.as_ref().unwrap()
    ));
    assert!(again.input.is_none());
    let e = cache.layer_precision(&net, 4, QuantOption::parse("w2a8").unwrap(), &calib);
    assert_eq!(
        e.unwrap_err().to_string(),
        "layer 'layer1.1.conv2': no weight scales for 2 bits (calibrated: 4)"
    );
    let e = cache.layer_precision(&net, 4, QuantOption::parse("a4").unwrap(), &calib);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("no activation range for 4 bits (calibrated: 8)"));
    let e = cache.layer_precision(&net, 5, option, &calib);
    assert!(e.unwrap_err().to_string().contains("given for layer 'layer1.2.conv1'"));
    assert!(cache.layer_precision(&net, 4, QuantOption::FP, &calib).unwrap().is_fp());
}

/// A graph network (every ONNX fixture): each resumable state holds exactly the floats
/// `state_floats_per_image` says; running on from the FP state before layer i with layers i and
/// a later one quantized is bitwise the full forward with the same plan; the calibration pass
/// shows each layer the input the executor gives it.
#[test]
fn graph_networks_resume_bitwise_and_account_their_states() {
    for path in crate::graph::tests::fixtures() {
        let graph = crate::graph::Graph::from_onnx(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let net = Network::from_graph(&graph, &name).unwrap();
        let [c, h, w] = net.input_shape();
        let n = 2;
        let x = random_images(n, c, h, w, 5);
        let images = Images::new(&x, [n, c, h, w]).unwrap();
        let floats = net.state_floats_per_image(h, w).unwrap();
        let layers = net.layers().len();
        assert_eq!(floats.len(), layers + 1, "{name}");
        let fp = Plan::fp(&net);
        let mut state = net.input_state(images).unwrap();
        let mut states = Vec::new();
        for p in 0..layers {
            assert_eq!(state.bytes(), n * floats[p] * 4, "{name}: position {p}");
            states.push(state.clone());
            state = net.run(&state, p + 1, &fp, Parallelism::Rayon).unwrap();
        }
        assert_eq!(
            bits_of(state.logits(&net).unwrap().data()),
            bits_of(net.forward(images, &fp, Parallelism::None).unwrap().data()),
            "{name}: chained FP runs"
        );
        // Quantize two layers (weights and input), resume from before the first.
        for &(i, j) in &[(0, layers - 1), (layers / 3, layers / 2)] {
            let mut plan = fp.clone();
            for l in [i, j] {
                let scales = minmax_scales(&net, l, 4);
                let q = LayerPrecision {
                    weights: Some(net.quantized_weights(l, 4, &scales).unwrap()),
                    input: Some(ActQuant::new(4, -1.5, 2.5).unwrap()),
                };
                plan.set(l, q).unwrap();
            }
            let full = net.forward(images, &plan, Parallelism::Rayon).unwrap();
            let resumed = net.run_to_logits(&states[i], &plan, Parallelism::None).unwrap();
            assert_eq!(
                bits_of(full.data()),
                bits_of(resumed.data()),
                "{name}: layers {i} and {j}"
            );
            assert_ne!(
                bits_of(full.data()),
                bits_of(net.forward(images, &fp, Parallelism::None).unwrap().data())
            );
        }
        let mut seen = Vec::new();
        let logits = net
            .calibrate(images, Parallelism::Rayon, |l, v| seen.push((l, v.len())))
            .unwrap();
        assert_eq!(
            bits_of(logits.data()),
            bits_of(net.forward(images, &fp, Parallelism::Rayon).unwrap().data())
        );
        assert_eq!(seen.len(), layers, "{name}");
        for (l, len) in seen {
            let node = &graph.nodes()[graph.layers()[l].node];
            let per: usize = graph.values()[node.inputs[0]].shape.iter().product();
            assert_eq!(len, n * per, "{name}: layer {l}'s input");
        }
    }
}
