//! `mount`: the repository's snapshots as a read-only file system (FUSE), as `restic mount`:
//!
//! ```text
//! snapshots/2026-12-02T03:00:00Z/<source>/...   one directory per snapshot, by its UTC time
//! ids/1a2b3c4d/...                              the same by short id (or the full id)
//! hosts/<host>/<time>/...   tags/<tag>/<time>/...
//! latest -> snapshots/<time>                    the newest snapshot (not a pre-restore copy)
//! ```
//!
//! Trees are loaded as directories are looked into ([`inode`]); a read loads only the blobs
//! that hold the bytes asked for, and keeps the decrypted blobs in a bounded cache
//! ([`blob_cache`]). A shared lock is held while mounted (prune waits). The snapshot list is
//! the one at mount time. Inodes are kept until unmount (docs/design.md has the memory).
//!
//! The mount goes through `fusermount3` (or `mount(2)` as root) without libfuse. With
//! `auto_unmount` (root, or `user_allow_other` in `/etc/fuse.conf`) the kernel's mount also
//! goes away when the process dies, even by SIGKILL.

mod blob_cache;
mod fs;
pub mod inode;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use serde::Serialize;

pub use blob_cache::BLOB_CACHE_BYTES;
use fs::{Counters, SnapshotFs};
use inode::{InodeTable, SnapshotInfo};

use super::EngineError;
use super::session::Session;
use crate::repo::{LockGuard, LockKind};

/// How long an unmount waits for the kernel to let go (a process still inside the mount
/// keeps a lazily detached file system alive).
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);
/// How often a serving mount looks whether it was unmounted from outside.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Threads answering the kernel: a slow blob fetch does not hold up listings.
const FS_THREADS: usize = 4;

/// What to mount where.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// An empty directory.
    pub mountpoint: PathBuf,
}

/// A mount's account.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MountSummary {
    /// Where it was mounted.
    pub mountpoint: String,
    /// Snapshots shown.
    pub snapshots: usize,
    /// Blobs loaded from the repository.
    pub blobs_loaded: u64,
    /// Blob reads served from the cache.
    pub cache_hits: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Requests that failed with an I/O error (each was logged).
    pub errors: u64,
    /// True when it was unmounted from outside (`umount`, `fusermount3 -u`).
    pub unmounted_outside: bool,
}

/// A mounted repository, served until [`Mounted::serve_until`] returns.
pub struct Mounted {
    session: BackgroundSession,
    counters: Arc<Counters>,
    summary: MountSummary,
    _lock: LockGuard,
}

/// Check that `path` can be mounted on: an existing, empty directory that is not a mount
/// point already. Returns its absolute path.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, EngineError> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::Usage(format!(
                "mount point {shown} does not exist (create an empty directory)"
            )));
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) => {
            return Err(EngineError::Usage(format!(
                "mount point {shown} is busy: a dead FUSE mount is still there \
                 (remove it with `fusermount3 -u {shown}`)"
            )));
        }
        Err(source) => {
            return Err(EngineError::Io {
                path: shown.to_string(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(EngineError::Usage(format!(
            "mount point {shown} is not a directory"
        )));
    }
    let io = |source| EngineError::Io {
        path: shown.to_string(),
        source,
    };
    let abs = path.canonicalize().map_err(io)?;
    if is_mount_point(&abs, &meta) {
        return Err(EngineError::Usage(format!(
            "mount point {shown} is busy: something is mounted there already"
        )));
    }
    if std::fs::read_dir(&abs).map_err(io)?.next().is_some() {
        return Err(EngineError::Usage(format!(
            "mount point {shown} is not empty"
        )));
    }
    Ok(abs)
}

/// True when `abs` is a mount point: on another device than its parent, or listed in
/// `/proc/self/mountinfo` (a bind mount of the same file system).
fn is_mount_point(abs: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent_dev = abs
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev());
    if abs.parent().is_some() && parent_dev != Some(meta.dev()) {
        return true;
    }
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|info| mountinfo_lists(&info, abs.as_os_str().as_encoded_bytes()))
}

/// True when the mount table `info` (`/proc/self/mountinfo`'s format) has a mount at
/// `path`; mount points there escape space, tab, newline and `\` as octal (`\040`).
fn mountinfo_lists(info: &str, path: &[u8]) -> bool {
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| unescape_octal(p) == path)
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Mount the snapshots of `session`'s repository at `opts.mountpoint` (checked with
/// [`check_mountpoint`]) and start serving them in the background.
pub fn mount(session: Session, opts: &MountOptions) -> Result<Mounted, EngineError> {
    let mountpoint = check_mountpoint(&opts.mountpoint)?;
    let Session { repo, catalog } = session;
    let lock = repo.lock(LockKind::Shared, "mount")?;
    catalog.refresh(&repo)?;
    let all = catalog.snapshots()?;
    let latest = catalog
        .resolve_snapshot("latest")
        .ok()
        .map(|s| s.id.to_hex());
    let infos: Vec<SnapshotInfo> = all
        .iter()
        .map(|s| SnapshotInfo {
            id: s.id.to_hex(),
            time_ns: s.snapshot.time_ns,
            host: s.snapshot.host.clone(),
            tags: s.snapshot.tags.clone(),
            tree: s.snapshot.tree,
        })
        .collect();
    let owner = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let table = InodeTable::new(&infos, latest.as_deref(), owner);
    let counters = Arc::new(Counters::default());
    let fs = SnapshotFs::new(repo, catalog, table, counters.clone());
    let session = spawn(fs, &mountpoint)?;
    Ok(Mounted {
        session,
        counters,
        summary: MountSummary {
            mountpoint: mountpoint.display().to_string(),
            snapshots: infos.len(),
            ..MountSummary::default()
        },
        _lock: lock,
    })
}

/// Mount with `auto_unmount` where FUSE allows it, else without.
fn spawn(fs: SnapshotFs, mountpoint: &Path) -> Result<BackgroundSession, EngineError> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::FSName("coffer".into()),
    ];
    config.n_threads = Some(FS_THREADS);
    let mut auto = config.clone();
    auto.mount_options.push(MountOption::AutoUnmount);
    auto.acl = SessionACL::RootAndOwner;
    let first = fuser::spawn_mount(fs.clone(), mountpoint, &auto);
    let result = match first {
        // allow_other not allowed to this user, or no fusermount3 (root mounts without).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
            ) =>
        {
            tracing::info!("mounting without auto_unmount: {e}");
            fuser::spawn_mount(fs, mountpoint, &config)
        }
        other => other,
    };
    result.map_err(|e| mount_error(mountpoint, e))
}

fn mount_error(mountpoint: &Path, e: std::io::Error) -> EngineError {
    let fuse = Path::new("/dev/fuse");
    let msg = if !fuse.exists() {
        "FUSE is not available: /dev/fuse is missing (`modprobe fuse`; in a container, \
         `--device /dev/fuse --cap-add SYS_ADMIN`)"
            .to_string()
    } else {
        e.to_string().trim().to_string()
    };
    EngineError::Usage(format!("cannot mount at {}: {msg}", mountpoint.display()))
}

impl Mounted {
    /// What is mounted where (the counters are filled in by [`Mounted::serve_until`]).
    pub fn summary(&self) -> &MountSummary {
        &self.summary
    }

    /// Serve until `stop` gets a message or is disconnected, or until the file system is
    /// unmounted from outside; then unmount and release the lock.
    pub fn serve_until(self, stop: &mpsc::Receiver<()>) -> Result<MountSummary, EngineError> {
        let Mounted {
            session,
            counters,
            mut summary,
            _lock,
        } = self;
        loop {
            if session.guard.is_finished() {
                summary.unmounted_outside = true;
                break;
            }
            match stop.recv_timeout(POLL_EVERY) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        unmount(session, &summary.mountpoint)?;
        summary.blobs_loaded = counters.blobs_loaded.load(Ordering::Relaxed);
        summary.cache_hits = counters.cache_hits.load(Ordering::Relaxed);
        summary.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
        summary.errors = counters.errors.load(Ordering::Relaxed);
        Ok(summary)
    }
}

/// Unmount, then wait for the serving threads, at most [`UNMOUNT_WAIT`]: a file system still
/// in use is detached and goes when its last user lets go (or with this process).
///
/// The unmount is done here: `fusermount3`'s `auto_unmount` only unmounts a file system whose
/// server is gone, not one whose server asks it to.
fn unmount(session: BackgroundSession, mountpoint: &str) -> Result<(), EngineError> {
    detach(Path::new(mountpoint))?;
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(session.umount_and_join());
    });
    match finished.recv_timeout(UNMOUNT_WAIT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(EngineError::Usage(format!("unmounting {mountpoint}: {e}"))),
        Err(_) => {
            tracing::warn!("{mountpoint} is still in use: it goes when its last user leaves");
            Ok(())
        }
    }
}

/// Take the mount at `mountpoint` out of the tree: `umount(2)` as root (lazily when it is
/// busy), else `fusermount3 -u`. A mount point that is no longer mounted (unmounted from
/// outside) is fine.
fn detach(mountpoint: &Path) -> Result<(), EngineError> {
    use rustix::io::Errno;
    use rustix::mount::{UnmountFlags, unmount};
    match unmount(mountpoint, UnmountFlags::empty()) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::BUSY) => {
            tracing::warn!(
                "{} is busy: detached, it goes when its last user leaves",
                mountpoint.display()
            );
            unmount(mountpoint, UnmountFlags::DETACH).or_else(|e| match e {
                Errno::INVAL => Ok(()),
                e => Err(EngineError::Usage(format!(
                    "unmounting {}: {e}",
                    mountpoint.display()
                ))),
            })
        }
        Err(_) => fusermount_unmount(mountpoint),
    }
}

/// `fusermount3 -u` (the setuid helper, for users other than root), lazily if the mount is
/// busy.
fn fusermount_unmount(mountpoint: &Path) -> Result<(), EngineError> {
    let run = |lazy: bool| {
        let mut c = std::process::Command::new("fusermount3");
        c.arg(if lazy { "-uz" } else { "-u" })
            .arg("--")
            .arg(mountpoint);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c.output()
    };
    let fail =
        |msg: String| EngineError::Usage(format!("unmounting {}: {msg}", mountpoint.display()));
    match run(false) {
        Ok(o) if o.status.success() => Ok(()),
        Ok(_) => match run(true) {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(fail(String::from_utf8_lossy(&o.stderr).trim().to_string())),
            Err(e) => Err(fail(format!("fusermount3: {e}"))),
        },
        Err(e) => Err(fail(format!("fusermount3: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    90 22 0:50 / /tmp/with\\040space rw - tmpfs tmpfs rw\n";
        assert!(mountinfo_lists(info, b"/proc"));
        assert!(mountinfo_lists(info, b"/tmp/with space"));
        assert!(!mountinfo_lists(info, b"/tmp/with"));
        assert!(!mountinfo_lists(info, b"/tmp"));
        assert_eq!(unescape_octal("a\\134b\\0"), b"a\\b\\0");
    }

    #[test]
    fn a_mount_point_must_be_an_empty_directory_not_mounted_on() {
        let dir = tempfile::tempdir().unwrap();
        let msg = |p: &Path| check_mountpoint(p).unwrap_err().to_string();
        assert!(msg(&dir.path().join("none")).contains("does not exist"));
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(msg(&file).contains("is not a directory"));
        assert!(msg(dir.path()).contains("is not empty"));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(
            check_mountpoint(&empty).unwrap(),
            empty.canonicalize().unwrap()
        );
        assert!(msg(Path::new("/proc")).contains("busy"));
    }
}
