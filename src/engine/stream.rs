//! Backup of a stream: standard input (`backup --stdin`) or a command's output
//! (`backup --stdin-from-command -- pg_dumpall`), stored as one file at the root of a new
//! snapshot, as restic does.
//!
//! The snapshot's root tree holds that one file (mode 0644, the current owner, modified now),
//! so `dump latest NAME`, `ls`, `restore` (`TARGET/NAME`), `export` and `find` see it as any
//! file. Its source is recorded with the path [`SourceInfo::STDIN_PATH`] or
//! [`SourceInfo::COMMAND_PREFIX`] and the program, so that a directory backup never takes it
//! for its parent, nor a stream backup a directory's.
//!
//! The stream goes through the chunk-and-save loop of files ([`save_content`]): one window of
//! [`super::content::READ_WINDOW_BYTES`] at a time, so memory does not grow with its length.
//! The snapshot is written only once the whole stream is stored and, for a command, once it
//! exited with status 0: a failed command leaves no snapshot (the packs written may stay,
//! for `prune`).

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backup::{BackupOptions, BackupSummary, PlannedRead, ReadReason};
use super::backup::{find_parent_of, with_uploader};
use super::content::{ContentError, buffer_for, save_content};
use super::saver::{Saver, SaverStats};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::format::BlobKind;
use crate::format::snapshot::{Snapshot, SnapshotSummary, SourceInfo};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::{LockKind, Repository};

/// Default name of the file holding the stream (`--stdin-filename`).
pub const DEFAULT_NAME: &str = "stdin";
/// Lines of a failed command's stderr quoted in the error.
const STDERR_LINES: usize = 5;
/// Bytes of a failed command's stderr kept for the error (its last ones).
const STDERR_TAIL_BYTES: usize = 4096;
/// Characters of one quoted stderr line.
const STDERR_LINE_CHARS: usize = 200;
/// How long to wait, once the command exited, for its last stderr bytes (a background child
/// it left may hold the pipe open).
const STDERR_GRACE: Duration = Duration::from_secs(1);

/// Where a stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamOrigin {
    /// This process's standard input.
    Stdin,
    /// The standard output of this command (program, then arguments), run without a shell.
    Command(Vec<String>),
}

impl StreamOrigin {
    /// The source path recorded in the snapshot: [`SourceInfo::STDIN_PATH`], or
    /// [`SourceInfo::COMMAND_PREFIX`] and the program (its arguments may hold a password).
    pub fn recorded_path(&self) -> String {
        match self {
            StreamOrigin::Stdin => SourceInfo::STDIN_PATH.to_string(),
            StreamOrigin::Command(argv) => format!(
                "{}{}",
                SourceInfo::COMMAND_PREFIX,
                argv.first().map(String::as_str).unwrap_or_default()
            ),
        }
    }

    /// What an error names: `standard input` or `command PROGRAM`.
    pub fn describe(&self) -> String {
        match self {
            StreamOrigin::Stdin => "standard input".to_string(),
            StreamOrigin::Command(argv) => format!(
                "command {}",
                argv.first().map(String::as_str).unwrap_or_default()
            ),
        }
    }

    /// Open the stream: lock standard input, or start the command.
    pub fn open(&self) -> Result<Box<dyn Read>, EngineError> {
        match self {
            StreamOrigin::Stdin => Ok(Box::new(std::io::stdin().lock())),
            StreamOrigin::Command(argv) => Ok(Box::new(CommandReader::spawn(argv)?)),
        }
    }
}

/// A stream to back up, and the name of the file that holds it in the snapshot.
#[derive(Clone, Debug)]
pub struct StreamSource {
    /// Name of the file at the snapshot's root.
    pub name: String,
    /// Where the bytes come from.
    pub origin: StreamOrigin,
}

impl StreamSource {
    /// A stream named `name`, which must be one plain file name: not empty, no `/`, no `..`,
    /// no NUL, not `.`.
    pub fn new(name: &str, origin: StreamOrigin) -> Result<Self, EngineError> {
        check_name(name)?;
        if let StreamOrigin::Command(argv) = &origin
            && argv.first().is_none_or(String::is_empty)
        {
            return Err(EngineError::Usage(
                "--stdin-from-command needs a command after `--`".into(),
            ));
        }
        Ok(StreamSource {
            name: name.to_string(),
            origin,
        })
    }
}

/// Refuse a stream name that is not one plain file name.
pub fn check_name(name: &str) -> Result<(), EngineError> {
    if name.contains('/') || name.contains("..") || !Node::name_is_safe(name.as_bytes()) {
        return Err(EngineError::Usage(format!(
            "invalid --stdin-filename {name:?}: give a file name, without `/` or `..`"
        )));
    }
    Ok(())
}

/// Back up the stream `open` gives (opened once the repository is locked, so a command
/// starts only then) as the file `source.name` of a new snapshot. `opts` gives the host,
/// tags, time, parent and `dry_run`; it must name no sources.
///
/// A read error, or a command that did not exit with status 0, fails the backup before the
/// snapshot is written.
pub fn backup_stream<R: Read>(
    repo: &Repository,
    catalog: &Catalog,
    opts: &BackupOptions,
    source: &StreamSource,
    open: impl FnOnce() -> Result<R, EngineError>,
    progress: &Progress,
) -> Result<BackupSummary, EngineError> {
    let start = Instant::now();
    let time = opts.time.unwrap_or_else(chrono::Utc::now);
    check_name(&source.name)?;
    if !opts.sources.is_empty() {
        return Err(EngineError::Usage(
            "a stream is backed up alone: give no sources with --stdin".into(),
        ));
    }
    let lock = repo.lock(LockKind::Shared, "backup")?;
    catalog.refresh(repo)?;
    let parent = find_parent_of(catalog, opts, &[source.name.as_str()], true)?;

    let (saver, rx) = Saver::new(repo, catalog);
    let saver = if opts.dry_run { saver.dry_run() } else { saver };
    let stats = saver.stats.clone();
    let mut input = open()?;
    let (root, node) = with_uploader(repo, catalog, &saver, rx, &stats, || {
        let node = save_stream(repo, &saver, source, &mut input, progress)?;
        let tree = Tree {
            nodes: vec![node.clone()],
        };
        let root = saver.save(BlobKind::Tree, &super::encode_tree(&tree)?)?;
        saver.finish()?;
        Ok((root, node))
    })?;
    drop(input);

    let summary = stream_summary(node.size, &stats, start);
    let parent_id = parent.as_ref().map(|(id, _)| *id);
    let snapshot = Snapshot {
        time_ns: time.timestamp_nanos_opt().unwrap_or(0),
        host: opts.host.clone(),
        username: super::username(),
        tags: opts.tags.clone(),
        parent: parent_id,
        tree: root,
        sources: vec![SourceInfo {
            name: source.name.clone(),
            path: source.origin.recorded_path(),
        }],
        summary: summary.clone(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    // Last write of the backup: everything it names is already stored and indexed.
    let id = if opts.dry_run {
        None
    } else {
        lock.check_held()?;
        let id = repo.save_snapshot(&snapshot)?;
        catalog.add_snapshot(&id, &snapshot)?;
        Some(id)
    };
    let would_read = if opts.dry_run {
        vec![PlannedRead {
            path: source.origin.recorded_path(),
            size: node.size,
            reason: ReadReason::New,
        }]
    } else {
        Vec::new()
    };
    Ok(BackupSummary {
        snapshot_id: id,
        parent: parent_id,
        files: 1,
        dirs: 0,
        files_read: 1,
        files_unchanged: 0,
        total_bytes: node.size,
        bytes_read: node.size,
        blobs_added: summary.blobs_added,
        bytes_added: summary.bytes_added,
        stored_bytes_added: summary.stored_bytes_added,
        packs_written: stats.packs_written.load(Ordering::Relaxed),
        index_files_written: stats.index_files_written.load(Ordering::Relaxed),
        duration_secs: start.elapsed().as_secs_f64(),
        warnings: Vec::new(),
        tree: root,
        dry_run: opts.dry_run,
        would_read,
    })
}

/// Chunk and save the whole stream; the file node that holds it.
fn save_stream(
    repo: &Repository,
    saver: &Saver<'_>,
    source: &StreamSource,
    input: &mut impl Read,
    progress: &Progress,
) -> Result<Node, EngineError> {
    let chunker = repo.chunker();
    // Grows by doubling up to one window, whatever the stream's length.
    let mut buf = buffer_for(0, &chunker);
    let saved = save_content(saver, &chunker, input, &mut buf, |bytes| {
        progress.add_bytes(bytes)
    });
    let (content, size) = match saved {
        Ok(r) => r,
        Err(ContentError::Save(e)) => return Err(e),
        Err(ContentError::Read(e)) => {
            return Err(EngineError::Io {
                path: source.origin.describe(),
                source: io::Error::new(e.kind(), format!("{e}; no snapshot was written")),
            });
        }
    };
    progress.file_done(0);
    let now = chrono::Utc::now();
    let (secs, nsec) = (now.timestamp(), now.timestamp_subsec_nanos());
    let mut node = Node::new(source.name.as_bytes().to_vec(), NodeKind::File)
        .with_mode(0o100644)
        .with_owner(
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
        .with_mtime(secs, nsec)
        .with_ctime(secs, nsec);
    node.size = size;
    node.content = content;
    Ok(node)
}

/// A command's standard output as a stream. Its end waits for the command: a command that
/// did not exit with status 0 turns the end into an error naming its exit status and the
/// last lines of its stderr, which is also passed through to this process's stderr as it
/// comes. Dropped before its end, the reader kills the command (and reaps it).
pub struct CommandReader {
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    /// The last bytes of the command's stderr.
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    /// Closed when the command's stderr reached its end.
    stderr_done: Receiver<()>,
    /// Why the stream failed, once it did: every later read fails again.
    failed: Option<String>,
}

impl CommandReader {
    /// Start `argv` (program, then arguments, no shell) with its standard input on
    /// `/dev/null`, its stdout piped to the reader.
    pub fn spawn(argv: &[String]) -> Result<Self, EngineError> {
        let (program, args) = argv.split_first().ok_or_else(|| {
            EngineError::Usage("--stdin-from-command needs a command after `--`".into())
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::Usage(format!("cannot run command {program}: {e}")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, stderr_done) = std::sync::mpsc::channel::<()>();
        if let Some(mut err) = stderr {
            let tail = stderr_tail.clone();
            let spawned = std::thread::Builder::new()
                .name("coffer-cmd-stderr".into())
                .spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match err.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                let _ = io::Write::write_all(&mut io::stderr(), &buf[..n]);
                                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                                t.extend_from_slice(&buf[..n]);
                                if t.len() > STDERR_TAIL_BYTES {
                                    let cut = t.len() - STDERR_TAIL_BYTES;
                                    t.drain(..cut);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    drop(done_tx);
                });
            if let Err(e) = spawned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EngineError::Io {
                    path: "stderr reader thread".into(),
                    source: e,
                });
            }
        }
        Ok(CommandReader {
            child: Some(child),
            stdout,
            stderr_tail,
            stderr_done,
            failed: None,
        })
    }

    /// At the end of the output: wait for the command; an error unless it exited with 0.
    fn finish(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait()?;
        if status.success() {
            return Ok(());
        }
        // Its stderr is complete once the pipe closes (normally at its exit).
        let _ = self.stderr_done.recv_timeout(STDERR_GRACE);
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let message = failure_message(status, &tail);
        self.failed = Some(message.clone());
        Err(io::Error::other(message))
    }
}

impl Read for CommandReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(m) = &self.failed {
            return Err(io::Error::other(m.clone()));
        }
        let Some(out) = &mut self.stdout else {
            return Ok(0);
        };
        let n = out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.stdout = None;
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for CommandReader {
    fn drop(&mut self) {
        // Not read to its end (the backup failed): the command is not waited for.
        self.stdout = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line saying how the command failed: its exit status (or the signal that killed it)
/// and the last lines of its stderr (`tail`, its last bytes).
fn failure_message(status: ExitStatus, tail: &[u8]) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("failed ({status})"),
    };
    let lines = last_lines(tail, STDERR_LINES);
    if lines.is_empty() {
        how
    } else {
        format!("{how}; its stderr ended with: {lines}")
    }
}

/// The last `n` non-blank lines of `bytes` (lossy UTF-8, each cut to a few hundred
/// characters), joined with ` | ` into one line.
fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .take(n)
        .map(|l| {
            let mut s: String = l.chars().filter(|c| !c.is_control()).collect();
            if s.chars().count() > STDERR_LINE_CHARS {
                s = s.chars().take(STDERR_LINE_CHARS).collect();
                s.push_str("...");
            }
            s
        })
        .collect();
    lines.reverse();
    lines.join(" | ")
}

/// The figures of a stream's snapshot: one file of `size` bytes, all read.
fn stream_summary(size: u64, stats: &SaverStats, start: Instant) -> SnapshotSummary {
    SnapshotSummary {
        files: 1,
        dirs: 0,
        total_bytes: size,
        files_read: 1,
        bytes_read: size,
        blobs_added: stats.blobs_added.load(Ordering::Relaxed),
        bytes_added: stats.bytes_added.load(Ordering::Relaxed),
        stored_bytes_added: stats.stored_bytes_added.load(Ordering::Relaxed),
        errors: 0,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_one_plain_file_name() {
        for ok in ["stdin", "db.sql", "dump-2025.tar", ".hidden"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/abs", "a..b", "x\0y"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(StreamSource::new("x", StreamOrigin::Command(Vec::new())).is_err());
    }

    #[test]
    fn recorded_paths_are_streams() {
        let stdin = SourceInfo {
            name: "stdin".into(),
            path: StreamOrigin::Stdin.recorded_path(),
        };
        let cmd = SourceInfo {
            name: "db.sql".into(),
            path: StreamOrigin::Command(argv(&["pg_dumpall", "-U", "postgres"])).recorded_path(),
        };
        assert!(stdin.is_stream() && cmd.is_stream());
        assert_eq!(cmd.path, "<command> pg_dumpall");
        let dir = SourceInfo {
            name: "stdin".into(),
            path: "/srv/stdin".into(),
        };
        assert!(!dir.is_stream());
    }

    #[test]
    fn a_command_output_is_read_to_its_end() {
        let mut r = CommandReader::spawn(&argv(&["sh", "-c", "printf hello; printf x >&2"]))
            .expect("spawn");
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn a_failed_command_fails_the_end_of_its_stream() {
        let mut r = CommandReader::spawn(&argv(&[
            "sh",
            "-c",
            "echo partial; echo first >&2; echo 'pg_dump: error: no such database' >&2; exit 3",
        ]))
        .expect("spawn");
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err().to_string();
        assert_eq!(out, b"partial\n");
        assert_eq!(
            e,
            "exited with status 3; its stderr ended with: first | pg_dump: error: no such database"
        );
        // Every later read fails too.
        assert!(r.read(&mut [0u8; 16]).is_err());
    }

    #[test]
    fn a_killed_command_names_the_signal() {
        let mut r = CommandReader::spawn(&argv(&["sh", "-c", "kill -9 $$"])).expect("spawn");
        let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert_eq!(e, "was killed by signal 9");
    }

    #[test]
    fn a_missing_program_is_refused() {
        let e = CommandReader::spawn(&argv(&["/nonexistent/coffer-no-such-program"]))
            .err()
            .expect("no such program");
        assert!(e.to_string().contains("cannot run command"), "{e}");
    }

    #[test]
    fn a_reader_dropped_early_kills_the_command() {
        let mut r = CommandReader::spawn(&argv(&["sh", "-c", "echo start; exec sleep 600"]))
            .expect("spawn");
        let mut first = [0u8; 6];
        r.read_exact(&mut first).unwrap();
        let started = Instant::now();
        drop(r);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn stderr_tails_are_one_short_line() {
        assert_eq!(last_lines(b"", 5), "");
        assert_eq!(last_lines(b"a\n\n  b  \nc\n", 2), "b | c");
        let long = "x".repeat(1000);
        let l = last_lines(long.as_bytes(), 5);
        assert_eq!(l.chars().count(), STDERR_LINE_CHARS + 3);
        assert_eq!(last_lines(b"bad \x1b[31mcolour\r\n", 5), "bad [31mcolour");
    }
}
