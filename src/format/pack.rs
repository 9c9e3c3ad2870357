//! Pack files: sealed blobs followed by a sealed header that lists them, so a pack describes
//! itself and `repair index` can rebuild every index from the packs alone.
//!
//! ```text
//! pack:    | blob 0 | blob 1 | ... | blob n-1 | sealed header (h bytes) | h: u32 LE | "CFP1" |
//! blob i:  sealed(key, aad = "coffer blob" || kind, payload || zero padding)
//! header plaintext (before sealing, aad = "coffer pack header"):
//!          | version: u8 = 1 | count: u32 LE | count x entry |                  (format 1, 2)
//!          | version: u8 = 2 | count: u32 LE | count x entry | zero padding |   (format 3)
//! entry:   | id: [u8; 32] | kind: u8 | compression: u8 | packed_len: u32 LE |
//!          | data_len: u32 LE | raw_len: u32 LE |                  (46 bytes)
//! ```
//! Blob offsets are implied: blob i starts where blob i-1 ended, the first at 0.

use super::cursor::Cursor;
use super::{BlobEntry, BlobKind, Compression, FormatError};
use crate::id::BlobId;

/// Magic at the very end of every pack.
pub const PACK_MAGIC: &[u8; 4] = b"CFP1";
/// Bytes of the trailer: header length and magic.
pub const TRAILER_BYTES: usize = 8;
/// Header version written in format versions 1 and 2: the entries fill the header exactly.
pub const HEADER_VERSION: u8 = 1;
/// Header version written in format version 3: the entries are followed by zero padding that
/// brings the whole pack to `padding::pack_len`.
pub const HEADER_VERSION_PADDED: u8 = 2;
/// Bytes a sealed header adds to its plaintext (nonce and tag).
pub const SEAL_OVERHEAD: usize = 40;
/// Bytes of one header entry.
pub const ENTRY_BYTES: usize = 46;
/// Associated data of a sealed pack header.
pub const HEADER_AAD: &[u8] = b"coffer pack header";
/// Largest header we accept (about 1.4 million blobs).
pub const MAX_HEADER_BYTES: u32 = 64 << 20;

/// Associated data of a sealed blob of this kind.
pub fn blob_aad(kind: BlobKind) -> [u8; 12] {
    let mut aad = *b"coffer blob\0";
    aad[11] = kind.to_byte();
    aad
}

/// Length a payload is padded to before sealing, by the rule of the repository's format
/// version (docs/format.md, "Padding rule"). Readers never check padding, so the rule binds
/// writers only: a writer pads by the rule of the repository it writes into.
///
/// - version 1: a multiple of 256 bytes up to 4 KiB, above that a multiple of 1/32 of the
///   payload's power-of-two range (5 bits of mantissa shown, at most about 3 % overhead);
/// - version 2 and later: a multiple of 32 bytes, or of 1/256 of the payload's power-of-two
///   range when that is larger (8 bits of mantissa shown, at most 1/256 overhead above 8 KiB).
pub fn padded_len(format_version: u32, data_len: usize) -> usize {
    let top_bit = (usize::BITS - 1).saturating_sub(data_len.leading_zeros()) as usize;
    let granule = if format_version <= 1 {
        if data_len <= 4096 {
            256
        } else {
            1usize << (top_bit - 5)
        }
    } else {
        (1usize << top_bit.saturating_sub(8)).max(32)
    };
    data_len.div_ceil(granule).max(1) * granule
}

/// Encode the plaintext header listing `entries` in pack order (header version 1).
pub fn encode_header(entries: &[BlobEntry]) -> Vec<u8> {
    encode_with(HEADER_VERSION, entries, 0)
}

/// Encode a header version 2 for a pack whose blobs take `blobs_len` bytes, padded so that
/// the finished pack (blobs, sealed header, trailer) is `padding::pack_len` bytes.
pub fn encode_header_padded(entries: &[BlobEntry], blobs_len: u64) -> Vec<u8> {
    let plain = 5 + entries.len() * ENTRY_BYTES;
    let unpadded = blobs_len + (plain + SEAL_OVERHEAD + TRAILER_BYTES) as u64;
    let pad = super::padding::pack_len(unpadded) - unpadded;
    encode_with(HEADER_VERSION_PADDED, entries, pad as usize)
}

fn encode_with(version: u8, entries: &[BlobEntry], pad: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + entries.len() * ENTRY_BYTES + pad);
    out.push(version);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.push(e.kind.to_byte());
        out.push(e.compression.to_byte());
        out.extend_from_slice(&e.packed_len.to_le_bytes());
        out.extend_from_slice(&e.data_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
    }
    out.resize(out.len() + pad, 0);
    out
}

/// Decode a plaintext header. `blobs_len` is the number of bytes before the sealed header;
/// every entry must lie inside it and together they must cover it exactly.
pub fn decode_header(bytes: &[u8], blobs_len: u64) -> Result<Vec<BlobEntry>, FormatError> {
    const WHAT: &str = "pack header";
    let mut c = Cursor::new(bytes, WHAT);
    let version = c.u8()?;
    if version != HEADER_VERSION && version != HEADER_VERSION_PADDED {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: version.into(),
            supported: HEADER_VERSION_PADDED.into(),
        });
    }
    let count = c.u32()? as usize;
    let fits = match count.checked_mul(ENTRY_BYTES) {
        Some(n) if version == HEADER_VERSION => n == c.remaining(),
        Some(n) => n <= c.remaining(),
        None => false,
    };
    if !fits {
        return Err(FormatError::invalid(
            WHAT,
            format!("{count} entries do not fit"),
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset: u64 = 0;
    for _ in 0..count {
        let id = BlobId(c.array()?);
        let kind = BlobKind::from_byte(c.u8()?)?;
        let compression = Compression::from_byte(c.u8()?)?;
        let packed_len = c.u32()?;
        let data_len = c.u32()?;
        let raw_len = c.u32()?;
        let entry = BlobEntry {
            id,
            kind,
            compression,
            offset: u32::try_from(offset)
                .map_err(|_| FormatError::invalid(WHAT, "offset beyond 4 GiB"))?,
            packed_len,
            data_len,
            raw_len,
        };
        validate_entry(&entry, WHAT)?;
        offset += u64::from(packed_len);
        if offset > blobs_len {
            return Err(FormatError::invalid(WHAT, "entries extend past the blobs"));
        }
        entries.push(entry);
    }
    if offset != blobs_len {
        return Err(FormatError::invalid(WHAT, "entries do not cover the pack"));
    }
    if version == HEADER_VERSION {
        c.finish()?;
    }
    Ok(entries)
}

/// Check the lengths of one entry for consistency (shared with the index codec).
pub(crate) fn validate_entry(e: &BlobEntry, what: &'static str) -> Result<(), FormatError> {
    let overhead = crate::crypto::SEAL_OVERHEAD as u64;
    if u64::from(e.packed_len) < overhead || u64::from(e.data_len) + overhead > e.packed_len.into()
    {
        return Err(FormatError::invalid(what, "blob lengths are inconsistent"));
    }
    if e.raw_len > super::MAX_BLOB_BYTES || e.packed_len > super::MAX_BLOB_BYTES + (8 << 20) {
        return Err(FormatError::invalid(what, "blob larger than the maximum"));
    }
    if e.compression == Compression::None && e.data_len != e.raw_len {
        return Err(FormatError::invalid(
            what,
            "uncompressed blob with two lengths",
        ));
    }
    Ok(())
}

/// Decode a pack's last [`TRAILER_BYTES`]: returns `(header_start, header_len)`; the blobs
/// occupy `0..header_start`.
pub fn decode_trailer(pack_len: u64, trailer: &[u8]) -> Result<(u64, u32), FormatError> {
    const WHAT: &str = "pack trailer";
    if pack_len < TRAILER_BYTES as u64 || trailer.len() != TRAILER_BYTES {
        return Err(FormatError::Truncated {
            what: WHAT,
            needed: TRAILER_BYTES,
            available: trailer.len(),
        });
    }
    if &trailer[4..] != PACK_MAGIC {
        return Err(FormatError::BadMagic { what: "pack" });
    }
    let header_len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if header_len > MAX_HEADER_BYTES || u64::from(header_len) + TRAILER_BYTES as u64 > pack_len {
        return Err(FormatError::invalid(WHAT, "header length out of range"));
    }
    let header_start = pack_len - TRAILER_BYTES as u64 - u64::from(header_len);
    Ok((header_start, header_len))
}

/// Build the trailer for a sealed header of `header_len` bytes.
pub fn encode_trailer(header_len: u32) -> [u8; TRAILER_BYTES] {
    let mut t = [0u8; TRAILER_BYTES];
    t[..4].copy_from_slice(&header_len.to_le_bytes());
    t[4..].copy_from_slice(PACK_MAGIC);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u8, packed_len: u32) -> BlobEntry {
        BlobEntry {
            id: BlobId([i; 32]),
            kind: if i.is_multiple_of(2) {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            compression: Compression::Zstd,
            offset: 0,
            packed_len,
            data_len: packed_len - 50,
            raw_len: packed_len * 2,
        }
    }

    proptest! {
        #[test]
        fn header_round_trips(lens in proptest::collection::vec(60u32..100_000, 0..40)) {
            let mut entries: Vec<BlobEntry> =
                lens.iter().enumerate().map(|(i, l)| entry(i as u8, *l)).collect();
            let mut off = 0;
            for e in &mut entries { e.offset = off; off += e.packed_len; }
            let bytes = encode_header(&entries);
            prop_assert_eq!(decode_header(&bytes, off as u64).unwrap(), entries);
        }

        #[test]
        fn v1_padding_hides_exact_length_with_small_overhead(n in 0usize..(32 << 20)) {
            let p = padded_len(1, n);
            prop_assert!(p >= n);
            prop_assert!(p >= 256);
            prop_assert!(n <= 4096 || (p - n) * 32 <= n, "overhead too large: {} -> {}", n, p);
        }

        #[test]
        fn v2_padding_overhead_at_most_one_in_256(n in 0usize..(32 << 20)) {
            let p = padded_len(2, n);
            prop_assert!(p >= n && p >= 32 && p.is_multiple_of(32));
            prop_assert!(p - n <= 32 || (p - n) * 256 <= n, "overhead too large: {} -> {}", n, p);
            // Same granule for lengths of the same magnitude: lengths hide below it.
            prop_assert!(padded_len(2, p) == p);
        }
    }

    #[test]
    fn padding_rules_by_version() {
        // (version, payload, padded): the tables of docs/format.md.
        let table = [
            (1, 0, 256),
            (1, 257, 512),
            (1, 4096, 4096),
            (1, 4097, 4224),
            (1, 8191, 8192),
            (1, 8193, 8448),
            (1, 65537, 67584),
            (1, 1048577, 1081344),
            (1, 4194305, 4325376),
            (2, 0, 32),
            (2, 1, 32),
            (2, 33, 64),
            (2, 4097, 4128),
            (2, 8191, 8192),
            (2, 8193, 8224),
            (2, 16385, 16448),
            (2, 65537, 65792),
            (2, 1048577, 1052672),
            (2, 4194305, 4210688),
        ];
        for (v, n, p) in table {
            assert_eq!(padded_len(v, n), p, "version {v}, payload {n}");
        }
    }

    #[test]
    fn header_rejects_wrong_cover_count_and_version() {
        let e = entry(0, 100);
        let bytes = encode_header(&[e]);
        assert!(decode_header(&bytes, 99).is_err());
        assert!(decode_header(&bytes, 101).is_err());
        assert!(decode_header(&bytes[..bytes.len() - 1], 100).is_err());
        let mut v = bytes.clone();
        v[0] = 9;
        assert!(matches!(
            decode_header(&v, 100),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header(&huge, 100).is_err());
    }

    #[test]
    fn padded_header_fills_the_pack_to_its_bucket() {
        let entries: Vec<BlobEntry> = (0..3u8).map(|i| entry(i, 1000)).collect();
        let blobs_len = 3000;
        let plain = encode_header_padded(&entries, blobs_len);
        assert_eq!(plain[0], HEADER_VERSION_PADDED);
        let total = blobs_len + (plain.len() + SEAL_OVERHEAD + TRAILER_BYTES) as u64;
        assert_eq!(total, crate::format::padding::pack_len(total));
        assert_eq!(total, crate::format::padding::MIN_PACK_BYTES);
        assert_eq!(decode_header(&plain, blobs_len).unwrap().len(), 3);
        // Version 1 must fill its header exactly; padding is version 2 only.
        let mut v1 = plain.clone();
        v1[0] = HEADER_VERSION;
        assert!(decode_header(&v1, blobs_len).is_err());
        // Padding does not let entries run past the blobs or leave a gap.
        assert!(decode_header(&plain, blobs_len + 1).is_err());
        assert!(decode_header(&plain, blobs_len - 1).is_err());
    }

    #[test]
    fn trailer_round_trip_and_bounds() {
        let t = encode_trailer(77);
        assert_eq!(decode_trailer(1000, &t).unwrap(), (915, 77));
        assert!(decode_trailer(50, &t).is_err());
        let mut bad = t;
        bad[7] = b'X';
        assert!(decode_trailer(1000, &bad).is_err());
    }
}
