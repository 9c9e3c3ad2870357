//! Sealing a blob (compress, pad, encrypt) and opening it again (decrypt, decompress, verify
//! its id). The CPU stages of the data path; they run on rayon workers.

use super::{RepoError, Repository, path};
use crate::compress::{self, Compressor};
use crate::crypto;
use crate::format::pack::{blob_aad, padded_len};
use crate::format::{BlobEntry, BlobKind, Compression};
use crate::id::{BlobId, PackId};

/// A blob ready to be appended to a pack.
pub struct SealedBlob {
    /// The blob's id.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Compression of the payload.
    pub compression: Compression,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
    /// Payload length inside the plaintext.
    pub data_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Its entry in that pack.
    pub entry: BlobEntry,
}

impl Repository {
    /// Compress, pad and seal a blob whose id is already known.
    pub fn seal_blob(
        &self,
        id: BlobId,
        kind: BlobKind,
        plaintext: &[u8],
        compressor: &mut Compressor,
    ) -> Result<SealedBlob, RepoError> {
        let (payload, compression) = compressor.compress(plaintext);
        let data_len = payload.len();
        let mut padded = Vec::with_capacity(padded_len(data_len));
        padded.extend_from_slice(payload);
        padded.resize(padded_len(data_len), 0);
        let bytes = crypto::seal(&self.keys.encryption, &blob_aad(kind), &padded)?;
        Ok(SealedBlob {
            id,
            kind,
            compression,
            bytes,
            data_len: data_len as u32,
            raw_len: plaintext.len() as u32,
        })
    }

    /// Decrypt, decompress and verify sealed blob bytes against their index entry.
    pub fn open_blob(&self, loc: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>, RepoError> {
        let e = &loc.entry;
        let object = || {
            format!(
                "{} (blob {} in pack {})",
                path::pack(&loc.pack),
                e.id,
                loc.pack
            )
        };
        let mut plain = crypto::open(&self.keys.encryption, &blob_aad(e.kind), sealed)
            .map_err(|err| RepoError::corrupt(object(), err))?;
        if plain.len() < e.data_len as usize {
            return Err(RepoError::corrupt(
                object(),
                "payload shorter than its length",
            ));
        }
        let data = if e.compression == Compression::None {
            // Stored raw: the plaintext is the data once the padding is cut (no copy).
            plain.truncate(e.data_len as usize);
            if plain.len() != e.raw_len as usize {
                return Err(RepoError::corrupt(
                    object(),
                    "invalid blob: raw length mismatch",
                ));
            }
            plain
        } else {
            compress::decompress(
                &plain[..e.data_len as usize],
                e.compression,
                e.raw_len as usize,
            )
            .map_err(|err| RepoError::corrupt(object(), err))?
        };
        if self.keys.blob_id(e.kind, &data) != e.id {
            return Err(RepoError::corrupt(
                object(),
                "content does not match the blob id",
            ));
        }
        Ok(data)
    }

    /// Read one blob from its pack and verify it.
    pub fn load_blob(&self, loc: &BlobLocation) -> Result<Vec<u8>, RepoError> {
        let name = path::pack(&loc.pack);
        let sealed = self.store.read_range(
            &name,
            u64::from(loc.entry.offset),
            u64::from(loc.entry.packed_len),
        )?;
        self.open_blob(loc, &sealed)
    }
}
