//! Telling someone how a run went: webhooks (a JSON POST) and healthchecks-style pings
//! (`<url>/start`, `<url>`, `<url>/fail`). A notification that cannot be delivered is logged
//! and never fails the job. HTTP goes through the reqwest (rustls) already in the dependency
//! tree, on the process's I/O runtime ([`crate::runtime`]), waited for from the daemon's own
//! (non-async) thread.

use std::time::Duration;

use serde::Serialize;

use super::config::NotifyConfig;
use super::state::{JobRecord, JobStatus};
use crate::runtime::{IoHandle, IoRuntime};

/// Attempts per request (the first and retries), a second apart.
const ATTEMPTS: u32 = 3;

/// Which ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ping {
    /// Work begins.
    Start,
    /// The run succeeded.
    Success,
    /// The run failed.
    Fail,
}

/// The JSON body posted to webhooks.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookBody {
    /// `success` or `failed`.
    pub status: JobStatus,
    /// The last snapshot written, if any.
    pub snapshot: Option<String>,
    /// Every snapshot written.
    pub snapshots: Vec<String>,
    /// Seconds.
    pub duration_secs: f64,
    /// Plaintext bytes of new data.
    pub bytes_added: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The host.
    pub host: String,
    /// The repository.
    pub repository: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// The steps.
    pub steps: Vec<super::state::StepRecord>,
}

impl WebhookBody {
    /// The body that reports `r`.
    pub fn of(r: &JobRecord) -> Self {
        Self {
            status: r.status,
            snapshot: r.snapshots.last().cloned(),
            snapshots: r.snapshots.clone(),
            duration_secs: r.duration_secs.unwrap_or(0.0),
            bytes_added: r.bytes_added,
            error: r.error.clone(),
            host: r.host.clone(),
            repository: r.repository.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            steps: r.steps.clone(),
        }
    }
}

/// Sends notifications.
pub struct Notifier {
    config: NotifyConfig,
    http: Option<(reqwest::Client, IoHandle)>,
}

/// The URL of a ping.
pub fn ping_url(base: &str, ping: Ping) -> String {
    let base = base.trim_end_matches('/');
    match ping {
        Ping::Start => format!("{base}/start"),
        Ping::Success => base.to_string(),
        Ping::Fail => format!("{base}/fail"),
    }
}

impl Notifier {
    /// A notifier for `config`, sending on `io` (started only if something is to be sent
    /// over HTTP). When the HTTP client cannot be built (no TLS roots, no runtime), that is
    /// logged and notifications are disabled: they never stop the job.
    pub fn new(config: NotifyConfig, io: &IoRuntime) -> Self {
        let http =
            if config.webhooks.is_empty() && config.pings.is_empty() && config.targets.is_empty() {
                None
            } else {
                match io.handle() {
                    Ok(rt) => {
                        // The client's connector needs the runtime's context to be built.
                        let client = {
                            let _in_runtime = rt.enter();
                            reqwest::Client::builder()
                                .timeout(Duration::from_secs(config.timeout_secs))
                                .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
                                .build()
                        };
                        match client {
                            Ok(c) => Some((c, rt)),
                            Err(e) => {
                                tracing::error!(error = %e, "notifications disabled: HTTP client");
                                None
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "notifications disabled: runtime");
                        None
                    }
                }
            };
        Self { config, http }
    }

    /// Whether webhooks get this outcome.
    fn wants_webhook(&self, status: JobStatus) -> bool {
        status == JobStatus::Failed || self.config.on_success
    }

    /// Send a ping to every ping URL; `body` is sent as text (healthchecks shows it).
    pub fn ping(&self, ping: Ping, body: &str) {
        for base in &self.config.pings {
            let url = ping_url(base, ping);
            self.post(&url, body.as_bytes().to_vec(), "text/plain; charset=utf-8");
        }
    }

    /// Report a finished run: webhooks (on failure, or always with `on_success`) and the
    /// success or fail ping.
    pub fn finished(&self, r: &JobRecord) {
        let ok = r.status == JobStatus::Success;
        if self.wants_webhook(r.status) {
            match serde_json::to_vec(&WebhookBody::of(r)) {
                Ok(body) => {
                    for url in &self.config.webhooks {
                        self.post(url, body.clone(), "application/json");
                    }
                }
                Err(e) => tracing::error!(error = %e, "webhook body"),
            }
        }
        let text = r.error.clone().unwrap_or_else(|| {
            format!(
                "snapshots {} added {} bytes in {:.1}s",
                r.snapshots.join(","),
                r.bytes_added,
                r.duration_secs.unwrap_or(0.0)
            )
        });
        self.ping(if ok { Ping::Success } else { Ping::Fail }, &text);
        if self.wants_webhook(r.status) && !self.config.targets.is_empty() {
            let (title, message) = message_of(r);
            for t in &self.config.targets {
                self.send_target(t, &title, &message);
            }
        }
    }

    fn send_target(&self, t: &super::shoutrrr::Target, title: &str, message: &str) {
        let http = self.http.as_ref().map(|(c, rt)| (c, rt));
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match t.send(title, message, http, timeout) {
                Ok(()) => {
                    tracing::info!(target = %t, "notified");
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        tracing::error!(target = %t, error = %last, attempts = ATTEMPTS, "notification failed");
    }

    fn post(&self, url: &str, body: Vec<u8>, content_type: &str) {
        let Some((client, rt)) = &self.http else {
            return;
        };
        // reqwest sets up its timers when a request is made, not when it is polled.
        let _in_runtime = rt.enter();
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let req = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone());
            match rt.block_on(req.send()) {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(url = %redact(url), status = resp.status().as_u16(), "notified");
                    return;
                }
                Ok(resp) => last = format!("HTTP {}", resp.status()),
                Err(e) => {
                    // reqwest's own message is generic; the cause (refused, timed out) is below.
                    // Without the URL: it may carry a token.
                    let e = e.without_url();
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        msg.push_str(&format!(": {c}"));
                        src = c.source();
                    }
                    last = msg;
                }
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        tracing::error!(url = %redact(url), error = %last, attempts = ATTEMPTS, "notification failed");
    }
}

/// The title and text of a message about a finished run (e-mail, chat).
pub fn message_of(r: &JobRecord) -> (String, String) {
    let ok = r.status == JobStatus::Success;
    let title = if ok {
        format!("coffer: backup on {} completed successfully", r.host)
    } else {
        format!("coffer: backup on {} failed", r.host)
    };
    let mut text = match &r.error {
        Some(e) => format!("The backup failed: {e}\n\n"),
        None => "The backup completed successfully.\n\n".to_string(),
    };
    text.push_str(&format!(
        "host: {}\nrepository: {}\nstarted: {}\nfinished: {}\nduration: {:.1}s\n",
        r.host,
        r.repository,
        r.started_at,
        r.finished_at.as_deref().unwrap_or("-"),
        r.duration_secs.unwrap_or(0.0)
    ));
    if !r.snapshots.is_empty() {
        text.push_str(&format!("snapshots: {}\n", r.snapshots.join(", ")));
    }
    text.push('\n');
    for s in &r.steps {
        text.push_str(&format!("{:<7} {:<15} {}\n", s.name, s.status, s.detail));
    }
    (title, text)
}

/// A URL for logs: scheme, host and port only. Credentials, queries and paths are left out:
/// ping and hook services put their secret in the path (`hc-ping.com/<uuid>`,
/// `hooks.slack.com/services/...`), others in the query.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let more = if u.path().trim_matches('/').is_empty() && u.query().is_none() {
                ""
            } else {
                "/..."
            };
            format!("{}://{host}{port}{more}", u.scheme())
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_urls() {
        assert_eq!(ping_url("https://hc/x", Ping::Start), "https://hc/x/start");
        assert_eq!(ping_url("https://hc/x/", Ping::Success), "https://hc/x");
        assert_eq!(ping_url("https://hc/x", Ping::Fail), "https://hc/x/fail");
    }

    #[test]
    fn redacts_secrets() {
        assert_eq!(redact("https://u:p@h/hook?token=s"), "https://h/...");
        assert_eq!(
            redact("https://hc-ping.com/0b1c-uuid/start"),
            "https://hc-ping.com/..."
        );
        assert_eq!(redact("http://127.0.0.1:9/"), "http://127.0.0.1:9");
    }
}
