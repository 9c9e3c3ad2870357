//! `diff` and `dump`: looking into snapshots without restoring them.

use std::io::Write;

use clap::Args;

use super::args::Global;
use super::commands::{open, print_json};
use super::exit;
use super::output::bytes;
use crate::engine::diff::{DiffEntry, diff as run_diff};
use crate::engine::dump::dump as run_dump;

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
}

/// `dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The snapshot (id, unique prefix or `latest`).
    pub snapshot: String,
    /// A file (written as it is) or a directory (written as a tar stream) in the snapshot,
    /// e.g. `workspace/notes.txt`; `/` for the whole snapshot.
    pub path: String,
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
    let s = run_diff(&o.repo, &o.catalog, &a.from, &a.to, a.metadata, &mut print)?;
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
    let s = run_dump(
        &o.repo,
        &o.catalog,
        &a.snapshot,
        &a.path,
        Box::new(std::io::stdout()),
    )?;
    if g.json {
        // stdout carries the content: the summary goes to stderr.
        eprintln!("{}", serde_json::to_string(&s)?);
    }
    Ok(exit::OK)
}
