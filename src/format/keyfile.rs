//! Key files (`keys/<id>`): the master key wrapped by a key derived from a passphrase with
//! Argon2id, with the KDF parameters stored per key.
//!
//! ```text
//! | magic "coffer-k": 8 | version: u16 LE = 1 | memory_kib: u32 LE | iterations: u32 LE |
//! | parallelism: u32 LE | salt: [u8; 32] | created: i64 LE (unix seconds) |
//! | host_len: u16 LE | host: host_len bytes (UTF-8, at most 255) |
//! | sealed master key: 24 nonce + 32 ciphertext + 16 tag = 72 bytes |
//! ```
//! The master key is sealed with aad = "coffer key" || every byte before it, so the stored
//! parameters cannot be changed without the key failing to open.

use super::FormatError;
use super::cursor::Cursor;
use crate::crypto::{KdfParams, SEAL_OVERHEAD};

/// Magic at the start of every key file.
pub const KEY_MAGIC: &[u8; 8] = b"coffer-k";
/// Key file version written.
pub const KEY_VERSION: u16 = 1;
/// Bytes of the sealed master key.
pub const SEALED_KEY_BYTES: usize = 32 + SEAL_OVERHEAD;

/// A decoded key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 32],
    /// When the key was added.
    pub created: i64,
    /// Host that added the key.
    pub host: String,
    /// The sealed master key.
    pub sealed_master: Vec<u8>,
}

impl KeyFile {
    /// Every byte before the sealed master key: the associated data of the seal.
    pub fn header_bytes(&self) -> Vec<u8> {
        let host = truncate_host(&self.host);
        let mut out = Vec::with_capacity(72 + host.len());
        out.extend_from_slice(KEY_MAGIC);
        out.extend_from_slice(&KEY_VERSION.to_le_bytes());
        out.extend_from_slice(&self.kdf.memory_kib.to_le_bytes());
        out.extend_from_slice(&self.kdf.iterations.to_le_bytes());
        out.extend_from_slice(&self.kdf.parallelism.to_le_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&(host.len() as u16).to_le_bytes());
        out.extend_from_slice(host.as_bytes());
        out
    }

    /// The associated data used to seal the master key.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = b"coffer key".to_vec();
        aad.extend_from_slice(&self.header_bytes());
        aad
    }

    /// Encode the whole key file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        out.extend_from_slice(&self.sealed_master);
        out
    }

    /// Decode a key file.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "key file";
        let mut c = Cursor::new(bytes, WHAT);
        if c.take(8)? != KEY_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let version = c.u16()?;
        if version != KEY_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: version.into(),
                supported: KEY_VERSION.into(),
            });
        }
        let kdf = KdfParams {
            memory_kib: c.u32()?,
            iterations: c.u32()?,
            parallelism: c.u32()?,
        };
        kdf.validate()
            .map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        let salt = c.array()?;
        let created = c.i64()?;
        let host_len = c.u16()? as usize;
        if host_len > 255 {
            return Err(FormatError::invalid(WHAT, "host name too long"));
        }
        let host = String::from_utf8(c.take(host_len)?.to_vec())
            .map_err(|_| FormatError::invalid(WHAT, "host is not UTF-8"))?;
        let sealed_master = c.take(SEALED_KEY_BYTES)?.to_vec();
        c.finish()?;
        Ok(KeyFile {
            kdf,
            salt,
            created,
            host,
            sealed_master,
        })
    }
}

fn truncate_host(host: &str) -> &str {
    let mut end = host.len().min(255);
    while !host.is_char_boundary(end) {
        end -= 1;
    }
    &host[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyFile {
        KeyFile {
            kdf: KdfParams::DEFAULT,
            salt: [5; 32],
            created: 1_700_000_000,
            host: "büro-host".into(),
            sealed_master: vec![1; SEALED_KEY_BYTES],
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let k = sample();
        let bytes = k.encode();
        assert_eq!(KeyFile::decode(&bytes).unwrap(), k);
        assert!(KeyFile::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut more = bytes.clone();
        more.push(0);
        assert!(KeyFile::decode(&more).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(
            KeyFile::decode(&magic),
            Err(FormatError::BadMagic { .. })
        ));
        let mut ver = bytes.clone();
        ver[8] = 2;
        assert!(matches!(
            KeyFile::decode(&ver),
            Err(FormatError::UnsupportedVersion { .. })
        ));
        let mut mem = bytes;
        mem[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(KeyFile::decode(&mem).is_err());
    }
}
