//! The command line: argument parsing (clap derive), opening the repository, human and JSON
//! output, and exit codes. It knows no byte format; it calls the engine.

mod archive;
mod args;
mod commands;
mod output;
mod password;

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
    let cli = Cli::parse();
    output::init_logging(&cli.global);
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
/// What was written so far stays: packs no snapshot names, which the next backup reuses or
/// prune removes.
fn handle_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            crate::repo::release_all_locks();
            eprintln!("interrupted: this run's locks were removed");
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
}

impl RepoLocation {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(RepoLocation::Local(PathBuf::from(rest)));
        }
        if s.contains("://") {
            let scheme = s.split("://").next().unwrap_or_default();
            anyhow::bail!("repository scheme {scheme}:// is not supported by this build");
        }
        Ok(RepoLocation::Local(PathBuf::from(s)))
    }

    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        match self {
            RepoLocation::Local(p) => Arc::new(LocalStore::new(p.clone())),
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

/// Default cache directory.
pub(crate) fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("coffer")
}

/// An open repository and its catalog.
pub(crate) struct Opened {
    pub repo: Repository,
    pub catalog: Catalog,
}

pub(crate) fn open_catalog(global: &args::Global, repo: &Repository) -> anyhow::Result<Catalog> {
    let dir = global.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let path = Catalog::path_for(&dir, &repo.config().id);
    Catalog::open(&path).with_context(|| format!("opening the catalog {}", path.display()))
}
