//! Import: read a gzip-compressed tar archive in the layout of the old nightly archives
//! (`backup/<source>/<path>`) and store it as a snapshot with one source per `<source>`
//! directory, deduplicated against everything already stored.
//!
//! A thread decompresses the archive into a bounded channel of [`CHUNK_BYTES`] chunks
//! (`gzip_pipe`); the caller's thread parses tar records and cuts file contents with the
//! repository's chunker in a window of `READ_WINDOW_BYTES`, saving chunks on rayon through the
//! engine's saver (`import_entry`, with backup's loop, `engine::content`); the uploader thread
//! stores packs, then index files. The snapshot is written last, and only after the whole
//! archive, gzip checksum included, has been read: a truncated or corrupt archive leaves no
//! snapshot, only packs that the next backup may reuse and prune removes.
//!
//! Memory: contents stream, but the tree of nodes is built in memory (`import_tree`) and
//! written bottom-up at the end, so memory grows with the number of entries in the archive (a
//! few hundred bytes per entry plus 32 bytes per content chunk), not with their size.
//!
//! A tar record holds less than a backup does: ctime is set to the mtime, owner names are
//! ignored (uid/gid are kept as numbers), and files get synthetic inode numbers; a hardlink
//! entry shares its target's inode, so restore recreates the link.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::export::{DEFAULT_PREFIX, normalize_prefix};
use super::gzip_pipe::{CHUNK_BYTES, decompress_pipe};
use super::import_entry::Importer;
pub use super::name::time_from_name;
use crate::catalog::Catalog;
use crate::engine::saver::{Saver, SaverStats, run_uploader};
use crate::engine::{EngineError, Progress, Warning, username};
use crate::format::snapshot::{Snapshot, SnapshotSummary, SourceInfo};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockKind, PackBuilder, Repository};

/// Tag every imported snapshot gets.
pub const IMPORTED_TAG: &str = "imported";

/// Where the snapshot time comes from.
#[derive(Clone, Debug, Serialize)]
pub enum ImportTime {
    /// The last date (and time) in the archive's file name, in local time; the file's mtime
    /// when the name has none.
    FromName,
    /// This time.
    At(DateTime<Utc>),
}

/// What to import.
#[derive(Clone, Debug, Serialize)]
pub struct ImportOptions {
    /// The `.tar.gz` archive.
    pub archive: PathBuf,
    /// Snapshot time.
    pub time: ImportTime,
    /// Tags (`imported` is always added).
    pub tags: Vec<String>,
    /// Host name recorded.
    pub host: String,
    /// Directory of the archive holding the sources (`backup/`).
    pub prefix: String,
    /// Keep what grants rights: setuid/setgid bits, device nodes, `security.*` and
    /// `trusted.*` xattrs. Without it they are dropped (and counted): the archive is not
    /// trusted, and a later restore as root would recreate them.
    pub privileged: bool,
}

impl ImportOptions {
    /// Options for `archive` with the defaults.
    pub fn new(archive: impl Into<PathBuf>, host: impl Into<String>) -> Self {
        Self {
            archive: archive.into(),
            time: ImportTime::FromName,
            tags: Vec::new(),
            host: host.into(),
            prefix: DEFAULT_PREFIX.into(),
            privileged: false,
        }
    }
}

/// What an import stored.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportSummary {
    /// The new snapshot.
    #[serde(with = "crate::id::as_hex")]
    pub snapshot_id: SnapshotId,
    /// Its time (RFC 3339).
    pub time: String,
    /// Where the time came from: `name`, `given` or `file mtime`.
    pub time_source: &'static str,
    /// The sources (directories under the prefix).
    pub sources: Vec<String>,
    /// Tar entries stored.
    pub entries: u64,
    /// Regular files (hardlinks included).
    pub files: u64,
    /// Directories, implied ones included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard link entries.
    pub hardlinks: u64,
    /// FIFOs and device nodes.
    pub special: u64,
    /// Bytes of file content.
    pub total_bytes: u64,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Bytes written for new blobs (compressed, encrypted).
    pub stored_bytes_added: u64,
    /// Pack files written.
    pub packs_written: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// What was dropped because `privileged` was not given.
    pub dropped: Dropped,
    /// Entries skipped.
    pub warnings: Vec<Warning>,
}

/// What an import without `privileged` left out, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Dropped {
    /// Entries whose setuid/setgid bits were cleared.
    pub set_id_bits: u64,
    /// Character and block device entries skipped (hard links to them included).
    pub device_nodes: u64,
    /// `security.*` and `trusted.*` extended attributes left out.
    pub xattrs: u64,
}

impl Dropped {
    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        *self == Dropped::default()
    }
}

/// Counts the compressed bytes read, for progress.
struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.progress.add_bytes(n as u64);
        Ok(n)
    }
}

/// The archive file, opened and checked to be gzip, and the snapshot time it gives.
struct OpenedArchive<'a> {
    /// Its absolute path, as errors and the snapshot show it.
    shown: String,
    /// Its size in bytes.
    bytes: u64,
    /// The snapshot time.
    time: DateTime<Utc>,
    /// Where the time came from (see [`ImportSummary::time_source`]).
    time_source: &'static str,
    /// The compressed stream, counted for progress.
    input: BufReader<Counting<'a, File>>,
}

impl<'a> OpenedArchive<'a> {
    /// Open `opts.archive`, find the snapshot time and check that it starts as gzip does;
    /// its size becomes the progress total.
    fn open(opts: &ImportOptions, progress: &'a Progress) -> Result<Self, EngineError> {
        let path = std::path::absolute(&opts.archive).unwrap_or_else(|_| opts.archive.clone());
        let shown = path.display().to_string();
        let io_err = |source| EngineError::Io {
            path: shown.clone(),
            source,
        };
        let file = File::open(&opts.archive).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(EngineError::Usage(format!("{shown} is not a file")));
        }
        let (time, time_source) = snapshot_time(opts, &meta).map_err(io_err)?;
        let mut input = BufReader::with_capacity(
            CHUNK_BYTES,
            Counting {
                inner: file,
                progress,
            },
        );
        let magic = input.fill_buf().map_err(io_err)?;
        if !magic.starts_with(&[0x1f, 0x8b]) {
            return Err(EngineError::Usage(format!(
                "{shown} is not a gzip file (coffer import reads .tar.gz archives)"
            )));
        }
        progress.total_bytes.store(meta.len(), Ordering::Relaxed);
        Ok(Self {
            shown,
            bytes: meta.len(),
            time,
            time_source,
            input,
        })
    }
}

/// The snapshot time `opts` asks for and where it came from: given, the last date in the
/// archive's name (local time), else the archive's mtime.
fn snapshot_time(
    opts: &ImportOptions,
    meta: &std::fs::Metadata,
) -> io::Result<(DateTime<Utc>, &'static str)> {
    let naive = match &opts.time {
        ImportTime::At(t) => return Ok((*t, "given")),
        ImportTime::FromName => {
            let name = opts.archive.file_name().map(|n| n.to_string_lossy());
            name.as_deref().and_then(time_from_name)
        }
    };
    Ok(match naive {
        Some(naive) => {
            let local = chrono::Local.from_local_datetime(&naive).earliest();
            (
                local.map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
                "name",
            )
        }
        None => (DateTime::<Utc>::from(meta.modified()?), "file mtime"),
    })
}

/// Import an archive as a new snapshot. Entries outside the prefix and hard links to missing
/// targets are skipped with a warning; a damaged archive or an unsafe name stops the import
/// before any snapshot is written.
pub fn import(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ImportOptions,
    progress: &Progress,
) -> Result<ImportSummary, EngineError> {
    let start = Instant::now();
    let prefix = normalize_prefix(&opts.prefix)?;
    let archive = OpenedArchive::open(opts, progress)?;

    // Read and store the content and trees under a shared lock.
    let lock = repo.lock(LockKind::Shared, "import")?;
    catalog.refresh(repo)?;
    let (saver, rx) = Saver::new(repo, catalog);
    let mut imp = Importer::new(
        &saver,
        repo.chunker(),
        progress,
        archive.shown.clone(),
        &prefix,
        archive.time.timestamp(),
        opts.privileged,
    );
    let (root, sources) = read_and_store(repo, catalog, &saver, rx, &mut imp, archive.input)?;

    // Then the snapshot, last.
    let warnings = imp.warnings.take();
    let mut s = imp.s;
    let summary = snapshot_summary(&s, &saver.stats, warnings.len() as u64, start);
    let snapshot = Snapshot {
        time_ns: archive.time.timestamp_nanos_opt().unwrap_or(0),
        host: opts.host.clone(),
        username: username(),
        tags: imported_tags(&opts.tags),
        parent: None,
        tree: root,
        sources: sources
            .iter()
            .map(|name| SourceInfo {
                name: name.clone(),
                path: format!("{}:{prefix}{name}", archive.shown),
            })
            .collect(),
        summary: summary.clone(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    // Last write of the import: everything it names is already stored and indexed.
    lock.check_held()?;
    let id = repo.save_snapshot(&snapshot)?;
    catalog.add_snapshot(&id, &snapshot)?;

    // What the import did.
    s.snapshot_id = id;
    s.time = archive.time.to_rfc3339();
    s.time_source = archive.time_source;
    s.sources = sources;
    s.archive_bytes = archive.bytes;
    s.blobs_added = summary.blobs_added;
    s.bytes_added = summary.bytes_added;
    s.stored_bytes_added = summary.stored_bytes_added;
    s.packs_written = saver.stats.packs_written.load(Ordering::Relaxed);
    s.index_files_written = saver.stats.index_files_written.load(Ordering::Relaxed);
    s.duration_secs = start.elapsed().as_secs_f64();
    s.warnings = warnings;
    Ok(s)
}

/// Read the archive into `imp` while a thread gunzips `input` and the uploader stores packs
/// and index files; returns the root tree and the source names once everything the snapshot
/// will name is stored. On an error the saver is abandoned and the threads stop.
fn read_and_store(
    repo: &Repository,
    catalog: &Catalog,
    saver: &Saver<'_>,
    rx: Receiver<PackBuilder>,
    imp: &mut Importer<'_>,
    input: impl BufRead + Send,
) -> Result<(BlobId, Vec<String>), EngineError> {
    let stats = saver.stats.clone();
    std::thread::scope(|scope| {
        let uploader = std::thread::Builder::new()
            .name("coffer-upload".into())
            .spawn_scoped(scope, || run_uploader(repo, catalog, rx, &stats))
            .map_err(|e| EngineError::Io {
                path: "uploader thread".into(),
                source: e,
            })?;
        let (decompressor, reader) = decompress_pipe();
        let gunzip = std::thread::Builder::new()
            .name("coffer-gunzip".into())
            .spawn_scoped(scope, move || decompressor.run(input));
        let walked = match &gunzip {
            Err(e) => Err(EngineError::Io {
                path: "decompressor thread".into(),
                source: io::Error::new(e.kind(), e.to_string()),
            }),
            // The reader is dropped when `read_archive` returns, which also stops the
            // decompressor early on an error.
            Ok(_) => imp.read_archive(reader).and_then(|()| {
                let out = imp.finish()?;
                saver.finish()?;
                Ok(out)
            }),
        };
        if walked.is_err() {
            saver.abandon();
        }
        if let Ok(handle) = gunzip {
            let _ = handle.join();
        }
        let uploaded = uploader
            .join()
            .unwrap_or_else(|_| Err(EngineError::Internal("the uploader thread panicked".into())));
        uploaded?;
        walked
    })
}

/// The snapshot's summary of an import: every file counts as read.
fn snapshot_summary(
    s: &ImportSummary,
    stats: &SaverStats,
    errors: u64,
    start: Instant,
) -> SnapshotSummary {
    SnapshotSummary {
        files: s.files,
        dirs: s.dirs,
        total_bytes: s.total_bytes,
        files_read: s.files,
        bytes_read: s.total_bytes,
        blobs_added: stats.blobs_added.load(Ordering::Relaxed),
        bytes_added: stats.bytes_added.load(Ordering::Relaxed),
        stored_bytes_added: stats.stored_bytes_added.load(Ordering::Relaxed),
        errors,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// The tags given, with [`IMPORTED_TAG`] added unless it is there.
fn imported_tags(tags: &[String]) -> Vec<String> {
    let mut tags = tags.to_vec();
    if !tags.iter().any(|t| t == IMPORTED_TAG) {
        tags.push(IMPORTED_TAG.into());
    }
    tags
}
