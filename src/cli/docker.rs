//! `coffer backup --docker ...` and `coffer restore ... --to-volume NAME`: arguments, the call
//! into [`crate::docker`], and the report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::args::{BackupArgs, Global, RestoreArgs};
use super::backup::open_for_backup;
use super::commands::open;
use super::output::{ProgressDisplay, bytes};
use super::{exit, open_options};
use crate::docker::{DockerClient, VolumeSelection};
use crate::engine::Progress;
use crate::engine::session::{Location, Session, SnapshotEntry};
use crate::engine::volume_backup::{DockerBackupOptions, backup_volumes};
use crate::engine::volume_restore::{VolumeRestoreOptions, restore_volume};
use crate::runtime::IoRuntime;
use std::io::Read as _;

/// Docker options of `backup`.
#[derive(Args, Debug, Clone)]
pub struct DockerBackupArgs {
    /// Back up Docker volumes, each into its own snapshot (select them with the options below).
    #[arg(long, conflicts_with = "sources")]
    pub docker: bool,
    /// A volume by name (repeatable).
    #[arg(long = "volume", value_name = "NAME", requires = "docker")]
    pub volumes: Vec<String>,
    /// Every volume (narrowed by --volume-label / --compose-project when given).
    #[arg(long, requires = "docker")]
    pub all_volumes: bool,
    /// Volumes with this label: KEY or KEY=VALUE (repeatable; all must match).
    #[arg(long = "volume-label", value_name = "KEY[=VALUE]", requires = "docker")]
    pub volume_labels: Vec<String>,
    /// Volumes of this compose project.
    #[arg(long, value_name = "NAME", requires = "docker")]
    pub compose_project: Option<String>,
    /// Stop running containers whose `docker-volume-backup.stop-during-backup` or `coffer.stop`
    /// label has this value.
    #[arg(
        long,
        value_name = "VALUE",
        env = "BACKUP_STOP_DURING_BACKUP_LABEL",
        default_value = "true"
    )]
    pub stop_label_value: String,
    /// Seconds a stopping container gets before it is killed.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=500))]
    pub stop_timeout: u64,
    /// Read each volume once, with its containers stopped, instead of a first pass while they
    /// run and a short second pass while they are stopped.
    #[arg(long, requires = "docker")]
    pub single_pass: bool,
    /// Docker engine address (default: DOCKER_HOST, else unix:///var/run/docker.sock).
    #[arg(long, value_name = "ADDR")]
    pub docker_host: Option<String>,
    /// Where volumes are mounted when coffer runs in a container (the old `/backup/<name>`).
    #[arg(
        long,
        value_name = "DIR",
        env = "COFFER_DOCKER_VOLUME_DIR",
        default_value = crate::docker::volume::DEFAULT_MOUNT_DIR
    )]
    pub volume_dir: PathBuf,
}

/// Docker options of `restore`.
#[derive(Args, Debug, Clone)]
pub struct DockerRestoreArgs {
    /// Restore into this Docker volume, in place: its containers stop for the restore and
    /// start again, and its current content is saved first as a `pre-restore` snapshot.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["target", "all_volumes"])]
    pub to_volume: Option<String>,
    /// Restore every source of the snapshot into the volume (or bind-mounted directory) it
    /// was backed up from, as recorded at backup time.
    #[arg(long, conflicts_with = "target")]
    pub all_volumes: bool,
    /// Create a missing volume (or bind-mounted directory).
    #[arg(long)]
    pub create: bool,
    /// Do not save the volume's current content before replacing it.
    #[arg(long)]
    pub no_safety_snapshot: bool,
    /// Docker engine address (default: DOCKER_HOST, else unix:///var/run/docker.sock).
    #[arg(long, value_name = "ADDR")]
    pub docker_host: Option<String>,
    /// Where volumes are mounted when coffer runs in a container (the old `/backup/<name>`).
    #[arg(
        long,
        value_name = "DIR",
        env = "COFFER_DOCKER_VOLUME_DIR",
        default_value = crate::docker::volume::DEFAULT_MOUNT_DIR
    )]
    pub volume_dir: PathBuf,
    /// Seconds a stopping container gets before it is killed.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=500))]
    pub stop_timeout: u64,
    /// Image of coffer for the helper container when coffer does not run in a container of
    /// its own image and cannot write the volume itself.
    #[arg(long, value_name = "IMAGE", env = "COFFER_HELPER_IMAGE")]
    pub helper_image: Option<String>,
}

fn connect(host: Option<&str>, io: &IoRuntime) -> anyhow::Result<DockerClient> {
    Ok(DockerClient::connect(host, io)?)
}

/// `backup --docker`.
pub fn backup(g: &Global, a: &BackupArgs) -> anyhow::Result<u8> {
    let d = &a.docker;
    if a.parent.is_some() {
        anyhow::bail!("--parent does not apply to --docker (each volume has its own parent)");
    }
    let selection = VolumeSelection {
        names: d.volumes.clone(),
        all: d.all_volumes,
        labels: d.volume_labels.clone(),
        compose_project: d.compose_project.clone(),
    };
    if selection.is_empty() {
        anyhow::bail!(
            "say which volumes: --volume NAME, --all-volumes, --volume-label KEY=VALUE or --compose-project NAME"
        );
    }
    // The engine first: a clear error before any passphrase is asked for.
    let client = connect(d.docker_host.as_deref(), &g.io)?;
    let mut open_opts = open_options(g);
    open_opts.pack_uploads = a.connections.map(Into::into);
    let Session { repo, catalog } = open_for_backup(g, &open_opts)?;
    let opts = DockerBackupOptions {
        selection,
        stop_label_value: d.stop_label_value.clone(),
        stop_timeout_secs: d.stop_timeout,
        mount_dir: d.volume_dir.clone(),
        single_pass: d.single_pass,
        tags: a.tags.clone(),
        host: a
            .host
            .clone()
            .unwrap_or_else(crate::engine::session::hostname),
        excludes: a.excludes.clone(),
        exclude_regexes: Vec::new(),
        force: a.force,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "backup");
    let s = backup_volumes(&client, &repo, &catalog, &opts, &progress)
        .with_context(|| format!("Docker backup into {}", repo.store().describe()))?;
    drop(display);
    let warnings: usize = s
        .volumes
        .iter()
        .filter_map(|v| v.snapshot.as_ref())
        .map(|b| b.warnings.len())
        .sum();
    if g.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &s)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    } else {
        for v in &s.volumes {
            report_volume(g, v);
        }
        if !g.quiet {
            println!(
                "{} volumes backed up, {} failed, in {:.1}s; longest container downtime {:.2}s",
                s.volumes.len() - s.failed,
                s.failed,
                s.duration_secs,
                s.max_downtime_secs
            );
        }
    }
    if s.failed > 0 {
        if !g.json {
            eprintln!("error: the backup of {} volumes failed", s.failed);
        }
        Ok(exit::ERROR)
    } else if warnings > 0 {
        Ok(exit::PARTIAL)
    } else {
        Ok(exit::OK)
    }
}

fn report_volume(g: &Global, v: &crate::engine::volume_backup::VolumeBackup) {
    if let Some(e) = &v.error {
        eprintln!("error: volume {}: {e}", v.volume);
    }
    if let Some(b) = &v.snapshot {
        for w in &b.warnings {
            eprintln!("warning: {}: {}: {}", v.volume, w.path, w.message);
        }
    }
    if g.quiet {
        return;
    }
    match &v.snapshot {
        Some(b) => println!(
            "volume {}: snapshot {} ({} files, {}; read {}) tags {}",
            v.volume,
            b.snapshot_id.map(|i| i.short()).unwrap_or_default(),
            b.files,
            bytes(b.total_bytes),
            bytes(b.bytes_read),
            v.tags.join(",")
        ),
        None => println!("volume {}: no snapshot", v.volume),
    }
    if let Some(p) = &v.first_pass {
        println!(
            "  first pass while running: read {} in {:.2}s",
            bytes(p.bytes_read),
            p.duration_secs
        );
    }
    for c in &v.containers {
        println!(
            "  container {}: down {:.2}s{}",
            c.name,
            c.downtime_secs,
            if c.started { "" } else { ", NOT STARTED AGAIN" }
        );
    }
    for n in &v.left_stopped {
        println!("  container {n}: was not running, left stopped");
    }
    if !v.dependency_cycle.is_empty() {
        println!(
            "  warning: dependency cycle among {}; stopped in name order",
            v.dependency_cycle.join(", ")
        );
    }
    for h in &v.hooks {
        println!(
            "  {} command in {}: {:?} -> {}",
            h.phase,
            h.container,
            h.command,
            h.exit_code
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "not run".into())
        );
    }
}

/// Environment a helper container may need: how to reach the repository and the catalog,
/// and this run's bandwidth limits (`--limit-upload`, `--limit-download`), never the
/// passphrase (it goes to the helper's stdin).
fn helper_env(g: &Global) -> Vec<String> {
    const KEEP: [&str; 6] = [
        "AWS_",
        "COFFER_S3_",
        "SSL_CERT_",
        "XDG_CACHE_HOME",
        "HOME",
        "TZ",
    ];
    let mut env: Vec<String> = std::env::vars()
        .filter(|(k, _)| KEEP.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let limits = [
        ("COFFER_LIMIT_UPLOAD", g.limit_upload),
        ("COFFER_LIMIT_DOWNLOAD", g.limit_download),
    ];
    for (k, v) in limits {
        if let Some(v) = v {
            env.push(format!("{k}={v}"));
        }
    }
    env
}

/// The default name of the snapshot directory restored into `volume`: the snapshot's only
/// source, else the source named like the volume, or like it without its compose project.
fn default_path(names: &[&str], volume: &str) -> Option<String> {
    if let [only] = names {
        return Some(only.to_string());
    }
    let short = volume.split_once('_').map(|(_, s)| s);
    names
        .iter()
        .find(|&&n| n == volume || Some(n) == short)
        .map(|n| n.to_string())
}

/// `restore --to-volume NAME` and `restore --all-volumes`.
pub fn restore(g: &Global, a: &RestoreArgs) -> anyhow::Result<u8> {
    use crate::docker::RestoreTarget;
    use crate::engine::volume_job::VolumeJob;
    let d = &a.docker;
    if !a.includes.is_empty() || !a.excludes.is_empty() || a.delete {
        anyhow::bail!(
            "--include, --exclude and --delete apply to --target: a volume restore always \
             makes the volume's content equal to the snapshot's directory"
        );
    }
    let client = connect(d.docker_host.as_deref(), &g.io)?;
    let o = open(g)?;
    let snap = o.resolve_snapshot_in(a.snapshot(), &a.latest.filter())?;
    let plan = plan(a, &snap)?;
    let access = helper_access(g, &o, d.helper_image.clone())?;
    let host = crate::docker::backup::own_container_name(&client)
        .unwrap_or_else(crate::engine::session::hostname);
    let mut code = exit::OK;
    for (path, target) in plan {
        let opts = VolumeRestoreOptions {
            snapshot: snap.id.to_hex(),
            path: path.clone(),
            target: target.clone(),
            create: d.create,
            mount_dir: d.volume_dir.clone(),
            stop_timeout_secs: d.stop_timeout,
            job: VolumeJob {
                snapshot: snap.id.to_hex(),
                path: path.clone(),
                target_name: match &target {
                    RestoreTarget::Volume(v) => v.clone(),
                    RestoreTarget::Bind(p) => p.clone(),
                },
                safety_snapshot: !d.no_safety_snapshot,
                host: host.clone(),
                overwrite: a.overwrite,
                verify: a.verify,
                dry_run: a.dry_run,
            },
        };
        let progress = Arc::new(Progress::default());
        let display = ProgressDisplay::start(g, progress.clone(), "restore");
        let s = restore_volume(&client, &o.repo, &o.catalog, &opts, &access, &progress)
            .with_context(|| format!("restore {path}/ into {}", target.describe()))?;
        drop(display);
        if !s.restore.errors.is_empty() {
            code = exit::ERROR;
        }
        report_volume_restore(g, &s, &snap.id.to_hex())?;
    }
    Ok(code)
}

/// Which directory of the snapshot goes where: `--to-volume` (with `--path`, else the
/// directory [`default_path`] picks), or every directory to the volume or bind mount it was
/// backed up from (`--all-volumes`, narrowed by `--path`).
fn plan(
    a: &RestoreArgs,
    snap: &SnapshotEntry,
) -> anyhow::Result<Vec<(String, crate::docker::RestoreTarget)>> {
    use crate::docker::RestoreTarget;
    let d = &a.docker;
    let sources = &snap.snapshot.sources;
    let source_names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let names = || {
        sources
            .iter()
            .map(|s| format!("{}/", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // (snapshot directory, target)
    let mut plan: Vec<(String, RestoreTarget)> = Vec::new();
    if let Some(volume) = &d.to_volume {
        if a.paths.len() > 1 {
            anyhow::bail!("--to-volume restores one directory: give at most one --path");
        }
        let path = match a.paths.first() {
            Some(p) => p.trim_matches('/').to_string(),
            None => default_path(&source_names, volume).with_context(|| {
                format!(
                    "say which directory of snapshot {} goes into volume {volume}: --path NAME/ \
                     (the snapshot has {})",
                    &snap.id.to_hex()[..8],
                    names()
                )
            })?,
        };
        plan.push((path, RestoreTarget::Volume(volume.clone())));
    } else {
        let recorded = crate::docker::backup::recorded_targets(&snap.snapshot);
        let mut missing = Vec::new();
        for s in sources {
            match recorded.iter().find(|(n, _)| *n == s.name) {
                Some((_, t)) => plan.push((s.name.clone(), t.clone())),
                None => missing.push(format!("{}/", s.name)),
            }
        }
        if !a.paths.is_empty() {
            let wanted: Vec<String> = a
                .paths
                .iter()
                .map(|p| p.trim_matches('/').to_string())
                .collect();
            plan.retain(|(p, _)| wanted.contains(p));
            missing.retain(|m| wanted.contains(&m.trim_end_matches('/').to_string()));
        }
        if !missing.is_empty() {
            anyhow::bail!(
                "snapshot {} does not record which volume {} came from (only snapshots taken \
                 by the daemon or `backup --docker` do); restore them one by one with \
                 --to-volume NAME --path DIR/",
                &snap.id.to_hex()[..8],
                missing.join(", ")
            );
        }
        if plan.is_empty() {
            anyhow::bail!("nothing to restore: the snapshot has {}", names());
        }
    }
    Ok(plan)
}

/// What a helper container needs to open the repository: where it is (bind-mounted when
/// local), the cache directory, the passphrase and the key that opened it here.
fn helper_access(
    g: &Global,
    o: &Session,
    image: Option<String>,
) -> anyhow::Result<crate::engine::volume_restore::HelperAccess> {
    use crate::engine::volume_restore::HelperAccess;
    let (loc, _) = super::commands::location(g)?;
    let repo_str = match (&g.repo, &loc) {
        (Some(r), Location::Local(p)) if !r.contains("://") => std::fs::canonicalize(p)
            .unwrap_or(p.clone())
            .display()
            .to_string(),
        (Some(r), _) => r.clone(),
        (None, Location::Local(p)) => p.display().to_string(),
        (None, _) => anyhow::bail!("no repository location"),
    };
    let cache_dir = g.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
    let mut binds = vec![format!("{}:{}", cache_dir.display(), cache_dir.display())];
    if let Location::Local(p) = &loc {
        let p = std::fs::canonicalize(p).unwrap_or(p.clone());
        binds.push(format!("{}:{}", p.display(), p.display()));
    }
    let access = HelperAccess {
        repo: repo_str,
        cache_dir: Some(cache_dir),
        password: super::password::passphrase(g, false)?.to_vec(),
        key_id: Some(o.repo.key_id().to_hex()),
        image,
        binds,
        env: helper_env(g),
    };
    Ok(access)
}

/// Print what a volume restore did (or its JSON line).
fn report_volume_restore(
    g: &Global,
    s: &crate::engine::volume_restore::VolumeRestoreSummary,
    snapshot: &str,
) -> anyhow::Result<()> {
    if g.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, s)?;
        std::io::Write::write_all(&mut out, b"\n")?;
        return Ok(());
    }
    for e in &s.restore.errors {
        eprintln!("error: {}: {}", e.path, e.message);
    }
    for c in &s.restore.changes {
        println!("would {} {}", c.action, c.path);
    }
    if g.quiet {
        return Ok(());
    }
    let r = &s.restore;
    println!(
        "{} {}/ of snapshot {} into {}{}: {} files written, {} unchanged, {} deleted, {} in {:.1}s{}",
        if r.dry_run {
            "would restore"
        } else {
            "restored"
        },
        s.path,
        &snapshot[..8],
        s.target,
        if s.created { " (created)" } else { "" },
        r.files_written,
        r.files_unchanged,
        r.deleted,
        bytes(r.bytes),
        s.duration_secs,
        if s.helper {
            " (through a helper container)"
        } else {
            ""
        },
    );
    if let Some(id) = &s.safety_snapshot {
        println!(
            "  the content before was saved as snapshot {} (tag pre-restore); to undo: \
             coffer restore --snapshot {} --path {}/ --to-volume ...",
            &id[..8.min(id.len())],
            &id[..8.min(id.len())],
            s.path
        );
    }
    for c in &s.containers {
        println!(
            "  container {}: down {:.2}s{}",
            c.name,
            c.downtime_secs,
            if c.started {
                ""
            } else {
                " (NOT started again)"
            }
        );
    }
    Ok(())
}

/// Name the helper containers a killed restore left behind (when a Docker engine answers).
pub fn report_leftover_helpers(io: &IoRuntime) {
    let configured = std::env::var_os("DOCKER_HOST").is_some_and(|h| !h.is_empty());
    if !configured && !std::path::Path::new("/var/run/docker.sock").exists() {
        return;
    }
    let Ok(client) = DockerClient::connect(None, io) else {
        return;
    };
    if let Ok(list) = client.leftover_helpers() {
        for (_, name, owner) in list {
            eprintln!(
                "warning: helper container {name} was left by a restore that did not finish \
                 ({owner}); the next restore removes it, or: docker rm -f {name}"
            );
        }
    }
}

/// `coffer volume-helper`: the helper container's side of [`restore`]. Reads its job from
/// stdin, exits when stdin closes (the caller is gone), prints the result as JSON.
pub fn volume_helper(g: &Global) -> anyhow::Result<u8> {
    use crate::docker::restore::HELPER_TARGET;
    use crate::engine::volume_job::{HelperRequest, run_volume_job};
    use std::io::BufRead;
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    (&mut stdin)
        .take(1 << 20)
        .read_line(&mut line)
        .context("reading the job from stdin")?;
    let req: HelperRequest = serde_json::from_str(&line)
        .context("the job on stdin is not valid (this command is run by `restore --to-volume`)")?;
    drop(stdin);
    // The lifeline: the caller holds stdin open while it waits; EOF means it is gone.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        eprintln!("the restore's caller is gone: stopping (the next run finishes the job)");
        crate::engine::session::release_all_locks();
        std::process::exit(exit::INTERRUPTED.into());
    });
    let mut opts = open_options(g);
    opts.key_id = req.key_id.clone();
    if let Some(dir) = &req.cache_dir {
        opts.cache_dir = dir.clone();
    }
    let loc = Location::parse(&req.repo)?;
    let Session { repo, catalog } =
        Session::open(&loc, &mut || Ok(req.password.clone().into()), &opts)?;
    let progress = Arc::new(Progress::default());
    let result = run_volume_job(
        &repo,
        &catalog,
        std::path::Path::new(HELPER_TARGET),
        &req.job,
        &progress,
    )?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &result)?;
    std::io::Write::write_all(&mut out, b"\n")?;
    Ok(if result.restore.errors.is_empty() {
        exit::OK
    } else {
        exit::ERROR
    })
}
