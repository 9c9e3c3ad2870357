//! The FUSE side of a mount: the kernel's requests answered from the inode table, trees
//! loaded as directories are looked into, files read blob by blob through the blob cache.
//! Read-only: the mount is `ro`, so the kernel refuses writes before they get here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr,
    Request,
};

use super::blob_cache::{BLOB_CACHE_BYTES, BlobCache, Layout};
use super::inode::{Entry, Inode, InodeTable};
use crate::catalog::Catalog;
use crate::engine::{EngineError, blob_reader, load_tree};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::{RepoError, Repository};

/// How long the kernel may keep names and attributes: a snapshot never changes.
const TTL: Duration = Duration::from_secs(300);

/// What a mount did, for its summary.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Blobs loaded from the repository (and decrypted).
    pub blobs_loaded: AtomicU64,
    /// Blob reads served from the cache.
    pub cache_hits: AtomicU64,
    /// Bytes of file content handed to the kernel.
    pub bytes_read: AtomicU64,
    /// Requests answered with an I/O error.
    pub errors: AtomicU64,
}

/// A file open for reading: its node, and where its blobs sit.
struct OpenFile {
    node: Arc<Node>,
    layout: Layout,
}

struct Inner {
    repo: Repository,
    catalog: Catalog,
    table: Mutex<InodeTable>,
    cache: Mutex<BlobCache>,
    open: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    counters: Arc<Counters>,
}

/// The file system the kernel talks to; clones share everything.
#[derive(Clone)]
pub(super) struct SnapshotFs(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SnapshotFs {
    pub(super) fn new(
        repo: Repository,
        catalog: Catalog,
        table: InodeTable,
        counters: Arc<Counters>,
    ) -> Self {
        Self(Arc::new(Inner {
            repo,
            catalog,
            table: Mutex::new(table),
            cache: Mutex::new(BlobCache::new(BLOB_CACHE_BYTES)),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            counters,
        }))
    }

    /// An engine error as the kernel sees it: logged, then `EIO`.
    fn fail(&self, what: &str, e: EngineError) -> Errno {
        self.0.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!("{what}: {e}");
        Errno::EIO
    }

    /// Make sure the entries of directory `ino` are known, loading its tree if need be
    /// (outside the table's lock: other requests go on meanwhile).
    fn load_dir(&self, ino: u64) -> Result<(), EngineError> {
        let tree = {
            let t = lock(&self.0.table);
            match t.get(ino) {
                Some(i) if i.entry.is_dir() && t.listing(ino).is_none() => t.tree_to_load(ino),
                _ => return Ok(()),
            }
        };
        let nodes = match tree {
            Some(id) => load_tree(&self.0.repo, &self.0.catalog, &id)?.nodes,
            None => Vec::new(),
        };
        lock(&self.0.table).fill(ino, nodes);
        Ok(())
    }

    fn attr_of(&self, ino: u64) -> Option<FileAttr> {
        lock(&self.0.table).get(ino).map(|i| attr(ino, i))
    }

    /// A file's blob layout, from the index's lengths; checked against the size its node
    /// records.
    fn layout(&self, node: &Node) -> Result<Layout, EngineError> {
        let mut lens = Vec::with_capacity(node.content.len());
        for id in &node.content {
            let loc = self.0.catalog.blob_location(id)?.ok_or_else(|| {
                RepoError::corrupt(
                    format!("blob {id}"),
                    "not in the index (run `coffer check`)",
                )
            })?;
            lens.push(u64::from(loc.entry.raw_len));
        }
        let layout = Layout::new(lens);
        if layout.size() != node.size {
            let name = crate::engine::display_bytes(&node.name);
            return Err(EngineError::Repo(RepoError::corrupt(
                format!("file {name}"),
                format!(
                    "its blobs hold {} bytes, the tree says {}",
                    layout.size(),
                    node.size
                ),
            )));
        }
        Ok(layout)
    }

    /// One blob of a file, from the cache or loaded (verified by the repository).
    fn blob(&self, id: &BlobId, len: u64) -> Result<Arc<Vec<u8>>, EngineError> {
        if let Some(b) = lock(&self.0.cache).get(id) {
            self.0.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        let data = blob_reader::load_data(&self.0.repo, &self.0.catalog, id)?;
        self.0.counters.blobs_loaded.fetch_add(1, Ordering::Relaxed);
        if data.len() as u64 != len {
            return Err(EngineError::Repo(RepoError::corrupt(
                format!("blob {id}"),
                format!("it holds {} bytes, the index says {len}", data.len()),
            )));
        }
        let data = Arc::new(data);
        lock(&self.0.cache).insert(*id, data.clone());
        Ok(data)
    }

    /// Bytes `offset..offset + size` of an open file (fewer at its end).
    fn read_range(&self, f: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>, EngineError> {
        let range = f.layout.covering(offset, u64::from(size));
        let end = offset.saturating_add(u64::from(size)).min(f.layout.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for i in range {
            let blob = self.blob(&f.node.content[i], f.layout.blob_len(i))?;
            let start = f.layout.start(i);
            let from = offset.max(start) - start;
            let to = end.min(start + f.layout.blob_len(i)) - start;
            out.extend_from_slice(&blob[from as usize..to as usize]);
        }
        Ok(out)
    }

    /// The snapshot node of `ino`: `None` for the mount's own entries.
    fn node_of(&self, ino: u64) -> Result<Option<Arc<Node>>, Errno> {
        match lock(&self.0.table).get(ino).map(|i| &i.entry) {
            Some(Entry::Node(n)) => Ok(Some(n.clone())),
            Some(_) => Ok(None),
            None => Err(Errno::ENOENT),
        }
    }
}

/// A time as the kernel wants it.
fn system_time(secs: i64, nsec: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nsec));
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn kind_of(i: &Inode) -> FileType {
    match &i.entry {
        Entry::Dir { .. } => FileType::Directory,
        Entry::Link { .. } => FileType::Symlink,
        Entry::Node(n) => file_type(n.kind),
    }
}

/// The attributes of inode `ino`: a snapshot's entries as stored; the mount's own
/// directories and links read-only, owned by the snapshots' roots' owner.
fn attr(ino: u64, i: &Inode) -> FileAttr {
    let mut a = FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: kind_of(i),
        perm: 0o555,
        nlink: 2,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    match &i.entry {
        Entry::Dir { mtime_ns } | Entry::Link { mtime_ns, .. } => {
            let t = system_time(
                mtime_ns.div_euclid(1_000_000_000),
                mtime_ns.rem_euclid(1_000_000_000) as u32,
            );
            (a.atime, a.mtime, a.ctime) = (t, t, t);
            if let Entry::Link { target, .. } = &i.entry {
                (a.size, a.perm, a.nlink) = (target.len() as u64, 0o777, 1);
            }
        }
        Entry::Node(n) => {
            a.size = match n.kind {
                NodeKind::File => n.size,
                NodeKind::Symlink => n.link_target.as_ref().map_or(0, |t| t.len() as u64),
                _ => 0,
            };
            a.blocks = a.size.div_ceil(512);
            a.mtime = system_time(n.mtime, n.mtime_nsec);
            a.atime = a.mtime;
            a.ctime = system_time(n.ctime, n.ctime_nsec);
            a.perm = (n.mode & 0o7777) as u16;
            a.nlink = if n.kind == NodeKind::Dir {
                2
            } else {
                u32::try_from(n.links.max(1)).unwrap_or(u32::MAX)
            };
            (a.uid, a.gid) = (n.uid, n.gid);
            a.rdev = u32::try_from(n.rdev).unwrap_or(0);
        }
    }
    a
}

/// An extended attribute's value, or the list of names, as the kernel asks for it: the
/// size only (`size` 0), the bytes, or `ERANGE` when they do not fit.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(u32::try_from(data.len()).unwrap_or(u32::MAX));
    } else if data.len() <= size as usize {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Err(e) = self.load_dir(parent.0) {
            return reply.error(self.fail("listing a directory", e));
        }
        let mut t = lock(&self.0.table);
        if t.get(parent.0).is_none_or(|i| !i.entry.is_dir()) {
            return reply.error(Errno::ENOTDIR);
        }
        match t.lookup(parent.0, name.as_bytes()) {
            Some(ino) => match t.get(ino) {
                Some(i) => reply.entry(&TTL, &attr(ino, i), Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = lock(&self.0.table);
        match t.get(ino.0).map(|i| &i.entry) {
            Some(Entry::Link { target, .. }) => reply.data(target),
            Some(Entry::Node(n)) if n.kind == NodeKind::Symlink => {
                reply.data(n.link_target.as_deref().map_or(&[][..], |t| &t[..]))
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let node = match self.node_of(ino.0) {
            Ok(Some(n)) if n.kind == NodeKind::File => n,
            // Special files are the kernel's to open; the mount's own entries are directories.
            Ok(Some(n)) if n.kind != NodeKind::Dir => return reply.error(Errno::EINVAL),
            Ok(_) => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(e),
        };
        let layout = match self.layout(&node) {
            Ok(l) => l,
            Err(e) => return reply.error(self.fail("opening a file", e)),
        };
        let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.0.open).insert(fh, Arc::new(OpenFile { node, layout }));
        // The content never changes: what the kernel cached stays good.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = lock(&self.0.open).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match self.read_range(&f, offset, size) {
            Ok(data) => {
                let n = data.len() as u64;
                self.0.counters.bytes_read.fetch_add(n, Ordering::Relaxed);
                reply.data(&data)
            }
            Err(e) => reply.error(self.fail("reading a file", e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.0.open).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match lock(&self.0.table).get(ino.0) {
            Some(i) if i.entry.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if let Err(e) = self.load_dir(ino.0) {
            return reply.error(self.fail("listing a directory", e));
        }
        let t = lock(&self.0.table);
        let (Some(dir), Some(listing)) = (t.get(ino.0), t.listing(ino.0)) else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, &b"."[..]),
            (dir.parent, FileType::Directory, &b".."[..]),
        ];
        let children = listing.iter().filter_map(|(name, child)| {
            let kind = kind_of(t.get(*child)?);
            Some((*child, kind, &name[..]))
        });
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, kind, name)) in dots.into_iter().chain(children).enumerate().skip(skip) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let node = match self.node_of(ino.0) {
            Ok(Some(n)) => n,
            Ok(None) => return reply.error(Errno::NO_XATTR),
            Err(e) => return reply.error(e),
        };
        match node.xattrs.iter().find(|x| x.name[..] == *name.as_bytes()) {
            Some(x) => reply_xattr(reply, size, &x.value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names: Vec<u8> = match self.node_of(ino.0) {
            Ok(Some(n)) => n
                .xattrs
                .iter()
                .flat_map(|x| x.name.iter().copied().chain([0]))
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return reply.error(e),
        };
        reply_xattr(reply, size, &names);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.contains(fuser::AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else if lock(&self.0.table).get(ino.0).is_some() {
            reply.ok()
        } else {
            reply.error(Errno::ENOENT)
        }
    }
}
