//! The master key, the sub-keys derived from it, and the passphrase KDF that wraps it.
//!
//! One 32-byte random master secret is generated at `init`. Every purpose gets its own sub-key
//! through BLAKE3 `derive_key` with a distinct context string, so a leak of one (for example
//! the id key, through a side channel on ids) never gives another.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;
use crate::id::{BlobId, BlobKind};

const CONTEXT_ENCRYPTION: &str = "coffer 2026-11-23 object encryption key";
const CONTEXT_BLOB_ID: &str = "coffer 2026-11-23 blob id key";
const CONTEXT_TREE_ID: &str = "coffer 2026-11-23 tree id key";
const CONTEXT_CHUNKER: &str = "coffer 2026-11-23 chunker gear seed";
const CONTEXT_CONFIG_MAC: &str = "coffer 2026-11-23 config mac key";
const CONTEXT_CHUNKER_GEAR: &str = "coffer 2026-12-04 chunker gear table";

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

    /// Raw key material as a key (tests and benchmarks; a key file is opened with
    /// [`MasterKey::unseal`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key material.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 2,048 bytes of key stream (BLAKE3 `derive_key` mode, extended output) for the gear
    /// table of format version 3: 256 independent entries instead of one seed.
    pub fn chunker_gear_stream(&self) -> zeroize::Zeroizing<[u8; 2048]> {
        let mut out = zeroize::Zeroizing::new([0u8; 2048]);
        let mut h = blake3::Hasher::new_derive_key(CONTEXT_CHUNKER_GEAR);
        h.update(&self.0);
        h.finalize_xof().fill(&mut out[..]);
        out
    }

    /// Wrap the key for a key file: sealed under `wrapping` with `aad`.
    pub fn seal(&self, wrapping: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        super::seal(wrapping, aad, &self.0)
    }

    /// Unwrap a key sealed by [`MasterKey::seal`]. It is decrypted in place in a buffer that
    /// is zeroized on drop and copied from there into the key: no plain copy is left behind.
    pub fn unseal(wrapping: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Self, CryptoError> {
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = super::open_in_place(wrapping, aad, &mut buf)?;
        if plain.len() != 32 {
            return Err(CryptoError::KeyLength(plain.len()));
        }
        let mut key = Self([0; 32]);
        key.0.copy_from_slice(plain);
        Ok(key)
    }

    /// Derive the working sub-keys.
    pub fn derive(&self) -> RepoKeys {
        let seed = Zeroizing::new(blake3::derive_key(CONTEXT_CHUNKER, &self.0));
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
    pub fn blob_id(&self, kind: BlobKind, plaintext: &[u8]) -> BlobId {
        let key = match kind {
            BlobKind::Data => &self.blob_id,
            BlobKind::Tree => &self.tree_id,
        };
        BlobId(*blake3::keyed_hash(key, plaintext).as_bytes())
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
    /// The default for new keys: 64 MiB, 3 passes, 4 lanes (RFC 9106's second recommendation).
    /// The lanes share the 64 MiB and are computed on the rayon pool at once, so on two cores
    /// the key takes half the wall time of one lane for the same memory and work (an attacker's
    /// cost per guess is unchanged). Keys made before 2026-12-05 have 1 lane.
    /// Key files live with the storage provider, where anyone who reads them can guess
    /// passphrases offline at this cost per guess; OWASP's minimum (19 MiB, 2 passes, the
    /// default from 2026-11-23 to 2026-11-24) is about 5 times cheaper. The price is paid once
    /// per command, and its 64 MiB are the floor of every command's peak memory.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    /// The cheapest parameters a new key made on the command line may have: OWASP's minimum
    /// for Argon2id (19 MiB, 2 passes). Reading accepts cheaper ones, which only their
    /// makers, holders of the master key, could have written.
    pub const NEW_KEY_MIN: KdfParams = KdfParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// The costliest parameters coffer runs for a key file it finds in a repository, and the
    /// most a new key may have: 256 MiB, 10 passes. Anyone who can write to the repository
    /// can add key files, and each one tried costs its memory and time; at this limit one try
    /// takes about 13 times the default's time and fits a host with 512 MiB of memory.
    /// Parallelism keeps its format bound: lanes share the memory and run on the rayon pool
    /// (no more threads than it has), so they cost neither more memory nor more time.
    pub const LIMIT: KdfParams = KdfParams {
        memory_kib: 256 * 1024,
        iterations: 10,
        parallelism: 16,
    };

    /// True when no parameter is above `limit`'s.
    pub fn within(&self, limit: KdfParams) -> bool {
        self.memory_kib <= limit.memory_kib
            && self.iterations <= limit.iterations
            && self.parallelism <= limit.parallelism
    }

    /// Bounds of the key file format, checked before Argon2 runs, so a hostile key file cannot
    /// make us allocate terabytes or spin for hours. What is tried without being named is
    /// bounded further by [`KdfParams::LIMIT`].
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
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    params.validate()?;
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
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
        use crate::id::BlobKind::{Data, Tree};
        assert_eq!(a.blob_id(Data, b"x"), b.blob_id(Data, b"x"));
        assert_ne!(a.blob_id(Data, b"x"), a.blob_id(Tree, b"x"));
        assert_ne!(a.blob_id(Data, b"x").0, *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn a_master_key_unseals_only_with_its_wrapping_key_and_aad() {
        let m = MasterKey::from_bytes([9u8; 32]);
        let sealed = m.seal(&[1; 32], b"aad").unwrap();
        assert_eq!(
            MasterKey::unseal(&[1; 32], b"aad", &sealed)
                .unwrap()
                .as_bytes(),
            m.as_bytes()
        );
        assert!(MasterKey::unseal(&[2; 32], b"aad", &sealed).is_err());
        assert!(MasterKey::unseal(&[1; 32], b"other", &sealed).is_err());
        let short = super::super::seal(&[1; 32], b"aad", &[9u8; 31]).unwrap();
        assert!(matches!(
            MasterKey::unseal(&[1; 32], b"aad", &short),
            Err(CryptoError::KeyLength(31))
        ));
    }

    #[test]
    fn new_key_bounds_are_within_what_is_read() {
        for p in [KdfParams::DEFAULT, KdfParams::NEW_KEY_MIN, KdfParams::LIMIT] {
            p.validate().unwrap();
            assert!(p.within(KdfParams::LIMIT));
        }
        assert!(KdfParams::NEW_KEY_MIN.within(KdfParams::DEFAULT));
        let over = KdfParams {
            iterations: KdfParams::LIMIT.iterations + 1,
            ..KdfParams::DEFAULT
        };
        assert!(!over.within(KdfParams::LIMIT));
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
