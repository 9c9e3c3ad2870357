//! The master key, the sub-keys derived from it, and the passphrase KDF that wraps it.
//!
//! One 32-byte random master secret is generated at `init`. Every purpose gets its own sub-key
//! through BLAKE3 `derive_key` with a distinct context string, so a leak of one (for example
//! the id key, through a side channel on ids) never gives another.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::CryptoError;

const CONTEXT_ENCRYPTION: &str = "coffer 2026-11-23 object encryption key";
const CONTEXT_BLOB_ID: &str = "coffer 2026-11-23 blob id key";
const CONTEXT_TREE_ID: &str = "coffer 2026-11-23 tree id key";
const CONTEXT_CHUNKER: &str = "coffer 2026-11-23 chunker gear seed";
const CONTEXT_CONFIG_MAC: &str = "coffer 2026-11-23 config mac key";

/// The repository master secret. Shared by every key file of a repository.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    /// Generate a fresh random master key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; 32];
        super::random_bytes(&mut k)?;
        Ok(Self(k))
    }

    /// Wrap raw key material (as unwrapped from a key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key material, to be wrapped into a key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derive the working sub-keys.
    pub fn derive(&self) -> RepoKeys {
        let seed = blake3::derive_key(CONTEXT_CHUNKER, &self.0);
        let mut seed8 = [0u8; 8];
        seed8.copy_from_slice(&seed[..8]);
        RepoKeys {
            encryption: blake3::derive_key(CONTEXT_ENCRYPTION, &self.0),
            blob_id: blake3::derive_key(CONTEXT_BLOB_ID, &self.0),
            tree_id: blake3::derive_key(CONTEXT_TREE_ID, &self.0),
            config_mac: blake3::derive_key(CONTEXT_CONFIG_MAC, &self.0),
            chunker_seed: u64::from_le_bytes(seed8),
        }
    }
}

/// Sub-keys derived from the master key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RepoKeys {
    /// Key of every sealed object and blob.
    pub encryption: [u8; 32],
    /// Key of the keyed BLAKE3 that names data blobs.
    pub blob_id: [u8; 32],
    /// Key of the keyed BLAKE3 that names tree blobs: a file whose bytes equal an encoded
    /// tree must not get the tree's id.
    pub tree_id: [u8; 32],
    /// Key of the MAC over the plaintext config.
    pub config_mac: [u8; 32],
    /// Seed XORed into the FastCDC gear table, so cut points are secret.
    pub chunker_seed: u64,
}

impl RepoKeys {
    /// The id of a blob of this kind with this plaintext.
    pub fn blob_id(&self, kind: crate::format::BlobKind, plaintext: &[u8]) -> crate::id::BlobId {
        let key = match kind {
            crate::format::BlobKind::Data => &self.blob_id,
            crate::format::BlobKind::Tree => &self.tree_id,
        };
        crate::id::BlobId(*blake3::keyed_hash(key, plaintext).as_bytes())
    }

    /// MAC over config bytes.
    pub fn config_mac(&self, bytes: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.config_mac, bytes).as_bytes()
    }
}

/// Argon2id parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default for new keys: 19 MiB, 2 passes, 1 lane, OWASP's recommended minimum for
    /// Argon2id (about 0.05 s here). It is also the floor of every command's peak memory, so
    /// it is kept at that minimum; `init --kdf-memory` / `--kdf-iterations` raise it per key.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Bounds accepted when reading a key file, so a hostile key file cannot make us allocate
    /// terabytes or spin for hours.
    pub fn validate(&self) -> Result<(), CryptoError> {
        let ok = (8..=1024 * 1024).contains(&self.memory_kib)
            && (1..=32).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism)
            && self.memory_kib >= 8 * self.parallelism;
        if ok {
            Ok(())
        } else {
            Err(CryptoError::Kdf(format!(
                "{self:?} is out of the accepted range"
            )))
        }
    }
}

/// Derive the key that wraps the master key from a passphrase.
pub fn derive_wrapping_key(
    passphrase: &[u8],
    salt: &[u8; 32],
    params: KdfParams,
) -> Result<zeroize::Zeroizing<[u8; 32]>, CryptoError> {
    params.validate()?;
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_keys_are_distinct_and_deterministic() {
        let m = MasterKey::from_bytes([3u8; 32]);
        let a = m.derive();
        let b = m.derive();
        assert_eq!(a.encryption, b.encryption);
        assert_ne!(a.encryption, a.blob_id);
        assert_ne!(a.blob_id, a.config_mac);
        use crate::format::BlobKind::{Data, Tree};
        assert_eq!(a.blob_id(Data, b"x"), b.blob_id(Data, b"x"));
        assert_ne!(a.blob_id(Data, b"x"), a.blob_id(Tree, b"x"));
        assert_ne!(a.blob_id(Data, b"x").0, *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn kdf_depends_on_passphrase_and_rejects_hostile_params() {
        let small = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let a = derive_wrapping_key(b"one", &[0; 32], small).unwrap();
        let b = derive_wrapping_key(b"two", &[0; 32], small).unwrap();
        assert_ne!(*a, *b);
        let huge = KdfParams {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1,
        };
        assert!(derive_wrapping_key(b"one", &[0; 32], huge).is_err());
    }
}
