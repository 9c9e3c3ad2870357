//! A fault-injecting HTTP/1.1 proxy on loopback, in front of the S3 test server.
//!
//! Each request is forwarded to the server, or, for a configurable share of requests
//! (rotating through the kinds of [`Fault`]), answered `503 SlowDown` or `500 InternalError`
//! by the proxy itself, dropped unanswered, or forwarded and then cut in the middle of the
//! answer (so the server did the work but the client never learns it), or, when stalls are
//! on, forwarded and then held unanswered until the client's timeout has to cut it. Plain std: a listener
//! thread and one thread per client connection; each forwarded request uses a fresh
//! connection to the server (`Connection: close`), while the client side keeps alive
//! whenever the answer's framing allows it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy does instead of a plain forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `503 Slow Down` with the S3 error `SlowDown`, not forwarded.
    SlowDown,
    /// `500 Internal Server Error` with the S3 error `InternalError`, not forwarded.
    Internal,
    /// The connection is closed without an answer, not forwarded.
    Drop,
    /// Forwarded, then the answer is cut half-way and the connection closed.
    CutAnswer,
    /// Forwarded, then nothing is sent back for the stall time (only with
    /// [`FaultProxy::stall_for`]): a hung server the client must time out.
    Stall,
}

const FAULTS: [Fault; 5] = [
    Fault::SlowDown,
    Fault::Internal,
    Fault::Drop,
    Fault::CutAnswer,
    Fault::Stall,
];

/// What the proxy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Requests read from clients.
    pub requests: u64,
    /// Requests answered with the server's complete answer.
    pub forwarded: u64,
    /// `503 SlowDown` answers.
    pub slow_down: u64,
    /// `500 InternalError` answers.
    pub internal: u64,
    /// Connections dropped without an answer.
    pub dropped: u64,
    /// Answers cut half-way (the server did the work).
    pub cut: u64,
    /// Requests held unanswered for the stall time (the server did the work).
    pub stalled: u64,
}

impl ProxyCounts {
    /// Every injected fault.
    pub fn faults(&self) -> u64 {
        self.slow_down + self.internal + self.dropped + self.cut + self.stalled
    }
}

#[derive(Default)]
struct Shared {
    /// Share of requests that fail, in per mille.
    fail_per_mille: AtomicU64,
    /// After this many more forwarded `PUT`s every request fails (`u64::MAX`: never).
    puts_before_outage: AtomicU64,
    rng: AtomicU64,
    /// Cut the answer of the next request whose first line has both parts.
    cut_next: std::sync::Mutex<Option<(String, String)>>,
    stop: AtomicBool,
    requests: AtomicU64,
    forwarded: AtomicU64,
    slow_down: AtomicU64,
    internal: AtomicU64,
    dropped: AtomicU64,
    cut: AtomicU64,
    stalled: AtomicU64,
    /// How long a stalled request is held, in milliseconds (0: no stalls).
    stall_ms: AtomicU64,
}

impl Shared {
    /// A deterministic-seeded xorshift draw in `0..1000`, shared by all connections.
    fn draw(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self
                .rng
                .compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return y % 1000,
                Err(now) => x = now,
            }
        }
    }

    fn outage(&self) -> bool {
        self.puts_before_outage.load(Ordering::SeqCst) == 0
    }

    /// The fault for the next request, if any.
    fn pick(&self, first_line: &str) -> Option<Fault> {
        let share = self.fail_per_mille.load(Ordering::Relaxed);
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        {
            let mut cut = self.cut_next.lock().unwrap_or_else(|p| p.into_inner());
            if cut.as_ref().is_some_and(|(a, b)| {
                first_line.starts_with(a.as_str()) && first_line.contains(b.as_str())
            }) {
                *cut = None;
                return Some(Fault::CutAnswer);
            }
        }
        if self.outage() || self.draw() < share {
            let kinds = if self.stall_ms.load(Ordering::SeqCst) > 0 {
                FAULTS.len()
            } else {
                FAULTS.len() - 1
            } as u64;
            Some(FAULTS[(n % kinds) as usize])
        } else {
            None
        }
    }
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (`http://127.0.0.1:PORT`),
    /// failing `percent` % of the requests.
    pub fn start(upstream: &str, percent: u32, seed: u64) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            puts_before_outage: AtomicU64::new(u64::MAX),
            rng: AtomicU64::new(seed | 1),
            ..Default::default()
        });
        let proxy = FaultProxy { port, shared };
        proxy.set_fail_percent(percent);
        let shared = proxy.shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (shared, upstream) = (shared.clone(), upstream.clone());
                std::thread::spawn(move || serve(conn, &upstream, &shared));
            }
        });
        proxy
    }

    /// The endpoint to give coffer: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fail this share of the requests from now on (100: every request).
    pub fn set_fail_percent(&self, percent: u32) {
        self.shared
            .fail_per_mille
            .store(u64::from(percent.min(100)) * 10, Ordering::SeqCst);
    }

    /// Add stalls to the rotation of faults: the request is forwarded, then its answer is
    /// held back for `d` and the connection closed.
    pub fn stall_for(&self, d: Duration) {
        self.shared
            .stall_ms
            .store(d.as_millis().max(1) as u64, Ordering::SeqCst);
    }

    /// Forward `n` more `PUT` requests (as the share allows), then fail every request: an
    /// outage in the middle of an upload.
    pub fn outage_after_puts(&self, n: u64) {
        self.shared.puts_before_outage.store(n, Ordering::SeqCst);
    }

    /// Forward the next request whose first line starts with `method` and contains `part`,
    /// then cut its answer (e.g. `"POST "`, `"uploadId="`: the completion of a multipart
    /// upload succeeds on the server, but the client does not learn it).
    pub fn cut_next(&self, method: &str, part: &str) {
        *self
            .shared
            .cut_next
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((method.to_string(), part.to_string()));
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> ProxyCounts {
        let s = &self.shared;
        ProxyCounts {
            requests: s.requests.load(Ordering::SeqCst),
            forwarded: s.forwarded.load(Ordering::SeqCst),
            slow_down: s.slow_down.load(Ordering::SeqCst),
            internal: s.internal.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            cut: s.cut.load(Ordering::SeqCst),
            stalled: s.stalled.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the listener so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A request or answer as read off the wire: the head (with the final blank line) and the
/// body, both as sent.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<String> {
        String::from_utf8_lossy(&self.head)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }

    fn first_line(&self) -> String {
        String::from_utf8_lossy(&self.head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// The head with its `Connection` header replaced by `connection` (or removed).
    fn head_with_connection(&self, connection: Option<&str>) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.head);
        let mut out = String::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let is_conn = line
                .split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"));
            if !is_conn {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        if let Some(c) = connection {
            out.push_str(&format!("Connection: {c}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Read a head up to the blank line; `None` at a clean end of stream.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        let blank = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if blank {
            return Ok(Some(head));
        }
    }
}

/// Copy a chunked body as it is (sizes, data, trailers).
fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        out.extend_from_slice(&line);
        let size_text = String::from_utf8_lossy(&line);
        let size_text = size_text.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let mut t = Vec::new();
                if r.read_until(b'\n', &mut t)? == 0 {
                    return Ok(());
                }
                out.extend_from_slice(&t);
                if t == b"\r\n" || t == b"\n" {
                    return Ok(());
                }
            }
        }
        let start = out.len();
        out.resize(start + size + 2, 0);
        r.read_exact(&mut out[start..])?;
    }
}

fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Message>> {
    let Some(head) = read_head(r)? else {
        return Ok(None);
    };
    let mut m = Message {
        head,
        body: Vec::new(),
    };
    if m.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let mut body = Vec::new();
        read_chunked(r, &mut body)?;
        m.body = body;
    } else if let Some(len) = m.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        m.body = vec![0; len];
        r.read_exact(&mut m.body)?;
    }
    Ok(Some(m))
}

/// Send a request to the server on a new connection and read the whole answer.
fn forward(upstream: &str, req: &Message) -> std::io::Result<Message> {
    let mut s = TcpStream::connect(upstream)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(&req.head_with_connection(Some("close")))?;
    s.write_all(&req.body)?;
    s.flush()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .ok_or_else(|| std::io::Error::other("answer without a head"))?;
    let body = all.split_off(end);
    Ok(Message { head: all, body })
}

fn error_answer(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serve one client connection until it closes or a fault closes it.
fn serve(client: TcpStream, upstream: &str, shared: &Shared) {
    let Ok(mut out) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(client);
    while let Ok(Some(req)) = read_request(&mut reader) {
        let fault = shared.pick(&req.first_line());
        let sent = match fault {
            Some(Fault::SlowDown) => {
                shared.slow_down.fetch_add(1, Ordering::SeqCst);
                out.write_all(&error_answer(
                    "503 Slow Down",
                    "SlowDown",
                    "Please reduce your request rate.",
                ))
            }
            Some(Fault::Internal) => {
                shared.internal.fetch_add(1, Ordering::SeqCst);
                out.write_all(&error_answer(
                    "500 Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ))
            }
            Some(Fault::Drop) => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Some(Fault::CutAnswer) | Some(Fault::Stall) | None => {
                if req.first_line().starts_with("PUT ") {
                    let _ = shared.puts_before_outage.fetch_update(
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                        |n| (n != u64::MAX && n > 0).then(|| n - 1),
                    );
                }
                let Ok(answer) = forward(upstream, &req) else {
                    break;
                };
                if fault == Some(Fault::Stall) {
                    shared.stalled.fetch_add(1, Ordering::SeqCst);
                    let ms = shared.stall_ms.load(Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(ms));
                    break;
                }
                if fault == Some(Fault::CutAnswer) {
                    shared.cut.fetch_add(1, Ordering::SeqCst);
                    let mut bytes = answer.head.clone();
                    if answer.body.is_empty() {
                        bytes.truncate(bytes.len() / 2);
                    } else {
                        bytes.extend_from_slice(&answer.body[..answer.body.len() / 2]);
                    }
                    let _ = out.write_all(&bytes);
                    break;
                }
                // Keep the client connection alive when the answer's framing allows it.
                let status = answer.first_line();
                let framed = answer.header("content-length").is_some()
                    || answer
                        .header("transfer-encoding")
                        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
                    || req.first_line().starts_with("HEAD ")
                    || status.contains(" 204 ")
                    || status.contains(" 304 ");
                let head = answer.head_with_connection((!framed).then_some("close"));
                let r = out
                    .write_all(&head)
                    .and_then(|()| out.write_all(&answer.body));
                shared.forwarded.fetch_add(1, Ordering::SeqCst);
                if !framed {
                    break;
                }
                r
            }
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}
