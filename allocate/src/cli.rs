//! Command-line arguments, checked in one pass into a [`Config`] before any file is read.

use crate::solve::{Formulation, Method, Settings};
use clado::budget::Budget;
use clado::cli::Verbosity;
use clado::{Error, Result};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use std::ffi::OsString;

const LONG_ABOUT: &str = "\
Choose one quantization option per layer minimising the predicted change of the metric xᵀGx,
under budgets on model size, average weight bits or BOPs, and say how good the answer is.

G.npy (N×N float64) and index.json come from `perturb` (or `psd`); variable v of G is the pair
(layer, option) listed at position v of index.json's `variables`. Layers listed under `fixed` in
the index are not variables and count in budgets at their fixed option. The answer is written
as alloc.json (or JSON lines with --sweep): every layer's option and bits, the predicted Δ
(xᵀGx with the matrix given), size_bits, avg_w_bits, BOPs, and the solver's status, objective,
proven lower bound, gap and seconds.

The problem is solved exactly. Options that cannot be optimal are removed first: those over
budget, those dominated by another option of the same layer, and those a Lagrangian lower bound
(the dual of the local-polytope relaxation) proves worse than a heuristic answer. What remains
is enumerated when small, or given to SCIP as an integer linear program over the local polytope
of the pairwise terms (y_uv = x_u·x_v with marginal constraints): exact, and with a strong
relaxation even for indefinite G. When G with its entries between options of one layer (which
never count) is positive semidefinite, as after `psd --method clip`, the tool's own branch and
bound on the exact convex relaxation solves it instead (its nodes: a quadratic program, by an
active-set method, and once few options are left the local-polytope bound too), after SCIP's
linearisation for a sixth of the time limit unless the Lagrangian bound is weak (it closes
`psd --method shift` matrices). A time limit always applies: on a time-out the best
allocation found is written with its proven bound and gap, and a warning goes to stderr. A
solve that takes longer than 10 s says so on stderr every 10 s (nodes, best objective, gap;
--progress-every, none with -q).

Inputs belong together: the index must list as many variables as G has rows (a message names
both files and both sizes), and --se must be the standard errors perturb wrote with this index
(index.json records their digest, matrix.se_digest). alloc.json records the model of the index
(architecture and weights digest), so `evaluate` and `quantize apply` refuse it for another model.
Standard input (--matrix -, --index - or --se -) is read to its end before the other files, so
`perturb -o - --index index.json | psd | allocate --matrix - --index index.json` reads the index
of this run. --sweep writes JSON lines, which `evaluate --alloc` reads: each line is evaluated.

Same inputs, same bytes: alloc.json is byte-identical across runs and thread counts but for
`solver.seconds` (wall clock) — and, when a solve stops at --time-limit, for whatever the search
had reached by then.

Without a budget the tool runs the sanity check: the answer should be the highest-precision
option everywhere; when it is not, stderr and notes.sanity name the deviating layers and the
negative estimates (G[v,v] < 0, or negative cross terms) that make the deviation pay.

Noise (--confidence Z with --se): every entry of G is a mean over calibration samples with a
standard error. For a choice x and the highest-precision choice x₀, the predicted difference
Δ(x) − Δ(x₀) sums the entries of x not in x₀ minus those of x₀ not in x, so its standard error
is at most the sum of their standard errors, whatever the correlations (the triangle inequality
for standard deviations). The tool minimises that difference plus Z times this bound: an
upper confidence bound, itself a quadratic form in x (G + Z·P, P = the standard errors with the
sign of x₀'s own entries flipped), solved exactly like G. x₀ scores 0, so a layer leaves its
highest precision only where the saving is significant at level Z; without a budget the
answer is the highest precision everywhere unless an improvement is significant. notes.confidence
reports the plain estimate, the bound and the reference.

Model error (--pessimistic): G is exact for one or two layers, but xᵀGx sums every pair, and a
negative cross term (two layers quantized together hurt less than separately, e.g. once the
loss saturates) adds up over many pairs to predictions no model can reach (with 9 options the
raw minimiser predicted −9 nats of loss). The rule counts every negative cross term as 0 unless
both variables are the highest precision: an upper estimate of the prediction relative to x₀,
and of the true change whenever the dropped interactions are not harmful. Without a budget a
layer then leaves x₀ only on its own estimates (with --confidence, only when significant).
notes.pessimistic reports the benefit ignored.

Exit status: 0 success (also after a time-out, with the gap reported); 1 the budget is
infeasible (the message names the smallest feasible budget); 2 bad usage or input.";

const AFTER_LONG_HELP: &str = "\
Budgets (combinable; all must hold):
  --avg-bits B     Σ_l params_l·w_bits_l ≤ B·Σ_l params_l   (FP counts 32 bits)
  --size-bits N    Σ_l params_l·w_bits_l ≤ N
  --size-mb X      the same in megabytes of 10^6 bytes: ≤ X·8·10^6 bits
  --bops G         Σ_l MACs_l·w_bits_l·a_bits_l ≤ G        (one input sample)

Examples:
  # the pipeline: perturbation matrix, then allocations
  perturb --arch resnet20 --weights r20.pth --data npy:x.npy,y.npy \\
          --options w2a8,w4a8,w8a8 -o G.npy --index index.json
  allocate --matrix G.npy --index index.json --avg-bits 4 > alloc.json
  evaluate --arch resnet20 --weights r20.pth --data fashion-mnist:DIR --alloc alloc.json

  # sanity check (no budget), then a Pareto sweep with the first and last layers at 8 bits
  allocate --matrix G.npy --index index.json -o unconstrained.json
  allocate --matrix G.npy --index index.json --pin conv1=w8a8,fc=w8a8 \\
           --sweep avg-bits=2:8:0.25 > front.jsonl
  evaluate --alloc front.jsonl         # one metrics line per allocation

  # in one pipe: G on stdout, the index written before G's last byte
  perturb --options w2a8,w8a8 -o - --index index.json | psd \\
      | allocate --matrix - --index index.json --avg-bits 4 | evaluate --alloc -

  # do not chase calibration noise: a pessimistic objective from perturb's standard errors
  perturb ... -o G.npy --index index.json --se G.se.npy
  allocate --matrix G.npy --index index.json --se G.se.npy --confidence 2 --avg-bits 4

  # the seed's ZeroQ-like baseline: only the diagonal of G
  allocate --matrix G.npy --index index.json --avg-bits 4 --naive";

/// `allocate --help` is the manual (the long help text below).
#[derive(Debug, Parser)]
#[command(
    name = "allocate",
    version,
    about = "Choose one quantization option per layer minimising xᵀGx under budgets, solved exactly.",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP
)]
pub struct Args {
    /// The perturbation matrix G (N×N float64 .npy; `-` reads stdin).
    #[arg(long, value_name = "G.npy")]
    pub matrix: String,

    /// What the rows of G mean (index.json from perturb; `-` reads stdin).
    #[arg(long, value_name = "index.json")]
    pub index: String,

    /// Budget: average weight bits per parameter at most B.
    #[arg(long, value_name = "B", allow_hyphen_values = true)]
    pub avg_bits: Option<String>,

    /// Budget: weight bits of the model at most N.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub size_bits: Option<String>,

    /// Budget: weight size at most X megabytes (10^6 bytes).
    #[arg(long, value_name = "X", allow_hyphen_values = true)]
    pub size_mb: Option<String>,

    /// Budget: bit operations (MACs × w_bits × a_bits) at most G per input sample.
    #[arg(long, value_name = "G", allow_hyphen_values = true)]
    pub bops: Option<String>,

    /// Solve for every budget START, START+STEP, …, STOP of one kind (avg-bits, size-bits,
    /// size-mb or bops) and write one allocation per line (JSON lines). Budgets of other kinds
    /// given as flags hold for every line. Each solve starts from the previous answer.
    #[arg(long, value_name = "KIND=START:STOP:STEP")]
    pub sweep: Option<String>,

    /// Force layers to options, e.g. `conv1=w8a8,fc=w8a8` (repeatable).
    #[arg(long, value_name = "LAYER=OPTION", value_delimiter = ',')]
    pub pin: Vec<String>,

    /// Optimise only the diagonal of G (no cross-layer terms; with metric kl, ZeroQ's
    /// sensitivity). The reported predicted_delta still uses the whole matrix.
    #[arg(long)]
    pub naive: bool,

    /// Standard errors of G's entries (same shape as G, e.g. `perturb --se G.se.npy`). With it,
    /// alloc.json reports a bound on the standard error of the predicted Δ.
    #[arg(long, value_name = "G.se.npy")]
    pub se: Option<String>,

    /// Minimise a pessimistic estimate instead of xᵀGx: the upper Z-standard-error bound on
    /// the predicted Δ relative to the highest precision everywhere (needs --se; see the
    /// long help). 2 is a sound default; 0 is the plain objective.
    #[arg(long, value_name = "Z", requires = "se", allow_negative_numbers = true)]
    pub confidence: Option<f64>,

    /// Count on no benefit from quantizing layers together: negative cross terms of G score 0
    /// unless both variables are the highest precision (see the long help, Model error).
    #[arg(long)]
    pub pessimistic: bool,

    /// Seconds for one solve; the best allocation found by then is written with its gap.
    #[arg(long, value_name = "S", default_value_t = 60.0, allow_negative_numbers = true)]
    pub time_limit: f64,

    /// While SCIP or the branch and bound searches, a progress line on stderr every S seconds
    /// of a solve (nodes, best objective, gap); 0 for none. -q prints none.
    #[arg(long, value_name = "S", default_value_t = PROGRESS_EVERY, allow_negative_numbers = true)]
    pub progress_every: f64,

    /// Relative gap (objective − bound) / max(|objective|, |bound|) at which a solve may stop.
    #[arg(long, value_name = "G", default_value_t = crate::solve::OPTIMALITY_GAP, allow_negative_numbers = true)]
    pub gap: f64,

    /// How to solve: `auto` enumerates small problems, gives convex ones (G with its entries
    /// between options of one layer PSD, e.g. after `psd --method clip`) to the branch and
    /// bound and the rest to SCIP; `scip`, `enumerate` and `branch-and-bound` force one.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    pub method: MethodArg,

    /// SCIP formulation: auto (default: linearized; with `--method scip`, when G, with its
    /// entries between options of one layer, is PSD, linearized for 1/6 of the time limit (1/30
    /// when its Lagrangian bound lies below 0 under a positive incumbent) and then, unless
    /// finished, identity from its best choice; `--method auto` gives such a G to the branch
    /// and bound instead). For experiments:
    /// linearized (local polytope), product (the seed's dense products of binaries), projected,
    /// projected-rows, projected-diag (convex factored forms after an exact diagonal shift on
    /// the one-hot affine hull), identity (convex, G + λI), sdp (convex, with the entries between
    /// options of one layer, which never count, chosen by the semidefinite relaxation: a stronger
    /// root bound, slower nodes), and the `-split` convex variants.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub formulation: String,

    /// Skip the exact reductions before the search (for experiments: slower, same answer).
    #[arg(long)]
    pub no_reduce: bool,

    /// Output file (written atomically); `-` is stdout.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub output: String,

    /// Print only errors and time-out warnings on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Say more on stderr: one line per solve with method, nodes, bound and gap.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Auto,
    Scip,
    Enumerate,
    BranchAndBound,
}

/// Parse the command line. `Ok(None)` after `--help` or `--version` was printed; a usage
/// error is one line (clap's own message, without the usage block).
pub fn parse<I, T>(args: I) -> Result<Option<Args>>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match Args::command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            e.print().map_err(|io| Error::io("<stdout>", io))?;
            return Ok(None);
        }
        Err(e) => {
            // clap's message up to the usage block, on one line.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            return Err(Error::usage(format!("{message} (see allocate --help)")));
        }
    };
    Args::from_arg_matches(&matches)
        .map(Some)
        .map_err(|e| Error::usage(e.to_string()))
}

/// A sweep over one budget kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub kind: &'static str,
    pub values: Vec<f64>,
}

/// At most this many budgets in one sweep.
pub const MAX_SWEEP: usize = 10_000;

/// Default seconds between progress lines of a solve (`--progress-every`): solves shorter than
/// this print none.
pub const PROGRESS_EVERY: f64 = 10.0;

/// Everything the run needs, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub matrix: String,
    pub index: String,
    pub output: String,
    /// Budgets that hold for every solve.
    pub budgets: Vec<Budget>,
    pub sweep: Option<Sweep>,
    /// (layer, option) pairs.
    pub pins: Vec<(String, String)>,
    pub naive: bool,
    /// Standard errors of G (`--se`).
    pub se: Option<String>,
    /// Z of the confidence rule; 0 = the plain objective.
    pub confidence: f64,
    /// The model-error rule (`--pessimistic`).
    pub pessimistic: bool,
    pub settings: Settings,
    pub verbosity: Verbosity,
}

impl Config {
    /// Check the arguments against each other.
    pub fn from_args(a: &Args) -> Result<Config> {
        let mut budgets = Vec::new();
        for (kind, value) in [
            ("avg-bits", &a.avg_bits),
            ("size-bits", &a.size_bits),
            ("size-mb", &a.size_mb),
            ("bops", &a.bops),
        ] {
            if let Some(v) = value {
                budgets.push(
                    Budget::parse(&format!("{kind}={v}"))
                        .map_err(|_| Error::usage(format!("--{kind} {v}: expected a positive number")))?,
                );
            }
        }
        let sweep = a.sweep.as_deref().map(parse_sweep).transpose()?;
        if let Some(s) = &sweep {
            if budgets.iter().any(|b| b.kind() == s.kind) {
                return Err(Error::usage(format!(
                    "--sweep {} and --{} conflict: a sweep sets that budget itself",
                    a.sweep.as_deref().unwrap_or_default(),
                    s.kind
                )));
            }
        }
        if a.matrix == "-" && a.index == "-" {
            return Err(Error::usage("--matrix and --index cannot both read stdin"));
        }
        if !(a.progress_every.is_finite() && a.progress_every >= 0.0) {
            return Err(Error::usage(format!(
                "--progress-every {}: expected a number of seconds ≥ 0 (0: no progress lines)",
                a.progress_every
            )));
        }
        if !(a.time_limit.is_finite() && a.time_limit > 0.0) {
            return Err(Error::usage(format!(
                "--time-limit {}: expected a positive number of seconds",
                a.time_limit
            )));
        }
        if !(a.gap.is_finite() && (0.0..1.0).contains(&a.gap)) {
            return Err(Error::usage(format!("--gap {}: expected a number in [0, 1)", a.gap)));
        }
        let confidence = a.confidence.unwrap_or(0.0);
        if !(confidence.is_finite() && confidence >= 0.0) {
            return Err(Error::usage(format!(
                "--confidence {confidence}: expected a number of standard errors ≥ 0, e.g. 2"
            )));
        }
        if a.se.as_deref() == Some("-") && (a.matrix == "-" || a.index == "-") {
            return Err(Error::usage("--se and --matrix/--index cannot both read stdin"));
        }
        let mut pins = Vec::new();
        for p in &a.pin {
            let (layer, option) = p
                .split_once('=')
                .ok_or_else(|| Error::usage(format!("--pin {p}: expected LAYER=OPTION, e.g. conv1=w8a8")))?;
            pins.push((layer.trim().to_string(), option.trim().to_string()));
        }
        let method = match a.method {
            MethodArg::Auto => Method::Auto,
            MethodArg::Scip => Method::Scip,
            MethodArg::Enumerate => Method::Enumerate,
            MethodArg::BranchAndBound => Method::BranchAndBound,
        };
        let settings = Settings {
            time_limit: a.time_limit,
            gap: a.gap,
            method,
            formulation: Formulation::parse(&a.formulation)?,
            reductions: !a.no_reduce,
            scip_log: false,
            progress_every: (a.progress_every > 0.0 && !a.quiet).then_some(a.progress_every),
        };
        Ok(Config {
            matrix: a.matrix.clone(),
            index: a.index.clone(),
            output: a.output.clone(),
            budgets,
            sweep,
            pins,
            naive: a.naive,
            se: a.se.clone(),
            confidence,
            pessimistic: a.pessimistic,
            settings,
            verbosity: Verbosity::from_flags(a.quiet, a.verbose),
        })
    }
}

/// Parse `avg-bits=2:8:0.25`.
pub fn parse_sweep(text: &str) -> Result<Sweep> {
    let bad = |why: &str| {
        Error::usage(format!(
            "--sweep {text}: {why} (expected KIND=START:STOP:STEP, e.g. avg-bits=2:8:0.25)"
        ))
    };
    let (kind, range) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
    let kind = Budget::from_kind(kind, 1.0)
        .map_err(|_| bad("unknown budget kind"))?
        .kind();
    let parts: Vec<&str> = range.split(':').collect();
    if parts.len() != 3 {
        return Err(bad("expected three numbers"));
    }
    let num = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| bad(&format!("'{s}' is not a number")))
    };
    let (start, stop, step) = (num(parts[0])?, num(parts[1])?, num(parts[2])?);
    if start <= 0.0 {
        return Err(bad("budgets must be positive"));
    }
    if step <= 0.0 || stop < start {
        return Err(bad("STEP must be positive and STOP at least START"));
    }
    let count = ((stop - start) / step * (1.0 + 1e-12)).floor() as usize + 1;
    if count > MAX_SWEEP {
        return Err(bad(&format!("{count} budgets, at most {MAX_SWEEP}")));
    }
    // Multiples of the step, rounded to 12 significant digits so 2 + 3·0.1 prints as 2.3.
    let values = (0..count)
        .map(|i| round_significant(start + step * i as f64, 12))
        .collect();
    Ok(Sweep { kind, values })
}

fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_reject_nonsense() {
        let s = parse_sweep("avg-bits=2:3:0.25").unwrap();
        assert_eq!(s.kind, "avg-bits");
        assert_eq!(s.values, vec![2.0, 2.25, 2.5, 2.75, 3.0]);
        assert_eq!(parse_sweep("bops=1e6:1e6:1").unwrap().values, vec![1e6]);
        assert_eq!(
            parse_sweep("size-mb=0.1:0.4:0.1").unwrap().values,
            vec![0.1, 0.2, 0.3, 0.4]
        );
        for bad in [
            "avg-bits=2:8",
            "colour=1:2:1",
            "avg-bits=0:2:1",
            "avg-bits=3:2:1",
            "avg-bits=2:8:0",
            "avg-bits",
            "avg-bits=1:1e9:1e-3",
        ] {
            assert!(parse_sweep(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conflicting_and_bad_flags_are_usage_errors() {
        let args = |extra: &[&str]| {
            let mut v = vec!["allocate", "--matrix", "G.npy", "--index", "index.json"];
            v.extend_from_slice(extra);
            parse(v).unwrap().unwrap()
        };
        assert!(Config::from_args(&args(&["--avg-bits", "4", "--bops", "1e9"])).is_ok());
        for bad in [
            &["--sweep", "avg-bits=2:8:1", "--avg-bits", "4"][..],
            &["--avg-bits", "-1"],
            &["--avg-bits", "0"],
            &["--size-mb", "x"],
            &["--time-limit", "0"],
            &["--gap", "1.5"],
            &["--pin", "conv1"],
            &["--formulation", "magic"],
            &["--se", "S.npy", "--confidence", "-1"],
            &["--se", "S.npy", "--confidence", "inf"],
        ] {
            let e = Config::from_args(&args(bad)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        let e = parse([
            "allocate",
            "--matrix",
            "G.npy",
            "--index",
            "i.json",
            "--confidence",
            "2",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--se") && !e.contains('\n'), "--confidence needs --se: {e}");
        let e = parse(["allocate", "--matrix", "G.npy"]).unwrap_err().to_string();
        assert!(e.contains("--index") && !e.contains('\n'), "{e}");
    }
}
