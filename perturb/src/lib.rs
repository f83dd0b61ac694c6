//! `perturb`: measure how the metric changes when one layer, or two layers together, are
//! quantized, and write the matrix G of docs/definitions.md (`G.npy`) with its `index.json`.
//!
//! The work is split into *units*: (calibration batch, variable layer l, option o). A unit
//! measures every pair (l, o) × (m, o') with m after l. Units are independent, so they
//! - run in parallel (rayon),
//! - are saved one by one in a `--resume` directory, so a killed run continues where it was,
//! - are dealt to shards by `--shard K/N` (unit number mod N) and combined by `perturb merge`.
//!
//! G does not depend on the batch size, threads, shards or restarts: the forward engine gives
//! every sample the same bits in any batch, units keep exact sums of the per-sample values
//! ([`units::ExactSum`]), and G is rounded once from their exact total.
//!
//! Without the default feature `measure` the crate holds only the file formats and their
//! checks ([`units`], [`store`]), with no forward engine (the fuzz targets build it so).

#[cfg(feature = "measure")]
pub mod measure;
#[cfg(feature = "measure")]
pub mod memory;
pub mod store;
pub mod units;

#[cfg(feature = "measure")]
use clado::calib::{self, CalibSettings, PrecisionTable};
#[cfg(feature = "measure")]
use clado::data::Split;
#[cfg(feature = "measure")]
use clado::engine::Images;
#[cfg(feature = "measure")]
use clado::format::{Calib, FORMAT_VERSION};
use clado::format::{LayerInfo, Metric};
use clado::options::QuantOption;
#[cfg(feature = "measure")]
use clado::setup::{self, DataArgs, ModelArgs};
#[cfg(feature = "measure")]
use clado::{Error, Result};
#[cfg(feature = "measure")]
use measure::Measure;
use serde::{Deserialize, Serialize};
#[cfg(feature = "measure")]
use std::collections::{BTreeMap, HashSet};
#[cfg(feature = "measure")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "measure")]
use std::time::Instant;
use store::Shard;
#[cfg(feature = "measure")]
use store::{Partial, ResumeDir};
#[cfg(feature = "measure")]
use units::UnitResult;

/// Everything that decides the numbers of a run. Two runs (or shards) with equal jobs give
/// equal unit results; `--resume` and `merge` check it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub version: u32,
    pub arch: String,
    /// FNV-1a 64 of the checkpoint file's bytes.
    pub weights_digest: String,
    pub data: String,
    pub samples: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub options: Vec<String>,
    /// Every quantizable layer of the model, in forward order.
    pub layers: Vec<LayerInfo>,
    /// Indices into `layers` of the variable layers (the rest stay FP).
    pub variables: Vec<usize>,
    pub metric: Metric,
    pub naive: bool,
    /// FNV-1a 64 of the quantizer parameters (`calib.json` as used).
    pub calib_digest: String,
}

impl Job {
    pub fn batches(&self) -> usize {
        self.samples.div_ceil(self.batch_size)
    }

    /// Samples in batch `b` (the last one may be short).
    pub fn batch_len(&self, b: usize) -> usize {
        self.batch_size
            .min(self.samples.saturating_sub(b.saturating_mul(self.batch_size)))
    }

    /// Number of units: batches × variable layers × options (`None` beyond usize).
    pub fn unit_count(&self) -> Option<usize> {
        self.batches()
            .checked_mul(self.variables.len())?
            .checked_mul(self.options.len())
    }

    /// The unit with number `u` (canonical order: batch-major, then layer, then option).
    pub fn unit_at(&self, u: usize) -> (usize, usize, usize) {
        let o = self.options.len();
        let per_batch = self.variables.len() * o;
        (u / per_batch, u % per_batch / o, u % o)
    }

    /// Every unit (batch, variable, option) in canonical order.
    pub fn units(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.unit_count().unwrap_or(0)).map(|u| self.unit_at(u))
    }

    /// The number of unit (b, k, o) (in range).
    pub fn unit_number(&self, (b, k, o): (usize, usize, usize)) -> usize {
        (b * self.variables.len() + k) * self.options.len() + o
    }

    /// The name of variable layer `k` (in range).
    pub fn variable_name(&self, k: usize) -> &str {
        &self.layers[self.variables[k]].name
    }

    /// A unit as messages name it: `unit (batch 2, layer 'fc', option w4a8)`, with numbers
    /// where an index is out of range.
    pub fn unit_label(&self, (b, k, o): (usize, usize, usize)) -> String {
        let layer = match self.variables.get(k).and_then(|&l| self.layers.get(l)) {
            Some(l) => format!("'{}'", l.name),
            None => k.to_string(),
        };
        let option = self.options.get(o).map_or_else(|| o.to_string(), String::clone);
        format!("unit (batch {b}, layer {layer}, option {option})")
    }

    /// What makes this job (read from a file) unusable, if anything: it must name samples,
    /// a batch size, options that parse, and variable layers in forward order among its layers.
    pub fn problem(&self) -> Option<String> {
        if self.samples == 0 || self.batch_size == 0 {
            return Some(format!(
                "job has {} samples in batches of {}: both must be positive",
                self.samples, self.batch_size
            ));
        }
        if self.options.is_empty() || self.variables.is_empty() {
            return Some("job has no options or no variable layers".into());
        }
        if let Some(o) = self.options.iter().find(|o| QuantOption::parse(o).is_err()) {
            return Some(format!("job option '{o}' is not an option"));
        }
        if self.variables.windows(2).any(|w| w[0] >= w[1]) || self.variables.iter().any(|&v| v >= self.layers.len()) {
            return Some(format!(
                "job's variable layers {:?} are not increasing indices among its {} layers",
                self.variables,
                self.layers.len()
            ));
        }
        if self.unit_count().is_none() {
            return Some("job has more units than can be counted".into());
        }
        None
    }

    /// Forward evaluations of the whole job, counted once per configuration (not per batch):
    /// singles plus, unless naive, pairs of options of different variable layers.
    pub fn evaluations(&self) -> u64 {
        let (k, o) = (self.variables.len() as u64, self.options.len() as u64);
        let singles = k * o;
        if self.naive {
            singles
        } else {
            singles + k * k.saturating_sub(1) / 2 * o * o
        }
    }
}

/// The measurement flags, validated.
#[cfg(feature = "measure")]
pub struct Settings {
    pub options: Vec<QuantOption>,
    pub metric: Metric,
    pub naive: bool,
    pub calib: CalibSettings,
    pub calib_file: Option<String>,
    /// Layer names to perturb (default all), and names to leave out.
    pub layers: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// `--max-memory`: refuse, before measuring, when the estimated peak exceeds this many
    /// bytes (with the flag's text, for the message).
    pub max_memory: Option<(u64, String)>,
}

/// Where the results go.
pub enum Output {
    /// `G.npy`, `index.json`, optionally standard errors.
    Matrix {
        matrix: String,
        index: String,
        se: Option<String>,
    },
    /// A shard's partial result for `perturb merge`.
    Partial { path: String, shard: Shard },
}

/// Progress, logging and the slow reference path.
pub struct Reporting {
    pub quiet: bool,
    /// Measure every entry with a full forward pass from the images (the seed's way), to check
    /// the fast path.
    pub reference: bool,
}

/// Run a measurement: validate everything, then compute (resuming from `resume` if given).
#[cfg(feature = "measure")]
pub fn run(
    model: &ModelArgs,
    data_args: &DataArgs,
    settings: &Settings,
    output: &Output,
    resume: Option<&str>,
    report: &Reporting,
) -> Result<()> {
    if report.reference && (resume.is_some() || matches!(output, Output::Partial { .. })) {
        return Err(Error::usage(
            "--reference runs whole: it does not combine with --resume or --shard",
        ));
    }
    let started = Instant::now();
    setup::check_data_args(data_args)?;
    // `--calib -` is read to its end before the weights and samples (clado::io, Pipelines).
    let calib_bytes = settings
        .calib_file
        .as_deref()
        .map(|path| clado::io::read_input(path, &clado::io::document_kind::<Calib>(), "calib.json"))
        .transpose()?;
    let loaded = setup::load_model(model)?;
    let net = &loaded.net;
    let variables = choose_layers(net.layers().iter().map(|l| l.name.as_str()).collect(), settings)?;
    let data = setup::load_data(data_args, Split::Train, net)?;
    let ds = &data.data;
    if let Some((limit, text)) = &settings.max_memory {
        let estimate = memory::estimate(&memory::Shape {
            net,
            variables: &variables,
            options: settings.options.len(),
            weight_bit_widths: calib::bits_needed(&settings.options).0.len(),
            samples: ds.len(),
            batch_size: data_args.batch_size,
            image: ds.image_shape(),
            threads: rayon::current_num_threads(),
            naive: settings.naive,
        })?;
        memory::check(&estimate, *limit, text)?;
        note(report, format_args!("--max-memory {text}: {}", estimate.describe()));
    }

    let calib: Calib = match (&settings.calib_file, &calib_bytes) {
        (Some(path), Some(bytes)) => {
            let name = clado::io::display_name(path, false);
            let c: Calib = clado::io::json_from_bytes(&name, bytes)?;
            calib::check_calib(&c, &name, &loaded, &settings.options)?;
            c
        }
        _ => {
            let (w, a) = calib::bits_needed(&settings.options);
            note(report, format_args!("calibrating quantizers on {} samples", ds.len()));
            calib::calibrate(
                &loaded,
                ds,
                &data.description,
                data_args.seed,
                &w,
                &a,
                settings.calib,
                data_args.batch_size,
            )?
        }
    };
    let table = PrecisionTable::new(net, &calib, &settings.options)?;

    let job = Job {
        version: FORMAT_VERSION,
        arch: loaded.id.arch.clone(),
        weights_digest: loaded.id.digest.clone(),
        data: data.description.clone(),
        samples: ds.len(),
        seed: data_args.seed,
        batch_size: data_args.batch_size,
        options: settings.options.iter().map(|o| o.to_string()).collect(),
        layers: net.layers().iter().map(|l| l.info()).collect(),
        variables: variables.clone(),
        metric: settings.metric,
        naive: settings.naive,
        calib_digest: clado::io::digest(&serde_json::to_vec(&calib).map_err(|e| Error::other(e.to_string()))?),
    };
    let shard = match output {
        Output::Partial { shard, .. } => *shard,
        Output::Matrix { .. } => Shard::WHOLE,
    };
    let resume = resume.map(|dir| ResumeDir::open(dir, &job, shard)).transpose()?;
    let done = match &resume {
        Some(r) => r.load()?,
        None => Partial::empty(job.clone(), shard),
    };

    // Work still to do, by batch. A batch runs again when it has units to do or its FP
    // metrics are not saved yet.
    let mine: Vec<(usize, usize, usize)> = job
        .units()
        .enumerate()
        .filter(|(u, _)| shard.owns(*u))
        .map(|(_, u)| u)
        .collect();
    let total_units = mine.len();
    let done_units: HashSet<(usize, usize, usize)> = done.units.iter().map(UnitResult::key).collect();
    let todo: Vec<(usize, usize, usize)> = mine.iter().copied().filter(|u| !done_units.contains(u)).collect();
    let per_unit_evals = |k: usize| -> u64 {
        let o = job.options.len() as u64;
        if job.naive {
            0
        } else {
            (job.variables.len() - 1 - k) as u64 * o
        }
    };
    let mut fp_done: BTreeMap<usize, units::FpBatch> = done.fp.iter().cloned().collect();
    let mut batches: Vec<usize> = todo.iter().map(|u| u.0).collect();
    batches.extend(mine.iter().map(|u| u.0).filter(|b| !fp_done.contains_key(b)));
    batches.sort_unstable();
    batches.dedup();
    let singles_per_batch = (job.variables.len() * job.options.len()) as u64;
    let planned: u64 = todo.iter().map(|u| per_unit_evals(u.1)).sum::<u64>() + singles_per_batch * batches.len() as u64;
    if total_units > todo.len() {
        note(
            report,
            format_args!(
                "resuming: {} of {} units already done",
                total_units - todo.len(),
                total_units
            ),
        );
    }
    note(
        report,
        format_args!(
            "perturbing {} variables ({} layers × {} options) on {} samples: {} forward evaluations",
            job.variables.len() * job.options.len(),
            job.variables.len(),
            job.options.len(),
            job.samples,
            planned
        ),
    );

    let evaluations = AtomicU64::new(0);
    let layer_runs = AtomicU64::new(0);
    let progress = measure::Progress::new(planned, report.quiet);
    let measure = Measure {
        net,
        table: &table,
        variables: &variables,
        metric: settings.metric,
        naive: settings.naive,
        evaluations: &evaluations,
        layer_runs: &layer_runs,
    };
    let mut results = Partial { fp: Vec::new(), ..done };
    let labels_all: Vec<usize> = ds.labels.iter().map(|&l| l as usize).collect();
    for b in batches {
        let start = b * job.batch_size;
        let end = (start + job.batch_size).min(ds.len());
        let images = &ds.images[start * ds.image_len()..end * ds.image_len()];
        let images = Images::new(images, [end - start, ds.channels, ds.height, ds.width])?;
        let units: Vec<(usize, usize)> = todo.iter().filter(|u| u.0 == b).map(|u| (u.1, u.2)).collect();
        let save = |u: &UnitResult| -> Result<()> {
            progress.set(evaluations.load(Ordering::Relaxed));
            match &resume {
                Some(r) => r.save_unit(u),
                None => Ok(()),
            }
        };
        let (fp, units) = if report.reference {
            measure.reference_batch(b, images, &labels_all[start..end])?
        } else {
            measure.batch(b, images, &labels_all[start..end], &units, &save)?
        };
        progress.set(evaluations.load(Ordering::Relaxed));
        if let Some(r) = &resume {
            r.save_fp(b, &fp)?;
        }
        fp_done.insert(b, fp);
        results.units.extend(units);
    }
    results.fp = fp_done.into_iter().collect();
    progress.finish();
    results.seconds += started.elapsed().as_secs_f64();
    let naive_layer_runs = planned * job.layers.len() as u64 * job.batch_size.min(job.samples) as u64;
    note(
        report,
        format_args!(
            "{} evaluations in {:.1} s; layers run × images: {} ({:.1}% of {} for full passes)",
            evaluations.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64(),
            layer_runs.load(Ordering::Relaxed),
            100.0 * layer_runs.load(Ordering::Relaxed) as f64 / naive_layer_runs.max(1) as f64,
            naive_layer_runs
        ),
    );

    match output {
        Output::Partial { path, .. } => {
            results.sort();
            clado::io::write_json(path, &results)
        }
        Output::Matrix { matrix, index, se } => {
            let assembled = store::assemble(&[results])?;
            assembled.write(matrix, index, se.as_deref(), report)
        }
    }
}

/// Combine shards' partial results into `G.npy` and `index.json`.
#[cfg(feature = "measure")]
pub fn merge(parts: &[String], matrix: &str, index: &str, se: Option<&str>, report: &Reporting) -> Result<()> {
    let partials: Vec<Partial> = parts.iter().map(|p| Partial::read(p)).collect::<Result<_>>()?;
    let assembled = store::assemble_named(parts, &partials)?;
    assembled.write(matrix, index, se, report)
}

/// The variable layers: all, or `--layers`, minus `--exclude`; every name must exist.
#[cfg(feature = "measure")]
fn choose_layers(names: Vec<&str>, settings: &Settings) -> Result<Vec<usize>> {
    let find = |n: &str| {
        names.iter().position(|x| *x == n).ok_or_else(|| {
            Error::usage(format!(
                "layer '{n}' is not in the model (it has {} quantizable layers: {} … {})",
                names.len(),
                names.first().unwrap_or(&""),
                names.last().unwrap_or(&"")
            ))
        })
    };
    let mut chosen: Vec<usize> = match &settings.layers {
        Some(list) => list.iter().map(|n| find(n)).collect::<Result<_>>()?,
        None => (0..names.len()).collect(),
    };
    for n in &settings.exclude {
        let i = find(n)?;
        chosen.retain(|&c| c != i);
    }
    chosen.sort_unstable();
    chosen.dedup();
    if chosen.is_empty() {
        return Err(Error::usage("no layer left to perturb (check --layers and --exclude)"));
    }
    Ok(chosen)
}

#[cfg(feature = "measure")]
fn note(report: &Reporting, msg: std::fmt::Arguments<'_>) {
    if !report.quiet {
        eprintln!("perturb: {msg}");
    }
}
