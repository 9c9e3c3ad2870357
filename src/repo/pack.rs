//! Building pack files from sealed blobs, and reading a pack's own header back.
//!
//! Blobs are shuffled before a pack is written, so the order inside a pack does not reveal the
//! order of files or of chunks within a file.

use super::{RepoError, Repository, SealedBlob, path};
use crate::crypto;
use crate::format::BlobEntry;
use crate::format::pack::{self, HEADER_AAD, TRAILER_BYTES};
use crate::id::PackId;

/// Sealed blobs waiting to become a pack.
#[derive(Default)]
pub struct PackBuilder {
    blobs: Vec<SealedBlob>,
    bytes: usize,
}

/// A finished pack: its bytes and what it holds.
pub struct PackedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The whole pack file.
    pub bytes: Vec<u8>,
    /// Its blobs, in pack order, with offsets.
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    /// Append a blob.
    pub fn add(&mut self, blob: SealedBlob) {
        self.bytes += blob.bytes.len();
        self.blobs.push(blob);
    }

    /// Bytes of sealed blobs so far.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of blobs so far.
    pub fn count(&self) -> usize {
        self.blobs.len()
    }

    /// Take the blobs out, leaving an empty builder.
    pub fn take(&mut self) -> PackBuilder {
        std::mem::take(self)
    }

    /// Shuffle, lay out, seal the header: the finished pack.
    pub fn finish(mut self, repo: &Repository) -> Result<PackedPack, RepoError> {
        shuffle(&mut self.blobs)?;
        let mut bytes = Vec::with_capacity(self.bytes + 64 + self.blobs.len() * 64);
        let mut entries = Vec::with_capacity(self.blobs.len());
        for b in self.blobs {
            entries.push(BlobEntry {
                id: b.id,
                kind: b.kind,
                compression: b.compression,
                offset: bytes.len() as u32,
                packed_len: b.bytes.len() as u32,
                data_len: b.data_len,
                raw_len: b.raw_len,
            });
            bytes.extend_from_slice(&b.bytes);
        }
        let header = crypto::seal(
            &repo.keys.encryption,
            HEADER_AAD,
            &pack::encode_header(&entries),
        )?;
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&pack::encode_trailer(header.len() as u32));
        Ok(PackedPack {
            id: PackId::of_bytes(&bytes),
            bytes,
            entries,
        })
    }
}

fn shuffle<T>(items: &mut [T]) -> Result<(), RepoError> {
    if items.len() < 2 {
        return Ok(());
    }
    let mut rnd = vec![0u8; items.len() * 8];
    crypto::random_bytes(&mut rnd)?;
    for i in (1..items.len()).rev() {
        let r = u64::from_le_bytes(rnd[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        items.swap(i, (r % (i as u64 + 1)) as usize);
    }
    Ok(())
}

/// A pack read whole: its header entries, and the blobs that failed to verify.
pub type VerifiedPack = (Vec<BlobEntry>, Vec<(BlobEntry, RepoError)>);

impl Repository {
    /// Decode a pack's header from the pack's last bytes, given its size.
    pub fn load_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<BlobEntry>, RepoError> {
        let name = path::pack(id);
        if size < TRAILER_BYTES as u64 {
            return Err(RepoError::corrupt(name, "shorter than a pack trailer"));
        }
        let trailer =
            self.store
                .read_range(&name, size - TRAILER_BYTES as u64, TRAILER_BYTES as u64)?;
        let (start, len) =
            pack::decode_trailer(size, &trailer).map_err(|e| RepoError::corrupt(&name, e))?;
        let sealed = self.store.read_range(&name, start, u64::from(len))?;
        self.decode_pack_header(id, &sealed, start)
    }

    /// Open and decode a sealed pack header; `blobs_len` is where the header starts.
    pub fn decode_pack_header(
        &self,
        id: &PackId,
        sealed: &[u8],
        blobs_len: u64,
    ) -> Result<Vec<BlobEntry>, RepoError> {
        let name = path::pack(id);
        let plain = crypto::open(&self.keys.encryption, HEADER_AAD, sealed)
            .map_err(|e| RepoError::corrupt(&name, e))?;
        pack::decode_header(&plain, blobs_len).map_err(|e| RepoError::corrupt(name, e))
    }

    /// Verify a whole pack read into memory: its name, header and every blob. Returns the
    /// entries of the blobs that are damaged, or an error if the pack as a whole is.
    pub fn verify_pack(&self, id: &PackId, bytes: &[u8]) -> Result<VerifiedPack, RepoError> {
        let name = path::pack(id);
        if PackId::of_bytes(bytes) != *id {
            return Err(RepoError::corrupt(&name, "content does not match its name"));
        }
        let size = bytes.len() as u64;
        if size < TRAILER_BYTES as u64 {
            return Err(RepoError::corrupt(name, "shorter than a pack trailer"));
        }
        let (start, len) = pack::decode_trailer(size, &bytes[bytes.len() - TRAILER_BYTES..])
            .map_err(|e| RepoError::corrupt(&name, e))?;
        let header = &bytes[start as usize..start as usize + len as usize];
        let entries = self.decode_pack_header(id, header, start)?;
        let mut bad = Vec::new();
        for e in &entries {
            let loc = super::BlobLocation {
                pack: *id,
                entry: *e,
            };
            let sealed = &bytes[e.offset as usize..e.offset as usize + e.packed_len as usize];
            if let Err(err) = self.open_blob(&loc, sealed) {
                bad.push((*e, err));
            }
        }
        Ok((entries, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::memory_repo;
    use super::*;
    use crate::compress::Compressor;
    use crate::format::BlobKind;

    #[test]
    fn pack_round_trip_through_store_and_header() {
        let r = memory_repo();
        let mut c = Compressor::new(1).unwrap();
        let mut b = PackBuilder::default();
        let datas: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![i; 1000 + i as usize * 300])
            .collect();
        for d in &datas {
            let id = r.keys().blob_id(BlobKind::Data, d);
            b.add(r.seal_blob(id, BlobKind::Data, d, &mut c).unwrap());
        }
        let p = b.finish(&r).unwrap();
        r.save_pack(&p).unwrap();
        let size = p.bytes.len() as u64;
        let header = r.load_pack_header(&p.id, size).unwrap();
        assert_eq!(header, p.entries);
        for e in &header {
            let data = r
                .load_blob(&super::super::BlobLocation {
                    pack: p.id,
                    entry: *e,
                })
                .unwrap();
            assert_eq!(r.keys().blob_id(BlobKind::Data, &data), e.id);
        }
        let (entries, bad) = r.verify_pack(&p.id, &p.bytes).unwrap();
        assert_eq!(entries.len(), 10);
        assert!(bad.is_empty());
        // A flipped bit inside a blob is found, and only that blob is bad.
        let mut damaged = p.bytes.clone();
        let victim = header[3];
        damaged[victim.offset as usize + 30] ^= 4;
        assert!(r.verify_pack(&p.id, &damaged).is_err()); // name no longer matches
        let id2 = PackId::of_bytes(&damaged);
        let (_, bad) = r.verify_pack(&id2, &damaged).unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0.id, victim.id);
        // No plaintext in the pack.
        assert!(!p.bytes.windows(64).any(|w| w == &datas[9][..64]));
    }
}
