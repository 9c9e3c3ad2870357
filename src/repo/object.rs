//! Stored objects as they are, by kind and id: what prune, check and sync read, copy and delete
//! without opening them, and the few facts about the store the engine needs. Nothing here
//! decrypts or verifies: a caller that copies an object checks its name against its bytes
//! ([`StoredObject::names`]) before it writes it anywhere.

use super::{
    MAX_INDEX_OBJECT_BYTES, MAX_SNAPSHOT_OBJECT_BYTES, RepoError, Repository, path, read_object,
};
use crate::id::{IndexId, PackId, SnapshotId};
use crate::storage::ObjectStore;

/// An object of the repository, named by its kind and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredObject {
    /// A pack.
    Pack(PackId),
    /// An index file.
    Index(IndexId),
    /// A snapshot.
    Snapshot(SnapshotId),
}

impl StoredObject {
    /// Its name in storage.
    pub fn name(&self) -> String {
        match self {
            StoredObject::Pack(id) => path::pack(id),
            StoredObject::Index(id) => path::index(id),
            StoredObject::Snapshot(id) => path::snapshot(id),
        }
    }

    /// True when `bytes` are what the id names: every object's name is the hash of its bytes.
    pub fn names(&self, bytes: &[u8]) -> bool {
        match self {
            StoredObject::Pack(id) => PackId::of_bytes(bytes) == *id,
            StoredObject::Index(id) => IndexId::of_bytes(bytes) == *id,
            StoredObject::Snapshot(id) => SnapshotId::of_bytes(bytes) == *id,
        }
    }

    /// The most bytes read of it; `None` for a pack, read whole whatever its size.
    fn max_bytes(&self) -> Option<u64> {
        match self {
            StoredObject::Pack(_) => None,
            StoredObject::Index(_) => Some(MAX_INDEX_OBJECT_BYTES),
            StoredObject::Snapshot(_) => Some(MAX_SNAPSHOT_OBJECT_BYTES),
        }
    }
}

impl Repository {
    /// Read an object whole, as stored: a pack whatever its size, an index file or snapshot up
    /// to its limit (a larger one is corrupt).
    pub fn read_raw(&self, obj: StoredObject) -> Result<Vec<u8>, RepoError> {
        let name = obj.name();
        match obj.max_bytes() {
            Some(max) => read_object(self.store.as_ref(), &name, max),
            None => Ok(self.store.read(&name)?),
        }
    }

    /// Write an object as it was read from another repository with the same master key.
    pub fn write_raw(&self, obj: StoredObject, bytes: &[u8]) -> Result<(), RepoError> {
        Ok(self.store.write(&obj.name(), bytes)?)
    }

    /// Remove a pack.
    pub fn delete_pack(&self, id: &PackId) -> Result<(), RepoError> {
        Ok(self.store.delete(&path::pack(id))?)
    }

    /// Remove an index file.
    pub fn delete_index(&self, id: &IndexId) -> Result<(), RepoError> {
        Ok(self.store.delete(&path::index(id))?)
    }

    /// Remove the leftovers of writes that never finished (see
    /// [`ObjectStore::clean_leftovers`]); only under an exclusive lock. Returns how many.
    pub fn clean_leftovers(&self) -> Result<u64, RepoError> {
        Ok(self.store.clean_leftovers()?)
    }

    /// Where the repository is, without secrets (a path or URL).
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// True when the store is remote (it counts its requests): reads are worth batching.
    pub fn is_remote(&self) -> bool {
        self.store.io_stats().is_some()
    }

    /// True when `store` holds a config: a repository is there (or was begun there).
    pub fn config_exists(store: &dyn ObjectStore) -> Result<bool, RepoError> {
        Ok(store.size(path::CONFIG)?.is_some())
    }
}
