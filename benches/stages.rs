//! Throughput of each CPU stage of the backup data path, and of the stages fused per chunk.
//!
//! Every benchmark processes the same 64 MiB input, once pseudo-English text and once random
//! bytes, so the reported MiB/s compare directly:
//!
//! - `chunk`: content-defined chunking (`Chunker::cuts`, default 256 KiB / 1 MiB / 4 MiB).
//! - `blob_id`: keyed BLAKE3 of 1 MiB blocks (`RepoKeys::blob_id`).
//! - `zstd_l3`, `zstd_l1`: `Compressor::compress` of 1 MiB blocks.
//! - `seal`: XChaCha20-Poly1305 `crypto::seal` of 1 MiB blocks.
//! - `pipeline_1thread`, `pipeline_rayon`: what a backup does to a file's bytes (minus the
//!   dedup lookup and I/O): chunk 8 MiB windows, then id, compress (level 3), pad and seal each
//!   chunk with `Repository::seal_blob`, one chunk at a time or on the rayon pool.
//!
//! And, with no input, `kdf`: one Argon2id key derivation (what every command pays once to
//! open the repository, and per key file tried) at the cheapest parameters a new key may have
//! (19 MiB, 2 passes), the default (64 MiB, 3 passes) and the most an unnamed key file may ask
//! for (256 MiB, 10 passes).
//!
//! Run with `cargo bench --bench stages`; add `-- chunk` (etc.) to run one group.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use coffer::chunker::{Chunker, GearTable};
use coffer::compress::Compressor;
use coffer::crypto::{self, KdfParams, MasterKey, RepoKeys};
use coffer::engine::backup::READ_WINDOW_BYTES;
use coffer::format::BlobKind;
use coffer::format::config::ChunkerParams;
use coffer::format::pack::blob_aad;
use coffer::repo::{InitOptions, Repository};
use coffer::storage::{ObjectStore, OpendalStore};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rayon::prelude::*;

mod common;

/// Bytes of each input.
const DATA_BYTES: usize = 64 << 20;
/// Block size of the per-block stages (the average chunk size).
const BLOCK_BYTES: usize = 1 << 20;
/// zstd level of the fused pipeline (the repository default).
const PIPELINE_LEVEL: i32 = 3;

struct Input {
    name: &'static str,
    data: Vec<u8>,
}

fn inputs() -> Vec<Input> {
    vec![
        Input {
            name: "text",
            data: common::text_bytes(DATA_BYTES, 1),
        },
        Input {
            name: "random",
            data: common::random_bytes(DATA_BYTES, 2),
        },
    ]
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        // One iteration takes tens to hundreds of milliseconds: linear sampling would need
        // 55 of them per benchmark.
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(DATA_BYTES as u64));
    g
}

fn keys() -> RepoKeys {
    MasterKey::from_bytes([7; 32]).derive()
}

fn bench_chunk(c: &mut Criterion, inputs: &[Input]) {
    // Format versions 1 and 2 (public table XORed with a seed) against version 3 (a table
    // drawn from the key): the same scan over a different table, so the same speed.
    let master = MasterKey::from_bytes([7; 32]);
    let tables = [
        ("seeded", GearTable::seeded(keys().chunker_seed)),
        ("keyed", GearTable::keyed(&master.chunker_gear_stream())),
    ];
    let mut g = group(c, "chunk");
    for (table_name, table) in tables {
        let chunker = Chunker::new(ChunkerParams::DEFAULT, table);
        for i in inputs {
            let cuts = chunker.cuts(&i.data, true);
            eprintln!(
                "chunk/{table_name}/{}: {} chunks, mean {} KiB",
                i.name,
                cuts.len(),
                DATA_BYTES / cuts.len() / 1024
            );
            g.bench_function(format!("{table_name}/{}", i.name), |b| {
                b.iter(|| black_box(chunker.cuts(black_box(&i.data), true)))
            });
        }
    }
    g.finish();
}

fn bench_blob_id(c: &mut Criterion, inputs: &[Input]) {
    let keys = keys();
    let mut g = group(c, "blob_id");
    for i in inputs {
        g.bench_function(i.name, |b| {
            b.iter(|| {
                for block in i.data.chunks(BLOCK_BYTES) {
                    black_box(keys.blob_id(BlobKind::Data, black_box(block)));
                }
            })
        });
    }
    g.finish();
}

fn bench_zstd(c: &mut Criterion, inputs: &[Input], level: i32) {
    let mut comp = Compressor::new(level).expect("zstd context");
    let mut g = group(c, &format!("zstd_l{level}"));
    for i in inputs {
        let out: usize = i
            .data
            .chunks(BLOCK_BYTES)
            .map(|block| comp.compress(block).0.len())
            .sum();
        eprintln!(
            "zstd_l{level}/{}: stored {:.1} % of the input",
            i.name,
            100.0 * out as f64 / DATA_BYTES as f64
        );
        g.bench_function(i.name, |b| {
            b.iter(|| {
                for block in i.data.chunks(BLOCK_BYTES) {
                    let (payload, how) = comp.compress(black_box(block));
                    black_box((payload.len(), how));
                }
            })
        });
    }
    g.finish();
}

fn bench_seal(c: &mut Criterion, inputs: &[Input]) {
    let keys = keys();
    let aad = blob_aad(BlobKind::Data);
    let mut g = group(c, "seal");
    for i in inputs {
        g.bench_function(i.name, |b| {
            b.iter(|| {
                for block in i.data.chunks(BLOCK_BYTES) {
                    black_box(crypto::seal(&keys.encryption, &aad, black_box(block)).unwrap());
                }
            })
        });
    }
    g.finish();
}

thread_local! {
    /// One compressor per rayon worker, as the backup engine keeps them.
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// Id, compress, pad and seal one chunk; returns the sealed length.
fn seal_chunk(repo: &Repository, comp: &mut Compressor, chunk: &[u8]) -> usize {
    let id = repo.keys().blob_id(BlobKind::Data, chunk);
    let sealed = repo
        .seal_blob(id, BlobKind::Data, chunk, comp)
        .expect("seal blob");
    sealed.bytes.len()
}

/// Chunk `data` in engine-sized windows and seal every chunk; returns the sealed bytes.
fn pipeline(repo: &Repository, data: &[u8], parallel: bool) -> usize {
    let chunker = repo.chunker();
    let window = READ_WINDOW_BYTES.max(2 * chunker.max_bytes());
    let mut comp = (!parallel).then(|| Compressor::new(PIPELINE_LEVEL).expect("zstd context"));
    let mut start = 0;
    let mut stored = 0;
    while start < data.len() {
        let end = (start + window).min(data.len());
        let lens = chunker.cuts(&data[start..end], end == data.len());
        let mut chunks = Vec::with_capacity(lens.len());
        for len in lens {
            chunks.push(&data[start..start + len]);
            start += len;
        }
        stored += match comp.as_mut() {
            Some(comp) => chunks.iter().map(|c| seal_chunk(repo, comp, c)).sum(),
            None => chunks
                .par_iter()
                .map(|c| {
                    COMPRESSOR.with_borrow_mut(|slot| {
                        let comp = slot.get_or_insert_with(|| {
                            Compressor::new(PIPELINE_LEVEL).expect("zstd context")
                        });
                        seal_chunk(repo, comp, c)
                    })
                })
                .sum::<usize>(),
        };
    }
    stored
}

fn bench_pipeline(c: &mut Criterion, inputs: &[Input]) {
    let store: Arc<dyn ObjectStore> = Arc::new(OpendalStore::memory().expect("memory store"));
    let opts = InitOptions {
        compression_level: PIPELINE_LEVEL,
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    };
    let repo = Repository::init(store, b"bench", opts).expect("init repository");
    for (name, parallel) in [("pipeline_1thread", false), ("pipeline_rayon", true)] {
        let mut g = group(c, name);
        for i in inputs {
            g.bench_function(i.name, |b| {
                b.iter(|| black_box(pipeline(&repo, black_box(&i.data), parallel)))
            });
        }
        g.finish();
    }
    eprintln!("rayon threads: {}", rayon::current_num_threads());
}

fn bench_kdf(c: &mut Criterion) {
    let mut g = c.benchmark_group("kdf");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    for (name, kdf) in [
        ("new_key_min", KdfParams::NEW_KEY_MIN),
        ("default", KdfParams::DEFAULT),
        ("limit", KdfParams::LIMIT),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| crypto::derive_wrapping_key(black_box(b"passphrase"), &[1; 32], kdf))
        });
    }
    g.finish();
}

fn stages(c: &mut Criterion) {
    bench_kdf(c);
    let inputs = inputs();
    bench_chunk(c, &inputs);
    bench_blob_id(c, &inputs);
    bench_zstd(c, &inputs, 3);
    bench_zstd(c, &inputs, 1);
    bench_seal(c, &inputs);
    bench_pipeline(c, &inputs);
}

criterion_group!(benches, stages);
criterion_main!(benches);
