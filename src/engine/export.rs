//! Export: stream a snapshot, or paths inside it, as a gzip-compressed tar archive in the
//! layout of the old nightly archives (`backup/<source>/<path>`), so scripts that run
//! `tar -tzf` and `tar xzf` on them keep working.
//!
//! Two threads and constant memory: the caller's thread walks the trees one directory at a
//! time, loads and verifies blobs ([`BLOBS_IN_FLIGHT`] at a time, on rayon) and writes tar
//! records into chunks of [`CHUNK_BYTES`]; a compressor thread gzips them into the output. At
//! most [`CHUNKS_IN_FLIGHT`] chunks wait between the two. The only state that grows is the
//! first name of each hardlinked inode of the current source.
//!
//! Records are GNU tar headers. Names and link targets over 100 bytes use GNU long-name
//! records, which carry raw bytes, so non-UTF-8 names survive; sub-second or negative mtimes
//! and extended attributes go in a PAX record before the entry. GNU tar reads both. A failed
//! export never writes the gzip trailer, so a cut-off stream cannot pass for a complete
//! archive, and a file is only renamed to its final name once it is complete and synced.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use chrono::{DateTime, TimeZone};
use flate2::Compression;
use flate2::write::GzEncoder;
use rayon::prelude::*;
use serde::Serialize;
use tar::{EntryType, Header};

use super::walk::{components, resolve};
use super::{EngineError, Progress, Warning, Warnings, display_bytes, load_tree};
use crate::catalog::Catalog;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::{LockKind, RepoError, Repository};

/// Directory the old archives put the volumes in.
pub const DEFAULT_PREFIX: &str = "backup/";
/// The old tool's file name pattern (strftime, local time).
pub const DEFAULT_NAME_PATTERN: &str = "backup-%Y-%m-%dT%H-%M-%S.tar.gz";
/// gzip level of `gzip` and GNU tar.
pub const DEFAULT_LEVEL: u32 = 6;
/// Bytes of tar stream handed to the compressor at once.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks that may wait for the compressor.
pub const CHUNKS_IN_FLIGHT: usize = 8;
/// Blobs of one file loaded and verified in parallel.
const BLOBS_IN_FLIGHT: usize = 8;
/// Buffer between the compressor and the output.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;
/// Name of the symlink `--output-dir` keeps pointing at the newest export.
pub const LATEST_LINK: &str = "latest";

/// What to export.
#[derive(Clone, Debug, Serialize)]
pub struct ExportOptions {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// Paths inside the snapshot to export (all when empty); each keeps its full path.
    pub paths: Vec<String>,
    /// Directory the sources are put in (`backup/`; may be empty).
    pub prefix: String,
    /// gzip level, 0-9.
    pub level: u32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            snapshot: "latest".into(),
            paths: Vec::new(),
            prefix: DEFAULT_PREFIX.into(),
            level: DEFAULT_LEVEL,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportSummary {
    /// The snapshot exported.
    pub snapshot_id: String,
    /// Its time (RFC 3339).
    pub snapshot_time: String,
    /// Its time, nanoseconds since the epoch.
    #[serde(skip)]
    pub snapshot_time_ns: i64,
    /// The file written (none for a writer such as stdout).
    pub output: Option<String>,
    /// Tar entries written.
    pub entries: u64,
    /// Regular files (with content).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links (names of an inode after its first).
    pub hardlinks: u64,
    /// FIFOs and device nodes.
    pub special: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    /// Bytes of the compressed archive.
    pub archive_bytes: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Entries that could not be stored in a tar archive (sockets), or only in part.
    pub warnings: Vec<Warning>,
}

/// Normalise a `--prefix`: components joined by `/`, with a trailing `/` unless empty.
/// Absolute prefixes and `..` are refused.
pub fn normalize_prefix(prefix: &str) -> Result<String, EngineError> {
    if prefix.starts_with('/') {
        return Err(EngineError::Usage(format!(
            "--prefix {prefix:?} must be relative, like backup/"
        )));
    }
    let mut out = String::new();
    for c in components(prefix) {
        if !Node::name_is_safe(c.as_bytes()) {
            return Err(EngineError::Usage(format!(
                "--prefix {prefix:?}: {c:?} is not allowed"
            )));
        }
        out.push_str(c);
        out.push('/');
    }
    Ok(out)
}

/// The file name for an export of a snapshot taken at `time`, from a strftime `pattern` (the
/// old tool's `backup-%Y-%m-%dT%H-%M-%S.tar.gz`). Refuses invalid patterns and results that
/// are not a plain file name.
pub fn output_name<Tz: TimeZone>(pattern: &str, time: &DateTime<Tz>) -> Result<String, EngineError>
where
    Tz::Offset: std::fmt::Display,
{
    use chrono::format::{Item, StrftimeItems};
    let bad = |why: &str| EngineError::Usage(format!("--name {pattern:?}: {why}"));
    let items: Vec<Item<'_>> = StrftimeItems::new(pattern).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(bad("not a valid strftime pattern"));
    }
    let mut name = String::new();
    // Formatting reports (never panics on) what the items cannot express.
    write!(name, "{}", time.format_with_items(items.iter()))
        .map_err(|_| bad("not a valid strftime pattern"))?;
    if !Node::name_is_safe(name.as_bytes()) || name == LATEST_LINK {
        return Err(bad(&format!(
            "gives {name:?}, which is not a plain file name"
        )));
    }
    Ok(name)
}

/// A message from the tar thread to the compressor.
enum Chunk {
    Data(Vec<u8>),
    /// The archive is complete: write the gzip trailer.
    End,
}

const COMPRESSOR_STOPPED: &str = "the compressor stopped";

/// Collects the tar stream into chunks for the compressor, reusing the buffers it returns.
struct ChunkWriter {
    tx: SyncSender<Chunk>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES));
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(Chunk::Data(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, COMPRESSOR_STOPPED))
    }

    /// Send what is buffered and mark the stream complete.
    fn end(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_buf()?;
        }
        self.tx
            .send(Chunk::End)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, COMPRESSOR_STOPPED))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The output behind the compressor: counts bytes, and once aborted writes nothing more (the
/// encoder's drop would otherwise write a gzip trailer after a failure).
struct Output {
    inner: Box<dyn Write + Send>,
    written: u64,
    aborted: bool,
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.aborted {
            return Err(io::Error::other("export aborted"));
        }
        let n = self.inner.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.aborted {
            return Ok(());
        }
        self.inner.flush()
    }
}

enum CompressError {
    /// The tar side stopped without finishing.
    Aborted,
    /// Compressing or writing the output failed.
    Io(io::Error),
}

/// The compressor thread: gzip chunks into `out` until [`Chunk::End`]; returns the bytes
/// written.
fn compress(
    rx: Receiver<Chunk>,
    spare: SyncSender<Vec<u8>>,
    out: Box<dyn Write + Send>,
    level: u32,
) -> Result<u64, CompressError> {
    let output = Output {
        inner: out,
        written: 0,
        aborted: false,
    };
    let mut gz = GzEncoder::new(
        BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, output),
        Compression::new(level),
    );
    let mut run = || loop {
        match rx.recv() {
            Ok(Chunk::Data(mut buf)) => {
                gz.write_all(&buf).map_err(CompressError::Io)?;
                buf.clear();
                let _ = spare.try_send(buf);
            }
            Ok(Chunk::End) => return Ok(()),
            Err(_) => return Err(CompressError::Aborted),
        }
    };
    if let Err(e) = run() {
        gz.get_mut().get_mut().aborted = true;
        return Err(e);
    }
    let buffered = gz.finish().map_err(CompressError::Io)?;
    let mut output = buffered
        .into_inner()
        .map_err(|e| CompressError::Io(e.into_error()))?;
    output.flush().map_err(CompressError::Io)?;
    Ok(output.written)
}

/// Load and verify one data blob.
fn load_data(repo: &Repository, catalog: &Catalog, id: &BlobId) -> Result<Vec<u8>, EngineError> {
    let loc = catalog.blob_location(id)?.ok_or_else(|| {
        RepoError::corrupt(
            format!("blob {id}"),
            "not in the index (run `coffer check`)",
        )
    })?;
    Ok(repo.load_blob(&loc)?)
}

/// A file's content as a `Read`: its blobs loaded in order, a window at a time, checked to
/// add up to the size the tar header announced.
struct BlobReader<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    progress: &'a Progress,
    ids: &'a [BlobId],
    next: usize,
    ready: VecDeque<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    expected: u64,
    produced: u64,
    /// The file's path in the snapshot, for errors.
    path: &'a [u8],
    /// The engine error behind an `io::Error` returned to tar.
    failure: Option<EngineError>,
}

impl BlobReader<'_> {
    fn fail(&mut self, e: EngineError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }

    fn fail_size(&mut self, msg: String) -> io::Error {
        let object = format!("file {}", display_bytes(self.path));
        self.fail(EngineError::Repo(RepoError::corrupt(object, msg)))
    }

    fn next_blob(&mut self) -> Result<Option<Vec<u8>>, EngineError> {
        if self.ready.is_empty() && self.next < self.ids.len() {
            let end = (self.next + BLOBS_IN_FLIGHT).min(self.ids.len());
            let window = &self.ids[self.next..end];
            let (repo, catalog) = (self.repo, self.catalog);
            let loaded: Vec<Result<Vec<u8>, EngineError>> = if window.len() == 1 {
                vec![load_data(repo, catalog, &window[0])]
            } else {
                window
                    .par_iter()
                    .map(|id| load_data(repo, catalog, id))
                    .collect()
            };
            for blob in loaded {
                self.ready.push_back(blob?);
            }
            self.next = end;
        }
        Ok(self.ready.pop_front())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.next_blob() {
                Ok(Some(blob)) => {
                    self.progress.add_bytes(blob.len() as u64);
                    self.cur = blob;
                    self.pos = 0;
                }
                Ok(None) if self.produced == self.expected => return Ok(0),
                Ok(None) => {
                    let msg = format!(
                        "its blobs hold {} bytes, the tree says {}",
                        self.produced, self.expected
                    );
                    return Err(self.fail_size(msg));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        if self.produced + n as u64 > self.expected {
            let msg = format!("its blobs hold more than the {} bytes", self.expected);
            return Err(self.fail_size(msg));
        }
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        self.produced += n as u64;
        Ok(n)
    }
}

/// Format a time as a PAX decimal (`-1.5` is 1.5 s before the epoch).
fn pax_time(secs: i64, nsec: u32) -> String {
    let nsec = nsec.min(999_999_999);
    if secs >= 0 || nsec == 0 {
        format!("{secs}.{nsec:09}")
    } else {
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nsec)
    }
}

struct Exporter<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    progress: &'a Progress,
    tar: tar::Builder<ChunkWriter>,
    prefix: Vec<u8>,
    /// First archive name of each hardlinked inode of `source`.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    source: Vec<u8>,
    s: ExportSummary,
    warnings: Warnings,
}

impl Exporter<'_> {
    /// Write `node` at `rel` (path inside the snapshot) and everything below it.
    fn subtree(&mut self, rel: &mut Vec<u8>, node: &Node) -> Result<(), EngineError> {
        self.entry(rel, node)?;
        let (NodeKind::Dir, Some(subtree)) = (node.kind, node.subtree) else {
            return Ok(());
        };
        let tree = load_tree(self.repo, self.catalog, &subtree)?;
        for child in &tree.nodes {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&child.name);
            if Node::name_is_safe(&child.name) {
                self.subtree(rel, child)?;
            } else {
                self.warnings.push(
                    display_bytes(rel),
                    "refusing an entry whose name would escape the archive's directory",
                );
            }
            rel.truncate(len);
        }
        Ok(())
    }

    fn header(node: &Node, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(node.mode & 0o7777);
        h.set_uid(node.uid.into());
        h.set_gid(node.gid.into());
        h.set_mtime(node.mtime.max(0) as u64);
        h.set_size(0);
        // Zeros, as GNU tar writes them (an empty field is not a number to strict readers).
        let _ = h.set_device_major(0);
        let _ = h.set_device_minor(0);
        h
    }

    /// PAX records for what a GNU header cannot hold.
    fn pax(&self, rel: &[u8], node: &Node) -> Vec<(String, Vec<u8>)> {
        let mut records = Vec::new();
        if node.mtime_nsec != 0 || node.mtime < 0 {
            records.push((
                "mtime".to_string(),
                pax_time(node.mtime, node.mtime_nsec).into_bytes(),
            ));
        }
        for x in &node.xattrs {
            match std::str::from_utf8(&x.name) {
                Ok(name) => records.push((format!("SCHILY.xattr.{name}"), x.value.to_vec())),
                Err(_) => self.warnings.push(
                    display_bytes(rel),
                    format!(
                        "extended attribute {} has a non-UTF-8 name; not exported",
                        display_bytes(&x.name)
                    ),
                ),
            }
        }
        records
    }

    fn entry(&mut self, rel: &[u8], node: &Node) -> Result<(), EngineError> {
        if rel.is_empty() {
            return Ok(()); // the snapshot root: the prefix directory stands for it
        }
        let source = rel.split(|&b| b == b'/').next().unwrap_or_default();
        if source != self.source.as_slice() {
            self.source = source.to_vec();
            self.hardlinks.clear(); // each source extracts on its own
        }
        let mut name = self.prefix.clone();
        name.extend_from_slice(rel);
        let pax = self.pax(rel, node);
        match node.kind {
            NodeKind::Dir => {
                name.push(b'/');
                self.write_pax(&name, &pax)?;
                let mut h = Self::header(node, EntryType::Directory);
                self.append(&mut h, &name, io::empty())?;
                self.s.dirs += 1;
            }
            NodeKind::File => {
                if node.links > 1 && node.inode != 0 {
                    let key = (node.device, node.inode);
                    if let Some(first) = self.hardlinks.get(&key).cloned() {
                        let mut h = Self::header(node, EntryType::Link);
                        self.write_pax(&name, &pax)?;
                        self.append_link(&mut h, &name, &first)?;
                        self.s.hardlinks += 1;
                        self.s.entries += 1;
                        self.file_done();
                        return Ok(());
                    }
                    self.hardlinks.insert(key, name.clone());
                }
                self.write_pax(&name, &pax)?;
                let mut h = Self::header(node, EntryType::Regular);
                h.set_size(node.size);
                let mut reader = BlobReader {
                    repo: self.repo,
                    catalog: self.catalog,
                    progress: self.progress,
                    ids: &node.content,
                    next: 0,
                    ready: VecDeque::new(),
                    cur: Vec::new(),
                    pos: 0,
                    expected: node.size,
                    produced: 0,
                    path: rel,
                    failure: None,
                };
                let path = Path::new(OsStr::from_bytes(&name));
                if let Err(e) = self.tar.append_data(&mut h, path, &mut reader) {
                    return Err(match reader.failure.take() {
                        Some(f) => f,
                        None => self.io_error(&name, e),
                    });
                }
                self.s.files += 1;
                self.s.content_bytes += node.size;
            }
            NodeKind::Symlink => {
                let target = node.link_target.as_deref().map(|t| &t[..]).unwrap_or(b"");
                self.write_pax(&name, &pax)?;
                let mut h = Self::header(node, EntryType::Symlink);
                self.append_link(&mut h, &name, target)?;
                self.s.symlinks += 1;
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                let kind = match node.kind {
                    NodeKind::Fifo => EntryType::Fifo,
                    NodeKind::CharDevice => EntryType::Char,
                    _ => EntryType::Block,
                };
                let mut h = Self::header(node, kind);
                if node.kind != NodeKind::Fifo {
                    let dev = node.rdev;
                    h.set_device_major(rustix::fs::major(dev))
                        .and_then(|()| h.set_device_minor(rustix::fs::minor(dev)))
                        .map_err(|e| self.io_error(&name, e))?;
                }
                self.write_pax(&name, &pax)?;
                self.append(&mut h, &name, io::empty())?;
                self.s.special += 1;
            }
            NodeKind::Socket => {
                self.warnings.push(
                    display_bytes(rel),
                    "a socket cannot be stored in a tar archive; skipped",
                );
                return Ok(());
            }
        }
        self.s.entries += 1;
        if node.kind != NodeKind::Dir {
            self.file_done();
        }
        Ok(())
    }

    /// Count an entry other than a directory, as the snapshot's file count does.
    fn file_done(&self) {
        let ordering = std::sync::atomic::Ordering::Relaxed;
        self.progress.files.fetch_add(1, ordering);
    }

    fn io_error(&self, name: &[u8], e: io::Error) -> EngineError {
        let path = if e.kind() == io::ErrorKind::BrokenPipe {
            "the export output".to_string()
        } else {
            format!("archive entry {}", display_bytes(name))
        };
        EngineError::Io { path, source: e }
    }

    fn write_pax(&mut self, name: &[u8], records: &[(String, Vec<u8>)]) -> Result<(), EngineError> {
        if records.is_empty() {
            return Ok(());
        }
        self.tar
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), &v[..])))
            .map_err(|e| self.io_error(name, e))
    }

    fn append(&mut self, h: &mut Header, name: &[u8], data: impl Read) -> Result<(), EngineError> {
        let path = Path::new(OsStr::from_bytes(name));
        self.tar
            .append_data(h, path, data)
            .map_err(|e| self.io_error(name, e))
    }

    /// A symlink or hardlink entry whose target is written byte for byte (tar's own path
    /// handling would normalise `a//b` or `./x`), with a GNU long-link record when it does
    /// not fit the header.
    fn append_link(
        &mut self,
        h: &mut Header,
        name: &[u8],
        target: &[u8],
    ) -> Result<(), EngineError> {
        if target.contains(&0) {
            return Err(EngineError::Repo(RepoError::corrupt(
                format!("entry {}", display_bytes(name)),
                "link target contains a NUL byte",
            )));
        }
        let field = &mut h.as_old_mut().linkname;
        field.fill(0);
        let n = target.len().min(field.len());
        field[..n].copy_from_slice(&target[..n]);
        if target.len() > field.len() {
            let mut long = Header::new_gnu();
            let marker = b"././@LongLink";
            long.as_old_mut().name[..marker.len()].copy_from_slice(marker);
            long.set_mode(0o644);
            long.set_uid(0);
            long.set_gid(0);
            long.set_mtime(0);
            long.set_size(target.len() as u64 + 1);
            long.set_entry_type(EntryType::GNULongLink);
            long.set_cksum();
            self.tar
                .append(&long, target.chain(&[0u8][..]))
                .map_err(|e| self.io_error(name, e))?;
        }
        self.append(h, name, io::empty())
    }
}

/// The selected paths as component lists, sorted, without those inside another one; the whole
/// snapshot (one empty list) when none is given.
fn selections(paths: &[String]) -> Vec<Vec<&str>> {
    let mut all: Vec<Vec<&str>> = paths.iter().map(|p| components(p)).collect();
    if all.is_empty() {
        return vec![Vec::new()];
    }
    all.sort();
    all.dedup();
    let mut out: Vec<Vec<&str>> = Vec::new();
    for p in all {
        if !out.iter().any(|q| p.starts_with(q)) {
            out.push(p);
        }
    }
    out
}

/// Export a snapshot as a gzip tar stream into `out`. The stream is complete (gzip trailer
/// written, `out` flushed) only when this returns `Ok`.
pub fn export(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    out: Box<dyn Write + Send>,
    progress: &Progress,
) -> Result<ExportSummary, EngineError> {
    let start = Instant::now();
    let prefix = normalize_prefix(&opts.prefix)?;
    if opts.level > 9 {
        return Err(EngineError::Usage(format!(
            "gzip level {} is not in 0..=9",
            opts.level
        )));
    }
    let _lock = repo.lock(LockKind::Shared, "export")?;
    catalog.refresh(repo)?;
    let snap = catalog.resolve_snapshot(&opts.snapshot)?;
    // Resolve every path first, so a wrong --path fails before anything is written.
    let mut roots = Vec::new();
    for comps in selections(&opts.paths) {
        let node = resolve(repo, catalog, snap.snapshot.tree, &comps.join("/"))?;
        roots.push((comps, node));
    }
    if opts.paths.is_empty() {
        let total = &snap.snapshot.summary;
        let ordering = std::sync::atomic::Ordering::Relaxed;
        progress.total_bytes.store(total.total_bytes, ordering);
        progress.total_files.store(total.files, ordering);
    }
    let time_ns = snap.snapshot.time_ns;
    let time = DateTime::from_timestamp_nanos(time_ns);
    let summary = ExportSummary {
        snapshot_id: snap.id.to_hex(),
        snapshot_time: time.to_rfc3339(),
        snapshot_time_ns: time_ns,
        ..Default::default()
    };

    let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel(CHUNKS_IN_FLIGHT + 2);
    let level = opts.level;
    std::thread::scope(|scope| {
        let compressor = std::thread::Builder::new()
            .name("coffer-gzip".into())
            .spawn_scoped(scope, move || compress(rx, spare_tx, out, level))
            .map_err(|e| EngineError::Io {
                path: "compressor thread".into(),
                source: e,
            })?;
        let mut ex = Exporter {
            repo,
            catalog,
            progress,
            tar: tar::Builder::new(ChunkWriter {
                tx,
                spare: spare_rx,
                buf: Vec::with_capacity(CHUNK_BYTES),
            }),
            prefix: prefix.clone().into_bytes(),
            hardlinks: HashMap::new(),
            source: Vec::new(),
            s: summary,
            warnings: Warnings::default(),
        };
        let walked = (|| -> Result<(), EngineError> {
            // The prefix directories (`backup/`) first, as the old archives had them.
            let dir = crate::engine::walk::root_node(snap.snapshot.tree);
            let mut stamp = dir.clone();
            stamp.mtime = time_ns.div_euclid(1_000_000_000);
            let mut name = Vec::new();
            for c in components(&prefix) {
                name.extend_from_slice(c.as_bytes());
                name.push(b'/');
                let mut h = Exporter::header(&stamp, EntryType::Directory);
                ex.append(&mut h, &name, io::empty())?;
                ex.s.entries += 1;
            }
            // Then, for --path, the directories leading to each path, once.
            let mut emitted: HashSet<String> = HashSet::new();
            for (comps, node) in &roots {
                for depth in 1..comps.len() {
                    let parent = comps[..depth].join("/");
                    if emitted.insert(parent.clone()) {
                        let n = resolve(repo, catalog, snap.snapshot.tree, &parent)?;
                        ex.entry(parent.as_bytes(), &n)?;
                    }
                }
                let mut rel = comps.join("/").into_bytes();
                ex.subtree(&mut rel, node)?;
            }
            Ok(())
        })();
        let Exporter {
            tar,
            mut s,
            warnings,
            ..
        } = ex;
        // On failure the builder and its writer are dropped without `End`: the compressor
        // stops without writing the gzip trailer.
        let walked = walked.and_then(|()| {
            tar.into_inner()
                .and_then(ChunkWriter::end)
                .map_err(|e| EngineError::Io {
                    path: "the export output".into(),
                    source: e,
                })
        });
        let compressed = compressor.join().unwrap_or_else(|_| {
            Err(CompressError::Io(io::Error::other(
                "the compressor thread panicked",
            )))
        });
        match (walked, compressed) {
            // A failed output explains a stopped stream better than the stop does.
            (_, Err(CompressError::Io(e))) => Err(EngineError::Io {
                path: "the export output".into(),
                source: e,
            }),
            (Err(e), _) => Err(e),
            (Ok(()), Err(CompressError::Aborted)) => Err(EngineError::Usage(
                "the export stopped before the archive was complete".into(),
            )),
            (Ok(()), Ok(written)) => {
                s.archive_bytes = written;
                s.warnings = warnings.take();
                s.duration_secs = start.elapsed().as_secs_f64();
                Ok(s)
            }
        }
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Make a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Export into a new temporary file in `dir`, sync it, and rename it to the path `dest`
/// chooses from the summary. The temporary file is removed on failure.
fn export_atomically(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    dir: &Path,
    tmp: &Path,
    progress: &Progress,
    dest: impl FnOnce(&ExportSummary) -> Result<PathBuf, EngineError>,
) -> Result<ExportSummary, EngineError> {
    // Owner-only: an export holds every file of the snapshot in the clear.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err(tmp))?;
    let result = (|| {
        let writer = file.try_clone().map_err(io_err(tmp))?;
        let mut summary = export(repo, catalog, opts, Box::new(writer), progress)?;
        file.sync_all().map_err(io_err(tmp))?;
        let dest = dest(&summary)?;
        fs::rename(tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(dir)?;
        summary.output = Some(dest.display().to_string());
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Export into the file `path`, written under a temporary name beside it (`.NAME.tmp-PID`)
/// and renamed when complete.
pub fn export_to_file(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    path: &Path,
    progress: &Progress,
) -> Result<ExportSummary, EngineError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| EngineError::Usage(format!("{} is not a file name", path.display())))?;
    let dir = parent_dir(path);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    export_atomically(repo, catalog, opts, &dir, &tmp, progress, |_| {
        Ok(path.to_path_buf())
    })
}

/// Export into `dir` under a name made from the snapshot's local time with the strftime
/// `pattern`, then point the `latest` symlink in `dir` at it.
pub fn export_to_dir(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    dir: &Path,
    pattern: &str,
    progress: &Progress,
) -> Result<ExportSummary, EngineError> {
    // Refuse a bad pattern before the work rather than after it.
    output_name(pattern, &chrono::Local::now())?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(".coffer-export.tmp-{}", std::process::id()));
    let summary = export_atomically(repo, catalog, opts, dir, &tmp, progress, |s| {
        let local =
            DateTime::from_timestamp_nanos(s.snapshot_time_ns).with_timezone(&chrono::Local);
        Ok(dir.join(output_name(pattern, &local)?))
    })?;
    let name = summary
        .output
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .ok_or_else(|| EngineError::Usage("the export has no file name".into()))?;
    // A new symlink renamed over the old one: `latest` is never missing or half made.
    let link_tmp = dir.join(format!(".{LATEST_LINK}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&link_tmp);
    std::os::unix::fs::symlink(name, &link_tmp).map_err(io_err(&link_tmp))?;
    let latest = dir.join(LATEST_LINK);
    if let Err(e) = fs::rename(&link_tmp, &latest) {
        let _ = fs::remove_file(&link_tmp);
        return Err(io_err(&latest)(e));
    }
    sync_dir(dir)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    #[test]
    fn output_names_follow_the_pattern() {
        let t = Utc
            .with_ymd_and_hms(2025, 11, 16, 3, 4, 5)
            .single()
            .unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            (
                DEFAULT_NAME_PATTERN,
                Some("backup-2025-11-16T03-04-05.tar.gz"),
            ),
            (
                "claude-backup-%Y%m%d-%H%M%S.tar.gz",
                Some("claude-backup-20251116-030405.tar.gz"),
            ),
            ("volumes-%Y%m%d.tar.gz", Some("volumes-20251116.tar.gz")),
            ("plain.tar.gz", Some("plain.tar.gz")),
            ("%Y/%m/backup.tar.gz", None),
            ("backup-%", None),
            ("", None),
            ("..", None),
            ("latest", None),
        ];
        for (pattern, want) in cases {
            let got = output_name(pattern, &t).ok();
            assert_eq!(got.as_deref(), *want, "pattern {pattern:?}");
        }
        let east = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            output_name(DEFAULT_NAME_PATTERN, &t.with_timezone(&east)).unwrap(),
            "backup-2025-11-16T04-04-05.tar.gz"
        );
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix("backup/").unwrap(), "backup/");
        assert_eq!(normalize_prefix("backup").unwrap(), "backup/");
        assert_eq!(normalize_prefix("./a//b/").unwrap(), "a/b/");
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert!(normalize_prefix("/backup").is_err());
        assert!(normalize_prefix("a/../b").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(1_600_000_000, 123_456_789), "1600000000.123456789");
        assert_eq!(pax_time(5, 0), "5.000000000");
        assert_eq!(pax_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(pax_time(-2, 0), "-2.000000000");
    }

    #[test]
    fn nested_selections_collapse() {
        let s = |v: &[&str]| -> Vec<String> {
            let owned: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            selections(&owned).iter().map(|c| c.join("/")).collect()
        };
        assert_eq!(s(&[]), [""]);
        assert_eq!(
            s(&["workspace/src", "workspace/", "db"]),
            ["db", "workspace"]
        );
        assert_eq!(s(&["a/b", "a/bc", "./a/b/c"]), ["a/b", "a/bc"]);
    }
}
