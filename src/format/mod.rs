//! Pure codecs of every repository object. Bytes in, values out, nothing else: no I/O, no
//! crypto. Each decoder bounds every length by the input it was given before it allocates, and
//! names an unknown format version instead of failing obscurely.
//!
//! `docs/format.md` is the byte-by-byte specification; each codec starts with the layout.

pub mod condemned;
pub mod config;
pub mod index;
pub mod keyfile;
pub mod pack;
pub mod padding;
pub mod snapshot;
pub mod tree;

mod cursor;

/// Errors of decoding stored bytes.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The bytes end before the structure does.
    #[error("truncated {what}: needed {needed} bytes, {available} available")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A magic number did not match.
    #[error("not a coffer {what} (bad magic)")]
    BadMagic {
        /// What was being decoded.
        what: &'static str,
    },
    /// A version this build does not know.
    #[error(
        "{what} has format version {found}, this coffer reads up to {supported}: upgrade coffer"
    )]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// Version found.
        found: u32,
        /// Highest version known.
        supported: u32,
    },
    /// Structurally invalid content.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl FormatError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        FormatError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

pub use crate::id::BlobKind;

// The stored byte of a blob kind is part of the pack and index codecs; the kind itself lives
// with the ids, whose namespace it selects (crypto keys a blob's id by its kind).
impl BlobKind {
    /// Stored byte.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    /// From the stored byte.
    pub fn from_byte(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            _ => Err(FormatError::invalid(
                "blob kind",
                format!("unknown kind {b}"),
            )),
        }
    }
}

/// How a blob's payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is (it did not shrink).
    None,
    /// One zstd frame.
    Zstd,
}

impl Compression {
    /// Stored byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    /// From the stored byte.
    pub fn from_byte(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(FormatError::invalid(
                "compression",
                format!("unknown method {b}"),
            )),
        }
    }
}

/// Where and how one blob is stored inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// The blob's id.
    pub id: crate::id::BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Compression of the payload.
    pub compression: Compression,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob (nonce, ciphertext of payload plus padding, tag).
    pub packed_len: u32,
    /// Length of the payload inside the plaintext, before padding.
    pub data_len: u32,
    /// Length of the blob after decompression.
    pub raw_len: u32,
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: crate::id::PackId,
    /// Its entry in that pack.
    pub entry: BlobEntry,
}

/// Largest blob plaintext we accept (the chunker's maximum is 16 MiB; trees are capped too).
pub const MAX_BLOB_BYTES: u32 = 128 << 20;
