//! Counters that long operations update and a display thread reads.

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
