//! `coffer backup` of directories (volumes: [`super::docker::backup`]): the sources and
//! exclude patterns read from the files the options name, opening the repository (the
//! default one is created on first use, except by a dry run), the progress bar, and the
//! summary and exit code.

use std::sync::Arc;

use anyhow::Context;

use super::args::{BackupArgs, Global};
use super::commands::{location, print_json, say};
use super::output::{ProgressDisplay, bytes};
use super::{exit, open_options, password};
use crate::engine::backup::{BackupOptions, BackupSummary, SourceSpec};
use crate::engine::exclude::{ListFormat, read_file_list, read_pattern_file};
use crate::engine::session::{InitOptions, OpenOptions, Session};
use crate::engine::stream::{StreamOrigin, StreamSource};
use crate::engine::{self, Progress};

/// `coffer backup`.
pub(super) fn backup(g: &Global, a: &BackupArgs) -> anyhow::Result<u8> {
    if a.stdin || a.stdin_from_command {
        return stream_backup(g, a);
    }
    if a.docker.docker {
        refuse_with_docker(a)?;
        return super::docker::backup(g, a);
    }
    // Every file the options name is read, and every pattern compiled, before the
    // repository is opened (or created): a typo costs no passphrase prompt and no snapshot.
    let opts = backup_options(g, a)?;
    engine::backup::check_options(&opts)?;
    let mut open = open_options(g);
    open.pack_uploads = a.connections.map(Into::into);
    let o = open_for_backup_with(g, &open, !a.dry_run)?;
    backup_with_options(g, &opts, &o)
}

/// The selection options of a directory backup are not read by `--docker`: refuse them
/// rather than back up what was meant to be left out.
fn refuse_with_docker(a: &BackupArgs) -> anyhow::Result<()> {
    let given = [
        ("--iexclude", !a.iexcludes.is_empty()),
        ("--exclude-file", !a.exclude_files.is_empty()),
        ("--iexclude-file", !a.iexclude_files.is_empty()),
        ("--exclude-caches", a.exclude_caches),
        ("--exclude-if-present", !a.exclude_if_present.is_empty()),
        ("--one-file-system", a.one_file_system),
        ("--files-from", !a.files_from.is_empty()),
        ("--files-from-verbatim", !a.files_from_verbatim.is_empty()),
        ("--files-from-raw", !a.files_from_raw.is_empty()),
        ("--dry-run", a.dry_run),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((option, _)) => anyhow::bail!("{option} does not apply to --docker"),
        None => Ok(()),
    }
}

/// `coffer backup --stdin` and `--stdin-from-command -- CMD...`: the stream as one file of a
/// new snapshot. The command starts once the repository is open and locked.
fn stream_backup(g: &Global, a: &BackupArgs) -> anyhow::Result<u8> {
    refuse_with_stream(a)?;
    let origin = if a.stdin_from_command {
        StreamOrigin::Command(a.command.clone())
    } else {
        StreamOrigin::Stdin
    };
    let source = StreamSource::new(&a.stdin_filename, origin)?;
    let opts = BackupOptions {
        tags: a.tags.clone(),
        host: a.host.clone().unwrap_or_else(engine::session::hostname),
        parent: a.parent.clone(),
        time: a.time,
        dry_run: a.dry_run,
        ..BackupOptions::default()
    };
    let mut open = open_options(g);
    open.pack_uploads = a.connections.map(Into::into);
    let o = open_for_backup_with(g, &open, !a.dry_run)?;
    let (repo, catalog) = (&o.repo, &o.catalog);
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "backup");
    let s = engine::stream::backup_stream(
        repo,
        catalog,
        &opts,
        &source,
        || source.origin.open(),
        &progress,
    )
    .with_context(|| format!("backup into {}", repo.store().describe()))?;
    drop(display);
    if s.dry_run {
        return report_dry_run(g, &s);
    }
    report_backup(g, &s, &o)
}

/// What a stream backup cannot be combined with: sources (the command of
/// `--stdin-from-command` comes after `--`) and the options that select files.
fn refuse_with_stream(a: &BackupArgs) -> anyhow::Result<()> {
    let mode = if a.stdin {
        "--stdin"
    } else {
        "--stdin-from-command"
    };
    if !a.sources.is_empty() {
        anyhow::bail!(
            "{mode} backs up a stream alone: give no source directories{}",
            if a.stdin_from_command {
                " (the command goes after `--`)"
            } else {
                ""
            }
        );
    }
    let given = [
        ("--exclude", !a.excludes.is_empty()),
        ("--iexclude", !a.iexcludes.is_empty()),
        ("--exclude-file", !a.exclude_files.is_empty()),
        ("--iexclude-file", !a.iexclude_files.is_empty()),
        ("--exclude-caches", a.exclude_caches),
        ("--exclude-if-present", !a.exclude_if_present.is_empty()),
        ("--one-file-system", a.one_file_system),
        ("--files-from", !a.files_from.is_empty()),
        ("--files-from-verbatim", !a.files_from_verbatim.is_empty()),
        ("--files-from-raw", !a.files_from_raw.is_empty()),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((option, _)) => anyhow::bail!("{option} does not apply to {mode}"),
        None => Ok(()),
    }
}

/// The engine's options from the command line and the files it names.
fn backup_options(g: &Global, a: &BackupArgs) -> anyhow::Result<BackupOptions> {
    let mut sources = a
        .sources
        .iter()
        .map(|s| SourceSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let lists = [
        (&a.files_from, ListFormat::Patterns),
        (&a.files_from_verbatim, ListFormat::Verbatim),
        (&a.files_from_raw, ListFormat::Raw),
    ];
    for (files, format) in lists {
        for file in files {
            let list = read_file_list(file, format)?;
            for pattern in &list.unmatched {
                if !g.quiet {
                    eprintln!(
                        "warning: {}: {pattern:?} matches no file, skipped",
                        file.display()
                    );
                }
            }
            for path in list.paths {
                sources.push(SourceSpec::for_path(path)?);
            }
        }
    }
    let mut excludes = a.excludes.clone();
    for file in &a.exclude_files {
        excludes.extend(read_pattern_file(file)?);
    }
    let mut iexcludes = a.iexcludes.clone();
    for file in &a.iexclude_files {
        iexcludes.extend(read_pattern_file(file)?);
    }
    Ok(BackupOptions {
        sources,
        tags: a.tags.clone(),
        host: a.host.clone().unwrap_or_else(engine::session::hostname),
        excludes,
        iexcludes,
        exclude_regexes: Vec::new(),
        exclude_caches: a.exclude_caches,
        exclude_if_present: a.exclude_if_present.clone(),
        one_file_system: a.one_file_system,
        parent: a.parent.clone(),
        force: a.force,
        time: a.time,
        dry_run: a.dry_run,
    })
}

/// Open the repository and catalog for a backup; the default repository is created on first
/// use.
pub(super) fn open_for_backup(g: &Global, opts: &OpenOptions) -> anyhow::Result<Session> {
    open_for_backup_with(g, opts, true)
}

/// [`open_for_backup`], creating the default repository only when `create_default`.
fn open_for_backup_with(
    g: &Global,
    opts: &OpenOptions,
    create_default: bool,
) -> anyhow::Result<Session> {
    let (loc, is_default) = location(g)?;
    let store = crate::engine::session::Store::at(&loc, &opts.io)?;
    let repo = match store.find() {
        Ok(found) => {
            let pw = password::passphrase(g, false)?;
            found.open(&pw, opts)?
        }
        Err(e) if e.is_missing() && is_default && create_default => {
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

fn backup_with_options(g: &Global, opts: &BackupOptions, o: &Session) -> anyhow::Result<u8> {
    let (repo, catalog) = (&o.repo, &o.catalog);
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "backup");
    if !g.quiet && !g.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let roots = opts.sources.iter().map(|s| s.path.clone()).collect();
        engine::progress::scan_totals(roots, progress.clone());
    }
    let s = engine::backup::backup(repo, catalog, opts, &progress)
        .with_context(|| format!("backup into {}", repo.store().describe()))?;
    drop(display);
    if s.dry_run {
        return report_dry_run(g, &s);
    }
    report_backup(g, &s, o)
}

/// Print what a dry run would have done: with `-v` each file it would read, then what it
/// would add. Exit codes as a backup's.
fn report_dry_run(g: &Global, s: &BackupSummary) -> anyhow::Result<u8> {
    if g.json {
        print_json(&serde_json::to_value(s)?)?;
    } else {
        for w in &s.warnings {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
        if g.verbose > 0 && !g.quiet {
            for r in &s.would_read {
                let reason = serde_json::to_value(r.reason)?;
                println!(
                    "would read {:<7} {} ({})",
                    reason.as_str().unwrap_or_default(),
                    r.path,
                    bytes(r.size)
                );
            }
        }
        say(
            g,
            format!(
                "dry run, nothing stored{}",
                s.parent
                    .as_ref()
                    .map(|p| format!(" (parent {})", p.short()))
                    .unwrap_or_default()
            ),
        );
        say(
            g,
            format!(
                "  {} files ({} would be read, {} unchanged), {} dirs, {} of content",
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
                "  would read {} and add {} in {} new blobs (before compression)",
                bytes(s.bytes_read),
                bytes(s.bytes_added),
                s.blobs_added
            ),
        );
    }
    Ok(if s.warnings.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// Print a backup's summary (or its JSON, with what it cost on the store) and pick the exit
/// code: 3 when files could not be read.
fn report_backup(g: &Global, s: &BackupSummary, o: &Session) -> anyhow::Result<u8> {
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
                s.snapshot_id.map(|i| i.short()).unwrap_or_default(),
                s.parent
                    .as_ref()
                    .map(|p| format!(" (parent {})", p.short()))
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
