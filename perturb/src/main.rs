fn main() -> std::process::ExitCode {
    clado::cli::main("perturb", || Err(clado::Error::other("not implemented yet")))
}
