//! The QDQ writer: an ONNX model with chosen layers quantized as QuantizeLinear/DequantizeLinear
//! pairs, the format onnxruntime, TensorRT and OpenVINO read as a quantized model.
//!
//! The source file's `ModelProto` is copied as it is; for each quantized layer
//! - the weight becomes integer codes (an initializer `W_quantized`) with per-output-channel
//!   scales (`W_scale`, zero points `W_zero_point` all 0) and a `DequantizeLinear` (axis = the
//!   layer's channel dimension) whose output `W_dequantized` the layer reads instead of `W`;
//!   `W` is dropped when nothing else reads it. 8-bit codes are `int8`; 4- and 2-bit codes are
//!   `int4` (two per byte) where the opset allows (21; a model at opset 18 to 20 is raised to
//!   21, which changes no operator it may contain), else `int8` holding the small codes;
//! - the layer's input goes through `QuantizeLinear → DequantizeLinear` (per tensor, `uint8`,
//!   the activation quantizer's scale and zero point), seen by that layer only. Below 8 bits a
//!   `Clip` of the dequantized value to the representable range `[−zp·s, (n − zp)·s]` follows,
//!   which is clipping the codes to `0..=n` (QuantizeLinear alone saturates at the type's
//!   0..=255). The Clip comes after DequantizeLinear, not before QuantizeLinear: onnxruntime
//!   1.32's optimiser removed Clips in front of a QuantizeLinear (8 of 12 on the ResNet-18
//!   fixture). A quantizer of the range
//!   `[0, 0]` (scale 0) is written with scale 1 and a Clip to `[0, 0]`;
//! - a bias moves to an `Add` after the layer, so that it stays float as in the simulation
//!   (onnxruntime's WeightBiasQuantization would round the bias of a Conv or Gemm with
//!   dequantized inputs to int32 codes of scale `s_x·s_w`).
//!
//! Both quantizers then compute exactly what the toolkit's simulation computes: QuantizeLinear
//! divides by the scale and rounds half to even, as [`crate::quant::ActQuantizer`] does, and
//! `(code − zp)·s` is the same product. External data is read and written inside the file
//! (protobuf caps a file at 2 GiB; larger models are refused).

use super::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto,
};
use super::onnx::{type_name, ExternalData};
use super::Graph;
use crate::{Error, Result};
use prost::Message;
use std::collections::HashSet;
use std::path::Path;

/// Opset from which `DequantizeLinear` takes an `axis` (per-channel scales).
pub const QDQ_MIN_OPSET: i64 = 13;
/// Opset that brings `int4` to QuantizeLinear/DequantizeLinear.
pub const INT4_OPSET: i64 = 21;
/// Lowest opset raised to [`INT4_OPSET`] for 4-bit codes: from 18 to 21 the operators the reader
/// takes only gained types and defaults (18 moved `ReduceMean`'s and `Split`'s lists to inputs).
const RAISE_FROM: i64 = 18;
/// Protobuf's limit on one message.
const MAX_PROTO_BYTES: usize = (1 << 31) - 1;

/// A layer's weight as integer codes.
pub struct QdqWeight {
    pub bits: u8,
    /// Codes in `−qmax..=qmax`, in the stored layout of the file's weight.
    pub codes: Vec<i8>,
    /// One scale per output channel, or one for the tensor.
    pub scales: Vec<f32>,
}

/// A layer's input quantizer (asymmetric, per tensor).
pub struct QdqInput {
    pub bits: u8,
    pub scale: f32,
    /// In `0..=2^bits − 1`.
    pub zero_point: u8,
}

/// How one layer of [`Graph::layers`] is written; layers not listed stay as they are.
pub struct QdqLayer {
    /// Index in [`Graph::layers`].
    pub layer: usize,
    pub weight: Option<QdqWeight>,
    pub input: Option<QdqInput>,
}

/// What the writer did, for the export's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdqSummary {
    /// The opset of the written file.
    pub opset: i64,
    /// The source file's opset.
    pub source_opset: i64,
    /// Whether 4- and 2-bit codes are packed as `int4` (else they sit in `int8`).
    pub int4: bool,
    /// Bytes of the quantizable layers' weights in the written file: codes (packed as stored)
    /// for quantized layers, float32 for the others; scales and zero points not included.
    pub layer_weight_bytes: u64,
    /// Bytes of the quantized layers' weight scales and zero points.
    pub scale_bytes: u64,
    /// Size of the written file.
    pub file_bytes: u64,
}

impl Graph {
    /// Writes `source` (the ONNX file this graph was read from) to `output` with `layers`
    /// quantized as QDQ (see the module docs) and `metadata` added to the model's
    /// `metadata_props` (replacing keys of the same name). Atomic: nothing is written on error.
    pub fn write_qdq(
        &self,
        source: &Path,
        layers: &[QdqLayer],
        metadata: &[(String, String)],
        output: &str,
    ) -> Result<QdqSummary> {
        let shown = source.display().to_string();
        let bytes = std::fs::read(source).map_err(|e| Error::io(&shown, e))?;
        let dir = source
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
        self.write_qdq_bytes(&bytes, &shown, dir, layers, metadata, output)
    }

    /// [`Graph::write_qdq`] of an ONNX model given as its bytes (this graph's source, e.g.
    /// from [`super::resnet_onnx`]), named `shown` in messages, its external data files in
    /// `dir` (`None`: it has none).
    pub fn write_qdq_bytes(
        &self,
        bytes: &[u8],
        shown: &str,
        dir: Option<&Path>,
        layers: &[QdqLayer],
        metadata: &[(String, String)],
        output: &str,
    ) -> Result<QdqSummary> {
        let err = |msg: String| Error::input(shown, msg);
        let mut model = ModelProto::decode(bytes).map_err(|e| err(format!("not an ONNX model (protobuf: {e})")))?;
        let source_opset = model
            .opset_import
            .iter()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
            .map(|o| o.version())
            .ok_or_else(|| err("opset_import: the model imports no default-domain opset".into()))?;
        if source_opset < QDQ_MIN_OPSET && !layers.is_empty() {
            return Err(err(format!(
                "opset_import: opset {source_opset} cannot represent per-channel weight scales \
                 (DequantizeLinear's axis needs opset {QDQ_MIN_OPSET}); convert the model to a newer opset first"
            )));
        }
        let small_codes = layers.iter().any(|l| l.weight.as_ref().is_some_and(|w| w.bits < 8));
        let int4 = source_opset >= INT4_OPSET || (small_codes && source_opset >= RAISE_FROM);
        let opset = if small_codes && int4 {
            source_opset.max(INT4_OPSET)
        } else {
            source_opset
        };
        for o in &mut model.opset_import {
            if matches!(o.domain(), "" | "ai.onnx") {
                *o = OperatorSetIdProto {
                    domain: o.domain.clone(),
                    version: Some(opset),
                };
            }
        }
        if opset >= INT4_OPSET {
            // IR version 10 goes with opset 21 (and knows int4).
            model.ir_version = Some(model.ir_version().max(10));
        }
        let graph = model
            .graph
            .as_mut()
            .ok_or_else(|| err("graph: the model has none".into()))?;
        let mut external = ExternalData::new(dir, shown);
        for t in &mut graph.initializer {
            inline(t, &mut external).map_err(|e| err(format!("initializer {:?}: {e}", t.name())))?;
        }

        let mut names: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().cloned().chain(std::iter::once(n.name().to_string())))
            .chain(graph.initializer.iter().map(|t| t.name().to_string()))
            .chain(graph.input.iter().map(|i| i.name().to_string()))
            .collect();
        let mut fresh = |base: String| -> String {
            let mut name = base.clone();
            let mut k = 1;
            while names.contains(&name) {
                k += 1;
                name = format!("{base}_{k}");
            }
            names.insert(name.clone());
            name
        };
        // Graph node names: the file's, or `{op}_{index}` (as the reader names them).
        let node_names: Vec<String> = graph
            .node
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if n.name().is_empty() {
                    format!("{}_{i}", n.op_type())
                } else {
                    n.name().to_string()
                }
            })
            .collect();
        let mut before: Vec<Vec<NodeProto>> = vec![Vec::new(); graph.node.len()];
        let mut after: Vec<Vec<NodeProto>> = vec![Vec::new(); graph.node.len()];
        let mut summary = QdqSummary {
            opset,
            source_opset,
            int4,
            layer_weight_bytes: 0,
            scale_bytes: 0,
            file_bytes: 0,
        };
        let mut replaced: Vec<String> = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            let spec = layers.iter().find(|l| l.layer == index);
            let params = layer.params as u64;
            let Some(spec) = spec.filter(|s| s.weight.is_some() || s.input.is_some()) else {
                summary.layer_weight_bytes += 4 * params;
                continue;
            };
            let node = &self.nodes[layer.node];
            let at = node_names
                .iter()
                .position(|n| *n == node.name)
                .filter(|&i| graph.node[i].op_type() == node.op_type)
                .ok_or_else(|| err(format!("node {:?}: not found in the file", node.name)))?;
            let w_name = self.values[layer.weight].name.clone();
            let x_name = self.values[node.inputs[0]].name.clone();
            let proto = &graph.node[at];
            if proto.input.get(1) != Some(&w_name) || proto.input.first() != Some(&x_name) {
                return Err(err(format!(
                    "node {:?}: its inputs are not the layer's ({x_name:?}, {w_name:?})",
                    node.name
                )));
            }
            let scope = &layer.name;
            let mut new_inputs = proto.input.clone();
            match &spec.weight {
                None => summary.layer_weight_bytes += 4 * params,
                Some(w) => {
                    if w.codes.len() != layer.params {
                        return Err(Error::other(format!(
                            "layer {scope}: {} codes for a weight of {} elements",
                            w.codes.len(),
                            layer.params
                        )));
                    }
                    let shape: Vec<i64> = self.values[layer.weight].shape.iter().map(|&d| d as i64).collect();
                    let packed = int4 && w.bits <= 4;
                    let dtype = if packed {
                        tensor_proto::DataType::Int4
                    } else {
                        tensor_proto::DataType::Int8
                    };
                    let per_channel = w.scales.len() > 1;
                    let scale_dims = if per_channel {
                        vec![w.scales.len() as i64]
                    } else {
                        vec![]
                    };
                    let q = fresh(format!("{w_name}_quantized"));
                    let s = fresh(format!("{w_name}_scale"));
                    let z = fresh(format!("{w_name}_zero_point"));
                    let d = fresh(format!("{w_name}_dequantized"));
                    let code_bytes = if packed {
                        pack_int4(&w.codes)
                    } else {
                        to_bytes(&w.codes)
                    };
                    let zeros = if packed {
                        pack_int4(&vec![0; w.scales.len()])
                    } else {
                        vec![0; w.scales.len()]
                    };
                    summary.layer_weight_bytes += code_bytes.len() as u64;
                    summary.scale_bytes += (4 * w.scales.len() + zeros.len()) as u64;
                    graph.initializer.push(raw_tensor(&q, dtype, shape, code_bytes));
                    graph.initializer.push(f32_tensor(&s, scale_dims.clone(), &w.scales));
                    graph.initializer.push(raw_tensor(&z, dtype, scale_dims, zeros));
                    let mut dq = node_proto(
                        &format!("{scope}/weight/DequantizeLinear"),
                        "DequantizeLinear",
                        [&q, &s, &z],
                        &d,
                    );
                    if per_channel {
                        dq.attribute.push(int_attr("axis", layer.channel_dim as i64));
                    }
                    before[at].push(dq);
                    new_inputs[1] = d;
                    replaced.push(w_name.clone());
                }
            }
            if let Some(a) = &spec.input {
                let levels = (1u32 << a.bits) - 1;
                let (scale, zp) = if a.scale == 0.0 {
                    (1.0, 0)
                } else {
                    (a.scale, a.zero_point)
                };
                let s = fresh(format!("{scope}.input_scale"));
                let z = fresh(format!("{scope}.input_zero_point"));
                graph.initializer.push(f32_tensor(&s, vec![], &[scale]));
                graph
                    .initializer
                    .push(raw_tensor(&z, tensor_proto::DataType::Uint8, vec![], vec![zp]));
                let q = fresh(format!("{scope}.input_quantized"));
                let d = fresh(format!("{scope}.input_dequantized"));
                before[at].push(node_proto(
                    &format!("{scope}/input/QuantizeLinear"),
                    "QuantizeLinear",
                    [&x_name, &s, &z],
                    &q,
                ));
                before[at].push(node_proto(
                    &format!("{scope}/input/DequantizeLinear"),
                    "DequantizeLinear",
                    [&q, &s, &z],
                    &d,
                ));
                let mut d = d;
                if a.bits < 8 || a.scale == 0.0 {
                    // (code − zp)·s is monotone in the code, and the bounds are the same products:
                    // clipping the dequantized value is clipping the code to 0..=n.
                    let (lo, hi) = if a.scale == 0.0 {
                        (0.0, 0.0)
                    } else {
                        ((0.0 - zp as f32) * scale, (levels as f32 - zp as f32) * scale)
                    };
                    let lo_n = fresh(format!("{scope}.input_clip_min"));
                    let hi_n = fresh(format!("{scope}.input_clip_max"));
                    graph.initializer.push(f32_tensor(&lo_n, vec![], &[lo]));
                    graph.initializer.push(f32_tensor(&hi_n, vec![], &[hi]));
                    let clipped = fresh(format!("{scope}.input_clipped"));
                    before[at].push(node_proto(
                        &format!("{scope}/input/Clip"),
                        "Clip",
                        [&d, &lo_n, &hi_n],
                        &clipped,
                    ));
                    d = clipped;
                }
                new_inputs[0] = d;
            }
            // The bias as a separate Add after the layer, so that it stays float:
            // onnxruntime's WeightBiasQuantization rounds the bias of a Conv/Gemm with
            // dequantized inputs to int32 codes of scale s_x·s_w (measured on the ResNet-18
            // fixture under a w2a8 layer: logits off by 7 % of the largest).
            if let Some(b_name) = new_inputs.get(2).filter(|b| !b.is_empty()).cloned() {
                let bias = node
                    .inputs
                    .get(2)
                    .and_then(|&id| self.values[id].constant.as_deref())
                    .and_then(|t| t.as_f32())
                    .ok_or_else(|| err(format!("node {:?}: its bias is not a float constant", node.name)))?;
                let proto = &graph.node[at];
                let beta = match proto.attribute.iter().find(|a| a.name() == "beta") {
                    Some(a) if proto.op_type() == "Gemm" => a.f(),
                    _ => 1.0,
                };
                let values: Vec<f32> = bias.iter().map(|&v| if beta == 1.0 { v } else { beta * v }).collect();
                let dims: Vec<i64> = match layer.kind {
                    // [C] against NCHW: broadcast over the spatial dimensions.
                    super::LayerKind::Conv => vec![values.len() as i64, 1, 1],
                    _ => self.values[node.inputs[2]].shape.iter().map(|&d| d as i64).collect(),
                };
                let shaped = fresh(format!("{b_name}_float"));
                graph.initializer.push(f32_tensor(&shaped, dims, &values));
                let out = graph.node[at].output[0].clone();
                let raw = fresh(format!("{out}_without_bias"));
                graph.node[at].output[0] = raw.clone();
                after[at].push(node_proto(&format!("{scope}/bias/Add"), "Add", [&raw, &shaped], &out));
                new_inputs.truncate(2);
                replaced.push(b_name);
            }
            graph.node[at].input = new_inputs;
        }
        // The new nodes right before (and the bias right after) the layer, so the order stays
        // topological.
        let old = std::mem::take(&mut graph.node);
        for ((node, pre), post) in old.into_iter().zip(before).zip(after) {
            graph.node.extend(pre);
            graph.node.push(node);
            graph.node.extend(post);
        }
        // Float weights and biases nothing reads any more.
        let read: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(|s| s.as_str()))
            .chain(graph.output.iter().map(|o| o.name()))
            .collect();
        let unused: HashSet<String> = replaced.into_iter().filter(|w| !read.contains(w.as_str())).collect();
        graph.initializer.retain(|t| !unused.contains(t.name()));
        graph.input.retain(|i| !unused.contains(i.name()));

        model
            .metadata_props
            .retain(|p| !metadata.iter().any(|(k, _)| k == p.key()));
        model
            .metadata_props
            .extend(metadata.iter().map(|(k, v)| StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            }));
        let encoded = model.encode_to_vec();
        if encoded.len() > MAX_PROTO_BYTES {
            return Err(Error::other(format!(
                "{output}: the quantized model would be {} bytes, over protobuf's 2 GiB limit of one file",
                encoded.len()
            )));
        }
        summary.file_bytes = encoded.len() as u64;
        crate::io::write_bytes(output, &encoded)?;
        Ok(summary)
    }
}

/// Bytes per element of the types an initializer may have (None: not a fixed-width type).
fn element_bytes(dtype: i32) -> Option<usize> {
    use tensor_proto::DataType as DT;
    Some(match DT::try_from(dtype).ok()? {
        DT::Uint8 | DT::Int8 | DT::Bool => 1,
        DT::Float8e4m3fn | DT::Float8e4m3fnuz | DT::Float8e5m2 | DT::Float8e5m2fnuz | DT::Float8e8m0 => 1,
        DT::Uint16 | DT::Int16 | DT::Float16 | DT::Bfloat16 => 2,
        DT::Float | DT::Int32 | DT::Uint32 => 4,
        DT::Double | DT::Int64 | DT::Uint64 | DT::Complex64 => 8,
        DT::Complex128 => 16,
        _ => return None,
    })
}

/// Moves an initializer's external data into `raw_data`.
fn inline(t: &mut TensorProto, external: &mut ExternalData) -> std::result::Result<(), String> {
    if t.data_location() != tensor_proto::DataLocation::External {
        return Ok(());
    }
    let width = element_bytes(t.data_type())
        .ok_or_else(|| format!("external data of type {} is not supported", type_name(t.data_type())))?;
    let mut n: usize = 1;
    for &d in &t.dims {
        n = usize::try_from(d)
            .ok()
            .and_then(|d| n.checked_mul(d))
            .ok_or_else(|| format!("dimensions {:?} are not valid", t.dims))?;
    }
    let len = n.checked_mul(width).ok_or("too large")?;
    let (mut location, mut offset, mut length) = (None, 0u64, None);
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
            _ => {}
        }
    }
    let location = location.ok_or("external data without a location")?;
    t.raw_data = Some(external.read(&location, offset, length, len)?);
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

fn to_bytes(codes: &[i8]) -> Vec<u8> {
    codes.iter().map(|&c| c as u8).collect()
}

/// Two 4-bit two's-complement codes per byte, the first in the low nibble (ONNX's int4 layout).
fn pack_int4(codes: &[i8]) -> Vec<u8> {
    codes
        .chunks(2)
        .map(|p| (p[0] as u8 & 0x0f) | (p.get(1).map_or(0, |&c| c as u8 & 0x0f) << 4))
        .collect()
}

fn raw_tensor(name: &str, dtype: tensor_proto::DataType, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        data_type: Some(dtype as i32),
        dims,
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, tensor_proto::DataType::Float, dims, raw)
}

fn node_proto<const N: usize>(name: &str, op: &str, inputs: [&String; N], output: &str) -> NodeProto {
    NodeProto {
        name: Some(name.to_string()),
        op_type: Some(op.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}

pub(super) fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::pack_int4;

    #[test]
    fn int4_codes_pack_low_nibble_first() {
        assert_eq!(pack_int4(&[1, -1, 7]), vec![0xf1, 0x07]);
        assert_eq!(pack_int4(&[-8, 0]), vec![0x08]);
    }
}
