//! Repository locks. A lock is a sealed JSON object under `locks/<random id>`; shared locks
//! (backup, restore, check) coexist, an exclusive lock (prune, key removal) excludes all.
//! A holder refreshes its lock every [`LOCK_REFRESH_EVERY`] by writing a new lock object and
//! deleting the old one (nothing is rewritten in place); a lock not refreshed for
//! [`LOCK_STALE_AFTER`] belongs to a dead process and is ignored.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{RepoError, Repository, path};
use crate::crypto;
use crate::storage::{ObjectStore, StorageError};

/// How often a held lock is refreshed.
pub const LOCK_REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// Age after which an unrefreshed lock is stale.
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a waiting process looks again at the locks in its way.
pub const LOCK_POLL_EVERY: Duration = Duration::from_secs(2);
/// Clock skew between hosts that the prune protocol tolerates: a host whose clock is this
/// much behind another's still sees that host's fresh locks as fresh.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(10 * 60);
/// Longest a holder may go without a successful refresh and still trust that nobody took
/// its lock for stale: [`LOCK_STALE_AFTER`] less [`MAX_CLOCK_SKEW`]. A writer whose lock
/// lapsed longer (the process was stopped, the host suspended, storage unreachable) writes
/// no snapshot ([`LockGuard::check_held`]).
pub const LOCK_VALID_FOR: Duration =
    Duration::from_secs(LOCK_STALE_AFTER.as_secs() - MAX_CLOCK_SKEW.as_secs());
/// Purpose of a prune's lock. A prune beside backups holds a shared lock with this purpose;
/// two such locks conflict, so two prunes never run at once.
pub const PRUNE_PURPOSE: &str = "prune";
const LOCK_AAD: &[u8] = b"coffer lock";
/// Largest lock object read; a larger one is unreadable (and not a lock of coffer's).
const MAX_LOCK_BYTES: u64 = 64 * 1024;

/// Shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Many may hold it at once.
    Shared,
    /// Nobody else may hold any lock.
    Exclusive,
}

/// What a lock object says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Shared or exclusive.
    pub kind: LockKind,
    /// Holder's host.
    pub host: String,
    /// Holder's process id.
    pub pid: u32,
    /// Last refresh, unix seconds.
    pub time: i64,
    /// What the holder is doing.
    pub purpose: String,
    /// When the holder process started, in clock ticks after boot (`/proc/<pid>/stat`
    /// field 22): a live process with the same pid but another start is a reused pid, and
    /// the lock is a dead one's. Absent in locks of coffer before 2026-11-24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Random name of the holder's session, the same in every refresh of one lock: what a
    /// prune records in a condemned marker to wait for. Absent in locks of coffer before
    /// 2026-12-05.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Start time of a process on this host, in clock ticks after boot.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl LockInfo {
    /// True when the holder has not refreshed it within [`LOCK_STALE_AFTER`].
    pub fn is_stale(&self, now: i64) -> bool {
        now - self.time > LOCK_STALE_AFTER.as_secs() as i64
    }

    /// True when the holder is a process of this host that no longer exists (killed or
    /// crashed): its lock cannot be refreshed any more and is ignored at once.
    pub fn holder_is_dead(&self) -> bool {
        if self.host != super::keys::hostname() || !std::path::Path::new("/proc/self").exists() {
            return false;
        }
        if self.pid == std::process::id() {
            // Ours, unless an earlier process had our pid (and died holding this lock).
            return self
                .start
                .is_some_and(|then| process_start(self.pid).is_some_and(|now| now != then));
        }
        match process_start(self.pid) {
            None => !std::path::Path::new(&format!("/proc/{}", self.pid)).exists(),
            // The pid lives, but it is another process: the holder died and its pid was
            // given to a new one (hundreds of short commands a minute make that common).
            Some(now) => self.start.is_some_and(|then| then != now),
        }
    }

    fn describe(&self) -> String {
        let when = chrono::DateTime::from_timestamp(self.time, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        format!(
            "{} lock of pid {} on {} ({}), refreshed {when}",
            match self.kind {
                LockKind::Shared => "a shared",
                LockKind::Exclusive => "an exclusive",
            },
            self.pid,
            self.host,
            self.purpose
        )
    }
}

/// The locks present at one moment, as a prune records and checks them.
#[derive(Clone, Debug, Default)]
pub struct LockCensus {
    /// The session of every lock present (live, stale or of a dead process).
    pub present: Vec<String>,
    /// The sessions of the live ones.
    pub live: std::collections::HashSet<String>,
    /// A live lock without a session: a coffer from before the prune protocol, which does
    /// not read condemned markers. Nothing condemned is deleted while one runs.
    pub live_without_session: bool,
}

type HeldLock = (Arc<dyn ObjectStore>, Arc<Mutex<String>>);

/// Locks held by this process, so that a signal handler can remove them before the process
/// exits (a lock left behind would block exclusive operations until it goes stale).
static HELD: Mutex<Vec<HeldLock>> = Mutex::new(Vec::new());

/// Delete every lock this process holds. For signal handlers, right before exiting.
pub fn release_all_locks() {
    let held = std::mem::take(&mut *HELD.lock().unwrap_or_else(|p| p.into_inner()));
    for (store, name) in held {
        if let Ok(name) = name.lock() {
            let _ = store.delete(&name);
        }
    }
}

/// A held lock; released (deleted) on drop.
pub struct LockGuard {
    store: Arc<dyn ObjectStore>,
    current: Arc<Mutex<String>>,
    session: String,
    held: Arc<Mutex<Held>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, n)| !Arc::ptr_eq(n, &self.current));
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Ok(name) = self.current.lock() {
            let _ = self.store.delete(&name);
        }
    }
}

/// When a lock was last written, on both clocks, and the longest it went unrefreshed.
/// The monotonic clock stops while the host is suspended and the wall clock can jump: a
/// gap counts as the larger of the two.
struct Held {
    at: std::time::Instant,
    wall: i64,
    longest: Duration,
}

impl Held {
    fn new() -> Self {
        Held {
            at: std::time::Instant::now(),
            wall: chrono::Utc::now().timestamp(),
            longest: Duration::ZERO,
        }
    }

    fn gap(&self) -> Duration {
        let wall = chrono::Utc::now()
            .timestamp()
            .saturating_sub(self.wall)
            .max(0);
        self.at.elapsed().max(Duration::from_secs(wall as u64))
    }

    fn refreshed(&mut self) {
        self.longest = self.longest.max(self.gap());
        self.at = std::time::Instant::now();
        self.wall = chrono::Utc::now().timestamp();
    }
}

impl LockGuard {
    /// Fail when the lock went unrefreshed for longer than [`LOCK_VALID_FOR`] at any time
    /// since it was taken: another host may have taken it for stale, and a prune may have
    /// deleted packs this holder reused. A writer calls this right before its snapshot.
    pub fn check_held(&self) -> Result<(), RepoError> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let longest = held.longest.max(held.gap());
        if longest > LOCK_VALID_FOR {
            return Err(RepoError::LockLapsed {
                minutes: longest.as_secs() / 60,
            });
        }
        Ok(())
    }

    /// Pretend the lock went unrefreshed for `gap` (tests of a stopped process).
    #[cfg(test)]
    pub(crate) fn lapse(&self, gap: Duration) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.longest = held.longest.max(gap);
    }
}

fn random_session() -> Result<String, RepoError> {
    let mut b = [0u8; 16];
    crypto::random_bytes(&mut b)?;
    Ok(hex::encode(b))
}

fn random_name() -> Result<String, RepoError> {
    let mut b = [0u8; 16];
    crypto::random_bytes(&mut b)?;
    Ok(format!("{}{}", path::LOCKS, hex::encode(b)))
}

impl Repository {
    fn write_lock(&self, info: &LockInfo) -> Result<String, RepoError> {
        let name = random_name()?;
        let json = serde_json::to_vec(info).map_err(|e| RepoError::encode("a lock", e))?;
        let bytes = crypto::seal(&self.keys.encryption, LOCK_AAD, &json)?;
        self.store.write(&name, &bytes)?;
        Ok(name)
    }

    /// Every lock object with what it says; unreadable ones are reported as `None`.
    pub fn list_locks(&self) -> Result<Vec<(String, Option<LockInfo>)>, RepoError> {
        let mut out = Vec::new();
        for l in self.store.list(path::LOCKS)? {
            let info = match self.store.read_at_most(&l.name, MAX_LOCK_BYTES) {
                Ok(b) => crypto::open(&self.keys.encryption, LOCK_AAD, &b)
                    .ok()
                    .and_then(|p| serde_json::from_slice(&p).ok()),
                Err(StorageError::TooLarge { .. }) => None,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            out.push((l.name, info));
        }
        Ok(out)
    }

    fn conflicting_lock(
        &self,
        kind: LockKind,
        purpose: &str,
        own: &str,
    ) -> Result<Option<LockInfo>, RepoError> {
        let now = chrono::Utc::now().timestamp();
        for (name, info) in self.list_locks()? {
            if name == own {
                continue;
            }
            let Some(info) = info else { continue };
            if info.is_stale(now) || info.holder_is_dead() {
                continue;
            }
            if kind == LockKind::Exclusive
                || info.kind == LockKind::Exclusive
                || (purpose == PRUNE_PURPOSE && info.purpose == PRUNE_PURPOSE)
            {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    /// Take a lock, refreshed in the background until the guard is dropped. While another
    /// process holds a conflicting lock, wait for it up to the repository's lock wait
    /// ([`Repository::set_lock_wait`]), then fail with [`RepoError::Locked`].
    pub fn lock(&self, kind: LockKind, purpose: &str) -> Result<LockGuard, RepoError> {
        let wait = self.lock_wait();
        let deadline = std::time::Instant::now().checked_add(wait);
        let mut told = false;
        loop {
            match self.try_lock(kind, purpose) {
                Err(RepoError::Locked(holder))
                    if deadline.is_none_or(|d| std::time::Instant::now() < d) =>
                {
                    if !told {
                        tracing::warn!("waiting up to {}s for {holder} to finish", wait.as_secs());
                        told = true;
                    }
                    let left = deadline.map_or(LOCK_POLL_EVERY, |d| {
                        d.saturating_duration_since(std::time::Instant::now())
                    });
                    std::thread::sleep(LOCK_POLL_EVERY.min(left));
                }
                other => return other,
            }
        }
    }

    fn try_lock(&self, kind: LockKind, purpose: &str) -> Result<LockGuard, RepoError> {
        if let Some(holder) = self.conflicting_lock(kind, purpose, "")? {
            return Err(RepoError::Locked(holder.describe()));
        }
        let session = random_session()?;
        let info = LockInfo {
            kind,
            host: super::keys::hostname(),
            pid: std::process::id(),
            time: chrono::Utc::now().timestamp(),
            purpose: purpose.to_string(),
            start: process_start(std::process::id()),
            session: Some(session.clone()),
        };
        let name = self.write_lock(&info)?;
        let held = Arc::new(Mutex::new(Held::new()));
        // Two processes may have checked at the same time: check again now that ours is
        // visible, and back off if there is a conflict.
        if let Some(holder) = self.conflicting_lock(kind, purpose, &name)? {
            let _ = self.store.delete(&name);
            return Err(RepoError::Locked(holder.describe()));
        }
        let current = Arc::new(Mutex::new(name));
        let (stop, stopped) = mpsc::channel::<()>();
        let refresher = {
            let current = current.clone();
            let held = held.clone();
            let store = self.store.clone();
            // The zeroizing keys themselves, shared: no copy of K_enc outlives them.
            let keys = Arc::clone(&self.keys);
            std::thread::Builder::new()
                .name("coffer-lock".into())
                .spawn(move || {
                    let mut info = info;
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(LOCK_REFRESH_EVERY)
                    {
                        info.time = chrono::Utc::now().timestamp();
                        let Ok(name) = random_name() else { continue };
                        // A lock that cannot be encoded is not refreshed (and goes stale).
                        let Ok(json) = serde_json::to_vec(&info) else {
                            continue;
                        };
                        let Ok(bytes) = crypto::seal(&keys.encryption, LOCK_AAD, &json) else {
                            continue;
                        };
                        if store.write(&name, &bytes).is_ok()
                            && let Ok(mut cur) = current.lock()
                        {
                            held.lock().unwrap_or_else(|p| p.into_inner()).refreshed();
                            let _ = store.delete(&cur);
                            *cur = name;
                        }
                    }
                })
                .ok()
        };
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.store.clone(), current.clone()));
        Ok(LockGuard {
            store: self.store.clone(),
            current,
            session,
            held,
            stop: Some(stop),
            refresher,
        })
    }

    /// The locks present now, as a prune sees them; the caller's own locks (`own`: the
    /// prune's, and a `forget`'s it runs under) are left out.
    pub fn lock_census(&self, own: &[&LockGuard]) -> Result<LockCensus, RepoError> {
        let own_names: Vec<String> = own
            .iter()
            .map(|g| g.current.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        let now = chrono::Utc::now().timestamp();
        let mut census = LockCensus::default();
        for (name, info) in self.list_locks()? {
            if own_names.contains(&name) {
                continue;
            }
            let Some(info) = info else { continue };
            if own
                .iter()
                .any(|g| info.session.as_deref() == Some(g.session.as_str()))
            {
                continue;
            }
            let live = !(info.is_stale(now) || info.holder_is_dead());
            match &info.session {
                Some(s) => {
                    census.present.push(s.clone());
                    if live {
                        census.live.insert(s.clone());
                    }
                }
                None => census.live_without_session |= live,
            }
        }
        census.present.sort();
        census.present.dedup();
        Ok(census)
    }

    /// Remove stale locks, or every lock with `all`. Returns how many were removed.
    pub fn unlock(&self, all: bool) -> Result<usize, RepoError> {
        let now = chrono::Utc::now().timestamp();
        let mut n = 0;
        for (name, info) in self.list_locks()? {
            let remove = all
                || info
                    .as_ref()
                    .is_none_or(|i| i.is_stale(now) || i.holder_is_dead());
            if remove {
                self.store.delete(&name)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::memory_repo;
    use super::*;

    #[test]
    fn shared_locks_coexist_exclusive_excludes_and_stale_is_ignored() {
        let r = memory_repo();
        let a = r.lock(LockKind::Shared, "backup").unwrap();
        let b = r.lock(LockKind::Shared, "backup").unwrap();
        assert!(matches!(
            r.lock(LockKind::Exclusive, "prune"),
            Err(RepoError::Locked(_))
        ));
        drop(a);
        drop(b);
        assert!(r.list_locks().unwrap().is_empty());
        let x = r.lock(LockKind::Exclusive, "prune").unwrap();
        assert!(r.lock(LockKind::Shared, "backup").is_err());
        drop(x);
        // A stale lock from a dead process does not block.
        let old = LockInfo {
            kind: LockKind::Exclusive,
            host: "gone".into(),
            pid: 1,
            time: chrono::Utc::now().timestamp() - 3600,
            purpose: "prune".into(),
            start: None,
            session: None,
        };
        r.write_lock(&old).unwrap();
        let g = r.lock(LockKind::Shared, "backup").unwrap();
        drop(g);
        assert_eq!(r.unlock(false).unwrap(), 1);
        assert!(r.list_locks().unwrap().is_empty());
    }

    #[test]
    fn prunes_exclude_each_other_and_a_lapsed_lock_is_refused_before_a_snapshot() {
        let r = memory_repo();
        let backup = r.lock(LockKind::Shared, "backup").unwrap();
        let prune = r.lock(LockKind::Shared, PRUNE_PURPOSE).unwrap();
        assert!(matches!(
            r.lock(LockKind::Shared, PRUNE_PURPOSE),
            Err(RepoError::Locked(_))
        ));
        // Backups go on beside a prune.
        let other = r.lock(LockKind::Shared, "backup").unwrap();
        // The prune's census: the two backups, each once, live; not the prune itself.
        let census = r.lock_census(&[&prune]).unwrap();
        assert_eq!(census.present.len(), 2);
        assert_eq!(census.live.len(), 2);
        assert!(census.present.contains(&backup.session));
        assert!(!census.present.contains(&prune.session));
        assert!(!census.live_without_session);
        drop(other);
        assert_eq!(
            r.lock_census(&[&prune]).unwrap().present,
            vec![backup.session.clone()]
        );
        backup.check_held().unwrap();
        // Stopped for 21 minutes: others may have taken the lock for stale.
        backup.lapse(Duration::from_secs(21 * 60));
        let err = backup.check_held().unwrap_err();
        assert!(
            matches!(err, RepoError::LockLapsed { minutes: 21 }),
            "{err}"
        );
        assert!(err.to_string().contains("no snapshot was written"), "{err}");
        // A lock of a coffer without sessions counts as a live writer that reads no markers.
        let old = LockInfo {
            kind: LockKind::Shared,
            host: "old".into(),
            pid: 1,
            time: chrono::Utc::now().timestamp(),
            purpose: "backup".into(),
            start: None,
            session: None,
        };
        r.write_lock(&old).unwrap();
        assert!(r.lock_census(&[&prune]).unwrap().live_without_session);
    }

    #[test]
    fn a_reused_pid_does_not_keep_a_dead_holders_lock() {
        let me = std::process::id();
        let start = process_start(me).expect("/proc/self/stat");
        // Another live process of this host: pid 1 (or our parent).
        let other = std::os::unix::process::parent_id();
        let other_start = process_start(other).expect("the parent's stat");
        let lock = |pid, start| LockInfo {
            kind: LockKind::Exclusive,
            host: crate::repo::keys::hostname(),
            pid,
            time: chrono::Utc::now().timestamp(),
            purpose: "prune".into(),
            start,
            session: None,
        };
        // The live holder itself: alive, with or without a start time.
        assert!(!lock(other, Some(other_start)).holder_is_dead());
        assert!(!lock(other, None).holder_is_dead());
        // Same pid, another start: the holder died and the pid was reused.
        assert!(lock(other, Some(other_start + 1)).holder_is_dead());
        // Our own locks are alive; a lock with our pid but another start time is an
        // earlier process's that had our pid.
        assert!(!lock(me, Some(start)).holder_is_dead());
        assert!(!lock(me, None).holder_is_dead());
        assert!(lock(me, Some(start + 1)).holder_is_dead());
        // A pid that does not exist.
        assert!(lock(u32::MAX - 7, Some(1)).holder_is_dead());
        // Another host: never judged from here.
        let mut far = lock(other, Some(other_start + 1));
        far.host = "elsewhere".into();
        assert!(!far.holder_is_dead());
    }
}
