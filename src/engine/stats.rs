//! `stats --mode`: how big snapshots are, counted the ways restic counts them.
//!
//! - `restore-size`: what a restore writes: every file of every selected snapshot, its full
//!   size, however often the same content appears.
//! - `files-by-contents`: files with distinct content (the same content lists once).
//! - `raw-data`: the distinct blobs the snapshots need (content and trees), their size before
//!   and after compression and encryption: what the repository spends on them.
//!
//! Trees are walked from the catalog's cache; a subtree seen before is counted from memory,
//! so a thousand snapshots of a mostly unchanged volume cost little more than one.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{EngineError, load_tree};
use crate::catalog::{Catalog, SnapshotFilter};
use crate::format::tree::NodeKind;
use crate::id::BlobId;
use crate::repo::{LockKind, RepoError, Repository};

/// How to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// What a restore writes.
    #[default]
    RestoreSize,
    /// Files with distinct content.
    FilesByContents,
    /// The distinct blobs the snapshots need.
    RawData,
}

/// Which snapshots to count, and how.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsOptions {
    /// How to count.
    pub mode: StatsMode,
    /// The snapshots (ids, prefixes, `latest`); all that pass `filter` when empty.
    pub snapshots: Vec<String>,
    /// Which snapshots when none is named, and what `latest` means.
    pub filter: SnapshotFilter,
}

/// The counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotStats {
    /// How they were counted.
    pub mode: StatsMode,
    /// Snapshots counted.
    pub snapshots_count: u64,
    /// Files (`restore-size`, `files-by-contents`); absent for `raw-data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_file_count: Option<u64>,
    /// Bytes: of files (`restore-size`, `files-by-contents`), or of the blobs before
    /// compression (`raw-data`).
    pub total_size: u64,
    /// Distinct blobs (`raw-data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_blob_count: Option<u64>,
    /// Bytes those blobs take in the repository, compressed and sealed (`raw-data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_stored_size: Option<u64>,
    /// `total_size / total_stored_size` (`raw-data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
}

/// Count the selected snapshots.
pub fn stats(
    repo: &Repository,
    catalog: &Catalog,
    opts: &StatsOptions,
) -> Result<SnapshotStats, EngineError> {
    let _lock = repo.lock(LockKind::Shared, "stats")?;
    catalog.refresh(repo)?;
    let selected = catalog.select_snapshots(&opts.snapshots, &opts.filter)?;
    let mut counter = Counter {
        repo,
        catalog,
        sizes: HashMap::new(),
        seen_trees: HashSet::new(),
        contents: HashSet::new(),
        blobs: HashSet::new(),
    };
    let mut out = SnapshotStats {
        mode: opts.mode,
        snapshots_count: selected.len() as u64,
        ..Default::default()
    };
    match opts.mode {
        StatsMode::RestoreSize => {
            let (mut files, mut size) = (0, 0);
            for e in &selected {
                let s = counter.restore_size(&e.snapshot.tree)?;
                files += s.files;
                size += s.bytes;
            }
            out.total_file_count = Some(files);
            out.total_size = size;
        }
        StatsMode::FilesByContents => {
            let (mut files, mut size) = (0, 0);
            for e in &selected {
                let s = counter.distinct_files(&e.snapshot.tree)?;
                files += s.files;
                size += s.bytes;
            }
            out.total_file_count = Some(files);
            out.total_size = size;
        }
        StatsMode::RawData => {
            for e in &selected {
                counter.blobs_of(&e.snapshot.tree)?;
            }
            let (raw, stored) = counter.blob_sizes()?;
            out.total_blob_count = Some(counter.blobs.len() as u64);
            out.total_size = raw;
            out.total_stored_size = Some(stored);
            out.compression_ratio = Some(if stored > 0 {
                raw as f64 / stored as f64
            } else {
                0.0
            });
        }
    }
    Ok(out)
}

/// Files and their bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Size {
    files: u64,
    bytes: u64,
}

struct Counter<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    /// `restore-size` of each tree counted so far.
    sizes: HashMap<BlobId, Size>,
    /// Trees already walked (`files-by-contents`, `raw-data`).
    seen_trees: HashSet<BlobId>,
    /// Content lists already counted (`files-by-contents`).
    contents: HashSet<Vec<BlobId>>,
    /// Blobs needed (`raw-data`).
    blobs: HashSet<BlobId>,
}

impl Counter<'_> {
    /// Every file below `tree`, each counted, every time it appears.
    fn restore_size(&mut self, tree: &BlobId) -> Result<Size, EngineError> {
        if let Some(s) = self.sizes.get(tree) {
            return Ok(*s);
        }
        let mut total = Size::default();
        for node in load_tree(self.repo, self.catalog, tree)?.nodes {
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    let s = self.restore_size(&sub)?;
                    total.files += s.files;
                    total.bytes += s.bytes;
                }
                (NodeKind::File, _) => {
                    total.files += 1;
                    total.bytes += node.size;
                }
                _ => {}
            }
        }
        self.sizes.insert(*tree, total);
        Ok(total)
    }

    /// The files below `tree` whose content was not counted before.
    fn distinct_files(&mut self, tree: &BlobId) -> Result<Size, EngineError> {
        let mut total = Size::default();
        if !self.seen_trees.insert(*tree) {
            return Ok(total);
        }
        for node in load_tree(self.repo, self.catalog, tree)?.nodes {
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    let s = self.distinct_files(&sub)?;
                    total.files += s.files;
                    total.bytes += s.bytes;
                }
                (NodeKind::File, _) if self.contents.insert(node.content) => {
                    total.files += 1;
                    total.bytes += node.size;
                }
                _ => {}
            }
        }
        Ok(total)
    }

    /// Note every blob `tree` needs: itself, its subtrees, its files' content.
    fn blobs_of(&mut self, tree: &BlobId) -> Result<(), EngineError> {
        if !self.seen_trees.insert(*tree) {
            return Ok(());
        }
        self.blobs.insert(*tree);
        for node in load_tree(self.repo, self.catalog, tree)?.nodes {
            self.blobs.extend(node.content.iter().copied());
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                self.blobs_of(&sub)?;
            }
        }
        Ok(())
    }

    /// Bytes of the noted blobs: before compression, and as stored.
    fn blob_sizes(&self) -> Result<(u64, u64), EngineError> {
        let (mut raw, mut stored) = (0u64, 0u64);
        for id in &self.blobs {
            let loc = self.catalog.blob_location(id)?.ok_or_else(|| {
                RepoError::corrupt(
                    format!("blob {id}"),
                    "a snapshot needs it, the index does not name it (run `coffer check`)",
                )
            })?;
            raw += u64::from(loc.entry.raw_len);
            stored += u64::from(loc.entry.packed_len);
        }
        Ok((raw, stored))
    }
}
