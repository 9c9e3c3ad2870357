//! `coffer daemon` and `coffer run-job`: reading the configuration, opening the repositories
//! with the right passphrases, and the four steps of a run (backup, forget + prune, check,
//! sync) as calls into the engine. The order, state, notifications and metrics are
//! [`crate::daemon`]'s.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::args::Global;
use super::backup::open_for_backup;
use super::commands::{print_json, say};
use super::output::bytes;
use super::{default_cache_dir, default_repo_path, exit, one_line, open_options};
use crate::daemon::config::{self, DaemonConfig};
use crate::daemon::metrics::{self, SharedMetrics};
use crate::daemon::notify::Notifier;
use crate::daemon::state::JobStatus;
use crate::daemon::{
    JobContext, JobOutcome, JobSteps, StepDone, StepError, StepResult, run_forever, run_job,
};
use crate::engine::backup::{BackupOptions, SourceSpec};
use crate::engine::check::CheckOptions;
use crate::engine::forget::ForgetOptions;
use crate::engine::prune::PruneOptions;
use crate::engine::session::{KdfParams, Location, Session};
use crate::engine::sync::SyncOptions;
use crate::engine::{self, Progress};
use crate::runtime::IoRuntime;

/// `daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Configuration file (TOML; see docs/daemon.md). Without it, the old tool's environment
    /// variables (BACKUP_SOURCES, BACKUP_CRON_EXPRESSION, ...) configure the job.
    #[arg(long, short = 'c', env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics on `GET /metrics` at this address (e.g. 127.0.0.1:9184).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Write Prometheus metrics to this file after every run (node_exporter textfile).
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
}

/// `run-job`.
#[derive(Args, Debug)]
pub struct RunJobArgs {
    /// Configuration file (TOML; see docs/daemon.md).
    #[arg(long, short = 'c', env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write Prometheus metrics to this file when done.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
}

fn load_config(path: Option<&PathBuf>, io: &IoRuntime) -> anyhow::Result<DaemonConfig> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the configuration file {}", p.display()))?,
        None => String::new(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let loaded = config::parse(&text, &env).map_err(|e| match path {
        Some(p) => anyhow::Error::new(e).context(format!("{}", p.display())),
        None => anyhow::Error::new(e),
    })?;
    for n in &loaded.notes {
        tracing::info!("{n}");
    }
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let unsupported = crate::daemon::legacy_env::unsupported(&names);
    if !unsupported.is_empty() {
        tracing::warn!(
            "not supported by coffer, ignored: {} (see docs/daemon.md for what to use instead)",
            unsupported.join(", ")
        );
    }
    if let Ok(tz) = std::env::var("TZ")
        && !tz.is_empty()
        && !matches!(tz.as_str(), "UTC" | "Etc/UTC" | "UTC0" | "GMT")
    {
        tracing::warn!("TZ={tz} is not used: the schedule is read in UTC");
    }
    let mut cfg = loaded.config;
    cfg.host = Some(stable_host(&cfg, io));
    Ok(cfg)
}

/// The global options with the configuration's repository and passphrase file applied
/// (`--repo` / `COFFER_REPO` win over the file).
fn job_global(g: &Global, cfg: &DaemonConfig) -> Global {
    let mut g2 = g.clone();
    if g2.repo.is_none() {
        g2.repo = cfg.repository.clone();
    }
    if g2.password_file.is_none() {
        g2.password_file = cfg.password_file.clone();
    }
    g2
}

fn context(
    g: &Global,
    cfg: &DaemonConfig,
    textfile: Option<PathBuf>,
    metrics: SharedMetrics,
) -> JobContext {
    let repository = g
        .repo
        .clone()
        .unwrap_or_else(|| default_repo_path().display().to_string());
    let cache = g.cache_dir.clone().unwrap_or_else(default_cache_dir);
    JobContext {
        state_path: crate::daemon::state::state_path(&cache, &repository),
        repository,
        host: cfg.host.clone().unwrap_or_else(engine::session::hostname),
        notifier: Notifier::new(cfg.notify.clone(), &g.io),
        metrics,
        textfile,
        schedule_file: Some(super::trigger::schedule_path(&cache)),
    }
}

/// `coffer run-job`: the job once, now.
pub fn run_once(g: &Global, a: &RunJobArgs) -> anyhow::Result<u8> {
    let cfg = load_config(a.config.as_ref(), &g.io)?;
    let g2 = job_global(g, &cfg);
    let textfile = a.metrics_textfile.clone().or(cfg.metrics.textfile.clone());
    let ctx = context(&g2, &cfg, textfile, SharedMetrics::default());
    ctx.load_metrics();
    let mut steps = CliJob::new(g2, cfg);
    match run_job(&ctx, &mut steps)? {
        JobOutcome::Skipped(msg) => {
            eprintln!("error: {msg}");
            Ok(exit::LOCKED)
        }
        JobOutcome::Finished(r) => {
            if g.json {
                print_json(&r)?;
            } else {
                for s in &r.steps {
                    say(
                        g,
                        format!(
                            "{:<7} {:<15} {:>6.1}s  {}",
                            s.name, s.status, s.duration_secs, s.detail
                        ),
                    );
                }
            }
            let hard_failure = r.steps.iter().any(|s| s.status == "failed");
            match (r.status, &r.error) {
                (JobStatus::Success, _) => {
                    say(
                        g,
                        format!("job succeeded in {:.1}s", r.duration_secs.unwrap_or(0.0)),
                    );
                    Ok(exit::OK)
                }
                (_, e) => {
                    eprintln!("error: job failed: {}", e.as_deref().unwrap_or("unknown"));
                    Ok(if hard_failure {
                        exit::ERROR
                    } else {
                        exit::PARTIAL
                    })
                }
            }
        }
    }
}

/// `coffer daemon`: the job on its schedule until a signal.
pub fn daemon(g: &Global, a: &DaemonArgs) -> anyhow::Result<u8> {
    let mut cfg = load_config(a.config.as_ref(), &g.io)?;
    if let Some(l) = &a.metrics_listen {
        cfg.metrics.listen =
            Some(config::parse_listen(l).map_err(|e| anyhow::anyhow!("--metrics-listen: {e}"))?);
    }
    let textfile = a.metrics_textfile.clone().or(cfg.metrics.textfile.clone());
    let g2 = job_global(g, &cfg);
    // A passphrase that cannot be had is a start-up error, not a 2 a.m. one.
    super::password::passphrase(&g2, false).context("the repository passphrase")?;
    let metrics = SharedMetrics::default();
    if let Some(addr) = cfg.metrics.listen {
        let bound = metrics::serve(addr, metrics.clone(), &g.io)
            .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
        tracing::info!(address = %bound, "serving metrics on /metrics");
    }
    check_tls_roots(&cfg)?;
    if let Some(dir) = &cfg.backup.sources_dir
        && !dir.is_dir()
    {
        anyhow::bail!(
            "the sources directory {} does not exist (BACKUP_SOURCES, default /backup): mount \
             each volume at {}/<name>",
            dir.display(),
            dir.display()
        );
    }
    let ctx = context(&g2, &cfg, textfile, metrics);
    ctx.load_metrics();
    ctx.reconcile_at_start()?;
    tracing::info!(
        repository = %ctx.repository,
        host = %ctx.host,
        state = %ctx.state_path.display(),
        "daemon started (times are UTC)"
    );
    let (schedule, text) = (cfg.schedule.clone(), cfg.schedule_text.clone());
    let cache = g2.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let socket = super::trigger::socket_path(&cache);
    // One run at a time: the schedule and manual triggers take turns.
    let gate = std::sync::Mutex::new(());
    let run_now = || -> u8 {
        let mut job = CliJob::new(g2.clone(), cfg.clone());
        match run_job(&ctx, &mut job) {
            Ok(JobOutcome::Finished(r)) => outcome_code(&r),
            Ok(JobOutcome::Skipped(_)) => exit::LOCKED,
            Err(e) => {
                tracing::error!("Backup failed: {e}");
                exit::ERROR
            }
        }
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let serving = scope.spawn(|| super::trigger::serve(&socket, &gate, &run_now));
        // The trigger socket is up (or failed) before the schedule is announced.
        std::thread::sleep(std::time::Duration::from_millis(50));
        if serving.is_finished() {
            return match serving.join() {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("the manual trigger thread panicked")),
            };
        }
        tracing::info!(
            socket = %socket.display(),
            "manual runs: `backup` or `coffer trigger` (docker exec <container> backup)"
        );
        let mut make = || -> Box<dyn JobSteps> { Box::new(CliJob::new(g2.clone(), cfg.clone())) };
        run_forever(&ctx, &schedule, &text, &mut make, &gate)?;
        Ok(())
    })?;
    Ok(exit::OK)
}

/// The exit code of a finished run: 0, 3 when only files were unreadable, else 1.
fn outcome_code(r: &crate::daemon::state::JobRecord) -> u8 {
    if r.status == JobStatus::Success {
        exit::OK
    } else if r.steps.iter().any(|s| s.status == "failed") {
        exit::ERROR
    } else {
        exit::PARTIAL
    }
}

/// Places where a CA bundle for TLS is found (Debian, RHEL, Alpine, the coffer image).
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// With an https target (offsite S3, notifications), a trust store must exist: found at
/// start, not by a failed TLS handshake at 2 a.m.
fn check_tls_roots(cfg: &DaemonConfig) -> anyhow::Result<()> {
    let https = cfg.sync.as_ref().is_some_and(|s| s.to.contains("https://"))
        || cfg
            .notify
            .webhooks
            .iter()
            .any(|u| u.starts_with("https://"))
        || cfg.notify.pings.iter().any(|u| u.starts_with("https://"))
        || !cfg.notify.targets.is_empty();
    if !https {
        return Ok(());
    }
    let env_file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let found = env_file
        .iter()
        .chain(
            CA_BUNDLES
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
                .iter(),
        )
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0));
    if !found {
        anyhow::bail!(
            "no CA certificates for TLS (looked at SSL_CERT_FILE and {}): use the coffer image \
             built by docs/docker/build-image.sh, which bundles them, or mount the host's \
             /etc/ssl/certs",
            CA_BUNDLES.join(", ")
        );
    }
    Ok(())
}

/// The Docker engine, when one is configured (`DOCKER_HOST`) or its socket is mounted; `None`
/// when there is none (then no container is stopped). A socket that is there but cannot be
/// used is an error: containers that should stop would otherwise be read while running.
fn docker_if_reachable(io: &IoRuntime) -> anyhow::Result<Option<crate::docker::DockerClient>> {
    let configured = std::env::var_os("DOCKER_HOST").is_some_and(|h| !h.is_empty());
    if !configured && !std::path::Path::new("/var/run/docker.sock").exists() {
        return Ok(None);
    }
    let client = crate::docker::DockerClient::connect(None, io)
        .context("the Docker engine (to stop labelled containers during the backup)")?;
    Ok(Some(client))
}

/// The host name recorded in snapshots: the configuration's (or `COFFER_HOST`), else the name
/// of the container coffer runs in (stable across `docker-compose up --force-recreate`, where
/// the container id, Docker's default host name, is not), else the host name.
fn stable_host(cfg: &DaemonConfig, io: &IoRuntime) -> String {
    if let Some(h) = &cfg.host {
        return h.clone();
    }
    if std::path::Path::new("/.dockerenv").exists()
        && let Ok(Some(client)) = docker_if_reachable(io)
        && let Some(name) = crate::docker::backup::own_container_name(&client)
    {
        return name;
    }
    engine::session::hostname()
}

/// The steps of one run, with the repository opened once by the first step.
struct CliJob {
    g: Global,
    cfg: DaemonConfig,
    host: String,
    opened: Option<Session>,
    /// The snapshot the backup step wrote (the archive step exports it).
    snapshot: Option<String>,
}

fn err(e: anyhow::Error) -> StepError {
    StepError::Failed(one_line(&e))
}

impl CliJob {
    fn new(g: Global, cfg: DaemonConfig) -> Self {
        let host = cfg.host.clone().unwrap_or_else(engine::session::hostname);
        Self {
            g,
            cfg,
            host,
            opened: None,
            snapshot: None,
        }
    }

    /// When the default local repository is missing but the offsite one exists (a recreated
    /// container without a volume at /archive, a new server), create the local one with the
    /// offsite repository's key, so that sync keeps working and dedup starts from it.
    fn local_from_offsite(&self) -> anyhow::Result<Option<Session>> {
        let Some(s) = &self.cfg.sync else {
            return Ok(None);
        };
        let (loc, is_default) = super::commands::location(&self.g)?;
        let local = crate::engine::session::Store::at(&loc, &self.g.io)?;
        if !is_default || local.holds_repository() {
            return Ok(None);
        }
        let offsite = Location::parse(&s.to)
            .map_err(crate::engine::session::SessionError::from)
            .and_then(|l| crate::engine::session::Store::at(&l, &self.g.io))
            .with_context(|| format!("sync.to {}", s.to))?;
        let Ok(found) = offsite.find() else {
            return Ok(None);
        };
        let pw = super::password::passphrase(&self.g, false)?;
        let opts = open_options(&self.g).any_key();
        let source = found
            .open(&pw, &opts)
            .with_context(|| format!("opening the offsite repository {}", s.to))?;
        let repo = local.init_from(&source, &pw, KdfParams::DEFAULT, &opts)?;
        tracing::warn!(
            "the local repository was missing: created {} with the key of the offsite \
             repository {} (mount a volume at its directory to keep it across container \
             re-creation)",
            repo.store().describe(),
            source.store().describe()
        );
        Ok(Some(Session::with_repository(
            repo,
            &open_options(&self.g),
        )?))
    }

    fn open(&mut self) -> anyhow::Result<&Session> {
        if self.opened.is_none() {
            let session = match self.local_from_offsite()? {
                Some(s) => s,
                None => open_for_backup(&self.g, &open_options(&self.g))?,
            };
            self.opened = Some(session);
        }
        self.opened
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the repository is not open"))
    }

    /// The directory sources: the listed ones, then each subdirectory of `sources_dir`.
    fn directory_sources(&self) -> anyhow::Result<Vec<SourceSpec>> {
        let b = &self.cfg.backup;
        let mut out = b
            .sources
            .iter()
            .map(|s| SourceSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dir) = &b.sources_dir {
            let mut names = Vec::new();
            for e in std::fs::read_dir(dir)
                .with_context(|| format!("backup.sources_dir {}", dir.display()))?
            {
                let e = e.with_context(|| format!("backup.sources_dir {}", dir.display()))?;
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            if names.is_empty() {
                anyhow::bail!(
                    "backup.sources_dir {} has no subdirectories to back up",
                    dir.display()
                );
            }
            for n in names {
                out.push(SourceSpec {
                    path: dir.join(&n),
                    name: n,
                });
            }
        }
        Ok(out)
    }

    fn backup_inner(&mut self) -> anyhow::Result<StepResult> {
        let sources = self.directory_sources()?;
        let (b, host) = (self.cfg.backup.clone(), self.host.clone());
        let io = self.g.io.clone();
        let o = self.open()?;
        let mut tally = Tally::default();
        let mut written = None;
        if !sources.is_empty() {
            written = Some(backup_directories(o, &b, &host, sources, &mut tally, &io)?);
        }
        if let Some(d) = &b.docker {
            backup_docker_volumes(o, &b, d, &host, &mut tally, &io)?;
        }
        self.snapshot = written;
        Ok(StepResult::Done(tally.done()))
    }

    fn archive_inner(&mut self) -> anyhow::Result<StepResult> {
        let Some(a) = self.cfg.archive.clone() else {
            return Ok(StepResult::NotConfigured(
                "no BACKUP_FILENAME: no tar.gz archive is written".into(),
            ));
        };
        let snapshot = self
            .snapshot
            .clone()
            .context("the backup step wrote no directory snapshot to archive")?;
        let retention_days = self.cfg.retention.policy.retention_days;
        let Session { repo, catalog } = self.open()?;
        let opts = crate::engine::export::ExportOptions {
            snapshot,
            level: a.level,
            ..Default::default()
        };
        let s = crate::engine::export::export_archive(
            repo,
            catalog,
            &opts,
            &a.dir,
            &a.filename,
            a.gpg_passphrase.as_deref().map(str::as_bytes),
            &Progress::default(),
        )
        .with_context(|| format!("writing the archive into {}", a.dir.display()))?;
        let mut detail = format!(
            "{} ({}, {} files)",
            s.output.as_deref().unwrap_or("?"),
            bytes(s.archive_bytes),
            s.files
        );
        if let Some(days) = retention_days {
            let p = crate::engine::archive_prune::apply(&a.dir, &a.pruning_prefix, days)
                .with_context(|| format!("pruning old archives in {}", a.dir.display()))?;
            detail.push_str(&format!(
                "; {} archives older than {days} days deleted",
                p.deleted.len()
            ));
            for d in &p.deleted {
                tracing::info!("removed old archive {}", a.dir.join(d).display());
            }
            if let Some(why) = p.refused {
                tracing::warn!("{why}");
            }
        }
        Ok(StepResult::Done(StepDone {
            detail,
            ..Default::default()
        }))
    }

    fn forget_inner(&mut self) -> anyhow::Result<StepResult> {
        let r = self.cfg.retention.clone();
        if r.policy.is_empty() {
            return Ok(StepResult::NotConfigured(
                "no retention policy: set [retention] keep_* or retention_days \
                 (BACKUP_RETENTION_DAYS)"
                    .into(),
            ));
        }
        let host = self.host.clone();
        let Session { repo, catalog } = self.open()?;
        let opts = ForgetOptions {
            policy: r.policy,
            ids: Vec::new(),
            group_by: r.group_by,
            // Only this host's snapshots: other hosts sharing the repository run their own.
            host: Some(host),
            tags: Vec::new(),
            dry_run: false,
            prune: r.prune.then_some(PruneOptions {
                max_unused_percent: r.max_unused_percent,
                ..PruneOptions::default()
            }),
        };
        let s = engine::forget::forget(repo, catalog, &opts, &Progress::default())?;
        let mut detail = format!("{} snapshots kept, {} removed", s.kept, s.removed);
        if let Some(p) = &s.prune {
            detail.push_str(&format!(
                "; prune: {} packs deleted, {} repacked, repository {} -> {}",
                p.packs_deleted,
                p.plan.packs_to_repack,
                bytes(p.bytes_before),
                bytes(p.bytes_after)
            ));
        }
        Ok(StepResult::Done(StepDone {
            detail,
            ..Default::default()
        }))
    }

    fn check_inner(&mut self) -> anyhow::Result<StepResult> {
        let Some(subset) = self.cfg.check else {
            return Ok(StepResult::NotConfigured(
                "disabled ([check] enabled = false)".into(),
            ));
        };
        let Session { repo, catalog } = self.open()?;
        let r = engine::check::check_with_catalog(
            repo,
            Some(catalog),
            &CheckOptions {
                read_data: false,
                read_data_subset: Some(subset),
                acknowledge_vanished: false,
            },
            &Progress::default(),
        )?;
        if let Some(p) = r.problems.first() {
            anyhow::bail!(
                "{} problems found (first: {}: {}{})",
                r.problems.len(),
                p.object,
                p.message,
                p.affects
                    .first()
                    .map(|a| format!(", affects {a}"))
                    .unwrap_or_default()
            );
        }
        for w in &r.warnings {
            tracing::warn!("{}: {}", w.object, w.message);
        }
        // No damage, but snapshots gone without a forget here: the run is reported as failed
        // (exit 3 from run-job, a notification) until `coffer check --acknowledge-vanished`.
        let incomplete = r.vanished_snapshots.first().map(|v| {
            format!(
                "{} snapshots vanished from the repository without a forget on this host \
                 (first: {} of {}); once explained, `coffer check --acknowledge-vanished`",
                r.vanished_snapshots.len(),
                v.short_id(),
                v.time
            )
        });
        Ok(StepResult::Done(StepDone {
            detail: format!(
                "{} snapshots, {} packs; read {} in {} packs; no errors",
                r.snapshots,
                r.packs,
                bytes(r.bytes_read),
                r.packs_read
            ),
            incomplete,
            ..Default::default()
        }))
    }

    fn sync_inner(&mut self) -> anyhow::Result<StepResult> {
        let Some(s) = self.cfg.sync.clone() else {
            return Ok(StepResult::NotConfigured("no [sync] section".into()));
        };
        let pw = match &s.password_file {
            Some(f) => {
                let bytes = zeroize::Zeroizing::new(
                    std::fs::read(f)
                        .with_context(|| format!("sync.password_file {}", f.display()))?,
                );
                let line = bytes.split(|&b| b == b'\n').next().unwrap_or(b"");
                zeroize::Zeroizing::new(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
            }
            None => super::password::passphrase(&self.g, false)?,
        };
        let store = Location::parse(&s.to)
            .map_err(crate::engine::session::SessionError::from)
            .and_then(|l| crate::engine::session::Store::at(&l, &self.g.io))
            .with_context(|| format!("sync.to {}", s.to))?;
        let opts = open_options(&self.g).any_key();
        let target = match store.find() {
            Ok(found) => found
                .open(&pw, &opts)
                .with_context(|| format!("sync.to {}", s.to))?,
            Err(e) if e.is_missing() && s.create => {
                let local = &self.open()?.repo;
                let t = store
                    .init_from(local, &pw, KdfParams::DEFAULT, &opts)
                    .with_context(|| format!("creating the offsite repository {}", s.to))?;
                tracing::info!(
                    "created the offsite repository {} (same master key as the local one)",
                    t.store().describe()
                );
                t
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("sync.to {}", s.to))),
        };
        let o = self.open()?;
        let r = engine::sync::sync(
            &o.repo,
            &o.catalog,
            &target,
            &SyncOptions::default(),
            &Progress::default(),
        )?;
        Ok(StepResult::Done(StepDone {
            detail: format!(
                "to {}: {} snapshots copied ({} already there), {} written",
                r.target,
                r.snapshots_copied,
                r.snapshots_skipped,
                bytes(r.bytes_copied)
            ),
            ..Default::default()
        }))
    }
}

impl JobSteps for CliJob {
    fn backup(&mut self) -> Result<StepResult, StepError> {
        self.backup_inner().map_err(err)
    }

    fn archive(&mut self) -> Result<StepResult, StepError> {
        self.archive_inner().map_err(err)
    }

    fn forget(&mut self) -> Result<StepResult, StepError> {
        self.forget_inner().map_err(err)
    }

    fn check(&mut self) -> Result<StepResult, StepError> {
        self.check_inner().map_err(err)
    }

    fn sync(&mut self) -> Result<StepResult, StepError> {
        self.sync_inner().map_err(err)
    }

    fn repository_stats(&mut self) -> Option<(u64, u64)> {
        let Session { repo, catalog } = self.opened.as_ref()?;
        catalog.refresh(repo).ok()?;
        let snapshots = catalog.snapshots().ok()?.len() as u64;
        let stored = repo.list_packs().ok()?.iter().map(|(_, s)| s).sum();
        Some((stored, snapshots))
    }
}

/// What the backup step did so far: snapshots, the parts of its one-line detail, and the
/// files it could not read.
#[derive(Default)]
struct Tally {
    done: StepDone,
    parts: Vec<String>,
    warnings: usize,
    first_warning: Option<String>,
}

impl Tally {
    fn done(mut self) -> StepDone {
        if self.warnings > 0 {
            self.done.incomplete = Some(format!(
                "the snapshot is incomplete: {} files could not be read (first: {})",
                self.warnings,
                self.first_warning.unwrap_or_default()
            ));
        }
        self.done.detail = self.parts.join("; ");
        self.done
    }
}

/// Back up the directory sources into one snapshot, stopping the containers labelled for
/// it while it runs (when Docker is reachable). Returns the snapshot's id.
fn backup_directories(
    o: &Session,
    b: &crate::daemon::config::BackupConfig,
    host: &str,
    sources: Vec<SourceSpec>,
    tally: &mut Tally,
    io: &IoRuntime,
) -> anyhow::Result<String> {
    let Session { repo, catalog } = o;
    let stopping = match &b.stop_label_value {
        Some(v) => docker_if_reachable(io)?.map(|c| (c, v.clone())),
        None => None,
    };
    let opts = BackupOptions {
        sources,
        tags: b.tags.clone(),
        host: host.to_string(),
        excludes: b.excludes.clone(),
        exclude_regexes: b.exclude_regexes.clone(),
        parent: None,
        force: false,
        time: None,
        ..Default::default()
    };
    let s = match &stopping {
        Some((client, value)) => {
            let r = engine::volume_backup::backup_sources(
                client,
                repo,
                catalog,
                &opts,
                value,
                std::time::Duration::from_secs(b.stop_timeout_secs),
                &Progress::default(),
            )
            .with_context(|| format!("backup into {}", repo.store().describe()))?;
            if !r.containers.is_empty() {
                let longest = r
                    .containers
                    .iter()
                    .map(|c| c.downtime_secs)
                    .fold(0.0, f64::max);
                let names: Vec<&str> = r.containers.iter().map(|c| c.name.as_str()).collect();
                tally.parts.push(format!(
                    "stopped {} for at most {longest:.1}s",
                    names.join(", ")
                ));
            }
            r.snapshot
        }
        None => engine::backup::backup(repo, catalog, &opts, &Progress::default())
            .with_context(|| format!("backup into {}", repo.store().describe()))?,
    };
    tally.parts.insert(
        0,
        format!(
            "snapshot {}: {} files, {} read, {} added",
            s.snapshot_id.map(|i| i.short()).unwrap_or_default(),
            s.files,
            bytes(s.bytes_read),
            bytes(s.bytes_added)
        ),
    );
    tally.warnings += s.warnings.len();
    if let Some(w) = s.warnings.first() {
        tally.first_warning = Some(format!("{}: {}", w.path, w.message));
    }
    let id = s.snapshot_id.map(|i| i.to_hex()).unwrap_or_default();
    tally.done.snapshots.push(id.clone());
    tally.done.bytes_added += s.bytes_added;
    Ok(id)
}

/// Back up the Docker volumes of `[backup.docker]`, a snapshot each; any volume that fails
/// fails the step.
fn backup_docker_volumes(
    o: &Session,
    b: &crate::daemon::config::BackupConfig,
    d: &crate::daemon::config::DockerConfig,
    host: &str,
    tally: &mut Tally,
    io: &IoRuntime,
) -> anyhow::Result<()> {
    let client = crate::docker::DockerClient::connect(d.docker_host.as_deref(), io)?;
    let mount_dir = d
        .volume_dir
        .clone()
        .or_else(|| std::env::var_os("COFFER_DOCKER_VOLUME_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::docker::volume::DEFAULT_MOUNT_DIR));
    let opts = engine::volume_backup::DockerBackupOptions {
        selection: crate::docker::VolumeSelection {
            names: d.volumes.clone(),
            all: d.all_volumes,
            labels: d.volume_labels.clone(),
            compose_project: d.compose_project.clone(),
        },
        stop_label_value: d.stop_label_value.clone(),
        stop_timeout_secs: d.stop_timeout_secs,
        mount_dir,
        single_pass: d.single_pass,
        tags: b.tags.clone(),
        host: host.to_string(),
        excludes: b.excludes.clone(),
        exclude_regexes: b.exclude_regexes.clone(),
        force: false,
    };
    let s = engine::volume_backup::backup_volumes(
        &client,
        &o.repo,
        &o.catalog,
        &opts,
        &Progress::default(),
    )
    .with_context(|| format!("Docker backup into {}", o.repo.store().describe()))?;
    for v in &s.volumes {
        if let Some(snap) = &v.snapshot {
            tally
                .done
                .snapshots
                .extend(snap.snapshot_id.map(|i| i.to_hex()));
            tally.done.bytes_added += snap.bytes_added;
            tally.warnings += snap.warnings.len();
            if let Some(w) = snap.warnings.first() {
                tally
                    .first_warning
                    .get_or_insert(format!("{}: {}: {}", v.volume, w.path, w.message));
            }
        }
    }
    if s.failed > 0 {
        let why: Vec<String> = s
            .volumes
            .iter()
            .filter_map(|v| {
                v.error
                    .as_ref()
                    .map(|e| format!("volume {}: {e}", v.volume))
            })
            .collect();
        anyhow::bail!("{} volumes failed: {}", s.failed, why.join("; "));
    }
    tally.parts.push(format!(
        "{} volumes, longest container downtime {:.1}s",
        s.volumes.len(),
        s.max_downtime_secs
    ));
    Ok(())
}
