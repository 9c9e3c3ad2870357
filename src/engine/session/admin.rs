//! What commands do with an open [`Session`] that is no operation of its own: list
//! snapshots, count what the repository holds, manage keys, rebuild the index.

use serde::Serialize;

use super::{Session, SessionError};
use crate::catalog::{SnapshotEntry, SnapshotFilter};
use crate::engine::check::RepairIndexSummary;
use crate::id::KeyId;
use crate::repo::LockKind;

/// What the repository holds (`coffer stats`).
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Snapshots.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: u64,
    /// Data blobs in the index.
    pub data_blobs: u64,
    /// Tree blobs in the index.
    pub tree_blobs: u64,
    /// Unique content, uncompressed.
    pub raw_bytes: u64,
    /// Bytes the packs take in the store.
    pub stored_bytes: u64,
}

impl Session {
    /// The snapshots (the catalog refreshed first) of `host`, if given, with every tag of
    /// `tags`.
    pub fn snapshots(
        &self,
        host: Option<&str>,
        tags: &[String],
    ) -> Result<Vec<SnapshotEntry>, SessionError> {
        // The list needs no index: a new host's `snapshots` reads the snapshots only.
        self.catalog.refresh_snapshot_list(&self.repo)?;
        Ok(self
            .catalog
            .snapshots()?
            .into_iter()
            .filter(|e| host.is_none_or(|h| h == e.snapshot.host))
            .filter(|e| tags.iter().all(|t| e.snapshot.tags.contains(t)))
            .collect())
    }

    /// The snapshot `spec` names (an id, a unique prefix of one, or `latest`), the catalog
    /// refreshed first.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<SnapshotEntry, SessionError> {
        self.catalog.refresh(&self.repo)?;
        Ok(self.catalog.resolve_snapshot(spec)?)
    }

    /// [`Self::resolve_snapshot`], `latest` narrowed by `filter`.
    pub fn resolve_snapshot_in(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<SnapshotEntry, SessionError> {
        self.catalog.refresh(&self.repo)?;
        Ok(self.catalog.resolve_snapshot_in(spec, filter)?)
    }

    /// `spec` as the commands that resolve it themselves should see it: `latest` narrowed by a
    /// non-empty `filter` becomes the id it names; anything else is returned as it is.
    pub fn pin_latest(&self, spec: &str, filter: &SnapshotFilter) -> Result<String, SessionError> {
        if spec != "latest" || filter.is_empty() {
            return Ok(spec.to_string());
        }
        Ok(self.resolve_snapshot_in(spec, filter)?.id.to_hex())
    }

    /// What the repository holds (the catalog refreshed first).
    pub fn stats(&self) -> Result<Stats, SessionError> {
        self.catalog.refresh(&self.repo)?;
        let st = self.catalog.stats()?;
        let snapshots = self.catalog.snapshots()?.len();
        let stored_bytes = self.repo.list_packs()?.iter().map(|(_, s)| s).sum();
        Ok(Stats {
            snapshots,
            packs: st.packs,
            data_blobs: st.data_blobs,
            tree_blobs: st.tree_blobs,
            raw_bytes: st.raw_bytes,
            stored_bytes,
        })
    }

    /// Remove the key `id` (a full id or a unique prefix), under the exclusive lock.
    pub fn remove_key(&self, id: &str) -> Result<KeyId, SessionError> {
        let _lock = self.repo.lock(LockKind::Exclusive, "key remove")?;
        Ok(self.repo.remove_key(id)?)
    }

    /// Index the packs no index names (left by an interrupted backup), under the exclusive
    /// lock, and refresh the catalog.
    pub fn repair_index(&self) -> Result<RepairIndexSummary, SessionError> {
        let _lock = self.repo.lock(LockKind::Exclusive, "repair index")?;
        let s = crate::engine::check::repair_index(&self.repo)?;
        self.catalog.refresh(&self.repo)?;
        Ok(s)
    }
}
