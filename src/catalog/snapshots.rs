//! The catalog's snapshot list, and its memory of snapshots that left the repository.
//!
//! Every snapshot the catalog has seen stays remembered: in `snapshots` while the repository
//! lists it, then in `gone_snapshots` (schema v3), either as forgotten by this host (`forget`
//! records it before it deletes the object) or as vanished: gone without a `forget` through
//! this catalog, which is what deleting snapshots behind coffer's back, or putting an older
//! state of the bucket back, looks like. Vanished snapshots are reported by `snapshots` and
//! `check` until they are acknowledged. The memory is this catalog's own: a `forget` on
//! another host, or with another cache directory, shows here as vanished.

use std::collections::HashSet;

use rusqlite::params;
use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;

/// How a snapshot left the repository (`gone_snapshots.how`).
mod how {
    /// Forgotten by this host through coffer.
    pub const FORGOTTEN: i64 = 0;
    /// Gone without a forget here; reported.
    pub const VANISHED: i64 = 1;
    /// Vanished, and acknowledged by the user; no longer reported.
    pub const ACKNOWLEDGED: i64 = 2;
}

/// A snapshot as cached.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    /// Its id.
    pub id: SnapshotId,
    /// Its manifest.
    pub snapshot: Snapshot,
}

/// Which snapshots `latest` may name, as restic's `--host`, `--tag` and `--path` narrow it.
/// Empty lists do not narrow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotFilter {
    /// Only snapshots of one of these hosts.
    pub hosts: Vec<String>,
    /// Only snapshots that carry every one of these tags.
    pub tags: Vec<String>,
    /// Only snapshots that have every one of these sources (by name, or by the path it was
    /// read from).
    pub sources: Vec<String>,
}

impl SnapshotFilter {
    /// Whether it narrows at all.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.sources.is_empty()
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let trim = |p: &str| -> String {
            let t = p.trim_end_matches('/');
            if t.is_empty() {
                p.to_string()
            } else {
                t.to_string()
            }
        };
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.sources.iter().all(|want| {
                let want = trim(want);
                s.sources
                    .iter()
                    .any(|src| src.name == want || trim(&src.path) == want)
            })
    }

    /// The filter in words, for an error that nothing passed.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("host {}", self.hosts.join(" or ")));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(",")));
        }
        if !self.sources.is_empty() {
            parts.push(format!("sources {}", self.sources.join(", ")));
        }
        parts.join(", ")
    }
}

/// A snapshot this catalog saw that left the repository without a `forget` through it.
#[derive(Clone, Debug, Serialize)]
pub struct VanishedSnapshot {
    /// Its id (hex).
    pub id: String,
    /// Its time (RFC 3339).
    pub time: String,
    /// Its host.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its sources' names.
    pub sources: Vec<String>,
    /// When this catalog first missed it (RFC 3339).
    pub noticed: String,
}

impl VanishedSnapshot {
    fn new(id: SnapshotId, s: &Snapshot, noticed_ms: i64) -> Self {
        Self {
            id: id.to_hex(),
            time: chrono::DateTime::from_timestamp_nanos(s.time_ns).to_rfc3339(),
            host: s.host.clone(),
            tags: s.tags.clone(),
            sources: s.sources.iter().map(|x| x.name.clone()).collect(),
            noticed: chrono::DateTime::from_timestamp_millis(noticed_ms)
                .unwrap_or_default()
                .to_rfc3339(),
        }
    }

    /// The first 8 characters of the id.
    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }
}

/// What [`Catalog::update_snapshots`] changed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotUpdate {
    /// Snapshots read and added.
    pub read: usize,
    /// Snapshots no longer listed, forgotten here or not.
    pub removed: usize,
    /// Of those, the ones that vanished (not forgotten here).
    pub vanished: usize,
}

fn id_of(raw: Vec<u8>) -> Option<SnapshotId> {
    <[u8; 32]>::try_from(raw).ok().map(SnapshotId)
}

impl Catalog {
    /// Record a snapshot. One that had vanished is back, and no longer reported.
    pub fn add_snapshot(&self, id: &SnapshotId, s: &Snapshot) -> Result<(), CatalogError> {
        let encoded = s
            .encode()
            .map_err(|e| CatalogError::Encode(e.to_string()))?;
        self.sql(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?1, ?2, ?3, ?4)",
                params![&id.0[..], s.time_ns, s.host, encoded],
            )?;
            // A forgotten record stays: the forget that made it may still be deleting the
            // object, and its disappearance must not then count as vanished.
            tx.execute(
                "DELETE FROM gone_snapshots WHERE id = ?1 AND how != ?2",
                params![&id.0[..], how::FORGOTTEN],
            )?;
            tx.commit()
        })
    }

    /// Forget a snapshot that this host is about to delete from the repository: it leaves
    /// the list and is remembered as forgotten, so that its disappearance is not reported as
    /// vanished. Call it before deleting the object (if the delete fails, the next refresh
    /// finds the snapshot again and lists it).
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<(), CatalogError> {
        self.sql(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO gone_snapshots
                 SELECT id, time_ns, host, data, ?2, ?3 FROM snapshots WHERE id = ?1",
                params![
                    &id.0[..],
                    how::FORGOTTEN,
                    chrono::Utc::now().timestamp_millis()
                ],
            )?;
            tx.execute("DELETE FROM snapshots WHERE id = ?1", params![&id.0[..]])?;
            tx.commit()
        })
    }

    pub(super) fn snapshot_ids(&self) -> Result<Vec<SnapshotId>, CatalogError> {
        self.sql(|c| {
            let mut st = c.prepare("SELECT id FROM snapshots")?;
            let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.extend(id_of(r?));
            }
            Ok(out)
        })
    }

    /// Bring the snapshot list in line with the repository's listing `listed`: snapshots no
    /// longer listed leave it (remembered as vanished unless forgotten here), and listed ones
    /// not yet known are added as `load` returns them (`None`: left out this time).
    pub fn update_snapshots(
        &self,
        listed: &[SnapshotId],
        mut load: impl FnMut(&SnapshotId) -> Option<Snapshot>,
    ) -> Result<SnapshotUpdate, CatalogError> {
        let mut u = SnapshotUpdate::default();
        let listed: HashSet<&SnapshotId> = listed.iter().collect();
        let known = self.snapshot_ids()?;
        let now = chrono::Utc::now().timestamp_millis();
        for id in known.iter().filter(|id| !listed.contains(id)) {
            let vanished = self.sql(|c| {
                let tx = c.transaction()?;
                // Kept as it was when already remembered (forgotten, or noticed before).
                let n = tx.execute(
                    "INSERT OR IGNORE INTO gone_snapshots
                     SELECT id, time_ns, host, data, ?2, ?3 FROM snapshots WHERE id = ?1",
                    params![&id.0[..], how::VANISHED, now],
                )?;
                tx.execute("DELETE FROM snapshots WHERE id = ?1", params![&id.0[..]])?;
                tx.commit()?;
                Ok(n > 0)
            })?;
            u.removed += 1;
            if vanished {
                u.vanished += 1;
                tracing::debug!("snapshot {id} vanished from the repository");
            }
        }
        let known: HashSet<SnapshotId> = known.into_iter().collect();
        for id in listed.into_iter().filter(|id| !known.contains(id)) {
            if let Some(s) = load(id) {
                self.add_snapshot(id, &s)?;
                u.read += 1;
            }
        }
        Ok(u)
    }

    fn gone_with(&self, how: i64) -> Result<Vec<VanishedSnapshot>, CatalogError> {
        let rows: Vec<(Vec<u8>, Vec<u8>, i64)> = self.sql(|c| {
            let mut st = c.prepare(
                "SELECT id, data, noticed FROM gone_snapshots WHERE how = ?1 ORDER BY time_ns, id",
            )?;
            let rows = st.query_map(params![how], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, data, noticed)| {
                let s = Snapshot::decode(&data).ok()?;
                Some(VanishedSnapshot::new(id_of(id)?, &s, noticed))
            })
            .collect())
    }

    /// Snapshots that vanished and are not acknowledged, oldest first.
    pub fn vanished_snapshots(&self) -> Result<Vec<VanishedSnapshot>, CatalogError> {
        self.gone_with(how::VANISHED)
    }

    /// Stop reporting the vanished snapshots; returns them.
    pub fn acknowledge_vanished(&self) -> Result<Vec<VanishedSnapshot>, CatalogError> {
        let out = self.vanished_snapshots()?;
        self.sql(|c| {
            c.execute(
                "UPDATE gone_snapshots SET how = ?1 WHERE how = ?2",
                params![how::ACKNOWLEDGED, how::VANISHED],
            )
        })?;
        Ok(out)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>, CatalogError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self.sql(|c| {
            let mut st = c.prepare("SELECT id, data FROM snapshots ORDER BY time_ns, id")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        let mut out = Vec::new();
        for (id, data) in rows {
            let (Some(id), Ok(snapshot)) = (id_of(id), Snapshot::decode(&data)) else {
                continue;
            };
            out.push(SnapshotEntry { id, snapshot });
        }
        Ok(out)
    }

    /// The snapshots `specs` name (ids, unique prefixes, `latest` narrowed by `filter`), each
    /// once, in the order given; every snapshot that passes `filter` when `specs` is empty.
    pub fn select_snapshots(
        &self,
        specs: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<SnapshotEntry>, CatalogError> {
        if specs.is_empty() {
            return Ok(self
                .snapshots()?
                .into_iter()
                .filter(|e| filter.matches(&e.snapshot))
                .collect());
        }
        let mut out: Vec<SnapshotEntry> = Vec::new();
        for s in specs {
            let e = self.resolve_snapshot_in(s, filter)?;
            if !out.iter().any(|x| x.id == e.id) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Resolve a user's snapshot reference: `latest`, a full id or a unique prefix.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<SnapshotEntry, CatalogError> {
        self.resolve_snapshot_in(spec, &SnapshotFilter::default())
    }

    /// [`Self::resolve_snapshot`], with `latest` meaning the newest snapshot that passes
    /// `filter` (an id names its snapshot whatever the filter says, as in restic).
    pub fn resolve_snapshot_in(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<SnapshotEntry, CatalogError> {
        let all = self.snapshots()?;
        if spec == "latest" {
            let any = !all.is_empty();
            let passing: Vec<SnapshotEntry> = all
                .into_iter()
                .filter(|s| filter.matches(&s.snapshot))
                .collect();
            // The safety copies a restore takes (tag `pre-restore`) are not what "the latest
            // backup" means: right after a restore, `latest` is still the backup restored.
            // They are picked by id, or when nothing else exists.
            let newest_backup = passing
                .iter()
                .rev()
                .find(|s| !s.snapshot.tags.iter().any(|t| t == "pre-restore"))
                .cloned();
            return newest_backup
                .or_else(|| passing.into_iter().next_back())
                .ok_or_else(|| {
                    CatalogError::Snapshot(if !any {
                        "the repository has no snapshots".into()
                    } else {
                        format!(
                            "no snapshot of {} (list them with `coffer snapshots`)",
                            filter.describe()
                        )
                    })
                });
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut matches: Vec<SnapshotEntry> = all
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(&spec_l))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(CatalogError::Snapshot(format!(
                "no snapshot {spec:?} (list them with `coffer snapshots`)"
            ))),
            n => {
                // Name the candidates, newest last, as `snapshots` lists them.
                let named: Vec<String> = matches
                    .iter()
                    .take(10)
                    .map(|s| {
                        let time = chrono::DateTime::from_timestamp_nanos(s.snapshot.time_ns);
                        format!(
                            "{} ({} UTC, {})",
                            &s.id.to_hex()[..16],
                            time.format("%Y-%m-%d %H:%M:%S"),
                            s.snapshot.host
                        )
                    })
                    .collect();
                let more = if n > named.len() { ", ..." } else { "" };
                Err(CatalogError::Snapshot(format!(
                    "snapshot id {spec:?} is ambiguous ({n} match: {}{more}): give more characters",
                    named.join(", ")
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: i64) -> Snapshot {
        Snapshot {
            time_ns: t,
            host: "h".into(),
            username: "u".into(),
            tags: vec!["nightly".into()],
            parent: None,
            tree: crate::id::BlobId([1; 32]),
            sources: vec![],
            summary: Default::default(),
            program_version: "t".into(),
        }
    }

    #[test]
    fn only_snapshots_gone_without_a_forget_here_are_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let (a, b, d) = (
            SnapshotId([1; 32]),
            SnapshotId([2; 32]),
            SnapshotId([3; 32]),
        );
        let all = [a, b, d];
        let u = c
            .update_snapshots(&all, |id| Some(snap(i64::from(id.0[0]))))
            .unwrap();
        assert_eq!((u.read, u.removed, u.vanished), (3, 0, 0));

        // `b` is forgotten here (recorded before the object goes); `d` goes behind our back.
        c.remove_snapshot(&b).unwrap();
        let u = c.update_snapshots(&[a], |_| None).unwrap();
        assert_eq!((u.removed, u.vanished), (1, 1));
        let v = c.vanished_snapshots().unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].id, d.to_hex());
        assert_eq!(v[0].tags, vec!["nightly".to_string()]);
        // Reported again on every look, until acknowledged.
        c.update_snapshots(&[a], |_| None).unwrap();
        assert_eq!(c.vanished_snapshots().unwrap().len(), 1);
        assert_eq!(c.acknowledge_vanished().unwrap().len(), 1);
        assert!(c.vanished_snapshots().unwrap().is_empty());

        // A vanished snapshot that comes back is listed again and no longer vanished; if it
        // goes once more, it is reported once more.
        c.update_snapshots(&[a, d], |_| Some(snap(3))).unwrap();
        assert_eq!(c.snapshots().unwrap().len(), 2);
        c.update_snapshots(&[a], |_| None).unwrap();
        assert_eq!(c.vanished_snapshots().unwrap().len(), 1);

        // A forget whose snapshot another process lists again before the object is deleted
        // (or whose delete failed) is still a forget when the object is gone.
        c.remove_snapshot(&a).unwrap();
        c.update_snapshots(&[a], |_| Some(snap(1))).unwrap();
        assert_eq!(c.snapshots().unwrap().len(), 1);
        let u = c.update_snapshots(&[], |_| None).unwrap();
        assert_eq!((u.removed, u.vanished), (1, 0));
        assert_eq!(c.vanished_snapshots().unwrap().len(), 1, "only `d`");
    }

    #[test]
    fn latest_is_the_newest_snapshot_that_passes_the_filter() {
        use crate::format::snapshot::SourceInfo;
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let make = |t: i64, host: &str, tags: &[&str], source: &str| {
            let mut s = snap(t);
            s.host = host.into();
            s.tags = tags.iter().map(|t| t.to_string()).collect();
            s.sources = vec![SourceInfo {
                name: source.into(),
                path: format!("/srv/{source}"),
            }];
            s
        };
        let snaps = [
            make(1, "web", &["nightly"], "db"),
            make(2, "web", &["nightly", "weekly"], "src"),
            make(3, "ci", &["nightly"], "src"),
            make(4, "ci", &["pre-restore"], "src"),
        ];
        let ids: Vec<SnapshotId> = (1..=4u8).map(|i| SnapshotId([i; 32])).collect();
        c.update_snapshots(&ids, |id| Some(snaps[usize::from(id.0[0]) - 1].clone()))
            .unwrap();
        let latest = |f: SnapshotFilter| c.resolve_snapshot_in("latest", &f).map(|e| e.id.0[0]);
        let host = |h: &str| SnapshotFilter {
            hosts: vec![h.into()],
            ..Default::default()
        };
        assert_eq!(
            latest(SnapshotFilter::default()).unwrap(),
            3,
            "not the pre-restore copy"
        );
        assert_eq!(latest(host("web")).unwrap(), 2);
        let db = SnapshotFilter {
            sources: vec!["db".into()],
            ..Default::default()
        };
        assert_eq!(latest(db).unwrap(), 1);
        let by_path = SnapshotFilter {
            hosts: vec!["web".into()],
            sources: vec!["/srv/src/".into()],
            ..Default::default()
        };
        assert_eq!(
            latest(by_path).unwrap(),
            2,
            "a source by the path it was read from"
        );
        let weekly_ci = SnapshotFilter {
            hosts: vec!["ci".into()],
            tags: vec!["weekly".into()],
            ..Default::default()
        };
        let err = latest(weekly_ci).unwrap_err().to_string();
        assert!(err.contains("host ci, tags weekly"), "{err}");
        // An id names its snapshot whatever the filter says.
        let id = c.resolve_snapshot_in("0101", &host("ci")).unwrap();
        assert_eq!(id.id.0[0], 1);
    }
}
