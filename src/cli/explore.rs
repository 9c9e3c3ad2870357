//! `diff`, `dump` and `find`: looking into snapshots without restoring them.

use std::io::Write;

use clap::Args;

use super::args::Global;
use super::commands::{open, print_json};
use super::exit;
use super::output::bytes;
use crate::engine::diff::{DiffEntry, diff as run_diff};
use crate::engine::dump::dump as run_dump;
use crate::engine::find::{FindOptions, find as run_find};
use crate::engine::tag::{TagOptions, tag as run_tag};

/// `cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Remove the caches of repositories not used for `--max-unused` (their catalogs are
    /// rebuilt if those repositories are opened again).
    #[arg(long)]
    pub cleanup: bool,
    /// How long a repository's cache may go unused before `--cleanup` removes it.
    #[arg(long, default_value = "30d", value_name = "DURATION",
          value_parser = crate::engine::duration::parse_fixed_secs)]
    pub max_unused: u64,
    /// With `--cleanup`: list what would be removed, remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Add this tag (repeatable).
    #[arg(long = "add", value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long = "remove", value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` removes every tag).
    #[arg(long = "set", value_name = "TAG", num_args = 0..=1, default_missing_value = "")]
    pub set: Option<Vec<String>>,
    /// The snapshots (ids, unique prefixes, `latest`); all when none is given.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

/// `find`.
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob patterns: a name at any depth (`*.sql`) or, with `/`, a path inside the snapshot
    /// (`workspace/**/*.md`).
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Match regardless of case.
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only this snapshot (id or unique prefix; repeatable).
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    pub snapshots: Vec<String>,
}

/// `diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The first snapshot (id, unique prefix or `latest`).
    #[arg(value_name = "SNAPSHOT1")]
    pub from: String,
    /// The second snapshot.
    #[arg(value_name = "SNAPSHOT2")]
    pub to: String,
    /// Also list entries whose metadata alone changed (`U`).
    #[arg(long)]
    pub metadata: bool,
    #[command(flatten)]
    pub latest: super::args::LatestFilterArgs,
}

/// `dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The snapshot (id, unique prefix or `latest`).
    pub snapshot: String,
    /// A file (written as it is) or a directory (written as a tar stream) in the snapshot,
    /// e.g. `workspace/notes.txt`; `/` for the whole snapshot.
    pub path: String,
    #[command(flatten)]
    pub latest: super::args::LatestFilterArgs,
}

/// `coffer diff SNAPSHOT1 SNAPSHOT2`: one line per changed entry (`+` added, `-` removed,
/// `M` modified, `T` kind changed, `U` metadata), then the totals; `--json`: one JSON object
/// per entry, then the summary object.
pub(super) fn diff(g: &Global, a: &DiffArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let mut out = std::io::stdout().lock();
    let mut failed: Option<std::io::Error> = None;
    let mut print = |e: DiffEntry| {
        let r = if g.json {
            serde_json::to_string(&e)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            writeln!(out, "{}    {}", e.change.mark(), e.path)
        };
        if let Err(x) = r {
            failed.get_or_insert(x);
        }
    };
    let filter = a.latest.filter();
    let (from, to) = (
        o.pin_latest(&a.from, &filter)?,
        o.pin_latest(&a.to, &filter)?,
    );
    let s = run_diff(&o.repo, &o.catalog, &from, &to, a.metadata, &mut print)?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if g.json {
        print_json(&s)?;
    } else if !g.quiet {
        println!(
            "\ncomparing snapshot {} to {}:\n\
             Files: {:>8} new, {:>8} removed, {:>8} changed\n\
             Dirs:  {:>8} new, {:>8} removed\n\
             Added:   {}\n\
             Removed: {}",
            &s.from[..8],
            &s.to[..8],
            s.files_added,
            s.files_removed,
            s.files_changed,
            s.dirs_added,
            s.dirs_removed,
            bytes(s.bytes_added),
            bytes(s.bytes_removed),
        );
    }
    Ok(exit::OK)
}

/// `coffer dump SNAPSHOT PATH`: a file's content, or a directory as tar, on stdout.
pub(super) fn dump(g: &Global, a: &DumpArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let snapshot = o.pin_latest(&a.snapshot, &a.latest.filter())?;
    let s = run_dump(
        &o.repo,
        &o.catalog,
        &snapshot,
        &a.path,
        Box::new(std::io::stdout()),
    )?;
    if g.json {
        // stdout carries the content: the summary goes to stderr.
        eprintln!("{}", serde_json::to_string(&s)?);
    }
    Ok(exit::OK)
}

/// `coffer find PATTERN...`: the matching entries of every snapshot (oldest first), from the
/// catalog's path index. Nothing matching is not an error (exit 0, as restic), but is said on
/// stderr.
pub(super) fn find(g: &Global, a: &FindArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let opts = FindOptions {
        patterns: a.patterns.clone(),
        ignore_case: a.ignore_case,
        hosts: a.hosts.clone(),
        tags: a.tags.clone(),
        snapshots: a.snapshots.clone(),
    };
    let s = run_find(&o.repo, &o.catalog, &opts)?;
    if g.json {
        print_json(&s.snapshots)?;
    } else {
        let mut out = std::io::stdout().lock();
        for m in &s.snapshots {
            writeln!(
                out,
                "Found matching entries in snapshot {} from {} ({})",
                &m.snapshot[..8],
                &m.time[..19.min(m.time.len())].replace('T', " "),
                m.host
            )?;
            for e in &m.matches {
                writeln!(out, "{}", e.path)?;
            }
            writeln!(out)?;
        }
    }
    if s.snapshots.is_empty() && !g.json && !g.quiet {
        eprintln!("no entry matches {}", a.patterns.join(" or "));
    }
    Ok(exit::OK)
}

/// `coffer tag --add|--remove|--set TAG [SNAPSHOT...]`.
pub(super) fn tag(g: &Global, a: &TagArgs) -> anyhow::Result<u8> {
    let o = open(g)?;
    let set: Vec<String> = a
        .set
        .iter()
        .flatten()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    let opts = TagOptions {
        snapshots: a.snapshots.clone(),
        add: a.add.clone(),
        remove: a.remove.clone(),
        set,
        set_given: a.set.is_some(),
    };
    let s = run_tag(&o.repo, &o.catalog, &opts)?;
    if g.json {
        print_json(&s)?;
    } else if !g.quiet {
        for c in &s.changed {
            println!(
                "snapshot {} is now {} (tags: {})",
                c.old_id.short(),
                c.new_id.short(),
                c.tags.join(",")
            );
        }
        println!(
            "{} snapshot(s) changed, {} already so",
            s.changed.len(),
            s.unchanged
        );
    }
    Ok(exit::OK)
}

/// `coffer cache [--cleanup]`: the per-repository caches, least recently used first.
pub(super) fn cache(g: &Global, a: &CacheArgs) -> anyhow::Result<u8> {
    let dir = g.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
    let max = a
        .cleanup
        .then(|| std::time::Duration::from_secs(a.max_unused));
    let caches = crate::engine::cache::repository_caches(&dir, max, a.dry_run)?;
    if g.json {
        print_json(&caches)?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for c in &caches {
        let days = c.unused_secs / 86_400;
        let mark = match (c.removed, a.dry_run) {
            (true, true) => "  (would be removed)",
            (true, false) => "  (removed)",
            _ => "",
        };
        writeln!(
            out,
            "{}  {:>10}  unused {days} days{mark}",
            &c.repository_id[..16],
            bytes(c.bytes)
        )?;
    }
    let removed = caches.iter().filter(|c| c.removed).count();
    if !g.quiet {
        eprintln!(
            "{} repository cache(s) in {}; {removed} {}",
            caches.len(),
            dir.display(),
            if a.dry_run {
                "would be removed"
            } else {
                "removed"
            }
        );
    }
    Ok(exit::OK)
}
