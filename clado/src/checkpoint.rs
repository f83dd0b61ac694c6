//! Checkpoints: PyTorch `.pth` state_dicts (also nested under `state_dict`) and `.safetensors`.
//!
//! Loading yields a [`StateDict`]: float32 tensors by PyTorch parameter name. The format is
//! recognised from the file's first bytes, not its name:
//! - a zip archive is a `.pth` written by `torch.save` (PyTorch ≥ 1.6). The state_dict may be the
//!   top-level object or sit under a `state_dict` key (training checkpoints); a `module.` prefix
//!   left by `nn.DataParallel` is stripped;
//! - anything else must parse as `.safetensors`.
//!
//! Floating-point tensors of any width (f16, bf16, f32, f64) become f32. BatchNorm's integer
//! `num_batches_tracked` counters are dropped: they only steer momentum-free training, never a
//! forward pass. Any other integer tensor is an error naming it.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;

/// A dense float32 tensor in PyTorch's layout (row-major, `shape` as PyTorch prints it).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parameters and buffers by PyTorch name, e.g. `layer1.0.conv1.weight`, `bn1.running_mean`.
pub type StateDict = BTreeMap<String, Tensor32>;

/// Key under which training scripts commonly nest the state_dict: `{'state_dict': ..., 'epoch': ..}`.
pub const NESTED_KEY: &str = "state_dict";
/// Prefix `nn.DataParallel` puts before every parameter name.
pub const DATA_PARALLEL_PREFIX: &str = "module.";
/// First bytes of a legacy (pre-1.6) `torch.save` file: pickle protocol 2, then the 10-byte
/// long of torch's magic number.
const LEGACY_TORCH_MAGIC: &[u8] = &[0x80, 0x02, 0x8a, 0x0a];
/// BatchNorm buffer that is dropped on loading (see the module docs).
pub const BATCHES_TRACKED_SUFFIX: &str = "num_batches_tracked";

impl Tensor32 {
    /// A tensor of the given shape; `data.len()` must be the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "Tensor32 data does not fill {shape:?}"
        );
        Tensor32 { shape, data }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A candle tensor with the same shape and values.
    pub fn to_candle(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, self.shape.as_slice(), device)
    }

    /// Copy a candle tensor of any float dtype (converted to f32) into a `Tensor32`.
    pub fn from_candle(t: &Tensor) -> candle_core::Result<Self> {
        let shape = t.dims().to_vec();
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Tensor32 { shape, data })
    }
}

/// Load a checkpoint (`.pth` or `.safetensors`, recognised by content) into a [`StateDict`].
pub fn load(path: &str) -> Result<StateDict> {
    let head = read_head(path)?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return load_pth(path);
    }
    if head.starts_with(LEGACY_TORCH_MAGIC) {
        return Err(Error::input(
            path,
            "a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch \
             (torch.save(torch.load(f), f)) or convert it to .safetensors",
        ));
    }
    load_safetensors(path).map_err(|e| match e {
        Error::Input { .. } if !path.ends_with(".safetensors") => Error::input(
            path,
            "not a checkpoint: expected a PyTorch .pth (zip archive written by torch.save) \
             or a .safetensors file",
        ),
        other => other,
    })
}

/// Load a zip-format `.pth` file written by `torch.save`.
pub fn load_pth(path: &str) -> Result<StateDict> {
    let bad =
        |e: candle_core::Error| Error::input(path, format!("cannot read as a PyTorch checkpoint: {}", first_line(&e)));
    // Try the nested layout first: a top-level dict can hold stray tensors beside `state_dict`.
    // candle returns the top-level object itself when it is not a dict or lacks the key.
    let nested = match candle_core::pickle::read_all_with_key(path, Some(NESTED_KEY)) {
        Ok(tensors) => tensors,
        Err(e) if e.to_string().contains("not found") => Vec::new(),
        Err(e) => return Err(bad(e)),
    };
    let tensors = if nested.is_empty() {
        candle_core::pickle::read_all_with_key(path, None).map_err(bad)?
    } else {
        nested
    };
    if tensors.is_empty() {
        return Err(Error::input(
            path,
            "no tensors found: expected a state_dict (a dict of tensors), at the top level or \
             under the key 'state_dict'",
        ));
    }
    collect(path, tensors)
}

/// Load a `.safetensors` file.
pub fn load_safetensors(path: &str) -> Result<StateDict> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    safetensors_from_bytes(path, &bytes)
}

/// Parse the bytes of a `.safetensors` file read from `path` (named in messages).
pub fn safetensors_from_bytes(path: &str, bytes: &[u8]) -> Result<StateDict> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::input(path, format!("not a valid .safetensors file: {e}")))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::U8 => DType::U8,
            other => {
                if name.ends_with(BATCHES_TRACKED_SUFFIX) {
                    continue;
                }
                return Err(Error::input(
                    path,
                    format!("tensor '{name}' has dtype {other:?}, expected a floating-point type"),
                ));
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| Error::input(path, format!("tensor '{name}': {}", first_line(&e))))?;
        tensors.push((name, t));
    }
    if tensors.is_empty() {
        return Err(Error::input(path, "the .safetensors file holds no tensors"));
    }
    collect(path, tensors)
}

/// Write a state_dict as float32 `.safetensors` (atomically, or to stdout for `-`).
pub fn save_safetensors(path: &str, state: &StateDict) -> Result<()> {
    save_safetensors_with_metadata(path, state, None)
}

/// [`save_safetensors`] with string metadata in the file's `__metadata__` header (PyTorch's
/// `safetensors.torch.load_file` ignores it; `safe_open(..).metadata()` reads it).
pub fn save_safetensors_with_metadata(
    path: &str,
    state: &StateDict,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let views = state
        .iter()
        .map(|(name, t)| {
            let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (
                name.clone(),
                OwnedView {
                    shape: t.shape.clone(),
                    bytes,
                },
            )
        })
        .collect::<Vec<_>>();
    let encoded = safetensors::serialize(views, metadata)
        .map_err(|e| Error::other(format!("{path}: encoding .safetensors: {e}")))?;
    crate::io::write_bytes(path, &encoded)
}

/// A float32 tensor owned as little-endian bytes, for `safetensors::serialize`.
struct OwnedView {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for OwnedView {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Convert named candle tensors into a state_dict: strip the DataParallel prefix, drop the
/// BatchNorm counters, convert floats to f32, reject other dtypes.
fn collect(path: &str, tensors: Vec<(String, Tensor)>) -> Result<StateDict> {
    let mut state = StateDict::new();
    for (name, t) in tensors {
        let name = name.strip_prefix(DATA_PARALLEL_PREFIX).unwrap_or(&name).to_string();
        if !t.dtype().is_float() {
            if name.ends_with(BATCHES_TRACKED_SUFFIX) {
                continue;
            }
            return Err(Error::input(
                path,
                format!(
                    "tensor '{name}' has dtype {:?}, expected a floating-point type",
                    t.dtype()
                ),
            ));
        }
        let t32 = Tensor32::from_candle(&t)
            .map_err(|e| Error::input(path, format!("tensor '{name}': {}", first_line(&e))))?;
        if state.insert(name.clone(), t32).is_some() {
            return Err(Error::input(
                path,
                format!("tensor '{name}' appears twice (with and without the 'module.' prefix)"),
            ));
        }
    }
    Ok(state)
}

fn read_head(path: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(8);
    f.by_ref()
        .take(8)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    if head.is_empty() {
        return Err(Error::input(
            path,
            "empty file, expected a .pth or .safetensors checkpoint",
        ));
    }
    Ok(head)
}

/// candle errors can carry a backtrace after the first line; messages keep one line.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let path = path.to_str().unwrap();
        let mut state = StateDict::new();
        state.insert(
            "a.weight".into(),
            Tensor32::new(vec![2, 3], vec![1.0, -2.5, 3.25, 0.0, f32::MIN_POSITIVE, 7.0]),
        );
        state.insert("a.bias".into(), Tensor32::new(vec![2], vec![0.5, -0.5]));
        save_safetensors(path, &state).unwrap();
        assert_eq!(load(path).unwrap(), state);
    }

    #[test]
    fn text_file_is_not_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.pth");
        std::fs::write(&path, "hello, I am not a checkpoint\n").unwrap();
        let err = load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("notes.pth") && err.contains("not a checkpoint"), "{err}");
    }

    #[test]
    fn empty_file_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.safetensors");
        std::fs::write(&path, b"").unwrap();
        let err = load(path.to_str().unwrap()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("empty file"), "{err}");
    }

    #[test]
    fn truncated_zip_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pth");
        std::fs::write(&path, b"PK\x03\x04 and then nothing useful").unwrap();
        let err = load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("cut.pth") && err.contains("PyTorch checkpoint"), "{err}");
    }
}
