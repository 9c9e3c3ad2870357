//! One function per command: open what it needs, call the engine, print the result.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::args::{
    Cli, Command, Global, InitArgs, KeyCommand, LsArgs, RepairCommand, RestoreArgs, SnapshotsArgs,
    StatsArgs, UnlockArgs,
};
use super::output::{ProgressDisplay, bytes, time_ns};
use super::{ask, default_repo_path, exit, open_options, password};
use crate::engine::restore::RestoreOptions;
use crate::engine::session::{InitOptions, Location, Session, SnapshotEntry};
use crate::engine::{self, Progress};

/// The repository of `--repo`, and whether it is the default one.
pub(super) fn location(g: &Global) -> anyhow::Result<(Location, bool)> {
    match &g.repo {
        Some(r) => Ok((Location::parse(r)?, false)),
        None => Ok((Location::Local(default_repo_path()), true)),
    }
}

/// Open the repository of the global flags and its catalog.
pub(crate) fn open(g: &Global) -> anyhow::Result<Session> {
    let (loc, _) = location(g)?;
    Ok(Session::open(&loc, &mut ask(g, false), &open_options(g))?)
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
                s.snapshot_id.short(),
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
        Command::Init(a) => init(g, a),
        Command::Backup(a) => super::backup::backup(g, a),
        Command::Forget(a) => super::lifecycle::forget(g, a),
        Command::Prune(a) => super::lifecycle::prune(g, a),
        Command::Health(a) => super::lifecycle::health(g, a),
        Command::Sync(a) => super::sync::run(g, a),
        Command::Copy(a) => super::copy::run(g, a),
        Command::Daemon(a) => super::daemon::daemon(g, a),
        Command::RunJob(a) => super::daemon::run_once(g, a),
        Command::Trigger(a) => super::trigger::trigger(g, a),
        Command::VolumeHelper => super::docker::volume_helper(g),
        Command::Export(a) => super::archive::export(g, a),
        Command::Import(a) => super::archive::import(g, a),
        Command::Snapshots(a) => snapshots(g, a),
        Command::Ls(a) => ls(g, a),
        Command::Restore(a) => restore(g, a),
        Command::Diff(a) => super::explore::diff(g, a),
        Command::Dump(a) => super::explore::dump(g, a),
        Command::Mount(a) => super::mount::mount(g, a),
        Command::Find(a) => super::explore::find(g, a),
        Command::Tag(a) => super::explore::tag(g, a),
        Command::Rewrite(a) => super::rewrite::rewrite(g, a),
        Command::Cache(a) => super::explore::cache(g, a),
        Command::Completion(a) => super::docs::completion(g, a),
        Command::Man(a) => super::docs::man(g, a),
        Command::Check(a) => super::check::check(g, a),
        Command::Stats(a) => stats(g, a),
        Command::Key(k) => key(g, k),
        Command::Repair(RepairCommand::Catalog) => repair_catalog(g),
        Command::Repair(RepairCommand::Index) => repair_index(g),
        Command::Unlock(a) => unlock(g, a),
    }
}

/// `coffer init` (without `--from`).
fn init(g: &Global, a: &InitArgs) -> anyhow::Result<u8> {
    let (loc, _) = location(g)?;
    let pw = password::passphrase(g, true)?;
    let opts = InitOptions {
        compression_level: a.compression,
        kdf: a.kdf.params(),
        format_version: a.format_version,
        ..Default::default()
    };
    let repo = crate::engine::session::Store::at(&loc, &g.io)?.init(&pw, opts, &open_options(g))?;
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

/// `coffer snapshots`.
fn snapshots(g: &Global, a: &SnapshotsArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let mut list = o.snapshots(a.host.as_deref(), &a.tag)?;
    if !a.ids.is_empty() {
        let mut wanted = std::collections::HashSet::new();
        for id in &a.ids {
            wanted.insert(o.resolve_snapshot(id)?.id);
        }
        list.retain(|e| wanted.contains(&e.id));
    }
    // On stderr in both modes: `--json` prints an array, which has no room for it
    // (`check --json` has the list, as `vanished_snapshots`).
    super::check::report_vanished(&o.catalog.vanished_snapshots()?);
    let by = a.group_by.unwrap_or(if a.latest.is_some() {
        crate::engine::retention::GroupBy::DEFAULT
    } else {
        crate::engine::retention::GroupBy::default()
    });
    let groups = crate::engine::retention::group_snapshots(list, by, a.latest);
    if g.json {
        if a.group_by.is_some() {
            let v: Vec<_> = groups
                .iter()
                .map(|(k, l)| {
                    serde_json::json!({
                        "group_key": k,
                        "snapshots": l.iter().map(snapshot_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return print_json(&v).map(|()| exit::OK);
        }
        let v: Vec<_> = groups
            .iter()
            .flat_map(|(_, l)| l)
            .map(snapshot_json)
            .collect();
        return print_json(&v).map(|()| exit::OK);
    }
    let mut total = 0;
    for (key, list) in &groups {
        if a.group_by.is_some() {
            println!("snapshots of {}:", if key.is_empty() { "all" } else { key });
        }
        print_snapshot_table(list);
        total += list.len();
    }
    println!("{total} snapshots");
    Ok(exit::OK)
}

/// The table of `snapshots`.
fn print_snapshot_table(list: &[SnapshotEntry]) {
    println!(
        "{:<8}  {:<19}  {:<12}  {:<14}  {:<20}  {:>10}  {:>10}",
        "ID", "Time (UTC)", "Host", "Tags", "Sources", "Size", "Added"
    );
    for e in list {
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
}

/// `coffer ls`.
fn ls(g: &Global, a: &LsArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let (snapshot, path) = a.snapshot_and_path()?;
    let snap = o.resolve_snapshot_in(snapshot, &a.latest.filter())?;
    let path = path.to_string();
    let mut out = std::io::stdout().lock();
    let mut err = None;
    engine::walk::ls(&o.repo, &o.catalog, snap.snapshot.tree, &path, &mut |e| {
        let r = if g.json {
            serde_json::to_writer(&mut out, &e)
                .map_err(std::io::Error::other)
                .and_then(|_| writeln!(out))
        } else if a.long {
            let target = e
                .target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {:>10}  {} UTC  {}{target}",
                super::output::mode_string(e.kind, e.mode),
                if e.kind == "file" {
                    bytes(e.size)
                } else {
                    String::new()
                },
                e.mtime.get(..19).unwrap_or(&e.mtime).replace('T', " "),
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

/// `coffer restore --target DIR` (volumes: [`super::docker::restore`]).
fn restore(g: &Global, a: &RestoreArgs) -> anyhow::Result<u8> {
    if a.docker.to_volume.is_some() || a.docker.all_volumes {
        return super::docker::restore(g, a);
    }
    let Some(target) = a.target.clone() else {
        anyhow::bail!("say where to restore: --target DIR, --to-volume NAME or --all-volumes");
    };
    let o = open(g)?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "restore");
    let opts = RestoreOptions {
        snapshot: o.pin_latest(a.snapshot(), &a.latest.filter())?,
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

/// `coffer stats`: what the repository holds, or with `--mode` or snapshots, their size.
fn stats(g: &Global, a: &StatsArgs) -> anyhow::Result<u8> {
    let filter = a.latest.filter();
    if a.mode.is_some() || !a.snapshots.is_empty() || !filter.is_empty() {
        return snapshot_stats(g, a, filter);
    }
    let st = open(g)?.stats()?;
    let stored = st.stored_bytes;
    let v = serde_json::json!({
        "snapshots": st.snapshots,
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
        println!("snapshots:      {}", st.snapshots);
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

/// `coffer stats --mode MODE [SNAPSHOT...]`, in restic's words.
fn snapshot_stats(
    g: &Global,
    a: &StatsArgs,
    filter: engine::session::SnapshotFilter,
) -> anyhow::Result<u8> {
    use engine::stats::{StatsOptions, stats as run_stats};
    let o = open(g)?;
    let opts = StatsOptions {
        mode: a.mode.unwrap_or_default(),
        snapshots: a.snapshots.clone(),
        filter,
    };
    let s = run_stats(&o.repo, &o.catalog, &opts)?;
    if g.json {
        print_json(&s)?;
        return Ok(exit::OK);
    }
    println!(
        "Stats in {} mode:",
        serde_json::to_value(s.mode)?.as_str().unwrap_or("?")
    );
    println!("    Snapshots processed:  {}", s.snapshots_count);
    if let Some(n) = s.total_file_count {
        println!("       Total File Count:  {n}");
    }
    if let Some(n) = s.total_blob_count {
        println!("       Total Blob Count:  {n}");
    }
    match s.total_stored_size {
        Some(stored) => {
            println!("Total Uncompressed Size:  {}", bytes(s.total_size));
            println!("             Total Size:  {}", bytes(stored));
        }
        None => println!("             Total Size:  {}", bytes(s.total_size)),
    }
    if let Some(r) = s.compression_ratio {
        println!("      Compression Ratio:  {r:.2}x");
    }
    Ok(exit::OK)
}

/// `coffer repair catalog`: a new catalog, read afresh from the repository.
fn repair_catalog(g: &Global) -> anyhow::Result<u8> {
    let (loc, _) = location(g)?;
    let (o, path) = Session::with_new_catalog(&loc, &mut ask(g, false), &open_options(g))?;
    let s = o.catalog.refresh(&o.repo)?;
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

/// `coffer repair index`.
fn repair_index(g: &Global) -> anyhow::Result<u8> {
    let s = open(g)?.repair_index()?;
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

/// `coffer unlock`.
fn unlock(g: &Global, a: &UnlockArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let n = o.repo.unlock(a.remove_all)?;
    if g.json {
        print_json(&serde_json::json!({ "removed": n }))?;
    } else {
        say(g, format!("removed {n} locks"));
    }
    Ok(exit::OK)
}

fn snapshot_json(e: &SnapshotEntry) -> serde_json::Value {
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
            let removed = o.remove_key(id)?;
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
            engine::session::remember_key(&o.repo, &open_options(g));
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
