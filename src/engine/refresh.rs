//! The repository as the catalog's refresh reads it: the catalog defines what it needs
//! ([`RefreshSource`]) and the engine, which knows both, lends it the repository.

use std::collections::HashSet;

use super::EngineError;
use crate::catalog::{RefreshError, RefreshSource};
use crate::format::index::PackIndex;
use crate::format::snapshot::Snapshot;
use crate::id::{IndexId, PackId, SnapshotId};
use crate::repo::{RepoError, Repository};

impl RefreshSource for Repository {
    type Error = RepoError;

    fn list_index_files(&self) -> Result<Vec<IndexId>, RepoError> {
        Repository::list_index_files(self)
    }

    fn load_index(&self, id: &IndexId) -> Result<Vec<PackIndex>, RepoError> {
        Repository::load_index(self, id)
    }

    fn list_packs(&self) -> Result<Vec<PackId>, RepoError> {
        Ok(Repository::list_packs(self)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotId>, RepoError> {
        Repository::list_snapshots(self)
    }

    fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, RepoError> {
        Repository::load_snapshot(self, id)
    }

    fn condemned_packs(&self) -> Result<HashSet<PackId>, RepoError> {
        Repository::condemned_packs(self)
    }
}

impl From<RefreshError<RepoError>> for EngineError {
    fn from(e: RefreshError<RepoError>) -> Self {
        match e {
            RefreshError::Catalog(e) => EngineError::Catalog(e),
            RefreshError::Source(e) => EngineError::Repo(e),
        }
    }
}
