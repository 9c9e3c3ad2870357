//! The bodies of coffer's fuzz targets, one function per decoder.
//!
//! Each `fuzz/fuzz_targets/<name>.rs` calls the function of the same name, and
//! `tests/fuzz_corpus.rs` (which includes this file as a module) replays every file of
//! `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` through it on stable Rust, so a crash
//! once found stays fixed. A body must never panic on any input except to report a broken
//! invariant of the decoder under test.
//!
//! Input layouts, where a target needs more than the decoder's own bytes:
//! - `pack_header`: `blobs_len: u64 LE | header bytes`
//! - `pack_trailer`: `pack_len: u64 LE | trailer bytes`
//! - `decompress`: `method: u8 (low bit: 0 none, 1 zstd) | raw_len: u32 LE | payload`, with
//!   `raw_len` reduced modulo `MAX_RAW_LEN + 1`
//! - `aead_open`: `aad_len: u8 | aad (aad_len % 64 bytes) | sealed`, opened with [`AEAD_KEY`]
//! - `padded_object`: the plaintext of a format 3 index or snapshot object

use coffer::compress;
use coffer::crypto::{self, SEAL_OVERHEAD};
use coffer::format::config::{Config, MAX_CONFIG_BYTES};
use coffer::format::keyfile::KeyFile;
use coffer::format::pack::{self, MAX_HEADER_BYTES, TRAILER_BYTES};
use coffer::format::snapshot::Snapshot;
use coffer::format::tree::Tree;
use coffer::format::{Compression, condemned as condemned_marker, index, padding};

/// Largest `raw_len` the `decompress` target asks for (1 MiB), so one input cannot make the
/// fuzzer allocate the 64 MiB the decoder itself allows.
pub const MAX_RAW_LEN: usize = 1 << 20;

/// The fixed key of the `aead_open` target.
pub const AEAD_KEY: [u8; 32] = [0x42; 32];

/// The body of one fuzz target.
pub type Body = fn(&[u8]);

/// Every target: its name (the directory names under `fuzz/corpus/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("pack_header", pack_header),
    ("pack_trailer", pack_trailer),
    ("index", index),
    ("tree", tree),
    ("snapshot", snapshot),
    ("keyfile", keyfile),
    ("config", config),
    ("decompress", decompress),
    ("aead_open", aead_open),
    ("padded_object", padded_object),
    ("condemned", condemned),
];

/// Split a little-endian `u64` prefix off `data`.
fn split_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// `pack::decode_header`; an accepted header re-encodes to the same bytes and its entries tile
/// `0..blobs_len` in order.
pub fn pack_header(data: &[u8]) {
    let Some((blobs_len, bytes)) = split_u64(data) else {
        return;
    };
    let Ok(entries) = pack::decode_header(bytes, blobs_len) else {
        return;
    };
    // Version 1 is canonical byte for byte; version 2 (format 3) is the same entries after
    // its own version byte, followed by padding that no reader looks at.
    let canonical = pack::encode_header(&entries);
    if bytes[0] == pack::HEADER_VERSION {
        assert_eq!(canonical, bytes, "header is not canonical");
    } else {
        assert_eq!(bytes[0], pack::HEADER_VERSION_PADDED);
        assert_eq!(
            canonical[1..],
            bytes[1..canonical.len()],
            "padded header entries are not canonical"
        );
    }
    let mut offset = 0u64;
    for e in &entries {
        assert_eq!(
            u64::from(e.offset),
            offset,
            "entry offsets do not tile the pack"
        );
        assert!(e.data_len as usize + SEAL_OVERHEAD <= e.packed_len as usize);
        offset += u64::from(e.packed_len);
    }
    assert_eq!(offset, blobs_len, "entries do not cover the blobs");
}

/// `pack::decode_trailer`; an accepted trailer places the header inside the pack and
/// re-encodes to the same bytes.
pub fn pack_trailer(data: &[u8]) {
    let Some((pack_len, trailer)) = split_u64(data) else {
        return;
    };
    let Ok((header_start, header_len)) = pack::decode_trailer(pack_len, trailer) else {
        return;
    };
    assert!(header_len <= MAX_HEADER_BYTES);
    assert_eq!(
        header_start + u64::from(header_len) + TRAILER_BYTES as u64,
        pack_len,
        "header does not end at the trailer"
    );
    assert_eq!(pack::encode_trailer(header_len), trailer);
}

/// `index::decode`; an accepted index re-encodes to the same bytes.
pub fn index(data: &[u8]) {
    let Ok(packs) = index::decode(data) else {
        return;
    };
    assert_eq!(index::encode(&packs), data, "index is not canonical");
}

/// `condemned::decode` (prune's markers); an accepted marker re-encodes to the same bytes.
pub fn condemned(data: &[u8]) {
    let Ok(m) = condemned_marker::decode(data) else {
        return;
    };
    assert_eq!(
        condemned_marker::encode(&m),
        data,
        "condemned marker is not canonical"
    );
}

/// `Tree::decode`; an accepted tree survives an encode/decode round trip and its encoding is
/// stable.
pub fn tree(data: &[u8]) {
    let Ok(t) = Tree::decode(data) else {
        return;
    };
    let bytes = t.encode().expect("an accepted tree encodes");
    let again = Tree::decode(&bytes).expect("re-encoded tree does not decode");
    assert_eq!(again, t, "tree changed in a round trip");
    assert_eq!(
        again.encode().expect("an accepted tree encodes"),
        bytes,
        "tree encoding is not deterministic"
    );
}

/// `Snapshot::decode`; an accepted snapshot survives an encode/decode round trip.
pub fn snapshot(data: &[u8]) {
    let Ok(s) = Snapshot::decode(data) else {
        return;
    };
    let bytes = s.encode().expect("an accepted snapshot encodes");
    let again = Snapshot::decode(&bytes).expect("re-encoded snapshot does not decode");
    assert_eq!(again, s, "snapshot changed in a round trip");
    assert_eq!(
        again.encode().expect("an accepted snapshot encodes"),
        bytes,
        "snapshot encoding is not deterministic"
    );
}

/// `KeyFile::decode`; an accepted key file re-encodes to the same bytes (they are the
/// associated data of the sealed master key, so they must be canonical) and round-trips.
pub fn keyfile(data: &[u8]) {
    let Ok(k) = KeyFile::decode(data) else {
        return;
    };
    let bytes = k.encode();
    assert_eq!(bytes, data, "key file is not canonical");
    assert_eq!(KeyFile::decode(&bytes).expect("re-encoded key file"), k);
    assert!(k.aad().ends_with(&k.header_bytes()));
}

/// `Config::decode`; an accepted config survives an encode/decode round trip (when the
/// pretty-printed form still fits the size limit).
pub fn config(data: &[u8]) {
    let Ok(c) = Config::decode(data) else {
        return;
    };
    c.mac_input().expect("an accepted config encodes");
    let bytes = c.encode().expect("an accepted config encodes");
    if bytes.len() <= MAX_CONFIG_BYTES {
        let again = Config::decode(&bytes).expect("re-encoded config does not decode");
        assert_eq!(again, c, "config changed in a round trip");
    }
}

/// `compress::decompress`; success yields exactly `raw_len` bytes (the payload itself when
/// uncompressed).
pub fn decompress(data: &[u8]) {
    let Some((&method, rest)) = data.split_first() else {
        return;
    };
    let Some((len, payload)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let compression = Compression::from_byte(method & 1).expect("0 and 1 are methods");
    let raw_len = u32::from_le_bytes(*len) as usize % (MAX_RAW_LEN + 1);
    let Ok(out) = compress::decompress(payload, compression, raw_len) else {
        return;
    };
    assert_eq!(out.len(), raw_len, "decompressed to the wrong length");
    if compression == Compression::None {
        assert_eq!(out, payload);
    }
}

/// `crypto::open` under [`AEAD_KEY`]: input shorter than the overhead is `Truncated`; an input
/// that opens (only a seed can) yields `len - SEAL_OVERHEAD` bytes, and fails to open once any
/// of its tag bits is flipped.
pub fn aead_open(data: &[u8]) {
    let Some((&aad_len, rest)) = data.split_first() else {
        return;
    };
    let aad_len = usize::from(aad_len % 64).min(rest.len());
    let (aad, sealed) = rest.split_at(aad_len);
    match crypto::open(&AEAD_KEY, aad, sealed) {
        Err(crypto::CryptoError::Truncated(n)) => {
            assert_eq!(n, sealed.len());
            assert!(n < SEAL_OVERHEAD);
        }
        Err(_) => assert!(sealed.len() >= SEAL_OVERHEAD),
        Ok(plain) => {
            assert_eq!(plain.len() + SEAL_OVERHEAD, sealed.len());
            let mut forged = sealed.to_vec();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(
                crypto::open(&AEAD_KEY, aad, &forged).is_err(),
                "forged tag opened"
            );
        }
    }
}

/// `padding::unpad_object`; an accepted payload lies inside the input, right after its length,
/// and padding it again gives a padded object of the same payload.
pub fn padded_object(data: &[u8]) {
    let Ok(payload) = padding::unpad_object(data, "object") else {
        return;
    };
    assert!(payload.len() + 4 <= data.len(), "payload past the input");
    assert_eq!(payload, &data[4..4 + payload.len()]);
    let again = padding::pad_object(payload);
    assert_eq!(padding::unpad_object(&again, "object").ok(), Some(payload));
}
