//! Pure cryptography: the master key and its sub-keys, AEAD sealing of every stored object, the
//! passphrase KDF, and keyed blob ids. No I/O happens here.
//! The one exception, [`openpgp`], encrypts the nightly archive for GnuPG (an encoder over a
//! `Write` the caller gives it).
//!
//! Invariant: nothing leaves this module unencrypted except ids (keyed hashes) and the random
//! nonces; every key type is zeroized on drop.

mod aead;
mod keys;
pub mod openpgp;

pub use aead::{NONCE_BYTES, SEAL_OVERHEAD, TAG_BYTES, open, open_in_place, seal, seal_in_place};
pub use keys::{KdfParams, MasterKey, RepoKeys, derive_wrapping_key};

/// Errors of the crypto layer.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The authentication tag did not match: wrong key, or the bytes were changed.
    #[error("authentication failed (wrong key or corrupted data)")]
    Authentication,
    /// Sealed input shorter than nonce plus tag.
    #[error("sealed data is truncated ({0} bytes)")]
    Truncated(usize),
    /// KDF parameters out of range.
    #[error("invalid key derivation parameters: {0}")]
    Kdf(String),
    /// A wrapped key opened to the wrong number of bytes.
    #[error("an unwrapped key has {0} bytes instead of 32")]
    KeyLength(usize),
    /// The operating system's random source failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// Fill `buf` with random bytes from the operating system.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}
