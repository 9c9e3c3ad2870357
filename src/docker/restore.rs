//! Restore a snapshot's directory into a Docker volume (or a bind-mounted host directory), in
//! place and undoable.
//!
//! The containers that use the volume stop (dependents first; never the caller's own
//! container), the volume's current content is saved as a snapshot tagged `pre-restore`,
//! the restore rewrites only what differs (each file under a temporary name, then renamed)
//! and removes what the snapshot does not have, and the containers start again on every way
//! out. Where this process cannot write the volume (the backup service mounts it read-only,
//! or the engine's volume directory is not reachable) the work runs in a helper container of
//! coffer's own image ([`super::helper`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::guard::{ContainerDowntime, StopGuard};
use super::helper::{HelperSpec, owner_label};
use super::order::start_order;
use super::{DockerClient, DockerError};
use crate::catalog::Catalog;
use crate::engine::backup::{BackupOptions, SourceSpec, backup};
use crate::engine::restore::{Overwrite, RestoreOptions, RestoreSummary, restore};
use crate::engine::{EngineError, Progress};
use crate::repo::Repository;

/// Tag of the snapshot taken of a volume before a restore replaces its content.
pub const SAFETY_TAG: &str = "pre-restore";
/// Where a helper mounts the volume it restores into.
pub const HELPER_TARGET: &str = "/coffer-target";

/// Where a restore goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreTarget {
    /// A Docker volume, by name.
    Volume(String),
    /// A bind-mounted directory, by its path on the engine's host.
    Bind(String),
}

impl RestoreTarget {
    /// How it is named in messages.
    pub fn describe(&self) -> String {
        match self {
            RestoreTarget::Volume(v) => format!("volume {v}"),
            RestoreTarget::Bind(p) => format!("host directory {p}"),
        }
    }
}

/// What to restore where.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeRestoreOptions {
    /// The snapshot's full id.
    pub snapshot: String,
    /// The directory in the snapshot whose content becomes the target's.
    pub path: String,
    /// The target.
    pub target: RestoreTarget,
    /// Create the volume (or host directory) when it does not exist.
    pub create: bool,
    /// Where volumes are mounted when coffer runs in a container (`/backup`).
    pub mount_dir: PathBuf,
    /// Seconds a stopping container gets before it is killed.
    pub stop_timeout_secs: u64,
    /// The work itself (also what a helper is sent).
    pub job: VolumeJob,
}

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
    /// The work.
    pub job: VolumeJob,
}

/// What the caller of [`restore_volume`] knows that a helper needs.
pub struct HelperAccess {
    /// The repository's location as the helper can reach it.
    pub repo: String,
    /// The catalog cache.
    pub cache_dir: Option<PathBuf>,
    /// The passphrase.
    pub password: Vec<u8>,
    /// The image of the helper, when this process does not run in a container of coffer's
    /// own image.
    pub image: Option<String>,
    /// Mounts the helper needs besides the target, when this process does not run in a
    /// container (a local repository's and the cache's directories).
    pub binds: Vec<String>,
    /// Environment for the helper (S3 credentials and the like, never the passphrase).
    pub env: Vec<String>,
}

/// What a restore into a volume did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VolumeRestoreSummary {
    /// The target.
    pub target: String,
    /// Whether it was created.
    pub created: bool,
    /// The snapshot path restored.
    pub path: String,
    /// Whether a helper container did the work.
    pub helper: bool,
    /// The snapshot of the content before the restore (undo: restore it the same way).
    pub safety_snapshot: Option<String>,
    /// The restore itself.
    pub restore: RestoreSummary,
    /// Containers stopped for the restore, with their downtime.
    pub containers: Vec<ContainerDowntime>,
    /// Wall time in seconds.
    pub duration_secs: f64,
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
                s.snapshot_id.get(..8).unwrap_or(&s.snapshot_id),
                s.warnings.len(),
                s.warnings[0].path,
                s.warnings[0].message
            )));
        }
        out.safety_snapshot = Some(s.snapshot_id);
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

/// The file (in the cache directory) naming the containers a restore stopped and has not
/// started again yet: written before they stop, so a restore killed by SIGKILL leaves them
/// to the next one.
const STOPPED_RECORD: &str = "restore-stopped.json";

fn read_record(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_record(path: &Path, ids: &[String]) {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let r = if ids.is_empty() {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    } else {
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        serde_json::to_vec(&ids)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path))
    };
    if let Err(e) = r {
        tracing::warn!(
            "cannot record the stopped containers in {}: {e}",
            path.display()
        );
    }
}

/// Whether this process can write into `dir` (a read-only mount says no).
fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Restore into a volume or host directory (see the module docs).
pub fn restore_volume(
    client: &DockerClient,
    repo: &Repository,
    catalog: &Catalog,
    opts: &VolumeRestoreOptions,
    access: &HelperAccess,
    progress: &Progress,
) -> Result<VolumeRestoreSummary, DockerError> {
    let start = Instant::now();
    let me = match super::backup::own_container_id() {
        Some(id) => client.inspect(&id)?,
        None => None,
    };
    // Where the content is, and whether this process can write it.
    let mut created = false;
    let (direct, users, bind) = match &opts.target {
        RestoreTarget::Volume(name) => {
            let vol = match client.inspect_volume(name)? {
                Some(v) => v,
                None if opts.create => {
                    created = true;
                    client.create_volume(name)?
                }
                None => {
                    return Err(DockerError::Usage(format!(
                        "Docker volume {name:?} does not exist; add --create to create it"
                    )));
                }
            };
            let direct = vol.data_path(&opts.mount_dir).ok().filter(|p| writable(p));
            (
                direct,
                client.containers_using(name)?,
                format!("{name}:{HELPER_TARGET}"),
            )
        }
        RestoreTarget::Bind(path) => {
            let p = PathBuf::from(path);
            if me.is_none() && !p.exists() && opts.create && !opts.job.dry_run {
                std::fs::create_dir_all(&p).map_err(|e| EngineError::Io {
                    path: path.clone(),
                    source: e,
                })?;
                created = true;
            }
            let direct = (me.is_none() && p.is_dir() && writable(&p)).then_some(p);
            (direct, Vec::new(), format!("{path}:{HELPER_TARGET}"))
        }
    };
    if direct.is_none() && me.is_none() && access.image.is_none() {
        return Err(DockerError::Usage(format!(
            "cannot write into {}: run coffer as root on the Docker host, or from its \
             container (`docker exec <backup container> restore ...`), or name an image of \
             coffer with COFFER_HELPER_IMAGE",
            opts.target.describe()
        )));
    }
    // The users of the volume stop (never this process's own container, nor a helper), and
    // so do the ones an earlier restore stopped and could not start again (it was killed):
    // they start with the others at the end.
    let record = access.cache_dir.as_ref().map(|d| d.join(STOPPED_RECORD));
    let recorded = record.as_deref().map(read_record).unwrap_or_default();
    let users: Vec<_> = users
        .into_iter()
        .filter(|c| c.running || recorded.contains(&c.id))
        .filter(|c| me.as_ref().is_none_or(|m| m.id != c.id))
        .filter(|c| !c.labels.contains_key(super::helper::HELPER_LABEL))
        .collect();
    if let Some(r) = &record
        && !opts.job.dry_run
    {
        let mut ids = recorded.clone();
        ids.extend(users.iter().map(|c| c.id.clone()));
        write_record(r, &ids);
    }
    let order = start_order(&users);
    let mut guard = StopGuard::new(client, Duration::from_secs(opts.stop_timeout_secs));
    let work = (|| -> Result<(VolumeJobResult, bool), DockerError> {
        if !opts.job.dry_run {
            for i in order.stop() {
                guard.stop(&users[i])?;
            }
        }
        match &direct {
            Some(dir) => Ok((
                run_volume_job(repo, catalog, dir, &opts.job, progress)?,
                false,
            )),
            None => Ok((
                run_in_helper(client, me.as_ref(), &bind, opts, access)?,
                true,
            )),
        }
    })();
    let containers = guard.start_all();
    if let Some(r) = &record
        && !opts.job.dry_run
    {
        let mut left = recorded;
        left.retain(|id| !users.iter().any(|u| u.id == *id));
        left.extend(
            containers
                .iter()
                .filter(|c| !c.started)
                .map(|c| c.id.clone()),
        );
        write_record(r, &left);
    }
    let (result, helper) = work?;
    Ok(VolumeRestoreSummary {
        target: opts.target.describe(),
        created,
        path: opts.path.clone(),
        helper,
        safety_snapshot: result.safety_snapshot,
        restore: result.restore,
        containers,
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

/// Run the job in a helper container and return what it reports.
fn run_in_helper(
    client: &DockerClient,
    me: Option<&super::label::ContainerInfo>,
    bind: &str,
    opts: &VolumeRestoreOptions,
    access: &HelperAccess,
) -> Result<VolumeJobResult, DockerError> {
    // Leftovers of a caller that died are removed first.
    for (id, name, owner) in client.leftover_helpers()? {
        tracing::info!("removing leftover helper container {name} (started by {owner})");
        client.remove_container(&id)?;
    }
    let request = HelperRequest {
        repo: access.repo.clone(),
        cache_dir: access.cache_dir.clone(),
        password: access.password.clone(),
        job: opts.job.clone(),
    };
    let mut stdin = serde_json::to_vec(&request).map_err(|e| DockerError::Usage(e.to_string()))?;
    stdin.push(b'\n');
    let mut binds = vec![bind.to_string()];
    let (image, volumes_from, network_mode) = match me {
        Some(m) => (
            access.image.clone().unwrap_or_else(|| m.image.clone()),
            vec![m.id.clone()],
            format!("container:{}", m.id),
        ),
        None => {
            binds.extend(access.binds.iter().cloned());
            (
                access.image.clone().unwrap_or_default(),
                Vec::new(),
                "host".to_string(),
            )
        }
    };
    let spec = HelperSpec {
        image,
        cmd: vec!["volume-helper".into()],
        env: access.env.clone(),
        binds,
        volumes_from,
        network_mode,
        stdin,
        owner: owner_label(),
        purpose: "restore".into(),
    };
    let mut last_line = Vec::new();
    let out = client.run_helper(&spec, &mut |chunk| {
        use std::io::Write;
        let _ = std::io::stderr().write_all(chunk);
        if let Some(l) = chunk
            .split(|&b| b == b'\n')
            .rfind(|l| !l.iter().all(u8::is_ascii_whitespace))
        {
            last_line = l.to_vec();
        }
    })?;
    let line = out
        .stdout
        .split(|&b| b == b'\n')
        .rfind(|l| l.first() == Some(&b'{'));
    match line.map(serde_json::from_slice::<VolumeJobResult>) {
        Some(Ok(r)) => Ok(r),
        _ => Err(DockerError::VolumeData {
            volume: opts.target.describe(),
            message: format!(
                "the helper container failed (exit {}): {}",
                out.code,
                String::from_utf8_lossy(&last_line).trim()
            ),
        }),
    }
}
