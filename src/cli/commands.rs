//! One function per command: open what it needs, call the engine, print the result.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::args::{Cli, Command, Global, KeyCommand, RepairCommand};
use super::output::{ProgressDisplay, bytes, time_ns};
use super::{Opened, RepoLocation, default_repo_path, exit, open_catalog, password};
use crate::catalog::Catalog;
use crate::engine::backup::{BackupOptions, SourceSpec};
use crate::engine::check::CheckOptions;
use crate::engine::restore::RestoreOptions;
use crate::engine::{self, Progress};
use crate::repo::{InitOptions, LockKind, RepoError, Repository};

pub(super) fn location(g: &Global) -> anyhow::Result<(RepoLocation, bool)> {
    match &g.repo {
        Some(r) => Ok((RepoLocation::parse(r)?, false)),
        None => Ok((RepoLocation::Local(default_repo_path()), true)),
    }
}

pub(crate) fn open(g: &Global) -> anyhow::Result<Opened> {
    let (loc, _) = location(g)?;
    let store = loc.store()?;
    // Name a missing repository before asking for a passphrase.
    Repository::load_config(store.as_ref())?;
    let pw = password::passphrase(g, false)?;
    let repo = Repository::open(store, &pw)?;
    let catalog = open_catalog(g, &repo)?;
    Ok(Opened { repo, catalog })
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    json_line(&mut std::io::stdout().lock(), v)
}

/// Write `v` to `out` as one line of JSON.
pub(crate) fn json_line<T: Serialize>(out: &mut dyn Write, v: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Say when a local repository made before owner-only modes can be read by others (it keeps
/// working; the files are encrypted, but their names, sizes and times are the repository's
/// shape, and the key files are what a passphrase guess is tried against).
fn report_open_modes(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut open = 0u64;
    let mut example = None;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            }
            if m.permissions().mode() & 0o077 != 0 {
                open += 1;
                example.get_or_insert_with(|| {
                    format!(
                        "{} {:o}",
                        e.path().display(),
                        m.permissions().mode() & 0o777
                    )
                });
            }
        }
    }
    if let Some(ex) = example {
        eprintln!(
            "warning: {open} repository files or directories can be read by others (e.g. {ex}); \
             make them owner-only with: chmod -R go-rwx {}",
            root.display()
        );
    }
}

/// Print a restore's summary (or its JSON) and pick the exit code.
pub(crate) fn report_restore(
    g: &Global,
    s: &engine::restore::RestoreSummary,
    target: &str,
) -> anyhow::Result<u8> {
    if g.json {
        print_json(s)?;
    } else {
        for c in &s.changes {
            println!("would {} {}", c.action, c.path);
        }
        for e in &s.errors {
            eprintln!("error: {}: {}", e.path, e.message);
        }
        let verb = if s.dry_run {
            "would restore"
        } else {
            "restored"
        };
        say(
            g,
            format!(
                "{verb} snapshot {} to {target}: {} files ({} written, {} unchanged), {} dirs, \
                 {} other, {} written{}{} in {:.1}s ({} reads, {} fetched)",
                s.snapshot_id.get(..8).unwrap_or(&s.snapshot_id),
                s.files,
                s.files_written,
                s.files_unchanged,
                s.dirs,
                s.links_and_special,
                bytes(s.bytes),
                if s.deleted > 0 {
                    format!(", {} deleted", s.deleted)
                } else {
                    String::new()
                },
                if s.verified > 0 {
                    format!(", {} verified", s.verified)
                } else {
                    String::new()
                },
                s.duration_secs,
                s.requests,
                bytes(s.bytes_fetched),
            ),
        );
    }
    if s.skipped_devices > 0 && !g.json {
        eprintln!(
            "note: {} device nodes were not recreated (add --privileged to restore them, as root)",
            s.skipped_devices
        );
    }
    if s.errors.is_empty() {
        Ok(exit::OK)
    } else {
        if !g.json {
            eprintln!("error: {} entries could not be restored", s.errors.len());
        }
        Ok(exit::ERROR)
    }
}

pub(crate) fn say(g: &Global, msg: impl AsRef<str>) {
    if !g.quiet && !g.json {
        println!("{}", msg.as_ref());
    }
}

/// Run the parsed command; returns the exit code.
pub fn run(cli: &Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Init(a) if a.from.is_some() => super::sync::init(
            g,
            a.from.as_deref().unwrap_or_default(),
            a.from_password_file.as_deref(),
            a.kdf.params(),
        ),
        Command::Init(a) => {
            let (loc, _) = location(g)?;
            let pw = password::passphrase(g, true)?;
            let opts = InitOptions {
                compression_level: a.compression,
                kdf: a.kdf.params(),
                format_version: a.format_version,
                ..Default::default()
            };
            let repo = Repository::init(loc.store()?, &pw, opts)?;
            if g.json {
                print_json(&serde_json::json!({
                    "repository": repo.store().describe(),
                    "id": repo.config().id,
                    "version": repo.config().version,
                }))?;
            } else {
                say(
                    g,
                    format!("created coffer repository at {}", repo.store().describe()),
                );
                say(
                    g,
                    "keep the passphrase safe: without it the data cannot be read",
                );
            }
            Ok(exit::OK)
        }
        Command::Backup(a) => backup(g, a),
        Command::Forget(a) => super::lifecycle::forget(g, a),
        Command::Prune(a) => super::lifecycle::prune(g, a),
        Command::Health(a) => super::lifecycle::health(g, a),
        Command::Sync(a) => super::sync::run(g, a),
        Command::Daemon(a) => super::daemon::daemon(g, a),
        Command::RunJob(a) => super::daemon::run_once(g, a),
        Command::Trigger(a) => super::trigger::trigger(g, a),
        Command::VolumeHelper => super::docker::volume_helper(g),
        Command::Export(a) => super::archive::export(g, a),
        Command::Import(a) => super::archive::import(g, a),
        Command::Snapshots(a) => {
            let o = open(g)?;
            o.catalog.refresh(&o.repo)?;
            let list: Vec<_> = o
                .catalog
                .snapshots()?
                .into_iter()
                .filter(|e| a.host.as_ref().is_none_or(|h| *h == e.snapshot.host))
                .filter(|e| a.tag.iter().all(|t| e.snapshot.tags.contains(t)))
                .collect();
            if g.json {
                let v: Vec<_> = list.iter().map(snapshot_json).collect();
                print_json(&v)?;
            } else {
                println!(
                    "{:<8}  {:<19}  {:<12}  {:<14}  {:<20}  {:>10}  {:>10}",
                    "ID", "Time", "Host", "Tags", "Sources", "Size", "Added"
                );
                for e in &list {
                    let s = &e.snapshot;
                    let sources: Vec<&str> = s.sources.iter().map(|x| x.name.as_str()).collect();
                    println!(
                        "{:<8}  {:<19}  {:<12}  {:<14}  {:<20}  {:>10}  {:>10}",
                        e.id.short(),
                        time_ns(s.time_ns),
                        s.host,
                        s.tags.join(","),
                        sources.join(","),
                        bytes(s.summary.total_bytes),
                        bytes(s.summary.stored_bytes_added)
                    );
                }
                println!("{} snapshots", list.len());
            }
            Ok(exit::OK)
        }
        Command::Ls(a) => {
            let o = open(g)?;
            o.catalog.refresh(&o.repo)?;
            let snap = o.catalog.resolve_snapshot(&a.snapshot)?;
            let path = a.path.clone().unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let mut err = None;
            engine::walk::ls(&o.repo, &o.catalog, snap.snapshot.tree, &path, &mut |e| {
                let r = if g.json {
                    serde_json::to_writer(&mut out, &e)
                        .map_err(std::io::Error::other)
                        .and_then(|_| writeln!(out))
                } else if a.long {
                    writeln!(
                        out,
                        "{:>6o} {:>12} {}  {}",
                        e.mode,
                        e.size,
                        &e.mtime[..19.min(e.mtime.len())],
                        e.path
                    )
                } else {
                    writeln!(out, "{}", e.path)
                };
                if let Err(x) = r {
                    err.get_or_insert(x);
                }
            })?;
            if let Some(e) = err
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e.into());
            }
            Ok(exit::OK)
        }
        Command::Restore(a) => {
            if a.docker.to_volume.is_some() || a.docker.all_volumes {
                return super::docker::restore(g, a);
            }
            let Some(target) = a.target.clone() else {
                anyhow::bail!(
                    "say where to restore: --target DIR, --to-volume NAME or --all-volumes"
                );
            };
            let o = open(g)?;
            let progress = Arc::new(Progress::default());
            let display = ProgressDisplay::start(g, progress.clone(), "restore");
            let opts = RestoreOptions {
                snapshot: a.snapshot.clone(),
                target: target.clone(),
                paths: a.paths.clone(),
                overwrite: a.overwrite,
                delete: a.delete,
                dry_run: a.dry_run,
                includes: a.includes.clone(),
                excludes: a.excludes.clone(),
                verify: a.verify,
                flatten: false,
                privileged: a.privileged,
            };
            let s = engine::restore::restore(&o.repo, &o.catalog, &opts, &progress)?;
            drop(display);
            report_restore(g, &s, &target.display().to_string())
        }
        Command::Check(a) => {
            super::docker::report_leftover_helpers();
            if let (RepoLocation::Local(root), _) = location(g)? {
                report_open_modes(&root);
            }
            let o = open(g)?;
            let progress = Arc::new(Progress::default());
            let display = ProgressDisplay::start(g, progress.clone(), "check");
            let r = engine::check::check_with_catalog(
                &o.repo,
                Some(&o.catalog),
                &CheckOptions {
                    read_data: a.read_data,
                    read_data_subset: a.read_data_subset,
                },
                &progress,
            )?;
            drop(display);
            if g.json {
                print_json(&r)?;
            } else {
                say(
                    g,
                    format!(
                        "checked {} snapshots, {} trees, {} index files, {} packs, {} blobs{}",
                        r.snapshots,
                        r.trees,
                        r.index_files,
                        r.packs,
                        r.blobs,
                        if r.packs_read > 0 {
                            format!(", read {} in {} packs", bytes(r.bytes_read), r.packs_read)
                        } else {
                            String::new()
                        }
                    ),
                );
                if r.unindexed_packs > 0 {
                    say(
                        g,
                        format!(
                            "{} packs are not indexed (left by an interrupted backup; `coffer repair index` adopts them)",
                            r.unindexed_packs
                        ),
                    );
                }
                for p in &r.problems {
                    eprintln!("error: {}: {}", p.object, p.message);
                    for a in &p.affects {
                        eprintln!("  affects {a}");
                    }
                }
            }
            if r.problems.is_empty() {
                say(g, "no errors were found");
                Ok(exit::OK)
            } else {
                if !g.json {
                    eprintln!("error: {} problems found", r.problems.len());
                }
                Ok(exit::ERROR)
            }
        }
        Command::Stats => {
            let o = open(g)?;
            o.catalog.refresh(&o.repo)?;
            let st = o.catalog.stats()?;
            let snapshots = o.catalog.snapshots()?.len();
            let stored: u64 = o.repo.list_packs()?.iter().map(|(_, s)| s).sum();
            let v = serde_json::json!({
                "snapshots": snapshots,
                "packs": st.packs,
                "data_blobs": st.data_blobs,
                "tree_blobs": st.tree_blobs,
                "raw_bytes": st.raw_bytes,
                "stored_bytes": stored,
                "compression_ratio": if stored > 0 { st.raw_bytes as f64 / stored as f64 } else { 0.0 },
            });
            if g.json {
                print_json(&v)?;
            } else {
                println!("snapshots:      {snapshots}");
                println!("packs:          {}", st.packs);
                println!(
                    "blobs:          {} data, {} tree",
                    st.data_blobs, st.tree_blobs
                );
                println!("unique content: {}", bytes(st.raw_bytes));
                println!("stored size:    {}", bytes(stored));
            }
            Ok(exit::OK)
        }
        Command::Key(k) => key(g, k),
        Command::Repair(RepairCommand::Catalog) => {
            let (loc, _) = location(g)?;
            let store = loc.store()?;
            Repository::load_config(store.as_ref())?;
            let pw = password::passphrase(g, false)?;
            let repo = Repository::open(store, &pw)?;
            let dir = g.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
            let path = Catalog::path_for(&dir, &repo.config().id);
            Catalog::destroy(&path);
            let catalog = Catalog::open(&path)?;
            let s = catalog.refresh(&repo)?;
            if g.json {
                print_json(&s)?;
            } else {
                say(
                    g,
                    format!(
                        "rebuilt the catalog {}: {} index files, {} snapshots",
                        path.display(),
                        s.index_files_read,
                        s.snapshots_read
                    ),
                );
            }
            Ok(exit::OK)
        }
        Command::Repair(RepairCommand::Index) => {
            let o = open(g)?;
            let _lock = o.repo.lock(LockKind::Exclusive, "repair index")?;
            let s = engine::check::repair_index(&o.repo)?;
            o.catalog.refresh(&o.repo)?;
            if g.json {
                print_json(&s)?;
            } else {
                say(
                    g,
                    format!(
                        "{} packs were not indexed; wrote {} index files for {} blobs; {} packs unreadable",
                        s.unindexed_packs,
                        s.index_files_written,
                        s.blobs_indexed,
                        s.unreadable_packs.len()
                    ),
                );
                for p in &s.unreadable_packs {
                    eprintln!("warning: {p}");
                }
            }
            Ok(exit::OK)
        }
        Command::Unlock(a) => {
            let o = open(g)?;
            let n = o.repo.unlock(a.remove_all)?;
            if g.json {
                print_json(&serde_json::json!({ "removed": n }))?;
            } else {
                say(g, format!("removed {n} locks"));
            }
            Ok(exit::OK)
        }
    }
}

fn snapshot_json(e: &crate::catalog::SnapshotEntry) -> serde_json::Value {
    let s = &e.snapshot;
    serde_json::json!({
        "id": e.id.to_hex(),
        "short_id": e.id.short(),
        "time": chrono::DateTime::from_timestamp_nanos(s.time_ns).to_rfc3339(),
        "host": s.host,
        "username": s.username,
        "tags": s.tags,
        "parent": s.parent.map(|p| p.to_hex()),
        "tree": s.tree.to_hex(),
        "sources": s.sources.iter().map(|x| serde_json::json!({"name": x.name, "path": x.path})).collect::<Vec<_>>(),
        "summary": s.summary,
    })
}

fn backup(g: &Global, a: &super::args::BackupArgs) -> anyhow::Result<u8> {
    if a.docker.docker {
        return super::docker::backup(g, a);
    }
    let sources = a
        .sources
        .iter()
        .map(|s| SourceSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let repo = open_for_backup(g)?;
    if let Some(n) = a.connections {
        repo.set_pack_uploads(n.into());
    }
    let catalog = open_catalog(g, &repo)?;
    backup_with_sources(g, a, sources, repo, catalog)
}

/// Open the repository for a backup; the default repository is created on first use.
pub(super) fn open_for_backup(g: &Global) -> anyhow::Result<Repository> {
    let (loc, is_default) = location(g)?;
    let store = loc.store()?;
    let repo = match Repository::load_config(store.as_ref()) {
        Ok(_) => Repository::open(store, &password::passphrase(g, false)?)?,
        Err(RepoError::NotARepository(_)) if is_default => {
            let pw = password::passphrase(g, true)?;
            let repo = Repository::init(store, &pw, InitOptions::default())?;
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
    Ok(repo)
}

fn backup_with_sources(
    g: &Global,
    a: &super::args::BackupArgs,
    sources: Vec<SourceSpec>,
    repo: Repository,
    catalog: Catalog,
) -> anyhow::Result<u8> {
    let opts = BackupOptions {
        sources,
        tags: a.tags.clone(),
        host: a.host.clone().unwrap_or_else(crate::repo::hostname),
        excludes: a.excludes.clone(),
        exclude_regexes: Vec::new(),
        parent: a.parent.clone(),
        force: a.force,
        time: a.time,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "backup");
    if !g.quiet && !g.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let p = progress.clone();
        let paths: Vec<_> = opts.sources.iter().map(|s| s.path.clone()).collect();
        std::thread::spawn(move || {
            let (mut files, mut total) = (0u64, 0u64);
            for root in paths {
                let mut stack = vec![root];
                while let Some(d) = stack.pop() {
                    let Ok(rd) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in rd.flatten() {
                        let Ok(m) = e.metadata() else { continue };
                        if m.is_dir() {
                            stack.push(e.path());
                        } else if m.is_file() {
                            files += 1;
                            total += m.len();
                        }
                    }
                }
            }
            p.total_files
                .store(files, std::sync::atomic::Ordering::Relaxed);
            p.total_bytes
                .store(total, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let s = engine::backup::backup(&repo, &catalog, &opts, &progress)
        .with_context(|| format!("backup into {}", repo.store().describe()))?;
    drop(display);
    // What this run cost on a remote store (requests, bytes), from opening to the snapshot.
    let io = repo.store().io_stats();
    if g.json {
        let mut v = serde_json::to_value(&s)?;
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

fn key(g: &Global, k: &KeyCommand) -> anyhow::Result<u8> {
    let mut o = open(g)?;
    match k {
        KeyCommand::Add(n) => {
            let pw = password::new_passphrase(n.new_password_file.as_deref())?;
            let id = o.repo.add_key(&pw, n.kdf.params())?;
            if g.json {
                print_json(&serde_json::json!({ "added": id.to_hex() }))?;
            } else {
                say(g, format!("added key {}", id.short()));
            }
        }
        KeyCommand::List => {
            let keys = o.repo.list_keys()?;
            if g.json {
                print_json(&keys)?;
            } else {
                for k in keys {
                    println!(
                        "{} {:<8}  {}  {}",
                        if k.current { "*" } else { " " },
                        &k.id[..8],
                        k.created,
                        k.host
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let _lock = o.repo.lock(LockKind::Exclusive, "key remove")?;
            let removed = o.repo.remove_key(id)?;
            if g.json {
                print_json(&serde_json::json!({ "removed": removed.to_hex() }))?;
            } else {
                say(g, format!("removed key {}", removed.short()));
            }
        }
        KeyCommand::Passwd(n) => {
            let pw = password::new_passphrase(n.new_password_file.as_deref())?;
            let id = o
                .repo
                .change_passphrase(&pw, n.kdf.params())
                .context("changing the passphrase")?;
            if g.json {
                print_json(&serde_json::json!({ "key": id.to_hex() }))?;
            } else {
                say(
                    g,
                    format!("passphrase changed; the key is now {}", id.short()),
                );
            }
        }
    }
    Ok(exit::OK)
}
