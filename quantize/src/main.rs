fn main() -> std::process::ExitCode {
    clado::cli::main("quantize", || Err(clado::Error::other("not implemented yet")))
}
