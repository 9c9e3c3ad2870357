//! Forget: delete the snapshots a retention policy does not keep, or the snapshots named by id
//! (their data stays until `prune`). The decision is [`retention::select`]'s (or the ids'); this
//! file loads the snapshots and applies it under an exclusive lock, optionally followed by a
//! prune under the same lock. Every id is resolved before anything is deleted: an unknown or
//! ambiguous one forgets nothing.

use serde::Serialize;

use super::prune::{PruneOptions, PruneSummary, prune_locked};
use super::prune_shared::prune_shared;
use super::retention::{self, Candidate, Decision, GroupBy, Policy};
use super::{EngineError, Progress};
use crate::catalog::{Catalog, SnapshotEntry};
use crate::id::SnapshotId;
use crate::repo::{LockKind, Repository};

/// What to forget.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetOptions {
    /// The policy (empty when `ids` are given).
    pub policy: Policy,
    /// Forget exactly these snapshots (full ids or unique prefixes) instead of applying a
    /// policy.
    pub ids: Vec<String>,
    /// Grouping.
    pub group_by: GroupBy,
    /// Only consider snapshots of this host.
    pub host: Option<String>,
    /// Only consider snapshots with all of these tags.
    pub tags: Vec<String>,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
    /// Prune afterwards (under the same lock).
    pub prune: Option<PruneOptions>,
}

/// One snapshot's fate, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetEntry {
    /// Its time (RFC 3339).
    pub time: String,
    /// The decision, with the snapshot's id (hex).
    #[serde(flatten)]
    pub decision: Decision,
}

/// What forget did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetSummary {
    /// The policy applied, as parsed (`keep_within` in its parts); empty with ids.
    pub policy: Policy,
    /// Every snapshot considered, oldest first, with its decision (with ids: only those).
    pub snapshots: Vec<ForgetEntry>,
    /// Snapshots kept.
    pub kept: u64,
    /// Snapshots removed (or, with `dry_run`, that would be).
    pub removed: u64,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The prune that followed, if asked for.
    pub prune: Option<PruneSummary>,
}

/// Apply a retention policy, or forget the snapshots `opts.ids` names.
pub fn forget(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ForgetOptions,
    progress: &Progress,
) -> Result<ForgetSummary, EngineError> {
    if !opts.ids.is_empty() && !opts.policy.is_empty() {
        return Err(EngineError::Usage(
            "give snapshot ids or a retention policy, not both (is BACKUP_RETENTION_DAYS set?)"
                .into(),
        ));
    }
    if opts.ids.is_empty() && opts.policy.is_empty() {
        return Err(EngineError::Usage(
            "no retention policy given (e.g. --keep-daily 7, --keep-last 3, --retention-days 7) \
             and no snapshot id: refusing to forget every snapshot"
                .into(),
        ));
    }
    // Deleting snapshot objects is safe beside backups (a backup's parent may go: the prune
    // protocol keeps what a running backup reuses). Only an exclusive prune needs more.
    let exclusive = opts.prune.as_ref().is_some_and(|p| p.exclusive);
    let kind = if exclusive {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    };
    let lock = (!opts.dry_run)
        .then(|| repo.lock(kind, "forget"))
        .transpose()?;
    catalog.refresh(repo)?;
    let entries: Vec<_> = catalog
        .snapshots()?
        .into_iter()
        .filter(|e| opts.host.as_ref().is_none_or(|h| *h == e.snapshot.host))
        .filter(|e| opts.tags.iter().all(|t| e.snapshot.tags.contains(t)))
        .collect();
    let candidates: Vec<Candidate> = entries.iter().map(candidate).collect();
    let decisions = if opts.ids.is_empty() {
        retention::select(&candidates, &opts.policy, opts.group_by, chrono::Utc::now())
    } else {
        chosen(&candidates, &opts.ids)?
    };
    let mut summary = ForgetSummary {
        policy: opts.policy.clone(),
        dry_run: opts.dry_run,
        ..ForgetSummary::default()
    };
    if !opts.ids.is_empty() {
        summary.kept = (candidates.len() - decisions.len()) as u64;
    }
    for d in decisions {
        if d.keep {
            summary.kept += 1;
        } else {
            summary.removed += 1;
            if !opts.dry_run {
                let id = SnapshotId::from_hex(&d.id)
                    .map_err(|e| EngineError::Internal(format!("snapshot id {}: {e}", d.id)))?;
                // Recorded as forgotten first, so that the catalog never takes this
                // snapshot's disappearance for a vanished one.
                catalog.remove_snapshot(&id)?;
                repo.delete_snapshot(&id)?;
            }
        }
        let time = candidates
            .iter()
            .find(|c| c.id == d.id)
            .map(|c| c.time.to_rfc3339())
            .unwrap_or_default();
        summary.snapshots.push(ForgetEntry { time, decision: d });
    }
    // A dry run's prune would count the snapshots it did not delete: no figures then.
    if let Some(p) = &opts.prune
        && !opts.dry_run
    {
        summary.prune = Some(if p.exclusive {
            prune_locked(repo, catalog, p, progress)?
        } else {
            prune_shared(repo, catalog, p, progress, lock.as_ref())?
        });
    }
    Ok(summary)
}

fn candidate(e: &SnapshotEntry) -> Candidate {
    Candidate {
        id: e.id.to_hex(),
        time: chrono::DateTime::from_timestamp_nanos(e.snapshot.time_ns),
        host: e.snapshot.host.clone(),
        sources: e.snapshot.sources.iter().map(|s| s.name.clone()).collect(),
        tags: e.snapshot.tags.clone(),
    }
}

/// The decisions of `forget ID...`: one per snapshot named (oldest first, each once), all
/// forgotten. An id that names no snapshot, or more than one, is an error naming them.
fn chosen(candidates: &[Candidate], ids: &[String]) -> Result<Vec<Decision>, EngineError> {
    let mut picked = vec![false; candidates.len()];
    for spec in ids {
        let prefix = spec.trim().to_ascii_lowercase();
        let matches: Vec<usize> = (0..candidates.len())
            .filter(|&i| !prefix.is_empty() && candidates[i].id.starts_with(&prefix))
            .collect();
        match matches[..] {
            [i] => picked[i] = true,
            [] => {
                return Err(EngineError::Usage(format!(
                    "no snapshot {spec:?} (list them with `coffer snapshots`): nothing forgotten"
                )));
            }
            _ => {
                let list: Vec<String> = matches
                    .iter()
                    .map(|&i| {
                        let c = &candidates[i];
                        format!(
                            "{} ({}, {} {})",
                            c.id,
                            c.time.format("%Y-%m-%d %H:%M:%S UTC"),
                            c.host,
                            c.sources.join(",")
                        )
                    })
                    .collect();
                return Err(EngineError::Usage(format!(
                    "snapshot id {spec:?} is ambiguous, it matches {}: {}; nothing forgotten",
                    matches.len(),
                    list.join("; ")
                )));
            }
        }
    }
    Ok(candidates
        .iter()
        .zip(picked)
        .filter(|(_, p)| *p)
        .map(|(c, _)| Decision {
            id: c.id.clone(),
            group: "given by id".into(),
            keep: false,
            reasons: Vec::new(),
            within_since: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str) -> Candidate {
        Candidate {
            id: id.into(),
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            host: "h".into(),
            sources: vec!["ws".into()],
            tags: vec![],
        }
    }

    #[test]
    fn ids_pick_exactly_their_snapshots_or_nothing() {
        let c = [cand("ab12"), cand("ab34"), cand("cd56")];
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let d = chosen(&c, &ids(&["cd", "AB3", "cd56"])).unwrap();
        let got: Vec<_> = d.iter().map(|d| (d.id.as_str(), d.keep)).collect();
        assert_eq!(got, [("ab34", false), ("cd56", false)]);
        let e = chosen(&c, &ids(&["cd", "ab"])).unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("ab12") && e.contains("ab34"),
            "{e}"
        );
        let e = chosen(&c, &ids(&["cd", "ef"])).unwrap_err().to_string();
        assert!(e.contains("no snapshot \"ef\""), "{e}");
        assert!(chosen(&c, &ids(&[""])).is_err());
    }
}
