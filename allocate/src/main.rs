// The branch and bound allocates small vectors at every node; glibc's malloc took 17 % of a
// 60,000-node solve.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clado::cli::main("allocate", || match allocate::cli::parse(std::env::args_os())? {
        Some(args) => allocate::run(&allocate::cli::Config::from_args(&args)?),
        None => Ok(()),
    })
}
