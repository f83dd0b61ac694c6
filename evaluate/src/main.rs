fn main() -> std::process::ExitCode {
    clado::cli::main("evaluate", || Err(clado::Error::other("not implemented yet")))
}
