use clado::options::QuantOption;
use clado::setup::{CalibArgs, DataArgs, ModelArgs};
use clado::Error;
use clap::Parser;
use evaluate::{Config, QuantSource};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONG_ABOUT: &str = "\
Evaluate a model at full precision, at a uniform option, or at allocations written by
`allocate`: top-1 and top-5 accuracy (%), mean cross-entropy, mean KL(p_fp ‖ p_quant), size in
bits and MB, average weight bits and BOPs. One JSON object per line on stdout, one line per
configuration: FP (with --fp), then each --uniform, then each allocation in the order given;
all share one FP pass. An --alloc file may hold several allocations (JSON lines, as
`allocate --sweep` writes them): each is evaluated in order, its `config` is `FILE#N` (N from
1); a file of one allocation gives `config` FILE.

An allocation (and --calib) must be made for this model: alloc.json and calib.json record the
architecture and a digest of the weights file they were made with, and a file of another model
or layer list is refused (exit 2) naming the file, the field and both models. Standard input
(--alloc - or --calib -) is read to its end before any other file.

The output is the same bytes whatever --batch-size, --load-chunk and the thread count
(RAYON_NUM_THREADS):
loss and KL are summed per sample in sample order. A reader that stops early (`| head -1`)
ends evaluate quietly with exit 0.

Quantizer parameters come from --calib (as written by `quantize calibrate`, so that evaluate
quantizes exactly as perturb did), or are calibrated here on --calib-samples samples of the
training split (the same defaults as perturb's).

Examples:
  evaluate --fp --uniform w8a8 --uniform w4a8 --uniform w2a8
  evaluate --alloc a3.json --alloc a4.json --calib calib.json | jq .top1
  allocate --matrix G.npy --index index.json --avg-bits 4 | evaluate --alloc -
  allocate --matrix G.npy --index index.json --sweep avg-bits=3:6:1 | evaluate --alloc -
  evaluate --model m.onnx --data npy:X.npy,Y.npy --calib calib.json --alloc a.json --logits z.npy";

#[derive(Parser)]
#[command(name = "evaluate", version, about = "Accuracy, loss, KL, size and BOPs of quantized models", long_about = LONG_ABOUT)]
struct Cli {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Evaluate the FP model (the default when nothing else is asked for).
    #[arg(long)]
    fp: bool,
    /// Evaluate every layer at this option (repeatable), e.g. `w4a8`.
    #[arg(long, value_name = "OPTION")]
    uniform: Vec<String>,
    /// Evaluate the allocation(s) of a file (`alloc.json` or JSON lines from allocate; `-` for
    /// stdin; repeatable).
    #[arg(long, value_name = "FILE")]
    alloc: Vec<String>,
    /// Quantizer parameters (`calib.json` from `quantize calibrate`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["w_calib", "a_calib", "per_tensor", "calib_samples", "calib_seed"])]
    calib: Option<String>,
    #[command(flatten)]
    calibration: CalibArgs,
    /// Training samples to calibrate on when calibrating here.
    #[arg(long, default_value_t = 256, value_name = "N")]
    calib_samples: usize,
    /// Seed of the calibration sample selection.
    #[arg(long, default_value_t = 0, value_name = "S")]
    calib_seed: u64,
    /// Also write every configuration's logits to FILE (.npy, float32 `[C, N, K]`: the
    /// configurations in output order, the samples in data order), e.g. to compare with another
    /// runtime. Written before the metrics.
    #[arg(long, value_name = "FILE")]
    logits: Option<String>,
    /// Load the test images in chunks of at most SIZE of float32 values (bytes, or K/M/G/T in
    /// powers of 1024; at least one batch per chunk) and run every configuration on each chunk
    /// before the next is loaded: a test set larger than memory (a whole ImageNet validation
    /// folder) is evaluated chunk by chunk. The output does not depend on it.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    load_chunk: String,
    /// No notes on stderr.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    clado::cli::main_with_args("evaluate", |cli: Cli| {
        let mut configs = Vec::new();
        if cli.fp || (cli.uniform.is_empty() && cli.alloc.is_empty()) {
            configs.push(Config::Fp);
        }
        for u in &cli.uniform {
            configs.push(Config::Uniform(QuantOption::parse(u)?));
        }
        if cli.alloc.iter().filter(|a| *a == "-").count() > 1 {
            return Err(Error::usage("--alloc -: stdin can be read only once"));
        }
        if cli.alloc.iter().any(|a| a == "-") && cli.calib.as_deref() == Some("-") {
            return Err(Error::usage("--alloc - and --calib -: stdin can be read only once"));
        }
        let quant = match &cli.calib {
            Some(path) => QuantSource::File(path.clone()),
            None => QuantSource::Calibrate {
                settings: cli.calibration.settings()?,
                data: DataArgs {
                    split: Some(clado::data::Split::Train),
                    samples: Some(cli.calib_samples),
                    seed: cli.calib_seed,
                    ..cli.data.clone()
                },
            },
        };
        let load_chunk = clado::cli::parse_size("--load-chunk", &cli.load_chunk)?;
        let stdout = std::io::stdout();
        evaluate::run(
            &cli.model,
            &cli.data,
            &configs,
            &cli.alloc,
            &quant,
            cli.logits.as_deref(),
            load_chunk,
            &mut stdout.lock(),
            cli.quiet,
        )
    })
}
