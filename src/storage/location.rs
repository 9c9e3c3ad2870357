//! Where a repository is: a local directory or an S3 bucket and prefix, parsed from what the
//! user gives (`/path`, `file:///path`, `s3://bucket/prefix?..`), and the store opened there.

use std::path::PathBuf;
use std::sync::Arc;

use super::{LocalStore, ObjectStore, S3Location, S3Store, StorageError, s3};
use crate::runtime::IoRuntime;

/// Where the repository is.
#[derive(Clone, Debug)]
pub enum RepoLocation {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and prefix on an S3-compatible service.
    S3(Box<S3Location>),
}

impl RepoLocation {
    /// Parse a path, a `file://` URL or an `s3://` URL (whose settings may come from the
    /// environment).
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(RepoLocation::Local(PathBuf::from(rest)));
        }
        if s.starts_with("s3://") {
            let loc = S3Location::parse(s, &s3::process_env)?;
            return Ok(RepoLocation::S3(Box::new(loc)));
        }
        if s.contains("://") {
            let scheme = s.split("://").next().unwrap_or_default();
            return Err(StorageError::Config(format!(
                "repository scheme {scheme}:// is not supported (use a path or s3://)"
            )));
        }
        Ok(RepoLocation::Local(PathBuf::from(s)))
    }

    /// Open the store, limited by `io`'s bandwidth limits (shared with every other store
    /// opened with `io`). For S3 this reads the credentials and makes one request on `io`
    /// (starting it), so that a wrong key, a missing bucket or an unreachable endpoint is
    /// reported here; a local directory leaves `io` alone.
    pub fn store(&self, io: &IoRuntime) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let store: Arc<dyn ObjectStore> = match self {
            RepoLocation::Local(p) => Arc::new(LocalStore::new(p.clone())),
            RepoLocation::S3(loc) => {
                let creds = loc.credentials(&s3::process_env)?;
                Arc::new(S3Store::open(loc, &creds, io)?)
            }
        };
        Ok(io.rate_limits().wrap(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert!(
            matches!(RepoLocation::parse("/a/b"), Ok(RepoLocation::Local(p)) if p == std::path::Path::new("/a/b"))
        );
        assert!(
            matches!(RepoLocation::parse("file:///a"), Ok(RepoLocation::Local(p)) if p == std::path::Path::new("/a"))
        );
        let e = RepoLocation::parse("ftp://x/y").unwrap_err().to_string();
        assert_eq!(
            e,
            "repository scheme ftp:// is not supported (use a path or s3://)"
        );
    }

    #[test]
    fn a_local_store_starts_no_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let io = IoRuntime::new();
        let store = RepoLocation::Local(dir.path().to_path_buf())
            .store(&io)
            .unwrap();
        store.write("config", b"x").unwrap();
        assert!(!io.is_started());
    }
}
