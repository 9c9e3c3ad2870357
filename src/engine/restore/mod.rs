//! Restore: recreate a snapshot, or paths inside it, under a target directory, verifying every
//! blob, the way restic restores: into an empty or a non-empty target, in place.
//!
//! The trees are walked once. Directories are created (or kept) as they are reached, entries
//! of the target that the snapshot does not have are removed with `delete`, and each regular
//! file is compared with the snapshot as the [`Overwrite`] mode says: files that differ are
//! planned, in batches, and written by [`fetch`] pack by pack: a new file directly under its
//! real name (recorded first in the batch's [`journal`], so that an interrupted restore's
//! incomplete files are removed by the next run), a file that replaces another under a
//! temporary name, then renamed. Hardlinks, symlinks and special files follow, each made
//! under a temporary name and renamed too (a symlink where nothing is: under its real name),
//! then directory metadata deepest first (so writing into a directory does not disturb its
//! restored mtime, and no restored symlink is ever followed).

pub(crate) mod fetch;
mod filter;
mod journal;

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use filter::PathFilter;

use self::fetch::{Batch, Counters, Fetcher, FileJob, TEMP_MARK, same_content};
use super::walk::{components, resolve};
use super::{EngineError, Progress, Warning, Warnings, display_bytes, load_tree};
use crate::catalog::Catalog;
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockKind, Repository};
use crate::source::write;

/// When an existing file of the target is replaced (restic's `--overwrite`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Always: every file is written again.
    Always,
    /// When it differs: size and mtime, then the content of each blob (unchanged files are
    /// not written, only their metadata set).
    #[default]
    IfChanged,
    /// When the snapshot's file is newer than the existing one.
    IfNewer,
    /// Never: existing entries are kept.
    Never,
}

/// What to restore and where.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreOptions {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Paths inside the snapshot to restore (all when empty).
    pub paths: Vec<String>,
    /// When existing files are replaced.
    pub overwrite: Overwrite,
    /// Remove entries of the target that the snapshot does not have (inside what is restored).
    pub delete: bool,
    /// Change nothing; report what would change.
    pub dry_run: bool,
    /// Restore only entries matching these globs (with what is below them).
    pub includes: Vec<String>,
    /// Leave out entries matching these globs (with what is below them).
    pub excludes: Vec<String>,
    /// Read the restored files again and compare them with the snapshot.
    pub verify: bool,
    /// Restore the content of the one path in `paths` directly into `target` (a volume's
    /// root), not under its path; the target takes that directory's metadata.
    pub flatten: bool,
    /// Also recreate device nodes and `security.*` / `trusted.*` xattrs (a system's own
    /// backup restored as root); without it they are skipped and counted.
    pub privileged: bool,
}

/// A change a dry run would make.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// `write`, `delete` or `replace`.
    pub action: String,
    /// The entry in the target.
    pub path: String,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestoreSummary {
    /// The snapshot restored.
    #[serde(with = "crate::id::as_hex")]
    pub snapshot_id: SnapshotId,
    /// Whether nothing was changed (`dry_run`): the counts say what would have been.
    pub dry_run: bool,
    /// Regular files in what was restored.
    pub files: u64,
    /// Regular files written.
    pub files_written: u64,
    /// Regular files already as in the snapshot (or kept by the overwrite mode).
    pub files_unchanged: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, hardlinks and special files created.
    pub links_and_special: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries of the target removed (`delete`, or in the way of another kind of entry).
    pub deleted: u64,
    /// Files read back and found equal to the snapshot (`verify`).
    pub verified: u64,
    /// Device nodes not recreated (without `privileged`).
    #[serde(default)]
    pub skipped_devices: u64,
    /// Read requests made to the repository for file content.
    pub requests: u64,
    /// Bytes those requests fetched.
    pub bytes_fetched: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// What a dry run would change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Entries that failed.
    pub errors: Vec<Warning>,
}

/// Files planned before they are written (in parallel) and forgotten: the plan of a snapshot
/// with millions of files is never held whole (a few hundred bytes a file), and a batch is
/// large enough that its blobs coalesce into few reads per pack.
const FILES_PER_BATCH: usize = 8192;
/// The first batch: the batches double from here up to [`FILES_PER_BATCH`], so that writing
/// starts after a few hundred files are planned, not after thousands.
const FIRST_BATCH_FILES: usize = 256;
/// Blobs planned in a batch at most (a few huge files).
const BLOBS_PER_BATCH: usize = 65536;
/// The same from a remote store, from the first batch on. A batch reads every region of a pack
/// that holds its blobs, through gaps of up to 1 MiB: where a backup interleaved the files of
/// many directories in its packs, each batch read most of every pack again. Restoring 57,274
/// files (222 MiB of packs) from S3 fetched 728 MB with batches of up to 8,192 files.
const REMOTE_FILES_PER_BATCH: usize = 65536;
const REMOTE_BLOBS_PER_BATCH: usize = 262_144;

/// A directory entered by the walk and not created yet: with `--include`, a directory is
/// created only once something below it is restored.
struct Pending {
    path: PathBuf,
    node: Node,
    /// The snapshot's directory (its entry names are asked only of a directory in place).
    tree: Option<std::sync::Arc<crate::format::tree::Tree>>,
    /// Whether it is inside what is restored (so its extra entries may be deleted).
    selected: bool,
    /// Path from the snapshot's root.
    rel: String,
    /// Created, or found in place.
    ready: bool,
    /// Created by this restore: nothing in it existed before.
    fresh: bool,
    /// What a file created in it gets (owner, mode).
    new_files: write::NewFiles,
}

/// What the walk and the writer thread share.
#[derive(Default)]
struct Shared {
    warnings: Warnings,
    counters: Counters,
    /// The first write that found the file system full: the restore stops there.
    disk_full: Mutex<Option<(String, String)>>,
}

/// The walk plans batches of files and hands each to the next free writer thread, which writes
/// it while the walk goes on (creating the next directories, loading the next trees): on two
/// cores the walk no longer leaves the writing cores idle. The walk holds the batch it planned
/// until a writer takes it, so the plans held in memory are one per writer thread and one more.
struct Restorer<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    opts: &'a RestoreOptions,
    filter: PathFilter,
    warnings: &'a Warnings,
    progress: &'a Progress,
    counters: &'a Counters,
    disk_full: &'a Mutex<Option<(String, String)>>,
    /// Batches to the writer thread; a failed send means it stopped on an error.
    writer: std::sync::mpsc::SyncSender<Batch>,
    /// Files of the batch being planned at which it is handed over.
    batch_limit: usize,
    summary: RestoreSummary,
    pending: Vec<Pending>,
    /// Directories restored, in the order they were created.
    /// With what the parent gave each one the restore created (see
    /// [`write::apply_dir_metadata`]).
    dirs: Vec<(PathBuf, Node, Option<write::NewFiles>)>,
    batch: Vec<FileJob>,
    batch_blobs: usize,
    /// Files whose size matched but mtime did not: compared by content in the batch.
    compare: Vec<FileJob>,
    hardlinks: Vec<(PathBuf, PathBuf, Node)>,
    /// With what their directory gives new entries when nothing was at their path.
    special: Vec<(PathBuf, Node, Option<write::NewFiles>)>,
    links: HashMap<(u64, u64), PathBuf>,
    /// Files to read back (`verify`).
    to_verify: Vec<(PathBuf, Node)>,
    /// How this process's temporary files and journal begin: `.coffer-tmp-<pid>-`.
    own_temp: String,
}

/// Why an entry in the target was looked at.
enum Existing {
    /// Nothing there.
    None,
    /// A real directory.
    Dir,
    /// Something else, with its metadata.
    Other(std::fs::Metadata),
}

fn existing(path: &Path) -> std::io::Result<Existing> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(Existing::Dir),
        Ok(m) => Ok(Existing::Other(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Existing::None),
        Err(e) => Err(e),
    }
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Restorer<'_> {
    fn change(&mut self, action: &'static str, path: &Path) {
        if self.opts.dry_run {
            self.summary.changes.push(Change {
                action: action.to_string(),
                path: path.display().to_string(),
            });
        }
    }

    fn is_disk_full(&self) -> bool {
        self.disk_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Walk a directory of the snapshot: `dest` is where it goes, `rel` its path from the
    /// snapshot's root, `selected` whether it is inside what is restored.
    fn dir(
        &mut self,
        dest: &Path,
        rel: &str,
        node: &Node,
        selected: bool,
    ) -> Result<(), EngineError> {
        if self.is_disk_full() {
            return Ok(()); // the restore stops: plan nothing more
        }
        let tree = match node.subtree {
            Some(t) => Some(std::sync::Arc::new(load_tree(self.repo, self.catalog, &t)?)),
            None => None,
        };
        self.pending.push(Pending {
            path: dest.to_path_buf(),
            node: node.clone(),
            tree: tree.clone(),
            selected,
            rel: rel.to_string(),
            ready: false,
            fresh: false,
            new_files: write::NewFiles::UNKNOWN,
        });
        if selected && !self.materialize() {
            self.pending.pop();
            return Ok(());
        }
        for child in tree.iter().flat_map(|t| t.nodes.iter()) {
            if !Node::name_is_safe(&child.name) {
                self.warnings.push(
                    format!("{}/{}", dest.display(), display_bytes(&child.name)),
                    "refusing an entry whose name would escape the target",
                );
                continue;
            }
            let name = display_bytes(&child.name);
            let child_rel = join_rel(rel, &name);
            if self.filter.excluded(&child_rel) {
                continue;
            }
            let child_selected = selected || self.filter.included(&child_rel);
            let p = dest.join(std::ffi::OsStr::from_bytes(&child.name));
            match child.kind {
                NodeKind::Dir => {
                    if child_selected || self.filter.has_includes() {
                        self.dir(&p, &child_rel, child, child_selected)?;
                    }
                }
                _ if !child_selected => {}
                _ => {
                    if !self.materialize() {
                        break;
                    }
                    let fresh = self.pending.last().is_some_and(|d| d.fresh);
                    if child.kind == NodeKind::File {
                        self.file(&p, child, fresh)?;
                    } else {
                        self.special(&p, child, fresh);
                    }
                }
            }
        }
        self.pending.pop();
        Ok(())
    }

    /// Create the pending directories (outermost first); false when one cannot be.
    fn materialize(&mut self) -> bool {
        for i in 0..self.pending.len() {
            if self.pending[i].ready {
                continue;
            }
            match self.make_dir(i) {
                Ok(true) => self.pending[i].ready = true,
                // Kept as it is (`--overwrite never`): nothing below it is restored.
                Ok(false) => return false,
                Err(e) => {
                    let p = self.pending[i].path.display().to_string();
                    self.warnings.push(p, e);
                    return false;
                }
            }
        }
        true
    }

    /// Create pending directory `i`, or take the one in place: remove what the snapshot does
    /// not have there (leftover temporary files always, other entries with `delete`).
    fn make_dir(&mut self, i: usize) -> std::io::Result<bool> {
        let path = self.pending[i].path.clone();
        let dry = self.opts.dry_run;
        let parent_fresh = i > 0 && self.pending[i - 1].fresh;
        let state = if parent_fresh {
            Existing::None
        } else {
            existing(&path)?
        };
        match state {
            Existing::None => {
                if !dry {
                    write::create_dir(&path)?;
                }
                self.pending[i].fresh = true;
                self.change("write", &path);
            }
            Existing::Other(_) if self.opts.overwrite == Overwrite::Never => return Ok(false),
            Existing::Other(_) => {
                self.change("replace", &path);
                if !dry {
                    std::fs::remove_file(&path)?;
                    write::create_dir(&path)?;
                }
                self.summary.deleted += 1;
                self.pending[i].fresh = true;
            }
            Existing::Dir => self.clean_dir(i)?,
        }
        self.pending[i].new_files = if dry {
            write::NewFiles::UNKNOWN
        } else if self.pending[i].fresh && i > 0 {
            // A new directory gives new files what its parent gives them.
            self.pending[i - 1].new_files
        } else {
            write::NewFiles::of_dir(&path)
        };
        let (p, n) = (self.pending[i].path.clone(), self.pending[i].node.clone());
        let created_in = (self.pending[i].fresh && i > 0).then(|| self.pending[i - 1].new_files);
        self.dirs.push((p, n, created_in));
        Ok(true)
    }

    /// Remove the entries of an existing directory that the snapshot does not have there.
    fn clean_dir(&mut self, i: usize) -> std::io::Result<()> {
        let d = &self.pending[i];
        let entries = match std::fs::read_dir(&d.path) {
            Ok(e) => e,
            Err(e) if self.opts.dry_run && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let names: HashSet<&[u8]> = d
            .tree
            .iter()
            .flat_map(|t| t.nodes.iter().map(|n| &n.name[..]))
            .collect();
        let mut extra = Vec::new();
        for e in entries {
            let e = e?;
            let name = e.file_name();
            let bytes = name.as_bytes();
            if names.contains(bytes) {
                continue;
            }
            let is_temp = is_leftover_temp(&name.to_string_lossy(), &self.own_temp);
            let rel = join_rel(&d.rel, &display_bytes(bytes));
            let deletable = self.opts.delete
                && !self.filter.excluded(&rel)
                && (d.selected || self.filter.included(&rel));
            if is_temp || deletable {
                extra.push((e.path(), is_temp));
            }
        }
        extra.sort();
        for (p, is_temp) in extra {
            if is_temp {
                // Left by an interrupted restore: never a file of anyone's.
                if !self.opts.dry_run {
                    let _ = std::fs::remove_file(&p);
                }
                continue;
            }
            self.change("delete", &p);
            self.summary.deleted += 1;
            if !self.opts.dry_run
                && let Err(e) = remove_any(&p)
            {
                self.warnings
                    .push(p.display().to_string(), format!("delete: {e}"));
            }
        }
        Ok(())
    }

    /// Plan a regular file; `fresh` when its directory was just created.
    fn file(&mut self, path: &Path, node: &Node, fresh: bool) -> Result<(), EngineError> {
        if node.links > 1 && node.inode != 0 {
            if let Some(first) = self.links.get(&(node.device, node.inode)) {
                self.hardlinks
                    .push((first.clone(), path.to_path_buf(), node.clone()));
                return Ok(());
            }
            self.links
                .insert((node.device, node.inode), path.to_path_buf());
        }
        self.summary.files += 1;
        if self.opts.verify {
            self.to_verify.push((path.to_path_buf(), node.clone()));
        }
        let state = if fresh {
            Existing::None
        } else {
            match existing(path) {
                Ok(s) => s,
                Err(e) => {
                    self.warnings.push(path.display().to_string(), e);
                    return Ok(());
                }
            }
        };
        let mode = self.opts.overwrite;
        match &state {
            Existing::None => {}
            _ if mode == Overwrite::Never => {
                self.unchanged(None);
                return Ok(());
            }
            Existing::Dir => {
                self.change("replace", path);
                self.summary.deleted += 1;
                if !self.opts.dry_run
                    && let Err(e) = std::fs::remove_dir_all(path)
                {
                    self.warnings.push(path.display().to_string(), e);
                    return Ok(());
                }
            }
            Existing::Other(m) if m.is_file() => {
                let same_time =
                    m.mtime() == node.mtime && m.mtime_nsec() == i64::from(node.mtime_nsec);
                match mode {
                    Overwrite::IfNewer
                        if (node.mtime, i64::from(node.mtime_nsec))
                            <= (m.mtime(), m.mtime_nsec()) =>
                    {
                        self.unchanged(None);
                        return Ok(());
                    }
                    Overwrite::IfChanged if m.len() == node.size && same_time => {
                        self.unchanged(Some((path, node, m)));
                        return Ok(());
                    }
                    Overwrite::IfChanged if m.len() == node.size => {
                        self.compare.push(FileJob {
                            dest: path.to_path_buf(),
                            node: node.clone(),
                            new: false,
                            dir: self.new_files(),
                        });
                        return self.maybe_flush();
                    }
                    _ => {}
                }
            }
            Existing::Other(_) => {}
        }
        let new = matches!(state, Existing::None | Existing::Dir);
        self.write_file(path, node, new)
    }

    /// What a file created in the directory being walked gets.
    fn new_files(&self) -> write::NewFiles {
        self.pending
            .last()
            .map_or(write::NewFiles::UNKNOWN, |d| d.new_files)
    }

    /// A file left as it is; with its metadata, when given, set to the snapshot's if it differs.
    fn unchanged(&mut self, meta: Option<(&Path, &Node, &std::fs::Metadata)>) {
        self.summary.files_unchanged += 1;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        let Some((path, node, m)) = meta else {
            return;
        };
        let owner_differs = write::is_root() && (m.uid() != node.uid || m.gid() != node.gid);
        let xattrs_differ = node.xattrs.iter().any(|x| {
            xattr::get(path, std::ffi::OsStr::from_bytes(&x.name))
                .ok()
                .flatten()
                .is_none_or(|v| v[..] != x.value[..])
        });
        if !self.opts.dry_run
            && (m.mode() & 0o7777 != node.mode & 0o7777 || owner_differs || xattrs_differ)
            && let Err(e) = write::apply_metadata(path, node, self.opts.privileged)
        {
            self.warnings.push(path.display().to_string(), e);
        }
    }

    /// Plan writing a file; `new` when nothing is at `path` (a directory in the way was
    /// removed).
    fn write_file(&mut self, path: &Path, node: &Node, new: bool) -> Result<(), EngineError> {
        self.change("write", path);
        if self.opts.dry_run {
            self.summary.files_written += 1;
            self.summary.bytes += node.size;
            return Ok(());
        }
        self.batch_blobs += node.content.len();
        self.batch.push(FileJob {
            dest: path.to_path_buf(),
            node: node.clone(),
            new,
            dir: self.new_files(),
        });
        self.maybe_flush()
    }

    fn maybe_flush(&mut self) -> Result<(), EngineError> {
        let max_blobs = if self.repo.is_remote() {
            REMOTE_BLOBS_PER_BATCH
        } else {
            BLOBS_PER_BATCH
        };
        if self.batch.len() + self.compare.len() >= self.batch_limit
            || self.batch_blobs >= max_blobs
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Compare the files that need it, then write the batch.
    fn flush(&mut self) -> Result<(), EngineError> {
        let compare = std::mem::take(&mut self.compare);
        if !compare.is_empty() {
            let results: Vec<(FileJob, Result<bool, fetch::CompareError>)> = compare
                .into_par_iter()
                .map(|j| {
                    let r = same_content(self.repo, self.catalog, &j.dest, &j.node);
                    (j, r)
                })
                .collect();
            for (j, r) in results {
                match r {
                    Ok(true) => {
                        self.summary.files_unchanged += 1;
                        self.progress.files.fetch_add(1, Ordering::Relaxed);
                        if !self.opts.dry_run
                            && let Err(e) =
                                write::apply_metadata(&j.dest, &j.node, self.opts.privileged)
                        {
                            self.warnings.push(j.dest.display().to_string(), e);
                        }
                    }
                    Ok(false) => {
                        self.change("write", &j.dest);
                        if self.opts.dry_run {
                            self.summary.files_written += 1;
                            self.summary.bytes += j.node.size;
                        } else {
                            self.batch_blobs += j.node.content.len();
                            self.batch.push(j);
                        }
                    }
                    Err(e) => self.warnings.push(j.dest.display().to_string(), e),
                }
            }
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_blobs = 0;
        if !batch.is_empty() {
            self.batch_limit =
                (self.batch_limit * 2)
                    .max(self.batch_limit)
                    .min(if self.repo.is_remote() {
                        REMOTE_FILES_PER_BATCH
                    } else {
                        FILES_PER_BATCH
                    });
            let batch = Batch::plan(self.catalog, self.repo.is_remote(), batch)?;
            if self.writer.send(batch).is_err() {
                // The writer stopped on an error; `restore` reports that one.
                return Err(EngineError::Internal("the restore's writer stopped".into()));
            }
        }
        Ok(())
    }

    /// Plan a symlink or special file.
    fn special(&mut self, path: &Path, node: &Node, fresh: bool) {
        if matches!(node.kind, NodeKind::CharDevice | NodeKind::BlockDevice)
            && !self.opts.privileged
        {
            // A device node from a snapshot gives access to hardware: only when asked.
            tracing::debug!("skipping device node {}", path.display());
            self.summary.skipped_devices += 1;
            return;
        }
        if node.kind == NodeKind::Socket {
            // A socket belongs to the process that listened on it; recreating it is useless.
            tracing::debug!("skipping socket {}", path.display());
            return;
        }
        let mut direct = fresh;
        if !fresh {
            match existing(path) {
                Ok(Existing::None) => direct = true,
                Ok(_) if self.opts.overwrite == Overwrite::Never => return,
                Ok(Existing::Other(m))
                    if node.kind == NodeKind::Symlink
                        && m.file_type().is_symlink()
                        && self.opts.overwrite != Overwrite::Always
                        && std::fs::read_link(path).is_ok_and(|t| {
                            Some(t.as_os_str().as_bytes())
                                == node.link_target.as_deref().map(|b| &b[..])
                        }) =>
                {
                    // The same link: only its owner and times are set again.
                    self.special.push((path.to_path_buf(), node.clone(), None));
                    return;
                }
                Ok(_) => self.change("replace", path),
                Err(e) => {
                    self.warnings.push(path.display().to_string(), e);
                    return;
                }
            }
        } else {
            self.change("write", path);
        }
        let new = direct.then(|| self.new_files());
        self.special.push((path.to_path_buf(), node.clone(), new));
    }

    /// Make `path` by `make(temp)` under a temporary name beside it, then rename it over
    /// whatever is there (a directory in the way is removed first).
    fn replace_with(
        &self,
        path: &Path,
        make: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let temp = match path.parent() {
            Some(p) => p.join(format!("{TEMP_MARK}{}-l", fetch::own_pid())),
            None => return Err(std::io::Error::other("no parent directory")),
        };
        let _ = std::fs::remove_file(&temp);
        make(&temp)?;
        if let Ok(m) = std::fs::symlink_metadata(path)
            && m.is_dir()
            && let Err(e) = std::fs::remove_dir_all(path)
        {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    }

    /// Hardlinks, symlinks and special files, after the files they may point at.
    fn links_and_special(&mut self, fetcher: &Fetcher<'_>) {
        let hardlinks = std::mem::take(&mut self.hardlinks);
        for (first, path, node) in &hardlinks {
            use std::os::unix::fs::MetadataExt as _;
            let same = match (
                std::fs::symlink_metadata(first),
                std::fs::symlink_metadata(path),
            ) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if same || (self.opts.overwrite == Overwrite::Never && path.symlink_metadata().is_ok())
            {
                continue;
            }
            self.change("write", path);
            if self.opts.dry_run {
                continue;
            }
            match self.replace_with(path, |t| std::fs::hard_link(first, t)) {
                Ok(()) => self.summary.links_and_special += 1,
                Err(e) => {
                    // The first path failed or links are unsupported: write a copy instead.
                    tracing::debug!("hardlink {}: {e}", path.display());
                    self.batch.push(FileJob {
                        dest: path.clone(),
                        node: node.clone(),
                        new: false,
                        dir: write::NewFiles::UNKNOWN,
                    });
                }
            }
        }
        // Copies of links that could not be made: the writer threads are gone, so they are
        // written here (each under a temporary name, as a replaced file: no journal needed).
        let copies = std::mem::take(&mut self.batch);
        if !copies.is_empty() {
            let written = Batch::plan(self.catalog, self.repo.is_remote(), copies)
                .and_then(|b| fetcher.write_files(&b));
            if let Err(e) = written {
                self.warnings.push(String::new(), e);
            }
        }
        let special = std::mem::take(&mut self.special);
        for (path, node, direct) in &special {
            if self.opts.dry_run {
                continue;
            }
            if let Some(new) = direct
                && node.kind == NodeKind::Symlink
            {
                // Nothing was in its directory: made under its real name (a few system calls
                // where the temporary name took seven), unless something appeared there since.
                match write::create_new_symlink(path, node, *new) {
                    Ok(true) => {
                        self.summary.links_and_special += 1;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.warnings.push(path.display().to_string(), e);
                        continue;
                    }
                }
            }
            let same_link = node.kind == NodeKind::Symlink
                && std::fs::read_link(path).is_ok_and(|t| {
                    Some(t.as_os_str().as_bytes()) == node.link_target.as_deref().map(|b| &b[..])
                })
                && self.opts.overwrite != Overwrite::Always;
            let made = if same_link {
                Ok(())
            } else {
                self.replace_with(path, |t| write::create_special(t, node, false))
            };
            match made.and_then(|_| write::apply_metadata(path, node, self.opts.privileged)) {
                Ok(()) => self.summary.links_and_special += 1,
                Err(e) => self.warnings.push(path.display().to_string(), e),
            }
        }
    }

    /// Read the restored files back and compare them with the snapshot.
    fn verify(&mut self) {
        let list = std::mem::take(&mut self.to_verify);
        let ok: Vec<Option<(String, String)>> = list
            .par_iter()
            .map(|(p, n)| match same_content(self.repo, self.catalog, p, n) {
                Ok(true) => None,
                Ok(false) => Some((
                    p.display().to_string(),
                    "verify: differs from the snapshot".into(),
                )),
                Err(e) => Some((p.display().to_string(), format!("verify: {e}"))),
            })
            .collect();
        for r in ok {
            match r {
                None => self.summary.verified += 1,
                Some((p, m)) => self.warnings.push(p, m),
            }
        }
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
    let filter = PathFilter::new(&opts.includes, &opts.excludes)
        .map_err(|e| EngineError::Usage(e.to_string()))?;
    if opts.flatten && opts.paths.len() != 1 {
        return Err(EngineError::Usage(
            "restoring into a volume's root takes exactly one path".into(),
        ));
    }
    let _lock = repo.lock(LockKind::Shared, "restore")?;
    catalog.refresh(repo)?;
    let snap = catalog.resolve_snapshot(&opts.snapshot)?;
    prepare_target(opts)?;
    if !opts.dry_run {
        let removed = journal::recover(&opts.target);
        if removed > 0 {
            tracing::info!("removed {removed} incomplete files of an interrupted restore");
        }
    }
    if opts.paths.is_empty() && !filter.has_includes() && opts.excludes.is_empty() {
        // The totals of a whole snapshot come from its summary (a restore of some paths
        // shows counts without totals).
        progress
            .total_bytes
            .store(snap.snapshot.summary.total_bytes, Ordering::Relaxed);
        progress
            .total_files
            .store(snap.snapshot.summary.files, Ordering::Relaxed);
    }
    let paths = if opts.paths.is_empty() {
        vec![String::new()]
    } else {
        opts.paths.clone()
    };
    let shared = Shared::default();
    let mut fetcher = Fetcher::new(
        repo,
        progress,
        &shared.warnings,
        &shared.counters,
        &shared.disk_full,
    );
    fetcher.privileged = opts.privileged;
    // The walk plans batches; each writer thread takes the next one when it is done with
    // its own (see `Fetcher::writers`). A rendezvous: the walk holds the batch it has planned
    // until a writer takes it, so that a batch plan per writer and one more are held at most.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(0);
    // Held by the writers alone: when the last one stops, the walk's next send fails.
    let rx = std::sync::Arc::new(Mutex::new(rx));
    let stopped = AtomicBool::new(false);
    let mut r = Restorer::new(repo, catalog, opts, filter, progress, snap.id, &shared, tx);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..fetcher.writers())
            .map(|k| {
                let (fetcher, rx, stopped) = (&fetcher, std::sync::Arc::clone(&rx), &stopped);
                let journal = journal::Journal::new(&opts.target, k);
                scope.spawn(move || -> Result<(), EngineError> {
                    while !stopped.load(Ordering::Acquire) {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(mut batch) = next else { break };
                        journal.record(batch.jobs_mut());
                        let written = fetcher.write_files(&batch);
                        journal.done();
                        if written.is_err() {
                            // The other writers stop after their batch; then the walk stops
                            // at its next one.
                            stopped.store(true, Ordering::Release);
                            return written;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        drop(rx);
        let walked = paths
            .iter()
            .try_for_each(|p| r.path(snap.snapshot.tree, p))
            .and_then(|()| r.flush());
        r.close_writer();
        let mut written = Ok(());
        for w in writers {
            let result = w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            written = written.and(result);
        }
        written.and(walked)
    })?;
    let disk_full = || match r.disk_full.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some((path, source)) => Err(EngineError::Usage(format!(
            "restore stopped: {source} while writing {path}; free space (or restore to \
             another target) and run it again: files already restored are not written again"
        ))),
        None => Ok(()),
    };
    disk_full()?;
    r.links_and_special(&fetcher);
    // The copies of links that could not be made are written there: a full disk is reported
    // as above, not dropped with the file it stopped.
    disk_full()?;
    if !opts.dry_run {
        r.directory_metadata();
    }
    if opts.verify && !opts.dry_run {
        r.verify();
    }
    Ok(r.finish(start))
}

/// The target must be a directory (or not exist yet: it is created, unless this is a dry run).
fn prepare_target(opts: &RestoreOptions) -> Result<(), EngineError> {
    if let Ok(m) = std::fs::symlink_metadata(&opts.target)
        && !m.is_dir()
    {
        return Err(EngineError::Usage(format!(
            "restore target {} exists and is not a directory",
            opts.target.display()
        )));
    }
    if !opts.dry_run {
        std::fs::create_dir_all(&opts.target).map_err(|e| EngineError::Io {
            path: opts.target.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

impl<'a> Restorer<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        repo: &'a Repository,
        catalog: &'a Catalog,
        opts: &'a RestoreOptions,
        filter: PathFilter,
        progress: &'a Progress,
        snapshot_id: SnapshotId,
        shared: &'a Shared,
        writer: std::sync::mpsc::SyncSender<Batch>,
    ) -> Self {
        Restorer {
            repo,
            catalog,
            opts,
            filter,
            warnings: &shared.warnings,
            progress,
            counters: &shared.counters,
            disk_full: &shared.disk_full,
            writer,
            batch_limit: if repo.is_remote() {
                REMOTE_FILES_PER_BATCH
            } else {
                FIRST_BATCH_FILES
            },
            summary: RestoreSummary {
                snapshot_id,
                dry_run: opts.dry_run,
                ..Default::default()
            },
            pending: Vec::new(),
            dirs: Vec::new(),
            batch: Vec::new(),
            batch_blobs: 0,
            compare: Vec::new(),
            hardlinks: Vec::new(),
            special: Vec::new(),
            links: HashMap::new(),
            to_verify: Vec::new(),
            own_temp: format!("{TEMP_MARK}{}-", fetch::own_pid()),
        }
    }

    /// Restore one `--path` of the snapshot whose root tree is `tree` (the whole snapshot for
    /// an empty path).
    fn path(&mut self, tree: BlobId, p: &str) -> Result<(), EngineError> {
        let (repo, catalog, opts) = (self.repo, self.catalog, self.opts);
        let node = resolve(repo, catalog, tree, p)?;
        let comps = components(p);
        let rel = comps.join("/");
        if !rel.is_empty() && self.filter.excluded(&rel) {
            return Ok(());
        }
        let selected = self.filter.included(&rel) || rel.is_empty() && !self.filter.has_includes();
        let mut dest = opts.target.clone();
        if !opts.flatten {
            for c in &comps {
                dest.push(c);
            }
            if !comps.is_empty() && !opts.dry_run {
                create_ancestors(&opts.target, &comps)?;
            }
        } else if node.kind != NodeKind::Dir {
            return Err(EngineError::Usage(format!(
                "--path {p:?} is not a directory in the snapshot"
            )));
        }
        if let Some(root) = node.subtree {
            // On a remote store, every tree below is read first, a pack region at a time.
            let reads = fetch::prefetch_trees(repo, catalog, &root)?;
            self.counters.requests.fetch_add(reads, Ordering::Relaxed);
        }
        match node.kind {
            NodeKind::Dir => self.dir(&dest, &rel, &node, selected)?,
            _ if !selected => {}
            NodeKind::File => self.file(&dest, &node, false)?,
            _ => self.special(&dest, &node, false),
        }
        Ok(())
    }

    /// No batch follows: the writer thread ends once it has written those sent.
    fn close_writer(&mut self) {
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.writer, closed));
    }

    /// Directory metadata, deepest first, so that a directory's mode never keeps the restore
    /// out of the directories below it. The directories of one depth are done in parallel:
    /// done one by one, they were the restore's last tenth of a second, on one core.
    fn directory_metadata(&mut self) {
        let mut order: Vec<_> = self
            .dirs
            .iter()
            // the synthetic snapshot root has none
            .filter(|(_, node, _)| !(node.inode == 0 && node.name.is_empty()))
            .map(|d| (d.0.components().count(), d))
            .collect();
        order.sort_by_key(|&(depth, _)| std::cmp::Reverse(depth));
        let (privileged, warnings) = (self.opts.privileged, self.warnings);
        for level in order.chunk_by(|a, b| a.0 == b.0) {
            level.par_iter().for_each(|(_, (path, node, created_in))| {
                if let Err(e) = write::apply_dir_metadata(path, node, privileged, *created_in) {
                    warnings.push(path.display().to_string(), e);
                }
            });
        }
    }

    /// The summary, with the counters and warnings gathered on the way.
    fn finish(mut self, start: Instant) -> RestoreSummary {
        let mut s = std::mem::take(&mut self.summary);
        s.dirs = self.dirs.len() as u64;
        if !self.opts.dry_run {
            s.files_written = self.counters.files_written.load(Ordering::Relaxed);
            s.bytes = self.counters.bytes_written.load(Ordering::Relaxed);
        }
        s.requests = self.counters.requests.load(Ordering::Relaxed);
        s.bytes_fetched = self.counters.bytes_fetched.load(Ordering::Relaxed);
        s.duration_secs = start.elapsed().as_secs_f64();
        s.errors = self.warnings.take();
        s
    }
}

/// Create the ancestors of a `--path` in the target one by one, never through a symlink: a
/// symlink left in the target (by an earlier restore of a hostile snapshot, say) must not
/// carry this restore outside the target.
fn create_ancestors(target: &Path, comps: &[&str]) -> Result<(), EngineError> {
    let mut at = target.to_path_buf();
    for c in &comps[..comps.len() - 1] {
        at.push(c);
        write::create_dir(&at).map_err(|e| EngineError::Io {
            path: at.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

/// Whether an entry named `name` that the snapshot does not have is a temporary file or
/// journal left by an interrupted restore, to be removed. This process's own (`own` is
/// `.coffer-tmp-<pid>-`) may be in flight: the writer thread writes the batches planned
/// before while the walk comes back to a directory (an overlapping `--path`).
fn is_leftover_temp(name: &str, own: &str) -> bool {
    name.contains(TEMP_MARK) && !name.starts_with(own)
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Whether `data` is all zero bytes (eight at a time: this runs over every restored byte).
fn is_zeros(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    words.all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod zero_tests {
    use super::{is_leftover_temp, is_zeros};

    #[test]
    fn only_other_processes_temporary_files_are_leftovers() {
        let own = ".coffer-tmp-42-";
        assert!(!is_leftover_temp(".coffer-tmp-42-7", own));
        assert!(!is_leftover_temp(".coffer-tmp-42-journal", own));
        assert!(!is_leftover_temp(".coffer-tmp-42-l", own));
        assert!(is_leftover_temp(".coffer-tmp-4-7", own));
        assert!(is_leftover_temp(".coffer-tmp-421-7", own));
        assert!(is_leftover_temp(".coffer-tmp-43-journal", own));
        assert!(!is_leftover_temp("notes.txt", own));
    }

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
