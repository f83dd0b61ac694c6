//! The ONNX reader: a model file (and its external data files) → a checked, folded [`Graph`].
//!
//! # Protobuf
//! The ONNX messages are decoded by `prost` (tokio-rs, the most used protobuf crate), with
//! types generated at build time by `prost-build` from the vendored `onnx.proto` of ONNX 1.23,
//! the schema compiled by `protox` (pure Rust, so no `protoc` is needed; see `build.rs`).
//! The crates that ship ready ONNX types were older or thinly kept: `onnx-pb` (prost 0.6, last
//! released 2020), `onnx-protobuf` (rust-protobuf, one maintainer, ONNX 1.14's schema), or
//! parts of whole runtimes (`tract-onnx`, `candle-onnx`); generating from the schema keeps the
//! types as new as the vendored file and the dependency the one everybody keeps up to date.
//!
//! # What loads
//! Default-domain opsets 11 to 23 (what `torch.onnx.export` writes: opset 13–17 from the
//! TorchScript exporter, 18 and later from the default `dynamo` one). One graph input taking
//! an image batch whose dimension 0 may be symbolic (the batch); every other input dimension
//! must be a number. Weights inline or in external data files. Ops: see [`Op`] and the
//! `translate` table below; an op or attribute outside it is an error naming the node and op.
//!
//! # Files from strangers
//! - An external data `location` must be a relative path inside the model's folder: absolute
//!   paths, `..` components and symbolic links that lead out of the folder are refused (as
//!   onnxruntime refuses them).
//! - `offset` and `length` must lie inside the data file, and `length` must be the tensor's
//!   size; raw data must have exactly the declared size.
//! - Every declared size (tensor dims, shapes computed at load) is checked against
//!   [`MAX_TENSOR_ELEMENTS`] with overflow-checked arithmetic before anything is allocated, and
//!   all constants together against [`MAX_CONSTANT_ELEMENTS`] (so that many tensors reading the
//!   same bytes of a data file cannot add up to terabytes either).
//! - Protobuf nesting is bounded by prost's recursion limit.

use super::ops::{Binary, ConvAttrs, GemmAttrs, Op, PoolAttrs, SliceAxis, Unary};
use super::tensor::{Data, Tensor};
use super::{check_elements, Graph, GraphBuilder, ValueId, MAX_CONSTANT_ELEMENTS, MAX_TENSOR_ELEMENTS};
use crate::{Error, Result};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub(crate) mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::{tensor_proto, AttributeProto, ModelProto, NodeProto, TensorProto};

/// Lowest and highest default-domain opset read.
pub const OPSETS: (i64, i64) = (11, 23);

pub(super) fn read(path: &Path) -> Result<Graph> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(&shown, e))?;
    let dir = path
        .parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    read_bytes(&bytes, &shown, dir)
}

pub(super) fn read_bytes(bytes: &[u8], name: &str, dir: Option<&Path>) -> Result<Graph> {
    let err = |msg: String| Error::input(name, msg);
    let model = ModelProto::decode(bytes).map_err(|e| err(format!("not an ONNX model (protobuf: {e})")))?;
    let graph = match &model.graph {
        Some(g) if model.ir_version.is_some() && !g.node.is_empty() => g,
        _ => return Err(err("not an ONNX model (no IR version or no graph nodes)".into())),
    };
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain() {
            "" | "ai.onnx" => opset = Some(o.version()),
            _ => {}
        }
    }
    let opset = opset.ok_or_else(|| err("the model imports no default-domain opset".into()))?;
    if opset < OPSETS.0 || opset > OPSETS.1 {
        return Err(err(format!(
            "opset {opset} is not supported (expected {} to {})",
            OPSETS.0, OPSETS.1
        )));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(err("sparse initializers are not supported".into()));
    }
    let mut external = ExternalData::new(dir, name);
    let mut consts: HashMap<String, Arc<Tensor>> = HashMap::new();
    let mut code_types: HashMap<String, (f32, f32)> = HashMap::new();
    let mut budget = MAX_CONSTANT_ELEMENTS;
    // Every declared size against the budget of all constants, before anything is read.
    for t in &graph.initializer {
        let declared = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect::<Vec<_>>();
        let n = check_elements(&declared).map_err(|e| err(format!("initializer {:?}: {e}", t.name())))?;
        take(&mut budget, n).map_err(|e| err(format!("initializer {:?}: {e}", t.name())))?;
    }
    for t in &graph.initializer {
        let tensor =
            tensor_from_proto(t, &mut external).map_err(|e| err(format!("initializer {:?}: {e}", t.name())))?;
        consts.insert(t.name().to_string(), Arc::new(tensor));
        if let Some(range) = code_range(t.data_type()) {
            code_types.insert(t.name().to_string(), range);
        }
    }
    // The one runtime input (older files list the initializers among the inputs too).
    let inputs: Vec<_> = graph.input.iter().filter(|i| !consts.contains_key(i.name())).collect();
    if inputs.len() != 1 {
        return Err(err(format!(
            "the graph has {} inputs ({}); exactly one (the image batch) is supported",
            inputs.len(),
            inputs.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
        )));
    }
    let input = inputs[0];
    let in_name = input.name().to_string();
    let in_shape = input_shape(input).map_err(|e| err(format!("input {in_name:?}: {e}")))?;
    let mut b = GraphBuilder::new(&in_name, &in_shape[1..]).map_err(|e| err(e.to_string()))?;
    let mut ctx = Ctx {
        opset,
        consts,
        code_types,
        runtime: HashMap::new(),
    };
    ctx.runtime.insert(
        in_name.clone(),
        (b.value(&in_name).expect("input value"), in_shape.clone()),
    );

    for (index, node) in graph.node.iter().enumerate() {
        let node_name = if node.name().is_empty() {
            format!("{}_{index}", node.op_type())
        } else {
            node.name().to_string()
        };
        let at = |msg: String| err(format!("node {node_name:?} ({}): {msg}", node.op_type()));
        if !matches!(node.domain(), "" | "ai.onnx") {
            return Err(at(format!("op domain {:?} is not supported", node.domain())));
        }
        for i in node.input.iter().filter(|i| !i.is_empty()) {
            if !ctx.consts.contains_key(i) && !ctx.runtime.contains_key(i) {
                return Err(at(format!(
                    "input {i:?} is not produced by an earlier node (the graph must be in topological order)"
                )));
            }
        }
        let mut attrs = Attrs::new(node);
        let lowered = translate(node, &mut attrs, &ctx).map_err(at)?;
        attrs.check_all_used().map_err(at)?;
        let outputs: Vec<&str> = node.output.iter().map(|s| s.as_str()).collect();
        match lowered {
            Lowered::Folded(tensors) => {
                for (name, t) in outputs.iter().zip(tensors) {
                    check_elements(&t.shape).map_err(at)?;
                    take(&mut budget, t.len()).map_err(at)?;
                    if !name.is_empty() {
                        ctx.consts.insert(name.to_string(), Arc::new(t));
                    }
                }
            }
            Lowered::Run {
                op,
                inputs,
                outputs: n_out,
            } => {
                // Every input constant: fold if the op can be run here.
                let all_const: Option<Vec<Arc<Tensor>>> = inputs.iter().map(|i| ctx.consts.get(*i).cloned()).collect();
                if let Some(tensors) = all_const {
                    let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
                    let out_shapes = op.infer(&shapes, &vec![true; shapes.len()], n_out).map_err(at)?;
                    for s in &out_shapes {
                        let n = check_elements(s).map_err(at)?;
                        take(&mut budget, n).map_err(at)?;
                    }
                    let refs: Vec<&Tensor> = tensors.iter().map(|t| t.as_ref()).collect();
                    let folded = super::ops::fold(&op, &refs, &out_shapes).ok_or_else(|| {
                        at("every input is a constant; folding this op at load is not supported".into())
                    })?;
                    for (name, t) in outputs.iter().zip(folded) {
                        ctx.consts.insert(name.to_string(), Arc::new(t));
                    }
                    continue;
                }
                let mut ids: Vec<ValueId> = Vec::with_capacity(inputs.len());
                for i in &inputs {
                    let id = match ctx.runtime.get(*i) {
                        Some(&(id, _)) => id,
                        None => {
                            let t = ctx.consts[*i].clone();
                            let shape = t.shape.clone();
                            let id = b.constant(i, t);
                            ctx.runtime.insert(i.to_string(), (id, shape));
                            id
                        }
                    };
                    ids.push(id);
                }
                if outputs.len() < n_out || outputs[n_out..].iter().any(|o| !o.is_empty()) {
                    return Err(at(format!(
                        "only {n_out} output(s) are supported, the node has {}",
                        outputs.len()
                    )));
                }
                let scope = node_scope(node);
                let made = b
                    .node(&node_name, node.op_type(), op, &ids, &outputs[..n_out], scope)
                    .map_err(|e| err(e.to_string()))?;
                for (name, id) in outputs.iter().zip(made) {
                    ctx.runtime.insert(name.to_string(), (id, b.shape(id).to_vec()));
                }
            }
        }
    }
    let mut outs = Vec::new();
    for o in &graph.output {
        if ctx.consts.contains_key(o.name()) {
            return Err(err(format!(
                "output {:?} is a constant, not computed from the input",
                o.name()
            )));
        }
        match ctx.runtime.get(o.name()) {
            Some(&(id, _)) => outs.push(id),
            None => return Err(err(format!("output {:?} is not produced by any node", o.name()))),
        }
    }
    if outs.is_empty() {
        return Err(err("the graph has no outputs".into()));
    }
    b.finish(outs).map_err(|e| err(e.to_string()))
}

/// Takes `n` elements from the budget of all constants of a model.
fn take(budget: &mut usize, n: usize) -> std::result::Result<(), String> {
    *budget = budget
        .checked_sub(n)
        .ok_or_else(|| format!("the model's constants exceed the limit of {MAX_CONSTANT_ELEMENTS} elements in all"))?;
    Ok(())
}

fn input_shape(input: &proto::ValueInfoProto) -> std::result::Result<Vec<usize>, String> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => t,
        _ => return Err("not a tensor".into()),
    };
    if tensor.elem_type() != tensor_proto::DataType::Float as i32 {
        return Err(format!("element type {} is not float", type_name(tensor.elem_type())));
    }
    let dims = &tensor.shape.as_ref().ok_or("has no shape")?.dim;
    if dims.len() < 2 {
        return Err(format!(
            "rank {} (expected a batch dimension and at least one more)",
            dims.len()
        ));
    }
    let mut shape = vec![1];
    for (i, d) in dims.iter().enumerate().skip(1) {
        match d.value {
            Some(D::DimValue(v)) if v > 0 => shape.push(v as usize),
            Some(D::DimParam(ref p)) => {
                return Err(format!(
                    "dimension {i} is symbolic ({p:?}); only the batch dimension may be"
                ))
            }
            _ => return Err(format!("dimension {i} has no size")),
        }
    }
    Ok(shape)
}

pub(super) fn type_name(t: i32) -> String {
    tensor_proto::DataType::try_from(t)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("#{t}"))
}

/// The PyTorch module a node came from: the dynamo exporter's `pkg.torch.onnx.name_scopes`
/// (`['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d_1']`: the last entry is the aten op),
/// or the TorchScript exporter's node name (`/layer1/layer1.0/conv1/Conv`).
fn node_scope(node: &NodeProto) -> Option<String> {
    if let Some(p) = node
        .metadata_props
        .iter()
        .find(|p| p.key() == "pkg.torch.onnx.name_scopes")
    {
        let items: Vec<&str> = p
            .value()
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .collect();
        if items.len() >= 2 {
            let module = items[items.len() - 2];
            if !module.is_empty() {
                return Some(module.to_string());
            }
        }
        return None;
    }
    let name = node.name().strip_prefix('/')?;
    let segments: Vec<&str> = name.split('/').collect();
    let mut full = String::new();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        // `layer1` then `layer1.0` (already qualified) or `conv1` (relative to it).
        full = if full.is_empty() || seg.starts_with(&format!("{full}.")) {
            seg.to_string()
        } else {
            format!("{full}.{seg}")
        };
    }
    (!full.is_empty()).then_some(full)
}

// ---------------------------------------------------------------------------------------------
// Tensors and external data.

pub(super) struct ExternalData<'a> {
    dir: Option<&'a Path>,
    model: &'a str,
    canonical_dir: Option<PathBuf>,
    files: HashMap<String, (std::fs::File, u64)>,
}

impl<'a> ExternalData<'a> {
    pub(super) fn new(dir: Option<&'a Path>, model: &'a str) -> Self {
        ExternalData {
            dir,
            model,
            canonical_dir: None,
            files: HashMap::new(),
        }
    }

    /// Reads `len` bytes at `offset` of `location`, after the checks of the module docs.
    pub(super) fn read(
        &mut self,
        location: &str,
        offset: u64,
        length: Option<u64>,
        len: usize,
    ) -> std::result::Result<Vec<u8>, String> {
        let dir = self
            .dir
            .ok_or_else(|| format!("external data {location:?}, but the model was not read from a file"))?;
        let rel = Path::new(location);
        if location.is_empty() || rel.is_absolute() || location.starts_with('/') || location.starts_with('\\') {
            return Err(format!(
                "external data location {location:?} is not a relative path inside the model's folder"
            ));
        }
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            || location.contains("..")
        {
            return Err(format!("external data location {location:?} leaves the model's folder"));
        }
        if !self.files.contains_key(location) {
            let full = dir.join(rel);
            if self.canonical_dir.is_none() {
                self.canonical_dir = Some(
                    dir.canonicalize()
                        .map_err(|e| format!("model folder {}: {e}", dir.display()))?,
                );
            }
            let canon = full
                .canonicalize()
                .map_err(|e| format!("external data file {}: {e}", full.display()))?;
            if !canon.starts_with(self.canonical_dir.as_ref().unwrap()) {
                return Err(format!(
                    "external data file {} leads out of the model's folder (symbolic link)",
                    full.display()
                ));
            }
            let file =
                std::fs::File::open(&canon).map_err(|e| format!("external data file {}: {e}", full.display()))?;
            let meta = file
                .metadata()
                .map_err(|e| format!("external data file {}: {e}", full.display()))?;
            if !meta.is_file() {
                return Err(format!("external data {} is not a regular file", full.display()));
            }
            self.files.insert(location.to_string(), (file, meta.len()));
        }
        let (file, size) = self.files.get_mut(location).unwrap();
        let want = len as u64;
        if let Some(l) = length {
            if l != want {
                return Err(format!("external data length {l} is not the tensor's {want} bytes"));
            }
        }
        let end = offset.checked_add(want).filter(|&e| e <= *size).ok_or_else(|| {
            format!("external data offset {offset} + length {want} lies outside {location:?} ({size} bytes)")
        })?;
        debug_assert!(end <= *size);
        let mut buf = vec![0u8; len];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| format!("{location:?} (next to {}): {e}", self.model))?;
        Ok(buf)
    }
}

fn tensor_from_proto(t: &TensorProto, external: &mut ExternalData) -> std::result::Result<Tensor, String> {
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("negative dimension in {:?}", t.dims));
        }
        shape.push(usize::try_from(d).map_err(|_| format!("dimension {d} too large"))?);
    }
    let n = check_elements(&shape)?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    use tensor_proto::DataType as DT;
    let dtype = t.data_type();
    let width = match DT::try_from(dtype) {
        Ok(DT::Float) | Ok(DT::Int32) => 4,
        Ok(DT::Int64) | Ok(DT::Double) => 8,
        Ok(DT::Int8) | Ok(DT::Uint8) | Ok(DT::Int4) | Ok(DT::Uint4) => 1,
        _ => return Err(format!("data type {} is not supported", type_name(dtype))),
    };
    let four_bits = matches!(DT::try_from(dtype), Ok(DT::Int4) | Ok(DT::Uint4));
    // n ≤ 2^28: no overflow; 4-bit codes are two per byte.
    let bytes = if four_bits { n.div_ceil(2) } else { n * width };
    let raw: Option<Vec<u8>> = if t.data_location() == tensor_proto::DataLocation::External {
        let mut location = None;
        let (mut offset, mut length) = (0u64, None);
        for e in &t.external_data {
            let num = || {
                e.value()
                    .parse::<u64>()
                    .map_err(|_| format!("external data {} {:?} is not a number", e.key(), e.value()))
            };
            match e.key() {
                "location" => location = Some(e.value().to_string()),
                "offset" => offset = num()?,
                "length" => length = Some(num()?),
                "checksum" => {}
                k => return Err(format!("external data key {k:?} is not supported")),
            }
        }
        let location = location.ok_or("external data without a location")?;
        Some(external.read(&location, offset, length, bytes)?)
    } else if let Some(r) = &t.raw_data {
        if r.len() != bytes {
            return Err(format!(
                "raw data has {} bytes, the shape {:?} needs {bytes}",
                r.len(),
                shape
            ));
        }
        None
    } else {
        None
    };
    let raw_bytes: Option<&[u8]> = raw.as_deref().or(t.raw_data.as_deref());
    let count_err = |have: usize| format!("holds {have} values, the shape {shape:?} needs {n}");
    let data = match (DT::try_from(dtype).unwrap(), raw_bytes) {
        (DT::Float, Some(r)) => Data::F32(
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        (DT::Float, None) => {
            if t.float_data.len() != n {
                return Err(count_err(t.float_data.len()));
            }
            Data::F32(t.float_data.clone())
        }
        (DT::Double, Some(r)) => Data::F32(
            r.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        ),
        (DT::Double, None) => {
            if t.double_data.len() != n {
                return Err(count_err(t.double_data.len()));
            }
            Data::F32(t.double_data.iter().map(|&v| v as f32).collect())
        }
        (DT::Int64, Some(r)) => Data::I64(
            r.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        (DT::Int64, None) => {
            if t.int64_data.len() != n {
                return Err(count_err(t.int64_data.len()));
            }
            Data::I64(t.int64_data.clone())
        }
        (DT::Int32, Some(r)) => Data::I64(
            r.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        (DT::Int32, None) => {
            if t.int32_data.len() != n {
                return Err(count_err(t.int32_data.len()));
            }
            Data::I64(t.int32_data.iter().map(|&v| v as i64).collect())
        }
        // Integer codes (QuantizeLinear/DequantizeLinear operands) as floats of their values.
        (DT::Int8, Some(r)) => Data::F32(r.iter().map(|&b| b as i8 as f32).collect()),
        (DT::Uint8, Some(r)) => Data::F32(r.iter().map(|&b| b as f32).collect()),
        (DT::Int4 | DT::Uint4, Some(r)) => {
            let signed = DT::try_from(dtype) == Ok(DT::Int4);
            Data::F32(
                (0..n)
                    .map(|i| {
                        let nibble = (r[i / 2] >> (4 * (i % 2))) & 0x0f;
                        if signed && nibble >= 8 {
                            nibble as f32 - 16.0
                        } else {
                            nibble as f32
                        }
                    })
                    .collect(),
            )
        }
        (DT::Int8 | DT::Uint8, None) => {
            if t.int32_data.len() != n {
                return Err(count_err(t.int32_data.len()));
            }
            Data::F32(t.int32_data.iter().map(|&v| v as f32).collect())
        }
        (DT::Int4 | DT::Uint4, None) => return Err("4-bit data must be raw bytes".into()),
        _ => unreachable!("data type checked above"),
    };
    Ok(Tensor { shape, data })
}

// ---------------------------------------------------------------------------------------------
// Nodes.

struct Ctx {
    opset: i64,
    consts: HashMap<String, Arc<Tensor>>,
    /// The code range of initializers of integer code types (read as floats).
    code_types: HashMap<String, (f32, f32)>,
    /// Runtime values (and the constants runtime nodes read): id and per-sample shape.
    runtime: HashMap<String, (ValueId, Vec<usize>)>,
}

/// A node's attributes, remembering which ones the translation read.
struct Attrs<'a> {
    node: &'a NodeProto,
    used: HashSet<&'a str>,
}

impl<'a> Attrs<'a> {
    fn new(node: &'a NodeProto) -> Self {
        Attrs {
            node,
            used: HashSet::new(),
        }
    }

    fn get(&mut self, name: &'a str) -> Option<&'a AttributeProto> {
        let a = self.node.attribute.iter().find(|a| a.name() == name)?;
        self.used.insert(name);
        Some(a)
    }

    fn int(&mut self, name: &'a str, default: i64) -> i64 {
        self.get(name).map(|a| a.i()).unwrap_or(default)
    }

    fn float(&mut self, name: &'a str, default: f32) -> f32 {
        self.get(name).map(|a| a.f()).unwrap_or(default)
    }

    fn ints(&mut self, name: &'a str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    fn string(&mut self, name: &'a str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(a.s()).into_owned())
    }

    /// Marks attributes that do not change inference results as read.
    fn ignore(&mut self, names: &[&'a str]) {
        for n in names {
            self.get(n);
        }
    }

    fn check_all_used(&self) -> std::result::Result<(), String> {
        match self.node.attribute.iter().find(|a| !self.used.contains(a.name())) {
            Some(a) => Err(format!("attribute {:?} is not supported", a.name())),
            None => Ok(()),
        }
    }
}

enum Lowered<'n> {
    /// Outputs computed at load.
    Folded(Vec<Tensor>),
    /// A node to run on `inputs` (names), with `outputs` outputs.
    Run {
        op: Op,
        inputs: Vec<&'n str>,
        outputs: usize,
    },
}

type R<T> = std::result::Result<T, String>;

fn translate<'n>(node: &'n NodeProto, attrs: &mut Attrs<'n>, ctx: &Ctx) -> R<Lowered<'n>> {
    let inputs: Vec<&str> = node.input.iter().map(|s| s.as_str()).collect();
    let input = |i: usize| -> Option<&str> { inputs.get(i).copied().filter(|s| !s.is_empty()) };
    let x = input(0);
    let run1 = |op: Op, ins: Vec<&'n str>| Lowered::Run {
        op,
        inputs: ins,
        outputs: 1,
    };
    let data = |ins: &[usize]| -> R<Vec<&'n str>> {
        ins.iter()
            .map(|&i| {
                node.input
                    .get(i)
                    .map(|s| s.as_str())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| format!("input {i} is missing"))
            })
            .collect()
    };
    let const_of = |i: usize| -> R<Option<&Arc<Tensor>>> {
        match input(i) {
            None => Ok(None),
            Some(name) => ctx
                .consts
                .get(name)
                .map(Some)
                .ok_or_else(|| format!("input {i} ({name:?}) must be a constant (computed at load)")),
        }
    };
    let ints_of = |i: usize| -> R<Option<Vec<i64>>> {
        match const_of(i)? {
            None => Ok(None),
            Some(t) => t
                .as_i64()
                .map(|v| Some(v.to_vec()))
                .ok_or_else(|| format!("input {i} must hold integers")),
        }
    };
    let float_of = |i: usize| -> R<Option<f32>> {
        match const_of(i)? {
            None => Ok(None),
            Some(t) => match t.as_f32() {
                Some([v]) => Ok(Some(*v)),
                _ => Err(format!("input {i} must be one float")),
            },
        }
    };
    let rank = |name: &str| ctx.shape(name).len();
    let op = node.op_type();
    let opset = ctx.opset;
    Ok(match op {
        "Constant" => {
            let t = if let Some(a) = attrs.get("value") {
                let t = a.t.as_ref().ok_or("value is not a tensor")?;
                tensor_from_proto(t, &mut ExternalData::new(None, ""))?
            } else if let Some(a) = attrs.get("value_float") {
                Tensor::f32(vec![], vec![a.f()])
            } else if let Some(a) = attrs.get("value_floats") {
                Tensor::f32(vec![a.floats.len()], a.floats.clone())
            } else if let Some(a) = attrs.get("value_int") {
                Tensor::i64(vec![], vec![a.i()])
            } else if let Some(a) = attrs.get("value_ints") {
                Tensor::i64(vec![a.ints.len()], a.ints.clone())
            } else {
                return Err("no supported value attribute (value, value_float(s), value_int(s))".into());
            };
            Lowered::Folded(vec![t])
        }
        "Identity" => run1(
            Op::Reshape {
                shape: ctx.shape(x.ok_or("no input")?),
            },
            data(&[0])?,
        ),
        "Dropout" => {
            attrs.ignore(&["seed", "ratio"]);
            if let Some(t) = ctx.consts.get(input(2).unwrap_or("")) {
                if t.as_i64().unwrap_or(&[0]).iter().any(|&v| v != 0) {
                    return Err("training_mode is not supported".into());
                }
            }
            run1(
                Op::Reshape {
                    shape: ctx.shape(x.ok_or("no input")?),
                },
                data(&[0])?,
            )
        }
        "Shape" => {
            let s = ctx.shape(x.ok_or("no input")?);
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(attrs.int("start", 0));
            let end = clampi(attrs.int("end", r));
            let dims: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
            Lowered::Folded(vec![Tensor::i64(vec![dims.len()], dims)])
        }
        "Cast" => {
            let to = attrs.int("to", 0) as i32;
            attrs.ignore(&["saturate", "round_mode"]);
            use tensor_proto::DataType as DT;
            let name = x.ok_or("no input")?;
            match ctx.consts.get(name) {
                Some(t) => {
                    let data = match (DT::try_from(to), &t.data) {
                        (Ok(DT::Float) | Ok(DT::Double), Data::F32(v)) => Data::F32(v.clone()),
                        (Ok(DT::Float) | Ok(DT::Double), Data::I64(v)) => {
                            Data::F32(v.iter().map(|&a| a as f32).collect())
                        }
                        (Ok(DT::Int64) | Ok(DT::Int32), Data::I64(v)) => Data::I64(v.clone()),
                        (Ok(DT::Int64) | Ok(DT::Int32), Data::F32(v)) => {
                            Data::I64(v.iter().map(|&a| a as i64).collect())
                        }
                        _ => return Err(format!("cast to {} is not supported", type_name(to))),
                    };
                    Lowered::Folded(vec![Tensor {
                        shape: t.shape.clone(),
                        data,
                    }])
                }
                None if to == DT::Float as i32 => run1(Op::Reshape { shape: ctx.shape(name) }, data(&[0])?),
                None => {
                    return Err(format!(
                        "cast of a runtime tensor to {} is not supported",
                        type_name(to)
                    ))
                }
            }
        }
        "ConstantOfShape" => {
            let dims = ints_of(0)?.ok_or("no shape")?;
            let shape = dims
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("bad dimension {d}")))
                .collect::<R<Vec<_>>>()?;
            let n = check_elements(&shape)?;
            let value = match attrs.get("value").and_then(|a| a.t.as_ref()) {
                Some(t) => tensor_from_proto(t, &mut ExternalData::new(None, ""))?,
                None => Tensor::f32(vec![1], vec![0.0]),
            };
            let data = match &value.data {
                Data::F32(v) if v.len() == 1 => Data::F32(vec![v[0]; n]),
                Data::I64(v) if v.len() == 1 => Data::I64(vec![v[0]; n]),
                _ => return Err("value must hold one element".into()),
            };
            Lowered::Folded(vec![Tensor { shape, data }])
        }
        "Gather" => {
            let axis = attrs.int("axis", 0);
            let (data_t, idx) = match (const_of(0), const_of(1)?) {
                (Ok(Some(d)), Some(i)) => (d, i),
                _ => return Err("only Gather of constants (shape arithmetic folded at load) is supported".into()),
            };
            let r = data_t.shape.len() as i64;
            let axis = norm_axis(axis, r)?;
            let dim = data_t.shape[axis] as i64;
            let indices = idx.as_i64().ok_or("indices must be integers")?;
            let mut picks = Vec::with_capacity(indices.len());
            for &i in indices {
                let j = if i < 0 { i + dim } else { i };
                if j < 0 || j >= dim {
                    return Err(format!("index {i} out of range for dimension {dim}"));
                }
                picks.push(j as usize);
            }
            let outer: usize = data_t.shape[..axis].iter().product();
            let inner: usize = data_t.shape[axis + 1..].iter().product();
            let mut shape = data_t.shape[..axis].to_vec();
            shape.extend_from_slice(&idx.shape);
            shape.extend_from_slice(&data_t.shape[axis + 1..]);
            check_elements(&shape)?;
            fn gather<T: Copy>(v: &[T], outer: usize, dim: usize, inner: usize, picks: &[usize]) -> Vec<T> {
                let mut out = Vec::with_capacity(outer * picks.len() * inner);
                for o in 0..outer {
                    for &p in picks {
                        let at = (o * dim + p) * inner;
                        out.extend_from_slice(&v[at..at + inner]);
                    }
                }
                out
            }
            let d = dim as usize;
            let data = match &data_t.data {
                Data::F32(v) => Data::F32(gather(v, outer, d, inner, &picks)),
                Data::I64(v) => Data::I64(gather(v, outer, d, inner, &picks)),
            };
            Lowered::Folded(vec![Tensor { shape, data }])
        }
        "Unsqueeze" => {
            let name = x.ok_or("no input")?;
            let axes = if opset >= 13 { ints_of(1)? } else { attrs.ints("axes") }.ok_or("no axes")?;
            let mut s = ctx.shape(name);
            let out_rank = (s.len() + axes.len()) as i64;
            let mut axes = axes.iter().map(|&a| norm_axis(a, out_rank)).collect::<R<Vec<_>>>()?;
            axes.sort_unstable();
            for a in axes {
                if a > s.len() {
                    return Err(format!("axis {a} out of range"));
                }
                s.insert(a, 1);
            }
            run1(Op::Reshape { shape: s }, data(&[0])?)
        }
        "Squeeze" => {
            let name = x.ok_or("no input")?;
            let axes = if opset >= 13 { ints_of(1)? } else { attrs.ints("axes") };
            let s = ctx.shape(name);
            let r = s.len() as i64;
            let axes: Vec<usize> = match axes {
                Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
                None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
            };
            if axes.iter().any(|&a| s[a] != 1) {
                return Err(format!("cannot squeeze axes {axes:?} of {s:?}"));
            }
            if ctx.is_runtime(name) && axes.contains(&0) {
                return Err("squeezing the batch dimension is not supported".into());
            }
            let shape = (0..s.len()).filter(|i| !axes.contains(i)).map(|i| s[i]).collect();
            run1(Op::Reshape { shape }, data(&[0])?)
        }
        "Flatten" => {
            let name = x.ok_or("no input")?;
            let s = ctx.shape(name);
            let axis = norm_axis(attrs.int("axis", 1), s.len() as i64 + 1)?;
            if ctx.is_runtime(name) && axis == 0 {
                return Err("axis 0 would merge the batch dimension".into());
            }
            let shape = vec![s[..axis].iter().product(), s[axis..].iter().product()];
            run1(Op::Reshape { shape }, data(&[0])?)
        }
        "Reshape" => {
            let name = x.ok_or("no input")?;
            let allowzero = attrs.int("allowzero", 0) != 0;
            let target = ints_of(1)?.ok_or("no shape")?;
            let s = ctx.shape(name);
            let n: usize = s.iter().product();
            let mut shape = Vec::with_capacity(target.len());
            let mut infer = None;
            for (i, &d) in target.iter().enumerate() {
                shape.push(match d {
                    0 if !allowzero => *s
                        .get(i)
                        .ok_or_else(|| format!("shape {target:?}: no dimension {i} to copy"))?,
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        1
                    }
                    d if d >= 0 => d as usize,
                    _ => return Err(format!("shape {target:?} is not valid")),
                });
            }
            let known = check_elements(&shape)?;
            if let Some(i) = infer {
                if known == 0 || !n.is_multiple_of(known) {
                    return Err(format!("cannot reshape {s:?} into {target:?}"));
                }
                shape[i] = n / known;
            }
            run1(Op::Reshape { shape }, data(&[0])?)
        }
        "Transpose" => {
            let r = rank(x.ok_or("no input")?);
            let perm = match attrs.ints("perm") {
                Some(p) => p.iter().map(|&a| norm_axis(a, r as i64)).collect::<R<Vec<_>>>()?,
                None => (0..r).rev().collect(),
            };
            run1(Op::Transpose { perm }, data(&[0])?)
        }
        "Concat" => {
            let r = rank(x.ok_or("no input")?);
            let axis = norm_axis(attrs.int("axis", 0), r as i64)?;
            let ins: Vec<&str> = inputs.iter().copied().filter(|s| !s.is_empty()).collect();
            Lowered::Run {
                op: Op::Concat { axis },
                inputs: ins,
                outputs: 1,
            }
        }
        "Split" => {
            let name = x.ok_or("no input")?;
            let s = ctx.shape(name);
            let axis = norm_axis(attrs.int("axis", 0), s.len() as i64)?;
            let n_out = node.output.len();
            let split = if opset >= 13 { ints_of(1)? } else { attrs.ints("split") };
            let num_outputs = attrs.int("num_outputs", 0);
            let sizes: Vec<usize> = match split {
                Some(v) => v
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| format!("bad split {v:?}")))
                    .collect::<R<_>>()?,
                None => {
                    if num_outputs > 0 && num_outputs as usize != n_out {
                        return Err(format!("num_outputs {num_outputs} but {n_out} outputs"));
                    }
                    let k = n_out;
                    if k == 0 {
                        return Err("no outputs".into());
                    }
                    let each = s[axis].div_ceil(k);
                    (0..k).map(|i| each.min(s[axis].saturating_sub(i * each))).collect()
                }
            };
            Lowered::Run {
                op: Op::Split { axis, sizes },
                inputs: data(&[0])?,
                outputs: n_out,
            }
        }
        "Slice" => {
            let name = x.ok_or("no input")?;
            let s = ctx.shape(name);
            let r = s.len() as i64;
            let starts = ints_of(1)?.ok_or("no starts")?;
            let ends = ints_of(2)?.ok_or("no ends")?;
            let axes = ints_of(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = ints_of(4)?.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            let mut out = Vec::new();
            for i in 0..starts.len() {
                let axis = norm_axis(axes[i], r)?;
                let dim = s[axis] as i64;
                let step = steps[i];
                if step == 0 {
                    return Err("step 0".into());
                }
                if axis == 0 && ctx.is_runtime(name) && !(starts[i] == 0 && step == 1 && ends[i] >= i32::MAX as i64) {
                    return Err("slicing the batch dimension is not supported".into());
                }
                let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
                // ceil(distance / |step|) in i128: steps may be anything an i64 holds.
                let count = |distance: i64| {
                    if distance > 0 {
                        (distance as i128 - 1) / (step as i128).abs() + 1
                    } else {
                        0
                    }
                };
                let (start, len) = if step > 0 {
                    let st = norm(starts[i]).clamp(0, dim);
                    let en = norm(ends[i]).clamp(0, dim);
                    (st, count(en - st))
                } else {
                    let st = norm(starts[i]).clamp(-1, dim - 1);
                    let en = norm(ends[i]).clamp(-1, dim - 1);
                    (st, count(st - en))
                };
                out.push(SliceAxis {
                    axis,
                    start: start.max(0) as usize,
                    step: step as isize,
                    len: len as usize,
                });
            }
            run1(Op::Slice { axes: out }, data(&[0])?)
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let b = match op {
                "Add" => Binary::Add,
                "Sub" => Binary::Sub,
                "Mul" => Binary::Mul,
                _ => Binary::Div,
            };
            run1(Op::Binary(b), data(&[0, 1])?)
        }
        "Relu" => run1(Op::Unary(Unary::Relu), data(&[0])?),
        "Sigmoid" => run1(Op::Unary(Unary::Sigmoid), data(&[0])?),
        "HardSwish" => run1(Op::Unary(Unary::HardSwish), data(&[0])?),
        "LeakyRelu" => run1(
            Op::Unary(Unary::LeakyRelu {
                alpha: attrs.float("alpha", 0.01),
            }),
            data(&[0])?,
        ),
        "HardSigmoid" => {
            let alpha = attrs.float("alpha", 0.2);
            let beta = attrs.float("beta", 0.5);
            run1(Op::Unary(Unary::HardSigmoid { alpha, beta }), data(&[0])?)
        }
        "Clip" => {
            let (min, max) = if opset >= 11 {
                (
                    float_of(1)?.unwrap_or(f32::NEG_INFINITY),
                    float_of(2)?.unwrap_or(f32::INFINITY),
                )
            } else {
                (attrs.float("min", f32::NEG_INFINITY), attrs.float("max", f32::INFINITY))
            };
            run1(Op::Unary(Unary::Clip { min, max }), data(&[0])?)
        }
        "Conv" => {
            let w = const_of(1)?.ok_or("no weight")?;
            if w.shape.len() != 4 {
                return Err(format!("weight {:?}: only 2-D convolutions are supported", w.shape));
            }
            let kernel = pair(attrs.ints("kernel_shape"), [w.shape[2], w.shape[3]], "kernel_shape")?;
            let strides = pair(attrs.ints("strides"), [1, 1], "strides")?;
            let dilations = pair(attrs.ints("dilations"), [1, 1], "dilations")?;
            let in_shape = ctx.shape(x.ok_or("no input")?);
            if in_shape.len() != 4 {
                return Err(format!("input {in_shape:?} is not NCHW"));
            }
            let pads = pads(attrs, [in_shape[2], in_shape[3]], kernel, strides, dilations)?;
            let groups = usize::try_from(attrs.int("group", 1)).map_err(|_| "group must be positive")?;
            let ins = if input(2).is_some() {
                data(&[0, 1, 2])?
            } else {
                data(&[0, 1])?
            };
            run1(
                Op::Conv(ConvAttrs {
                    kernel,
                    strides,
                    dilations,
                    pads,
                    groups,
                }),
                ins,
            )
        }
        "Gemm" => {
            let alpha = attrs.float("alpha", 1.0);
            let beta = attrs.float("beta", 1.0);
            if attrs.int("transA", 0) != 0 {
                return Err("transA=1 is not supported".into());
            }
            let trans_b = attrs.int("transB", 0) != 0;
            let ins = if input(2).is_some() {
                data(&[0, 1, 2])?
            } else {
                data(&[0, 1])?
            };
            run1(Op::Gemm(GemmAttrs { alpha, beta, trans_b }), ins)
        }
        "MatMul" => run1(Op::MatMul, data(&[0, 1])?),
        "BatchNormalization" => {
            let epsilon = attrs.float("epsilon", 1e-5);
            attrs.ignore(&["momentum", "spatial"]);
            if attrs.int("training_mode", 0) != 0 {
                return Err("training_mode=1 is not supported".into());
            }
            run1(Op::BatchNorm { epsilon }, data(&[0, 1, 2, 3, 4])?)
        }
        "MaxPool" | "AveragePool" => {
            let in_shape = ctx.shape(x.ok_or("no input")?);
            if in_shape.len() != 4 {
                return Err(format!(
                    "input {in_shape:?} is not NCHW (only 2-D pooling is supported)"
                ));
            }
            let kernel = pair(attrs.ints("kernel_shape"), [0, 0], "kernel_shape")?;
            if kernel.contains(&0) {
                return Err("kernel_shape is missing".into());
            }
            let strides = pair(attrs.ints("strides"), [1, 1], "strides")?;
            let dilations = pair(attrs.ints("dilations"), [1, 1], "dilations")?;
            let ceil_mode = attrs.int("ceil_mode", 0) != 0;
            let pads = pads(attrs, [in_shape[2], in_shape[3]], kernel, strides, dilations)?;
            let is_max = op == "MaxPool";
            let count_include_pad = if is_max {
                if attrs.int("storage_order", 0) != 0 {
                    return Err("storage_order=1 is not supported".into());
                }
                false
            } else {
                attrs.int("count_include_pad", 0) != 0
            };
            let p = PoolAttrs {
                kernel,
                strides,
                dilations,
                pads,
                ceil_mode,
                count_include_pad,
            };
            let op = if is_max { Op::MaxPool(p) } else { Op::AveragePool(p) };
            run1(op, data(&[0])?)
        }
        "GlobalAveragePool" => run1(Op::GlobalAveragePool, data(&[0])?),
        "ReduceMean" => {
            let name = x.ok_or("no input")?;
            let r = rank(name) as i64;
            let keepdims = attrs.int("keepdims", 1) != 0;
            let noop = attrs.int("noop_with_empty_axes", 0) != 0;
            let axes = if opset >= 18 { ints_of(1)? } else { attrs.ints("axes") };
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => {
                    let mut v = a.iter().map(|&a| norm_axis(a, r)).collect::<R<Vec<_>>>()?;
                    v.sort_unstable();
                    v.dedup();
                    v
                }
                _ if noop => vec![],
                _ => (0..r as usize).collect(),
            };
            if axes.is_empty() {
                run1(Op::Reshape { shape: ctx.shape(name) }, data(&[0])?)
            } else {
                run1(Op::ReduceMean { axes, keepdims }, data(&[0])?)
            }
        }
        "Softmax" => {
            let r = rank(x.ok_or("no input")?) as i64;
            let default = if opset >= 13 { -1 } else { 1 };
            let axis = norm_axis(attrs.int("axis", default), r)?;
            run1(
                Op::Softmax {
                    axis,
                    flatten: opset < 13,
                },
                data(&[0])?,
            )
        }
        "QuantizeLinear" => return qdq(node, attrs, ctx, true),
        "DequantizeLinear" => return qdq(node, attrs, ctx, false),
        _ => return Err("op is not supported".into()),
    })
}

impl Ctx {
    fn shape(&self, name: &str) -> Vec<usize> {
        match self.consts.get(name) {
            Some(t) => t.shape.clone(),
            None => self.runtime.get(name).map(|(_, s)| s.clone()).unwrap_or_default(),
        }
    }

    fn is_runtime(&self, name: &str) -> bool {
        self.runtime.contains_key(name) && !self.consts.contains_key(name)
    }
}

/// The range of an integer code type QuantizeLinear may produce.
fn code_range(dtype: i32) -> Option<(f32, f32)> {
    use tensor_proto::DataType as DT;
    Some(match DT::try_from(dtype).ok()? {
        DT::Uint8 => (0.0, 255.0),
        DT::Int8 => (-128.0, 127.0),
        DT::Uint4 => (0.0, 15.0),
        DT::Int4 => (-8.0, 7.0),
        _ => return None,
    })
}

/// QuantizeLinear (`quantize`) or DequantizeLinear of `x` with scale and zero point constants:
/// per tensor at run time ([`Unary::Quantize`], [`Unary::Dequantize`]), per axis only on a
/// constant (folded here; a DequantizeLinear of integer weights gives float weights again).
fn qdq<'n>(node: &'n NodeProto, attrs: &mut Attrs<'n>, ctx: &Ctx, quantize: bool) -> R<Lowered<'n>> {
    let name = |i: usize| node.input.get(i).map(|s| s.as_str()).filter(|s| !s.is_empty());
    let x = name(0).ok_or("input 0 is missing")?;
    let constant = |i: usize| -> R<Option<&Arc<Tensor>>> {
        match name(i) {
            None => Ok(None),
            Some(n) => ctx
                .consts
                .get(n)
                .map(Some)
                .ok_or_else(|| format!("input {i} ({n:?}) must be a constant")),
        }
    };
    let scale = constant(1)?.ok_or("no scale")?;
    let scales = scale.as_f32().ok_or("the scale must be float")?.to_vec();
    let zero_points: Vec<f32> = match constant(2)? {
        Some(z) => floats(z),
        None => vec![0.0; scales.len()],
    };
    if zero_points.len() != scales.len() {
        return Err(format!("{} zero points for {} scales", zero_points.len(), scales.len()));
    }
    if attrs.int("block_size", 0) != 0 {
        return Err("blocked quantization (block_size) is not supported".into());
    }
    attrs.ignore(&["saturate", "precision"]);
    let axis = attrs.int("axis", 1);
    let (lo, hi) = if quantize {
        match name(2) {
            Some(z) => *ctx
                .code_types
                .get(z)
                .ok_or("the zero point's type must be int8, uint8, int4 or uint4")?,
            None => match attrs.int("output_dtype", 0) {
                0 => (0.0, 255.0),
                t => code_range(t as i32)
                    .ok_or_else(|| format!("output_dtype {} is not supported", type_name(t as i32)))?,
            },
        }
    } else {
        attrs.ignore(&["output_dtype"]);
        (f32::NEG_INFINITY, f32::INFINITY)
    };
    let map = |v: f32, s: f32, z: f32| -> f32 {
        if quantize {
            ((v / s).round_ties_even() + z).clamp(lo, hi)
        } else {
            (v - z) * s
        }
    };
    if scales.len() == 1 && scale.shape.iter().product::<usize>() == 1 {
        let (s, z) = (scales[0], zero_points[0]);
        if let Some(t) = ctx.consts.get(x) {
            let v = floats(t);
            return Ok(Lowered::Folded(vec![Tensor::f32(
                t.shape.clone(),
                v.iter().map(|&v| map(v, s, z)).collect(),
            )]));
        }
        let u = if quantize {
            Unary::Quantize {
                scale: s,
                zero_point: z,
                lo,
                hi,
            }
        } else {
            Unary::Dequantize {
                scale: s,
                zero_point: z,
            }
        };
        return Ok(Lowered::Run {
            op: Op::Unary(u),
            inputs: vec![x],
            outputs: 1,
        });
    }
    let t = ctx
        .consts
        .get(x)
        .ok_or("per-axis scales are supported on constants only (weights), not on run-time tensors")?;
    let v = floats(t);
    let axis = norm_axis(axis, t.shape.len() as i64)?;
    if t.shape[axis] != scales.len() {
        return Err(format!("{} scales for dimension {axis} of {:?}", scales.len(), t.shape));
    }
    let inner: usize = t.shape[axis + 1..].iter().product();
    let dim = t.shape[axis];
    let out = v
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner.max(1)) % dim;
            map(v, scales[c], zero_points[c])
        })
        .collect();
    Ok(Lowered::Folded(vec![Tensor::f32(t.shape.clone(), out)]))
}

/// A constant's values as floats (int32 codes, e.g. a quantized bias, are read as integers).
fn floats(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Data::F32(v) => v.clone(),
        Data::I64(v) => v.iter().map(|&a| a as f32).collect(),
    }
}

fn norm_axis(a: i64, rank: i64) -> R<usize> {
    let v = if a < 0 { a + rank } else { a };
    if v < 0 || v >= rank {
        return Err(format!("axis {a} out of range for rank {rank}"));
    }
    Ok(v as usize)
}

fn pair(v: Option<Vec<i64>>, default: [usize; 2], what: &str) -> R<[usize; 2]> {
    match v {
        None => Ok(default),
        Some(v) if v.len() == 2 && v.iter().all(|&d| d >= 1 && d <= MAX_TENSOR_ELEMENTS as i64) => {
            Ok([v[0] as usize, v[1] as usize])
        }
        Some(v) => Err(format!(
            "{what} {v:?} is not two positive numbers (only 2-D is supported)"
        )),
    }
}

/// Explicit pads (top, left, bottom, right) from `pads` or `auto_pad`.
fn pads<'a>(
    attrs: &mut Attrs<'a>,
    input: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dil: [usize; 2],
) -> R<[usize; 4]> {
    let auto = attrs.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let explicit = attrs.ints("pads");
    match auto.as_str() {
        "NOTSET" => match explicit {
            None => Ok([0; 4]),
            Some(p) if p.len() == 4 && p.iter().all(|&d| (0..=MAX_TENSOR_ELEMENTS as i64).contains(&d)) => {
                Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
            }
            Some(p) => Err(format!("pads {p:?} is not four non-negative numbers")),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [0; 4];
            for i in 0..2 {
                let o = input[i].div_ceil(strides[i]);
                let eff = dil[i] * (kernel[i] - 1) + 1;
                let total = ((o - 1) * strides[i] + eff).saturating_sub(input[i]);
                let (small, large) = (total / 2, total - total / 2);
                if auto == "SAME_UPPER" {
                    out[i] = small;
                    out[i + 2] = large;
                } else {
                    out[i] = large;
                    out[i + 2] = small;
                }
            }
            Ok(out)
        }
        a => Err(format!("auto_pad {a:?} is not supported")),
    }
}
