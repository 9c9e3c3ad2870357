//! The write half of a backup: dedup, compress and seal blobs on rayon workers, gather them
//! into packs, and hand finished packs over a bounded channel to the uploaders, which store
//! up to [`Repository::pack_uploads`] packs at once; the index files naming them are written
//! by one thread as the packs are stored.
//!
//! Memory bound: at most one open data pack and one open tree pack, plus [`PACKS_IN_FLIGHT`]
//! finished packs waiting in the channel, plus one pack per uploader (at most
//! [`MAX_PACK_UPLOADS`]; a remote store may hold a second copy of a pack while it sends it).
//! Workers block when the channel is full.
//!
//! Crash order: a pack is written before any index file names it (an uploader reports a pack
//! only once its write returned); an index file is written before the catalog (and so any
//! later dedup lookup) learns of its blobs; the caller writes the snapshot after
//! [`run_uploader`] returned.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::compress::Compressor;
use crate::format::BlobKind;
use crate::format::index::PackIndex;
use crate::id::BlobId;
use crate::repo::{PackBuilder, Repository};

use super::EngineError;

/// Finished packs that may wait for an uploader.
pub const PACKS_IN_FLIGHT: usize = 2;
/// Most packs stored at once, whatever `--connections` says.
pub const MAX_PACK_UPLOADS: usize = 32;
/// Target size of a tree pack.
const TREE_PACK_BYTES: usize = 4 << 20;
/// Blobs in a pack before it is closed whatever its size. A pack's entries are held until it
/// is indexed (about 60 bytes a blob): 16 MiB of tiny blobs (72 bytes sealed, format 2) would
/// be 230,000 entries, and 1,000,000 files of a few bytes peaked at 104-135 MiB.
const MAX_PACK_BLOBS: usize = 16_384;
/// An index file is written after this many packs (or [`INDEX_EVERY`]) so that a crash mid
/// backup leaves the packs written so far indexed and reusable.
const INDEX_EVERY_PACKS: usize = 32;
/// ... or after this many blobs, so that the set of blobs stored but not yet indexed (which
/// dedup within a backup must remember) stays small when files are tiny.
const INDEX_EVERY_BLOBS: usize = 65_536;
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
    /// Blobs stored by this run whose packs are not indexed yet: the catalog does not know
    /// them, so dedup within the run looks here. Emptied as index files are written, so it
    /// does not grow with the number of files backed up.
    pending: Mutex<HashSet<BlobId>>,
}

pub struct Saver<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    level: i32,
    pack_bytes: usize,
    data: Mutex<PackBuilder>,
    tree: Mutex<PackBuilder>,
    tx: Mutex<Option<SyncSender<PackBuilder>>>,
    pub stats: Arc<SaverStats>,
    /// Count new blobs, store none (`backup --dry-run`).
    dry_run: bool,
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
            data: Mutex::new(PackBuilder::new(repo.config().pack_bytes as usize)),
            tree: Mutex::new(PackBuilder::new(TREE_PACK_BYTES)),
            tx: Mutex::new(Some(tx)),
            stats: Arc::new(SaverStats::default()),
            dry_run: false,
        };
        (saver, rx)
    }

    /// This saver, made to store nothing: [`Saver::save`] counts a blob it would add in
    /// `blobs_added` and `bytes_added` and returns its id, so no pack, index file or cached
    /// tree is written. Its ids stay in `pending` for the whole run (no index file empties
    /// it), about 50 bytes a new blob.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
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
            .stats
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id)
        {
            return Ok(id);
        }
        if self.catalog.has_blob(&id)? {
            self.stats
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Ok(id);
        }
        if self.dry_run {
            self.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes_added
                .fetch_add(data.len() as u64, Ordering::Relaxed);
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
                .ok_or_else(|| EngineError::Internal("no compressor".into()))?;
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
            b.add(self.repo, sealed)?;
            (b.len_bytes() >= target || b.count() >= MAX_PACK_BLOBS).then(|| b.take())
        };
        if let Some(full) = full {
            self.send(full)?;
        }
        Ok(id)
    }

    /// True when the repository has the blob `id` (indexed) or this run stored it: what
    /// [`Saver::save`] would not store again.
    pub fn has(&self, id: &BlobId) -> Result<bool, EngineError> {
        // `pending` first: a blob leaves it only once the catalog knows it.
        if self
            .stats
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            return Ok(true);
        }
        Ok(self.catalog.has_blob(id)?)
    }

    fn send(&self, pack: PackBuilder) -> Result<(), EngineError> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => tx.send(pack).map_err(|_| {
                EngineError::Internal("the pack uploader stopped (see the error above)".into())
            }),
            None => Err(EngineError::Internal("saver already finished".into())),
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

/// Store packs as they arrive, up to [`Repository::pack_uploads`] at once, then the index
/// files naming them, then tell the catalog. Returns when the channel closes, or after the
/// first error (the uploads already under way finish first; no new one starts).
pub fn run_uploader(
    repo: &Repository,
    catalog: &Catalog,
    rx: Receiver<PackBuilder>,
    stats: &SaverStats,
) -> Result<(), EngineError> {
    let uploads = repo.pack_uploads().clamp(1, MAX_PACK_UPLOADS);
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    let (stored_tx, stored_rx) = channel::<Result<PackIndex, EngineError>>();
    std::thread::scope(|scope| {
        let mut first_error = None;
        for i in 0..uploads {
            let stored_tx = stored_tx.clone();
            let (rx, failed) = (&rx, &failed);
            let spawned = std::thread::Builder::new()
                .name(format!("coffer-upload-{i}"))
                .spawn_scoped(scope, move || {
                    while !failed.load(Ordering::SeqCst) {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        // Another uploader may have failed while this one waited.
                        let Ok(builder) = next else { break };
                        if failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let stored = upload(repo, builder);
                        if stored.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        if stored_tx.send(stored).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = spawned {
                failed.store(true, Ordering::SeqCst);
                first_error = Some(EngineError::Io {
                    path: "uploader thread".into(),
                    source: e,
                });
                break;
            }
        }
        drop(stored_tx);
        // Only packs whose write returned arrive here, so an index file never names a pack
        // that is not stored.
        let mut pending: Vec<PackIndex> = Vec::new();
        let mut pending_blobs = 0usize;
        let mut last_index = Instant::now();
        for stored in stored_rx {
            if first_error.is_some() {
                continue;
            }
            let result = stored.and_then(|p| {
                stats.packs_written.fetch_add(1, Ordering::Relaxed);
                pending_blobs += p.blobs.len();
                pending.push(p);
                if pending.len() >= INDEX_EVERY_PACKS
                    || pending_blobs >= INDEX_EVERY_BLOBS
                    || last_index.elapsed() >= INDEX_EVERY
                {
                    pending_blobs = 0;
                    last_index = Instant::now();
                    flush_index(repo, catalog, stats, &mut pending)?;
                }
                Ok(())
            });
            if let Err(e) = result {
                failed.store(true, Ordering::SeqCst);
                first_error = Some(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => flush_index(repo, catalog, stats, &mut pending),
        }
    })
}

/// Seal a pack's header and store it; what the index will say about it.
fn upload(repo: &Repository, builder: PackBuilder) -> Result<PackIndex, EngineError> {
    let packed = builder.finish(repo)?;
    let index = PackIndex {
        pack: packed.id,
        blobs: packed.entries.clone(),
    };
    repo.save_pack(packed)?;
    Ok(index)
}

/// Write one index file naming the `pending` packs (all stored), then tell the catalog.
fn flush_index(
    repo: &Repository,
    catalog: &Catalog,
    stats: &SaverStats,
    pending: &mut Vec<PackIndex>,
) -> Result<(), EngineError> {
    if pending.is_empty() {
        return Ok(());
    }
    let id = repo.save_index(pending)?;
    catalog.add_index(&id, pending)?;
    stats.index_files_written.fetch_add(1, Ordering::Relaxed);
    // The catalog knows these blobs now: dedup finds them there.
    let mut in_flight = stats.pending.lock().unwrap_or_else(|p| p.into_inner());
    for p in pending.iter() {
        for b in &p.blobs {
            in_flight.remove(&b.id);
        }
    }
    drop(in_flight);
    pending.clear();
    Ok(())
}
