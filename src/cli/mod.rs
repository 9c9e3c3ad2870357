//! The command line: argument parsing (clap derive), the passphrase, human and JSON
//! output, and exit codes. It knows no byte format; it calls the engine.

mod archive;
mod args;
mod backup;
mod check;
mod commands;
mod copy;
mod daemon;
mod docker;
mod docs;
mod explore;
mod lifecycle;
mod mount;
pub mod output;
mod password;
mod rewrite;
mod sync;
pub(crate) mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use zeroize::Zeroizing;

pub use args::Cli;

use crate::docker::DockerError;
use crate::engine::EngineError;
use crate::engine::session::{self, OpenOptions, PassphraseError, SessionError};
use crate::error::ErrorClass;

/// Exit codes, in the style of restic. Documented in the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any error.
    pub const ERROR: u8 = 1;
    /// Finished, with a result that needs attention: a backup or import that lacks files it
    /// could not read, or a `check` that found no damage but snapshots that vanished.
    pub const PARTIAL: u8 = 3;
    /// No repository at the given location.
    pub const NO_REPOSITORY: u8 = 10;
    /// The repository is locked by another process.
    pub const LOCKED: u8 = 11;
    /// Wrong passphrase (for every key file tried).
    pub const WRONG_PASSWORD: u8 = 12;
    /// Interrupted (SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// Parse the command line, run, and map the result to an exit code.
pub fn main() -> ExitCode {
    // Called as `backup` (the old image's manual trigger, `docker exec <c> backup`): the
    // same as `coffer trigger`.
    // Called as `restore`: `coffer restore` (`docker exec <c> restore --snapshot latest ...`).
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_os_string());
    if called_as.as_deref().is_some_and(|n| n == "backup") {
        argv.insert(1, "trigger".into());
    } else if called_as.as_deref().is_some_and(|n| n == "restore") {
        argv.insert(1, "restore".into());
    }
    let mut cli = Cli::parse_from(argv);
    cli.global = cli.global.with_io();
    if matches!(
        cli.command,
        args::Command::Daemon(_) | args::Command::RunJob(_) | args::Command::Trigger(_)
    ) {
        // The daemon logs one line per step by default.
        let mut g = cli.global.clone();
        g.verbose = g.verbose.max(1);
        output::init_logging(&g);
    } else {
        output::init_logging(&cli.global);
    }
    // `mount` handles its own: the first signal unmounts.
    if !matches!(cli.command, args::Command::Mount(_)) {
        handle_signals(cli.global.io.clone());
    }
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if output::is_closed_pipe(&e) => ExitCode::from(output::CLOSED_PIPE),
        Err(e) => {
            let code = exit_code_of(&e);
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(code)
        }
    }
}

/// On SIGINT or SIGTERM: remove this process's locks and exit with 130 (143 for SIGTERM).
/// What was written so far stays: complete packs whose index was not yet written, which no
/// snapshot names. They are harmless; `coffer repair index` indexes them (and so lets later
/// backups reuse their blobs).
fn handle_signals(io: crate::runtime::IoRuntime) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // A daemon or run-job run in progress is recorded as interrupted (and notified by
            // the next run).
            crate::daemon::state::record_interrupted(if sig == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            });
            session::release_all_locks();
            eprintln!("interrupted: this run's locks were removed");
            // Containers this run stopped run again before the process ends.
            for name in crate::docker::restart_stopped_containers(&io) {
                eprintln!("interrupted: started container {name} again");
            }
            let helpers = crate::docker::helper::remove_helpers(&io);
            if helpers > 0 {
                eprintln!("interrupted: removed {helpers} helper container(s)");
            }
            std::process::exit(if sig == SIGINT {
                exit::INTERRUPTED.into()
            } else {
                143
            });
        }
    });
}

fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The exit code of a failed command: from the class of the error it returned (under any
/// context the command added). An error of another type is a plain error.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    let class = if let Some(e) = e.downcast_ref::<EngineError>() {
        e.class()
    } else if let Some(e) = e.downcast_ref::<SessionError>() {
        e.class()
    } else if let Some(e) = e.downcast_ref::<DockerError>() {
        e.class()
    } else {
        return exit::ERROR;
    };
    exit_code(class)
}

/// The exit code of an error class.
fn exit_code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::NoRepository => exit::NO_REPOSITORY,
        ErrorClass::Locked => exit::LOCKED,
        ErrorClass::WrongPassword => exit::WRONG_PASSWORD,
        // Interrupted runs end in the signal handler with 130 or 143 before an error gets
        // here; one that still does is a plain error.
        ErrorClass::Corrupt
        | ErrorClass::Transient
        | ErrorClass::User
        | ErrorClass::Interrupted
        | ErrorClass::Internal => exit::ERROR,
    }
}

/// A base directory from the environment: as the XDG base directory specification says, an
/// empty or relative value counts as unset (an empty `XDG_DATA_HOME` once put the default
/// repository under the working directory).
fn base_dir(var: &str) -> Option<PathBuf> {
    absolute_dir(std::env::var_os(var))
}

fn absolute_dir(value: Option<std::ffi::OsString>) -> Option<PathBuf> {
    value.map(PathBuf::from).filter(|p| p.is_absolute())
}

/// Default repository when neither `--repo` nor `COFFER_REPO` is given.
pub(crate) fn default_repo_path() -> PathBuf {
    let base = base_dir("XDG_DATA_HOME")
        .or_else(|| base_dir("HOME").map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("coffer").join("repository")
}

/// Default cache directory. Without `XDG_CACHE_HOME` and `HOME` (cron, systemd), a directory
/// of this user's own under the temporary directory (`coffer-<uid>`), never a shared one:
/// the engine refuses it unless this user owns it and nobody else can write it.
pub(crate) fn default_cache_dir() -> PathBuf {
    base_dir("XDG_CACHE_HOME")
        .map(|d| d.join("coffer"))
        .or_else(|| base_dir("HOME").map(|h| h.join(".cache/coffer")))
        .unwrap_or_else(|| {
            let uid = rustix::process::geteuid().as_raw();
            std::env::temp_dir().join(format!("coffer-{uid}"))
        })
}

/// How the global flags open a repository: the cache directory, `--key-id` and
/// `--retry-lock`.
pub(crate) fn open_options(g: &args::Global) -> OpenOptions {
    OpenOptions {
        cache_dir: g.cache_dir.clone().unwrap_or_else(default_cache_dir),
        key_id: g.key_id.clone(),
        lock_wait: std::time::Duration::from_secs(g.retry_lock_secs()),
        pack_uploads: None,
        io: g.io.clone(),
    }
}

/// The passphrase the global flags give, asked for when the engine has found a repository
/// (`confirm`: a new one, typed twice at a prompt).
pub(crate) fn ask(
    g: &args::Global,
    confirm: bool,
) -> impl FnMut() -> Result<Zeroizing<Vec<u8>>, PassphraseError> + '_ {
    move || password::passphrase(g, confirm).map_err(Into::into)
}
