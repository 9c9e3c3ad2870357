//! Bringing the catalog up to date with the repository. The catalog reads the repository
//! through [`RefreshSource`], which the layer above implements for it: the catalog knows what
//! a refresh needs (listings, index files, snapshots), never how a repository stores them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Catalog, CatalogError, RefreshStats};
use crate::format::index::PackIndex;
use crate::format::snapshot::Snapshot;
use crate::id::{IndexId, PackId, SnapshotId};

/// Index files and snapshots read at once: a host with an empty cache reads every one of them
/// before its first command, and from object storage each is a round trip.
pub const PARALLEL_LOADS: usize = 16;
/// Objects loaded before they are written to the catalog (bounds the memory a refresh holds).
const LOAD_BATCH: usize = 256;

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
    /// Every pack a prune condemned (see `docs/format.md`, "Prune beside backups").
    fn condemned_packs(&self) -> Result<HashSet<PackId>, Self::Error>;
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
    pub fn refresh<S: RefreshSource + Sync>(
        &self,
        repo: &S,
    ) -> Result<RefreshStats, RefreshError<S::Error>> {
        let mut stats = RefreshStats::default();
        // The markers before the index: a prune deletes a marker only after the packs it
        // condemns and their index entries are gone, so an index read after the markers
        // names no pack deleted behind the markers' back.
        let condemned = repo.condemned_packs().map_err(RefreshError::Source)?;
        *self.condemned.write().unwrap_or_else(|p| p.into_inner()) = condemned;
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
        let new: Vec<IndexId> = listed
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        for batch in new.chunks(LOAD_BATCH) {
            for (id, loaded) in load_all(batch, |id| repo.load_index(id)) {
                match loaded {
                    Ok(packs) => {
                        conflicts.extend(self.insert_index(&id, &packs)?);
                        stats.index_files_read += 1;
                    }
                    Err(e) => tracing::warn!("skipping index file {id}: {e}"),
                }
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

        self.refresh_snapshots(repo, &mut stats)?;
        Ok(stats)
    }

    /// Bring only the snapshot list up to date (what `snapshots` needs): a host with an
    /// empty cache then reads the snapshots, not every index file as well.
    pub fn refresh_snapshot_list<S: RefreshSource + Sync>(
        &self,
        repo: &S,
    ) -> Result<RefreshStats, RefreshError<S::Error>> {
        let mut stats = RefreshStats::default();
        self.refresh_snapshots(repo, &mut stats)?;
        Ok(stats)
    }

    /// The snapshot part of [`Catalog::refresh`]: new ones read (in parallel), gone ones
    /// noted.
    fn refresh_snapshots<S: RefreshSource + Sync>(
        &self,
        repo: &S,
        stats: &mut RefreshStats,
    ) -> Result<(), RefreshError<S::Error>> {
        let listed = repo.list_snapshots().map_err(RefreshError::Source)?;
        // The new ones are read ahead, in parallel; update_snapshots takes them from here.
        let known: HashSet<SnapshotId> = self.snapshot_ids()?.into_iter().collect();
        let new: Vec<SnapshotId> = listed
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        let mut read: HashMap<SnapshotId, Result<Snapshot, S::Error>> =
            load_all(&new, |id| repo.load_snapshot(id))
                .into_iter()
                .collect();
        let u = self.update_snapshots(&listed, |id| {
            match read.remove(id).unwrap_or_else(|| repo.load_snapshot(id)) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("skipping snapshot {id}: {e}");
                    None
                }
            }
        })?;
        stats.snapshots_read = u.read;
        stats.snapshots_removed = u.removed;
        stats.snapshots_vanished = u.vanished;
        Ok(())
    }
}

/// `load` of every id, [`PARALLEL_LOADS`] at a time, in the order of `ids`.
fn load_all<I: Copy + Send + Sync, T: Send, E: Send>(
    ids: &[I],
    load: impl Fn(&I) -> Result<T, E> + Sync,
) -> Vec<(I, Result<T, E>)> {
    if ids.len() < 2 {
        return ids.iter().map(|id| (*id, load(id))).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<T, E>>>> = Mutex::new((0..ids.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_LOADS.min(ids.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let r = load(id);
                    out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    ids.iter()
        .zip(out)
        .filter_map(|(id, r)| r.map(|r| (*id, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_all_keeps_the_order_and_every_result() {
        let ids: Vec<u32> = (0..1000).collect();
        let seen = AtomicUsize::new(0);
        let out = load_all(&ids, |&i| {
            seen.fetch_add(1, Ordering::Relaxed);
            if i % 7 == 0 { Err(i) } else { Ok(i * 2) }
        });
        assert_eq!(seen.load(Ordering::Relaxed), 1000, "each loaded once");
        assert_eq!(out.len(), 1000);
        for (k, (id, r)) in out.iter().enumerate() {
            assert_eq!(*id, k as u32);
            match r {
                Ok(v) => assert_eq!(*v, id * 2),
                Err(e) => assert_eq!((*e, id % 7), (*id, 0)),
            }
        }
        assert!(load_all(&[] as &[u32], |&i| Ok::<_, ()>(i)).is_empty());
    }
}
