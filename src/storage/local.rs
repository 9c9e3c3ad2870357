//! A repository on a local file system.
//!
//! Writes go to a temporary file in `tmp/` of the same file system, are fsynced, renamed over
//! the final name, and the directory is fsynced: after a crash an object is either complete or
//! absent. `create_new` links the temporary file to the final name, which fails atomically if
//! the name exists (the lock primitive on local disk).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Listed, ObjectStore, StorageError};

/// Objects as files under a root directory.
pub struct LocalStore {
    root: PathBuf,
    counter: AtomicU64,
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
    if source.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(path.display().to_string())
    } else {
        StorageError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

impl LocalStore {
    /// A store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            counter: AtomicU64::new(0),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, StorageError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{}-{}-{n}", std::process::id(), rand_suffix()));
        let mut f = fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("sync", &tmp, e))?;
        Ok(tmp)
    }

    fn ensure_parent(&self, path: &Path) -> Result<(), StorageError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        Ok(())
    }
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn sync_dir(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(d) = fs::File::open(parent)
    {
        // Best effort: some file systems refuse fsync on directories.
        let _ = d.sync_all();
    }
}

impl ObjectStore for LocalStore {
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let p = self.path(name);
        fs::read(&p).map_err(|e| io("read", &p, e))
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let p = self.path(name);
        let mut f = fs::File::open(&p).map_err(|e| io("open", &p, e))?;
        let size = f.metadata().map_err(|e| io("stat", &p, e))?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StorageError::Io {
                op: "read",
                path: p.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("range {offset}+{len} beyond size {size}"),
                ),
            });
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io("seek", &p, e))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| io("read", &p, e))?;
        Ok(buf)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let p = self.path(name);
        self.ensure_parent(&p)?;
        let tmp = self.write_temp(bytes)?;
        fs::rename(&tmp, &p).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("rename", &p, e)
        })?;
        sync_dir(&p);
        Ok(())
    }

    fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        let p = self.path(name);
        self.ensure_parent(&p)?;
        let tmp = self.write_temp(bytes)?;
        let linked = fs::hard_link(&tmp, &p);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&p);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io("link", &p, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let mut out = Vec::new();
        let dir = self.path(prefix.trim_end_matches('/'));
        let mut stack = vec![(dir, prefix.trim_end_matches('/').to_string())];
        while let Some((d, rel)) = stack.pop() {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", &d, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| io("list", &d, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let full = format!("{rel}/{name}");
                let meta = entry.metadata().map_err(|e| io("stat", &entry.path(), e))?;
                if meta.is_dir() {
                    stack.push((entry.path(), full));
                } else {
                    out.push(Listed {
                        name: full,
                        size: meta.len(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn size(&self, name: &str) -> Result<Option<u64>, StorageError> {
        let p = self.path(name);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("stat", &p, e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        let p = self.path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", &p, e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::LocalStore::new(dir.path().join("repo"));
        super::super::conformance::run(&store);
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("repo/tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}
