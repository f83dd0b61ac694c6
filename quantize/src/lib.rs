//! `quantize`: calibrate quantizer parameters (`calib.json`), and apply an allocation to a
//! checkpoint (fake-quantized `.safetensors`, optionally the integer codes).

use clado::calib::{self, CalibSettings};
use clado::checkpoint::{self, StateDict};
use clado::data::Split;
use clado::format::{ActRange, Alloc, Calib, ModelId};
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
            "{}: quantize apply writes checkpoints of the built-in ResNets; it cannot write ONNX \
             models yet (evaluate --model {} --alloc FILE measures the allocation)",
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
