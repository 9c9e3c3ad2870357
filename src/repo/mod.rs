//! The repository: opening and creating it, its keys, and loading and saving every object kind
//! through the crypto and format layers. It owns the write order that makes a repository
//! crash-consistent: packs, then the index files naming them, then the snapshot.

mod blob;
mod condemned;
mod keys;
mod lock;
mod object;
mod pack;

use std::sync::Arc;

pub use crate::format::BlobLocation;
/// The storage a repository is opened on (the engine names it only through here).
pub use crate::storage::{ObjectStore, RepoLocation};
pub use blob::SealedBlob;
pub use keys::{KeyChoice, KeyInfo, KeysNotTried, MAX_KEY_ATTEMPTS, hostname};
pub use lock::{
    LOCK_REFRESH_EVERY, LOCK_STALE_AFTER, LOCK_VALID_FOR, LockCensus, LockGuard, LockInfo,
    LockKind, MAX_CLOCK_SKEW, PRUNE_PURPOSE, release_all_locks,
};
pub use object::StoredObject;
pub use pack::{PackBuilder, PackedPack};

use crate::chunker::{Chunker, GearTable};
use crate::crypto::{self, CryptoError, KdfParams, MasterKey, RepoKeys};
use crate::error::ErrorClass;
use crate::format::FormatError;
use crate::format::config::{ChunkerParams, Config, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use crate::format::index::{self, INDEX_AAD, PackIndex};
use crate::format::padding;
use crate::format::snapshot::{SNAPSHOT_AAD, Snapshot};
use crate::id::{IndexId, KeyId, PackId, SnapshotId};
pub use crate::storage::StorageError;

/// Largest index object read. Writers split index files by packs, not bytes (32 to 1000
/// packs each), so this is a sanity bound: about 10 million blob entries.
pub const MAX_INDEX_OBJECT_BYTES: u64 = 512 << 20;
/// Largest snapshot object read: the largest snapshot plaintext, sealed.
pub const MAX_SNAPSHOT_OBJECT_BYTES: u64 =
    crate::format::snapshot::MAX_SNAPSHOT_BYTES as u64 + crypto::SEAL_OVERHEAD as u64;

/// Errors of the repository layer.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No repository at that location.
    #[error("no coffer repository at {0} (create one with `coffer init`)")]
    NotARepository(String),
    /// `init` on an existing repository.
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    /// No key file opens with this passphrase.
    #[error("wrong passphrase: no key in this repository opens with it")]
    WrongPassword,
    /// No key file tried opens with this passphrase, and some were not tried.
    #[error("{0}")]
    KeysNotTried(keys::KeysNotTried),
    /// A stored object is damaged.
    #[error("corrupt object {object}: {reason}")]
    Corrupt {
        /// The object's name.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds a conflicting lock.
    #[error("repository is locked by {0} (if that process is gone, run `coffer unlock`)")]
    Locked(String),
    /// The lock went unrefreshed long enough for others to take it for stale (the process
    /// was stopped, the host suspended, or storage unreachable): a writer then writes no
    /// snapshot, since a prune may have deleted data it reused.
    #[error(
        "this process's repository lock went {minutes} min without a refresh (stopped, \
         suspended or cut off from storage): a prune may have deleted data it reused, so no \
         snapshot was written; run it again"
    )]
    LockLapsed {
        /// Longest time without a refresh, in minutes.
        minutes: u64,
    },
    /// A key-management rule was violated (no such key, an ambiguous prefix, the key in
    /// use, a key above the KDF limit).
    #[error("{0}")]
    Key(String),
    /// Options for a new repository that cannot be used (chunker parameters, a format
    /// version this coffer does not write).
    #[error("{0}")]
    Config(String),
    /// The repository's format version is one this coffer does not read.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Randomness or KDF failure.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// An object could not be encoded (a bug: encoders fail only on broken invariants).
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        reason: String,
    },
}

impl RepoError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            RepoError::NotARepository(_) => ErrorClass::NoRepository,
            RepoError::WrongPassword | RepoError::KeysNotTried(_) => ErrorClass::WrongPassword,
            RepoError::Locked(_) | RepoError::LockLapsed { .. } => ErrorClass::Locked,
            RepoError::Corrupt { .. } => ErrorClass::Corrupt,
            RepoError::AlreadyExists(_)
            | RepoError::Key(_)
            | RepoError::Config(_)
            | RepoError::UnsupportedVersion(_) => ErrorClass::User,
            RepoError::Storage(e) => e.class(),
            // The system's randomness or the KDF failed: nothing the user can change.
            RepoError::Crypto(_) | RepoError::Encode { .. } => ErrorClass::Internal,
        }
    }

    pub(crate) fn encode(what: &'static str, e: impl ToString) -> Self {
        RepoError::Encode {
            what,
            reason: e.to_string(),
        }
    }

    pub(crate) fn corrupt(object: impl Into<String>, reason: impl ToString) -> Self {
        RepoError::Corrupt {
            object: object.into(),
            reason: reason.to_string(),
        }
    }
}

/// Read a whole object of at most `max` bytes; a larger one is corrupt. The size is checked on
/// the bytes read, never on a listed or stat'ed size the object could outgrow in between.
fn read_object(store: &dyn ObjectStore, name: &str, max: u64) -> Result<Vec<u8>, RepoError> {
    store.read_at_most(name, max).map_err(|e| match e {
        StorageError::TooLarge { max, .. } => {
            RepoError::corrupt(name, format!("larger than {max} bytes"))
        }
        e => e.into(),
    })
}

/// Object names.
pub mod path {
    use crate::id::{IndexId, KeyId, MarkerId, PackId, SnapshotId};

    /// The config object.
    pub const CONFIG: &str = "config";
    /// Directory of key files.
    pub const KEYS: &str = "keys/";
    /// Directory of packs.
    pub const PACKS: &str = "packs/";
    /// Directory of index files.
    pub const INDEX: &str = "index/";
    /// Directory of snapshots.
    pub const SNAPSHOTS: &str = "snapshots/";
    /// Directory of locks.
    pub const LOCKS: &str = "locks/";
    /// Directory of condemned-pack markers (prune beside backups).
    pub const CONDEMNED: &str = "condemned/";

    /// Name of a pack.
    pub fn pack(id: &PackId) -> String {
        let h = id.to_hex();
        format!("packs/{}/{h}", &h[..2])
    }
    /// Name of an index file.
    pub fn index(id: &IndexId) -> String {
        format!("index/{id}")
    }
    /// Name of a snapshot.
    pub fn snapshot(id: &SnapshotId) -> String {
        format!("snapshots/{id}")
    }
    /// Name of a condemned-pack marker.
    pub fn marker(id: &MarkerId) -> String {
        format!("condemned/{id}")
    }
    /// Name of a key file.
    pub fn key(id: &KeyId) -> String {
        format!("keys/{id}")
    }
    /// The id part of a listed name (the last path component).
    pub fn id_part(name: &str) -> &str {
        name.rsplit('/').next().unwrap_or(name)
    }
}

/// Settings fixed at `init`.
#[derive(Clone, Copy, Debug)]
pub struct InitOptions {
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// Default zstd level.
    pub compression_level: i32,
    /// Target size of a data pack.
    pub pack_bytes: u32,
    /// KDF parameters of the first key.
    pub kdf: KdfParams,
    /// Format version to write (`OLDEST_FORMAT_VERSION..=FORMAT_VERSION`): an older one
    /// makes a repository that older builds can read too.
    pub format_version: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::DEFAULT,
            compression_level: 3,
            pack_bytes: 16 << 20,
            kdf: KdfParams::DEFAULT,
            format_version: FORMAT_VERSION,
        }
    }
}

/// An open repository.
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    config: Config,
    master: MasterKey,
    /// Shared with the lock refresher thread (never copied out: it is zeroized on drop).
    keys: Arc<RepoKeys>,
    key_id: KeyId,
    /// How long `lock` waits for a conflicting lock to go away before failing.
    lock_wait_ms: std::sync::atomic::AtomicU64,
    /// Packs a backup stores at once; 0 means the store's
    /// [`ObjectStore::parallel_writes`].
    pack_uploads: std::sync::atomic::AtomicUsize,
}

impl Repository {
    /// Create a repository in an empty store.
    pub fn init(
        store: Arc<dyn ObjectStore>,
        passphrase: &[u8],
        opts: InitOptions,
    ) -> Result<Self, RepoError> {
        if Self::config_exists(store.as_ref())? || !store.list(path::KEYS)?.is_empty() {
            return Err(RepoError::AlreadyExists(store.describe()));
        }
        opts.chunker
            .validate()
            .map_err(|e| RepoError::Config(format!("invalid chunker parameters: {e}")))?;
        let master = MasterKey::generate()?;
        Self::init_with_master(store, passphrase, opts, master)
    }

    /// Create a repository sharing an existing master key (for `init --from`).
    pub fn init_with_master(
        store: Arc<dyn ObjectStore>,
        passphrase: &[u8],
        opts: InitOptions,
        master: MasterKey,
    ) -> Result<Self, RepoError> {
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&opts.format_version) {
            return Err(RepoError::Config(format!(
                "format version {} is not one this coffer writes ({OLDEST_FORMAT_VERSION} to \
                 {FORMAT_VERSION})",
                opts.format_version
            )));
        }
        let keys = Arc::new(master.derive());
        let mut repo_id = [0u8; 32];
        crypto::random_bytes(&mut repo_id)?;
        let mut config = Config {
            version: opts.format_version,
            id: hex::encode(repo_id),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_bytes: opts.pack_bytes,
            created: chrono::Utc::now().to_rfc3339(),
            mac: String::new(),
        };
        let mac_input = config
            .mac_input()
            .map_err(|e| RepoError::encode("the config", e))?;
        config.mac = hex::encode(keys.config_mac(&mac_input));
        // The key first, the config last: a store with a config is a complete repository.
        let key_id = keys::write_key(store.as_ref(), &master, passphrase, opts.kdf)?;
        let encoded = config
            .encode()
            .map_err(|e| RepoError::encode("the config", e))?;
        store.write(path::CONFIG, &encoded)?;
        Ok(Self {
            store,
            config,
            master,
            keys,
            key_id,
            lock_wait_ms: std::sync::atomic::AtomicU64::new(0),
            pack_uploads: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Read the config without a key: tells whether a repository exists and its version.
    pub fn load_config(store: &dyn ObjectStore) -> Result<Config, RepoError> {
        let bytes = match read_object(
            store,
            path::CONFIG,
            crate::format::config::MAX_CONFIG_BYTES as u64,
        ) {
            Ok(b) => b,
            Err(RepoError::Storage(e)) if e.is_not_found() => {
                // Keys without a config: a repository that lost its config, not an empty place.
                if !store.list(path::KEYS)?.is_empty() {
                    return Err(RepoError::corrupt(
                        path::CONFIG,
                        "missing, although keys/ holds keys: restore `config` from a copy of \
                         the repository (e.g. a sync mirror); do not run init here",
                    ));
                }
                return Err(RepoError::NotARepository(store.describe()));
            }
            Err(e) => return Err(e),
        };
        Config::decode(&bytes).map_err(|e| match e {
            FormatError::UnsupportedVersion { .. } => RepoError::UnsupportedVersion(e.to_string()),
            _ => RepoError::corrupt(path::CONFIG, e),
        })
    }

    /// Open with a passphrase, trying the key files in the order of their names.
    pub fn open(store: Arc<dyn ObjectStore>, passphrase: &[u8]) -> Result<Self, RepoError> {
        let config = Self::load_config(store.as_ref())?;
        Self::open_with(store, config, passphrase, &KeyChoice::default())
    }

    /// Open with a passphrase and the config read by [`Repository::load_config`] (its MAC is
    /// checked here, once a key opened), trying the key files `choice` says.
    pub fn open_with(
        store: Arc<dyn ObjectStore>,
        config: Config,
        passphrase: &[u8],
        choice: &KeyChoice,
    ) -> Result<Self, RepoError> {
        let (key_id, master) = keys::unlock(store.as_ref(), passphrase, choice)?;
        let keys = Arc::new(master.derive());
        let mac_input = config
            .mac_input()
            .map_err(|e| RepoError::encode("the config", e))?;
        let expected = keys.config_mac(&mac_input);
        if hex::encode(expected) != config.mac {
            return Err(RepoError::corrupt(
                path::CONFIG,
                "MAC mismatch: the config was altered",
            ));
        }
        Ok(Self {
            store,
            config,
            master,
            keys,
            key_id,
            lock_wait_ms: std::sync::atomic::AtomicU64::new(0),
            pack_uploads: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Wait up to `wait` for conflicting locks to go away (default: fail at once).
    pub fn set_lock_wait(&self, wait: std::time::Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.lock_wait_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long `lock` waits for conflicting locks.
    pub fn lock_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.lock_wait_ms.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Store up to `n` packs at once in a backup (0: the store's default).
    pub fn set_pack_uploads(&self, n: usize) {
        self.pack_uploads
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many packs a backup stores at once: the value set with
    /// [`Repository::set_pack_uploads`], else what suits the store (2 on local disk, 4 on S3).
    pub fn pack_uploads(&self) -> usize {
        match self.pack_uploads.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.store.parallel_writes().max(1),
            n => n,
        }
    }

    /// The storage under this repository.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The derived keys.
    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// The master key (for `init --from` and sync checks).
    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// The key file this repository was opened with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The keyed chunker of this repository: the version 3 gear table from the master key,
    /// or the seeded table of versions 1 and 2 (which keeps their cut points).
    pub fn chunker(&self) -> Chunker {
        let table = if self.config.version >= 3 {
            GearTable::keyed(&self.master_key().chunker_gear_stream())
        } else {
            GearTable::seeded(self.keys.chunker_seed)
        };
        Chunker::new(self.config.chunker, table)
    }

    /// The plaintext of an index or snapshot object: padded to a size bucket from format
    /// version 3 on, as it is before.
    fn pad(&self, payload: Vec<u8>) -> Vec<u8> {
        if self.config.version >= 3 {
            padding::pad_object(&payload)
        } else {
            payload
        }
    }

    /// The payload of an index or snapshot plaintext (see [`Self::pad`]).
    fn unpad<'a>(&self, plain: &'a [u8], what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.config.version >= 3 {
            padding::unpad_object(plain, what)
        } else {
            Ok(plain)
        }
    }

    // ---- snapshots ----

    /// Ids of every snapshot in the repository.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotId>, RepoError> {
        list_ids(self.store.as_ref(), path::SNAPSHOTS, SnapshotId::from_hex)
    }

    /// Load and verify one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, RepoError> {
        let name = path::snapshot(id);
        let bytes = read_object(self.store.as_ref(), &name, MAX_SNAPSHOT_OBJECT_BYTES)?;
        if SnapshotId::of_bytes(&bytes) != *id {
            return Err(RepoError::corrupt(name, "content does not match its name"));
        }
        let plain = crypto::open(&self.keys.encryption, SNAPSHOT_AAD, &bytes)
            .map_err(|e| RepoError::corrupt(&name, e))?;
        let plain = self
            .unpad(&plain, "snapshot")
            .map_err(|e| RepoError::corrupt(&name, e))?;
        Snapshot::decode(plain).map_err(|e| RepoError::corrupt(name, e))
    }

    /// Save a snapshot; the last write of a backup.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId, RepoError> {
        let encoded = snap
            .encode()
            .map_err(|e| RepoError::encode("a snapshot", e))?;
        let plain = self.pad(encoded);
        let bytes = crypto::seal(&self.keys.encryption, SNAPSHOT_AAD, &plain)?;
        let id = SnapshotId::of_bytes(&bytes);
        self.store.write(&path::snapshot(&id), &bytes)?;
        Ok(id)
    }

    /// Remove a snapshot object.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), RepoError> {
        Ok(self.store.delete(&path::snapshot(id))?)
    }

    // ---- index ----

    /// Ids of every index file.
    pub fn list_index_files(&self) -> Result<Vec<IndexId>, RepoError> {
        list_ids(self.store.as_ref(), path::INDEX, IndexId::from_hex)
    }

    /// Load and verify one index file.
    pub fn load_index(&self, id: &IndexId) -> Result<Vec<PackIndex>, RepoError> {
        let name = path::index(id);
        let bytes = read_object(self.store.as_ref(), &name, MAX_INDEX_OBJECT_BYTES)?;
        if IndexId::of_bytes(&bytes) != *id {
            return Err(RepoError::corrupt(name, "content does not match its name"));
        }
        let plain = crypto::open(&self.keys.encryption, INDEX_AAD, &bytes)
            .map_err(|e| RepoError::corrupt(&name, e))?;
        let plain = self
            .unpad(&plain, "index")
            .map_err(|e| RepoError::corrupt(&name, e))?;
        index::decode(plain).map_err(|e| RepoError::corrupt(name, e))
    }

    /// Save an index file naming packs that are already stored.
    pub fn save_index(&self, packs: &[PackIndex]) -> Result<IndexId, RepoError> {
        let plain = self.pad(index::encode(packs));
        let bytes = crypto::seal(&self.keys.encryption, INDEX_AAD, &plain)?;
        let id = IndexId::of_bytes(&bytes);
        self.store.write(&path::index(&id), &bytes)?;
        Ok(id)
    }

    // ---- packs ----

    /// Every pack with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>, RepoError> {
        let mut out = Vec::new();
        for l in self.store.list(path::PACKS)? {
            if let Ok(id) = PackId::from_hex(path::id_part(&l.name)) {
                out.push((id, l.size));
            }
        }
        Ok(out)
    }
}

fn list_ids<T>(
    store: &dyn ObjectStore,
    dir: &str,
    parse: impl Fn(&str) -> Result<T, crate::id::ParseIdError>,
) -> Result<Vec<T>, RepoError> {
    Ok(store
        .list(dir)?
        .into_iter()
        .filter_map(|l| parse(path::id_part(&l.name)).ok())
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::OpendalStore;

    pub(crate) fn fast_opts() -> InitOptions {
        InitOptions {
            chunker: ChunkerParams {
                min_bytes: 1024,
                avg_bytes: 4096,
                max_bytes: 16384,
            },
            compression_level: 1,
            pack_bytes: 1 << 20,
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            format_version: FORMAT_VERSION,
        }
    }

    pub(crate) fn memory_store() -> Arc<dyn ObjectStore> {
        Arc::new(OpendalStore::memory().unwrap())
    }

    pub(crate) fn memory_repo() -> Repository {
        Repository::init(memory_store(), b"pw", fast_opts()).unwrap()
    }

    #[test]
    fn init_open_and_wrong_password() {
        let store: Arc<dyn ObjectStore> = Arc::new(OpendalStore::memory().unwrap());
        assert!(matches!(
            Repository::open(store.clone(), b"pw"),
            Err(RepoError::NotARepository(_))
        ));
        let r = Repository::init(store.clone(), b"pw", fast_opts()).unwrap();
        assert!(matches!(
            Repository::init(store.clone(), b"pw", fast_opts()),
            Err(RepoError::AlreadyExists(_))
        ));
        let r2 = Repository::open(store.clone(), b"pw").unwrap();
        assert_eq!(r.keys().encryption, r2.keys().encryption);
        assert!(matches!(
            Repository::open(store.clone(), b"nope"),
            Err(RepoError::WrongPassword)
        ));
        // A changed config is detected.
        let mut c = r.config().clone();
        c.compression_level = 9;
        store.write(path::CONFIG, &c.encode().unwrap()).unwrap();
        assert!(matches!(
            Repository::open(store, b"pw"),
            Err(RepoError::Corrupt { .. })
        ));
    }

    /// A store whose listings and stats say every object holds 1 byte, and that counts the
    /// bytes it hands out: what a reader checks must be the bytes it read, and it must not
    /// take in more than its limit.
    struct LyingSizes {
        inner: OpendalStore,
        handed_out: std::sync::atomic::AtomicU64,
    }

    impl LyingSizes {
        fn count(&self, b: Result<Vec<u8>, StorageError>) -> Result<Vec<u8>, StorageError> {
            if let Ok(b) = &b {
                self.handed_out
                    .fetch_add(b.len() as u64, std::sync::atomic::Ordering::SeqCst);
            }
            b
        }
        fn handed_out(&self) -> u64 {
            self.handed_out.swap(0, std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl ObjectStore for LyingSizes {
        fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
            self.count(self.inner.read(name))
        }
        fn read_at_most(&self, name: &str, max: u64) -> Result<Vec<u8>, StorageError> {
            self.count(self.inner.read_at_most(name, max))
        }
        fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
            self.count(self.inner.read_range(name, offset, len))
        }
        fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
            self.inner.write(name, bytes)
        }
        fn create_new(&self, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
            self.inner.create_new(name, bytes)
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::storage::Listed>, StorageError> {
            let mut l = self.inner.list(prefix)?;
            l.iter_mut().for_each(|l| l.size = 1);
            Ok(l)
        }
        fn size(&self, name: &str) -> Result<Option<u64>, StorageError> {
            Ok(self.inner.size(name)?.map(|_| 1))
        }
        fn delete(&self, name: &str) -> Result<(), StorageError> {
            self.inner.delete(name)
        }
        fn describe(&self) -> String {
            "lying sizes".into()
        }
    }

    #[test]
    fn object_sizes_are_checked_on_the_bytes_read() {
        let lying = Arc::new(LyingSizes {
            inner: OpendalStore::memory().unwrap(),
            handed_out: Default::default(),
        });
        let store: Arc<dyn ObjectStore> = lying.clone();
        let r = Repository::init(store.clone(), b"pw", fast_opts()).unwrap();
        let limit = |e: RepoError| match e {
            RepoError::Corrupt { reason, .. } if reason.starts_with("larger than") => reason,
            e => panic!("not refused for its size: {e}"),
        };

        // A snapshot object one byte over the largest sealed snapshot: refused before it is
        // opened (it was read up to 512 MiB).
        let big = vec![7u8; MAX_SNAPSHOT_OBJECT_BYTES as usize + 1];
        let id = SnapshotId::of_bytes(&big);
        store.write(&path::snapshot(&id), &big).unwrap();
        lying.handed_out();
        assert_eq!(
            limit(r.load_snapshot(&id).unwrap_err()),
            format!("larger than {MAX_SNAPSHOT_OBJECT_BYTES} bytes")
        );
        assert_eq!(lying.handed_out(), 0);
        // At the limit it is read (and fails to open, being junk).
        let edge = vec![7u8; MAX_SNAPSHOT_OBJECT_BYTES as usize];
        let id = SnapshotId::of_bytes(&edge);
        store.write(&path::snapshot(&id), &edge).unwrap();
        assert!(matches!(
            r.load_snapshot(&id),
            Err(RepoError::Corrupt { reason, .. }) if !reason.starts_with("larger than")
        ));

        // A lock object over 64 KiB is unreadable, whatever its listed size.
        store.write("locks/big", &vec![1u8; 64 * 1024 + 1]).unwrap();
        lying.handed_out();
        assert_eq!(r.list_locks().unwrap(), vec![("locks/big".into(), None)]);
        assert_eq!(lying.handed_out(), 0);
        store.delete("locks/big").unwrap();

        // A key file over 4096 bytes is ignored although listed as 1 byte; the real key opens.
        let junk = vec![0u8; 5000];
        store
            .write(&path::key(&KeyId::of_bytes(&junk)), &junk)
            .unwrap();
        lying.handed_out();
        assert!(Repository::open(store.clone(), b"pw").is_ok());
        assert!(lying.handed_out() < 4096);

        // A config over 64 KiB, though its stat says 1 byte: refused, and not taken in whole.
        let config = r.config().encode().unwrap();
        let mut padded = config.clone();
        padded.resize(1 << 20, b' ');
        store.write(path::CONFIG, &padded).unwrap();
        lying.handed_out();
        assert_eq!(
            limit(Repository::load_config(store.as_ref()).unwrap_err()),
            format!(
                "larger than {} bytes",
                crate::format::config::MAX_CONFIG_BYTES
            )
        );
        assert_eq!(lying.handed_out(), 0);
        store.write(path::CONFIG, &config).unwrap();
        assert!(Repository::open(store, b"pw").is_ok());
    }

    #[test]
    fn snapshot_and_index_round_trip_and_tamper_detection() {
        let r = memory_repo();
        let snap = Snapshot {
            time_ns: 1,
            host: "h".into(),
            username: "u".into(),
            tags: vec![],
            parent: None,
            tree: crate::id::BlobId([1; 32]),
            sources: vec![],
            summary: Default::default(),
            program_version: "t".into(),
        };
        let id = r.save_snapshot(&snap).unwrap();
        assert_eq!(r.list_snapshots().unwrap(), vec![id]);
        assert_eq!(r.load_snapshot(&id).unwrap(), snap);
        let name = path::snapshot(&id);
        let mut bytes = r.store().read(&name).unwrap();
        bytes[30] ^= 1;
        r.store().write(&name, &bytes).unwrap();
        assert!(matches!(
            r.load_snapshot(&id),
            Err(RepoError::Corrupt { .. })
        ));

        let idx = vec![PackIndex {
            pack: PackId([3; 32]),
            blobs: vec![],
        }];
        let iid = r.save_index(&idx).unwrap();
        assert_eq!(r.load_index(&iid).unwrap(), idx);
    }
}
