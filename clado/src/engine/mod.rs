//! The CPU forward engine: per-layer fake quantization and resumable runs of any network
//! given as a [`crate::graph::Graph`]. Every tool that runs a network thousands of times
//! (`perturb`, `evaluate`, `quantize calibrate`) runs it here; candle is not used.
//!
//! # One engine, two sources
//! A [`Network`] is a graph and the graph executor ([`crate::graph::Executor`]):
//! - [`Network::from_graph`]: a graph read from an ONNX file (`--model m.onnx`);
//! - [`Network::from_state_dict`]: a CIFAR ResNet (20/32/44/56/110) checked against its
//!   architecture and built as a graph from its checkpoint, in the layout of the
//!   `pytorch-cifar-models` checkpoints: `conv1` (3×3, 16) + `bn1` + ReLU; stages `layer1..3`
//!   of n BasicBlocks (16/32/64 channels, stride 2 in block 0 of `layer2` and `layer3`), a
//!   block being `out = relu(bn1(conv1(x)))`, `out = bn2(conv2(out))`,
//!   `out = relu(out + shortcut(x))` where the shortcut is `x` or `downsample` (1×1 stride-2
//!   conv `downsample.0` + BN `downsample.1`); global average pool; `fc`. BatchNorm uses its
//!   running statistics (eval mode, ε = 1e-5).
//!
//! The executor runs the Convs whose shapes fit the hand-written kernels (`kernels`: Winograd
//! and direct 3×3/1×1 convolutions in padded NHWC with BatchNorm, residual add and ReLU applied
//! as the sums are written) on them, which is all of a CIFAR ResNet and all but the stem of a
//! torchvision ResNet; other shapes run on general kernels.
//!
//! The quantizable layers ([`Network::layers`]) are every Conv and every Gemm/MatMul with a
//! constant weight, in graph order; for a ResNet: `conv1, layer1.0.conv1, layer1.0.conv2, …,
//! layer2.0.conv1, layer2.0.conv2, layer2.0.downsample.0, …, fc` (22 for ResNet-20).
//!
//! # Quantization
//! A [`Plan`] gives each layer a [`LayerPrecision`]: FP, fake-quantized weights
//! ([`PreparedWeights`], made once per (layer, bits) and shared), a fake-quantized input
//! activation ([`ActQuant`]: bits and range), or both; [`WeightCache::layer_precision`] makes
//! one from a layer's `calib.json` entry and an option such as `w4a8`.
//!
//! A BatchNorm node stays a separate FP op after the (quantized) convolution: it is applied as
//! a per-channel `y = x·scale + bias` to the convolution's output, exactly BN's affine map,
//! never folded into the weights before they are quantized (an ONNX export that folded it
//! already has only the folded weights). The activation quantizer of a layer acts on that
//! layer's input only: quantizing a block's `conv1` input does not change the identity
//! shortcut, and a downsample's input quantizer acts on the shortcut branch only. Padding is
//! zero after quantization, as when PyTorch pads the quantized tensor.
//!
//! # Running
//! - [`Network::forward`]: images (NCHW f32, [`Images`]) → [`Logits`] `[N, K]`;
//! - [`Network::input_state`], [`Network::run`], [`Network::run_to_logits`]: resumable
//!   forward. A [`State`] is every value live just before a quantizable layer's node (skip
//!   branches and kept block inputs included); running from the FP state before layer i with
//!   layer i quantized is bitwise equal to the full forward with layer i quantized, because it
//!   is the same code on the same values;
//! - [`Network::calibrate`]: an FP forward that shows every layer's input activation to an
//!   observer (for activation ranges);
//! - [`Logits`]: mean cross-entropy, mean KL(p_fp ‖ p_q), top-k counts (f64).
//!
//! [`Parallelism::Rayon`] spreads images over the rayon pool; [`Parallelism::None`] runs on
//! the calling thread, for callers that run many small forwards in parallel themselves.
//! Outputs are bitwise identical whatever the parallelism, thread count, batch split or
//! instruction set (AVX-512, AVX2 or portable): every output element is computed by the same
//! sequence of operations (see `kernels`).
//!
//! # Example
//! ```no_run
//! # use clado::engine::*;
//! # fn demo(sd: &clado::checkpoint::StateDict, x: &[f32], labels: &[usize], scales: &[f32]) -> clado::Result<()> {
//! let net = Network::from_state_dict("resnet20", sd)?;
//! let images = Images::new(x, [labels.len(), net.in_channels(), 32, 32])?;
//! let fp = Plan::fp(&net);
//! let logits = net.forward(images, &fp, Parallelism::Rayon)?;
//! let loss = logits.mean_cross_entropy(labels)?;
//!
//! // Layer 5 at w4a8, resumed from the FP state before it.
//! let s0 = net.input_state(images)?;
//! let s5 = net.run(&s0, 5, &fp, Parallelism::Rayon)?;
//! let w4 = net.quantized_weights(5, 4, scales)?;
//! let q = LayerPrecision { weights: Some(w4), input: Some(ActQuant::new(8, -1.0, 6.0)?) };
//! let plan = fp.clone().with(5, q)?;
//! let kl = net.run_to_logits(&s5, &plan, Parallelism::Rayon)?.mean_kl_from(&logits)?;
//! # Ok(()) }
//! ```

mod fake_quant;
mod forward;
mod graph_net;
pub(crate) mod kernels;
mod metrics;
mod network;
mod plan;

#[cfg(test)]
mod tests;

pub use fake_quant::ActQuant;
pub use forward::{Images, Parallelism, State};
pub use metrics::{log_softmax, Logits};
pub use network::{blocks_per_stage, Layer, LayerKind, Network, ARCHS, BN_EPS, INPUT_SIZE};
pub use plan::{LayerPrecision, Plan, PreparedWeights, WeightCache};
