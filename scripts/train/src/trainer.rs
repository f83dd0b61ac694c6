//! The training loop: SGD with momentum and weight decay, linear warm-up then cosine decay per
//! step, random translation inside the 32×32 canvas and horizontal flips, seeded throughout.

use crate::fashion_mnist::{self, Split, PADDED};
use candle_core::{DType, Device, ModuleT, Tensor, Var, D};
use candle_nn::VarBuilder;
use clado::checkpoint::StateDict;
use clado::model::{self, ArchSpec, CifarResNet, ConvBackend};
use clado::Result;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Everything that decides the trained weights.
#[derive(Clone, Debug, Serialize)]
pub struct Hyper {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    /// Largest shift of the 28×28 image from the centre of the 32×32 canvas, in pixels.
    pub max_shift: usize,
    pub horizontal_flip: bool,
    pub seed: u64,
}

/// One epoch's numbers, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_top1: Option<f64>,
    pub seconds: f64,
}

/// Top-1 accuracy and mean cross-entropy on a data split.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Evaluation {
    pub top1: f64,
    pub loss: f64,
}

/// SGD with (optionally Nesterov) momentum and L2 weight decay, as `torch.optim.SGD`.
/// candle-nn's own `SGD` has no momentum.
struct SgdMomentum {
    params: Vec<(Var, Option<Tensor>)>,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl SgdMomentum {
    fn new(params: Vec<Var>, hyper: &Hyper) -> Self {
        SgdMomentum {
            params: params.into_iter().map(|v| (v, None)).collect(),
            momentum: hyper.momentum,
            nesterov: hyper.nesterov,
            weight_decay: hyper.weight_decay,
        }
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore, lr: f64) -> candle_core::Result<()> {
        for (var, velocity) in &mut self.params {
            // BN running statistics are variables too, but never get a gradient.
            let Some(grad) = grads.get(var) else { continue };
            let grad = (grad + (var.as_tensor() * self.weight_decay)?)?.detach();
            let v = match velocity.take() {
                Some(v) => ((v * self.momentum)? + &grad)?,
                None => grad.clone(),
            };
            let update = if self.nesterov {
                (&grad + (&v * self.momentum)?)?
            } else {
                v.clone()
            };
            var.set(&(var.as_tensor() - (update * lr)?)?.detach())?;
            *velocity = Some(v.detach());
        }
        Ok(())
    }
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to zero.
pub fn learning_rate(hyper: &Hyper, step: usize, total: usize) -> f64 {
    if step < hyper.warmup_steps {
        return hyper.lr * (step + 1) as f64 / hyper.warmup_steps as f64;
    }
    let progress = (step - hyper.warmup_steps) as f64 / (total - hyper.warmup_steps).max(1) as f64;
    0.5 * hyper.lr * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Build the NCHW batch `[len, 1, 32, 32]` of the given images with their placements.
fn batch_tensor(
    split: &Split,
    indices: &[usize],
    placement: impl Fn(usize) -> (usize, usize, bool),
) -> candle_core::Result<(Tensor, Tensor)> {
    let pixels = PADDED * PADDED;
    let mut data = vec![0f32; indices.len() * pixels];
    let mut labels = Vec::with_capacity(indices.len());
    for (slot, &i) in indices.iter().enumerate() {
        let (dy, dx, flip) = placement(slot);
        fashion_mnist::place(
            split.image(i),
            &mut data[slot * pixels..(slot + 1) * pixels],
            dy,
            dx,
            flip,
        );
        labels.push(split.labels[i] as u32);
    }
    let x = Tensor::from_vec(data, (indices.len(), 1, PADDED, PADDED), &Device::Cpu)?;
    let y = Tensor::from_vec(labels, indices.len(), &Device::Cpu)?;
    Ok((x, y))
}

/// Number of correct top-1 predictions in a batch.
fn correct(logits: &Tensor, labels: &Tensor) -> candle_core::Result<usize> {
    let hits = logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(hits as usize)
}

/// Evaluate on the centred, unflipped images.
pub fn evaluate(net: &CifarResNet, split: &Split, batch_size: usize) -> Result<Evaluation> {
    let centre = (PADDED - fashion_mnist::SIDE) / 2;
    let (mut hits, mut loss_sum) = (0usize, 0f64);
    let all: Vec<usize> = (0..split.len()).collect();
    for chunk in all.chunks(batch_size) {
        let (x, y) = batch_tensor(split, chunk, |_| (centre, centre, false))?;
        let logits = net.forward_eval(&x)?;
        hits += correct(&logits, &y)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64;
        loss_sum += loss * chunk.len() as f64;
    }
    Ok(Evaluation {
        top1: hits as f64 / split.len() as f64,
        loss: loss_sum / split.len() as f64,
    })
}

/// Train from a seeded initialisation; returns the final weights and the epoch logs.
/// With `test` given, the test set is evaluated after every epoch (for the log only: nothing is
/// selected on it).
pub fn train(spec: ArchSpec, hyper: &Hyper, data: &Split, test: Option<&Split>) -> Result<(StateDict, Vec<EpochLog>)> {
    let device = Device::Cpu;
    let varmap = model::varmap_from_state_dict(&model::initial_state_dict(&spec, hyper.seed), &device)?;
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let net = CifarResNet::with_backend(spec, ConvBackend::Im2col, vb)?;
    let mut optimizer = SgdMomentum::new(varmap.all_vars(), hyper);
    // One stream for shuffling and augmentation, separate from the initialisation's.
    let mut rng = ChaCha8Rng::seed_from_u64(hyper.seed ^ 0x5eed_da7a);

    let steps_per_epoch = data.len().div_ceil(hyper.batch_size);
    let total_steps = steps_per_epoch * hyper.epochs;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut logs = Vec::new();
    let mut step = 0;
    for epoch in 1..=hyper.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut hits, mut seen) = (0f64, 0usize, 0usize);
        for (b, indices) in order.chunks(hyper.batch_size).enumerate() {
            let placements: Vec<(usize, usize, bool)> = indices
                .iter()
                .map(|_| {
                    let centre = (PADDED - fashion_mnist::SIDE) / 2;
                    let dy = centre + rng.random_range(0..=2 * hyper.max_shift) - hyper.max_shift;
                    let dx = centre + rng.random_range(0..=2 * hyper.max_shift) - hyper.max_shift;
                    (dy, dx, hyper.horizontal_flip && rng.random_bool(0.5))
                })
                .collect();
            let (x, y) = batch_tensor(data, indices, |slot| placements[slot])?;
            let logits = net.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let grads = loss.backward()?;
            optimizer.step(&grads, learning_rate(hyper, step, total_steps))?;
            step += 1;

            let batch_loss = loss.to_scalar::<f32>()? as f64;
            loss_sum += batch_loss * indices.len() as f64;
            hits += correct(&logits, &y)?;
            seen += indices.len();
            if (b + 1) % 50 == 0 || b + 1 == steps_per_epoch {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "epoch {epoch}/{} step {}/{steps_per_epoch}: loss {:.4} top1 {:.4} lr {:.4} ({:.0} img/s)",
                    hyper.epochs,
                    b + 1,
                    loss_sum / seen as f64,
                    hits as f64 / seen as f64,
                    learning_rate(hyper, step.saturating_sub(1), total_steps),
                    seen as f64 / secs
                );
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let test_top1 = match test {
            Some(t) => {
                let e = evaluate(&net, t, 500)?;
                eprintln!("epoch {epoch}: test top1 {:.4} loss {:.4}", e.top1, e.loss);
                Some(e.top1)
            }
            None => None,
        };
        logs.push(EpochLog {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_top1: hits as f64 / seen as f64,
            test_top1,
            seconds,
        });
    }
    Ok((model::state_dict_from_varmap(&varmap)?, logs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper() -> Hyper {
        Hyper {
            epochs: 1,
            batch_size: 4,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            warmup_steps: 10,
            max_shift: 2,
            horizontal_flip: true,
            seed: 0,
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let h = hyper();
        assert!((learning_rate(&h, 0, 100) - 0.01).abs() < 1e-12);
        assert!((learning_rate(&h, 9, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&h, 10, 100) - 0.1).abs() < 1e-12);
        assert!(learning_rate(&h, 99, 100) < 1e-3);
    }

    #[test]
    fn a_few_steps_on_a_tiny_split_are_deterministic_and_lower_the_loss() {
        // 8 constant images of two classes: the network separates them within a few steps.
        let side = fashion_mnist::SIDE * fashion_mnist::SIDE;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for i in 0..8 {
            images.extend(std::iter::repeat_n(if i % 2 == 0 { 1.0 } else { -1.0 }, side));
            labels.push((i % 2) as u8);
        }
        let split = Split { images, labels };
        let spec = ArchSpec::new(&model::arch_from_name("resnet20").unwrap(), 1, 10);
        let mut h = hyper();
        h.epochs = 3;
        let (a, logs) = train(spec, &h, &split, None).unwrap();
        let (b, _) = train(spec, &h, &split, None).unwrap();
        assert_eq!(a, b, "same seed, same weights");
        assert!(logs[2].train_loss < logs[0].train_loss, "{logs:?}");
        model::check_state_dict(&model::arch_from_name("resnet20").unwrap(), &a, "trained").unwrap();
    }
}
