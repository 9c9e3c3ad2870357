//! The cache directory's trust check: catalogs and key hints are only read from and written
//! to a directory of this user's own.

use std::path::Path;

/// Why the cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    /// It could not be created.
    #[error("creating the cache directory {}", path.display())]
    Create {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Its metadata could not be read.
    #[error("the cache directory {}", path.display())]
    Stat {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not a directory of this user's own.
    #[error("{0}")]
    Untrusted(String),
}

/// Make sure the cache directory is this user's own: created owner-only when missing; an
/// existing one (or a symlink in its place) owned by someone else, or writable by others,
/// is refused, since a planted catalog could make backups skip data.
pub fn check_cache_dir(dir: &Path) -> Result<(), CacheDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CacheDirError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    let m = std::fs::symlink_metadata(dir).map_err(|source| CacheDirError::Stat {
        path: dir.to_path_buf(),
        source,
    })?;
    let me = rustix::process::geteuid().as_raw();
    if m.file_type().is_symlink() || !m.is_dir() {
        return Err(CacheDirError::Untrusted(format!(
            "the cache directory {} is not a directory (a symlink?): remove it, or set \
             --cache-dir / XDG_CACHE_HOME",
            dir.display()
        )));
    }
    // Under the shared temporary directory, only a directory of this user's own is
    // trusted; elsewhere (a home, a configured or mounted directory) one nobody else can
    // write to.
    let shared = dir.starts_with(std::env::temp_dir());
    if (shared && m.uid() != me) || m.mode() & 0o022 != 0 {
        return Err(CacheDirError::Untrusted(format!(
            "the cache directory {} is owned by uid {} or writable by others: refusing to \
             trust a catalog there; set --cache-dir or XDG_CACHE_HOME to a directory of your \
             own",
            dir.display(),
            m.uid()
        )));
    }
    Ok(())
}
