//! A repository on a local file system.
//!
//! Writes go to a temporary file in `tmp/` of the same file system, are fsynced, renamed over
//! the final name, and the directory is fsynced: after a crash an object is either complete or
//! absent. `create_new` links the temporary file to the final name, which fails atomically if
//! the name exists (the lock primitive on local disk).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Listed, ObjectStore, StorageError};

/// Objects as files under a root directory.
pub struct LocalStore {
    root: PathBuf,
    counter: AtomicU64,
    /// Recently read packs, open, with their sizes; most recent last.
    open_packs: Mutex<Vec<(String, Arc<fs::File>, u64)>>,
}

/// A temporary file older than this is a killed writer's leftover.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Packs kept open for range reads.
const OPEN_PACKS: usize = 16;

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
            open_packs: Mutex::new(Vec::new()),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A new, empty temporary file in `tmp/`.
    fn create_temp(&self) -> Result<(fs::File, PathBuf), StorageError> {
        let dir = self.root.join("tmp");
        private_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{}-{}-{n}", std::process::id(), rand_suffix()));
        let f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)
        }
        .map_err(|e| io("create", &tmp, e))?;
        Ok((f, tmp))
    }

    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, StorageError> {
        let (mut f, tmp) = self.create_temp()?;
        f.write_all(bytes).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("write", &tmp, e)
        })?;
        f.sync_all().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("sync", &tmp, e)
        })?;
        // On disk: out of the page cache (see drop_cached). A sync into this store writes its
        // packs through here, a backup through TempFileWriter.
        drop_cached(&f);
        Ok(tmp)
    }

    fn open_pack(&self, name: &str, p: &Path) -> Result<(Arc<fs::File>, u64), StorageError> {
        {
            let mut open = self.open_packs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = open.iter().position(|(n, _, _)| n == name) {
                let entry = open.remove(i);
                let found = (entry.1.clone(), entry.2);
                open.push(entry);
                return Ok(found);
            }
        }
        let f = fs::File::open(p).map_err(|e| io("open", p, e))?;
        let size = f.metadata().map_err(|e| io("stat", p, e))?.len();
        let f = Arc::new(f);
        let mut open = self.open_packs.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= OPEN_PACKS {
            open.remove(0);
        }
        open.push((name.to_string(), f.clone(), size));
        Ok((f, size))
    }

    fn forget_open(&self, name: &str) {
        if name.starts_with("packs/") {
            self.open_packs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(n, _, _)| n != name);
        }
    }

    fn ensure_parent(&self, path: &Path) -> Result<(), StorageError> {
        if let Some(parent) = path.parent() {
            private_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        Ok(())
    }
}

/// A pack (or any large object) written straight into a temporary file of the repository:
/// no copy of it is held in memory. `finish` fsyncs and renames it into place.
pub struct TempFileWriter {
    file: Option<std::io::BufWriter<fs::File>>,
    tmp: PathBuf,
    root: PathBuf,
}

/// Buffer between appends and the file: small blobs (trees) are gathered into one write.
const SPOOL_BUFFER_BYTES: usize = 256 << 10;

impl super::ObjectWriter for TempFileWriter {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(|e| io("write", &self.tmp, e)),
            None => Err(io(
                "write",
                &self.tmp,
                std::io::Error::other("writer already finished"),
            )),
        }
    }

    fn finish(mut self: Box<Self>, name: &str) -> Result<(), StorageError> {
        let file = self.file.take().ok_or_else(|| {
            io(
                "finish",
                &self.tmp,
                std::io::Error::other("writer already finished"),
            )
        })?;
        let result = (|| {
            let f = file
                .into_inner()
                .map_err(|e| io("write", &self.tmp, e.into_error()))?;
            f.sync_all().map_err(|e| io("sync", &self.tmp, e))?;
            drop_cached(&f);
            drop(f);
            let p = self.root.join(name);
            if let Some(parent) = p.parent() {
                private_dir_all(parent).map_err(|e| io("create", parent, e))?;
            }
            fs::rename(&self.tmp, &p).map_err(|e| io("rename", &p, e))?;
            sync_dir(&p);
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Drop for TempFileWriter {
    fn drop(&mut self) {
        // Not finished: nothing may be left under tmp/.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Drop an object's pages from the page cache once it is fsynced, so that a backup (or a sync
/// into this store) does not push the host's working set (a database's pages) out with packs
/// it will not read again soon, and the next pack's pages are those just freed (see
/// docs/performance.md: on a VM whose host takes back the memory the guest frees, new
/// page-cache pages cost 2.6 ms per MiB to fault in). Only advice: an error changes nothing.
fn drop_cached(f: &fs::File) {
    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
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

    fn read_at_most(&self, name: &str, max: u64) -> Result<Vec<u8>, StorageError> {
        use std::io::Read;
        let p = self.path(name);
        let f = fs::File::open(&p).map_err(|e| io("open", &p, e))?;
        // The length only sizes the buffer; the limit is applied to what is read.
        let hint = f
            .metadata()
            .map_or(0, |m| m.len())
            .min(max.saturating_add(1));
        let mut buf = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
        f.take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| io("read", &p, e))?;
        if buf.len() as u64 > max {
            return Err(StorageError::TooLarge {
                path: p.display().to_string(),
                max,
            });
        }
        Ok(buf)
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let p = self.path(name);
        // Packs never change under their name: keep a few open for the blob-by-blob reads of
        // a restore (an open per blob was a tenth of its time). Anything else is opened anew.
        let (f, size) = if name.starts_with("packs/") {
            self.open_pack(name, &p)?
        } else {
            let f = fs::File::open(&p).map_err(|e| io("open", &p, e))?;
            let size = f.metadata().map_err(|e| io("stat", &p, e))?.len();
            (Arc::new(f), size)
        };
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
        let mut buf = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*f, &mut buf, offset)
            .map_err(|e| io("read", &p, e))?;
        Ok(buf)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let p = self.path(name);
        self.forget_open(name);
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
        self.forget_open(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", &p, e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn spool(&self) -> Result<Option<Box<dyn super::ObjectWriter>>, StorageError> {
        let (f, tmp) = self.create_temp()?;
        Ok(Some(Box::new(TempFileWriter {
            file: Some(std::io::BufWriter::with_capacity(SPOOL_BUFFER_BYTES, f)),
            tmp,
            root: self.root.clone(),
        })))
    }

    fn clean_leftovers(&self) -> Result<u64, StorageError> {
        let dir = self.root.join("tmp");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("list", &dir, e)),
        };
        let mut removed = 0;
        for entry in rd {
            let entry = entry.map_err(|e| io("list", &dir, e))?;
            // Commands that take no repository lock (init, key add, taking a lock itself) also
            // write through tmp/: leave files young enough to be such a write in progress.
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < LEFTOVER_AGE);
            if young {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("delete", &entry.path(), e)),
            }
        }
        Ok(removed)
    }
}

/// Create a directory and its missing parents, owner-only (0700): repository objects are
/// encrypted, but their names, sizes and times are the repository's shape.
fn private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::LocalStore::new(dir.path().join("repo"));
        super::super::conformance::run(&store);
        super::super::conformance::run_spool(&store);
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("repo/tmp"))
                .unwrap()
                .count(),
            0
        );
        // A killed writer's temporary file is what clean_leftovers removes, once it is old
        // enough not to be another process's write in progress.
        let leftover = dir.path().join("repo/tmp/123-4-5");
        std::fs::write(&leftover, b"half a pack").unwrap();
        use super::super::ObjectStore;
        assert_eq!(store.clean_leftovers().unwrap(), 0);
        let old = std::time::SystemTime::now() - super::LEFTOVER_AGE * 2;
        filetime::set_file_mtime(&leftover, filetime::FileTime::from_system_time(old)).unwrap();
        assert_eq!(store.clean_leftovers().unwrap(), 1);
        assert_eq!(store.clean_leftovers().unwrap(), 0);
    }
}
