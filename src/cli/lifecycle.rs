//! `forget`, `prune` and `health`: what keeps a repository in shape night after night.

use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::args::Global;
use super::commands::{open, print_json, say};
use super::exit;
use super::output::{ProgressDisplay, bytes, time_ns};
use crate::engine::Progress;
use crate::engine::duration::{Span, parse_fixed_secs};
use crate::engine::forget::{ForgetOptions, ForgetSummary, forget as run_forget};
use crate::engine::prune::{PruneOptions, PruneSummary, prune as run_prune};
use crate::engine::retention::{GroupBy, Policy};

/// `prune` options, shared with `forget --prune`.
#[derive(Args, Debug, Clone)]
pub struct PruneFlags {
    /// Unused space tolerated in kept packs, in percent of the live data; packs with the most
    /// unused space are repacked until what is left is below it.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    pub max_unused: f64,
    /// Take the exclusive lock and delete at once, as restic does: backups wait meanwhile.
    /// Without it, prune runs beside backups: it condemns what no snapshot needs and deletes
    /// it once no process that might reuse it is running (at once when none is).
    #[arg(long)]
    pub exclusive: bool,
    /// Least age of a condemned marker written while other processes held locks before its
    /// packs are deleted: s, min, h, d (e.g. `30min`; a bare number is seconds).
    #[arg(long, default_value = "30min", value_name = "DURATION", value_parser = parse_fixed_secs)]
    pub grace: u64,
}

impl PruneFlags {
    /// The prune options these flags give.
    fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            max_unused_percent: self.max_unused,
            dry_run,
            exclusive: self.exclusive,
            grace_secs: self.grace,
        }
    }
}

/// `prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Options.
    #[command(flatten)]
    pub flags: PruneFlags,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Forget exactly these snapshots (full ids or unique prefixes, as `coffer snapshots`
    /// shows them) instead of applying a policy. Every id is checked before anything is
    /// deleted: an unknown or ambiguous one forgets nothing.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the newest N hours.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_hourly: u32,
    /// ... of each of the newest N days.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: u32,
    /// ... of each of the newest N ISO weeks.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: u32,
    /// ... of each of the newest N months.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: u32,
    /// ... of each of the newest N years.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_yearly: u32,
    /// Keep every snapshot younger than this, counted back from the group's newest, read as
    /// restic reads it: y, m (months), w, d, h, min, e.g. `14d`, `6m` (six months),
    /// `2y5m7d3h`. A unit is required.
    #[arg(long, value_name = "DURATION", value_parser = Span::parse)]
    pub keep_within: Option<Span>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// The old BACKUP_RETENTION_DAYS: forget snapshots older than N days (the newest of each
    /// group always stays).
    #[arg(long, env = "BACKUP_RETENTION_DAYS", value_name = "N")]
    pub retention_days: Option<u32>,
    /// Group snapshots by any of host, sources, tags (comma-separated; empty: one group).
    #[arg(long, default_value = "host,sources")]
    pub group_by: String,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Show what would be forgotten and why each kept snapshot stays; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Prune afterwards, under the same lock.
    #[arg(long)]
    pub prune: bool,
    /// Prune options.
    #[command(flatten)]
    pub prune_flags: PruneFlags,
}

/// `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Unhealthy when the newest snapshot is older than this: s, min, h, d, w (e.g. `25h`,
    /// `90min`; a bare number is seconds; `m` is refused: minutes are `min`).
    #[arg(long, default_value = "25h", value_name = "DURATION", value_parser = parse_fixed_secs)]
    pub max_age: u64,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// The daemon's health instead (the image's HEALTHCHECK): it answers on its socket, its
    /// last run did not fail or die, and no scheduled run is more than 10 minutes overdue.
    /// Reads no repository.
    #[arg(long, conflicts_with_all = ["max_age", "host", "tags"])]
    pub daemon: bool,
}

fn print_prune(g: &Global, p: &PruneSummary) {
    let plan = &p.plan;
    say(
        g,
        format!(
            "{}{} packs ({}): {} live blobs ({}), {} unused before",
            if p.dry_run { "would prune: " } else { "" },
            plan.packs,
            bytes(plan.pack_bytes),
            plan.live_blobs,
            bytes(plan.live_bytes),
            bytes(plan.unused_bytes_before),
        ),
    );
    if !p.exclusive {
        print_beside(g, p);
    } else {
        say(
            g,
            format!(
                "{} {} packs, {} {} packs ({} moved), {} {} unindexed packs",
                if p.dry_run { "would delete" } else { "deleted" },
                plan.packs_to_delete,
                if p.dry_run {
                    "would repack"
                } else {
                    "repacked"
                },
                plan.packs_to_repack,
                bytes(plan.bytes_to_repack),
                if p.dry_run { "would remove" } else { "removed" },
                plan.unindexed_packs,
            ),
        );
    }
    say(
        g,
        format!(
            "repository {} -> {}{} ({} unused left) in {:.1}s",
            bytes(p.bytes_before),
            bytes(p.bytes_after),
            if p.dry_run { " (estimate)" } else { "" },
            bytes(plan.unused_bytes_after),
            p.duration_secs
        ),
    );
}

/// The two phases of a prune beside backups.
fn print_beside(g: &Global, p: &PruneSummary) {
    let plan = &p.plan;
    say(
        g,
        format!(
            "{} {} packs ({} to repack, {} moved; {} unindexed)",
            if p.dry_run {
                "would condemn"
            } else {
                "condemned"
            },
            p.packs_condemned,
            plan.packs_to_repack,
            bytes(plan.bytes_to_repack),
            plan.unindexed_packs,
        ),
    );
    if p.dry_run {
        return;
    }
    let mut line = format!(
        "deleted {} condemned packs ({} markers carried out",
        p.packs_deleted, p.markers_done
    );
    if p.packs_reprieved > 0 {
        line += &format!(
            "; {} packs kept: snapshots written since need them",
            p.packs_reprieved
        );
    }
    line += ")";
    if !p.markers_waiting.is_empty() {
        line += &format!(
            "; {} markers wait for processes that held locks when they were written (the \
             next prune deletes their packs once those are gone)",
            p.markers_waiting.len()
        );
    }
    say(g, line);
}

/// `coffer prune`.
pub fn prune(g: &Global, a: &PruneArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "prune");
    let s = run_prune(&o.repo, &o.catalog, &a.flags.options(a.dry_run), &progress)?;
    drop(display);
    if g.json {
        print_json(&s)?;
    } else {
        print_prune(g, &s);
    }
    Ok(exit::OK)
}

/// `coffer forget`.
pub fn forget(g: &Global, a: &ForgetArgs) -> anyhow::Result<u8> {
    let opts = forget_options(a)?;
    let o = open(g)?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "forget");
    let s = run_forget(&o.repo, &o.catalog, &opts, &progress)?;
    drop(display);
    if g.json {
        print_json(&s)?;
        return Ok(exit::OK);
    }
    print_forget(g, &s);
    if let Some(p) = &s.prune {
        print_prune(g, p);
    }
    Ok(exit::OK)
}

/// The retention policy and selection of `forget`'s flags.
fn forget_options(a: &ForgetArgs) -> anyhow::Result<ForgetOptions> {
    let group_by = GroupBy::parse(&a.group_by).map_err(|e| anyhow::anyhow!("--group-by: {e}"))?;
    Ok(ForgetOptions {
        policy: Policy {
            keep_last: a.keep_last,
            keep_hourly: a.keep_hourly,
            keep_daily: a.keep_daily,
            keep_weekly: a.keep_weekly,
            keep_monthly: a.keep_monthly,
            keep_yearly: a.keep_yearly,
            keep_within: a.keep_within,
            keep_tags: a.keep_tags.clone(),
            retention_days: a.retention_days,
        },
        ids: a.ids.clone(),
        group_by,
        host: a.host.clone(),
        tags: a.tags.clone(),
        dry_run: a.dry_run,
        prune: a.prune.then(|| a.prune_flags.options(false)),
    })
}

/// Print `forget`'s decisions, group by group, and the totals.
fn print_forget(g: &Global, s: &ForgetSummary) {
    if !s.policy.is_empty() {
        say(g, format!("policy: {}", s.policy.describe()));
    }
    let mut group = None;
    for e in &s.snapshots {
        let d = &e.decision;
        if group.as_ref() != Some(&d.group) {
            match (&s.policy.keep_within, d.within_since) {
                (Some(span), Some(since)) => say(
                    g,
                    format!(
                        "group {}: keep within {span} (since {})",
                        d.group,
                        since.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                ),
                _ => say(g, format!("group {}", d.group)),
            }
            group = Some(d.group.clone());
        }
        let short = d.id.get(..8).unwrap_or(&d.id);
        let t = chrono::DateTime::parse_from_rfc3339(&e.time)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(time_ns)
            .unwrap_or_else(|| e.time.clone());
        if d.keep {
            say(
                g,
                format!("  keep   {short}  {t}  {}", d.reasons.join(", ")),
            );
        } else {
            say(
                g,
                format!(
                    "  {} {short}  {t}",
                    if s.dry_run { "would remove" } else { "remove" }
                ),
            );
        }
    }
    say(
        g,
        format!(
            "{} snapshots kept, {} {}",
            s.kept,
            s.removed,
            if s.dry_run {
                "would be removed (dry run)"
            } else {
                "removed"
            }
        ),
    );
}

/// `health`'s answer.
#[derive(Debug, Serialize)]
struct Health {
    healthy: bool,
    newest_snapshot: Option<String>,
    newest_time: Option<String>,
    age_secs: Option<i64>,
    max_age_secs: i64,
    snapshots: usize,
    /// The daemon's / run-job's last recorded run: none, running, success, failed, died.
    last_job: &'static str,
    /// Why the last recorded run is a problem.
    last_job_error: Option<String>,
    message: String,
}

/// `coffer health`: exit 1 with one clear line when the newest snapshot is too old.
pub fn health(g: &Global, a: &HealthArgs) -> anyhow::Result<u8> {
    if a.daemon {
        return daemon_health(g);
    }
    let max_age = i64::try_from(a.max_age).unwrap_or(i64::MAX);
    let o = open(g)?;
    let all = o.snapshots(a.host.as_deref(), &a.tags)?;
    let now = chrono::Utc::now();
    let newest = all.last();
    let age = newest.map(|e| now.timestamp() - e.snapshot.time_ns.div_euclid(1_000_000_000));
    let healthy = age.is_some_and(|a| a <= max_age);
    let message = match (newest, age) {
        (None, _) | (_, None) => "unhealthy: no snapshot at all".to_string(),
        (Some(e), Some(age)) => format!(
            "{}: newest snapshot {} is {} old (limit {})",
            if healthy { "healthy" } else { "unhealthy" },
            e.id.short(),
            human_age(age),
            human_age(max_age)
        ),
    };
    // The last recorded job run (daemon or run-job) of this repository on this host.
    let (last_job, last_job_error) = last_job(g)?;
    let healthy = healthy && last_job_error.is_none();
    let message = match &last_job_error {
        Some(e) => format!(
            "unhealthy: {e} ({})",
            message.strip_prefix("healthy: ").unwrap_or(&message)
        ),
        None => message,
    };
    let h = Health {
        healthy,
        last_job,
        last_job_error,
        newest_snapshot: newest.map(|e| e.id.to_hex()),
        newest_time: newest
            .map(|e| chrono::DateTime::from_timestamp_nanos(e.snapshot.time_ns).to_rfc3339()),
        age_secs: age,
        max_age_secs: max_age,
        snapshots: all.len(),
        message,
    };
    if g.json {
        print_json(&h)?;
    } else if healthy {
        say(g, &h.message);
    } else {
        eprintln!("{}", h.message);
    }
    Ok(if healthy { exit::OK } else { exit::ERROR })
}

/// The verdict on the last recorded job run, and the problem if it failed or died.
fn last_job(g: &Global) -> anyhow::Result<(&'static str, Option<String>)> {
    use crate::daemon::state::{Verdict, state_path, verdict};
    let repository = g
        .repo
        .clone()
        .unwrap_or_else(|| super::default_repo_path().display().to_string());
    let cache = g.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
    Ok(match verdict(&state_path(&cache, &repository))? {
        Verdict::None => ("none", None),
        Verdict::Running => ("running", None),
        Verdict::Success => ("success", None),
        Verdict::Failed(m) => ("failed", Some(m)),
        Verdict::Died(m) => ("died", Some(m)),
    })
}

/// `health --daemon`.
fn daemon_health(g: &Global) -> anyhow::Result<u8> {
    use crate::daemon::state::{load, state_path, verdict};
    let repository = g
        .repo
        .clone()
        .unwrap_or_else(|| super::default_repo_path().display().to_string());
    let cache = g.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
    let result = if super::trigger::daemon_alive(&cache) {
        let path = state_path(&cache, &repository);
        let v = verdict(&path)?;
        let last_started = load(&path)?.and_then(|s| {
            chrono::DateTime::parse_from_rfc3339(&s.last.started_at)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        });
        let schedule: Option<crate::daemon::ScheduleRecord> =
            std::fs::read(super::trigger::schedule_path(&cache))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        crate::daemon::daemon_health(&v, last_started, schedule.as_ref(), chrono::Utc::now())
            .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "no coffer daemon answers on {}",
            super::trigger::socket_path(&cache).display()
        ))
    };
    match result {
        Ok(m) => {
            say(g, format!("healthy: {m}"));
            Ok(exit::OK)
        }
        Err(m) => {
            eprintln!("unhealthy: {m}");
            Ok(exit::ERROR)
        }
    }
}

fn human_age(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 2 * 86_400 {
        format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600)
    } else if secs >= 3600 {
        format!("{}h{}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}
