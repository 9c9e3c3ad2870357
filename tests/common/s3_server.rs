//! The S3-compatible test server (moto on loopback) shared by the S3 test binaries.
//!
//! The server comes from `COFFER_TEST_S3_ENDPOINT` (with `COFFER_TEST_S3_ACCESS_KEY_ID`,
//! `COFFER_TEST_S3_SECRET_ACCESS_KEY`, `COFFER_TEST_S3_BUCKET`), or else the test binary
//! starts one with `scripts/s3-server.sh` (once; it stops when the binary exits). When neither
//! works the tests fail: they never skip, under `CI=true` or not.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;

use coffer::storage::{S3Location, S3Store};

use super::{Env, Out};

/// A running S3 server and a bucket on it.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id.
    pub key_id: String,
    /// Secret access key.
    pub secret: String,
    /// The bucket the tests use.
    pub bucket: String,
}

fn start_server(auth: bool) -> Result<Server, String> {
    if !auth && let Ok(endpoint) = std::env::var("COFFER_TEST_S3_ENDPOINT") {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        return Ok(Server {
            endpoint,
            key_id: var("COFFER_TEST_S3_ACCESS_KEY_ID", "coffer-test"),
            secret: var("COFFER_TEST_S3_SECRET_ACCESS_KEY", "coffer-test-secret"),
            bucket: var("COFFER_TEST_S3_BUCKET", "coffer-test"),
        });
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let state = root.join(format!(
        "target/s3-server/test-{}{}",
        std::process::id(),
        if auth { "-auth" } else { "" }
    ));
    let mut c = std::process::Command::new(root.join("scripts/s3-server.sh"));
    c.arg("start")
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .arg("--state-dir")
        .arg(&state);
    if auth {
        c.arg("--auth");
    }
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running scripts/s3-server.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/s3-server.sh start failed ({})",
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .ok_or_else(|| format!("scripts/s3-server.sh printed no {k}:\n{text}"))
    };
    Ok(Server {
        endpoint: get("COFFER_TEST_S3_ENDPOINT")?,
        key_id: get("COFFER_TEST_S3_ACCESS_KEY_ID")?,
        secret: get("COFFER_TEST_S3_SECRET_ACCESS_KEY")?,
        bucket: get("COFFER_TEST_S3_BUCKET")?,
    })
}

fn get_server(cell: &'static OnceLock<Result<Server, String>>, auth: bool) -> &'static Server {
    match cell.get_or_init(|| start_server(auth)) {
        Ok(s) => s,
        Err(e) => panic!(
            "no S3 test server: {e}\n(set COFFER_TEST_S3_ENDPOINT or make scripts/s3-server.sh \
             work; S3 tests fail rather than skip)"
        ),
    }
}

/// The shared server of this test binary (authentication off).
pub fn server() -> &'static Server {
    static S: OnceLock<Result<Server, String>> = OnceLock::new();
    get_server(&S, false)
}

/// A server that checks access keys (for the rejected-credentials test).
pub fn auth_server() -> &'static Server {
    static S: OnceLock<Result<Server, String>> = OnceLock::new();
    get_server(&S, true)
}

impl Server {
    /// A repository URL under a prefix unique to this test run.
    pub fn url(&self, name: &str) -> String {
        self.url_at(name, &self.endpoint)
    }

    /// Like [`Server::url`], reached through `endpoint` (a proxy in front of the server).
    pub fn url_at(&self, name: &str, endpoint: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "s3://{}/{name}-{}-{nanos}?endpoint={}",
            self.bucket,
            std::process::id(),
            endpoint
        )
    }

    pub fn env(&self, k: &str) -> Option<String> {
        match k {
            "AWS_ACCESS_KEY_ID" => Some(self.key_id.clone()),
            "AWS_SECRET_ACCESS_KEY" => Some(self.secret.clone()),
            _ => None,
        }
    }

    /// The store of a repository URL, through the library, on a runtime of its own.
    pub fn store(&self, url: &str) -> coffer::storage::OpendalStore {
        let env = |k: &str| self.env(k);
        let loc = S3Location::parse(url, &env).expect("parse the URL");
        let creds = loc.credentials(&env).expect("credentials");
        let io = coffer::runtime::IoRuntime::new();
        S3Store::open(&loc, &creds, &io).expect("open the S3 store")
    }
}

/// Run coffer with the server's credentials.
#[track_caller]
pub fn run<I, S>(env: &Env, s: &Server, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = env.cmd();
    c.env("AWS_ACCESS_KEY_ID", &s.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s.secret);
    env.run_cmd(c, args)
}
