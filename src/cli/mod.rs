//! The command line: argument parsing (clap derive), opening the repository, human and JSON
//! output, and exit codes. It knows no byte format; it calls the engine.

mod archive;
mod args;
mod commands;
mod daemon;
mod docker;
mod lifecycle;
mod output;
mod password;
mod sync;
pub(crate) mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

pub use args::Cli;

use crate::catalog::{Catalog, CatalogError};
use crate::engine::EngineError;
use crate::repo::{RepoError, Repository};
use crate::storage::{LocalStore, ObjectStore};

/// Exit codes, in the style of restic. Documented in the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any error.
    pub const ERROR: u8 = 1;
    /// The backup finished but some files could not be read.
    pub const PARTIAL: u8 = 3;
    /// No repository at the given location.
    pub const NO_REPOSITORY: u8 = 10;
    /// The repository is locked by another process.
    pub const LOCKED: u8 = 11;
    /// Wrong passphrase.
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
    let cli = Cli::parse_from(argv);
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
    handle_signals();
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code),
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
fn handle_signals() {
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
            crate::repo::release_all_locks();
            eprintln!("interrupted: this run's locks were removed");
            // Containers this run stopped run again before the process ends.
            for name in crate::docker::restart_stopped_containers() {
                eprintln!("interrupted: started container {name} again");
            }
            let helpers = crate::docker::helper::remove_helpers();
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

fn exit_code_of(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        let repo = c
            .downcast_ref::<RepoError>()
            .or_else(|| match c.downcast_ref::<EngineError>() {
                Some(EngineError::Repo(r)) => Some(r),
                Some(EngineError::Catalog(CatalogError::Repo(r))) => Some(r),
                _ => None,
            })
            .or_else(|| match c.downcast_ref::<CatalogError>() {
                Some(CatalogError::Repo(r)) => Some(r),
                _ => None,
            })
            .or_else(|| match c.downcast_ref::<crate::docker::DockerError>() {
                Some(crate::docker::DockerError::Engine(EngineError::Repo(r))) => Some(r),
                Some(crate::docker::DockerError::Engine(EngineError::Catalog(
                    CatalogError::Repo(r),
                ))) => Some(r),
                _ => None,
            });
        match repo {
            Some(RepoError::NotARepository(_)) => return exit::NO_REPOSITORY,
            Some(RepoError::Locked(_)) => return exit::LOCKED,
            Some(RepoError::WrongPassword) => return exit::WRONG_PASSWORD,
            _ => {}
        }
    }
    exit::ERROR
}

/// Where the repository is.
#[derive(Clone, Debug)]
pub(crate) enum RepoLocation {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and prefix on an S3-compatible service.
    S3(Box<crate::storage::S3Location>),
}

impl RepoLocation {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(RepoLocation::Local(PathBuf::from(rest)));
        }
        if s.starts_with("s3://") {
            let loc = crate::storage::S3Location::parse(s, &crate::storage::s3::process_env)?;
            return Ok(RepoLocation::S3(Box::new(loc)));
        }
        if s.contains("://") {
            let scheme = s.split("://").next().unwrap_or_default();
            anyhow::bail!("repository scheme {scheme}:// is not supported (use a path or s3://)");
        }
        Ok(RepoLocation::Local(PathBuf::from(s)))
    }

    /// Open the store. For S3 this reads the credentials and makes one request, so that a
    /// wrong key, a missing bucket or an unreachable endpoint is reported here.
    pub(crate) fn store(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        match self {
            RepoLocation::Local(p) => Ok(Arc::new(LocalStore::new(p.clone()))),
            RepoLocation::S3(loc) => {
                let creds = loc.credentials(&crate::storage::s3::process_env)?;
                Ok(Arc::new(crate::storage::S3Store::open(loc, &creds)?))
            }
        }
    }
}

/// Default repository when neither `--repo` nor `COFFER_REPO` is given.
pub(crate) fn default_repo_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("coffer").join("repository")
}

/// Default cache directory. Without `XDG_CACHE_HOME` and `HOME` (cron, systemd), a directory
/// of this user's own under the temporary directory (`coffer-<uid>`), never a shared one:
/// [`open_catalog`] refuses it unless this user owns it and nobody else can write it.
pub(crate) fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(|d| PathBuf::from(d).join("coffer"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/coffer")))
        .unwrap_or_else(|| {
            let uid = rustix::process::geteuid().as_raw();
            std::env::temp_dir().join(format!("coffer-{uid}"))
        })
}

/// Make sure the cache directory is this user's own: created owner-only when missing; an
/// existing one (or a symlink in its place) owned by someone else, or writable by others,
/// is refused, since a planted catalog could make backups skip data.
fn check_cache_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the cache directory {}", dir.display()))?;
    let m = std::fs::symlink_metadata(dir)
        .with_context(|| format!("the cache directory {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if m.file_type().is_symlink() || !m.is_dir() {
        anyhow::bail!(
            "the cache directory {} is not a directory (a symlink?): remove it, or set \
             --cache-dir / XDG_CACHE_HOME",
            dir.display()
        );
    }
    // Under the shared temporary directory, only a directory of this user's own is trusted;
    // elsewhere (a home, a configured or mounted directory) one nobody else can write to.
    let shared = dir.starts_with(std::env::temp_dir());
    if (shared && m.uid() != me) || m.mode() & 0o022 != 0 {
        anyhow::bail!(
            "the cache directory {} is owned by uid {} or writable by others: refusing to trust \
             a catalog there; set --cache-dir or XDG_CACHE_HOME to a directory of your own",
            dir.display(),
            m.uid()
        );
    }
    Ok(())
}

/// An open repository and its catalog.
pub(crate) struct Opened {
    pub repo: Repository,
    pub catalog: Catalog,
}

/// Open the local catalog of an opened repository. Every command that works on an opened
/// repository passes here, so this is also where the global `--retry-lock` is applied.
pub(crate) fn open_catalog(global: &args::Global, repo: &Repository) -> anyhow::Result<Catalog> {
    repo.set_lock_wait(std::time::Duration::from_secs(global.retry_lock_secs()));
    let dir = global.cache_dir.clone().unwrap_or_else(default_cache_dir);
    check_cache_dir(&dir)?;
    let path = Catalog::path_for(&dir, &repo.config().id);
    Catalog::open(&path).with_context(|| format!("opening the catalog {}", path.display()))
}
