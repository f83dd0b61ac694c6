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
configuration, in the order given (FP first when --fp is given); all share one FP pass.

Quantizer parameters come from --calib (as written by `quantize calibrate`, so that evaluate
quantizes exactly as perturb did), or are calibrated here on --calib-samples samples of the
training split (the same defaults as perturb's).

Examples:
  evaluate --fp --uniform w8a8 --uniform w4a8 --uniform w2a8
  evaluate --alloc a3.json --alloc a4.json --calib calib.json | jq .top1
  allocate --matrix G.npy --index index.json --avg-bits 4 | evaluate --alloc -";

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
    /// Evaluate an allocation (`alloc.json` from allocate; `-` for stdin; repeatable).
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
        configs.extend(cli.alloc.iter().map(|p| Config::Alloc {
            path: p.clone(),
            choice: Vec::new(),
        }));
        let quant = match &cli.calib {
            Some(path) => QuantSource::File(path.clone()),
            None => QuantSource::Calibrate {
                settings: cli.calibration.settings()?,
                data: DataArgs {
                    data: cli.data.data.clone(),
                    split: Some(clado::data::Split::Train),
                    samples: Some(cli.calib_samples),
                    seed: cli.calib_seed,
                    batch_size: cli.data.batch_size,
                },
            },
        };
        let stdout = std::io::stdout();
        evaluate::run(&cli.model, &cli.data, &configs, &quant, &mut stdout.lock(), cli.quiet)
    })
}
