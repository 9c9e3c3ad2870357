//! The blob map of `copy`: which blob of a destination repository holds the plaintext of a
//! blob of a source repository with another master key. Blob ids are keyed hashes, so the
//! same chunk has another id in each; without the map, telling whether a source snapshot was
//! already copied means reading all its data again.
//!
//! One SQLite file per pair of repositories, beside the destination's catalog
//! (`<cache>/<destination id>/blob-map-<pair>.sqlite`), so `cache --cleanup` removes it with
//! the catalog. An entry is a fact (the source blob's plaintext has that id in the
//! destination), true whether or not the destination still holds the blob: callers check that.
//! Like the catalog it is a cache: losing it costs reading the source again, never data, and
//! a file SQLite cannot open is started afresh.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Catalog, CatalogError};
use crate::id::BlobId;

/// Schema version (`PRAGMA user_version`).
const MAP_VERSION: i64 = 1;
/// Writes gathered in one transaction before it is committed: one commit per blob would cost
/// more than the lookup it saves, and a long transaction would keep a concurrent copy waiting.
const WRITES_PER_TRANSACTION: u32 = 256;

/// Source blob ids and the ids of their copies in the destination.
pub struct BlobMap {
    conn: Mutex<MapConn>,
    path: PathBuf,
}

struct MapConn {
    conn: Connection,
    /// Writes in the open transaction (none is open at 0).
    uncommitted: u32,
}

impl MapConn {
    fn commit(&mut self) -> rusqlite::Result<()> {
        if self.uncommitted == 0 {
            return Ok(());
        }
        self.uncommitted = 0;
        let done = self.conn.execute_batch("COMMIT");
        if done.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        done
    }
}

impl BlobMap {
    /// The map of blobs copied into the repository `repo_id` from the source that `pair`
    /// names (a fingerprint of both repositories' id keys), under a cache directory.
    pub fn path_for(cache_dir: &Path, repo_id: &str, pair: &str) -> PathBuf {
        cache_dir
            .join(repo_id)
            .join(format!("blob-map-{pair}.sqlite"))
    }

    /// Open (creating) the map at `path`; one SQLite cannot open is deleted and started anew.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        super::create_owner_only(path)?;
        match Self::open_inner(path) {
            Err(e @ CatalogError::Sqlite { .. }) => {
                tracing::warn!("{e}; starting the blob map afresh");
                Catalog::remove_files(path);
                super::create_owner_only(path)?;
                Self::open_inner(path)
            }
            other => other,
        }
    }

    fn open_inner(path: &Path) -> Result<Self, CatalogError> {
        let err = |source| CatalogError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > MAP_VERSION {
            return Err(CatalogError::NewerSchema {
                path: path.display().to_string(),
                found: version,
            });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS map(src BLOB PRIMARY KEY, dst BLOB NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )
        .map_err(err)?;
        Ok(Self {
            conn: Mutex::new(MapConn {
                conn,
                uncommitted: 0,
            }),
            path: path.to_path_buf(),
        })
    }

    fn sql<T>(
        &self,
        f: impl FnOnce(&mut MapConn) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| CatalogError::Sqlite {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// The destination id of the source blob `src`, if it was recorded.
    pub fn get(&self, src: &BlobId) -> Result<Option<BlobId>, CatalogError> {
        let raw: Option<Vec<u8>> = self.sql(|c| {
            c.conn
                .prepare_cached("SELECT dst FROM map WHERE src = ?1")?
                .query_row(params![&src.0[..]], |r| r.get(0))
                .optional()
        })?;
        // A malformed row is a missing one: the caller reads the source instead.
        Ok(raw.and_then(|r| <[u8; 32]>::try_from(r).ok()).map(BlobId))
    }

    /// Record that the source blob `src` is `dst` in the destination. Committed with the
    /// next [`WRITES_PER_TRANSACTION`] writes, by [`BlobMap::flush`], or on drop.
    pub fn insert(&self, src: &BlobId, dst: &BlobId) -> Result<(), CatalogError> {
        self.sql(|c| {
            if c.uncommitted == 0 {
                c.conn.execute_batch("BEGIN")?;
            }
            c.uncommitted += 1;
            let done = c
                .conn
                .prepare_cached("INSERT OR REPLACE INTO map VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![&src.0[..], &dst.0[..]]));
            if let Err(e) = done {
                // What this transaction held is lost; only a cache.
                let _ = c.commit();
                return Err(e);
            }
            if c.uncommitted >= WRITES_PER_TRANSACTION {
                c.commit()?;
            }
            Ok(())
        })
    }

    /// Commit what was recorded.
    pub fn flush(&self) -> Result<(), CatalogError> {
        self.sql(MapConn::commit)
    }
}

impl Drop for BlobMap {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::debug!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_persist_owner_only_and_a_damaged_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = BlobMap::path_for(dir.path(), "repo", "pair");
        let (a, b, c) = (BlobId([1; 32]), BlobId([2; 32]), BlobId([3; 32]));
        {
            let map = BlobMap::open(&path).unwrap();
            assert_eq!(map.get(&a).unwrap(), None);
            map.insert(&a, &b).unwrap();
            // Seen before it is committed.
            assert_eq!(map.get(&a).unwrap(), Some(b));
            for i in 0..600u32 {
                let mut x = [9u8; 32];
                x[..4].copy_from_slice(&i.to_le_bytes());
                map.insert(&BlobId(x), &c).unwrap();
            }
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let map = BlobMap::open(&path).unwrap();
        assert_eq!(map.get(&a).unwrap(), Some(b));
        let mut last = [9u8; 32];
        last[..4].copy_from_slice(&599u32.to_le_bytes());
        assert_eq!(map.get(&BlobId(last)).unwrap(), Some(c));
        drop(map);

        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        let _ = std::fs::remove_file(path.with_extension("sqlite-wal"));
        let map = BlobMap::open(&path).unwrap();
        assert_eq!(map.get(&a).unwrap(), None);
        map.insert(&a, &c).unwrap();
        assert_eq!(map.get(&a).unwrap(), Some(c));
    }
}
