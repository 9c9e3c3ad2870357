//! A store wrapper that fails on purpose: after a number of writes every further write fails
//! (a crash at that point), and reads can be made to fail. For crash-matrix and fault tests.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Listed, ObjectStore, StorageError};

/// Wraps a store; writes number `fail_after_writes` and later fail.
pub struct FaultStore<S> {
    inner: S,
    writes: AtomicU64,
    fail_after_writes: AtomicU64,
    bytes_read: AtomicU64,
}

impl<S: ObjectStore> FaultStore<S> {
    /// No faults until [`FaultStore::fail_after`] is set.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            writes: AtomicU64::new(0),
            fail_after_writes: AtomicU64::new(u64::MAX),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Let `n` more writes succeed, then fail every write.
    pub fn fail_after(&self, n: u64) {
        self.fail_after_writes
            .store(self.writes.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }

    /// Stop failing.
    pub fn heal(&self) {
        self.fail_after_writes.store(u64::MAX, Ordering::SeqCst);
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    fn check_write(&self, name: &str) -> Result<(), StorageError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_after_writes.load(Ordering::SeqCst) {
            Err(StorageError::Injected(name.to_string()))
        } else {
            Ok(())
        }
    }
}

impl<S: ObjectStore> ObjectStore for FaultStore<S> {
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let b = self.inner.read(name)?;
        self.bytes_read.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
    fn read_at_most(&self, name: &str, max: u64) -> Result<Vec<u8>, StorageError> {
        let b = self.inner.read_at_most(name, max)?;
        self.bytes_read.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let b = self.inner.read_range(name, offset, len)?;
        self.bytes_read.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.check_write(name)?;
        self.inner.write(name, bytes)
    }
    fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        self.check_write(name)?;
        self.inner.create_new(name, bytes)
    }
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        self.inner.list(prefix)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(name)
    }
    fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.check_write(name)?;
        self.inner.delete(name)
    }
    fn write_owned(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.check_write(name)?;
        self.inner.write_owned(name, bytes)
    }
    fn spool(&self) -> Result<Option<Box<dyn super::ObjectWriter>>, StorageError> {
        // Spooled writes go through `write_owned`, where the faults are.
        Ok(None)
    }
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    fn parallel_writes(&self) -> usize {
        self.inner.parallel_writes()
    }
}
