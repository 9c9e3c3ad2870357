//! Copy: snapshots of another repository, one with a master key of its own, into this one
//! (restic's `copy --from-repo`). Blob ids are keyed hashes, so every blob is read from the
//! source (decrypted, decompressed, verified), its id computed again with the destination's
//! key, and stored through the destination's saver, which deduplicates against what the
//! destination holds. Trees are written again bottom-up with the new ids, and each snapshot
//! last, with the source's time, host, user, tags, sources and summary. Chunks stay as they
//! are: nothing is chunked again, whatever the two repositories' chunker parameters.
//! (Repositories that share the master key, made with `init --from`, are `sync`'s; copy works
//! between them too, every id mapping to itself.)
//!
//! Order, per snapshot: packs, then the index files naming them (the saver's uploader), then
//! the snapshot. An interrupted copy leaves the snapshots copied so far, and blobs that no
//! snapshot names yet, which the next run finds and does not store again.
//!
//! A source snapshot counts as copied when the destination has a snapshot of the same time
//! and host whose root tree is the source's root tree mapped. The blob map
//! ([`crate::catalog::BlobMap`], in the cache directory) remembers the destination id of
//! every blob and root tree copied, so a second run decides without reading any data, and a
//! copy of a new snapshot reads only the chunks the destination lacks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::saver::{Saver, SaverStats, run_uploader};
use super::{EngineError, Progress, encode_tree, load_tree};
use crate::catalog::{BlobMap, Catalog, CatalogError, SnapshotEntry};
use crate::format::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockGuard, LockKind, RepoError, Repository};

/// Source trees whose copies one run remembers (about 100 bytes each), so that a directory
/// found unchanged in the next snapshot is not walked again; past this the memory starts over.
const TREES_REMEMBERED: usize = 1 << 20;

/// What to copy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyOptions {
    /// Snapshots of the source (ids, unique prefixes or `latest`); empty means all of
    /// `host` and `tags`.
    pub snapshots: Vec<String>,
    /// Only snapshots of this host (with ids given: what `latest` picks from).
    pub host: Option<String>,
    /// Only snapshots with every one of these tags (with ids given: what `latest` picks from).
    pub tags: Vec<String>,
    /// Read and map everything, store nothing: the summary says what would be added.
    pub dry_run: bool,
    /// Where the blob map is kept (the cache directory); none: every run reads the source.
    pub cache_dir: Option<PathBuf>,
}

/// One selected snapshot and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct CopiedSnapshot {
    /// The snapshot in the source.
    #[serde(with = "crate::id::as_hex")]
    pub source_id: SnapshotId,
    /// Its copy in the destination: written now, or found there. None when a dry run would
    /// write it.
    #[serde(with = "crate::id::as_hex_opt")]
    pub target_id: Option<SnapshotId>,
    /// Whether it was written now (or, for a dry run, would be); false: already there.
    pub copied: bool,
    /// Its time (RFC 3339).
    pub time: String,
    /// Its time, nanoseconds since the epoch.
    #[serde(skip)]
    pub time_ns: i64,
    /// Its host.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// What a copy did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopySummary {
    /// Where from.
    pub source: String,
    /// Where to.
    pub target: String,
    /// The selected snapshots, oldest first.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Snapshots written to the destination (by a dry run: that would be).
    pub snapshots_copied: u64,
    /// Selected snapshots the destination already had.
    pub snapshots_skipped: u64,
    /// Data blobs read from the source (those the blob map did not already place).
    pub blobs_read: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_read: u64,
    /// Blobs (data and trees) added to the destination (by a dry run: that would be).
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_added: u64,
    /// Bytes written for them (compressed, encrypted).
    pub stored_bytes_added: u64,
    /// Packs written.
    pub packs_written: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Nothing was stored.
    pub dry_run: bool,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// Copy the selected snapshots of `source` (its catalog `source_catalog`) into `target`.
/// `progress` counts the files and content bytes of the snapshots walked.
pub fn copy(
    source: &Repository,
    source_catalog: &Catalog,
    target: &Repository,
    target_catalog: &Catalog,
    opts: &CopyOptions,
    progress: &Progress,
) -> Result<CopySummary, EngineError> {
    let started = Instant::now();
    if source.config().id == target.config().id {
        return Err(EngineError::Usage(
            "--from-repo is the repository copied into: give another one".into(),
        ));
    }
    let _source_lock = source.lock(LockKind::Shared, "copy (source)")?;
    let target_lock = target.lock(LockKind::Shared, "copy")?;
    source_catalog.refresh(source)?;
    target_catalog.refresh(target)?;
    let selected = select_snapshots(source_catalog, opts, &source.describe())?;
    progress.total_bytes.store(
        selected
            .iter()
            .map(|e| e.snapshot.summary.total_bytes)
            .sum(),
        Ordering::Relaxed,
    );
    progress.total_files.store(
        selected.iter().map(|e| e.snapshot.summary.files).sum(),
        Ordering::Relaxed,
    );
    let mut existing = Existing::new(target_catalog.snapshots()?);
    let copier = Copier {
        source,
        source_catalog,
        target,
        target_catalog,
        target_lock: &target_lock,
        memo: Memo::open(source, target, opts.cache_dir.as_ref()),
        identity: super::sync::same_master(source, target),
        trees: Mutex::new(HashMap::new()),
        dry_run: opts.dry_run,
        progress,
        blobs_read: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
    };
    let mut sum = CopySummary {
        source: source.describe(),
        target: target.describe(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // Source snapshot -> its copy, for the copies' parents.
    let mut copies: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    for entry in &selected {
        let done = copier.snapshot(entry, &mut existing, &copies, &mut sum)?;
        if let Some(id) = done.target_id {
            copies.insert(entry.id, id);
        }
        if done.copied {
            sum.snapshots_copied += 1;
        } else {
            sum.snapshots_skipped += 1;
        }
        sum.snapshots.push(done);
    }
    copier.memo.flush();
    sum.blobs_read = copier.blobs_read.load(Ordering::Relaxed);
    sum.bytes_read = copier.bytes_read.load(Ordering::Relaxed);
    sum.duration_secs = started.elapsed().as_secs_f64();
    Ok(sum)
}

/// The snapshots to copy, oldest first, each once: every snapshot of `opts.host` and
/// `opts.tags` when no id is given; else those named, `latest` being the newest of those
/// filters (as restic takes them).
fn select_snapshots(
    catalog: &Catalog,
    opts: &CopyOptions,
    source: &str,
) -> Result<Vec<SnapshotEntry>, EngineError> {
    let filtered: Vec<SnapshotEntry> = catalog
        .snapshots()?
        .into_iter()
        .filter(|e| opts.host.as_ref().is_none_or(|h| *h == e.snapshot.host))
        .filter(|e| opts.tags.iter().all(|t| e.snapshot.tags.contains(t)))
        .collect();
    if opts.snapshots.is_empty() {
        return Ok(filtered);
    }
    let in_source = |e: CatalogError| match e {
        CatalogError::Snapshot(m) => EngineError::Catalog(CatalogError::Snapshot(format!(
            "source repository {source}: {m}"
        ))),
        e => e.into(),
    };
    let mut out: Vec<SnapshotEntry> = Vec::new();
    for spec in &opts.snapshots {
        let entry = if spec == "latest" {
            newest(&filtered).ok_or_else(|| {
                in_source(CatalogError::Snapshot(
                    "no snapshot matches --host and --tag".into(),
                ))
            })?
        } else {
            catalog.resolve_snapshot(spec).map_err(in_source)?
        };
        if !out.iter().any(|o| o.id == entry.id) {
            out.push(entry);
        }
    }
    out.sort_by_key(|e| (e.snapshot.time_ns, e.id));
    Ok(out)
}

/// The newest snapshot not tagged `pre-restore` (a restore's safety copy), else the newest:
/// what `latest` means everywhere.
fn newest(list: &[SnapshotEntry]) -> Option<SnapshotEntry> {
    list.iter()
        .rev()
        .find(|e| !e.snapshot.tags.iter().any(|t| t == "pre-restore"))
        .or(list.last())
        .cloned()
}

/// The destination's snapshots by time and host: the candidates for "already copied".
struct Existing(HashMap<(i64, String), Vec<(SnapshotId, BlobId)>>);

impl Existing {
    fn new(list: Vec<SnapshotEntry>) -> Self {
        let mut map: HashMap<(i64, String), Vec<(SnapshotId, BlobId)>> = HashMap::new();
        for e in list {
            map.entry((e.snapshot.time_ns, e.snapshot.host.clone()))
                .or_default()
                .push((e.id, e.snapshot.tree));
        }
        Self(map)
    }

    /// The snapshot of this time and host whose root tree is `tree`.
    fn find(&self, s: &Snapshot, tree: &BlobId) -> Option<SnapshotId> {
        self.0
            .get(&(s.time_ns, s.host.clone()))?
            .iter()
            .find(|(_, t)| t == tree)
            .map(|(id, _)| *id)
    }

    fn any(&self, s: &Snapshot) -> bool {
        self.0.contains_key(&(s.time_ns, s.host.clone()))
    }

    fn add(&mut self, s: &Snapshot, id: SnapshotId) {
        self.0
            .entry((s.time_ns, s.host.clone()))
            .or_default()
            .push((id, s.tree));
    }
}

/// The blob map, if it could be opened; a failure of it is a warning, and the copy goes on
/// without it (reading the source where it would have been spared).
struct Memo {
    map: Option<BlobMap>,
    failed: AtomicBool,
}

impl Memo {
    fn open(source: &Repository, target: &Repository, cache_dir: Option<&PathBuf>) -> Self {
        let map = cache_dir.and_then(|dir| {
            // Named by both repositories' id keys: its entries hold for this pair only.
            let fingerprint = |r: &Repository| r.keys().blob_id(BlobKind::Tree, b"coffer copy");
            let pair = source
                .keys()
                .blob_id(BlobKind::Data, &fingerprint(target).0);
            let path = BlobMap::path_for(dir, &target.config().id, &pair.to_hex()[..32]);
            BlobMap::open(&path)
                .map_err(|e| tracing::warn!("{e}; copying without the blob map"))
                .ok()
        });
        Self {
            map,
            failed: AtomicBool::new(false),
        }
    }

    fn usable(&self) -> Option<&BlobMap> {
        self.map
            .as_ref()
            .filter(|_| !self.failed.load(Ordering::Relaxed))
    }

    fn fail(&self, e: CatalogError) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::warn!("{e}; copying on without the blob map");
        }
    }

    fn get(&self, src: &BlobId) -> Option<BlobId> {
        self.usable()?.get(src).unwrap_or_else(|e| {
            self.fail(e);
            None
        })
    }

    fn insert(&self, src: &BlobId, dst: &BlobId) {
        if let Some(map) = self.usable()
            && let Err(e) = map.insert(src, dst)
        {
            self.fail(e);
        }
    }

    fn flush(&self) {
        if let Some(map) = self.usable()
            && let Err(e) = map.flush()
        {
            self.fail(e);
        }
    }
}

/// A source tree's copy, and the files and content bytes below it (for progress).
#[derive(Clone, Copy)]
struct Mapped {
    id: BlobId,
    files: u64,
    bytes: u64,
}

/// Maps blobs from the source into the destination.
struct Copier<'a> {
    source: &'a Repository,
    source_catalog: &'a Catalog,
    target: &'a Repository,
    target_catalog: &'a Catalog,
    /// The lock on the target, checked before each snapshot is written.
    target_lock: &'a LockGuard,
    memo: Memo,
    /// The repositories share the master key: every id maps to itself.
    identity: bool,
    /// Source trees copied in this run (through a saver whose blobs are stored, or pending).
    trees: Mutex<HashMap<BlobId, Mapped>>,
    dry_run: bool,
    progress: &'a Progress,
    blobs_read: AtomicU64,
    bytes_read: AtomicU64,
}

impl Copier<'_> {
    /// Copy one snapshot unless the destination has it; what became of it.
    fn snapshot(
        &self,
        entry: &SnapshotEntry,
        existing: &mut Existing,
        copies: &HashMap<SnapshotId, SnapshotId>,
        sum: &mut CopySummary,
    ) -> Result<CopiedSnapshot, EngineError> {
        let s = &entry.snapshot;
        let mut done = CopiedSnapshot {
            source_id: entry.id,
            target_id: None,
            copied: false,
            time: chrono::DateTime::from_timestamp_nanos(s.time_ns).to_rfc3339(),
            time_ns: s.time_ns,
            host: s.host.clone(),
            tags: s.tags.clone(),
        };
        // A second run: the map knows the root's copy, and a snapshot of that time and host
        // has it. Nothing is walked.
        if let Some(root) = self.memo.get(&s.tree)
            && let Some(id) = existing.find(s, &root)
        {
            self.progress
                .files
                .fetch_add(s.summary.files, Ordering::Relaxed);
            self.progress.add_bytes(s.summary.total_bytes);
            done.target_id = Some(id);
            return Ok(done);
        }
        if existing.any(s) {
            tracing::info!(
                "snapshot {}: the destination has one of its time and host; comparing trees",
                entry.id.short()
            );
        }
        let root = self.copy_tree(&s.tree, sum)?;
        self.memo.insert(&s.tree, &root);
        if let Some(id) = existing.find(s, &root) {
            done.target_id = Some(id);
            return Ok(done);
        }
        done.copied = true;
        if self.dry_run {
            return Ok(done);
        }
        let copy = Snapshot {
            tree: root,
            // The parent's copy when this run knows it; else none (it is informational).
            parent: s.parent.and_then(|p| copies.get(&p).copied()),
            ..s.clone()
        };
        // Last: every blob it names is stored and indexed.
        self.target_lock.check_held()?;
        let id = self.target.save_snapshot(&copy)?;
        self.target_catalog.add_snapshot(&id, &copy)?;
        existing.add(&copy, id);
        done.target_id = Some(id);
        Ok(done)
    }

    /// Copy the tree `root` and everything below it, with a saver of its own whose packs and
    /// index files are all stored when this returns; its figures are added to `sum`.
    fn copy_tree(&self, root: &BlobId, sum: &mut CopySummary) -> Result<BlobId, EngineError> {
        let (saver, rx) = Saver::new(self.target, self.target_catalog);
        let saver = if self.dry_run { saver.dry_run() } else { saver };
        let stats = saver.stats.clone();
        let mapped = std::thread::scope(|scope| {
            let uploader = std::thread::Builder::new()
                .name("coffer-upload".into())
                .spawn_scoped(scope, || {
                    run_uploader(self.target, self.target_catalog, rx, &stats)
                })
                .map_err(|e| EngineError::Io {
                    path: "uploader thread".into(),
                    source: e,
                })?;
            let mapped = self.tree(&saver, root).and_then(|m| {
                saver.finish()?;
                Ok(m)
            });
            if mapped.is_err() {
                saver.abandon();
            }
            // The uploader's own error explains a failed send better than the send.
            uploader.join().unwrap_or_else(|_| {
                Err(EngineError::Internal("the uploader thread panicked".into()))
            })?;
            mapped
        })?;
        add_stats(sum, &stats);
        Ok(mapped.id)
    }

    /// The copy of the source tree `id`: its nodes copied (in parallel), then the tree saved
    /// with their new ids.
    fn tree(&self, saver: &Saver<'_>, id: &BlobId) -> Result<Mapped, EngineError> {
        let seen = self
            .trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        if let Some(m) = seen {
            self.progress.files.fetch_add(m.files, Ordering::Relaxed);
            self.progress.add_bytes(m.bytes);
            return Ok(m);
        }
        let tree = load_tree(self.source, self.source_catalog, id)?;
        let nodes: Vec<Result<(Node, u64, u64), EngineError>> = tree
            .nodes
            .into_par_iter()
            .map(|n| self.node(saver, n))
            .collect();
        let (mut files, mut bytes) = (0, 0);
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let (node, f, b) = n?;
            files += f;
            bytes += b;
            out.push(node);
        }
        let new_id = saver.save(BlobKind::Tree, &encode_tree(&Tree { nodes: out })?)?;
        let m = Mapped {
            id: new_id,
            files,
            bytes,
        };
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        if trees.len() >= TREES_REMEMBERED {
            trees.clear();
        }
        trees.insert(*id, m);
        Ok(m)
    }

    /// A node with its subtree and content copied; the files and bytes it holds.
    fn node(&self, saver: &Saver<'_>, mut node: Node) -> Result<(Node, u64, u64), EngineError> {
        let (mut files, mut bytes) = (0, 0);
        if let Some(sub) = node.subtree {
            let m = self.tree(saver, &sub)?;
            node.subtree = Some(m.id);
            files += m.files;
            bytes += m.bytes;
        }
        if !node.content.is_empty() {
            node.content = node
                .content
                .par_iter()
                .map(|id| self.data(saver, id))
                .collect::<Result<Vec<BlobId>, EngineError>>()?;
        }
        if node.kind == NodeKind::File {
            self.progress.file_done(node.size);
            files += 1;
            bytes += node.size;
        }
        Ok((node, files, bytes))
    }

    /// The copy of the source data blob `id`: found through the map (or, with a shared
    /// master key, the id itself) when the destination has it, else read and saved.
    fn data(&self, saver: &Saver<'_>, id: &BlobId) -> Result<BlobId, EngineError> {
        let known = if self.identity {
            Some(*id)
        } else {
            self.memo.get(id)
        };
        if let Some(dst) = known
            && saver.has(&dst)?
        {
            return Ok(dst);
        }
        let loc = self.source_catalog.blob_location(id)?.ok_or_else(|| {
            RepoError::corrupt(
                format!("blob {id} of the source"),
                "a selected snapshot needs it but no index names it (run `coffer check` there)",
            )
        })?;
        let plain = self.source.load_blob(&loc)?;
        self.blobs_read.fetch_add(1, Ordering::Relaxed);
        self.bytes_read
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        let dst = saver.save(BlobKind::Data, &plain)?;
        if !self.identity {
            self.memo.insert(id, &dst);
        }
        Ok(dst)
    }
}

/// Add one saver's figures to the summary.
fn add_stats(sum: &mut CopySummary, stats: &SaverStats) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    sum.blobs_added += get(&stats.blobs_added);
    sum.bytes_added += get(&stats.bytes_added);
    sum.stored_bytes_added += get(&stats.stored_bytes_added);
    sum.packs_written += get(&stats.packs_written);
    sum.index_files_written += get(&stats.index_files_written);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backup::{BackupOptions, SourceSpec, backup};
    use crate::engine::check::{CheckOptions, check};
    use crate::repo::tests::{fast_opts, memory_store};

    fn catalog(dir: &std::path::Path, name: &str) -> Catalog {
        Catalog::open(&dir.join(name)).unwrap()
    }

    /// Copied once with new ids, checked clean, then found copied without reading a blob.
    #[test]
    fn copies_into_another_master_key_once() {
        let a = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let b = Repository::init(memory_store(), b"other", fast_opts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub/empty")).unwrap();
        std::fs::write(data.join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::write(data.join("sub/b"), b"hello").unwrap();
        let (ca, cb) = (
            catalog(dir.path(), "a.sqlite"),
            catalog(dir.path(), "b.sqlite"),
        );
        let opts = BackupOptions {
            sources: vec![SourceSpec {
                name: "data".into(),
                path: data,
            }],
            host: "h".into(),
            ..Default::default()
        };
        let snap = backup(&a, &ca, &opts, &Progress::default()).unwrap();
        let copy_opts = CopyOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let progress = Progress::default();
        let first = copy(&a, &ca, &b, &cb, &copy_opts, &progress).unwrap();
        assert_eq!((first.snapshots_copied, first.snapshots_skipped), (1, 0));
        assert_eq!(progress.snapshot().0, 2, "two files walked");
        let copied = b
            .load_snapshot(&first.snapshots[0].target_id.unwrap())
            .unwrap();
        let original = a.load_snapshot(&snap.snapshot_id.unwrap()).unwrap();
        assert_ne!(copied.tree, original.tree);
        assert_eq!(
            (copied.time_ns, &copied.host),
            (original.time_ns, &original.host)
        );
        let report = check(
            &b,
            &CheckOptions {
                read_data: true,
                ..Default::default()
            },
            &Progress::default(),
        )
        .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let again = copy(&a, &ca, &b, &cb, &copy_opts, &Progress::default()).unwrap();
        assert_eq!((again.snapshots_copied, again.snapshots_skipped), (0, 1));
        assert_eq!((again.blobs_read, again.blobs_added), (0, 0));
        // Without the map the trees are compared by reading the data again: still nothing new.
        let cold = CopyOptions::default();
        let third = copy(&a, &ca, &b, &cb, &cold, &Progress::default()).unwrap();
        assert_eq!((third.snapshots_skipped, third.blobs_added), (1, 0));
        assert!(third.blobs_read > 0);
        assert_eq!(b.list_snapshots().unwrap().len(), 1);
    }

    #[test]
    fn refuses_to_copy_a_repository_into_itself() {
        let a = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path(), "a.sqlite");
        let err = copy(
            &a,
            &c,
            &a,
            &c,
            &CopyOptions::default(),
            &Progress::default(),
        )
        .err()
        .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--from-repo")));
    }
}
