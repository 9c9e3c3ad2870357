//! The backup of Docker volumes, volume by volume, each into its own snapshot tagged with the
//! volume, its compose project and the services that use it.
//!
//! For a volume whose containers carry the stop label, downtime is kept short by two passes:
//! the first reads the volume while the containers run (it stores nearly everything but
//! writes no snapshot), then the labelled containers stop (dependents first), the second pass
//! reads only what changed since the first (change detection against the first pass's tree),
//! its snapshot is written, and the containers start again (dependencies first). Pre-commands
//! run before the first pass, post-commands after the containers are back.
//!
//! A failure of one volume (a pre-command, a volume whose files are unreachable) is reported
//! in its [`VolumeBackup`] and the others go on; a repository failure or a signal stops the
//! run. Either way every stopped container is started again ([`super::guard`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::guard::{ContainerDowntime, StopGuard};
use super::hook::{self, HookRun};
use super::label::{ContainerInfo, Phase};
use super::order::start_order;
use super::volume::{DockerVolume, VolumeSelection};
use super::{DockerClient, DockerError};
use crate::catalog::Catalog;
use crate::engine::backup::{BackupOptions, BackupSummary, PassOptions, SourceSpec, backup_pass};
use crate::engine::{EngineError, Progress};
use crate::id::BlobId;
use crate::repo::{LockKind, Repository};

/// What to back up and how.
#[derive(Clone, Debug, Serialize)]
pub struct DockerBackupOptions {
    /// The volumes.
    pub selection: VolumeSelection,
    /// Stop running containers whose stop label has this value.
    pub stop_label_value: String,
    /// Seconds a stopping container gets before it is killed.
    pub stop_timeout_secs: u64,
    /// Where volumes are mounted when coffer runs in a container (`/backup`).
    pub mount_dir: PathBuf,
    /// Read each volume once, with its containers stopped, instead of twice.
    pub single_pass: bool,
    /// Tags added to every snapshot (besides the volume's own).
    pub tags: Vec<String>,
    /// Host name recorded.
    pub host: String,
    /// Exclude patterns, as for a directory backup.
    pub excludes: Vec<String>,
    /// Exclude regular expressions on full paths, as for a directory backup.
    pub exclude_regexes: Vec<String>,
    /// Read every file even when its metadata did not change.
    pub force: bool,
}

/// The first, online pass over a volume.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FirstPass {
    /// Files read.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// What happened to one volume.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VolumeBackup {
    /// The volume.
    pub volume: String,
    /// Where its files were read.
    pub path: String,
    /// Its compose project.
    pub compose_project: Option<String>,
    /// Compose services of the containers that use it.
    pub services: Vec<String>,
    /// Tags of its snapshot.
    pub tags: Vec<String>,
    /// The online pass (absent when no container had to stop).
    pub first_pass: Option<FirstPass>,
    /// The snapshot written.
    pub snapshot: Option<BackupSummary>,
    /// Containers stopped for the read, with their downtime, in start order.
    pub containers: Vec<ContainerDowntime>,
    /// Labelled containers that were not running and so were left alone.
    pub left_stopped: Vec<String>,
    /// Containers whose dependencies formed a cycle (stopped in name order).
    pub dependency_cycle: Vec<String>,
    /// Commands run from labels.
    pub hooks: Vec<HookRun>,
    /// Why this volume's backup failed.
    pub error: Option<String>,
}

/// What a Docker backup did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DockerBackupSummary {
    /// The engine's address.
    pub engine: String,
    /// API version spoken.
    pub api_version: String,
    /// One entry per volume, by name.
    pub volumes: Vec<VolumeBackup>,
    /// Volumes whose backup failed.
    pub failed: usize,
    /// Longest downtime of any container, in seconds.
    pub max_downtime_secs: f64,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// Back up the selected volumes. Errors that concern one volume are in its entry; the
/// function fails only when the run cannot go on (engine unreachable, repository failure,
/// signal).
pub fn backup_volumes(
    client: &DockerClient,
    repo: &Repository,
    catalog: &Catalog,
    opts: &DockerBackupOptions,
    progress: &Progress,
) -> Result<DockerBackupSummary, DockerError> {
    let start = Instant::now();
    let volumes = opts.selection.resolve(client)?;
    let own = own_container_id();
    let mut out = DockerBackupSummary {
        engine: client.host().to_string(),
        api_version: client.api_version(),
        ..Default::default()
    };
    for vol in &volumes {
        let mut vb = VolumeBackup {
            volume: vol.name.clone(),
            ..Default::default()
        };
        match one_volume(
            client,
            repo,
            catalog,
            opts,
            vol,
            own.as_deref(),
            progress,
            &mut vb,
        ) {
            Ok(()) => {}
            Err(e @ (DockerError::Interrupted | DockerError::Unreachable { .. })) => return Err(e),
            Err(DockerError::Engine(e @ (EngineError::Repo(_) | EngineError::Catalog(_)))) => {
                return Err(DockerError::Engine(e));
            }
            Err(e) => vb.error = Some(e.to_string()),
        }
        if vb.error.is_some() {
            out.failed += 1;
        }
        for c in &vb.containers {
            out.max_downtime_secs = out.max_downtime_secs.max(c.downtime_secs);
        }
        out.volumes.push(vb);
    }
    out.duration_secs = start.elapsed().as_secs_f64();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn one_volume(
    client: &DockerClient,
    repo: &Repository,
    catalog: &Catalog,
    opts: &DockerBackupOptions,
    vol: &DockerVolume,
    own: Option<&str>,
    progress: &Progress,
    vb: &mut VolumeBackup,
) -> Result<(), DockerError> {
    let path = vol.data_path(&opts.mount_dir)?;
    vb.path = path.display().to_string();
    let users: Vec<ContainerInfo> = client
        .containers_using(&vol.name)?
        .into_iter()
        .filter(|c| own.is_none_or(|o| !c.id.starts_with(o)))
        .collect();
    vb.compose_project = vol
        .project()
        .or_else(|| users.iter().find_map(|c| c.project()))
        .map(str::to_string);
    let mut services: Vec<String> = users
        .iter()
        .filter_map(|c| c.service())
        .map(str::to_string)
        .collect();
    services.sort();
    services.dedup();
    vb.services = services;
    vb.tags = volume_tags(
        &opts.tags,
        &vol.name,
        vb.compose_project.as_deref(),
        &vb.services,
    );

    let to_stop: Vec<ContainerInfo> = users
        .iter()
        .filter(|c| c.running && c.wants_stop(&opts.stop_label_value))
        .cloned()
        .collect();
    vb.left_stopped = users
        .iter()
        .filter(|c| !c.running && c.wants_stop(&opts.stop_label_value))
        .map(|c| c.name.clone())
        .collect();
    let order = start_order(&to_stop);
    vb.dependency_cycle = order.cycle.clone();

    let hooked: Vec<&ContainerInfo> = users.iter().collect();
    hook::run_phase(client, &hooked, Phase::Pre, &mut vb.hooks)?;

    let bopts = BackupOptions {
        sources: vec![SourceSpec {
            name: vol.name.clone(),
            path,
        }],
        tags: vb.tags.clone(),
        host: opts.host.clone(),
        excludes: opts.excludes.clone(),
        exclude_regexes: opts.exclude_regexes.clone(),
        parent: None,
        force: opts.force,
        time: None,
    };
    let stopping = Stopping {
        containers: &to_stop,
        order: &order,
        grace: Duration::from_secs(opts.stop_timeout_secs),
        single_pass: opts.single_pass,
    };
    let read = read_stopping(client, repo, catalog, &bopts, &stopping, progress);
    vb.first_pass = read.first_pass;
    vb.containers = read.containers;
    let post = after_read(client, &users, &vb.containers, &mut vb.hooks);
    vb.snapshot = Some(read.snapshot?);
    post
}

/// After a read: the post-commands of `users`, once their containers are back, whether the
/// read worked or not (they usually clean up what the pre-commands wrote); then an error when
/// a stopped container did not start again.
fn after_read(
    client: &DockerClient,
    users: &[ContainerInfo],
    containers: &[ContainerDowntime],
    hooks: &mut Vec<HookRun>,
) -> Result<(), DockerError> {
    let users_now: Vec<ContainerInfo> = users
        .iter()
        .filter_map(|c| client.inspect(&c.id).ok().flatten())
        .collect();
    let hooked_now: Vec<&ContainerInfo> = users_now.iter().collect();
    let post = hook::run_phase(client, &hooked_now, Phase::Post, hooks);
    if let Some(c) = containers.iter().find(|c| !c.started) {
        return Err(DockerError::Api {
            what: format!("starting container {} again", c.name),
            message: c.error.clone().unwrap_or_default(),
        });
    }
    post
}

/// What a directory backup with stopped containers did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourcesBackup {
    /// The snapshot written.
    pub snapshot: BackupSummary,
    /// Volumes among the sources (by name), found through the engine.
    pub volumes: Vec<String>,
    /// The online pass (absent when no container had to stop).
    pub first_pass: Option<FirstPass>,
    /// Containers stopped for the read, with their downtime, in start order.
    pub containers: Vec<ContainerDowntime>,
    /// Commands run from labels.
    pub hooks: Vec<HookRun>,
}

/// Back up directories (the old `/backup/<name>` mounts) into one snapshot, stopping the
/// running containers whose stop label has `stop_label_value` and that mount a volume among
/// the sources, only for a short second pass (as [`backup_volumes`] does per volume). A
/// source is a volume when this process runs in a container that mounts the volume at the
/// source's path, or when the source is a volume's mountpoint on the engine's host.
pub fn backup_sources(
    client: &DockerClient,
    repo: &Repository,
    catalog: &Catalog,
    bopts: &BackupOptions,
    stop_label_value: &str,
    stop_timeout: Duration,
    progress: &Progress,
) -> Result<SourcesBackup, DockerError> {
    let own = own_container_id();
    let mut out = SourcesBackup::default();
    let me = match &own {
        Some(id) => client.inspect(id)?,
        None => None,
    };
    // Which volume (or host directory) each source is, recorded as tags so that
    // `restore --all-volumes` puts each back where it came from.
    let mut recorded = Vec::new();
    let source_named = |p: &Path| {
        bopts
            .sources
            .iter()
            .find(|s| s.path == p)
            .map(|s| s.name.clone())
    };
    match &me {
        Some(me) => {
            for (dest, name) in &me.volume_mounts {
                if let Some(src) = source_named(Path::new(dest)) {
                    out.volumes.push(name.clone());
                    recorded.push(format!("{VOLUME_TAG}{src}={name}"));
                }
            }
            for (dest, host_path) in &me.bind_mounts {
                if let Some(src) = source_named(Path::new(dest)) {
                    recorded.push(format!("{BIND_TAG}{src}={host_path}"));
                }
            }
        }
        None => {
            let volumes = client.list_volumes(&HashMap::new())?;
            for s in &bopts.sources {
                let Ok(c) = std::fs::canonicalize(&s.path) else {
                    continue;
                };
                if let Some(v) = volumes.iter().find(|v| v.mountpoint == c) {
                    out.volumes.push(v.name.clone());
                    recorded.push(format!("{VOLUME_TAG}{}={}", s.name, v.name));
                }
            }
        }
    }
    let mut tagged;
    let bopts = if recorded.is_empty() {
        bopts
    } else {
        tagged = bopts.clone();
        tagged.tags.extend(recorded);
        &tagged
    };
    out.volumes.sort();
    out.volumes.dedup();
    let mut users: Vec<ContainerInfo> = Vec::new();
    for v in &out.volumes {
        for c in client.containers_using(v)? {
            let is_me = me.as_ref().is_some_and(|m| m.id == c.id);
            if !is_me && !users.iter().any(|u| u.id == c.id) {
                users.push(c);
            }
        }
    }
    users.sort_by(|a, b| a.name.cmp(&b.name));
    let to_stop: Vec<ContainerInfo> = users
        .iter()
        .filter(|c| c.running && c.wants_stop(stop_label_value))
        .cloned()
        .collect();
    let order = start_order(&to_stop);
    let hooked: Vec<&ContainerInfo> = users.iter().collect();
    hook::run_phase(client, &hooked, Phase::Pre, &mut out.hooks)?;
    let stopping = Stopping {
        containers: &to_stop,
        order: &order,
        grace: stop_timeout,
        single_pass: false,
    };
    let read = read_stopping(client, repo, catalog, bopts, &stopping, progress);
    out.first_pass = read.first_pass;
    out.containers = read.containers;
    let post = after_read(client, &users, &out.containers, &mut out.hooks);
    out.snapshot = read.snapshot?;
    post?;
    Ok(out)
}

/// The containers to stop for a read, and how.
struct Stopping<'a> {
    containers: &'a [ContainerInfo],
    order: &'a super::order::Order,
    grace: Duration,
    single_pass: bool,
}

/// What a read with stopped containers did.
struct StoppedRead {
    snapshot: Result<BackupSummary, DockerError>,
    first_pass: Option<FirstPass>,
    containers: Vec<ContainerDowntime>,
}

/// Read `bopts` with `stopping.containers` stopped as briefly as possible: a first pass while
/// they run (unless `single_pass`), then they stop (dependents first), the second pass reads
/// what changed since and writes the snapshot, and they start again on every way out. Without
/// containers to stop, one plain pass.
fn read_stopping(
    client: &DockerClient,
    repo: &Repository,
    catalog: &Catalog,
    bopts: &BackupOptions,
    stopping: &Stopping<'_>,
    progress: &Progress,
) -> StoppedRead {
    let mut out = StoppedRead {
        snapshot: Err(DockerError::Interrupted),
        first_pass: None,
        containers: Vec::new(),
    };
    if stopping.containers.is_empty() {
        out.snapshot = backup_pass(repo, catalog, bopts, PassOptions::default(), progress)
            .map_err(DockerError::from);
        return out;
    }
    // Held across both passes: the first pass's blobs are referenced by no snapshot until
    // the second pass writes one, and a prune in between must not remove them.
    let _hold = match repo.lock(LockKind::Shared, "backup with stopped containers") {
        Ok(l) => l,
        Err(e) => {
            out.snapshot = Err(EngineError::from(e).into());
            return out;
        }
    };
    let mut compare_tree = None;
    if !stopping.single_pass {
        let t = Instant::now();
        let first_opts = PassOptions {
            no_snapshot: true,
            compare_tree: None,
        };
        match backup_pass(repo, catalog, bopts, first_opts, progress) {
            Ok(first) => {
                compare_tree = BlobId::from_hex(&first.tree).ok();
                out.first_pass = Some(FirstPass {
                    files_read: first.files_read,
                    bytes_read: first.bytes_read,
                    bytes_added: first.bytes_added,
                    duration_secs: t.elapsed().as_secs_f64(),
                });
            }
            Err(e) => {
                out.snapshot = Err(e.into());
                return out;
            }
        }
    }
    let mut guard = StopGuard::new(client, stopping.grace);
    out.snapshot = (|| -> Result<BackupSummary, DockerError> {
        for i in stopping.order.stop() {
            guard.stop(&stopping.containers[i])?;
        }
        let second = PassOptions {
            no_snapshot: false,
            compare_tree,
        };
        Ok(backup_pass(repo, catalog, bopts, second, progress)?)
    })();
    out.containers = guard.start_all();
    out
}

/// The name of the container this process runs in (a stable host name for snapshots: it
/// survives `docker-compose up --force-recreate`, where the container id does not).
pub fn own_container_name(client: &DockerClient) -> Option<String> {
    let id = own_container_id()?;
    client
        .inspect(&id)
        .ok()
        .flatten()
        .map(|c| c.name)
        .filter(|n| !n.is_empty())
}

/// Tag prefix recording which volume a source of a snapshot is: `volume:<source>=<volume>`.
pub const VOLUME_TAG: &str = "volume:";
/// Tag prefix recording which host directory a source is: `bind:<source>=<path>`.
pub const BIND_TAG: &str = "bind:";

/// Where each source of a snapshot came from, as its tags record: (source name, target).
/// A snapshot of one volume (`backup --docker`) has one source and a `volume=<name>` tag.
pub fn recorded_targets(
    snap: &crate::format::snapshot::Snapshot,
) -> Vec<(String, super::restore::RestoreTarget)> {
    use super::restore::RestoreTarget;
    let mut out = Vec::new();
    for t in &snap.tags {
        let (prefix_len, bind) = if t.starts_with(VOLUME_TAG) {
            (VOLUME_TAG.len(), false)
        } else if t.starts_with(BIND_TAG) {
            (BIND_TAG.len(), true)
        } else {
            continue;
        };
        if let Some((src, what)) = t[prefix_len..].split_once('=') {
            let target = if bind {
                RestoreTarget::Bind(what.to_string())
            } else {
                RestoreTarget::Volume(what.to_string())
            };
            out.push((src.to_string(), target));
        }
    }
    if out.is_empty()
        && let [only] = snap.sources.as_slice()
        && let Some(v) = snap.tags.iter().find_map(|t| t.strip_prefix("volume="))
    {
        out.push((only.name.clone(), RestoreTarget::Volume(v.to_string())));
    }
    out
}

/// The tags of a volume's snapshot.
pub fn volume_tags(
    extra: &[String],
    volume: &str,
    project: Option<&str>,
    services: &[String],
) -> Vec<String> {
    let mut tags: Vec<String> = extra.to_vec();
    tags.push(format!("volume={volume}"));
    if let Some(p) = project {
        tags.push(format!("compose-project={p}"));
    }
    for s in services {
        tags.push(format!("compose-service={s}"));
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    tags
}

/// This process's container id, when coffer itself runs in a container (so it never stops
/// itself). Read from the cgroup/mount paths the engine sets up, else the host name, which
/// Docker sets to the short id.
pub(crate) fn own_container_id() -> Option<String> {
    if !std::path::Path::new("/.dockerenv").exists() {
        return None;
    }
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for part in info.split(['/', ' ']) {
            if is_id(part) {
                return Some(part.to_string());
            }
        }
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_volume_project_and_services() {
        let t = volume_tags(
            &["nightly".into(), "volume=db".into()],
            "db",
            Some("shop"),
            &["api".into(), "postgres".into()],
        );
        assert_eq!(
            t,
            [
                "nightly",
                "volume=db",
                "compose-project=shop",
                "compose-service=api",
                "compose-service=postgres"
            ]
        );
        assert_eq!(volume_tags(&[], "v", None, &[]), ["volume=v"]);
    }
}
