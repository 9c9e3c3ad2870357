//! `diff`: what changed between two snapshots, entry by entry, with sizes. Subtrees with the
//! same tree id are equal by construction (a tree's id is the keyed hash of its encoding) and
//! are skipped without being loaded, so the cost grows with what changed, not with the size of
//! the snapshots.

use std::path::Path;

use serde::Serialize;

use super::walk::{kind_name, walk};
use super::{EngineError, load_tree};
use crate::catalog::Catalog;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::{LockKind, Repository};

/// How an entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second snapshot (`+`).
    Added,
    /// Only in the first (`-`).
    Removed,
    /// Content, size or link target differ (`M`).
    Modified,
    /// The kind differs, e.g. a file became a directory (`T`).
    Type,
    /// Only metadata (mode, owner, times, xattrs) differs (`U`; reported with `metadata`).
    Metadata,
}

impl Change {
    /// The one-letter mark restic prints.
    pub fn mark(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Type => 'T',
            Change::Metadata => 'U',
        }
    }
}

/// One changed entry.
#[derive(Clone, Debug, Serialize)]
pub struct DiffEntry {
    /// Path inside the snapshots (`/`-separated, with a trailing `/` for directories).
    pub path: String,
    /// What changed.
    pub change: Change,
    /// `file`, `dir`, `symlink`, ... (of the second snapshot's entry when there is one).
    pub kind: &'static str,
    /// Size in the first snapshot (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    /// Size in the second snapshot (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
}

/// Totals of a diff.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffSummary {
    /// The first snapshot's id.
    pub from: String,
    /// The second snapshot's id.
    pub to: String,
    /// Files and other non-directories added.
    pub files_added: u64,
    /// Files and other non-directories removed.
    pub files_removed: u64,
    /// Entries modified (content, size, link target) or changed kind.
    pub files_changed: u64,
    /// Directories added.
    pub dirs_added: u64,
    /// Directories removed.
    pub dirs_removed: u64,
    /// Bytes of the files added, and the growth of changed files that grew.
    pub bytes_added: u64,
    /// Bytes of the files removed, and the shrinkage of changed files that shrank.
    pub bytes_removed: u64,
    /// Trees loaded to compute this (unchanged subtrees are never loaded).
    pub trees_loaded: u64,
}

/// Compare snapshot `from` with snapshot `to` (ids, prefixes or `latest`), calling `f` for each
/// changed entry in path order. `metadata`: also report entries whose metadata alone changed.
pub fn diff(
    repo: &Repository,
    catalog: &Catalog,
    from: &str,
    to: &str,
    metadata: bool,
    f: &mut dyn FnMut(DiffEntry),
) -> Result<DiffSummary, EngineError> {
    let _lock = repo.lock(LockKind::Shared, "diff")?;
    catalog.refresh(repo)?;
    let a = catalog.resolve_snapshot(from)?;
    let b = catalog.resolve_snapshot(to)?;
    let mut d = Differ {
        repo,
        catalog,
        metadata,
        s: DiffSummary {
            from: a.id.to_hex(),
            to: b.id.to_hex(),
            ..Default::default()
        },
        f,
    };
    d.trees("", a.snapshot.tree, b.snapshot.tree)?;
    Ok(d.s)
}

struct Differ<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    metadata: bool,
    s: DiffSummary,
    f: &'a mut dyn FnMut(DiffEntry),
}

impl Differ<'_> {
    /// Compare the trees `a` and `b` found at `dir` (`""` or ending in `/`).
    fn trees(&mut self, dir: &str, a: BlobId, b: BlobId) -> Result<(), EngineError> {
        if a == b {
            return Ok(());
        }
        let ta = load_tree(self.repo, self.catalog, &a)?;
        let tb = load_tree(self.repo, self.catalog, &b)?;
        self.s.trees_loaded += 2;
        // Both are sorted by name: merge them.
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let order = match (ta.nodes.get(i), tb.nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.one_side(dir, &ta.nodes[i], Change::Removed)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.one_side(dir, &tb.nodes[j], Change::Added)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.both(dir, &ta.nodes[i], &tb.nodes[j])?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// An entry (and everything below it) present on one side only.
    fn one_side(&mut self, dir: &str, node: &Node, change: Change) -> Result<(), EngineError> {
        let base = format!("{dir}{}", String::from_utf8_lossy(&node.name));
        let (repo, catalog) = (self.repo, self.catalog);
        let mut entries = Vec::new();
        walk(repo, catalog, Path::new(&base), node, &mut |p, n| {
            entries.push((p.to_string_lossy().into_owned(), n.kind, n.size));
            Ok(())
        })?;
        for (path, kind, size) in entries {
            let is_dir = kind == NodeKind::Dir;
            let size = (kind == NodeKind::File).then_some(size);
            match (change, is_dir) {
                (Change::Added, true) => self.s.dirs_added += 1,
                (Change::Added, false) => {
                    self.s.files_added += 1;
                    self.s.bytes_added += size.unwrap_or(0);
                }
                (_, true) => self.s.dirs_removed += 1,
                (_, false) => {
                    self.s.files_removed += 1;
                    self.s.bytes_removed += size.unwrap_or(0);
                }
            }
            let (size_before, size_after) = match change {
                Change::Added => (None, size),
                _ => (size, None),
            };
            (self.f)(DiffEntry {
                path: if is_dir { format!("{path}/") } else { path },
                change,
                kind: kind_name(kind),
                size_before,
                size_after,
            });
        }
        Ok(())
    }

    /// An entry present on both sides.
    fn both(&mut self, dir: &str, a: &Node, b: &Node) -> Result<(), EngineError> {
        let name = String::from_utf8_lossy(&b.name);
        if a.kind == NodeKind::Dir && b.kind == NodeKind::Dir {
            if self.metadata && metadata_differs(a, b) {
                self.report(format!("{dir}{name}/"), Change::Metadata, a, b);
            }
            return match (a.subtree, b.subtree) {
                (Some(x), Some(y)) => self.trees(&format!("{dir}{name}/"), x, y),
                _ => Ok(()),
            };
        }
        let path = format!("{dir}{name}");
        if a.kind != b.kind {
            self.s.files_changed += 1;
            self.report(path, Change::Type, a, b);
        } else if a.content != b.content || a.size != b.size || a.link_target != b.link_target {
            self.s.files_changed += 1;
            self.s.bytes_added += b.size.saturating_sub(a.size);
            self.s.bytes_removed += a.size.saturating_sub(b.size);
            self.report(path, Change::Modified, a, b);
        } else if self.metadata && metadata_differs(a, b) {
            self.report(path, Change::Metadata, a, b);
        }
        Ok(())
    }

    fn report(&mut self, path: String, change: Change, a: &Node, b: &Node) {
        let size = |n: &Node| (n.kind == NodeKind::File).then_some(n.size);
        (self.f)(DiffEntry {
            path,
            change,
            kind: kind_name(b.kind),
            size_before: size(a),
            size_after: size(b),
        });
    }
}

fn metadata_differs(a: &Node, b: &Node) -> bool {
    (a.mode, a.uid, a.gid, a.mtime, a.mtime_nsec) != (b.mode, b.uid, b.gid, b.mtime, b.mtime_nsec)
        || a.xattrs != b.xattrs
}
