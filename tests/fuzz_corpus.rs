//! Replays the fuzz corpus on stable Rust: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same body the libFuzzer target runs
//! (`fuzz/src/lib.rs`, included here as a module), so a crash found by fuzzing stays fixed
//! without nightly.
//!
//! The seed inputs are built here from the encoders. `COFFER_WRITE_CORPUS=1 cargo test --test
//! fuzz_corpus` writes them into `fuzz/corpus/` (files named `seed-*`, overwritten in place);
//! the files libFuzzer adds there are left alone.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use coffer::crypto::{KdfParams, SEAL_OVERHEAD, seal};
use coffer::format::condemned::{self, Condemned};
use coffer::format::config::{ChunkerParams, Config, FORMAT_VERSION};
use coffer::format::index::{self, PackIndex};
use coffer::format::keyfile::{KeyFile, SEALED_KEY_BYTES};
use coffer::format::pack::{self, MAX_HEADER_BYTES};
use coffer::format::snapshot::{Snapshot, SnapshotSummary, SourceInfo};
use coffer::format::tree::{Node, NodeKind, Tree, Xattr};
use coffer::format::{BlobEntry, BlobKind, Compression, padding};
use coffer::id::{BlobId, PackId, SnapshotId};
use serde_bytes::ByteBuf;

#[path = "../fuzz/src/lib.rs"]
mod bodies;

/// Largest corpus file (libFuzzer runs with `-max_len=65536`).
const MAX_FILE_BYTES: u64 = 64 << 10;
/// Largest corpus, all targets together.
const MAX_CORPUS_BYTES: u64 = 2 << 20;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// One seed input: its target, its file name, and whether the decoder must accept it.
struct Seed {
    target: &'static str,
    name: String,
    valid: bool,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Seeds(Vec<Seed>);

impl Seeds {
    fn valid(&mut self, target: &'static str, name: &str, bytes: Vec<u8>) {
        self.push(target, name, true, bytes);
    }

    fn bad(&mut self, target: &'static str, name: &str, bytes: Vec<u8>) {
        self.push(target, name, false, bytes);
    }

    fn push(&mut self, target: &'static str, name: &str, valid: bool, bytes: Vec<u8>) {
        let kind = if valid { "valid" } else { "bad" };
        self.0.push(Seed {
            target,
            name: format!("seed-{kind}-{name}"),
            valid,
            bytes,
        });
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn truncated(mut v: Vec<u8>) -> Vec<u8> {
    v.pop();
    v
}

fn flipped(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    let at = at.min(v.len() - 1);
    v[at] ^= 0x55;
    v
}

fn entry(i: u8, kind: BlobKind, compression: Compression, packed_len: u32) -> BlobEntry {
    let data_len = packed_len - SEAL_OVERHEAD as u32 - u32::from(i);
    BlobEntry {
        id: BlobId([i.wrapping_mul(37); 32]),
        kind,
        compression,
        offset: 0,
        packed_len,
        data_len,
        raw_len: if compression == Compression::None {
            data_len
        } else {
            data_len * 3
        },
    }
}

/// Entries laid out back to back from offset 0, and the bytes they cover.
fn laid_out(mut entries: Vec<BlobEntry>) -> (Vec<BlobEntry>, u64) {
    let mut offset = 0u32;
    for e in &mut entries {
        e.offset = offset;
        offset += e.packed_len;
    }
    (entries, offset.into())
}

fn pack_seeds(s: &mut Seeds) {
    let (one, one_len) = laid_out(vec![entry(1, BlobKind::Data, Compression::Zstd, 300)]);
    let (three, three_len) = laid_out(vec![
        entry(2, BlobKind::Data, Compression::None, 296),
        entry(3, BlobKind::Tree, Compression::Zstd, 552),
        entry(4, BlobKind::Data, Compression::Zstd, 4136),
    ]);
    let header =
        |entries: &[BlobEntry], len: u64| cat(&[&len.to_le_bytes(), &pack::encode_header(entries)]);
    s.valid("pack_header", "empty", header(&[], 0));
    s.valid("pack_header", "one", header(&one, one_len));
    s.valid("pack_header", "three", header(&three, three_len));
    s.bad(
        "pack_header",
        "truncated",
        truncated(header(&three, three_len)),
    );
    s.bad("pack_header", "short-cover", header(&three, three_len - 1));
    s.bad("pack_header", "long-cover", header(&three, three_len + 1));
    let mut huge = header(&one, one_len);
    huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
    s.bad("pack_header", "huge-count", huge);
    let mut version = header(&one, one_len);
    version[8] = 3;
    s.bad("pack_header", "version-3", version);
    let padded = |entries: &[BlobEntry], len: u64| {
        cat(&[
            &len.to_le_bytes(),
            &pack::encode_header_padded(entries, len)[..2000],
        ])
    };
    s.valid("pack_header", "padded-one", padded(&one, one_len));
    s.valid("pack_header", "padded-three", padded(&three, three_len));
    s.bad(
        "pack_header",
        "padded-short-cover",
        padded(&three, three_len - 1),
    );
    let mut kind = header(&one, one_len);
    kind[8 + 5 + 32] = 9;
    s.bad("pack_header", "unknown-kind", kind);
    let mut lens = one.clone();
    lens[0].data_len = lens[0].packed_len;
    s.bad(
        "pack_header",
        "data-longer-than-packed",
        header(&lens, one_len),
    );

    let trailer = |pack_len: u64, header_len: u32| {
        cat(&[&pack_len.to_le_bytes(), &pack::encode_trailer(header_len)])
    };
    s.valid("pack_trailer", "small", trailer(1000, 77));
    s.valid("pack_trailer", "header-only", trailer(8 + 5, 5));
    s.valid(
        "pack_trailer",
        "largest-header",
        trailer(u64::MAX, MAX_HEADER_BYTES),
    );
    s.bad("pack_trailer", "header-too-long", trailer(100, 93));
    s.bad(
        "pack_trailer",
        "header-over-max",
        trailer(u64::MAX, MAX_HEADER_BYTES + 1),
    );
    s.bad("pack_trailer", "pack-too-short", trailer(7, 0));
    s.bad("pack_trailer", "bad-magic", flipped(trailer(1000, 77), 15));
    s.bad(
        "pack_trailer",
        "short-trailer",
        truncated(trailer(1000, 77)),
    );
}

fn index_seeds(s: &mut Seeds) {
    let (blobs, _) = laid_out(vec![
        entry(5, BlobKind::Data, Compression::Zstd, 1000),
        entry(6, BlobKind::Tree, Compression::None, 296),
    ]);
    let two = index::encode(&[
        PackIndex {
            pack: PackId([0xaa; 32]),
            blobs: blobs.clone(),
        },
        PackIndex {
            pack: PackId([0xbb; 32]),
            blobs: blobs[..1].to_vec(),
        },
    ]);
    let marker = condemned::encode(&Condemned {
        time: 1_795_424_287,
        host: "build-1".into(),
        sessions: Some(vec!["0123456789abcdef0123456789abcdef".into()]),
        packs: vec![PackId([0xaa; 32]), PackId([0xbb; 32])],
    });
    s.valid("condemned", "two-packs", marker.clone());
    s.valid(
        "condemned",
        "incomplete",
        condemned::encode(&Condemned {
            time: 0,
            host: String::new(),
            sessions: None,
            packs: vec![PackId([1; 32])],
        }),
    );
    s.bad("condemned", "truncated", truncated(marker.clone()));
    s.bad("condemned", "trailing", cat(&[&marker, &[0]]));
    s.bad("condemned", "version-2", flipped(marker.clone(), 0));
    let mut huge = marker.clone();
    let at = huge.len() - 68;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    s.bad("condemned", "huge-pack-count", huge);
    s.valid("index", "empty", index::encode(&[]));
    s.valid(
        "index",
        "empty-pack",
        index::encode(&[PackIndex {
            pack: PackId([1; 32]),
            blobs: vec![],
        }]),
    );
    s.valid("index", "two-packs", two.clone());
    s.bad("index", "truncated", truncated(two.clone()));
    s.bad("index", "trailing", cat(&[&two, &[0]]));
    s.bad("index", "version-2", flipped(two.clone(), 0));
    let mut packs = two.clone();
    packs[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    s.bad("index", "huge-pack-count", packs);
    let mut entries = two.clone();
    entries[37..41].copy_from_slice(&u32::MAX.to_le_bytes());
    s.bad("index", "huge-entry-count", entries);
    let mut compression = two;
    compression[41 + 33] = 7;
    s.bad("index", "unknown-compression", compression);
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: ByteBuf::from(name.to_vec()),
        kind,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        mtime_nsec: 123_456_789,
        ctime: -1,
        ctime_nsec: 0,
        size: 0,
        inode: 42,
        device: 2049,
        links: 1,
        rdev: 0,
        link_target: None,
        content: vec![],
        subtree: None,
        xattrs: vec![],
    }
}

fn tree_seeds(s: &mut Seeds) {
    let mut file = node(b"a.txt", NodeKind::File);
    file.size = u64::MAX;
    file.content = vec![BlobId([1; 32]), BlobId([2; 32])];
    file.xattrs = vec![Xattr {
        name: ByteBuf::from(b"user.k".to_vec()),
        value: ByteBuf::from(vec![0, 255]),
    }];
    let mut dir = node(b"dir", NodeKind::Dir);
    dir.mode = 0o40755;
    dir.subtree = Some(BlobId([3; 32]));
    let mut link = node(b"link", NodeKind::Symlink);
    link.link_target = Some(ByteBuf::from(b"../a.txt".to_vec()));
    let mut dev = node(b"null", NodeKind::CharDevice);
    dev.rdev = 0x103;
    let others = [
        node(b"pipe", NodeKind::Fifo),
        node(b"sda", NodeKind::BlockDevice),
        node(b"sock", NodeKind::Socket),
        node(b"\xff\xfe not utf-8", NodeKind::File),
    ];
    let mut nodes = vec![file.clone(), dir, link, dev];
    nodes.extend(others);
    let full = Tree { nodes }.encode().unwrap();
    s.valid("tree", "empty", Tree::default().encode().unwrap());
    s.valid(
        "tree",
        "one-file",
        Tree {
            nodes: vec![file.clone()],
        }
        .encode()
        .unwrap(),
    );
    s.valid("tree", "every-kind", full.clone());
    s.bad("tree", "truncated", truncated(full.clone()));
    s.bad("tree", "version-7", flipped(full.clone(), 0));
    // | version | node count | name length 5 | "a.txt" | kind |: kind 7 does not exist.
    let mut kind = full;
    assert_eq!(kind[8], 0, "a.txt is a file");
    kind[8] = 7;
    s.bad("tree", "unknown-kind", kind);
    s.bad(
        "tree",
        "unsorted",
        Tree {
            nodes: vec![node(b"b", NodeKind::File), node(b"a", NodeKind::File)],
        }
        .encode()
        .unwrap(),
    );
    s.bad(
        "tree",
        "duplicate",
        Tree {
            nodes: vec![file.clone(), file],
        }
        .encode()
        .unwrap(),
    );
    // One node claimed, then a name of 2^32 - 1 bytes that is not there.
    s.bad(
        "tree",
        "huge-name",
        vec![1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f],
    );
    s.bad(
        "tree",
        "huge-count",
        vec![1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    );
}

fn snapshot_seeds(s: &mut Seeds) {
    let minimal = Snapshot {
        time_ns: 0,
        host: String::new(),
        username: String::new(),
        tags: vec![],
        parent: None,
        tree: BlobId::default(),
        sources: vec![],
        summary: SnapshotSummary::default(),
        program_version: String::new(),
    };
    let full = Snapshot {
        time_ns: -1_700_000_000_000_000_000,
        host: "büro-host".into(),
        username: "root".into(),
        tags: vec!["daily".into(), "db".into()],
        parent: Some(SnapshotId([9; 32])),
        tree: BlobId([8; 32]),
        sources: vec![
            SourceInfo {
                name: "workspace".into(),
                path: "/data/ws".into(),
            },
            SourceInfo {
                name: "volume-pg".into(),
                path: "/var/lib/docker/volumes/pg/_data".into(),
            },
        ],
        summary: SnapshotSummary {
            files: 10,
            dirs: 2,
            total_bytes: u64::MAX,
            files_read: 3,
            bytes_read: 4096,
            blobs_added: 5,
            bytes_added: 4000,
            stored_bytes_added: 3000,
            errors: 1,
            duration_ms: 1234,
        },
        program_version: "0.1.0".into(),
    }
    .encode()
    .unwrap();
    s.valid("snapshot", "minimal", minimal.encode().unwrap());
    s.valid("snapshot", "full", full.clone());
    s.bad("snapshot", "truncated", truncated(full.clone()));
    s.bad("snapshot", "version-2", flipped(full.clone(), 0));
    // The first byte of the host is flipped to make it invalid UTF-8.
    let host_at = full
        .iter()
        .position(|&b| b == b'b')
        .expect("host in snapshot");
    let mut utf8 = full.clone();
    utf8[host_at] = 0xff;
    s.bad("snapshot", "host-not-utf-8", utf8);
    s.bad(
        "snapshot",
        "huge-host-len",
        vec![1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
    );
}

fn keyfile_seeds(s: &mut Seeds) {
    let key = |kdf: KdfParams, host: &str| KeyFile {
        kdf,
        salt: [5; 32],
        created: 1_700_000_000,
        host: host.into(),
        sealed_master: (0..SEALED_KEY_BYTES as u8).collect(),
    };
    let default = key(KdfParams::DEFAULT, "büro-host").encode();
    let smallest = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    s.valid("keyfile", "default", default.clone());
    s.valid("keyfile", "no-host", key(smallest, "").encode());
    s.valid(
        "keyfile",
        "longest-host",
        key(smallest, &"h".repeat(255)).encode(),
    );
    s.bad("keyfile", "truncated", truncated(default.clone()));
    s.bad("keyfile", "trailing", cat(&[&default, &[0]]));
    s.bad("keyfile", "bad-magic", flipped(default.clone(), 0));
    s.bad("keyfile", "version-2", flipped(default.clone(), 8));
    let mut memory = default.clone();
    memory[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    s.bad("keyfile", "huge-memory", memory);
    let host_len_at = 8 + 2 + 12 + 32 + 8;
    let mut long = default.clone();
    long[host_len_at..host_len_at + 2].copy_from_slice(&256u16.to_le_bytes());
    s.bad("keyfile", "host-too-long", long);
    let mut utf8 = default;
    utf8[host_len_at + 2] = 0xff;
    s.bad("keyfile", "host-not-utf-8", utf8);
}

fn config_seeds(s: &mut Seeds) {
    let c = Config {
        version: FORMAT_VERSION,
        id: "a".repeat(64),
        chunker: ChunkerParams::DEFAULT,
        compression_level: 3,
        pack_bytes: 16 << 20,
        created: "2026-11-23T00:00:00Z".into(),
        mac: "b".repeat(64),
    };
    let text = |c: &Config| c.encode().unwrap();
    s.valid("config", "pretty", text(&c));
    s.valid(
        "config",
        "compact",
        serde_json::to_vec(&c).expect("config to JSON"),
    );
    let mut v1 = c.clone();
    v1.version = 1;
    s.valid("config", "version-1", text(&v1));
    let mut newer = c.clone();
    newer.version = FORMAT_VERSION + 1;
    s.bad("config", "newer-version", text(&newer));
    let mut zero = c.clone();
    zero.version = 0;
    s.bad("config", "version-0", text(&zero));
    let mut odd = c.clone();
    odd.chunker.min_bytes = 1001;
    s.bad("config", "odd-chunker", text(&odd));
    let mut level = c.clone();
    level.compression_level = 23;
    s.bad("config", "level-23", text(&level));
    let mut pack = c.clone();
    pack.pack_bytes = 1;
    s.bad("config", "tiny-packs", text(&pack));
    let mut id = c.clone();
    id.id.pop();
    s.bad("config", "short-id", text(&id));
    // The trailing newline is whitespace: cut the closing brace too.
    s.bad("config", "truncated", truncated(truncated(text(&c))));
    s.bad("config", "only-version", br#"{"version":1}"#.to_vec());
    s.bad("config", "deep", [&b"["[..]].repeat(4096).concat());
}

fn decompress_seeds(s: &mut Seeds) {
    let input = |method: u8, raw_len: u32, payload: &[u8]| {
        cat(&[&[method], &raw_len.to_le_bytes(), payload])
    };
    let text = b"hello world, hello coffer. ".repeat(200);
    let zstd = zstd::bulk::compress(&text, 3).expect("zstd compresses");
    let len = text.len() as u32;
    s.valid("decompress", "zstd", input(1, len, &zstd));
    s.valid(
        "decompress",
        "zstd-empty",
        input(1, 0, &zstd::bulk::compress(b"", 3).expect("zstd")),
    );
    s.valid("decompress", "raw", input(0, 11, b"hello world"));
    s.valid("decompress", "raw-empty", input(0, 0, b""));
    s.bad("decompress", "zstd-short", input(1, len - 1, &zstd));
    s.bad("decompress", "zstd-long", input(1, len + 1, &zstd));
    s.bad(
        "decompress",
        "zstd-truncated",
        input(1, len, &zstd[..zstd.len() - 3]),
    );
    s.bad(
        "decompress",
        "zstd-bad-magic",
        input(1, len, &flipped(zstd.clone(), 0)),
    );
    s.bad("decompress", "zstd-garbage", input(1, 1 << 20, b"garbage"));
    s.bad("decompress", "raw-mismatch", input(0, 12, b"hello world"));
}

fn aead_seeds(s: &mut Seeds) {
    let key = &bodies::AEAD_KEY;
    let input = |aad: &[u8], sealed: &[u8]| cat(&[&[aad.len() as u8], aad, sealed]);
    let blob = seal(key, b"coffer blob\0", &[7; 300]).expect("seal");
    let index = seal(key, b"coffer index", b"").expect("seal");
    s.valid("aead_open", "blob", input(b"coffer blob\0", &blob));
    s.valid(
        "aead_open",
        "empty-plaintext",
        input(b"coffer index", &index),
    );
    s.valid(
        "aead_open",
        "no-aad",
        input(b"", &seal(key, b"", b"x").expect("seal")),
    );
    s.bad("aead_open", "wrong-aad", input(b"coffer snapshot", &index));
    s.bad(
        "aead_open",
        "flipped-ciphertext",
        input(b"coffer blob\0", &flipped(blob.clone(), 30)),
    );
    s.bad(
        "aead_open",
        "flipped-nonce",
        input(b"coffer blob\0", &flipped(blob, 0)),
    );
    s.bad(
        "aead_open",
        "truncated",
        input(b"", &index[..SEAL_OVERHEAD - 1]),
    );
    s.bad("aead_open", "empty", vec![]);
}

fn padded_object_seeds(s: &mut Seeds) {
    let snap = padding::pad_object(b"a snapshot's bytes");
    s.valid("padded_object", "small", snap[..64].to_vec());
    s.valid(
        "padded_object",
        "empty-payload",
        padding::pad_object(b"")[..8].to_vec(),
    );
    let mut long = snap[..64].to_vec();
    long[..4].copy_from_slice(&61u32.to_le_bytes());
    s.bad("padded_object", "length-past-end", long);
    s.bad("padded_object", "truncated-length", vec![1, 0]);
    let mut huge = snap[..64].to_vec();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    s.bad("padded_object", "huge-length", huge);
}

fn seeds() -> Vec<Seed> {
    let mut s = Seeds::default();
    pack_seeds(&mut s);
    index_seeds(&mut s);
    tree_seeds(&mut s);
    snapshot_seeds(&mut s);
    keyfile_seeds(&mut s);
    config_seeds(&mut s);
    decompress_seeds(&mut s);
    aead_seeds(&mut s);
    padded_object_seeds(&mut s);
    s.0
}

/// Whether the decoder under a target accepts a seed (the target body itself only checks
/// invariants, so it cannot tell).
fn accepted(target: &str, bytes: &[u8]) -> bool {
    let split = |b: &[u8]| {
        let (head, rest) = b.split_first_chunk::<8>().expect("8-byte prefix");
        (u64::from_le_bytes(*head), rest.to_vec())
    };
    match target {
        "pack_header" => {
            let (blobs_len, rest) = split(bytes);
            pack::decode_header(&rest, blobs_len).is_ok()
        }
        "pack_trailer" => {
            let (pack_len, rest) = split(bytes);
            pack::decode_trailer(pack_len, &rest).is_ok()
        }
        "index" => index::decode(bytes).is_ok(),
        "condemned" => condemned::decode(bytes).is_ok(),
        "tree" => Tree::decode(bytes).is_ok(),
        "snapshot" => Snapshot::decode(bytes).is_ok(),
        "keyfile" => KeyFile::decode(bytes).is_ok(),
        "config" => Config::decode(bytes).is_ok(),
        "decompress" => {
            let compression = Compression::from_byte(bytes[0] & 1).expect("method");
            let raw_len = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
            coffer::compress::decompress(&bytes[5..], compression, raw_len).is_ok()
        }
        "aead_open" => {
            let Some((&aad_len, rest)) = bytes.split_first() else {
                return false;
            };
            let (aad, sealed) = rest.split_at(usize::from(aad_len));
            coffer::crypto::open(&bodies::AEAD_KEY, aad, sealed).is_ok()
        }
        "padded_object" => padding::unpad_object(bytes, "object").is_ok(),
        other => panic!("no decoder for target {other}"),
    }
}

fn body(target: &str) -> bodies::Body {
    bodies::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("unknown target {target}"))
        .1
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn seeds_are_what_they_claim() {
    for seed in seeds() {
        assert_eq!(
            accepted(seed.target, &seed.bytes),
            seed.valid,
            "{}/{}: the decoder's verdict changed",
            seed.target,
            seed.name
        );
        body(seed.target)(&seed.bytes);
    }
}

#[test]
fn every_target_has_seeds() {
    let mut per_target: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for seed in seeds() {
        let n = per_target.entry(seed.target).or_default();
        if seed.valid { n.0 += 1 } else { n.1 += 1 }
    }
    for (target, _) in bodies::TARGETS {
        let (valid, bad) = per_target.get(target).copied().unwrap_or_default();
        assert!(
            valid >= 2 && bad >= 2,
            "{target}: {valid} valid and {bad} malformed seeds"
        );
    }
}

#[test]
fn corpus_replays_without_panics() {
    let fuzz = fuzz_dir();
    if std::env::var_os("COFFER_WRITE_CORPUS").is_some_and(|v| v == "1") {
        for seed in seeds() {
            let dir = fuzz.join("corpus").join(seed.target);
            std::fs::create_dir_all(&dir).expect("create corpus directory");
            std::fs::write(dir.join(&seed.name), &seed.bytes).expect("write seed");
        }
    }
    let mut failures = Vec::new();
    let mut total_bytes = 0;
    for (target, run) in bodies::TARGETS {
        let corpus = files_in(&fuzz.join("corpus").join(target));
        assert!(
            corpus.len() >= 4,
            "fuzz/corpus/{target} has {} files: run COFFER_WRITE_CORPUS=1 cargo test --test \
             fuzz_corpus",
            corpus.len()
        );
        let regressions = files_in(&fuzz.join("regressions").join(target));
        for path in corpus.iter().chain(&regressions) {
            let bytes = std::fs::read(path).expect("read corpus file");
            let len = bytes.len() as u64;
            assert!(len <= MAX_FILE_BYTES, "{} is {len} bytes", path.display());
            total_bytes += len;
            if catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz bodies panicked on: {failures:#?}"
    );
    assert!(
        total_bytes <= MAX_CORPUS_BYTES,
        "corpus is {total_bytes} bytes"
    );
}
