//! Human output: logging to stderr, progress bars on a terminal, sizes and times; a closed
//! stdout (`coffer ... | head -1`) ends the command quietly, as it ends other Unix tools.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::Global;
use crate::engine::Progress;

/// Warnings and errors go to stderr; `-v` adds info, `-vv` debug, `-q` leaves errors only.
pub fn init_logging(g: &Global) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("coffer={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Where log lines go besides stderr: the clients of a manual trigger (`docker exec <c>
/// backup`) see the lines of the run they asked for, as `docker logs` does.
static LOG_SINKS: std::sync::Mutex<Vec<(u64, Box<dyn std::io::Write + Send>)>> =
    std::sync::Mutex::new(Vec::new());
static NEXT_SINK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Copy every log line to `sink` until [`remove_log_sink`] (a sink that fails is dropped).
pub fn add_log_sink(sink: Box<dyn std::io::Write + Send>) -> u64 {
    let id = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
    LOG_SINKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id, sink));
    id
}

/// Stop copying log lines to the sink `id`.
pub fn remove_log_sink(id: u64) {
    LOG_SINKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(i, _)| *i != id);
}

/// stderr, plus the log sinks.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = std::io::stderr().write(buf)?;
        let mut sinks = LOG_SINKS.lock().unwrap_or_else(|p| p.into_inner());
        sinks.retain_mut(|(_, s)| s.write_all(&buf[..n]).is_ok());
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The exit code after stdout was closed by its reader: 128 + SIGPIPE, what a shell reports for
/// a tool that SIGPIPE ended.
pub const CLOSED_PIPE: u8 = 141;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Make a write to a closed stdout end the command quietly. `println!` panics on EPIPE (Rust
/// ignores SIGPIPE, so the write fails instead of killing the process); this hook keeps that
/// panic silent and notes it, so that [`closed_pipe`] turns the unwinding into
/// [`CLOSED_PIPE`]. Unwinding, rather than exiting here, runs the guards on the way: locks are
/// removed and stopped containers started. SIGPIPE stays ignored, so the daemon's writes to a
/// client that went away fail as errors and never kill it.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
        } else {
            default(info);
        }
    }));
}

/// True when a panic came from printing to a closed stdout (see [`quiet_on_closed_stdout`]).
pub fn closed_pipe() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

/// True when `e` is a write to a closed pipe (stdout written with `write!`, not `println!`).
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A progress display fed by [`Progress`] counters, shown only on a terminal.
pub struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    /// Start showing `progress` (nothing happens unless stderr is a terminal and output is
    /// human).
    pub fn start(g: &Global, progress: Arc<Progress>, verb: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if g.quiet || g.json || !std::io::stderr().is_terminal() {
            return Self { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            // The style before anything that draws: indicatif's default is an empty bar.
            bar.set_style(Shown::Spinner.style());
            bar.set_prefix(verb);
            let mut shown = Some(Shown::Spinner);
            while !s.load(Ordering::Relaxed) {
                let (files, b, total_files, total_bytes) = progress.snapshot();
                // A bar only with a byte total to fill; bytes without one as a count; and
                // when nothing is counted (forget, most of prune) a spinner with the time.
                let kind = if total_bytes > 0 {
                    Shown::Bar
                } else if b > 0 {
                    Shown::Bytes
                } else {
                    Shown::Spinner
                };
                if shown != Some(kind) {
                    bar.set_style(kind.style());
                    shown = Some(kind);
                }
                if total_bytes > 0 {
                    bar.set_length(total_bytes.max(b));
                }
                bar.set_position(b);
                bar.set_message(match (files, total_files) {
                    (0, 0) => String::new(),
                    (f, 0) => format!("{f} files"),
                    (f, t) => format!("{f}/{t} files"),
                });
                bar.tick();
                std::thread::sleep(Duration::from_millis(150));
            }
            bar.finish_and_clear();
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

/// What the progress display shows, by what is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shown {
    /// Bytes done of a known total, with rate and ETA.
    Bar,
    /// Bytes done and rate, no total.
    Bytes,
    /// Only the elapsed time (and files, if counted).
    Spinner,
}

impl Shown {
    fn style(self) -> ProgressStyle {
        let template = match self {
            Shown::Bar => {
                "{spinner} {prefix} {msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} \
                 {bytes_per_sec} ETA {eta}"
            }
            Shown::Bytes => "{spinner} {prefix} {msg} [{elapsed_precise}] {bytes} {bytes_per_sec}",
            Shown::Spinner => "{spinner} {prefix} {msg} [{elapsed_precise}]",
        };
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A snapshot's time for tables, in UTC like every time coffer shows (`--help` says so).
pub fn time_ns(t: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(t)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `ls -l`'s first column: the kind's letter, then `rwx` triplets with set-id and sticky bits
/// (`drwxr-xr-x`, `-rwsr-xr-x`, `lrwxrwxrwx`).
pub fn mode_string(kind: &str, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "chardev" => 'c',
        "blockdev" => 'b',
        "socket" => 's',
        _ => '-',
    });
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, (bit, set_x, set_no_x)) in special.iter().enumerate() {
        let shift = 6 - 3 * i as u32;
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (mode & bit != 0, bits & 1 != 0) {
            (true, true) => *set_x,
            (true, false) => *set_no_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod mode_tests {
    use super::mode_string;

    #[test]
    fn modes_read_as_ls_writes_them() {
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_string("file", 0o644), "-rw-r--r--");
        assert_eq!(mode_string("file", 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string("file", 0o2640), "-rw-r-S---");
        assert_eq!(mode_string("dir", 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string("fifo", 0o600), "prw-------");
    }
}
