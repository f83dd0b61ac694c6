//! Checkpoints: PyTorch `.pth` state_dicts (also nested under `state_dict`) and `.safetensors`.
//!
//! Loading yields a [`StateDict`]: float32 tensors by PyTorch parameter name. The model work
//! fills in the loaders; the types here are what models and the engine agree on.

use std::collections::BTreeMap;

/// A dense float32 tensor in PyTorch's layout (row-major, `shape` as PyTorch prints it).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parameters and buffers by PyTorch name, e.g. `layer1.0.conv1.weight`, `bn1.running_mean`.
pub type StateDict = BTreeMap<String, Tensor32>;
