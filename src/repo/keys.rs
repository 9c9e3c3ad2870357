//! Key files: the master key wrapped under passphrases. Several keys can coexist; a passphrase
//! change adds the new key before it removes the old, so the repository is never without one.

use serde::Serialize;

use super::{RepoError, Repository, path};
use crate::crypto::{self, KdfParams, MasterKey};
use crate::format::keyfile::KeyFile;
use crate::id::KeyId;
use crate::storage::ObjectStore;

/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// One key of a repository, as listed.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// Key id (hex).
    pub id: String,
    /// When it was added (RFC 3339).
    pub created: String,
    /// Host that added it.
    pub host: String,
    /// Whether it is the key this process opened the repository with.
    pub current: bool,
}

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

pub(super) fn write_key(
    store: &dyn ObjectStore,
    master: &MasterKey,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<KeyId, RepoError> {
    let mut salt = [0u8; 32];
    crypto::random_bytes(&mut salt)?;
    let wrapping = crypto::derive_wrapping_key(passphrase, &salt, kdf)?;
    let mut kf = KeyFile {
        kdf,
        salt,
        created: chrono::Utc::now().timestamp(),
        host: hostname(),
        sealed_master: Vec::new(),
    };
    kf.sealed_master = crypto::seal(&wrapping, &kf.aad(), master.as_bytes())?;
    let bytes = kf.encode();
    let id = KeyId::of_bytes(&bytes);
    store.write(&path::key(&id), &bytes)?;
    Ok(id)
}

fn read_key_files(store: &dyn ObjectStore) -> Result<Vec<(KeyId, KeyFile)>, RepoError> {
    let mut out = Vec::new();
    for l in store.list(path::KEYS)? {
        let Ok(id) = KeyId::from_hex(path::id_part(&l.name)) else {
            continue;
        };
        if l.size > MAX_KEY_FILE_BYTES {
            tracing::warn!("key file {} is too large, ignored", l.name);
            continue;
        }
        let bytes = store.read(&l.name)?;
        match KeyFile::decode(&bytes) {
            Ok(kf) => out.push((id, kf)),
            Err(e) => tracing::warn!("key file {} is unreadable, ignored: {e}", l.name),
        }
    }
    Ok(out)
}

pub(super) fn unlock(
    store: &dyn ObjectStore,
    passphrase: &[u8],
) -> Result<(KeyId, MasterKey), RepoError> {
    let files = read_key_files(store)?;
    if files.is_empty() {
        return Err(RepoError::corrupt(
            path::KEYS,
            "the repository has no readable key file",
        ));
    }
    // Newest first: the passphrase most likely to be typed is the latest one, and every
    // key tried costs a key derivation (a passphrase change killed half-way leaves the old
    // key beside the new one).
    let mut files = files;
    files.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(a.0.cmp(&b.0)));
    for (id, kf) in files {
        let wrapping = crypto::derive_wrapping_key(passphrase, &kf.salt, kf.kdf)?;
        if let Ok(plain) = crypto::open(&wrapping, &kf.aad(), &kf.sealed_master) {
            let bytes: [u8; 32] = plain
                .as_slice()
                .try_into()
                .map_err(|_| RepoError::corrupt(path::key(&id), "master key of wrong length"))?;
            return Ok((id, MasterKey::from_bytes(bytes)));
        }
    }
    Err(RepoError::WrongPassword)
}

impl Repository {
    /// Add a key that opens the repository with another passphrase.
    pub fn add_key(&self, passphrase: &[u8], kdf: KdfParams) -> Result<KeyId, RepoError> {
        write_key(self.store.as_ref(), &self.master, passphrase, kdf)
    }

    /// Every key file.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, RepoError> {
        let mut out: Vec<KeyInfo> = read_key_files(self.store.as_ref())?
            .into_iter()
            .map(|(id, kf)| KeyInfo {
                id: id.to_hex(),
                created: chrono::DateTime::from_timestamp(kf.created, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                host: kf.host,
                current: id == self.key_id,
            })
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Remove a key by id or unique prefix. The key in use cannot be removed (use `passwd`).
    pub fn remove_key(&self, prefix: &str) -> Result<KeyId, RepoError> {
        let keys = self.list_keys()?;
        let matches: Vec<&KeyInfo> = keys.iter().filter(|k| k.id.starts_with(prefix)).collect();
        let key = match matches.as_slice() {
            [] => return Err(RepoError::Key(format!("no key with id {prefix}"))),
            [k] => *k,
            _ => {
                return Err(RepoError::Key(format!(
                    "key id prefix {prefix} is ambiguous"
                )));
            }
        };
        if key.current {
            return Err(RepoError::Key(
                "refusing to remove the key in use; use `coffer key passwd` to change it".into(),
            ));
        }
        let id = KeyId::from_hex(&key.id).map_err(|e| RepoError::Key(e.to_string()))?;
        self.store.delete(&path::key(&id))?;
        Ok(id)
    }

    /// Replace the key in use by one with a new passphrase: the new key is written first.
    pub fn change_passphrase(
        &mut self,
        new_passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<KeyId, RepoError> {
        let new_id = self.add_key(new_passphrase, kdf)?;
        // Prove the new key, read back from the store, opens before the old one goes (one
        // key derivation: the shorter this window, the rarer a kill leaves both keys).
        let bytes = self.store.read(&path::key(&new_id))?;
        let kf = KeyFile::decode(&bytes).map_err(|e| RepoError::corrupt(path::key(&new_id), e))?;
        let wrapping = crypto::derive_wrapping_key(new_passphrase, &kf.salt, kf.kdf)?;
        crypto::open(&wrapping, &kf.aad(), &kf.sealed_master)
            .map_err(|e| RepoError::corrupt(path::key(&new_id), e))?;
        self.store.delete(&path::key(&self.key_id))?;
        self.key_id = new_id;
        Ok(new_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fast_opts, memory_repo};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn add_remove_and_change_passphrase() {
        let mut r = memory_repo();
        let kdf = fast_opts().kdf;
        let other = r.add_key(b"second", kdf).unwrap();
        assert_eq!(r.list_keys().unwrap().len(), 2);
        let store: Arc<dyn ObjectStore> = r.store().clone();
        assert!(Repository::open(store.clone(), b"second").is_ok());
        assert!(r.remove_key(&r.key_id().to_hex()[..8]).is_err());
        r.change_passphrase(b"third", kdf).unwrap();
        assert!(matches!(
            Repository::open(store.clone(), b"pw"),
            Err(RepoError::WrongPassword)
        ));
        assert!(Repository::open(store.clone(), b"third").is_ok());
        r.remove_key(&other.to_hex()).unwrap();
        assert!(matches!(
            Repository::open(store, b"second"),
            Err(RepoError::WrongPassword)
        ));
        assert_eq!(r.list_keys().unwrap().len(), 1);
    }
}
