//! The job's state on disk: one JSON file per repository in the cache directory, written
//! *before* any work begins and after every step, so that a run that dies without a word
//! (SIGKILL, OOM, power loss) is still seen by the next run, by `coffer health` and by the
//! metrics. Next to it a lock file held (flock) for the duration of a run: one job at a time
//! on this host, and "state says running but nobody holds the lock" means the run died.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::engine::session::PrivateFileError;
// The one owner-only writer, shared with the engine's key hint (the trigger socket's directory
// and the schedule record use them through here).
pub use crate::engine::session::{private_dir_all, write_private};

/// A problem with the state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("job state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what this version writes.
    #[error("job state {path} is unreadable ({message}); delete it to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        message: String,
    },
}

impl From<PrivateFileError> for StateError {
    fn from(e: PrivateFileError) -> Self {
        StateError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Started and not finished (or died: see [`Verdict`]).
    Running,
    /// Every step succeeded.
    Success,
    /// A step failed, or the run was interrupted.
    Failed,
}

/// How one step went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// `backup`, `forget`, `check`, `sync`.
    pub name: String,
    /// `ok`, `failed`, `skipped`, `not configured`.
    pub status: String,
    /// Seconds.
    pub duration_secs: f64,
    /// One line: what it did, or the error.
    pub detail: String,
}

/// One run of the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// Where it stands.
    pub status: JobStatus,
    /// The process that ran it.
    pub pid: u32,
    /// The host it ran on.
    pub host: String,
    /// The repository (as configured).
    pub repository: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, when finished.
    pub finished_at: Option<String>,
    /// Seconds, when finished.
    pub duration_secs: Option<f64>,
    /// The step running now (or when the process died).
    pub step: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Snapshots written.
    pub snapshots: Vec<String>,
    /// Plaintext bytes of new data.
    pub bytes_added: u64,
    /// Steps so far.
    pub steps: Vec<StepRecord>,
    /// The failure (or success) notification was sent (or tried).
    pub notified: bool,
    /// Stored bytes of the repository after the run.
    #[serde(default)]
    pub repository_bytes: Option<u64>,
    /// Snapshots in the repository after the run.
    #[serde(default)]
    pub snapshot_count: Option<u64>,
}

/// The file: the latest run, and the latest successful one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobState {
    /// The latest run.
    pub last: JobRecord,
    /// The latest run that succeeded.
    pub last_success: Option<JobRecord>,
}

/// What the recorded state says about the latest run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No run recorded.
    None,
    /// Running now, in a live process.
    Running,
    /// Succeeded.
    Success,
    /// Failed; the message says how.
    Failed(String),
    /// Recorded as running, but its process is gone: killed, out of memory, power loss.
    Died(String),
}

/// The state file of a repository in `cache_dir`.
pub fn state_path(cache_dir: &Path, repository: &str) -> PathBuf {
    cache_dir
        .join("jobs")
        .join(format!("{}.json", key(repository)))
}

fn lock_path(state: &Path) -> PathBuf {
    state.with_extension("lock")
}

/// A stable name for a repository location: local paths are made absolute and normalized so
/// that `/srv/repo/` and `/srv/repo` are the same.
fn key(repository: &str) -> String {
    let r = repository.strip_prefix("file://").unwrap_or(repository);
    let norm = if r.contains("://") {
        r.trim_end_matches('/').to_string()
    } else {
        let p = std::path::absolute(r).unwrap_or_else(|_| PathBuf::from(r));
        p.components()
            .collect::<PathBuf>()
            .to_string_lossy()
            .into_owned()
    };
    let h = blake3::hash(norm.as_bytes());
    hex::encode(&h.as_bytes()[..8])
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read the state; `None` when no run was recorded.
pub fn load(path: &Path) -> Result<Option<JobState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Write the state durably and owner-only: a temporary file, fsync, rename.
pub fn save(path: &Path, state: &JobState) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_private(path, &bytes)?;
    Ok(())
}

/// The run lock, held while a job runs; released when dropped or when the process dies.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

/// Take the run lock of `state`'s repository; `Ok(None)` when another process holds it.
pub fn try_lock(state: &Path) -> Result<Option<JobLock>, StateError> {
    let path = lock_path(state);
    if let Some(dir) = path.parent() {
        private_dir_all(dir).map_err(io(dir))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(JobLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// Judge the latest recorded run. A `running` record whose lock nobody holds died.
pub fn verdict(path: &Path) -> Result<Verdict, StateError> {
    let Some(state) = load(path)? else {
        return Ok(Verdict::None);
    };
    let r = &state.last;
    Ok(match r.status {
        JobStatus::Success => Verdict::Success,
        JobStatus::Failed => Verdict::Failed(format!(
            "the job run started at {} failed: {}",
            r.started_at,
            r.error.as_deref().unwrap_or("no error recorded")
        )),
        JobStatus::Running => match try_lock(path)? {
            Some(_held_briefly) => Verdict::Died(died_message(r)),
            None => Verdict::Running,
        },
    })
}

/// The line that reports a run which died.
pub fn died_message(r: &JobRecord) -> String {
    format!(
        "the job run started at {} (pid {} on {}) died without finishing{} (killed, out of \
         memory or power loss?)",
        r.started_at,
        r.pid,
        r.host,
        r.step
            .as_ref()
            .map(|s| format!(" during step {s}"))
            .unwrap_or_default()
    )
}

/// The run in progress in this process, for the signal handler.
static ACTIVE: Mutex<Option<(PathBuf, JobState)>> = Mutex::new(None);

/// Remember the run in progress (or forget it with `None`).
pub fn set_active(active: Option<(PathBuf, JobState)>) {
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = active;
}

/// On a signal: record the run in progress as failed ("interrupted by SIGTERM during step
/// prune"), not yet notified, so the next run sends the notification.
pub fn record_interrupted(signal: &str) {
    let taken = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((path, mut state)) = taken {
        let r = &mut state.last;
        r.status = JobStatus::Failed;
        r.finished_at = Some(chrono::Utc::now().to_rfc3339());
        r.error = Some(format!(
            "interrupted by {signal}{}",
            r.step
                .as_ref()
                .map(|s| format!(" during step {s}"))
                .unwrap_or_default()
        ));
        r.notified = false;
        let _ = save(&path, &state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: JobStatus) -> JobRecord {
        JobRecord {
            status,
            pid: 1,
            host: "h".into(),
            repository: "/r".into(),
            started_at: "2025-11-16T02:00:00Z".into(),
            finished_at: None,
            duration_secs: None,
            step: Some("prune".into()),
            error: Some("boom".into()),
            snapshots: vec![],
            bytes_added: 0,
            steps: vec![],
            notified: false,
            repository_bytes: None,
            snapshot_count: None,
        }
    }

    #[test]
    fn keys_normalize_local_paths() {
        assert_eq!(key("/srv/repo"), key("/srv/repo/"));
        assert_eq!(key("/srv/repo"), key("file:///srv/repo"));
        assert_ne!(key("/srv/repo"), key("/srv/other"));
        assert_eq!(key("s3://b/p"), key("s3://b/p/"));
    }

    #[test]
    fn verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "/r");
        assert_eq!(verdict(&path).unwrap(), Verdict::None);
        let mut s = JobState {
            last: record(JobStatus::Running),
            last_success: None,
        };
        save(&path, &s).unwrap();
        // Nobody holds the lock: the run died.
        assert!(matches!(verdict(&path).unwrap(), Verdict::Died(m) if m.contains("step prune")));
        // While a lock is held (by another open file description) it is running.
        let held = try_lock(&path).unwrap().unwrap();
        assert_eq!(verdict(&path).unwrap(), Verdict::Running);
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        s.last.status = JobStatus::Failed;
        save(&path, &s).unwrap();
        assert!(matches!(verdict(&path).unwrap(), Verdict::Failed(m) if m.contains("boom")));
        s.last.status = JobStatus::Success;
        save(&path, &s).unwrap();
        assert_eq!(verdict(&path).unwrap(), Verdict::Success);
        std::fs::write(&path, b"{").unwrap();
        assert!(matches!(verdict(&path), Err(StateError::Corrupt { .. })));
    }
}
