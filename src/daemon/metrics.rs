//! Prometheus metrics of the job: rendered as text (pure), served on `GET /metrics` by a tiny
//! HTTP server thread on a std `TcpListener`, and/or written to a textfile for node_exporter.
//! The server answers one request per connection and never blocks the job.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the server waits for a client's request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The values exported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricValues {
    /// Unix time of the last successful run.
    pub last_success_timestamp_seconds: Option<i64>,
    /// Duration of the last finished run.
    pub last_duration_seconds: Option<f64>,
    /// Bytes added by the last finished run.
    pub last_bytes_added: Option<u64>,
    /// Stored bytes of the repository's packs.
    pub repository_bytes: Option<u64>,
    /// Snapshots in the repository.
    pub snapshots: Option<u64>,
    /// 1 when the last finished run succeeded, 0 when it failed or died.
    pub last_success: Option<bool>,
    /// 1 while a run is in progress.
    pub running: bool,
    /// Failed or dead runs seen by this process.
    pub job_failures_total: u64,
    /// Scheduled runs skipped because a run was still going.
    pub job_skipped_total: u64,
}

/// Shared, updated by the job, read by the server.
pub type SharedMetrics = Arc<Mutex<MetricValues>>;

/// The Prometheus text exposition format (version 0.0.4).
pub fn render(m: &MetricValues) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
    };
    metric(
        "coffer_last_success_timestamp_seconds",
        "gauge",
        "Unix time at which the last successful job run finished.",
        m.last_success_timestamp_seconds.map(|v| v.to_string()),
    );
    metric(
        "coffer_last_duration_seconds",
        "gauge",
        "Duration of the last finished job run.",
        m.last_duration_seconds.map(|v| format!("{v:.3}")),
    );
    metric(
        "coffer_last_bytes_added",
        "gauge",
        "Bytes of new data stored by the last finished job run.",
        m.last_bytes_added.map(|v| v.to_string()),
    );
    metric(
        "coffer_repository_bytes",
        "gauge",
        "Stored size of the repository's packs.",
        m.repository_bytes.map(|v| v.to_string()),
    );
    metric(
        "coffer_snapshots",
        "gauge",
        "Snapshots in the repository.",
        m.snapshots.map(|v| v.to_string()),
    );
    metric(
        "coffer_last_success",
        "gauge",
        "1 when the last finished job run succeeded, 0 when it failed or died.",
        m.last_success.map(|v| u8::from(v).to_string()),
    );
    metric(
        "coffer_job_running",
        "gauge",
        "1 while a job run is in progress.",
        Some(u8::from(m.running).to_string()),
    );
    metric(
        "coffer_job_failures_total",
        "counter",
        "Job runs that failed or died, seen by this process.",
        Some(m.job_failures_total.to_string()),
    );
    metric(
        "coffer_job_skipped_total",
        "counter",
        "Scheduled job runs skipped because the previous run was still going.",
        Some(m.job_skipped_total.to_string()),
    );
    out
}

/// Write the metrics to `path` atomically (node_exporter may read at any time).
pub fn write_textfile(path: &Path, m: &MetricValues) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, render(m))?;
    std::fs::rename(&tmp, path)
}

/// Bind `addr` and serve `GET /metrics` from a background thread. Binding errors are
/// returned (the daemon refuses to start); later errors are logged.
pub fn serve(addr: SocketAddr, metrics: SharedMetrics) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("coffer-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &metrics) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("metrics listener: {e}"),
                }
            }
        })?;
    Ok(bound)
}

fn answer(stream: TcpStream, metrics: &SharedMetrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers up to the blank line, bounded, so the client sees a clean close.
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") | ("HEAD", "/metrics") => {
            let m = metrics.lock().unwrap_or_else(|p| p.into_inner()).clone();
            ("200 OK", "text/plain; version=0.0.4", render(&m))
        }
        ("GET", _) | ("HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "coffer: metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn renders_known_values_only() {
        let text = render(&MetricValues {
            snapshots: Some(3),
            job_failures_total: 2,
            ..Default::default()
        });
        assert!(text.contains("\ncoffer_snapshots 3\n"), "{text}");
        assert!(text.contains("\ncoffer_job_failures_total 2\n"), "{text}");
        assert!(
            text.contains("# TYPE coffer_job_skipped_total counter\n"),
            "{text}"
        );
        assert!(
            !text.contains("coffer_last_success_timestamp_seconds"),
            "{text}"
        );
    }

    #[test]
    fn serves_metrics_and_404() {
        let m: SharedMetrics = Arc::new(Mutex::new(MetricValues {
            snapshots: Some(5),
            ..Default::default()
        }));
        let addr = serve("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("\ncoffer_snapshots 5\n"), "{ok}");
        assert!(get("/other").starts_with("HTTP/1.1 404"));
    }
}
