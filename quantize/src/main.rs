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

const EXPORT_ABOUT: &str = "\
Write a model quantized as an allocation says, as ONNX in the QDQ form that onnxruntime,
TensorRT and OpenVINO read as a quantized model. An ONNX model (--model FILE.onnx) is copied as
it is; a checkpoint ResNet (--arch/--weights, by default the built-in Fashion-MNIST ResNet-20)
is first written as ONNX, opset 21: Conv (no bias) -> BatchNormalization (its running
statistics, epsilon 1e-5; kept separate, as evaluate computes it) -> Relu, the blocks' Add,
GlobalAveragePool -> Flatten -> Gemm, every initializer under its checkpoint name
(layer1.0.conv1.weight), input [N, C, 32, 32] with N free. An allocation of all `fp` layers
writes that float model. Then, for every layer the allocation quantizes:

  weights  integer codes (an initializer NAME.weight_quantized) with one scale per output
           channel (zero point 0) and a DequantizeLinear (axis: the weight's output channel,
           0 for Conv and Gemm transB=1, 1 for MatMul and Gemm transB=0). 8-bit codes are int8;
           4- and 2-bit codes are int4, two per byte, when the model's opset is 18 or newer
           (opset 18-20 is raised to 21, which brings int4 and changes none of the operators
           the tools read); older opsets (13-17) keep their opset and store the codes in int8.
  input    QuantizeLinear -> DequantizeLinear (uint8, per tensor, the calibrated scale and zero
           point), seen by this layer only; below 8 bits a Clip of the dequantized value to
           [-zp*s, (n-zp)*s] follows, which keeps the codes in 0..2^bits-1.
  bias     an Add after the layer, so that it stays float (onnxruntime would otherwise round
           the bias of a Conv/Gemm with quantized inputs to int32 codes).

Layers at `fp` stay as they were. The result computes what `evaluate --alloc` simulates (same
rounding: half to even), and the tests check onnxruntime's logits of exported files against
`evaluate --logits` within 1e-4 of the largest logit (but where a value lies within float
rounding of a quantizer's rounding tie, e.g. 1 of 300 Fashion-MNIST test images under a mixed
allocation of the built-in ResNet-20). Weights are written inside the file
(external data of the source is read in; protobuf caps one file at 2 GiB, larger models are
refused). The metadata (metadata_props, key `clado`, a JSON object) records the model (arch
and the source's digest), the allocation, alloc.json's budget fields (budget, size_bits,
avg_w_bits, bops, predicted_delta) and each layer's input quantizer.

On stderr (unless -q): the file's size and opset, the quantizable layers' weight bytes in the
file next to the allocation's size_bits, and whether 4-/2-bit codes are packed as int4 or sit
in int8 containers.

Refused with exit 2 and nothing written: an allocation or calib.json of another model, a
calib.json without the bit widths or layers the allocation uses, a model below opset 13 (no
per-channel DequantizeLinear), -o naming an input or stdout.

What runs as integer arithmetic: onnxruntime's CPU provider fuses DequantizeLinear -> Conv ->
QuantizeLinear into an integer QLinearConv, but these files quantize each layer's input and
weight, not its output, so onnxruntime dequantizes and computes the convolutions in float;
the file stores the low-bit codes (see the README, Deploying).

Examples:
  quantize export --model resnet18.onnx --alloc alloc.json --calib calib.json -o resnet18.qdq.onnx
  quantize export --alloc alloc.json --calib calib.json -o fmnist-resnet20.qdq.onnx";

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
    /// Write an ONNX model quantized as an allocation says (QuantizeLinear/DequantizeLinear).
    #[command(long_about = EXPORT_ABOUT)]
    Export {
        #[command(flatten)]
        model: ModelArgs,
        /// The allocation (alloc.json from allocate, made for this model; `-` for stdin).
        #[arg(long, value_name = "FILE")]
        alloc: String,
        /// Quantizer parameters of this model (calib.json from quantize calibrate; `-` for stdin).
        #[arg(long, value_name = "FILE")]
        calib: String,
        /// The quantized ONNX model to write (e.g. model.qdq.onnx); not one of the inputs.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
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
        Command::Export {
            model,
            alloc,
            calib,
            output,
            quiet,
        } => quantize::export(&model, &alloc, &calib, &output, quiet),
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
