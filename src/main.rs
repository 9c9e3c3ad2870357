//! The `coffer` binary: parse, run, exit code.

fn main() -> std::process::ExitCode {
    use coffer::cli::output::{CLOSED_PIPE, closed_pipe, quiet_on_closed_stdout};
    quiet_on_closed_stdout();
    match std::panic::catch_unwind(coffer::cli::main) {
        Ok(code) => code,
        // stdout's reader went away (`coffer ... | head -1`): nothing more to say.
        Err(_) if closed_pipe() => std::process::ExitCode::from(CLOSED_PIPE),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
