//! Checkpoints written by PyTorch's own `torch.save` load into the candle reference model and
//! give PyTorch's logits. The fixtures come from `scripts/make_fixtures.py` (generated once,
//! committed; see its docstring).

use candle_core::{Device, Tensor};
use clado::checkpoint::{self, StateDict};
use clado::model::{self, arch_from_name, check_state_dict, CifarResNet, ConvBackend};
use ndarray::{Array2, Array4};
use ndarray_npy::ReadNpyExt;

/// Max |logit difference| allowed between candle and PyTorch. Both compute in float32 but sum
/// in different orders (im2col + gemm vs. PyTorch's kernels); over 20 layers the reordering
/// error is ~1e-6 relative on logits of magnitude < 1, so 1e-4 catches any real mistake (a
/// missing BN term or a swapped tensor moves logits by > 1e-2) with a wide margin.
const LOGIT_TOLERANCE: f32 = 1e-4;

/// float16 keeps 11 significant bits: a value rounded to f16 is within 2^-11 relative.
const F16_RELATIVE_TOLERANCE: f32 = 1.0 / 2048.0;

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read_npy<A: ReadNpyExt>(name: &str) -> A {
    A::read_npy(std::fs::File::open(fixture(name)).unwrap()).unwrap()
}

fn plain_checkpoint() -> StateDict {
    checkpoint::load(&fixture("resnet20_c1k10.pth")).unwrap()
}

#[test]
fn pytorch_pth_gives_pytorch_logits_with_either_conv_backend() {
    let (spec, state) = model::load_checked(&fixture("resnet20_c1k10.pth"), "resnet20").unwrap();
    assert_eq!((spec.in_channels, spec.num_classes), (1, 10));
    let inputs: Array4<f32> = read_npy("resnet20_c1k10_inputs.npy");
    let expected: Array2<f32> = read_npy("resnet20_c1k10_logits.npy");
    let x = Tensor::from_slice(inputs.as_slice().unwrap(), inputs.shape(), &Device::Cpu).unwrap();

    for backend in [ConvBackend::Candle, ConvBackend::Im2col] {
        let net = CifarResNet::from_state_dict_with_backend(spec, &state, backend, &Device::Cpu).unwrap();
        let logits = net.forward_eval(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(logits.len(), expected.nrows());
        let mut worst = 0f32;
        for (row, want) in logits.iter().zip(expected.rows()) {
            for (got, want) in row.iter().zip(want.iter()) {
                worst = worst.max((got - want).abs());
            }
        }
        assert!(
            worst <= LOGIT_TOLERANCE,
            "{backend:?}: max |candle - torch| = {worst:e} > {LOGIT_TOLERANCE:e}"
        );
    }
}

#[test]
fn pth_drops_batch_counters_and_keeps_every_float_tensor() {
    let state = plain_checkpoint();
    let spec = check_state_dict(&arch_from_name("resnet20").unwrap(), &state, "fixture").unwrap();
    // 22 conv/linear weights + fc.bias + 21 BN modules (bn1, 2 per block, 2 shortcuts) × 4.
    assert_eq!(state.len(), spec.expected_tensors().len());
    assert_eq!(state.len(), 22 + 1 + 21 * 4);
    assert!(state.keys().all(|k| !k.ends_with("num_batches_tracked")));
}

#[test]
fn nested_data_parallel_f16_checkpoint_loads_as_the_same_tensors() {
    let plain = plain_checkpoint();
    let nested = checkpoint::load(&fixture("resnet20_c1k10_nested_f16.pth")).unwrap();
    assert_eq!(nested.keys().collect::<Vec<_>>(), plain.keys().collect::<Vec<_>>());
    for (name, t) in &plain {
        let h = &nested[name];
        assert_eq!(h.shape, t.shape, "{name}");
        for (a, b) in t.data.iter().zip(&h.data) {
            // f16 subnormals below 2^-14 lose relative precision; allow their absolute step.
            let tol = F16_RELATIVE_TOLERANCE * a.abs() + 2f32.powi(-24);
            assert!((a - b).abs() <= tol, "{name}: {a} vs f16 {b}");
        }
    }
}

#[test]
fn safetensors_round_trip_keeps_the_pth_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r20.safetensors");
    let out = out.to_str().unwrap();
    let state = plain_checkpoint();
    checkpoint::save_safetensors(out, &state).unwrap();
    assert_eq!(checkpoint::load(out).unwrap(), state);
    let (spec, _) = model::load_checked(out, "resnet20").unwrap();
    assert_eq!(spec.num_classes, 10);
}

#[test]
fn wrong_arch_on_a_real_checkpoint_is_an_input_error() {
    let err = model::load_checked(&fixture("resnet20_c1k10.pth"), "resnet32").unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("resnet20_c1k10.pth") && msg.contains("resnet32 expects 5 blocks per stage"),
        "{msg}"
    );
}

#[test]
fn a_npy_file_is_not_a_checkpoint() {
    let err = checkpoint::load(&fixture("resnet20_c1k10_logits.npy")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("not a checkpoint"), "{err}");
}

#[test]
fn train_mode_uses_batch_statistics_and_updates_running_stats() {
    let state = plain_checkpoint();
    let spec = check_state_dict(&arch_from_name("resnet20").unwrap(), &state, "fixture").unwrap();
    let varmap = model::varmap_from_state_dict(&state, &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let net = CifarResNet::new(spec, vb).unwrap();
    let inputs: Array4<f32> = read_npy("resnet20_c1k10_inputs.npy");
    let x = Tensor::from_slice(inputs.as_slice().unwrap(), inputs.shape(), &Device::Cpu).unwrap();
    use candle_core::ModuleT;
    let train_logits = net.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap();
    let eval_logits = net.forward_eval(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_ne!(
        train_logits, eval_logits,
        "train mode must normalise with batch statistics"
    );
    let after = model::state_dict_from_varmap(&varmap).unwrap();
    assert_ne!(
        after["bn1.running_mean"], state["bn1.running_mean"],
        "running mean must move"
    );
    assert_eq!(
        after["conv1.weight"], state["conv1.weight"],
        "a forward pass changes no weight"
    );
}

#[test]
fn built_in_model_loads_as_a_one_channel_ten_class_resnet20() {
    let path = format!("{}/../models/fmnist-resnet20.safetensors", env!("CARGO_MANIFEST_DIR"));
    let (spec, state) = model::load_checked(&path, "resnet20").unwrap();
    assert_eq!((spec.in_channels, spec.num_classes, spec.blocks_per_stage), (1, 10, 3));
    // Running statistics were trained, not left at their 0/1 initial values.
    assert!(state["bn1.running_var"].data.iter().any(|&v| (v - 1.0).abs() > 1e-3));
}
