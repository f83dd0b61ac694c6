//! Keeping and combining unit results: shards, the resume directory, and the assembly of G.

use crate::measure::{FpBatch, Moments, UnitResult};
use crate::{Job, Reporting};
use clado::format::{
    Diagnostics, FpReference, Index, MatrixId, ModelId, NoiseSummary, OptionInfo, Variable, FORMAT_VERSION,
};
use clado::io::Versioned;
use clado::options::QuantOption;
use clado::{Error, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// `--shard K/N`: this run owns the units whose number is K-1 mod N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Parse `K/N` with 1 ≤ K ≤ N.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || Error::usage(format!("--shard '{text}': expected K/N with 1 <= K <= N, e.g. 2/8"));
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index - 1
    }
}

/// Unit results of one run or shard: the file `perturb --shard` writes and `merge` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partial {
    pub version: u32,
    pub job: Job,
    pub shard: Shard,
    /// FP metrics of each batch this shard ran.
    pub fp: Vec<(usize, FpBatch)>,
    pub units: Vec<UnitResult>,
    /// Wall-clock seconds spent.
    pub seconds: f64,
}

impl Versioned for Partial {
    const KIND: &'static str = "perturb partial result";
    const VERSION: u32 = FORMAT_VERSION;
}

impl Partial {
    pub fn empty(job: Job, shard: Shard) -> Self {
        Partial {
            version: FORMAT_VERSION,
            job,
            shard,
            fp: Vec::new(),
            units: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn read(path: &str) -> Result<Self> {
        clado::io::read_json(path)
    }

    pub fn has_unit(&self, (b, k, o): (usize, usize, usize)) -> bool {
        self.units.iter().any(|u| (u.batch, u.layer, u.option) == (b, k, o))
    }

    /// Canonical order, so that files do not depend on thread scheduling.
    pub fn sort(&mut self) {
        self.units.sort_by_key(|u| (u.batch, u.layer, u.option));
        self.fp.sort_by_key(|f| f.0);
        self.fp.dedup_by_key(|f| f.0);
    }
}

/// `--resume DIR`: `job.json`, then one file per finished unit and per finished batch's FP pass,
/// each written atomically.
pub struct ResumeDir {
    dir: PathBuf,
    job: Job,
    shard: Shard,
}

#[derive(Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ResumeJob {
    version: u32,
    job: Job,
    shard: Shard,
}

impl Versioned for ResumeJob {
    const KIND: &'static str = "perturb resume job";
    const VERSION: u32 = FORMAT_VERSION;
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved<T> {
    version: u32,
    value: T,
}

impl<T> Versioned for Saved<T> {
    const KIND: &'static str = "perturb resume file";
    const VERSION: u32 = FORMAT_VERSION;
}

impl ResumeDir {
    /// Open (creating it if needed) a resume directory for `job`; an existing one must have
    /// been made for the same job and shard.
    pub fn open(dir: &str, job: &Job, shard: Shard) -> Result<Self> {
        let path = Path::new(dir);
        std::fs::create_dir_all(path).map_err(|e| Error::io(dir, e))?;
        let job_file = path.join("job.json");
        let want = ResumeJob {
            version: FORMAT_VERSION,
            job: job.clone(),
            shard,
        };
        let name = job_file.to_string_lossy().into_owned();
        if job_file.exists() {
            let have: ResumeJob = clado::io::read_json(&name)?;
            if have != want {
                return Err(Error::input(
                    &name,
                    format!(
                        "was made for another run ({}): use a fresh --resume directory",
                        job_difference(&have.job, job, have.shard, shard)
                    ),
                ));
            }
        } else {
            clado::io::write_json(&name, &want)?;
        }
        Ok(ResumeDir {
            dir: path.to_path_buf(),
            job: job.clone(),
            shard,
        })
    }

    fn unit_path(&self, b: usize, k: usize, o: usize) -> PathBuf {
        self.dir.join(format!("unit-b{b}-v{k}-o{o}.json"))
    }

    fn fp_path(&self, b: usize) -> PathBuf {
        self.dir.join(format!("fp-b{b}.json"))
    }

    pub fn save_unit(&self, u: &UnitResult) -> Result<()> {
        let p = self.unit_path(u.batch, u.layer, u.option);
        clado::io::write_json(
            &p.to_string_lossy(),
            &Saved {
                version: FORMAT_VERSION,
                value: u,
            },
        )
    }

    pub fn save_fp(&self, b: usize, fp: &FpBatch) -> Result<()> {
        clado::io::write_json(
            &self.fp_path(b).to_string_lossy(),
            &Saved {
                version: FORMAT_VERSION,
                value: fp,
            },
        )
    }

    /// What the directory already holds.
    pub fn load(&self) -> Result<Partial> {
        let mut p = Partial::empty(self.job.clone(), self.shard);
        for (u, (b, k, o)) in self.job.units().into_iter().enumerate() {
            if !self.shard.owns(u) {
                continue;
            }
            let path = self.unit_path(b, k, o);
            if path.exists() {
                let s: Saved<UnitResult> = clado::io::read_json(&path.to_string_lossy())?;
                p.units.push(s.value);
            }
        }
        for b in 0..self.job.batches() {
            let path = self.fp_path(b);
            if path.exists() {
                let s: Saved<FpBatch> = clado::io::read_json(&path.to_string_lossy())?;
                p.fp.push((b, s.value));
            }
        }
        Ok(p)
    }
}

/// Say how two jobs differ, for messages.
fn job_difference(a: &Job, b: &Job, sa: Shard, sb: Shard) -> String {
    let mut d = Vec::new();
    if a.arch != b.arch || a.weights_digest != b.weights_digest {
        d.push("another model");
    }
    if a.data != b.data || a.samples != b.samples || a.seed != b.seed || a.batch_size != b.batch_size {
        d.push("other samples");
    }
    if a.options != b.options {
        d.push("other options");
    }
    if a.variables != b.variables {
        d.push("other layers");
    }
    if a.metric != b.metric || a.naive != b.naive {
        d.push("another metric");
    }
    if a.calib_digest != b.calib_digest {
        d.push("other quantizer parameters");
    }
    if sa != sb {
        d.push("another shard");
    }
    if d.is_empty() {
        "another format version".into()
    } else {
        d.join(", ")
    }
}

/// The measurement of a whole job, ready to write.
pub struct Assembled {
    pub job: Job,
    pub g: Array2<f64>,
    pub se: Array2<f64>,
    pub fp: FpReference,
    pub diagnostics: Diagnostics,
}

/// Assemble one complete result.
pub fn assemble(partials: &[Partial]) -> Result<Assembled> {
    let names: Vec<String> = (0..partials.len()).map(|i| format!("part {}", i + 1)).collect();
    assemble_named(&names, partials)
}

/// Assemble shards (named for messages) into G: every unit must be present exactly once.
pub fn assemble_named(names: &[String], partials: &[Partial]) -> Result<Assembled> {
    let first = partials
        .first()
        .ok_or_else(|| Error::usage("perturb merge: no partial results given"))?;
    let job = &first.job;
    for (name, p) in names.iter().zip(partials).skip(1) {
        if p.job != *job {
            return Err(Error::input(
                name,
                format!(
                    "comes from another run than {} ({})",
                    names[0],
                    job_difference(&p.job, job, p.shard, p.shard)
                ),
            ));
        }
        if p.shard.count != first.shard.count {
            return Err(Error::input(
                name,
                format!(
                    "is shard {}/{}, but {} is of {} shards",
                    p.shard.index, p.shard.count, names[0], first.shard.count
                ),
            ));
        }
    }
    let mut seen_shards = HashSet::new();
    for (name, p) in names.iter().zip(partials) {
        if !seen_shards.insert(p.shard.index) {
            return Err(Error::input(
                name,
                format!("shard {}/{} is given twice", p.shard.index, p.shard.count),
            ));
        }
    }
    if let Some(missing) = (1..=first.shard.count).find(|k| !seen_shards.contains(k)) {
        return Err(Error::usage(format!(
            "shard {missing}/{} is missing",
            first.shard.count
        )));
    }

    let mut units: BTreeMap<(usize, usize, usize), &UnitResult> = BTreeMap::new();
    let mut fp: BTreeMap<usize, FpBatch> = BTreeMap::new();
    let mut seconds = 0.0;
    for (name, p) in names.iter().zip(partials) {
        seconds += p.seconds;
        for u in &p.units {
            if units.insert((u.batch, u.layer, u.option), u).is_some() {
                return Err(Error::input(
                    name,
                    format!(
                        "unit (batch {}, layer {}, option {}) appears twice",
                        u.batch, u.layer, u.option
                    ),
                ));
            }
        }
        for (b, f) in &p.fp {
            if let Some(prev) = fp.insert(*b, *f) {
                if prev != *f {
                    return Err(Error::input(
                        name,
                        format!("FP metrics of batch {b} differ between shards"),
                    ));
                }
            }
        }
    }
    let all = job.units();
    if let Some(&(b, k, o)) = all.iter().find(|u| !units.contains_key(u)) {
        return Err(Error::other(format!(
            "incomplete: no result for batch {b}, layer '{}', option {} ({} of {} units present)",
            job.layers[job.variables[k]].name,
            job.options[o],
            units.len(),
            all.len()
        )));
    }

    let (nk, no) = (job.variables.len(), job.options.len());
    let nvar = nk * no;
    let mut single = vec![Moments::default(); nvar];
    let mut pair: BTreeMap<(usize, usize), Moments> = BTreeMap::new();
    let mut n = 0usize;
    for (&(b, k, o), u) in &units {
        if k == 0 && o == 0 {
            n += u.samples;
        }
        let v = k * no + o;
        single[v].add(&u.single);
        let mut idx = 0;
        for m in k + 1..nk {
            for o2 in 0..no {
                if let Some(p) = u.pairs.get(idx) {
                    pair.entry((v, m * no + o2)).or_default().add(p);
                }
                idx += 1;
            }
        }
        let _ = b;
    }
    let mut g = Array2::<f64>::zeros((nvar, nvar));
    let mut se = Array2::<f64>::zeros((nvar, nvar));
    for v in 0..nvar {
        let (mean, e) = single[v].mean_se(n);
        g[[v, v]] = mean;
        se[[v, v]] = e;
    }
    for (&(u, v), m) in &pair {
        let (mean, e) = m.mean_se(n);
        g[[u, v]] = mean / 2.0;
        g[[v, u]] = mean / 2.0;
        se[[u, v]] = e / 2.0;
        se[[v, u]] = e / 2.0;
    }
    let fp_n: usize = fp.values().map(|f| f.samples).sum();
    let fp_ref = FpReference {
        loss: fp.values().map(|f| f.loss_sum).sum::<f64>() / fp_n.max(1) as f64,
        top1: 100.0 * fp.values().map(|f| f.correct).sum::<usize>() as f64 / fp_n.max(1) as f64,
    };
    let (lambda_min, lambda_max) = extreme_eigenvalues(&g);
    let noise = noise_summary(&g, &se, job.options.len(), NOISE_Z);
    let diagnostics = Diagnostics {
        noise: Some(noise),
        negative_single: (0..nvar).filter(|&v| g[[v, v]] < 0.0).count(),
        lambda_min,
        lambda_max,
        evaluations: job.evaluations(),
        seconds,
    };
    Ok(Assembled {
        job: job.clone(),
        g,
        se,
        fp: fp_ref,
        diagnostics,
    })
}

/// Standard errors at which `index.json`'s noise summary calls an estimate distinguishable
/// from 0 (two-sided, about 95 % under a normal approximation).
pub const NOISE_Z: f64 = 2.0;

/// Count the estimates of G within `z` standard errors of 0 (variables are layer-major with
/// `options` per layer; entries within a layer are not estimates).
pub fn noise_summary(g: &Array2<f64>, se: &Array2<f64>, options: usize, z: f64) -> NoiseSummary {
    let n = g.nrows();
    let within = |u: usize, v: usize| g[[u, v]].abs() <= z * se[[u, v]];
    let cross: Vec<(usize, usize)> = (0..n)
        .flat_map(|u| (u + 1..n).map(move |v| (u, v)))
        .filter(|&(u, v)| u / options != v / options)
        .collect();
    NoiseSummary {
        z,
        single_within: (0..n).filter(|&v| within(v, v)).count(),
        single: n,
        single_significantly_negative: (0..n).filter(|&v| g[[v, v]] < -z * se[[v, v]]).count(),
        cross_within: cross.iter().filter(|&&(u, v)| within(u, v)).count(),
        cross: cross.len(),
    }
}

/// Smallest and largest eigenvalue of a symmetric matrix.
pub fn extreme_eigenvalues(g: &Array2<f64>) -> (f64, f64) {
    let n = g.nrows();
    if n == 0 {
        return (0.0, 0.0);
    }
    let m = faer::Mat::<f64>::from_fn(n, n, |i, j| g[[i, j]]);
    match m.self_adjoint_eigenvalues(faer::Side::Lower) {
        Ok(ev) => {
            let min = ev.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ev.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min, max)
        }
        Err(_) => (f64::NAN, f64::NAN),
    }
}

impl Assembled {
    /// The index of this result, describing `matrix` (the G and standard errors as written).
    pub fn index(&self, matrix: MatrixId) -> Index {
        let job = &self.job;
        let options: Vec<OptionInfo> = job
            .options
            .iter()
            .map(|o| OptionInfo::from(QuantOption::parse(o).expect("options were parsed when the job was made")))
            .collect();
        let variables = job
            .variables
            .iter()
            .flat_map(|&l| (0..options.len()).map(move |o| Variable { layer: l, option: o }))
            .collect();
        let fixed = job
            .layers
            .iter()
            .enumerate()
            .filter(|(i, _)| !job.variables.contains(i))
            .map(|(_, l)| (l.name.clone(), "fp".to_string()))
            .collect();
        Index {
            version: FORMAT_VERSION,
            model: ModelId {
                arch: job.arch.clone(),
                digest: job.weights_digest.clone(),
            },
            calib_digest: job.calib_digest.clone(),
            matrix,
            layers: job.layers.clone(),
            fixed,
            options,
            variables,
            metric: job.metric,
            naive: job.naive,
            samples: job.samples,
            data: job.data.clone(),
            seed: job.seed,
            fp: self.fp.clone(),
            diagnostics: Some(self.diagnostics.clone()),
        }
    }

    /// Write `G.npy`, `index.json` and, if asked, the standard errors (same shape as G). The
    /// index records digests of the matrices' bytes; whatever goes to stdout is written last,
    /// after the files are complete (see `clado::io`, Pipelines).
    pub fn write(&self, matrix: &str, index: &str, se: Option<&str>, report: &Reporting) -> Result<()> {
        let g_bytes = clado::io::npy_bytes(&self.g)?;
        let se_bytes = se.map(|_| clado::io::npy_bytes(&self.se)).transpose()?;
        let id = MatrixId {
            rows: self.g.nrows(),
            digest: clado::io::digest(&g_bytes),
            se_digest: se_bytes.as_deref().map(clado::io::digest),
        };
        let index_text = clado::io::json_document(&self.index(id))?;
        let mut outputs: Vec<(&str, &[u8])> = vec![(index, index_text.as_bytes())];
        if let (Some(path), Some(bytes)) = (se, &se_bytes) {
            outputs.push((path, bytes));
        }
        outputs.push((matrix, &g_bytes));
        clado::io::write_outputs(&outputs)?;
        if !report.quiet {
            let d = &self.diagnostics;
            eprintln!(
                "perturb: G is {n}×{n}; {} of {} single-layer estimates are negative; λ_min {:.3e}, λ_max {:.3e}; FP loss {:.4} on the calibration samples",
                d.negative_single,
                self.g.nrows(),
                d.lambda_min,
                d.lambda_max,
                self.fp.loss,
                n = self.g.nrows()
            );
            if let Some(z) = &d.noise {
                eprintln!(
                    "perturb: within {} standard errors of 0: {} of {} single-layer estimates ({} significantly negative), {} of {} cross terms",
                    z.z, z.single_within, z.single, z.single_significantly_negative, z.cross_within, z.cross
                );
            }
        }
        Ok(())
    }
}

/// A progress bar on stderr (hidden with `-q` or when stderr is not a terminal… indicatif
/// hides itself then), counting forward evaluations.
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Self {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "perturb: {bar:30} {pos}/{len} evaluations, {per_sec}, ETA {eta}",
                )
                .expect("valid template"),
            );
            b
        };
        Progress { bar }
    }

    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_summary_counts_estimates_within_z_standard_errors() {
        // Two layers × two options: variables 0, 1 (layer 0) and 2, 3 (layer 1).
        let g = ndarray::arr2(&[
            [0.10, 0.00, 0.01, -0.30],
            [0.00, -0.05, 0.00, 0.02],
            [0.01, 0.00, -0.50, 0.00],
            [-0.30, 0.02, 0.00, 0.03],
        ]);
        let se = Array2::from_elem((4, 4), 0.1);
        let s = noise_summary(&g, &se, 2, 2.0);
        // |d| ≤ 0.2: 0.10, −0.05, 0.03; −0.50 is significantly negative.
        assert_eq!((s.single_within, s.single, s.single_significantly_negative), (3, 4, 1));
        // Cross terms (0,2) 0.01, (0,3) −0.30, (1,2) 0, (1,3) 0.02: all but −0.30 within.
        assert_eq!((s.cross_within, s.cross), (3, 4));
    }
}
