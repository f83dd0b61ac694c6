//! `quantize`: calibrate quantizer parameters (`calib.json`), and apply an allocation to a
//! checkpoint (fake-quantized `.safetensors`, optionally the integer codes).

use clado::calib::{self, CalibSettings};
use clado::checkpoint::{self, StateDict};
use clado::data::Split;
use clado::format::{ActRange, Alloc, Calib, ModelId};
use clado::graph::{Graph, QdqInput, QdqLayer, QdqSummary, QdqWeight, INT4_OPSET};
use clado::io::Input;
use clado::options::QuantOption;
use clado::quant::{self, ActQuantizer};
use clado::setup::{self, DataArgs, ModelArgs};
use clado::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// `quantize calibrate`: quantizer parameters for the given bit widths on the given samples.
pub fn calibrate(
    model: &ModelArgs,
    data: &DataArgs,
    w_bits: &BTreeSet<u8>,
    a_bits: &BTreeSet<u8>,
    settings: CalibSettings,
    output: &str,
    quiet: bool,
) -> Result<()> {
    setup::check_data_args(data)?;
    let loaded = setup::load_model(model)?;
    let samples = setup::load_data(data, Split::Train, &loaded.net)?;
    if !quiet {
        eprintln!(
            "quantize: calibrating {} layers on {} samples (weights {}, activations {})",
            loaded.net.layers().len(),
            samples.data.len(),
            settings.w_calib,
            settings.a_calib
        );
    }
    let c = calib::calibrate(
        &loaded,
        &samples.data,
        &samples.description,
        data.seed,
        w_bits,
        a_bits,
        settings,
        data.batch_size,
    )?;
    clado::io::write_json(output, &c)
}

/// Where `apply` takes the quantizer parameters from.
pub enum Params {
    /// A calib.json.
    File(String),
    /// Calibrate on these samples.
    Calibrate { data: DataArgs, settings: CalibSettings },
}

/// Activation quantizer of one layer as exported (`xq = (clamp(round(x/scale)+zp, 0, 2^bits−1) − zp)·scale`).
#[derive(Serialize)]
pub struct ExportedActivation {
    pub bits: u8,
    pub lo: f32,
    pub hi: f32,
    pub scale: f32,
    pub zero_point: f32,
}

/// `quantize apply`: write `output` (.safetensors) with every layer's weights fake-quantized as
/// the allocation says; its metadata records the model, the allocation and the input
/// quantizers. With `export_int`, also write the integer weight codes (int8) and their scales.
/// The allocation file must hold exactly one allocation; stdin is read before any other file.
pub fn apply(
    model: &ModelArgs,
    alloc_path: &str,
    params: &Params,
    output: &str,
    export_int: Option<&str>,
    quiet: bool,
) -> Result<()> {
    let alloc_kind = clado::io::document_kind::<Alloc>();
    let calib_kind = clado::io::document_kind::<Calib>();
    let mut inputs = vec![Input::new(alloc_path, &alloc_kind, "alloc.json")];
    if let Params::File(path) = params {
        inputs.push(Input::new(path, &calib_kind, "calib.json"));
    }
    let bytes = clado::io::read_inputs(&inputs)?;
    let alloc_name = clado::io::display_name(alloc_path, false);
    let mut allocs: Vec<Alloc> = clado::io::json_documents_from_bytes(&alloc_name, &bytes[0])?;
    if allocs.len() > 1 {
        return Err(Error::input(
            &alloc_name,
            format!(
                "holds {} allocations, but quantize apply writes one checkpoint: pick one, e.g. the \
                 third line with `sed -n 3p FILE | quantize apply --alloc - ...`",
                allocs.len()
            ),
        ));
    }
    let alloc = allocs.remove(0);
    let loaded = setup::load_model(model)?;
    if loaded.net.is_graph() {
        return Err(Error::usage(format!(
            "{}: quantize apply writes checkpoints of the built-in ResNets; an ONNX model is \
             written quantized by `quantize export --model {} --alloc FILE --calib FILE -o FILE.qdq.onnx`",
            loaded.describe(),
            loaded.weights
        )));
    }
    let net = &loaded.net;
    let choice = setup::alloc_choice(&alloc, &alloc_name, &loaded)?;
    let mut used: Vec<QuantOption> = choice.clone();
    used.sort();
    used.dedup();
    used.retain(|o| *o != QuantOption::FP);
    let owned;
    let calib: &Calib = match params {
        Params::File(path) => {
            let name = clado::io::display_name(path, false);
            owned = clado::io::json_from_bytes::<Calib>(&name, &bytes[1])?;
            calib::check_calib(&owned, &name, &loaded, &used)?;
            &owned
        }
        Params::Calibrate { data, settings } => {
            let samples = setup::load_data(data, Split::Train, net)?;
            if !quiet {
                eprintln!("quantize: calibrating on {} samples", samples.data.len());
            }
            let (w, a) = calib::bits_needed(&used);
            owned = calib::calibrate(
                &loaded,
                &samples.data,
                &samples.description,
                data.seed,
                &w,
                &a,
                *settings,
                data.batch_size,
            )?;
            &owned
        }
    };

    let mut state: StateDict = checkpoint::load(&loaded.weights)?;
    let mut activations: BTreeMap<String, ExportedActivation> = BTreeMap::new();
    let mut codes: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    for (i, (layer, o)) in net.layers().iter().zip(&choice).enumerate() {
        let lc = &calib.layers[i];
        let key = format!("{}.weight", layer.name);
        if let Some(b) = o.w_bits {
            let scales = &lc.weight_scales[&b.to_string()];
            let w = state
                .get_mut(&key)
                .ok_or_else(|| Error::input(&loaded.weights, format!("no tensor '{key}'")))?;
            if export_int.is_some() {
                let c = quant::weight_codes(&w.data, layer.out_channels(), b, scales);
                codes.push((
                    format!("{key}_int{b}"),
                    w.shape.clone(),
                    c.iter().map(|&v| v as u8).collect(),
                    safetensors::Dtype::I8,
                ));
                codes.push((
                    format!("{}.weight_scale", layer.name),
                    vec![scales.len()],
                    scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    safetensors::Dtype::F32,
                ));
            }
            w.data = quant::fake_quantize_weights(&w.data, layer.out_channels(), b, scales);
        }
        if let Some(b) = o.a_bits {
            let range: ActRange = lc.act_ranges[&b.to_string()];
            let q = ActQuantizer::from_range(b, range);
            activations.insert(
                layer.name.clone(),
                // `+ 0.0` turns a -0.0 (e.g. round(−0/s)) into 0.0, so equal runs print alike.
                ExportedActivation {
                    bits: b,
                    lo: range.lo + 0.0,
                    hi: range.hi + 0.0,
                    scale: q.scale + 0.0,
                    zero_point: q.zero_point + 0.0,
                },
            );
        }
    }
    let metadata = AppliedMetadata {
        model: &loaded.id,
        allocation: net
            .layers()
            .iter()
            .zip(&choice)
            .map(|(l, o)| (l.name.as_str(), o.to_string()))
            .collect(),
        input_quantizers: activations,
    };
    // One key, so the header's order cannot depend on a hash map's (safetensors takes one).
    let meta = HashMap::from([(METADATA_KEY.to_string(), json(&metadata)?)]);
    checkpoint::save_safetensors_with_metadata(output, &state, Some(meta.clone()))?;
    if let Some(path) = export_int {
        let views: Vec<(String, Bytes)> = codes
            .into_iter()
            .map(|(n, shape, bytes, dtype)| (n, Bytes { shape, bytes, dtype }))
            .collect();
        let encoded = safetensors::serialize(views, Some(meta)).map_err(|e| Error::other(format!("{path}: {e}")))?;
        clado::io::write_bytes(path, &encoded)?;
    }
    Ok(())
}

/// `quantize export`: write the model `model` (an ONNX file, or a checkpoint ResNet written as
/// ONNX by [`clado::graph::resnet_onnx`]) with the allocation applied as
/// QuantizeLinear/DequantizeLinear pairs (see [`clado::graph::Graph::write_qdq`]), with the
/// allocation, its budget fields and the model's identity in the metadata (key
/// [`METADATA_KEY`]). Reports sizes on stderr unless `quiet`. Nothing is written on error.
pub fn export(model: &ModelArgs, alloc_path: &str, calib_path: &str, output: &str, quiet: bool) -> Result<()> {
    if output == "-" {
        return Err(Error::usage(
            "-o -: quantize export writes a file, not stdout; name it, e.g. -o model.qdq.onnx",
        ));
    }
    let source = match &model.model {
        Some(path) => ("--model", path.clone()),
        None => (
            "--weights",
            model
                .weights
                .clone()
                .unwrap_or_else(|| setup::BUILTIN_WEIGHTS.to_string()),
        ),
    };
    for (flag, input) in [
        (source.0, source.1.as_str()),
        ("--alloc", alloc_path),
        ("--calib", calib_path),
    ] {
        if same_file(output, input) {
            return Err(Error::usage(format!(
                "-o {output} is the {flag} file: write the quantized model elsewhere"
            )));
        }
    }
    let alloc_kind = clado::io::document_kind::<Alloc>();
    let calib_kind = clado::io::document_kind::<Calib>();
    let bytes = clado::io::read_inputs(&[
        Input::new(alloc_path, &alloc_kind, "alloc.json"),
        Input::new(calib_path, &calib_kind, "calib.json"),
    ])?;
    let alloc_name = clado::io::display_name(alloc_path, false);
    let mut allocs: Vec<Alloc> = clado::io::json_documents_from_bytes(&alloc_name, &bytes[0])?;
    if allocs.len() > 1 {
        return Err(Error::input(
            &alloc_name,
            format!(
                "holds {} allocations, but quantize export writes one model: pick one, e.g. the \
                 third line with `sed -n 3p FILE | quantize export --alloc - ...`",
                allocs.len()
            ),
        ));
    }
    let alloc = allocs.remove(0);
    let calib_name = clado::io::display_name(calib_path, false);
    let calib = clado::io::json_from_bytes::<Calib>(&calib_name, &bytes[1])?;
    let loaded = setup::load_model(model)?;
    let choice = setup::alloc_choice(&alloc, &alloc_name, &loaded)?;
    let mut used: Vec<QuantOption> = choice.clone();
    used.sort();
    used.dedup();
    used.retain(|o| *o != QuantOption::FP);
    calib::check_calib(&calib, &calib_name, &loaded, &used)?;
    // The source as ONNX: the file, or the checkpoint ResNet written as a graph.
    let (graph, written) = match &model.model {
        Some(path) => (Graph::from_onnx(path)?, None),
        None => {
            let (spec, state) = clado::model::load_checked(&loaded.weights, &model.arch)?;
            let bytes = clado::graph::resnet_onnx(&spec, &state)?;
            (Graph::from_onnx_bytes(&bytes, &loaded.weights)?, Some(bytes))
        }
    };
    let names: Vec<&str> = graph.layers().iter().map(|l| l.name.as_str()).collect();
    let net_names: Vec<&str> = loaded.net.layers().iter().map(|l| l.name.as_str()).collect();
    if names != net_names {
        return Err(Error::other(format!(
            "{}: the graph's layers differ from the network's ({} against {})",
            loaded.weights,
            names.len(),
            net_names.len()
        )));
    }
    let mut layers = Vec::new();
    let mut activations: BTreeMap<String, ExportedActivation> = BTreeMap::new();
    for (i, (layer, o)) in graph.layers().iter().zip(&choice).enumerate() {
        let lc = &calib.layers[i];
        let weight = o.w_bits.map(|b| {
            let scales = lc.weight_scales[&b.to_string()].clone();
            let (w, shape) = graph.layer_weight_by_channel(i);
            let mut codes = quant::weight_codes(&w, layer.out_channels, b, &scales);
            if layer.channel_dim == 1 {
                // Back to the stored [in, out] layout.
                let (rows, cols) = (shape[0], shape[1]);
                codes = (0..cols * rows).map(|k| codes[(k % rows) * cols + k / rows]).collect();
            }
            QdqWeight { bits: b, codes, scales }
        });
        let input = o.a_bits.map(|b| {
            let range: ActRange = lc.act_ranges[&b.to_string()];
            let q = ActQuantizer::from_range(b, range);
            activations.insert(
                layer.name.clone(),
                ExportedActivation {
                    bits: b,
                    lo: range.lo + 0.0,
                    hi: range.hi + 0.0,
                    scale: q.scale + 0.0,
                    zero_point: q.zero_point + 0.0,
                },
            );
            QdqInput {
                bits: b,
                scale: q.scale,
                zero_point: q.zero_point as u8,
            }
        });
        layers.push(QdqLayer {
            layer: i,
            weight,
            input,
        });
    }
    let metadata = ExportMetadata {
        model: &loaded.id,
        allocation: graph
            .layers()
            .iter()
            .zip(&choice)
            .map(|(l, o)| (l.name.as_str(), o.to_string()))
            .collect(),
        budget: &alloc.budget,
        size_bits: alloc.size_bits,
        avg_w_bits: alloc.avg_w_bits,
        bops: alloc.bops,
        predicted_delta: alloc.predicted_delta,
        input_quantizers: activations,
    };
    let meta = vec![(METADATA_KEY.to_string(), json(&metadata)?)];
    let summary = match &written {
        None => graph.write_qdq(std::path::Path::new(&loaded.weights), &layers, &meta, output)?,
        Some(bytes) => graph.write_qdq_bytes(bytes, &loaded.weights, None, &layers, &meta, output)?,
    };
    if !quiet {
        eprintln!("{}", export_report(output, &summary, &choice, alloc.size_bits));
    }
    Ok(())
}

/// The export's report: the file, its opset, the layers' weight bytes against the budget's
/// prediction, and where 4-/2-bit codes are stored.
pub fn export_report(output: &str, s: &QdqSummary, choice: &[QuantOption], size_bits: u64) -> String {
    let quantized = choice
        .iter()
        .filter(|o| o.w_bits.is_some() || o.a_bits.is_some())
        .count();
    let small = choice.iter().any(|o| o.w_bits.is_some_and(|b| b < 8));
    let opset = if s.opset == s.source_opset {
        format!("opset {}", s.opset)
    } else {
        format!("opset {}, raised from {}", s.opset, s.source_opset)
    };
    let containers = match (small, s.int4) {
        (false, _) => String::new(),
        (true, true) => "; 4- and 2-bit weight codes packed two per byte (int4)".into(),
        (true, false) => format!(
            "; 4- and 2-bit weight codes sit in int8 containers (int4 needs opset {INT4_OPSET}; \
             opset {} is not raised)",
            s.source_opset
        ),
    };
    format!(
        "quantize: wrote {output} ({} bytes, {opset}): {quantized} of {} layers quantized; layer weights \
         {} bytes in the file (+ {} bytes of weight scales and zero points), the allocation's size_bits \
         predicts {} bytes{containers}",
        s.file_bytes,
        choice.len(),
        s.layer_weight_bytes,
        s.scale_bytes,
        size_bits.div_ceil(8)
    )
}

/// Whether `output` names the existing file `input` (after links); stdin is no file.
fn same_file(output: &str, input: &str) -> bool {
    if input == "-" {
        return false;
    }
    match (std::fs::canonicalize(output), std::fs::canonicalize(input)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// What an exported ONNX model records about how it was made (metadata key [`METADATA_KEY`]).
#[derive(Serialize)]
pub struct ExportMetadata<'a> {
    /// The model the allocation was made for (`arch` onnx and the digest of the source).
    pub model: &'a ModelId,
    /// Layer name → option, in name order.
    pub allocation: BTreeMap<&'a str, String>,
    /// alloc.json's budget fields.
    pub budget: &'a str,
    pub size_bits: u64,
    pub avg_w_bits: f64,
    pub bops: u64,
    pub predicted_delta: f64,
    /// Layer name → input quantizer, for layers with quantized activations.
    pub input_quantizers: BTreeMap<String, ExportedActivation>,
}

/// The `__metadata__` key of the checkpoints `apply` writes; its value is [`AppliedMetadata`] as
/// JSON.
pub const METADATA_KEY: &str = "clado";

/// What a quantized checkpoint records about how it was made.
#[derive(Serialize)]
pub struct AppliedMetadata<'a> {
    /// The model the allocation was applied to.
    pub model: &'a ModelId,
    /// Layer name → option, in name order.
    pub allocation: BTreeMap<&'a str, String>,
    /// Layer name → input quantizer, for layers with quantized activations.
    pub input_quantizers: BTreeMap<String, ExportedActivation>,
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::other(e.to_string()))
}

/// Raw little-endian tensor bytes for `safetensors::serialize`.
struct Bytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
    dtype: safetensors::Dtype,
}

impl safetensors::View for Bytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
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
