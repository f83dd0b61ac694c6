//! `evaluate`: top-1, top-5, mean loss, KL to the FP model, size and BOPs of a model at FP, at a
//! uniform option, or at the allocations of `allocate` — one JSON line each, sharing one FP pass.

use clado::calib::{self, CalibSettings, PrecisionTable};
use clado::data::{Dataset, Split};
use clado::engine::{Images, Logits, Network, Parallelism, Plan};
use clado::format::{Calib, Metrics, FORMAT_VERSION};
use clado::options::QuantOption;
use clado::setup::{self, DataArgs, ModelArgs};
use clado::{budget, Error, Result};
use std::io::Write;

/// One configuration to evaluate.
#[derive(Clone, Debug)]
pub enum Config {
    Fp,
    Uniform(QuantOption),
    /// An allocation file and its choice per layer (in the model's layer order).
    Alloc {
        path: String,
        choice: Vec<QuantOption>,
    },
}

impl Config {
    pub fn label(&self) -> String {
        match self {
            Config::Fp => "fp".into(),
            Config::Uniform(o) => format!("uniform:{o}"),
            Config::Alloc { path, .. } => path.clone(),
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

/// Evaluate `configs` on the samples of `data_args` and write one JSON line per config.
pub fn run(
    model: &ModelArgs,
    data_args: &DataArgs,
    configs: &[Config],
    quant: &QuantSource,
    out: &mut dyn Write,
    quiet: bool,
) -> Result<()> {
    setup::check_data_args(data_args)?;
    let loaded = setup::load_model(model)?;
    let net = &loaded.net;
    // Resolve allocation files against the model before any forward pass.
    let configs: Vec<Config> = configs
        .iter()
        .map(|c| match c {
            Config::Alloc { path, .. } => Ok(Config::Alloc {
                path: path.clone(),
                choice: setup::read_alloc(path, net)?,
            }),
            c => Ok(c.clone()),
        })
        .collect::<Result<_>>()?;
    let mut options: Vec<QuantOption> = configs.iter().flat_map(|c| c.choice(net)).collect();
    options.sort();
    options.dedup();
    let quantized: Vec<QuantOption> = options.iter().copied().filter(|o| *o != QuantOption::FP).collect();

    let calib: Calib = match quant {
        QuantSource::File(path) => {
            let c: Calib = clado::io::read_json(path)?;
            calib::check_calib(&c, &clado::io::display_name(path, false), net, &quantized)?;
            c
        }
        QuantSource::Calibrate { settings, data } => {
            let cal = setup::load_data(data, Split::Train, net)?;
            let (w, a) = calib::bits_needed(&quantized);
            calib::calibrate(
                net,
                &cal.data,
                &cal.description,
                data.seed,
                &w,
                &a,
                *settings,
                data.batch_size,
            )?
        }
    };
    let eval = setup::load_data(data_args, Split::Test, net)?;
    let table = PrecisionTable::new(net, &calib, &quantized)?;
    if !quiet {
        eprintln!(
            "evaluate: {} configuration(s) on {} samples of {}",
            configs.len(),
            eval.data.len(),
            eval.description
        );
    }

    let fp_logits = forward_all(net, &eval.data, &Plan::fp(net), data_args.batch_size)?;
    let layers: Vec<_> = net.layers().iter().map(|l| l.info()).collect();
    for config in &configs {
        let choice = config.choice(net);
        let indices: Vec<Option<usize>> = choice
            .iter()
            .map(|o| {
                if *o == QuantOption::FP {
                    None
                } else {
                    table.option_index(*o)
                }
            })
            .collect();
        let plan = table.plan(net, &indices)?;
        let logits = match config {
            Config::Fp => None,
            _ => Some(forward_all(net, &eval.data, &plan, data_args.batch_size)?),
        };
        let cost = budget::cost(&layers, &choice);
        let m = metrics(
            config,
            net,
            &eval.data,
            &eval.description,
            data_args.batch_size,
            &fp_logits,
            logits.as_deref(),
            cost,
        )?;
        out.write_all(clado::io::json_line(&m)?.as_bytes())
            .map_err(|e| Error::io("<stdout>", e))?;
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

fn metrics(
    config: &Config,
    net: &Network,
    data: &Dataset,
    description: &str,
    batch_size: usize,
    fp: &[Logits],
    quantized: Option<&[Logits]>,
    cost: budget::Cost,
) -> Result<Metrics> {
    let logits = quantized.unwrap_or(fp);
    let (mut top1, mut top5, mut loss, mut kl) = (0usize, 0usize, 0.0f64, 0.0f64);
    for (((_, labels), l), f) in data.batches(batch_size).zip(logits).zip(fp) {
        let labels: Vec<usize> = labels.iter().map(|&x| x as usize).collect();
        top1 += l.correct_top_k(&labels, 1)?;
        top5 += l.correct_top_k(&labels, 5.min(net.classes()))?;
        loss += l.mean_cross_entropy(&labels)? * labels.len() as f64;
        if quantized.is_some() {
            kl += l.mean_kl_from(f)? * labels.len() as f64;
        }
    }
    let n = data.len() as f64;
    Ok(Metrics {
        version: FORMAT_VERSION,
        config: config.label(),
        arch: net.arch().to_string(),
        data: description.to_string(),
        samples: data.len(),
        top1: 100.0 * top1 as f64 / n,
        top5: 100.0 * top5 as f64 / n,
        loss: loss / n,
        kl: kl / n,
        size_bits: cost.size_bits,
        size_mb: cost.size_mb(),
        avg_w_bits: cost.avg_w_bits,
        bops: cost.bops,
    })
}
