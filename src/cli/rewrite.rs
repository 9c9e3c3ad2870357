//! `rewrite`: snapshots again, without the paths that should not be in them.

use std::path::PathBuf;

use clap::Args;

use super::args::{Global, LatestFilterArgs};
use super::commands::{open, print_json};
use super::exit;
use super::output::bytes;
use crate::engine::exclude::read_pattern_file;
use crate::engine::rewrite::{RewriteOptions, rewrite as run_rewrite};

/// `rewrite`.
#[derive(Args, Debug)]
pub struct RewriteArgs {
    /// The snapshots (ids, unique prefixes, `latest`); every one that passes --host, --tag and
    /// --source when none is given.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Leave out entries matching this pattern (repeatable), as `backup --exclude` reads it:
    /// an absolute path as it was read, a path inside the snapshot, or a name at any depth.
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Like --exclude, without regard to case (repeatable).
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// Read --exclude patterns from FILE, one a line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Read --iexclude patterns from FILE (repeatable).
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_files: Vec<PathBuf>,
    /// Delete each snapshot that was rewritten (its new version stays); `prune` then frees
    /// the space of what was left out.
    #[arg(long)]
    pub forget: bool,
    /// Say what would be left out; write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub latest: LatestFilterArgs,
}

/// `coffer rewrite --exclude PATTERN [--forget] [SNAPSHOT...]`.
pub(super) fn rewrite(g: &Global, a: &RewriteArgs) -> anyhow::Result<u8> {
    let mut excludes = a.excludes.clone();
    for file in &a.exclude_files {
        excludes.extend(read_pattern_file(file)?);
    }
    let mut iexcludes = a.iexcludes.clone();
    for file in &a.iexclude_files {
        iexcludes.extend(read_pattern_file(file)?);
    }
    let opts = RewriteOptions {
        excludes,
        iexcludes,
        snapshots: a.snapshots.clone(),
        filter: a.latest.filter(),
        forget: a.forget,
        dry_run: a.dry_run,
    };
    let o = open(g)?;
    let s = run_rewrite(&o.repo, &o.catalog, &opts)?;
    if g.json {
        print_json(&s)?;
        return Ok(exit::OK);
    }
    if g.quiet {
        return Ok(exit::OK);
    }
    for r in &s.rewritten {
        let what = format!(
            "{} file(s), {} dir(s), {}",
            r.removed.files,
            r.removed.dirs,
            bytes(r.removed.bytes)
        );
        match (&r.new_id, r.forgotten) {
            (None, _) => println!("snapshot {}: would leave out {what}", r.old_id.short()),
            (Some(new), false) => println!(
                "snapshot {} rewritten as {} without {what}",
                r.old_id.short(),
                new.short()
            ),
            (Some(new), true) => println!(
                "snapshot {} replaced by {} without {what}",
                r.old_id.short(),
                new.short()
            ),
        }
    }
    let verb = if s.dry_run {
        "would be rewritten"
    } else {
        "rewritten"
    };
    println!(
        "{} snapshot(s) {verb}, {} unchanged",
        s.rewritten.len(),
        s.unchanged
    );
    Ok(exit::OK)
}
