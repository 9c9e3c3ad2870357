//! The local SQLite catalog: a cache of the repository's index, snapshot list and tree blobs,
//! so that dedup lookups, `snapshots`, `ls` and restore planning need no downloads.
//!
//! It is never the source of truth: [`Catalog::refresh`] brings it up to date from the
//! repository's `index/` and `snapshots/` listings (reading only new objects) and a lost or
//! damaged catalog is rebuilt from scratch. Losing it costs time, never data, and the one
//! thing only it knows: which snapshots this host saw that have since vanished
//! (`snapshots.rs`).

mod blob_map;
mod blobs;
mod paths;
mod refresh;
mod snapshots;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

pub use blob_map::BlobMap;
pub use paths::PathHit;
pub use refresh::{RefreshError, RefreshSource};
pub use snapshots::{SnapshotEntry, SnapshotFilter, SnapshotUpdate, VanishedSnapshot};

use crate::id::{BlobId, PackId};

const SCHEMA_VERSION: i64 = 5;
/// SQLite's page cache per connection (`PRAGMA cache_size`; negative: in KiB), filled only as
/// far as pages are read.
const CACHE_SIZE: i64 = -32 * 1024;

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite failed.
    #[error("catalog {path}: {source} (it is a cache: `coffer repair catalog` rebuilds it)")]
    Sqlite {
        /// The catalog file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// Creating the cache directory failed.
    #[error("cannot create cache directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A snapshot id given by the user matched none or several.
    #[error("{0}")]
    Snapshot(String),
    /// The catalog was written by a newer coffer.
    #[error(
        "catalog {path} has schema version {found}, newer than this coffer reads ({SCHEMA_VERSION}) (it is a cache: `coffer repair catalog` rebuilds it)"
    )]
    NewerSchema {
        /// The catalog file.
        path: String,
        /// Its `user_version`.
        found: i64,
    },
    /// A snapshot could not be encoded for the cache (a bug).
    #[error("encoding snapshot for the catalog: {0}")]
    Encode(String),
}

impl CatalogError {
    /// What kind of failure this is. The catalog is a local cache: SQLite and the file
    /// system failing under it are local I/O, not damage to the repository.
    pub fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            CatalogError::Sqlite { .. } | CatalogError::Io { .. } => ErrorClass::Transient,
            CatalogError::Snapshot(_) => ErrorClass::User,
            CatalogError::NewerSchema { .. } => ErrorClass::User,
            CatalogError::Encode(_) => ErrorClass::Internal,
        }
    }
}

/// The schema's migrations: the one at index `n` takes a catalog from version `n` to `n + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    "BEGIN;
     CREATE TABLE IF NOT EXISTS index_files(id BLOB PRIMARY KEY) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS packs(no INTEGER PRIMARY KEY, id BLOB UNIQUE NOT NULL);
     CREATE TABLE IF NOT EXISTS blobs(
         id BLOB PRIMARY KEY, pack INTEGER NOT NULL, kind INTEGER NOT NULL,
         compression INTEGER NOT NULL, offset INTEGER NOT NULL,
         packed_len INTEGER NOT NULL, data_len INTEGER NOT NULL,
         raw_len INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS snapshots(
         id BLOB PRIMARY KEY, time_ns INTEGER NOT NULL, host TEXT NOT NULL,
         data BLOB NOT NULL) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS trees(id BLOB PRIMARY KEY, data BLOB NOT NULL)
         WITHOUT ROWID;
     PRAGMA user_version = 1;
     COMMIT;",
    // When each pack was last read whole and found sound, for rolling verification.
    "BEGIN;
     CREATE TABLE IF NOT EXISTS pack_checks(pack BLOB PRIMARY KEY, time INTEGER NOT NULL)
         WITHOUT ROWID;
     PRAGMA user_version = 2;
     COMMIT;",
    // Snapshots that left the repository: forgotten here (how = 0), or vanished without a
    // forget here (1: reported; 2: acknowledged). See `snapshots.rs`.
    "BEGIN;
     CREATE TABLE IF NOT EXISTS gone_snapshots(
         id BLOB PRIMARY KEY, time_ns INTEGER NOT NULL, host TEXT NOT NULL,
         data BLOB NOT NULL, how INTEGER NOT NULL, noticed INTEGER NOT NULL)
         WITHOUT ROWID;
     PRAGMA user_version = 3;
     COMMIT;",
    // The path index of `find` (see `paths.rs`).
    "BEGIN;
     CREATE TABLE IF NOT EXISTS path_trees(no INTEGER PRIMARY KEY, id BLOB UNIQUE NOT NULL);
     CREATE TABLE IF NOT EXISTS path_entries(
         tree INTEGER NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,
         size INTEGER NOT NULL, mtime INTEGER NOT NULL, subtree INTEGER);
     CREATE INDEX IF NOT EXISTS path_entries_subtree ON path_entries(subtree)
         WHERE subtree IS NOT NULL;
     CREATE TABLE IF NOT EXISTS path_snapshots(snapshot BLOB PRIMARY KEY, tree INTEGER NOT NULL)
         WITHOUT ROWID;
     PRAGMA user_version = 4;
     COMMIT;",
    // The path index names each distinct entry name once, so that a pattern is matched
    // against tens of thousands of names, not tens of millions of entries (365 nights of 76k
    // files: 17.5 million entries, 53,666 names). The index is derived: it is dropped and
    // rebuilt by the next `find`.
    "BEGIN;
     DROP TABLE IF EXISTS path_entries;
     DROP TABLE IF EXISTS path_trees;
     DROP TABLE IF EXISTS path_snapshots;
     DROP TABLE IF EXISTS path_names;
     CREATE TABLE path_names(no INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
     CREATE TABLE path_trees(no INTEGER PRIMARY KEY, id BLOB UNIQUE NOT NULL);
     CREATE TABLE path_entries(
         tree INTEGER NOT NULL, name INTEGER NOT NULL, kind INTEGER NOT NULL,
         size INTEGER NOT NULL, mtime INTEGER NOT NULL, subtree INTEGER);
     CREATE INDEX path_entries_name ON path_entries(name);
     CREATE INDEX path_entries_subtree ON path_entries(subtree) WHERE subtree IS NOT NULL;
     CREATE TABLE path_snapshots(snapshot BLOB PRIMARY KEY, tree INTEGER NOT NULL)
         WITHOUT ROWID;
     PRAGMA user_version = 5;
     COMMIT;",
];

/// What a refresh did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RefreshStats {
    /// Index files read.
    pub index_files_read: usize,
    /// Snapshots read.
    pub snapshots_read: usize,
    /// Snapshots that disappeared from the repository.
    pub snapshots_removed: usize,
    /// Of those, the ones not forgotten through this catalog (reported until acknowledged).
    pub snapshots_vanished: usize,
    /// Blobs that index files name in more than one pack, resolved to a pack that exists.
    pub index_conflicts: usize,
    /// Index entries dropped because their pack is missing (after a conflict).
    pub index_entries_dropped: usize,
}

/// Repository-wide counts.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CatalogStats {
    /// Packs.
    pub packs: u64,
    /// Data blobs.
    pub data_blobs: u64,
    /// Tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of all blobs.
    pub raw_bytes: u64,
    /// Stored bytes of all blobs.
    pub stored_bytes: u64,
}

/// The catalog of one repository.
pub struct Catalog {
    conn: Mutex<Conn>,
    path: PathBuf,
    /// Packs a prune condemned, as the last refresh read them: a blob stored only in one of
    /// them counts as absent, so a writer stores it again instead of reusing it.
    condemned: std::sync::RwLock<std::collections::HashSet<PackId>>,
}

/// Lookups that share one read transaction before it is ended.
const LOOKUPS_PER_TRANSACTION: u32 = 1024;
/// Oldest a shared read transaction gets before a lookup starts a new one.
const LOOKUP_TRANSACTION_MAX_AGE: Duration = Duration::from_millis(20);

/// The connection, and the read transaction that consecutive lookups share. A statement
/// outside a transaction is a transaction of its own, and each one takes and drops SQLite's
/// file locks (fcntl on the database and its WAL index): `perf record` of a no-change backup
/// of 60,000 files found a quarter of its time in `sqlite3_step`, most of it there.
struct Conn {
    conn: Connection,
    /// When the shared read transaction began, and how many lookups it has served.
    lookups: Option<(Instant, u32)>,
}

impl Conn {
    /// End the shared read transaction, so that what follows sees (and may write) the latest.
    fn end_lookups(&mut self) -> rusqlite::Result<()> {
        if self.lookups.take().is_some()
            && let Err(e) = self.conn.execute_batch("COMMIT")
        {
            // Never leave the transaction open: the next write would run inside it. It only
            // read, so rolling it back loses nothing; the COMMIT error is the one reported.
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Create the file at `path` (and its directory) owner-only if it is missing: a catalog holds
/// every file name in plain text, and SQLite gives its -wal and -shm files the same mode. Never
/// through a symlink.
fn create_owner_only(path: &Path) -> Result<(), CatalogError> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CatalogError::Io {
                path: dir.display().to_string(),
                source,
            })?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map(drop)
        .map_err(|source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        })
}

impl Catalog {
    /// The catalog file of a repository under a cache directory.
    pub fn path_for(cache_dir: &Path, repo_id: &str) -> PathBuf {
        cache_dir.join(repo_id).join("catalog.sqlite")
    }

    /// Open (creating or migrating) the catalog at `path`. A catalog that SQLite cannot open
    /// is deleted and recreated: it is only a cache.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        create_owner_only(path)?;
        match Self::open_inner(path) {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!("{e}; rebuilding the catalog");
                Self::remove_files(path);
                Self::open_inner(path)
            }
        }
    }

    fn remove_files(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }

    /// Delete the catalog at `path` so that the next open rebuilds it.
    pub fn destroy(path: &Path) {
        Self::remove_files(path);
    }

    fn open_inner(path: &Path) -> Result<Self, CatalogError> {
        let err = |source| CatalogError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        // Without the query planner stability guarantee, the bundled SQLite (built with STAT4)
        // marks `WHERE id = ?1` lookups for re-preparation whenever the bound value changes:
        // every blob lookup of a restore or backup was parsed and planned again (a third of a
        // restore's CPU time, measured with perf). One plan per statement is what we want.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(err)?;
        // A page cache of up to 32 MiB (SQLite's default is 2 MiB): the lookups of a restore
        // go to random pages of the blob index, and with the default each missed page was a
        // `pread` (44,000 of them restoring 57,274 files from a 12 MiB catalog).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size = {CACHE_SIZE};"
        ))
        .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(CatalogError::NewerSchema {
                path: path.display().to_string(),
                found: version,
            });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate() {
            if version <= from as i64 {
                conn.execute_batch(sql).map_err(err)?;
            }
        }
        Ok(Self {
            conn: Mutex::new(Conn {
                conn,
                lookups: None,
            }),
            path: path.to_path_buf(),
            condemned: Default::default(),
        })
    }

    /// When each pack was last verified whole (unix milliseconds); packs never verified are absent.
    pub fn pack_check_times(&self) -> Result<HashMap<PackId, i64>, CatalogError> {
        self.sql(|c| {
            let mut st = c.prepare("SELECT pack, time FROM pack_checks")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = HashMap::new();
            for r in rows {
                let (p, t) = r?;
                if let Ok(a) = <[u8; 32]>::try_from(p) {
                    out.insert(PackId(a), t);
                }
            }
            Ok(out)
        })
    }

    /// Record that these packs were verified whole at `time` (unix milliseconds). Times only
    /// move forward: a run in the same millisecond as the last is recorded just after it, so
    /// the least recently verified packs are always the ones not in the latest run.
    pub fn record_pack_checks(&self, packs: &[PackId], time: i64) -> Result<(), CatalogError> {
        self.sql(|c| {
            let tx = c.transaction()?;
            let last: Option<i64> =
                tx.query_row("SELECT MAX(time) FROM pack_checks", [], |r| r.get(0))?;
            let time = last.map_or(time, |l| time.max(l + 1));
            {
                let mut st =
                    tx.prepare_cached("INSERT OR REPLACE INTO pack_checks VALUES (?1, ?2)")?;
                for p in packs {
                    st.execute(params![&p.0[..], time])?;
                }
            }
            tx.commit()
        })
    }

    fn sql<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.end_lookups()
            .and_then(|()| f(&mut conn.conn))
            .map_err(|source| CatalogError::Sqlite {
                path: self.path.display().to_string(),
                source,
            })
    }

    /// A read-only query run inside the read transaction shared by consecutive lookups
    /// (see [`Conn`]). It sees the catalog as of that transaction's start, at most
    /// [`LOOKUP_TRANSACTION_MAX_AGE`] ago or as of this process's own last write, whichever
    /// is later: every other access ends the shared transaction first.
    fn lookup<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let c = &mut *guard;
        let run = || -> rusqlite::Result<T> {
            if c.lookups.is_some_and(|(since, n)| {
                n >= LOOKUPS_PER_TRANSACTION || since.elapsed() >= LOOKUP_TRANSACTION_MAX_AGE
            }) {
                c.end_lookups()?;
            }
            if c.lookups.is_none() {
                c.conn.execute_batch("BEGIN")?;
                c.lookups = Some((Instant::now(), 0));
            }
            if let Some((_, n)) = c.lookups.as_mut() {
                *n += 1;
            }
            let out = f(&c.conn);
            if out.is_err() {
                c.end_lookups()?;
            }
            out
        };
        run().map_err(|source| CatalogError::Sqlite {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// A cached tree blob's plaintext.
    pub fn cached_tree(&self, id: &BlobId) -> Result<Option<Vec<u8>>, CatalogError> {
        self.lookup(|c| {
            c.prepare_cached("SELECT data FROM trees WHERE id = ?1")?
                .query_row(params![&id.0[..]], |r| r.get(0))
                .optional()
        })
    }

    /// Cache a tree blob's plaintext (only after its id was verified).
    pub fn cache_tree(&self, id: &BlobId, data: &[u8]) -> Result<(), CatalogError> {
        self.sql(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO trees VALUES (?1, ?2)")?
                .execute(params![&id.0[..], data])
        })?;
        Ok(())
    }

    /// Counts over the whole blob index.
    pub fn stats(&self) -> Result<CatalogStats, CatalogError> {
        self.sql(|c| {
            let packs: i64 = c.query_row("SELECT COUNT(*) FROM packs", [], |r| r.get(0))?;
            let (data, tree, raw, stored): (i64, i64, Option<i64>, Option<i64>) = c.query_row(
                "SELECT SUM(kind = 0), SUM(kind = 1), SUM(raw_len), SUM(packed_len) FROM blobs",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        r.get(2)?,
                        r.get(3)?,
                    ))
                },
            )?;
            Ok(CatalogStats {
                packs: packs as u64,
                data_blobs: data as u64,
                tree_blobs: tree as u64,
                raw_bytes: raw.unwrap_or(0) as u64,
                stored_bytes: stored.unwrap_or(0) as u64,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::PackIndex;
    use crate::format::{BlobEntry, BlobKind, Compression};
    use crate::id::IndexId;

    fn pack_with(pack: u8, blob: BlobId) -> PackIndex {
        PackIndex {
            pack: PackId([pack; 32]),
            blobs: vec![BlobEntry {
                id: blob,
                kind: BlobKind::Data,
                compression: Compression::None,
                offset: 0,
                packed_len: 50,
                data_len: 10,
                raw_len: 10,
            }],
        }
    }

    /// Lookups share a read transaction; dedup needs them to see this process's own index
    /// records at once, and another process's within the transaction's age limit.
    #[test]
    fn shared_lookup_transaction_sees_own_writes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let a = Catalog::open(&path).unwrap();
        let b = Catalog::open(&path).unwrap();

        let mine = BlobId([7; 32]);
        assert!(!a.has_blob(&mine).unwrap());
        assert!(
            a.conn.lock().unwrap().lookups.is_some(),
            "a read transaction is open"
        );
        a.add_index(&IndexId([1; 32]), &[pack_with(1, mine)])
            .unwrap();
        assert!(
            a.has_blob(&mine).unwrap(),
            "own write seen by the next lookup"
        );
        assert!(
            b.has_blob(&mine).unwrap(),
            "and committed: another connection sees it"
        );
        assert_eq!(
            a.blob_location(&mine).unwrap().unwrap().pack,
            PackId([1; 32])
        );

        // Another connection writes while `a` holds its read transaction (WAL: not blocked).
        let theirs = BlobId([8; 32]);
        assert!(!a.has_blob(&theirs).unwrap());
        b.add_index(&IndexId([2; 32]), &[pack_with(2, theirs)])
            .unwrap();
        std::thread::sleep(LOOKUP_TRANSACTION_MAX_AGE * 2);
        assert!(
            a.has_blob(&theirs).unwrap(),
            "seen once the transaction is old"
        );

        // Every other access ends the shared transaction: a write never runs inside it.
        assert!(!a.has_blob(&BlobId([9; 32])).unwrap());
        a.stats().unwrap();
        assert!(a.conn.lock().unwrap().conn.is_autocommit());

        // Many lookups in a row end and restart the transaction on their own.
        for _ in 0..LOOKUPS_PER_TRANSACTION * 2 + 1 {
            assert!(a.has_blob(&mine).unwrap());
        }
        let n = a.conn.lock().unwrap().lookups.map(|(_, n)| n).unwrap();
        assert!(n <= LOOKUPS_PER_TRANSACTION, "{n}");
    }

    /// A catalog of schema v2 (before snapshots were remembered) is migrated in place, its
    /// cache kept: the snapshots it lists are the ones remembered from then on.
    #[test]
    fn a_v2_catalog_is_migrated_keeping_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let blob = BlobId([7; 32]);
        {
            let c = Catalog::open(&path).unwrap();
            c.add_index(&IndexId([1; 32]), &[pack_with(1, blob)])
                .unwrap();
            c.sql(|c| c.execute_batch("DROP TABLE gone_snapshots; PRAGMA user_version = 2;"))
                .unwrap();
        }
        let c = Catalog::open(&path).unwrap();
        let version: i64 = c
            .sql(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(c.has_blob(&blob).unwrap(), "the cache was kept");
        assert!(c.vanished_snapshots().unwrap().is_empty());
    }

    /// A catalog a newer coffer wrote is named as such, and `open` rebuilds it (it is a
    /// cache) rather than reading tables it does not know.
    #[test]
    fn a_newer_catalog_is_named_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let blob = BlobId([7; 32]);
        {
            let c = Catalog::open(&path).unwrap();
            c.add_index(&IndexId([1; 32]), &[pack_with(1, blob)])
                .unwrap();
            c.sql(|c| c.execute_batch("PRAGMA user_version = 99;"))
                .unwrap();
        }
        match Catalog::open_inner(&path) {
            Err(e @ CatalogError::NewerSchema { found: 99, .. }) => {
                assert!(e.to_string().contains("schema version 99"), "{e}")
            }
            other => panic!("expected NewerSchema, got {:?}", other.err()),
        }
        let c = Catalog::open(&path).unwrap();
        assert!(!c.has_blob(&blob).unwrap(), "rebuilt from scratch");
    }
}
