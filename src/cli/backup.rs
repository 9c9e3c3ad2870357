//! `coffer backup` of directories (volumes: [`super::docker::backup`]): opening the
//! repository (the default one is created on first use), the progress bar, and the summary
//! and exit code.

use std::sync::Arc;

use anyhow::Context;

use super::args::{BackupArgs, Global};
use super::commands::{location, print_json, say};
use super::output::{ProgressDisplay, bytes};
use super::{exit, open_options, password};
use crate::engine::backup::{BackupOptions, SourceSpec};
use crate::engine::session::{InitOptions, OpenOptions, Session};
use crate::engine::{self, Progress};

/// `coffer backup`.
pub(super) fn backup(g: &Global, a: &BackupArgs) -> anyhow::Result<u8> {
    if a.docker.docker {
        return super::docker::backup(g, a);
    }
    let sources = a
        .sources
        .iter()
        .map(|s| SourceSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = open_options(g);
    opts.pack_uploads = a.connections.map(Into::into);
    let o = open_for_backup(g, &opts)?;
    backup_with_sources(g, a, sources, &o)
}

/// Open the repository and catalog for a backup; the default repository is created on first
/// use.
pub(super) fn open_for_backup(g: &Global, opts: &OpenOptions) -> anyhow::Result<Session> {
    let (loc, is_default) = location(g)?;
    let store = crate::engine::session::Store::at(&loc, &opts.io)?;
    let repo = match store.find() {
        Ok(found) => {
            let pw = password::passphrase(g, false)?;
            found.open(&pw, opts)?
        }
        Err(e) if e.is_missing() && is_default => {
            let pw = password::passphrase(g, true)?;
            let repo = store.init(&pw, InitOptions::default(), opts)?;
            if !g.quiet {
                eprintln!(
                    "created the default repository at {}",
                    repo.store().describe()
                );
            }
            repo
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Session::with_repository(repo, opts)?)
}

fn backup_with_sources(
    g: &Global,
    a: &BackupArgs,
    sources: Vec<SourceSpec>,
    o: &Session,
) -> anyhow::Result<u8> {
    let (repo, catalog) = (&o.repo, &o.catalog);
    let opts = BackupOptions {
        sources,
        tags: a.tags.clone(),
        host: a.host.clone().unwrap_or_else(engine::session::hostname),
        excludes: a.excludes.clone(),
        exclude_regexes: Vec::new(),
        parent: a.parent.clone(),
        force: a.force,
        time: a.time,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "backup");
    if !g.quiet && !g.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let roots = opts.sources.iter().map(|s| s.path.clone()).collect();
        engine::progress::scan_totals(roots, progress.clone());
    }
    let s = engine::backup::backup(repo, catalog, &opts, &progress)
        .with_context(|| format!("backup into {}", repo.store().describe()))?;
    drop(display);
    report_backup(g, &s, o)
}

/// Print a backup's summary (or its JSON, with what it cost on the store) and pick the exit
/// code: 3 when files could not be read.
fn report_backup(g: &Global, s: &engine::backup::BackupSummary, o: &Session) -> anyhow::Result<u8> {
    // What this run cost on a remote store (requests, bytes), from opening to the snapshot.
    let io = o.repo.store().io_stats();
    if g.json {
        let mut v = serde_json::to_value(s)?;
        if let (Some(io), Some(map)) = (io, v.as_object_mut()) {
            map.insert("storage".into(), serde_json::to_value(io)?);
        }
        print_json(&v)?;
    } else {
        for w in &s.warnings {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
        say(
            g,
            format!(
                "snapshot {} saved{}",
                &s.snapshot_id[..8],
                s.parent
                    .as_ref()
                    .map(|p| format!(" (parent {})", &p[..8]))
                    .unwrap_or_default()
            ),
        );
        say(
            g,
            format!(
                "  {} files ({} read, {} unchanged), {} dirs, {} of content",
                s.files,
                s.files_read,
                s.files_unchanged,
                s.dirs,
                bytes(s.total_bytes)
            ),
        );
        say(
            g,
            format!(
                "  read {}, added {} ({} stored) in {} packs, {:.1}s",
                bytes(s.bytes_read),
                bytes(s.bytes_added),
                bytes(s.stored_bytes_added),
                s.packs_written,
                s.duration_secs
            ),
        );
        if let Some(io) = io {
            say(
                g,
                format!(
                    "  storage: {} requests, {} sent, {} received",
                    io.requests,
                    bytes(io.bytes_sent),
                    bytes(io.bytes_received)
                ),
            );
        }
    }
    if s.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        if !g.json {
            eprintln!(
                "warning: {} files could not be read or changed while read; the snapshot is incomplete",
                s.warnings.len()
            );
        }
        Ok(exit::PARTIAL)
    }
}
