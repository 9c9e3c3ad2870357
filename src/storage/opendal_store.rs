//! Any opendal service as an object store (memory for tests, S3). The blocking operator
//! drives the process's I/O runtime ([`crate::runtime`]), which the store keeps alive; it is
//! created once per repository. It counts its requests and bytes, so that a backup can report
//! what it cost.

use std::sync::atomic::{AtomicU64, Ordering};

use opendal::{ErrorKind, Operator, blocking};

use super::{IoStats, Listed, ObjectStore, StorageError};
use crate::runtime::{IoHandle, IoRuntime};

/// Keys per page of an S3 listing (ListObjectsV2 returns at most 1000).
const LIST_PAGE_KEYS: u64 = 1000;

/// An opendal operator behind the blocking API.
pub struct OpendalStore {
    op: blocking::Operator,
    description: String,
    /// `(min object bytes, part bytes, parts in flight)` for multipart uploads.
    multipart: Option<(usize, usize, usize)>,
    /// Packs a backup writes at once by default.
    parallel_writes: usize,
    requests: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    // Keep the runtime alive as long as the operator.
    _runtime: IoHandle,
}

fn backend(op: &'static str, path: &str, e: opendal::Error) -> StorageError {
    if e.kind() == ErrorKind::NotFound {
        StorageError::NotFound(path.to_string())
    } else {
        StorageError::Backend {
            op,
            path: path.to_string(),
            message: describe_error(&e),
        }
    }
}

/// A short, secret-free account of an opendal error: its kind, the S3 error code and
/// message when the server sent one, and the transport cause otherwise.
pub fn describe_error(e: &opendal::Error) -> String {
    let mut s = match e.kind() {
        ErrorKind::PermissionDenied => "access denied".to_string(),
        ErrorKind::NotFound => "not found".to_string(),
        ErrorKind::RateLimited => "throttled".to_string(),
        k => k.to_string(),
    };
    let msg = e.message();
    // opendal renders the S3 error body as `S3Error { code: "..", message: "..", .. }`.
    let field = |name: &str| {
        let start = msg.find(&format!("{name}: \""))? + name.len() + 3;
        let end = msg[start..].find('"')? + start;
        Some(msg[start..end].to_string())
    };
    match (field("code"), field("message")) {
        (Some(code), Some(m)) if !code.is_empty() => {
            s.push_str(&format!(": {code}"));
            if !m.is_empty() {
                s.push_str(&format!(" ({m})"));
            }
        }
        _ => {
            let first = msg.lines().next().unwrap_or("").trim();
            if !first.is_empty() && first.len() <= 200 && !first.starts_with('<') {
                s.push_str(": ");
                s.push_str(first);
            }
        }
    }
    // The transport cause (connection refused, timeout, DNS) is the useful part of a
    // request that never got an answer.
    let mut src = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = src {
        last = Some(c.to_string());
        src = c.source();
    }
    if let Some(c) = last
        && !s.contains(&c)
    {
        s.push_str(&format!(" ({c})"));
    }
    if e.is_persistent() {
        s.push_str(" [gave up after retries]");
    }
    s
}

impl OpendalStore {
    /// Wrap an async operator, to be driven by `io` (started here if it was not).
    pub fn new(op: Operator, description: String, io: &IoRuntime) -> Result<Self, StorageError> {
        let runtime = io.handle().map_err(|e| StorageError::Io {
            op: "start runtime",
            path: description.clone(),
            source: e,
        })?;
        let _guard = runtime.enter();
        let op = blocking::Operator::new(op).map_err(|e| backend("open", &description, e))?;
        drop(_guard);
        Ok(Self {
            op,
            description,
            multipart: None,
            parallel_writes: super::DEFAULT_PARALLEL_WRITES,
            requests: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            _runtime: runtime,
        })
    }

    /// Upload objects of at least `min_bytes` in parts of `part_bytes`, `concurrent` parts at
    /// a time (S3 multipart upload). Memory per upload stays near `part_bytes * concurrent`
    /// beyond the object itself.
    pub fn with_multipart(
        mut self,
        min_bytes: usize,
        part_bytes: usize,
        concurrent: usize,
    ) -> Self {
        self.multipart = Some((min_bytes, part_bytes, concurrent.max(1)));
        self
    }

    /// Let a backup store `n` packs at once by default.
    pub fn with_parallel_writes(mut self, n: usize) -> Self {
        self.parallel_writes = n.max(1);
        self
    }

    /// One request to the service root: fails fast on denied access, a missing bucket or an
    /// unreachable endpoint.
    pub(crate) fn probe(&self) -> Result<(), opendal::Error> {
        self.count(1, 0, 0);
        let opts = opendal::options::ListOptions {
            limit: Some(1),
            ..Default::default()
        };
        // Only the first page is fetched: the lister pages lazily.
        match self.op.lister_options("/", opts)?.next() {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn count(&self, requests: u64, sent: u64, received: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        self.bytes_received.fetch_add(received, Ordering::Relaxed);
    }

    fn write_opts(&self, len: usize) -> (opendal::options::WriteOptions, u64) {
        match self.multipart {
            Some((min, part, concurrent)) if len >= min && part > 0 => {
                let parts = len.div_ceil(part) as u64;
                let opts = opendal::options::WriteOptions {
                    chunk: Some(part),
                    concurrent,
                    ..Default::default()
                };
                // Initiate, one request per part, complete.
                (opts, parts + 2)
            }
            _ => (Default::default(), 1),
        }
    }

    /// An in-memory store (tests and benchmarks), on a runtime of its own.
    pub fn memory() -> Result<Self, StorageError> {
        let op = Operator::new(opendal::services::Memory::default())
            .map_err(|e| backend("open", "memory", e))?;
        Self::new(op, "memory".into(), &IoRuntime::new())
    }
}

impl ObjectStore for OpendalStore {
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        self.count(1, 0, 0);
        let buf = self
            .op
            .read(name)
            .map_err(|e| backend("read", name, e))?
            .to_vec();
        self.count(0, 0, buf.len() as u64);
        Ok(buf)
    }

    fn read_at_most(&self, name: &str, max: u64) -> Result<Vec<u8>, StorageError> {
        // One unranged GET, streamed: the response body is read piece by piece and dropped
        // (closing the connection) as soon as it passes `max`. A ranged GET would not do: S3
        // answers a range on an empty object with 416.
        self.count(1, 0, 0);
        let pieces = self
            .op
            .reader(name)
            .and_then(|r| r.into_bytes_iterator(..))
            .map_err(|e| backend("read", name, e))?;
        let mut buf = Vec::new();
        for piece in pieces {
            let piece = piece.map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::NotFound(name.to_string()),
                _ => StorageError::Backend {
                    op: "read",
                    path: name.to_string(),
                    message: e.to_string(),
                },
            })?;
            self.count(0, 0, piece.len() as u64);
            if (buf.len() + piece.len()) as u64 > max {
                return Err(StorageError::TooLarge {
                    path: name.to_string(),
                    max,
                });
            }
            buf.extend_from_slice(&piece);
        }
        Ok(buf)
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let opts = opendal::options::ReadOptions {
            range: (offset..offset + len).into(),
            ..Default::default()
        };
        self.count(1, 0, 0);
        let buf = self
            .op
            .read_options(name, opts)
            .map_err(|e| backend("read", name, e))?;
        self.count(0, 0, buf.len() as u64);
        if buf.len() as u64 != len {
            return Err(StorageError::Backend {
                op: "read",
                path: name.to_string(),
                message: format!("short read: {} of {len} bytes", buf.len()),
            });
        }
        Ok(buf.to_vec())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.write_owned(name, bytes.to_vec())
    }

    fn write_owned(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let (opts, requests) = self.write_opts(bytes.len());
        self.count(requests, bytes.len() as u64, 0);
        self.op
            .write_options(name, bytes, opts)
            .map_err(|e| backend("write", name, e))?;
        Ok(())
    }

    fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        let opts = opendal::options::WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        self.count(1, bytes.len() as u64, 0);
        match self.op.write_options(name, bytes.to_vec(), opts) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                // Services without conditional writes: check, then write (not atomic).
                if self.size(name)?.is_some() {
                    return Ok(false);
                }
                self.write(name, bytes)?;
                Ok(true)
            }
            Err(e) => Err(backend("write", name, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let opts = opendal::options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.op.list_options(prefix, opts) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.count(1, 0, 0);
                return Ok(vec![]);
            }
            Err(e) => return Err(backend("list", prefix, e)),
        };
        self.count((entries.len() as u64).div_ceil(LIST_PAGE_KEYS).max(1), 0, 0);
        let mut out = Vec::new();
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let size = match e.metadata().content_length() {
                0 => self.size(e.path())?.unwrap_or(0),
                n => n,
            };
            out.push(Listed {
                name: e.path().trim_start_matches('/').to_string(),
                size,
            });
        }
        Ok(out)
    }

    fn size(&self, name: &str) -> Result<Option<u64>, StorageError> {
        self.count(1, 0, 0);
        match self.op.stat(name) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend("stat", name, e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.count(1, 0, 0);
        match self.op.delete(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend("delete", name, e)),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn io_stats(&self) -> Option<IoStats> {
        Some(IoStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        })
    }

    fn parallel_writes(&self) -> usize {
        self.parallel_writes
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance_memory() {
        let store = super::OpendalStore::memory().unwrap();
        super::super::conformance::run(&store);
    }
}
