//! The write half of a backup: dedup, compress and seal blobs on rayon workers, gather them
//! into packs, and hand finished packs over a bounded channel to one uploader thread that
//! stores them and then the index files naming them.
//!
//! Memory bound: at most one open data pack and one open tree pack, plus
//! [`PACKS_IN_FLIGHT`] finished packs waiting for the uploader, plus the uploader's current
//! pack. Workers block when the channel is full.
//!
//! Crash order: a pack is written before any index file names it; an index file is written
//! before the catalog (and so any later dedup lookup) learns of its blobs.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::compress::Compressor;
use crate::format::BlobKind;
use crate::format::index::PackIndex;
use crate::id::BlobId;
use crate::repo::{PackBuilder, Repository};

use super::EngineError;

/// Finished packs that may wait for the uploader.
pub const PACKS_IN_FLIGHT: usize = 2;
/// Target size of a tree pack.
const TREE_PACK_BYTES: usize = 4 << 20;
/// An index file is written after this many packs (or [`INDEX_EVERY`]) so that a crash mid
/// backup leaves the packs written so far indexed and reusable.
const INDEX_EVERY_PACKS: usize = 32;
const INDEX_EVERY: Duration = Duration::from_secs(120);

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, Compressor)>> = const { RefCell::new(None) };
}

/// Counters of what was added.
#[derive(Default, Debug)]
pub struct SaverStats {
    pub blobs_added: AtomicU64,
    pub bytes_added: AtomicU64,
    pub stored_bytes_added: AtomicU64,
    pub packs_written: AtomicU64,
    pub index_files_written: AtomicU64,
}

pub struct Saver<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    level: i32,
    pack_bytes: usize,
    seen: Mutex<HashSet<BlobId>>,
    data: Mutex<PackBuilder>,
    tree: Mutex<PackBuilder>,
    tx: Mutex<Option<SyncSender<PackBuilder>>>,
    pub stats: Arc<SaverStats>,
}

impl<'a> Saver<'a> {
    /// A saver and the receiving end for [`run_uploader`].
    pub fn new(repo: &'a Repository, catalog: &'a Catalog) -> (Self, Receiver<PackBuilder>) {
        let (tx, rx) = sync_channel(PACKS_IN_FLIGHT);
        let saver = Saver {
            repo,
            catalog,
            level: repo.config().compression_level,
            pack_bytes: repo.config().pack_bytes as usize,
            seen: Mutex::new(HashSet::new()),
            data: Mutex::new(PackBuilder::default()),
            tree: Mutex::new(PackBuilder::default()),
            tx: Mutex::new(Some(tx)),
            stats: Arc::new(SaverStats::default()),
        };
        (saver, rx)
    }

    /// Store a blob unless the repository already has it; returns its id.
    pub fn save(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId, EngineError> {
        if data.len() > crate::format::MAX_BLOB_BYTES as usize {
            return Err(EngineError::Usage(format!(
                "a {} blob of {} bytes is over the limit of {} (a directory with too many entries?)",
                if kind == BlobKind::Tree {
                    "tree"
                } else {
                    "data"
                },
                data.len(),
                crate::format::MAX_BLOB_BYTES
            )));
        }
        let id = self.repo.keys().blob_id(kind, data);
        if !self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id)
        {
            return Ok(id);
        }
        if self.catalog.has_blob(&id)? {
            return Ok(id);
        }
        if kind == BlobKind::Tree {
            // The next backup reads this tree as its parent's: keeping it in the catalog
            // spares a remote request per directory in a no-change backup.
            self.catalog.cache_tree(&id, data)?;
        }
        let sealed = COMPRESSOR.with(|c| -> Result<_, EngineError> {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != self.level) {
                let comp = Compressor::new(self.level).map_err(|e| EngineError::Io {
                    path: "zstd".into(),
                    source: e,
                })?;
                *c = Some((self.level, comp));
            }
            let (_, comp) = c
                .as_mut()
                .ok_or_else(|| EngineError::Usage("no compressor".into()))?;
            Ok(self.repo.seal_blob(id, kind, data, comp)?)
        })?;
        self.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.stats
            .stored_bytes_added
            .fetch_add(sealed.bytes.len() as u64, Ordering::Relaxed);
        let (builder, target) = match kind {
            BlobKind::Data => (&self.data, self.pack_bytes),
            BlobKind::Tree => (&self.tree, TREE_PACK_BYTES),
        };
        let full = {
            let mut b = builder.lock().unwrap_or_else(|p| p.into_inner());
            b.add(sealed);
            (b.len_bytes() >= target).then(|| b.take())
        };
        if let Some(full) = full {
            self.send(full)?;
        }
        Ok(id)
    }

    fn send(&self, pack: PackBuilder) -> Result<(), EngineError> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => tx.send(pack).map_err(|_| {
                EngineError::Usage("the pack uploader stopped (see the error above)".into())
            }),
            None => Err(EngineError::Usage("saver already finished".into())),
        }
    }

    /// Send the partly filled packs and close the channel; the uploader then finishes.
    pub fn finish(&self) -> Result<(), EngineError> {
        for b in [&self.data, &self.tree] {
            let pack = b.lock().unwrap_or_else(|p| p.into_inner()).take();
            if pack.count() > 0 {
                self.send(pack)?;
            }
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    /// Close the channel without flushing (on error paths), so the uploader stops.
    pub fn abandon(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Store packs as they arrive, then the index files naming them, then tell the catalog.
/// Runs on its own thread until the channel closes.
pub fn run_uploader(
    repo: &Repository,
    catalog: &Catalog,
    rx: Receiver<PackBuilder>,
    stats: &SaverStats,
) -> Result<(), EngineError> {
    let mut pending: Vec<PackIndex> = Vec::new();
    let mut last_index = Instant::now();
    let flush = |pending: &mut Vec<PackIndex>| -> Result<(), EngineError> {
        if pending.is_empty() {
            return Ok(());
        }
        let id = repo.save_index(pending)?;
        catalog.add_index(&id, pending)?;
        stats.index_files_written.fetch_add(1, Ordering::Relaxed);
        pending.clear();
        Ok(())
    };
    for builder in rx {
        let packed = builder.finish(repo)?;
        repo.save_pack(&packed)?;
        stats.packs_written.fetch_add(1, Ordering::Relaxed);
        pending.push(PackIndex {
            pack: packed.id,
            blobs: packed.entries,
        });
        if pending.len() >= INDEX_EVERY_PACKS || last_index.elapsed() >= INDEX_EVERY {
            flush(&mut pending)?;
            last_index = Instant::now();
        }
    }
    flush(&mut pending)
}
