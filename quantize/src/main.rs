use clado::calib;
use clado::options::QuantOption;
use clado::setup::{CalibArgs, DataArgs, ModelArgs};
use clap::{Parser, Subcommand};
use quantize::Params;
use std::collections::BTreeSet;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONG_ABOUT: &str = "\
Calibrate quantizer parameters, or apply an allocation to a checkpoint.

`quantize calibrate` writes calib.json: for every quantizable layer, the weight scales per bit
width (symmetric, narrow range, per output channel unless --per-tensor) and the range of its
input activation per bit width (asymmetric, per tensor), from the FP model's activations on
calibration samples. perturb and evaluate read it with --calib, so all tools quantize alike.

`quantize apply` writes a .safetensors checkpoint whose weights are fake-quantized as an
allocation says; it loads into the same architecture here and in PyTorch. Its metadata (one key,
`clado`, a JSON object) records the model (`arch` and the weights file's `digest`), the
allocation (layer → option) and each layer's input quantizer (bits, range, scale, zero point):
activations are quantized at run time, so evaluating this checkpoint at FP quantizes weights
only (`evaluate --alloc` quantizes both). --export-int also writes the integer weight codes
(int8) with their scales. The allocation file must hold one allocation (of a sweep's JSON
lines, pick one: `sed -n 3p front.jsonl | quantize apply --alloc - ...`), made for this model;
a calib.json must be of this model too (both record the architecture and the weights digest).
Standard input (--alloc - or --calib -) is read to its end before any other file.

Same inputs, same bytes: calib.json and the checkpoints are byte-identical across runs, thread
counts (RAYON_NUM_THREADS) and --batch-size.

Examples:
  quantize calibrate --options 'w{2,4,8}a{2,4,8}' --samples 256 -o calib.json
  perturb --calib calib.json --options w2a8,w4a8,w8a8 -o G.npy --index index.json
  quantize apply --alloc alloc.json --calib calib.json -o r20-mixed.safetensors --export-int r20-int.safetensors";

#[derive(Parser)]
#[command(name = "quantize", version, about = "Calibrate quantizers (calib.json) and apply allocations", long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write calib.json: weight scales and activation ranges per bit width.
    Calibrate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        data: DataArgs,
        /// Options to calibrate for (their bit widths), e.g. `w{2,4,8}a{2,4,8}`.
        #[arg(long, value_name = "LIST", default_value = "w{2,4,8}a{2,4,8}")]
        options: String,
        #[command(flatten)]
        calib: CalibArgs,
        /// calib.json to write (`-` for stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE", default_value = "-")]
        output: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a checkpoint with the weights fake-quantized as an allocation says.
    Apply {
        #[command(flatten)]
        model: ModelArgs,
        /// The allocation (alloc.json from allocate; `-` for stdin).
        #[arg(long, value_name = "FILE")]
        alloc: String,
        /// Quantizer parameters (calib.json). Without it, calibrate on --data samples.
        #[arg(long, value_name = "FILE")]
        calib: Option<String>,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        flags: CalibArgs,
        /// The fake-quantized checkpoint (.safetensors) to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
        /// Also write the integer weight codes and scales (.safetensors, int8 + float32).
        #[arg(long, value_name = "FILE")]
        export_int: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
}

fn main() -> std::process::ExitCode {
    clado::cli::main_with_args("quantize", |cli: Cli| match cli.command {
        Command::Calibrate {
            model,
            mut data,
            options,
            calib,
            output,
            quiet,
        } => {
            let options = QuantOption::parse_list(&options)?;
            let (w, a): (BTreeSet<u8>, BTreeSet<u8>) = calib::bits_needed(&options);
            data.samples.get_or_insert(256);
            quantize::calibrate(&model, &data, &w, &a, calib.settings()?, &output, quiet)
        }
        Command::Apply {
            model,
            alloc,
            calib,
            mut data,
            flags,
            output,
            export_int,
            quiet,
        } => {
            let mut outputs = vec![("-o", output.as_str())];
            outputs.extend(export_int.as_deref().map(|p| ("--export-int", p)));
            clado::io::check_distinct_outputs(&outputs)?;
            let params = match calib {
                Some(path) => Params::File(path),
                None => {
                    data.samples.get_or_insert(256);
                    Params::Calibrate {
                        data,
                        settings: flags.settings()?,
                    }
                }
            };
            quantize::apply(&model, &alloc, &params, &output, export_int.as_deref(), quiet)
        }
    })
}
