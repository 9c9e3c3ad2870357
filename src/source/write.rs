//! Creating restored entries and applying their metadata.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::format::tree::{Node, NodeKind};

/// True when this process runs as root (ownership is then restored). Asked once: a restore
/// asks for every file, and the answer does not change.
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| rustix::process::geteuid().is_root())
}

/// Create a directory, or accept an existing real directory. A symlink in its place is refused.
pub fn create_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = fs::symlink_metadata(path)?;
            if m.file_type().is_symlink() {
                Err(io::Error::other(
                    "a symlink is in the way; refusing to follow it",
                ))
            } else if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other("a non-directory is in the way"))
            }
        }
        Err(e) => Err(e),
    }
}

/// Open a file for restoring its content, never following a symlink. Without `overwrite` an
/// existing entry is an error.
pub fn create_file(path: &Path, overwrite: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    if overwrite {
        if let Ok(m) = fs::symlink_metadata(path)
            && !m.is_file()
        {
            if m.is_dir() {
                return Err(io::Error::other("a directory is in the way"));
            }
            fs::remove_file(path)?;
        }
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(e.kind(), "already exists (use --overwrite to replace it)")
        } else {
            e
        }
    })
}

/// Remove an existing non-directory entry when overwriting.
pub fn clear_for(path: &Path, overwrite: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::other("a directory is in the way")),
        Ok(_) if overwrite => fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "already exists (use --overwrite to replace it)",
        )),
        Err(_) => Ok(()),
    }
}

/// Create a symlink, a FIFO or a device node.
pub fn create_special(path: &Path, node: &Node, overwrite: bool) -> io::Result<()> {
    clear_for(path, overwrite)?;
    match node.kind {
        NodeKind::Symlink => {
            let target = node.link_target.as_deref().map(|t| &t[..]).unwrap_or(b"");
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
        }
        NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
            use rustix::fs::{FileType, Mode};
            let ft = match node.kind {
                NodeKind::Fifo => FileType::Fifo,
                NodeKind::CharDevice => FileType::CharacterDevice,
                _ => FileType::BlockDevice,
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                ft,
                Mode::from_raw_mode(node.mode & 0o7777),
                node.rdev,
            )
            .map_err(io::Error::from)
        }
        NodeKind::Socket => Err(io::Error::other("sockets are recorded but not recreated")),
        NodeKind::File | NodeKind::Dir => Err(io::Error::other("not a special file")),
    }
}

/// The permission bits to restore: set-id bits only where the owner is restored too (as
/// root); a non-root restore would otherwise hand out setuid files owned by the restorer.
fn restored_mode(node: &Node) -> u32 {
    mode_for(node.mode, is_root())
}

fn mode_for(mode: u32, owner_restored: bool) -> u32 {
    let mode = mode & 0o7777;
    if owner_restored {
        mode
    } else {
        mode & !SET_ID_BITS
    }
}

/// The setuid and setgid bits of a mode.
pub(crate) const SET_ID_BITS: u32 = 0o6000;

/// Whether an xattr is restored (or imported): `security.*` (capabilities, SELinux labels) and
/// `trusted.*` only when `privileged`, since they grant rights a snapshot from elsewhere must
/// not.
pub(crate) fn xattr_allowed(name: &[u8], privileged: bool) -> bool {
    privileged || !(name.starts_with(b"security.") || name.starts_with(b"trusted."))
}

/// Apply ownership (as root), permissions, xattrs and times to a restored entry. Ownership
/// first, because chown clears setuid bits; times last, because the others change ctime only.
/// `privileged` also restores `security.*` and `trusted.*` xattrs.
pub fn apply_metadata(path: &Path, node: &Node, privileged: bool) -> io::Result<()> {
    if node.kind == NodeKind::Symlink {
        if is_root() {
            std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
        }
        return set_times(path, node);
    }
    if is_root() {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    for x in node
        .xattrs
        .iter()
        .filter(|x| xattr_allowed(&x.name, privileged))
    {
        // Best effort: the target file system may not support them, or not this namespace.
        if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name), &x.value) {
            tracing::debug!("xattr on {}: {e}", path.display());
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(restored_mode(node)))?;
    set_times(path, node)
}

/// [`apply_metadata`] for a regular file still open after its content was written: through
/// the descriptor, so no path is looked up again (four lookups per file were a visible share
/// of restoring many small files).
pub fn apply_file_metadata(
    f: &fs::File,
    path: &Path,
    node: &Node,
    privileged: bool,
) -> io::Result<()> {
    if is_root() {
        std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid))?;
    }
    for x in node
        .xattrs
        .iter()
        .filter(|x| xattr_allowed(&x.name, privileged))
    {
        // Best effort, as in apply_metadata.
        if let Err(e) = xattr::FileExt::set_xattr(f, OsStr::from_bytes(&x.name), &x.value) {
            tracing::debug!("xattr on {}: {e}", path.display());
        }
    }
    // After the owner: chown clears set-id bits.
    f.set_permissions(fs::Permissions::from_mode(restored_mode(node)))?;
    let t = rustix::fs::Timespec {
        tv_sec: node.mtime,
        tv_nsec: node.mtime_nsec.min(999_999_999).into(),
    };
    let ts = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::futimens(f, &ts).map_err(io::Error::from)
}

/// Set atime and mtime to the node's mtime without following a symlink and without opening
/// the entry (opening a FIFO would block).
fn set_times(path: &Path, node: &Node) -> io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps};
    let t = Timespec {
        tv_sec: node.mtime,
        tv_nsec: node.mtime_nsec.min(999_999_999).into(),
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_id_bits_stay_only_where_the_owner_is_restored() {
        assert_eq!(super::mode_for(0o104755, true), 0o4755);
        assert_eq!(super::mode_for(0o104755, false), 0o755);
        assert_eq!(super::mode_for(0o42775, false), 0o775);
        assert_eq!(
            super::mode_for(0o41777, false),
            0o1777,
            "the sticky bit stays"
        );
        assert!(super::xattr_allowed(b"user.x", false));
        assert!(!super::xattr_allowed(b"security.capability", false));
        assert!(!super::xattr_allowed(b"trusted.x", false));
        assert!(super::xattr_allowed(b"trusted.x", true));
    }
}
