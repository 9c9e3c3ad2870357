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
    *ROOT.get_or_init(|| euid() == 0)
}

/// This process's effective user id (the owner of the files it creates), asked once.
fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| rustix::process::geteuid().as_raw())
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

/// Make a symlink where nothing is, in a directory whose new entries get `new`, with its
/// owner (as root, when it is not the creator's) and times: no temporary name and no rename.
/// `Ok(false)`, with nothing changed, when something is already there.
pub fn create_new_symlink(path: &Path, node: &Node, new: NewFiles) -> io::Result<bool> {
    let target = node.link_target.as_deref().map(|t| &t[..]).unwrap_or(b"");
    match std::os::unix::fs::symlink(OsStr::from_bytes(target), path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    let (chown, _) = metadata_to_set(node, None, new);
    if chown {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    set_times(path, node)?;
    Ok(true)
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

/// The mode a restored regular file is created with: its permission bits, never set-id bits
/// (they are set once the owner is), and always writable by its owner (a file being
/// restored may be closed and opened again for writing before it is complete).
pub fn creation_mode(node: &Node) -> u32 {
    (restored_mode(node) & 0o777) | 0o200
}

/// What a new file gets from its creation in one directory, known without asking the kernel
/// per file: a restore of many small files spent a visible share of its time in an `fchown`
/// and an `fchmod` per file that changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewFiles {
    /// The group of a new file: the directory's when it is setgid, else this process's.
    pub gid: u32,
    /// Whether the directory is setgid (a new directory in it is too).
    pub setgid: bool,
    /// Whether a new file's owner and permission bits are predictable: on a local POSIX file
    /// system (where the mode given to `open` less the umask is the file's mode and the owner
    /// is the creating process) and no default ACL on the directory (which would replace the
    /// umask).
    pub predictable: bool,
}

/// Local file systems on which a new file's mode and owner follow POSIX (`statfs` magic
/// numbers: ext2/3/4, XFS, Btrfs, tmpfs, F2FS). On any other (NFS with squashed root, FUSE,
/// CIFS, ...) the metadata of every file is set explicitly.
const PREDICTABLE_FS: [i64; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010];

impl NewFiles {
    /// Unknown: the owner and mode of every file are set explicitly.
    pub const UNKNOWN: NewFiles = NewFiles {
        gid: u32::MAX,
        setgid: false,
        predictable: false,
    };

    /// What new files get in the existing directory `dir` (a `statfs`, a `stat` and an xattr
    /// lookup, once per directory). A directory created by the restore inside it gets the
    /// same (it inherits the setgid bit, the group and a default ACL), so only directories
    /// found in place are asked.
    pub fn of_dir(dir: &Path) -> NewFiles {
        use std::os::unix::fs::MetadataExt;
        // `f_type` is an i64 here, a u32 or an i32 on some other targets: its low 32 bits.
        #[allow(clippy::unnecessary_cast)]
        let fs_ok = rustix::fs::statfs(dir)
            .is_ok_and(|s| PREDICTABLE_FS.contains(&((s.f_type as i64) & 0xFFFF_FFFF)));
        let Ok(m) = fs::metadata(dir) else {
            return Self::UNKNOWN;
        };
        // No default ACL: a lookup that fails for another reason counts as one.
        let acl = !matches!(xattr::get(dir, "system.posix_acl_default"), Ok(None));
        let setgid = m.mode() & 0o2000 != 0;
        let gid = if setgid {
            m.gid()
        } else {
            rustix::process::getegid().as_raw()
        };
        NewFiles {
            gid,
            setgid,
            predictable: fs_ok && !acl && umask().is_some(),
        }
    }
}

/// This process's umask, read once from `/proc/self/status` (setting it to read it would
/// change it for a moment under the other threads); `None` where the kernel does not say.
pub fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Whether an entry created with `mode` (after the umask) in a directory of `new` needs
/// `fchown` and `fchmod` to get `node`'s owner and permission bits.
fn metadata_to_set(node: &Node, mode: Option<u32>, new: NewFiles) -> (bool, bool) {
    let known = new.predictable;
    let chown = is_root() && !(known && node.uid == euid() && node.gid == new.gid);
    let chmod = !(known && mode.is_some_and(|m| m == restored_mode(node)));
    (chown, chmod)
}

/// [`apply_metadata`] for a directory; `created_in`, for one this restore created, is what its
/// parent gave it (owner, setgid bit; its mode was 0777 less the umask): an owner or mode it
/// already has is not set again.
pub fn apply_dir_metadata(
    path: &Path,
    node: &Node,
    privileged: bool,
    created_in: Option<NewFiles>,
) -> io::Result<()> {
    let (chown, mut chmod) = match created_in {
        Some(new) => {
            let setgid = if new.setgid { 0o2000 } else { 0 };
            let mode = umask().map(|u| (0o777 & !u) | setgid);
            metadata_to_set(node, mode, new)
        }
        None => (is_root(), true),
    };
    if chown {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
        chmod = true;
    }
    for x in node
        .xattrs
        .iter()
        .filter(|x| xattr_allowed(&x.name, privileged))
    {
        chmod = true;
        if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name), &x.value) {
            tracing::debug!("xattr on {}: {e}", path.display());
        }
    }
    if chmod {
        fs::set_permissions(path, fs::Permissions::from_mode(restored_mode(node)))?;
    }
    set_times(path, node)
}

/// [`apply_metadata`] for a regular file still open after its content was written: through
/// the descriptor, so no path is looked up again (four lookups per file were a visible share
/// of restoring many small files). `created` is the mode the file was created with and what
/// its directory gives new files: an owner or mode it already has is not set again.
pub fn apply_file_metadata(
    f: &fs::File,
    path: &Path,
    node: &Node,
    privileged: bool,
    created: (u32, NewFiles),
) -> io::Result<()> {
    let mode = umask().map(|u| created.0 & !u & 0o7777);
    let (chown, mut chmod) = metadata_to_set(node, mode, created.1);
    if chown {
        std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid))?;
    }
    for x in node
        .xattrs
        .iter()
        .filter(|x| xattr_allowed(&x.name, privileged))
    {
        // Best effort, as in apply_metadata. An ACL changes the permission bits: they are
        // set again after.
        chmod = true;
        if let Err(e) = xattr::FileExt::set_xattr(f, OsStr::from_bytes(&x.name), &x.value) {
            tracing::debug!("xattr on {}: {e}", path.display());
        }
    }
    // After the owner: chown clears set-id bits (a file is created without them, so they
    // always need this).
    if chmod {
        f.set_permissions(fs::Permissions::from_mode(restored_mode(node)))?;
    }
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
