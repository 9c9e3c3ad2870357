//! Sealing a blob (compress, pad, encrypt) and opening it again (decrypt, decompress, verify
//! its id). The CPU stages of the data path; they run on rayon workers.

use std::borrow::Cow;

use super::{RepoError, Repository, path};
use crate::compress::{self, Compressor};
use crate::crypto::{self, NONCE_BYTES, TAG_BYTES};
use crate::format::pack::{blob_aad, padded_len};
use crate::format::{BlobKind, BlobLocation, Compression};
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

impl Repository {
    /// Compress, pad and seal a blob whose id is already known.
    pub fn seal_blob(
        &self,
        id: BlobId,
        kind: BlobKind,
        plaintext: &[u8],
        compressor: &mut Compressor,
    ) -> Result<SealedBlob, RepoError> {
        // One buffer from compression to sealed bytes: nonce room, payload, zero padding, and
        // room for the tag. Padded by the rule of the repository's own version, so a v1
        // repository shared with older builds stays within what its version specifies.
        let version = self.config.version;
        let mut buf = vec![0u8; NONCE_BYTES + padded_len(version, plaintext.len()) + TAG_BYTES];
        let room = &mut buf[NONCE_BYTES..NONCE_BYTES + plaintext.len()];
        let (data_len, compression) = match compressor.compress_into(plaintext, room) {
            Some(n) => (n, Compression::Zstd),
            None => {
                room.copy_from_slice(plaintext);
                (plaintext.len(), Compression::None)
            }
        };
        let end = NONCE_BYTES + padded_len(version, data_len);
        // zstd may have left bytes past its frame; padding is zeros.
        buf[NONCE_BYTES + data_len..end].fill(0);
        buf.truncate(end);
        if buf.capacity() > 2 * (end + TAG_BYTES) {
            // Compressed well: give back the room the raw payload would have needed.
            buf.shrink_to(end + TAG_BYTES);
        }
        let bytes = crypto::seal_in_place(&self.keys.encryption, &blob_aad(kind), buf)?;
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
        let mut plain = crypto::open(&self.keys.encryption, &blob_aad(e.kind), sealed)
            .map_err(|err| RepoError::corrupt(blob_object(loc), err))?;
        match self.verified_data(loc, &plain)? {
            Cow::Borrowed(data) => {
                // Stored raw: the plaintext is the data once the padding is cut (no copy).
                let n = data.len();
                plain.truncate(n);
                Ok(plain)
            }
            Cow::Owned(data) => Ok(data),
        }
    }

    /// [`Repository::open_blob`] where `sealed` lies: it is decrypted in place (its bytes are
    /// spent), and the data of a blob stored raw is borrowed from it, so no copy is made.
    pub fn open_blob_in_place<'a>(
        &self,
        loc: &BlobLocation,
        sealed: &'a mut [u8],
    ) -> Result<Cow<'a, [u8]>, RepoError> {
        let plain = crypto::open_in_place(&self.keys.encryption, &blob_aad(loc.entry.kind), sealed)
            .map_err(|err| RepoError::corrupt(blob_object(loc), err))?;
        self.verified_data(loc, plain)
    }

    /// [`Repository::open_blob_in_place`] for verification only.
    pub fn verify_blob_in_place(
        &self,
        loc: &BlobLocation,
        sealed: &mut [u8],
    ) -> Result<(), RepoError> {
        self.open_blob_in_place(loc, sealed).map(|_| ())
    }

    /// The data of an opened blob, checked against its entry and id: borrowed from `plain`
    /// when stored raw, decompressed otherwise.
    fn verified_data<'a>(
        &self,
        loc: &BlobLocation,
        plain: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, RepoError> {
        let e = &loc.entry;
        let Some(payload) = plain.get(..e.data_len as usize) else {
            return Err(RepoError::corrupt(
                blob_object(loc),
                "payload shorter than its length",
            ));
        };
        let data = if e.compression == Compression::None {
            if payload.len() != e.raw_len as usize {
                return Err(RepoError::corrupt(
                    blob_object(loc),
                    "invalid blob: raw length mismatch",
                ));
            }
            Cow::Borrowed(payload)
        } else {
            Cow::Owned(
                compress::decompress(payload, e.compression, e.raw_len as usize)
                    .map_err(|err| RepoError::corrupt(blob_object(loc), err))?,
            )
        };
        if self.keys.blob_id(e.kind, &data) != e.id {
            return Err(RepoError::corrupt(
                blob_object(loc),
                "content does not match the blob id",
            ));
        }
        Ok(data)
    }

    /// Read `len` bytes of a pack at `offset` (several blobs at once, opened with
    /// [`Repository::open_blob`]).
    pub fn read_pack_range(
        &self,
        pack: &PackId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, RepoError> {
        Ok(self.store.read_range(&path::pack(pack), offset, len)?)
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

/// How a blob is named in errors: its pack's object name, the blob and the pack.
fn blob_object(loc: &BlobLocation) -> String {
    format!(
        "{} (blob {} in pack {})",
        path::pack(&loc.pack),
        loc.entry.id,
        loc.pack
    )
}
