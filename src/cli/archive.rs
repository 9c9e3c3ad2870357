//! `export` and `import`: snapshots out to, and in from, tar.gz archives in the layout of the
//! old nightly backups (`backup/<volume>/...`).

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::args::Global;
use super::commands::{json_line, open, print_json};
use super::exit;
use super::output::{ProgressDisplay, bytes, time_ns};
use crate::engine::Progress;
use crate::engine::export::{self, DEFAULT_LEVEL, DEFAULT_NAME_PATTERN, DEFAULT_PREFIX};
use crate::engine::import::{self, ImportOptions, ImportTime};

/// `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Snapshot id, unique prefix, or `latest`.
    #[arg(long, short = 's')]
    pub snapshot: String,
    /// Export only this path inside the snapshot (repeatable), e.g. `workspace/`; it keeps its
    /// full path in the archive.
    #[arg(long = "path")]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub latest: super::args::LatestFilterArgs,
    /// Write the archive to this file (`-` for stdout). It is written under a temporary name
    /// and renamed when complete.
    #[arg(
        long,
        short = 'o',
        required_unless_present = "output_dir",
        conflicts_with = "output_dir"
    )]
    pub output: Option<PathBuf>,
    /// Write the archive into this directory, named from the snapshot's time (see --name),
    /// and point the symlink `latest` in it at the new file.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// strftime pattern of the file name with --output-dir (local time of the snapshot).
    #[arg(long, requires = "output_dir", value_name = "PATTERN")]
    pub name: Option<String>,
    /// Directory the sources are put in inside the archive (may be empty).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// gzip level (0 none, 1 fast .. 9 small).
    #[arg(long, default_value_t = DEFAULT_LEVEL,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,
}

/// `import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The .tar.gz archive (sources are the directories under `backup/`).
    pub archive: PathBuf,
    /// Snapshot time: `FROM_NAME` (the date in the file name, local time; else the file's
    /// modification time) or an RFC 3339 time such as 2025-11-16T03:00:00Z.
    #[arg(long, default_value = "FROM_NAME")]
    pub time: String,
    /// Tag the snapshot (repeatable); `imported` is always added.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    #[arg(long)]
    pub host: Option<String>,
    /// Directory of the archive that holds the sources.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Keep setuid/setgid bits, device nodes and security.* / trusted.* extended attributes
    /// (an archive you trust, such as a system's own backup). Without it they are dropped.
    #[arg(long)]
    pub privileged: bool,
}

/// Content bytes per second, in MB/s.
fn rate(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// `coffer export`.
pub fn export(g: &Global, a: &ExportArgs) -> anyhow::Result<u8> {
    let to_stdout = a.output.as_deref() == Some(Path::new("-"));
    if to_stdout && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "refusing to write a compressed archive to a terminal: redirect stdout or use --output FILE"
        );
    }
    let o = open(g)?;
    let opts = export::ExportOptions {
        snapshot: o.pin_latest(&a.snapshot, &a.latest.filter())?,
        paths: a.paths.clone(),
        prefix: a.prefix.clone(),
        level: a.level,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "export");
    let (result, target) = match (&a.output, &a.output_dir) {
        (Some(_), _) if to_stdout => {
            // The raw descriptor: std's stdout is line-buffered, which suits text, not this.
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdout")?;
            let out = Box::new(std::fs::File::from(fd));
            let r = export::export(&o.repo, &o.catalog, &opts, out, &progress);
            (r, "stdout".to_string())
        }
        (Some(file), _) => (
            export::export_to_file(&o.repo, &o.catalog, &opts, file, &progress),
            file.display().to_string(),
        ),
        (None, Some(dir)) => {
            let pattern = a.name.as_deref().unwrap_or(DEFAULT_NAME_PATTERN);
            (
                export::export_to_dir(&o.repo, &o.catalog, &opts, dir, pattern, &progress),
                dir.display().to_string(),
            )
        }
        (None, None) => anyhow::bail!("give --output FILE, --output - or --output-dir DIR"),
    };
    drop(display);
    let s = result.with_context(|| format!("export of snapshot {} to {target}", a.snapshot))?;
    // With the archive on stdout, everything else goes to stderr.
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let out: &mut dyn Write = if to_stdout { &mut stderr } else { &mut stdout };
    if g.json {
        json_line(out, &s)?;
    } else if !g.quiet {
        print_export(out, &s, &target)?;
    }
    drop(stdout);
    for w in &s.warnings {
        writeln!(stderr, "warning: {}: {}", w.path, w.message)?;
    }
    Ok(exit::OK)
}

/// Print what an export wrote, for a person.
fn print_export(
    out: &mut dyn Write,
    s: &export::ExportSummary,
    target: &str,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "exported snapshot {} ({}) to {}",
        s.snapshot_id.short(),
        time_ns(s.snapshot_time_ns),
        s.output.as_deref().unwrap_or(target)
    )?;
    writeln!(
        out,
        "  {} entries: {} files, {} dirs, {} symlinks, {} hardlinks, {} special; {} of content",
        s.entries,
        s.files,
        s.dirs,
        s.symlinks,
        s.hardlinks,
        s.special,
        bytes(s.content_bytes)
    )?;
    writeln!(
        out,
        "  archive {} in {:.1}s ({:.1} MB/s of content)",
        bytes(s.archive_bytes),
        s.duration_secs,
        rate(s.content_bytes, s.duration_secs)
    )?;
    Ok(())
}

fn parse_time(s: &str) -> anyhow::Result<ImportTime> {
    if s.eq_ignore_ascii_case("FROM_NAME") {
        return Ok(ImportTime::FromName);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("--time {s:?}: give FROM_NAME or an RFC 3339 time such as 2025-11-16T03:00:00Z")
    })?;
    Ok(ImportTime::At(t.with_timezone(&chrono::Utc)))
}

/// `coffer import`.
pub fn import(g: &Global, a: &ImportArgs) -> anyhow::Result<u8> {
    let time = parse_time(&a.time)?;
    let o = open(g)?;
    let opts = ImportOptions {
        archive: a.archive.clone(),
        time,
        tags: a.tags.clone(),
        host: a
            .host
            .clone()
            .unwrap_or_else(crate::engine::session::hostname),
        prefix: a.prefix.clone(),
        privileged: a.privileged,
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "import");
    let result = import::import(&o.repo, &o.catalog, &opts, &progress);
    drop(display);
    let s = result.context("import failed")?;
    if g.json {
        print_json(&s)?;
    } else {
        if s.time_source == "file mtime" {
            eprintln!(
                "warning: no date in the name of {}; the snapshot time is its modification time (use --time to set it)",
                a.archive.display()
            );
        }
        for w in &s.warnings {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
        if !s.dropped.is_empty() {
            let d = &s.dropped;
            eprintln!(
                "warning: dropped what grants rights from the archive: set-id bits of {} \
                 entries, {} device nodes, {} security.*/trusted.* xattrs (import with \
                 --privileged to keep them)",
                d.set_id_bits, d.device_nodes, d.xattrs
            );
        }
        if !g.quiet {
            println!(
                "snapshot {} saved from {} (time {}, from the {})",
                s.snapshot_id.short(),
                a.archive.display(),
                s.time,
                match s.time_source {
                    "name" => "file name",
                    "given" => "--time option",
                    other => other,
                }
            );
            println!(
                "  sources {}: {} files, {} dirs, {} symlinks, {} hardlinks, {} of content",
                s.sources.join(", "),
                s.files,
                s.dirs,
                s.symlinks,
                s.hardlinks,
                bytes(s.total_bytes)
            );
            println!(
                "  added {} ({} stored) in {} packs, {:.1}s ({:.1} MB/s of content)",
                bytes(s.bytes_added),
                bytes(s.stored_bytes_added),
                s.packs_written,
                s.duration_secs,
                rate(s.total_bytes, s.duration_secs)
            );
        }
    }
    if s.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        if !g.json {
            eprintln!("warning: some entries were skipped (see above); the snapshot lacks them");
        }
        Ok(exit::PARTIAL)
    }
}
