//! `--max-memory`: the peak memory of a measurement, estimated before it starts, so that a
//! configuration that cannot fit is refused in seconds rather than killed after hours.
//!
//! The estimate is taken once the model and the samples are loaded (they are measured: the
//! process's resident and peak memory from `/proc/self/status`), and adds what the measurement
//! will allocate, from the network's state sizes:
//! - the FP state of one batch before every variable layer (kept for the whole batch),
//! - per worker thread, the state in flight and the one being computed, plus its workspace,
//! - the quantized weights (one packed copy per layer and weight bit width, as packed for the
//!   kernels),
//! - the per-sample singles of a batch and the pairwise results of every batch,
//! - the matrices assembled at the end (G, its standard errors, an eigendecomposition),
//!
//! and a margin for the allocator ([`ALLOCATOR_MARGIN`]). The README's reliability section
//! compares it with the measured peak of a large configuration.

use clado::engine::Network;
use clado::{Error, Result};

/// Allocator overhead and fragmentation on top of the bytes counted (mimalloc keeps freed
/// pages of the size classes it used; measured overhead on perturb runs was below 10 %).
pub const ALLOCATOR_MARGIN: f64 = 1.15;

/// Stack of one worker thread and slack (rayon's default 2 MiB stack); the executor's scratch
/// space, which grows with the network, comes on top ([`Network::scratch_bytes_per_thread`]).
const PER_THREAD_BYTES: u64 = 4 << 20;

/// The parts of the estimate, in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Resident memory of the process when the estimate is taken (model and samples loaded).
    pub resident: u64,
    /// Peak resident memory so far (loading the data set may have needed more than it keeps).
    pub peak_so_far: u64,
    pub fp_states: u64,
    pub workers: u64,
    pub weights: u64,
    pub results: u64,
}

impl Estimate {
    /// The estimated peak: the larger of the peak so far and what the measurement adds to the
    /// resident memory, with the allocator margin.
    pub fn peak(&self) -> u64 {
        let added = (self.fp_states + self.workers + self.weights + self.results) as f64 * ALLOCATOR_MARGIN;
        self.peak_so_far.max(self.resident + added as u64)
    }

    /// One line for messages: the peak and its largest parts.
    pub fn describe(&self) -> String {
        format!(
            "estimated peak {} (loaded model and samples {}, FP states of a batch {}, worker threads {}, quantized weights {}, results {})",
            human(self.peak()),
            human(self.resident),
            human(self.fp_states),
            human(self.workers),
            human(self.weights),
            human(self.results)
        )
    }
}

/// What decides the memory of a measurement.
pub struct Shape<'a> {
    pub net: &'a Network,
    /// Variable layers (indices into the network's layers).
    pub variables: &'a [usize],
    pub options: usize,
    /// Distinct weight bit widths among the options.
    pub weight_bit_widths: usize,
    pub samples: usize,
    pub batch_size: usize,
    /// `[C, H, W]` of one image.
    pub image: [usize; 3],
    pub threads: usize,
    pub naive: bool,
}

/// Estimate the peak memory of measuring `shape` from now on.
pub fn estimate(shape: &Shape<'_>) -> Result<Estimate> {
    const F32: u64 = 4;
    let net = shape.net;
    let floats = net.state_floats_per_image(shape.image[1], shape.image[2])?;
    let batch = shape.batch_size.min(shape.samples) as u64;
    let image = (shape.image[0] * shape.image[1] * shape.image[2]) as u64;
    let largest = floats.iter().copied().max().unwrap_or(0) as u64;
    let kept: u64 = shape.variables.iter().map(|&l| floats[l] as u64).sum();
    let logits = net.classes() as u64;
    let fp_states = batch * (image + kept + logits) * F32;
    let scratch = net.scratch_bytes_per_thread() as u64;
    let workers = shape.threads as u64 * (batch * (2 * largest + logits) * F32 + PER_THREAD_BYTES + scratch);
    // Prepared (packed) weights, not parameters: Winograd's packing is 16/9 of them.
    let packed: u64 = (0..net.layers().len()).map(|l| net.prepared_floats(l) as u64).sum();
    let weights = shape.weight_bit_widths as u64 * packed * F32;
    let n = (shape.variables.len() * shape.options) as u64;
    let batches = shape.samples.div_ceil(shape.batch_size.max(1)) as u64;
    // Moments are two exact sums, each a Vec header and a 4-f64 allocation of parts (112
    // bytes); a unit keeps one per later variable, every batch keeps its units; the singles of
    // a batch are one f64 per sample; the end adds every pair's moments into exact totals (the
    // same 112 bytes in a BTreeMap entry, about 200) and assembles a few N×N f64 matrices.
    let pairs = if shape.naive { 0 } else { n * n / 2 };
    let results = batches * (n + pairs) * 112 + pairs * 200 + n * batch * 8 + 4 * n * n * 8;
    let (resident, peak_so_far) = process_memory();
    Ok(Estimate {
        resident,
        peak_so_far,
        fp_states,
        workers,
        weights,
        results,
    })
}

/// Refuse when the estimate exceeds `limit` bytes.
pub fn check(estimate: &Estimate, limit: u64, limit_text: &str) -> Result<()> {
    if estimate.peak() > limit {
        return Err(Error::usage(format!(
            "--max-memory {limit_text}: {}; lower --batch-size (the FP states grow with it), \
             set RAYON_NUM_THREADS, or raise --max-memory",
            estimate.describe()
        )));
    }
    Ok(())
}

/// Resident and peak resident memory of this process, from `/proc/self/status` (0 where it
/// cannot be read, e.g. outside Linux).
pub fn process_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let rss = field("VmRSS:");
    (rss, field("VmHWM:").max(rss))
}

/// Bytes in GiB or MiB with three significant digits.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_never_below_what_was_already_used() {
        let e = Estimate {
            resident: 100,
            peak_so_far: 1000,
            fp_states: 10,
            workers: 10,
            weights: 10,
            results: 10,
        };
        assert_eq!(e.peak(), 1000);
        let e = Estimate {
            resident: 100,
            peak_so_far: 100,
            fp_states: 1000,
            workers: 0,
            weights: 0,
            results: 0,
        };
        assert_eq!(e.peak(), 100 + (1000.0 * ALLOCATOR_MARGIN) as u64);
    }
}
