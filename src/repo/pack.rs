//! Building pack files from sealed blobs, and reading a pack's own header back.
//!
//! A pack is written as its blobs arrive: into a temporary file of the repository when the
//! store can spool (a local disk), so no pack is ever held in memory, or else into one buffer
//! sized for a whole pack. Its name, BLAKE3 of its bytes, is computed on the way. The blob
//! order inside a pack is the order of sealing; the header that says where each blob is is
//! encrypted, so without the key a pack shows neither boundaries nor order.

use super::{RepoError, Repository, SealedBlob, path};
use crate::crypto;
use crate::format::BlobEntry;
use crate::format::pack::{self, HEADER_AAD, TRAILER_BYTES};
use crate::id::PackId;
use crate::storage::{ObjectStore, ObjectWriter};

/// Room for the blob that makes a pack pass its target (a sealed chunk of at most 4 MiB plus
/// padding), so the in-memory buffer of a pack is allocated once.
const PACK_SLACK_BYTES: usize = (4 << 20) + (256 << 10);

/// Where a pack's bytes go while it is built.
enum Sink {
    /// Nothing written yet.
    Empty,
    /// A temporary file of the store.
    Spool(Box<dyn ObjectWriter>),
    /// A buffer, for stores that take whole objects.
    Memory(Vec<u8>),
}

/// A pack being written: blobs appended so far, and what the header will say.
pub struct PackBuilder {
    sink: Sink,
    entries: Vec<BlobEntry>,
    hasher: blake3::Hasher,
    bytes: usize,
    /// The size the pack is filled to (for the in-memory buffer's capacity).
    target: usize,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new(16 << 20)
    }
}

/// A finished pack: its name, what it holds, and its bytes (in memory or spooled).
pub struct PackedPack {
    /// BLAKE3 of the pack's bytes.
    pub id: PackId,
    /// Its blobs, in pack order, with offsets.
    pub entries: Vec<BlobEntry>,
    /// Total length in bytes.
    pub len: u64,
    body: Body,
}

enum Body {
    Spool(Box<dyn ObjectWriter>),
    Memory(Vec<u8>),
}

impl PackedPack {
    /// The pack's bytes when it was built in memory (`None` when spooled to the store).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Memory(b) => Some(b),
            Body::Spool(_) => None,
        }
    }
}

impl PackBuilder {
    /// An empty pack that will be filled to about `target` bytes.
    pub fn new(target: usize) -> Self {
        Self {
            sink: Sink::Empty,
            entries: Vec::new(),
            hasher: blake3::Hasher::new(),
            bytes: 0,
            target,
        }
    }

    /// Append a sealed blob.
    pub fn add(&mut self, repo: &Repository, blob: SealedBlob) -> Result<(), RepoError> {
        if matches!(self.sink, Sink::Empty) {
            self.sink = match repo.store.spool()? {
                Some(w) => Sink::Spool(w),
                None => Sink::Memory(Vec::with_capacity(self.target + PACK_SLACK_BYTES)),
            };
        }
        // Packs are closed once past their target (at most 1 GiB, `Config` checks it) and a
        // blob is at most `MAX_BLOB_BYTES`, so offsets fit in 32 bits.
        let offset = self.bytes as u32;
        match &mut self.sink {
            Sink::Spool(w) => w.append(&blob.bytes)?,
            Sink::Memory(v) => v.extend_from_slice(&blob.bytes),
            Sink::Empty => {}
        }
        self.hasher.update(&blob.bytes);
        self.entries.push(BlobEntry {
            id: blob.id,
            kind: blob.kind,
            compression: blob.compression,
            offset,
            packed_len: blob.bytes.len() as u32,
            data_len: blob.data_len,
            raw_len: blob.raw_len,
        });
        self.bytes += blob.bytes.len();
        Ok(())
    }

    /// Bytes of sealed blobs so far.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of blobs so far.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Take the blobs out, leaving an empty builder with the same target.
    pub fn take(&mut self) -> PackBuilder {
        let target = self.target;
        std::mem::replace(self, PackBuilder::new(target))
    }

    /// Seal and append the header and trailer: the finished pack, ready for
    /// [`Repository::save_pack`].
    pub fn finish(self, repo: &Repository) -> Result<PackedPack, RepoError> {
        let PackBuilder {
            sink,
            entries,
            mut hasher,
            bytes,
            ..
        } = self;
        // Format version 3 pads the header so the whole pack lands on a size bucket: a lone
        // small file in an incremental backup no longer gives its size away (docs/crypto.md).
        let plain = if repo.config.version >= 3 {
            pack::encode_header_padded(&entries, bytes as u64)
        } else {
            pack::encode_header(&entries)
        };
        let header = crypto::seal(&repo.keys.encryption, HEADER_AAD, &plain)?;
        let trailer = pack::encode_trailer(header.len() as u32);
        let len = (bytes + header.len() + TRAILER_BYTES) as u64;
        hasher.update(&header);
        hasher.update(&trailer);
        let body = match sink {
            Sink::Spool(mut w) => {
                w.append(&header)?;
                w.append(&trailer)?;
                Body::Spool(w)
            }
            Sink::Memory(mut v) => {
                v.extend_from_slice(&header);
                v.extend_from_slice(&trailer);
                Body::Memory(v)
            }
            Sink::Empty => {
                let mut v = header;
                v.extend_from_slice(&trailer);
                Body::Memory(v)
            }
        };
        Ok(PackedPack {
            id: PackId(*hasher.finalize().as_bytes()),
            entries,
            len,
            body,
        })
    }
}

impl Repository {
    /// Store a finished pack under its name.
    pub fn save_pack(&self, pack: PackedPack) -> Result<(), RepoError> {
        let name = path::pack(&pack.id);
        match pack.body {
            Body::Spool(w) => w.finish(&name)?,
            Body::Memory(v) => self.store.write_owned(&name, v)?,
        }
        Ok(())
    }
}

/// A pack read whole: its header entries, and the blobs that failed to verify.
pub type VerifiedPack = (Vec<BlobEntry>, Vec<(BlobEntry, RepoError)>);

impl Repository {
    /// Decode a pack's header from the pack's last bytes, given its size.
    pub fn load_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<BlobEntry>, RepoError> {
        let name = path::pack(id);
        let trailer = self.read_pack_trailer(&name, size)?;
        let (start, len) =
            pack::decode_trailer(size, &trailer).map_err(|e| RepoError::corrupt(&name, e))?;
        let sealed = self.store.read_range(&name, start, u64::from(len))?;
        self.decode_pack_header(id, &sealed, start)
    }

    /// The last [`TRAILER_BYTES`] of a stored pack of `size` bytes.
    fn read_pack_trailer(&self, name: &str, size: u64) -> Result<Vec<u8>, RepoError> {
        if size < TRAILER_BYTES as u64 {
            return Err(RepoError::corrupt(name, "shorter than a pack trailer"));
        }
        Ok(self
            .store
            .read_range(name, size - TRAILER_BYTES as u64, TRAILER_BYTES as u64)?)
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

/// Bytes of a pack read at once by [`Repository::verify_stored_pack`].
const VERIFY_PIECE_BYTES: u64 = 1 << 20;

/// A pack's body read in order in pieces and hashed as it goes; `buf` holds the bytes from
/// `buf_start` to `read_to`.
struct BodyReader<'a> {
    store: &'a dyn ObjectStore,
    name: &'a str,
    /// Bytes of the body (the blobs, before the header).
    len: u64,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    buf_start: u64,
    read_to: u64,
}

impl BodyReader<'_> {
    fn read_piece(&mut self) -> Result<(), RepoError> {
        let len = VERIFY_PIECE_BYTES.min(self.len - self.read_to);
        let piece = self.store.read_range(self.name, self.read_to, len)?;
        self.hasher.update(&piece);
        if self.buf.is_empty() {
            self.buf = piece;
        } else {
            self.buf.reserve_exact(piece.len());
            self.buf.extend_from_slice(&piece);
        }
        self.read_to += len;
        Ok(())
    }

    /// The bytes `start..end` of the body (cut short at its end), reading on as needed;
    /// `start` is not before `buf_start`.
    fn blob(&mut self, start: u64, end: u64) -> Result<&mut [u8], RepoError> {
        if self.read_to < end.min(self.len) {
            // Drop what lies before this blob (once per piece read, not per blob).
            let drop = ((start - self.buf_start) as usize).min(self.buf.len());
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
            while self.read_to < end.min(self.len) {
                self.read_piece()?;
            }
        }
        let from = (start - self.buf_start) as usize;
        let to = ((end - self.buf_start) as usize).min(self.buf.len());
        Ok(self.buf.get_mut(from.min(to)..to).unwrap_or_default())
    }

    /// Read and hash the rest of the body; the hasher, for the header and trailer.
    fn finish(mut self) -> Result<blake3::Hasher, RepoError> {
        self.buf.clear();
        self.buf.shrink_to_fit();
        while self.read_to < self.len {
            self.read_piece()?;
            self.buf.clear();
        }
        Ok(self.hasher)
    }
}

impl Repository {
    /// Verify a stored pack of `size` bytes like [`Repository::verify_pack`], reading it in
    /// pieces of a few MiB instead of whole: memory stays at a piece and one blob, whatever
    /// the pack size.
    pub fn verify_stored_pack(&self, id: &PackId, size: u64) -> Result<VerifiedPack, RepoError> {
        let name = path::pack(id);
        let trailer = self.read_pack_trailer(&name, size)?;
        let trailer_result = pack::decode_trailer(size, &trailer);
        let (blobs_len, header_sealed) = match &trailer_result {
            Ok((start, len)) => (
                *start,
                self.store.read_range(&name, *start, u64::from(*len))?,
            ),
            // Hash everything before the trailer as body: the name check decides the message.
            Err(_) => (size - TRAILER_BYTES as u64, Vec::new()),
        };
        let header = trailer_result
            .map_err(|e| RepoError::corrupt(&name, e))
            .and_then(|_| self.decode_pack_header(id, &header_sealed, blobs_len));
        let mut entries_by_offset = header.as_ref().map(|e| e.clone()).unwrap_or_default();
        entries_by_offset.sort_by_key(|e| e.offset);

        let mut body = BodyReader {
            store: self.store.as_ref(),
            name: &name,
            len: blobs_len,
            hasher: blake3::Hasher::new(),
            buf: Vec::new(),
            buf_start: 0,
            read_to: 0,
        };
        let mut bad = Vec::new();
        for e in &entries_by_offset {
            let (start, end) = (
                u64::from(e.offset),
                u64::from(e.offset) + u64::from(e.packed_len),
            );
            let loc = super::BlobLocation {
                pack: *id,
                entry: *e,
            };
            let verified = if start < body.buf_start {
                // Overlapping entries (a hostile header): read that blob on its own.
                let mut sealed = self.store.read_range(&name, start, end - start)?;
                self.verify_blob_in_place(&loc, &mut sealed)
            } else {
                // Decrypted where it lies: the hash has seen these bytes, and entries of a
                // valid header never overlap.
                self.verify_blob_in_place(&loc, body.blob(start, end)?)
            };
            if let Err(err) = verified {
                bad.push((*e, err));
            }
        }
        let mut hasher = body.finish()?;
        hasher.update(&header_sealed);
        hasher.update(&trailer);
        if PackId(*hasher.finalize().as_bytes()) != *id {
            return Err(RepoError::corrupt(&name, "content does not match its name"));
        }
        Ok((header?, bad))
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
            b.add(&r, r.seal_blob(id, BlobKind::Data, d, &mut c).unwrap())
                .unwrap();
        }
        let p = b.finish(&r).unwrap();
        let (pid, plen) = (p.id, p.len);
        let bytes = p.bytes().unwrap().to_vec();
        assert_eq!(plen, bytes.len() as u64);
        assert_eq!(pid, PackId::of_bytes(&bytes));
        let entries = p.entries.clone();
        r.save_pack(p).unwrap();
        let p = (pid, entries);
        let size = plen;
        let header = r.load_pack_header(&p.0, size).unwrap();
        assert_eq!(header, p.1);
        for e in &header {
            let data = r
                .load_blob(&super::super::BlobLocation {
                    pack: p.0,
                    entry: *e,
                })
                .unwrap();
            assert_eq!(r.keys().blob_id(BlobKind::Data, &data), e.id);
        }
        let (entries, bad) = r.verify_pack(&p.0, &bytes).unwrap();
        assert_eq!(entries.len(), 10);
        assert!(bad.is_empty());
        let (streamed, bad) = r.verify_stored_pack(&p.0, size).unwrap();
        assert_eq!(streamed, entries);
        assert!(bad.is_empty());
        // A flipped bit inside a blob is found, and only that blob is bad.
        let mut damaged = bytes.clone();
        let victim = header[3];
        damaged[victim.offset as usize + 30] ^= 4;
        assert!(r.verify_pack(&p.0, &damaged).is_err()); // name no longer matches
        let id2 = PackId::of_bytes(&damaged);
        let (_, bad) = r.verify_pack(&id2, &damaged).unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0.id, victim.id);
        // No plaintext in the pack.
        assert!(!bytes.windows(64).any(|w| w == &datas[9][..64]));
    }

    #[test]
    fn streamed_verification_spans_pieces_and_names_the_damaged_blob() {
        let r = memory_repo();
        let mut c = Compressor::new(1).unwrap();
        let mut b = PackBuilder::new(16 << 20);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..11 {
            // Incompressible blobs of about 0.9 MiB: 10 MiB in all, over three pieces.
            let d: Vec<u8> = (0..900_000 + i * 1000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let id = r.keys().blob_id(BlobKind::Data, &d);
            b.add(&r, r.seal_blob(id, BlobKind::Data, &d, &mut c).unwrap())
                .unwrap();
        }
        let p = b.finish(&r).unwrap();
        let mut bytes = p.bytes().unwrap().to_vec();
        // The blob that straddles the first piece boundary.
        let victim = *p
            .entries
            .iter()
            .find(|e| {
                u64::from(e.offset) < VERIFY_PIECE_BYTES
                    && u64::from(e.offset + e.packed_len) > VERIFY_PIECE_BYTES
            })
            .unwrap();
        let id = p.id;
        r.save_pack(p).unwrap();
        let (entries, bad) = r.verify_stored_pack(&id, bytes.len() as u64).unwrap();
        assert_eq!(entries.len(), 11);
        assert!(bad.is_empty());
        // A wrong size is an error, not a panic.
        assert!(r.verify_stored_pack(&id, bytes.len() as u64 - 1).is_err());

        // Damage that blob; store the pack under its new hash.
        bytes[victim.offset as usize + victim.packed_len as usize - 100] ^= 1;
        let id2 = PackId::of_bytes(&bytes);
        r.store.write(&path::pack(&id2), &bytes).unwrap();
        let (_, bad) = r.verify_stored_pack(&id2, bytes.len() as u64).unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0.id, victim.id);
        // Under its old name the same bytes fail the name check.
        r.store.write(&path::pack(&id), &bytes).unwrap();
        let err = r.verify_stored_pack(&id, bytes.len() as u64).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
    }
}
