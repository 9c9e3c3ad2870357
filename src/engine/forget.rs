//! Forget: delete the snapshots a retention policy does not keep (their data stays until
//! `prune`). The decision is [`retention::select`]'s; this file loads the snapshots and applies
//! it under an exclusive lock, optionally followed by a prune under the same lock.

use serde::Serialize;

use super::prune::{PruneOptions, PruneSummary, prune_locked};
use super::retention::{self, Candidate, Decision, GroupBy, Policy};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::id::SnapshotId;
use crate::repo::{LockKind, Repository};

/// What to forget.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetOptions {
    /// The policy.
    pub policy: Policy,
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
    /// Snapshot id (hex).
    pub id: String,
    /// Its time (RFC 3339).
    pub time: String,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// What forget did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetSummary {
    /// Every snapshot considered, oldest first, with its decision.
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

/// Apply a retention policy.
pub fn forget(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ForgetOptions,
    progress: &Progress,
) -> Result<ForgetSummary, EngineError> {
    if opts.policy.is_empty() {
        return Err(EngineError::Usage(
            "no retention policy given (e.g. --keep-daily 7, --keep-last 3, --retention-days 7): \
             refusing to forget every snapshot"
                .into(),
        ));
    }
    let _lock = (!opts.dry_run)
        .then(|| repo.lock(LockKind::Exclusive, "forget"))
        .transpose()?;
    catalog.refresh(repo)?;
    let entries: Vec<_> = catalog
        .snapshots()?
        .into_iter()
        .filter(|e| opts.host.as_ref().is_none_or(|h| *h == e.snapshot.host))
        .filter(|e| opts.tags.iter().all(|t| e.snapshot.tags.contains(t)))
        .collect();
    let candidates: Vec<Candidate> = entries
        .iter()
        .map(|e| Candidate {
            id: e.id.to_hex(),
            time: chrono::DateTime::from_timestamp_nanos(e.snapshot.time_ns),
            host: e.snapshot.host.clone(),
            sources: e.snapshot.sources.iter().map(|s| s.name.clone()).collect(),
            tags: e.snapshot.tags.clone(),
        })
        .collect();
    let decisions = retention::select(&candidates, &opts.policy, opts.group_by, chrono::Utc::now());
    let mut summary = ForgetSummary {
        dry_run: opts.dry_run,
        ..ForgetSummary::default()
    };
    for (c, d) in candidates.iter().zip(decisions) {
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
        summary.snapshots.push(ForgetEntry {
            id: c.id.clone(),
            time: c.time.to_rfc3339(),
            decision: d,
        });
    }
    // A dry run's prune would count the snapshots it did not delete: no figures then.
    if let Some(p) = &opts.prune
        && !opts.dry_run
    {
        summary.prune = Some(prune_locked(repo, catalog, p, progress)?);
    }
    Ok(summary)
}
