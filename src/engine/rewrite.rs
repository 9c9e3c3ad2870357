//! `rewrite`: new snapshots without the paths that should never have been backed up (restic's
//! `rewrite --exclude`), and with `--forget` without the old ones.
//!
//! Only trees on the way to an excluded entry are written again; every other subtree keeps its
//! id, and no file content is read or stored. Write order is a backup's: the new trees' packs
//! and index files, then the new snapshot, then (with `--forget`) the old snapshot goes, so a
//! crash leaves the old snapshot, or both, never neither. The space of what was excluded comes
//! back at the next `prune`, once no snapshot names it.

use std::path::Path;

use serde::Serialize;

use super::backup::with_uploader;
use super::exclude::{Patterns, absolute_components};
use super::saver::Saver;
use super::{EngineError, encode_tree, load_tree};
use crate::catalog::{Catalog, SnapshotEntry, SnapshotFilter};
use crate::format::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockGuard, LockKind, Repository};

/// The tag a rewritten snapshot gets, as restic gives it.
pub const REWRITE_TAG: &str = "rewrite";

/// What to rewrite, and how.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RewriteOptions {
    /// Exclude patterns, as `backup --exclude` reads them: an absolute path as it was read,
    /// a path inside the snapshot (`source/dir`), or a name at any depth.
    pub excludes: Vec<String>,
    /// The same, case-insensitive.
    pub iexcludes: Vec<String>,
    /// The snapshots (ids, unique prefixes, `latest`); all that pass `filter` when empty.
    pub snapshots: Vec<String>,
    /// Which snapshots, when none is named (and what `latest` means).
    pub filter: SnapshotFilter,
    /// Delete each snapshot that was rewritten.
    pub forget: bool,
    /// Say what would change; write nothing.
    pub dry_run: bool,
}

/// What was left out of one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Files (and other non-directories) left out.
    pub files: u64,
    /// Directories left out.
    pub dirs: u64,
    /// Bytes of file content left out.
    pub bytes: u64,
}

impl Removed {
    fn add(&mut self, o: Removed) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.bytes += o.bytes;
    }

    fn is_empty(&self) -> bool {
        self.files == 0 && self.dirs == 0
    }
}

/// One snapshot that changed.
#[derive(Clone, Debug, Serialize)]
pub struct Rewritten {
    /// The snapshot rewritten.
    #[serde(with = "crate::id::as_hex")]
    pub old_id: SnapshotId,
    /// The new snapshot (absent on a dry run).
    #[serde(with = "crate::id::as_hex_opt")]
    pub new_id: Option<SnapshotId>,
    /// Whether the old one was deleted.
    pub forgotten: bool,
    /// What the new one leaves out.
    pub removed: Removed,
}

/// What `rewrite` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RewriteSummary {
    /// The snapshots that changed.
    pub rewritten: Vec<Rewritten>,
    /// Snapshots that held nothing excluded.
    pub unchanged: usize,
    /// A dry run: nothing was written.
    pub dry_run: bool,
}

/// Rewrite the selected snapshots without the entries `opts` excludes.
pub fn rewrite(
    repo: &Repository,
    catalog: &Catalog,
    opts: &RewriteOptions,
) -> Result<RewriteSummary, EngineError> {
    let patterns = Patterns::new(&opts.excludes, &opts.iexcludes)?;
    if patterns.is_empty() {
        return Err(EngineError::Usage(
            "rewrite needs something to leave out: --exclude PATTERN or --exclude-file FILE".into(),
        ));
    }
    // Deleting snapshots takes the exclusive lock, as forget does; adding them a shared one.
    let kind = if opts.forget && !opts.dry_run {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    };
    let lock = repo.lock(kind, "rewrite")?;
    catalog.refresh(repo)?;
    let selected = catalog.select_snapshots(&opts.snapshots, &opts.filter)?;
    let mut summary = RewriteSummary {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    for entry in selected {
        match rewrite_one(repo, catalog, &lock, &patterns, &entry, opts)? {
            Some(r) => summary.rewritten.push(r),
            None => summary.unchanged += 1,
        }
    }
    Ok(summary)
}

/// Rewrite one snapshot; `None` when nothing in it is excluded.
fn rewrite_one(
    repo: &Repository,
    catalog: &Catalog,
    lock: &LockGuard,
    patterns: &Patterns,
    entry: &SnapshotEntry,
    opts: &RewriteOptions,
) -> Result<Option<Rewritten>, EngineError> {
    let (saver, rx) = Saver::new(repo, catalog);
    let saver = if opts.dry_run { saver.dry_run() } else { saver };
    let stats = saver.stats.clone();
    let walker = TreeRewriter {
        repo,
        catalog,
        patterns,
        saver: &saver,
    };
    let (root, removed) = with_uploader(repo, catalog, &saver, rx, &stats, || {
        let out = walker.root(&entry.snapshot)?;
        saver.finish()?;
        Ok(out)
    })?;
    if removed.is_empty() {
        return Ok(None);
    }
    let mut out = Rewritten {
        old_id: entry.id,
        new_id: None,
        forgotten: false,
        removed,
    };
    if opts.dry_run {
        return Ok(Some(out));
    }
    let snapshot = rewritten_snapshot(&entry.snapshot, root, removed);
    // The new snapshot last of what it needs; the old one goes only once it exists.
    lock.check_held()?;
    let new_id = repo.save_snapshot(&snapshot)?;
    catalog.add_snapshot(&new_id, &snapshot)?;
    out.new_id = Some(new_id);
    if opts.forget {
        catalog.remove_snapshot(&entry.id)?;
        repo.delete_snapshot(&entry.id)?;
        out.forgotten = true;
    }
    Ok(Some(out))
}

/// The manifest of the rewritten snapshot: the old one's time, host, sources and parent, its
/// tags plus [`REWRITE_TAG`], the new root, and counts without what was left out.
fn rewritten_snapshot(old: &Snapshot, root: BlobId, removed: Removed) -> Snapshot {
    let mut s = old.clone();
    s.tree = root;
    if !s.tags.iter().any(|t| t == REWRITE_TAG) {
        s.tags.push(REWRITE_TAG.into());
    }
    s.summary.files = s.summary.files.saturating_sub(removed.files);
    s.summary.dirs = s.summary.dirs.saturating_sub(removed.dirs);
    s.summary.total_bytes = s.summary.total_bytes.saturating_sub(removed.bytes);
    s.program_version = env!("CARGO_PKG_VERSION").to_string();
    s
}

/// Walks a snapshot's trees, writing again those on the way to an excluded entry.
struct TreeRewriter<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    patterns: &'a Patterns,
    saver: &'a Saver<'a>,
}

impl TreeRewriter<'_> {
    /// The root: one entry per source, whose absolute path is the one the source was read
    /// from.
    fn root(&self, snap: &Snapshot) -> Result<(BlobId, Removed), EngineError> {
        let mut tree = load_tree(self.repo, self.catalog, &snap.tree)?;
        let mut removed = Removed::default();
        let mut changed = false;
        let mut kept = Vec::with_capacity(tree.nodes.len());
        for mut node in std::mem::take(&mut tree.nodes) {
            let name = node.name.to_vec();
            let abs = snap
                .sources
                .iter()
                .find(|s| s.name.as_bytes() == name.as_slice())
                .filter(|s| s.path.starts_with('/'))
                .map(|s| absolute_components(Path::new(&s.path), Path::new("/")));
            let mut path = Paths {
                abs,
                in_snapshot: vec![name],
            };
            match self.node(&mut node, &mut path)? {
                Kept::Unchanged => kept.push(node),
                Kept::Changed(r) => {
                    removed.add(r);
                    changed = true;
                    kept.push(node);
                }
                Kept::Dropped(r) => {
                    removed.add(r);
                    changed = true;
                }
            }
        }
        tree.nodes = kept;
        if !changed {
            return Ok((snap.tree, removed));
        }
        Ok((self.save(&tree)?, removed))
    }

    /// Decide on `node` at `path`: drop it, keep it, or keep it with a new subtree.
    fn node(
        &self,
        node: &mut crate::format::tree::Node,
        path: &mut Paths,
    ) -> Result<Kept, EngineError> {
        if path.excluded(self.patterns) {
            return Ok(Kept::Dropped(self.count(node)?));
        }
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Ok(Kept::Unchanged);
        };
        let (id, removed) = self.dir(&sub, path)?;
        if removed.is_empty() {
            return Ok(Kept::Unchanged);
        }
        node.subtree = Some(id);
        Ok(Kept::Changed(removed))
    }

    /// The directory tree `id` at `path`, rewritten if anything below is excluded.
    fn dir(&self, id: &BlobId, path: &mut Paths) -> Result<(BlobId, Removed), EngineError> {
        let mut tree = load_tree(self.repo, self.catalog, id)?;
        let mut removed = Removed::default();
        let mut kept = Vec::with_capacity(tree.nodes.len());
        for mut node in std::mem::take(&mut tree.nodes) {
            path.push(&node.name);
            let decided = self.node(&mut node, path);
            path.pop();
            match decided? {
                Kept::Unchanged => kept.push(node),
                Kept::Changed(r) => {
                    removed.add(r);
                    kept.push(node);
                }
                Kept::Dropped(r) => removed.add(r),
            }
        }
        if removed.is_empty() {
            return Ok((*id, removed));
        }
        tree.nodes = kept;
        Ok((self.save(&tree)?, removed))
    }

    /// What leaving out `node` leaves out: itself and, for a directory, all below it.
    fn count(&self, node: &crate::format::tree::Node) -> Result<Removed, EngineError> {
        let mut r = Removed::default();
        if node.kind != NodeKind::Dir {
            r.files = 1;
            r.bytes = if node.kind == NodeKind::File {
                node.size
            } else {
                0
            };
            return Ok(r);
        }
        r.dirs = 1;
        if let Some(sub) = node.subtree {
            for child in load_tree(self.repo, self.catalog, &sub)?.nodes {
                r.add(self.count(&child)?);
            }
        }
        Ok(r)
    }

    fn save(&self, tree: &Tree) -> Result<BlobId, EngineError> {
        self.saver.save(BlobKind::Tree, &encode_tree(tree)?)
    }
}

/// What became of one entry.
enum Kept {
    Unchanged,
    Changed(Removed),
    Dropped(Removed),
}

/// An entry's path as exclude patterns see it: absolute as it was read (when the source's path
/// is known), and inside the snapshot.
struct Paths {
    abs: Option<Vec<Vec<u8>>>,
    in_snapshot: Vec<Vec<u8>>,
}

impl Paths {
    fn push(&mut self, name: &[u8]) {
        if let Some(a) = &mut self.abs {
            a.push(name.to_vec());
        }
        self.in_snapshot.push(name.to_vec());
    }

    fn pop(&mut self) {
        if let Some(a) = &mut self.abs {
            a.pop();
        }
        self.in_snapshot.pop();
    }

    fn excluded(&self, patterns: &Patterns) -> bool {
        let in_snapshot: Vec<&[u8]> = self.in_snapshot.iter().map(Vec::as_slice).collect();
        if patterns.matches(&in_snapshot) {
            return true;
        }
        self.abs.as_ref().is_some_and(|a| {
            let abs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            patterns.matches(&abs)
        })
    }
}
