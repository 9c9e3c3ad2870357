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
//! run. Either way every stopped container is started again ([`crate::docker::guard`]).
//!
//! The container engine is reached only through [`ContainerEngine`], so this module is tested
//! with an in-memory engine; the caller's own container is passed in, never stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::backup::{BackupOptions, BackupSummary, PassOptions, SourceSpec, backup_pass};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::docker::backup::{BIND_TAG, VOLUME_TAG, own_container_id, volume_tags};
use crate::docker::guard::{ContainerDowntime, StopGuard};
use crate::docker::hook::{self, HookRun};
use crate::docker::label::{ContainerInfo, Phase};
use crate::docker::order::{Order, start_order};
use crate::docker::volume::{DockerVolume, VolumeSelection};
use crate::docker::{ContainerEngine, DockerError};
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

/// Where a volume backup runs: the engine, the repository, and the caller's own container.
struct Run<'a> {
    engine: &'a dyn ContainerEngine,
    repo: &'a Repository,
    catalog: &'a Catalog,
    opts: &'a DockerBackupOptions,
    /// The id (or its prefix) of the container this process runs in: never stopped.
    own: Option<&'a str>,
    progress: &'a Progress,
}

/// Back up the selected volumes. Errors that concern one volume are in its entry; the
/// function fails only when the run cannot go on (engine unreachable, repository failure,
/// signal).
pub fn backup_volumes(
    engine: &dyn ContainerEngine,
    repo: &Repository,
    catalog: &Catalog,
    opts: &DockerBackupOptions,
    progress: &Progress,
) -> Result<DockerBackupSummary, EngineError> {
    let own = own_container_id();
    let run = Run {
        engine,
        repo,
        catalog,
        opts,
        own: own.as_deref(),
        progress,
    };
    run_volumes(&run)
}

fn run_volumes(run: &Run<'_>) -> Result<DockerBackupSummary, EngineError> {
    let start = Instant::now();
    let volumes = run.opts.selection.resolve(run.engine)?;
    let mut out = DockerBackupSummary {
        engine: run.engine.host().to_string(),
        api_version: run.engine.api_version(),
        ..Default::default()
    };
    for vol in &volumes {
        let mut vb = VolumeBackup {
            volume: vol.name.clone(),
            ..Default::default()
        };
        match one_volume(run, vol, &mut vb) {
            Ok(()) => {}
            Err(
                e @ (EngineError::Docker(
                    DockerError::Interrupted | DockerError::Unreachable { .. },
                )
                | EngineError::Repo(_)
                | EngineError::Catalog(_)),
            ) => return Err(e),
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

fn one_volume(run: &Run<'_>, vol: &DockerVolume, vb: &mut VolumeBackup) -> Result<(), EngineError> {
    let opts = run.opts;
    let path = vol.data_path(&opts.mount_dir)?;
    vb.path = path.display().to_string();
    let users = describe_volume(run, vol, vb)?;
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
    hook::run_phase(run.engine, &hooked, Phase::Pre, &mut vb.hooks)?;

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
        ..Default::default()
    };
    let stopping = Stopping {
        containers: &to_stop,
        order: &order,
        grace: Duration::from_secs(opts.stop_timeout_secs),
        single_pass: opts.single_pass,
    };
    let read = read_stopping(
        run.engine,
        run.repo,
        run.catalog,
        &bopts,
        &stopping,
        run.progress,
    );
    vb.first_pass = read.first_pass;
    vb.containers = read.containers;
    let post = after_read(run.engine, &users, &vb.containers, &mut vb.hooks);
    vb.snapshot = Some(read.snapshot?);
    post
}

/// The containers that use `vol` (never the caller's own), and from them the volume's compose
/// project, services and snapshot tags, recorded in `vb`.
fn describe_volume(
    run: &Run<'_>,
    vol: &DockerVolume,
    vb: &mut VolumeBackup,
) -> Result<Vec<ContainerInfo>, EngineError> {
    let users: Vec<ContainerInfo> = run
        .engine
        .containers_using(&vol.name)?
        .into_iter()
        .filter(|c| run.own.is_none_or(|o| !c.id.starts_with(o)))
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
        &run.opts.tags,
        &vol.name,
        vb.compose_project.as_deref(),
        &vb.services,
    );
    Ok(users)
}

/// After a read: the post-commands of `users`, once their containers are back, whether the
/// read worked or not (they usually clean up what the pre-commands wrote); then an error when
/// a stopped container did not start again.
fn after_read(
    engine: &dyn ContainerEngine,
    users: &[ContainerInfo],
    containers: &[ContainerDowntime],
    hooks: &mut Vec<HookRun>,
) -> Result<(), EngineError> {
    let users_now: Vec<ContainerInfo> = users
        .iter()
        .filter_map(|c| engine.inspect(&c.id).ok().flatten())
        .collect();
    let hooked_now: Vec<&ContainerInfo> = users_now.iter().collect();
    let post = hook::run_phase(engine, &hooked_now, Phase::Post, hooks);
    if let Some(c) = containers.iter().find(|c| !c.started) {
        return Err(DockerError::Api {
            what: format!("starting container {} again", c.name),
            message: c.error.clone().unwrap_or_default(),
        }
        .into());
    }
    Ok(post?)
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
    engine: &dyn ContainerEngine,
    repo: &Repository,
    catalog: &Catalog,
    bopts: &BackupOptions,
    stop_label_value: &str,
    stop_timeout: Duration,
    progress: &Progress,
) -> Result<SourcesBackup, EngineError> {
    let me = match own_container_id() {
        Some(id) => engine.inspect(&id)?,
        None => None,
    };
    let stop = SourcesStop {
        label_value: stop_label_value,
        timeout: stop_timeout,
        me: me.as_ref(),
    };
    sources_with(engine, repo, catalog, bopts, &stop, progress)
}

/// Which containers [`backup_sources`] stops, and the caller's own container (never stopped).
struct SourcesStop<'a> {
    label_value: &'a str,
    timeout: Duration,
    me: Option<&'a ContainerInfo>,
}

fn sources_with(
    engine: &dyn ContainerEngine,
    repo: &Repository,
    catalog: &Catalog,
    bopts: &BackupOptions,
    stop: &SourcesStop<'_>,
    progress: &Progress,
) -> Result<SourcesBackup, EngineError> {
    let mut out = SourcesBackup::default();
    // Which volume (or host directory) each source is, recorded as tags so that
    // `restore --all-volumes` puts each back where it came from.
    let recorded = source_volumes(engine, bopts, stop.me, &mut out.volumes)?;
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
        for c in engine.containers_using(v)? {
            let is_me = stop.me.is_some_and(|m| m.id == c.id);
            if !is_me && !users.iter().any(|u| u.id == c.id) {
                users.push(c);
            }
        }
    }
    users.sort_by(|a, b| a.name.cmp(&b.name));
    let to_stop: Vec<ContainerInfo> = users
        .iter()
        .filter(|c| c.running && c.wants_stop(stop.label_value))
        .cloned()
        .collect();
    let order = start_order(&to_stop);
    let hooked: Vec<&ContainerInfo> = users.iter().collect();
    hook::run_phase(engine, &hooked, Phase::Pre, &mut out.hooks)?;
    let stopping = Stopping {
        containers: &to_stop,
        order: &order,
        grace: stop.timeout,
        single_pass: false,
    };
    let read = read_stopping(engine, repo, catalog, bopts, &stopping, progress);
    out.first_pass = read.first_pass;
    out.containers = read.containers;
    let post = after_read(engine, &users, &out.containers, &mut out.hooks);
    out.snapshot = read.snapshot?;
    post?;
    Ok(out)
}

/// The volumes among the sources of `bopts` (pushed to `volumes`), and the tags that record
/// which volume or host directory each source is.
fn source_volumes(
    engine: &dyn ContainerEngine,
    bopts: &BackupOptions,
    me: Option<&ContainerInfo>,
    volumes: &mut Vec<String>,
) -> Result<Vec<String>, EngineError> {
    let mut recorded = Vec::new();
    let source_named = |p: &Path| {
        bopts
            .sources
            .iter()
            .find(|s| s.path == p)
            .map(|s| s.name.clone())
    };
    match me {
        Some(me) => {
            for (dest, name) in &me.volume_mounts {
                if let Some(src) = source_named(Path::new(dest)) {
                    volumes.push(name.clone());
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
            let listed = engine.list_volumes(&HashMap::new())?;
            for s in &bopts.sources {
                let Ok(c) = std::fs::canonicalize(&s.path) else {
                    continue;
                };
                if let Some(v) = listed.iter().find(|v| v.mountpoint == c) {
                    volumes.push(v.name.clone());
                    recorded.push(format!("{VOLUME_TAG}{}={}", s.name, v.name));
                }
            }
        }
    }
    Ok(recorded)
}

/// The containers to stop for a read, and how.
struct Stopping<'a> {
    containers: &'a [ContainerInfo],
    order: &'a Order,
    grace: Duration,
    single_pass: bool,
}

/// What a read with stopped containers did.
struct StoppedRead {
    snapshot: Result<BackupSummary, EngineError>,
    first_pass: Option<FirstPass>,
    containers: Vec<ContainerDowntime>,
}

/// Read `bopts` with `stopping.containers` stopped as briefly as possible: a first pass while
/// they run (unless `single_pass`), then they stop (dependents first), the second pass reads
/// what changed since and writes the snapshot, and they start again on every way out. Without
/// containers to stop, one plain pass.
fn read_stopping(
    engine: &dyn ContainerEngine,
    repo: &Repository,
    catalog: &Catalog,
    bopts: &BackupOptions,
    stopping: &Stopping<'_>,
    progress: &Progress,
) -> StoppedRead {
    let mut out = StoppedRead {
        snapshot: Err(DockerError::Interrupted.into()),
        first_pass: None,
        containers: Vec::new(),
    };
    if stopping.containers.is_empty() {
        out.snapshot = backup_pass(repo, catalog, bopts, PassOptions::default(), progress);
        return out;
    }
    // Held across both passes: the first pass's blobs are referenced by no snapshot until
    // the second pass writes one, and a prune in between must not remove them.
    let _hold = match repo.lock(LockKind::Shared, "backup with stopped containers") {
        Ok(l) => l,
        Err(e) => {
            out.snapshot = Err(e.into());
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
                compare_tree = Some(first.tree);
                out.first_pass = Some(FirstPass {
                    files_read: first.files_read,
                    bytes_read: first.bytes_read,
                    bytes_added: first.bytes_added,
                    duration_secs: t.elapsed().as_secs_f64(),
                });
            }
            Err(e) => {
                out.snapshot = Err(e);
                return out;
            }
        }
    }
    let mut guard = StopGuard::new(engine, stopping.grace);
    out.snapshot = (|| -> Result<BackupSummary, EngineError> {
        for i in stopping.order.stop() {
            guard.stop(&stopping.containers[i])?;
        }
        let second = PassOptions {
            no_snapshot: false,
            compare_tree,
        };
        backup_pass(repo, catalog, bopts, second, progress)
    })();
    out.containers = guard.start_all();
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::docker::fake::{FakeEngine, container, labelled, stopping};
    use crate::docker::label::{DEPENDS_ON_LABEL, PRE_LABELS};
    use crate::repo::tests::fast_opts;
    use crate::storage::OpendalStore;

    /// A repository in memory, its catalog and the volumes' files in a temporary directory.
    struct World {
        repo: Repository,
        catalog: Catalog,
        dir: tempfile::TempDir,
        engine: FakeEngine,
    }

    fn world() -> World {
        let store = Arc::new(OpendalStore::memory().unwrap());
        let repo = Repository::init(store, b"pw", fast_opts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        World {
            repo,
            catalog,
            dir,
            engine: FakeEngine::default(),
        }
    }

    impl World {
        /// A volume with one file, at `<dir>/volumes/<name>`.
        fn volume(&self, name: &str) -> PathBuf {
            let p = self.dir.path().join("volumes").join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("data.txt"), format!("content of {name}")).unwrap();
            self.engine.add_volume(name, p.clone());
            p
        }

        fn opts(&self, names: &[&str]) -> DockerBackupOptions {
            DockerBackupOptions {
                selection: VolumeSelection {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    ..Default::default()
                },
                stop_label_value: "true".into(),
                stop_timeout_secs: 1,
                mount_dir: self.dir.path().join("no-mounts"),
                single_pass: false,
                tags: Vec::new(),
                host: "test".into(),
                excludes: Vec::new(),
                exclude_regexes: Vec::new(),
                force: false,
            }
        }

        fn backup(
            &self,
            opts: &DockerBackupOptions,
            own: Option<&str>,
        ) -> Result<DockerBackupSummary, EngineError> {
            let run = Run {
                engine: &self.engine,
                repo: &self.repo,
                catalog: &self.catalog,
                opts,
                own,
                progress: &Progress::default(),
            };
            run_volumes(&run)
        }
    }

    #[test]
    fn dependents_stop_first_after_the_online_pass_and_start_last() {
        let w = world();
        let data = w.volume("data");
        w.engine
            .add_container(stopping(container("db", true, &["data"])));
        w.engine.add_container(labelled(
            stopping(container("app", true, &["data"])),
            DEPENDS_ON_LABEL,
            "db",
        ));
        w.engine.add_container(container("viewer", true, &["data"]));
        // The caller's own container carries the label too: it must never stop.
        w.engine
            .add_container(stopping(container("coffer", true, &["data"])));
        // What the database writes as it shuts down is in the snapshot, not in the first pass.
        let flushed = data.join("flushed-on-stop.txt");
        w.engine.on_stop(
            "db",
            Box::new(move || std::fs::write(&flushed, b"last state").unwrap()),
        );
        let s = w.backup(&w.opts(&["data"]), Some("id-coffer")).unwrap();
        assert_eq!(
            w.engine.stops_and_starts(),
            ["stop app", "stop db", "start db", "start app"]
        );
        let v = &s.volumes[0];
        assert_eq!(v.error, None);
        assert_eq!(v.first_pass.as_ref().map(|f| f.files_read), Some(1));
        let snap = v.snapshot.as_ref().unwrap();
        assert_eq!(
            snap.files, 2,
            "the second pass saw the file written on stop"
        );
        let names: Vec<&str> = v.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "app"], "in start order");
        assert!(v.containers.iter().all(|c| c.started));
        assert!(v.tags.contains(&"volume=data".to_string()));
        for n in ["db", "app", "viewer", "coffer"] {
            assert!(w.engine.running(n), "{n} runs after the backup");
        }
    }

    #[test]
    fn a_labelled_container_stops_only_for_the_volume_it_uses() {
        let w = world();
        w.volume("a");
        w.volume("b");
        w.engine
            .add_container(stopping(container("uses-a", true, &["a"])));
        w.engine
            .add_container(stopping(container("uses-b", true, &["b"])));
        w.engine
            .add_container(stopping(container("was-off", false, &["b"])));
        let s = w.backup(&w.opts(&["a", "b"]), None).unwrap();
        assert_eq!(
            w.engine.stops_and_starts(),
            ["stop uses-a", "start uses-a", "stop uses-b", "start uses-b"]
        );
        assert_eq!(s.failed, 0);
        assert_eq!(s.volumes[1].left_stopped, ["was-off"]);
        assert!(
            !w.engine.running("was-off"),
            "a stopped container is never started"
        );
    }

    #[test]
    fn single_pass_stops_before_the_only_read() {
        let w = world();
        w.volume("data");
        w.engine
            .add_container(stopping(container("db", true, &["data"])));
        let mut opts = w.opts(&["data"]);
        opts.single_pass = true;
        let s = w.backup(&opts, None).unwrap();
        assert!(s.volumes[0].first_pass.is_none());
        assert_eq!(w.engine.stops_and_starts(), ["stop db", "start db"]);
    }

    #[test]
    fn containers_start_again_when_the_second_pass_fails() {
        let w = world();
        let data = w.volume("data");
        w.volume("other");
        w.engine
            .add_container(stopping(container("db", true, &["data"])));
        w.engine.add_container(labelled(
            stopping(container("app", true, &["data"])),
            DEPENDS_ON_LABEL,
            "db",
        ));
        // The volume's files vanish once the containers are down: the second pass fails.
        w.engine.on_stop(
            "db",
            Box::new(move || std::fs::remove_dir_all(&data).unwrap()),
        );
        let s = w.backup(&w.opts(&["data", "other"]), None).unwrap();
        assert_eq!(
            w.engine.stops_and_starts(),
            ["stop app", "stop db", "start db", "start app"]
        );
        assert!(s.volumes[0].error.is_some(), "{:?}", s.volumes[0]);
        assert!(s.volumes[0].snapshot.is_none());
        assert_eq!(s.failed, 1);
        assert!(s.volumes[1].snapshot.is_some(), "the other volumes go on");
        assert!(w.engine.running("db") && w.engine.running("app"));
    }

    #[test]
    fn containers_already_stopped_start_again_when_a_stop_fails() {
        let w = world();
        w.volume("data");
        w.engine
            .add_container(stopping(container("db", true, &["data"])));
        w.engine.add_container(labelled(
            stopping(container("app", true, &["data"])),
            DEPENDS_ON_LABEL,
            "db",
        ));
        w.engine.fail("stop", "db");
        let s = w.backup(&w.opts(&["data"]), None).unwrap();
        // The refused stop may have half-stopped db: it is started too.
        assert_eq!(
            w.engine.stops_and_starts(),
            ["stop app", "stop db (refused)", "start db", "start app"]
        );
        let v = &s.volumes[0];
        assert!(
            v.error.as_deref().unwrap_or("").contains("stopping"),
            "{v:?}"
        );
        assert!(v.snapshot.is_none());
        assert!(w.engine.running("app"));
    }

    #[test]
    fn a_container_that_does_not_start_again_fails_its_volume() {
        let w = world();
        w.volume("data");
        w.engine
            .add_container(stopping(container("db", true, &["data"])));
        w.engine.fail("start", "db");
        let s = w.backup(&w.opts(&["data"]), None).unwrap();
        let v = &s.volumes[0];
        assert!(v.snapshot.is_some(), "the snapshot was written");
        assert!(
            v.error
                .as_deref()
                .unwrap_or("")
                .contains("starting container db again"),
            "{v:?}"
        );
        assert!(!v.containers[0].started);
        assert_eq!(s.failed, 1);
    }

    #[test]
    fn a_failed_pre_command_stops_nothing() {
        let w = world();
        w.volume("data");
        w.engine.add_container(labelled(
            stopping(container("db", true, &["data"])),
            PRE_LABELS[1],
            "dump",
        ));
        w.engine.exit_code("dump", 2);
        let s = w.backup(&w.opts(&["data"]), None).unwrap();
        assert_eq!(w.engine.log(), ["exec db: dump"]);
        assert!(s.volumes[0].error.as_deref().unwrap_or("").contains("dump"));
        assert_eq!(s.failed, 1);
    }

    #[test]
    fn sources_stop_the_users_of_their_volumes_but_never_the_caller() {
        let w = world();
        let data = w.volume("data");
        w.engine
            .add_container(stopping(container("db", true, &["data"])));
        let mut me = stopping(container("coffer", true, &["data"]));
        me.volume_mounts = vec![(data.display().to_string(), "data".into())];
        w.engine.add_container(me.clone());
        let bopts = BackupOptions {
            sources: vec![SourceSpec {
                name: "data".into(),
                path: data.clone(),
            }],
            host: "test".into(),
            ..Default::default()
        };
        let stop = SourcesStop {
            label_value: "true",
            timeout: Duration::from_secs(1),
            me: Some(&me),
        };
        let s = sources_with(
            &w.engine,
            &w.repo,
            &w.catalog,
            &bopts,
            &stop,
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(s.volumes, ["data"]);
        assert_eq!(w.engine.stops_and_starts(), ["stop db", "start db"]);
        assert!(s.first_pass.is_some());
        assert_eq!(s.containers.len(), 1);
        assert!(w.engine.running("coffer"));
    }
}
