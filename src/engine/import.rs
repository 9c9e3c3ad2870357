//! Import: read a gzip-compressed tar archive in the layout of the old nightly archives
//! (`backup/<source>/<path>`) and store it as a snapshot with one source per `<source>`
//! directory, deduplicated against everything already stored.
//!
//! A thread decompresses the archive into a bounded channel of [`CHUNK_BYTES`] chunks; the
//! caller's thread parses tar records and cuts file contents with the repository's chunker in
//! a window of [`READ_WINDOW_BYTES`], saving chunks on rayon through the engine's saver; the
//! uploader thread stores packs, then index files. The snapshot is written last, and only after
//! the whole archive, gzip checksum included, has been read: a truncated or corrupt archive
//! leaves no snapshot, only packs that the next backup may reuse and prune removes.
//!
//! Memory: contents stream, but the tree of nodes is built in memory and written bottom-up at
//! the end, so memory grows with the number of entries in the archive (a few hundred bytes per
//! entry plus 32 bytes per content chunk), not with their size.
//!
//! A tar record holds less than a backup does: ctime is set to the mtime, owner names are
//! ignored (uid/gid are kept as numbers), and files get synthetic inode numbers; a hardlink
//! entry shares its target's inode, so restore recreates the link.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use flate2::bufread::MultiGzDecoder;
use rayon::prelude::*;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tar::EntryType;

use super::backup::READ_WINDOW_BYTES;
use super::export::{CHUNK_BYTES, CHUNKS_IN_FLIGHT, DEFAULT_PREFIX, normalize_prefix};
use super::saver::{Saver, run_uploader};
use super::{EngineError, Progress, Warning, Warnings, display_bytes};
use crate::catalog::Catalog;
use crate::chunker::Chunker;
use crate::format::BlobKind;
use crate::format::snapshot::{Snapshot, SnapshotSummary, SourceInfo};
use crate::format::tree::{Node, NodeKind, Tree, Xattr};
use crate::id::BlobId;
use crate::repo::{LockKind, Repository};

/// Tag every imported snapshot gets.
pub const IMPORTED_TAG: &str = "imported";
/// Deepest path accepted (bounds the recursion that writes the trees).
const MAX_DEPTH: usize = 1024;
/// Entries outside the prefix that are named one by one; the rest are counted.
const OUTSIDE_WARNINGS: u64 = 10;

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
        }
    }
}

/// What an import stored.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportSummary {
    /// The new snapshot.
    pub snapshot_id: String,
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
    /// Entries skipped.
    pub warnings: Vec<Warning>,
}

/// Parse two or four ASCII digits at `*p`.
fn digits(b: &[u8], p: &mut usize, n: usize) -> Option<u32> {
    let s = b.get(*p..*p + n)?;
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *p += n;
    Some(s.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
}

fn skip_dash(b: &[u8], p: &mut usize) {
    if b.get(*p) == Some(&b'-') {
        *p += 1;
    }
}

/// Match `\d{4}-?\d{2}-?\d{2}([T-]\d{2}-?\d{2}-?\d{2})?` at `i`: its end and, when it is a
/// real date and time, the value.
fn date_at(b: &[u8], i: usize) -> Option<(usize, Option<NaiveDateTime>)> {
    let mut p = i;
    let y = digits(b, &mut p, 4)?;
    skip_dash(b, &mut p);
    let mo = digits(b, &mut p, 2)?;
    skip_dash(b, &mut p);
    let d = digits(b, &mut p, 2)?;
    let time = (|| {
        let mut q = p;
        if !matches!(b.get(q), Some(b'T' | b'-')) {
            return None;
        }
        q += 1;
        let h = digits(b, &mut q, 2)?;
        skip_dash(b, &mut q);
        let mi = digits(b, &mut q, 2)?;
        skip_dash(b, &mut q);
        let s = digits(b, &mut q, 2)?;
        Some((q, h, mi, s))
    })();
    let (end, h, mi, s) = time.unwrap_or((p, 0, 0, 0));
    let value = NaiveDate::from_ymd_opt(y as i32, mo, d).and_then(|dt| dt.and_hms_opt(h, mi, s));
    Some((end, value))
}

/// The date and time in an archive's file name, as the old tools wrote them
/// (`backup-2025-11-16T03-00-00.tar.gz`, `claude-backup-20260204-020000.tar.gz`,
/// `volumes-20251116.tar.gz`): the last match that is a real date.
pub fn time_from_name(name: &str) -> Option<NaiveDateTime> {
    let b = name.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        match date_at(b, i) {
            Some((end, value)) => {
                found = value.or(found);
                i = end;
            }
            None => i += 1,
        }
    }
    found
}

/// Parse a PAX time (`1600000000.123456789`, `-1.5`) into seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits_only = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.as_bytes().get(i).map_or(0, |c| u32::from(c - b'0'));
    }
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

/// A directory being assembled from tar entries.
#[derive(Default)]
struct DirBuild {
    /// Its own entry, when the archive has one.
    meta: Option<Node>,
    children: BTreeMap<Vec<u8>, Item>,
}

enum Item {
    Dir(DirBuild),
    Leaf(Node),
}

/// What the decompressor thread sends.
enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// The decompressor thread: gunzip everything, to the end, so the checksum of every gzip
/// member is verified.
fn decompress<R: BufRead>(input: R, tx: SyncSender<Piece>, spare: Receiver<Vec<u8>>) {
    let mut gz = MultiGzDecoder::new(input);
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(CHUNK_BYTES, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match gz.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Piece::Failed(e));
                    return;
                }
            }
        }
        let eof = filled < buf.len();
        buf.truncate(filled);
        if filled > 0 && tx.send(Piece::Data(buf)).is_err() {
            return; // the reader stopped
        }
        if eof {
            let _ = tx.send(Piece::End);
            return;
        }
    }
}

/// The decompressed stream, from the decompressor thread.
struct ChannelReader {
    rx: Receiver<Piece>,
    spare: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    failed: Option<(io::ErrorKind, String)>,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(v)) => {
                    let old = std::mem::replace(&mut self.cur, v);
                    self.pos = 0;
                    let _ = self.spare.try_send(old);
                }
                Ok(Piece::End) => self.ended = true,
                Ok(Piece::Failed(e)) => self.failed = Some((e.kind(), e.to_string())),
                Err(_) => {
                    self.failed = Some((io::ErrorKind::Other, "the decompressor stopped".into()))
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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

/// The PAX records coffer uses.
#[derive(Default)]
struct Pax {
    mtime: Option<(i64, u32)>,
    uid: Option<u64>,
    gid: Option<u64>,
    xattrs: Vec<Xattr>,
}

struct Importer<'a> {
    saver: &'a Saver<'a>,
    chunker: Chunker,
    progress: &'a Progress,
    archive: String,
    prefix: Vec<Vec<u8>>,
    prefix_shown: String,
    root: DirBuild,
    time_secs: i64,
    next_inode: u64,
    /// Names of each inode that has hardlink entries.
    link_counts: HashMap<u64, u64>,
    window: Vec<u8>,
    outside: u64,
    s: ImportSummary,
    warnings: Warnings,
}

impl Importer<'_> {
    /// A damaged archive: every read error of the stream, and any record tar cannot parse.
    fn corrupt(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::Io {
            path: self.archive.clone(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("truncated or corrupt archive ({e}); no snapshot was written"),
            ),
        }
    }

    fn corrupt_entry(&self, name: &[u8], e: impl std::fmt::Display) -> EngineError {
        self.corrupt(format!("entry {}: {e}", display_bytes(name)))
    }

    fn refuse(&self, name: &[u8], why: &str) -> EngineError {
        EngineError::Usage(format!(
            "{}: entry {:?} {why}; refusing to import it",
            self.archive,
            display_bytes(name)
        ))
    }

    /// The path of an entry below the prefix, as components (the source first). `None` for
    /// the prefix directory itself and for names outside it (warned about when `entry`).
    fn relative(&mut self, raw: &[u8], entry: bool) -> Result<Option<Vec<Vec<u8>>>, EngineError> {
        if raw.starts_with(b"/") {
            return Err(self.refuse(raw, "has an absolute name"));
        }
        let comps: Vec<&[u8]> = raw
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if comps.iter().any(|c| *c == b"..") {
            return Err(self.refuse(raw, "contains `..`"));
        }
        if comps.len() > MAX_DEPTH {
            return Err(self.refuse(raw, "is nested too deeply"));
        }
        if comps.len() < self.prefix.len() || comps[..self.prefix.len()] != self.prefix[..] {
            if !entry {
                return Ok(None);
            }
            self.outside += 1;
            if self.outside <= OUTSIDE_WARNINGS {
                self.warnings.push(
                    display_bytes(raw),
                    format!("not under {}; skipped", self.prefix_shown),
                );
            }
            return Ok(None);
        }
        let rest = &comps[self.prefix.len()..];
        if rest.iter().any(|c| !Node::name_is_safe(c)) {
            return Err(self.refuse(raw, "has a name with a NUL byte"));
        }
        Ok((!rest.is_empty()).then(|| rest.iter().map(|c| c.to_vec()).collect()))
    }

    fn pax<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Pax, EngineError> {
        let mut pax = Pax::default();
        let Some(ext) = entry.pax_extensions().map_err(|e| self.corrupt(e))? else {
            return Ok(pax);
        };
        for rec in ext {
            let rec = rec.map_err(|e| self.corrupt(e))?;
            let Ok(key) = rec.key() else { continue };
            let value = rec.value_bytes();
            let number = || std::str::from_utf8(value).ok()?.trim().parse::<u64>().ok();
            match key {
                "mtime" => pax.mtime = parse_pax_time(value),
                "uid" => pax.uid = number(),
                "gid" => pax.gid = number(),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        pax.xattrs.push(Xattr {
                            name: ByteBuf::from(name.as_bytes().to_vec()),
                            value: ByteBuf::from(value.to_vec()),
                        });
                    }
                }
            }
        }
        pax.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        pax.xattrs.dedup_by(|a, b| a.name == b.name);
        Ok(pax)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), EngineError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = self.relative(&raw, true)? else {
            return Ok(());
        };
        let pax = self.pax(entry)?;
        let h = entry.header();
        let field = |r: io::Result<u64>| r.map_err(|e| self.corrupt_entry(&raw, e));
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| self.corrupt_entry(&raw, format!("owner id {v}")))
        };
        let uid = id(pax.uid.map_or_else(|| field(h.uid()), Ok)?)?;
        let gid = id(pax.gid.map_or_else(|| field(h.gid()), Ok)?)?;
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (field(h.mtime())? as i64, 0),
        };
        let perm = h.mode().map_err(|e| self.corrupt_entry(&raw, e))? & 0o7777;
        let name = rel.last().cloned().unwrap_or_default();
        let mut node = Node {
            name: ByteBuf::from(name),
            kind: NodeKind::File,
            mode: perm,
            uid,
            gid,
            mtime,
            mtime_nsec,
            ctime: mtime,
            ctime_nsec: mtime_nsec,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            link_target: None,
            content: Vec::new(),
            subtree: None,
            xattrs: pax.xattrs,
        };
        let old_style_dir = kind == EntryType::Regular && raw.ends_with(b"/");
        match kind {
            EntryType::Directory => return self.dir_entry(&rel, node),
            _ if old_style_dir => return self.dir_entry(&rel, node),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let expected = entry.size();
                let (content, size) = self.read_content(entry)?;
                if size != expected {
                    return Err(self.corrupt(format!(
                        "{} ends after {size} of {expected} bytes",
                        display_bytes(&raw)
                    )));
                }
                self.next_inode += 1;
                node.inode = self.next_inode;
                node.content = content;
                node.size = size;
                self.s.files += 1;
                self.s.total_bytes += size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    self.corrupt(format!("symlink {} has no target", display_bytes(&raw)))
                })?;
                node.kind = NodeKind::Symlink;
                node.link_target = Some(ByteBuf::from(target.into_owned()));
                self.s.symlinks += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        self.corrupt(format!("hard link {} has no target", display_bytes(&raw)))
                    })?
                    .into_owned();
                let found = match self.relative(&target, false)? {
                    Some(t) => self.find(&t).cloned(),
                    None => None,
                };
                let Some(mut linked) = found else {
                    self.warnings.push(
                        display_bytes(&raw),
                        format!(
                            "hard link to {}, which is not in the archive before it; skipped",
                            display_bytes(&target)
                        ),
                    );
                    return Ok(());
                };
                if linked.kind == NodeKind::File {
                    *self.link_counts.entry(linked.inode).or_insert(1) += 1;
                    self.s.files += 1;
                    self.s.total_bytes += linked.size;
                }
                linked.name = node.name;
                node = linked;
                self.s.hardlinks += 1;
            }
            EntryType::Fifo => {
                node.kind = NodeKind::Fifo;
                self.s.special += 1;
            }
            EntryType::Char | EntryType::Block => {
                let dev = |r: io::Result<Option<u32>>| -> Result<u32, EngineError> {
                    Ok(r.map_err(|e| self.corrupt_entry(&raw, e))?.unwrap_or(0))
                };
                let (major, minor) = (dev(h.device_major())?, dev(h.device_minor())?);
                node.kind = if kind == EntryType::Char {
                    NodeKind::CharDevice
                } else {
                    NodeKind::BlockDevice
                };
                node.rdev = rustix::fs::makedev(major, minor);
                self.s.special += 1;
            }
            other => {
                self.warnings.push(
                    display_bytes(&raw),
                    format!("tar entry type {other:?} is not supported; skipped"),
                );
                return Ok(());
            }
        }
        node.mode |= type_bits(node.kind);
        self.s.entries += 1;
        self.insert(&rel, node)
    }

    fn dir_entry(&mut self, rel: &[Vec<u8>], mut node: Node) -> Result<(), EngineError> {
        node.kind = NodeKind::Dir;
        node.mode |= type_bits(NodeKind::Dir);
        self.s.entries += 1;
        self.dir_mut(rel)?.meta = Some(node);
        Ok(())
    }

    /// The directory at `comps`, created (with default metadata until its own entry comes)
    /// where missing. A non-directory in the way is replaced, as `tar x` would.
    fn dir_mut(&mut self, comps: &[Vec<u8>]) -> Result<&mut DirBuild, EngineError> {
        let mut d = &mut self.root;
        for c in comps {
            let item = d
                .children
                .entry(c.clone())
                .or_insert_with(|| Item::Dir(DirBuild::default()));
            if matches!(item, Item::Leaf(_)) {
                self.warnings.push(
                    display_bytes(&comps.join(&b'/')),
                    "a later entry needs a directory here; the earlier entry was dropped",
                );
                *item = Item::Dir(DirBuild::default());
            }
            d = match item {
                Item::Dir(sub) => sub,
                Item::Leaf(_) => return Err(EngineError::Usage("import: directory lost".into())),
            };
        }
        Ok(d)
    }

    fn insert(&mut self, rel: &[Vec<u8>], node: Node) -> Result<(), EngineError> {
        let Some((last, parents)) = rel.split_last() else {
            return Ok(());
        };
        let dir = self.dir_mut(parents)?;
        // A later entry of the same name replaces the earlier one, as `tar x` does.
        dir.children.insert(last.clone(), Item::Leaf(node));
        Ok(())
    }

    fn find(&self, comps: &[Vec<u8>]) -> Option<&Node> {
        let (last, parents) = comps.split_last()?;
        let mut d = &self.root;
        for c in parents {
            match d.children.get(c)? {
                Item::Dir(sub) => d = sub,
                Item::Leaf(_) => return None,
            }
        }
        match d.children.get(last)? {
            Item::Leaf(n) => Some(n),
            Item::Dir(_) => None,
        }
    }

    /// Chunk and save an entry's content; returns the blob ids and the bytes read.
    fn read_content(&mut self, r: &mut impl Read) -> Result<(Vec<BlobId>, u64), EngineError> {
        let window = self.window.len();
        let mut filled = 0usize;
        let mut eof = false;
        let mut content = Vec::new();
        let mut size = 0u64;
        loop {
            while !eof && filled < window {
                match r.read(&mut self.window[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.corrupt(e)),
                }
            }
            let cuts = self.chunker.cuts(&self.window[..filled], eof);
            let mut chunks = Vec::with_capacity(cuts.len());
            let mut off = 0;
            for len in cuts {
                chunks.push(&self.window[off..off + len]);
                off += len;
            }
            let saver = self.saver;
            if chunks.len() == 1 {
                content.push(saver.save(BlobKind::Data, chunks[0])?);
            } else {
                let ids: Result<Vec<BlobId>, EngineError> = chunks
                    .par_iter()
                    .map(|c| saver.save(BlobKind::Data, c))
                    .collect();
                content.extend(ids?);
            }
            size += off as u64;
            self.window.copy_within(off..filled, 0);
            filled -= off;
            if eof && filled == 0 {
                return Ok((content, size));
            }
        }
    }

    fn default_dir(&self) -> Node {
        let mut n = super::walk::root_node(BlobId([0; 32]));
        n.mtime = self.time_secs;
        n.ctime = self.time_secs;
        n
    }

    /// Save a directory's tree, children first; returns its node.
    fn save_dir(&mut self, name: &[u8], d: DirBuild) -> Result<Node, EngineError> {
        let mut nodes = Vec::with_capacity(d.children.len());
        // BTreeMap order is byte order of the names: the order trees are sorted in.
        for (child, item) in d.children {
            nodes.push(match item {
                Item::Dir(sub) => self.save_dir(&child, sub)?,
                Item::Leaf(mut n) => {
                    if n.kind == NodeKind::File
                        && let Some(&count) = self.link_counts.get(&n.inode)
                    {
                        n.links = count;
                    }
                    n
                }
            });
        }
        let id = self.saver.save(BlobKind::Tree, &Tree { nodes }.encode())?;
        let mut node = d.meta.unwrap_or_else(|| self.default_dir());
        node.name = ByteBuf::from(name.to_vec());
        node.subtree = Some(id);
        self.s.dirs += 1;
        Ok(node)
    }

    /// Read the whole archive, then the rest of the stream, so the gzip checksums are
    /// verified before anything is written that names the content.
    fn read_archive(&mut self, reader: ChannelReader) -> Result<(), EngineError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.corrupt(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            self.entry(&mut entry)?;
        }
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| self.corrupt(e))?;
        Ok(())
    }

    /// Write the trees bottom-up; returns the root tree and the source names.
    fn finish(&mut self) -> Result<(BlobId, Vec<String>), EngineError> {
        if self.outside > OUTSIDE_WARNINGS {
            self.warnings.push(
                self.archive.clone(),
                format!(
                    "{} more entries not under {} were skipped",
                    self.outside - OUTSIDE_WARNINGS,
                    self.prefix_shown
                ),
            );
        }
        let root = std::mem::take(&mut self.root);
        if root.children.is_empty() {
            return Err(EngineError::Usage(format!(
                "{}: no entries under {} (is --prefix right?); no snapshot was written",
                self.archive, self.prefix_shown
            )));
        }
        let mut sources = Vec::new();
        let mut nodes = Vec::new();
        for (name, item) in root.children {
            let shown = String::from_utf8(name.clone()).map_err(|_| {
                EngineError::Usage(format!(
                    "{}: the source directory {:?} is not UTF-8; no snapshot was written",
                    self.archive,
                    display_bytes(&name)
                ))
            })?;
            nodes.push(match item {
                Item::Dir(d) => self.save_dir(&name, d)?,
                Item::Leaf(n) => n,
            });
            sources.push(shown);
        }
        let root = self.saver.save(BlobKind::Tree, &Tree { nodes }.encode())?;
        Ok((root, sources))
    }
}

/// `st_mode` file type bits of a kind.
fn type_bits(kind: NodeKind) -> u32 {
    match kind {
        NodeKind::File => 0o100000,
        NodeKind::Dir => 0o040000,
        NodeKind::Symlink => 0o120000,
        NodeKind::Fifo => 0o010000,
        NodeKind::CharDevice => 0o020000,
        NodeKind::BlockDevice => 0o060000,
        NodeKind::Socket => 0o140000,
    }
}

fn username() -> String {
    // As `backup` records it.
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| rustix::process::geteuid().as_raw().to_string())
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
    let archive_path = std::path::absolute(&opts.archive).unwrap_or_else(|_| opts.archive.clone());
    let shown = archive_path.display().to_string();
    let io_err = |source| EngineError::Io {
        path: shown.clone(),
        source,
    };
    let file = File::open(&opts.archive).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(EngineError::Usage(format!("{shown} is not a file")));
    }
    let (time, time_source) = match &opts.time {
        ImportTime::At(t) => (*t, "given"),
        ImportTime::FromName => {
            let name = opts.archive.file_name().map(|n| n.to_string_lossy());
            match name.as_deref().and_then(time_from_name) {
                Some(naive) => {
                    let local = chrono::Local.from_local_datetime(&naive).earliest();
                    (
                        local.map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
                        "name",
                    )
                }
                None => {
                    let mtime = meta.modified().map_err(io_err)?;
                    (DateTime::<Utc>::from(mtime), "file mtime")
                }
            }
        }
    };
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

    let _lock = repo.lock(LockKind::Shared, "import")?;
    catalog.refresh(repo)?;
    let (saver, rx) = Saver::new(repo, catalog);
    let stats = saver.stats.clone();
    let chunker = repo.chunker();
    let mut imp = Importer {
        saver: &saver,
        chunker,
        progress,
        archive: shown.clone(),
        prefix: components_of(&prefix),
        prefix_shown: if prefix.is_empty() {
            "the archive's top".into()
        } else {
            prefix.clone()
        },
        root: DirBuild::default(),
        time_secs: time.timestamp(),
        next_inode: 0,
        link_counts: HashMap::new(),
        window: vec![0; READ_WINDOW_BYTES.max(2 * chunker.max_bytes())],
        outside: 0,
        s: ImportSummary::default(),
        warnings: Warnings::default(),
    };
    let result: Result<(BlobId, Vec<String>), EngineError> = std::thread::scope(|scope| {
        let uploader = std::thread::Builder::new()
            .name("coffer-upload".into())
            .spawn_scoped(scope, || run_uploader(repo, catalog, rx, &stats))
            .map_err(|e| EngineError::Io {
                path: "uploader thread".into(),
                source: e,
            })?;
        let (tx, pieces) = sync_channel(CHUNKS_IN_FLIGHT);
        let (spare_tx, spare_rx) = sync_channel(CHUNKS_IN_FLIGHT + 2);
        let reader = ChannelReader {
            rx: pieces,
            spare: spare_tx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
            failed: None,
        };
        let gunzip = std::thread::Builder::new()
            .name("coffer-gunzip".into())
            .spawn_scoped(scope, move || decompress(input, tx, spare_rx));
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
            .unwrap_or_else(|_| Err(EngineError::Usage("the uploader thread panicked".into())));
        uploaded?;
        walked
    });
    let (root, sources) = result?;

    let warnings = imp.warnings.take();
    let mut s = imp.s;
    let mut tags = opts.tags.clone();
    if !tags.iter().any(|t| t == IMPORTED_TAG) {
        tags.push(IMPORTED_TAG.into());
    }
    let summary = SnapshotSummary {
        files: s.files,
        dirs: s.dirs,
        total_bytes: s.total_bytes,
        files_read: s.files,
        bytes_read: s.total_bytes,
        blobs_added: stats.blobs_added.load(Ordering::Relaxed),
        bytes_added: stats.bytes_added.load(Ordering::Relaxed),
        stored_bytes_added: stats.stored_bytes_added.load(Ordering::Relaxed),
        errors: warnings.len() as u64,
        duration_ms: start.elapsed().as_millis() as u64,
    };
    let snapshot = Snapshot {
        time_ns: time.timestamp_nanos_opt().unwrap_or(0),
        host: opts.host.clone(),
        username: username(),
        tags,
        parent: None,
        tree: root,
        sources: sources
            .iter()
            .map(|name| SourceInfo {
                name: name.clone(),
                path: format!("{shown}:{prefix}{name}"),
            })
            .collect(),
        summary: summary.clone(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    // Last write of the import: everything it names is already stored and indexed.
    let id = repo.save_snapshot(&snapshot)?;
    catalog.add_snapshot(&id, &snapshot)?;
    s.snapshot_id = id.to_hex();
    s.time = time.to_rfc3339();
    s.time_source = time_source;
    s.sources = sources;
    s.archive_bytes = meta.len();
    s.blobs_added = summary.blobs_added;
    s.bytes_added = summary.bytes_added;
    s.stored_bytes_added = summary.stored_bytes_added;
    s.packs_written = stats.packs_written.load(Ordering::Relaxed);
    s.index_files_written = stats.index_files_written.load(Ordering::Relaxed);
    s.duration_secs = start.elapsed().as_secs_f64();
    s.warnings = warnings;
    Ok(s)
}

fn components_of(prefix: &str) -> Vec<Vec<u8>> {
    prefix
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_archive_names() {
        let t = |y, mo, d, h, mi, s| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|d| d.and_hms_opt(h, mi, s))
                .unwrap()
        };
        let cases: &[(&str, Option<NaiveDateTime>)] = &[
            (
                "backup-2025-11-16T03-00-00.tar.gz",
                Some(t(2025, 11, 16, 3, 0, 0)),
            ),
            (
                "claude-backup-20260204-020000.tar.gz",
                Some(t(2026, 2, 4, 2, 0, 0)),
            ),
            ("volumes-20251116.tar.gz", Some(t(2025, 11, 16, 0, 0, 0))),
            ("backup-2025-11-16.tar.gz", Some(t(2025, 11, 16, 0, 0, 0))),
            (
                "backup-20251116T031500.tar.gz",
                Some(t(2025, 11, 16, 3, 15, 0)),
            ),
            (
                "nightly-2025-11-16-1.tar.gz",
                Some(t(2025, 11, 16, 0, 0, 0)),
            ),
            (
                "2024-01-01-copy-of-backup-2025-11-16T03-00-00.tar.gz",
                Some(t(2025, 11, 16, 3, 0, 0)),
            ),
            (
                "backup-2025-11-16-weekly-2025-13-01.tar.gz",
                Some(t(2025, 11, 16, 0, 0, 0)),
            ),
            ("backup.tar.gz", None),
            ("backup-2025-13-01.tar.gz", None),
            ("backup-2025-11-16T25-00-00.tar.gz", None),
            ("backup-123.tar.gz", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(time_from_name(name), *want, "{name:?}");
        }
    }

    #[test]
    fn pax_times_parse() {
        let cases: &[(&str, Option<(i64, u32)>)] = &[
            ("1600000000.123456789", Some((1_600_000_000, 123_456_789))),
            ("1600000000", Some((1_600_000_000, 0))),
            ("1600000000.5", Some((1_600_000_000, 500_000_000))),
            ("1.1234567891", Some((1, 123_456_789))),
            ("-1.5", Some((-2, 500_000_000))),
            ("-2", Some((-2, 0))),
            (".5", Some((0, 500_000_000))),
            ("", None),
            ("-", None),
            ("12a", None),
            ("1.-5", None),
            ("99999999999999999999999", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_pax_time(s.as_bytes()), *want, "{s:?}");
        }
    }
}
