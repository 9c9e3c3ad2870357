//! End-to-end backups with the real engine into an in-memory repository.
//!
//! The source is a temporary directory of about 200 MiB: four large files (random and text,
//! 192 MiB) and 2,000 small text files (8 MiB) in 20 directories. Its files stay in the page
//! cache, so this measures the engine (walk, chunk, id, dedup lookup, compress, seal, pack,
//! index, catalog), not the disk.
//!
//! - `backup/initial`: first backup into a fresh repository and catalog (created, untimed, for
//!   every iteration).
//! - `backup/unchanged`: backup of the unchanged tree into a repository that already holds it:
//!   metadata comparison against the parent snapshot, no file is read.
//!
//! Run with `cargo bench --bench backup`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coffer::catalog::Catalog;
use coffer::crypto::KdfParams;
use coffer::engine::Progress;
use coffer::engine::backup::{BackupOptions, BackupSummary, SourceSpec, backup};
use coffer::repo::{InitOptions, Repository};
use coffer::storage::{ObjectStore, OpendalStore};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;

mod common;

const MIB: usize = 1 << 20;
/// Large files: name, size, random (else text).
const LARGE: &[(&str, usize, bool)] = &[
    ("big-random-1.bin", 64 * MIB, true),
    ("big-text-1.txt", 64 * MIB, false),
    ("big-random-2.bin", 32 * MIB, true),
    ("big-text-2.log", 32 * MIB, false),
];
const SMALL_FILES: usize = 2_000;
const SMALL_DIRS: usize = 20;
const SMALL_BYTES: usize = 8 * MIB;

/// The source tree; removed on drop.
struct Fixture {
    _dir: TempDir,
    root: PathBuf,
    files: u64,
    bytes: u64,
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("src");
    std::fs::create_dir(&root).expect("mkdir");
    let mut bytes = 0u64;
    for (i, &(name, len, random)) in LARGE.iter().enumerate() {
        let seed = 100 + i as u64;
        let data = if random {
            common::random_bytes(len, seed)
        } else {
            common::text_bytes(len, seed)
        };
        write(&root.join(name), &data);
        bytes += len as u64;
    }
    // Distinct slices of one text, 1 to about 7 KiB each, averaging SMALL_BYTES / SMALL_FILES.
    let text = common::text_bytes(SMALL_BYTES, 7);
    let mut rng = common::XorShift::new(8);
    let avg = SMALL_BYTES / SMALL_FILES;
    let mut off = 0;
    for i in 0..SMALL_FILES {
        let sub = root.join(format!("dir-{:02}", i % SMALL_DIRS));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let len = if i + 1 == SMALL_FILES {
            text.len() - off
        } else {
            (avg / 4 + rng.below(avg * 3 / 2)).min(text.len() - off)
        };
        write(&sub.join(format!("note-{i:04}.txt")), &text[off..off + len]);
        off += len;
        bytes += len as u64;
    }
    Fixture {
        _dir: dir,
        root,
        files: (LARGE.len() + SMALL_FILES) as u64,
        bytes,
    }
}

/// A fresh in-memory repository with its catalog in a temporary directory.
struct Target {
    // Field order is drop order: the catalog closes before its directory goes.
    catalog: Catalog,
    repo: Repository,
    _cache: TempDir,
}

fn target() -> Target {
    let store: Arc<dyn ObjectStore> = Arc::new(OpendalStore::memory().expect("memory store"));
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    };
    let repo = Repository::init(store, b"bench", opts).expect("init repository");
    let cache = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(&cache.path().join("catalog.sqlite")).expect("open catalog");
    Target {
        catalog,
        repo,
        _cache: cache,
    }
}

fn run(t: &Target, opts: &BackupOptions) -> BackupSummary {
    let s = backup(&t.repo, &t.catalog, opts, &Progress::default()).expect("backup");
    assert!(s.warnings.is_empty(), "warnings: {:?}", s.warnings);
    s
}

fn bench_backup(c: &mut Criterion) {
    let fx = fixture();
    let opts = BackupOptions {
        sources: vec![SourceSpec {
            name: "data".into(),
            path: fx.root.clone(),
        }],
        host: "bench".into(),
        ..Default::default()
    };
    eprintln!(
        "source: {} files, {:.1} MiB; rayon threads: {}",
        fx.files,
        fx.bytes as f64 / MIB as f64,
        rayon::current_num_threads()
    );

    // One untimed run of each kind: checks the setup and shows what the engine does.
    let t = target();
    let first = run(&t, &opts);
    assert_eq!(first.files, fx.files);
    assert_eq!(first.bytes_read, fx.bytes);
    eprintln!(
        "initial: {} blobs, {:.1} MiB stored, {} packs, {:.2} s",
        first.blobs_added,
        first.stored_bytes_added as f64 / MIB as f64,
        first.packs_written,
        first.duration_secs
    );
    let second = run(&t, &opts);
    assert_eq!(second.files_unchanged, fx.files);
    assert_eq!(second.bytes_read, 0);
    eprintln!(
        "unchanged: {} files unchanged, {} bytes read, {:.2} s",
        second.files_unchanged, second.bytes_read, second.duration_secs
    );

    let mut g = c.benchmark_group("backup");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(fx.bytes));
    g.bench_function("initial", |b| {
        b.iter_batched(
            target,
            |t| {
                let s = run(&t, &opts);
                assert_eq!(s.bytes_read, fx.bytes);
                // Dropped (a repository of about 130 MiB) outside the timing.
                t
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("unchanged", |b| {
        b.iter(|| {
            let s = run(&t, &opts);
            assert_eq!(s.files_unchanged, fx.files);
            s
        })
    });
    g.finish();
}

criterion_group!(benches, bench_backup);
criterion_main!(benches);
