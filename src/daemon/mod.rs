//! The daemon: runs the nightly job (backup, forget and prune, a rolling data check, sync to
//! an offsite repository) on a schedule, one run at a time, and tells someone how it went.
//!
//! This module owns the order of a run and everything around it: the schedule
//! ([`schedule`]), the configuration ([`config`], and the old tool's variables in
//! [`legacy_env`]), the state recorded before work begins and
//! after each step ([`state`]), notifications ([`notify`]) and metrics ([`metrics`]). It does
//! not open repositories or parse arguments: the steps themselves come from the caller
//! through [`JobSteps`] (the CLI, which knows passphrases and locations).
//!
//! Invariants: the state says `running` and the start ping is sent before the first step; a
//! step runs only when the one before it succeeded (a failed backup never lets retention
//! forget older snapshots); a run that overlaps the next scheduled time makes that time be
//! skipped and counted, never queued.

pub mod config;
pub mod legacy_env;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod shoutrrr;
pub mod state;

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};

use metrics::{MetricValues, SharedMetrics};
use notify::{Notifier, Ping};
use schedule::Schedule;
use state::{JobLock, JobRecord, JobState, JobStatus, StepRecord};

/// Skipped scheduled times counted after an overrun, at most (a per-second schedule after a
/// day-long run would otherwise count for a while).
const MAX_SKIPPED_COUNTED: u64 = 100_000;

/// The steps of a run, in order.
pub const STEPS: [&str; 5] = ["backup", "archive", "forget", "check", "sync"];

/// What the daemon itself can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The schedule has no future time.
    #[error("the schedule {0:?} never comes due")]
    NeverDue(String),
    /// The state files.
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step failed; one line naming what failed, with its causes (the caller's words).
    #[error("{0}")]
    Failed(String),
    /// The step panicked: a bug.
    #[error("internal error (please report it): {0}")]
    Panicked(String),
}

/// Why `coffer health --daemon` says the daemon is unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// The last run failed or died; the verdict's message.
    #[error("{0}")]
    LastRun(String),
    /// No schedule record: the daemon is not running, or never got as far.
    #[error("the daemon has not recorded its schedule (is it running?)")]
    NoSchedule,
    /// A scheduled run is more than [`OVERDUE_GRACE`] late.
    #[error("the backup due at {} has not started ({schedule:?})", due.to_rfc3339())]
    Overdue {
        /// When it was due.
        due: DateTime<Utc>,
        /// The schedule as written.
        schedule: String,
    },
}

/// What a step did.
#[derive(Clone, Debug, Default)]
pub struct StepDone {
    /// One line for the log and the report.
    pub detail: String,
    /// Snapshots written.
    pub snapshots: Vec<String>,
    /// Plaintext bytes of new data.
    pub bytes_added: u64,
    /// Set when the step finished but its result is incomplete (files that could not be
    /// read): the run goes on and is reported as failed with this message.
    pub incomplete: Option<String>,
}

/// A step's result: done, or nothing to do because it is not configured.
#[derive(Clone, Debug)]
pub enum StepResult {
    /// It ran.
    Done(StepDone),
    /// It is not configured; the reason says what would enable it.
    NotConfigured(String),
}

/// The steps of one run, supplied by the caller. An error is one line naming what failed.
pub trait JobSteps {
    /// Back up directories and/or Docker volumes.
    fn backup(&mut self) -> Result<StepResult, StepError>;
    /// Write the nightly archive of the old setup and prune old archives.
    fn archive(&mut self) -> Result<StepResult, StepError>;
    /// Forget by the retention policy, then prune.
    fn forget(&mut self) -> Result<StepResult, StepError>;
    /// Check the structure and read a share of the data.
    fn check(&mut self) -> Result<StepResult, StepError>;
    /// Copy to the offsite repository.
    fn sync(&mut self) -> Result<StepResult, StepError>;
    /// Stored bytes and snapshot count of the repository, for the metrics.
    fn repository_stats(&mut self) -> Option<(u64, u64)>;
}

/// Everything a run needs besides its steps.
pub struct JobContext {
    /// The state file.
    pub state_path: PathBuf,
    /// The repository (for the record and notifications).
    pub repository: String,
    /// This host.
    pub host: String,
    /// Notifications.
    pub notifier: Notifier,
    /// Metrics, shared with the server.
    pub metrics: SharedMetrics,
    /// Metrics textfile.
    pub textfile: Option<PathBuf>,
    /// Where the daemon records its next scheduled run (for `coffer health --daemon`).
    pub schedule_file: Option<PathBuf>,
}

/// What the daemon records about its schedule, for `coffer health --daemon`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScheduleRecord {
    /// The daemon's process id.
    pub pid: u32,
    /// The schedule as written.
    pub schedule: String,
    /// When the next run is due.
    pub next_run: DateTime<Utc>,
}

/// How late a scheduled run may start before the daemon counts as unhealthy.
pub const OVERDUE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// The daemon's health from its records: unhealthy when the last run failed or died, or when
/// a scheduled run is more than [`OVERDUE_GRACE`] late. `Ok` carries the reason it is fine.
pub fn daemon_health(
    verdict: &state::Verdict,
    last_started: Option<DateTime<Utc>>,
    schedule: Option<&ScheduleRecord>,
    now: DateTime<Utc>,
) -> Result<String, Unhealthy> {
    match verdict {
        state::Verdict::Failed(m) | state::Verdict::Died(m) => {
            return Err(Unhealthy::LastRun(m.clone()));
        }
        state::Verdict::Running => return Ok("a backup is running now".into()),
        state::Verdict::None | state::Verdict::Success => {}
    }
    let Some(s) = schedule else {
        return Err(Unhealthy::NoSchedule);
    };
    let grace = chrono::Duration::from_std(OVERDUE_GRACE).unwrap_or_default();
    let started_since_due = last_started.is_some_and(|t| t >= s.next_run);
    if now > s.next_run + grace && !started_since_due {
        return Err(Unhealthy::Overdue {
            due: s.next_run,
            schedule: s.schedule.clone(),
        });
    }
    Ok(match verdict {
        state::Verdict::Success => {
            format!("last backup succeeded; next at {}", s.next_run.to_rfc3339())
        }
        _ => format!("no backup yet; first at {}", s.next_run.to_rfc3339()),
    })
}

/// How a request to run went.
#[derive(Debug)]
pub enum JobOutcome {
    /// The run happened; its record.
    Finished(Box<JobRecord>),
    /// Another run holds the lock; nothing was done.
    Skipped(String),
}

impl JobContext {
    fn update_metrics(&self, f: impl FnOnce(&mut MetricValues)) {
        let snapshot = {
            let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut m);
            m.clone()
        };
        if let Some(path) = &self.textfile
            && let Err(e) = metrics::write_textfile(path, &snapshot)
        {
            tracing::error!(path = %path.display(), error = %e, "metrics textfile");
        }
    }

    fn save(&self, s: &JobState) {
        if let Err(e) = state::save(&self.state_path, s) {
            tracing::error!(error = %e, "recording the job state");
        }
    }

    /// Load the recorded state into the metrics (at start, so that a restarted daemon still
    /// exports the last success time).
    pub fn load_metrics(&self) {
        let loaded = match state::load(&self.state_path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "job state");
                return;
            }
        };
        let Some(s) = loaded else {
            self.update_metrics(|_| {});
            return;
        };
        self.update_metrics(|m| {
            m.last_success_timestamp_seconds = s
                .last_success
                .as_ref()
                .and_then(|r| r.finished_at.as_deref())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp());
            let r = &s.last;
            if r.status != JobStatus::Running {
                m.last_duration_seconds = r.duration_secs;
                m.last_bytes_added = Some(r.bytes_added);
            }
            m.last_success = Some(r.status == JobStatus::Success);
            m.repository_bytes = r.repository_bytes.or(m.repository_bytes);
            m.snapshots = r.snapshot_count.or(m.snapshots);
        });
    }

    /// Report a previous run that died (recorded as running, lock free) or failed without its
    /// notification having gone out (interrupted by a signal). Needs the run lock.
    fn reconcile(&self, _lock: &JobLock) -> Option<JobState> {
        let mut s = match state::load(&self.state_path) {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(error = %e, "job state; starting afresh");
                return None;
            }
        };
        let r = &mut s.last;
        if r.status == JobStatus::Running {
            let msg = state::died_message(r);
            tracing::error!(started_at = %r.started_at, pid = r.pid, "{msg}");
            r.status = JobStatus::Failed;
            r.error = Some(msg);
            r.notified = false;
        }
        if r.status == JobStatus::Failed && !r.notified {
            self.update_metrics(|m| {
                m.job_failures_total += 1;
                m.last_success = Some(false);
            });
            self.save(&s);
            self.notifier.finished(&s.last);
            s.last.notified = true;
            self.save(&s);
        }
        Some(s)
    }

    /// At start: report what the last run left behind, unless a run is going on now.
    pub fn reconcile_at_start(&self) -> Result<(), DaemonError> {
        if let Some(lock) = state::try_lock(&self.state_path)? {
            self.reconcile(&lock);
        }
        Ok(())
    }
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Run the job once now.
pub fn run_job(ctx: &JobContext, steps: &mut dyn JobSteps) -> Result<JobOutcome, DaemonError> {
    // One run at a time: while another holds the lock, this one is skipped.
    let Some(lock) = state::try_lock(&ctx.state_path)? else {
        return Ok(skip(ctx));
    };
    let previous = ctx.reconcile(&lock);
    let started = Instant::now();
    let mut st = begin(ctx, previous);
    let (failed, incomplete) = run_steps(ctx, steps, &mut st);
    let stats = steps.repository_stats();
    finish(&mut st.last, started, stats, failed, incomplete);
    if st.last.status == JobStatus::Success {
        st.last_success = Some(st.last.clone());
    }
    state::set_active(None);
    ctx.save(&st);
    report(ctx, &st.last, stats);
    st.last.notified = true;
    ctx.save(&st);
    drop(lock);
    Ok(JobOutcome::Finished(Box::new(st.last)))
}

/// Another run holds the lock: say who, and count the skip.
fn skip(ctx: &JobContext) -> JobOutcome {
    let who = state::load(&ctx.state_path)
        .ok()
        .flatten()
        .map(|s| format!(" (pid {}, started {})", s.last.pid, s.last.started_at))
        .unwrap_or_default();
    let msg = format!("another job run is in progress{who}; this one is skipped");
    tracing::warn!("{msg}");
    ctx.update_metrics(|m| m.job_skipped_total += 1);
    JobOutcome::Skipped(msg)
}

/// Record the run as running before any work: a run killed from here on is seen as dead.
fn begin(ctx: &JobContext, previous: Option<JobState>) -> JobState {
    let st = JobState {
        last: JobRecord {
            status: JobStatus::Running,
            pid: std::process::id(),
            host: ctx.host.clone(),
            repository: ctx.repository.clone(),
            started_at: now_rfc3339(),
            finished_at: None,
            duration_secs: None,
            step: None,
            error: None,
            snapshots: Vec::new(),
            bytes_added: 0,
            steps: Vec::new(),
            notified: false,
            repository_bytes: None,
            snapshot_count: None,
        },
        last_success: previous.and_then(|p| p.last_success),
    };
    ctx.save(&st);
    state::set_active(Some((ctx.state_path.clone(), st.clone())));
    ctx.update_metrics(|m| m.running = true);
    tracing::info!(started_at = %st.last.started_at, repository = %ctx.repository, "job started");
    ctx.notifier.ping(Ping::Start, "");
    st
}

/// Run the steps in order; after a failure the rest are recorded as skipped. Returns the
/// failure and the warnings of steps that finished incomplete.
fn run_steps(
    ctx: &JobContext,
    steps: &mut dyn JobSteps,
    st: &mut JobState,
) -> (Option<String>, Vec<String>) {
    let mut failed: Option<String> = None;
    let mut incomplete: Vec<String> = Vec::new();
    for name in STEPS {
        if let Some(e) = &failed {
            st.last.steps.push(skipped_step(name, e));
            continue;
        }
        st.last.step = Some(name.into());
        ctx.save(st);
        state::set_active(Some((ctx.state_path.clone(), st.clone())));
        let t = Instant::now();
        let result = call_step(steps, name);
        let secs = t.elapsed().as_secs_f64();
        let (status, detail) = match result {
            Ok(StepResult::Done(d)) => {
                st.last.snapshots.extend(d.snapshots);
                st.last.bytes_added += d.bytes_added;
                if let Some(w) = d.incomplete {
                    incomplete.push(w);
                }
                ("ok", d.detail)
            }
            Ok(StepResult::NotConfigured(why)) => ("not configured", why),
            Err(e) => {
                failed = Some(format!("{name}: {e}"));
                ("failed", e.to_string())
            }
        };
        if status == "failed" {
            tracing::error!(step = name, status, duration_secs = secs, "{detail}");
        } else {
            tracing::info!(step = name, status, duration_secs = secs, "{detail}");
        }
        st.last.steps.push(StepRecord {
            name: name.into(),
            status: status.into(),
            duration_secs: secs,
            detail,
        });
    }
    (failed, incomplete)
}

/// A step not run because `error` (of an earlier step) stopped the run.
fn skipped_step(name: &str, error: &str) -> StepRecord {
    tracing::info!(
        step = name,
        status = "skipped",
        "step skipped: an earlier step failed"
    );
    StepRecord {
        name: name.into(),
        status: "skipped".into(),
        duration_secs: 0.0,
        detail: format!("not run: {}", error.split(':').next().unwrap_or(error)),
    }
}

/// Run one step. A panic in a step (a bug, a library that panics on a missing trust store)
/// fails the step and is recorded and notified like any failure, never a run left "running".
fn call_step(steps: &mut dyn JobSteps, name: &str) -> Result<StepResult, StepError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match name {
        "backup" => steps.backup(),
        "archive" => steps.archive(),
        "forget" => steps.forget(),
        "check" => steps.check(),
        _ => steps.sync(),
    }))
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(StepError::Panicked(what))
    })
}

/// Close the record: times, repository size, and the status (failed by a step, or by
/// steps that finished incomplete).
fn finish(
    r: &mut JobRecord,
    started: Instant,
    stats: Option<(u64, u64)>,
    failed: Option<String>,
    incomplete: Vec<String>,
) {
    r.step = None;
    r.finished_at = Some(now_rfc3339());
    r.duration_secs = Some(started.elapsed().as_secs_f64());
    r.repository_bytes = stats.map(|s| s.0);
    r.snapshot_count = stats.map(|s| s.1);
    let error = failed.or_else(|| (!incomplete.is_empty()).then(|| incomplete.join("; ")));
    r.status = if error.is_some() {
        JobStatus::Failed
    } else {
        JobStatus::Success
    };
    r.error = error;
}

/// Log how the run went, update the metrics and notify.
fn report(ctx: &JobContext, r: &JobRecord, stats: Option<(u64, u64)>) {
    let ok = r.status == JobStatus::Success;
    tracing::info!(
        status = if ok { "success" } else { "failed" },
        duration_secs = r.duration_secs.unwrap_or(0.0),
        snapshots = %r.snapshots.join(","),
        bytes_added = r.bytes_added,
        error = r.error.as_deref().unwrap_or(""),
        "job finished"
    );
    // One plain line that says how it went (the old tool's words, which runbooks grep for).
    if ok {
        tracing::info!(
            "Backup completed successfully in {:.1}s",
            r.duration_secs.unwrap_or(0.0)
        );
    } else {
        tracing::error!(
            "Backup failed: {}",
            r.error.as_deref().unwrap_or("unknown error")
        );
    }
    let finished_ts = Utc::now().timestamp();
    ctx.update_metrics(|m| {
        m.running = false;
        m.last_duration_seconds = r.duration_secs;
        m.last_bytes_added = Some(r.bytes_added);
        m.last_success = Some(ok);
        if ok {
            m.last_success_timestamp_seconds = Some(finished_ts);
        } else {
            m.job_failures_total += 1;
        }
        if let Some((bytes, snaps)) = stats {
            m.repository_bytes = Some(bytes);
            m.snapshots = Some(snaps);
        }
    });
    ctx.notifier.finished(r);
}

/// Scheduled times in `(after, until]`, counted up to [`MAX_SKIPPED_COUNTED`].
pub fn missed_between(schedule: &Schedule, after: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    let mut n = 0;
    let mut t = after;
    while let Some(next) = schedule.next_after(t) {
        if next > until || n >= MAX_SKIPPED_COUNTED {
            break;
        }
        n += 1;
        t = next;
    }
    n
}

/// Write the schedule record for `coffer health --daemon`; a failure is only logged.
fn record_schedule(path: &std::path::Path, rec: &ScheduleRecord) {
    let bytes = match serde_json::to_vec(rec) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "recording the schedule");
            return;
        }
    };
    if let Err(e) = state::write_private(path, &bytes) {
        tracing::warn!(path = %path.display(), error = %e, "recording the schedule");
    }
}

/// Run the job at every scheduled time, forever (a signal ends the process). `steps` makes
/// the steps of one run.
pub fn run_forever(
    ctx: &JobContext,
    schedule: &Schedule,
    schedule_text: &str,
    steps: &mut dyn FnMut() -> Box<dyn JobSteps>,
    gate: &std::sync::Mutex<()>,
) -> Result<(), DaemonError> {
    let mut cursor = Utc::now();
    let mut first = true;
    loop {
        let next = schedule
            .next_after(cursor)
            .ok_or_else(|| DaemonError::NeverDue(schedule_text.to_string()))?;
        if let Some(path) = &ctx.schedule_file {
            let rec = ScheduleRecord {
                pid: std::process::id(),
                schedule: schedule_text.to_string(),
                next_run: next,
            };
            record_schedule(path, &rec);
        }
        if first {
            // The old tool's words, which runbooks grep for.
            tracing::info!(
                "Scheduled backup task registered: {schedule_text:?} (UTC), next run at {}",
                next.to_rfc3339()
            );
            first = false;
        } else {
            tracing::info!("Next backup at {}", next.to_rfc3339());
        }
        loop {
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            if wait.is_zero() {
                break;
            }
            // Sleep in slices so that a clock step is noticed.
            std::thread::sleep(wait.min(std::time::Duration::from_secs(60)));
        }
        let mut job = steps();
        {
            let _turn = gate.lock().unwrap_or_else(|p| p.into_inner());
            run_job(ctx, job.as_mut())?;
        }
        let end = Utc::now();
        let skipped = missed_between(schedule, next, end);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "the run overran {skipped} scheduled time(s); they are skipped, not queued"
            );
            ctx.update_metrics(|m| m.job_skipped_total += skipped);
        }
        cursor = end.max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overruns_are_counted() {
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        let t = |x: &str| DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc);
        assert_eq!(
            missed_between(&s, t("2025-01-01T00:00:00Z"), t("2025-01-01T00:00:05Z")),
            0
        );
        assert_eq!(
            missed_between(&s, t("2025-01-01T00:00:00Z"), t("2025-01-01T00:00:35Z")),
            3
        );
        assert_eq!(
            missed_between(
                &Schedule::Every(5),
                t("2025-01-01T00:00:00Z"),
                t("2025-01-01T00:00:12Z")
            ),
            2
        );
    }

    #[derive(Default)]
    struct Fake {
        fail_backup: bool,
        panic_in_archive: bool,
        calls: Vec<&'static str>,
    }

    impl JobSteps for Fake {
        fn backup(&mut self) -> Result<StepResult, StepError> {
            self.calls.push("backup");
            if self.fail_backup {
                return Err(StepError::Failed("repository unreadable".into()));
            }
            Ok(StepResult::Done(StepDone {
                detail: "snapshot abc".into(),
                snapshots: vec!["abc".into()],
                bytes_added: 42,
                incomplete: None,
            }))
        }
        fn archive(&mut self) -> Result<StepResult, StepError> {
            self.calls.push("archive");
            if self.panic_in_archive {
                panic!("no CA certificates were loaded");
            }
            Ok(StepResult::NotConfigured("no BACKUP_FILENAME".into()))
        }
        fn forget(&mut self) -> Result<StepResult, StepError> {
            self.calls.push("forget");
            Ok(StepResult::NotConfigured("no policy".into()))
        }
        fn check(&mut self) -> Result<StepResult, StepError> {
            self.calls.push("check");
            Ok(StepResult::Done(StepDone::default()))
        }
        fn sync(&mut self) -> Result<StepResult, StepError> {
            self.calls.push("sync");
            Ok(StepResult::NotConfigured("no [sync]".into()))
        }
        fn repository_stats(&mut self) -> Option<(u64, u64)> {
            Some((1000, 1))
        }
    }

    fn context(dir: &std::path::Path) -> JobContext {
        JobContext {
            state_path: state::state_path(dir, "/r"),
            repository: "/r".into(),
            host: "h".into(),
            notifier: Notifier::new(
                config::NotifyConfig::default(),
                &crate::runtime::IoRuntime::new(),
            ),
            metrics: Default::default(),
            textfile: Some(dir.join("coffer.prom")),
            schedule_file: None,
        }
    }

    #[test]
    fn daemon_health_from_records() {
        use state::Verdict;
        let t = |x: &str| DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc);
        let rec = ScheduleRecord {
            pid: 1,
            schedule: "0 2 * * *".into(),
            next_run: t("2026-02-04T02:00:00Z"),
        };
        let before = t("2026-02-03T12:00:00Z");
        assert!(daemon_health(&Verdict::None, None, Some(&rec), before).is_ok());
        // Overdue: the 02:00 run has not started by 02:30.
        let late = t("2026-02-04T02:30:00Z");
        let e = daemon_health(&Verdict::Success, Some(before), Some(&rec), late)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has not started"), "{e}");
        // Started on time: fine (the daemon records the next due time when it is done).
        assert!(daemon_health(&Verdict::Success, Some(late), Some(&rec), late).is_ok());
        assert!(daemon_health(&Verdict::Running, None, Some(&rec), late).is_ok());
        let failed = Verdict::Failed("the job run failed: disk full".into());
        assert!(daemon_health(&failed, None, Some(&rec), before).is_err());
        assert!(daemon_health(&Verdict::None, None, None, before).is_err());
    }

    #[test]
    fn a_panicking_step_fails_the_run_instead_of_leaving_it_running() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let mut fake = Fake {
            panic_in_archive: true,
            ..Default::default()
        };
        let JobOutcome::Finished(r) = run_job(&ctx, &mut fake).unwrap() else {
            panic!("skipped");
        };
        assert_eq!(r.status, JobStatus::Failed);
        assert!(
            r.error.as_deref().unwrap().contains("no CA certificates"),
            "{:?}",
            r.error
        );
        assert_eq!(fake.calls, ["backup", "archive"]);
        assert!(matches!(
            state::verdict(&ctx.state_path).unwrap(),
            state::Verdict::Failed(_)
        ));
    }

    #[test]
    fn a_failed_backup_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let mut fake = Fake {
            fail_backup: true,
            ..Default::default()
        };
        let JobOutcome::Finished(r) = run_job(&ctx, &mut fake).unwrap() else {
            panic!("skipped");
        };
        assert_eq!(fake.calls, ["backup"]);
        assert_eq!(r.status, JobStatus::Failed);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("repository unreadable")
        );
        assert_eq!(r.steps[1].status, "skipped");
        assert_eq!(ctx.metrics.lock().unwrap().job_failures_total, 1);
        assert!(matches!(
            state::verdict(&ctx.state_path).unwrap(),
            state::Verdict::Failed(_)
        ));
    }

    #[test]
    fn a_good_run_records_success_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let mut fake = Fake::default();
        let JobOutcome::Finished(r) = run_job(&ctx, &mut fake).unwrap() else {
            panic!("skipped");
        };
        assert_eq!(fake.calls, ["backup", "archive", "forget", "check", "sync"]);
        assert_eq!(r.status, JobStatus::Success);
        assert_eq!(r.bytes_added, 42);
        let m = ctx.metrics.lock().unwrap().clone();
        assert_eq!(m.snapshots, Some(1));
        assert!(m.last_success_timestamp_seconds.is_some());
        let text = std::fs::read_to_string(dir.path().join("coffer.prom")).unwrap();
        assert!(text.contains("coffer_snapshots 1"), "{text}");
    }

    #[test]
    fn a_dead_run_is_reported_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let mut dead = JobState {
            last: JobRecord {
                status: JobStatus::Running,
                pid: 999_999,
                host: "h".into(),
                repository: "/r".into(),
                started_at: now_rfc3339(),
                finished_at: None,
                duration_secs: None,
                step: Some("prune".into()),
                error: None,
                snapshots: vec![],
                bytes_added: 0,
                steps: vec![],
                notified: false,
                repository_bytes: None,
                snapshot_count: None,
            },
            last_success: None,
        };
        state::save(&ctx.state_path, &dead).unwrap();
        assert!(matches!(
            state::verdict(&ctx.state_path).unwrap(),
            state::Verdict::Died(_)
        ));
        ctx.reconcile_at_start().unwrap();
        assert_eq!(ctx.metrics.lock().unwrap().job_failures_total, 1);
        dead = state::load(&ctx.state_path).unwrap().unwrap();
        assert_eq!(dead.last.status, JobStatus::Failed);
        assert!(dead.last.notified);
        assert!(dead.last.error.unwrap().contains("died without finishing"));
        // Reported once only.
        ctx.reconcile_at_start().unwrap();
        assert_eq!(ctx.metrics.lock().unwrap().job_failures_total, 1);
    }
}
