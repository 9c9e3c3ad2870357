//! Prune beside running backups: two phases, no exclusive lock (`docs/format.md`, "Prune
//! beside backups", has the protocol and the argument why no snapshot loses a blob).
//!
//! Under a shared lock with the purpose `prune` (two prunes exclude each other; backups,
//! restores and checks go on), one run:
//!
//! 1. condemns: packs that hold nothing the snapshots need, and sparse packs after their live
//!    blobs were copied into new packs (stored and indexed first), are named in a new marker
//!    `condemned/<id>`; then the locks are listed and a complete marker recording their
//!    sessions replaces it. Writers that start later read the markers and do not reuse those
//!    packs; writers already running are recorded and waited for;
//! 2. carries out every marker that is ready ([`condemn::readiness`]: no session it recorded
//!    is live, and it is older than the grace period unless nobody else held a lock): with the
//!    snapshots and index files listed again, a condemned pack is deleted unless it holds the
//!    last copy of a blob a snapshot needs ([`condemn::deletable`]); the index is rewritten
//!    without the deleted packs (and consolidated into few files) before the old index files
//!    and then the packs are deleted; the marker goes last.
//!
//! A marker written while nobody else held a lock is carried out in the same run, so a prune
//! on a quiet repository frees the space at once, as the exclusive one does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::condemn::{self, Readiness};
use super::prune::{
    PackAction, PruneOptions, PrunePlan, PruneSummary, add_used_blobs, delete_all,
    load_index_files, repack, save_index_files,
};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::format::condemned::Condemned;
use crate::format::index::PackIndex;
use crate::id::{BlobId, IndexId, MarkerId, PackId, SnapshotId};
use crate::repo::{BlobLocation, LockCensus, LockGuard, LockKind, PRUNE_PURPOSE, Repository};

/// What the first reading of the repository found.
struct Reading {
    markers: Vec<(MarkerId, Condemned)>,
    packs: HashMap<PackId, u64>,
    index_ids: Vec<IndexId>,
    index: Vec<PackIndex>,
    snapshots: Vec<SnapshotId>,
    used: HashSet<BlobId>,
}

/// Prune beside backups (see the module documentation). `held` is a lock this process
/// already holds (a `forget` that prunes after it): not a writer to wait for.
pub fn prune_shared(
    repo: &Repository,
    catalog: &Catalog,
    opts: &PruneOptions,
    progress: &Progress,
    held: Option<&LockGuard>,
) -> Result<PruneSummary, EngineError> {
    let start = std::time::Instant::now();
    let lock = repo.lock(LockKind::Shared, PRUNE_PURPOSE)?;
    let own: Vec<&LockGuard> = std::iter::once(&lock).chain(held).collect();
    let mut r = read(repo, catalog)?;
    let condemned: HashSet<PackId> = r
        .markers
        .iter()
        .flat_map(|(_, m)| m.packs.clone())
        .collect();
    let mut plan = PrunePlan::compute_avoiding(
        &r.packs,
        &r.index,
        &r.used,
        opts.max_unused_percent,
        &condemned,
    )?;
    plan.repack_small(&r.packs, super::prune::small_pack_bytes(repo));
    let mut summary = PruneSummary {
        snapshots: r.snapshots.len() as u64,
        bytes_before: plan.pack_bytes,
        dry_run: opts.dry_run,
        ..PruneSummary::default()
    };
    let to_condemn: Vec<PackId> = plan
        .actions
        .iter()
        .filter(|(p, a)| **a != PackAction::Keep && !condemned.contains(*p))
        .map(|(p, _)| *p)
        .collect();
    if opts.dry_run {
        summary.packs_condemned = to_condemn.len() as u64;
        summary.bytes_after = plan.pack_bytes - plan.bytes_to_free + plan.bytes_to_repack;
        summary.duration_secs = start.elapsed().as_secs_f64();
        summary.plan = plan;
        return Ok(summary);
    }
    progress
        .total_bytes
        .store(plan.bytes_to_repack, Ordering::Relaxed);

    // Phase 1: the live blobs of sparse packs move first (stored and indexed), then the packs
    // nothing needs are condemned.
    move_live_blobs(repo, &plan, &condemned, &mut r, progress, &mut summary)?;
    summary.packs_condemned = to_condemn.len() as u64;
    let census = condemn_and_record(repo, &own, &mut r.markers, to_condemn)?;
    if census.present.is_empty() {
        // Nobody else holds a lock: temporary files are leftovers of killed writers.
        let n = repo.clean_leftovers()?;
        if n > 0 {
            tracing::info!("removed {n} temporary files left by interrupted writes");
        }
    }

    // Phase 2.
    let now = chrono::Utc::now().timestamp();
    let grace = Duration::from_secs(opts.grace_secs);
    let mut ready = Vec::new();
    for (id, m) in &r.markers {
        match condemn::readiness(m, &census, now, grace) {
            Readiness::Ready => ready.push((*id, m.clone())),
            other => summary.markers_waiting.push(other),
        }
    }
    if !ready.is_empty() {
        carry_out(repo, catalog, &mut r, &ready, &mut summary)?;
    } else if r.index_ids.len() > consolidated_count(&r.index)
        || r.index.iter().any(|p| !r.packs.contains_key(&p.pack))
    {
        // Nothing to delete, but many small index files, or entries of packs that are gone:
        // gather them. The packs are listed again after the index files were.
        let present: HashSet<PackId> = repo.list_packs()?.into_iter().map(|(p, _)| p).collect();
        rewrite_index(repo, &r, &HashSet::new(), &present, &mut summary)?;
    }
    catalog.refresh(repo)?;
    summary.bytes_after = repo.list_packs()?.iter().map(|(_, s)| s).sum();
    summary.duration_secs = start.elapsed().as_secs_f64();
    summary.plan = plan;
    Ok(summary)
}

/// Copy the live blobs of the packs to repack (none of them condemned) into new packs and
/// store an index file naming them; `r` learns of it.
fn move_live_blobs(
    repo: &Repository,
    plan: &PrunePlan,
    condemned: &HashSet<PackId>,
    r: &mut Reading,
    progress: &Progress,
    summary: &mut PruneSummary,
) -> Result<(), EngineError> {
    let mut by_pack: BTreeMap<PackId, Vec<BlobLocation>> = BTreeMap::new();
    for loc in plan.live.values() {
        if !condemned.contains(&loc.pack) {
            by_pack.entry(loc.pack).or_default().push(*loc);
        }
    }
    let moved = repack(repo, plan, &by_pack, progress, &mut summary.packs_written)?;
    if !moved.is_empty() {
        let id = repo.save_index(&moved)?;
        summary.index_files_written += 1;
        r.index_ids.push(id);
        r.index.extend(moved);
    }
    Ok(())
}

/// Everything prune decides from, read from the repository itself (the catalog only finds
/// trees). The markers are read before the index, as writers read them; the snapshots are
/// listed before the catalog reads the index, so that it knows where their trees are (a
/// writer stores its index files before its snapshot).
fn read(repo: &Repository, catalog: &Catalog) -> Result<Reading, EngineError> {
    let markers = repo.load_markers()?;
    let snapshots = repo.list_snapshots()?;
    catalog.refresh(repo)?;
    let packs: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    let index_ids = repo.list_index_files()?;
    let index = load_index_files(repo, &index_ids)?;
    let mut used = HashSet::new();
    add_used_blobs(repo, catalog, &snapshots, &mut used)?;
    Ok(Reading {
        markers,
        packs,
        index_ids,
        index,
        snapshots,
        used,
    })
}

/// Write a marker for `packs` (if any), list the locks, and replace every marker that has no
/// session list yet (this one, and those of killed prunes) with a complete one. Returns the
/// census: it also decides which markers are ready.
fn condemn_and_record(
    repo: &Repository,
    own: &[&LockGuard],
    markers: &mut Vec<(MarkerId, Condemned)>,
    packs: Vec<PackId>,
) -> Result<LockCensus, EngineError> {
    if !packs.is_empty() {
        let m = Condemned {
            time: chrono::Utc::now().timestamp(),
            host: crate::repo::hostname(),
            sessions: None,
            packs,
        };
        let id = repo.save_marker(&m)?;
        markers.push((id, m));
    }
    // After the marker is stored: a writer whose lock this listing misses took it later, and
    // so reads the marker before it looks anything up.
    let census = repo.lock_census(own)?;
    for (id, m) in markers.iter_mut() {
        if m.sessions.is_some() {
            continue;
        }
        let complete = Condemned {
            sessions: Some(census.present.clone()),
            ..m.clone()
        };
        let new_id = repo.save_marker(&complete)?;
        repo.delete_marker(id)?;
        *id = new_id;
        *m = complete;
    }
    Ok(census)
}

/// Phase 2 for the `ready` markers: delete what no snapshot needs, keep the rest.
fn carry_out(
    repo: &Repository,
    catalog: &Catalog,
    r: &mut Reading,
    ready: &[(MarkerId, Condemned)],
    summary: &mut PruneSummary,
) -> Result<(), EngineError> {
    // Snapshots and index files written since the first reading: their writers finished
    // (or started after the markers and avoid their packs). Snapshots first: a writer stores
    // its index files before its snapshot.
    let seen: HashSet<SnapshotId> = r.snapshots.iter().copied().collect();
    let new_snapshots: Vec<SnapshotId> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|s| !seen.contains(s))
        .collect();
    if !new_snapshots.is_empty() {
        catalog.refresh(repo)?;
    }
    add_used_blobs(repo, catalog, &new_snapshots, &mut r.used)?;
    let seen: HashSet<IndexId> = r.index_ids.iter().copied().collect();
    let new_index: Vec<IndexId> = repo
        .list_index_files()?
        .into_iter()
        .filter(|i| !seen.contains(i))
        .collect();
    r.index.extend(load_index_files(repo, &new_index)?);
    r.index_ids.extend(new_index);
    let present: HashSet<PackId> = repo.list_packs()?.into_iter().map(|(p, _)| p).collect();

    let mut locations: HashMap<BlobId, Vec<PackId>> = HashMap::new();
    for p in &r.index {
        for b in &p.blobs {
            if r.used.contains(&b.id) {
                locations.entry(b.id).or_default().push(p.pack);
            }
        }
    }
    let candidates: HashSet<PackId> = ready.iter().flat_map(|(_, m)| m.packs.clone()).collect();
    let delete = condemn::deletable(&candidates, &locations, &r.used, &present);
    summary.packs_reprieved = candidates
        .iter()
        .filter(|p| present.contains(p) && !delete.contains(p))
        .count() as u64;
    let delete: HashSet<PackId> = delete.into_iter().collect();
    if delete.is_empty()
        && r.index_ids.len() <= consolidated_count(&r.index)
        && r.index.iter().all(|p| present.contains(&p.pack))
    {
        for (id, _) in ready {
            repo.delete_marker(id)?;
            summary.markers_done += 1;
        }
        return Ok(());
    }
    // The index without the deleted packs first, then the old index files, then the packs:
    // no index file ever names a pack that is gone.
    rewrite_index(repo, r, &delete, &present, summary)?;
    let delete: Vec<PackId> = delete.into_iter().collect();
    delete_all(&delete, |p| repo.delete_pack(p))?;
    summary.packs_deleted += delete.len() as u64;
    for (id, _) in ready {
        repo.delete_marker(id)?;
        summary.markers_done += 1;
    }
    Ok(())
}

/// Write the entries of every index file read, less the packs in `drop` and those not in
/// `present` (a listing taken after the index files were listed, so that it holds every pack
/// they name that exists), into as few files as the limits allow, then delete the files read.
/// Every entry of a kept pack stays, live or not: a writer may have reused a blob no snapshot
/// named when prune looked.
fn rewrite_index(
    repo: &Repository,
    r: &Reading,
    drop: &HashSet<PackId>,
    present: &HashSet<PackId>,
    summary: &mut PruneSummary,
) -> Result<(), EngineError> {
    let drop: HashSet<PackId> = r
        .index
        .iter()
        .map(|p| p.pack)
        .filter(|p| drop.contains(p) || !present.contains(p))
        .collect();
    let merged = merge(&r.index, &drop);
    summary.index_files_written += save_index_files(repo, &merged)?;
    delete_all(&r.index_ids, |id| repo.delete_index(id))?;
    summary.index_files_deleted += r.index_ids.len() as u64;
    Ok(())
}

/// One entry list per pack (the union of what index files say of it), without `drop`.
fn merge(index: &[PackIndex], drop: &HashSet<PackId>) -> Vec<PackIndex> {
    let mut per_pack: BTreeMap<PackId, BTreeMap<(u32, BlobId), crate::format::BlobEntry>> =
        BTreeMap::new();
    for p in index {
        if drop.contains(&p.pack) {
            continue;
        }
        let e = per_pack.entry(p.pack).or_default();
        for b in &p.blobs {
            e.insert((b.offset, b.id), *b);
        }
    }
    per_pack
        .into_iter()
        .map(|(pack, blobs)| PackIndex {
            pack,
            blobs: blobs.into_values().collect(),
        })
        .collect()
}

/// How many index files `index` needs when consolidated.
fn consolidated_count(index: &[PackIndex]) -> usize {
    let merged = merge(index, &HashSet::new());
    super::prune::index_chunk_count(&merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobEntry, BlobKind, Compression};

    #[test]
    fn merge_keeps_every_entry_once_and_drops_the_deleted_packs() {
        let e = |id: u8, offset: u32| BlobEntry {
            id: BlobId([id; 32]),
            kind: BlobKind::Data,
            compression: Compression::None,
            offset,
            packed_len: 10,
            data_len: 10,
            raw_len: 10,
        };
        let p = |n: u8, blobs: Vec<BlobEntry>| PackIndex {
            pack: PackId([n; 32]),
            blobs,
        };
        let index = vec![
            p(1, vec![e(1, 0), e(2, 10)]),
            p(2, vec![e(3, 0)]),
            // The same pack in a second index file (a repair, or two prunes' outputs).
            p(1, vec![e(2, 10), e(4, 20)]),
        ];
        let drop: HashSet<PackId> = [PackId([2; 32])].into_iter().collect();
        let merged = merge(&index, &drop);
        assert_eq!(merged, vec![p(1, vec![e(1, 0), e(2, 10), e(4, 20)])]);
        assert_eq!(merge(&index, &HashSet::new()).len(), 2);
    }
}
