//! Reading metadata into [`Node`]s.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_bytes::ByteBuf;

use crate::format::tree::{Node, NodeKind, Xattr};

/// The node kind of a file type.
pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `path` from its `lstat` metadata, without content or subtree. Reads the symlink
/// target and the extended attributes.
pub fn node_from_metadata(name: &OsStr, path: &Path, meta: &Metadata) -> std::io::Result<Node> {
    let kind = kind_of(meta);
    let link_target = if kind == NodeKind::Symlink {
        Some(ByteBuf::from(
            std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
        ))
    } else {
        None
    };
    Ok(Node {
        name: ByteBuf::from(name.as_bytes().to_vec()),
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec() as u32,
        size: if kind == NodeKind::File {
            meta.len()
        } else {
            0
        },
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: meta.rdev(),
        link_target,
        content: Vec::new(),
        subtree: None,
        xattrs: read_xattrs(path),
    })
}

/// Extended attributes of `path` (not following symlinks), sorted by name. File systems
/// without xattr support give none.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let v = xattr::get(path, &n).ok().flatten()?;
            Some(Xattr {
                name: ByteBuf::from(n.as_bytes().to_vec()),
                value: ByteBuf::from(v),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// True when a file's metadata says its content cannot have changed since `old` was taken.
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.mtime_nsec == new.mtime_nsec
        && old.ctime == new.ctime
        && old.ctime_nsec == new.ctime_nsec
        && old.inode == new.inode
}
