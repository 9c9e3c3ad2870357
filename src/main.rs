//! The `coffer` binary: parse, run, exit code.

fn main() -> std::process::ExitCode {
    coffer::cli::main()
}
