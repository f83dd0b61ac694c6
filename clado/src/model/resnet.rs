//! The candle-nn reference CIFAR ResNet: small `Clone` layers built from a `VarBuilder`.
//!
//! It trains (BatchNorm uses batch statistics and updates its running statistics when
//! `train` is true) and evaluates (running statistics). It is the straightforward
//! implementation the fast engine is compared against: NCHW float32 in, logits out.

use super::{ArchSpec, BlockSpec, BN_EPS, KERNEL, STAGE_CHANNELS};
use crate::checkpoint::{StateDict, Tensor32};
use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, Linear, VarBuilder, VarMap};
use std::collections::HashMap;

/// Which conv2d implementation a model runs; both give the same results within float32
/// reordering error (tested in `conv`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvBackend {
    /// candle's own `conv2d`: the straightforward reference.
    #[default]
    Candle,
    /// im2col + gemm with a fast backward pass ([`super::conv::conv2d_im2col`]), for training.
    Im2col,
}

/// A bias-free Conv2d, `weight` `[out, in, k, k]`, padding k/2.
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor,
    stride: usize,
    padding: usize,
    backend: ConvBackend,
}

impl Conv {
    fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        backend: ConvBackend,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(
            (out_c, in_c, kernel, kernel),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Conv {
            weight,
            stride,
            padding: kernel / 2,
            backend,
        })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.backend {
            ConvBackend::Candle => x.conv2d(&self.weight, self.padding, self.stride, 1, 1),
            ConvBackend::Im2col => super::conv::conv2d_im2col(x, &self.weight, self.stride, self.padding),
        }
    }
}

fn batch_norm(channels: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    candle_nn::batch_norm(
        channels,
        candle_nn::BatchNormConfig {
            eps: BN_EPS,
            ..Default::default()
        },
        vb,
    )
}

/// `out = relu(bn1(conv1(x))); out = bn2(conv2(out)); relu(out + shortcut(x))`, where the
/// shortcut is `downsample` (1×1 conv + BN) when present and the identity otherwise.
#[derive(Clone, Debug)]
pub struct BasicBlock {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    downsample: Option<(Conv, BatchNorm)>,
}

impl BasicBlock {
    pub fn new(spec: &BlockSpec, backend: ConvBackend, vb: VarBuilder) -> candle_core::Result<Self> {
        let downsample = if spec.downsample {
            let vd = vb.pp("downsample");
            Some((
                Conv::new(spec.in_channels, spec.out_channels, 1, spec.stride, backend, vd.pp("0"))?,
                batch_norm(spec.out_channels, vd.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: Conv::new(
                spec.in_channels,
                spec.out_channels,
                KERNEL,
                spec.stride,
                backend,
                vb.pp("conv1"),
            )?,
            bn1: batch_norm(spec.out_channels, vb.pp("bn1"))?,
            conv2: Conv::new(spec.out_channels, spec.out_channels, KERNEL, 1, backend, vb.pp("conv2"))?,
            bn2: batch_norm(spec.out_channels, vb.pp("bn2"))?,
            downsample,
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.conv1.forward(x)?.apply_t(&self.bn1, train)?.relu()?;
        let out = self.conv2.forward(&out)?.apply_t(&self.bn2, train)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => conv.forward(x)?.apply_t(bn, train)?,
            None => x.clone(),
        };
        (out + identity)?.relu()
    }
}

/// A CIFAR ResNet (20/32/44/56) with PyTorch's module names.
#[derive(Clone, Debug)]
pub struct CifarResNet {
    spec: ArchSpec,
    conv1: Conv,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl CifarResNet {
    /// Build the reference model (candle's conv2d) from `vb` (tensors named as in PyTorch:
    /// `conv1.weight`, ...). With a `VarBuilder` over a `VarMap` the tensors are trainable
    /// variables.
    pub fn new(spec: ArchSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        Self::with_backend(spec, ConvBackend::Candle, vb)
    }

    /// Build the model with the given conv implementation.
    pub fn with_backend(spec: ArchSpec, backend: ConvBackend, vb: VarBuilder) -> candle_core::Result<Self> {
        let blocks = spec
            .blocks()
            .iter()
            .map(|b| BasicBlock::new(b, backend, vb.pp(&b.name)))
            .collect::<Result<_, _>>()?;
        Ok(CifarResNet {
            spec,
            conv1: Conv::new(spec.in_channels, STAGE_CHANNELS[0], KERNEL, 1, backend, vb.pp("conv1"))?,
            bn1: batch_norm(STAGE_CHANNELS[0], vb.pp("bn1"))?,
            blocks,
            fc: candle_nn::linear(STAGE_CHANNELS[2], spec.num_classes, vb.pp("fc"))?,
        })
    }

    /// An evaluation model with fixed weights from a state_dict already checked with
    /// [`super::check_state_dict`].
    pub fn from_state_dict(spec: ArchSpec, state: &StateDict, device: &Device) -> crate::Result<Self> {
        Self::from_state_dict_with_backend(spec, state, ConvBackend::Candle, device)
    }

    /// As [`CifarResNet::from_state_dict`], with the given conv implementation.
    pub fn from_state_dict_with_backend(
        spec: ArchSpec,
        state: &StateDict,
        backend: ConvBackend,
        device: &Device,
    ) -> crate::Result<Self> {
        let tensors = state
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.to_candle(device)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Ok(CifarResNet::with_backend(spec, backend, vb)?)
    }

    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// Logits `[N, classes]` for an NCHW float32 batch, BatchNorm on running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, false)
    }
}

impl ModuleT for CifarResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.conv1.forward(x)?.apply_t(&self.bn1, train)?.relu()?;
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        // Global average pooling over H and W.
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        self.fc.forward(&pooled)
    }
}

/// A `VarMap` holding `state` as trainable variables (BN running statistics included, which
/// BatchNorm updates in place in training mode).
pub fn varmap_from_state_dict(state: &StateDict, device: &Device) -> crate::Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut vars = varmap.data().lock().expect("VarMap lock poisoned");
        for (name, t) in state {
            vars.insert(name.clone(), candle_core::Var::from_tensor(&t.to_candle(device)?)?);
        }
    }
    Ok(varmap)
}

/// The current values of a `VarMap` as a state_dict.
pub fn state_dict_from_varmap(varmap: &VarMap) -> crate::Result<StateDict> {
    let vars = varmap.data().lock().expect("VarMap lock poisoned");
    let mut state = StateDict::new();
    for (name, var) in vars.iter() {
        state.insert(name.clone(), Tensor32::from_candle(var.as_tensor())?);
    }
    Ok(state)
}
