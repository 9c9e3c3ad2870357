//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::session::{FORMAT_VERSION, KdfParams, OLDEST_FORMAT_VERSION};

/// coffer: deduplicating, encrypted snapshots of directories and Docker volumes.
#[derive(Parser, Debug)]
#[command(name = "coffer", version, about, long_about = None,
          after_help = "Times are shown and read in UTC (RFC 3339 in --json output).")]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository location: a directory (default: ~/.local/share/coffer/repository).
    #[arg(long, short = 'r', env = "COFFER_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the passphrase from this file (first line).
    #[arg(long, env = "COFFER_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its first output line as the passphrase.
    #[arg(long, env = "COFFER_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Try only this key (its id, or a unique prefix as `coffer key list` shows). Without it,
    /// the key last used on this host goes first, then the others, at most 20 of them.
    #[arg(long, env = "COFFER_KEY_ID", global = true, value_name = "ID",
          value_parser = parse_key_id)]
    pub key_id: Option<String>,
    /// Local cache directory of the catalog.
    #[arg(long, env = "COFFER_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// More detail (repeat for debug).
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How long to wait for another process's conflicting lock (e.g. a backup waiting for a
    /// prune) before failing with exit code 11: `0`, `30s`, `10min`, `2h` (a bare number is
    /// seconds; `m` is refused: minutes are `min`, as m means months in retention policies).
    #[arg(long, env = "COFFER_RETRY_LOCK", global = true, default_value = "30min",
          value_parser = parse_retry_lock)]
    pub retry_lock: u64,
    /// Limit what this process writes to repositories to this many KiB/s, all connections
    /// and threads together (0 or empty: no limit).
    #[arg(long, env = "COFFER_LIMIT_UPLOAD", global = true, value_name = "KiB/s",
          value_parser = parse_kib_per_sec)]
    pub limit_upload: Option<u64>,
    /// Limit what this process reads from repositories to this many KiB/s, all connections
    /// and threads together (0 or empty: no limit).
    #[arg(long, env = "COFFER_LIMIT_DOWNLOAD", global = true, value_name = "KiB/s",
          value_parser = parse_kib_per_sec)]
    pub limit_download: Option<u64>,
    /// Not a flag: the process's I/O runtime (S3, Docker, notifications, metrics) and the
    /// bandwidth limits of its stores, made with the arguments ([`Global::with_io`]), started
    /// on first use, and handed down with them to every command.
    #[arg(skip)]
    pub io: crate::runtime::IoRuntime,
}

impl Global {
    /// `--retry-lock` in seconds.
    pub fn retry_lock_secs(&self) -> u64 {
        self.retry_lock
    }

    /// These options with their I/O runtime made for `--limit-upload` and
    /// `--limit-download`: one pair of token buckets for every store the process opens.
    pub fn with_io(mut self) -> Self {
        let limits = crate::storage::RateLimits::kib_per_sec(
            self.limit_upload.unwrap_or(0),
            self.limit_download.unwrap_or(0),
        );
        self.io = crate::runtime::IoRuntime::with_rate_limits(limits);
        self
    }
}

fn parse_time(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| anyhow::anyhow!("{e}: use RFC 3339, e.g. 2025-11-16T03:00:00Z"))
}

fn parse_key_id(s: &str) -> anyhow::Result<String> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("a key id is up to 64 hex digits (a unique prefix will do)");
    }
    Ok(s.to_ascii_lowercase())
}

/// A bandwidth limit in KiB/s: a whole number, 0 or empty (an environment variable set to
/// nothing) for none.
fn parse_kib_per_sec(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<u64>()
        .map_err(|e| anyhow::anyhow!("{e}: give whole KiB/s, e.g. 512 (0: no limit)"))
}

fn parse_retry_lock(s: &str) -> anyhow::Result<u64> {
    let secs = crate::engine::duration::parse_fixed_secs(s)?;
    if secs > 7 * 86_400 {
        anyhow::bail!("at most 7d");
    }
    Ok(secs)
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository.
    Init(InitArgs),
    /// Back up directories into a new snapshot.
    // Boxed: its selection options make it by far the largest variant.
    Backup(Box<BackupArgs>),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot, or paths in it.
    Restore(RestoreArgs),
    /// Show what changed between two snapshots.
    Diff(super::explore::DiffArgs),
    /// Write a file of a snapshot to stdout (a directory as a tar stream).
    Dump(super::explore::DumpArgs),
    /// Serve the snapshots as a read-only file system (FUSE) until SIGINT or SIGTERM.
    Mount(super::mount::MountArgs),
    /// Find files and directories by name or path in all snapshots (from the catalog's index).
    Find(super::explore::FindArgs),
    /// Add, remove or set the tags of snapshots.
    Tag(super::explore::TagArgs),
    /// Write snapshots again without the entries matching --exclude (`--forget` deletes the
    /// originals).
    Rewrite(super::rewrite::RewriteArgs),
    /// List the per-repository caches; `--cleanup` removes those unused for 30 days.
    Cache(super::explore::CacheArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(super::docs::CompletionArgs),
    /// Print the man page, or write every command's into a directory.
    Man(super::docs::ManArgs),
    /// Write a snapshot, or paths in it, as a tar.gz archive (`backup/<source>/...`).
    Export(super::archive::ExportArgs),
    /// Store a tar.gz archive of the old layout (`backup/<source>/...`) as a snapshot.
    Import(super::archive::ImportArgs),
    /// Verify the repository.
    Check(CheckArgs),
    /// Repository statistics; with --mode or snapshots, the size of snapshots as restic
    /// counts it.
    Stats(StatsArgs),
    /// Manage the passphrases (keys) of the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Rebuild derived data.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Remove stale locks (or all with --remove-all).
    Unlock(UnlockArgs),
    /// Delete snapshots by a retention policy (`--prune` also frees their space).
    Forget(super::lifecycle::ForgetArgs),
    /// Free the space of data no snapshot references.
    Prune(super::lifecycle::PruneArgs),
    /// Exit 1 when the newest snapshot is older than --max-age, or the last recorded job run
    /// (daemon, run-job) failed or died (for monitoring).
    Health(super::lifecycle::HealthArgs),
    /// Copy snapshots and the data they need to another repository with the same master key.
    Sync(super::sync::SyncArgs),
    /// Copy snapshots from another repository (--from-repo), with its own master key, into
    /// this one.
    ///
    /// Each blob is read from the source, decrypted, and stored again under this repository's
    /// keys (deduplicated against what it holds); trees are written again with the new ids,
    /// and each snapshot keeps its time, host, user, tags and sources. Chunks are kept as they
    /// are: nothing is chunked again, even if the chunker parameters differ. A snapshot
    /// already copied (same time and host, same content) is skipped, so a second run copies
    /// nothing; the cache directory remembers the copied blobs, so it reads no data either.
    Copy(super::copy::CopyArgs),
    /// Run the job (backup, forget + prune, check, sync) on a schedule, with notifications and
    /// metrics (see docs/daemon.md).
    Daemon(super::daemon::DaemonArgs),
    /// Run the daemon's job once, now; exit non-zero when it fails.
    RunJob(super::daemon::RunJobArgs),
    /// Ask the running daemon to run its job now and show its log (the old image's
    /// `docker exec <container> backup`; also invoked as `backup`). Without a running daemon,
    /// the job runs here.
    Trigger(super::trigger::TriggerArgs),
    /// Inside a helper container: restore into the volume mounted at /coffer-target, as
    /// asked on stdin by `restore --to-volume` (not for direct use).
    #[command(hide = true)]
    VolumeHelper,
}

/// `init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level for new data (1 fast .. 19 small; negative levels are faster still).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-7..=22))]
    pub compression: i32,
    /// Share the master key and chunker parameters of this repository (a path or s3:// URL),
    /// so that `coffer sync` can copy between the two without re-encrypting.
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
    /// File with the passphrase of the --from repository (default: the new one's).
    #[arg(long, env = "COFFER_FROM_PASSWORD_FILE", requires = "from")]
    pub from_password_file: Option<PathBuf>,
    /// Repository format version to write: 2 (the default) pads blobs finely; 1 makes a
    /// repository that coffer builds older than format 2 can read too (docs/format.md).
    #[arg(long, value_name = "N", default_value_t = FORMAT_VERSION,
          conflicts_with = "from",
          value_parser = clap::value_parser!(u32).range(
              OLDEST_FORMAT_VERSION as i64
                  ..=FORMAT_VERSION as i64))]
    pub format_version: u32,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// Argon2id cost of a new key. The defaults (64 MiB, 3 passes) are RFC 9106's second
/// recommendation; the bounds are OWASP's minimum (19 MiB, 2 passes) and the most coffer tries
/// for a key file it is not told to use (256 MiB, 10 passes).
#[derive(Args, Debug, Clone, Copy)]
pub struct KdfArgs {
    /// Argon2id memory of the new key, in MiB (it is needed again at every unlock).
    #[arg(long, value_name = "MiB",
          default_value_t = KdfParams::DEFAULT.memory_kib / 1024,
          value_parser = clap::value_parser!(u32).range(
              (KdfParams::NEW_KEY_MIN.memory_kib / 1024) as i64
                  ..=(KdfParams::LIMIT.memory_kib / 1024) as i64))]
    pub kdf_memory: u32,
    /// Argon2id passes of the new key.
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.iterations,
          value_parser = clap::value_parser!(u32).range(
              KdfParams::NEW_KEY_MIN.iterations as i64..=KdfParams::LIMIT.iterations as i64))]
    pub kdf_iterations: u32,
}

impl KdfArgs {
    /// The parameters stored in the new key file.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf_memory * 1024,
            iterations: self.kdf_iterations,
            parallelism: KdfParams::DEFAULT.parallelism,
        }
    }
}

/// `backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Sources: `NAME=PATH` or `PATH` (named after its last component).
    #[arg(required_unless_present_any = ["docker", "files_from", "files_from_verbatim",
                                         "files_from_raw", "stdin", "stdin_from_command"])]
    pub sources: Vec<String>,
    /// Back up standard input as one file, named by --stdin-filename, in a new snapshot
    /// (`pg_dump db | coffer backup --stdin --stdin-filename db.sql`); no sources.
    #[arg(long, group = "stream", conflicts_with = "docker")]
    pub stdin: bool,
    /// Run the command given after `--` and back up its standard output as one file, named
    /// by --stdin-filename (`--stdin-from-command -- pg_dumpall -U postgres`). The snapshot is
    /// written only when the command exits with status 0.
    #[arg(
        long,
        group = "stream",
        requires = "command",
        conflicts_with = "docker"
    )]
    pub stdin_from_command: bool,
    /// Name of the file that holds the stream in the snapshot (no `/` or `..`).
    #[arg(long, value_name = "NAME", requires = "stream",
          default_value = crate::engine::stream::DEFAULT_NAME)]
    pub stdin_filename: String,
    /// The command of --stdin-from-command, after `--`.
    #[arg(last = true, value_name = "COMMAND", requires = "stdin_from_command")]
    pub command: Vec<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    #[arg(long)]
    pub host: Option<String>,
    /// Leave out paths matching this pattern (repeatable), as restic: without `/` it matches
    /// a name at any depth, `dir/*.tmp` the end of a path, `/abs/dir` a whole absolute path
    /// (or a path in the snapshot, `/NAME/dir`); `**` spans directories.
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Like --exclude, without regard to case (repeatable).
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// Read --exclude patterns from FILE, one a line; blank lines and lines starting with `#`
    /// are skipped (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Read --iexclude patterns from FILE, as --exclude-file (repeatable).
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_files: Vec<PathBuf>,
    /// Leave out the content of directories holding a valid CACHEDIR.TAG (the tag is kept).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out the content of directories holding a file NAME (which is kept); with
    /// `NAME:HEADER`, only when the file starts with HEADER (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Stay on the file system of each source: a directory where another is mounted is kept,
    /// empty.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up the paths listed in FILE, one a line; globs are expanded, blank lines and lines
    /// starting with `#` skipped (repeatable). Each is a source named after its last
    /// component.
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Back up the paths listed in FILE, one a line, taken byte for byte (repeatable).
    #[arg(long = "files-from-verbatim", value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Back up the paths listed in FILE, separated by NUL bytes, as `find -print0` writes
    /// them (repeatable).
    #[arg(long = "files-from-raw", value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
    /// Read as a backup would, store nothing: say what would be read (each file with -v) and
    /// how much would be added. A repository that does not exist is not created.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Parent snapshot for change detection (default: the latest of this host and sources).
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those whose metadata did not change.
    #[arg(long)]
    pub force: bool,
    /// Record this time (RFC 3339, e.g. 2025-11-16T03:00:00Z) instead of now.
    #[arg(long, value_parser = parse_time)]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Store up to N packs at once (default: 4 on S3, 2 on local disk). Each one in flight
    /// holds a pack (16 MiB by default) in memory.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=32))]
    pub connections: Option<u16>,
    /// Docker volumes instead of directories (`--docker`).
    #[command(flatten)]
    pub docker: super::docker::DockerBackupArgs,
}

/// `snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only these snapshots (ids or unique prefixes).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Show the snapshots in groups: `host`, `sources` (or `paths`), `tags`, comma-separated.
    #[arg(long, value_name = "FIELDS",
          value_parser = crate::engine::retention::GroupBy::parse)]
    pub group_by: Option<crate::engine::retention::GroupBy>,
    /// Only the newest N snapshots of each host and set of sources (of each group with
    /// `--group-by`).
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Only snapshots with this tag.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
}

/// Which snapshot `latest` means, as restic narrows it; an id is taken as it is.
#[derive(Args, Debug, Default, Clone)]
pub struct LatestFilterArgs {
    /// With `latest`: the newest snapshot of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// With `latest`: the newest snapshot that has this source, by name or by the path it was
    /// read from (repeatable: all of them); restic's `--path`.
    #[arg(long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,
}

impl LatestFilterArgs {
    /// As the engine takes it.
    pub fn filter(&self) -> crate::engine::session::SnapshotFilter {
        crate::engine::session::SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            sources: self.sources.clone(),
        }
    }
}

/// `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The snapshots to count (ids, unique prefixes, `latest`); all when none is given.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// How to count: `restore-size` (what a restore writes), `files-by-contents` (distinct
    /// files), `raw-data` (the distinct blobs, before and after compression). Without it and
    /// without snapshots: what the repository holds.
    #[arg(long, value_enum)]
    pub mode: Option<crate::engine::stats::StatsMode>,
    #[command(flatten)]
    pub latest: LatestFilterArgs,
}

/// `ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest` (or the first argument, as in `ls latest`).
    #[arg(long = "snapshot", short = 's')]
    pub snapshot_flag: Option<String>,
    /// `[SNAPSHOT] [PATH]`: the snapshot (unless `--snapshot` is given), then a path inside it.
    #[arg(value_name = "SNAPSHOT_OR_PATH", num_args = 0..=2)]
    pub args: Vec<String>,
    /// Show mode, size and time.
    #[arg(long, short = 'l')]
    pub long: bool,
    #[command(flatten)]
    pub latest: LatestFilterArgs,
}

/// `restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    #[arg(
        long = "snapshot",
        short = 's',
        conflicts_with = "snapshot_arg",
        required_unless_present = "snapshot_arg"
    )]
    pub snapshot_flag: Option<String>,
    /// The snapshot, as restic takes it (`restore latest --target DIR`).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot_arg: Option<String>,
    /// Directory to restore into.
    #[arg(long, short = 't', required_unless_present_any = ["to_volume", "all_volumes"])]
    pub target: Option<PathBuf>,
    /// Restore only this path inside the snapshot (repeatable), e.g. `workspace/`.
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// When a file that exists in the target is replaced: `always`, `if-changed` (size and
    /// mtime, then content), `if-newer`, `never`. A bare `--overwrite` means `always`.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1,
          default_value = "if-changed", default_missing_value = "always")]
    pub overwrite: crate::engine::restore::Overwrite,
    /// Remove entries of the target that are not in the snapshot (inside what is restored).
    #[arg(long)]
    pub delete: bool,
    /// Change nothing: list what would be written and deleted.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Restore only entries matching this glob (repeatable): a name (`*.conf`) at any depth,
    /// or a path from the snapshot's root (`workspace/src/**`).
    #[arg(long = "include", short = 'i', value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Leave out entries matching this glob (repeatable), as `--include` reads them.
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read the restored files back and compare them with the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Also recreate device nodes and security.* / trusted.* extended attributes (a system's
    /// own backup, restored as root). Without it they are skipped; set-id bits are kept only
    /// where ownership is restored (as root).
    #[arg(long)]
    pub privileged: bool,
    #[command(flatten)]
    pub latest: LatestFilterArgs,
    /// Restore into a Docker volume instead (`--to-volume`).
    #[command(flatten)]
    pub docker: super::docker::DockerRestoreArgs,
}

/// `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read and verify all data.
    #[arg(long)]
    pub read_data: bool,
    /// Read and verify a share of the packs (`1/7`, `10%`), least recently verified first, so
    /// that N runs of 1/N verify every pack.
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data",
          value_parser = crate::engine::check::Subset::parse)]
    pub read_data_subset: Option<crate::engine::check::Subset>,
    /// Stop reporting the snapshots that vanished from the repository without a `coffer
    /// forget` on this host (once you know why: removed on purpose elsewhere, say).
    #[arg(long)]
    pub acknowledge_vanished: bool,
}

/// `key`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a passphrase (from COFFER_NEW_PASSWORD, --new-password-file, or a prompt).
    Add(NewPassword),
    /// List keys.
    List,
    /// Remove a key by id prefix.
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the passphrase of the key in use.
    Passwd(NewPassword),
}

/// The new passphrase for `key add` / `key passwd`.
#[derive(Args, Debug)]
pub struct NewPassword {
    /// File holding the new passphrase.
    #[arg(long, env = "COFFER_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// `repair`.
#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Delete and rebuild the local catalog from the repository.
    Catalog,
    /// Write index files for packs that no index names, from the packs' own headers.
    Index,
}

/// `unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones.
    #[arg(long)]
    pub remove_all: bool,
}

impl RestoreArgs {
    /// The snapshot asked for, by flag or argument (clap requires one).
    pub fn snapshot(&self) -> &str {
        self.snapshot_flag
            .as_deref()
            .or(self.snapshot_arg.as_deref())
            .unwrap_or("latest")
    }
}

impl LsArgs {
    /// The snapshot and the path inside it, from `--snapshot` and the arguments.
    pub fn snapshot_and_path(&self) -> anyhow::Result<(&str, &str)> {
        let mut args = self.args.iter().map(String::as_str);
        let snapshot = match self.snapshot_flag.as_deref() {
            Some(s) => s,
            None => args.next().ok_or_else(|| {
                anyhow::anyhow!("ls needs a snapshot: `coffer ls latest` or `coffer ls -s ID`")
            })?,
        };
        let path = args.next().unwrap_or("");
        if args.next().is_some() {
            anyhow::bail!("ls takes one path inside the snapshot");
        }
        Ok((snapshot, path))
    }
}
