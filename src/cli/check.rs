//! `check`: verify the repository, print what was found, and pick the exit code (1 for
//! damage, 3 when the only finding is snapshots that vanished).

use std::sync::Arc;

use super::args::{CheckArgs, Global};
use super::commands::{location, open, print_json, say};
use super::exit;
use super::output::{ProgressDisplay, bytes, time_ns};
use crate::engine::check::{CheckOptions, CheckReport};
use crate::engine::session::Location;
use crate::engine::{self, Progress};

/// `coffer check`.
pub(super) fn check(g: &Global, a: &CheckArgs) -> anyhow::Result<u8> {
    super::docker::report_leftover_helpers(&g.io);
    if let (Location::Local(root), _) = location(g)? {
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
            acknowledge_vanished: a.acknowledge_vanished,
        },
        &progress,
    )?;
    drop(display);
    if g.json {
        print_json(&r)?;
    } else {
        print_check(g, &r);
    }
    if !r.problems.is_empty() {
        if !g.json {
            eprintln!("error: {} problems found", r.problems.len());
        }
        Ok(exit::ERROR)
    } else if !r.vanished_snapshots.is_empty() {
        say(
            g,
            "no errors were found, but snapshots vanished (see above)",
        );
        Ok(exit::PARTIAL)
    } else {
        say(g, "no errors were found");
        Ok(exit::OK)
    }
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

/// An RFC 3339 time as local time for humans (as given when it does not parse).
fn rfc3339_local(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(time_ns)
        .unwrap_or_else(|| t.to_string())
}

/// Print what `check` found, for a person: counts, notes, warnings, vanished snapshots and
/// problems (the verdict line follows).
fn print_check(g: &Global, r: &CheckReport) {
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
    if r.duplicate_blobs > 0 {
        say(
            g,
            format!(
                "{} blobs are stored in two packs (harmless; the next prune keeps one)",
                r.duplicate_blobs
            ),
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {}: {}", w.object, w.message);
    }
    for v in &r.acknowledged_snapshots {
        say(
            g,
            format!(
                "acknowledged: snapshot {} ({}) vanished; no longer reported",
                v.short_id(),
                rfc3339_local(&v.time)
            ),
        );
    }
    report_vanished(&r.vanished_snapshots);
    for p in &r.problems {
        eprintln!("error: {}: {}", p.object, p.message);
        for a in &p.affects {
            eprintln!("  affects {a}");
        }
    }
}

/// Warn, on stderr, about snapshots that vanished from the repository without a `forget`
/// here: one line each (the first few), and one saying what it may mean and what stops it.
pub(super) fn report_vanished(vanished: &[crate::engine::session::VanishedSnapshot]) {
    const NAMED: usize = 10;
    for v in vanished.iter().take(NAMED) {
        eprintln!(
            "warning: snapshot {} ({}, host {}{}) vanished from the repository without a \
             `coffer forget` here (missed since {})",
            v.short_id(),
            rfc3339_local(&v.time),
            v.host,
            if v.tags.is_empty() {
                String::new()
            } else {
                format!(", tags {}", v.tags.join(","))
            },
            rfc3339_local(&v.noticed)
        );
    }
    if vanished.len() > NAMED {
        eprintln!(
            "warning: and {} more vanished snapshots",
            vanished.len() - NAMED
        );
    }
    if !vanished.is_empty() {
        eprintln!(
            "warning: {} snapshots this host had seen are gone: deleted behind coffer's back, \
             forgotten on another host, or an older state of the repository put back; once \
             explained, `coffer check --acknowledge-vanished` stops this warning",
            vanished.len()
        );
    }
}
