//! Any opendal service as an object store (memory for tests now, S3 later). The store owns
//! the tokio runtime that the blocking operator drives; it is created once per repository.

use opendal::{ErrorKind, Operator, blocking};

use super::{Listed, ObjectStore, StorageError};

/// An opendal operator behind the blocking API.
pub struct OpendalStore {
    op: blocking::Operator,
    description: String,
    // Keep the runtime alive as long as the operator.
    _runtime: tokio::runtime::Runtime,
}

fn backend(op: &'static str, path: &str, e: opendal::Error) -> StorageError {
    if e.kind() == ErrorKind::NotFound {
        StorageError::NotFound(path.to_string())
    } else {
        StorageError::Backend {
            op,
            path: path.to_string(),
            message: e.to_string(),
        }
    }
}

impl OpendalStore {
    /// Wrap an async operator.
    pub fn new(op: Operator, description: String) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| StorageError::Io {
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
            _runtime: runtime,
        })
    }

    /// An in-memory store (tests and benchmarks).
    pub fn memory() -> Result<Self, StorageError> {
        let op = Operator::new(opendal::services::Memory::default())
            .map_err(|e| backend("open", "memory", e))?;
        Self::new(op, "memory".into())
    }
}

impl ObjectStore for OpendalStore {
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        Ok(self
            .op
            .read(name)
            .map_err(|e| backend("read", name, e))?
            .to_vec())
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let opts = opendal::options::ReadOptions {
            range: (offset..offset + len).into(),
            ..Default::default()
        };
        let buf = self
            .op
            .read_options(name, opts)
            .map_err(|e| backend("read", name, e))?;
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
        self.op
            .write(name, bytes.to_vec())
            .map_err(|e| backend("write", name, e))?;
        Ok(())
    }

    fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        let opts = opendal::options::WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
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
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(backend("list", prefix, e)),
        };
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
        match self.op.stat(name) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend("stat", name, e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        match self.op.delete(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend("delete", name, e)),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
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
