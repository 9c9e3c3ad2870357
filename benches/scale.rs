//! Scale (issue 7): memory and dedup lookups against a repository whose index holds millions of
//! blobs, and the cost of a no-change backup as the number of files grows.
//!
//! Index scale, for each size N (`COFFER_SCALE_BLOBS`, default 0, 1 M, 3 M, 10 M), in a fresh
//! local repository:
//! 1. A synthetic index of N data blobs, 16 per pack (16 MiB packs of 1 MiB chunks, so 10 M
//!    blobs stand for about 10 TiB), is written as real sealed index files
//!    (`Repository::save_index`) and recorded in the catalog (`Catalog::add_index`) as `refresh`
//!    would, so the CLI finds its catalog up to date. Ids ascend, which makes the SQLite inserts
//!    appends; a catalog filled by `refresh` holds the same rows in emptier pages.
//! 2. `Catalog::has_blob` is timed on one thread, page cache warm, for ids that are in the
//!    index and ids that are not.
//! 3. The release `coffer` binary backs up a small directory (48 MiB, 502 files) into that
//!    repository, then again without changes, under `/usr/bin/time`: wall time and peak RSS.
//!
//! File scale, for each count F (`COFFER_SCALE_FILES`, default 100,000; `1000000` is opt-in): F
//! small files in directories of 1,000, an initial backup, then a no-change backup (timed).
//!
//! Run: `cargo build --release && cargo bench --bench scale`. More environment: `COFFER_SCALE_DIR`
//! (work directory, default a temporary one; 10 M blobs take about 1.5 GiB), `COFFER_BIN`
//! (default `target/release/coffer`). Without `--bench` (as under `cargo test --all-targets`) it
//! only runs steps 1 and 2 with 10,000 blobs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use coffer::catalog::Catalog;
use coffer::crypto::KdfParams;
use coffer::format::index::PackIndex;
use coffer::format::{BlobEntry, BlobKind, Compression};
use coffer::id::{BlobId, PackId};
use coffer::repo::{InitOptions, Repository};
use coffer::storage::{LocalStore, ObjectStore};

mod common;

const PASSPHRASE: &str = "scale-bench";
const BLOBS_PER_PACK: u64 = 16;
/// Blobs per synthetic index file (4,096 packs, about 3.3 MiB sealed).
const BLOBS_PER_INDEX: u64 = 65_536;
/// Lookups timed per kind (present, absent).
const LOOKUPS: usize = 200_000;
const MIB: f64 = (1 << 20) as f64;

/// The id of blob `i` of `n`: ascending in `i`, otherwise pseudo-random.
fn blob_id(i: u64, n: u64) -> BlobId {
    let mut id = *blake3::hash(&i.to_le_bytes()).as_bytes();
    let step = u64::MAX / n.max(1);
    let jitter = u64::from_le_bytes(id[..8].try_into().expect("8 bytes")) % step;
    id[..8].copy_from_slice(&(i * step + jitter).to_be_bytes());
    BlobId(id)
}

fn pack_id(no: u64) -> PackId {
    PackId(*blake3::hash(format!("pack {no}").as_bytes()).as_bytes())
}

/// Write the synthetic index of `n` blobs into the repository and its catalog.
fn fill_index(repo: &Repository, catalog: &Catalog, n: u64) {
    let mut i = 0;
    while i < n {
        let end = (i + BLOBS_PER_INDEX).min(n);
        let mut packs = Vec::new();
        while i < end {
            let blobs_end = (i + BLOBS_PER_PACK).min(end);
            let blobs = (i..blobs_end)
                .map(|b| BlobEntry {
                    id: blob_id(b, n),
                    kind: BlobKind::Data,
                    compression: Compression::Zstd,
                    offset: ((b % BLOBS_PER_PACK) as u32) << 20,
                    packed_len: 700_000,
                    data_len: 699_900,
                    raw_len: 1 << 20,
                })
                .collect();
            packs.push(PackIndex {
                pack: pack_id(i / BLOBS_PER_PACK),
                blobs,
            });
            i = blobs_end;
        }
        let id = repo.save_index(&packs).expect("save index");
        catalog
            .add_index(&id, &packs)
            .expect("add index to catalog");
    }
}

/// Lookups per second of ids that are (`present`) or are not in the index.
fn lookup_rate(catalog: &Catalog, n: u64, present: bool) -> f64 {
    let mut rng = common::XorShift::new(if present { 11 } else { 12 });
    let ids: Vec<BlobId> = (0..LOOKUPS)
        .map(|_| {
            if present {
                blob_id(rng.next_u64() % n, n)
            } else {
                let mut id = [0u8; 32];
                for c in id.chunks_mut(8) {
                    c.copy_from_slice(&rng.next_u64().to_le_bytes());
                }
                BlobId(id)
            }
        })
        .collect();
    let start = Instant::now();
    let found = ids
        .iter()
        .filter(|id| catalog.has_blob(id).expect("has_blob"))
        .count();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(found, if present { LOOKUPS } else { 0 }, "lookup results");
    LOOKUPS as f64 / secs
}

/// A repository under `dir` with the default (production) key derivation.
fn init_repo(dir: &Path, kdf: KdfParams) -> (Repository, Catalog, PathBuf) {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.join("repo")));
    let opts = InitOptions {
        kdf,
        ..Default::default()
    };
    let repo = Repository::init(store, PASSPHRASE.as_bytes(), opts).expect("init repository");
    let cache = dir.join("cache");
    let catalog =
        Catalog::open(&Catalog::path_for(&cache, &repo.config().id)).expect("open catalog");
    (repo, catalog, cache)
}

/// Wall seconds and peak RSS (MiB) of one `coffer backup` of `source` run by the real binary.
fn cli_backup(coffer: &Path, dir: &Path, source: &Path) -> (f64, f64) {
    let time_out = dir.join("time.txt");
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&time_out)
        .arg(coffer)
        .arg("--repo")
        .arg(dir.join("repo"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--json")
        .arg("backup")
        .arg(format!("data={}", source.display()))
        .env("COFFER_PASSWORD", PASSPHRASE)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run /usr/bin/time coffer backup");
    assert!(status.success(), "coffer backup failed: {status}");
    let text = std::fs::read_to_string(&time_out).expect("read time output");
    let last = text.lines().last().unwrap_or_default();
    let mut f = last
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
    let wall = f.next().unwrap_or(f64::NAN);
    let rss_kib = f.next().unwrap_or(f64::NAN);
    (wall, rss_kib / 1024.0)
}

/// The small source of the backups against a large index: 48 MiB in 502 files.
fn small_source(dir: &Path) -> PathBuf {
    let root = dir.join("source");
    std::fs::create_dir_all(root.join("notes")).expect("mkdir");
    std::fs::write(root.join("text.txt"), common::text_bytes(16 << 20, 1)).expect("write");
    std::fs::write(root.join("media.bin"), common::random_bytes(16 << 20, 2)).expect("write");
    let text = common::text_bytes(16 << 20, 3);
    for (k, part) in text.chunks(text.len() / 500).enumerate() {
        std::fs::write(root.join("notes").join(format!("{k:03}.txt")), part).expect("write");
    }
    root
}

/// `count` small distinct files in directories of 1,000.
fn many_files(dir: &Path, count: u64) -> PathBuf {
    let root = dir.join(format!("files-{count}"));
    for i in 0..count {
        let sub = root.join(format!("{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub).expect("mkdir");
        }
        let body = format!("file {i}: {}\n", blob_id(i, count));
        std::fs::write(sub.join(format!("{i}.txt")), body).expect("write");
    }
    root
}

fn list(var: &str, default: &str) -> Vec<u64> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().replace('_', "").parse().expect("a number"))
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let work = match std::env::var_os("COFFER_SCALE_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("work directory");
    let cheap_kdf = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    if !full {
        let (repo, catalog, _) = init_repo(work.path(), cheap_kdf);
        fill_index(&repo, &catalog, 10_000);
        let rate = lookup_rate(&catalog, 10_000, true);
        eprintln!("scale (test mode): 10,000 blobs, {rate:.0} present lookups/s");
        return;
    }
    let coffer = std::env::var_os("COFFER_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/coffer"),
        PathBuf::from,
    );
    assert!(
        coffer.exists(),
        "no coffer binary at {}: run `cargo build --release` first",
        coffer.display()
    );
    let source = small_source(work.path());
    let mut report = String::new();
    let _ = writeln!(
        report,
        "| blobs in index | catalog MiB | generate s | has_blob present /s | has_blob absent /s \
         | backup 48 MiB: wall s | peak RSS MiB | no-change backup: wall s | peak RSS MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for n in list("COFFER_SCALE_BLOBS", "0,1000000,3000000,10000000") {
        let dir = tempfile::tempdir_in(work.path()).expect("temp dir");
        let (repo, catalog, cache) = init_repo(dir.path(), KdfParams::DEFAULT);
        let start = Instant::now();
        fill_index(&repo, &catalog, n);
        let generate = start.elapsed().as_secs_f64();
        let present = match n {
            0 => "-".to_string(),
            _ => format!("{:.0}", lookup_rate(&catalog, n, true)),
        };
        let absent = lookup_rate(&catalog, n.max(1), false);
        drop(catalog);
        let db_mib = std::fs::read_dir(cache.join(&repo.config().id))
            .expect("catalog dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len() as f64 / MIB)
            .sum::<f64>();
        let (wall1, rss1) = cli_backup(&coffer, dir.path(), &source);
        let (wall2, rss2) = cli_backup(&coffer, dir.path(), &source);
        let line = format!(
            "| {n} | {db_mib:.0} | {generate:.1} | {present} | {absent:.0} | {wall1:.2} | \
             {rss1:.0} | {wall2:.2} | {rss2:.0} |"
        );
        eprintln!("{line}");
        report.push_str(&line);
        report.push('\n');
    }
    let _ = writeln!(
        report,
        "\n| files | create s | initial backup: wall s | peak RSS MiB | no-change backup: wall s \
         | peak RSS MiB |\n|---:|---:|---:|---:|---:|---:|"
    );
    for count in list("COFFER_SCALE_FILES", "100000") {
        let dir = tempfile::tempdir_in(work.path()).expect("temp dir");
        let (repo, catalog, _) = init_repo(dir.path(), KdfParams::DEFAULT);
        drop((repo, catalog));
        let start = Instant::now();
        let files = many_files(dir.path(), count);
        let create = start.elapsed().as_secs_f64();
        let (wall1, rss1) = cli_backup(&coffer, dir.path(), &files);
        let (wall2, rss2) = cli_backup(&coffer, dir.path(), &files);
        let line =
            format!("| {count} | {create:.1} | {wall1:.2} | {rss1:.0} | {wall2:.2} | {rss2:.0} |");
        eprintln!("{line}");
        report.push_str(&line);
        report.push('\n');
    }
    println!("{report}");
}
