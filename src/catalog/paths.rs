//! The path index (schema v4): the entries of every tree of every indexed snapshot, stored
//! once per distinct tree, for `find` across all snapshots without reading a tree.
//!
//! Trees are content-named, so a directory unchanged over a year of nightly snapshots is one
//! tree here, and a snapshot adds only the trees it changed: the index is built
//! incrementally, snapshot by snapshot, each in one transaction (a snapshot is indexed whole
//! or not at all). A name is matched with SQLite's `GLOB` over the distinct entries; the
//! paths of a match are found by climbing from its tree to the snapshot roots through the
//! `subtree` column (indexed).
//!
//! ```text
//! path_trees(no INTEGER PRIMARY KEY, id BLOB UNIQUE)        a tree id, numbered
//! path_entries(tree, name TEXT, kind, size, mtime, subtree)  its entries (names lossy UTF-8)
//! path_snapshots(snapshot BLOB PRIMARY KEY, tree)            indexed snapshots and their root
//! ```

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};

use super::{Catalog, CatalogError};
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};

/// One entry whose name matched, in a tree of the index.
#[derive(Clone, Debug)]
pub struct PathHit {
    /// The tree holding it (the index's number).
    pub tree: i64,
    /// Its name (lossy UTF-8).
    pub name: String,
    /// Its kind.
    pub kind: NodeKind,
    /// Its size (files).
    pub size: u64,
    /// Its modification time (seconds).
    pub mtime: i64,
}

fn kind_code(k: NodeKind) -> i64 {
    match k {
        NodeKind::File => 0,
        NodeKind::Dir => 1,
        NodeKind::Symlink => 2,
        NodeKind::Fifo => 3,
        NodeKind::CharDevice => 4,
        NodeKind::BlockDevice => 5,
        NodeKind::Socket => 6,
    }
}

fn kind_of(code: i64) -> NodeKind {
    match code {
        0 => NodeKind::File,
        1 => NodeKind::Dir,
        2 => NodeKind::Symlink,
        3 => NodeKind::Fifo,
        4 => NodeKind::CharDevice,
        5 => NodeKind::BlockDevice,
        _ => NodeKind::Socket,
    }
}

impl Catalog {
    /// The snapshots in the catalog not yet in the path index.
    pub fn snapshots_without_paths(&self) -> Result<Vec<(SnapshotId, BlobId)>, CatalogError> {
        let indexed: HashSet<Vec<u8>> = self.sql(|c| {
            let mut st = c.prepare("SELECT snapshot FROM path_snapshots")?;
            st.query_map([], |r| r.get(0))?.collect()
        })?;
        Ok(self
            .snapshots()?
            .into_iter()
            .filter(|s| !indexed.contains(&s.id.0[..]))
            .map(|s| (s.id, s.snapshot.tree))
            .collect())
    }

    /// Whether the tree `id` is in the path index (with everything below it).
    pub fn tree_has_paths(&self, id: &BlobId) -> Result<bool, CatalogError> {
        self.lookup(|c| {
            c.prepare_cached("SELECT 1 FROM path_trees WHERE id = ?1")?
                .query_row(params![&id.0[..]], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    /// Add a snapshot to the path index: its root, and the trees below it that are not in the
    /// index yet (`trees`, all of them: a tree is added only with its subtrees), in one
    /// transaction.
    pub fn add_snapshot_paths(
        &self,
        snapshot: &SnapshotId,
        root: &BlobId,
        trees: &[(BlobId, Tree)],
    ) -> Result<(), CatalogError> {
        self.sql(|c| {
            let tx = c.transaction()?;
            {
                let mut number = tx.prepare_cached(
                    "INSERT INTO path_trees(id) VALUES (?1) ON CONFLICT(id) DO UPDATE SET id = id
                     RETURNING no",
                )?;
                let mut no = |id: &BlobId| -> rusqlite::Result<i64> {
                    number.query_row(params![&id.0[..]], |r| r.get(0))
                };
                let mut entry = tx.prepare_cached(
                    "INSERT INTO path_entries(tree, name, kind, size, mtime, subtree)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (id, tree) in trees {
                    let tree_no = no(id)?;
                    for n in &tree.nodes {
                        let subtree = match (n.kind, n.subtree) {
                            (NodeKind::Dir, Some(s)) => Some(no(&s)?),
                            _ => None,
                        };
                        entry.execute(params![
                            tree_no,
                            String::from_utf8_lossy(&n.name),
                            kind_code(n.kind),
                            n.size as i64,
                            n.mtime,
                            subtree
                        ])?;
                    }
                }
                let root_no = no(root)?;
                tx.execute(
                    "INSERT OR REPLACE INTO path_snapshots(snapshot, tree) VALUES (?1, ?2)",
                    params![&snapshot.0[..], root_no],
                )?;
            }
            tx.commit()
        })
    }

    /// Entries whose name matches the glob `pattern` (`*`, `?`, `[...]`), in every indexed
    /// tree; `ignore_case`: compared in lower case.
    pub fn find_names(
        &self,
        pattern: &str,
        ignore_case: bool,
    ) -> Result<Vec<PathHit>, CatalogError> {
        let sql = if ignore_case {
            "SELECT tree, name, kind, size, mtime FROM path_entries WHERE lower(name) GLOB lower(?1)"
        } else {
            "SELECT tree, name, kind, size, mtime FROM path_entries WHERE name GLOB ?1"
        };
        self.sql(|c| {
            let mut st = c.prepare(sql)?;
            st.query_map(params![pattern], |r| {
                Ok(PathHit {
                    tree: r.get(0)?,
                    name: r.get(1)?,
                    kind: kind_of(r.get(2)?),
                    size: r.get::<_, i64>(3)? as u64,
                    mtime: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// The directories that hold the tree numbered `tree`: (their tree, the name) pairs.
    pub fn path_parents(&self, tree: i64) -> Result<Vec<(i64, String)>, CatalogError> {
        self.lookup(|c| {
            let mut st =
                c.prepare_cached("SELECT tree, name FROM path_entries WHERE subtree = ?1")?;
            st.query_map(params![tree], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// The root tree of every indexed snapshot still in the catalog, and its snapshots.
    pub fn path_roots(&self) -> Result<HashMap<i64, Vec<SnapshotId>>, CatalogError> {
        let rows: Vec<(Vec<u8>, i64)> = self.sql(|c| {
            let mut st = c.prepare(
                "SELECT p.snapshot, p.tree FROM path_snapshots p JOIN snapshots s
                 ON s.id = p.snapshot",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })?;
        let mut roots: HashMap<i64, Vec<SnapshotId>> = HashMap::new();
        for (id, tree) in rows {
            if let Ok(id) = <[u8; 32]>::try_from(&id[..]) {
                roots.entry(tree).or_default().push(SnapshotId(id));
            }
        }
        Ok(roots)
    }
}
