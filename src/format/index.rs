//! Index files: which blobs live in which pack, where. Sealed with aad "coffer index".
//!
//! ```text
//! | version: u8 = 1 | pack_count: u32 LE | pack_count x pack |
//! pack:   | pack id: [u8; 32] | entry_count: u32 LE | entry_count x entry |
//! entry:  | blob id: [u8; 32] | kind: u8 | compression: u8 | offset: u32 LE |
//!         | packed_len: u32 LE | data_len: u32 LE | raw_len: u32 LE |     (50 bytes)
//! ```

use super::cursor::Cursor;
use super::{BlobEntry, BlobKind, Compression, FormatError};
use crate::id::{BlobId, PackId};

/// Index format version written.
pub const INDEX_VERSION: u8 = 1;
/// Associated data of a sealed index file.
pub const INDEX_AAD: &[u8] = b"coffer index";
/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 50;

/// The blobs of one pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackIndex {
    /// The pack.
    pub pack: PackId,
    /// Its blobs, in pack order.
    pub blobs: Vec<BlobEntry>,
}

/// Encode an index file's plaintext.
pub fn encode(packs: &[PackIndex]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| 36 + p.blobs.len() * ENTRY_BYTES).sum();
    let mut out = Vec::with_capacity(5 + n);
    out.push(INDEX_VERSION);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.pack.0);
        out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
        for e in &p.blobs {
            out.extend_from_slice(&e.id.0);
            out.push(e.kind.to_byte());
            out.push(e.compression.to_byte());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.packed_len.to_le_bytes());
            out.extend_from_slice(&e.data_len.to_le_bytes());
            out.extend_from_slice(&e.raw_len.to_le_bytes());
        }
    }
    out
}

/// Decode an index file's plaintext.
pub fn decode(bytes: &[u8]) -> Result<Vec<PackIndex>, FormatError> {
    const WHAT: &str = "index";
    let mut c = Cursor::new(bytes, WHAT);
    let version = c.u8()?;
    if version != INDEX_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: version.into(),
            supported: INDEX_VERSION.into(),
        });
    }
    let pack_count = c.u32()? as usize;
    // Each pack takes at least 36 bytes: bound the allocation by the input.
    if pack_count > c.remaining() / 36 {
        return Err(FormatError::invalid(
            WHAT,
            format!("{pack_count} packs do not fit"),
        ));
    }
    let mut packs = Vec::with_capacity(pack_count);
    for _ in 0..pack_count {
        let pack = PackId(c.array()?);
        let count = c.u32()? as usize;
        if count > c.remaining() / ENTRY_BYTES {
            return Err(FormatError::invalid(
                WHAT,
                format!("{count} entries do not fit"),
            ));
        }
        let mut blobs = Vec::with_capacity(count);
        for _ in 0..count {
            let e = BlobEntry {
                id: BlobId(c.array()?),
                kind: BlobKind::from_byte(c.u8()?)?,
                compression: Compression::from_byte(c.u8()?)?,
                offset: c.u32()?,
                packed_len: c.u32()?,
                data_len: c.u32()?,
                raw_len: c.u32()?,
            };
            super::pack::validate_entry(&e, WHAT)?;
            blobs.push(e);
        }
        packs.push(PackIndex { pack, blobs });
    }
    c.finish()?;
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(shape in proptest::collection::vec(0usize..20, 0..10), seed in any::<u8>()) {
            let packs: Vec<PackIndex> = shape.iter().enumerate().map(|(p, n)| PackIndex {
                pack: PackId([p as u8 ^ seed; 32]),
                blobs: (0..*n).map(|i| BlobEntry {
                    id: BlobId([i as u8; 32]),
                    kind: BlobKind::Data,
                    compression: Compression::None,
                    offset: i as u32 * 1000,
                    packed_len: 1000,
                    data_len: 900,
                    raw_len: 900,
                }).collect(),
            }).collect();
            prop_assert_eq!(decode(&encode(&packs)).unwrap(), packs);
        }
    }

    #[test]
    fn rejects_oversized_counts_before_allocating() {
        let mut b = vec![INDEX_VERSION];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b).is_err());
        let mut b = vec![INDEX_VERSION];
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 32]);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b).is_err());
        assert!(matches!(
            decode(&[2]),
            Err(FormatError::UnsupportedVersion { .. })
        ));
    }
}
