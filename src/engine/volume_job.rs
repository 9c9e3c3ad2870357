//! The work of a restore into a volume, done by this process or sent to a helper container
//! ([`HelperRequest`], one JSON line on its stdin): save the directory's current content as a
//! snapshot tagged [`SAFETY_TAG`], then restore the snapshot's directory into it in place.
//! Nothing here talks to the container engine; [`super::volume_restore`] decides who runs it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backup::{BackupOptions, SourceSpec, backup};
use super::restore::{Overwrite, RestoreOptions, RestoreSummary, restore};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::repo::Repository;

/// Tag of the snapshot taken of a volume before a restore replaces its content.
pub const SAFETY_TAG: &str = "pre-restore";

/// The restore into one directory, as done by this process or by a helper.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VolumeJob {
    /// The snapshot's full id.
    pub snapshot: String,
    /// The directory in the snapshot restored into the target's root.
    pub path: String,
    /// The target's name, for the safety snapshot's tags.
    pub target_name: String,
    /// Save the current content first (as a snapshot tagged [`SAFETY_TAG`]).
    pub safety_snapshot: bool,
    /// Host name of the safety snapshot.
    pub host: String,
    /// When existing files are replaced.
    pub overwrite: Overwrite,
    /// Read what was written back.
    pub verify: bool,
    /// Change nothing.
    pub dry_run: bool,
}

/// What the job did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VolumeJobResult {
    /// The snapshot of the content before the restore, if one was taken.
    pub safety_snapshot: Option<String>,
    /// The restore.
    pub restore: RestoreSummary,
}

/// A job sent to a helper on its stdin (one JSON line; the passphrase never goes into the
/// container's configuration).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HelperRequest {
    /// The repository's location.
    pub repo: String,
    /// The catalog cache the caller uses (the same path, when the helper shares its mounts).
    pub cache_dir: Option<PathBuf>,
    /// The passphrase.
    pub password: Vec<u8>,
    /// The key the caller opened the repository with: the only one the helper tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The work.
    pub job: VolumeJob,
}

/// Save `dir` as a safety snapshot (unless empty or not asked for), then restore into it.
pub fn run_volume_job(
    repo: &Repository,
    catalog: &Catalog,
    dir: &Path,
    job: &VolumeJob,
    progress: &Progress,
) -> Result<VolumeJobResult, EngineError> {
    let mut out = VolumeJobResult::default();
    let name = job
        .path
        .trim_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let has_content = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if job.safety_snapshot && has_content && !job.dry_run {
        let s = backup(
            repo,
            catalog,
            &BackupOptions {
                sources: vec![SourceSpec {
                    path: dir.to_path_buf(),
                    name: if name.is_empty() {
                        job.target_name.clone()
                    } else {
                        name
                    },
                }],
                tags: vec![
                    SAFETY_TAG.to_string(),
                    format!("restore-target={}", job.target_name),
                ],
                host: job.host.clone(),
                ..Default::default()
            },
            &Progress::default(),
        )?;
        if !s.warnings.is_empty() {
            return Err(EngineError::Usage(format!(
                "the safety snapshot {} could not read {} entries (first: {}: {}); nothing \
                 was restored (add --no-safety-snapshot to restore anyway)",
                s.snapshot_id.map(|i| i.short()).unwrap_or_default(),
                s.warnings.len(),
                s.warnings[0].path,
                s.warnings[0].message
            )));
        }
        out.safety_snapshot = s.snapshot_id.map(|i| i.to_hex());
    }
    out.restore = restore(
        repo,
        catalog,
        &RestoreOptions {
            snapshot: job.snapshot.clone(),
            target: dir.to_path_buf(),
            paths: vec![job.path.clone()],
            overwrite: job.overwrite,
            delete: true,
            dry_run: job.dry_run,
            verify: job.verify,
            flatten: true,
            ..Default::default()
        },
        progress,
    )?;
    Ok(out)
}
