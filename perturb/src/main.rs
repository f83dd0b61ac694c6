use clado::format::Metric;
use clado::options::QuantOption;
use clado::setup::{CalibArgs, DataArgs, ModelArgs};
use clado::Error;
use clap::{Parser, Subcommand};
use perturb::store::Shard;
use perturb::{Output, Reporting, Settings};

/// Calibration samples when --samples is not given.
const DEFAULT_SAMPLES: usize = 256;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONG_ABOUT: &str = "\
Measure how the metric changes when one layer, or two layers together, are quantized, and write
the matrix G of the CLADO method: xᵀGx predicts the change of the metric for a choice x of one
option per layer.

  G[v,v] = d(v)                         one layer quantized at one option
  G[u,v] = (d(u,v) - d(u) - d(v)) / 2   two layers (different) quantized together

d is measured on calibration samples (default: 256 from the training split), relative to the FP
model. Without --calib the quantizers are calibrated on the same samples.

index.json says what G is: the model (architecture and weights digest), the digest of the
quantizer parameters, the matrix written with it (`matrix`: rows and the digests of the G.npy
and G.se.npy bytes, which `allocate` checks), the layers (name, kind, params, MACs), the
options, the variables in matrix order, the metric, the samples and the FP reference. It is
written completely before G goes to stdout. The model is `--arch/--weights` (a CIFAR ResNet
checkpoint) or `--model FILE.onnx` (any ONNX classifier; its layers are its Convs and constant-
weight Gemm/MatMuls, named after the PyTorch modules).

G.npy, the --se file and index.json (but for its diagnostics.seconds) have the same bytes
whatever --batch-size, the thread count (RAYON_NUM_THREADS), the --shard split or the
interruptions resumed: every sample gets the same bits in any batch, units keep exact sums of
the per-sample values, and G is rounded once from their total.

Examples:
  perturb --options w2a8,w4a8,w8a8 --samples 256 -o G.npy --index index.json
  perturb --weights r20.pth --data cifar10:DIR --options 'w{2,4,8}a{2,4,8}' --metric kl \\
          --exclude conv1,fc -o G.npy --index index.json --resume work/
  # on 4 machines (or make -j4), then combine:
  perturb ... --shard 3/4 -o part3.json
  perturb merge part1.json part2.json part3.json part4.json -o G.npy --index index.json
  # a Slurm job array of any size, then the merge:
  sbatch --array=1-16 --wrap 'perturb ... --shard slurm -o part$SLURM_ARRAY_TASK_ID.json'
  # then: psd --method shift < G.npy > Gpsd.npy; allocate --matrix Gpsd.npy --index index.json";

#[derive(Parser)]
#[command(name = "perturb", version, about = "Measure the pairwise Δloss matrix G of CLADO", long_about = LONG_ABOUT)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Options per layer: comma-separated, brace expansion allowed: `w4,fp` (binaryWeight),
    /// `w2,w4,w8` (multiWeight), `w{2,4,8}a{2,4,8}` (general).
    #[arg(long, value_name = "LIST", required = true)]
    options: Option<String>,
    /// The metric: `loss` (mean cross-entropy) or `kl` (mean KL of the FP to the quantized
    /// model's predictions; with --naive this is ZeroQ's sensitivity).
    #[arg(long, default_value = "loss", value_name = "METRIC", value_parser = ["loss", "kl"])]
    metric: String,
    /// Measure only the diagonal (single layers), no cross-layer terms.
    #[arg(long)]
    naive: bool,
    #[command(flatten)]
    calibration: CalibArgs,
    /// Quantizer parameters from `quantize calibrate` instead of calibrating here.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["w_calib", "a_calib", "per_tensor"])]
    calib: Option<String>,
    /// Perturb only these layers (comma-separated PyTorch names); the others stay FP.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    layers: Option<Vec<String>>,
    /// Leave these layers FP (comma-separated), e.g. `conv1,fc`.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    exclude: Vec<String>,
    /// Output: G.npy (`-` for stdout), or with --shard the partial result (JSON).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    output: Option<String>,
    /// Where to write index.json (required unless --shard).
    #[arg(long, value_name = "FILE", required_unless_present = "shard")]
    index: Option<String>,
    /// Also write the standard error of every entry of G (same shape, .npy).
    #[arg(long, value_name = "FILE", conflicts_with = "shard")]
    se: Option<String>,
    /// Keep finished work in DIR; rerun the same command (with the same --batch-size: work
    /// units are batches) to continue after an interruption. Every file read back is checked
    /// against the run; a damaged or foreign one is refused, naming it.
    #[arg(long, value_name = "DIR")]
    resume: Option<String>,
    /// Compute shard K of N (work units numbered K-1 mod N); combine with `perturb merge`.
    /// `slurm`: K and N of this task of a Slurm job array (`sbatch --array=1-N`): K is the
    /// task's place among the array's ids, N the array's size (SLURM_ARRAY_TASK_ID, _MIN,
    /// _STEP, _COUNT), so one sbatch line serves any N. Outside an array it is an error (exit 2).
    #[arg(long, value_name = "K/N|slurm")]
    shard: Option<String>,
    /// Measure every entry with a full forward pass from the images, as the seed did (slow:
    /// for checking the fast path, which reuses unchanged prefixes).
    #[arg(long)]
    reference: bool,
    /// Refuse up front, with the estimate, when the estimated peak memory exceeds SIZE
    /// (bytes, or K/M/G/T in powers of 1024: `4G`, `512M`). The estimate counts the loaded
    /// model and samples and what the measurement adds (the FP states of a batch before every
    /// variable layer, per-thread work, quantized weights, results); --batch-size and
    /// RAYON_NUM_THREADS lower it.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// No progress or notes on stderr.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Combine the partial results of `--shard` runs into G.npy and index.json.
    ///
    /// Takes every shard 1..N of one run once, each complete: a missing, repeated, incomplete,
    /// edited or foreign part is refused (exit 2, naming the file and the unit), and nothing is
    /// written.
    Merge {
        /// Partial results of every shard of one run.
        #[arg(required = true, value_name = "PART")]
        parts: Vec<String>,
        /// G.npy to write (`-` for stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
        /// index.json to write.
        #[arg(long, value_name = "FILE")]
        index: String,
        /// Also write the standard errors of G.
        #[arg(long, value_name = "FILE")]
        se: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
}

fn main() -> std::process::ExitCode {
    clado::cli::main_with_args("perturb", run)
}

fn run(mut cli: Cli) -> clado::Result<()> {
    cli.data.samples.get_or_insert(DEFAULT_SAMPLES);
    match cli.command {
        Some(Command::Merge {
            parts,
            output,
            index,
            se,
            quiet,
        }) => {
            let mut outputs = vec![("-o", output.as_str()), ("--index", index.as_str())];
            outputs.extend(se.as_deref().map(|p| ("--se", p)));
            clado::io::check_distinct_outputs(&outputs)?;
            perturb::merge(
                &parts,
                &output,
                &index,
                se.as_deref(),
                &Reporting {
                    quiet,
                    reference: false,
                },
            )
        }
        None => {
            let options = QuantOption::parse_list(cli.options.as_deref().unwrap_or_default())?;
            let metric = match cli.metric.as_str() {
                "kl" => Metric::Kl,
                _ => Metric::Loss,
            };
            let settings = Settings {
                options,
                metric,
                naive: cli.naive,
                calib: cli.calibration.settings()?,
                calib_file: cli.calib,
                layers: cli.layers,
                exclude: cli.exclude,
                max_memory: cli
                    .max_memory
                    .map(|t| clado::cli::parse_size("--max-memory", &t).map(|b| (b, t)))
                    .transpose()?,
            };
            let output_path = cli.output.expect("required by clap");
            let output = match cli.shard {
                Some(s) => {
                    let shard = Shard::parse(&s)?;
                    if cli.index.is_some() {
                        return Err(Error::usage(
                            "--index is written by `perturb merge`, not by a --shard run",
                        ));
                    }
                    Output::Partial {
                        path: output_path,
                        shard,
                    }
                }
                None => {
                    let index = cli.index.expect("required by clap");
                    let mut outputs = vec![("-o", output_path.as_str()), ("--index", index.as_str())];
                    outputs.extend(cli.se.as_deref().map(|p| ("--se", p)));
                    clado::io::check_distinct_outputs(&outputs)?;
                    Output::Matrix {
                        matrix: output_path,
                        index,
                        se: cli.se,
                    }
                }
            };
            perturb::run(
                &cli.model,
                &cli.data,
                &settings,
                &output,
                cli.resume.as_deref(),
                &Reporting {
                    quiet: cli.quiet,
                    reference: cli.reference,
                },
            )
        }
    }
}
