//! `coffer sync --to TARGET` and `coffer init --from SOURCE`: opening the second repository,
//! its passphrase, and printing what the engine did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use zeroize::Zeroizing;

use super::args::Global;
use super::commands::{print_json, say};
use super::output::{ProgressDisplay, bytes};
use super::{exit, open_options, password};
use crate::engine::Progress;
use crate::engine::session::{KdfParams, Location, Session, open_at};
use crate::engine::sync::{SyncOptions, sync};

/// `sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The repository to copy to (a path or `s3://BUCKET/PREFIX?...`), created with
    /// `coffer init --repo TARGET --from SOURCE`.
    #[arg(long, env = "COFFER_SYNC_TO")]
    pub to: String,
    /// Copy only this snapshot (id, unique prefix or `latest`; repeatable). Default: all.
    #[arg(long = "snapshot", short = 's')]
    pub snapshots: Vec<String>,
    /// File with the target's passphrase (default: the source's passphrase).
    #[arg(long, env = "COFFER_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Objects copied at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
}

pub(super) fn read_password_file(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading password file {}", path.display()))?,
    );
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Zeroizing::new(line.to_vec()))
}

/// `coffer sync`.
pub fn run(g: &Global, a: &SyncArgs) -> anyhow::Result<u8> {
    let source_location = g
        .repo
        .clone()
        .unwrap_or_else(|| super::default_repo_path().display().to_string());
    let pw = password::passphrase(g, false)?;
    let opts = open_options(g);
    let source = open_at(&source_location, &pw, &opts).context("opening the source repository")?;
    let target_pw = match &a.to_password_file {
        Some(f) => read_password_file(f)?,
        None => pw.clone(),
    };
    // `--key-id` names a key of the source (the repository of `--repo`).
    let target =
        open_at(&a.to, &target_pw, &opts.any_key()).context("opening the target repository")?;
    let Session {
        repo: source,
        catalog,
    } = Session::with_repository(source, &opts)?;
    let opts = SyncOptions {
        snapshots: a.snapshots.clone(),
        connections: a.connections.into(),
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, progress.clone(), "sync");
    let s = sync(&source, &catalog, &target, &opts, &progress)?;
    drop(display);
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(map) = v.as_object_mut() {
            for (key, store) in [("source_storage", &source), ("target_storage", &target)] {
                if let Some(io) = store.store().io_stats() {
                    map.insert(key.into(), serde_json::to_value(io)?);
                }
            }
        }
        print_json(&v)?;
    } else {
        say(
            g,
            format!(
                "synced {} to {}: {} snapshots copied ({} already there), {} packs and {} index \
                 files copied, {} written, {} packs ({}) skipped, {:.1}s",
                s.source,
                s.target,
                s.snapshots_copied,
                s.snapshots_skipped,
                s.packs_copied,
                s.index_files_copied,
                bytes(s.bytes_copied),
                s.packs_skipped,
                bytes(s.bytes_skipped),
                s.duration_secs
            ),
        );
    }
    Ok(exit::OK)
}

/// `coffer init --from SOURCE`: the new repository (`--repo`) shares the source's master key
/// and chunker parameters. Its passphrase is the global one; the source's comes from
/// `from_password_file`, else it is the same.
pub fn init(
    g: &Global,
    from: &str,
    from_password_file: Option<&Path>,
    kdf: KdfParams,
) -> anyhow::Result<u8> {
    let target_location = g
        .repo
        .clone()
        .unwrap_or_else(|| super::default_repo_path().display().to_string());
    let store = crate::engine::session::Store::at(&Location::parse(&target_location)?, &g.io)?;
    let pw = password::passphrase(g, true)?;
    let source_pw = match from_password_file {
        Some(f) => read_password_file(f)?,
        None => pw.clone(),
    };
    let opts = open_options(g).any_key();
    let source = open_at(from, &source_pw, &opts).context("opening the --from repository")?;
    let repo = store.init_from(&source, &pw, kdf, &opts)?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": repo.store().describe(),
            "id": repo.config().id,
            "version": repo.config().version,
            "from": source.store().describe(),
        }))?;
    } else {
        say(
            g,
            format!(
                "created coffer repository at {} sharing the master key of {} (ready for `coffer sync`)",
                repo.store().describe(),
                source.store().describe()
            ),
        );
    }
    Ok(exit::OK)
}
