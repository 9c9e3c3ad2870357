//! Where an export is written on disk: a named file, or a dated file in a directory with a
//! `latest` symlink kept pointing at the newest one.
//!
//! Invariant: the final name only ever holds a complete archive. The export goes to a new
//! owner-only temporary file beside it, which is synced, renamed into place and the rename
//! made durable; on failure the temporary file is removed. `latest` is replaced by renaming a
//! new symlink over it, so it is never missing or half made.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::DateTime;

use super::export::{ExportOptions, ExportSummary, export};
use super::name::{LATEST_LINK, output_name};
use crate::catalog::Catalog;
use crate::crypto::openpgp::PgpWriter;
use crate::engine::{EngineError, Progress};
use crate::repo::Repository;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Make a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A writer shared between the export (which owns its `Box`) and the caller, who takes the
/// OpenPGP stream back to finish it once the export is done.
#[derive(Clone)]
struct SharedPgp(Arc<Mutex<Option<PgpWriter<fs::File>>>>);

impl Write for SharedPgp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("the OpenPGP stream is already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// Export into a new temporary file in `dir`, sync it, and rename it to the path `dest`
/// chooses from the summary. The temporary file is removed on failure.
fn export_atomically(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    dir: &Path,
    tmp: &Path,
    progress: &Progress,
    dest: impl FnOnce(&ExportSummary) -> Result<PathBuf, EngineError>,
) -> Result<ExportSummary, EngineError> {
    // Owner-only: an export holds every file of the snapshot in the clear.
    let mode = 0o600;
    export_atomically_as(repo, catalog, opts, dir, tmp, None, mode, progress, dest)
}

#[allow(clippy::too_many_arguments)]
fn export_atomically_as(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    dir: &Path,
    tmp: &Path,
    gpg_passphrase: Option<&[u8]>,
    mode: u32,
    progress: &Progress,
    dest: impl FnOnce(&ExportSummary) -> Result<PathBuf, EngineError>,
) -> Result<ExportSummary, EngineError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io_err(tmp))?;
    let result = (|| {
        let writer = file.try_clone().map_err(io_err(tmp))?;
        let mut summary = match gpg_passphrase {
            None => export(repo, catalog, opts, Box::new(writer), progress)?,
            Some(pass) => {
                let pgp = PgpWriter::new(writer, pass).map_err(io_err(tmp))?;
                let shared = SharedPgp(Arc::new(Mutex::new(Some(pgp))));
                let s = export(repo, catalog, opts, Box::new(shared.clone()), progress)?;
                let taken = shared.0.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(w) = taken {
                    w.finish().map_err(io_err(tmp))?;
                }
                s
            }
        };
        file.sync_all().map_err(io_err(tmp))?;
        let dest = dest(&summary)?;
        fs::rename(tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(dir)?;
        summary.output = Some(dest.display().to_string());
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Export into the file `path`, written under a temporary name beside it (`.NAME.tmp-PID`)
/// and renamed when complete.
pub fn export_to_file(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    path: &Path,
    progress: &Progress,
) -> Result<ExportSummary, EngineError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| EngineError::Usage(format!("{} is not a file name", path.display())))?;
    let dir = parent_dir(path);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    export_atomically(repo, catalog, opts, &dir, &tmp, progress, |_| {
        Ok(path.to_path_buf())
    })
}

/// The nightly archive of the old setup: export into `dir` under the name the strftime
/// `pattern` makes of the snapshot's local time (the old `BACKUP_FILENAME`), OpenPGP-encrypted
/// and named `<name>.gpg` when a passphrase is given (the old `GPG_PASSPHRASE`), with the
/// old mode (0666 less the umask). No `latest`
/// link: the old tool made none by default.
pub fn export_archive(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    dir: &Path,
    pattern: &str,
    gpg_passphrase: Option<&[u8]>,
    progress: &Progress,
) -> Result<ExportSummary, EngineError> {
    output_name(pattern, &chrono::Local::now())?;
    if !dir.is_dir() {
        return Err(EngineError::Usage(format!(
            "the archive directory {} does not exist: mount it (e.g. ./backups:/archive) or \
             set BACKUP_ARCHIVE",
            dir.display()
        )));
    }
    let tmp = dir.join(format!(".coffer-archive.tmp-{}", std::process::id()));
    // As the old tool created them (0666 less the umask): the operators' check and restore
    // scripts read them as the user they run as; the directory's permissions guard them.
    let mode = 0o666;
    export_atomically_as(
        repo,
        catalog,
        opts,
        dir,
        &tmp,
        gpg_passphrase,
        mode,
        progress,
        |s| {
            let local =
                DateTime::from_timestamp_nanos(s.snapshot_time_ns).with_timezone(&chrono::Local);
            let mut name = output_name(pattern, &local)?;
            if gpg_passphrase.is_some() {
                name.push_str(".gpg");
            }
            Ok(dir.join(name))
        },
    )
}

/// Export into `dir` under a name made from the snapshot's local time with the strftime
/// `pattern`, then point the `latest` symlink in `dir` at it.
pub fn export_to_dir(
    repo: &Repository,
    catalog: &Catalog,
    opts: &ExportOptions,
    dir: &Path,
    pattern: &str,
    progress: &Progress,
) -> Result<ExportSummary, EngineError> {
    // Refuse a bad pattern before the work rather than after it.
    output_name(pattern, &chrono::Local::now())?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(".coffer-export.tmp-{}", std::process::id()));
    let summary = export_atomically(repo, catalog, opts, dir, &tmp, progress, |s| {
        let local =
            DateTime::from_timestamp_nanos(s.snapshot_time_ns).with_timezone(&chrono::Local);
        Ok(dir.join(output_name(pattern, &local)?))
    })?;
    let name = summary
        .output
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .ok_or_else(|| EngineError::Usage("the export has no file name".into()))?;
    // A new symlink renamed over the old one: `latest` is never missing or half made.
    let link_tmp = dir.join(format!(".{LATEST_LINK}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&link_tmp);
    std::os::unix::fs::symlink(name, &link_tmp).map_err(io_err(&link_tmp))?;
    let latest = dir.join(LATEST_LINK);
    if let Err(e) = fs::rename(&link_tmp, &latest) {
        let _ = fs::remove_file(&link_tmp);
        return Err(io_err(&latest)(e));
    }
    sync_dir(dir)?;
    Ok(summary)
}
