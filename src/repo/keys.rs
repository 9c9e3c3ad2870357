//! Key files: the master key wrapped under passphrases. Several keys can coexist; a passphrase
//! change adds the new key before it removes the old, so the repository is never without one.
//!
//! Opening tries key files one by one, and each costs an Argon2id run. Whoever can write to
//! the repository can add key files, so what `unlock` runs is bounded: the key named by the
//! user or the one that last opened the repository on this host goes first, at most
//! [`MAX_KEY_ATTEMPTS`] derivations are run, and a key file nobody named is tried only within
//! [`KdfParams::LIMIT`]. Files that are not key files cost a read, never a derivation.

use serde::Serialize;

use super::{RepoError, Repository, path};
use crate::crypto::{self, KdfParams, MasterKey};
use crate::format::keyfile::KeyFile;
use crate::id::KeyId;
use crate::storage::{ObjectStore, StorageError};

/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Key derivations an open runs at most (restic stops at 20 too): beyond them, the user names
/// the key (`--key-id`).
pub const MAX_KEY_ATTEMPTS: usize = 20;

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

/// Which key files an open tries, and in which order.
#[derive(Clone, Debug, Default)]
pub struct KeyChoice {
    /// Only this key: a full id or a unique prefix of one (`--key-id`).
    pub only: Option<String>,
    /// This key first: the one that last opened the repository on this host.
    pub first: Option<KeyId>,
}

/// Why no key opened when some key files were left untried: the attempts ran out, or their
/// parameters are above [`KdfParams::LIMIT`].
#[derive(Debug)]
pub struct KeysNotTried {
    /// Key files in `keys/`.
    pub total: usize,
    /// Key derivations run.
    pub tried: usize,
    /// The attempts ran out before every key file was looked at.
    pub out_of_attempts: bool,
    /// Key files not tried because their parameters are above [`KdfParams::LIMIT`].
    pub over_limit: Vec<(KeyId, KdfParams)>,
}

impl std::fmt::Display for KeysNotTried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrong passphrase for the {} of {} key files tried",
            self.tried, self.total
        )?;
        if self.out_of_attempts {
            write!(
                f,
                "; coffer runs at most {MAX_KEY_ATTEMPTS} key derivations per open (anyone who \
                 can write to the repository can add key files): name your key with --key-id \
                 <id> or COFFER_KEY_ID (the id is its file name in keys/, shown by `coffer key \
                 list`), or remove the key files you do not know from keys/"
            )?;
        }
        let limit = KdfParams::LIMIT;
        for (id, kdf) in self.over_limit.iter().take(3) {
            write!(
                f,
                "; key file {} was not tried: it asks for Argon2id with {} MiB and {} passes, \
                 above the limit of {} MiB and {} passes for a key file coffer is not told to \
                 use (if it is your key, name it with --key-id {})",
                id.short(),
                kdf.memory_kib / 1024,
                kdf.iterations,
                limit.memory_kib / 1024,
                limit.iterations,
                id.short()
            )?;
        }
        if self.over_limit.len() > 3 {
            write!(
                f,
                "; {} more key files are above the limit",
                self.over_limit.len() - 3
            )?;
        }
        Ok(())
    }
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
    // A key above the limit would be refused by every open that is not told to use it.
    let limit = KdfParams::LIMIT;
    if !kdf.within(limit) {
        return Err(RepoError::Key(format!(
            "a new key may use at most {} MiB and {} passes of Argon2id",
            limit.memory_kib / 1024,
            limit.iterations
        )));
    }
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
    kf.sealed_master = master.seal(&wrapping, &kf.aad())?;
    let bytes = kf.encode();
    let id = KeyId::of_bytes(&bytes);
    store.write(&path::key(&id), &bytes)?;
    Ok(id)
}

/// A key file as read.
enum Loaded {
    Key(KeyFile),
    /// Deleted since it was listed.
    Gone,
    /// Not a key file of this coffer: why.
    Junk(String),
}

/// Read and decode one key file: cheap, whatever the file holds. Its name must be the hash of
/// its bytes, so a key named by the user or remembered by this host cannot be swapped for
/// other bytes under the same name.
fn load_key_file(
    store: &dyn ObjectStore,
    id: &KeyId,
    listed_size: u64,
) -> Result<Loaded, RepoError> {
    let name = path::key(id);
    // The listed size spares reading a large object; the bytes read are what counts.
    if listed_size > MAX_KEY_FILE_BYTES {
        return Ok(Loaded::Junk(format!(
            "{name} is larger than {MAX_KEY_FILE_BYTES} bytes"
        )));
    }
    let bytes = match store.read_at_most(&name, MAX_KEY_FILE_BYTES) {
        Ok(b) => b,
        Err(StorageError::TooLarge { .. }) => {
            return Ok(Loaded::Junk(format!(
                "{name} is larger than {MAX_KEY_FILE_BYTES} bytes"
            )));
        }
        Err(e) if e.is_not_found() => return Ok(Loaded::Gone),
        Err(e) => return Err(e.into()),
    };
    if KeyId::of_bytes(&bytes) != *id {
        return Ok(Loaded::Junk(format!("{name} does not hash to its name")));
    }
    Ok(match KeyFile::decode(&bytes) {
        Ok(kf) => Loaded::Key(kf),
        Err(e) => Loaded::Junk(format!("{name}: {e}")),
    })
}

/// The key files listed, in the listing's order (by name, as on every store).
fn list_key_files(store: &dyn ObjectStore) -> Result<Vec<(KeyId, u64)>, RepoError> {
    let mut out: Vec<(KeyId, u64)> = store
        .list(path::KEYS)?
        .into_iter()
        .filter_map(|l| Some((KeyId::from_hex(path::id_part(&l.name)).ok()?, l.size)))
        .collect();
    out.sort();
    Ok(out)
}

fn warn_junk(junk: usize, first: Option<String>) {
    if let Some(first) = first {
        tracing::warn!(
            "{junk} files in {} are not key files and were ignored (e.g. {first})",
            path::KEYS
        );
    }
}

fn read_key_files(store: &dyn ObjectStore) -> Result<Vec<(KeyId, KeyFile)>, RepoError> {
    let mut out = Vec::new();
    let (mut junk, mut first_junk) = (0, None);
    for (id, size) in list_key_files(store)? {
        match load_key_file(store, &id, size)? {
            Loaded::Key(kf) => out.push((id, kf)),
            Loaded::Gone => {}
            Loaded::Junk(why) => {
                junk += 1;
                first_junk.get_or_insert(why);
            }
        }
    }
    warn_junk(junk, first_junk);
    Ok(out)
}

/// Find the key file that opens with `passphrase`, trying what `choice` says.
pub(super) fn unlock(
    store: &dyn ObjectStore,
    passphrase: &[u8],
    choice: &KeyChoice,
) -> Result<(KeyId, MasterKey), RepoError> {
    let mut files = list_key_files(store)?;
    let total = files.len();
    if total == 0 {
        return Err(RepoError::corrupt(
            path::KEYS,
            "the repository has no key file",
        ));
    }
    let vouched = order_keys(&mut files, choice)?;
    let mut t = Tries::default();
    for (id, size) in files {
        let kf = match load_key_file(store, &id, size)? {
            Loaded::Key(kf) => kf,
            Loaded::Gone => continue,
            Loaded::Junk(why) if choice.only.is_some() => {
                return Err(RepoError::corrupt(path::key(&id), why));
            }
            Loaded::Junk(why) => {
                t.junk += 1;
                t.first_junk.get_or_insert(why);
                continue;
            }
        };
        t.decoded += 1;
        if vouched != Some(id) && !kf.kdf.within(KdfParams::LIMIT) {
            t.over_limit.push((id, kf.kdf));
            continue;
        }
        if t.tried == MAX_KEY_ATTEMPTS {
            t.out_of_attempts = true;
            break;
        }
        t.tried += 1;
        if let Some(master) = try_key(passphrase, &id, &kf)? {
            warn_junk(t.junk, t.first_junk);
            return Ok((id, master));
        }
    }
    warn_junk(t.junk, t.first_junk.take());
    Err(t.failure(total))
}

/// What trying the key files found, for the error when none opened.
#[derive(Default)]
struct Tries {
    tried: usize,
    decoded: usize,
    junk: usize,
    first_junk: Option<String>,
    over_limit: Vec<(KeyId, KdfParams)>,
    out_of_attempts: bool,
}

impl Tries {
    fn failure(self, total: usize) -> RepoError {
        if self.decoded == 0 {
            return RepoError::corrupt(path::KEYS, "the repository has no readable key file");
        }
        if self.out_of_attempts || !self.over_limit.is_empty() {
            return RepoError::KeysNotTried(KeysNotTried {
                total,
                tried: self.tried,
                out_of_attempts: self.out_of_attempts,
                over_limit: self.over_limit,
            });
        }
        RepoError::WrongPassword
    }
}

/// Put the key files in the order they are tried and return the one the user vouches for,
/// which is tried whatever its parameters (within the format's bounds): the one named
/// (`--key-id`, then it is the only one), or the one that opened here before (first). Its
/// name is the hash of its bytes, so nobody changed its parameters since.
fn order_keys(
    files: &mut Vec<(KeyId, u64)>,
    choice: &KeyChoice,
) -> Result<Option<KeyId>, RepoError> {
    if let Some(prefix) = &choice.only {
        let prefix = prefix.to_ascii_lowercase();
        files.retain(|(id, _)| id.to_hex().starts_with(&prefix));
        return match files.as_slice() {
            [] => Err(RepoError::Key(format!(
                "no key file {}{prefix}... in this repository (--key-id)",
                path::KEYS
            ))),
            [(id, _)] => Ok(Some(*id)),
            _ => Err(RepoError::Key(format!(
                "--key-id {prefix} names {} key files: give more of the id",
                files.len()
            ))),
        };
    }
    if let Some(first) = choice.first
        && let Some(at) = files.iter().position(|(id, _)| *id == first)
    {
        files[..=at].rotate_right(1);
        return Ok(Some(first));
    }
    Ok(None)
}

/// One key derivation: the master key if the passphrase opens `kf`.
fn try_key(passphrase: &[u8], id: &KeyId, kf: &KeyFile) -> Result<Option<MasterKey>, RepoError> {
    let wrapping = crypto::derive_wrapping_key(passphrase, &kf.salt, kf.kdf)?;
    match MasterKey::unseal(&wrapping, &kf.aad(), &kf.sealed_master) {
        Ok(master) => Ok(Some(master)),
        Err(crypto::CryptoError::KeyLength(n)) => Err(RepoError::corrupt(
            path::key(id),
            format!("the master key has {n} bytes"),
        )),
        Err(_) => Ok(None),
    }
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
        let bytes =
            super::read_object(self.store.as_ref(), &path::key(&new_id), MAX_KEY_FILE_BYTES)?;
        let kf = KeyFile::decode(&bytes).map_err(|e| RepoError::corrupt(path::key(&new_id), e))?;
        let wrapping = crypto::derive_wrapping_key(new_passphrase, &kf.salt, kf.kdf)?;
        MasterKey::unseal(&wrapping, &kf.aad(), &kf.sealed_master)
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

    /// A well-formed key file with `kdf` that opens with no passphrase (its wrap is random),
    /// dated in the far future (newest first was the old order), named by its hash; with
    /// `below`, its salt is drawn until its name sorts before that id.
    fn decoy(kdf: KdfParams, below: Option<KeyId>) -> (KeyId, Vec<u8>) {
        loop {
            let mut salt = [0u8; 32];
            let mut sealed = vec![0u8; crate::format::keyfile::SEALED_KEY_BYTES];
            crypto::random_bytes(&mut salt).unwrap();
            crypto::random_bytes(&mut sealed).unwrap();
            let bytes = KeyFile {
                kdf,
                salt,
                created: i64::MAX,
                host: "decoy".into(),
                sealed_master: sealed,
            }
            .encode();
            let id = KeyId::of_bytes(&bytes);
            if below.is_none_or(|b| id < b) {
                return (id, bytes);
            }
        }
    }

    /// A key file above [`KdfParams::LIMIT`] that opens with `passphrase`, written as only an
    /// older coffer (or a hand) could.
    fn key_over_limit(r: &Repository, passphrase: &[u8], kdf: KdfParams) -> KeyId {
        let salt = [4u8; 32];
        let wrapping = crypto::derive_wrapping_key(passphrase, &salt, kdf).unwrap();
        let mut kf = KeyFile {
            kdf,
            salt,
            created: 0,
            host: "old".into(),
            sealed_master: Vec::new(),
        };
        kf.sealed_master = r.master_key().seal(&wrapping, &kf.aad()).unwrap();
        let bytes = kf.encode();
        let id = KeyId::of_bytes(&bytes);
        r.store().write(&path::key(&id), &bytes).unwrap();
        id
    }

    fn open(r: &Repository, passphrase: &[u8], choice: KeyChoice) -> Result<KeyId, RepoError> {
        let config = Repository::load_config(r.store().as_ref())?;
        Repository::open_with(r.store().clone(), config, passphrase, &choice).map(|o| o.key_id())
    }

    #[test]
    fn the_key_used_here_goes_first_and_only_key_derivations_count() {
        let r = memory_repo();
        let real = r.key_id();
        // 25 well-formed key files that sort before the real key, 40 files that are not key
        // files at all (cheap to refuse, so they do not count).
        for _ in 0..25 {
            let (id, bytes) = decoy(fast_opts().kdf, Some(real));
            r.store().write(&path::key(&id), &bytes).unwrap();
        }
        for i in 0..40u8 {
            let junk = vec![i; 100 + usize::from(i)];
            r.store()
                .write(&path::key(&KeyId::of_bytes(&junk)), &junk)
                .unwrap();
        }
        // Nothing named: the attempts run out on the decoys, and the error says what to do.
        match open(&r, b"pw", KeyChoice::default()) {
            Err(RepoError::KeysNotTried(n)) => {
                assert_eq!((n.tried, n.total, n.out_of_attempts), (20, 66, true));
                let msg = n.to_string();
                assert!(msg.contains("20 of 66 key files tried"), "{msg}");
                assert!(msg.contains("--key-id"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        // The key that opened here before goes first.
        let first = KeyChoice {
            first: Some(real),
            ..Default::default()
        };
        assert_eq!(open(&r, b"pw", first).unwrap(), real);
        // A key named by a prefix of its id is the only one tried.
        let named = |prefix: &str| KeyChoice {
            only: Some(prefix.into()),
            ..Default::default()
        };
        assert_eq!(open(&r, b"pw", named(&real.to_hex()[..8])).unwrap(), real);
        assert!(matches!(
            open(&r, b"nope", named(&real.to_hex())),
            Err(RepoError::WrongPassword)
        ));
        assert!(matches!(
            open(&r, b"pw", named("zz")),
            Err(RepoError::Key(m)) if m.contains("no key file")
        ));
        // A remembered key that is gone changes nothing.
        let gone = KeyChoice {
            first: Some(KeyId([0; 32])),
            ..Default::default()
        };
        assert!(matches!(
            open(&r, b"pw", gone),
            Err(RepoError::KeysNotTried(_))
        ));
    }

    #[test]
    fn a_key_file_above_the_kdf_limit_is_refused_before_argon2_runs() {
        let r = memory_repo();
        // The format's costliest parameters: 1 GiB and 32 passes, tens of seconds if run.
        let huge = KdfParams {
            memory_kib: 1 << 20,
            iterations: 32,
            parallelism: 1,
        };
        let (big, bytes) = decoy(huge, None);
        r.store().write(&path::key(&big), &bytes).unwrap();
        let started = std::time::Instant::now();
        match open(&r, b"not the passphrase", KeyChoice::default()) {
            Err(RepoError::KeysNotTried(n)) => {
                assert_eq!(n.over_limit, vec![(big, huge)]);
                assert_eq!((n.tried, n.out_of_attempts), (1, false));
                let msg = n.to_string();
                assert!(
                    msg.contains(&format!(
                        "key file {} was not tried: it asks for Argon2id with 1024 MiB and 32 \
                         passes, above the limit of 256 MiB and 10 passes",
                        big.short()
                    )),
                    "{msg}"
                );
                assert!(msg.contains(&format!("--key-id {}", big.short())), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // With the right passphrase the real key opens; the costly file is no error.
        assert_eq!(open(&r, b"pw", KeyChoice::default()).unwrap(), r.key_id());

        // A key above the limit in passes only (cheap here): refused unless named or
        // remembered, and a new one cannot be added.
        let slow_kdf = KdfParams {
            memory_kib: 64,
            iterations: 11,
            parallelism: 1,
        };
        let slow = key_over_limit(&r, b"slow", slow_kdf);
        assert!(matches!(
            open(&r, b"slow", KeyChoice::default()),
            Err(RepoError::KeysNotTried(n)) if n.over_limit.len() == 2
        ));
        let only = KeyChoice {
            only: Some(slow.short()),
            ..Default::default()
        };
        assert_eq!(open(&r, b"slow", only).unwrap(), slow);
        let first = KeyChoice {
            first: Some(slow),
            ..Default::default()
        };
        assert_eq!(open(&r, b"slow", first).unwrap(), slow);
        assert!(matches!(
            r.add_key(b"x", slow_kdf),
            Err(RepoError::Key(m)) if m.contains("at most 256 MiB and 10 passes")
        ));
    }

    #[test]
    fn a_key_file_under_another_name_is_not_a_key() {
        let r = memory_repo();
        let real = path::key(&r.key_id());
        let bytes = r.store().read(&real).unwrap();
        let other = KeyId([0x11; 32]);
        r.store().write(&path::key(&other), &bytes).unwrap();
        r.store().delete(&real).unwrap();
        assert!(matches!(
            open(&r, b"pw", KeyChoice::default()),
            Err(RepoError::Corrupt { reason, .. }) if reason.contains("no readable key file")
        ));
        let named = KeyChoice {
            only: Some(other.to_hex()),
            ..Default::default()
        };
        assert!(matches!(
            open(&r, b"pw", named),
            Err(RepoError::Corrupt { reason, .. }) if reason.contains("does not hash to its name")
        ));
    }

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
