//! The daemon's configuration: a TOML file, overlaid with the old offen/docker-volume-backup
//! environment variables where they mean something here. Pure: the caller reads the file and
//! passes the environment as a lookup function. Every error names the key and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::legacy_env;
use super::schedule::Schedule;
use crate::engine::check::Subset;
use crate::engine::retention::{GroupBy, Policy, parse_duration};

/// The schedule when none is given: 02:00 UTC every day, as the old setup ran.
pub const DEFAULT_SCHEDULE: &str = "0 2 * * *";
/// The share of packs read by the nightly check when none is given: a week covers everything.
pub const DEFAULT_CHECK_SUBSET: &str = "1/7";
/// How long one notification request may take.
pub const DEFAULT_NOTIFY_TIMEOUT_SECS: u64 = 10;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or has an unknown key.
    #[error("invalid configuration file: {0}")]
    Syntax(String),
    /// A key has a value that cannot be used.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The key (`retention.keep_daily`) or environment variable.
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// A webhook or ping URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookUrlError {
    /// It does not parse.
    #[error("{0}")]
    Parse(String),
    /// It is not http(s).
    #[error("scheme {0}: is not http or https")]
    Scheme(String),
}

/// A listen address that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address such as 127.0.0.1:9184 or :9184")]
pub struct ListenAddrError(pub String);

fn invalid(key: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

// ---- The file as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    repository: Option<String>,
    password_file: Option<PathBuf>,
    schedule: Option<String>,
    interval: Option<String>,
    host: Option<String>,
    backup: RawBackup,
    retention: RawRetention,
    check: RawCheck,
    sync: Option<RawSync>,
    notify: RawNotify,
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawBackup {
    sources: Vec<String>,
    sources_dir: Option<PathBuf>,
    exclude: Vec<String>,
    exclude_regex: Vec<String>,
    stop_label_value: Option<String>,
    stop_timeout_secs: Option<u64>,
    tags: Vec<String>,
    docker: Option<RawDocker>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawDocker {
    volumes: Vec<String>,
    all_volumes: bool,
    volume_labels: Vec<String>,
    compose_project: Option<String>,
    stop_label_value: Option<String>,
    stop_timeout_secs: Option<u64>,
    volume_dir: Option<PathBuf>,
    single_pass: bool,
    docker_host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRetention {
    keep_last: u32,
    keep_hourly: u32,
    keep_daily: u32,
    keep_weekly: u32,
    keep_monthly: u32,
    keep_yearly: u32,
    keep_within: Option<String>,
    keep_tags: Vec<String>,
    retention_days: Option<u32>,
    group_by: Option<String>,
    prune: Option<bool>,
    max_unused: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCheck {
    enabled: Option<bool>,
    read_data_subset: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSync {
    to: String,
    password_file: Option<PathBuf>,
    create: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNotify {
    webhooks: Vec<String>,
    urls: Vec<String>,
    on_success: bool,
    pings: Vec<String>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    textfile: Option<PathBuf>,
}

// ---- The validated configuration ----

/// Everything the daemon and `run-job` need.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Repository location (path or `s3://`); `None`: the global `--repo`.
    pub repository: Option<String>,
    /// Passphrase file; `None`: the global one.
    pub password_file: Option<PathBuf>,
    /// When the job runs.
    pub schedule: Schedule,
    /// The schedule as written, for logs.
    pub schedule_text: String,
    /// Host name recorded in snapshots; `None`: this host.
    pub host: Option<String>,
    /// What to back up.
    pub backup: BackupConfig,
    /// Retention, then prune.
    pub retention: RetentionConfig,
    /// Share of packs read by the check; `None`: no check step.
    pub check: Option<Subset>,
    /// Offsite copy.
    pub sync: Option<SyncConfig>,
    /// The nightly archive of the old setup (`BACKUP_FILENAME`), written after the backup.
    pub archive: Option<ArchiveConfig>,
    /// Who hears about a run.
    pub notify: NotifyConfig,
    /// Where metrics go.
    pub metrics: MetricsConfig,
}

/// What to back up.
#[derive(Clone, Debug, Default)]
pub struct BackupConfig {
    /// `NAME=PATH` or `PATH`.
    pub sources: Vec<String>,
    /// Every subdirectory of this directory is a source named after it (the old `/backup`).
    pub sources_dir: Option<PathBuf>,
    /// Glob excludes, as for `backup --exclude`.
    pub excludes: Vec<String>,
    /// Regular expressions on full paths (the old `BACKUP_EXCLUDE_REGEXP`).
    pub exclude_regexes: Vec<String>,
    /// For `sources` and `sources_dir`: running containers whose stop label has this value
    /// and that mount a backed-up volume are stopped for a short second pass (when the Docker
    /// engine can be reached). `None`: never stop containers.
    pub stop_label_value: Option<String>,
    /// Seconds a stopping container gets.
    pub stop_timeout_secs: u64,
    /// Tags of every snapshot.
    pub tags: Vec<String>,
    /// Docker volumes.
    pub docker: Option<DockerConfig>,
}

/// Docker volumes to back up (the options of `backup --docker`).
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    /// Volumes by name.
    pub volumes: Vec<String>,
    /// Every volume.
    pub all_volumes: bool,
    /// Volumes with these labels.
    pub volume_labels: Vec<String>,
    /// Volumes of this compose project.
    pub compose_project: Option<String>,
    /// Stop containers whose stop label has this value.
    pub stop_label_value: String,
    /// Seconds a stopping container gets.
    pub stop_timeout_secs: u64,
    /// Where volumes are mounted when coffer runs in a container.
    pub volume_dir: Option<PathBuf>,
    /// One read with containers stopped instead of two passes.
    pub single_pass: bool,
    /// Docker engine address.
    pub docker_host: Option<String>,
}

/// Retention and prune.
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// The policy; empty means no forget step.
    pub policy: Policy,
    /// Grouping.
    pub group_by: GroupBy,
    /// Prune after forgetting.
    pub prune: bool,
    /// Prune's tolerated unused space, percent.
    pub max_unused_percent: f64,
}

/// Where to sync to.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Target repository location.
    pub to: String,
    /// The target's passphrase file (default: the source's passphrase).
    pub password_file: Option<PathBuf>,
    /// Create the target (as `init --from`) when it does not exist yet.
    pub create: bool,
}

/// The nightly archive.
pub type ArchiveConfig = legacy_env::ArchiveEnv;

/// Notification targets.
#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    /// URLs that get a JSON POST on failure (and on success with `on_success`).
    pub webhooks: Vec<String>,
    /// Post to webhooks on success too.
    pub on_success: bool,
    /// healthchecks-style URLs: `<url>/start`, `<url>`, `<url>/fail`.
    pub pings: Vec<String>,
    /// shoutrrr-style targets (`smtp://`, `generic+https://`, `telegram://`, `slack://`,
    /// `discord://`) and the old `EMAIL_*` recipient: a title and a message on failure (and
    /// on success with `on_success`).
    pub targets: Vec<super::shoutrrr::Target>,
    /// Seconds per request.
    pub timeout_secs: u64,
}

/// Metrics outputs.
#[derive(Clone, Debug, Default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` here.
    pub listen: Option<SocketAddr>,
    /// Write the metrics to this file (node_exporter textfile collector).
    pub textfile: Option<PathBuf>,
}

/// The parsed configuration and what the environment changed (for the start-up log).
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: DaemonConfig,
    /// One line per environment variable that was applied.
    pub notes: Vec<String>,
}

/// Parse `text` (the file; empty when there is none) and overlay the old tool's environment
/// variables read through `env` (they win over the file, as in a compose file).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
        ConfigError::Syntax(e.to_string().trim().replace('\n', " ").replace("  ", " "))
    })?;
    let old = legacy_env::read(env)?;
    if let Some(v) = old.schedule {
        raw.schedule = Some(v);
        raw.interval = None;
    } else if text.trim().is_empty() && raw.schedule.is_none() {
        // No file and no BACKUP_CRON_EXPRESSION: the old tool's default.
        raw.schedule = Some(legacy_env::DEFAULT_CRON.into());
    }
    if let Some(n) = old.retention_days {
        raw.retention.retention_days = Some(n);
    }
    if let Some(d) = old.sources_dir {
        raw.backup.sources_dir = Some(d);
    }
    raw.backup.exclude_regex.extend(old.exclude_regex);
    let notes = old.notes;
    if let Some(v) = old.stop_label_value {
        match raw.backup.docker.as_mut() {
            Some(d) => d.stop_label_value = Some(v),
            None => raw.backup.stop_label_value = Some(v),
        }
    }
    if old.host.is_some() {
        raw.host = old.host;
    }
    // With nothing else to back up, the old tool's default: every volume under /backup.
    if raw.backup.sources.is_empty()
        && raw.backup.sources_dir.is_none()
        && raw.backup.docker.is_none()
    {
        raw.backup.sources_dir = Some(PathBuf::from(legacy_env::DEFAULT_SOURCES));
    }
    if let Some(to) = old.s3_target {
        raw.sync = Some(RawSync {
            to,
            password_file: None,
            create: true,
        });
    }
    raw.notify.urls.extend(old.notification_urls);
    raw.notify.on_success |= old.notify_on_success;
    let mut config = validate(raw)?;
    config.archive = old.archive;
    // The EMAIL_* variables, each also as a _FILE (Docker secrets); a secret file that cannot
    // be read stops the start, naming it, rather than a mail sent without its password.
    for k in [
        "EMAIL_NOTIFICATION_RECIPIENT",
        "EMAIL_NOTIFICATION_SENDER",
        "EMAIL_SMTP_HOST",
        "EMAIL_SMTP_PORT",
        "EMAIL_SMTP_USERNAME",
        "EMAIL_SMTP_PASSWORD",
    ] {
        legacy_env::lookup(env, k).map_err(|e| invalid(k, e))?;
    }
    let with_files = |k: &str| legacy_env::lookup(env, k).ok().flatten();
    if let Some(mail) = super::mail::from_env(&with_files).map_err(|e| invalid("EMAIL_SMTP", e))? {
        config
            .notify
            .targets
            .push(super::shoutrrr::Target::Smtp(mail));
    }
    Ok(Loaded { config, notes })
}

fn validate(raw: RawConfig) -> Result<DaemonConfig, ConfigError> {
    let (schedule, schedule_text) = schedule(raw.schedule, raw.interval)?;
    if let Some(r) = &raw.repository
        && r.trim().is_empty()
    {
        return Err(invalid("repository", "is empty"));
    }
    let backup = backup(raw.backup)?;
    let retention = retention(raw.retention)?;
    let check = check(raw.check)?;
    let sync = sync(raw.sync)?;
    let notify = notify(raw.notify)?;
    let listen = raw
        .metrics
        .listen
        .as_deref()
        .map(parse_listen)
        .transpose()
        .map_err(|e| invalid("metrics.listen", e))?;
    Ok(DaemonConfig {
        repository: raw.repository,
        password_file: raw.password_file,
        schedule,
        schedule_text,
        host: raw.host,
        backup,
        retention,
        check,
        sync,
        archive: None,
        notify,
        metrics: MetricsConfig {
            listen,
            textfile: raw.metrics.textfile,
        },
    })
}

/// `schedule` or `interval` (not both), else the default schedule; with its text for
/// messages.
fn schedule(
    schedule: Option<String>,
    interval: Option<String>,
) -> Result<(Schedule, String), ConfigError> {
    match (schedule, interval) {
        (Some(_), Some(_)) => Err(invalid(
            "interval",
            "give either schedule or interval, not both",
        )),
        (Some(s), None) => Ok((Schedule::parse(&s).map_err(|e| invalid("schedule", e))?, s)),
        (None, Some(i)) => {
            let secs = parse_duration(&i).map_err(|e| invalid("interval", e))?;
            if secs < 1 {
                return Err(invalid("interval", "must be at least 1s"));
            }
            Ok((Schedule::Every(secs as u64), format!("every {i}")))
        }
        (None, None) => Ok((
            Schedule::parse(DEFAULT_SCHEDULE).map_err(|e| invalid("schedule", e))?,
            DEFAULT_SCHEDULE.to_string(),
        )),
    }
}

/// `[backup]`: sources that parse, something to back up, patterns that compile.
fn backup(b: RawBackup) -> Result<BackupConfig, ConfigError> {
    for s in &b.sources {
        crate::engine::backup::SourceSpec::parse(s)
            .map_err(|e| invalid("backup.sources", e.to_string()))?;
    }
    let docker = b.docker.map(docker).transpose()?;
    if b.sources.is_empty() && b.sources_dir.is_none() && docker.is_none() {
        return Err(invalid(
            "backup",
            "nothing to back up: set backup.sources, backup.sources_dir (or BACKUP_SOURCES) or \
             a [backup.docker] section",
        ));
    }
    excludes(&b.exclude, &b.exclude_regex)?;
    let stop_timeout_secs = b.stop_timeout_secs.unwrap_or(30);
    if stop_timeout_secs > 500 {
        return Err(invalid("backup.stop_timeout_secs", "at most 500"));
    }
    Ok(BackupConfig {
        sources: b.sources,
        sources_dir: b.sources_dir,
        excludes: b.exclude,
        exclude_regexes: b.exclude_regex,
        // The old tool's default: containers labelled `...stop-during-backup=true`.
        stop_label_value: Some(b.stop_label_value.unwrap_or_else(|| "true".into()))
            .filter(|v| !v.is_empty()),
        stop_timeout_secs,
        tags: b.tags,
        docker,
    })
}

/// `[backup.docker]`: which volumes, and how long a container may take to stop.
fn docker(d: RawDocker) -> Result<DockerConfig, ConfigError> {
    let d = DockerConfig {
        volumes: d.volumes,
        all_volumes: d.all_volumes,
        volume_labels: d.volume_labels,
        compose_project: d.compose_project,
        stop_label_value: d.stop_label_value.unwrap_or_else(|| "true".into()),
        stop_timeout_secs: d.stop_timeout_secs.unwrap_or(30),
        volume_dir: d.volume_dir,
        single_pass: d.single_pass,
        docker_host: d.docker_host,
    };
    if d.volumes.is_empty()
        && !d.all_volumes
        && d.volume_labels.is_empty()
        && d.compose_project.is_none()
    {
        return Err(invalid(
            "backup.docker",
            "say which volumes: volumes = [...], all_volumes = true, volume_labels = [...] \
             or compose_project = \"...\"",
        ));
    }
    if d.stop_timeout_secs > 500 {
        return Err(invalid("backup.docker.stop_timeout_secs", "at most 500"));
    }
    Ok(d)
}

/// `backup.exclude` globs and `backup.exclude_regex` expressions compile.
fn excludes(globs: &[String], regexes: &[String]) -> Result<(), ConfigError> {
    for e in globs {
        globset::Glob::new(e.trim_end_matches('/'))
            .map_err(|x| invalid("backup.exclude", format!("{e:?}: {x}")))?;
    }
    for e in regexes {
        regex::bytes::Regex::new(e).map_err(|x| {
            invalid(
                "backup.exclude_regex",
                format!(
                    "{e:?}: {}",
                    x.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            )
        })?;
    }
    Ok(())
}

/// `[retention]`: the policy, grouping and prune threshold.
fn retention(r: RawRetention) -> Result<RetentionConfig, ConfigError> {
    let keep_within_secs = r
        .keep_within
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| invalid("retention.keep_within", e))?;
    let group_by = GroupBy::parse(r.group_by.as_deref().unwrap_or("host,sources"))
        .map_err(|e| invalid("retention.group_by", e.to_string()))?;
    let max_unused_percent = r.max_unused.unwrap_or(5.0);
    if !(0.0..=100.0).contains(&max_unused_percent) {
        return Err(invalid(
            "retention.max_unused",
            "a percentage from 0 to 100",
        ));
    }
    if r.retention_days == Some(0) {
        return Err(invalid(
            "retention.retention_days",
            "0 would forget every snapshot but the newest; use at least 1",
        ));
    }
    Ok(RetentionConfig {
        policy: Policy {
            keep_last: r.keep_last,
            keep_hourly: r.keep_hourly,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_yearly: r.keep_yearly,
            keep_within_secs,
            keep_tags: r.keep_tags,
            retention_days: r.retention_days,
        },
        group_by,
        prune: r.prune.unwrap_or(true),
        max_unused_percent,
    })
}

/// `[check]`: the subset of data read, or no check.
fn check(c: RawCheck) -> Result<Option<Subset>, ConfigError> {
    if !c.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let s = c
        .read_data_subset
        .as_deref()
        .unwrap_or(DEFAULT_CHECK_SUBSET);
    Ok(Some(
        Subset::parse(s).map_err(|e| invalid("check.read_data_subset", e))?,
    ))
}

/// `[sync]`: a target that is not empty.
fn sync(s: Option<RawSync>) -> Result<Option<SyncConfig>, ConfigError> {
    match s {
        Some(s) if s.to.trim().is_empty() => Err(invalid("sync.to", "is empty")),
        Some(s) => Ok(Some(SyncConfig {
            to: s.to,
            password_file: s.password_file,
            create: s.create,
        })),
        None => Ok(None),
    }
}

/// `[notify]`: http(s) webhooks and pings, shoutrrr URLs that parse, a sane timeout.
fn notify(n: RawNotify) -> Result<NotifyConfig, ConfigError> {
    for (key, urls) in [("notify.webhooks", &n.webhooks), ("notify.pings", &n.pings)] {
        for u in urls {
            check_url(u).map_err(|e| invalid(key, format!("{u:?}: {e}")))?;
        }
    }
    let mut targets = Vec::new();
    for u in &n.urls {
        targets.extend(super::shoutrrr::parse_list(u).map_err(|e| invalid("notify.urls", e))?);
    }
    let timeout_secs = n.timeout_secs.unwrap_or(DEFAULT_NOTIFY_TIMEOUT_SECS);
    if !(1..=300).contains(&timeout_secs) {
        return Err(invalid("notify.timeout_secs", "from 1 to 300"));
    }
    Ok(NotifyConfig {
        webhooks: n.webhooks,
        on_success: n.on_success,
        pings: n.pings,
        targets,
        timeout_secs,
    })
}

fn check_url(u: &str) -> Result<(), WebhookUrlError> {
    let url = reqwest::Url::parse(u).map_err(|e| WebhookUrlError::Parse(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        s => Err(WebhookUrlError::Scheme(s.to_string())),
    }
}

/// `ADDR:PORT`, or `:PORT` for every interface.
pub fn parse_listen(s: &str) -> Result<SocketAddr, ListenAddrError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| ListenAddrError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_ok(text: &str) -> DaemonConfig {
        parse(text, &no_env)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .config
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse_ok("[backup]\nsources = [\"/srv/data\"]\n");
        assert_eq!(c.schedule_text, DEFAULT_SCHEDULE);
        assert_eq!(c.check, Some(Subset::Fraction(1, 7)));
        assert!(c.retention.policy.is_empty());
        assert!(c.retention.prune);
        assert!(c.sync.is_none());
        assert_eq!(c.notify.timeout_secs, DEFAULT_NOTIFY_TIMEOUT_SECS);
    }

    #[test]
    fn full_file() {
        let c = parse_ok(
            r#"
repository = "/srv/coffer"
password_file = "/run/secrets/coffer"
schedule = "*/5 * * * * *"
host = "web1"
[backup]
sources = ["workspace=/backup/workspace"]
exclude = ["*.tmp"]
tags = ["nightly"]
[backup.docker]
compose_project = "app"
[retention]
keep_daily = 7
keep_weekly = 4
keep_within = "2d"
max_unused = 10
[check]
read_data_subset = "10%"
[sync]
to = "s3://bucket/coffer"
[notify]
webhooks = ["http://127.0.0.1:9/hook"]
on_success = true
pings = ["https://hc-ping.com/abc"]
[metrics]
listen = ":9184"
textfile = "/var/lib/node_exporter/coffer.prom"
"#,
        );
        assert_eq!(c.retention.policy.keep_daily, 7);
        assert_eq!(c.retention.policy.keep_within_secs, Some(2 * 86_400));
        assert_eq!(c.check, Some(Subset::Percent(10.0)));
        assert_eq!(c.metrics.listen, Some("0.0.0.0:9184".parse().unwrap()));
        assert_eq!(
            c.backup
                .docker
                .as_ref()
                .map(|d| d.stop_label_value.as_str()),
            Some("true")
        );
        assert!(c.notify.on_success);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[backup]\nsources = [\"/srv\"]\n";
        let cases: &[(&str, &str)] = &[
            ("schedule = \"0 25 * * *\"\n", "schedule"),
            ("schedule = \"0 2 * * *\"\ninterval = \"5s\"\n", "interval"),
            ("interval = \"soon\"\n", "interval"),
            (
                "[retention]\nkeep_within = \"x\"\n",
                "retention.keep_within",
            ),
            ("[retention]\ngroup_by = \"color\"\n", "retention.group_by"),
            (
                "[retention]\nretention_days = 0\n",
                "retention.retention_days",
            ),
            (
                "[check]\nread_data_subset = \"8/7\"\n",
                "check.read_data_subset",
            ),
            ("[notify]\nwebhooks = [\"ftp://x\"]\n", "notify.webhooks"),
            ("[notify]\npings = [\"not a url\"]\n", "notify.pings"),
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            ("[sync]\nto = \"\"\n", "sync.to"),
            ("shedule = \"0 2 * * *\"\n", "shedule"),
        ];
        for (extra, key) in cases {
            // Top-level keys must come before the [backup] table.
            let text = if extra.starts_with('[') {
                format!("{base}{extra}")
            } else {
                format!("{extra}{base}")
            };
            let e = parse(&text, &no_env).expect_err(&text).to_string();
            assert!(e.contains(key), "{text}: {e:?} does not name {key:?}");
        }
        // An e-mail secret file that cannot be read is named at start.
        let missing = |k: &str| {
            (k == "EMAIL_SMTP_PASSWORD_FILE").then(|| "/nonexistent/coffer-smtp".to_string())
        };
        let e = parse("", &missing).unwrap_err().to_string();
        assert!(e.contains("EMAIL_SMTP_PASSWORD_FILE"), "{e}");
        // No file and no BACKUP_SOURCES: the old tool's default, every directory under /backup.
        let c = parse("", &no_env).unwrap().config;
        assert_eq!(c.backup.sources_dir, Some(PathBuf::from("/backup")));
        assert_eq!(c.backup.stop_label_value.as_deref(), Some("true"));
        assert_eq!(c.schedule_text, "@daily");
        let e = parse("[backup.docker]\n", &no_env).unwrap_err().to_string();
        assert!(e.contains("backup.docker"), "{e}");
        let env = |k: &str| (k == "BACKUP_RETENTION_DAYS").then(|| "seven".to_string());
        let e = parse(base, &env).unwrap_err().to_string();
        assert!(e.contains("BACKUP_RETENTION_DAYS"), "{e}");
    }
}
