//! Benchmark of the allocation solver on seeded ResNet-sized instances (see scripts/bench-allocate.sh).
//!
//! cargo run --release -p allocate --example bench -- [--depth 20] [--options 'w{2,4,8}a{2,4,8}']
//!     [--seed 1] [--formulations default,branch-and-bound,linearized,identity,product]
//!     [--sweep avg-bits=2:8:0.5]
//!     [--time-limit 60] [--gap 1e-6] [--no-warm] [--scip-log] [--write DIR]
//!     [--matrix G.npy --index index.json]   (a real matrix instead of the synthetic one)
use allocate::problem::Problem;
use allocate::solve::{Allocator, Formulation, Method, Settings};
use allocate::synthetic;
use clado::budget::Budget;
use clado::options::QuantOption;

/// The allocator of the `allocate` binary, so that the figures are the tool's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU seconds of this process (user + system), from /proc: fairer than wall time on a busy
/// machine; 0 where /proc is missing.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
            .unwrap_or_else(|| default.to_string())
    };
    let depth: usize = get("--depth", "20").parse().unwrap();
    let options = QuantOption::parse_list(&get("--options", "w{2,4,8}a{2,4,8}")).unwrap();
    let seed: u64 = get("--seed", "1").parse().unwrap();
    let time_limit: f64 = get("--time-limit", "60").parse().unwrap();
    let gap: f64 = get("--gap", "1e-6").parse().unwrap();
    let warm = !args.iter().any(|a| a == "--no-warm");
    let sweep = get("--sweep", "avg-bits=2:8:0.5");
    let (kind, range) = sweep.split_once('=').unwrap();
    let r: Vec<f64> = range.split(':').map(|v| v.parse().unwrap()).collect();
    let budgets: Vec<f64> = (0..)
        .map(|i| r[0] + r[2] * i as f64)
        .take_while(|v| *v <= r[1] + 1e-9)
        .collect();

    let layers = synthetic::resnet_layers(depth, 1, 10);
    let (g, index) = match (
        args.iter().position(|a| a == "--matrix"),
        args.iter().position(|a| a == "--index"),
    ) {
        (Some(m), Some(i)) => (
            clado::io::read_matrix(&args[m + 1]).unwrap(),
            clado::io::read_json(&args[i + 1]).unwrap(),
        ),
        _ => synthetic::perturbation_instance(&format!("resnet{depth}"), &layers, &options, seed),
    };
    let layers = &index.layers;
    if let Some(dir) = args.iter().position(|a| a == "--write").map(|i| args[i + 1].clone()) {
        // Write the instance for the command-line tool, and stop.
        clado::io::write_matrix(&format!("{dir}/G.npy"), &g).unwrap();
        clado::io::write_json(&format!("{dir}/index.json"), &index).unwrap();
        eprintln!("wrote {dir}/G.npy and {dir}/index.json");
        return;
    }
    let problem = Problem::new(&index, "index", g, "G", &[], false).unwrap();
    let lmin = allocate::convex::min_eigenvalue(&problem.matrix);
    let negdiag = problem.matrix.diag().iter().filter(|v| **v < 0.0).count();
    println!(
        "# {}: {} layers x {} options, seed {seed}; lambda_min(G) = {lmin:.3e}, {negdiag} negative diagonal entries",
        index.model.arch,
        layers.len(),
        index.options.len()
    );
    let qp = problem.reduced();
    let diag: Vec<f64> = problem.matrix.diag().to_vec();
    let max_diag = diag.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let max_off = qp
        .quad
        .indexed_iter()
        .filter(|((i, j), _)| i != j)
        .fold(0.0f64, |a, (_, v)| a.max(v.abs()));
    let low = problem.objective(&vec![0; qp.sizes.len()]);
    let high = problem.objective(&problem.highest_precision());
    println!("# max|diag| {max_diag:.3e}, max|offdiag| {max_off:.3e}, scale {:.3e}; objective lowest options {low:.4e}, highest {high:.4e}", qp.scale());
    // `default`: what the tool does (--method auto); `branch-and-bound`: --method
    // branch-and-bound; any other name: SCIP with that formulation.
    for f in get("--formulations", "default").split(',') {
        let (method, formulation) = match f {
            "default" => (Method::Auto, Formulation::Auto),
            "branch-and-bound" => (Method::BranchAndBound, Formulation::Auto),
            name => (Method::Scip, Formulation::parse(name).unwrap()),
        };
        let scip_log = args.iter().any(|a| a == "--scip-log");
        let reductions = !args.iter().any(|a| a == "--no-reduce");
        let settings = Settings {
            time_limit,
            gap,
            method,
            formulation,
            reductions,
            scip_log,
            progress_every: None,
        };
        let allocator = Allocator::new(&problem, settings);
        let mut times = Vec::new();
        let mut prev = Vec::new();
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>11} {:>9} {:>8} {:>14} {:>8}",
            "formulation", "budget", "seconds", "cpu", "status", "gap", "nodes", "objective", "removed"
        );
        for &b in &budgets {
            let budget = Budget::from_kind(kind, b).unwrap();
            let cpu0 = cpu_seconds();
            match allocator.solve(&[budget], &prev) {
                Ok(s) => {
                    let cpu = cpu_seconds() - cpu0;
                    println!(
                        "{:<16} {:>9} {:>9.3} {:>9.3} {:>11} {:>9.2e} {:>8} {:>14.8e} {:>8}",
                        f,
                        b,
                        s.seconds,
                        cpu,
                        s.stop.as_str(),
                        s.gap,
                        s.nodes,
                        s.objective,
                        s.removed
                    );
                    times.push((s.seconds, cpu));
                    if warm {
                        prev = vec![s.choice];
                    }
                }
                Err(e) => println!("{:<16} {:>9} {e}", f, b),
            }
        }
        if !times.is_empty() {
            let mut wall: Vec<f64> = times.iter().map(|t| t.0).collect();
            let mut cpu: Vec<f64> = times.iter().map(|t| t.1).collect();
            wall.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            let m = wall.len();
            println!(
                "# {f}: wall median {:.3} s, max {:.3} s; cpu median {:.3} s, max {:.3} s; over {m} budgets",
                wall[m / 2],
                wall[m - 1],
                cpu[m / 2],
                cpu[m - 1]
            );
        }
    }
}
