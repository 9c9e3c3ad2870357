//! The key that last opened a repository on this host, kept in the cache directory
//! (`<cache dir>/<repository id>/last-key`, owner-only) so that the next open tries it first:
//! key files planted in the repository then cost nothing. It is only a hint: when it is
//! missing, unreadable or names a key that is gone, the key files are tried in their order.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::id::KeyId;

const FILE: &str = "last-key";

/// The hint's path, if `repo_id` can name a directory: it comes from a config whose MAC is
/// not checked yet, so it must not be able to point outside the cache directory.
fn path(cache_dir: &Path, repo_id: &str) -> Option<PathBuf> {
    let hex = repo_id.len() == 64 && repo_id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| cache_dir.join(repo_id).join(FILE))
}

/// The key last used here for the repository `repo_id`, if remembered.
pub(super) fn load(cache_dir: &Path, repo_id: &str) -> Option<KeyId> {
    // Only a cache directory of this user's own is trusted.
    super::check_cache_dir(cache_dir).ok()?;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path(cache_dir, repo_id)?)
        .ok()?
        .take(128)
        .read_to_string(&mut text)
        .ok()?;
    KeyId::from_hex(text.trim()).ok()
}

/// Remember `key` as the one that opened `repo_id` here. Failures only cost the hint.
pub(super) fn save(cache_dir: &Path, repo_id: &str, key: KeyId) {
    if let Err(e) = try_save(cache_dir, repo_id, key) {
        tracing::debug!("could not remember the key in use: {e}");
    }
}

/// Why the hint was not written.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    /// The cache directory is not this user's own (or cannot be made).
    #[error(transparent)]
    CacheDir(#[from] super::CacheDirError),
    /// The repository id cannot name a directory.
    #[error("repository id {0:?} is not hex")]
    NotHex(String),
    /// Writing the file failed.
    #[error(transparent)]
    Write(#[from] super::PrivateFileError),
}

fn try_save(cache_dir: &Path, repo_id: &str, key: KeyId) -> Result<(), SaveError> {
    super::check_cache_dir(cache_dir)?;
    let file = path(cache_dir, repo_id).ok_or_else(|| SaveError::NotHex(repo_id.into()))?;
    // Written aside and renamed, so that a reader never sees half an id.
    super::write_private(&file, format!("{}\n", key.to_hex()).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_repository_owner_only_and_only_hex_ids() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let repo = "ab".repeat(32);
        assert_eq!(load(&cache, &repo), None);
        save(&cache, &repo, KeyId([7; 32]));
        assert_eq!(load(&cache, &repo), Some(KeyId([7; 32])));
        assert_eq!(load(&cache, &"cd".repeat(32)), None);
        let file = cache.join(&repo).join(FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        save(&cache, &repo, KeyId([8; 32]));
        assert_eq!(load(&cache, &repo), Some(KeyId([8; 32])));
        // A repository id from an unchecked config cannot lead elsewhere.
        let evil = format!("../../{}", "a".repeat(58));
        save(&cache, &evil, KeyId([9; 32]));
        assert_eq!(load(&cache, &evil), None);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        // A damaged hint is no hint.
        std::fs::write(&file, "not an id").unwrap();
        assert_eq!(load(&cache, &repo), None);
    }
}
