//! Small owner-only files in directories of this user's own (the key hint, the daemon's job
//! state and schedule): written whole or not at all, never through a planted symlink.
//!
//! It must not be used for repository objects (those go through the store) nor for anything
//! large: the bytes are held in memory.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Writing an owner-only file failed; `path` is what failed: the directory, the temporary
/// file beside the target, or the target.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PrivateFileError {
    /// The directory or file that could not be created, written or renamed.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateFileError + '_ {
    move |source| PrivateFileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Create a directory and its missing parents, owner-only (0700).
pub fn private_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replace `path` with `bytes` atomically: its directory is created owner-only when missing,
/// the bytes go to a new 0600 file beside it (`<name>.<pid>.tmp`), are synced, and the file is
/// renamed over `path`. A reader sees the old content or the new, never half of it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir_all(dir).map_err(at(dir))?;
    }
    let tmp = temporary_name(path);
    // An entry planted at the temporary name (a symlink) is removed, never written through:
    // the file is created new, and O_NOFOLLOW refuses a symlink raced in after the removal.
    let _ = std::fs::remove_file(&tmp);
    let written = write_new(&tmp, bytes).and_then(|()| {
        // The rename replaces a symlink at `path` itself; it never follows it.
        std::fs::rename(&tmp, path).map_err(at(path))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn write_new(tmp: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(tmp)
        .map_err(at(tmp))?;
    f.write_all(bytes).map_err(at(tmp))?;
    f.sync_all().map_err(at(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_owner_only_and_replaces_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/state.json");
        write_private(&target, b"one").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target), 0o600);
        assert_eq!(mode(target.parent().unwrap()), 0o700);
        // A symlink planted at the temporary name or at the target is replaced, not followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, temporary_name(&target)).unwrap();
        write_private(&target, b"two").unwrap();
        std::fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_private(&target, b"three").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&target).unwrap(), b"three");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn an_error_names_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = write_private(&file.join("below"), b"x").unwrap_err();
        // The directory to create is a file.
        assert_eq!(e.path, file);
    }
}
