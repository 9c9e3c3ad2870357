//! Check: verify the repository's structure from the repository itself (never from the
//! catalog): every index file opens, every indexed pack exists and is large enough, every
//! snapshot opens, every tree it reaches opens and every blob it names is indexed. With
//! `read_data`, every pack is read whole: its name is its hash, its header matches the index,
//! and every blob decrypts and hashes to its id. Damage is reported with the snapshots and
//! paths it affects.
//!
//! Two findings are warnings, not damage: a blob indexed in a pack that is missing but also in
//! one that exists (an old index file put back; the copy that exists is used, as restore does),
//! and, given a catalog, snapshots it saw that left the repository without a `forget` here
//! (the one thing check takes from the catalog, since the repository cannot tell).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::check_index::CheckIndex;
use super::{EngineError, Progress, display_bytes};
use crate::catalog::{Catalog, VanishedSnapshot};
use crate::format::pack::TRAILER_BYTES;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::format::{BlobEntry, BlobKind};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repo::{LockKind, RepoError, Repository};

/// What to check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckOptions {
    /// Read and verify every pack's content.
    pub read_data: bool,
    /// Read and verify only this share of the packs: the least recently verified first (when
    /// a catalog remembers verification times), so N runs of `1/N` cover every pack.
    pub read_data_subset: Option<Subset>,
    /// Stop reporting the snapshots that vanished (with a catalog): they were removed on
    /// purpose, elsewhere.
    pub acknowledge_vanished: bool,
}

/// A share of the packs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Subset {
    /// `n/m`: n m-ths of the packs.
    Fraction(u32, u32),
    /// `p%`.
    Percent(f64),
}

/// A `--read-data-subset` that is neither `n/m` nor a percentage.
#[derive(Debug, thiserror::Error)]
#[error("invalid subset {0:?}: use n/m (e.g. 1/7) or a percentage (10%)")]
pub struct InvalidSubset(String);

/// Why a tree could not be checked (a finding of `check`, named with the tree).
#[derive(Debug, thiserror::Error)]
enum TreeProblem {
    #[error("tree is not in any index")]
    NotIndexed,
    #[error("indexed as a data blob")]
    IndexedAsData,
    #[error(transparent)]
    Load(#[from] RepoError),
    #[error(transparent)]
    Decode(#[from] crate::format::FormatError),
}

impl Subset {
    /// Parse `1/7` or `10%`.
    pub fn parse(s: &str) -> Result<Subset, InvalidSubset> {
        let bad = || InvalidSubset(s.to_string());
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
    /// Findings that leave every snapshot restorable: blobs indexed in a missing pack besides
    /// an existing one, and indexed packs that are missing but hold nothing without a copy.
    pub warnings: Vec<Problem>,
    /// Blobs indexed in two packs that both exist (two backups stored them at once, or a prune
    /// was interrupted; harmless, the next prune keeps one).
    pub duplicate_blobs: u64,
    /// Snapshots the catalog saw that left the repository without a `forget` through it
    /// (deleted behind coffer's back, forgotten on another host, or an older state of the
    /// repository put back); reported until acknowledged.
    pub vanished_snapshots: Vec<VanishedSnapshot>,
    /// Vanished snapshots this run acknowledged (`acknowledge_vanished`).
    pub acknowledged_snapshots: Vec<VanishedSnapshot>,
}

/// Conflicts named one by one in the warnings; the rest are counted.
const CONFLICTS_NAMED: usize = 20;

/// Check the repository.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &Progress,
) -> Result<CheckReport, EngineError> {
    check_with_catalog(repo, None, opts, progress)
}

/// What a check found so far: damage, warnings, and the blobs and trees found bad (with why).
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    bad_blobs: HashMap<BlobId, String>,
    bad_trees: HashMap<BlobId, String>,
}

/// A snapshot that opened, with its id.
type LoadedSnapshot = (SnapshotId, Snapshot);

/// What reading one pack whole found: the blobs in it that are bad (with why), or why the
/// pack as a whole is.
type PackResult = (PackId, Result<Vec<(BlobId, String)>, RepoError>);

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
    let mut f = Findings::default();

    // Index files, and the packs they name.
    let mut packs: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    let mut index = load_check_index(repo, &mut report, &mut f.problems)?;
    if index.packs().any(|(p, _)| !packs.contains_key(p)) {
        // A backup beside this check may have stored a pack and its index file between the
        // two listings: list the packs again before calling one missing.
        packs.extend(repo.list_packs()?);
    }
    report.packs = packs.len() as u64;
    let duplicates = index.index_blobs(|p| packs.contains_key(p));
    report.blobs = index.blob_count() as u64;
    report.duplicate_blobs = duplicates.in_existing_packs;
    f.warnings = conflict_warnings(&duplicates.conflicts);
    check_indexed_packs(&index, &packs, &mut f);
    report.unindexed_packs = packs.keys().filter(|p| index.entries(p).is_none()).count() as u64;

    // Snapshots and their trees.
    let snapshot_ids = repo.list_snapshots()?;
    let snapshots = load_snapshots(repo, &snapshot_ids, &mut f.problems);
    report.snapshots = snapshots.len() as u64;
    if let Some(c) = catalog {
        note_vanished(c, &snapshot_ids, &snapshots, opts, &mut report)?;
    }
    let good_trees = check_trees(repo, &index, &snapshots, &mut f);
    report.trees = good_trees.len() as u64;

    // Pack contents.
    if opts.read_data || opts.read_data_subset.is_some() {
        let to_read = packs_to_read(catalog, opts, &packs)?;
        let results = read_packs(repo, &index, &packs, &to_read, progress, &mut report);
        if let Some(c) = catalog {
            c.record_pack_checks(
                &sound_packs(&results),
                chrono::Utc::now().timestamp_millis(),
            )?;
        }
        note_pack_results(results, &index, &mut report, &mut f);
        // A damaged tree blob found by reading data is a damaged tree.
        for (b, msg) in &f.bad_blobs {
            if good_trees.contains(b) {
                f.bad_trees.insert(*b, msg.clone());
            }
        }
    }

    if !f.bad_blobs.is_empty() || !f.bad_trees.is_empty() {
        report_damage(repo, &index, &snapshots, &mut f);
    }
    f.problems.sort_by(|a, b| a.object.cmp(&b.object));
    report.problems = f.problems;
    report.warnings = f.warnings;
    Ok(report)
}

/// Every index file's entries; an index file that does not open is a problem.
fn load_check_index(
    repo: &Repository,
    report: &mut CheckReport,
    problems: &mut Vec<Problem>,
) -> Result<CheckIndex, EngineError> {
    let mut index = CheckIndex::default();
    for iid in repo.list_index_files()? {
        report.index_files += 1;
        match repo.load_index(&iid) {
            Ok(list) => {
                for p in list {
                    index.add_pack(iid, p.pack, p.blobs);
                }
            }
            // Deleted since it was listed: a prune beside this check replaced it.
            Err(crate::repo::RepoError::Storage(e)) if e.is_not_found() => {
                report.index_files -= 1;
            }
            Err(e) => problems.push(Problem {
                object: crate::repo::path::index(&iid),
                message: e.to_string(),
                affects: vec![],
            }),
        }
    }
    Ok(index)
}

/// Each indexed pack must exist and hold its blobs: a missing pack loses the blobs that have
/// no copy elsewhere (or is only a warning when all have one), and an entry past the end of
/// its pack is a bad blob.
fn check_indexed_packs(index: &CheckIndex, packs: &HashMap<PackId, u64>, f: &mut Findings) {
    for (pack, entries) in index.packs() {
        let name = crate::repo::path::pack(pack);
        match packs.get(pack) {
            None => {
                // Blobs whose only indexed copy was in this pack are lost; the others are
                // used from the pack that exists.
                let lost: Vec<&BlobEntry> = entries
                    .iter()
                    .filter(|e| index.get(&e.id).is_none_or(|l| l.pack == *pack))
                    .collect();
                let named_by = index
                    .named_by(pack)
                    .map(|i| format!(" (named by {})", crate::repo::path::index(&i)))
                    .unwrap_or_default();
                if lost.is_empty() {
                    f.warnings.push(Problem {
                        object: name,
                        message: format!(
                            "indexed pack is missing{named_by}, but every blob in it is \
                             indexed in a pack that exists too (an old index file put back?); \
                             `coffer prune` writes a clean index"
                        ),
                        affects: vec![],
                    });
                    continue;
                }
                f.problems.push(Problem {
                    object: name,
                    message: format!("indexed pack is missing{named_by}"),
                    affects: vec![],
                });
                for e in lost {
                    f.bad_blobs
                        .insert(e.id, format!("its pack {} is missing", pack.short()));
                }
            }
            Some(&size) => {
                let limit = size.saturating_sub(TRAILER_BYTES as u64);
                for e in entries {
                    if u64::from(e.offset) + u64::from(e.packed_len) > limit {
                        f.bad_blobs
                            .insert(e.id, format!("outside its pack {}", pack.short()));
                    }
                }
            }
        }
    }
}

/// The snapshots that open; one that does not is a problem.
fn load_snapshots(
    repo: &Repository,
    ids: &[SnapshotId],
    problems: &mut Vec<Problem>,
) -> Vec<LoadedSnapshot> {
    let mut snapshots = Vec::new();
    for id in ids {
        match repo.load_snapshot(id) {
            Ok(s) => snapshots.push((*id, s)),
            Err(e) => problems.push(Problem {
                object: crate::repo::path::snapshot(id),
                message: e.to_string(),
                affects: vec![],
            }),
        }
    }
    snapshots
}

/// The repository cannot tell which snapshots it lost; the catalog remembers. Report them, or
/// acknowledge them when asked.
fn note_vanished(
    c: &Catalog,
    ids: &[SnapshotId],
    snapshots: &[LoadedSnapshot],
    opts: &CheckOptions,
    report: &mut CheckReport,
) -> Result<(), EngineError> {
    let loaded: HashMap<&SnapshotId, &Snapshot> = snapshots.iter().map(|(id, s)| (id, s)).collect();
    c.update_snapshots(ids, |id| loaded.get(id).map(|s| (*s).clone()))?;
    if opts.acknowledge_vanished {
        report.acknowledged_snapshots = c.acknowledge_vanished()?;
    } else {
        report.vanished_snapshots = c.vanished_snapshots()?;
    }
    Ok(())
}

/// Open every tree the snapshots reach and look up every blob they name. Returns the trees
/// that opened; the others, and the blobs no index names, go to the findings.
fn check_trees(
    repo: &Repository,
    index: &CheckIndex,
    snapshots: &[LoadedSnapshot],
    f: &mut Findings,
) -> HashSet<BlobId> {
    let mut good_trees: HashSet<BlobId> = HashSet::new();
    for (_, s) in snapshots {
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            if good_trees.contains(&t) || f.bad_trees.contains_key(&t) {
                continue;
            }
            match load_checked_tree(repo, index, &t) {
                Ok(tree) => {
                    good_trees.insert(t);
                    for n in &tree.nodes {
                        if let Some(st) = n.subtree {
                            stack.push(st);
                        }
                        for c in &n.content {
                            if !index.contains(c) {
                                f.bad_blobs
                                    .entry(*c)
                                    .or_insert_with(|| "not in any index".into());
                            }
                        }
                    }
                }
                Err(msg) => {
                    f.bad_trees.insert(t, msg.to_string());
                }
            }
        }
    }
    good_trees
}

/// The packs to read whole: all of them, or the share asked for, least recently verified
/// first when a catalog remembers.
fn packs_to_read(
    catalog: Option<&Catalog>,
    opts: &CheckOptions,
    packs: &HashMap<PackId, u64>,
) -> Result<Vec<PackId>, EngineError> {
    let mut all: Vec<PackId> = packs.keys().copied().collect();
    all.sort();
    Ok(match opts.read_data_subset {
        Some(subset) if !opts.read_data => {
            let verified = match catalog {
                Some(c) => c.pack_check_times()?,
                None => HashMap::new(),
            };
            pick_least_recently_verified(&all, &verified, subset.count_of(all.len()))
        }
        _ => all,
    })
}

/// Read the packs `to_read` whole, in parallel, and compare their headers with the index.
fn read_packs(
    repo: &Repository,
    index: &CheckIndex,
    packs: &HashMap<PackId, u64>,
    to_read: &[PackId],
    progress: &Progress,
    report: &mut CheckReport,
) -> Vec<PackResult> {
    let total: u64 = to_read.iter().filter_map(|p| packs.get(p)).sum();
    progress.total_bytes.store(total, Ordering::Relaxed);
    let bytes_read = AtomicU64::new(0);
    let results: Vec<PackResult> = to_read
        .par_iter()
        .filter_map(|id| packs.get(id).map(|size| (id, size)))
        .map(|(id, size)| {
            let r = read_pack(repo, index, id, *size, progress, &bytes_read);
            (*id, r)
        })
        .collect();
    report.bytes_read = bytes_read.load(Ordering::Relaxed);
    results
}

/// Read one pack whole and return its bad blobs: those that do not open, and those whose
/// index entry differs from the pack's header.
fn read_pack(
    repo: &Repository,
    index: &CheckIndex,
    id: &PackId,
    size: u64,
    progress: &Progress,
    bytes_read: &AtomicU64,
) -> Result<Vec<(BlobId, String)>, RepoError> {
    // In pieces: memory stays at a few MiB per thread, whatever the pack size.
    let verified = repo.verify_stored_pack(id, size);
    bytes_read.fetch_add(size, Ordering::Relaxed);
    progress.file_done(size);
    let (entries, bad) = verified?;
    let mut out: Vec<(BlobId, String)> = bad
        .into_iter()
        .map(|(e, err)| (e.id, err.to_string()))
        .collect();
    if let Some(indexed) = index.entries(id) {
        let in_header: HashMap<BlobId, &BlobEntry> = entries.iter().map(|e| (e.id, e)).collect();
        for e in indexed {
            if in_header.get(&e.id).is_none_or(|h| **h != *e) {
                out.push((e.id, "index entry does not match the pack header".into()));
            }
        }
    }
    Ok(out)
}

/// The packs read that were found sound.
fn sound_packs(results: &[PackResult]) -> Vec<PackId> {
    results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|bad| bad.is_empty()))
        .map(|(p, _)| *p)
        .collect()
}

/// Add what reading the packs found: bad blobs, and damaged packs whose blobs are all bad.
fn note_pack_results(
    results: Vec<PackResult>,
    index: &CheckIndex,
    report: &mut CheckReport,
    f: &mut Findings,
) {
    for (pack, r) in results {
        report.packs_read += 1;
        match r {
            Ok(bad) => {
                for (b, msg) in bad {
                    f.bad_blobs.insert(b, msg);
                }
            }
            Err(e) => {
                f.problems.push(Problem {
                    object: crate::repo::path::pack(&pack),
                    message: e.to_string(),
                    affects: vec![],
                });
                for e in index.entries(&pack).into_iter().flatten() {
                    f.bad_blobs
                        .insert(e.id, format!("its pack {} is damaged", pack.short()));
                }
            }
        }
    }
}

/// One problem per bad tree and per bad blob that matters, with the paths it affects.
fn report_damage(
    repo: &Repository,
    index: &CheckIndex,
    snapshots: &[LoadedSnapshot],
    f: &mut Findings,
) {
    let affects = affected_paths(repo, index, snapshots, &f.bad_blobs, &f.bad_trees);
    for (t, msg) in &f.bad_trees {
        f.problems.push(Problem {
            object: format!("tree {t}"),
            message: msg.clone(),
            affects: affects.get(t).cloned().unwrap_or_default(),
        });
    }
    for (b, msg) in &f.bad_blobs {
        // Only report blobs that matter: referenced, or in a damaged pack.
        let a = affects.get(b).cloned().unwrap_or_default();
        if a.is_empty() && !index.contains(b) {
            continue;
        }
        f.problems.push(Problem {
            object: format!("blob {b}"),
            message: msg.clone(),
            affects: a,
        });
    }
}

/// One warning per conflicting blob (the first [`CONFLICTS_NAMED`]), then one for the rest.
fn conflict_warnings(conflicts: &[super::check_index::Conflict]) -> Vec<Problem> {
    let mut out: Vec<Problem> = conflicts
        .iter()
        .take(CONFLICTS_NAMED)
        .map(|c| Problem {
            object: format!("blob {}", c.blob),
            message: format!(
                "indexed in pack {} and in pack {}, which is missing (an old index file put \
                 back?); the copy in {} is used",
                c.used,
                c.missing,
                c.used.short()
            ),
            affects: vec![],
        })
        .collect();
    if conflicts.len() > CONFLICTS_NAMED {
        out.push(Problem {
            object: "index".into(),
            message: format!(
                "{} more blobs are indexed in a missing pack besides an existing one",
                conflicts.len() - CONFLICTS_NAMED
            ),
            affects: vec![],
        });
    }
    out
}

fn load_checked_tree(
    repo: &Repository,
    index: &CheckIndex,
    id: &BlobId,
) -> Result<Tree, TreeProblem> {
    let loc = index.get(id).ok_or(TreeProblem::NotIndexed)?;
    if loc.entry.kind != BlobKind::Tree {
        return Err(TreeProblem::IndexedAsData);
    }
    let bytes = repo.load_blob(&loc)?;
    Ok(Tree::decode(&bytes)?)
}

/// Map each damaged blob or tree to the snapshot paths that use it.
fn affected_paths(
    repo: &Repository,
    index: &CheckIndex,
    snapshots: &[LoadedSnapshot],
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
        repo.delete_index(&iid)?;
        s.damaged_index_files_removed += 1;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

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
