//! Prometheus metrics of the job: rendered as text (pure), served on `GET /metrics` by a small
//! HTTP/1 server (hyper, a task on the process's I/O runtime, [`crate::runtime`]), and/or
//! written to a textfile for node_exporter.
//!
//! The server never blocks the job and bounds what a client can cost: a request head of at
//! most [`MAX_REQUEST_HEAD`] bytes (else 431 and close), read within [`HEADER_READ_TIMEOUT`],
//! a whole connection within [`CONNECTION_TIMEOUT`], one request per connection, no request
//! body read, and at most [`MAX_CONNECTIONS`] connections at once (more are closed at once).
//! Connections are served concurrently, so a slow client does not stall a scrape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::runtime::IoRuntime;

/// How long a client has to send its request line and headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may last in all (request, answer, a slow reader).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request line and headers read (hyper's read buffer limit).
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;

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

/// Bind `addr` and serve `GET /metrics` in the background on `io` (started here if it was
/// not), for as long as `io` lives. Binding errors are returned (the daemon refuses to
/// start); later errors are logged.
pub fn serve(
    addr: SocketAddr,
    metrics: SharedMetrics,
    io: &IoRuntime,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = io.handle()?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    runtime.spawn(accept_loop(listener, metrics));
    Ok(bound)
}

async fn accept_loop(listener: tokio::net::TcpListener, metrics: SharedMetrics) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // E.g. out of file descriptors: do not spin.
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: {MAX_CONNECTIONS} connections open, closing one");
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let service =
            service_fn(move |req| std::future::ready(Ok::<_, Infallible>(respond(&req, &metrics))));
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "metrics request: {e}"),
                Err(_) => tracing::debug!(%peer, "metrics request: too slow, closed"),
            }
            drop(slot);
        });
    }
}

/// The answer to one request; its body (if any) is never read.
fn respond<B>(req: &Request<B>, metrics: &SharedMetrics) -> Response<String> {
    let method = req.method();
    let (status, content_type, body) = if method != Method::GET && method != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_string(),
        )
    } else if req.uri().path() == "/metrics" {
        let m = metrics.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (StatusCode::OK, "text/plain; version=0.0.4", render(&m))
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "coffer: metrics are at /metrics\n".to_string(),
        )
    };
    // hyper sends no body in answer to HEAD (but keeps the Content-Length).
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    /// A server, and the runtime it lives on (it stops when that is dropped).
    fn server(snapshots: u64) -> (SocketAddr, IoRuntime) {
        let m: SharedMetrics = Arc::new(Mutex::new(MetricValues {
            snapshots: Some(snapshots),
            ..Default::default()
        }));
        let io = IoRuntime::new();
        (serve("127.0.0.1:0".parse().unwrap(), m, &io).unwrap(), io)
    }

    /// Send `raw`, read the answer up to the server's close.
    fn exchange(addr: SocketAddr, raw: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }

    /// Read until the server closes (EOF or reset); `None` when it has not closed by then.
    fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => Some(out),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => Some(out),
        }
    }

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
        let (addr, _io) = server(5);
        let ok = get(addr, "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("\ncoffer_snapshots 5\n"), "{ok}");
        assert!(get(addr, "/metrics?x=1").starts_with("HTTP/1.1 200 OK"));
        let other = get(addr, "/other");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");

        let head = exchange(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "a body after HEAD: {head}");

        // A body is never read; the answer does not wait for it.
        let post = exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );
    }

    #[test]
    fn endless_request_line_is_cut_off() {
        const TOTAL: usize = 64 << 20;
        let (addr, _io) = server(1);
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200"));

        let mut s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let writer = std::thread::spawn(move || {
            let mut sent = 0;
            let _ = w.write_all(b"GET /");
            let chunk = vec![b'a'; 64 * 1024];
            while sent < TOTAL {
                match w.write(&chunk) {
                    Ok(0) | Err(_) => break, // the server has closed
                    Ok(n) => sent += n,
                }
            }
            sent
        });
        let started = Instant::now();
        let answer = read_until_closed(&mut s, Duration::from_secs(30))
            .expect("the server still holds the connection after 30 s");
        let closed_after = started.elapsed();
        let sent = writer.join().unwrap();

        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
        assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
        // The old server buffered all of it (the daemon grew by the request's size): this one
        // stops reading at its header limit. (Process RSS is not asserted: other tests of
        // this binary allocate at the same time.)
        assert!(sent < TOTAL, "the server took all {TOTAL} bytes");
    }

    #[test]
    fn slow_clients_do_not_stall_a_scrape() {
        let (addr, _io) = server(7);
        let connected = Instant::now();
        let mut slow: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut partial = TcpStream::connect(addr).unwrap();
        partial.write_all(b"GET /metr").unwrap();
        slow.push(partial);

        let started = Instant::now();
        let ok = get(addr, "/metrics");
        let took = started.elapsed();
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("\ncoffer_snapshots 7\n"), "{ok}");
        assert!(took < Duration::from_secs(4), "the scrape took {took:?}");

        // And the server gives up on them (header read timeout, else the connection's).
        for s in &mut slow {
            assert!(
                read_until_closed(s, Duration::from_secs(30)).is_some(),
                "a silent client is still connected"
            );
        }
        let all_closed = connected.elapsed();
        assert!(all_closed < Duration::from_secs(20), "{all_closed:?}");
    }

    #[test]
    fn connections_over_the_cap_are_closed_at_once() {
        let (addr, _io) = server(9);
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Accepted after the held ones (the accept queue is in order): no slot left.
        let mut extra = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut extra, HEADER_READ_TIMEOUT / 2)
            .expect("the connection over the cap is still open");
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        assert!(started.elapsed() < HEADER_READ_TIMEOUT / 2);

        // The slots come back when the clients leave.
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(addr).unwrap();
            // Refused connections may be closed before this arrives.
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let answer = read_until_closed(&mut s, Duration::from_secs(10)).unwrap_or_default();
            if answer.starts_with(b"HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "no slot came back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
