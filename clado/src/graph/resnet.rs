//! The checkpoint ResNets as ONNX: [`resnet_onnx`] writes a CIFAR ResNet (the layout of
//! [`crate::model`]) and its checkpoint as an ONNX model. It is how the engine builds these
//! networks (`engine::Network::from_state_dict` reads it back as a graph), and what `quantize
//! export` writes for the built-in models.
//!
//! The graph, in the engine's order: `conv1` (Conv, no bias) → `bn1` (BatchNormalization with
//! the checkpoint's running statistics, ε = [`crate::model::BN_EPS`]) → Relu; per BasicBlock
//! Conv → BN → Relu → Conv → BN, the shortcut (the block's input, or the 1×1 `downsample.0`
//! Conv → `downsample.1` BN, written after `conv2` so the layers come in the engine's order),
//! Add, Relu; GlobalAveragePool → Flatten → Gemm (`transB = 1`). BatchNorm stays a node of its
//! own, not folded into the convolution, as in the engine: a quantized layer's weights are
//! the convolution's, and BN's affine map follows in float. Every initializer keeps its
//! checkpoint name (`layer1.0.conv1.weight`), so the graph reader names the quantizable layers
//! exactly as the engine does. The input is `input` `[N, C, 32, 32]` (N symbolic), the output
//! `logits` `[N, K]`; opset [`RESNET_OPSET`].

use super::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::qdq::int_attr;
use crate::checkpoint::StateDict;
use crate::engine::INPUT_SIZE;
use crate::model::{ArchSpec, BN_EPS, KERNEL};
use crate::{Error, Result};
use prost::Message;

/// The opset written: 21 brings int4, so `quantize export` packs 4- and 2-bit codes without
/// raising it.
pub const RESNET_OPSET: i64 = super::qdq::INT4_OPSET;
/// The IR version that goes with opset 21.
const IR_VERSION: i64 = 10;

/// The ResNet `spec` with the weights of `state` (checked against `spec`, e.g. by
/// [`crate::model::load_checked`]) as an encoded ONNX `ModelProto` (see the module docs).
pub fn resnet_onnx(spec: &ArchSpec, state: &StateDict) -> Result<Vec<u8>> {
    resnet_onnx_at(spec, state, [INPUT_SIZE; 2])
}

/// As [`resnet_onnx`] for inputs of `[h, w]` pixels.
pub(crate) fn resnet_onnx_at(spec: &ArchSpec, state: &StateDict, [height, width]: [usize; 2]) -> Result<Vec<u8>> {
    let mut w = Writer {
        state,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let x = w.conv("conv1", "input", 1, KERNEL / 2)?;
    let x = w.batch_norm("bn1", &x)?;
    let mut x = w.node("relu", "Relu", &[&x], vec![]);
    for b in spec.blocks() {
        let name = &b.name;
        let out = w.conv(&format!("{name}.conv1"), &x, b.stride, KERNEL / 2)?;
        let out = w.batch_norm(&format!("{name}.bn1"), &out)?;
        let out = w.node(&format!("{name}.relu"), "Relu", &[&out], vec![]);
        let out = w.conv(&format!("{name}.conv2"), &out, 1, KERNEL / 2)?;
        let out = w.batch_norm(&format!("{name}.bn2"), &out)?;
        let shortcut = if b.downsample {
            let s = w.conv(&format!("{name}.downsample.0"), &x, b.stride, 0)?;
            w.batch_norm(&format!("{name}.downsample.1"), &s)?
        } else {
            x.clone()
        };
        let sum = w.node(&format!("{name}.add"), "Add", &[&out, &shortcut], vec![]);
        x = w.node(&format!("{name}.relu_out"), "Relu", &[&sum], vec![]);
    }
    let pooled = w.node("avgpool", "GlobalAveragePool", &[&x], vec![]);
    let flat = w.node("flatten", "Flatten", &[&pooled], vec![int_attr("axis", 1)]);
    let fc_weight = w.initializer("fc.weight")?;
    let fc_bias = w.initializer("fc.bias")?;
    let logits = w.node_to(
        "fc",
        "Gemm",
        &[&flat, &fc_weight, &fc_bias],
        vec![int_attr("transB", 1)],
        "logits",
    );

    let graph = GraphProto {
        name: Some(spec.name()),
        node: w.nodes,
        initializer: w.initializers,
        input: vec![value_info(
            "input",
            &[
                None,
                Some(spec.in_channels as i64),
                Some(height as i64),
                Some(width as i64),
            ],
        )],
        output: vec![value_info(&logits, &[None, Some(spec.num_classes as i64)])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(RESNET_OPSET),
        }],
        producer_name: Some("clado".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

struct Writer<'a> {
    state: &'a StateDict,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Writer<'_> {
    /// Adds the checkpoint tensor `name` as an initializer of the same name; returns the name.
    fn initializer(&mut self, name: &str) -> Result<String> {
        let t = self
            .state
            .get(name)
            .ok_or_else(|| Error::other(format!("the checkpoint has no tensor '{name}'")))?;
        self.initializers.push(TensorProto {
            name: Some(name.to_string()),
            data_type: Some(tensor_proto::DataType::Float as i32),
            dims: t.shape.iter().map(|&d| d as i64).collect(),
            raw_data: Some(t.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        Ok(name.to_string())
    }

    /// Adds a node named `name` with one output of the same name; returns the output.
    fn node(&mut self, name: &str, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.node_to(name, op, inputs, attribute, name)
    }

    /// Adds a node named `name` with the one output `output`; returns it.
    fn node_to(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output: &str,
    ) -> String {
        self.nodes.push(NodeProto {
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        });
        output.to_string()
    }

    /// The convolution `module` (weight `{module}.weight`, no bias) of `input`.
    fn conv(&mut self, module: &str, input: &str, stride: usize, padding: usize) -> Result<String> {
        let weight = self.initializer(&format!("{module}.weight"))?;
        let k = self.state[&weight].shape[2] as i64;
        let (s, p) = (stride as i64, padding as i64);
        let attrs = vec![
            ints_attr("kernel_shape", &[k, k]),
            ints_attr("strides", &[s, s]),
            ints_attr("pads", &[p, p, p, p]),
        ];
        Ok(self.node(module, "Conv", &[input, &weight], attrs))
    }

    /// The BatchNorm `module` in eval mode (its running statistics) of `input`.
    fn batch_norm(&mut self, module: &str, input: &str) -> Result<String> {
        let mut inputs = vec![input.to_string()];
        for field in ["weight", "bias", "running_mean", "running_var"] {
            inputs.push(self.initializer(&format!("{module}.{field}"))?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let epsilon = AttributeProto {
            name: Some("epsilon".into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(BN_EPS as f32),
            ..Default::default()
        };
        Ok(self.node(module, "BatchNormalization", &refs, vec![epsilon]))
    }
}

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A float tensor's name and shape; `None` is the symbolic batch dimension `N`.
fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(tensor_proto::DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
