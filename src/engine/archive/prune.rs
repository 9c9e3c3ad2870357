//! Retention of the nightly archives in the old tool's archive directory: files whose name
//! starts with the pruning prefix and whose modification time is older than the retention
//! days are deleted, as `BACKUP_RETENTION_DAYS` and `BACKUP_PRUNING_PREFIX` did.
//!
//! The decision is the pure [`select`]; [`apply`] lists and deletes. Only regular files are
//! ever considered (the repository may live in a directory beside them), and, like the old
//! tool, nothing is deleted when the rule would delete every matching archive.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::engine::EngineError;

/// A file in the archive directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Its name.
    pub name: String,
    /// Its modification time.
    pub modified: SystemTime,
}

/// What a prune of the archive directory did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchivePruneSummary {
    /// Files that matched the prefix.
    pub matched: usize,
    /// Files deleted.
    pub deleted: Vec<String>,
    /// Why nothing was deleted although files were old enough.
    pub refused: Option<String>,
}

/// The names to delete among `files`: those starting with `prefix` and modified before
/// `now - days`; none when that would be all of the matching files.
pub fn select(
    files: &[ArchiveFile],
    prefix: &str,
    days: u32,
    now: SystemTime,
) -> (Vec<String>, usize, Option<String>) {
    let cutoff = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let matching: Vec<&ArchiveFile> = files
        .iter()
        .filter(|f| f.name.starts_with(prefix) && !f.name.starts_with('.'))
        .collect();
    let old: Vec<String> = matching
        .iter()
        .filter(|f| f.modified < cutoff)
        .map(|f| f.name.clone())
        .collect();
    if !old.is_empty() && old.len() == matching.len() {
        let why = format!(
            "all {} archives starting with {prefix:?} are older than {days} days: none is \
             deleted (the newest would be lost); check that the nightly archive is written",
            matching.len()
        );
        return (Vec::new(), matching.len(), Some(why));
    }
    (old, matching.len(), None)
}

/// Delete the archives in `dir` that [`select`] picks.
pub fn apply(dir: &Path, prefix: &str, days: u32) -> Result<ArchivePruneSummary, EngineError> {
    let io_err = |path: &Path, source| EngineError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let md = e.metadata().map_err(|x| io_err(&e.path(), x))?;
        if !md.is_file() {
            continue;
        }
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        files.push(ArchiveFile {
            name,
            modified: md.modified().map_err(|x| io_err(&e.path(), x))?,
        });
    }
    let (delete, matched, refused) = select(&files, prefix, days, SystemTime::now());
    let mut out = ArchivePruneSummary {
        matched,
        refused,
        ..Default::default()
    };
    for name in delete {
        let path = dir.join(&name);
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        out.deleted.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, days_old: u64, now: SystemTime) -> ArchiveFile {
        ArchiveFile {
            name: name.into(),
            modified: now - Duration::from_secs(days_old * 86_400 + 60),
        }
    }

    #[test]
    fn old_archives_with_the_prefix_go() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let files = [
            f("claude-backup-20260201-020000.tar.gz", 10, now),
            f("claude-backup-20260202-020000.tar.gz", 8, now),
            f("claude-backup-20260209-020000.tar.gz", 0, now),
            f("pre-restore-backup-20260101.tar.gz", 30, now),
            f(".claude-backup-tmp", 30, now),
        ];
        let (del, matched, refused) = select(&files, "claude-backup-", 7, now);
        assert_eq!(
            del,
            [
                "claude-backup-20260201-020000.tar.gz",
                "claude-backup-20260202-020000.tar.gz"
            ]
        );
        assert_eq!(matched, 3);
        assert!(refused.is_none());
        // Six days old stays with a seven-day rule.
        let (del, _, _) = select(&[f("b-1", 6, now), f("b-2", 0, now)], "b-", 7, now);
        assert!(del.is_empty());
    }

    #[test]
    fn never_deletes_every_archive() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let files = [f("b-1", 10, now), f("b-2", 9, now)];
        let (del, matched, refused) = select(&files, "b-", 7, now);
        assert!(del.is_empty());
        assert_eq!(matched, 2);
        assert!(refused.unwrap().contains("none is deleted"));
    }

    #[test]
    fn apply_deletes_only_old_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        for n in ["b-old.tar.gz", "b-new.tar.gz", "other.tar.gz"] {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        std::fs::create_dir(dir.path().join("b-dir")).unwrap();
        for n in ["b-old.tar.gz", "other.tar.gz", "b-dir"] {
            filetime::set_file_mtime(
                dir.path().join(n),
                filetime::FileTime::from_system_time(old),
            )
            .unwrap();
        }
        let s = apply(dir.path(), "b-", 7).unwrap();
        assert_eq!(s.deleted, ["b-old.tar.gz"]);
        assert_eq!(s.matched, 2);
        assert!(dir.path().join("b-new.tar.gz").exists());
        assert!(dir.path().join("other.tar.gz").exists());
        assert!(dir.path().join("b-dir").is_dir());
    }
}
