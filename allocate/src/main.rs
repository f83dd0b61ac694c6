fn main() -> std::process::ExitCode {
    clado::cli::main("allocate", || Err(clado::Error::other("not implemented yet")))
}
