fn main() -> std::process::ExitCode {
    clado::cli::main("allocate", || match allocate::cli::parse(std::env::args_os())? {
        Some(args) => allocate::run(&allocate::cli::Config::from_args(&args)?),
        None => Ok(()),
    })
}
