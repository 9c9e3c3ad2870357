//! Where a repository is (a local directory or a bucket and prefix on S3), and the store
//! opened there, whose config tells whether a repository exists before a passphrase is asked.

use std::sync::Arc;

use super::SessionError;
use crate::format::config::Config;
use crate::repo::ObjectStore;
use crate::repo::Repository;
use crate::runtime::IoRuntime;

/// Where the repository is: storage's own parser, named here for the commands.
pub use crate::repo::RepoLocation as Location;

/// The store at a location, not yet known to hold a repository.
pub struct Store(pub(super) Arc<dyn ObjectStore>);

impl Store {
    /// Open the store at `location`, whose network I/O (S3) runs on `io`. For S3 this reads
    /// the credentials and makes one request, so that a wrong key, a missing bucket or an
    /// unreachable endpoint is reported here.
    pub fn at(location: &Location, io: &IoRuntime) -> Result<Self, SessionError> {
        Ok(Store(location.store(io)?))
    }

    /// Read the config without a key: names a missing repository (see
    /// [`SessionError::is_missing`]) before a passphrase is asked for.
    pub fn find(&self) -> Result<Found, SessionError> {
        let config = Repository::load_config(self.0.as_ref())?;
        Ok(Found {
            store: self.0.clone(),
            config,
        })
    }

    /// Whether a repository is there (any failure to tell counts as no).
    pub fn holds_repository(&self) -> bool {
        Repository::load_config(self.0.as_ref()).is_ok()
    }
}

/// A store holding a repository whose config was read; its key is not yet chosen.
pub struct Found {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) config: Config,
}
