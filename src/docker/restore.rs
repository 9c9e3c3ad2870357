//! Restore a snapshot's directory into a Docker volume.
//!
//! The restore is written and verified in a staging directory on the volume's own file system
//! while the containers still run; only then are the running containers that use the volume
//! stopped, the volume's content replaced by the staged tree (renames, no copy), and the
//! containers started again. A restore that fails leaves the volume as it was.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::guard::{ContainerDowntime, StopGuard};
use super::volume::DockerVolume;
use super::{DockerClient, DockerError};
use crate::catalog::Catalog;
use crate::engine::restore::{RestoreOptions, RestoreSummary, restore};
use crate::engine::{EngineError, Progress};
use crate::repo::Repository;

/// What to restore where.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeRestoreOptions {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// Directory in the snapshot whose content becomes the volume's (default: the snapshot's
    /// only source, else the volume's name).
    pub path: Option<String>,
    /// The volume.
    pub volume: String,
    /// Create the volume when it does not exist.
    pub create: bool,
    /// Where volumes are mounted when coffer runs in a container (`/backup`).
    pub mount_dir: PathBuf,
    /// Seconds a stopping container gets before it is killed.
    pub stop_timeout_secs: u64,
}

/// What a restore into a volume did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VolumeRestoreSummary {
    /// The volume.
    pub volume: String,
    /// Whether it was created.
    pub created: bool,
    /// The snapshot path restored.
    pub path: String,
    /// Where the volume's files are.
    pub data_path: String,
    /// The restore itself.
    pub restore: RestoreSummary,
    /// Entries of the old content removed.
    pub replaced_entries: u64,
    /// Containers stopped while the content was swapped, with their downtime.
    pub containers: Vec<ContainerDowntime>,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// Restore into a volume (see the module docs).
pub fn restore_volume(
    client: &DockerClient,
    repo: &Repository,
    catalog: &Catalog,
    opts: &VolumeRestoreOptions,
    progress: &Progress,
) -> Result<VolumeRestoreSummary, DockerError> {
    let start = Instant::now();
    let (vol, created) = match client.inspect_volume(&opts.volume)? {
        Some(v) => (v, false),
        None if opts.create => (client.create_volume(&opts.volume)?, true),
        None => {
            return Err(DockerError::Usage(format!(
                "Docker volume {:?} does not exist; add --create to create it",
                opts.volume
            )));
        }
    };
    let root = vol.data_path(&opts.mount_dir)?;
    let path = match &opts.path {
        Some(p) => p.clone(),
        None => {
            catalog.refresh(repo).map_err(EngineError::from)?;
            let snap = catalog
                .resolve_snapshot(&opts.snapshot)
                .map_err(EngineError::from)?;
            match snap.snapshot.sources.as_slice() {
                [only] => format!("{}/", only.name),
                _ => format!("{}/", vol.name),
            }
        }
    };
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.is_empty() || comps.contains(&"..") {
        return Err(DockerError::Usage(format!(
            "--path {path:?}: name a directory in the snapshot, e.g. {}/",
            vol.name
        )));
    }

    let staging = staging_dir(&vol, &root);
    remove_all(&staging)?;
    let restored = restore(
        repo,
        catalog,
        &RestoreOptions {
            snapshot: opts.snapshot.clone(),
            target: staging.clone(),
            paths: vec![path.clone()],
            overwrite: false,
        },
        progress,
    );
    let summary = match restored {
        Ok(s) if s.errors.is_empty() => s,
        Ok(s) => {
            let _ = remove_all(&staging);
            let first = s
                .errors
                .first()
                .map(|e| format!("{}: {}", e.path, e.message))
                .unwrap_or_default();
            return Err(DockerError::VolumeData {
                volume: vol.name.clone(),
                message: format!(
                    "the restore had {} errors (first: {first}); the volume was left unchanged",
                    s.errors.len()
                ),
            });
        }
        Err(e) => {
            let _ = remove_all(&staging);
            return Err(e.into());
        }
    };
    let mut content = staging.clone();
    for c in &comps {
        content.push(c);
    }
    let md = std::fs::symlink_metadata(&content).map_err(|e| io_err(&vol, &content, e))?;
    if !md.is_dir() {
        let _ = remove_all(&staging);
        return Err(DockerError::Usage(format!(
            "--path {path:?} is not a directory in the snapshot"
        )));
    }

    // Swap with the users of the volume stopped.
    let users = client.containers_using(&vol.name)?;
    let mut guard = StopGuard::new(client, Duration::from_secs(opts.stop_timeout_secs));
    let swapped = (|| -> Result<u64, DockerError> {
        for c in users.iter().filter(|c| c.running) {
            guard.stop(c)?;
        }
        swap_content(&vol, &root, &staging, &content, &md)
    })();
    let containers = guard.start_all();
    let _ = remove_all(&staging);
    let replaced_entries = swapped?;
    Ok(VolumeRestoreSummary {
        volume: vol.name.clone(),
        created,
        path,
        data_path: root.display().to_string(),
        restore: summary,
        replaced_entries,
        containers,
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

/// A directory on the volume's file system but, when possible, outside what containers see:
/// next to `_data` on the engine host, else inside the mounted volume.
fn staging_dir(vol: &DockerVolume, root: &Path) -> PathBuf {
    let name = format!(".coffer-restore-{}", std::process::id());
    if root == vol.mountpoint
        && root.file_name().is_some_and(|n| n == "_data")
        && let Some(parent) = root.parent()
    {
        return parent.join(name);
    }
    root.join(name)
}

fn swap_content(
    vol: &DockerVolume,
    root: &Path,
    staging: &Path,
    content: &Path,
    md: &std::fs::Metadata,
) -> Result<u64, DockerError> {
    let mut removed = 0;
    let entries = std::fs::read_dir(root).map_err(|e| io_err(vol, root, e))?;
    for e in entries {
        let e = e.map_err(|e| io_err(vol, root, e))?;
        let p = e.path();
        if p == staging {
            continue;
        }
        remove_all(&p)?;
        removed += 1;
    }
    let entries = std::fs::read_dir(content).map_err(|e| io_err(vol, content, e))?;
    for e in entries {
        let e = e.map_err(|e| io_err(vol, content, e))?;
        let to = root.join(e.file_name());
        std::fs::rename(e.path(), &to).map_err(|err| io_err(vol, &to, err))?;
    }
    // The volume's root takes the restored directory's owner and mode.
    use std::os::unix::fs::MetadataExt;
    let _ = std::os::unix::fs::chown(root, Some(md.uid()), Some(md.gid()));
    std::fs::set_permissions(root, md.permissions()).map_err(|e| io_err(vol, root, e))?;
    Ok(removed)
}

fn remove_all(p: &Path) -> Result<(), DockerError> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::Io {
            path: p.display().to_string(),
            source: e,
        }
        .into()),
        Ok(m) => if m.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        }
        .map_err(|e| {
            EngineError::Io {
                path: p.display().to_string(),
                source: e,
            }
            .into()
        }),
    }
}

fn io_err(vol: &DockerVolume, p: &Path, e: std::io::Error) -> DockerError {
    DockerError::VolumeData {
        volume: vol.name.clone(),
        message: format!("{}: {e}", p.display()),
    }
}
