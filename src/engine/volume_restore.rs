//! Restore a snapshot's directory into a Docker volume (or a bind-mounted host directory), in
//! place and undoable.
//!
//! The containers that use the volume stop (dependents first; never the caller's own
//! container), the volume's current content is saved as a snapshot tagged `pre-restore`,
//! the restore rewrites only what differs (each file under a temporary name, then renamed)
//! and removes what the snapshot does not have, and the containers start again on every way
//! out. Where this process cannot write the volume (the backup service mounts it read-only,
//! or the engine's volume directory is not reachable) the work runs in a helper container of
//! coffer's own image ([`crate::docker::helper`]).
//!
//! The container engine is reached only through [`ContainerEngine`], so this module is tested
//! with an in-memory engine; the caller's own container is passed in, never stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::restore::RestoreSummary;
use super::volume_job::{HelperRequest, VolumeJob, VolumeJobResult, run_volume_job};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::docker::backup::own_container_id;
use crate::docker::guard::{ContainerDowntime, StopGuard};
use crate::docker::helper::{HELPER_LABEL, HelperSpec, owner_label};
use crate::docker::label::ContainerInfo;
use crate::docker::order::start_order;
use crate::docker::restore::{HELPER_TARGET, RestoreTarget};
use crate::docker::{ContainerEngine, DockerError};
use crate::repo::Repository;

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

/// What the caller of [`restore_volume`] knows that a helper needs.
pub struct HelperAccess {
    /// The repository's location as the helper can reach it.
    pub repo: String,
    /// The catalog cache.
    pub cache_dir: Option<PathBuf>,
    /// The passphrase.
    pub password: Vec<u8>,
    /// The key the caller opened the repository with.
    pub key_id: Option<String>,
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
    engine: &dyn ContainerEngine,
    repo: &Repository,
    catalog: &Catalog,
    opts: &VolumeRestoreOptions,
    access: &HelperAccess,
    progress: &Progress,
) -> Result<VolumeRestoreSummary, EngineError> {
    let me = match own_container_id() {
        Some(id) => engine.inspect(&id)?,
        None => None,
    };
    let run = RestoreRun {
        engine,
        repo,
        catalog,
        opts,
        access,
        me: me.as_ref(),
        progress,
    };
    restore_as(&run)
}

/// Where a restore into a volume runs: the engine, the repository, and the caller's own
/// container (never stopped; a helper shares its mounts and network).
struct RestoreRun<'a> {
    engine: &'a dyn ContainerEngine,
    repo: &'a Repository,
    catalog: &'a Catalog,
    opts: &'a VolumeRestoreOptions,
    access: &'a HelperAccess,
    me: Option<&'a ContainerInfo>,
    progress: &'a Progress,
}

/// Where the target's content is, and who uses it.
struct Located {
    /// The directory to restore into when this process can write it (else a helper does).
    direct: Option<PathBuf>,
    /// The containers that mount the target.
    users: Vec<ContainerInfo>,
    /// The helper's mount of the target (`source:HELPER_TARGET`).
    bind: String,
    /// Whether the target was created.
    created: bool,
}

fn restore_as(run: &RestoreRun<'_>) -> Result<VolumeRestoreSummary, EngineError> {
    let start = Instant::now();
    let opts = run.opts;
    let target = locate(run)?;
    // The users of the volume stop (never this process's own container, nor a helper), and
    // so do the ones an earlier restore stopped and could not start again (it was killed):
    // they start with the others at the end.
    let record = run
        .access
        .cache_dir
        .as_ref()
        .map(|d| d.join(STOPPED_RECORD));
    let recorded = record.as_deref().map(read_record).unwrap_or_default();
    let users = users_to_stop(target.users, &recorded, run.me);
    if let Some(r) = &record
        && !opts.job.dry_run
    {
        let mut ids = recorded.clone();
        ids.extend(users.iter().map(|c| c.id.clone()));
        write_record(r, &ids);
    }
    let order = start_order(&users);
    let mut guard = StopGuard::new(run.engine, Duration::from_secs(opts.stop_timeout_secs));
    let work = (|| -> Result<(VolumeJobResult, bool), EngineError> {
        if !opts.job.dry_run {
            for i in order.stop() {
                guard.stop(&users[i])?;
            }
        }
        match &target.direct {
            Some(dir) => Ok((
                run_volume_job(run.repo, run.catalog, dir, &opts.job, run.progress)?,
                false,
            )),
            None => Ok((
                run_in_helper(run.engine, run.me, &target.bind, opts, run.access)?,
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
        created: target.created,
        path: opts.path.clone(),
        helper,
        safety_snapshot: result.safety_snapshot,
        restore: result.restore,
        containers,
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

/// Find (or create) the target, whether this process can write it, and who uses it.
fn locate(run: &RestoreRun<'_>) -> Result<Located, EngineError> {
    let opts = run.opts;
    let mut created = false;
    let (direct, users, bind) = match &opts.target {
        RestoreTarget::Volume(name) => {
            let vol = match run.engine.inspect_volume(name)? {
                Some(v) => v,
                None if opts.create => {
                    created = true;
                    run.engine.create_volume(name)?
                }
                None => {
                    return Err(EngineError::Usage(format!(
                        "Docker volume {name:?} does not exist; add --create to create it"
                    )));
                }
            };
            let direct = vol.data_path(&opts.mount_dir).ok().filter(|p| writable(p));
            (
                direct,
                run.engine.containers_using(name)?,
                format!("{name}:{HELPER_TARGET}"),
            )
        }
        RestoreTarget::Bind(path) => {
            let p = PathBuf::from(path);
            if run.me.is_none() && !p.exists() && opts.create && !opts.job.dry_run {
                std::fs::create_dir_all(&p).map_err(|e| EngineError::Io {
                    path: path.clone(),
                    source: e,
                })?;
                created = true;
            }
            let direct = (run.me.is_none() && p.is_dir() && writable(&p)).then_some(p);
            (direct, Vec::new(), format!("{path}:{HELPER_TARGET}"))
        }
    };
    if direct.is_none() && run.me.is_none() && run.access.image.is_none() {
        return Err(EngineError::Usage(format!(
            "cannot write into {}: run coffer as root on the Docker host, or from its \
             container (`docker exec <backup container> restore ...`), or name an image of \
             coffer with COFFER_HELPER_IMAGE",
            opts.target.describe()
        )));
    }
    Ok(Located {
        direct,
        users,
        bind,
        created,
    })
}

/// The users that stop for the restore: the running ones and the ones an earlier restore
/// stopped (`recorded`), never this process's own container nor a helper.
fn users_to_stop(
    users: Vec<ContainerInfo>,
    recorded: &[String],
    me: Option<&ContainerInfo>,
) -> Vec<ContainerInfo> {
    users
        .into_iter()
        .filter(|c| c.running || recorded.contains(&c.id))
        .filter(|c| me.is_none_or(|m| m.id != c.id))
        .filter(|c| !c.labels.contains_key(HELPER_LABEL))
        .collect()
}

/// Run the job in a helper container and return what it reports.
fn run_in_helper(
    engine: &dyn ContainerEngine,
    me: Option<&ContainerInfo>,
    bind: &str,
    opts: &VolumeRestoreOptions,
    access: &HelperAccess,
) -> Result<VolumeJobResult, EngineError> {
    // Leftovers of a caller that died are removed first.
    for (id, name, owner) in engine.leftover_helpers()? {
        tracing::info!("removing leftover helper container {name} (started by {owner})");
        engine.remove_container(&id)?;
    }
    let request = HelperRequest {
        repo: access.repo.clone(),
        cache_dir: access.cache_dir.clone(),
        password: access.password.clone(),
        key_id: access.key_id.clone(),
        job: opts.job.clone(),
    };
    let mut stdin = serde_json::to_vec(&request)
        .map_err(|e| EngineError::Internal(format!("encoding the helper's request: {e}")))?;
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
    let out = engine.run_helper(&spec, &mut |chunk| {
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
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::docker::fake::{FakeEngine, container, labelled};
    use crate::docker::label::DEPENDS_ON_LABEL;
    use crate::engine::backup::{BackupOptions, SourceSpec, backup};
    use crate::repo::tests::fast_opts;
    use crate::storage::OpendalStore;

    /// A repository in memory with one snapshot of a directory `src` (`a.txt`, `sub/b.txt`),
    /// its catalog, and a volume `data` whose files are in a temporary directory.
    struct World {
        repo: Repository,
        catalog: Catalog,
        dir: tempfile::TempDir,
        engine: FakeEngine,
        snapshot: String,
        volume: PathBuf,
    }

    fn world() -> World {
        let store = Arc::new(OpendalStore::memory().unwrap());
        let repo = Repository::init(store, b"pw", fast_opts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"restored a").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"restored b").unwrap();
        let bopts = BackupOptions {
            sources: vec![SourceSpec {
                name: "src".into(),
                path: src,
            }],
            host: "test".into(),
            ..Default::default()
        };
        let snapshot = backup(&repo, &catalog, &bopts, &Progress::default())
            .unwrap()
            .snapshot_id
            .expect("a snapshot")
            .to_hex();
        let volume = dir.path().join("volumes/data");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(volume.join("old.txt"), b"before the restore").unwrap();
        let engine = FakeEngine::default();
        engine.add_volume("data", volume.clone());
        World {
            repo,
            catalog,
            dir,
            engine,
            snapshot,
            volume,
        }
    }

    impl World {
        fn opts(&self, target: RestoreTarget) -> VolumeRestoreOptions {
            let job = VolumeJob {
                snapshot: self.snapshot.clone(),
                path: "src".into(),
                target_name: "data".into(),
                safety_snapshot: true,
                host: "test".into(),
                ..Default::default()
            };
            VolumeRestoreOptions {
                snapshot: self.snapshot.clone(),
                path: "src".into(),
                target,
                create: false,
                mount_dir: self.dir.path().join("no-mounts"),
                stop_timeout_secs: 1,
                job,
            }
        }

        fn access(&self) -> HelperAccess {
            HelperAccess {
                repo: "memory".into(),
                cache_dir: Some(self.dir.path().to_path_buf()),
                password: b"pw".to_vec(),
                key_id: None,
                image: None,
                binds: Vec::new(),
                env: Vec::new(),
            }
        }

        fn restore(
            &self,
            opts: &VolumeRestoreOptions,
            me: Option<&ContainerInfo>,
        ) -> Result<VolumeRestoreSummary, EngineError> {
            let access = self.access();
            let run = RestoreRun {
                engine: &self.engine,
                repo: &self.repo,
                catalog: &self.catalog,
                opts,
                access: &access,
                me,
                progress: &Progress::default(),
            };
            restore_as(&run)
        }

        /// The containers a restore left recorded as stopped.
        fn recorded(&self) -> Vec<String> {
            read_record(&self.dir.path().join(STOPPED_RECORD))
        }
    }

    /// `db`, `app` (depends on db), a stopped container, a helper, and the caller, all on
    /// `data`.
    fn users(w: &World) -> ContainerInfo {
        w.engine.add_container(container("db", true, &["data"]));
        w.engine.add_container(labelled(
            container("app", true, &["data"]),
            DEPENDS_ON_LABEL,
            "db",
        ));
        w.engine.add_container(container("off", false, &["data"]));
        w.engine.add_container(labelled(
            container("helper", true, &["data"]),
            HELPER_LABEL,
            "restore",
        ));
        let me = container("coffer", true, &["data"]);
        w.engine.add_container(me.clone());
        me
    }

    #[test]
    fn users_stop_dependents_first_and_start_again_after_the_restore() {
        let w = world();
        let me = users(&w);
        let s = w
            .restore(&w.opts(RestoreTarget::Volume("data".into())), Some(&me))
            .unwrap();
        assert_eq!(
            w.engine.stops_and_starts(),
            ["stop app", "stop db", "start db", "start app"]
        );
        assert!(!s.helper);
        assert!(s.safety_snapshot.is_some(), "the old content was saved");
        assert_eq!(
            std::fs::read(w.volume.join("sub/b.txt")).unwrap(),
            b"restored b"
        );
        assert!(
            !w.volume.join("old.txt").exists(),
            "what the snapshot lacks goes"
        );
        assert!(
            !w.engine.running("off"),
            "a stopped container is never started"
        );
        assert!(w.engine.running("app") && w.engine.running("db"));
        assert!(w.recorded().is_empty());
    }

    #[test]
    fn users_start_again_when_the_restore_fails() {
        let w = world();
        let me = users(&w);
        let mut opts = w.opts(RestoreTarget::Volume("data".into()));
        opts.job.snapshot = "0".repeat(64);
        opts.job.safety_snapshot = false;
        let e = w.restore(&opts, Some(&me)).unwrap_err();
        assert!(
            matches!(e, EngineError::Repo(_) | EngineError::Catalog(_)),
            "{e}"
        );
        assert_eq!(
            w.engine.stops_and_starts(),
            ["stop app", "stop db", "start db", "start app"]
        );
        assert!(w.engine.running("app") && w.engine.running("db"));
        assert_eq!(
            std::fs::read(w.volume.join("old.txt")).unwrap(),
            b"before the restore"
        );
        assert!(w.recorded().is_empty());
    }

    #[test]
    fn users_start_again_when_the_helper_fails() {
        let w = world();
        let me = users(&w);
        // The volume's files are not reachable here: a helper does the work.
        w.engine.add_volume("remote", w.dir.path().join("not-here"));
        w.engine.add_container(container("web", true, &["remote"]));
        w.engine.helper_reports(1, b"");
        let e = w
            .restore(&w.opts(RestoreTarget::Volume("remote".into())), Some(&me))
            .unwrap_err();
        assert!(e.to_string().contains("helper container failed"), "{e}");
        assert_eq!(w.engine.stops_and_starts(), ["stop web", "start web"]);
        let spec = &w.engine.helper_specs()[0];
        assert_eq!(spec.binds, [format!("remote:{HELPER_TARGET}")]);
        assert_eq!(spec.volumes_from, ["id-coffer"]);
        assert!(w.engine.running("web"));
    }

    #[test]
    fn a_helper_reports_the_restore() {
        let w = world();
        let me = users(&w);
        w.engine.add_volume("remote", w.dir.path().join("not-here"));
        let report = VolumeJobResult {
            safety_snapshot: Some("abc".into()),
            ..Default::default()
        };
        let line = serde_json::to_vec(&report).unwrap();
        w.engine.helper_reports(0, &line);
        let s = w
            .restore(&w.opts(RestoreTarget::Volume("remote".into())), Some(&me))
            .unwrap();
        assert!(s.helper);
        assert_eq!(s.safety_snapshot.as_deref(), Some("abc"));
    }

    #[test]
    fn containers_a_killed_restore_left_stopped_start_with_the_others() {
        let w = world();
        let me = users(&w);
        write_record(&w.dir.path().join(STOPPED_RECORD), &["id-off".to_string()]);
        w.restore(&w.opts(RestoreTarget::Volume("data".into())), Some(&me))
            .unwrap();
        assert!(w.engine.running("off"));
        assert!(w.recorded().is_empty());
    }

    #[test]
    fn a_container_that_does_not_start_again_stays_recorded() {
        let w = world();
        let me = users(&w);
        w.engine.fail("start", "db");
        w.restore(&w.opts(RestoreTarget::Volume("data".into())), Some(&me))
            .unwrap();
        assert_eq!(w.recorded(), ["id-db"]);
    }

    #[test]
    fn a_missing_volume_is_created_only_when_asked() {
        let w = world();
        let opts = w.opts(RestoreTarget::Volume("new".into()));
        let e = w.restore(&opts, None).unwrap_err();
        assert!(e.to_string().contains("--create"), "{e}");
        let mut opts = opts;
        opts.create = true;
        // Created, but its files are not reachable here and there is no image for a helper.
        let e = w.restore(&opts, None).unwrap_err();
        assert!(e.to_string().contains("COFFER_HELPER_IMAGE"), "{e}");
        assert_eq!(w.engine.log(), ["create volume new"]);
    }

    #[test]
    fn helper_owners_name_this_host_as_the_repository_does() {
        assert_eq!(crate::docker::helper::host_name(), crate::repo::hostname());
    }
}
