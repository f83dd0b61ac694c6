//! Models: the CIFAR ResNets 20/32/44/56 in the layout of the public `pytorch-cifar-models`
//! (chenyaofo) checkpoints.
//!
//! Layout (PyTorch module names): `conv1`, `bn1`, stages `layer1..layer3` of n BasicBlocks each
//! (`layer{s}.{k}.conv{1,2}`, `bn{1,2}`), a 1×1 conv + BN shortcut at `layer2.0.downsample.{0,1}`
//! and `layer3.0.downsample.{0,1}`, global average pooling and `fc`. Convs are 3×3, padding 1,
//! no bias; the first block of stages 2 and 3 has stride 2; channels 16/32/64; n = (depth−2)/6.
//! Input channels and the class count come from the checkpoint's shapes (`conv1.weight`
//! `[16, C, 3, 3]`, `fc.weight` `[K, 64]`), so a 1-channel Fashion-MNIST ResNet-20 and a
//! 3-channel CIFAR-100 ResNet-56 load the same way.
//!
//! This module holds what every model user shares: the architecture ([`arch_from_name`],
//! [`ArchSpec`]), validation of a checkpoint against it ([`check_state_dict`], done before any
//! computing), the quantizable layers with params and MACs ([`quantizable_layers`]), a seeded
//! PyTorch-style initialisation ([`initial_state_dict`]) and the candle-nn reference model
//! ([`CifarResNet`]), used for training and as the straightforward implementation that the fast
//! engine is checked against.

pub mod conv;
mod resnet;

pub use resnet::{state_dict_from_varmap, varmap_from_state_dict, BasicBlock, CifarResNet, ConvBackend};

use crate::checkpoint::{StateDict, Tensor32, BATCHES_TRACKED_SUFFIX};
use crate::format::LayerInfo;
use crate::{Error, Result};
use rand::{Rng, SeedableRng};

/// The architectures `--arch` accepts.
pub const ARCH_NAMES: [&str; 4] = ["resnet20", "resnet32", "resnet44", "resnet56"];
/// BatchNorm epsilon (PyTorch's default, used by the reference checkpoints).
pub const BN_EPS: f64 = 1e-5;
/// Output channels of the stem and of stages 1, 2, 3.
pub const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];
/// Kernel size of every conv except the 1×1 shortcuts.
pub const KERNEL: usize = 3;

/// An architecture chosen by name, before a checkpoint fixes its input channels and classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    pub name: &'static str,
    pub depth: usize,
    pub blocks_per_stage: usize,
}

/// A fully specified CIFAR ResNet: depth plus what the checkpoint says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchSpec {
    pub depth: usize,
    pub blocks_per_stage: usize,
    pub in_channels: usize,
    pub num_classes: usize,
}

/// One BasicBlock: its module prefix (`layer2.0`), channels, stride and shortcut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    /// True when the shortcut is a 1×1 conv + BN (`{name}.downsample.{0,1}`).
    pub downsample: bool,
}

/// Look up an architecture by name (`resnet20`, `resnet32`, `resnet44`, `resnet56`).
pub fn arch_from_name(name: &str) -> Result<Arch> {
    let arch = match name {
        "resnet20" => Arch {
            name: "resnet20",
            depth: 20,
            blocks_per_stage: 3,
        },
        "resnet32" => Arch {
            name: "resnet32",
            depth: 32,
            blocks_per_stage: 5,
        },
        "resnet44" => Arch {
            name: "resnet44",
            depth: 44,
            blocks_per_stage: 7,
        },
        "resnet56" => Arch {
            name: "resnet56",
            depth: 56,
            blocks_per_stage: 9,
        },
        other => {
            return Err(Error::usage(format!(
                "unknown architecture '{other}'; expected one of {}",
                ARCH_NAMES.join(", ")
            )))
        }
    };
    Ok(arch)
}

impl ArchSpec {
    pub fn new(arch: &Arch, in_channels: usize, num_classes: usize) -> Self {
        ArchSpec {
            depth: arch.depth,
            blocks_per_stage: arch.blocks_per_stage,
            in_channels,
            num_classes,
        }
    }

    /// `resnet20` etc.
    pub fn name(&self) -> String {
        format!("resnet{}", self.depth)
    }

    /// The BasicBlocks in forward order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut blocks = Vec::with_capacity(3 * self.blocks_per_stage);
        let mut in_channels = STAGE_CHANNELS[0];
        for (stage, &out_channels) in STAGE_CHANNELS.iter().enumerate() {
            for k in 0..self.blocks_per_stage {
                let stride = if stage > 0 && k == 0 { 2 } else { 1 };
                blocks.push(BlockSpec {
                    name: format!("layer{}.{k}", stage + 1),
                    in_channels,
                    out_channels,
                    stride,
                    downsample: stride != 1 || in_channels != out_channels,
                });
                in_channels = out_channels;
            }
        }
        blocks
    }

    /// Every parameter and buffer the model needs (without `num_batches_tracked`), in forward
    /// order, with its PyTorch shape.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let conv = |out: &mut Vec<_>, name: &str, o: usize, i: usize, k: usize| {
            out.push((format!("{name}.weight"), vec![o, i, k, k]));
        };
        let bn = |out: &mut Vec<_>, name: &str, c: usize| {
            for field in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("{name}.{field}"), vec![c]));
            }
        };
        conv(&mut out, "conv1", STAGE_CHANNELS[0], self.in_channels, KERNEL);
        bn(&mut out, "bn1", STAGE_CHANNELS[0]);
        for b in self.blocks() {
            conv(
                &mut out,
                &format!("{}.conv1", b.name),
                b.out_channels,
                b.in_channels,
                KERNEL,
            );
            bn(&mut out, &format!("{}.bn1", b.name), b.out_channels);
            conv(
                &mut out,
                &format!("{}.conv2", b.name),
                b.out_channels,
                b.out_channels,
                KERNEL,
            );
            bn(&mut out, &format!("{}.bn2", b.name), b.out_channels);
            if b.downsample {
                conv(
                    &mut out,
                    &format!("{}.downsample.0", b.name),
                    b.out_channels,
                    b.in_channels,
                    1,
                );
                bn(&mut out, &format!("{}.downsample.1", b.name), b.out_channels);
            }
        }
        let features = STAGE_CHANNELS[2];
        out.push(("fc.weight".into(), vec![self.num_classes, features]));
        out.push(("fc.bias".into(), vec![self.num_classes]));
        out
    }

    /// Number of BatchNorm modules' `num_batches_tracked` names, i.e. the BN module prefixes.
    fn batch_norm_names(&self) -> Vec<String> {
        self.expected_tensors()
            .into_iter()
            .filter_map(|(name, _)| name.strip_suffix(".running_mean").map(str::to_string))
            .collect()
    }
}

/// Check that `state` (read from `source`, named in errors) is a checkpoint of `arch`: the same
/// number of blocks per stage, every tensor present with its expected shape, no foreign tensor,
/// all values finite. Returns the full spec with input channels and classes read from
/// `conv1.weight` and `fc.weight`. Run this before any forward pass.
pub fn check_state_dict(arch: &Arch, state: &StateDict, source: &str) -> Result<ArchSpec> {
    let name = arch.name;
    check_blocks_per_stage(arch, state, source)?;

    let conv1 = state.get("conv1.weight").ok_or_else(|| {
        Error::input(
            source,
            format!("tensor 'conv1.weight' is missing ({name} expects shape [16, C, 3, 3])"),
        )
    })?;
    let in_channels = match conv1.shape.as_slice() {
        &[16, c, 3, 3] if c > 0 => c,
        other => {
            return Err(Error::input(
                source,
                format!("tensor 'conv1.weight' has shape {other:?}, {name} expects [16, C, 3, 3] (C input channels)"),
            ))
        }
    };
    let fc = state.get("fc.weight").ok_or_else(|| {
        Error::input(
            source,
            format!("tensor 'fc.weight' is missing ({name} expects shape [K, 64])"),
        )
    })?;
    let num_classes = match fc.shape.as_slice() {
        &[k, 64] if k > 0 => k,
        other => {
            return Err(Error::input(
                source,
                format!("tensor 'fc.weight' has shape {other:?}, {name} expects [K, 64] (K classes)"),
            ))
        }
    };
    let spec = ArchSpec::new(arch, in_channels, num_classes);

    let expected = spec.expected_tensors();
    for (tensor, shape) in &expected {
        match state.get(tensor) {
            None => {
                return Err(Error::input(
                    source,
                    format!("tensor '{tensor}' is missing ({name} expects shape {shape:?})"),
                ))
            }
            Some(t) if &t.shape != shape => {
                return Err(Error::input(
                    source,
                    format!("tensor '{tensor}' has shape {:?}, {name} expects {shape:?}", t.shape),
                ))
            }
            Some(t) => {
                if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                    return Err(Error::input(
                        source,
                        format!(
                            "tensor '{tensor}' holds {} at flat index {i}, expected finite values",
                            t.data[i]
                        ),
                    ));
                }
            }
        }
    }
    let batch_norms = spec.batch_norm_names();
    for tensor in state.keys() {
        let known = expected.iter().any(|(n, _)| n == tensor)
            || tensor
                .strip_suffix(BATCHES_TRACKED_SUFFIX)
                .and_then(|p| p.strip_suffix('.'))
                .is_some_and(|bn| batch_norms.iter().any(|b| b == bn));
        if !known {
            return Err(Error::input(
                source,
                format!(
                    "unexpected tensor '{tensor}': it is not part of {name} ({} tensors)",
                    expected.len()
                ),
            ));
        }
    }
    Ok(spec)
}

/// Compare the blocks per stage in the checkpoint (`layer{s}.{k}.*`) with the architecture's,
/// so that a depth mismatch reads as one, not as a missing or unexpected tensor.
fn check_blocks_per_stage(arch: &Arch, state: &StateDict, source: &str) -> Result<()> {
    let n = arch.blocks_per_stage;
    let mut found = [0usize; 3];
    for key in state.keys() {
        for (s, count) in found.iter_mut().enumerate() {
            let Some(rest) = key.strip_prefix(&format!("layer{}.", s + 1)) else {
                continue;
            };
            if let Some(k) = rest.split('.').next().and_then(|k| k.parse::<usize>().ok()) {
                *count = (*count).max(k + 1);
            }
        }
    }
    let looks_like = |m: usize| {
        let depth = 6 * m + 2;
        if ARCH_NAMES.contains(&format!("resnet{depth}").as_str()) {
            format!(" (as in resnet{depth})")
        } else {
            String::new()
        }
    };
    for (s, &m) in found.iter().enumerate() {
        if m > n {
            return Err(Error::input(
                source,
                format!(
                    "{} expects {n} blocks per stage but the checkpoint has layer{}.{n}.* \
                     ({m} blocks in layer{}{})",
                    arch.name,
                    s + 1,
                    s + 1,
                    looks_like(m)
                ),
            ));
        }
    }
    for (s, &m) in found.iter().enumerate() {
        if m > 0 && m < n {
            return Err(Error::input(
                source,
                format!(
                    "{} expects {n} blocks per stage but the checkpoint has only {m} in layer{}, \
                     layer{}.{m}.* is missing{}",
                    arch.name,
                    s + 1,
                    s + 1,
                    looks_like(m)
                ),
            ));
        }
    }
    Ok(())
}

/// Load a checkpoint and check it against the named architecture (see [`check_state_dict`]).
pub fn load_checked(path: &str, arch_name: &str) -> Result<(ArchSpec, StateDict)> {
    let arch = arch_from_name(arch_name)?;
    let state = crate::checkpoint::load(path)?;
    let spec = check_state_dict(&arch, &state, path)?;
    Ok((spec, state))
}

/// Output size of a conv along one axis.
fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding - kernel) / stride + 1
}

/// Every Conv2d and Linear in forward order (a block runs conv1, conv2, then its downsample),
/// with params (weight elements; biases are not counted) and MACs for one `height`×`width`
/// sample. ResNet-20 has 22 such layers.
pub fn quantizable_layers(spec: &ArchSpec, height: usize, width: usize) -> Vec<LayerInfo> {
    let conv = |name: String, in_c: usize, out_c: usize, k: usize, h: usize, w: usize| {
        let params = (out_c * in_c * k * k) as u64;
        LayerInfo {
            name,
            kind: "conv".into(),
            params,
            macs: params * (h * w) as u64,
        }
    };
    let (mut h, mut w) = (conv_out(height, KERNEL, 1, 1), conv_out(width, KERNEL, 1, 1));
    let mut layers = vec![conv("conv1".into(), spec.in_channels, STAGE_CHANNELS[0], KERNEL, h, w)];
    for b in spec.blocks() {
        let (oh, ow) = (conv_out(h, KERNEL, b.stride, 1), conv_out(w, KERNEL, b.stride, 1));
        layers.push(conv(
            format!("{}.conv1", b.name),
            b.in_channels,
            b.out_channels,
            KERNEL,
            oh,
            ow,
        ));
        layers.push(conv(
            format!("{}.conv2", b.name),
            b.out_channels,
            b.out_channels,
            KERNEL,
            oh,
            ow,
        ));
        if b.downsample {
            let (dh, dw) = (conv_out(h, 1, b.stride, 0), conv_out(w, 1, b.stride, 0));
            layers.push(conv(
                format!("{}.downsample.0", b.name),
                b.in_channels,
                b.out_channels,
                1,
                dh,
                dw,
            ));
        }
        (h, w) = (oh, ow);
    }
    let fc_params = (spec.num_classes * STAGE_CHANNELS[2]) as u64;
    layers.push(LayerInfo {
        name: "fc".into(),
        kind: "linear".into(),
        params: fc_params,
        macs: fc_params,
    });
    layers
}

/// A freshly initialised state_dict, the way `pytorch-cifar-models` initialises: convs
/// Kaiming-normal (fan_out, ReLU gain), BN weight 1 and bias 0 with running stats 0/1, `fc`
/// uniform in ±1/√64 (PyTorch's Linear default). Deterministic for a seed.
pub fn initial_state_dict(spec: &ArchSpec, seed: u64) -> StateDict {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut state = StateDict::new();
    for (name, shape) in spec.expected_tensors() {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with(".running_var") || (name.ends_with(".weight") && shape.len() == 1) {
            vec![1.0; len]
        } else if name.ends_with(".running_mean") || (name.ends_with(".bias") && name != "fc.bias") {
            vec![0.0; len]
        } else if name.starts_with("fc.") {
            let bound = 1.0 / (STAGE_CHANNELS[2] as f64).sqrt();
            (0..len).map(|_| rng.random_range(-bound..bound) as f32).collect()
        } else {
            let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
            let std = (2.0 / fan_out).sqrt();
            (0..len).map(|_| (std * standard_normal(&mut rng)) as f32).collect()
        };
        state.insert(name, Tensor32::new(shape, data));
    }
    state
}

/// One standard normal sample (Box–Muller), so that initialisation needs no extra crate.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, c: usize, k: usize) -> ArchSpec {
        ArchSpec::new(&arch_from_name(name).unwrap(), c, k)
    }

    #[test]
    fn resnet20_has_22_quantizable_layers_in_forward_order() {
        let layers = quantizable_layers(&spec("resnet20", 1, 10), 32, 32);
        assert_eq!(layers.len(), 22);
        let names: Vec<_> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            &names[..4],
            ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
        );
        assert_eq!(
            &names[7..10],
            ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"]
        );
        assert_eq!(names[21], "fc");
        // conv1: 16·1·3·3 weights at 32×32; layer2.0.conv1: 32·16·9 at 16×16; shortcut 32·16 at 16×16.
        assert_eq!((layers[0].params, layers[0].macs), (144, 144 * 1024));
        assert_eq!((layers[7].params, layers[7].macs), (4608, 4608 * 256));
        assert_eq!((layers[9].params, layers[9].macs), (512, 512 * 256));
        assert_eq!((layers[21].params, layers[21].macs), (640, 640));
        assert!(layers.iter().filter(|l| l.kind == "linear").count() == 1);
    }

    #[test]
    fn layer_counts_follow_depth() {
        for (name, n) in [("resnet20", 22), ("resnet32", 34), ("resnet44", 46), ("resnet56", 58)] {
            assert_eq!(quantizable_layers(&spec(name, 3, 100), 32, 32).len(), n, "{name}");
        }
    }

    #[test]
    fn resnet20_cifar10_size_matches_the_published_count() {
        // pytorch-cifar-models lists ResNet-20 at 0.27 M parameters; PyTorch counts 272,474
        // (`sum(p.numel() for p in model.parameters())`, BN affine and fc bias included).
        let s = spec("resnet20", 3, 10);
        let total: usize = s
            .expected_tensors()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(total, 272_474);
    }

    #[test]
    fn unknown_arch_lists_the_valid_names() {
        let err = arch_from_name("resnet18").unwrap_err().to_string();
        assert!(
            err.contains("resnet18") && err.contains("resnet20, resnet32, resnet44, resnet56"),
            "{err}"
        );
    }

    #[test]
    fn initial_state_dict_checks_and_is_deterministic() {
        let s = spec("resnet32", 3, 100);
        let a = initial_state_dict(&s, 7);
        assert_eq!(
            check_state_dict(&arch_from_name("resnet32").unwrap(), &a, "init").unwrap(),
            s
        );
        assert_eq!(a, initial_state_dict(&s, 7));
        assert_ne!(a, initial_state_dict(&s, 8));
    }

    #[test]
    fn depth_mismatch_is_named() {
        let r32 = initial_state_dict(&spec("resnet32", 1, 10), 0);
        let err = check_state_dict(&arch_from_name("resnet20").unwrap(), &r32, "r32.pth")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("r32.pth")
                && err.contains("resnet20 expects 3 blocks per stage")
                && err.contains("layer1.3.*"),
            "{err}"
        );
        let r20 = initial_state_dict(&spec("resnet20", 1, 10), 0);
        let err = check_state_dict(&arch_from_name("resnet56").unwrap(), &r20, "r20.pth")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resnet56 expects 9 blocks per stage") && err.contains("resnet20"),
            "{err}"
        );
    }

    #[test]
    fn wrong_shape_missing_and_foreign_tensors_are_named() {
        let arch = arch_from_name("resnet20").unwrap();
        let good = initial_state_dict(&spec("resnet20", 1, 10), 0);

        let mut bad = good.clone();
        bad.insert(
            "layer2.1.conv2.weight".into(),
            Tensor32::new(vec![32, 32, 1, 1], vec![0.0; 1024]),
        );
        let err = check_state_dict(&arch, &bad, "x.pth").unwrap_err().to_string();
        assert!(
            err.contains("'layer2.1.conv2.weight' has shape [32, 32, 1, 1]") && err.contains("[32, 32, 3, 3]"),
            "{err}"
        );

        let mut bad = good.clone();
        bad.remove("layer3.0.downsample.1.running_var");
        let err = check_state_dict(&arch, &bad, "x.pth").unwrap_err().to_string();
        assert!(
            err.contains("'layer3.0.downsample.1.running_var' is missing") && err.contains("[64]"),
            "{err}"
        );

        let mut bad = good.clone();
        bad.insert("classifier.weight".into(), Tensor32::new(vec![1], vec![0.0]));
        let err = check_state_dict(&arch, &bad, "x.pth").unwrap_err().to_string();
        assert!(err.contains("unexpected tensor 'classifier.weight'"), "{err}");

        let mut bad = good.clone();
        bad.get_mut("bn1.weight").unwrap().data[3] = f32::NAN;
        let err = check_state_dict(&arch, &bad, "x.pth").unwrap_err().to_string();
        assert!(err.contains("'bn1.weight' holds NaN at flat index 3"), "{err}");

        let mut ok = good.clone();
        ok.insert("bn1.num_batches_tracked".into(), Tensor32::new(vec![], vec![5.0]));
        assert!(check_state_dict(&arch, &ok, "x.pth").is_ok());
    }

    #[test]
    fn channels_and_classes_come_from_the_checkpoint() {
        let arch = arch_from_name("resnet56").unwrap();
        let state = initial_state_dict(&spec("resnet56", 3, 100), 1);
        let s = check_state_dict(&arch, &state, "c100.pth").unwrap();
        assert_eq!((s.in_channels, s.num_classes, s.blocks_per_stage), (3, 100, 9));
    }
}
