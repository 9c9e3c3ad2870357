//! Sync: copy snapshots, and every object they need that the target lacks, from one
//! repository to another that shares its master key (made with `init --from`). Objects are
//! copied as stored, without re-encryption, and each is verified on the way: its name must be
//! the hash of its bytes before it is written.
//!
//! Order: packs, then index files, then snapshots. An interrupted sync leaves at most packs
//! that no index names yet, or index files that no snapshot uses yet, never a snapshot whose
//! data is missing; the next run computes the set difference again and copies only the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::{EngineError, Progress, load_tree};
use crate::catalog::Catalog;
use crate::format::index::PackIndex;
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::{InitOptions, LockKind, ObjectStore, RepoError, Repository, StoredObject, path};

/// Packs named by one index file that sync writes itself (when a source index file cannot be
/// copied whole because it names packs the selected snapshots do not need).
const PACKS_PER_INDEX_FILE: usize = 1000;

/// What to sync.
#[derive(Clone, Debug, Serialize)]
pub struct SyncOptions {
    /// Snapshots to copy (ids, unique prefixes or `latest`); empty means all.
    pub snapshots: Vec<String>,
    /// Objects copied at the same time.
    pub connections: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            snapshots: Vec::new(),
            connections: 4,
        }
    }
}

/// What a sync did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncSummary {
    /// Where from.
    pub source: String,
    /// Where to.
    pub target: String,
    /// Snapshots written to the target.
    pub snapshots_copied: u64,
    /// Selected snapshots the target already had.
    pub snapshots_skipped: u64,
    /// Packs written to the target.
    pub packs_copied: u64,
    /// Needed packs the target already had.
    pub packs_skipped: u64,
    /// Source index files copied as they are.
    pub index_files_copied: u64,
    /// Index files written for packs whose source index file names unneeded packs too.
    pub index_files_written: u64,
    /// Source index files the target already had.
    pub index_files_skipped: u64,
    /// All objects written (packs, index files, snapshots).
    pub objects_copied: u64,
    /// Objects not written because the target had them.
    pub objects_skipped: u64,
    /// Bytes written.
    pub bytes_copied: u64,
    /// Bytes of packs the target already had.
    pub bytes_skipped: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// Create a repository in `store` that shares `source`'s master key and chunker parameters,
/// so that `sync` can copy objects between them unchanged. The new repository has its own
/// id and its own key file, wrapped with `passphrase`.
pub fn init_from(
    source: &Repository,
    store: Arc<dyn ObjectStore>,
    passphrase: &[u8],
    kdf: crate::crypto::KdfParams,
) -> Result<Repository, EngineError> {
    if Repository::config_exists(store.as_ref())? {
        return Err(RepoError::AlreadyExists(store.describe()).into());
    }
    let c = source.config();
    let opts = InitOptions {
        chunker: c.chunker,
        compression_level: c.compression_level,
        pack_bytes: c.pack_bytes,
        kdf,
        // A mirror keeps its source's version: the packs it receives were written by it.
        format_version: c.version,
    };
    let master = source.master_key().clone();
    Ok(Repository::init_with_master(
        store, passphrase, opts, master,
    )?)
}

/// Refuse repositories with different master keys: their blob ids and ciphertexts mean
/// nothing to each other.
pub(super) fn same_master(source: &Repository, target: &Repository) -> bool {
    let (a, b) = (
        source.master_key().as_bytes(),
        target.master_key().as_bytes(),
    );
    // Constant time, though both keys are in this process anyway.
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Read an object of `repo` as stored, and check that its bytes are what its name says.
fn read_verified(repo: &Repository, obj: StoredObject) -> Result<Vec<u8>, EngineError> {
    let bytes = repo.read_raw(obj)?;
    if !obj.names(&bytes) {
        return Err(RepoError::corrupt(
            format!("{} in {}", obj.name(), repo.describe()),
            "content does not match its name; not copied (run `coffer check --read-data` on the source)",
        )
        .into());
    }
    Ok(bytes)
}

/// Blobs reachable from the snapshots' trees (trees and file contents).
fn reachable_blobs(
    repo: &Repository,
    catalog: &Catalog,
    roots: &[BlobId],
) -> Result<HashSet<BlobId>, EngineError> {
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut stack: Vec<BlobId> = roots.to_vec();
    while let Some(tree_id) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        let tree = load_tree(repo, catalog, &tree_id)?;
        for node in tree.nodes {
            seen.extend(node.content.iter().copied());
            if let Some(sub) = node.subtree
                && !seen.contains(&sub)
            {
                stack.push(sub);
            }
        }
    }
    Ok(seen)
}

/// Copy the selected snapshots of `source` (with `catalog`, its catalog) to `target`.
/// `progress` counts objects and bytes copied; its totals are set once they are known.
pub fn sync(
    source: &Repository,
    catalog: &Catalog,
    target: &Repository,
    opts: &SyncOptions,
    progress: &Progress,
) -> Result<SyncSummary, EngineError> {
    let started = Instant::now();
    let mut sum = SyncSummary {
        source: source.describe(),
        target: target.describe(),
        ..Default::default()
    };
    refuse_unrelated(source, target, &sum)?;
    let _source_lock = source.lock(LockKind::Shared, "sync (source)")?;
    let target_lock = target.lock(LockKind::Shared, "sync (target)")?;
    catalog.refresh(source)?;

    // Which snapshots.
    let selected = select_snapshots(source, catalog, opts)?;
    let target_snapshots: HashSet<SnapshotId> = target.list_snapshots()?.into_iter().collect();
    let missing_snapshots: Vec<SnapshotId> = selected
        .iter()
        .filter(|id| !target_snapshots.contains(id))
        .copied()
        .collect();
    sum.snapshots_skipped = (selected.len() - missing_snapshots.len()) as u64;

    // The source's index, from the repository itself (not the catalog): it is what is copied.
    let mut source_index: Vec<(IndexId, Vec<PackIndex>)> = Vec::new();
    for iid in source.list_index_files()? {
        source_index.push((iid, source.load_index(&iid)?));
    }
    let pack_entries = entries_by_pack(&source_index);

    // Which packs the copied snapshots need.
    let needed: HashSet<PackId> = if opts.snapshots.is_empty() {
        pack_entries.keys().copied().collect()
    } else {
        packs_needed(source, catalog, &missing_snapshots)?
    };

    // Packs: the set difference of names.
    let source_packs: HashMap<PackId, u64> = source.list_packs()?.into_iter().collect();
    let target_packs: HashMap<PackId, u64> = target.list_packs()?.into_iter().collect();
    refuse_condemned(target, &needed, &target_packs)?;
    let to_copy = packs_to_copy(&needed, &source_packs, &target_packs, &mut sum)?;
    let copier = Copier {
        source,
        target,
        bytes_copied: AtomicU64::new(0),
    };
    copier.copy_packs(&to_copy, opts.connections, progress)?;
    sum.packs_copied = to_copy.len() as u64;

    // Index files: what the target's index already covers.
    let present: HashSet<PackId> = target_packs
        .keys()
        .copied()
        .chain(to_copy.iter().map(|(id, _)| *id))
        .collect();
    copier.copy_index(&source_index, &pack_entries, &needed, &present, &mut sum)?;

    // Snapshots last.
    target_lock.check_held()?;
    for id in &missing_snapshots {
        copier.copy(StoredObject::Snapshot(*id))?;
        sum.snapshots_copied += 1;
    }

    sum.bytes_copied = copier.bytes_copied.load(Ordering::Relaxed);
    sum.objects_copied =
        sum.packs_copied + sum.index_files_copied + sum.index_files_written + sum.snapshots_copied;
    sum.objects_skipped = sum.packs_skipped + sum.index_files_skipped + sum.snapshots_skipped;
    sum.duration_secs = started.elapsed().as_secs_f64();
    Ok(sum)
}

/// Refuse a target that does not share the source's master key, or that is the source.
/// A pack the target has but a prune there condemned cannot be counted on (it may be deleted
/// once the writers it waits for are gone), and a copy under the same name would be deleted
/// with it: refuse, and say how to get past it.
fn refuse_condemned(
    target: &Repository,
    needed: &HashSet<PackId>,
    target_packs: &HashMap<PackId, u64>,
) -> Result<(), EngineError> {
    let condemned = target.condemned_packs()?;
    let n = needed
        .iter()
        .filter(|p| target_packs.contains_key(p) && condemned.contains(p))
        .count();
    if n > 0 {
        return Err(EngineError::Usage(format!(
            "{n} packs these snapshots need are condemned by a prune of the target (the \
             snapshots there that used them were forgotten): run `coffer prune` on the target \
             once no backup writes to it, then sync again"
        )));
    }
    Ok(())
}

fn refuse_unrelated(
    source: &Repository,
    target: &Repository,
    sum: &SyncSummary,
) -> Result<(), EngineError> {
    if !same_master(source, target) {
        return Err(EngineError::Usage(format!(
            "{} does not share the master key of {}: sync copies encrypted objects as they are, \
             so the target must be created with `coffer init --repo TARGET --from SOURCE`",
            sum.target, sum.source
        )));
    }
    if source.config().id == target.config().id {
        return Err(EngineError::Usage(
            "source and target are the same repository".into(),
        ));
    }
    // Index files and snapshots are copied as they are, and format 3 pads them where 1 and 2
    // do not: a target of the other kind could not read what it receives.
    let (from, to) = (source.config().version, target.config().version);
    if (from >= 3) != (to >= 3) {
        return Err(EngineError::Usage(format!(
            "{} has format version {to} and {} has {from}: sync copies objects as they are, so \
             the target must be created with `coffer init --repo TARGET --from SOURCE`",
            sum.target, sum.source
        )));
    }
    Ok(())
}

/// Each pack's entries, as the first index file naming it lists them.
fn entries_by_pack(index: &[(IndexId, Vec<PackIndex>)]) -> HashMap<PackId, &PackIndex> {
    let mut pack_entries: HashMap<PackId, &PackIndex> = HashMap::new();
    for (_, packs) in index {
        for p in packs {
            pack_entries.entry(p.pack).or_insert(p);
        }
    }
    pack_entries
}

/// The snapshots the options name (every one when they name none), each once.
fn select_snapshots(
    source: &Repository,
    catalog: &Catalog,
    opts: &SyncOptions,
) -> Result<Vec<SnapshotId>, EngineError> {
    if opts.snapshots.is_empty() {
        return Ok(source.list_snapshots()?);
    }
    let mut ids = Vec::new();
    for spec in &opts.snapshots {
        let id = catalog.resolve_snapshot(spec)?.id;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The packs holding every blob these snapshots reach.
fn packs_needed(
    source: &Repository,
    catalog: &Catalog,
    snapshots: &[SnapshotId],
) -> Result<HashSet<PackId>, EngineError> {
    let mut roots = Vec::new();
    for id in snapshots {
        roots.push(source.load_snapshot(id)?.tree);
    }
    let mut packs = HashSet::new();
    for blob in reachable_blobs(source, catalog, &roots)? {
        let loc = catalog.blob_location(&blob)?.ok_or_else(|| {
            RepoError::corrupt(
                format!("blob {blob}"),
                "a selected snapshot needs it but no index names it (run `coffer check`)",
            )
        })?;
        packs.insert(loc.pack);
    }
    Ok(packs)
}

/// The needed packs the target lacks, by id, with their sizes; those it has are counted as
/// skipped.
fn packs_to_copy(
    needed: &HashSet<PackId>,
    source_packs: &HashMap<PackId, u64>,
    target_packs: &HashMap<PackId, u64>,
    sum: &mut SyncSummary,
) -> Result<Vec<(PackId, u64)>, EngineError> {
    let mut to_copy: Vec<(PackId, u64)> = Vec::new();
    for id in needed {
        if let Some(&size) = target_packs.get(id) {
            sum.packs_skipped += 1;
            sum.bytes_skipped += size;
            continue;
        }
        let size = *source_packs.get(id).ok_or_else(|| {
            RepoError::corrupt(
                path::pack(id),
                "indexed and needed, but missing from the source",
            )
        })?;
        to_copy.push((*id, size));
    }
    to_copy.sort_by_key(|(id, _)| *id);
    Ok(to_copy)
}

/// Copies objects from the source to the target as they are stored, counting the bytes.
struct Copier<'a> {
    source: &'a Repository,
    target: &'a Repository,
    bytes_copied: AtomicU64,
}

impl Copier<'_> {
    /// Copy one object, verified on the way; returns its size.
    fn copy(&self, obj: StoredObject) -> Result<u64, EngineError> {
        let bytes = read_verified(self.source, obj)?;
        self.target.write_raw(obj, &bytes)?;
        let n = bytes.len() as u64;
        self.bytes_copied.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Copy these packs, `connections` at a time.
    fn copy_packs(
        &self,
        to_copy: &[(PackId, u64)],
        connections: usize,
        progress: &Progress,
    ) -> Result<(), EngineError> {
        progress
            .total_files
            .store(to_copy.len() as u64, Ordering::Relaxed);
        progress.total_bytes.store(
            to_copy.iter().map(|(_, s)| s).sum::<u64>(),
            Ordering::Relaxed,
        );
        super::parallel::for_each(to_copy, connections, |(id, _)| {
            let n = self.copy(StoredObject::Pack(*id))?;
            progress.file_done(n);
            Ok(())
        })
    }

    /// Copy each source index file whole when it names a needed pack and the target has
    /// every pack it names (`present`); then write index files of their own for the needed
    /// packs the target's index still lacks.
    fn copy_index(
        &self,
        source_index: &[(IndexId, Vec<PackIndex>)],
        pack_entries: &HashMap<PackId, &PackIndex>,
        needed: &HashSet<PackId>,
        present: &HashSet<PackId>,
        sum: &mut SyncSummary,
    ) -> Result<(), EngineError> {
        let (mut indexed, target_index_ids) = self.target_index(source_index)?;
        for (iid, packs) in source_index {
            if target_index_ids.contains(iid) {
                sum.index_files_skipped += 1;
                continue;
            }
            let names_needed = packs.iter().any(|p| needed.contains(&p.pack));
            let complete = packs.iter().all(|p| present.contains(&p.pack));
            if !names_needed || !complete {
                continue;
            }
            self.copy(StoredObject::Index(*iid))?;
            indexed.extend(packs.iter().map(|p| p.pack));
            sum.index_files_copied += 1;
        }
        let mut rest: Vec<PackIndex> = needed
            .iter()
            .filter(|p| !indexed.contains(p))
            .filter_map(|p| pack_entries.get(p).map(|e| (*e).clone()))
            .collect();
        rest.sort_by_key(|p| p.pack);
        for chunk in rest.chunks(PACKS_PER_INDEX_FILE) {
            self.target.save_index(chunk)?;
            sum.index_files_written += 1;
        }
        Ok(())
    }

    /// The target's index files, and the packs they name (an index file the source has too is
    /// not read again).
    fn target_index(
        &self,
        source_index: &[(IndexId, Vec<PackIndex>)],
    ) -> Result<(HashSet<PackId>, HashSet<IndexId>), EngineError> {
        let source_index_ids: HashMap<IndexId, usize> = source_index
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        let mut indexed: HashSet<PackId> = HashSet::new();
        let mut target_index_ids: HashSet<IndexId> = HashSet::new();
        for iid in self.target.list_index_files()? {
            target_index_ids.insert(iid);
            match source_index_ids.get(&iid) {
                Some(&i) => indexed.extend(source_index[i].1.iter().map(|p| p.pack)),
                None => indexed.extend(self.target.load_index(&iid)?.into_iter().map(|p| p.pack)),
            }
        }
        Ok((indexed, target_index_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::{fast_opts, memory_store};

    #[test]
    fn refuses_a_target_with_another_master_key() {
        let a = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let b = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let err = sync(
            &a,
            &catalog,
            &b,
            &SyncOptions::default(),
            &Progress::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("does not share the master key"), "{err}");
    }

    /// Everything is copied once, the mirror checks clean, and a second run copies nothing.
    #[test]
    fn copies_what_the_target_lacks_and_nothing_twice() {
        use crate::engine::backup::{BackupOptions, SourceSpec, backup};
        use crate::engine::check::{CheckOptions, check};
        let a = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let b = init_from(&a, memory_store(), b"pw", fast_opts().kdf).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::write(data.join("sub/b"), b"hello").unwrap();
        let catalog = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let opts = BackupOptions {
            sources: vec![SourceSpec {
                name: "data".into(),
                path: data,
            }],
            host: "h".into(),
            ..Default::default()
        };
        backup(&a, &catalog, &opts, &Progress::default()).unwrap();
        let first = sync(
            &a,
            &catalog,
            &b,
            &SyncOptions::default(),
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(first.snapshots_copied, 1);
        assert!(first.packs_copied > 0 && first.index_files_copied > 0);
        assert_eq!(first.objects_skipped, 0);
        assert_eq!(b.list_snapshots().unwrap(), a.list_snapshots().unwrap());
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
        let again = sync(
            &a,
            &catalog,
            &b,
            &SyncOptions::default(),
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(again.objects_copied, 0);
        assert_eq!(again.snapshots_skipped, 1);
        assert_eq!(again.packs_skipped, first.packs_copied);
    }

    #[test]
    fn refuses_a_target_whose_format_pads_objects_differently() {
        let a = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let mut opts = fast_opts();
        opts.format_version = 2;
        let b = Repository::init_with_master(memory_store(), b"pw", opts, a.master_key().clone())
            .unwrap();
        let sum = SyncSummary::default();
        let err = refuse_unrelated(&a, &b, &sum).unwrap_err().to_string();
        assert!(err.contains("format version 2"), "{err}");
        assert!(refuse_unrelated(&b, &a, &sum).is_err());
    }

    #[test]
    fn init_from_shares_key_and_chunker_and_refuses_existing() {
        let a = Repository::init(memory_store(), b"pw", fast_opts()).unwrap();
        let store = memory_store();
        let b = init_from(&a, store.clone(), b"other", fast_opts().kdf).unwrap();
        assert!(same_master(&a, &b));
        assert_eq!(b.config().chunker, a.config().chunker);
        assert_ne!(b.config().id, a.config().id);
        assert!(Repository::open(store.clone(), b"other").is_ok());
        assert!(init_from(&a, store, b"x", fast_opts().kdf).is_err());
    }
}
