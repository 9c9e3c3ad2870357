//! Import's reading of a tar stream: each entry checked, turned into a tree node, its content
//! cut by the repository's chunker and saved, and the node put into the [`TreeBuilder`].
//!
//! Names are refused, never cleaned up: an absolute name, a `..` component, a NUL byte or a
//! path deeper than [`MAX_DEPTH`] stops the import. Entries outside the prefix, hard links to
//! names not seen before and entry types a snapshot cannot hold are skipped with a warning.
//! Unless the import is privileged, what grants rights is dropped and counted, with the same
//! gates as an unprivileged restore: setuid/setgid bits, device nodes, and `security.*` and
//! `trusted.*` xattrs (file capabilities among them).
//! Every read error of the stream is reported as a damaged archive. Nothing here writes a
//! snapshot; content and trees go through the engine's saver.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::atomic::Ordering;

use serde_bytes::ByteBuf;
use tar::EntryType;

use super::gzip_pipe::ChunkReader;
use super::import::ImportSummary;
use super::import_tree::TreeBuilder;
use super::pax::Pax;
use crate::chunker::Chunker;
use crate::engine::content::{ContentError, save_content, window_bytes};
use crate::engine::saver::Saver;
use crate::engine::walk::components;
use crate::engine::{EngineError, Progress, Warnings, display_bytes};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::source::write::{SET_ID_BITS, xattr_allowed};

/// Deepest path accepted (bounds the recursion that writes the trees).
const MAX_DEPTH: usize = 1024;
/// Entries outside the prefix that are named one by one; the rest are counted.
const OUTSIDE_WARNINGS: u64 = 10;

/// An import in progress: the tree built so far and what has been counted.
pub(super) struct Importer<'a> {
    saver: &'a Saver<'a>,
    chunker: Chunker,
    progress: &'a Progress,
    archive: String,
    prefix: Vec<Vec<u8>>,
    prefix_shown: String,
    tree: TreeBuilder,
    next_inode: u64,
    window: Vec<u8>,
    outside: u64,
    /// Keep set-id bits, device nodes and `security.*`/`trusted.*` xattrs.
    privileged: bool,
    /// Device entries dropped, so that hard links to them are dropped too, not warned about.
    dropped_devices: HashSet<Vec<Vec<u8>>>,
    /// The counts so far.
    pub s: ImportSummary,
    /// Entries skipped so far.
    pub warnings: Warnings,
}

impl<'a> Importer<'a> {
    /// An import of the archive shown as `archive`, of the sources under the normalised
    /// `prefix`, into a snapshot taken at `time_secs`; `privileged` keeps what grants rights.
    pub(super) fn new(
        saver: &'a Saver<'a>,
        chunker: Chunker,
        progress: &'a Progress,
        archive: String,
        prefix: &str,
        time_secs: i64,
        privileged: bool,
    ) -> Self {
        let window = vec![0; window_bytes(&chunker)];
        Self {
            saver,
            chunker,
            progress,
            archive,
            prefix: components(prefix)
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect(),
            prefix_shown: if prefix.is_empty() {
                "the archive's top".into()
            } else {
                prefix.to_string()
            },
            tree: TreeBuilder::new(time_secs),
            next_inode: 0,
            window,
            outside: 0,
            privileged,
            dropped_devices: HashSet::new(),
            s: ImportSummary::default(),
            warnings: Warnings::default(),
        }
    }
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

    /// Turn one tar entry into a node and put it in the tree; an entry outside the prefix or
    /// of a type a snapshot cannot hold is skipped (with a warning).
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), EngineError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = self.relative(&raw, true)? else {
            return Ok(());
        };
        let node = self.metadata(entry, &raw, &rel)?;
        // Old tars wrote directories as regular entries whose names end in `/`.
        if kind == EntryType::Directory || (kind == EntryType::Regular && raw.ends_with(b"/")) {
            return self.dir_entry(&rel, node);
        }
        if kind == EntryType::Link {
            // A hard link's node is its target's, already seen to.
            return match self.hard_link(entry, &raw, node)? {
                Some(linked) => self.insert(&rel, linked),
                None => Ok(()),
            };
        }
        let Some(mut node) = self.typed(entry, kind, &raw, &rel, node)? else {
            return Ok(());
        };
        self.unprivileged(&mut node);
        self.insert(&rel, node)
    }

    /// A file node with the entry's name, mode, owner, times and xattrs, from its header and
    /// PAX records (a tar record has no ctime: the mtime stands in for it).
    fn metadata<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        rel: &[Vec<u8>],
    ) -> Result<Node, EngineError> {
        let pax = Pax::read(entry).map_err(|e| self.corrupt(e))?;
        let h = entry.header();
        let field = |r: io::Result<u64>| r.map_err(|e| self.corrupt_entry(raw, e));
        let id =
            |v: u64| u32::try_from(v).map_err(|_| self.corrupt_entry(raw, format!("owner id {v}")));
        let uid = id(pax.uid.map_or_else(|| field(h.uid()), Ok)?)?;
        let gid = id(pax.gid.map_or_else(|| field(h.gid()), Ok)?)?;
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (field(h.mtime())? as i64, 0),
        };
        let perm = h.mode().map_err(|e| self.corrupt_entry(raw, e))? & 0o7777;
        let name = rel.last().cloned().unwrap_or_default();
        Ok(Node::new(name, NodeKind::File)
            .with_mode(perm)
            .with_owner(uid, gid)
            .with_mtime(mtime, mtime_nsec)
            .with_ctime(mtime, mtime_nsec)
            .with_xattrs(pax.xattrs))
    }

    /// The node of an entry that is neither a directory nor a hard link, by its type: `None`
    /// when it is skipped.
    fn typed<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        raw: &[u8],
        rel: &[Vec<u8>],
        mut node: Node,
    ) -> Result<Option<Node>, EngineError> {
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, raw, node).map(Some)
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    self.corrupt(format!("symlink {} has no target", display_bytes(raw)))
                })?;
                node.kind = NodeKind::Symlink;
                node.link_target = Some(ByteBuf::from(target.into_owned()));
                self.s.symlinks += 1;
                Ok(Some(node))
            }
            EntryType::Fifo => {
                node.kind = NodeKind::Fifo;
                self.s.special += 1;
                Ok(Some(node))
            }
            EntryType::Char | EntryType::Block => self.device(entry, kind, raw, rel, node),
            other => {
                self.warnings.push(
                    display_bytes(raw),
                    format!("tar entry type {other:?} is not supported; skipped"),
                );
                Ok(None)
            }
        }
    }

    /// A regular file: its content chunked and saved, checked to be as long as the header
    /// says, and a new inode number.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        mut node: Node,
    ) -> Result<Node, EngineError> {
        let expected = entry.size();
        let (content, size) = self.read_content(entry)?;
        if size != expected {
            return Err(self.corrupt(format!(
                "{} ends after {size} of {expected} bytes",
                display_bytes(raw)
            )));
        }
        self.next_inode += 1;
        node.inode = self.next_inode;
        node.content = content;
        node.size = size;
        self.s.files += 1;
        self.s.total_bytes += size;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(node)
    }

    /// A hard link: its target's node under the entry's name, or `None` when the target is
    /// a dropped device node (counted) or not in the archive before it (warned about).
    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        node: Node,
    ) -> Result<Option<Node>, EngineError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| self.corrupt(format!("hard link {} has no target", display_bytes(raw))))?
            .into_owned();
        let target_rel = self.relative(&target, false)?;
        let found = target_rel.as_ref().and_then(|t| self.tree.find(t).cloned());
        if found.is_none() && target_rel.is_some_and(|t| self.dropped_devices.contains(&t)) {
            self.s.dropped.device_nodes += 1;
            return Ok(None);
        }
        let Some(mut linked) = found else {
            self.warnings.push(
                display_bytes(raw),
                format!(
                    "hard link to {}, which is not in the archive before it; skipped",
                    display_bytes(&target)
                ),
            );
            return Ok(None);
        };
        if linked.kind == NodeKind::File {
            self.tree.add_link(linked.inode);
            self.s.files += 1;
            self.s.total_bytes += linked.size;
        }
        linked.name = node.name;
        self.s.hardlinks += 1;
        Ok(Some(linked))
    }

    /// A character or block device, with its device number; unless privileged, `None`: it is
    /// dropped, counted and remembered (hard links to it are dropped too).
    fn device<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        raw: &[u8],
        rel: &[Vec<u8>],
        mut node: Node,
    ) -> Result<Option<Node>, EngineError> {
        if !self.privileged {
            self.s.dropped.device_nodes += 1;
            self.dropped_devices.insert(rel.to_vec());
            return Ok(None);
        }
        let h = entry.header();
        let dev = |r: io::Result<Option<u32>>| -> Result<u32, EngineError> {
            Ok(r.map_err(|e| self.corrupt_entry(raw, e))?.unwrap_or(0))
        };
        let (major, minor) = (dev(h.device_major())?, dev(h.device_minor())?);
        node.kind = if kind == EntryType::Char {
            NodeKind::CharDevice
        } else {
            NodeKind::BlockDevice
        };
        node.rdev = rustix::fs::makedev(major, minor);
        self.s.special += 1;
        Ok(Some(node))
    }

    /// Count a finished node (its file type bits added to its mode) and put it in the tree.
    fn insert(&mut self, rel: &[Vec<u8>], mut node: Node) -> Result<(), EngineError> {
        node.mode |= type_bits(node.kind);
        self.s.entries += 1;
        self.tree.insert(rel, node, &self.warnings)
    }

    /// Unless privileged: clear set-id bits and leave out `security.*`/`trusted.*` xattrs,
    /// counting each.
    fn unprivileged(&mut self, node: &mut Node) {
        if self.privileged {
            return;
        }
        if node.mode & SET_ID_BITS != 0 {
            node.mode &= !SET_ID_BITS;
            self.s.dropped.set_id_bits += 1;
        }
        let before = node.xattrs.len();
        node.xattrs.retain(|x| xattr_allowed(&x.name, false));
        self.s.dropped.xattrs += (before - node.xattrs.len()) as u64;
    }

    fn dir_entry(&mut self, rel: &[Vec<u8>], mut node: Node) -> Result<(), EngineError> {
        self.unprivileged(&mut node);
        node.kind = NodeKind::Dir;
        node.mode |= type_bits(NodeKind::Dir);
        self.s.entries += 1;
        self.tree.set_dir(rel, node, &self.warnings)
    }

    /// Chunk and save an entry's content; returns the blob ids and the bytes read.
    fn read_content(&mut self, r: &mut impl Read) -> Result<(Vec<BlobId>, u64), EngineError> {
        save_content(self.saver, &self.chunker, r, &mut self.window, |_| {}).map_err(|e| match e {
            ContentError::Read(e) => self.corrupt(e),
            ContentError::Save(e) => e,
        })
    }

    /// Read the whole archive, then the rest of the stream, so the gzip checksums are
    /// verified before anything is written that names the content.
    pub(super) fn read_archive(&mut self, reader: ChunkReader) -> Result<(), EngineError> {
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
    pub(super) fn finish(&mut self) -> Result<(BlobId, Vec<String>), EngineError> {
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
        if self.tree.is_empty() {
            return Err(EngineError::Usage(format!(
                "{}: no entries under {} (is --prefix right?); no snapshot was written",
                self.archive, self.prefix_shown
            )));
        }
        let archive = &self.archive;
        let saved = self.tree.save(self.saver, |name| {
            String::from_utf8(name.to_vec()).map_err(|_| {
                EngineError::Usage(format!(
                    "{archive}: the source directory {:?} is not UTF-8; no snapshot was written",
                    display_bytes(name)
                ))
            })
        })?;
        self.s.dirs += saved.dirs;
        Ok((saved.root, saved.sources))
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
