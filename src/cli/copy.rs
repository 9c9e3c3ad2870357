//! `coffer copy --from-repo SOURCE [ID...]`: opening the source repository with its own
//! passphrase, and printing what the engine copied.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::args::Global;
use super::commands::{print_json, say};
use super::output::{ProgressDisplay, bytes, time_ns};
use super::{exit, open_options, password};
use crate::engine::Progress;
use crate::engine::copy::{CopyOptions, CopySummary, copy};
use crate::engine::session::{Session, open_at};

/// `copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy: ids, unique prefixes, or `latest`. Default: every snapshot (of
    /// `--host` and `--tag`).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// The repository to copy from (a path or `s3://BUCKET/PREFIX?...`).
    #[arg(long, value_name = "REPO", env = "COFFER_FROM_REPO")]
    pub from_repo: String,
    /// File with the passphrase of the --from-repo repository (default: the destination's).
    #[arg(long, value_name = "FILE", env = "COFFER_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Only snapshots of this host (with ids given: `latest` is the newest of this host).
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all of them; with ids given: for `latest`).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Read and map everything, store nothing: say what would be copied and added.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `coffer copy`.
pub fn run(g: &Global, a: &CopyArgs) -> anyhow::Result<u8> {
    let target_location = g
        .repo
        .clone()
        .unwrap_or_else(|| super::default_repo_path().display().to_string());
    let pw = password::passphrase(g, false)?;
    let opts = open_options(g);
    let target = open_at(&target_location, &pw, &opts)
        .context("opening the destination repository (--repo)")?;
    let source_pw = match &a.from_password_file {
        Some(f) => super::sync::read_password_file(f)?,
        None => pw.clone(),
    };
    // `--key-id` names a key of the destination (the repository of `--repo`).
    let source = open_at(&a.from_repo, &source_pw, &opts.any_key())
        .context("opening the source repository (--from-repo)")?;
    let source = Session::with_repository(source, &opts)?;
    let target = Session::with_repository(target, &opts)?;
    let copy_opts = CopyOptions {
        snapshots: a.ids.clone(),
        host: a.host.clone(),
        tags: a.tag.clone(),
        dry_run: a.dry_run,
        cache_dir: Some(opts.cache_dir.clone()),
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "copy");
    let s = copy(
        &source.repo,
        &source.catalog,
        &target.repo,
        &target.catalog,
        &copy_opts,
        &progress,
    )?;
    drop(display);
    if g.json {
        print_json(&s)?;
    } else {
        report(g, &s);
    }
    Ok(exit::OK)
}

/// One line per snapshot, then the figures.
fn report(g: &Global, s: &CopySummary) {
    for c in &s.snapshots {
        let what = format!(
            "snapshot {} ({} UTC, {})",
            c.source_id.short(),
            time_ns(c.time_ns),
            c.host
        );
        let line = match (c.copied, c.target_id) {
            (true, Some(id)) => format!("copied {what} as {}", id.short()),
            (true, None) => format!("would copy {what}"),
            (false, Some(id)) => format!("{what} is already there as {}", id.short()),
            (false, None) => format!("{what} is already there"),
        };
        say(g, line);
    }
    let (verb, added) = if s.dry_run {
        ("would copy", "would be added")
    } else {
        ("copied", "added")
    };
    say(
        g,
        format!(
            "{verb} {} snapshots from {} to {} ({} already there): {} blobs ({}) {added}, {} \
             packs; {} blobs ({}) read from the source, {:.1}s",
            s.snapshots_copied,
            s.source,
            s.target,
            s.snapshots_skipped,
            s.blobs_added,
            bytes(s.bytes_added),
            s.packs_written,
            s.blobs_read,
            bytes(s.bytes_read),
            s.duration_secs
        ),
    );
}
