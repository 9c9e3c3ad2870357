//! Bringing the catalog up to date with the repository. The catalog reads the repository
//! through [`RefreshSource`], which the layer above implements for it: the catalog knows what
//! a refresh needs (listings, index files, snapshots), never how a repository stores them.

use std::collections::HashSet;

use super::{Catalog, CatalogError, RefreshStats};
use crate::format::index::PackIndex;
use crate::format::snapshot::Snapshot;
use crate::id::{IndexId, PackId, SnapshotId};

/// What a refresh reads from the repository.
pub trait RefreshSource {
    /// Why reading failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Ids of every index file.
    fn list_index_files(&self) -> Result<Vec<IndexId>, Self::Error>;
    /// The packs one index file names, with their blobs (opened and verified).
    fn load_index(&self, id: &IndexId) -> Result<Vec<PackIndex>, Self::Error>;
    /// Ids of every pack stored.
    fn list_packs(&self) -> Result<Vec<PackId>, Self::Error>;
    /// Ids of every snapshot.
    fn list_snapshots(&self) -> Result<Vec<SnapshotId>, Self::Error>;
    /// One snapshot (opened and verified).
    fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, Self::Error>;
}

/// Errors of a refresh: the catalog's own, or the source's (shown as they are).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError<E: std::error::Error + 'static> {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(E),
}

impl Catalog {
    /// Bring the catalog up to date with the repository: read new index files and snapshots,
    /// and note what disappeared.
    pub fn refresh<S: RefreshSource>(
        &self,
        repo: &S,
    ) -> Result<RefreshStats, RefreshError<S::Error>> {
        let mut stats = RefreshStats::default();
        let listed: HashSet<IndexId> = repo
            .list_index_files()
            .map_err(RefreshError::Source)?
            .into_iter()
            .collect();
        let known: HashSet<IndexId> = self.sql(|c| {
            let mut st = c.prepare("SELECT id FROM index_files")?;
            let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = HashSet::new();
            for r in rows {
                if let Ok(a) = <[u8; 32]>::try_from(r?) {
                    out.insert(IndexId(a));
                }
            }
            Ok(out)
        })?;
        if known.iter().any(|k| !listed.contains(k)) {
            // Index files were removed (prune elsewhere): start the blob index over.
            self.sql(|c| {
                c.execute_batch("DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_files;")
            })?;
            return self.refresh(repo);
        }
        let mut conflicts = Vec::new();
        for id in listed.iter().filter(|id| !known.contains(id)) {
            match repo.load_index(id) {
                Ok(packs) => {
                    conflicts.extend(self.insert_index(id, &packs)?);
                    stats.index_files_read += 1;
                }
                Err(e) => tracing::warn!("skipping index file {id}: {e}"),
            }
        }
        if !conflicts.is_empty() {
            // Rare (two backups stored a blob at once, or an old index file was put back), and
            // only then are the packs listed.
            let listed_after = self.last_pack_no()?;
            let present: HashSet<PackId> = repo
                .list_packs()
                .map_err(RefreshError::Source)?
                .into_iter()
                .collect();
            let r = self.resolve_conflicts(&conflicts, &present, listed_after)?;
            stats.index_conflicts = conflicts.len();
            stats.index_entries_dropped = r.dropped;
            if r.missing_packs > 0 {
                tracing::warn!(
                    "index files name {} packs that are missing (an old index file put back?): \
                     {} blobs use their copy in an existing pack instead, {} entries without \
                     one are ignored; `coffer check` names them, `coffer prune` writes a clean \
                     index",
                    r.missing_packs,
                    r.moved,
                    r.dropped
                );
            }
        }

        let listed = repo.list_snapshots().map_err(RefreshError::Source)?;
        let u = self.update_snapshots(&listed, |id| match repo.load_snapshot(id) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("skipping snapshot {id}: {e}");
                None
            }
        })?;
        stats.snapshots_read = u.read;
        stats.snapshots_removed = u.removed;
        stats.snapshots_vanished = u.vanished;
        Ok(stats)
    }
}
