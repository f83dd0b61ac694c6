fn main() -> std::process::ExitCode {
    clado::cli::main("psd", || Err(clado::Error::other("not implemented yet")))
}
