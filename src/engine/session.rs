//! Opening a repository for a command: the one way from a location, a passphrase and a cache
//! directory to an open repository and its catalog. The config is read before the
//! passphrase is asked for (a missing repository is named first); the key the last open used
//! on this host is tried first, and remembered; the lock wait and pack uploads are applied
//! here; the catalog lives in a cache directory this user owns.
//!
//! It prints nothing and asks for nothing: the passphrase comes from the caller.

mod admin;
mod cache_dir;
mod last_key;
mod location;
mod private_file;

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use super::EngineError;
use crate::catalog::{Catalog, CatalogError};
use crate::error::ErrorClass;
use crate::repo::StorageError;
use crate::repo::{KeyChoice, RepoError, Repository};

pub use admin::Stats;
pub use cache_dir::{CacheDirError, check_cache_dir};
pub use location::{Found, Location, Store};
pub use private_file::{PrivateFileError, private_dir_all, write_private};

// What callers pass in or get back and name: the layers below are not theirs to import.
pub use crate::catalog::{SnapshotEntry, SnapshotFilter, VanishedSnapshot};
pub use crate::crypto::KdfParams;
pub use crate::format::config::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
pub use crate::repo::{InitOptions, hostname, release_all_locks};

/// A failure to produce a passphrase (reading a file, running a command, a prompt).
pub type PassphraseError = Box<dyn std::error::Error + Send + Sync>;

/// Why a repository or its catalog could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Repository failure (none there, wrong passphrase, locked, damaged).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Catalog failure.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog file could not be opened.
    #[error("opening the catalog {}", path.display())]
    OpenCatalog {
        /// The catalog file.
        path: PathBuf,
        /// The cause.
        source: CatalogError,
    },
    /// Engine failure (creating a repository from another).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store could not be reached or its location is malformed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The cache directory is unusable or untrusted.
    #[error(transparent)]
    CacheDir(#[from] CacheDirError),
    /// The passphrase could not be had.
    #[error(transparent)]
    Passphrase(PassphraseError),
}

impl SessionError {
    /// No repository at the location.
    pub fn is_missing(&self) -> bool {
        matches!(self, SessionError::Repo(RepoError::NotARepository(_)))
    }
}

impl SessionError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            SessionError::Repo(e) => e.class(),
            SessionError::Catalog(e) | SessionError::OpenCatalog { source: e, .. } => e.class(),
            SessionError::Engine(e) => e.class(),
            SessionError::Storage(e) => e.class(),
            SessionError::CacheDir(_) | SessionError::Passphrase(_) => ErrorClass::User,
        }
    }
}

impl From<crate::catalog::RefreshError<RepoError>> for SessionError {
    fn from(e: crate::catalog::RefreshError<RepoError>) -> Self {
        match e {
            crate::catalog::RefreshError::Catalog(e) => SessionError::Catalog(e),
            crate::catalog::RefreshError::Source(e) => SessionError::Repo(e),
        }
    }
}

/// How to open: where the catalog and the key hint live, and what the command asked for.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// The cache directory (catalogs, the key last used).
    pub cache_dir: PathBuf,
    /// Only this key (a full id or a unique prefix; `--key-id`). Without it the key last used
    /// on this host is tried first.
    pub key_id: Option<String>,
    /// How long a lock waits for a conflicting one to go away (`--retry-lock`).
    pub lock_wait: Duration,
    /// Packs a backup uploads at once (default: the store's own).
    pub pack_uploads: Option<usize>,
    /// The runtime a remote store's I/O runs on (started only if one is opened).
    pub io: crate::runtime::IoRuntime,
}

impl OpenOptions {
    /// The same options without `--key-id`, which names a key of the main repository only.
    pub fn any_key(&self) -> Self {
        Self {
            key_id: None,
            ..self.clone()
        }
    }
}

impl Found {
    /// Open with `passphrase`: only the key `--key-id` names if given, else the key that last
    /// opened it on this host first. The key that opens is remembered for the next time.
    pub fn open(self, passphrase: &[u8], opts: &OpenOptions) -> Result<Repository, SessionError> {
        let remembered = last_key::load(&opts.cache_dir, &self.config.id);
        let choice = KeyChoice {
            only: opts.key_id.clone(),
            first: remembered,
        };
        let repo = Repository::open_with(self.store, self.config, passphrase, &choice)?;
        if remembered != Some(repo.key_id()) {
            remember_key(&repo, opts);
        }
        apply(&repo, opts);
        Ok(repo)
    }
}

impl Store {
    /// Create a repository here with a new master key.
    pub fn init(
        self,
        passphrase: &[u8],
        init: InitOptions,
        opts: &OpenOptions,
    ) -> Result<Repository, SessionError> {
        let repo = Repository::init(self.0, passphrase, init)?;
        remember_key(&repo, opts);
        apply(&repo, opts);
        Ok(repo)
    }

    /// Create a repository here sharing the master key and chunker of `source` (`init
    /// --from`, a missing offsite or local copy).
    pub fn init_from(
        self,
        source: &Repository,
        passphrase: &[u8],
        kdf: KdfParams,
        opts: &OpenOptions,
    ) -> Result<Repository, SessionError> {
        let repo = super::sync::init_from(source, self.0, passphrase, kdf)?;
        remember_key(&repo, opts);
        apply(&repo, opts);
        Ok(repo)
    }

    /// What the store is, for messages.
    pub fn describe(&self) -> String {
        self.0.describe()
    }
}

fn apply(repo: &Repository, opts: &OpenOptions) {
    repo.set_lock_wait(opts.lock_wait);
    if let Some(n) = opts.pack_uploads {
        repo.set_pack_uploads(n);
    }
}

/// Remember the key `repo` is open with, to be tried first next time on this host (after a
/// passphrase change, say).
pub fn remember_key(repo: &Repository, opts: &OpenOptions) {
    last_key::save(&opts.cache_dir, &repo.config().id, repo.key_id());
}

/// Open the repository at `location`; `passphrase` is asked for once a repository is found.
pub fn open_repository(
    location: &Location,
    passphrase: &mut dyn FnMut() -> Result<Zeroizing<Vec<u8>>, PassphraseError>,
    opts: &OpenOptions,
) -> Result<Repository, SessionError> {
    let found = Store::at(location, &opts.io)?.find()?;
    let pw = passphrase().map_err(SessionError::Passphrase)?;
    found.open(&pw, opts)
}

/// Open the repository at `location` (a path or URL) with a passphrase already had.
pub fn open_at(
    location: &str,
    passphrase: &[u8],
    opts: &OpenOptions,
) -> Result<Repository, SessionError> {
    let loc = Location::parse(location)?;
    open_repository(&loc, &mut || Ok(passphrase.to_vec().into()), opts)
}

/// An open repository and its catalog, ready for a command.
pub struct Session {
    /// The repository.
    pub repo: Repository,
    /// Its local catalog.
    pub catalog: Catalog,
}

impl Session {
    /// Open the repository at `location` and its catalog.
    pub fn open(
        location: &Location,
        passphrase: &mut dyn FnMut() -> Result<Zeroizing<Vec<u8>>, PassphraseError>,
        opts: &OpenOptions,
    ) -> Result<Self, SessionError> {
        let repo = open_repository(location, passphrase, opts)?;
        Self::with_repository(repo, opts)
    }

    /// Open the catalog of an open repository.
    pub fn with_repository(repo: Repository, opts: &OpenOptions) -> Result<Self, SessionError> {
        let catalog = open_catalog(&repo, opts)?;
        Ok(Self { repo, catalog })
    }

    /// Open the repository at `location` with a new, empty catalog (`repair catalog`); the
    /// catalog's path is returned too.
    pub fn with_new_catalog(
        location: &Location,
        passphrase: &mut dyn FnMut() -> Result<Zeroizing<Vec<u8>>, PassphraseError>,
        opts: &OpenOptions,
    ) -> Result<(Self, PathBuf), SessionError> {
        let repo = open_repository(location, passphrase, opts)?;
        let path = Catalog::path_for(&opts.cache_dir, &repo.config().id);
        Catalog::destroy(&path);
        let catalog = Catalog::open(&path)?;
        Ok((Self { repo, catalog }, path))
    }
}

fn open_catalog(repo: &Repository, opts: &OpenOptions) -> Result<Catalog, SessionError> {
    check_cache_dir(&opts.cache_dir)?;
    let path = Catalog::path_for(&opts.cache_dir, &repo.config().id);
    Catalog::open(&path).map_err(|source| SessionError::OpenCatalog { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn classes_are_found_through_every_wrapper() {
        let missing = || RepoError::NotARepository("here".into());
        let cases = [
            (
                SessionError::Repo(missing()).class(),
                ErrorClass::NoRepository,
            ),
            (
                SessionError::Repo(RepoError::WrongPassword).class(),
                ErrorClass::WrongPassword,
            ),
            (
                SessionError::Repo(RepoError::Locked("pid 1".into())).class(),
                ErrorClass::Locked,
            ),
            (
                SessionError::Engine(EngineError::Repo(missing())).class(),
                ErrorClass::NoRepository,
            ),
            (
                SessionError::Repo(RepoError::Key("no".into())).class(),
                ErrorClass::User,
            ),
            (
                SessionError::Repo(RepoError::corrupt("config", "bad")).class(),
                ErrorClass::Corrupt,
            ),
            (
                EngineError::Internal("panicked".into()).class(),
                ErrorClass::Internal,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn locations_parse_paths_and_name_unknown_schemes() {
        assert!(
            matches!(Location::parse("/srv/repo"), Ok(Location::Local(p)) if p == Path::new("/srv/repo"))
        );
        assert!(
            matches!(Location::parse("file:///srv/repo"), Ok(Location::Local(p)) if p == Path::new("/srv/repo"))
        );
        let e = Location::parse("ftp://host/repo")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("repository scheme ftp:// is not supported (use a path or s3://)")
        );
    }

    #[test]
    fn a_missing_repository_is_named_before_any_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().join("none"));
        let opts = OpenOptions {
            cache_dir: dir.path().join("cache"),
            ..Default::default()
        };
        let mut asked = false;
        let r = open_repository(
            &loc,
            &mut || {
                asked = true;
                Ok(Zeroizing::new(b"pw".to_vec()))
            },
            &opts,
        );
        assert!(r.is_err_and(|e| e.is_missing()));
        assert!(!asked);
    }
}
