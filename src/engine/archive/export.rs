//! Export: stream a snapshot, or paths inside it, as a gzip-compressed tar archive in the
//! layout of the old nightly archives (`backup/<source>/<path>`), so scripts that run
//! `tar -tzf` and `tar xzf` on them keep working.
//!
//! Two threads and constant memory: the caller's thread walks the trees one directory at a
//! time, loads and verifies blobs (`BlobReader`, several at a time on rayon) and writes tar
//! records (`TarWriter`) into chunks of [`CHUNK_BYTES`]; a compressor thread (`gzip_pipe`)
//! gzips them into the output. At most [`CHUNKS_IN_FLIGHT`] chunks wait between the two. The
//! only state that grows is the first name of each hardlinked inode of the current source.
//!
//! Records are GNU tar headers. Names and link targets over 100 bytes use GNU long-name
//! records, which carry raw bytes, so non-UTF-8 names survive; sub-second or negative mtimes
//! and extended attributes go in a PAX record before the entry (`pax`). GNU tar reads both. A
//! failed export never writes the gzip trailer, so a cut-off stream cannot pass for a complete
//! archive, and a file is only renamed to its final name once it is complete and synced
//! ([`export_to_file`], [`export_to_dir`]).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::thread::ScopedJoinHandle;
use std::time::Instant;

use chrono::DateTime;
use serde::Serialize;
use tar::EntryType;

pub use super::export_file::{export_archive, export_to_dir, export_to_file};
pub use super::gzip_pipe::{CHUNK_BYTES, CHUNKS_IN_FLIGHT};
use super::gzip_pipe::{ChunkWriter, CompressError, compress_pipe};
pub use super::name::{DEFAULT_NAME_PATTERN, LATEST_LINK, output_name};
use super::pax;
use super::tar_writer::{TarWriter, header, io_error};
use crate::catalog::Catalog;
use crate::engine::blob_reader::BlobReader;
use crate::engine::walk::{components, resolve};
use crate::engine::{EngineError, Progress, Warning, Warnings, display_bytes, load_tree};
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockKind, Repository};

/// Directory the old archives put the volumes in.
pub const DEFAULT_PREFIX: &str = "backup/";
/// gzip level of `gzip` and GNU tar.
pub const DEFAULT_LEVEL: u32 = 6;

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
    #[serde(with = "crate::id::as_hex")]
    pub snapshot_id: SnapshotId,
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

struct Exporter<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    progress: &'a Progress,
    tar: TarWriter<ChunkWriter>,
    prefix: Vec<u8>,
    /// First archive name of each hardlinked inode of `source`.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    source: Vec<u8>,
    s: ExportSummary,
    warnings: Warnings,
    /// The data blobs of the entries being written, read ahead (remote stores).
    cache: HashMap<BlobId, Vec<u8>>,
}

/// Content read ahead at most, in bytes of file data, on a remote store.
const READ_AHEAD_BYTES: u64 = 64 << 20;
/// Entries read ahead at most.
const READ_AHEAD_ENTRIES: usize = 8192;

/// The entries below a node in archive order (each directory before what is in it), one at a
/// time: the exporter reads a window of them ahead.
struct Walker {
    first: Option<(Vec<u8>, Node)>,
    stack: Vec<(Vec<u8>, std::vec::IntoIter<Node>)>,
}

impl Walker {
    fn new(rel: Vec<u8>, node: Node) -> Self {
        Self {
            first: Some((rel, node)),
            stack: Vec::new(),
        }
    }

    fn next(
        &mut self,
        repo: &Repository,
        catalog: &Catalog,
        warnings: &Warnings,
    ) -> Result<Option<(Vec<u8>, Node)>, EngineError> {
        let (rel, node) = match self.first.take() {
            Some(f) => f,
            None => loop {
                let Some((prefix, iter)) = self.stack.last_mut() else {
                    return Ok(None);
                };
                let Some(child) = iter.next() else {
                    self.stack.pop();
                    continue;
                };
                let mut rel = prefix.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(&child.name);
                if Node::name_is_safe(&child.name) {
                    break (rel, child);
                }
                warnings.push(
                    display_bytes(&rel),
                    "refusing an entry whose name would escape the archive's directory",
                );
            },
        };
        if let (NodeKind::Dir, Some(subtree)) = (node.kind, node.subtree) {
            let tree = load_tree(repo, catalog, &subtree)?;
            self.stack.push((rel.clone(), tree.nodes.into_iter()));
        }
        Ok(Some((rel, node)))
    }
}

impl Exporter<'_> {
    /// Write `node` at `rel` and everything below it, a window of entries at a time whose
    /// content is read ahead pack by pack on a remote store.
    fn walk(&mut self, rel: Vec<u8>, node: &Node) -> Result<(), EngineError> {
        if let Some(t) = node.subtree {
            crate::engine::restore::fetch::prefetch_trees(self.repo, self.catalog, &t)?;
        }
        let mut walker = Walker::new(rel, node.clone());
        let mut window: std::collections::VecDeque<(Vec<u8>, Node)> = Default::default();
        loop {
            if window.is_empty() {
                let mut bytes = 0;
                while window.len() < READ_AHEAD_ENTRIES && bytes < READ_AHEAD_BYTES {
                    match walker.next(self.repo, self.catalog, &self.warnings)? {
                        Some(e) => {
                            bytes += e.1.size;
                            window.push_back(e);
                        }
                        None => break,
                    }
                }
                if window.is_empty() {
                    return Ok(());
                }
                let ids: Vec<BlobId> = window
                    .iter()
                    .filter(|(_, n)| n.kind == NodeKind::File)
                    .flat_map(|(_, n)| n.content.iter().copied())
                    .collect();
                self.cache.clear();
                let (cache, _) = crate::engine::restore::fetch::prefetch_blobs(
                    self.repo,
                    self.catalog,
                    &ids,
                    READ_AHEAD_BYTES,
                )?;
                self.cache = cache;
            }
            if let Some((rel, node)) = window.pop_front() {
                self.entry(&rel, &node)?;
            }
        }
    }

    /// Write the entry of `node` at `rel` (not what is below it). Each node kind has its
    /// own tar entry type; sockets are skipped with a warning.
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
        let pax = pax::encode_records(rel, node, &self.warnings);
        match node.kind {
            NodeKind::Dir => {
                name.push(b'/');
                self.tar.write_pax(&name, &pax)?;
                let mut h = header(node, EntryType::Directory);
                self.tar.append(&mut h, &name, io::empty())?;
                self.s.dirs += 1;
            }
            NodeKind::File => self.file(rel, &name, node, &pax)?,
            NodeKind::Symlink => {
                let target = node.link_target.as_deref().map(|t| &t[..]).unwrap_or(b"");
                self.tar.write_pax(&name, &pax)?;
                let mut h = header(node, EntryType::Symlink);
                self.tar.append_link(&mut h, &name, target)?;
                self.s.symlinks += 1;
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                self.special(&name, node, &pax)?
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

    /// A regular file named `name`: a link to the first name of its inode in this source,
    /// else its content, read and verified blob by blob.
    fn file(
        &mut self,
        rel: &[u8],
        name: &[u8],
        node: &Node,
        pax: &[(String, Vec<u8>)],
    ) -> Result<(), EngineError> {
        if node.links > 1 && node.inode != 0 {
            let key = (node.device, node.inode);
            if let Some(first) = self.hardlinks.get(&key).cloned() {
                let mut h = header(node, EntryType::Link);
                self.tar.write_pax(name, pax)?;
                self.tar.append_link(&mut h, name, &first)?;
                self.s.hardlinks += 1;
                return Ok(());
            }
            self.hardlinks.insert(key, name.to_vec());
        }
        self.tar.write_pax(name, pax)?;
        let mut h = header(node, EntryType::Regular);
        h.set_size(node.size);
        let mut reader = BlobReader::new(
            self.repo,
            self.catalog,
            self.progress,
            &node.content,
            node.size,
            rel,
        )
        .with_cache(&self.cache);
        // A failed read is reported by its own error, not by tar's account of it.
        self.tar
            .append(&mut h, name, &mut reader)
            .map_err(|e| reader.take_failure().unwrap_or(e))?;
        self.s.files += 1;
        self.s.content_bytes += node.size;
        Ok(())
    }

    /// A FIFO or device node named `name`, with its device number.
    fn special(
        &mut self,
        name: &[u8],
        node: &Node,
        pax: &[(String, Vec<u8>)],
    ) -> Result<(), EngineError> {
        let kind = match node.kind {
            NodeKind::Fifo => EntryType::Fifo,
            NodeKind::CharDevice => EntryType::Char,
            _ => EntryType::Block,
        };
        let mut h = header(node, kind);
        if node.kind != NodeKind::Fifo {
            let dev = node.rdev;
            h.set_device_major(rustix::fs::major(dev))
                .and_then(|()| h.set_device_minor(rustix::fs::minor(dev)))
                .map_err(|e| io_error(name, e))?;
        }
        self.tar.write_pax(name, pax)?;
        self.tar.append(&mut h, name, io::empty())?;
        self.s.special += 1;
        Ok(())
    }

    /// Count an entry other than a directory, as the snapshot's file count does.
    fn file_done(&self) {
        let ordering = std::sync::atomic::Ordering::Relaxed;
        self.progress.files.fetch_add(1, ordering);
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
    export_tar(repo, catalog, opts, out, progress, true)
}

/// [`export`], gzipped or (`gzip` false: `dump` of a directory, as restic's) a plain tar
/// stream, whose end-of-archive blocks are written only when this returns `Ok`.
pub fn export_tar(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    out: Box<dyn Write + Send>,
    progress: &Progress,
    gzip: bool,
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
    let tree = snap.snapshot.tree;
    // Resolve every path first, so a wrong --path fails before anything is written.
    let roots = selections(&opts.paths)
        .into_iter()
        .map(|comps| {
            let node = resolve(repo, catalog, tree, &comps.join("/"))?;
            Ok((comps, node))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    if opts.paths.is_empty() {
        let total = &snap.snapshot.summary;
        let ordering = std::sync::atomic::Ordering::Relaxed;
        progress.total_bytes.store(total.total_bytes, ordering);
        progress.total_files.store(total.files, ordering);
    }
    let time_ns = snap.snapshot.time_ns;
    let summary = ExportSummary {
        snapshot_id: snap.id,
        snapshot_time: DateTime::from_timestamp_nanos(time_ns).to_rfc3339(),
        snapshot_time_ns: time_ns,
        ..Default::default()
    };

    let (writer, compressor) = compress_pipe();
    let level = gzip.then_some(opts.level);
    std::thread::scope(|scope| {
        let compressor = std::thread::Builder::new()
            .name("coffer-gzip".into())
            .spawn_scoped(scope, move || compressor.run(out, level))
            .map_err(|e| EngineError::Io {
                path: "compressor thread".into(),
                source: e,
            })?;
        let mut ex = Exporter {
            repo,
            catalog,
            progress,
            tar: TarWriter::new(writer),
            prefix: prefix.clone().into_bytes(),
            hardlinks: HashMap::new(),
            source: Vec::new(),
            s: summary,
            warnings: Warnings::default(),
            cache: HashMap::new(),
        };
        let walked = ex.write_selection(&prefix, tree, time_ns, &roots);
        ex.finish(walked, compressor, start)
    })
}

impl Exporter<'_> {
    /// Write the prefix directories, then each selected root (the directories leading to it
    /// first, once) and everything below it.
    fn write_selection(
        &mut self,
        prefix: &str,
        tree: BlobId,
        time_ns: i64,
        roots: &[(Vec<&str>, Node)],
    ) -> Result<(), EngineError> {
        // The prefix directories (`backup/`) first, as the old archives had them.
        let stamp = Node::new(Vec::new(), NodeKind::Dir)
            .with_mode(0o40755)
            .with_mtime(time_ns.div_euclid(1_000_000_000), 0)
            .with_subtree(tree);
        let mut name = Vec::new();
        for c in components(prefix) {
            name.extend_from_slice(c.as_bytes());
            name.push(b'/');
            let mut h = header(&stamp, EntryType::Directory);
            self.tar.append(&mut h, &name, io::empty())?;
            self.s.entries += 1;
        }
        // Then, for --path, the directories leading to each path, once.
        let mut emitted: HashSet<String> = HashSet::new();
        for (comps, node) in roots {
            for depth in 1..comps.len() {
                let parent = comps[..depth].join("/");
                if emitted.insert(parent.clone()) {
                    let n = resolve(self.repo, self.catalog, tree, &parent)?;
                    self.entry(parent.as_bytes(), &n)?;
                }
            }
            self.walk(comps.join("/").into_bytes(), node)?;
        }
        Ok(())
    }

    /// End the tar stream if it was all `walked`, wait for the compressor and say how the
    /// export went: the summary only when the archive is complete.
    fn finish(
        self,
        walked: Result<(), EngineError>,
        compressor: ScopedJoinHandle<'_, Result<u64, CompressError>>,
        start: Instant,
    ) -> Result<ExportSummary, EngineError> {
        let Exporter {
            tar,
            mut s,
            warnings,
            ..
        } = self;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
