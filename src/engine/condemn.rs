//! The pure decisions of a prune that runs beside backups (`docs/format.md`, "Prune beside
//! backups"): whether a condemned marker may be carried out now, and which of the packs it
//! condemns may really go. No I/O: the caller lists markers, locks, snapshots and index files
//! and applies what these functions decide.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::format::condemned::Condemned;
use crate::id::{BlobId, PackId};
use crate::repo::LockCensus;

/// Whether a marker may be carried out now, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Readiness {
    /// Its packs may be deleted (those that are still unused).
    Ready,
    /// Its writer has not recorded the lock sessions yet (it was killed): the prune that
    /// finds it records them now, and it waits for those.
    Incomplete,
    /// Sessions that were present when it was written are still live.
    Waiting {
        /// How many.
        sessions: usize,
    },
    /// A live lock of a coffer that does not read markers (older than this protocol).
    OldWriter,
    /// Younger than the grace period (only for a marker written while other processes held
    /// locks).
    Young {
        /// Seconds left.
        secs_left: i64,
    },
}

/// May `m` be carried out at `now` (Unix seconds of this host), with `census` the locks
/// present now and `grace` the least age of a marker written while others held locks?
///
/// Safety does not rest on clocks: a marker waits for every lock session that was present
/// after its packs were condemned, whatever the times say. The grace period is a margin on
/// top, and the marker's `time` is another host's clock, so a marker from the future (skew)
/// simply waits longer.
pub fn readiness(m: &Condemned, census: &LockCensus, now: i64, grace: Duration) -> Readiness {
    let Some(sessions) = &m.sessions else {
        return Readiness::Incomplete;
    };
    if census.live_without_session {
        return Readiness::OldWriter;
    }
    let live = sessions.iter().filter(|s| census.live.contains(*s)).count();
    if live > 0 {
        return Readiness::Waiting { sessions: live };
    }
    if !sessions.is_empty() {
        let age = now.saturating_sub(m.time);
        let grace = grace.as_secs() as i64;
        if age < grace {
            return Readiness::Young {
                secs_left: grace - age,
            };
        }
    }
    Readiness::Ready
}

/// Of the `candidates` (packs of ready markers), those that may be deleted: every blob in
/// `used` keeps at least one location outside the deleted set. `locations` maps each blob to
/// the packs an index file places it in, `present` is what storage lists. A candidate that
/// holds the last copy of a used blob stays (it was condemned, then a snapshot came to need
/// it: a writer that started before the marker reused it).
pub fn deletable(
    candidates: &HashSet<PackId>,
    locations: &HashMap<BlobId, Vec<PackId>>,
    used: &HashSet<BlobId>,
    present: &HashSet<PackId>,
) -> BTreeSet<PackId> {
    let mut delete: BTreeSet<PackId> = candidates
        .iter()
        .filter(|p| present.contains(p))
        .copied()
        .collect();
    for blob in used {
        let Some(at) = locations.get(blob) else {
            continue;
        };
        let mut at: Vec<PackId> = at.iter().filter(|p| present.contains(p)).copied().collect();
        if at.is_empty() || at.iter().any(|p| !delete.contains(p)) {
            continue;
        }
        // Every copy is in a pack about to go: keep one (the smallest id, so the choice
        // does not depend on the order of the index files).
        at.sort();
        delete.remove(&at[0]);
    }
    delete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }
    fn blob(n: u8) -> BlobId {
        BlobId([n; 32])
    }
    fn marker(time: i64, sessions: Option<&[&str]>) -> Condemned {
        Condemned {
            time,
            host: "pruner".into(),
            sessions: sessions.map(|s| s.iter().map(|s| s.to_string()).collect()),
            packs: vec![pack(1)],
        }
    }
    fn census(live: &[&str]) -> LockCensus {
        LockCensus {
            present: live.iter().map(|s| s.to_string()).collect(),
            live: live.iter().map(|s| s.to_string()).collect(),
            live_without_session: false,
        }
    }
    const GRACE: Duration = Duration::from_secs(1800);

    #[test]
    fn a_marker_waits_for_the_sessions_it_recorded_whatever_the_clocks_say() {
        let t = 1_000_000;
        // Nobody else held a lock: ready at once, grace or not.
        assert_eq!(
            readiness(&marker(t, Some(&[])), &census(&[]), t, GRACE),
            Readiness::Ready
        );
        // Not completed by a killed prune: never ready as it is.
        assert_eq!(
            readiness(&marker(t, None), &census(&[]), t + 86_400, GRACE),
            Readiness::Incomplete
        );
        // A writer recorded in it is still live: waits, even days later (a writer paused
        // for hours keeps its lock object; it is live again once it refreshes).
        for now in [t, t + 3600, t + 30 * 86_400] {
            assert_eq!(
                readiness(
                    &marker(t, Some(&["w1", "w2"])),
                    &census(&["w2", "w9"]),
                    now,
                    GRACE
                ),
                Readiness::Waiting { sessions: 1 }
            );
        }
        // The recorded writers are gone; others started since (they read the marker and
        // do not reuse its packs): ready after the grace period.
        let m = marker(t, Some(&["w1", "w2"]));
        assert_eq!(
            readiness(&m, &census(&["w9"]), t + 60, GRACE),
            Readiness::Young { secs_left: 1740 }
        );
        assert_eq!(
            readiness(&m, &census(&["w9"]), t + 1800, GRACE),
            Readiness::Ready
        );
        // Skew: the marker's host ran ahead of ours by an hour. It only waits longer.
        let ahead = marker(t + 3600, Some(&["w1"]));
        assert_eq!(
            readiness(&ahead, &census(&[]), t + 60, GRACE),
            Readiness::Young { secs_left: 5340 }
        );
        assert_eq!(
            readiness(&ahead, &census(&[]), t + 5400, GRACE),
            Readiness::Ready
        );
        // A coffer that does not know markers holds a live lock: nothing is deleted.
        let mut old = census(&[]);
        old.live_without_session = true;
        assert_eq!(
            readiness(&marker(t, Some(&[])), &old, t + 86_400, GRACE),
            Readiness::OldWriter
        );
    }

    #[test]
    fn a_pack_holding_the_last_copy_of_a_used_blob_stays() {
        let present: HashSet<PackId> = (1..=5).map(pack).collect();
        let candidates: HashSet<PackId> = [1, 2, 3, 6].into_iter().map(pack).collect();
        let locations: HashMap<BlobId, Vec<PackId>> = [
            // Only in pack 1: a writer reused it after pack 1 was condemned.
            (blob(1), vec![pack(1)]),
            // In 2 and in 4 (repacked into 4): 2 may go.
            (blob(2), vec![pack(2), pack(4)]),
            // In 3 only, but unused: 3 may go.
            (blob(3), vec![pack(3)]),
            // In 2 and 3 only, both candidates: one of them (2, the smaller id) stays.
            (blob(5), vec![pack(3), pack(2)]),
            // Its pack 6 is not in storage any more: nothing to keep.
            (blob(6), vec![pack(6)]),
        ]
        .into_iter()
        .collect();
        let used: HashSet<BlobId> = [1, 2, 5, 6].into_iter().map(blob).collect();
        let d = deletable(&candidates, &locations, &used, &present);
        assert_eq!(d, [pack(3)].into_iter().collect());
        // Without blob 5 in use, 2 goes too; 6 is never "deleted" (it is not there).
        let used: HashSet<BlobId> = [1, 2, 6].into_iter().map(blob).collect();
        let d = deletable(&candidates, &locations, &used, &present);
        assert_eq!(d, [pack(2), pack(3)].into_iter().collect());
    }
}
