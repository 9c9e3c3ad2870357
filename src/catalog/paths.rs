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
//! Names are stored once each (schema v5), and a pattern is matched against the distinct
//! names: 365 nights of 76k files are 17.5 million entries but 53,666 names.
//!
//! ```text
//! path_names(no INTEGER PRIMARY KEY, name TEXT UNIQUE)       an entry name (lossy UTF-8)
//! path_trees(no INTEGER PRIMARY KEY, id BLOB UNIQUE)         a tree id, numbered
//! path_entries(tree, name, kind, size, mtime, subtree)       its entries (name: path_names.no)
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

    /// Drop from the path index the snapshots the catalog no longer lists, and the trees no
    /// remaining snapshot reaches, in one transaction; returns how many trees went. Without
    /// it the index would keep every tree of every snapshot ever forgotten.
    pub fn drop_stale_paths(&self) -> Result<u64, CatalogError> {
        self.sql(|c| {
            let tx = c.transaction()?;
            let stale = tx.execute(
                "DELETE FROM path_snapshots WHERE snapshot NOT IN (SELECT id FROM snapshots)",
                [],
            )?;
            if stale == 0 {
                return Ok(0);
            }
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS live_trees(no INTEGER PRIMARY KEY);
                 DELETE FROM live_trees;
                 WITH RECURSIVE live(no) AS (
                     SELECT tree FROM path_snapshots
                     UNION
                     SELECT e.subtree FROM path_entries e JOIN live ON e.tree = live.no
                     WHERE e.subtree IS NOT NULL)
                 INSERT INTO live_trees SELECT no FROM live;
                 DELETE FROM path_entries WHERE tree NOT IN (SELECT no FROM live_trees);",
            )?;
            let dropped = tx.execute(
                "DELETE FROM path_trees WHERE no NOT IN (SELECT no FROM live_trees)",
                [],
            )?;
            tx.execute("DELETE FROM live_trees", [])?;
            tx.execute(
                "DELETE FROM path_names WHERE no NOT IN (SELECT name FROM path_entries)",
                [],
            )?;
            tx.commit()?;
            Ok(dropped as u64)
        })
    }

    /// Before adding many snapshots: no index on names (adding entries kept updating it at
    /// random places; building it once afterwards is a sort). [`Self::end_bulk_paths`] builds
    /// it again; until then `find_names` scans every entry.
    pub fn begin_bulk_paths(&self) -> Result<(), CatalogError> {
        self.sql(|c| c.execute_batch("DROP INDEX IF EXISTS path_entries_name;"))
    }

    /// After adding snapshots (in bulk or not): the index on names exists. Also repairs a bulk
    /// add that was killed.
    pub fn end_bulk_paths(&self) -> Result<(), CatalogError> {
        self.sql(|c| {
            c.execute_batch("CREATE INDEX IF NOT EXISTS path_entries_name ON path_entries(name);")
        })
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
                // A lookup first: an upsert would rewrite the name's row every time.
                let mut name_lookup =
                    tx.prepare_cached("SELECT no FROM path_names WHERE name = ?1")?;
                let mut name_insert =
                    tx.prepare_cached("INSERT INTO path_names(name) VALUES (?1) RETURNING no")?;
                let mut names: HashMap<Vec<u8>, i64> = HashMap::new();
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
                        let name_no = match names.get(n.name.as_slice()) {
                            Some(no) => *no,
                            None => {
                                let name = String::from_utf8_lossy(&n.name);
                                let found: Option<i64> = name_lookup
                                    .query_row(params![name], |r| r.get(0))
                                    .optional()?;
                                let no = match found {
                                    Some(no) => no,
                                    None => name_insert.query_row(params![name], |r| r.get(0))?,
                                };
                                names.insert(n.name.to_vec(), no);
                                no
                            }
                        };
                        entry.execute(params![
                            tree_no,
                            name_no,
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
        // The names first (CROSS JOIN keeps SQLite to that order), then their entries
        // through the index on path_entries(name).
        let sql = if ignore_case {
            "SELECT e.tree, n.name, e.kind, e.size, e.mtime FROM path_names n
             CROSS JOIN path_entries e ON e.name = n.no WHERE lower(n.name) GLOB lower(?1)"
        } else {
            "SELECT e.tree, n.name, e.kind, e.size, e.mtime FROM path_names n
             CROSS JOIN path_entries e ON e.name = n.no WHERE n.name GLOB ?1"
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
            let mut st = c.prepare_cached(
                "SELECT e.tree, n.name FROM path_entries e JOIN path_names n ON n.no = e.name
                     WHERE e.subtree = ?1",
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::Snapshot;
    use crate::format::tree::Node;

    fn snapshot(root: BlobId) -> Snapshot {
        Snapshot {
            time_ns: 1,
            host: "h".into(),
            username: "u".into(),
            tags: vec![],
            parent: None,
            tree: root,
            sources: vec![],
            summary: Default::default(),
            program_version: "t".into(),
        }
    }

    fn dir(name: &str, sub: BlobId) -> Node {
        Node::new(name.as_bytes().to_vec(), NodeKind::Dir).with_subtree(sub)
    }

    fn file(name: &str) -> Node {
        Node::new(name.as_bytes().to_vec(), NodeKind::File)
    }

    #[test]
    fn forgotten_snapshots_leave_only_the_trees_others_still_reach() {
        let dir_ = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir_.path().join("catalog.sqlite")).unwrap();
        let id = |b: u8| BlobId([b; 32]);
        // Snapshot 1: root 1 -> shared 3 and own 4; snapshot 2: root 2 -> shared 3.
        let shared = (
            id(3),
            Tree {
                nodes: vec![file("kept.txt")],
            },
        );
        let own = (
            id(4),
            Tree {
                nodes: vec![file("gone.txt")],
            },
        );
        let root1 = (
            id(1),
            Tree {
                nodes: vec![dir("a", id(3)), dir("b", id(4))],
            },
        );
        let root2 = (
            id(2),
            Tree {
                nodes: vec![dir("a", id(3))],
            },
        );
        let (s1, s2) = (SnapshotId([1; 32]), SnapshotId([2; 32]));
        c.update_snapshots(&[s1, s2], |s| Some(snapshot(id(s.0[0]))))
            .unwrap();
        c.add_snapshot_paths(&s1, &id(1), &[root1, shared, own])
            .unwrap();
        c.add_snapshot_paths(&s2, &id(2), &[root2]).unwrap();
        assert_eq!(c.drop_stale_paths().unwrap(), 0, "nothing forgotten yet");
        assert_eq!(c.find_names("gone.txt", false).unwrap().len(), 1);

        c.remove_snapshot(&s1).unwrap();
        assert_eq!(c.drop_stale_paths().unwrap(), 2, "root 1 and tree 4");
        assert!(c.find_names("gone.txt", false).unwrap().is_empty());
        assert_eq!(c.find_names("kept.txt", false).unwrap().len(), 1);
        assert!(c.tree_has_paths(&id(3)).unwrap() && !c.tree_has_paths(&id(4)).unwrap());
        assert_eq!(c.snapshots_without_paths().unwrap(), vec![]);
        let names: i64 = c
            .sql(|c| c.query_row("SELECT count(*) FROM path_names", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(
            names, 2,
            "`a` and `kept.txt`; `b` and `gone.txt` went with their trees"
        );
    }
}
