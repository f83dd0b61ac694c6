//! `quantize`: calibrate quantizer parameters (`calib.json`), and apply an allocation to a
//! checkpoint (fake-quantized `.safetensors`, optionally the integer codes).

use clado::calib::{self, CalibSettings};
use clado::checkpoint::{self, StateDict};
use clado::data::Split;
use clado::format::{ActRange, Calib};
use clado::options::QuantOption;
use clado::quant::{self, ActQuantizer};
use clado::setup::{self, DataArgs, ModelArgs};
use clado::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

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
        &loaded.net,
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
/// the allocation says; its metadata records the allocation and the input quantizers. With
/// `export_int`, also write the integer weight codes (int8) and their scales.
pub fn apply(
    model: &ModelArgs,
    alloc_path: &str,
    params: &Params,
    output: &str,
    export_int: Option<&str>,
    quiet: bool,
) -> Result<()> {
    let loaded = setup::load_model(model)?;
    let net = &loaded.net;
    let choice = setup::read_alloc(alloc_path, net)?;
    let mut used: Vec<QuantOption> = choice.clone();
    used.sort();
    used.dedup();
    used.retain(|o| *o != QuantOption::FP);
    let owned;
    let calib: &Calib = match params {
        Params::File(path) => {
            owned = clado::io::read_json::<Calib>(path)?;
            calib::check_calib(&owned, &clado::io::display_name(path, false), net, &used)?;
            &owned
        }
        Params::Calibrate { data, settings } => {
            let samples = setup::load_data(data, Split::Train, net)?;
            if !quiet {
                eprintln!("quantize: calibrating on {} samples", samples.data.len());
            }
            let (w, a) = calib::bits_needed(&used);
            owned = calib::calibrate(
                net,
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
    let mut activations: HashMap<String, ExportedActivation> = HashMap::new();
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
                ExportedActivation {
                    bits: b,
                    lo: range.lo,
                    hi: range.hi,
                    scale: q.scale,
                    zero_point: q.zero_point,
                },
            );
        }
    }
    let allocation: HashMap<&str, String> = net
        .layers()
        .iter()
        .zip(&choice)
        .map(|(l, o)| (l.name.as_str(), o.to_string()))
        .collect();
    let mut meta = HashMap::new();
    meta.insert("clado.allocation".to_string(), json(&allocation)?);
    meta.insert("clado.input_quantizers".to_string(), json(&activations)?);
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
