//! The old offen/docker-volume-backup environment variables, read and checked so that a compose
//! file moves over by swapping the image: each variable the seeds' setups use means what it
//! meant, and every other variable of the old tool is named in one warning at start, never
//! ignored silently. Pure: the environment comes in as a lookup function (a variable `X` may
//! also be given as a file named by `X_FILE`, as with the old tool's Docker secrets);
//! [`super::config`] applies the result over the file.

use std::path::PathBuf;

use super::config::ConfigError;
use super::schedule::Schedule;

/// The old tool's default `BACKUP_CRON_EXPRESSION` (used when there is no configuration file).
pub const DEFAULT_CRON: &str = "@daily";
/// The old tool's default `BACKUP_SOURCES`.
pub const DEFAULT_SOURCES: &str = "/backup";
/// The old tool's default `BACKUP_ARCHIVE`.
pub const DEFAULT_ARCHIVE_DIR: &str = "/archive";
/// The old tool's default `BACKUP_COMPRESSION_LEVEL` for gzip.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// The nightly archive the old tool wrote (`BACKUP_FILENAME` into `BACKUP_ARCHIVE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEnv {
    /// `BACKUP_ARCHIVE`.
    pub dir: PathBuf,
    /// `BACKUP_FILENAME`, a strftime pattern (`{{ .Extension }}` already replaced).
    pub filename: String,
    /// `BACKUP_PRUNING_PREFIX`, else the pattern's text before its first `%`.
    pub pruning_prefix: String,
    /// `BACKUP_COMPRESSION_LEVEL`.
    pub level: u32,
    /// `GPG_PASSPHRASE`: the archive is OpenPGP-encrypted and named `<filename>.gpg`.
    pub gpg_passphrase: Option<String>,
}

/// What the old variables say, each already checked.
#[derive(Debug, Default)]
pub struct LegacyEnv {
    /// `BACKUP_CRON_EXPRESSION`.
    pub schedule: Option<String>,
    /// `BACKUP_RETENTION_DAYS` (`-1`, the old "off", is `None`).
    pub retention_days: Option<u32>,
    /// `BACKUP_SOURCES`: its subdirectories are the sources.
    pub sources_dir: Option<PathBuf>,
    /// `BACKUP_EXCLUDE_REGEXP`, a regular expression on full paths.
    pub exclude_regex: Option<String>,
    /// `BACKUP_STOP_DURING_BACKUP_LABEL` (or its old alias `BACKUP_STOP_CONTAINER_LABEL`).
    pub stop_label_value: Option<String>,
    /// `BACKUP_FILENAME` and what goes with it; `None` when unset or `COFFER_ARCHIVE=off`.
    pub archive: Option<ArchiveEnv>,
    /// `AWS_S3_BUCKET_NAME` and friends, as an `s3://` repository location.
    pub s3_target: Option<String>,
    /// `NOTIFICATION_URLS` (checked; comma-separated, see [`super::shoutrrr::parse_list`]).
    pub notification_urls: Vec<String>,
    /// `NOTIFICATION_LEVEL=info`: notify on every run, not only on failure.
    pub notify_on_success: bool,
    /// `COFFER_HOST`: the host name recorded in snapshots.
    pub host: Option<String>,
    /// One line per variable applied, for the start-up log.
    pub notes: Vec<String>,
}

/// `X_FILE` names a file that cannot be read: the user's to fix (the path, its permissions).
#[derive(Debug, thiserror::Error)]
#[error("{name}_FILE: cannot read {path}: {source}")]
pub struct SecretFileError {
    /// The variable, without `_FILE`.
    pub name: String,
    /// The file it names.
    pub path: String,
    /// Why it cannot be read.
    pub source: std::io::Error,
}

fn invalid(key: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// `name`, else the content of the file named by `name_FILE` (not trimmed, as before: a
/// secret file's bytes are the value). Empty values count as unset.
pub fn lookup(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<String>, SecretFileError> {
    if let Some(v) = env(name).filter(|v| !v.is_empty()) {
        return Ok(Some(v));
    }
    match env(&format!("{name}_FILE")).filter(|v| !v.is_empty()) {
        Some(path) => std::fs::read_to_string(&path)
            .map(|v| Some(v).filter(|v| !v.is_empty()))
            .map_err(|source| SecretFileError {
                name: name.to_string(),
                path,
                source,
            }),
        None => Ok(None),
    }
}

/// Read the old variables through `env`; a bad value is an error naming the variable.
pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<LegacyEnv, ConfigError> {
    let get = |k: &str| lookup(env, k).map_err(|e| invalid(k, e));
    let mut out = LegacyEnv::default();
    let mut notes = Vec::new();
    let mut note = |var: &str, what: &str| notes.push(format!("{var} sets {what}"));
    out.schedule = schedule(&get)?;
    if out.schedule.is_some() {
        note("BACKUP_CRON_EXPRESSION", "the schedule");
    }
    if let Some(days) = retention_days(&get)? {
        out.retention_days = days;
        note(
            "BACKUP_RETENTION_DAYS",
            "the retention of snapshots and archives",
        );
    }
    out.sources_dir = get("BACKUP_SOURCES")?.map(PathBuf::from);
    if out.sources_dir.is_some() {
        note("BACKUP_SOURCES", "the sources (each subdirectory is one)");
    }
    out.exclude_regex = exclude_regex(&get)?;
    if out.exclude_regex.is_some() {
        note("BACKUP_EXCLUDE_REGEXP", "the excluded paths");
    }
    out.stop_label_value = match get("BACKUP_STOP_DURING_BACKUP_LABEL")? {
        Some(v) => Some(v),
        None => get("BACKUP_STOP_CONTAINER_LABEL")?,
    };
    if out.stop_label_value.is_some() {
        note("BACKUP_STOP_DURING_BACKUP_LABEL", "the stop label's value");
    }
    out.archive = archive(&get)?;
    if out.archive.is_some() {
        note("BACKUP_FILENAME", "the nightly archive");
    }
    out.s3_target = s3_target(&get)?;
    if out.s3_target.is_some() {
        note(
            "AWS_S3_BUCKET_NAME",
            "the offsite copy (sync after each run)",
        );
    }
    out.notification_urls = notification_urls(&get)?;
    if !out.notification_urls.is_empty() {
        note("NOTIFICATION_URLS", "notifications");
    }
    out.notify_on_success = notify_on_success(&get)?;
    out.host = get("COFFER_HOST")?.map(|h| h.trim().to_string());
    out.notes = notes;
    Ok(out)
}

/// `BACKUP_CRON_EXPRESSION`, checked.
fn schedule(get: &Get<'_>) -> Result<Option<String>, ConfigError> {
    let Some(v) = get("BACKUP_CRON_EXPRESSION")? else {
        return Ok(None);
    };
    Schedule::parse(&v).map_err(|e| invalid("BACKUP_CRON_EXPRESSION", e))?;
    Ok(Some(v))
}

/// `BACKUP_RETENTION_DAYS`: `Some(None)` for the old "off" (`-1`).
fn retention_days(get: &Get<'_>) -> Result<Option<Option<u32>>, ConfigError> {
    let Some(v) = get("BACKUP_RETENTION_DAYS")? else {
        return Ok(None);
    };
    let n: i64 = v.trim().parse().map_err(|_| {
        invalid(
            "BACKUP_RETENTION_DAYS",
            format!("{v:?} is not a whole number of days"),
        )
    })?;
    match n {
        -1 => Ok(Some(None)),
        1.. => u32::try_from(n)
            .map(|d| Some(Some(d)))
            .map_err(|_| invalid("BACKUP_RETENTION_DAYS", "too big")),
        _ => Err(invalid(
            "BACKUP_RETENTION_DAYS",
            "a number of days from 1, or -1 for no retention",
        )),
    }
}

/// `BACKUP_EXCLUDE_REGEXP`, compiled once to check it.
fn exclude_regex(get: &Get<'_>) -> Result<Option<String>, ConfigError> {
    let Some(v) = get("BACKUP_EXCLUDE_REGEXP")? else {
        return Ok(None);
    };
    regex::bytes::Regex::new(&v).map_err(|e| {
        invalid(
            "BACKUP_EXCLUDE_REGEXP",
            format!("not a regular expression: {}", one_line(&e.to_string())),
        )
    })?;
    Ok(Some(v))
}

/// `NOTIFICATION_URLS`, parsed once to check them.
fn notification_urls(get: &Get<'_>) -> Result<Vec<String>, ConfigError> {
    let Some(v) = get("NOTIFICATION_URLS")? else {
        return Ok(Vec::new());
    };
    super::shoutrrr::parse_list(&v).map_err(|e| invalid("NOTIFICATION_URLS", e))?;
    Ok(vec![v])
}

/// `NOTIFICATION_LEVEL`: `info` notifies on every run, `error` (the default) on failures.
fn notify_on_success(get: &Get<'_>) -> Result<bool, ConfigError> {
    match get("NOTIFICATION_LEVEL")?.as_deref().map(str::trim) {
        None | Some("error") => Ok(false),
        Some("info") => Ok(true),
        Some(v) => Err(invalid(
            "NOTIFICATION_LEVEL",
            format!("{v:?}: use error (failures only) or info (every run)"),
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

type Get<'a> = dyn Fn(&str) -> Result<Option<String>, ConfigError> + 'a;

fn archive(get: &Get<'_>) -> Result<Option<ArchiveEnv>, ConfigError> {
    let Some(filename) = get("BACKUP_FILENAME")? else {
        return Ok(None);
    };
    if let Some(v) = get("COFFER_ARCHIVE")? {
        match v.trim() {
            "off" | "false" | "0" => return Ok(None),
            "on" | "true" | "1" => {}
            _ => return Err(invalid("COFFER_ARCHIVE", "on or off")),
        }
    }
    let compression = get("BACKUP_COMPRESSION")?.unwrap_or_else(|| "gz".into());
    if compression.trim() != "gz" {
        return Err(invalid(
            "BACKUP_COMPRESSION",
            format!(
                "{compression:?}: coffer writes gzip archives (gz) only; set gz, or \
                 COFFER_ARCHIVE=off to write no archive"
            ),
        ));
    }
    let level = match get("BACKUP_COMPRESSION_LEVEL")? {
        None => DEFAULT_GZIP_LEVEL,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n @ 1..=9) => n,
            _ => {
                return Err(invalid(
                    "BACKUP_COMPRESSION_LEVEL",
                    "a gzip level from 1 to 9",
                ));
            }
        },
    };
    let filename = filename.replace("{{ .Extension }}", "tar.gz");
    if filename.contains('/') || filename.trim().is_empty() {
        return Err(invalid("BACKUP_FILENAME", "a file name, without /"));
    }
    if chrono::format::StrftimeItems::new(&filename).any(|i| i == chrono::format::Item::Error) {
        return Err(invalid("BACKUP_FILENAME", "not a valid strftime pattern"));
    }
    let pruning_prefix = match get("BACKUP_PRUNING_PREFIX")? {
        Some(p) => p,
        None => filename.split('%').next().unwrap_or_default().to_string(),
    };
    Ok(Some(ArchiveEnv {
        dir: PathBuf::from(get("BACKUP_ARCHIVE")?.unwrap_or_else(|| DEFAULT_ARCHIVE_DIR.into())),
        filename,
        pruning_prefix,
        level,
        gpg_passphrase: get("GPG_PASSPHRASE")?,
    }))
}

/// `s3://<bucket>/<path>?endpoint=<proto>://<endpoint>` from the old S3 variables.
fn s3_target(get: &Get<'_>) -> Result<Option<String>, ConfigError> {
    let Some(bucket) = get("AWS_S3_BUCKET_NAME")? else {
        return Ok(None);
    };
    let bucket = bucket.trim();
    if bucket.contains(['/', '?', '&']) {
        return Err(invalid(
            "AWS_S3_BUCKET_NAME",
            "a bucket name, without / ? &",
        ));
    }
    let path = get("AWS_S3_PATH")?.unwrap_or_default();
    let path = path.trim().trim_matches('/');
    let mut url = format!("s3://{bucket}");
    if !path.is_empty() {
        url.push('/');
        url.push_str(path);
    }
    let endpoint = get("AWS_ENDPOINT")?.unwrap_or_else(|| "s3.amazonaws.com".into());
    let endpoint = endpoint.trim().trim_end_matches('/');
    let full = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        let proto = get("AWS_ENDPOINT_PROTO")?.unwrap_or_else(|| "https".into());
        match proto.trim() {
            p @ ("http" | "https") => format!("{p}://{endpoint}"),
            p => {
                return Err(invalid(
                    "AWS_ENDPOINT_PROTO",
                    format!("{p:?}: http or https"),
                ));
            }
        }
    };
    if full.contains(['?', '&', '#']) {
        return Err(invalid("AWS_ENDPOINT", "a host name, without ? & #"));
    }
    url.push_str("?endpoint=");
    url.push_str(&full);
    if endpoint.ends_with("s3.amazonaws.com") {
        // AWS itself wants virtual-host addressing for new buckets.
        url.push_str("&virtual_host=true");
    }
    Ok(Some(url))
}

/// The old tool's variables that coffer does not carry out, among `names` (the names set in
/// the environment): each is named in one warning at start.
pub fn unsupported(names: &[String]) -> Vec<String> {
    const EXACT: &[&str] = &[
        "BACKUP_JITTER",
        "BACKUP_FILENAME_EXPAND",
        "GZIP_PARALLELISM",
        "BACKUP_LATEST_SYMLINK",
        "BACKUP_FROM_SNAPSHOT",
        "BACKUP_PRUNING_LEEWAY",
        "BACKUP_SKIP_BACKENDS_FROM_PRUNE",
        "BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL",
        "BACKUP_STOP_SERVICE_TIMEOUT",
        "GPG_PUBLIC_KEY_RING",
        "AGE_PASSPHRASE",
        "AGE_PUBLIC_KEYS",
        "AWS_IAM_ROLE_ENDPOINT",
        "AWS_ENDPOINT_INSECURE",
        "AWS_ENDPOINT_CA_CERT",
        "AWS_STORAGE_CLASS",
        "AWS_PART_SIZE",
        "EXEC_LABEL",
        "EXEC_FORWARD_OUTPUT",
        "LOCK_TIMEOUT",
    ];
    const PREFIXES: &[&str] = &[
        "WEBDAV_",
        "SSH_",
        "AZURE_STORAGE_",
        "DROPBOX_",
        "GOOGLE_DRIVE_",
    ];
    let mut out: Vec<String> = names
        .iter()
        .map(|n| n.strip_suffix("_FILE").unwrap_or(n))
        .filter(|n| EXACT.contains(n) || PREFIXES.iter().any(|p| n.starts_with(p)))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn the_first_seeds_variables_apply() {
        let env = env_of(&[
            ("BACKUP_CRON_EXPRESSION", "0 2 * * *"),
            ("BACKUP_FILENAME", "claude-backup-%Y%m%d-%H%M%S.tar.gz"),
            ("BACKUP_RETENTION_DAYS", "7"),
            ("BACKUP_PRUNING_PREFIX", "claude-backup-"),
            ("BACKUP_ARCHIVE", "/archive"),
            ("BACKUP_COMPRESSION", "gz"),
            ("BACKUP_COMPRESSION_LEVEL", "6"),
            (
                "BACKUP_EXCLUDE_REGEXP",
                ".*\\.log$|.*\\.cache$|node_modules",
            ),
        ]);
        let l = read(&env).unwrap();
        assert_eq!(l.schedule.as_deref(), Some("0 2 * * *"));
        assert_eq!(l.retention_days, Some(7));
        assert_eq!(
            l.exclude_regex.as_deref(),
            Some(".*\\.log$|.*\\.cache$|node_modules")
        );
        let a = l.archive.unwrap();
        assert_eq!(a.dir, PathBuf::from("/archive"));
        assert_eq!(a.filename, "claude-backup-%Y%m%d-%H%M%S.tar.gz");
        assert_eq!(a.pruning_prefix, "claude-backup-");
        assert_eq!(a.level, 6);
        assert_eq!(a.gpg_passphrase, None);
        assert!(l.s3_target.is_none());
    }

    #[test]
    fn s3_variables_become_a_location() {
        let env = env_of(&[
            ("AWS_S3_BUCKET_NAME", "agent-os-backups"),
            ("AWS_ENDPOINT", "fsn1.your-objectstorage.com"),
            ("AWS_S3_PATH", "/prod/"),
        ]);
        assert_eq!(
            read(&env).unwrap().s3_target.as_deref(),
            Some("s3://agent-os-backups/prod?endpoint=https://fsn1.your-objectstorage.com")
        );
        let env = env_of(&[
            ("AWS_S3_BUCKET_NAME", "b"),
            ("AWS_ENDPOINT", "127.0.0.1:9000"),
            ("AWS_ENDPOINT_PROTO", "http"),
        ]);
        assert_eq!(
            read(&env).unwrap().s3_target.as_deref(),
            Some("s3://b?endpoint=http://127.0.0.1:9000")
        );
        let env = env_of(&[("AWS_S3_BUCKET_NAME", "b")]);
        assert_eq!(
            read(&env).unwrap().s3_target.as_deref(),
            Some("s3://b?endpoint=https://s3.amazonaws.com&virtual_host=true")
        );
        let env = env_of(&[("AWS_S3_BUCKET_NAME", "b"), ("AWS_ENDPOINT_PROTO", "ftp")]);
        assert!(read(&env).is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("BACKUP_EXCLUDE_REGEXP", "(unclosed"),
            ("BACKUP_RETENTION_DAYS", "seven"),
            ("BACKUP_RETENTION_DAYS", "0"),
            ("BACKUP_CRON_EXPRESSION", "not cron"),
            ("NOTIFICATION_LEVEL", "debug"),
        ] {
            let e = read(&env_of(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
        let e = read(&env_of(&[
            ("BACKUP_FILENAME", "x.tar.zst"),
            ("BACKUP_COMPRESSION", "zst"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("BACKUP_COMPRESSION"), "{e}");
    }

    #[test]
    fn retention_minus_one_is_off_and_archive_can_be_turned_off() {
        let l = read(&env_of(&[("BACKUP_RETENTION_DAYS", "-1")])).unwrap();
        assert_eq!(l.retention_days, None);
        let l = read(&env_of(&[
            ("BACKUP_FILENAME", "backup-%Y.tar.gz"),
            ("COFFER_ARCHIVE", "off"),
        ]))
        .unwrap();
        assert!(l.archive.is_none());
        let l = read(&env_of(&[(
            "BACKUP_FILENAME",
            "backup-%Y.{{ .Extension }}",
        )]))
        .unwrap();
        let a = l.archive.unwrap();
        assert_eq!(a.filename, "backup-%Y.tar.gz");
        assert_eq!(a.pruning_prefix, "backup-");
    }

    #[test]
    fn file_variants_are_read() {
        let dir = std::env::temp_dir().join(format!("coffer-legacy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("gpg");
        std::fs::write(&f, "s3cret").unwrap();
        let fs = f.display().to_string();
        let env = env_of(&[
            ("BACKUP_FILENAME", "b-%Y.tar.gz"),
            ("GPG_PASSPHRASE_FILE", fs.as_str()),
        ]);
        let a = read(&env).unwrap().archive.unwrap();
        assert_eq!(a.gpg_passphrase.as_deref(), Some("s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = read(&env_of(&[
            ("BACKUP_FILENAME", "b-%Y.tar.gz"),
            ("GPG_PASSPHRASE_FILE", "/nonexistent/coffer"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("GPG_PASSPHRASE_FILE"), "{e}");
    }

    #[test]
    fn unsupported_variables_are_named() {
        let names: Vec<String> = [
            "BACKUP_CRON_EXPRESSION",
            "WEBDAV_URL",
            "AGE_PASSPHRASE_FILE",
            "BACKUP_JITTER",
            "PATH",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            unsupported(&names),
            ["AGE_PASSPHRASE", "BACKUP_JITTER", "WEBDAV_URL"]
        );
    }
}
