//! Prune: give back the space of blobs that no snapshot references.
//!
//! [`PrunePlan::compute`] is pure: from the packs in storage, the index and the set of blobs
//! the snapshots reach, it decides which packs go whole (nothing live), which are repacked
//! (live share too low) and which stay. [`prune`] computes the plan under an exclusive lock
//! and applies it in a crash-safe order:
//!
//! 1. live blobs of the packs to repack are copied (verified, still sealed) into new packs;
//! 2. new index files naming every live blob are written;
//! 3. the old index files are deleted;
//! 4. the packs that no longer hold anything indexed are deleted.
//!
//! A crash between any two steps leaves a repository where every snapshot is complete: at
//! worst index entries are duplicated (harmless) or packs are unindexed (garbage the next
//! prune removes). The whole run holds the exclusive lock, so no backup can add a snapshot
//! that references a blob while it is being deleted; backups started meanwhile wait for the
//! lock (`--retry-lock`) and refresh their catalog after they get it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{EngineError, Progress, load_tree};
use crate::catalog::Catalog;
use crate::format::index::PackIndex;
use crate::format::{BlobEntry, BlobKind};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::{
    BlobLocation, LockKind, PRUNE_PURPOSE, PackBuilder, RepoError, Repository, SealedBlob,
    StoredObject, path,
};

/// Target size of repacked tree packs.
const TREE_PACK_BYTES: usize = 4 << 20;
/// Most packs named by one index file written by prune: a host with an empty cache reads
/// every index file before its first command, so prune gathers the small ones of each backup
/// into few large ones.
const PACKS_PER_INDEX: usize = 8192;
/// Most blobs named by one index file written by prune (about 6.4 MB of index entries; a
/// refresh holds a few such files decoded at once).
const BLOBS_PER_INDEX: usize = 131_072;

/// What to prune.
#[derive(Clone, Debug, Serialize)]
pub struct PruneOptions {
    /// Tolerated unused space, in percent of the live bytes, left in packs that are kept.
    pub max_unused_percent: f64,
    /// Compute and report the plan, change nothing.
    pub dry_run: bool,
    /// Hold the exclusive lock and delete at once (backups wait meanwhile), instead of
    /// condemning packs beside running backups and deleting them once nothing can need them.
    pub exclusive: bool,
    /// Least age, in seconds, of a condemned marker written while other processes held
    /// locks before its packs are deleted.
    pub grace_secs: u64,
}

/// Default of [`PruneOptions::grace_secs`]: longer than a lock refresh plus the tolerated
/// clock skew.
pub const DEFAULT_GRACE_SECS: u64 = 30 * 60;

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused_percent: 5.0,
            dry_run: false,
            exclusive: false,
            grace_secs: DEFAULT_GRACE_SECS,
        }
    }
}

/// What happens to one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackAction {
    /// Stays as it is.
    Keep,
    /// Its live blobs move to new packs, then it is deleted.
    Repack,
    /// Nothing in it is live: deleted.
    Delete,
}

/// The decision for every pack, and the figures behind it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PrunePlan {
    /// Action per pack (packs in storage and in the index).
    #[serde(skip)]
    pub actions: BTreeMap<PackId, PackAction>,
    /// For each live blob, the one place it is kept (others are duplicates).
    #[serde(skip)]
    pub live: HashMap<BlobId, BlobLocation>,
    /// Packs in storage.
    pub packs: u64,
    /// Bytes of packs in storage.
    pub pack_bytes: u64,
    /// Packs to delete whole.
    pub packs_to_delete: u64,
    /// Packs to repack.
    pub packs_to_repack: u64,
    /// Packs no index names (left by an interrupted run): deleted.
    pub unindexed_packs: u64,
    /// Live blobs.
    pub live_blobs: u64,
    /// Sealed bytes of live blobs.
    pub live_bytes: u64,
    /// Sealed bytes of live blobs that are copied into new packs.
    pub bytes_to_repack: u64,
    /// Bytes the repository holds that no snapshot needs, before pruning.
    pub unused_bytes_before: u64,
    /// Unused bytes left in kept packs after pruning.
    pub unused_bytes_after: u64,
    /// Bytes of packs deleted (whole or after repacking), about what is freed.
    pub bytes_to_free: u64,
}

impl PrunePlan {
    /// Decide. `packs` are the packs in storage with their sizes, `index` every entry of every
    /// readable index file, `used` every blob the snapshots reach. Fails when a used blob is
    /// nowhere (pruning would then make things worse: run `check`).
    pub fn compute(
        packs: &HashMap<PackId, u64>,
        index: &[PackIndex],
        used: &HashSet<BlobId>,
        max_unused_percent: f64,
    ) -> Result<PrunePlan, MissingBlobs> {
        Self::compute_avoiding(packs, index, used, max_unused_percent, &HashSet::new())
    }

    /// [`PrunePlan::compute`], keeping each live blob in a pack outside `avoid` (condemned
    /// packs) whenever one holds it.
    pub fn compute_avoiding(
        packs: &HashMap<PackId, u64>,
        index: &[PackIndex],
        used: &HashSet<BlobId>,
        max_unused_percent: f64,
        avoid: &HashSet<PackId>,
    ) -> Result<PrunePlan, MissingBlobs> {
        let mut plan = PrunePlan {
            packs: packs.len() as u64,
            pack_bytes: packs.values().sum(),
            ..PrunePlan::default()
        };
        let entries = entries_per_pack(packs, index);
        plan.live = live_locations(&entries, used, avoid);
        refuse_missing(used, &plan.live)?;
        let mut live_per_pack: HashMap<PackId, u64> = HashMap::new();
        for loc in plan.live.values() {
            *live_per_pack.entry(loc.pack).or_default() += u64::from(loc.entry.packed_len);
            plan.live_bytes += u64::from(loc.entry.packed_len);
        }
        plan.live_blobs = plan.live.len() as u64;
        plan.unused_bytes_before = plan.pack_bytes.saturating_sub(plan.live_bytes);

        let candidates = plan.keep_or_delete(packs, &entries, &live_per_pack);
        plan.choose_repacks(candidates, &live_per_pack, max_unused_percent);
        plan.count_actions(packs);
        Ok(plan)
    }

    /// Also repack the kept packs smaller than `small_bytes` when there are at least two:
    /// every backup leaves a partly filled data pack and tree pack (padded to at least
    /// 256 KiB), and a year of nightly backups of a little change leaves hundreds of them
    /// holding a few KiB each (the cold-start bench: 2,000 packs, 500 MiB, 12 MiB live).
    pub fn repack_small(&mut self, packs: &HashMap<PackId, u64>, small_bytes: u64) {
        let mut live_per_pack: HashMap<PackId, u64> = HashMap::new();
        let mut kind: HashMap<PackId, BlobKind> = HashMap::new();
        for loc in self.live.values() {
            *live_per_pack.entry(loc.pack).or_default() += u64::from(loc.entry.packed_len);
            kind.insert(loc.pack, loc.entry.kind);
        }
        // Data and trees are repacked apart: only two small packs of one kind make fewer.
        let small_of = |k: BlobKind| -> Vec<PackId> {
            self.actions
                .iter()
                .filter(|(p, a)| {
                    **a == PackAction::Keep
                        && kind.get(*p) == Some(&k)
                        && packs.get(*p).is_some_and(|&s| s < small_bytes)
                })
                .map(|(p, _)| *p)
                .collect()
        };
        let mut small = Vec::new();
        for k in [BlobKind::Data, BlobKind::Tree] {
            let of_kind = small_of(k);
            if of_kind.len() >= 2 {
                small.extend(of_kind);
            }
        }
        for p in small {
            self.actions.insert(p, PackAction::Repack);
            self.packs_to_repack += 1;
            self.bytes_to_free += packs[&p];
            self.bytes_to_repack += live_per_pack.get(&p).copied().unwrap_or(0);
        }
    }

    /// Delete the packs that hold nothing live (or that no index names) and keep the others.
    /// Returns the kept packs that hold unused bytes, as `(pack, unused, size)`: the
    /// candidates for repacking.
    fn keep_or_delete(
        &mut self,
        packs: &HashMap<PackId, u64>,
        entries: &BTreeMap<PackId, BTreeMap<BlobId, BlobEntry>>,
        live_per_pack: &HashMap<PackId, u64>,
    ) -> Vec<(PackId, u64, u64)> {
        let mut candidates: Vec<(PackId, u64, u64)> = Vec::new(); // (pack, unused, size)
        for (pack, &size) in packs {
            if !entries.contains_key(pack) {
                self.unindexed_packs += 1;
                self.actions.insert(*pack, PackAction::Delete);
                continue;
            }
            let live = live_per_pack.get(pack).copied().unwrap_or(0);
            if live == 0 {
                self.actions.insert(*pack, PackAction::Delete);
            } else {
                self.actions.insert(*pack, PackAction::Keep);
                // Unused: blobs in it that are not live here (dead, or duplicates kept
                // elsewhere). The header is overhead every pack has, not waste.
                let unused: u64 = entries[pack]
                    .values()
                    .filter(|e| self.live.get(&e.id).is_none_or(|l| l.pack != *pack))
                    .map(|e| u64::from(e.packed_len))
                    .sum();
                if unused > 0 {
                    candidates.push((*pack, unused, size));
                }
            }
        }
        candidates
    }

    /// Repack the packs with the largest unused share first, until what is left unused in
    /// kept packs is within the tolerance.
    fn choose_repacks(
        &mut self,
        mut candidates: Vec<(PackId, u64, u64)>,
        live_per_pack: &HashMap<PackId, u64>,
        max_unused_percent: f64,
    ) {
        candidates.sort_by(|a, b| {
            let ra = a.1 as f64 / a.2.max(1) as f64;
            let rb = b.1 as f64 / b.2.max(1) as f64;
            rb.total_cmp(&ra).then_with(|| a.0.cmp(&b.0))
        });
        let allowed = (self.live_bytes as f64 * max_unused_percent.max(0.0) / 100.0) as u64;
        let mut unused_kept: u64 = candidates.iter().map(|c| c.1).sum();
        for (pack, unused, _) in &candidates {
            if unused_kept <= allowed {
                break;
            }
            self.actions.insert(*pack, PackAction::Repack);
            unused_kept -= unused;
            self.bytes_to_repack += live_per_pack.get(pack).copied().unwrap_or(0);
        }
        self.unused_bytes_after = unused_kept;
    }

    /// The counts and bytes of the packs deleted and repacked.
    fn count_actions(&mut self, packs: &HashMap<PackId, u64>) {
        for (pack, action) in &self.actions {
            match action {
                PackAction::Keep => {}
                PackAction::Repack => {
                    self.packs_to_repack += 1;
                    self.bytes_to_free += packs[pack];
                }
                PackAction::Delete => {
                    self.packs_to_delete += 1;
                    self.bytes_to_free += packs[pack];
                }
            }
        }
        self.packs_to_delete -= self.unindexed_packs;
    }
}

/// Entries per existing pack, each blob once per pack.
fn entries_per_pack(
    packs: &HashMap<PackId, u64>,
    index: &[PackIndex],
) -> BTreeMap<PackId, BTreeMap<BlobId, BlobEntry>> {
    let mut entries: BTreeMap<PackId, BTreeMap<BlobId, BlobEntry>> = BTreeMap::new();
    for p in index {
        if !packs.contains_key(&p.pack) {
            continue;
        }
        let e = entries.entry(p.pack).or_default();
        for b in &p.blobs {
            e.entry(b.id).or_insert(*b);
        }
    }
    entries
}

/// Each used blob is kept in one pack: the first (by pack id) that holds it.
fn live_locations(
    entries: &BTreeMap<PackId, BTreeMap<BlobId, BlobEntry>>,
    used: &HashSet<BlobId>,
    avoid: &HashSet<PackId>,
) -> HashMap<BlobId, BlobLocation> {
    let mut live: HashMap<BlobId, BlobLocation> = HashMap::new();
    let preferred = entries.iter().filter(|(p, _)| !avoid.contains(*p));
    let avoided = entries.iter().filter(|(p, _)| avoid.contains(*p));
    for (pack, blobs) in preferred.chain(avoided) {
        for (id, e) in blobs {
            if used.contains(id) && !live.contains_key(id) {
                live.insert(
                    *id,
                    BlobLocation {
                        pack: *pack,
                        entry: *e,
                    },
                );
            }
        }
    }
    live
}

/// Blobs that snapshots need and no pack holds: the repository is damaged, and prune refuses
/// to run (it would make things worse).
#[derive(Debug, thiserror::Error)]
#[error(
    "{count} blob(s) that snapshots need are in no pack (e.g. {example}): nothing was deleted; \
     run `coffer check` and `coffer repair index`"
)]
pub struct MissingBlobs {
    /// How many.
    pub count: usize,
    /// One of them.
    pub example: BlobId,
}

/// Refuse to prune when a used blob is in no pack: it would make things worse.
fn refuse_missing(
    used: &HashSet<BlobId>,
    live: &HashMap<BlobId, BlobLocation>,
) -> Result<(), MissingBlobs> {
    let mut missing = used.iter().filter(|b| !live.contains_key(b));
    if let Some(example) = missing.next() {
        return Err(MissingBlobs {
            count: 1 + missing.count(),
            example: *example,
        });
    }
    Ok(())
}

/// What prune did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneSummary {
    /// The plan.
    pub plan: PrunePlan,
    /// Snapshots whose blobs were kept.
    pub snapshots: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Old index files deleted.
    pub index_files_deleted: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes of packs in storage before.
    pub bytes_before: u64,
    /// Bytes of packs in storage after.
    pub bytes_after: u64,
    /// Seconds.
    pub duration_secs: f64,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Run under the exclusive lock (deleted at once) rather than beside backups.
    pub exclusive: bool,
    /// Packs condemned by this run (deleted by this run or a later one).
    pub packs_condemned: u64,
    /// Markers carried out (their packs deleted, or kept because a snapshot needs them).
    pub markers_done: u64,
    /// Markers left for a later prune, with why.
    pub markers_waiting: Vec<super::condemn::Readiness>,
    /// Condemned packs kept because a snapshot came to need them.
    pub packs_reprieved: u64,
}

/// Prune: beside running backups (the default, see `prune_shared`), or under an exclusive
/// lock with `opts.exclusive`.
pub fn prune(
    repo: &Repository,
    catalog: &Catalog,
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<PruneSummary, EngineError> {
    if !opts.exclusive {
        return super::prune_shared::prune_shared(repo, catalog, opts, progress, None);
    }
    let _lock = repo.lock(LockKind::Exclusive, PRUNE_PURPOSE)?;
    prune_locked(repo, catalog, opts, progress)
}

/// Prune; the caller holds an exclusive lock.
pub fn prune_locked(
    repo: &Repository,
    catalog: &Catalog,
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<PruneSummary, EngineError> {
    let start = std::time::Instant::now();
    catalog.refresh(repo)?;
    // Everything from the repository itself: the catalog only serves cached trees.
    let packs: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    let index_ids: Vec<IndexId> = repo.list_index_files()?;
    let index = load_index_files(repo, &index_ids)?;
    let snapshots = repo.list_snapshots()?;
    let used = used_blobs(repo, catalog, &snapshots)?;
    let mut plan = PrunePlan::compute(&packs, &index, &used, opts.max_unused_percent)?;
    plan.repack_small(&packs, small_pack_bytes(repo));
    let mut summary = PruneSummary {
        snapshots: snapshots.len() as u64,
        bytes_before: plan.pack_bytes,
        dry_run: opts.dry_run,
        exclusive: true,
        ..PruneSummary::default()
    };
    if opts.dry_run {
        // An estimate: repacked blobs come back in new packs.
        summary.bytes_after = plan.pack_bytes - plan.bytes_to_free + plan.bytes_to_repack;
        summary.duration_secs = start.elapsed().as_secs_f64();
        summary.plan = plan;
        return Ok(summary);
    }
    progress
        .total_bytes
        .store(plan.bytes_to_repack, Ordering::Relaxed);

    // Temporary files of killed writers (half-written packs on a local disk): under the
    // exclusive lock no other process is writing, so every one of them is garbage.
    let leftovers = repo.clean_leftovers()?;
    if leftovers > 0 {
        tracing::info!("removed {leftovers} temporary files left by interrupted writes");
    }

    // 1. Repack.
    let mut by_pack: BTreeMap<PackId, Vec<BlobLocation>> = BTreeMap::new();
    for loc in plan.live.values() {
        by_pack.entry(loc.pack).or_default().push(*loc);
    }
    let new_index = repack(repo, &plan, &by_pack, progress, &mut summary.packs_written)?;
    // 2. New index files: every live blob of kept packs, plus the new packs.
    summary.index_files_written = write_index(repo, &plan, &by_pack, new_index)?;
    // 3. Old index files.
    delete_all(&index_ids, |iid| repo.delete_index(iid))?;
    summary.index_files_deleted += index_ids.len() as u64;
    // 4. Packs that nothing indexes any more.
    let gone: Vec<PackId> = plan
        .actions
        .iter()
        .filter(|(_, a)| **a != PackAction::Keep)
        .map(|(p, _)| *p)
        .collect();
    delete_all(&gone, |p| repo.delete_pack(p))?;
    summary.packs_deleted += gone.len() as u64;
    // 5. Markers of earlier prunes beside backups: under the exclusive lock no writer can
    // have reused what they condemn, and this prune has decided every pack afresh.
    let markers = repo.list_markers()?;
    delete_all(&markers, |m| repo.delete_marker(m))?;
    summary.markers_done += markers.len() as u64;
    catalog.refresh(repo)?;
    summary.bytes_after = repo.list_packs()?.iter().map(|(_, s)| s).sum();
    summary.duration_secs = start.elapsed().as_secs_f64();
    summary.plan = plan;
    Ok(summary)
}

/// Packs smaller than this are gathered by repacking: a quarter of the repository's pack
/// size.
pub(super) fn small_pack_bytes(repo: &Repository) -> u64 {
    u64::from(repo.config().pack_bytes) / 4
}

/// Every entry of these index files. An unreadable index file stops prune: its packs would
/// look unindexed and be deleted.
pub(super) fn load_index_files(
    repo: &Repository,
    ids: &[IndexId],
) -> Result<Vec<PackIndex>, EngineError> {
    let loaded = super::parallel::map(ids, super::parallel::DEFAULT_REQUESTS, |iid| {
        Ok(repo.load_index(iid)?)
    })?;
    Ok(loaded.into_iter().flatten().collect())
}

/// Delete objects several at a time.
pub(super) fn delete_all<T: Sync>(
    items: &[T],
    delete: impl Fn(&T) -> Result<(), RepoError> + Sync,
) -> Result<(), EngineError> {
    super::parallel::for_each(items, super::parallel::DEFAULT_REQUESTS, |i| Ok(delete(i)?))
}

/// Every blob the snapshots reach: their trees and the file contents those trees name.
pub(super) fn used_blobs(
    repo: &Repository,
    catalog: &Catalog,
    snapshots: &[SnapshotId],
) -> Result<HashSet<BlobId>, EngineError> {
    let mut used: HashSet<BlobId> = HashSet::new();
    add_used_blobs(repo, catalog, snapshots, &mut used)?;
    Ok(used)
}

/// Add to `used` every blob these snapshots reach; trees already in `used` are not walked
/// again.
pub(super) fn add_used_blobs(
    repo: &Repository,
    catalog: &Catalog,
    snapshots: &[SnapshotId],
    used: &mut HashSet<BlobId>,
) -> Result<(), EngineError> {
    let roots = super::parallel::map(snapshots, super::parallel::DEFAULT_REQUESTS, |sid| {
        Ok(repo.load_snapshot(sid)?.tree)
    })?;
    for root in roots {
        let mut stack = vec![root];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            let tree = load_tree(repo, catalog, &t)?;
            for node in &tree.nodes {
                if let Some(st) = node.subtree {
                    stack.push(st);
                }
                used.extend(node.content.iter().copied());
            }
        }
    }
    Ok(())
}

/// Copy the live blobs of the packs to repack into new packs, data and trees apart, and
/// store them; `written` counts them. Returns the new packs' index entries.
pub(super) fn repack(
    repo: &Repository,
    plan: &PrunePlan,
    by_pack: &BTreeMap<PackId, Vec<BlobLocation>>,
    progress: &Progress,
    written: &mut u64,
) -> Result<Vec<PackIndex>, EngineError> {
    let mut new_index: Vec<PackIndex> = Vec::new();
    let data_target = repo.config().pack_bytes as usize;
    let mut data = PackBuilder::new(data_target);
    let mut trees = PackBuilder::new(TREE_PACK_BYTES);
    for (pack, action) in &plan.actions {
        if *action != PackAction::Repack {
            continue;
        }
        let bytes = repo.read_raw(StoredObject::Pack(*pack))?;
        for loc in by_pack.get(pack).into_iter().flatten() {
            let blob = verified_copy(repo, pack, &bytes, loc)?;
            progress.add_bytes(u64::from(loc.entry.packed_len));
            let (b, target) = match loc.entry.kind {
                BlobKind::Data => (&mut data, data_target),
                BlobKind::Tree => (&mut trees, TREE_PACK_BYTES),
            };
            b.add(repo, blob)?;
            if b.len_bytes() >= target {
                store_pack(repo, b, &mut new_index, written)?;
            }
        }
    }
    store_pack(repo, &mut data, &mut new_index, written)?;
    store_pack(repo, &mut trees, &mut new_index, written)?;
    Ok(new_index)
}

/// A live blob of `pack` (whose bytes are `bytes`), verified and ready for a new pack.
fn verified_copy(
    repo: &Repository,
    pack: &PackId,
    bytes: &[u8],
    loc: &BlobLocation,
) -> Result<SealedBlob, EngineError> {
    let e = &loc.entry;
    let sealed = bytes
        .get(e.offset as usize..e.offset as usize + e.packed_len as usize)
        .ok_or_else(|| RepoError::corrupt(path::pack(pack), format!("blob {} is outside", e.id)))?;
    // Verify before copying: a damaged blob must not get a fresh, trusted home.
    repo.open_blob(loc, sealed)?;
    Ok(SealedBlob {
        id: e.id,
        kind: e.kind,
        compression: e.compression,
        bytes: sealed.to_vec(),
        data_len: e.data_len,
        raw_len: e.raw_len,
    })
}

/// Seal and store the pack `b` holds, if any, and add its entries to `new_index`.
fn store_pack(
    repo: &Repository,
    b: &mut PackBuilder,
    new_index: &mut Vec<PackIndex>,
    written: &mut u64,
) -> Result<(), EngineError> {
    if b.count() == 0 {
        return Ok(());
    }
    let packed = b.take().finish(repo)?;
    let index = PackIndex {
        pack: packed.id,
        blobs: packed.entries.clone(),
    };
    repo.save_pack(packed)?;
    *written += 1;
    new_index.push(index);
    Ok(())
}

/// Write index files naming the new packs and every live blob of the kept packs. Returns
/// how many.
fn write_index(
    repo: &Repository,
    plan: &PrunePlan,
    by_pack: &BTreeMap<PackId, Vec<BlobLocation>>,
    mut new_index: Vec<PackIndex>,
) -> Result<u64, EngineError> {
    for (pack, action) in &plan.actions {
        if *action == PackAction::Keep {
            let mut blobs: Vec<BlobEntry> = by_pack
                .get(pack)
                .into_iter()
                .flatten()
                .map(|l| l.entry)
                .collect();
            blobs.sort_by_key(|e| e.offset);
            new_index.push(PackIndex { pack: *pack, blobs });
        }
    }
    save_index_files(repo, &new_index)
}

/// Save `packs` in as few index files as the limits allow; returns how many.
pub(super) fn save_index_files(repo: &Repository, packs: &[PackIndex]) -> Result<u64, EngineError> {
    let mut written = 0;
    for chunk in index_chunks(packs) {
        repo.save_index(chunk)?;
        written += 1;
    }
    Ok(written)
}

/// How many index files [`save_index_files`] writes for `packs`.
pub(super) fn index_chunk_count(packs: &[PackIndex]) -> usize {
    index_chunks(packs).len()
}

/// `packs` cut into runs of at most [`PACKS_PER_INDEX`] packs and [`BLOBS_PER_INDEX`] blobs
/// (a pack with more blobs than that gets a file of its own).
fn index_chunks(packs: &[PackIndex]) -> Vec<&[PackIndex]> {
    let mut out = Vec::new();
    let (mut start, mut blobs) = (0, 0);
    for (i, p) in packs.iter().enumerate() {
        if i > start && (i - start >= PACKS_PER_INDEX || blobs + p.blobs.len() > BLOBS_PER_INDEX) {
            out.push(&packs[start..i]);
            (start, blobs) = (i, 0);
        }
        blobs += p.blobs.len();
    }
    if start < packs.len() {
        out.push(&packs[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Compression;

    fn blob(n: u8) -> BlobId {
        BlobId([n; 32])
    }
    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }
    fn entry(id: BlobId, offset: u32, len: u32) -> BlobEntry {
        BlobEntry {
            id,
            kind: BlobKind::Data,
            compression: Compression::None,
            offset,
            packed_len: len,
            data_len: len,
            raw_len: len,
        }
    }

    #[test]
    fn plan_deletes_dead_repacks_sparse_keeps_full() {
        // Pack 1: all live. Pack 2: one of ten blobs live. Pack 3: nothing live.
        // Pack 4: unindexed. Pack 5 indexed but missing from storage: ignored.
        let packs: HashMap<PackId, u64> = [(1, 1100), (2, 1100), (3, 1100), (4, 500)]
            .into_iter()
            .map(|(n, s)| (pack(n), s))
            .collect();
        let mk = |p: u8, first: u8| PackIndex {
            pack: pack(p),
            blobs: (0..10)
                .map(|i| entry(blob(first + i), u32::from(i) * 100, 100))
                .collect(),
        };
        let index = vec![mk(1, 0), mk(2, 10), mk(3, 20), mk(5, 30)];
        let mut used: HashSet<BlobId> = (0..10).map(blob).collect();
        used.insert(blob(10));
        let plan = PrunePlan::compute(&packs, &index, &used, 5.0).unwrap();
        assert_eq!(plan.actions[&pack(1)], PackAction::Keep);
        assert_eq!(plan.actions[&pack(2)], PackAction::Repack);
        assert_eq!(plan.actions[&pack(3)], PackAction::Delete);
        assert_eq!(plan.actions[&pack(4)], PackAction::Delete);
        assert_eq!(plan.unindexed_packs, 1);
        assert_eq!(plan.packs_to_delete, 1);
        assert_eq!(plan.live_blobs, 11);
        assert_eq!(plan.bytes_to_repack, 100);
        // With a generous tolerance the sparse pack stays.
        let plan = PrunePlan::compute(&packs, &index, &used, 1000.0).unwrap();
        assert_eq!(plan.actions[&pack(2)], PackAction::Keep);
        // A used blob that only lives in a missing pack stops prune.
        used.insert(blob(30));
        let err = PrunePlan::compute(&packs, &index, &used, 5.0).unwrap_err();
        assert_eq!(err.count, 1);
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
    }

    #[test]
    fn index_files_are_cut_by_packs_and_by_blobs() {
        let p = |blobs: usize| PackIndex {
            pack: pack(1),
            blobs: (0..blobs).map(|i| entry(blob(1), i as u32, 1)).collect(),
        };
        let sizes = |packs: &[PackIndex]| -> Vec<usize> {
            index_chunks(packs).iter().map(|c| c.len()).collect()
        };
        assert!(index_chunks(&[]).is_empty());
        let many: Vec<PackIndex> = (0..PACKS_PER_INDEX + 1).map(|_| p(1)).collect();
        assert_eq!(sizes(&many), vec![PACKS_PER_INDEX, 1]);
        let big = vec![
            p(BLOBS_PER_INDEX - 1),
            p(1),
            p(1),
            p(BLOBS_PER_INDEX + 5),
            p(2),
        ];
        assert_eq!(sizes(&big), vec![2, 1, 1, 1]);
    }

    #[test]
    fn small_packs_are_gathered_when_there_are_two_or_more() {
        let packs: HashMap<PackId, u64> = [(1, 300), (2, 300), (3, 5000)]
            .into_iter()
            .map(|(n, s)| (pack(n), s))
            .collect();
        let index: Vec<PackIndex> = (1..=3)
            .map(|n| PackIndex {
                pack: pack(n),
                blobs: vec![entry(blob(n), 0, 100)],
            })
            .collect();
        let used: HashSet<BlobId> = (1..=3).map(blob).collect();
        let mut plan = PrunePlan::compute(&packs, &index, &used, 1000.0).unwrap();
        plan.repack_small(&packs, 1000);
        assert_eq!(plan.actions[&pack(1)], PackAction::Repack);
        assert_eq!(plan.actions[&pack(2)], PackAction::Repack);
        assert_eq!(plan.actions[&pack(3)], PackAction::Keep);
        assert_eq!((plan.packs_to_repack, plan.bytes_to_repack), (2, 200));
        // One small pack alone stays: repacking it gains nothing.
        let one: HashMap<PackId, u64> = [(1, 300), (3, 5000)]
            .into_iter()
            .map(|(n, s)| (pack(n), s))
            .collect();
        let mut plan =
            PrunePlan::compute(&one, &index, &[blob(1), blob(3)].into(), 1000.0).unwrap();
        plan.repack_small(&one, 1000);
        assert_eq!(plan.packs_to_repack, 0);
    }

    #[test]
    fn duplicated_blob_is_kept_once() {
        let packs: HashMap<PackId, u64> = [(1, 200), (2, 200)]
            .into_iter()
            .map(|(n, s)| (pack(n), s))
            .collect();
        let index = vec![
            PackIndex {
                pack: pack(1),
                blobs: vec![entry(blob(1), 0, 100)],
            },
            PackIndex {
                pack: pack(2),
                blobs: vec![entry(blob(1), 0, 100), entry(blob(2), 100, 100)],
            },
        ];
        let used: HashSet<BlobId> = [blob(1), blob(2)].into_iter().collect();
        let plan = PrunePlan::compute(&packs, &index, &used, 5.0).unwrap();
        assert_eq!(plan.live_blobs, 2);
        assert_eq!(plan.live[&blob(1)].pack, pack(1));
        assert_eq!(plan.live_bytes, 200);
    }
}
