//! S3 repositories: the `s3://BUCKET/PREFIX?endpoint=..&region=..&path_style=true` location,
//! where credentials come from, and the opendal S3 operator with its retry, timeout and
//! concurrency layers.
//!
//! Secrets (the secret access key, a session token) live only in the operator and in
//! zeroized buffers: they are never part of a description, an error or a log line.
//! Transient failures (timeouts, 5xx, throttling, dropped connections) are retried by
//! opendal's `RetryLayer` with exponential backoff and jitter; permanent ones (denied
//! access, missing bucket) end the call at once and are named by [`S3Store::open`].

use std::path::PathBuf;
use std::time::Duration;

use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};
use zeroize::Zeroizing;

pub use super::opendal_store::describe_error;
use super::{OpendalStore, StorageError};
use crate::runtime::IoRuntime;

/// Default number of HTTP requests in flight per repository.
pub const DEFAULT_CONNECTIONS: usize = 8;
/// Packs a backup uploads at once unless `backup --connections` says otherwise. Each pack
/// of 16 MiB or more goes up in parts, so this many uploads keep more parts in flight than
/// [`DEFAULT_CONNECTIONS`] allows: the HTTP limit, not this, is what bounds the requests.
pub const DEFAULT_PACK_UPLOADS: usize = 4;
/// Default number of retries of a transient failure.
pub const DEFAULT_RETRIES: usize = 8;
/// First retry delay; it doubles (with jitter) up to [`RETRY_MAX_DELAY`].
pub const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);
/// Longest delay between two retries.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(20);
/// Default time limit of one read or write step of a streaming transfer (`timeout=`); one
/// whole non-streaming request (stat, list page, delete, small write) gets twice as long.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Objects of at least this size are uploaded in parts (S3 multipart upload).
pub const MULTIPART_MIN_BYTES: usize = 16 << 20;
/// Size of one part of a multipart upload (S3 needs at least 5 MiB).
pub const MULTIPART_PART_BYTES: usize = 8 << 20;

/// Where the settings of an S3 location come from besides the URL: the process
/// environment, or a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`]. The credentials may also come from the file
/// named by `AWS_ACCESS_KEY_ID_FILE` / `AWS_SECRET_ACCESS_KEY_FILE` (Docker secrets, as the
/// old backup container read them); the file's content is trimmed of a final newline.
pub fn process_env(name: &str) -> Option<String> {
    if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
        return Some(v);
    }
    if matches!(name, "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY") {
        let path = std::env::var_os(format!("{name}_FILE"))?;
        let text = std::fs::read_to_string(path).ok()?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        return Some(text.strip_suffix('\r').unwrap_or(text).to_string()).filter(|v| !v.is_empty());
    }
    None
}

/// A parsed `s3://` repository location (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of the repository inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// Endpoint URL (`https://fsn1.your-objectstorage.com`); `None` means AWS.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`, the default) or virtual-host style
    /// (`bucket.endpoint/key`).
    pub path_style: bool,
    /// A credentials file in the AWS format (`[profile]`, `aws_access_key_id = ..`).
    pub credentials_file: Option<PathBuf>,
    /// The profile to read from the credentials file.
    pub profile: String,
    /// HTTP requests in flight at most.
    pub connections: usize,
    /// Retries of a transient failure.
    pub retries: usize,
    /// Time limit of one streaming read or write step; a whole request gets twice as long.
    /// A request that stalls longer is cut and retried.
    pub io_timeout: Duration,
}

/// Access key pair (and session token) for request signing.
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: impl Into<String>) -> StorageError {
    StorageError::Config(msg.into())
}

fn percent_decode(s: &str) -> Result<String, StorageError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| config_err(format!("bad percent escape in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| config_err(format!("{s:?} is not UTF-8 once decoded")))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, StorageError> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(config_err(format!("{key}={v:?}: expected true or false"))),
    }
}

fn parse_count(key: &str, v: &str, min: usize, max: usize) -> Result<usize, StorageError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            config_err(format!(
                "{key}={v:?}: expected a number from {min} to {max}"
            ))
        })
}

/// The region in a Hetzner endpoint (`https://fsn1.your-objectstorage.com` -> `fsn1`).
fn region_from_endpoint(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let host = host.split(['/', ':']).next().unwrap_or(host);
    host.strip_suffix(".your-objectstorage.com")
        .filter(|r| !r.is_empty() && !r.contains('.'))
        .map(str::to_string)
}

/// An endpoint without any `user:password@` part, for messages.
fn redact_endpoint(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => endpoint.rsplit('@').next().unwrap_or(endpoint).to_string(),
    }
}

impl S3Location {
    /// Parse `s3://BUCKET[/PREFIX][?key=value&...]`. Settings missing from the URL come from
    /// `COFFER_S3_ENDPOINT`, `COFFER_S3_REGION` (then `AWS_REGION`, `AWS_DEFAULT_REGION`),
    /// `COFFER_S3_CREDENTIALS_FILE`, `AWS_PROFILE`, `COFFER_S3_CONNECTIONS`,
    /// `COFFER_S3_RETRIES`.
    pub fn parse(url: &str, env: EnvLookup<'_>) -> Result<Self, StorageError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| config_err(format!("{url:?} is not an s3:// URL")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = bucket_and_prefix(path)?;
        let q = UrlSettings::parse(query)?;
        let endpoint = q
            .endpoint
            .or_else(|| env("COFFER_S3_ENDPOINT"))
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(config_err(format!(
                "S3 endpoint {:?} must start with https:// (or http://)",
                redact_endpoint(e)
            )));
        }
        let region = q
            .region
            .or_else(|| env("COFFER_S3_REGION"))
            .or_else(|| endpoint.as_deref().and_then(region_from_endpoint))
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let connections = count_or_env(q.connections, env, "COFFER_S3_CONNECTIONS", 1, 256)?
            .unwrap_or(DEFAULT_CONNECTIONS);
        let retries =
            count_or_env(q.retries, env, "COFFER_S3_RETRIES", 0, 100)?.unwrap_or(DEFAULT_RETRIES);
        let io_timeout = count_or_env(q.timeout, env, "COFFER_S3_TIMEOUT", 1, 3600)?
            .map_or(DEFAULT_IO_TIMEOUT, |n| Duration::from_secs(n as u64));
        Ok(Self {
            bucket,
            prefix,
            endpoint,
            region,
            path_style: q.path_style,
            credentials_file: q
                .credentials_file
                .or_else(|| env("COFFER_S3_CREDENTIALS_FILE").map(PathBuf::from)),
            profile: q
                .profile
                .or_else(|| env("AWS_PROFILE"))
                .unwrap_or_else(|| "default".into()),
            connections,
            retries,
            io_timeout,
        })
    }

    /// `s3://bucket/prefix at endpoint`, for messages (no secrets).
    pub fn describe(&self) -> String {
        let mut s = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        if let Some(e) = &self.endpoint {
            s.push_str(" at ");
            s.push_str(&redact_endpoint(e));
        }
        s
    }

    /// The credentials: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`), else the credentials file (`credentials_file=`,
    /// `COFFER_S3_CREDENTIALS_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`).
    pub fn credentials(&self, env: EnvLookup<'_>) -> Result<Credentials, StorageError> {
        let id = env("AWS_ACCESS_KEY_ID");
        let secret = env("AWS_SECRET_ACCESS_KEY").map(Zeroizing::new);
        let token = env("AWS_SESSION_TOKEN").map(Zeroizing::new);
        // An explicit file wins over the environment.
        if self.credentials_file.is_none() {
            match (id, secret) {
                (Some(access_key_id), Some(secret_access_key)) => {
                    return Ok(Credentials {
                        access_key_id,
                        secret_access_key,
                        session_token: token,
                    });
                }
                (Some(_), None) => {
                    return Err(config_err(
                        "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
                    ));
                }
                (None, Some(_)) => {
                    return Err(config_err(
                        "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
                    ));
                }
                (None, None) => {}
            }
        }
        let file = self
            .credentials_file
            .clone()
            .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
            .or_else(|| {
                env("HOME")
                    .map(|h| PathBuf::from(h).join(".aws/credentials"))
                    .filter(|p| p.is_file())
            })
            .ok_or_else(|| {
                config_err(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                     COFFER_S3_CREDENTIALS_FILE (or credentials_file= in the URL)",
                )
            })?;
        let text = Zeroizing::new(std::fs::read_to_string(&file).map_err(|e| {
            config_err(format!(
                "reading the S3 credentials file {}: {e}",
                file.display()
            ))
        })?);
        parse_credentials_file(&text, &self.profile).ok_or_else(|| {
            config_err(format!(
                "the S3 credentials file {} has no profile [{}] with aws_access_key_id and \
                 aws_secret_access_key",
                file.display(),
                self.profile
            ))
        })
    }
}

/// Read one profile of an AWS-style credentials file (INI: `[name]`, `key = value`).
pub fn parse_credentials_file(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let mut id = None;
    let mut secret = None;
    let mut token = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_profile = name == profile || name.strip_prefix("profile ") == Some(profile);
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
            "aws_session_token" => token = Some(Zeroizing::new(v)),
            _ => {}
        }
    }
    Some(Credentials {
        access_key_id: id.filter(|s| !s.is_empty())?,
        secret_access_key: secret.filter(|s| !s.is_empty())?,
        session_token: token,
    })
}

/// Opens S3 locations as object stores.
pub struct S3Store;

impl S3Store {
    /// Build the operator with its layers, driven by `io`, and probe the bucket with one
    /// listing request, so that a wrong key, a missing bucket or an unreachable endpoint is
    /// named at once.
    pub fn open(
        loc: &S3Location,
        creds: &Credentials,
        io: &IoRuntime,
    ) -> Result<OpendalStore, StorageError> {
        // The reqwest (rustls) HTTP transport; installing it again is a no-op.
        opendal::install_default();
        let mut builder = opendal::services::S3::default()
            .bucket(&loc.bucket)
            .root(&format!("/{}", loc.prefix))
            .region(&loc.region)
            .access_key_id(&creds.access_key_id)
            .secret_access_key(&creds.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(e) = &loc.endpoint {
            builder = builder.endpoint(e);
        }
        if let Some(t) = &creds.session_token {
            builder = builder.session_token(t);
        }
        if !loc.path_style {
            builder = builder.enable_virtual_host_style();
        }
        let description = loc.describe();
        let op = Operator::new(builder)
            .map_err(|e| config_err(format!("{description}: {}", describe_error(&e))))?
            // Timeouts inside retries: a request that hangs is cut and tried again.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(loc.io_timeout * 2)
                    .with_io_timeout(loc.io_timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(loc.retries)
                    .with_factor(2.0)
                    .with_min_delay(RETRY_MIN_DELAY)
                    .with_max_delay(RETRY_MAX_DELAY)
                    .with_jitter(),
            )
            .layer(
                ConcurrentLimitLayer::new(loc.connections * 4)
                    .with_http_concurrent_limit(loc.connections),
            );
        let store = OpendalStore::new(op, description.clone(), io)?
            .with_multipart(
                MULTIPART_MIN_BYTES,
                MULTIPART_PART_BYTES,
                loc.connections.clamp(1, 4),
            )
            .with_parallel_writes(DEFAULT_PACK_UPLOADS.min(loc.connections));
        store.probe().map_err(|e| {
            let message = describe_error(&e);
            let cause = match e.kind() {
                ErrorKind::PermissionDenied => format!(
                    "{message}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the \
                     credentials file) and the bucket's permissions"
                ),
                ErrorKind::NotFound => format!(
                    "bucket {:?} does not exist (create it first; coffer does not)",
                    loc.bucket
                ),
                ErrorKind::ConfigInvalid if message.contains("NoSuchBucket") => format!(
                    "bucket {:?} does not exist (create it first; coffer does not)",
                    loc.bucket
                ),
                _ => format!("cannot reach the S3 endpoint: {message}"),
            };
            config_err(format!("{description}: {cause}"))
        })?;
        Ok(store)
    }
}

/// `BUCKET/PREFIX` of an `s3://` URL, checked: a valid bucket name, no `.` or `..` in the
/// prefix (which loses its outer slashes).
fn bucket_and_prefix(path: &str) -> Result<(String, String), StorageError> {
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    if !valid_bucket {
        return Err(config_err(format!(
            "invalid bucket name {bucket:?} in the repository URL (expected s3://BUCKET/PREFIX, \
             3 to 63 lowercase letters, digits, '-' or '.')"
        )));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|c| c == "." || c == "..") {
        return Err(config_err(format!("invalid prefix {prefix:?}")));
    }
    Ok((bucket.to_string(), prefix))
}

/// The settings of an `s3://` URL's query string.
struct UrlSettings {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    credentials_file: Option<PathBuf>,
    profile: Option<String>,
    connections: Option<usize>,
    retries: Option<usize>,
    timeout: Option<usize>,
}

impl UrlSettings {
    fn parse(query: &str) -> Result<Self, StorageError> {
        let mut q = UrlSettings {
            endpoint: None,
            region: None,
            path_style: true,
            credentials_file: None,
            profile: None,
            connections: None,
            retries: None,
            timeout: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            match k {
                "endpoint" => q.endpoint = Some(v),
                "region" => q.region = Some(v),
                "path_style" => q.path_style = parse_bool(k, &v)?,
                "virtual_host" => q.path_style = !parse_bool(k, &v)?,
                "credentials_file" => q.credentials_file = Some(PathBuf::from(v)),
                "profile" => q.profile = Some(v),
                "connections" => q.connections = Some(parse_count(k, &v, 1, 256)?),
                "retries" => q.retries = Some(parse_count(k, &v, 0, 100)?),
                "timeout" => q.timeout = Some(parse_count(k, &v, 1, 3600)?),
                _ => {
                    return Err(config_err(format!(
                        "unknown setting {k:?} in the repository URL (known: endpoint, region, \
                         path_style, virtual_host, credentials_file, profile, connections, retries, \
                         timeout)"
                    )));
                }
            }
        }
        Ok(q)
    }
}

/// A count from the URL, else from the environment variable `var` (checked the same way).
fn count_or_env(
    from_url: Option<usize>,
    env: EnvLookup<'_>,
    var: &str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, StorageError> {
    match from_url {
        Some(n) => Ok(Some(n)),
        None => env(var).map(|v| parse_count(var, &v, min, max)).transpose(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(map: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn parse_url_with_query() {
        let e = env(&[]);
        let l = S3Location::parse(
            "s3://backups/host-1/repo/?endpoint=https%3A%2F%2Ffsn1.your-objectstorage.com&path_style=false&connections=4",
            &e,
        )
        .unwrap();
        assert_eq!(l.bucket, "backups");
        assert_eq!(l.prefix, "host-1/repo");
        assert_eq!(
            l.endpoint.as_deref(),
            Some("https://fsn1.your-objectstorage.com")
        );
        assert_eq!(l.region, "fsn1");
        assert!(!l.path_style);
        assert_eq!(l.connections, 4);
        assert_eq!(l.retries, DEFAULT_RETRIES);
        assert_eq!(l.io_timeout, DEFAULT_IO_TIMEOUT);
        assert_eq!(
            l.describe(),
            "s3://backups/host-1/repo at https://fsn1.your-objectstorage.com"
        );
    }

    #[test]
    fn parse_url_from_env_and_defaults() {
        let e = env(&[
            ("COFFER_S3_ENDPOINT", "http://127.0.0.1:9000/"),
            ("COFFER_S3_REGION", "nbg1"),
            ("COFFER_S3_RETRIES", "0"),
            ("COFFER_S3_TIMEOUT", "5"),
        ]);
        let l = S3Location::parse("s3://bkt", &e).unwrap();
        assert_eq!(l.io_timeout, Duration::from_secs(5));
        let l2 = S3Location::parse("s3://bkt?timeout=2", &e).unwrap();
        assert_eq!(l2.io_timeout, Duration::from_secs(2));
        assert!(S3Location::parse("s3://bkt?timeout=0", &e).is_err());
        assert_eq!(l.prefix, "");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(l.region, "nbg1");
        assert_eq!(l.retries, 0);
        assert!(l.path_style);
        // The URL wins over the environment.
        let l = S3Location::parse("s3://bkt/p?region=hel1", &e).unwrap();
        assert_eq!(l.region, "hel1");
        let l = S3Location::parse("s3://bkt", &env(&[])).unwrap();
        assert_eq!(l.region, "us-east-1");
        assert_eq!(l.endpoint, None);
    }

    #[test]
    fn parse_url_errors() {
        let e = env(&[]);
        for bad in [
            "s3://",
            "s3://A_B/x",
            "s3://ok-bucket/../x",
            "s3://ok-bucket?colour=red",
            "s3://ok-bucket?path_style=maybe",
            "s3://ok-bucket?endpoint=ftp://x",
            "s3://ok-bucket?connections=0",
            "http://x",
        ] {
            assert!(S3Location::parse(bad, &e).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn endpoint_userinfo_is_redacted() {
        assert_eq!(
            redact_endpoint("https://user:secret@host:9000/x"),
            "https://host:9000/x"
        );
        let l = S3Location::parse("s3://bkt?endpoint=https://u:pw@h.example", &env(&[])).unwrap();
        assert!(!l.describe().contains("pw"));
    }

    #[test]
    fn credentials_from_env_and_file() {
        let l = S3Location::parse("s3://bkt", &env(&[])).unwrap();
        let c = l
            .credentials(&env(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ]))
            .unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(
            l.credentials(&env(&[("AWS_ACCESS_KEY_ID", "AKID")]))
                .is_err()
        );
        assert!(l.credentials(&env(&[])).is_err());

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = A1\naws_secret_access_key = S1\n\n\
             [profile backup]\naws_access_key_id=A2\naws_secret_access_key=S2\n",
        )
        .unwrap();
        let fs = f.to_string_lossy().into_owned();
        let l =
            S3Location::parse("s3://bkt", &env(&[("COFFER_S3_CREDENTIALS_FILE", &fs)])).unwrap();
        assert_eq!(l.credentials(&env(&[])).unwrap().access_key_id, "A1");
        let l = S3Location::parse(
            &format!("s3://bkt?credentials_file={fs}&profile=backup"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(l.credentials(&env(&[])).unwrap().access_key_id, "A2");
        let l = S3Location::parse(
            &format!("s3://bkt?credentials_file={fs}&profile=none"),
            &env(&[]),
        )
        .unwrap();
        let err = l.credentials(&env(&[])).unwrap_err().to_string();
        assert!(err.contains("[none]"), "{err}");
    }
}
