//! `evaluate`: top-1, top-5, mean loss, KL to the FP model, size and BOPs of a model at FP, at a
//! uniform option, or at the allocations of `allocate` — one JSON line each, sharing one FP pass.
//!
//! An allocation file may hold several allocations (JSON lines, as `allocate --sweep` writes):
//! each is evaluated in order. Stdin is read to its end before any other file. Loss and KL are
//! summed per sample in sample order, so the output does not depend on the batch size or the
//! thread count.

use clado::calib::{self, CalibSettings, PrecisionTable};
use clado::data::{Dataset, Split};
use clado::engine::{Images, Logits, Network, Parallelism, Plan};
use clado::format::{Alloc, Calib, Metrics, FORMAT_VERSION};
use clado::io::Input;
use clado::options::QuantOption;
use clado::setup::{self, DataArgs, ModelArgs};
use clado::{budget, Error, Result};
use std::io::Write;

/// One configuration to evaluate.
#[derive(Clone, Debug)]
pub enum Config {
    Fp,
    Uniform(QuantOption),
    /// An allocation (its label in the metrics: the file's path, `PATH#N` for the N-th of
    /// several in one file) and its choice per layer (in the model's layer order).
    Alloc {
        label: String,
        choice: Vec<QuantOption>,
    },
}

impl Config {
    pub fn label(&self) -> String {
        match self {
            Config::Fp => "fp".into(),
            Config::Uniform(o) => format!("uniform:{o}"),
            Config::Alloc { label, .. } => label.clone(),
        }
    }

    /// The option of every layer of `net`.
    pub fn choice(&self, net: &Network) -> Vec<QuantOption> {
        match self {
            Config::Fp => vec![QuantOption::FP; net.layers().len()],
            Config::Uniform(o) => vec![*o; net.layers().len()],
            Config::Alloc { choice, .. } => choice.clone(),
        }
    }
}

/// Where the quantizer parameters come from.
pub enum QuantSource {
    File(String),
    Calibrate { settings: CalibSettings, data: DataArgs },
}

/// Evaluate `configs`, then every allocation in the files `allocs` (`-` for stdin), on the
/// samples of `data_args` and write one JSON line per configuration.
pub fn run(
    model: &ModelArgs,
    data_args: &DataArgs,
    configs: &[Config],
    allocs: &[String],
    quant: &QuantSource,
    logits_path: Option<&str>,
    load_chunk: u64,
    out: &mut dyn Write,
    quiet: bool,
) -> Result<()> {
    setup::check_data_args(data_args)?;
    if logits_path.is_some_and(|p| p == "-") {
        return Err(Error::usage(
            "--logits -: the metrics go to stdout; give the logits a file",
        ));
    }
    // Stdin first, then the side files (clado::io, Pipelines).
    let alloc_kind = clado::io::document_kind::<Alloc>();
    let calib_kind = clado::io::document_kind::<Calib>();
    let mut inputs: Vec<Input<'_>> = allocs
        .iter()
        .map(|p| Input::new(p, &alloc_kind, "alloc.json"))
        .collect();
    if let QuantSource::File(path) = quant {
        inputs.push(Input::new(path, &calib_kind, "calib.json"));
    }
    let mut bytes = clado::io::read_inputs(&inputs)?;
    let calib_bytes = match quant {
        QuantSource::File(_) => bytes.pop(),
        QuantSource::Calibrate { .. } => None,
    };
    let mut documents: Vec<(String, String, Alloc)> = Vec::new();
    for (path, bytes) in allocs.iter().zip(&bytes) {
        let name = clado::io::display_name(path, false);
        let docs: Vec<Alloc> = clado::io::json_documents_from_bytes(&name, bytes)?;
        let several = docs.len() > 1;
        for (i, alloc) in docs.into_iter().enumerate() {
            let (label, source) = match several {
                true => (format!("{path}#{}", i + 1), format!("{name}: document {}", i + 1)),
                false => (path.clone(), name.clone()),
            };
            documents.push((label, source, alloc));
        }
    }
    let loaded = setup::load_model(model)?;
    let net = &loaded.net;
    // Resolve the allocations against the model before any forward pass.
    let mut configs = configs.to_vec();
    for (label, source, alloc) in &documents {
        configs.push(Config::Alloc {
            label: label.clone(),
            choice: setup::alloc_choice(alloc, source, &loaded)?,
        });
    }
    let choices: Vec<Vec<QuantOption>> = configs.iter().map(|c| c.choice(net)).collect();
    let mut options: Vec<QuantOption> = choices.concat();
    options.sort();
    options.dedup();
    let quantized: Vec<QuantOption> = options.iter().copied().filter(|o| *o != QuantOption::FP).collect();

    let calib: Calib = match (quant, &calib_bytes) {
        (QuantSource::File(path), Some(bytes)) => {
            let name = clado::io::display_name(path, false);
            let c: Calib = clado::io::json_from_bytes(&name, bytes)?;
            calib::check_calib(&c, &name, &loaded, &quantized)?;
            c
        }
        (QuantSource::Calibrate { settings, data }, _) if quantized.is_empty() => {
            // Nothing to quantize: no calibration samples to load.
            let none = Dataset::new(Vec::new(), Vec::new(), [net.in_channels(), 1, 1], net.classes(), "none")?;
            let empty = Default::default();
            calib::calibrate(&loaded, &none, "none", data.seed, &empty, &empty, *settings, 1)?
        }
        (QuantSource::Calibrate { settings, data }, _) => {
            let cal = setup::load_data(data, Split::Train, net)?;
            let (w, a) = calib::bits_needed(&quantized);
            calib::calibrate(
                &loaded,
                &cal.data,
                &cal.description,
                data.seed,
                &w,
                &a,
                *settings,
                data.batch_size,
            )?
        }
        (QuantSource::File(_), None) => unreachable!("the calib file was read with the allocations"),
    };
    // The test samples are checked here and loaded chunk by chunk below: a whole ImageNet
    // validation set need not fit in memory.
    let eval = setup::select_data(data_args, Split::Test, net, true)?;
    let samples = eval.selection.len();
    let chunk = chunk_samples(eval.selection.image_shape(), data_args.batch_size, load_chunk);
    let chunks = samples.div_ceil(chunk);
    let table = PrecisionTable::new(net, &calib, &quantized)?;

    let layers: Vec<_> = net.layers().iter().map(|l| l.info()).collect();
    let indices: Vec<Vec<Option<usize>>> = choices
        .iter()
        .map(|choice| {
            choice
                .iter()
                .map(|o| match *o == QuantOption::FP {
                    true => None,
                    false => table.option_index(*o),
                })
                .collect()
        })
        .collect();
    let mut sums: Vec<Sums> = configs.iter().map(|_| Sums::default()).collect();
    let mut all_logits: Vec<Vec<f32>> = vec![Vec::new(); configs.len()];
    let mut lines = String::new();
    // Chunk by chunk, every configuration on the chunk (one FP pass each); the metrics of a
    // configuration are written once its last chunk is done, so with one chunk (data that fits
    // one load) each line comes out as soon as its configuration has run.
    for (k, data) in eval.selection.load_in_chunks(chunk).enumerate() {
        let data = data?;
        // The note once the first chunk has loaded: a data set that fits one chunk is wholly
        // decoded (every image checked) before anything else is said.
        if k == 0 && !quiet {
            let loads = match chunks {
                1 => String::new(),
                n => format!(", loaded in {n} chunks of up to {chunk}"),
            };
            eprintln!(
                "evaluate: {} configuration(s) on {samples} samples of {}{loads}",
                configs.len(),
                eval.description
            );
        }
        let last = k + 1 == chunks;
        let fp_logits = forward_all(net, &data, &Plan::fp(net), data_args.batch_size)?;
        for (i, config) in configs.iter().enumerate() {
            let logits = match config {
                Config::Fp => None,
                _ => {
                    let plan = table.plan(net, &indices[i])?;
                    Some(forward_all(net, &data, &plan, data_args.batch_size)?)
                }
            };
            sums[i].add(net, &data, data_args.batch_size, &fp_logits, logits.as_deref())?;
            if logits_path.is_some() {
                for l in logits.as_deref().unwrap_or(&fp_logits) {
                    all_logits[i].extend_from_slice(l.data());
                }
            }
            if last {
                let cost = budget::cost(&layers, &choices[i]);
                let m = sums[i].metrics(config, net, &eval.description, cost);
                let line = clado::io::json_line(&m)?;
                if logits_path.is_some() {
                    lines.push_str(&line);
                } else {
                    out.write_all(line.as_bytes()).map_err(|e| Error::io("<stdout>", e))?;
                }
            }
        }
    }
    if let Some(path) = logits_path {
        let shape = (configs.len(), samples, net.classes());
        let array = ndarray::Array3::from_shape_vec(shape, all_logits.concat())
            .expect("one row of K per sample and configuration");
        let mut npy = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(&array, &mut npy)
            .map_err(|e| Error::other(format!("encoding .npy: {e}")))?;
        clado::io::write_bytes(path, &npy)?;
        out.write_all(lines.as_bytes()).map_err(|e| Error::io("<stdout>", e))?;
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(())
}

/// Logits of every sample, batch by batch.
fn forward_all(net: &Network, data: &Dataset, plan: &Plan, batch_size: usize) -> Result<Vec<Logits>> {
    data.batches(batch_size)
        .map(|(images, _)| {
            let n = images.len() / data.image_len();
            net.forward(
                Images::new(images, [n, data.channels, data.height, data.width])?,
                plan,
                Parallelism::Rayon,
            )
        })
        .collect()
}

/// Samples per chunk: as many whole batches of `[C, H, W]` float32 images as fit in
/// `chunk_bytes` (`--load-chunk`), at least one batch.
fn chunk_samples(image_shape: [usize; 3], batch_size: usize, chunk_bytes: u64) -> usize {
    let image_bytes = 4 * image_shape.iter().product::<usize>().max(1) as u64;
    let batches = (chunk_bytes / image_bytes / batch_size as u64).max(1);
    usize::try_from(batches).unwrap_or(usize::MAX).saturating_mul(batch_size)
}

/// One configuration's running counts over the chunks: top-k counts, and loss and KL per
/// sample in sample order (summed in that order at the end, whatever the batches and chunks).
#[derive(Default)]
struct Sums {
    samples: usize,
    top1: usize,
    top5: usize,
    loss_each: Vec<f64>,
    kl_each: Vec<f64>,
}

impl Sums {
    /// Add the samples of `data` (`quantized`: the configuration's logits; `None` for FP).
    fn add(
        &mut self,
        net: &Network,
        data: &Dataset,
        batch_size: usize,
        fp: &[Logits],
        quantized: Option<&[Logits]>,
    ) -> Result<()> {
        let logits = quantized.unwrap_or(fp);
        for (((_, labels), l), f) in data.batches(batch_size).zip(logits).zip(fp) {
            let labels: Vec<usize> = labels.iter().map(|&x| x as usize).collect();
            self.top1 += l.correct_top_k(&labels, 1)?;
            self.top5 += l.correct_top_k(&labels, 5.min(net.classes()))?;
            self.loss_each.extend(l.cross_entropy_each(&labels)?);
            if quantized.is_some() {
                self.kl_each.extend(l.kl_each_from(f)?);
            }
        }
        self.samples += data.len();
        Ok(())
    }

    /// The metrics line of `config` over every sample added.
    fn metrics(&self, config: &Config, net: &Network, description: &str, cost: budget::Cost) -> Metrics {
        let n = self.samples as f64;
        let sum_in_order = |values: &[f64]| values.iter().fold(0.0f64, |sum, v| sum + v);
        Metrics {
            version: FORMAT_VERSION,
            config: config.label(),
            arch: net.arch().to_string(),
            data: description.to_string(),
            samples: self.samples,
            top1: 100.0 * self.top1 as f64 / n,
            top5: 100.0 * self.top5 as f64 / n,
            loss: sum_in_order(&self.loss_each) / n,
            kl: sum_in_order(&self.kl_each) / n,
            size_bits: cost.size_bits,
            size_mb: cost.size_mb(),
            avg_w_bits: cost.avg_w_bits,
            bops: cost.bops,
        }
    }
}
