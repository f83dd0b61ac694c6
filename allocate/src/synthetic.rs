//! Seeded synthetic instances with the structure of a real perturbation matrix, for tests and
//! the benchmark: CIFAR ResNet layer shapes (1 input channel, as for Fashion-MNIST), and a G
//! whose diagonal is mostly positive and grows as bits shrink, with smaller dense cross terms,
//! some negative, and measurement noise that makes some 8-bit estimates negative and G
//! indefinite.

use crate::problem::ChoiceQp;
use clado::format::{FpReference, Index, LayerInfo};
use clado::options::QuantOption;
use ndarray::Array2;

/// A small deterministic generator (SplitMix64): same seed, same instance, on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x5DEE_CE66_D1A4_F87B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..k.
    pub fn below(&mut self, k: usize) -> usize {
        (self.uniform() * k as f64) as usize % k.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The quantizable layers of a CIFAR ResNet of `depth` (20, 32, 44, 56, 110: 6n+2) with
/// 16/32/64 channels, 3×3 convolutions, 1×1 downsample convolutions, a 64→`classes` fc, on
/// 32×32 inputs with `in_channels` channels. Names as PyTorch names the modules.
pub fn resnet_layers(depth: usize, in_channels: u64, classes: u64) -> Vec<LayerInfo> {
    assert!(
        depth >= 8 && (depth - 2).is_multiple_of(6),
        "CIFAR ResNet depth is 6n+2"
    );
    let blocks = (depth - 2) / 6;
    let conv = |name: String, cin: u64, cout: u64, k: u64, out_hw: u64| {
        let params = cout * cin * k * k;
        LayerInfo {
            name,
            kind: "conv".into(),
            params,
            macs: params * out_hw * out_hw,
        }
    };
    let mut layers = vec![conv("conv1".into(), in_channels, 16, 3, 32)];
    let mut cin = 16;
    for (stage, (cout, hw)) in [(16u64, 32u64), (32, 16), (64, 8)].into_iter().enumerate() {
        for b in 0..blocks {
            let p = format!("layer{}.{b}", stage + 1);
            layers.push(conv(format!("{p}.conv1"), cin, cout, 3, hw));
            layers.push(conv(format!("{p}.conv2"), cout, cout, 3, hw));
            if cin != cout {
                layers.push(conv(format!("{p}.downsample.0"), cin, cout, 1, hw));
            }
            cin = cout;
        }
    }
    layers.push(LayerInfo {
        name: "fc".into(),
        kind: "linear".into(),
        params: 64 * classes,
        macs: 64 * classes,
    });
    layers
}

/// A perturbation-like G for every (layer, option) of `layers` × `options`, layer-major, and
/// its index. Single-layer estimates d ≈ s_w·4^(−w) + s_a·4^(−a) per layer (quantization noise
/// power), with noise; cross terms ρ_lm·√(d_u d_v) with ρ mostly small and positive, some
/// negative, decaying with the distance between layers.
pub fn perturbation_instance(
    arch: &str,
    layers: &[LayerInfo],
    options: &[QuantOption],
    seed: u64,
) -> (Array2<f64>, Index) {
    let mut rng = SplitMix64::new(seed);
    let (nl, k) = (layers.len(), options.len());
    let n = nl * k;
    /// Standard deviation of the measurement noise, in units of the metric (nats).
    const NOISE: f64 = 2e-4;
    let sens_w: Vec<f64> = (0..nl).map(|_| 4.0 * (0.8 * rng.normal()).exp()).collect();
    let sens_a: Vec<f64> = (0..nl).map(|_| 2.0 * (0.8 * rng.normal()).exp()).collect();
    let power = |bits: Option<u8>| bits.map_or(0.0, |b| 4f64.powi(-(i32::from(b))));
    let mut clean = vec![0.0; n];
    let mut g = Array2::<f64>::zeros((n, n));
    for l in 0..nl {
        for (o, opt) in options.iter().enumerate() {
            let d = sens_w[l] * power(opt.w_bits) + sens_a[l] * power(opt.a_bits);
            let v = l * k + o;
            clean[v] = d;
            g[[v, v]] = d * (1.0 + 0.1 * rng.normal()) + NOISE * rng.normal();
        }
    }
    for l in 0..nl {
        for m in l + 1..nl {
            let rho = (0.08 + 0.12 * rng.normal()) * (-((m - l) as f64) / 8.0).exp();
            for o in 0..k {
                for p in 0..k {
                    let (u, v) = (l * k + o, m * k + p);
                    let value = rho * (clean[u] * clean[v]).sqrt() + 0.5 * NOISE * rng.normal();
                    g[[u, v]] = value;
                    g[[v, u]] = value;
                }
            }
        }
    }
    let index = Index {
        data: format!("synthetic:seed={seed}"),
        seed,
        fp: FpReference { loss: 0.3, top1: 90.0 },
        ..Index::all_options(arch, layers.to_vec(), options)
    };
    (g, index)
}

/// A dense random symmetric indefinite [`ChoiceQp`] with `groups` groups of `k` options.
pub fn random_qp(groups: usize, k: usize, seed: u64) -> ChoiceQp {
    let mut rng = SplitMix64::new(seed);
    let n = groups * k;
    let mut quad = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in i..n {
            if i != j && i / k == j / k {
                continue;
            }
            let v = if i == j { rng.uniform() } else { 0.3 * rng.normal() };
            quad[[i, j]] = v;
            quad[[j, i]] = v;
        }
    }
    let linear = (0..n).map(|_| rng.normal()).collect();
    ChoiceQp::new(vec![k; groups], quad, linear, rng.normal())
}

/// A convex choice problem: G = B·Bᵀ (B n × r, Gaussian) kept whole, with its entries between
/// options of one group aside in [`ChoiceQp::within`] (as after `psd --method clip`), and a
/// Gaussian linear term. `rank` below n − groups leaves G singular on the affine hull.
pub fn random_convex_qp(groups: usize, k: usize, rank: usize, seed: u64) -> ChoiceQp {
    let mut rng = SplitMix64::new(seed);
    let n = groups * k;
    let b = Array2::from_shape_fn((n, rank), |_| rng.normal() / (rank as f64).sqrt());
    let full = b.dot(&b.t());
    let quad = Array2::from_shape_fn(
        (n, n),
        |(i, j)| {
            if i != j && i / k == j / k {
                0.0
            } else {
                full[[i, j]]
            }
        },
    );
    let linear = (0..n).map(|_| 0.3 * rng.normal()).collect();
    ChoiceQp::new(vec![k; groups], quad, linear, rng.normal()).with_within(full)
}

/// A budget row over `qp`'s variables: integer coefficients in 1..=8 per option and a limit
/// at `fraction` of the way from the cheapest choice's use to the dearest's.
pub fn random_row(qp: &ChoiceQp, fraction: f64, seed: u64) -> crate::problem::BudgetRow {
    let mut rng = SplitMix64::new(seed);
    let coef: Vec<f64> = (0..qp.n()).map(|_| (1 + rng.below(8)) as f64).collect();
    let extreme = |pick: fn(f64, f64) -> f64, start: f64| -> f64 {
        (0..qp.sizes.len())
            .map(|g| qp.group_range(g).map(|i| coef[i]).fold(start, pick))
            .sum()
    };
    let (least, most) = (extreme(f64::min, f64::INFINITY), extreme(f64::max, f64::NEG_INFINITY));
    let limit = (least + fraction * (most - least)).floor();
    crate::problem::BudgetRow {
        budget: clado::budget::Budget::SizeBits(limit),
        coef,
        fixed_use: 0.0,
        limit,
    }
}
