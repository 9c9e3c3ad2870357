//! Restore: recreate a snapshot, or paths inside it, under a target directory, verifying every
//! blob. Directories as the trees are walked, file contents in parallel batches as they are
//! planned, then hardlinks, symlinks and special files, then directory metadata deepest first
//! (so writing into a directory does not disturb its restored mtime, and no restored symlink
//! is ever followed during the restore).

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::walk::{components, resolve};
use super::{EngineError, Progress, Warning, Warnings, display_bytes, load_tree};
use crate::catalog::Catalog;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{LockKind, Repository};
use crate::source::write;

/// What to restore and where.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreOptions {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Paths inside the snapshot to restore (all when empty).
    pub paths: Vec<String>,
    /// Replace existing files.
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreSummary {
    /// The snapshot restored.
    pub snapshot_id: String,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks, hardlinks and special files created.
    pub links_and_special: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Entries that failed.
    pub errors: Vec<Warning>,
}

/// Blobs of one file fetched at once.
const BLOBS_IN_FLIGHT: usize = 4;
/// Files planned before they are restored (in parallel) and forgotten: the plan of a snapshot
/// with millions of files is never held whole (about 250 bytes a file).
const FILES_PER_BATCH: usize = 4096;

#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    /// Files planned and not restored yet (at most [`FILES_PER_BATCH`]).
    files: Vec<(PathBuf, Node)>,
    /// Regular files planned so far.
    files_planned: u64,
    hardlinks: Vec<(PathBuf, PathBuf, Node)>,
    special: Vec<(PathBuf, Node)>,
}

struct Restorer<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    overwrite: bool,
    warnings: Warnings,
    bytes: AtomicU64,
    progress: &'a Progress,
    /// The first file that found the file system full: the restore stops there.
    disk_full: std::sync::Mutex<Option<(String, String)>>,
}

/// Why one file could not be restored.
enum FileError {
    Io(std::io::Error),
    Other(String),
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        FileError::Io(e)
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Io(e) => e.fmt(f),
            FileError::Other(s) => f.write_str(s),
        }
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl Restorer<'_> {
    fn plan(
        &self,
        path: &Path,
        node: &Node,
        plan: &mut Plan,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<(), EngineError> {
        if self.is_disk_full() {
            return Ok(()); // the restore stops (see `restore_files`): plan nothing more
        }
        match node.kind {
            NodeKind::Dir => {
                if let Err(e) = write::create_dir(path) {
                    self.warnings.push(path.display().to_string(), e);
                    return Ok(());
                }
                plan.dirs.push((path.to_path_buf(), node.clone()));
                let Some(subtree) = node.subtree else {
                    return Ok(());
                };
                let tree = load_tree(self.repo, self.catalog, &subtree)?;
                for child in &tree.nodes {
                    if !Node::name_is_safe(&child.name) {
                        self.warnings.push(
                            format!("{}/{}", path.display(), display_bytes(&child.name)),
                            "refusing an entry whose name would escape the target",
                        );
                        continue;
                    }
                    let p = path.join(
                        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&child.name),
                    );
                    self.plan(&p, child, plan, links)?;
                }
            }
            NodeKind::File => {
                if node.links > 1 && node.inode != 0 {
                    if let Some(first) = links.get(&(node.device, node.inode)) {
                        plan.hardlinks
                            .push((first.clone(), path.to_path_buf(), node.clone()));
                        return Ok(());
                    }
                    links.insert((node.device, node.inode), path.to_path_buf());
                }
                plan.files.push((path.to_path_buf(), node.clone()));
                plan.files_planned += 1;
                if plan.files.len() >= FILES_PER_BATCH {
                    self.restore_files(&mut plan.files);
                }
            }
            _ => plan.special.push((path.to_path_buf(), node.clone())),
        }
        Ok(())
    }

    /// Restore the planned files in parallel and forget them. Once the file system is full,
    /// every further file would fail the same way: none is tried, so the restore stops with
    /// one error instead of one per file.
    fn restore_files(&self, files: &mut Vec<(PathBuf, Node)>) {
        files.par_iter().for_each(|(path, node)| {
            if self.is_disk_full() {
                return;
            }
            if let Err(e) = self.file(path, node) {
                self.warnings.push(path.display().to_string(), e);
            }
            self.progress.files.fetch_add(1, Ordering::Relaxed);
        });
        files.clear();
    }

    fn is_disk_full(&self) -> bool {
        self.disk_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Restore one file; on a full file system also raise [`Restorer::disk_full`].
    fn file(&self, path: &Path, node: &Node) -> Result<(), String> {
        let r = self.file_inner(path, node);
        if let Err(FileError::Io(e)) = &r
            && is_disk_full(e)
        {
            let mut full = self.disk_full.lock().unwrap_or_else(|p| p.into_inner());
            if full.is_none() {
                *full = Some((path.display().to_string(), e.to_string()));
            }
        }
        r.map_err(|e| e.to_string())
    }

    fn file_inner(&self, path: &Path, node: &Node) -> Result<(), FileError> {
        let mut f = write::create_file(path, self.overwrite)?;
        let mut written: u64 = 0;
        let mut hole = false;
        // Blobs of zeros already seen in this file, with their length: a sparse region is one
        // blob id repeated (a 20 GiB hole is thousands of times the same chunk), loaded and
        // verified once, then only skipped over.
        let mut zero_blobs: HashMap<crate::id::BlobId, usize> = HashMap::new();
        // Blobs of a window are fetched and verified in parallel, then written in order: a
        // single large file still keeps every core busy, with bounded memory.
        for window in node.content.chunks(BLOBS_IN_FLIGHT) {
            let loaded: Vec<Result<Option<Vec<u8>>, String>> = window
                .par_iter()
                .map(|id| {
                    if zero_blobs.contains_key(id) {
                        return Ok(None);
                    }
                    let loc = self
                        .catalog
                        .blob_location(id)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("blob {id} is missing from the repository index"))?;
                    self.repo
                        .load_blob(&loc)
                        .map(Some)
                        .map_err(|e| e.to_string())
                })
                .collect();
            for (id, data) in window.iter().zip(loaded) {
                let len = match data.map_err(FileError::Other)? {
                    None => {
                        let len = zero_blobs.get(id).copied().unwrap_or(0);
                        f.seek(SeekFrom::Current(len as i64))?;
                        hole = true;
                        len
                    }
                    Some(data) if is_zeros(&data) => {
                        // Leave a hole: the file stays sparse where the original was zeros.
                        f.seek(SeekFrom::Current(data.len() as i64))?;
                        zero_blobs.insert(*id, data.len());
                        hole = true;
                        data.len()
                    }
                    Some(data) => {
                        f.write_all(&data)?;
                        hole = false;
                        data.len()
                    }
                };
                written += len as u64;
                self.progress.add_bytes(len as u64);
            }
        }
        if hole || written == 0 {
            f.set_len(written)?;
        }
        if written != node.size {
            return Err(FileError::Other(format!(
                "restored {written} bytes, the snapshot says {}",
                node.size
            )));
        }
        write::apply_file_metadata(&f, path, node)
            .map_err(|e| FileError::Other(format!("metadata: {e}")))?;
        drop(f);
        self.bytes.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }
}

/// Restore a snapshot. Problems with single entries are collected in the summary; the
/// restore goes on with the others.
pub fn restore(
    repo: &Repository,
    catalog: &Catalog,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreSummary, EngineError> {
    let start = Instant::now();
    let _lock = repo.lock(LockKind::Shared, "restore")?;
    catalog.refresh(repo)?;
    let snap = catalog.resolve_snapshot(&opts.snapshot)?;
    if let Ok(m) = std::fs::symlink_metadata(&opts.target)
        && !m.is_dir()
    {
        return Err(EngineError::Usage(format!(
            "restore target {} exists and is not a directory",
            opts.target.display()
        )));
    }
    std::fs::create_dir_all(&opts.target).map_err(|e| EngineError::Io {
        path: opts.target.display().to_string(),
        source: e,
    })?;
    let r = Restorer {
        repo,
        catalog,
        overwrite: opts.overwrite,
        warnings: Warnings::default(),
        bytes: AtomicU64::new(0),
        progress,
        disk_full: std::sync::Mutex::new(None),
    };
    if opts.paths.is_empty() {
        // Files are restored in batches as they are planned: the totals of a whole snapshot
        // come from its summary (a restore of some paths shows counts without totals).
        progress
            .total_bytes
            .store(snap.snapshot.summary.total_bytes, Ordering::Relaxed);
        progress
            .total_files
            .store(snap.snapshot.summary.files, Ordering::Relaxed);
    }
    let mut plan = Plan::default();
    let mut links = HashMap::new();
    let paths = if opts.paths.is_empty() {
        vec![String::new()]
    } else {
        opts.paths.clone()
    };
    for p in &paths {
        let node = resolve(repo, catalog, snap.snapshot.tree, p)?;
        let comps = components(p);
        let mut dest = opts.target.clone();
        for c in &comps {
            dest.push(c);
        }
        if !comps.is_empty() {
            // Create the ancestors one by one, never through a symlink: a symlink left in the
            // target (by an earlier restore of a hostile snapshot, say) must not carry this
            // restore outside the target.
            let mut at = opts.target.clone();
            for c in &comps[..comps.len() - 1] {
                at.push(c);
                write::create_dir(&at).map_err(|e| EngineError::Io {
                    path: at.display().to_string(),
                    source: e,
                })?;
            }
        }
        r.plan(&dest, &node, &mut plan, &mut links)?;
    }
    r.restore_files(&mut plan.files);
    if let Some((path, source)) = r.disk_full.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(EngineError::Usage(format!(
            "restore stopped: {source} while writing {path}; free space (or restore to \
             another target) and run it again with --overwrite"
        )));
    }
    let mut special = 0;
    for (first, path, node) in &plan.hardlinks {
        let res =
            write::clear_for(path, opts.overwrite).and_then(|_| std::fs::hard_link(first, path));
        match res {
            Ok(()) => special += 1,
            Err(e) => {
                // The first path failed or links are unsupported: write a copy instead.
                tracing::debug!("hardlink {}: {e}", path.display());
                match r.file(path, node) {
                    Ok(()) => special += 1,
                    Err(e) => r.warnings.push(path.display().to_string(), e),
                }
            }
        }
    }
    for (path, node) in &plan.special {
        if node.kind == NodeKind::Socket {
            // A socket belongs to the process that listened on it; recreating it is useless.
            tracing::debug!("skipping socket {}", path.display());
            continue;
        }
        match write::create_special(path, node, opts.overwrite)
            .and_then(|_| write::apply_metadata(path, node))
        {
            Ok(()) => special += 1,
            Err(e) => r.warnings.push(path.display().to_string(), e),
        }
    }
    // Deepest first, so restoring a child's metadata never touches a restored parent's mtime.
    for (path, node) in plan.dirs.iter().rev() {
        if node.inode == 0 && node.name.is_empty() {
            continue; // the synthetic snapshot root
        }
        if let Err(e) = write::apply_metadata(path, node) {
            r.warnings.push(path.display().to_string(), e);
        }
    }
    Ok(RestoreSummary {
        snapshot_id: snap.id.to_hex(),
        files: plan.files_planned,
        dirs: plan.dirs.len() as u64,
        links_and_special: special,
        bytes: r.bytes.load(Ordering::Relaxed),
        duration_secs: start.elapsed().as_secs_f64(),
        errors: r.warnings.take(),
    })
}

/// Whether `data` is all zero bytes (eight at a time: this runs over every restored byte).
fn is_zeros(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    words.all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod zero_tests {
    use super::is_zeros;

    #[test]
    fn zeros_are_found_at_any_length_and_offset() {
        for len in 0..40 {
            let mut v = vec![0u8; len];
            assert!(is_zeros(&v), "{len}");
            for i in 0..len {
                v[i] = 1;
                assert!(!is_zeros(&v), "{len} {i}");
                v[i] = 0;
            }
        }
    }
}
