//! Padding of whole objects, format version 3: what the sizes in a bucket may show.
//!
//! ```text
//! padded object plaintext (index and snapshot objects, before sealing):
//! +---------------------------+-------------------+----------------------------------+
//! | payload_len: u32 LE       | payload           | zero bytes up to object_len(..)  |
//! +---------------------------+-------------------+----------------------------------+
//! ```
//! Packs are padded inside their sealed header (`pack::encode_header_padded`) so that the
//! whole pack is [`pack_len`] bytes. Readers never check the padding bytes (the AEAD
//! authenticates them); the rules bind writers only.

use super::FormatError;

/// The smallest pack a version 3 writer stores: every file up to about this size, stored
/// alone in an incremental backup, gives a pack of the same size. It is the default minimum
/// chunk, so every file that is a single chunk of the default chunker hides its size; the
/// cost is at most twice this per backup that stores anything (a data and a tree pack).
pub const MIN_PACK_BYTES: u64 = 256 << 10;
/// Packs of at least this size are padded to a multiple of [`FULL_PACK_GRANULE`] only.
pub const FULL_PACK_BYTES: u64 = 16 << 20;
/// Granule of packs of at least [`FULL_PACK_BYTES`].
pub const FULL_PACK_GRANULE: u64 = 64 << 10;
/// The smallest padded index or snapshot plaintext.
pub const MIN_OBJECT_BYTES: usize = 4 << 10;

fn granule_of(n: u64, mantissa_bits: u32) -> u64 {
    let top_bit = 63 - n.max(1).leading_zeros();
    1u64 << top_bit.saturating_sub(mantissa_bits)
}

/// The stored size of a version 3 pack whose unpadded size is `n` bytes:
/// at least 256 KiB; below 16 MiB a multiple of 1/16 of `n`'s power-of-two range (at most
/// 6.25 % more); from 16 MiB a multiple of 64 KiB (at most 0.4 % more).
pub fn pack_len(n: u64) -> u64 {
    if n <= MIN_PACK_BYTES {
        return MIN_PACK_BYTES;
    }
    let g = if n < FULL_PACK_BYTES {
        granule_of(n, 4)
    } else {
        FULL_PACK_GRANULE
    };
    n.div_ceil(g) * g
}

/// The padded plaintext length of a version 3 index or snapshot object of `n` bytes
/// (`payload_len` included): at least 4 KiB, then a multiple of 1/16 of the power-of-two
/// range (at most 6.25 % more).
pub fn object_len(n: usize) -> usize {
    if n <= MIN_OBJECT_BYTES {
        return MIN_OBJECT_BYTES;
    }
    let g = granule_of(n as u64, 4) as usize;
    n.div_ceil(g) * g
}

/// Wrap `payload` with its length and zero padding to [`object_len`].
pub fn pad_object(payload: &[u8]) -> Vec<u8> {
    let n = object_len(payload.len() + 4);
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(n, 0);
    out
}

/// The payload of a padded object.
pub fn unpad_object<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8], FormatError> {
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(FormatError::Truncated {
            what,
            needed: 4,
            available: bytes.len(),
        });
    };
    let len = u32::from_le_bytes(*len) as usize;
    rest.get(..len).ok_or(FormatError::Truncated {
        what,
        needed: len + 4,
        available: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pack_buckets() {
        // (unpadded, stored): the table of docs/format.md.
        for (n, p) in [
            (1, 256 << 10),
            (100_000, 256 << 10),
            (256 << 10, 256 << 10),
            ((256 << 10) + 1, 272 << 10),
            ((512 << 10) + 1, 544 << 10),
            (1 << 20, 1 << 20),
            ((1 << 20) + 1, (1 << 20) + (64 << 10)),
            ((16 << 20) - 1, 16 << 20),
            ((16 << 20) + 1, (16 << 20) + (64 << 10)),
        ] {
            assert_eq!(pack_len(n), p, "pack of {n} bytes");
        }
    }

    #[test]
    fn object_buckets() {
        for (n, p) in [(0, 4096), (4096, 4096), (4097, 4352), (70_000, 73_728)] {
            assert_eq!(object_len(n), p, "object of {n} bytes");
        }
    }

    proptest! {
        #[test]
        fn pack_padding_bounds(n in 1u64..(256 << 20)) {
            let p = pack_len(n);
            prop_assert!(p >= n);
            if n > MIN_PACK_BYTES && n < FULL_PACK_BYTES {
                prop_assert!((p - n) * 16 <= n);
            }
            if n >= FULL_PACK_BYTES {
                prop_assert!(p - n < FULL_PACK_GRANULE);
            }
        }

        #[test]
        fn objects_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let padded = pad_object(&payload);
            prop_assert_eq!(padded.len(), object_len(payload.len() + 4));
            prop_assert!((padded.len() - payload.len() - 4) * 16 <= padded.len().max(4096 * 16));
            prop_assert_eq!(unpad_object(&padded, "t").unwrap(), &payload[..]);
        }

        #[test]
        fn unpad_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpad_object(&bytes, "t");
        }
    }
}
