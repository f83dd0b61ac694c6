//! Keeping and combining unit results: shards, the resume directory, and the assembly of G.

use crate::units::{ExactTotal, FpBatch, MomentsTotal, UnitResult};
use crate::{Job, Reporting};
use clado::format::{Diagnostics, FpReference, Index, NoiseSummary, OptionInfo, Variable, FORMAT_VERSION};
use clado::io::Versioned;
use clado::options::QuantOption;
use clado::{Error, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
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

    /// Parse `K/N` with 1 ≤ K ≤ N, or `slurm`: this task's place in its Slurm job array
    /// (see [`Shard::of_slurm_array`]).
    pub fn parse(text: &str) -> Result<Shard> {
        if text == "slurm" {
            return Shard::of_slurm_array(|name| std::env::var(name).ok());
        }
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

    /// The shard of a task of a Slurm job array, from the variables sbatch sets (looked up by
    /// `var`): K is the task's place among the array's ids (`SLURM_ARRAY_TASK_ID` counted from
    /// `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP`), N is `SLURM_ARRAY_TASK_COUNT`.
    /// So `--array=1-N` and `--array=0-15` both work; an array with gaps (`--array=1,4`) or a
    /// resubmission of some of the tasks does not number the shards and needs `--shard K/N`.
    pub fn of_slurm_array(var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|text| {
                    text.trim().parse().map_err(|_| {
                        Error::usage(format!(
                            "--shard slurm: {name}={text:?} is not a task number of a job array"
                        ))
                    })
                })
                .transpose()
        };
        let Some(id) = number("SLURM_ARRAY_TASK_ID")? else {
            return Err(Error::usage(
                "--shard slurm: SLURM_ARRAY_TASK_ID is not set: this is not a task of a Slurm job \
                 array (submit with sbatch --array=1-N, or give --shard K/N)",
            ));
        };
        let needed = |name: &str| -> Result<usize> {
            number(name)?.ok_or_else(|| {
                Error::usage(format!(
                    "--shard slurm: SLURM_ARRAY_TASK_ID is set but {name} is not (Slurm sets both in a job array)"
                ))
            })
        };
        let (min, count) = (needed("SLURM_ARRAY_TASK_MIN")?, needed("SLURM_ARRAY_TASK_COUNT")?);
        let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let place = id.checked_sub(min).filter(|d| d % step == 0).map(|d| d / step + 1);
        match place {
            Some(index) if index <= count => Ok(Shard { index, count }),
            _ => Err(Error::usage(format!(
                "--shard slurm: task {id} is not one of the {count} tasks {min}, {}, ... of its array \
                 (ids with gaps, or a resubmission of some tasks): give --shard K/N",
                min + step
            ))),
        }
    }

    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index - 1
    }
}

#[cfg(test)]
mod slurm_array_tests {
    use super::Shard;

    fn shard_of(vars: &[(&str, &str)]) -> clado::Result<Shard> {
        Shard::of_slurm_array(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_place_in_the_array_is_the_shard() {
        let array = |id: &str, min: &str, count: &str, step: &str| {
            shard_of(&[
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_MIN", min),
                ("SLURM_ARRAY_TASK_COUNT", count),
                ("SLURM_ARRAY_TASK_STEP", step),
            ])
            .map(|s| (s.index, s.count))
        };
        assert_eq!(array("1", "1", "3", "1").unwrap(), (1, 3));
        assert_eq!(array("3", "1", "3", "1").unwrap(), (3, 3));
        assert_eq!(array("0", "0", "16", "1").unwrap(), (1, 16), "--array=0-15");
        assert_eq!(array("7", "3", "3", "2").unwrap(), (3, 3), "--array=3-7:2");
        assert!(array("4", "3", "3", "2").is_err(), "4 is not in 3-7:2");
        assert!(array("2", "2", "1", "1").is_ok(), "a one-task array is shard 1/1");
        assert!(array("5", "1", "2", "1").is_err(), "--array=1,5: ids with a gap");
        assert!(array("x", "1", "2", "1").is_err());
    }

    #[test]
    fn outside_an_array_it_is_a_usage_error() {
        let err = shard_of(&[]).unwrap_err();
        assert!(matches!(err, clado::Error::Usage(_)), "{err}");
        assert!(err.to_string().contains("SLURM_ARRAY_TASK_ID is not set"), "{err}");
        let err = shard_of(&[("SLURM_ARRAY_TASK_ID", "2")]).unwrap_err();
        assert!(err.to_string().contains("SLURM_ARRAY_TASK_MIN"), "{err}");
    }
}

/// Unit results of one run or shard: the file `perturb --shard` writes and `merge` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partial {
    pub version: u32,
    pub job: Job,
    pub shard: Shard,
    /// FP metrics of each batch this shard ran: every batch it holds units of, once.
    pub fp: Vec<(usize, FpBatch)>,
    /// Every unit the shard owns, once.
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

    /// Canonical order, so that files do not depend on thread scheduling.
    pub fn sort(&mut self) {
        self.units.sort_by_key(UnitResult::key);
        self.fp.sort_by_key(|f| f.0);
    }

    /// Check that this part (read from `name`) holds exactly the results of its shard of
    /// `job`: a valid shard, every unit it owns once and no other, each unit within the job's
    /// ranges and counts, and the FP metrics of exactly the batches of those units.
    pub fn check(&self, name: &str, job: &Job) -> Result<()> {
        let bad = |msg: String| Error::input(name, msg);
        if let Some(p) = shard_problem(self.shard) {
            return Err(bad(p));
        }
        let shard = self.shard;
        let whose = if shard == Shard::WHOLE {
            "the run".to_string()
        } else {
            format!("shard {}/{}", shard.index, shard.count)
        };
        let mut numbers = Vec::with_capacity(self.units.len());
        for u in &self.units {
            let label = job.unit_label(u.key());
            if let Some(p) = u.problem(job) {
                return Err(bad(format!("{label}: {p}")));
            }
            let number = job.unit_number(u.key());
            if !shard.owns(number) {
                return Err(bad(format!(
                    "{label} belongs to shard {}/{}, but this file is {whose}",
                    number % shard.count + 1,
                    shard.count
                )));
            }
            numbers.push(number);
        }
        numbers.sort_unstable();
        if let Some(w) = numbers.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("{} appears twice", job.unit_label(job.unit_at(w[0])))));
        }
        let owned = owned_units(job.unit_count().unwrap_or(0), shard);
        if numbers.len() < owned {
            // The units present are owned and distinct: the first gap in the owned sequence
            // is the first missing one.
            let nth = |j: usize| shard.index - 1 + j * shard.count;
            let j = (0..numbers.len())
                .find(|&j| numbers[j] != nth(j))
                .unwrap_or(numbers.len());
            return Err(bad(format!(
                "{} is missing ({} of the {owned} units of {whose} present): a file of an unfinished or cut run",
                job.unit_label(job.unit_at(nth(j))),
                numbers.len()
            )));
        }
        let unit_batches: BTreeSet<usize> = self.units.iter().map(|u| u.batch).collect();
        let mut fp_batches = BTreeSet::new();
        for (b, fp) in &self.fp {
            if *b >= job.batches() {
                return Err(bad(format!(
                    "FP metrics of batch {b}: the run has {} batches",
                    job.batches()
                )));
            }
            if let Some(p) = fp.problem(*b, job) {
                return Err(bad(p));
            }
            if !fp_batches.insert(*b) {
                return Err(bad(format!("FP metrics of batch {b} appear twice")));
            }
            if !unit_batches.contains(b) {
                return Err(bad(format!("FP metrics of batch {b}, where {whose} has no unit")));
            }
        }
        if let Some(b) = unit_batches.difference(&fp_batches).next() {
            return Err(bad(format!("no FP metrics of batch {b}, whose units it holds")));
        }
        Ok(())
    }
}

/// What is wrong with a shard read from a file, if anything.
fn shard_problem(s: Shard) -> Option<String> {
    (s.index == 0 || s.index > s.count).then(|| format!("shard {}/{}: expected K/N with 1 <= K <= N", s.index, s.count))
}

/// How many of `units` units shard `s` owns (numbers `s.index - 1 + j·s.count`).
fn owned_units(units: usize, s: Shard) -> usize {
    if units < s.index {
        0
    } else {
        (units - s.index) / s.count + 1
    }
}

/// FNV-1a 64 of some bytes, as 16 hex digits.
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// [`digest`] of a file.
pub fn file_digest(path: &str) -> Result<String> {
    Ok(digest(&std::fs::read(path).map_err(|e| Error::io(path, e))?))
}

/// `--resume DIR`: `job.json`, then one file per finished unit and per finished batch's FP
/// pass, each written atomically. Reading it back checks every file as `merge` checks a part.
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

/// A file of a resume directory, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Saving {
    Unit(usize, usize, usize),
    Fp(usize),
}

impl Saving {
    fn file_name(self) -> String {
        match self {
            Saving::Unit(b, k, o) => format!("unit-b{b}-v{k}-o{o}.json"),
            Saving::Fp(b) => format!("fp-b{b}.json"),
        }
    }

    /// The file a name stands for (`None` for names that are not unit or FP files).
    fn parse(name: &str) -> Option<Saving> {
        let stem = name.strip_suffix(".json")?;
        if let Some(b) = stem.strip_prefix("fp-b") {
            return Some(Saving::Fp(b.parse().ok()?));
        }
        let (b, rest) = stem.strip_prefix("unit-b")?.split_once("-v")?;
        let (k, o) = rest.split_once("-o")?;
        Some(Saving::Unit(b.parse().ok()?, k.parse().ok()?, o.parse().ok()?))
    }
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

    fn path(&self, f: Saving) -> String {
        self.dir.join(f.file_name()).to_string_lossy().into_owned()
    }

    pub fn save_unit(&self, u: &UnitResult) -> Result<()> {
        let (b, k, o) = u.key();
        clado::io::write_json(
            &self.path(Saving::Unit(b, k, o)),
            &Saved {
                version: FORMAT_VERSION,
                value: u,
            },
        )
    }

    pub fn save_fp(&self, b: usize, fp: &FpBatch) -> Result<()> {
        clado::io::write_json(
            &self.path(Saving::Fp(b)),
            &Saved {
                version: FORMAT_VERSION,
                value: fp,
            },
        )
    }

    /// What the directory already holds, every file checked: a unit file must hold the unit
    /// its name says, valid for the job; an FP file the metrics of its batch; and no unit or
    /// FP file may be there that this run (shard) would not write.
    pub fn load(&self) -> Result<Partial> {
        let job = &self.job;
        let mine: Vec<(usize, usize, usize)> = job
            .units()
            .enumerate()
            .filter(|(u, _)| self.shard.owns(*u))
            .map(|(_, u)| u)
            .collect();
        let mut expected: HashSet<Saving> = mine.iter().map(|&(b, k, o)| Saving::Unit(b, k, o)).collect();
        expected.extend(mine.iter().map(|u| Saving::Fp(u.0)));
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(self.dir.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(self.dir.display(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match Saving::parse(&name) {
                Some(f) if !expected.contains(&f) => {
                    let what = match f {
                        Saving::Unit(b, k, o) => job.unit_label((b, k, o)),
                        Saving::Fp(b) => format!("FP metrics of batch {b}"),
                    };
                    return Err(Error::input(
                        entry.path().display(),
                        format!(
                            "{what} is not part of this run{} ({} batches × {} layers × {} options): the directory holds another run's files",
                            if self.shard == Shard::WHOLE {
                                String::new()
                            } else {
                                format!("'s shard {}/{}", self.shard.index, self.shard.count)
                            },
                            job.batches(),
                            job.variables.len(),
                            job.options.len()
                        ),
                    ));
                }
                _ => {}
            }
        }
        let mut p = Partial::empty(job.clone(), self.shard);
        for &(b, k, o) in &mine {
            let path = self.path(Saving::Unit(b, k, o));
            if Path::new(&path).exists() {
                let s: Saved<UnitResult> = clado::io::read_json(&path)?;
                let label = job.unit_label((b, k, o));
                let problem = if s.value.key() != (b, k, o) {
                    Some(format!("holds {}", job.unit_label(s.value.key())))
                } else {
                    s.value.problem(job)
                };
                if let Some(problem) = problem {
                    return Err(Error::input(
                        &path,
                        format!("{label}: {problem}; delete the file to measure the unit again"),
                    ));
                }
                p.units.push(s.value);
            }
        }
        let batches: BTreeSet<usize> = mine.iter().map(|u| u.0).collect();
        for b in batches {
            let path = self.path(Saving::Fp(b));
            if Path::new(&path).exists() {
                let s: Saved<FpBatch> = clado::io::read_json(&path)?;
                if let Some(problem) = s.value.problem(b, job) {
                    return Err(Error::input(
                        &path,
                        format!("{problem}; delete the file to measure the batch again"),
                    ));
                }
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
        d.push("another model".to_string());
    }
    if a.data != b.data || a.samples != b.samples || a.seed != b.seed {
        d.push("other samples".to_string());
    }
    if a.batch_size != b.batch_size {
        d.push(format!(
            "--batch-size {} there, {} here: G does not depend on it, but units are batches, so one run keeps one batch size",
            a.batch_size, b.batch_size
        ));
    }
    if a.options != b.options {
        d.push("other options".to_string());
    }
    if a.variables != b.variables || a.layers != b.layers {
        d.push("other layers".to_string());
    }
    if a.metric != b.metric || a.naive != b.naive {
        d.push("another metric".to_string());
    }
    if a.calib_digest != b.calib_digest {
        d.push("other quantizer parameters".to_string());
    }
    if sa != sb {
        d.push(format!(
            "shard {}/{} there, {}/{} here",
            sa.index, sa.count, sb.index, sb.count
        ));
    }
    if d.is_empty() {
        "another format version".into()
    } else {
        d.join(", ")
    }
}

/// G, its standard errors and the FP reference of a whole job, from checked parts.
pub struct Combined {
    pub job: Job,
    pub g: Array2<f64>,
    pub se: Array2<f64>,
    pub fp: FpReference,
    /// Wall-clock seconds the parts spent.
    pub seconds: f64,
}

/// Check that `partials` (read from the files `names`) are every shard of one run, each
/// complete and valid ([`Partial::check`]), then add their units exactly into G.
pub fn combine(names: &[String], partials: &[Partial]) -> Result<Combined> {
    let first = partials
        .first()
        .ok_or_else(|| Error::usage("perturb merge: no partial results given"))?;
    for (name, p) in names.iter().zip(partials) {
        if let Some(problem) = shard_problem(p.shard) {
            return Err(Error::input(name, problem));
        }
    }
    let job = &first.job;
    if let Some(problem) = job.problem() {
        return Err(Error::input(&names[0], problem));
    }
    let count = first.shard.count;
    for (name, p) in names.iter().zip(partials).skip(1) {
        if p.job != *job {
            return Err(Error::input(
                name,
                format!(
                    "comes from another run than {} ({}): a merge takes the shards of one run",
                    names[0],
                    job_difference(&p.job, job, p.shard, p.shard)
                ),
            ));
        }
        if p.shard.count != count {
            return Err(Error::input(
                name,
                format!(
                    "is shard {}/{}, but {} is shard {}/{count}: a merge takes the shards of one run",
                    p.shard.index, p.shard.count, names[0], first.shard.index
                ),
            ));
        }
    }
    let mut given: BTreeMap<usize, &str> = BTreeMap::new();
    for (name, p) in names.iter().zip(partials) {
        if let Some(other) = given.insert(p.shard.index, name) {
            return Err(Error::input(
                name,
                format!("is shard {}/{count}, like {other}: each shard once", p.shard.index),
            ));
        }
    }
    if let Some(missing) = (1..=count).zip(given.keys()).find(|(k, g)| k != *g).map(|(k, _)| k) {
        return Err(Error::usage(format!(
            "shard {missing}/{count} is missing: a merge takes all {count} shards of the run ({} given)",
            given.len()
        )));
    }
    if given.len() < count {
        return Err(Error::usage(format!(
            "shard {}/{count} is missing: a merge takes all {count} shards of the run ({} given)",
            given.len() + 1,
            given.len()
        )));
    }
    for (name, p) in names.iter().zip(partials) {
        p.check(name, job)?;
    }

    // Shards share batches: their FP metrics of a batch must agree.
    let mut fp: BTreeMap<usize, (&FpBatch, &str)> = BTreeMap::new();
    for (name, p) in names.iter().zip(partials) {
        for (b, f) in &p.fp {
            if let Some((prev, other)) = fp.insert(*b, (f, name)) {
                if prev != f {
                    return Err(Error::input(
                        name,
                        format!("FP metrics of batch {b} differ from those in {other}"),
                    ));
                }
            }
        }
    }

    let (nk, no) = (job.variables.len(), job.options.len());
    let nvar = nk * no;
    let mut single = vec![MomentsTotal::default(); nvar];
    let mut pair: BTreeMap<(usize, usize), MomentsTotal> = BTreeMap::new();
    for u in partials.iter().flat_map(|p| &p.units) {
        let v = u.layer * no + u.option;
        single[v].add(&u.single);
        for (i, m) in u.pairs.iter().enumerate() {
            let w = (u.layer + 1) * no + i;
            pair.entry((v, w)).or_default().add(m);
        }
    }
    let n = job.samples;
    let mut g = Array2::<f64>::zeros((nvar, nvar));
    let mut se = Array2::<f64>::zeros((nvar, nvar));
    for (v, m) in single.iter().enumerate() {
        let (mean, e) = m.mean_se(n);
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
    let mut loss = ExactTotal::default();
    let mut correct = 0usize;
    for (f, _) in fp.values() {
        loss.add(&f.loss_sum);
        correct += f.correct;
    }
    Ok(Combined {
        job: job.clone(),
        g,
        se,
        fp: FpReference {
            loss: loss.value() / n as f64,
            top1: 100.0 * correct as f64 / n as f64,
        },
        seconds: partials.iter().map(|p| p.seconds).sum(),
    })
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
#[cfg(feature = "measure")]
pub fn assemble(partials: &[Partial]) -> Result<Assembled> {
    let names: Vec<String> = (0..partials.len()).map(|i| format!("part {}", i + 1)).collect();
    assemble_named(&names, partials)
}

/// Assemble shards (named for messages) into G ([`combine`]) with its diagnostics.
#[cfg(feature = "measure")]
pub fn assemble_named(names: &[String], partials: &[Partial]) -> Result<Assembled> {
    let Combined {
        job,
        g,
        se,
        fp,
        seconds,
    } = combine(names, partials)?;
    let nvar = g.nrows();
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
        job,
        g,
        se,
        fp,
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
#[cfg(feature = "measure")]
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
    pub fn index(&self) -> Index {
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
            arch: job.arch.clone(),
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

    /// Write `G.npy`, `index.json` and, if asked, the standard errors (same shape as G).
    pub fn write(&self, matrix: &str, index: &str, se: Option<&str>, report: &Reporting) -> Result<()> {
        clado::io::write_matrix(matrix, &self.g)?;
        if let Some(se) = se {
            clado::io::write_matrix(se, &self.se)?;
        }
        clado::io::write_json(index, &self.index())?;
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
