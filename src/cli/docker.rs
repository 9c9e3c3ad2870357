//! `coffer backup --docker ...` and `coffer restore ... --to-volume NAME`: arguments, the call
//! into [`crate::docker`], and the report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::args::{BackupArgs, Global, RestoreArgs};
use super::commands::{open, open_for_backup};
use super::output::{ProgressDisplay, bytes};
use super::{exit, open_catalog};
use crate::docker::{
    DockerBackupOptions, DockerClient, VolumeRestoreOptions, VolumeSelection, backup_volumes,
    restore_volume,
};
use crate::engine::Progress;

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
    /// Restore into this Docker volume (its running containers stop for the swap).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["target", "overwrite"])]
    pub to_volume: Option<String>,
    /// Create the volume when it does not exist.
    #[arg(long, requires = "to_volume")]
    pub create: bool,
    /// Docker engine address (default: DOCKER_HOST, else unix:///var/run/docker.sock).
    #[arg(long, value_name = "ADDR", requires = "to_volume")]
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
}

fn connect(host: Option<&str>) -> anyhow::Result<DockerClient> {
    Ok(DockerClient::connect(host)?)
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
    let client = connect(d.docker_host.as_deref())?;
    let repo = open_for_backup(g)?;
    if let Some(n) = a.connections {
        repo.set_pack_uploads(n.into());
    }
    let catalog = open_catalog(g, &repo)?;
    let opts = DockerBackupOptions {
        selection,
        stop_label_value: d.stop_label_value.clone(),
        stop_timeout_secs: d.stop_timeout,
        mount_dir: d.volume_dir.clone(),
        single_pass: d.single_pass,
        tags: a.tags.clone(),
        host: a.host.clone().unwrap_or_else(crate::repo::hostname),
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

fn report_volume(g: &Global, v: &crate::docker::VolumeBackup) {
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
            b.snapshot_id.get(..8).unwrap_or(&b.snapshot_id),
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

/// `restore --to-volume`.
pub fn restore(g: &Global, a: &RestoreArgs) -> anyhow::Result<u8> {
    let Some(volume) = a.docker.to_volume.clone() else {
        anyhow::bail!("--to-volume is missing");
    };
    if a.paths.len() > 1 {
        anyhow::bail!("--to-volume restores one directory: give at most one --path");
    }
    let client = connect(a.docker.docker_host.as_deref())?;
    let o = open(g)?;
    let opts = VolumeRestoreOptions {
        snapshot: a.snapshot.clone(),
        path: a.paths.first().cloned(),
        volume,
        create: a.docker.create,
        mount_dir: a.docker.volume_dir.clone(),
        stop_timeout_secs: a.docker.stop_timeout,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "restore");
    let s = restore_volume(&client, &o.repo, &o.catalog, &opts, &progress)
        .with_context(|| format!("restore into volume {}", opts.volume))?;
    drop(display);
    if g.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &s)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    } else if !g.quiet {
        println!(
            "restored {} of snapshot {} into volume {}{}: {} files, {} in {:.1}s",
            s.path,
            s.restore
                .snapshot_id
                .get(..8)
                .unwrap_or(&s.restore.snapshot_id),
            s.volume,
            if s.created { " (created)" } else { "" },
            s.restore.files,
            bytes(s.restore.bytes),
            s.duration_secs
        );
        for c in &s.containers {
            println!("  container {}: down {:.2}s", c.name, c.downtime_secs);
        }
    }
    Ok(exit::OK)
}
