//! The manual trigger of the old container: `docker exec <container> backup` (and
//! `/bin/backup`) runs the daemon's job now. The running daemon does the work, so its
//! one-run-at-a-time rule holds and `docker logs` shows the run; the caller sees the same log
//! lines and gets the run's exit code.
//!
//! The daemon listens on a Unix socket in its cache directory (owner-only). A client sends one
//! line, `run`, and reads log lines until a last line `\0exit N`. Without a daemon (a one-off
//! container, a host without the service) the client runs the job itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use clap::Args;

use super::args::Global;
use super::output::{add_log_sink, remove_log_sink};

/// The last line of a trigger's answer: `\0exit N`.
const EXIT_MARK: &str = "\0exit ";

/// `trigger` (also the program name `backup`).
#[derive(Args, Debug, Clone, Default)]
pub struct TriggerArgs {
    /// Configuration file, used only when no daemon is running (see docs/daemon.md).
    #[arg(long, short = 'c', env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where the daemon of the cache directory `cache` records its next run.
pub fn schedule_path(cache: &Path) -> PathBuf {
    cache.join("daemon-schedule.json")
}

/// Whether a daemon answers on the socket of `cache`.
pub fn daemon_alive(cache: &Path) -> bool {
    let Ok(mut conn) = UnixStream::connect(socket_path(cache)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if conn.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(conn.take(64)).read_line(&mut line).is_ok() && line.trim() == "pong"
}

/// Where the daemon of the cache directory `cache` listens.
pub fn socket_path(cache: &Path) -> PathBuf {
    cache.join("daemon.sock")
}

/// Serve triggers on `path` until the process ends; `run` runs the job once (under the
/// daemon's one-run gate) and returns its exit code.
pub fn serve(path: &Path, gate: &Mutex<()>, run: &(dyn Fn() -> u8 + Sync)) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        crate::daemon::state::private_dir_all(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a daemon that died; a live one answers, and then this one must not
    // start (two daemons on one cache would run the job twice).
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another coffer daemon already listens on {}: stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    // A connection per thread: a health check's ping is answered while a manual run goes on.
    std::thread::scope(|scope| {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            scope.spawn(move || {
                if let Err(e) = answer(conn, gate, run) {
                    tracing::warn!("manual trigger: {e:#}");
                }
            });
        }
    });
    Ok(())
}

fn answer(conn: UnixStream, gate: &Mutex<()>, run: &(dyn Fn() -> u8 + Sync)) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut line = String::new();
    // A request is one short line: a client that sends more is not read into memory.
    BufReader::new((&conn).take(64)).read_line(&mut line)?;
    let mut out = conn.try_clone()?;
    match line.trim() {
        "run" => {}
        "ping" => {
            writeln!(out, "pong")?;
            return Ok(());
        }
        other => anyhow::bail!("unknown request {other:?}"),
    }
    if gate.try_lock().is_err() {
        let _ = writeln!(
            out,
            "a backup is running now; this one starts when it is done"
        );
    }
    let _running = gate.lock().unwrap_or_else(|p| p.into_inner());
    tracing::info!("manual backup requested (docker exec ... backup)");
    let sink = add_log_sink(Box::new(conn.try_clone()?));
    let code = run();
    remove_log_sink(sink);
    writeln!(out, "{EXIT_MARK}{code}")?;
    Ok(())
}

/// Ask the daemon of `cache` to run the job now and relay its log lines; `None` when no
/// daemon listens there.
pub fn request(cache: &Path) -> anyhow::Result<Option<u8>> {
    let path = socket_path(cache);
    let Ok(mut conn) = UnixStream::connect(&path) else {
        return Ok(None);
    };
    conn.write_all(b"run\n")
        .with_context(|| format!("asking the daemon at {} to run", path.display()))?;
    let mut stdout = std::io::stdout();
    for line in BufReader::new(conn).lines() {
        let line = line.context("reading the daemon's answer")?;
        if let Some(code) = line.strip_prefix(EXIT_MARK) {
            return Ok(Some(code.trim().parse().unwrap_or(1)));
        }
        let _ = writeln!(stdout, "{line}");
    }
    anyhow::bail!("the daemon closed the connection before the run finished (was it stopped?)")
}

/// `coffer trigger` / `backup`: run the job through the daemon, or here when none runs.
pub fn trigger(g: &Global, a: &TriggerArgs) -> anyhow::Result<u8> {
    let cache = g.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
    if let Some(code) = request(&cache)? {
        return Ok(code);
    }
    tracing::info!("no coffer daemon is running here: running the job in this process");
    super::daemon::run_once(
        g,
        &super::daemon::RunJobArgs {
            config: a.config.clone(),
            metrics_textfile: None,
        },
    )
}
