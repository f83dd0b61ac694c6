fn main() -> std::process::ExitCode {
    clado::cli::main_with_args("psd", |args: psd::Args| psd::run(&args))
}
