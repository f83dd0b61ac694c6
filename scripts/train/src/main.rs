//! `clado-train`: trains the built-in Fashion-MNIST ResNet-20 with candle-nn autograd and writes
//! it as a PyTorch-named `.safetensors` checkpoint plus a JSON report (seed, command, accuracy).

mod fashion_mnist;
mod trainer;

use clado::model::{self, ArchSpec};
use clado::Result;
use clap::Parser;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

const LONG_ABOUT: &str = "\
Trains a CIFAR ResNet (1 input channel, 10 classes) on Fashion-MNIST with candle-nn autograd on \
the CPU and writes the weights in PyTorch naming (conv1.weight, bn1.running_mean, ..., fc.bias) \
as .safetensors, with a JSON report: architecture, seed, the exact command, hyper-parameters, \
per-epoch log, test top-1 on the 10,000 test images and training time.

Preprocessing (docs/definitions.md): pixels scaled to [0, 1], normalised with mean 0.2860 and std 0.3530, \
the 28x28 image placed in a 32x32 canvas that is 0 elsewhere. Training shifts the image by up to \
--max-shift pixels from the centre and flips it left-right at random; testing uses the centred \
image. Same seed and thread count, same weights.

The built-in model models/fmnist-resnet20.safetensors was made with (42 min on one core; \
models/fmnist-resnet20.json has the accuracy, 92.40 % test top-1, and the per-epoch log):

  RAYON_NUM_THREADS=1 cargo run --release -p clado-train -- --epochs 4 --batch-size 64 --lr 0.1 \\
      --warmup-steps 100 --seed 0 --eval-each-epoch \\
      -o models/fmnist-resnet20.safetensors --report models/fmnist-resnet20.json";

/// Train the built-in Fashion-MNIST CIFAR ResNet with candle-nn autograd.
#[derive(Parser, Debug)]
#[command(name = "clado-train", version, about, long_about = LONG_ABOUT)]
struct Args {
    /// Directory with the Fashion-MNIST IDX files (gzipped or not).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Architecture: resnet20, resnet32, resnet44 or resnet56.
    #[arg(long, default_value = "resnet20")]
    arch: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    /// Images per SGD step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (after warm-up; cosine decay to 0 at the last step).
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 200)]
    warmup_steps: usize,
    /// SGD momentum (Nesterov).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// L2 weight decay on every trained tensor.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Largest random shift of the image from the canvas centre, in pixels (0..=2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    max_shift: u8,
    /// Do not flip training images left-right.
    #[arg(long)]
    no_flip: bool,
    /// Seed of the initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on this many training images (a seeded subset; 0 = all 60,000). For timing runs.
    #[arg(long, default_value_t = 0)]
    train_samples: usize,
    /// Evaluate on the first N test images only (0 = all 10,000). For timing runs.
    #[arg(long, default_value_t = 0)]
    test_samples: usize,
    /// Also evaluate on the test set after every epoch (logged only; nothing is tuned on it).
    #[arg(long)]
    eval_each_epoch: bool,
    /// Output checkpoint (.safetensors, written atomically).
    #[arg(short, long, default_value = "models/fmnist-resnet20.safetensors")]
    output: String,
    /// Output JSON report (written atomically).
    #[arg(long, default_value = "models/fmnist-resnet20.json")]
    report: String,
}

#[derive(Serialize)]
struct Report {
    arch: String,
    in_channels: usize,
    num_classes: usize,
    dataset: &'static str,
    preprocessing: &'static str,
    seed: u64,
    command: String,
    epochs: usize,
    hyper: trainer::Hyper,
    train_samples: usize,
    test_samples: usize,
    test_top1: f64,
    test_loss: f64,
    train_seconds: f64,
    threads: usize,
    epoch_log: Vec<trainer::EpochLog>,
}

fn run(args: &Args) -> Result<()> {
    let arch = model::arch_from_name(&args.arch)?;
    if args.epochs == 0 || args.batch_size < 2 {
        return Err(clado::Error::usage(
            "--epochs must be >= 1 and --batch-size >= 2 (BatchNorm needs a batch)",
        ));
    }
    let spec = ArchSpec::new(&arch, 1, fashion_mnist::CLASSES);
    let mut train = fashion_mnist::read_split(&args.data, "train")?;
    let mut test = fashion_mnist::read_split(&args.data, "t10k")?;
    if args.test_samples > 0 && args.test_samples < test.len() {
        test.images
            .truncate(args.test_samples * fashion_mnist::SIDE * fashion_mnist::SIDE);
        test.labels.truncate(args.test_samples);
    }
    if args.train_samples > 0 && args.train_samples < train.len() {
        train = subset(&train, args.train_samples, args.seed);
    }
    let hyper = trainer::Hyper {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        nesterov: true,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps,
        max_shift: args.max_shift as usize,
        horizontal_flip: !args.no_flip,
        seed: args.seed,
    };
    eprintln!(
        "clado-train: {} on {} training images, {hyper:?}",
        arch.name,
        train.len()
    );
    let started = Instant::now();
    let (state, epoch_log) = trainer::train(spec, &hyper, &train, args.eval_each_epoch.then_some(&test))?;
    let train_seconds = started.elapsed().as_secs_f64();

    // Measure the weights as saved (the im2col conv is tested equal to candle's, and faster).
    let backend = model::ConvBackend::Im2col;
    let net = model::CifarResNet::from_state_dict_with_backend(spec, &state, backend, &candle_core::Device::Cpu)?;
    let eval = trainer::evaluate(&net, &test, 500)?;
    eprintln!(
        "clado-train: test top1 {:.4}, loss {:.4}, trained in {train_seconds:.0} s",
        eval.top1, eval.loss
    );

    let argv: Vec<String> = std::env::args().skip(1).collect();
    let report = Report {
        arch: arch.name.to_string(),
        in_channels: spec.in_channels,
        num_classes: spec.num_classes,
        dataset: "fashion-mnist",
        preprocessing: "x/255, (x-0.2860)/0.3530, zero-pad 28x28 -> 32x32 (centred)",
        seed: args.seed,
        command: reproduce_command(&argv),
        epochs: args.epochs,
        hyper,
        train_samples: train.len(),
        test_samples: test.len(),
        test_top1: eval.top1,
        test_loss: eval.loss,
        train_seconds,
        threads: rayon::current_num_threads(),
        epoch_log,
    };
    clado::checkpoint::save_safetensors(&args.output, &state)?;
    let mut json = serde_json::to_string_pretty(&report).map_err(clado::Error::other)?;
    json.push('\n');
    clado::io::write_bytes(&args.report, json.as_bytes())?;
    eprintln!("clado-train: wrote {} and {}", args.output, args.report);
    Ok(())
}

/// The command line that reproduces this run: the build profile and the thread count (results
/// are independent of it, speed is not) as they were.
fn reproduce_command(argv: &[String]) -> String {
    let env = match std::env::var("RAYON_NUM_THREADS") {
        Ok(n) => format!("RAYON_NUM_THREADS={n} "),
        Err(_) => String::new(),
    };
    let profile = if cfg!(debug_assertions) { "" } else { "--release " };
    format!("{env}cargo run {profile}-p clado-train -- {}", argv.join(" "))
}

/// A seeded subset of `n` training images.
fn subset(split: &fashion_mnist::Split, n: usize, seed: u64) -> fashion_mnist::Split {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..split.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order.truncate(n);
    let images = order.iter().flat_map(|&i| split.image(i).iter().copied()).collect();
    let labels = order.iter().map(|&i| split.labels[i]).collect();
    fashion_mnist::Split { images, labels }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    clado::cli::main("clado-train", || run(&args))
}
