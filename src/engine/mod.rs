//! The engine composes repository, catalog and file system into the user's operations:
//! backup, restore, ls, check, stats, export, import. It never parses arguments; every
//! operation takes an options value and returns a summary value, both serializable, so
//! `--json` costs nothing.
//!
//! Export to and import from tar archives live in [`archive`]; their old paths
//! (`engine::export`, `engine::import`, `engine::archive_prune`) are kept as re-exports.
//!
//! Docker volumes: `volume_backup` backs volumes up in two passes with their labelled
//! containers stopped only for the second, `volume_restore` restores into a volume with its
//! users stopped, and `volume_job` is the restore's work, done here or in a helper container.
//! They reach the container engine only through [`crate::docker::ContainerEngine`].

pub mod archive;
pub mod backup;
mod blob_reader;
pub mod cache;
pub mod check;
mod check_index;
pub mod condemn;
mod content;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod duration;
pub mod exclude;
pub mod find;
pub mod forget;
pub mod mount;
pub mod parallel;
pub mod progress;
pub mod prune;
pub mod prune_shared;
mod refresh;
pub mod restore;
pub mod retention;
pub mod rewrite;
mod saver;
pub mod session;
pub mod stats;
pub mod stream;
pub mod sync;
pub mod tag;
pub mod volume_backup;
pub mod volume_job;
pub mod volume_restore;
pub mod walk;

pub use archive::prune as archive_prune;
pub use archive::{export, import};

use std::sync::Mutex;

use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::error::ErrorClass;
use crate::format::tree::Tree;
use crate::id::BlobId;
use crate::repo::{RepoError, Repository};

pub use progress::Progress;

/// Errors that stop an operation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Repository failure.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Catalog failure.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A problem with what the user asked for.
    #[error("{0}")]
    Usage(String),
    /// A bug: a panicked thread or a broken invariant.
    #[error("{0}")]
    Internal(String),
    /// Blobs that snapshots need are in no pack (prune refuses to run).
    #[error(transparent)]
    MissingBlobs(#[from] prune::MissingBlobs),
    /// The container engine failed (Docker volume backups and restores).
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    /// A local file system error that stops the whole operation.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl EngineError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::Repo(e) => e.class(),
            EngineError::Catalog(e) => e.class(),
            EngineError::Usage(_) => ErrorClass::User,
            EngineError::Internal(_) => ErrorClass::Internal,
            EngineError::MissingBlobs(_) => ErrorClass::Corrupt,
            EngineError::Io { .. } => ErrorClass::Transient,
            EngineError::Docker(e) => e.class(),
        }
    }
}

/// A problem with one file that did not stop the operation.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Warning {
    /// The path concerned.
    pub path: String,
    /// What happened.
    pub message: String,
}

/// Collected warnings of a running operation.
#[derive(Default)]
pub struct Warnings(Mutex<Vec<Warning>>);

impl Warnings {
    /// Record a warning (the caller reports them; logged at debug level as they happen).
    pub fn push(&self, path: impl Into<String>, message: impl ToString) {
        let w = Warning {
            path: path.into(),
            message: message.to_string(),
        };
        tracing::debug!("{}: {}", w.path, w.message);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }

    /// Everything recorded.
    pub fn take(&self) -> Vec<Warning> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Load a tree blob: from the catalog's cache, else from the repository (verified, then
/// cached).
pub fn load_tree(repo: &Repository, catalog: &Catalog, id: &BlobId) -> Result<Tree, EngineError> {
    if let Some(bytes) = catalog.cached_tree(id)?
        && repo.keys().blob_id(crate::format::BlobKind::Tree, &bytes) == *id
        && let Ok(t) = Tree::decode(&bytes)
    {
        return Ok(t);
    }
    let loc = catalog.blob_location(id)?.ok_or_else(|| {
        RepoError::corrupt(
            format!("tree {id}"),
            "not in the index (run `coffer check`)",
        )
    })?;
    let bytes = repo.load_blob(&loc)?;
    let tree = Tree::decode(&bytes).map_err(|e| RepoError::corrupt(format!("tree {id}"), e))?;
    catalog.cache_tree(id, &bytes)?;
    Ok(tree)
}

/// Encode a tree to save it; a failure is a bug, reported as one.
pub(crate) fn encode_tree(tree: &Tree) -> Result<Vec<u8>, EngineError> {
    tree.encode()
        .map_err(|e| EngineError::Internal(format!("encoding a tree: {e}")))
}

/// The user name a snapshot records: `$USER`, else `$LOGNAME`, else the effective uid.
pub(crate) fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| rustix::process::geteuid().as_raw().to_string())
}

/// Render raw name bytes for display.
pub fn display_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
