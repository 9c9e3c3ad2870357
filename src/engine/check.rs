//! Check: verify the repository's structure from the repository itself (never from the
//! catalog): every index file opens, every indexed pack exists and is large enough, every
//! snapshot opens, every tree it reaches opens and every blob it names is indexed. With
//! `read_data`, every pack is read whole: its name is its hash, its header matches the index,
//! and every blob decrypts and hashes to its id. Damage is reported with the snapshots and
//! paths it affects.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::{EngineError, Progress, display_bytes};
use crate::catalog::Catalog;
use crate::format::pack::TRAILER_BYTES;
use crate::format::tree::{NodeKind, Tree};
use crate::format::{BlobEntry, BlobKind};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repo::{BlobLocation, LockKind, Repository};

/// What to check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckOptions {
    /// Read and verify every pack's content.
    pub read_data: bool,
    /// Read and verify only this share of the packs: the least recently verified first (when
    /// a catalog remembers verification times), so N runs of `1/N` cover every pack.
    pub read_data_subset: Option<Subset>,
}

/// A share of the packs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Subset {
    /// `n/m`: n m-ths of the packs.
    Fraction(u32, u32),
    /// `p%`.
    Percent(f64),
}

impl Subset {
    /// Parse `1/7` or `10%`.
    pub fn parse(s: &str) -> Result<Subset, String> {
        let bad = || format!("invalid subset {s:?}: use n/m (e.g. 1/7) or a percentage (10%)");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(Subset::Fraction(n, m))
    }

    /// How many of `total` packs the share covers (at least one when there are any).
    pub fn count_of(&self, total: usize) -> usize {
        let c = match *self {
            Subset::Fraction(n, m) => (total as u64 * u64::from(n)).div_ceil(u64::from(m)),
            Subset::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
        };
        (c as usize).clamp(total.min(1), total)
    }
}

/// Choose `count` packs, never verified first, then the least recently verified, ties by id.
pub fn pick_least_recently_verified(
    packs: &[PackId],
    verified: &HashMap<PackId, i64>,
    count: usize,
) -> Vec<PackId> {
    let mut v: Vec<(Option<i64>, PackId)> = packs
        .iter()
        .map(|p| (verified.get(p).copied(), *p))
        .collect();
    v.sort();
    v.into_iter().take(count).map(|(_, p)| p).collect()
}

/// One problem found.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The damaged or missing object.
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// Snapshots and paths affected (`<snapshot short id>:<path>`).
    pub affects: Vec<String>,
}

/// Result of a check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Index files read.
    pub index_files: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Trees verified.
    pub trees: u64,
    /// Packs read whole (`read_data`).
    pub packs_read: u64,
    /// Bytes read whole (`read_data`).
    pub bytes_read: u64,
    /// Packs that no index names (left by an interrupted backup; harmless).
    pub unindexed_packs: u64,
    /// Problems; empty means the repository is sound.
    pub problems: Vec<Problem>,
}

/// The repository's index as `check` holds it: each pack's entries once, and per blob id only
/// where its first entry is, in a table sorted by id and built once at its final size (40 bytes
/// a blob; a hash map of locations took about 3 times that with its spare room and rehashing).
#[derive(Default)]
struct CheckIndex {
    packs: Vec<(PackId, Vec<BlobEntry>)>,
    pack_no: HashMap<PackId, u32>,
    /// (blob id, pack number, entry number), sorted by id, one row per id.
    blobs: Vec<(BlobId, u32, u32)>,
}

impl CheckIndex {
    /// Add a pack's entries as an index file lists them (a pack listed twice gets both).
    fn add_pack(&mut self, pack: PackId, blobs: Vec<BlobEntry>) {
        match self.pack_no.get(&pack) {
            Some(&n) => self.packs[n as usize].1.extend(blobs),
            None => {
                self.pack_no.insert(pack, self.packs.len() as u32);
                self.packs.push((pack, blobs));
            }
        }
    }

    /// Build the blob id table; call once, after the last [`CheckIndex::add_pack`]. A blob
    /// indexed twice is found at its first entry, in index file order.
    fn index_blobs(&mut self) {
        let n = self.packs.iter().map(|(_, b)| b.len()).sum();
        let mut blobs = Vec::with_capacity(n);
        for (p, (_, entries)) in self.packs.iter().enumerate() {
            for (i, e) in entries.iter().enumerate() {
                blobs.push((e.id, p as u32, i as u32));
            }
        }
        // Stable: of equal ids the first added stays first, and dedup keeps it.
        blobs.sort_by_key(|b| b.0);
        blobs.dedup_by_key(|b| b.0);
        blobs.shrink_to_fit();
        self.blobs = blobs;
    }

    fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    fn position(&self, id: &BlobId) -> Option<(u32, u32)> {
        let i = self.blobs.binary_search_by(|b| b.0.cmp(id)).ok()?;
        Some((self.blobs[i].1, self.blobs[i].2))
    }

    fn contains(&self, id: &BlobId) -> bool {
        self.position(id).is_some()
    }

    fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        let (p, i) = self.position(id)?;
        let (pack, entries) = &self.packs[p as usize];
        Some(BlobLocation {
            pack: *pack,
            entry: entries[i as usize],
        })
    }

    fn entries(&self, pack: &PackId) -> Option<&[BlobEntry]> {
        let &n = self.pack_no.get(pack)?;
        Some(&self.packs[n as usize].1)
    }

    fn packs(&self) -> impl Iterator<Item = (&PackId, &Vec<BlobEntry>)> {
        self.packs.iter().map(|(p, e)| (p, e))
    }
}

/// Check the repository.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &Progress,
) -> Result<CheckReport, EngineError> {
    check_with_catalog(repo, None, opts, progress)
}

/// Check the repository; with a catalog, a data subset is chosen by and recorded in its
/// verification times (rolling verification).
pub fn check_with_catalog(
    repo: &Repository,
    catalog: Option<&Catalog>,
    opts: &CheckOptions,
    progress: &Progress,
) -> Result<CheckReport, EngineError> {
    let _lock = repo.lock(LockKind::Shared, "check")?;
    let mut report = CheckReport::default();
    let mut problems = Vec::new();

    let packs: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    report.packs = packs.len() as u64;
    let mut index = CheckIndex::default();
    for iid in repo.list_index_files()? {
        report.index_files += 1;
        match repo.load_index(&iid) {
            Ok(list) => {
                for p in list {
                    index.add_pack(p.pack, p.blobs);
                }
            }
            Err(e) => problems.push(Problem {
                object: crate::repo::path::index(&iid),
                message: e.to_string(),
                affects: vec![],
            }),
        }
    }
    index.index_blobs();
    report.blobs = index.blob_count() as u64;
    let mut bad_blobs: HashMap<BlobId, String> = HashMap::new();
    for (pack, entries) in index.packs() {
        let name = crate::repo::path::pack(pack);
        match packs.get(pack) {
            None => {
                problems.push(Problem {
                    object: name,
                    message: "indexed pack is missing".into(),
                    affects: vec![],
                });
                for e in entries {
                    bad_blobs.insert(e.id, format!("its pack {} is missing", pack.short()));
                }
            }
            Some(&size) => {
                let limit = size.saturating_sub(TRAILER_BYTES as u64);
                for e in entries {
                    if u64::from(e.offset) + u64::from(e.packed_len) > limit {
                        bad_blobs.insert(e.id, format!("outside its pack {}", pack.short()));
                    }
                }
            }
        }
    }
    report.unindexed_packs = packs.keys().filter(|p| index.entries(p).is_none()).count() as u64;

    // Snapshots and their trees.
    let snapshot_ids = repo.list_snapshots()?;
    let mut snapshots = Vec::new();
    for id in &snapshot_ids {
        match repo.load_snapshot(id) {
            Ok(s) => snapshots.push((*id, s)),
            Err(e) => problems.push(Problem {
                object: crate::repo::path::snapshot(id),
                message: e.to_string(),
                affects: vec![],
            }),
        }
    }
    report.snapshots = snapshots.len() as u64;
    let mut good_trees: HashSet<BlobId> = HashSet::new();
    let mut bad_trees: HashMap<BlobId, String> = HashMap::new();
    for (_, s) in &snapshots {
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            if good_trees.contains(&t) || bad_trees.contains_key(&t) {
                continue;
            }
            match load_checked_tree(repo, &index, &t) {
                Ok(tree) => {
                    good_trees.insert(t);
                    for n in &tree.nodes {
                        if let Some(st) = n.subtree {
                            stack.push(st);
                        }
                        for c in &n.content {
                            if !index.contains(c) {
                                bad_blobs
                                    .entry(*c)
                                    .or_insert_with(|| "not in any index".into());
                            }
                        }
                    }
                }
                Err(msg) => {
                    bad_trees.insert(t, msg);
                }
            }
        }
    }
    report.trees = good_trees.len() as u64;

    if opts.read_data || opts.read_data_subset.is_some() {
        let mut all: Vec<PackId> = packs.keys().copied().collect();
        all.sort();
        let to_read: Vec<PackId> = match opts.read_data_subset {
            Some(subset) if !opts.read_data => {
                let verified = match catalog {
                    Some(c) => c.pack_check_times()?,
                    None => HashMap::new(),
                };
                pick_least_recently_verified(&all, &verified, subset.count_of(all.len()))
            }
            _ => all,
        };
        let total: u64 = to_read.iter().filter_map(|p| packs.get(p)).sum();
        progress.total_bytes.store(total, Ordering::Relaxed);
        let bytes_read = AtomicU64::new(0);
        type PackResult = (PackId, Result<Vec<(BlobId, String)>, String>);
        let results: Vec<PackResult> = to_read
            .par_iter()
            .filter_map(|id| packs.get(id).map(|size| (id, size)))
            .map(|(id, size)| {
                let r = (|| {
                    // In pieces: memory stays at a few MiB per thread, whatever the pack size.
                    let verified = repo.verify_stored_pack(id, *size);
                    bytes_read.fetch_add(*size, Ordering::Relaxed);
                    progress.file_done(*size);
                    let (entries, bad) = verified.map_err(|e| e.to_string())?;
                    let mut out: Vec<(BlobId, String)> = bad
                        .into_iter()
                        .map(|(e, err)| (e.id, err.to_string()))
                        .collect();
                    if let Some(indexed) = index.entries(id) {
                        let in_header: HashMap<BlobId, &BlobEntry> =
                            entries.iter().map(|e| (e.id, e)).collect();
                        for e in indexed {
                            if in_header.get(&e.id).is_none_or(|h| **h != *e) {
                                out.push((
                                    e.id,
                                    "index entry does not match the pack header".into(),
                                ));
                            }
                        }
                    }
                    Ok(out)
                })();
                (*id, r)
            })
            .collect();
        report.bytes_read = bytes_read.load(Ordering::Relaxed);
        let sound: Vec<PackId> = results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|bad| bad.is_empty()))
            .map(|(p, _)| *p)
            .collect();
        if let Some(c) = catalog {
            c.record_pack_checks(&sound, chrono::Utc::now().timestamp_millis())?;
        }
        for (pack, r) in results {
            report.packs_read += 1;
            match r {
                Ok(bad) => {
                    for (b, msg) in bad {
                        bad_blobs.insert(b, msg);
                    }
                }
                Err(msg) => {
                    problems.push(Problem {
                        object: crate::repo::path::pack(&pack),
                        message: msg,
                        affects: vec![],
                    });
                    for e in index.entries(&pack).into_iter().flatten() {
                        bad_blobs.insert(e.id, format!("its pack {} is damaged", pack.short()));
                    }
                }
            }
        }
        // A damaged tree blob found by reading data is a damaged tree.
        for (b, msg) in &bad_blobs {
            if good_trees.contains(b) {
                bad_trees.insert(*b, msg.clone());
            }
        }
    }

    if !bad_blobs.is_empty() || !bad_trees.is_empty() {
        let affects = affected_paths(repo, &index, &snapshots, &bad_blobs, &bad_trees);
        for (t, msg) in &bad_trees {
            problems.push(Problem {
                object: format!("tree {t}"),
                message: msg.clone(),
                affects: affects.get(t).cloned().unwrap_or_default(),
            });
        }
        for (b, msg) in &bad_blobs {
            // Only report blobs that matter: referenced, or in a damaged pack.
            let a = affects.get(b).cloned().unwrap_or_default();
            if a.is_empty() && !index.contains(b) {
                continue;
            }
            problems.push(Problem {
                object: format!("blob {b}"),
                message: msg.clone(),
                affects: a,
            });
        }
    }
    problems.sort_by(|a, b| a.object.cmp(&b.object));
    report.problems = problems;
    Ok(report)
}

fn load_checked_tree(repo: &Repository, index: &CheckIndex, id: &BlobId) -> Result<Tree, String> {
    let loc = index
        .get(id)
        .ok_or_else(|| "tree is not in any index".to_string())?;
    if loc.entry.kind != BlobKind::Tree {
        return Err("indexed as a data blob".into());
    }
    let bytes = repo.load_blob(&loc).map_err(|e| e.to_string())?;
    Tree::decode(&bytes).map_err(|e| e.to_string())
}

/// Map each damaged blob or tree to the snapshot paths that use it.
fn affected_paths(
    repo: &Repository,
    index: &CheckIndex,
    snapshots: &[(SnapshotId, crate::format::snapshot::Snapshot)],
    bad_blobs: &HashMap<BlobId, String>,
    bad_trees: &HashMap<BlobId, String>,
) -> HashMap<BlobId, Vec<String>> {
    const MAX_PATHS: usize = 20;
    let mut out: HashMap<BlobId, Vec<String>> = HashMap::new();
    let mut add = |id: BlobId, s: &SnapshotId, p: &Path| {
        let v = out.entry(id).or_default();
        if v.len() < MAX_PATHS {
            v.push(format!("{}:{}", s.short(), p.display()));
        }
    };
    for (sid, s) in snapshots {
        let mut stack: Vec<(BlobId, PathBuf)> = vec![(s.tree, PathBuf::from("/"))];
        while let Some((t, path)) = stack.pop() {
            if bad_trees.contains_key(&t) {
                add(t, sid, &path);
                continue;
            }
            let Ok(tree) = load_checked_tree(repo, index, &t) else {
                continue;
            };
            for n in &tree.nodes {
                let p = path.join(display_bytes(&n.name));
                if n.kind == NodeKind::Dir
                    && let Some(st) = n.subtree
                {
                    stack.push((st, p.clone()));
                }
                for c in &n.content {
                    if bad_blobs.contains_key(c) {
                        add(*c, sid, &p);
                    }
                }
            }
        }
    }
    out
}

/// What `repair index` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexSummary {
    /// Packs that no readable index named.
    pub unindexed_packs: u64,
    /// Index files written for them.
    pub index_files_written: u64,
    /// Blobs those index files name.
    pub blobs_indexed: u64,
    /// Packs whose header could not be read (named, with the reason).
    pub unreadable_packs: Vec<String>,
    /// Damaged index files deleted after their packs were indexed again.
    pub damaged_index_files_removed: u64,
}

/// Write index files for every pack that no readable index file names, from the packs' own
/// headers, then delete the index files that are damaged. Run under an exclusive lock.
pub fn repair_index(repo: &Repository) -> Result<RepairIndexSummary, EngineError> {
    const PACKS_PER_INDEX: usize = 64;
    let mut s = RepairIndexSummary::default();
    let mut indexed: HashSet<PackId> = HashSet::new();
    let mut corrupt: Vec<crate::id::IndexId> = Vec::new();
    for iid in repo.list_index_files()? {
        match repo.load_index(&iid) {
            Ok(list) => indexed.extend(list.into_iter().map(|p| p.pack)),
            Err(e @ crate::repo::RepoError::Corrupt { .. }) => {
                tracing::warn!("index file {iid} is damaged, its packs are re-indexed: {e}");
                corrupt.push(iid);
            }
            // A storage error is not damage: stop rather than index twice or delete.
            Err(e) => return Err(e.into()),
        }
    }
    let mut pending = Vec::new();
    for (id, size) in repo.list_packs()? {
        if indexed.contains(&id) {
            continue;
        }
        s.unindexed_packs += 1;
        match repo.load_pack_header(&id, size) {
            Ok(blobs) => {
                s.blobs_indexed += blobs.len() as u64;
                pending.push(crate::format::index::PackIndex { pack: id, blobs });
            }
            Err(e) => s
                .unreadable_packs
                .push(format!("{}: {e}", crate::repo::path::pack(&id))),
        }
        if pending.len() >= PACKS_PER_INDEX {
            repo.save_index(&pending)?;
            s.index_files_written += 1;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        repo.save_index(&pending)?;
        s.index_files_written += 1;
    }
    // Their packs are indexed again above: the damaged files can go.
    for iid in corrupt {
        repo.store()
            .delete(&crate::repo::path::index(&iid))
            .map_err(crate::repo::RepoError::from)?;
        s.damaged_index_files_removed += 1;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_index_finds_first_entry_of_each_blob() {
        let entry = |id: u8, offset: u32| BlobEntry {
            id: BlobId([id; 32]),
            kind: BlobKind::Data,
            compression: crate::format::Compression::None,
            offset,
            packed_len: 50,
            data_len: 10,
            raw_len: 10,
        };
        let (p1, p2) = (PackId([1; 32]), PackId([2; 32]));
        let mut index = CheckIndex::default();
        index.add_pack(p1, vec![entry(9, 0), entry(3, 50)]);
        index.add_pack(p2, vec![entry(3, 0), entry(5, 50)]);
        // The same pack listed by a second index file: its entries are kept beside the first.
        index.add_pack(p1, vec![entry(7, 100)]);
        index.index_blobs();

        assert_eq!(index.blob_count(), 4);
        let three = index.get(&BlobId([3; 32])).unwrap();
        assert_eq!(
            (three.pack, three.entry.offset),
            (p1, 50),
            "first listed wins"
        );
        assert_eq!(index.get(&BlobId([7; 32])).unwrap().pack, p1);
        assert_eq!(index.get(&BlobId([5; 32])).unwrap().pack, p2);
        assert!(!index.contains(&BlobId([4; 32])));
        assert!(index.get(&BlobId([0; 32])).is_none());
        assert_eq!(index.entries(&p1).unwrap().len(), 3);
        assert!(index.entries(&PackId([3; 32])).is_none());
        assert_eq!(index.packs().count(), 2);
    }

    #[test]
    fn subsets_parse_and_count() {
        assert_eq!(Subset::parse("1/7").unwrap(), Subset::Fraction(1, 7));
        assert_eq!(Subset::parse("10%").unwrap(), Subset::Percent(10.0));
        for bad in ["0/7", "8/7", "1/0", "x", "0%", "101%", "1/"] {
            assert!(Subset::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Subset::Fraction(1, 7).count_of(70), 10);
        assert_eq!(Subset::Fraction(1, 7).count_of(71), 11);
        assert_eq!(Subset::Fraction(1, 7).count_of(3), 1);
        assert_eq!(Subset::Percent(10.0).count_of(0), 0);
        assert_eq!(Subset::Percent(100.0).count_of(9), 9);
    }

    #[test]
    fn n_rolling_runs_of_one_nth_cover_every_pack() {
        let packs: Vec<PackId> = (0..23u8).map(|n| PackId([n; 32])).collect();
        let mut verified: HashMap<PackId, i64> = HashMap::new();
        // Some packs were verified long ago, in an order unrelated to their ids.
        verified.insert(packs[5], 100);
        verified.insert(packs[0], 50);
        let subset = Subset::Fraction(1, 7);
        let mut seen = std::collections::HashSet::new();
        for night in 0..7i64 {
            let pick = pick_least_recently_verified(&packs, &verified, subset.count_of(23));
            assert_eq!(pick.len(), 4);
            for p in pick {
                seen.insert(p);
                verified.insert(p, 1000 + night);
            }
        }
        assert_eq!(seen.len(), packs.len());
    }
}
