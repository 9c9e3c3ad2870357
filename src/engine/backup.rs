//! Backup: walk the sources in parallel, reuse the content of files whose metadata did not
//! change since the parent snapshot, read and chunk the rest, save new blobs, write trees
//! bottom-up, and write the snapshot last.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_bytes::ByteBuf;

use super::content::{ContentError, buffer_for, save_content};
use super::exclude::{Boundary, Patterns, TagFile, absolute_components, boundary};
use super::saver::{Saver, run_uploader};
use super::{EngineError, Progress, Warning, Warnings, load_tree};
use crate::catalog::Catalog;
use crate::chunker::Chunker;
use crate::format::BlobKind;
use crate::format::snapshot::{Snapshot, SnapshotSummary, SourceInfo};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockKind, Repository};
use crate::source::meta;

pub use super::content::READ_WINDOW_BYTES;
/// How often a file that changes while it is read is read again before giving up.
const CHANGED_RETRIES: usize = 2;

/// One source to back up.
#[derive(Clone, Debug, Serialize)]
pub struct SourceSpec {
    /// Name of its directory in the snapshot.
    pub name: String,
    /// Where it is read from.
    pub path: PathBuf,
}

impl SourceSpec {
    /// Parse `NAME=PATH` or `PATH` (the name is then the path's last component).
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s.split_once('=') {
            Some((n, p)) if !n.is_empty() && !n.contains('/') => {
                Self::named(n.to_string(), PathBuf::from(p))
            }
            _ => Self::for_path(PathBuf::from(s)),
        }
    }

    /// The source `path`, named after its last component (a path of `--files-from`, which
    /// is never read as `NAME=PATH`).
    pub fn for_path(path: PathBuf) -> Result<Self, EngineError> {
        let abs = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        let name = abs
            .components()
            .next_back()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|n| n != "/" && !n.is_empty())
            .unwrap_or_else(|| "root".to_string());
        Self::named(name, path)
    }

    fn named(name: String, path: PathBuf) -> Result<Self, EngineError> {
        if !Node::name_is_safe(name.as_bytes()) {
            return Err(EngineError::Usage(format!("invalid source name {name:?}")));
        }
        Ok(SourceSpec { name, path })
    }
}

/// What to back up and how.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupOptions {
    /// The sources; names must be unique.
    pub sources: Vec<SourceSpec>,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded (and used to find the parent).
    pub host: String,
    /// Patterns of paths to leave out (see [`super::exclude::Pattern`]), tested against each
    /// entry's absolute path (the source as given, made absolute, joined with the entry's
    /// path below it) and its path in the snapshot (`/NAME/...`). Without `/` a pattern
    /// matches a name at any depth; with a leading `/` it matches a whole path. The sources
    /// themselves are never left out.
    pub excludes: Vec<String>,
    /// Patterns as `excludes`, matched without regard to case.
    pub iexcludes: Vec<String>,
    /// Leave out the content of every directory holding a valid `CACHEDIR.TAG` (the tag
    /// itself is kept, as restic keeps it).
    pub exclude_caches: bool,
    /// Leave out the content of every directory holding a file of this name (`NAME`, or
    /// `NAME:HEADER` when the file must start with `HEADER`); the file itself is kept.
    pub exclude_if_present: Vec<String>,
    /// Do not cross into other file systems below a source: a directory where one is mounted
    /// is kept, empty, and other entries of another file system are left out.
    pub one_file_system: bool,
    /// Walk and read as a backup would, compare against the parent, but store nothing: no
    /// pack, index file or snapshot. The summary lists the files that would be read.
    pub dry_run: bool,
    /// Regular expressions (RE2 syntax, as the old `BACKUP_EXCLUDE_REGEXP`) matched against
    /// the full path of each entry (as read, e.g. `/backup/workspace/app.log`); a match leaves
    /// it out. A matching directory is still walked, as the old tool did (`\.cache$` leaves
    /// out what is named so, not what a `.cache/` holds), and left out when nothing in it is
    /// kept.
    pub exclude_regexes: Vec<String>,
    /// Parent snapshot (id, prefix or `latest`); found automatically when absent.
    pub parent: Option<String>,
    /// Read every file even when its metadata did not change.
    pub force: bool,
    /// Snapshot time (default: now).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a backup did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupSummary {
    /// The new snapshot (none for a dry run or a first pass).
    #[serde(with = "crate::id::as_hex_opt")]
    pub snapshot_id: Option<SnapshotId>,
    /// The parent used for change detection.
    #[serde(with = "crate::id::as_hex_opt")]
    pub parent: Option<SnapshotId>,
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Files read because they were new or changed.
    pub files_read: u64,
    /// Files whose content was reused from the parent without reading.
    pub files_unchanged: u64,
    /// Bytes of content in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
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
    /// Files that could not be read or changed while read.
    pub warnings: Vec<Warning>,
    /// Root tree of the backup (what a later pass can compare against).
    #[serde(with = "crate::id::as_hex")]
    pub tree: BlobId,
    /// Nothing was stored (`dry_run`): the figures say what a backup would have added.
    pub dry_run: bool,
    /// With `dry_run`: the files that would be read, by path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_read: Vec<PlannedRead>,
}

/// A file a dry run would read.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedRead {
    /// The file, as read (the source's path joined with the path below it).
    pub path: String,
    /// Its size when it was listed.
    pub size: u64,
    /// Why it would be read.
    pub reason: ReadReason,
}

/// Why a file is read rather than taken from the parent snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadReason {
    /// The parent snapshot has no file of this path.
    New,
    /// Its metadata changed, or its content is not all in the repository.
    Changed,
    /// `force`: every file is read.
    Forced,
}

/// How one run relates to an earlier pass over the same sources: the two-pass Docker backup
/// reads a volume while its containers run, then again, quickly, while they are stopped.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassOptions {
    /// Store data and trees but write no snapshot (a first pass).
    pub no_snapshot: bool,
    /// Compare files against this root tree instead of the parent snapshot's.
    pub compare_tree: Option<BlobId>,
}

/// What a backup leaves out, compiled from its options (the decisions are
/// [`super::exclude`]'s).
struct Selection {
    patterns: Patterns,
    tags: Vec<TagFile>,
    one_file_system: bool,
}

impl Selection {
    fn new(opts: &BackupOptions) -> Result<Self, EngineError> {
        let mut tags = Vec::new();
        if opts.exclude_caches {
            tags.push(TagFile::cachedir());
        }
        for t in &opts.exclude_if_present {
            tags.push(TagFile::parse(t)?);
        }
        Ok(Selection {
            patterns: Patterns::new(&opts.excludes, &opts.iexcludes)?,
            tags,
            one_file_system: opts.one_file_system,
        })
    }
}

/// One source as the walk below it needs it: what exclude patterns are matched against,
/// and the device `one_file_system` stays on.
struct SourceAt {
    /// Its name in the snapshot.
    name: Vec<u8>,
    /// Its path, absolute and clean, as components.
    abs: Vec<Vec<u8>>,
    /// The device it is on (0 when it cannot be read: the walk warns).
    dev: u64,
}

impl SourceAt {
    fn new(s: &SourceSpec, cwd: &Path) -> Self {
        SourceAt {
            name: s.name.as_bytes().to_vec(),
            abs: absolute_components(&s.path, cwd),
            dev: std::fs::symlink_metadata(&s.path).map_or(0, |m| m.dev()),
        }
    }
}

/// The exclude expressions as one set; `None` when there are none.
pub fn exclude_regex_set(
    expressions: &[String],
) -> Result<Option<regex::bytes::RegexSet>, EngineError> {
    if expressions.is_empty() {
        return Ok(None);
    }
    regex::bytes::RegexSet::new(expressions)
        .map(Some)
        .map_err(|e| EngineError::Usage(format!("bad exclude regular expression: {e}")))
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    files_read: AtomicU64,
    files_unchanged: AtomicU64,
    total_bytes: AtomicU64,
    bytes_read: AtomicU64,
}

struct Walker<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    saver: &'a Saver<'a>,
    chunker: Chunker,
    select: Selection,
    exclude_regexes: Option<regex::bytes::RegexSet>,
    force: bool,
    counters: Counters,
    warnings: Warnings,
    progress: &'a Progress,
    /// Each source directory, opened once: everything below it is opened relative to it
    /// without following a symlink in any component.
    roots: HashMap<PathBuf, OwnedFd>,
    /// With `dry_run`: the files read (`None`: not a dry run, nothing is listed).
    would_read: Option<std::sync::Mutex<Vec<PlannedRead>>>,
}

/// How an entry found with `lstat` must still look when it is opened: anything else means it
/// was replaced in between (a symlink or FIFO swapped in) and is not read.
#[derive(Clone, Copy)]
struct Expect {
    dev: u64,
    ino: u64,
    dir: bool,
}

impl Walker<'_> {
    /// Open the entry at `path` (`rel` below its source root) with `flags`, never through a
    /// symlink in any component below the source root, and check that it is still the entry
    /// `expect` describes.
    fn open_checked(
        &self,
        path: &Path,
        rel: &Path,
        flags: OFlags,
        expect: Expect,
    ) -> std::io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
        let depth = rel.components().count();
        let root = path.ancestors().nth(depth).and_then(|r| self.roots.get(r));
        let fd = match root {
            Some(root) if depth > 0 => {
                let how =
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
                match rustix::fs::openat2(root, rel, flags, Mode::empty(), how) {
                    Err(rustix::io::Errno::NOSYS) => rustix::fs::open(path, flags, Mode::empty()),
                    r => r,
                }
            }
            _ => rustix::fs::open(path, flags, Mode::empty()),
        }
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::XDEV {
                std::io::Error::other("replaced by a symlink while it was read; skipped")
            } else {
                std::io::Error::from(e)
            }
        })?;
        let st = rustix::fs::fstat(&fd)?;
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let kind_ok = if expect.dir {
            ft == rustix::fs::FileType::Directory
        } else {
            ft == rustix::fs::FileType::RegularFile
        };
        if !kind_ok || st.st_dev as u64 != expect.dev || st.st_ino as u64 != expect.ino {
            return Err(std::io::Error::other(
                "replaced by another entry while it was read; skipped",
            ));
        }
        Ok(fd)
    }

    /// Back up one entry of `src`. `Ok(None)` means it was skipped with a warning, or left
    /// out by `one_file_system`.
    fn entry(
        &self,
        src: &SourceAt,
        name: &OsString,
        path: &Path,
        rel: &Path,
        parent_node: Option<&Node>,
    ) -> Result<Option<Node>, EngineError> {
        let md = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warnings.push(path.display().to_string(), e);
                return Ok(None);
            }
        };
        let mut node = match meta::node_from_metadata(name, path, &md) {
            Ok(n) => n,
            Err(e) => {
                self.warnings.push(path.display().to_string(), e);
                return Ok(None);
            }
        };
        // Below the source only: the source itself is where the walk was asked to go.
        if self.select.one_file_system && !rel.as_os_str().is_empty() {
            match boundary(src.dev, node.device, node.kind == NodeKind::Dir) {
                Boundary::Inside => {}
                Boundary::Outside => return Ok(None),
                Boundary::MountPoint => {
                    let empty = super::encode_tree(&Tree { nodes: Vec::new() })?;
                    node.subtree = Some(self.saver.save(BlobKind::Tree, &empty)?);
                    self.counters.dirs.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(node));
                }
            }
        }
        let matched = self
            .exclude_regexes
            .as_ref()
            .is_some_and(|re| re.is_match(path.as_os_str().as_bytes()));
        if matched && node.kind != NodeKind::Dir {
            return Ok(None);
        }
        match node.kind {
            NodeKind::Dir => {
                let parent_tree = parent_node
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree);
                // A matching directory is left out when nothing in it is kept (as the old
                // tool, which tested every path it walked, left out `node_modules/`).
                let expect = Expect {
                    dev: node.device,
                    ino: node.inode,
                    dir: true,
                };
                match self.dir(src, path, rel, expect, parent_tree, matched)? {
                    Some(id) => node.subtree = Some(id),
                    None => return Ok(None),
                }
                self.counters.dirs.fetch_add(1, Ordering::Relaxed);
            }
            NodeKind::File => {
                if !self.file_entry(path, rel, &mut node, parent_node)? {
                    return Ok(None);
                }
            }
            _ => {
                self.counters.files.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Some(node))
    }

    /// Fill a file's content into `node`: its parent's chunk list when its metadata did not
    /// change (and every chunk is stored), else read. `Ok(false)`: unreadable (warned).
    fn file_entry(
        &self,
        path: &Path,
        rel: &Path,
        node: &mut Node,
        parent_node: Option<&Node>,
    ) -> Result<bool, EngineError> {
        if let Some(old) = parent_node
            && !self.force
            && meta::unchanged(old, node)
            && self.all_stored(&old.content)?
        {
            node.content = old.content.clone();
            self.counters
                .files_unchanged
                .fetch_add(1, Ordering::Relaxed);
            self.progress.file_done(node.size);
        } else {
            if !self.file(path, rel, node)? {
                return Ok(false);
            }
            self.plan_read(path, node, parent_node);
            self.counters.files_read.fetch_add(1, Ordering::Relaxed);
            self.progress.file_done(0);
        }
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        self.counters
            .total_bytes
            .fetch_add(node.size, Ordering::Relaxed);
        Ok(true)
    }

    /// With `dry_run`, list the file at `path` as read.
    fn plan_read(&self, path: &Path, node: &Node, parent_node: Option<&Node>) {
        let Some(list) = &self.would_read else {
            return;
        };
        let reason = if self.force {
            ReadReason::Forced
        } else if parent_node.is_some_and(|p| p.kind == NodeKind::File) {
            ReadReason::Changed
        } else {
            ReadReason::New
        };
        let read = PlannedRead {
            path: path.display().to_string(),
            size: node.size,
            reason,
        };
        list.lock().unwrap_or_else(|p| p.into_inner()).push(read);
    }

    /// Whether the entry at `rel` below `src` matches an exclude pattern, by its absolute
    /// path or by its path in the snapshot.
    fn excluded(&self, src: &SourceAt, rel: &Path) -> bool {
        let patterns = &self.select.patterns;
        if patterns.is_empty() {
            return false;
        }
        let below: Vec<&[u8]> = rel.components().map(|c| c.as_os_str().as_bytes()).collect();
        let abs: Vec<&[u8]> = src
            .abs
            .iter()
            .map(Vec::as_slice)
            .chain(below.iter().copied())
            .collect();
        let in_snapshot: Vec<&[u8]> = std::iter::once(&src.name[..]).chain(below).collect();
        patterns.matches(&abs) || patterns.matches(&in_snapshot)
    }

    /// The tag files (`exclude_caches`, `exclude_if_present`) among `names`, the entries of
    /// the directory `path`, that are valid: everything else in the directory is left out.
    fn valid_tags(&self, path: &Path, names: &[OsString]) -> Vec<&std::ffi::OsStr> {
        self.select
            .tags
            .iter()
            .filter(|t| names.contains(&t.name) && tag_is_valid(&path.join(&t.name), t))
            .map(|t| t.name.as_os_str())
            .collect()
    }

    fn all_stored(&self, content: &[BlobId]) -> Result<bool, EngineError> {
        for id in content {
            if !self.catalog.has_blob(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The names in a directory opened as `expect` says, without `.` and `..`; `None` when it
    /// cannot be opened (warned). A read error part way keeps the names read so far (warned).
    fn list_dir(&self, path: &Path, rel: &Path, expect: Expect) -> Option<Vec<OsString>> {
        let listed = self
            .open_checked(path, rel, OFlags::RDONLY | OFlags::DIRECTORY, expect)
            .and_then(|fd| rustix::fs::Dir::read_from(&fd).map_err(std::io::Error::from));
        let dir = match listed {
            Ok(d) => d,
            Err(e) => {
                self.warnings.push(path.display().to_string(), e);
                return None;
            }
        };
        let mut names = Vec::new();
        for e in dir {
            match e {
                Ok(e) => {
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(OsString::from(std::ffi::OsStr::from_bytes(n)));
                    }
                }
                Err(e) => {
                    self.warnings
                        .push(path.display().to_string(), std::io::Error::from(e));
                    break;
                }
            }
        }
        Some(names)
    }

    /// Back up a directory's entries in parallel; returns its tree id (`None` when it is
    /// unreadable, or `drop_if_empty` and nothing in it was kept).
    fn dir(
        &self,
        src: &SourceAt,
        path: &Path,
        rel: &Path,
        expect: Expect,
        parent_tree: Option<BlobId>,
        drop_if_empty: bool,
    ) -> Result<Option<BlobId>, EngineError> {
        let Some(names) = self.list_dir(path, rel, expect) else {
            return Ok(None);
        };
        let tags = self.valid_tags(path, &names);
        let old = parent_tree.and_then(|id| match load_tree(self.repo, self.catalog, &id) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "parent tree of {} unreadable, reading all: {e}",
                    path.display()
                );
                None
            }
        });
        let old_nodes: HashMap<&[u8], &Node> = old
            .as_ref()
            .map(|t| t.nodes.iter().map(|n| (&n.name[..], n)).collect())
            .unwrap_or_default();
        let mut results: Vec<Result<Option<Node>, EngineError>> = names
            .par_iter()
            // `map`, not `filter_map`: an indexed iterator collects straight into one vector
            // of the final size.
            .map(|name| {
                let rel = rel.join(name);
                // As restic: each valid tag leaves out all but itself (so two leave out all).
                if !tags.iter().all(|t| *t == name.as_os_str()) || self.excluded(src, &rel) {
                    return Ok(None);
                }
                let parent = old_nodes.get(name.as_bytes()).copied();
                self.entry(src, name, &path.join(name), &rel, parent)
            })
            .collect();
        // A directory of many thousand entries holds its old tree, the results and the new
        // nodes at a few hundred bytes an entry: free the old tree before encoding, and take
        // the nodes out of the results in place (no second vector of them).
        drop(old_nodes);
        drop(old);
        drop(names);
        if let Some(i) = results.iter().position(Result::is_err) {
            results.swap_remove(i)?;
        }
        let mut nodes: Vec<Node> = results
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .collect();
        if drop_if_empty && nodes.is_empty() {
            return Ok(None);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = Tree { nodes };
        Ok(Some(
            self.saver
                .save(BlobKind::Tree, &super::encode_tree(&tree)?)?,
        ))
    }

    /// Read, chunk and save a file's content into `node`. `Ok(false)`: unreadable (warned).
    fn file(&self, path: &Path, rel: &Path, node: &mut Node) -> Result<bool, EngineError> {
        let mut attempt = 0;
        let expect = Expect {
            dev: node.device,
            ino: node.inode,
            dir: false,
        };
        loop {
            // Non-blocking: a FIFO swapped in must not hang the backup (it is refused below).
            let opened = self.open_checked(path, rel, OFlags::RDONLY | OFlags::NONBLOCK, expect);
            let mut f = match opened {
                Ok(fd) => File::from(fd),
                Err(e) => {
                    self.warnings.push(path.display().to_string(), e);
                    return Ok(false);
                }
            };
            let (content, size) = match self.read_content(&mut f) {
                Ok(r) => r,
                Err(ContentError::Read(e)) => {
                    self.warnings.push(path.display().to_string(), e);
                    return Ok(false);
                }
                Err(ContentError::Save(e)) => return Err(e),
            };
            let after = f.metadata().ok();
            let changed = after.as_ref().is_none_or(|m| {
                m.len() != size
                    || m.mtime() != node.mtime
                    || m.mtime_nsec() as u32 != node.mtime_nsec
                    || m.ctime() != node.ctime
                    || m.ctime_nsec() as u32 != node.ctime_nsec
            });
            if changed && attempt < CHANGED_RETRIES {
                attempt += 1;
                if let Some(m) = after {
                    node.mtime = m.mtime();
                    node.mtime_nsec = m.mtime_nsec() as u32;
                    node.ctime = m.ctime();
                    node.ctime_nsec = m.ctime_nsec() as u32;
                }
                continue;
            }
            if changed {
                self.warnings.push(
                    path.display().to_string(),
                    "file changed while it was read; the stored copy may be inconsistent",
                );
            }
            node.content = content;
            node.size = size;
            return Ok(true);
        }
    }

    /// Chunk and save a file's content; returns the blob ids and the bytes read.
    fn read_content(&self, f: &mut File) -> Result<(Vec<BlobId>, u64), ContentError> {
        let hint = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut buf = buffer_for(hint, &self.chunker);
        save_content(self.saver, &self.chunker, f, &mut buf, |bytes| {
            self.counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
            self.progress.add_bytes(bytes);
        })
    }
}

/// Whether the file at `path` is a valid `tag`: it exists (it was listed) and, when the tag
/// has a header, starts with it. Never through a symlink; unreadable means not a tag.
fn tag_is_valid(path: &Path, tag: &TagFile) -> bool {
    let want = tag.header_len();
    if want == 0 {
        return true;
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::open(path, flags, Mode::empty()) else {
        return false;
    };
    let mut start = Vec::with_capacity(want);
    match std::io::Read::read_to_end(
        &mut std::io::Read::take(File::from(fd), want as u64),
        &mut start,
    ) {
        Ok(_) => tag.valid(&start),
        Err(_) => false,
    }
}

/// Find the parent snapshot: the newest of the same host with the same source names, never
/// that of a stream (`--stdin`), whose root holds a file where a source's directory would be.
fn find_parent(
    catalog: &Catalog,
    opts: &BackupOptions,
) -> Result<Option<(SnapshotId, Snapshot)>, EngineError> {
    let names: Vec<&str> = opts.sources.iter().map(|s| s.name.as_str()).collect();
    find_parent_of(catalog, opts, &names, false)
}

/// The snapshot `opts.parent` names, else the newest of `opts.host` whose sources are named
/// `names` (in any order) and are streams when `stream`, paths when not.
pub(super) fn find_parent_of(
    catalog: &Catalog,
    opts: &BackupOptions,
    names: &[&str],
    stream: bool,
) -> Result<Option<(SnapshotId, Snapshot)>, EngineError> {
    if let Some(spec) = &opts.parent {
        let e = catalog.resolve_snapshot(spec)?;
        return Ok(Some((e.id, e.snapshot)));
    }
    let mut names = names.to_vec();
    names.sort();
    Ok(catalog
        .snapshots()?
        .into_iter()
        .rev()
        .find(|e| {
            let sources = &e.snapshot.sources;
            let mut n: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            n.sort();
            e.snapshot.host == opts.host
                && n == names
                && sources.iter().all(|s| s.is_stream() == stream)
        })
        .map(|e| (e.id, e.snapshot)))
}

/// Run a backup. Per-file problems become warnings; storage failures stop it and leave the
/// repository as it was (plus, at most, packs no snapshot references).
pub fn backup(
    repo: &Repository,
    catalog: &Catalog,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupSummary, EngineError> {
    backup_pass(repo, catalog, opts, PassOptions::default(), progress)
}

/// [`backup`] as one pass of several (see [`PassOptions`]).
pub fn backup_pass(
    repo: &Repository,
    catalog: &Catalog,
    opts: &BackupOptions,
    pass: PassOptions,
    progress: &Progress,
) -> Result<BackupSummary, EngineError> {
    let start = Instant::now();
    let time = opts.time.unwrap_or_else(chrono::Utc::now);
    check_sources(opts)?;
    let select = Selection::new(opts)?;
    let lock = repo.lock(LockKind::Shared, "backup")?;
    catalog.refresh(repo)?;
    let parent = find_parent(catalog, opts)?;
    let parent_root = load_compared_tree(repo, catalog, &pass, parent.as_ref())?;

    let (saver, rx) = Saver::new(repo, catalog);
    let saver = if opts.dry_run { saver.dry_run() } else { saver };
    let walker = Walker {
        repo,
        catalog,
        saver: &saver,
        chunker: repo.chunker(),
        select,
        exclude_regexes: exclude_regex_set(&opts.exclude_regexes)?,
        force: opts.force,
        counters: Counters::default(),
        warnings: Warnings::default(),
        progress,
        roots: open_roots(opts),
        would_read: opts.dry_run.then(Default::default),
    };
    let stats = saver.stats.clone();
    let root = walk_and_upload(&walker, rx, &stats, opts, parent_root.as_ref())?;

    let c = &walker.counters;
    let warnings = walker.warnings.take();
    let summary = snapshot_summary(c, &stats, warnings.len(), start);
    let parent_id = parent.as_ref().map(|(id, _)| *id);
    let snapshot = snapshot_of(opts, time, parent_id, root, summary.clone());
    // Last write of the backup: everything it names is already stored and indexed.
    let id = if pass.no_snapshot || opts.dry_run {
        None
    } else {
        lock.check_held()?;
        let id = repo.save_snapshot(&snapshot)?;
        catalog.add_snapshot(&id, &snapshot)?;
        Some(id)
    };
    Ok(BackupSummary {
        snapshot_id: id,
        parent: parent.map(|(id, _)| id),
        files: summary.files,
        dirs: summary.dirs,
        files_read: summary.files_read,
        files_unchanged: c.files_unchanged.load(Ordering::Relaxed),
        total_bytes: summary.total_bytes,
        bytes_read: summary.bytes_read,
        blobs_added: summary.blobs_added,
        bytes_added: summary.bytes_added,
        stored_bytes_added: summary.stored_bytes_added,
        packs_written: stats.packs_written.load(Ordering::Relaxed),
        index_files_written: stats.index_files_written.load(Ordering::Relaxed),
        duration_secs: start.elapsed().as_secs_f64(),
        warnings,
        tree: root,
        dry_run: opts.dry_run,
        would_read: planned_reads(walker.would_read),
    })
}

/// The files a dry run read, by path.
fn planned_reads(list: Option<std::sync::Mutex<Vec<PlannedRead>>>) -> Vec<PlannedRead> {
    let mut list = list
        .map(|l| l.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    list.sort_by(|a, b| a.path.cmp(&b.path));
    list
}

/// Refuse options a backup cannot run with (no sources, two sources of one name, a source
/// that cannot be found, a bad pattern or tag name) before anything is opened.
pub fn check_options(opts: &BackupOptions) -> Result<(), EngineError> {
    check_sources(opts)?;
    Selection::new(opts).map(drop)
}

/// Refuse, before anything is locked, a backup of no sources, of two sources with one name,
/// or of a source that cannot be found.
fn check_sources(opts: &BackupOptions) -> Result<(), EngineError> {
    if opts.sources.is_empty() {
        return Err(EngineError::Usage(
            "nothing to back up: give at least one source".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &opts.sources {
        if !seen.insert(s.name.as_str()) {
            return Err(EngineError::Usage(format!(
                "two sources are named {:?}: name them with NAME=PATH",
                s.name
            )));
        }
        std::fs::symlink_metadata(&s.path).map_err(|e| EngineError::Io {
            path: s.path.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

/// The root tree that files are compared against: the one the pass names, else the parent
/// snapshot's, else none (every file is read).
fn load_compared_tree(
    repo: &Repository,
    catalog: &Catalog,
    pass: &PassOptions,
    parent: Option<&(SnapshotId, Snapshot)>,
) -> Result<Option<Tree>, EngineError> {
    Ok(match (&pass.compare_tree, parent) {
        (Some(t), _) => Some(load_tree(repo, catalog, t)?),
        (None, Some((_, s))) => Some(load_tree(repo, catalog, &s.tree)?),
        (None, None) => None,
    })
}

/// Each source directory, opened once; a source that is not a directory is left out.
fn open_roots(opts: &BackupOptions) -> HashMap<PathBuf, OwnedFd> {
    opts.sources
        .iter()
        .filter_map(|s| {
            let fd = rustix::fs::open(
                &s.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            Some((s.path.clone(), fd))
        })
        .collect()
}

/// Walk the sources while the uploader thread stores the packs they fill; returns the root
/// tree once every pack and index file is stored. A failed walk abandons the saver, so the
/// uploader stops too; the uploader's own error explains a failed send better than the send.
fn walk_and_upload(
    walker: &Walker<'_>,
    rx: std::sync::mpsc::Receiver<crate::repo::PackBuilder>,
    stats: &super::saver::SaverStats,
    opts: &BackupOptions,
    parent_root: Option<&Tree>,
) -> Result<BlobId, EngineError> {
    with_uploader(walker.repo, walker.catalog, walker.saver, rx, stats, || {
        walk_sources(walker, opts, parent_root)
    })
}

/// Run `work`, which fills `saver` and ends with [`Saver::finish`], while the uploader
/// thread stores the packs it fills; returns its result once every pack and index file is
/// stored. A failed `work` abandons the saver, so the uploader stops too; the uploader's own
/// error explains a failed send better than the send.
pub(super) fn with_uploader<T>(
    repo: &Repository,
    catalog: &Catalog,
    saver: &Saver<'_>,
    rx: std::sync::mpsc::Receiver<crate::repo::PackBuilder>,
    stats: &super::saver::SaverStats,
    work: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    std::thread::scope(|scope| {
        let uploader = std::thread::Builder::new()
            .name("coffer-upload".into())
            .spawn_scoped(scope, || run_uploader(repo, catalog, rx, stats))
            .map_err(|e| EngineError::Io {
                path: "uploader thread".into(),
                source: e,
            })?;
        let worked = work();
        if worked.is_err() {
            saver.abandon();
        }
        let uploaded = uploader
            .join()
            .unwrap_or_else(|_| Err(EngineError::Internal("the uploader thread panicked".into())));
        uploaded?;
        worked
    })
}

/// Walk every source in parallel, save the root tree that names them, and hand the saver's
/// last packs to the uploader.
fn walk_sources(
    walker: &Walker<'_>,
    opts: &BackupOptions,
    parent_root: Option<&Tree>,
) -> Result<BlobId, EngineError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let results: Vec<Result<Option<Node>, EngineError>> = opts
        .sources
        .par_iter()
        .map(|s| {
            let name = OsString::from(&s.name);
            let old =
                parent_root.and_then(|t| t.nodes.iter().find(|n| n.name[..] == *s.name.as_bytes()));
            walker.entry(&SourceAt::new(s, &cwd), &name, &s.path, Path::new(""), old)
        })
        .collect();
    let mut nodes = Vec::new();
    for (r, s) in results.into_iter().zip(&opts.sources) {
        match r? {
            Some(mut n) => {
                n.name = ByteBuf::from(s.name.as_bytes().to_vec());
                nodes.push(n);
            }
            None => {
                return Err(EngineError::Usage(format!(
                    "source {} could not be read",
                    s.path.display()
                )));
            }
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let root = walker
        .saver
        .save(BlobKind::Tree, &super::encode_tree(&Tree { nodes })?)?;
    walker.saver.finish()?;
    Ok(root)
}

/// The figures a snapshot records, from the walk's counters and the saver's.
fn snapshot_summary(
    c: &Counters,
    stats: &super::saver::SaverStats,
    errors: usize,
    start: Instant,
) -> SnapshotSummary {
    SnapshotSummary {
        files: c.files.load(Ordering::Relaxed),
        dirs: c.dirs.load(Ordering::Relaxed),
        total_bytes: c.total_bytes.load(Ordering::Relaxed),
        files_read: c.files_read.load(Ordering::Relaxed),
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        blobs_added: stats.blobs_added.load(Ordering::Relaxed),
        bytes_added: stats.bytes_added.load(Ordering::Relaxed),
        stored_bytes_added: stats.stored_bytes_added.load(Ordering::Relaxed),
        errors: errors as u64,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// The snapshot of this backup.
fn snapshot_of(
    opts: &BackupOptions,
    time: chrono::DateTime<chrono::Utc>,
    parent: Option<SnapshotId>,
    root: BlobId,
    summary: SnapshotSummary,
) -> Snapshot {
    Snapshot {
        time_ns: time.timestamp_nanos_opt().unwrap_or(0),
        host: opts.host.clone(),
        username: super::username(),
        tags: opts.tags.clone(),
        parent,
        tree: root,
        sources: opts
            .sources
            .iter()
            .map(|s| SourceInfo {
                name: s.name.clone(),
                path: std::path::absolute(&s.path)
                    .unwrap_or_else(|_| s.path.clone())
                    .to_string_lossy()
                    .into_owned(),
            })
            .collect(),
        summary,
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}
