//! `cache`: the per-repository directories in a cache directory (`<cache>/<repository id>/`,
//! each a catalog and a key hint), when each was last used, and the removal of those unused
//! for long, as restic's `cache --cleanup`. A catalog is a cache: removing one costs a rebuild
//! on the next open of its repository, never data. Only directories named like a repository
//! id (64 hex digits) are considered; anything else in the cache directory is left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::EngineError;

/// One repository's cache.
#[derive(Clone, Debug, Serialize)]
pub struct RepositoryCache {
    /// The repository id (the directory's name).
    pub repository_id: String,
    /// The directory.
    pub path: PathBuf,
    /// Bytes in it.
    pub bytes: u64,
    /// Seconds since anything in it was last modified.
    pub unused_secs: u64,
    /// Whether `cleanup` removed it (or, for a dry run, would).
    pub removed: bool,
}

fn is_repository_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Bytes and newest modification time of everything below `dir`.
fn usage(dir: &Path) -> (u64, SystemTime) {
    let (mut bytes, mut newest) = (0u64, SystemTime::UNIX_EPOCH);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if let Ok(t) = m.modified() {
                newest = newest.max(t);
            }
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
            }
        }
    }
    (bytes, newest)
}

/// The repository caches in `cache_dir`, least recently used first; with `remove_unused_for`,
/// those unused for longer are removed (unless `dry_run`).
pub fn repository_caches(
    cache_dir: &Path,
    remove_unused_for: Option<Duration>,
    dry_run: bool,
) -> Result<Vec<RepositoryCache>, EngineError> {
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EngineError::Io {
                path: cache_dir.display().to_string(),
                source,
            });
        }
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_repository_id(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let (bytes, newest) = usage(&path);
        let unused = now.duration_since(newest).unwrap_or_default();
        let removed = remove_unused_for.is_some_and(|max| unused > max);
        if removed && !dry_run {
            std::fs::remove_dir_all(&path).map_err(|source| EngineError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        out.push(RepositoryCache {
            repository_id: name,
            path,
            bytes,
            unused_secs: unused.as_secs(),
            removed,
        });
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.unused_secs));
    Ok(out)
}
