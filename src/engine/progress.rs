//! Counters that long operations update and a display thread reads, and the scan that fills
//! in a backup's totals while it runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Progress of a running operation. All counters only grow.
#[derive(Default, Debug)]
pub struct Progress {
    /// Files done.
    pub files: AtomicU64,
    /// Bytes done.
    pub bytes: AtomicU64,
    /// Total files expected (0 while unknown).
    pub total_files: AtomicU64,
    /// Total bytes expected (0 while unknown).
    pub total_bytes: AtomicU64,
}

impl Progress {
    /// Count one finished file of `bytes`.
    pub fn file_done(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Add bytes as they are processed.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `(files, bytes, total_files, total_bytes)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.total_files.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Count the files and bytes under `roots` on a thread of its own and store them as the
/// totals of `progress`, for a progress bar's ETA. The backup does not wait for it; an
/// unreadable directory is left out of the count (the backup reports it).
pub fn scan_totals(roots: Vec<PathBuf>, progress: Arc<Progress>) {
    std::thread::spawn(move || {
        let (mut files, mut total) = (0u64, 0u64);
        let mut stack = roots;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() {
                    files += 1;
                    total += m.len();
                }
            }
        }
        // Bytes first: a reader that sees the file count sees the bytes too.
        progress.total_bytes.store(total, Ordering::Release);
        progress.total_files.store(files, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_totals_counts_files_and_bytes_below_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), b"12345").unwrap();
        std::fs::write(dir.path().join("a/b/two"), b"123").unwrap();
        std::os::unix::fs::symlink("one", dir.path().join("a/link")).unwrap();
        let progress = Arc::new(Progress::default());
        scan_totals(vec![dir.path().join("a")], progress.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while progress.total_files.load(Ordering::Acquire) == 0 {
            assert!(std::time::Instant::now() < deadline, "scan did not finish");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(progress.snapshot(), (0, 0, 2, 8));
    }
}
