//! The journal of a batch: the files it creates under their real names.
//!
//! A new file is written in place (see [`super::fetch`]), so a restore killed in the middle
//! of a batch leaves files under their real names that are incomplete. The default
//! `--overwrite if-changed` of the next run would rewrite them (their mtime is not the
//! snapshot's yet: it is set last), but `never` would keep them and `if-newer` would find
//! them newer. So before a batch creates any file, the journal in the target's root lists
//! each one with the size and mtime it will have when complete; the next run, before
//! anything else, removes every listed regular file that does not have them, then the
//! journal. It is removed when its batch is done (every file complete, or removed after a
//! failure). One write and one unlink per batch of thousands of files.
//!
//! A record is `SIZE MTIME NSEC PATH\0`, the path relative to the target (names are bytes;
//! none holds a NUL). A journal cut short by the kill is read up to its last whole record:
//! the files of the batch are created only after the journal is written.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::fetch::{FileJob, TEMP_MARK, own_pid};

/// What ends the name of a journal (`.coffer-tmp-<pid>-<writer>-journal`).
const SUFFIX: &str = "-journal";

/// The journal of the batches one writer thread of this restore writes.
pub(super) struct Journal {
    target: PathBuf,
    path: PathBuf,
}

impl Journal {
    /// The journal of writer thread `writer`.
    pub(super) fn new(target: &Path, writer: usize) -> Self {
        Journal {
            target: target.to_path_buf(),
            path: target.join(Self::name(writer)),
        }
    }

    /// The file name of the journal of this process's writer thread `writer`:
    /// `.coffer-tmp-<pid>-<writer>-journal`.
    fn name(writer: usize) -> String {
        format!("{TEMP_MARK}{}-{writer}{SUFFIX}", own_pid())
    }

    /// Record the new files of `jobs` before any is created. A file that cannot be recorded
    /// (outside the target; the journal cannot be written) is written under a temporary name
    /// instead, as a replaced file is.
    pub(super) fn record(&self, jobs: &mut [FileJob]) {
        let mut buf = Vec::new();
        for j in jobs.iter_mut().filter(|j| j.new) {
            match j.dest.strip_prefix(&self.target) {
                Ok(rel) if is_plain(rel) => {
                    let n = &j.node;
                    buf.extend_from_slice(
                        format!("{} {} {} ", n.size, n.mtime, mtime_nsec(n.mtime_nsec)).as_bytes(),
                    );
                    buf.extend_from_slice(rel.as_os_str().as_bytes());
                    buf.push(0);
                }
                _ => j.new = false,
            }
        }
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self.write(&buf) {
            tracing::debug!("restore journal {}: {e}", self.path.display());
            let _ = std::fs::remove_file(&self.path);
            for j in jobs.iter_mut() {
                j.new = false;
            }
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)?;
        f.write_all(buf)
    }

    /// The batch is done: every file it created is complete or was removed.
    pub(super) fn done(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!("restore journal {}: {e}", self.path.display()),
        }
    }
}

/// The mtime nanoseconds a restored file gets (as `futimens` is given them).
fn mtime_nsec(nsec: u32) -> u32 {
    nsec.min(999_999_999)
}

/// Only plain names: no `..`, no root.
fn is_plain(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, Component::Normal(_))) && rel.components().count() > 0
}

/// Finish what interrupted restores left in `target`: remove each file a journal lists that
/// is not complete, then the journal. Returns the files removed.
pub(super) fn recover(target: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(target) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let s = name.to_string_lossy();
        if !(s.starts_with(TEMP_MARK) && s.ends_with(SUFFIX)) {
            continue;
        }
        let path = e.path();
        // Never through a symlink: a journal is a regular file this tool wrote.
        if e.file_type().is_ok_and(|t| t.is_file())
            && let Ok(bytes) = std::fs::read(&path)
        {
            // A record cut short by the kill has no NUL after it: it is left out.
            let whole = match bytes.iter().rposition(|&b| b == 0) {
                Some(i) => &bytes[..=i],
                None => &[][..],
            };
            for record in whole.split(|&b| b == 0).filter(|r| !r.is_empty()) {
                if let Some((size, mtime, nsec, rel)) = parse(record)
                    && remove_if_incomplete(target, rel, size, mtime, nsec)
                {
                    removed += 1;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    removed
}

fn parse(record: &[u8]) -> Option<(u64, i64, i64, &Path)> {
    let mut parts = record.splitn(4, |&b| b == b' ');
    let mut num = || std::str::from_utf8(parts.next()?).ok();
    let size = num()?.parse().ok()?;
    let mtime = num()?.parse().ok()?;
    let nsec = num()?.parse().ok()?;
    let rel = Path::new(OsStr::from_bytes(parts.next()?));
    is_plain(rel).then_some((size, mtime, nsec, rel))
}

/// Remove the regular file at `rel` below `target` unless it has the size and mtime it gets
/// when complete. Nothing is followed through a symlink, and anything but a regular file
/// stays: it is not what the journal's restore created.
fn remove_if_incomplete(target: &Path, rel: &Path, size: u64, mtime: i64, nsec: i64) -> bool {
    let mut at = target.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len() - 1] {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    at.push(comps[comps.len() - 1]);
    match std::fs::symlink_metadata(&at) {
        Ok(m) if m.is_file() => {
            if m.len() == size && m.mtime() == mtime && m.mtime_nsec() == nsec {
                return false;
            }
            tracing::debug!(
                "removing {} left incomplete by an interrupted restore",
                at.display()
            );
            std::fs::remove_file(&at).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back_and_hostile_paths_are_refused() {
        assert_eq!(
            parse(b"12 1700000000 5 a/b c"),
            Some((12, 1_700_000_000, 5, Path::new("a/b c")))
        );
        assert_eq!(parse(b"12 -3 0 x"), Some((12, -3, 0, Path::new("x"))));
        assert_eq!(parse(b"12 1 0 ../x"), None);
        assert_eq!(parse(b"12 1 0 /etc/passwd"), None);
        assert_eq!(parse(b"12 1 0 "), None);
        assert_eq!(parse(b"12 1"), None);
        assert_eq!(parse(b"x 1 0 a"), None);
    }
}
