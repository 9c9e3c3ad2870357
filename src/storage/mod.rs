//! Object storage: a small trait over named, immutable objects, and its implementations
//! (local disk, opendal services, a fault-injecting wrapper for tests, a bandwidth limit),
//! and the location a store is opened at.
//!
//! Storage knows nothing of encryption or formats. Every `write` is all-or-nothing: a reader
//! never sees half an object under its final name.

mod fault;
mod local;
mod location;
mod opendal_store;
pub mod s3;
pub mod throttle;

pub use fault::FaultStore;
pub use local::{LocalStore, TempFileWriter};
pub use location::RepoLocation;
pub use opendal_store::OpendalStore;
pub use s3::{S3Location, S3Store};
pub use throttle::{RateLimits, ThrottledStore};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that name.
    #[error("object {0} not found")]
    NotFound(String),
    /// An I/O error on the local file system.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The object or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An error of an opendal service.
    #[error("{op} {path}: {message}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The object.
        path: String,
        /// The cause, without credentials.
        message: String,
    },
    /// An injected failure (tests).
    #[error("injected fault on {0}")]
    Injected(String),
    /// An object larger than the caller accepts ([`ObjectStore::read_at_most`]).
    #[error("object {path} holds more than {max} bytes")]
    TooLarge {
        /// The object.
        path: String,
        /// The most the caller accepts.
        max: u64,
    },
    /// A storage location that is misconfigured or cannot be used (a bad URL, missing
    /// credentials, denied access, a missing bucket, an unreachable endpoint).
    #[error("{0}")]
    Config(String),
}

impl StorageError {
    /// What kind of failure this is. A missing or oversized object is one the repository
    /// names or reads whole, so it is damage; a misconfigured location is the user's to fix.
    pub fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            StorageError::NotFound(_) | StorageError::TooLarge { .. } => ErrorClass::Corrupt,
            StorageError::Io { .. } | StorageError::Backend { .. } | StorageError::Injected(_) => {
                ErrorClass::Transient
            }
            StorageError::Config(_) => ErrorClass::User,
        }
    }

    /// True for a missing object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }
}

/// An object name and its size, from a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Full object name, e.g. `packs/ab/ab12...`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Requests made and bytes moved by a store since it was opened. A listing counts one
/// request per 1000 keys, a multipart upload one per part plus two; retries are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IoStats {
    /// Requests to the service.
    pub requests: u64,
    /// Object bytes uploaded.
    pub bytes_sent: u64,
    /// Object bytes downloaded.
    pub bytes_received: u64,
}

/// A store of immutable named objects. Names are `/`-separated relative paths.
pub trait ObjectStore: Send + Sync {
    /// Read a whole object.
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError>;
    /// Read a whole object of at most `max` bytes, or fail with [`StorageError::TooLarge`]
    /// having read no more than `max + 1` of them. The size is judged on the bytes read, in
    /// the same request: a size from a listing or a stat can be outrun by a writer that
    /// replaces the object in between.
    fn read_at_most(&self, name: &str, max: u64) -> Result<Vec<u8>, StorageError>;
    /// Read `len` bytes at `offset`; fails if the object is shorter.
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError>;
    /// Write an object atomically (replaces an existing one).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Write an object only if none exists under that name; `Ok(false)` if one did.
    fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError>;
    /// Every object under a directory prefix (`packs/`), recursively.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError>;
    /// Size of an object, `None` if it does not exist.
    fn size(&self, name: &str) -> Result<Option<u64>, StorageError>;
    /// Delete an object; deleting a missing object is not an error.
    fn delete(&self, name: &str) -> Result<(), StorageError>;
    /// Write an object the caller no longer needs (saves a copy on stores that take
    /// ownership of what they send).
    fn write_owned(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.write(name, &bytes)
    }
    /// A writer that takes a large object piece by piece without holding it in memory, for
    /// stores that can (a local disk); `None` when the object must be built in memory and
    /// given to [`ObjectStore::write_owned`].
    fn spool(&self) -> Result<Option<Box<dyn ObjectWriter>>, StorageError> {
        Ok(None)
    }
    /// Remove the leftovers of writes that never finished (a killed process). Only safe when
    /// no other process writes (under an exclusive lock). Returns how many were removed.
    fn clean_leftovers(&self) -> Result<u64, StorageError> {
        Ok(0)
    }
    /// A human description (a path or URL without secrets).
    fn describe(&self) -> String;
    /// Requests and bytes so far, for stores that count them (remote ones).
    fn io_stats(&self) -> Option<IoStats> {
        None
    }
    /// How many large writes (packs) suit this store at once: what a backup uses unless
    /// told otherwise.
    fn parallel_writes(&self) -> usize {
        DEFAULT_PARALLEL_WRITES
    }
}

/// An object being written piece by piece. It appears under its name only when
/// [`ObjectWriter::finish`] returns (all or nothing); dropped unfinished, it leaves nothing.
pub trait ObjectWriter: Send {
    /// Append bytes.
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Make the bytes durable and publish them under `name` (replacing an existing object).
    fn finish(self: Box<Self>, name: &str) -> Result<(), StorageError>;
}

/// Packs written at once to a store that does not say otherwise (a local disk gains little
/// beyond two: one fsyncs while the next is written).
pub const DEFAULT_PARALLEL_WRITES: usize = 2;

#[cfg(test)]
pub(crate) mod conformance {
    //! The store conformance suite, run on every implementation.
    use super::*;

    pub(crate) fn run(store: &dyn ObjectStore) {
        assert!(store.read("config").unwrap_err().is_not_found());
        assert_eq!(store.size("config").unwrap(), None);
        store.write("config", b"hello").unwrap();
        assert_eq!(store.read("config").unwrap(), b"hello");
        assert_eq!(store.size("config").unwrap(), Some(5));
        store.write("config", b"world!").unwrap();
        assert_eq!(store.read("config").unwrap(), b"world!");
        assert_eq!(store.read_range("config", 1, 3).unwrap(), b"orl");
        assert!(store.read_range("config", 4, 10).is_err());
        assert_eq!(store.read_at_most("config", 6).unwrap(), b"world!");
        assert_eq!(store.read_at_most("config", 1 << 40).unwrap(), b"world!");
        assert!(matches!(
            store.read_at_most("config", 5),
            Err(StorageError::TooLarge { max: 5, .. })
        ));
        assert!(store.read_at_most("missing", 5).unwrap_err().is_not_found());
        store.write("empty", b"").unwrap();
        assert_eq!(store.read_at_most("empty", 0).unwrap(), b"");
        assert_eq!(store.read_at_most("empty", 5).unwrap(), b"");
        store.delete("empty").unwrap();

        assert!(store.create_new("locks/a", b"1").unwrap());
        assert!(!store.create_new("locks/a", b"2").unwrap());
        assert_eq!(store.read("locks/a").unwrap(), b"1");

        store.write("packs/ab/ab01", b"xx").unwrap();
        store.write("packs/cd/cd02", b"yyy").unwrap();
        let mut l = store.list("packs/").unwrap();
        l.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            l,
            vec![
                Listed {
                    name: "packs/ab/ab01".into(),
                    size: 2
                },
                Listed {
                    name: "packs/cd/cd02".into(),
                    size: 3
                },
            ]
        );
        assert!(store.list("snapshots/").unwrap().is_empty());
        store.delete("packs/ab/ab01").unwrap();
        store.delete("packs/ab/ab01").unwrap();
        assert_eq!(store.list("packs/").unwrap().len(), 1);
        store.write_owned("index/ee", b"owned".to_vec()).unwrap();
        assert_eq!(store.read("index/ee").unwrap(), b"owned");
    }

    /// For stores that spool: an object appears whole at `finish`, never before, and an
    /// abandoned writer leaves nothing.
    pub(crate) fn run_spool(store: &dyn ObjectStore) {
        let mut w = store.spool().unwrap().expect("this store spools");
        w.append(b"part one, ").unwrap();
        w.append(&[7u8; 300_000]).unwrap();
        assert_eq!(store.size("packs/ff/ff01").unwrap(), None);
        w.finish("packs/ff/ff01").unwrap();
        let got = store.read("packs/ff/ff01").unwrap();
        assert_eq!(got.len(), 10 + 300_000);
        assert_eq!(&got[..10], b"part one, ");
        let mut w = store.spool().unwrap().expect("this store spools");
        w.append(b"never finished").unwrap();
        drop(w);
        assert!(store.list("packs/ff/").unwrap().len() == 1);
    }
}
