//! `psd`: make a CLADO matrix convex without changing the answer.
//!
//! Reads an N×N `.npy` matrix G (float64, or float32 promoted), writes a symmetric float64
//! matrix that `allocate` can minimise as a convex quadratic. Three methods ([`Method`]):
//! `shift` (G + λI, the same minimiser), `clip` (the seed's nearest PSD matrix) and `none`
//! (symmetrise only). A report says what the method did to the spectrum and to the objective.
//!
//! The maths is in [`projection`]; [`run`] reads, checks, projects, writes and reports.

pub mod projection;

pub use projection::{
    clip, eigen, eigenvalues, parallelism, project, rounding_tolerance, shift, shift_amount, symmetrise, Method,
    Projection, Spectrum, PARALLEL_DEGREE, ROUNDING_CONSTANT, SHIFT_MARGIN,
};

use clado::cli::Verbosity;
use clado::format::{Index, FORMAT_VERSION};
use clado::io::{check_finite, display_name, read_json, read_matrix, write_json, write_matrix};
use clado::{Error, Result};
use ndarray::Array2;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

const LONG_ABOUT: &str = "\
Make a CLADO matrix G convex (positive semidefinite) so that `allocate` can minimise xᵀGx as a
convex problem, and report what that did to the spectrum and to the objective.

G comes from `perturb`: xᵀGx is the predicted change of the metric for a one-hot choice x (one
option per layer). Estimates can be negative, so G is often indefinite. Three methods:

  shift  G + λI with λ = max(0, m − λ_min(G)), m = 1e-10·‖G‖₂. Every one-hot choice has
         xᵀx = L (the number of layers that are variables), so xᵀ(G + λI)x = xᵀGx + λ·L:
         the same constant for every valid choice, with or without a budget. The minimiser is
         provably unchanged, and predicted values map back by subtracting λ·L (the report gives
         it; pass --index to know L). The margin m keeps λ_min(output) ≥ 0 after rounding; a G
         already positive definite beyond m is left as it is.
  clip   The nearest PSD matrix in Frobenius norm: symmetrise, eigendecompose, set the negative
         eigenvalues to zero (what the seed did). This changes xᵀGx by an amount that depends
         on x, so it can change the answer.
  none   Symmetrise only, (G + Gᵀ)/2, which leaves xᵀGx unchanged for every x (a pipeline
         stage for ablations).

Every method first symmetrises G. The default is `clip`, chosen by measurement on the built-in
Fashion-MNIST ResNet-20 (w2a8,w4a8,w8a8, 256 calibration samples, loss, test top-1 of the
allocations). On the model trained for one epoch, allocations from the shifted G (the exact
minimiser of the raw, indefinite G) collapsed: 31.9 / 63.1 / 59.6 / 59.5 % at 3 / 4 / 5 / 6
average bits against 57.2 / 88.6 / 90.2 / 90.4 % for the clipped G; the raw G rewarded
quantizing layers together through large negative cross terms that do not add up the way the
pairwise model assumes (predicted Δ ≈ −0.5, measured +0.85 on the test set). On the shipped
model (four epochs) the two are close: shift 47.22 / 84.70 / 91.58 / 92.31 / 92.18 % at 2.5 / 3 /
4 / 5 / 6 bits, clip 42.63 / 83.12 / 91.90 / 92.21 / 92.27 %. Clipping removes the directions that
collapsed, so it is the default that never failed; use `shift` for the exact minimiser of G
itself. (`allocate --confidence` and `--pessimistic` take the raw G instead and guard against
noise and model error in the objective.) README.md, Findings, has the whole table.";

const AFTER_LONG_HELP: &str = "\
Report (--report FILE, JSON; a short summary on stderr unless -q):
  n, layers, max_asymmetry (largest |G[i,j] − G[j,i]|), before/after {lambda_min, lambda_max,
  negative_eigenvalues}, tolerance (eigenvalues below −tolerance = 10·N·ε·‖G‖₂ count as
  negative), shift (λ added to the diagonal), objective_offset (λ·L for shift with --index, 0 for
  none, null for clip or without --index), frobenius_moved (‖output − input‖_F),
  frobenius_input, method, seconds (the projection, without I/O).

Exit status: 0 on success; 2 on a bad flag or input (non-square, not 2-D, NaN or infinite entry,
empty or not .npy, index that does not match), with one line on stderr and nothing written.

Example:
  perturb --arch resnet20 --weights r20.pth --data npy:x.npy,y.npy \\
          --options w2a8,w4a8,w8a8 -o G.npy --index index.json &&
  psd < G.npy > Gpsd.npy &&
  allocate --matrix Gpsd.npy --index index.json --avg-bits 4 > alloc.json

  psd --method clip G.npy -o Gclip.npy --index index.json --report psd.json";

/// Command line of `psd`.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "psd",
    version,
    about = "Make a CLADO matrix positive semidefinite: clip (default, the seed's), shift (same minimiser), or symmetrise only",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP
)]
pub struct Args {
    /// Input matrix: an N×N .npy of float64 or float32; `-` reads stdin.
    #[arg(default_value = "-", value_name = "INPUT")]
    pub input: String,

    /// Output matrix (.npy, float64, symmetric), written atomically; `-` writes stdout.
    #[arg(short, long, default_value = "-", value_name = "OUTPUT")]
    pub output: String,

    /// How to make G positive semidefinite (`--help` explains each and why `clip` is the default).
    #[arg(short, long, value_enum, default_value_t = Method::Clip)]
    pub method: Method,

    /// `index.json` written by `perturb` alongside G: gives L, the number of layers that are
    /// variables, so the report can state the offset λ·L that `shift` adds to every objective.
    /// Its variable count must equal N.
    #[arg(long, value_name = "FILE")]
    pub index: Option<String>,

    /// Write the report as JSON to FILE (`-` for stdout when the matrix goes to a file).
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,

    /// Print nothing on stderr but errors.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Say more: list the most negative eigenvalues.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The `--report` document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub input: String,
    pub output: String,
    pub method: Method,
    pub n: usize,
    /// Layers that are variables (distinct `layer` values of the index's variables); `null`
    /// without `--index`.
    pub layers: Option<usize>,
    pub max_asymmetry: f64,
    /// Spectrum of the symmetrised input.
    pub before: Spectrum,
    /// Spectrum of the output, derived from the same eigendecomposition (see [`Projection::after`]).
    pub after: Spectrum,
    /// Eigenvalues below −tolerance count as negative: 10·N·ε·‖G‖₂ (see [`rounding_tolerance`]).
    pub tolerance: f64,
    /// λ added to the diagonal: the offset per unit of xᵀx.
    pub shift: f64,
    /// The constant the method adds to xᵀGx of every one-hot choice, when there is one and it is
    /// known: λ·L for `shift` with `--index`, 0 for `none`.
    pub objective_offset: Option<f64>,
    /// How to read `objective_offset`.
    pub objective_offset_note: String,
    pub frobenius_moved: f64,
    pub frobenius_input: f64,
    /// Seconds spent projecting (eigendecompositions included, file I/O not).
    pub seconds: f64,
}

impl Report {
    pub fn new(args: &Args, layers: Option<usize>, p: &Projection, seconds: f64) -> Self {
        let (objective_offset, objective_offset_note) = match (p.method, layers) {
            (Method::None, _) => (Some(0.0), "symmetrising leaves xᵀGx unchanged for every x".to_string()),
            (Method::Clip, _) => (
                None,
                "clip changes xᵀGx by an amount that depends on x: there is no constant offset".to_string(),
            ),
            (Method::Shift, Some(l)) => (
                Some(p.shift * l as f64),
                format!("every one-hot choice has xᵀx = L = {l}: subtract shift·L from predicted values"),
            ),
            (Method::Shift, None) => (
                None,
                "shift adds `shift` per unit of xᵀx, and xᵀx = L (layers that are variables) for every one-hot \
                 choice; pass --index to get shift·L"
                    .to_string(),
            ),
        };
        Report {
            version: FORMAT_VERSION,
            input: display_name(&args.input, false),
            output: display_name(&args.output, true),
            method: p.method,
            n: p.matrix.nrows(),
            layers,
            max_asymmetry: p.max_asymmetry,
            before: p.before,
            after: p.after,
            tolerance: p.tolerance,
            shift: p.shift,
            objective_offset,
            objective_offset_note,
            frobenius_moved: p.frobenius_moved,
            frobenius_input: p.frobenius_input,
            seconds,
        }
    }

    /// The short human summary printed on stderr.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        let layers = self.layers.map(|l| format!(", L = {l} layers")).unwrap_or_default();
        lines.push(format!(
            "{} → {}: N = {}{layers}, method {}, max asymmetry {:.3e}",
            self.input, self.output, self.n, self.method, self.max_asymmetry
        ));
        for (when, s) in [("before", &self.before), ("after ", &self.after)] {
            lines.push(format!(
                "{when}: λ_min {:.6e}, λ_max {:.6e}, {} negative eigenvalue{} (below −{:.1e})",
                s.lambda_min,
                s.lambda_max,
                s.negative_eigenvalues,
                if s.negative_eigenvalues == 1 { "" } else { "s" },
                self.tolerance
            ));
        }
        lines.push(format!(
            "moved {:.6e} in Frobenius norm (‖G‖_F = {:.6e}) in {:.3} s",
            self.frobenius_moved, self.frobenius_input, self.seconds
        ));
        match (self.method, self.objective_offset) {
            (Method::Shift, Some(offset)) => lines.push(format!(
                "shift λ = {:.6e} adds λ·L = {offset:.6e} to xᵀGx of every valid choice: the minimiser is unchanged",
                self.shift
            )),
            (Method::Shift, None) => lines.push(format!(
                "shift λ = {:.6e} per unit of xᵀx (xᵀx = L for every valid choice; --index gives λ·L): the \
                 minimiser is unchanged",
                self.shift
            )),
            (Method::Clip, _) => {
                lines.push("clip changes xᵀGx by an amount that depends on x: it may change the minimiser".into())
            }
            (Method::None, _) if self.after.negative_eigenvalues > 0 => lines.push(
                "none leaves xᵀGx unchanged; the output is still indefinite (use shift or clip for a convex problem)"
                    .into(),
            ),
            (Method::None, _) => lines.push("none leaves xᵀGx unchanged for every x".into()),
        }
        lines.join("\n")
    }
}

/// Check the arguments before reading anything.
fn check_args(args: &Args) -> Result<()> {
    if args.output == "-" && args.report.as_deref() == Some("-") {
        return Err(Error::usage(
            "--report - and the matrix would both go to stdout: give -o FILE or --report FILE",
        ));
    }
    if let Some(report) = &args.report {
        clado::io::check_distinct_outputs(&[("-o", &args.output), ("--report", report)])?;
    }
    if args.input == "-" && args.index.as_deref() == Some("-") {
        return Err(Error::usage("the matrix and --index cannot both be read from stdin"));
    }
    for (flag, path) in [("-o", Some(&args.output)), ("--report", args.report.as_ref())] {
        let Some(path) = path.filter(|p| *p != "-") else {
            continue;
        };
        let dir = match Path::new(path).parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Error::usage(format!(
                "{flag} {path}: directory {} does not exist",
                dir.display()
            )));
        }
    }
    if args.output == "-" && std::io::stdout().is_terminal() {
        return Err(Error::usage(
            "refusing to write a binary .npy to a terminal: redirect stdout or give -o FILE",
        ));
    }
    Ok(())
}

/// Check that a matrix read from `name` is square, non-empty and finite.
pub fn check_matrix(name: &str, g: &Array2<f64>) -> Result<()> {
    let (rows, cols) = g.dim();
    if rows != cols {
        return Err(Error::input(
            name,
            format!("expected a square N×N matrix, got shape {rows}×{cols}"),
        ));
    }
    if rows == 0 {
        return Err(Error::input(name, "expected a non-empty N×N matrix, got shape 0×0"));
    }
    check_finite(name, g)
}

/// L, the number of layers that are variables, from `index.json`; checks that its variables
/// match the N×N matrix.
pub fn layers_from_index(name: &str, index: &Index, n: usize) -> Result<usize> {
    if index.variables.len() != n {
        return Err(Error::input(
            name,
            format!(
                "has {} variables but the matrix is {n}×{n}: not the index of this matrix",
                index.variables.len()
            ),
        ));
    }
    Ok(index.variables.iter().map(|v| v.layer).collect::<BTreeSet<_>>().len())
}

/// The whole tool: read and check every input, project, write the matrix and the report.
pub fn run(args: &Args) -> Result<()> {
    let verbosity = Verbosity::from_flags(args.quiet, args.verbose);
    check_args(args)?;
    let input_name = display_name(&args.input, false);
    let g = read_matrix(&args.input)?;
    check_matrix(&input_name, &g)?;
    let layers = match &args.index {
        Some(path) => {
            let index: Index = read_json(path)?;
            Some(layers_from_index(&display_name(path, false), &index, g.nrows())?)
        }
        None => None,
    };

    let start = Instant::now();
    let projection = project(&g, args.method, parallelism())?;
    let seconds = start.elapsed().as_secs_f64();

    write_matrix(&args.output, &projection.matrix)?;
    let report = Report::new(args, layers, &projection, seconds);
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    if verbosity >= Verbosity::Normal {
        for line in report.summary().lines() {
            eprintln!("psd: {line}");
        }
    }
    if verbosity >= Verbosity::Verbose {
        let shown: Vec<String> = projection.most_negative.iter().map(|l| format!("{l:.6e}")).collect();
        if !shown.is_empty() {
            eprintln!("psd: most negative eigenvalues before: {}", shown.join(", "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn index_with_variables(variables: &[(usize, usize)]) -> Index {
        let vars: Vec<String> = variables
            .iter()
            .map(|(l, o)| format!(r#"{{"layer":{l},"option":{o}}}"#))
            .collect();
        let text = format!(
            r#"{{"version":1,"arch":"resnet20","layers":[],"options":[],"variables":[{}],"metric":"loss",
                "naive":false,"samples":8,"data":"npy:x.npy,y.npy","seed":0,"fp":{{"loss":0.3,"top1":91.0}}}}"#,
            vars.join(",")
        );
        clado::io::json_from_bytes("index.json", text.as_bytes()).unwrap()
    }

    #[test]
    fn layers_are_the_distinct_layers_of_the_variables() {
        // Layer 2 is pinned (not a variable); layers 0, 1, 3 have 2, 1 and 3 options.
        let index = index_with_variables(&[(0, 0), (0, 2), (1, 1), (3, 0), (3, 1), (3, 2)]);
        assert_eq!(layers_from_index("index.json", &index, 6).unwrap(), 3);
        let e = layers_from_index("index.json", &index, 9).unwrap_err().to_string();
        assert_eq!(
            e,
            "index.json: has 6 variables but the matrix is 9×9: not the index of this matrix"
        );
    }

    #[test]
    fn bad_matrices_are_named_input_errors() {
        let e = check_matrix("G.npy", &Array2::zeros((3, 4))).unwrap_err();
        assert_eq!(e.to_string(), "G.npy: expected a square N×N matrix, got shape 3×4");
        assert_eq!(e.exit_code(), 2);
        let e = check_matrix("G.npy", &Array2::zeros((0, 0))).unwrap_err().to_string();
        assert_eq!(e, "G.npy: expected a non-empty N×N matrix, got shape 0×0");
        let mut g = Array2::<f64>::zeros((3, 3));
        g[[2, 1]] = f64::NAN;
        g[[2, 2]] = f64::INFINITY;
        let e = check_matrix("G.npy", &g).unwrap_err().to_string();
        assert_eq!(e, "G.npy: entry [2, 1] is NaN, expected a finite number");
        check_matrix("G.npy", &Array2::zeros((1, 1))).unwrap();
    }

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from([&["psd"], extra].concat()).unwrap()
    }

    #[test]
    fn report_states_the_offset_each_method_adds() {
        let g = ndarray::array![[1.0, 2.0], [2.0, 1.0]]; // eigenvalues −1 and 3
        let shifted = project(&g, Method::Shift, faer::Par::Seq).unwrap();
        let lambda = 1.0 + SHIFT_MARGIN * 3.0;
        assert!((shifted.shift - lambda).abs() <= 1e-15, "{}", shifted.shift);

        let with_index = Report::new(&args(&["--index", "index.json"]), Some(2), &shifted, 0.1);
        assert_eq!(with_index.objective_offset, Some(shifted.shift * 2.0));
        assert!(with_index.summary().contains("the minimiser is unchanged"));
        let without = Report::new(&args(&[]), None, &shifted, 0.1);
        assert_eq!(without.objective_offset, None);
        assert!(without.objective_offset_note.contains("--index"));
        assert!(without.summary().contains("per unit of xᵀx"));

        let none = Report::new(
            &args(&["-m", "none"]),
            None,
            &project(&g, Method::None, faer::Par::Seq).unwrap(),
            0.1,
        );
        assert_eq!(none.objective_offset, Some(0.0));
        let clip = Report::new(
            &args(&["-m", "clip"]),
            Some(2),
            &project(&g, Method::Clip, faer::Par::Seq).unwrap(),
            0.1,
        );
        assert_eq!(clip.objective_offset, None);
        assert_eq!(clip.before.negative_eigenvalues, 1);
        assert_eq!(clip.after.lambda_min, 0.0);
        assert!(clip.summary().contains("may change the minimiser"));

        let json: serde_json::Value = serde_json::to_value(&with_index).unwrap();
        assert_eq!(json["method"], "shift");
        assert_eq!(json["n"], 2);
        assert_eq!(json["layers"], 2);
        assert_eq!(json["before"]["negative_eigenvalues"], 1);
        assert_eq!(json["input"], "<stdin>");
    }

    #[test]
    fn conflicting_or_unwritable_destinations_are_usage_errors() {
        let e = check_args(&args(&["--report", "-"])).unwrap_err().to_string();
        assert!(e.contains("both go to stdout"), "{e}");
        let e = check_args(&args(&["--index", "-"])).unwrap_err().to_string();
        assert!(e.contains("cannot both be read from stdin"), "{e}");
        let e = check_args(&args(&["-o", "G.npy", "--report", "no/such/dir/psd.json"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--report no/such/dir/psd.json: directory no/such/dir does not exist");
    }

    #[test]
    fn clip_is_the_default_method() {
        assert_eq!(args(&[]).method, Method::Clip);
        assert_eq!(args(&[]).input, "-");
        assert_eq!(args(&[]).output, "-");
    }
}
