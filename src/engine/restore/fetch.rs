//! The content of a batch of restored files, read pack by pack.
//!
//! Every blob the batch needs is looked up once; the blobs are grouped by pack, sorted by
//! offset and coalesced into ranged reads (nearby blobs in one read, a whole pack when most of
//! it is needed, each read at most [`MAX_READ`]), so an S3 restore makes a request per region
//! of a pack, not one per blob. On a local store each writer thread has a batch and a reader
//! thread of its own (see [`Fetcher::writers`]); on a remote store one batch's reads run on 16
//! readers at once, whose requests wait on the network. Each blob is verified once and
//! written at its offset into every file that holds it.
//!
//! A file that did not exist when it was planned ([`FileJob::new`]) is created under its real
//! name (`O_CREAT | O_EXCL`, never over anything, never through a symlink) and written in
//! place, as `tar -x` and restic do: no temporary name and no rename, which were a fifth of
//! the system calls of restoring many small files. The batch's journal
//! (see [`super::journal`]) records each such file before it is created, so the next run
//! removes one that an interrupted run left incomplete, whatever its `--overwrite` mode.
//! A file that replaces an existing one is written under a temporary name next to its real
//! one and renamed when its last blob is in: the file in place stays whole until then, and
//! the next run removes the temporary files it finds.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;

use rayon::prelude::*;

use super::super::{EngineError, Progress, Warnings};
use crate::catalog::Catalog;
use crate::format::BlobKind;
use crate::format::tree::Node;
use crate::id::{BlobId, IdMap, PackId};
use crate::repo::{BlobLocation, Repository};
use crate::source::write;

/// The most bytes one ranged read fetches (a blob larger than this is read alone): the bound
/// on memory is this times the reads in flight.
pub(super) const MAX_READ: u64 = 8 << 20;
/// Gap between two needed blobs of a pack that is read through rather than split into two
/// requests: on a remote store a request costs more than a megabyte of transfer.
const REMOTE_GAP: u64 = 1 << 20;
/// The same on a local disk, where a read costs a system call.
const LOCAL_GAP: u64 = 64 << 10;
/// Reads in flight on a remote store.
const REMOTE_READS: usize = 16;
/// Opened parts of reads waiting for a writer thread.
const DECODED_IN_FLIGHT: usize = 4;
/// Writer threads on a local store at most: each writes a batch of its own (see
/// [`Fetcher::writers`]).
const MAX_LOCAL_WRITERS: usize = 4;
/// Files of at least this size on average in a batch are written by the decoders.
const DIRECT_FILE_BYTES: u64 = 1 << 20;
/// Decompressed bytes a decoder gathers before it hands them to the writer thread.
const DECODED_MESSAGE_BYTES: usize = 2 << 20;
/// Temporary files kept open between writes; beyond this a file is closed after each write
/// and opened again for the next.
const MAX_OPEN_FILES: usize = 256;
/// What names a temporary file of a restore: `.coffer-tmp-<pid>-<n>`.
pub(super) const TEMP_MARK: &str = ".coffer-tmp-";

/// Blobs of one read, opened by a decoder, for the writer thread.
struct Decoded {
    /// The read, by index in its batch.
    read: usize,
    /// The read's bytes, where the blobs stored raw were opened (empty when none is).
    buf: Vec<u8>,
    /// Blobs of the read, by index in its `blobs`, and what each opened to.
    blobs: Vec<(usize, Result<Plain, String>)>,
}

/// An opened blob's data.
enum Plain {
    /// All zeros, this long: a hole.
    Zeros(usize),
    /// In the read's bytes, here.
    InRead(std::ops::Range<usize>),
    /// Decompressed.
    Owned(Vec<u8>),
}

/// A regular file to write.
pub(super) struct FileJob {
    /// Its real name.
    pub dest: PathBuf,
    /// Its entry in the snapshot.
    pub node: Node,
    /// Nothing was at `dest` when it was planned: the file is created there directly (the
    /// journal of its batch records it first). Otherwise it is written under a temporary
    /// name and renamed over what is there.
    pub new: bool,
    /// What its directory gives a new file (owner and mode that need not be set again).
    pub dir: write::NewFiles,
}

/// One ranged read of a pack and the blobs it brings.
#[derive(Debug, PartialEq)]
pub(super) struct PackRead {
    pub pack: PackId,
    pub start: u64,
    pub end: u64,
    pub blobs: Vec<BlobLocation>,
}

/// Group `blobs` (distinct) into reads: by pack, by offset, a gap of at most `max_gap` bytes
/// read through, no read longer than `max_len` unless one blob is.
pub(super) fn plan_reads(
    mut blobs: Vec<BlobLocation>,
    max_gap: u64,
    max_len: u64,
) -> Vec<PackRead> {
    blobs.sort_by_key(|b| (b.pack, b.entry.offset));
    let mut out: Vec<PackRead> = Vec::new();
    for b in blobs {
        let start = u64::from(b.entry.offset);
        let end = start + u64::from(b.entry.packed_len);
        if let Some(last) = out.last_mut()
            && last.pack == b.pack
            && start >= last.end
            && start - last.end <= max_gap
            && end - last.start <= max_len
        {
            last.end = end;
            last.blobs.push(b);
            continue;
        }
        out.push(PackRead {
            pack: b.pack,
            start,
            end,
            blobs: vec![b],
        });
    }
    out
}

/// A batch of files planned for the writer: which blob goes where, and the reads that bring
/// them. Planned on the walk's thread (one catalog lookup per blob), so that the writer thread
/// goes from one batch to the next without waiting for it.
pub(super) struct Batch {
    pub jobs: Vec<FileJob>,
    /// For each blob, the files (by index in `jobs`) and offsets it is written at.
    placements: IdMap<BlobId, Vec<(usize, u64)>>,
    reads: Vec<PackRead>,
    /// Blob placements of each file (0 for a file that failed or has no content).
    blobs: Vec<usize>,
    /// Files that cannot be written, and why.
    failed: Vec<(usize, String)>,
}

impl Batch {
    /// Plan `jobs`: every blob they need is looked up once. A file with a blob missing from the
    /// index, or whose blobs do not add up to its size, fails and needs none.
    pub(super) fn plan(
        catalog: &Catalog,
        remote: bool,
        jobs: Vec<FileJob>,
    ) -> Result<Batch, EngineError> {
        let locations = catalog.blob_locations(jobs.iter().flat_map(|j| &j.node.content))?;
        let mut placements: IdMap<BlobId, Vec<(usize, u64)>> = IdMap::default();
        let mut blobs = vec![0; jobs.len()];
        let mut failed = Vec::new();
        'files: for (i, job) in jobs.iter().enumerate() {
            let node = &job.node;
            let mut size = 0u64;
            for id in &node.content {
                match locations.get(id).copied().flatten() {
                    Some(loc) => size += u64::from(loc.entry.raw_len),
                    None => {
                        failed.push((
                            i,
                            format!(
                                "blob {id} is missing from the repository index \
                                 (run `coffer check`)"
                            ),
                        ));
                        continue 'files;
                    }
                }
            }
            if size != node.size {
                failed.push((
                    i,
                    format!(
                        "the snapshot's blobs add up to {size} bytes, its size is {} \
                         (run `coffer check`)",
                        node.size
                    ),
                ));
                continue;
            }
            let mut at = 0u64;
            for id in &node.content {
                placements.entry(*id).or_default().push((i, at));
                at += locations[id].map_or(0, |l| u64::from(l.entry.raw_len));
            }
            blobs[i] = node.content.len();
        }
        let reads = plan_reads(
            placements
                .keys()
                .filter_map(|id| locations.get(id).copied().flatten())
                .collect(),
            if remote { REMOTE_GAP } else { LOCAL_GAP },
            MAX_READ,
        );
        Ok(Batch {
            jobs,
            placements,
            reads,
            blobs,
            failed,
        })
    }

    /// The files, for the journal to record before any is created.
    pub(super) fn jobs_mut(&mut self) -> &mut [FileJob] {
        &mut self.jobs
    }

    /// Its files are large (at least [`DIRECT_FILE_BYTES`] on average): the readers write
    /// them themselves. Few files are created, and handing their data to another thread made
    /// their restore slower (1.12 -> 1.30 s for 1.65 GiB in 9 files, the allocator returning
    /// and faulting in the buffers freed there).
    fn is_direct(&self) -> bool {
        let bytes: u64 = self.jobs.iter().map(|j| j.node.size).sum();
        bytes / (self.jobs.len() as u64).max(1) >= DIRECT_FILE_BYTES
    }
}

/// What the fetcher counts.
#[derive(Default)]
pub(super) struct Counters {
    pub requests: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// Writes batches of files (see the module docs).
pub(super) struct Fetcher<'a> {
    pub repo: &'a Repository,
    pub progress: &'a Progress,
    pub warnings: &'a Warnings,
    pub counters: &'a Counters,
    /// The first write that found the file system full: the restore stops there.
    pub disk_full: &'a Mutex<Option<(String, String)>>,
    pool: Option<rayon::ThreadPool>,
    /// Restore `security.*` / `trusted.*` xattrs too.
    pub privileged: bool,
    seq: AtomicU64,
    open_files: AtomicUsize,
}

/// A file being written.
struct Slot<'j> {
    job: &'j FileJob,
    file: Mutex<SlotFile>,
    /// Blob placements still to write.
    remaining: AtomicUsize,
    failed: AtomicBool,
    finished: AtomicBool,
    /// A region of zeros was skipped (the file is extended to its size at the end).
    hole: AtomicBool,
}

#[derive(Default)]
struct SlotFile {
    handle: Option<File>,
    /// Where the file is being written, once created: its real name or a temporary one.
    at: Option<PathBuf>,
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        progress: &'a Progress,
        warnings: &'a Warnings,
        counters: &'a Counters,
        disk_full: &'a Mutex<Option<(String, String)>>,
    ) -> Self {
        let remote = repo.is_remote();
        let pool = if remote {
            rayon::ThreadPoolBuilder::new()
                .num_threads(REMOTE_READS)
                .thread_name(|i| format!("coffer-restore-read-{i}"))
                .build()
                .ok()
        } else {
            None
        };
        Self {
            repo,
            progress,
            warnings,
            counters,
            disk_full,
            pool,
            privileged: false,
            seq: AtomicU64::new(0),
            open_files: AtomicUsize::new(0),
        }
    }

    fn is_disk_full(&self) -> bool {
        self.disk_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Write the files of a planned batch. Problems with single files become warnings.
    pub(super) fn write_files(&self, batch: &Batch) -> Result<(), EngineError> {
        let Batch {
            jobs,
            placements,
            reads,
            blobs,
            failed,
        } = batch;
        let slots: Vec<Slot<'_>> = jobs
            .iter()
            .zip(blobs)
            .map(|(job, &n)| Slot {
                job,
                file: Mutex::new(SlotFile::default()),
                remaining: AtomicUsize::new(n),
                failed: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                hole: AtomicBool::new(false),
            })
            .collect();
        for (i, msg) in failed {
            self.fail(&slots[*i], msg);
        }
        // Files without content (empty, or failed above) are finished first.
        for s in slots
            .iter()
            .filter(|s| s.remaining.load(Ordering::Relaxed) == 0)
        {
            self.finish(s);
        }
        if batch.is_direct() {
            let place_all = || {
                reads.par_iter().enumerate().for_each(|(i, r)| {
                    self.decode(i, r, &mut |d| {
                        self.place_decoded(d, reads, &slots, placements);
                        true
                    });
                });
            };
            match &self.pool {
                Some(p) => p.install(place_all),
                None => place_all(),
            }
            self.discard_unfinished(&slots);
            return Ok(());
        }
        // A reader thread (or the remote readers) reads and opens the blobs; this thread
        // alone creates, writes and finishes the batch's files. Two threads creating files in
        // the same directories took 2.6 x the kernel time of one on ext4 (57,274 small files:
        // 2.0 s of system time against 0.75 s); each writer thread has a batch of its own,
        // files of other directories.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(DECODED_IN_FLIGHT);
        std::thread::scope(|scope| {
            scope.spawn(|| self.decode_all(reads, tx));
            for d in rx {
                self.place_decoded(d, reads, &slots, placements);
            }
        });
        self.discard_unfinished(&slots);
        Ok(())
    }

    /// How many threads write batches at once: one per core (at most
    /// [`MAX_LOCAL_WRITERS`]) on a local store, each with a reader thread of its own; one on a
    /// remote store, whose batches are large and read by [`REMOTE_READS`] threads. On ext4,
    /// two `tar -x` of two halves of 57,274 files into two directories took 1.55 s where one
    /// of the whole took 2.45 s, with the same system time: creating files scales with the
    /// threads when they create them in different directories.
    pub(super) fn writers(&self) -> usize {
        if self.pool.is_some() {
            1
        } else {
            rayon::current_num_threads().clamp(1, MAX_LOCAL_WRITERS)
        }
    }

    /// Read and open the blobs of `reads` and send them to the writer thread, until it stops
    /// taking them: one read after the other on a local store (every writer thread has a
    /// reader of its own), in parallel on the remote readers.
    fn decode_all(&self, reads: &[PackRead], tx: SyncSender<Decoded>) {
        match &self.pool {
            Some(p) => p.install(|| {
                reads
                    .par_iter()
                    .enumerate()
                    .for_each_with(tx, |tx, (i, r)| {
                        self.decode(i, r, &mut |d| tx.send(d).is_ok());
                    })
            }),
            None => {
                for (i, r) in reads.iter().enumerate() {
                    if !self.decode(i, r, &mut |d| tx.send(d).is_ok()) {
                        return;
                    }
                }
            }
        }
    }

    /// Files left unfinished (the disk filled up and reads stopped): no temporary file stays
    /// behind.
    fn discard_unfinished(&self, slots: &[Slot<'_>]) {
        for s in slots {
            if !s.finished.swap(true, Ordering::AcqRel) {
                self.discard(s);
            }
        }
    }

    fn temp_name(&self, dest: &Path) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{TEMP_MARK}{}-{n}", own_pid());
        match dest.parent() {
            Some(p) => p.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Read one region of a pack and open its blobs (on a decoder thread), for the writer
    /// thread: in messages of at most [`DECODED_MESSAGE_BYTES`] of decompressed data, so that
    /// a region of very compressible blobs is never held whole.
    /// Returns whether the writer took them all.
    fn decode(&self, i: usize, r: &PackRead, emit: &mut dyn FnMut(Decoded) -> bool) -> bool {
        if self.is_disk_full() {
            return false;
        }
        let mut buf = match self.repo.read_pack_range(&r.pack, r.start, r.end - r.start) {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                let blobs = (0..r.blobs.len()).map(|k| (k, Err(msg.clone()))).collect();
                return emit(Decoded {
                    read: i,
                    buf: Vec::new(),
                    blobs,
                });
            }
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_fetched
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let mut blobs = Vec::with_capacity(r.blobs.len());
        let mut owned = 0usize;
        for (k, b) in r.blobs.iter().enumerate() {
            let at = (u64::from(b.entry.offset) - r.start) as usize;
            let base = buf.as_ptr() as usize;
            let plain = match buf.get_mut(at..at + b.entry.packed_len as usize) {
                Some(s) => match self.repo.open_blob_in_place(b, s) {
                    Ok(data) if super::is_zeros(&data) => Ok(Plain::Zeros(data.len())),
                    Ok(Cow::Borrowed(data)) => {
                        // The plaintext of a blob stored raw is where it was decrypted.
                        let start = data.as_ptr() as usize - base;
                        Ok(Plain::InRead(start..start + data.len()))
                    }
                    Ok(Cow::Owned(data)) => {
                        owned += data.len();
                        Ok(Plain::Owned(data))
                    }
                    Err(e) => Err(e.to_string()),
                },
                None => Err(format!("pack {} is shorter than its index says", b.pack)),
            };
            blobs.push((k, plain));
            if owned >= DECODED_MESSAGE_BYTES && k + 1 < r.blobs.len() {
                // Send what is open; the raw blobs among it are copied out of the read.
                let part = blobs
                    .drain(..)
                    .map(|(k, p)| {
                        let p = p.map(|p| match p {
                            Plain::InRead(range) => Plain::Owned(buf[range].to_vec()),
                            p => p,
                        });
                        (k, p)
                    })
                    .collect();
                owned = 0;
                let part = Decoded {
                    read: i,
                    buf: Vec::new(),
                    blobs: part,
                };
                if !emit(part) {
                    return false;
                }
            }
        }
        emit(Decoded {
            read: i,
            buf,
            blobs,
        })
    }

    /// Write blobs a decoder opened into every file that holds them (on the writer thread).
    fn place_decoded(
        &self,
        d: Decoded,
        reads: &[PackRead],
        slots: &[Slot<'_>],
        placements: &IdMap<BlobId, Vec<(usize, u64)>>,
    ) {
        let r = &reads[d.read];
        for (k, plain) in d.blobs {
            let targets = &placements[&r.blobs[k].entry.id];
            let (data, len) = match &plain {
                Err(msg) => {
                    for &(i, _) in targets {
                        self.fail(&slots[i], msg);
                        self.placed(&slots[i]);
                    }
                    continue;
                }
                Ok(Plain::Zeros(n)) => (None, *n),
                Ok(Plain::InRead(range)) => (Some(&d.buf[range.clone()]), range.len()),
                Ok(Plain::Owned(v)) => (Some(&v[..]), v.len()),
            };
            for &(i, off) in targets {
                self.place(&slots[i], off, data, len as u64);
            }
        }
    }

    /// Write one blob's data (`len` bytes, `None` when all zeros) into a file at `offset`.
    fn place(&self, s: &Slot<'_>, offset: u64, data: Option<&[u8]>, len: u64) {
        if !s.failed.load(Ordering::Relaxed) {
            match data {
                // Left as a hole: the file stays sparse where the original was zeros.
                None => s.hole.store(true, Ordering::Relaxed),
                Some(data) => {
                    if let Err(e) = self.write_at(s, offset, data) {
                        self.fail_io(s, e);
                    }
                }
            }
            self.progress.add_bytes(len);
        }
        self.placed(s);
    }

    /// One placement of a file is done; the last one finishes the file.
    fn placed(&self, s: &Slot<'_>) {
        if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(s);
        }
    }

    fn write_at(&self, s: &Slot<'_>, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut f = s.file.lock().unwrap_or_else(|p| p.into_inner());
        self.open(s, &mut f)?;
        let r = f
            .handle
            .as_ref()
            .map_or(Ok(()), |h| h.write_all_at(data, offset));
        if self.open_files.load(Ordering::Relaxed) > MAX_OPEN_FILES && f.handle.take().is_some() {
            self.open_files.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }

    /// Make sure the file is open: created on first use (never through a symlink, never over
    /// an existing entry; under its real name when it is new, else under a temporary name),
    /// opened again after it was closed.
    fn open(&self, s: &Slot<'_>, f: &mut SlotFile) -> io::Result<()> {
        if f.handle.is_some() {
            return Ok(());
        }
        let mut o = OpenOptions::new();
        o.write(true)
            .mode(write::creation_mode(&s.job.node))
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        let handle = match &f.at {
            Some(at) => o.open(at)?,
            None => {
                o.create_new(true);
                let direct = if s.job.new {
                    match o.open(&s.job.dest) {
                        Ok(h) => Some(h),
                        // Something appeared under the real name since the file was planned
                        // (another `--path` of this restore, say): it is replaced like any
                        // existing entry.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                let (h, at) = match direct {
                    Some(h) => (h, s.job.dest.clone()),
                    None => {
                        let temp = self.temp_name(&s.job.dest);
                        (o.open(&temp)?, temp)
                    }
                };
                f.at = Some(at);
                h
            }
        };
        f.handle = Some(handle);
        self.open_files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Every blob of the file is in: size, metadata (the mtime last: a file under its real
    /// name with the snapshot's size and mtime is complete), then the rename to its real name
    /// if it was written under a temporary one.
    fn finish(&self, s: &Slot<'_>) {
        if s.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        if s.failed.load(Ordering::Relaxed) {
            return self.discard(s);
        }
        let node = &s.job.node;
        let done = (|| -> io::Result<()> {
            let mut f = s.file.lock().unwrap_or_else(|p| p.into_inner());
            self.open(s, &mut f)?;
            let h = f.handle.take().expect("opened above");
            self.open_files.fetch_sub(1, Ordering::Relaxed);
            if s.hole.load(Ordering::Relaxed) {
                h.set_len(node.size)?;
            }
            let created = (write::creation_mode(node), s.job.dir);
            write::apply_file_metadata(&h, &s.job.dest, node, self.privileged, created)
                .map_err(|e| io::Error::new(e.kind(), format!("metadata: {e}")))?;
            drop(h);
            match &f.at {
                Some(at) if *at != s.job.dest => std::fs::rename(at, &s.job.dest),
                _ => Ok(()),
            }
        })();
        match done {
            Ok(()) => {
                self.counters.files_written.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_written
                    .fetch_add(node.size, Ordering::Relaxed);
                self.progress.files.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.fail_io(s, e);
                self.discard(s);
            }
        }
    }

    /// Remove what a failed file created: its temporary file, or the incomplete file under
    /// its real name (nothing was there before).
    fn discard(&self, s: &Slot<'_>) {
        let mut f = s.file.lock().unwrap_or_else(|p| p.into_inner());
        if f.handle.take().is_some() {
            self.open_files.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(at) = f.at.take() {
            let _ = std::fs::remove_file(&at);
        }
    }

    fn fail(&self, s: &Slot<'_>, msg: impl ToString) {
        if !s.failed.swap(true, Ordering::AcqRel) {
            self.warnings.push(s.job.dest.display().to_string(), msg);
        }
    }

    fn fail_io(&self, s: &Slot<'_>, e: io::Error) {
        if super::is_disk_full(&e) {
            let mut full = self.disk_full.lock().unwrap_or_else(|p| p.into_inner());
            if full.is_none() {
                *full = Some((s.job.dest.display().to_string(), e.to_string()));
            }
            // Reported once, as the restore's error.
            s.failed.store(true, Ordering::Release);
            return;
        }
        self.fail(s, e);
    }
}

/// A region of a pack read into memory: (pack, offset, bytes).
type Region = (PackId, u64, Vec<u8>);
/// A blob read and verified: its id and plaintext.
type Opened = (BlobId, Vec<u8>);

/// Read one planned region of a pack and open each of its blobs (verified); returns the blobs
/// that opened and the region's bytes, `None` when the read failed. For read-ahead: a blob
/// left out here is loaded alone by its reader, which reports what is wrong with it.
fn read_region(repo: &Repository, r: &PackRead) -> Option<(Vec<Opened>, Vec<u8>)> {
    let buf = repo
        .read_pack_range(&r.pack, r.start, r.end - r.start)
        .ok()?;
    let blobs = r
        .blobs
        .iter()
        .filter_map(|b| {
            let at = (u64::from(b.entry.offset) - r.start) as usize;
            let sealed = buf.get(at..at + b.entry.packed_len as usize)?;
            Some((b.entry.id, repo.open_blob(b, sealed).ok()?))
        })
        .collect();
    Some((blobs, buf))
}

/// Load every tree below `root` that the catalog does not cache yet, level by level, each
/// level a pack region at a time, and cache them: on a remote store with a cold cache, the
/// directories of a snapshot cost a few ranged reads per level instead of one request each.
/// Returns the reads made. Trees that fail to load are left to the walk, which loads them
/// one by one and reports what is really wrong.
pub(crate) fn prefetch_trees(
    repo: &Repository,
    catalog: &Catalog,
    root: &BlobId,
) -> Result<u64, EngineError> {
    if !repo.is_remote() {
        return Ok(0);
    }
    let mut prefetch = TreePrefetch {
        repo,
        catalog,
        seen: std::collections::HashSet::new(),
        regions: Vec::new(),
        reads_made: 0,
        widen_next_read: true,
    };
    let mut level = vec![*root];
    while !level.is_empty() {
        let mut next = Vec::new();
        let mut locs = prefetch.uncached(level, &mut next)?;
        let mut got = prefetch.open_from_regions(&mut locs);
        got.extend(prefetch.read_level(locs));
        for (id, bytes) in got {
            catalog.cache_tree(&id, &bytes)?;
            subtrees(&bytes, &mut next);
        }
        level = next;
    }
    Ok(prefetch.reads_made)
}

/// Append the ids of the directories in an encoded tree to `next`.
fn subtrees(bytes: &[u8], next: &mut Vec<BlobId>) {
    use crate::format::tree::{NodeKind, Tree};
    if let Ok(t) = Tree::decode(bytes) {
        next.extend(
            t.nodes
                .iter()
                .filter(|n| n.kind == NodeKind::Dir)
                .filter_map(|n| n.subtree),
        );
    }
}

/// The state of [`prefetch_trees`] across the levels of the tree.
struct TreePrefetch<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    /// Trees already handled (a subtree shared by two directories is read once).
    seen: std::collections::HashSet<BlobId>,
    /// Pack regions read so far, newest last, at most `4 * MAX_READ` bytes in all.
    regions: Vec<Region>,
    /// Ranged reads made.
    reads_made: u64,
    /// The first level that reads anything widens its reads backwards (see `read_level`).
    widen_next_read: bool,
}

impl TreePrefetch<'_> {
    /// The locations of the trees of `level` not in the catalog's cache; the children of the
    /// cached ones go to `next`.
    fn uncached(
        &mut self,
        level: Vec<BlobId>,
        next: &mut Vec<BlobId>,
    ) -> Result<Vec<BlobLocation>, EngineError> {
        let mut locs = Vec::new();
        for id in level {
            if !self.seen.insert(id) {
                continue;
            }
            match self.catalog.cached_tree(&id)? {
                Some(bytes) => subtrees(&bytes, next),
                None => locs.extend(self.catalog.blob_location(&id)?),
            }
        }
        Ok(locs)
    }

    /// Open the blobs of `locs` that lie inside a region read before, and remove them from
    /// `locs`.
    fn open_from_regions(&self, locs: &mut Vec<BlobLocation>) -> Vec<Opened> {
        let mut opened = Vec::new();
        locs.retain(|b| {
            let start = u64::from(b.entry.offset);
            let end = start + u64::from(b.entry.packed_len);
            let Some(r) = self
                .regions
                .iter()
                .find(|(p, s, buf)| *p == b.pack && *s <= start && end <= s + buf.len() as u64)
            else {
                return true;
            };
            let at = (start - r.1) as usize;
            match self
                .repo
                .open_blob(b, &r.2[at..at + b.entry.packed_len as usize])
            {
                Ok(plain) => {
                    opened.push((b.entry.id, plain));
                    false
                }
                Err(_) => true,
            }
        });
        opened
    }

    /// Read `locs` in ranged reads, in parallel, and keep the larger regions for the next
    /// levels.
    fn read_level(&mut self, locs: Vec<BlobLocation>) -> Vec<Opened> {
        let mut reads = plan_reads(locs, REMOTE_GAP, MAX_READ);
        if self.widen_next_read && !reads.is_empty() {
            self.widen_next_read = false;
            // A backup writes a directory's tree after the trees below it: in the same pack,
            // those are before the root's. One read of the region that ends with the root
            // brings most of them at once.
            for r in &mut reads {
                r.start = r.end.saturating_sub(MAX_READ).min(r.start);
            }
        }
        self.reads_made += reads.len() as u64;
        let loaded: Vec<(Vec<Opened>, Option<Region>)> = reads
            .par_iter()
            .map(|r| match read_region(self.repo, r) {
                Some((blobs, buf)) => (blobs, Some((r.pack, r.start, buf))),
                None => (Vec::new(), None),
            })
            .collect();
        let mut got = Vec::new();
        for (blobs, region) in loaded {
            got.extend(blobs);
            if let Some(region) = region
                && region.2.len() as u64 > 4096
            {
                self.regions.push(region);
                // Bounded: the newest regions only.
                while self.regions.iter().map(|r| r.2.len()).sum::<usize>() > 4 * MAX_READ as usize
                {
                    self.regions.remove(0);
                }
            }
        }
        got
    }
}

/// Read the data blobs `ids`, in that order up to `budget` bytes of data, from a remote store
/// a pack region at a time, each verified: for a reader that needs them in an order of its
/// own (a tar stream). Returns the blobs that could be read (the caller loads any other one by itself and reports its error)
/// and the reads made; on a local store, nothing.
pub(crate) fn prefetch_blobs(
    repo: &Repository,
    catalog: &Catalog,
    ids: &[BlobId],
    budget: u64,
) -> Result<(HashMap<BlobId, Vec<u8>>, u64), EngineError> {
    if !repo.is_remote() || ids.is_empty() {
        return Ok((HashMap::new(), 0));
    }
    let mut locs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    for id in ids {
        if seen.insert(*id)
            && let Some(loc) = catalog.blob_location(id)?
        {
            bytes += u64::from(loc.entry.raw_len);
            if bytes > budget && !locs.is_empty() {
                break; // the rest is read when the reader gets there
            }
            locs.push(loc);
        }
    }
    let reads = plan_reads(locs, REMOTE_GAP, MAX_READ);
    let n = reads.len() as u64;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(REMOTE_READS)
        .build()
        .map_err(|e| EngineError::Internal(format!("cannot start reader threads: {e}")))?;
    let loaded: Vec<Vec<Opened>> = pool.install(|| {
        reads
            .par_iter()
            .map(|r| {
                read_region(repo, r)
                    .map(|(blobs, _)| blobs)
                    .unwrap_or_default()
            })
            .collect()
    });
    Ok((loaded.into_iter().flatten().collect(), n))
}

/// Why a file in place could not be compared with the snapshot's (it becomes a warning).
#[derive(Debug, thiserror::Error)]
pub(super) enum CompareError {
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// The snapshot names a blob the index does not have (damage).
    #[error("blob {0} is missing from the repository index")]
    MissingBlob(BlobId),
}

/// Whether the regular file at `path` holds exactly `node`'s content: its size, then each
/// blob's bytes hashed with the repository's key and compared with the blob's id.
pub(super) fn same_content(
    repo: &Repository,
    catalog: &Catalog,
    path: &Path,
    node: &Node,
) -> Result<bool, CompareError> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let m = f.metadata()?;
    if !m.is_file() || m.len() != node.size {
        return Ok(false);
    }
    let mut buf = Vec::new();
    for id in &node.content {
        let Some(loc) = catalog.blob_location(id)? else {
            return Err(CompareError::MissingBlob(*id));
        };
        buf.resize(loc.entry.raw_len as usize, 0);
        if let Err(e) = f.read_exact(&mut buf) {
            return if e.kind() == io::ErrorKind::UnexpectedEof {
                Ok(false)
            } else {
                Err(e.into())
            };
        }
        if repo.keys().blob_id(BlobKind::Data, &buf) != *id {
            return Ok(false);
        }
    }
    Ok(true)
}

/// This process's id, asked of the kernel once (a temporary name per restored file needs it).
pub(super) fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

#[cfg(test)]
mod tests {
    use super::{PackRead, plan_reads};
    use crate::format::{BlobEntry, BlobKind, Compression};
    use crate::id::{BlobId, PackId};
    use crate::repo::BlobLocation;

    fn loc(pack: u8, offset: u32, len: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            entry: BlobEntry {
                id: BlobId([(offset % 251) as u8; 32]),
                kind: BlobKind::Data,
                compression: Compression::None,
                offset,
                packed_len: len,
                data_len: len,
                raw_len: len,
            },
        }
    }

    fn spans(r: &[PackRead]) -> Vec<(u8, u64, u64, usize)> {
        r.iter()
            .map(|r| (r.pack.0[0], r.start, r.end, r.blobs.len()))
            .collect()
    }

    #[test]
    fn adjacent_and_near_blobs_share_a_read_far_ones_do_not() {
        let blobs = vec![
            loc(1, 100, 50),
            loc(1, 0, 100),
            loc(1, 160, 40),
            loc(1, 1000, 10),
        ];
        assert_eq!(
            spans(&plan_reads(blobs, 10, 1 << 20)),
            [(1, 0, 200, 3), (1, 1000, 1010, 1)]
        );
    }

    #[test]
    fn packs_are_never_mixed_and_reads_are_bounded() {
        let blobs = vec![loc(2, 0, 10), loc(1, 0, 10), loc(1, 10, 10), loc(1, 20, 10)];
        assert_eq!(
            spans(&plan_reads(blobs, 0, 20)),
            [(1, 0, 20, 2), (1, 20, 30, 1), (2, 0, 10, 1)]
        );
        // One blob larger than the bound is read alone.
        assert_eq!(
            spans(&plan_reads(vec![loc(1, 0, 50)], 0, 20)),
            [(1, 0, 50, 1)]
        );
    }
}
