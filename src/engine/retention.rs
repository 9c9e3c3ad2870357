//! Retention: which snapshots a policy keeps, and why. Pure: [`select`] takes the snapshots,
//! the policy and the current time and returns a decision per snapshot; `forget` applies it.
//!
//! Semantics follow restic's: snapshots are grouped (by host and source names by default) and
//! each group is decided on its own, newest first. `keep_last` keeps the newest N;
//! `keep_hourly` .. `keep_yearly` keep the newest snapshot of each of the N newest hours (days,
//! ISO weeks, months, years) that have one; `keep_within` keeps everything younger than the
//! [`Span`] (`6m` is six calendar months, as in restic), measured back from the group's newest
//! snapshot (that limit is reported with each decision); `keep_tags` keeps every snapshot
//! carrying one of the tags. Buckets are in UTC.
//!
//! `retention_days` is the old tool's `BACKUP_RETENTION_DAYS`: snapshots older than N days
//! (from now) go. One difference on purpose: the newest snapshot of a group always stays, so
//! a backup job that silently stopped weeks ago does not lead to an empty repository.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::duration::Span;

/// How to group snapshots before applying the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupBy {
    /// Group by host.
    pub host: bool,
    /// Group by the set of source names.
    pub sources: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// The default: host and sources.
    pub const DEFAULT: GroupBy = GroupBy {
        host: true,
        sources: true,
        tags: false,
    };

    /// Parse `host,sources,tags` (any subset, or empty for one group).
    pub fn parse(s: &str) -> Result<GroupBy, UnknownGroupBy> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "sources" | "paths" => g.sources = true,
                "tags" => g.tags = true,
                other => return Err(UnknownGroupBy(other.to_string())),
            }
        }
        Ok(g)
    }
}

/// A `--group-by` field that is not host, sources or tags.
#[derive(Debug, thiserror::Error)]
#[error("unknown group-by field {0:?}: use host, sources, tags")]
pub struct UnknownGroupBy(pub String);

/// A retention policy. Counts of 0 mean "not used".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Keep the newest N.
    pub keep_last: u32,
    /// Keep the newest of each of the newest N hours.
    pub keep_hourly: u32,
    /// Days.
    pub keep_daily: u32,
    /// ISO weeks.
    pub keep_weekly: u32,
    /// Months.
    pub keep_monthly: u32,
    /// Years.
    pub keep_yearly: u32,
    /// Keep everything younger than this (from the group's newest snapshot).
    pub keep_within: Option<Span>,
    /// Keep snapshots with any of these tags.
    pub keep_tags: Vec<String>,
    /// The old `BACKUP_RETENTION_DAYS`: keep what is younger than N days from now.
    pub retention_days: Option<u32>,
}

impl Policy {
    /// True when no rule is set (forget would then remove everything: refused).
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
            && self.retention_days.is_none()
    }
}

impl Policy {
    /// In words, for reports: `keep last 3, daily 7, within 6 months (6m)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, name) in [
            (self.keep_last, "last"),
            (self.keep_hourly, "hourly"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
            (self.keep_yearly, "yearly"),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        if let Some(span) = &self.keep_within {
            parts.push(format!("within {span} ({})", span.short()));
        }
        for t in &self.keep_tags {
            parts.push(format!("tag {t}"));
        }
        if let Some(days) = self.retention_days {
            parts.push(format!("younger than {days} days (retention days)"));
        }
        format!("keep {}", parts.join(", "))
    }
}

/// What `select` needs of a snapshot.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Identifies the snapshot to the caller (its hex id).
    pub id: String,
    /// Its time.
    pub time: DateTime<Utc>,
    /// Host.
    pub host: String,
    /// Source names.
    pub sources: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// The decision for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot's id as given.
    pub id: String,
    /// Its group's key (`host=.. sources=..`).
    pub group: String,
    /// Kept or forgotten.
    pub keep: bool,
    /// Why it is kept (`last`, `daily 2025-11-16`, ...); empty when forgotten.
    pub reasons: Vec<String>,
    /// With `keep_within`: its group's limit (the group's newest snapshot minus the span);
    /// snapshots at or after it are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_since: Option<DateTime<Utc>>,
}

/// `snapshots --group-by` and `--latest N`: the snapshots (oldest first) in groups by `by`
/// (groups in key order; no field: one group), each cut to its newest `latest`.
pub fn group_snapshots(
    entries: Vec<crate::catalog::SnapshotEntry>,
    by: GroupBy,
    latest: Option<usize>,
) -> Vec<(String, Vec<crate::catalog::SnapshotEntry>)> {
    let mut groups: BTreeMap<String, Vec<crate::catalog::SnapshotEntry>> = BTreeMap::new();
    for e in entries {
        let s = &e.snapshot;
        let candidate = Candidate {
            id: String::new(),
            time: DateTime::from_timestamp_nanos(s.time_ns),
            host: s.host.clone(),
            tags: s.tags.clone(),
            sources: s.sources.iter().map(|x| x.name.clone()).collect(),
        };
        groups.entry(group_key(&candidate, by)).or_default().push(e);
    }
    groups
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|e| e.snapshot.time_ns);
            if let Some(n) = latest {
                let cut = v.len().saturating_sub(n);
                v.drain(..cut);
            }
            (k, v)
        })
        .collect()
}

fn group_key(c: &Candidate, by: GroupBy) -> String {
    let mut parts = Vec::new();
    // A restore's safety copies are never in the group of the backups: one taken after the
    // night's backup must not stand for that day and push the backup out.
    if c.tags.iter().any(|t| t == "pre-restore") {
        parts.push("pre-restore".to_string());
    }
    if by.host {
        parts.push(format!("host={}", c.host));
    }
    if by.sources {
        let mut s = c.sources.clone();
        s.sort();
        parts.push(format!("sources={}", s.join(",")));
    }
    if by.tags {
        let mut t = c.tags.clone();
        t.sort();
        parts.push(format!("tags={}", t.join(",")));
    }
    parts.join(" ")
}

/// The bucket rules, each with a function naming a snapshot's bucket.
type Bucket = fn(&DateTime<Utc>) -> String;
const BUCKETS: [(&str, Bucket); 5] = [
    ("hourly", |t| {
        format!(
            "{:04}-{:02}-{:02}T{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour()
        )
    }),
    ("daily", |t| {
        format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
    }),
    ("weekly", |t| {
        let w = t.iso_week();
        format!("{:04}-W{:02}", w.year(), w.week())
    }),
    ("monthly", |t| format!("{:04}-{:02}", t.year(), t.month())),
    ("yearly", |t| format!("{:04}", t.year())),
];

/// Decide, for every snapshot, whether the policy keeps it. The result has one decision per
/// candidate, in the order given.
pub fn select(
    candidates: &[Candidate],
    policy: &Policy,
    by: GroupBy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        groups.entry(group_key(c, by)).or_default().push(i);
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); candidates.len()];
    let mut group_of: Vec<String> = vec![String::new(); candidates.len()];
    let mut since_of: Vec<Option<DateTime<Utc>>> = vec![None; candidates.len()];
    for (key, mut members) in groups {
        // Newest first; ties broken by id so the result does not depend on input order.
        members.sort_by(|&a, &b| {
            candidates[b]
                .time
                .cmp(&candidates[a].time)
                .then_with(|| candidates[a].id.cmp(&candidates[b].id))
        });
        let since = within_since(candidates, &members, policy);
        for &i in &members {
            group_of[i] = key.clone();
            since_of[i] = since;
        }
        let mut keep = |i: usize, why: String| reasons[i].push(why);
        keep_by_count(candidates, &members, policy, &mut keep);
        keep_by_age(candidates, &members, policy, since, now, &mut keep);
        for &i in &members {
            for t in &candidates[i].tags {
                if policy.keep_tags.contains(t) {
                    keep(i, format!("tag {t}"));
                }
            }
        }
    }
    candidates
        .iter()
        .zip(reasons)
        .zip(group_of)
        .zip(since_of)
        .map(|(((c, reasons), group), within_since)| Decision {
            id: c.id.clone(),
            group,
            keep: !reasons.is_empty(),
            reasons,
            within_since,
        })
        .collect()
}

/// The reasons of `--keep-last` and the calendar buckets, for one group's `members` (newest
/// first).
fn keep_by_count(
    candidates: &[Candidate],
    members: &[usize],
    policy: &Policy,
    keep: &mut impl FnMut(usize, String),
) {
    for &i in members.iter().take(policy.keep_last as usize) {
        keep(i, "last".into());
    }
    let counts = [
        policy.keep_hourly,
        policy.keep_daily,
        policy.keep_weekly,
        policy.keep_monthly,
        policy.keep_yearly,
    ];
    for ((name, bucket), count) in BUCKETS.iter().zip(counts) {
        let mut seen: HashSet<String> = HashSet::new();
        for &i in members {
            if seen.len() >= count as usize {
                break;
            }
            let b = bucket(&candidates[i].time);
            if seen.insert(b.clone()) {
                keep(i, format!("{name} {b}"));
            }
        }
    }
}

/// The limit of `keep_within` for one group's `members` (newest first): the newest snapshot's
/// time minus the span. A span reaching before the representable past keeps everything.
fn within_since(
    candidates: &[Candidate],
    members: &[usize],
    policy: &Policy,
) -> Option<DateTime<Utc>> {
    let span = policy.keep_within?;
    let newest = candidates[*members.first()?].time;
    Some(span.before(newest).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// The reasons of `--keep-within` (from the group's limit `since`) and of the old tool's
/// retention days (relative to `now`), for one group's `members` (newest first).
fn keep_by_age(
    candidates: &[Candidate],
    members: &[usize],
    policy: &Policy,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    keep: &mut impl FnMut(usize, String),
) {
    if let (Some(since), Some(span)) = (since, policy.keep_within) {
        for &i in members {
            if candidates[i].time >= since {
                keep(i, format!("within {}", span.short()));
            }
        }
    }
    if let Some(days) = policy.retention_days {
        let limit = now.timestamp() - i64::from(days) * 86_400;
        for (n, &i) in members.iter().enumerate() {
            if candidates[i].time.timestamp() >= limit {
                keep(i, format!("younger than {days} days"));
            } else if n == 0 {
                keep(i, "newest of its group".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    fn cand(id: &str, t: DateTime<Utc>) -> Candidate {
        Candidate {
            id: id.into(),
            time: t,
            host: "h".into(),
            sources: vec!["ws".into()],
            tags: vec![],
        }
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn a_safety_copy_never_stands_for_the_day_of_a_backup() {
        // The night's backup, then a restore's pre-restore snapshot later that day.
        let mut c = vec![
            cand("night1", at(2025, 11, 1, 2)),
            cand("night2", at(2025, 11, 2, 2)),
        ];
        let mut safety = cand("safety", at(2025, 11, 2, 10));
        safety.tags = vec!["pre-restore".into()];
        c.push(safety);
        let p = Policy {
            keep_daily: 2,
            ..Policy::default()
        };
        let d = select(&c, &p, GroupBy::DEFAULT, at(2025, 11, 2, 11));
        assert_eq!(kept(&d), ["night1", "night2", "safety"]);
    }

    #[test]
    fn table_of_policies() {
        // Two snapshots a day for ten days: 2025-11-01 .. 2025-11-10, at 03:00 and 15:00.
        let mut c = Vec::new();
        for day in 1..=10 {
            c.push(cand(&format!("d{day:02}a"), at(2025, 11, day, 3)));
            c.push(cand(&format!("d{day:02}b"), at(2025, 11, day, 15)));
        }
        let now = at(2025, 11, 10, 16);
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            (
                Policy {
                    keep_last: 3,
                    ..Policy::default()
                },
                vec!["d09b", "d10a", "d10b"],
            ),
            (
                Policy {
                    keep_daily: 3,
                    ..Policy::default()
                },
                vec!["d08b", "d09b", "d10b"],
            ),
            (
                Policy {
                    keep_weekly: 2,
                    ..Policy::default()
                },
                // 2025-11-09 is a Sunday (end of ISO week 45); the 10th starts week 46.
                vec!["d09b", "d10b"],
            ),
            (
                Policy {
                    keep_within: Some(Span {
                        days: 1,
                        ..Span::default()
                    }),
                    ..Policy::default()
                },
                vec!["d09b", "d10a", "d10b"],
            ),
            (
                Policy {
                    retention_days: Some(2),
                    ..Policy::default()
                },
                vec!["d09a", "d09b", "d10a", "d10b"],
            ),
            (
                Policy {
                    keep_monthly: 1,
                    keep_last: 1,
                    ..Policy::default()
                },
                vec!["d10b"],
            ),
        ];
        for (policy, want) in cases {
            let d = select(&c, &policy, GroupBy::DEFAULT, now);
            let mut got = kept(&d);
            got.sort();
            assert_eq!(got, want, "{policy:?}");
        }
    }

    #[test]
    fn retention_days_keeps_the_newest_of_a_stale_group() {
        let c = vec![
            cand("old1", at(2025, 1, 1, 3)),
            cand("old2", at(2025, 1, 2, 3)),
        ];
        let policy = Policy {
            retention_days: Some(7),
            ..Policy::default()
        };
        let d = select(&c, &policy, GroupBy::DEFAULT, at(2025, 11, 1, 0));
        assert_eq!(kept(&d), vec!["old2"]);
        assert_eq!(d[1].reasons, vec!["newest of its group".to_string()]);
    }

    #[test]
    fn groups_are_decided_separately_and_tags_keep() {
        let mut a = cand("a1", at(2025, 11, 1, 3));
        a.host = "other".into();
        let mut tagged = cand("t", at(2025, 10, 1, 3));
        tagged.tags = vec!["release".into()];
        let c = vec![
            a,
            cand("b1", at(2025, 11, 1, 3)),
            cand("b2", at(2025, 11, 2, 3)),
            tagged,
        ];
        let policy = Policy {
            keep_last: 1,
            keep_tags: vec!["release".into()],
            ..Policy::default()
        };
        let d = select(&c, &policy, GroupBy::DEFAULT, at(2025, 11, 3, 0));
        assert_eq!(kept(&d), vec!["a1", "b2", "t"]);
        let d = select(&c, &policy, GroupBy::default(), at(2025, 11, 3, 0));
        assert_eq!(kept(&d), vec!["b2", "t"]);
    }

    #[test]
    fn keep_within_six_months_keeps_six_calendar_months() {
        // Daily snapshots from 2026-01-01 to 2026-12-05: `6m` reaches back to 2026-06-05.
        let start = at(2026, 1, 1, 3);
        let c: Vec<Candidate> = (0..339)
            .map(|i| cand(&format!("s{i:03}"), start + chrono::Duration::days(i)))
            .collect();
        assert_eq!(c.last().map(|c| c.time), Some(at(2026, 12, 5, 3)));
        let policy = Policy {
            keep_within: Some(Span::parse("6m").unwrap()),
            ..Policy::default()
        };
        let d = select(&c, &policy, GroupBy::DEFAULT, at(2026, 12, 5, 4));
        let kept: Vec<_> = c.iter().zip(&d).filter(|(_, d)| d.keep).collect();
        // 2026-06-05 .. 2026-12-05, both ends included.
        assert_eq!(kept.len(), 184);
        assert_eq!(kept[0].0.time, at(2026, 6, 5, 3));
        assert_eq!(d[338].within_since, Some(at(2026, 6, 5, 3)));
        assert_eq!(d[338].reasons, ["within 6m"]);
    }

    #[test]
    fn group_by_parses() {
        assert!(GroupBy::parse("host,nope").is_err());
        assert_eq!(GroupBy::parse("host,sources").unwrap(), GroupBy::DEFAULT);
    }

    proptest! {
        #[test]
        fn policy_invariants(
            hours in proptest::collection::vec(0i64..24 * 400, 1..60),
            last in 0u32..4, daily in 0u32..8, weekly in 0u32..4, monthly in 0u32..4,
        ) {
            let base = at(2024, 1, 1, 0);
            let c: Vec<Candidate> = hours
                .iter()
                .enumerate()
                .map(|(i, h)| cand(&format!("s{i:03}"), base + chrono::Duration::hours(*h)))
                .collect();
            let policy = Policy {
                keep_last: last,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                ..Policy::default()
            };
            let d = select(&c, &policy, GroupBy::DEFAULT, base);
            prop_assert_eq!(d.len(), c.len());
            let newest = (0..c.len()).max_by(|&a, &b| c[a].time.cmp(&c[b].time).then(c[b].id.cmp(&c[a].id))).unwrap();
            // Any rule keeps something, and then always the newest snapshot.
            if !policy.is_empty() {
                prop_assert!(d[newest].keep);
            } else {
                prop_assert!(d.iter().all(|d| !d.keep));
            }
            // keep_last keeps exactly min(N, count) by that rule.
            let by_last = d.iter().filter(|d| d.reasons.iter().any(|r| r == "last")).count();
            prop_assert_eq!(by_last, (last as usize).min(c.len()));
            // keep_daily keeps the newest of each of the newest `daily` days.
            let mut days: Vec<String> = c.iter().map(|c| (BUCKETS[1].1)(&c.time)).collect();
            days.sort();
            days.dedup();
            for day in days.iter().rev().take(daily as usize) {
                let newest_of_day = (0..c.len())
                    .filter(|&i| (BUCKETS[1].1)(&c[i].time) == *day)
                    .max_by(|&a, &b| c[a].time.cmp(&c[b].time).then(c[b].id.cmp(&c[a].id)))
                    .unwrap();
                prop_assert!(d[newest_of_day].keep, "newest of {} not kept", day);
            }
            // Nothing is kept without a reason, and nothing with one is forgotten.
            for x in &d {
                prop_assert_eq!(x.keep, !x.reasons.is_empty());
            }
        }
    }
}
