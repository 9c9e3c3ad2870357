//! Helpers of the integration tests: an isolated environment per test (repository, cache and
//! home in one temporary directory) that runs the real `coffer` binary, and comparisons of
//! directory trees, repository sizes and byte patterns.

// Not every test binary that includes this module uses every helper.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod s3_server;
pub mod strict_json;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// The passphrase every test repository is created with.
pub const PASSWORD: &str = "correct horse battery staple";

/// Exit codes of the binary (see `src/cli/mod.rs`).
pub mod exit {
    /// Any error.
    pub const ERROR: i32 = 1;
    /// The backup finished but some files could not be read.
    pub const PARTIAL: i32 = 3;
    /// No repository at the given location.
    pub const NO_REPOSITORY: i32 = 10;
    /// Wrong passphrase.
    pub const WRONG_PASSWORD: i32 = 12;
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub what: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output, lossy UTF-8.
    pub stdout: String,
    /// Standard error, lossy UTF-8.
    pub stderr: String,
}

impl Out {
    /// Panic with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "`{}` exited with {} instead of {code}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panic unless the command succeeded.
    #[track_caller]
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// Panic unless the command failed (any non-zero code).
    #[track_caller]
    pub fn failure(&self) -> &Self {
        assert_ne!(
            self.code, 0,
            "`{}` succeeded but should have failed\nstdout:\n{}\nstderr:\n{}",
            self.what, self.stdout, self.stderr
        );
        self
    }

    /// Panic unless stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr of `{}` does not mention {needle:?}:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not JSON ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }

    /// Stdout parsed as one JSON value by a parser that refuses duplicate keys.
    #[track_caller]
    pub fn strict_json(&self) -> serde_json::Value {
        strict_json::parse(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not strict JSON ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }

    /// Stdout parsed as JSON lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a line of `{}` is not JSON ({e}): {l}", self.what))
            })
            .collect()
    }
}

/// One test's world: a temporary directory holding the repository (`repo/`), the catalog
/// cache (`cache/`), a home directory (`home/`) and whatever the test creates.
pub struct Env {
    /// The temporary directory; removed on drop.
    pub dir: TempDir,
    /// The repository directory (`COFFER_REPO`).
    pub repo: PathBuf,
    /// The cache directory (`COFFER_CACHE_DIR`).
    pub cache: PathBuf,
    /// The home directory (`HOME`).
    pub home: PathBuf,
}

impl Env {
    /// A fresh environment without a repository.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("coffer-cli-")
            .tempdir()
            .expect("temporary directory");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home directory");
        Self {
            dir,
            repo,
            cache,
            home,
        }
    }

    /// A fresh environment with a repository created by `coffer init`.
    pub fn init() -> Self {
        let env = Self::new();
        env.run(["init"]).success();
        env
    }

    /// A path inside the temporary directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command for the binary with a clean environment (only `PATH`, `HOME` and the
    /// `COFFER_*` variables of this environment are set), run in the temporary directory.
    pub fn cmd_with_password(&self, password: &str) -> Command {
        let mut c = Command::cargo_bin("coffer").expect("the coffer binary");
        self.apply_env(&mut c, password);
        c
    }

    fn apply_env(&self, c: &mut Command, password: &str) {
        c.env_clear()
            .current_dir(self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("COFFER_REPO", &self.repo)
            .env("COFFER_PASSWORD", password)
            .env("COFFER_CACHE_DIR", &self.cache);
    }

    /// A command with the repository's passphrase.
    pub fn cmd(&self) -> Command {
        self.cmd_with_password(PASSWORD)
    }

    /// Run `coffer ARGS` with the repository's passphrase.
    #[track_caller]
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_cmd(self.cmd(), args)
    }

    /// Run `coffer ARGS` with another passphrase.
    #[track_caller]
    pub fn run_with_password<I, S>(&self, password: &str, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_cmd(self.cmd_with_password(password), args)
    }

    /// Run a prepared command with `args` appended; checks that nothing panicked.
    #[track_caller]
    pub fn run_cmd<I, S>(&self, mut c: Command, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = std::iter::once("coffer".to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        c.args(&args).timeout(std::time::Duration::from_secs(120));
        let o = c.output().expect("running coffer");
        let out = Out {
            what,
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        assert_no_panic(&out);
        out
    }

    /// A std command for `program` (e.g. a wrapper such as `setpriv`) with this
    /// environment's variables; the coffer binary's path is [`coffer_bin`].
    pub fn wrapped(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        self.apply_env(&mut c, PASSWORD);
        c
    }

    /// `coffer backup --json SOURCES...`, expecting success; the summary.
    #[track_caller]
    pub fn backup_json<S: AsRef<OsStr>>(&self, sources: &[S]) -> serde_json::Value {
        let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
        args.extend(sources.iter().map(|s| s.as_ref().to_owned()));
        let out = self.run(args);
        out.success();
        let v = out.json();
        assert_eq!(v["warnings"], serde_json::json!([]), "backup warnings: {v}");
        v
    }

    /// `coffer snapshots --json`.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.run(["snapshots", "--json"]);
        out.success();
        out.json()
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("snapshots --json is not an array: {}", out.stdout))
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

/// The path of the binary under test.
pub fn coffer_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("coffer")
}

/// No output of the binary may show a panic.
#[track_caller]
pub fn assert_no_panic(out: &Out) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for bad in ["panicked", "RUST_BACKTRACE"] {
            assert!(
                !text.contains(bad),
                "{stream} of `{}` contains {bad:?} (exit code {}):\n{text}",
                out.what,
                out.code
            );
        }
    }
}

/// Deterministic pseudo-random bytes (splitmix64), incompressible.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every entry below `root` (not `root` itself), as relative paths, without following
/// symlinks, sorted.
pub fn list_tree(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let dir = root.join(rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            out.push(r.clone());
            if e.file_type().expect("file type").is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Total size of the regular files below `root`.
pub fn dir_size(root: &Path) -> u64 {
    list_tree(root)
        .iter()
        .filter_map(|r| std::fs::symlink_metadata(root.join(r)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The `user.*` extended attributes of `path` (not following symlinks).
pub fn user_xattrs(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let Ok(names) = xattr::list(path) else {
        return BTreeMap::new();
    };
    names
        .filter(|n| n.as_bytes().starts_with(b"user."))
        .filter_map(|n| {
            let v = xattr::get(path, &n).ok().flatten()?;
            Some((n, v))
        })
        .collect()
}

fn kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "unknown"
    }
}

/// Assert that the trees at `a` and `b` are equal: the same entries with the same kinds,
/// contents, modes (whole `st_mode`), owners, mtimes to the nanosecond (of the entry itself,
/// symlinks included), symlink targets, `user.*` xattrs, and hardlink structure (entries that
/// share an inode in `a` share one in `b`, and only those). The roots are compared too.
#[track_caller]
pub fn assert_trees_equal(a: &Path, b: &Path) {
    let la = list_tree(a);
    let lb = list_tree(b);
    if la != lb {
        let sa: HashSet<&PathBuf> = la.iter().collect();
        let sb: HashSet<&PathBuf> = lb.iter().collect();
        let mut only_a: Vec<_> = sa.difference(&sb).collect();
        let mut only_b: Vec<_> = sb.difference(&sa).collect();
        only_a.sort();
        only_b.sort();
        panic!(
            "trees differ in entries\nonly in {}: {only_a:?}\nonly in {}: {only_b:?}",
            a.display(),
            b.display()
        );
    }
    let mut problems = Vec::new();
    // inode in a -> inode in b, and back: the mapping must be a bijection.
    let mut a_to_b: HashMap<u64, (u64, PathBuf)> = HashMap::new();
    let mut b_to_a: HashMap<u64, (u64, PathBuf)> = HashMap::new();
    for rel in std::iter::once(PathBuf::new()).chain(la) {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let shown = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let ma = std::fs::symlink_metadata(&pa).expect("lstat a");
        let mb = std::fs::symlink_metadata(&pb).expect("lstat b");
        let (ka, kb) = (kind(&ma), kind(&mb));
        if ka != kb {
            problems.push(format!("{}: kind {ka} vs {kb}", shown.display()));
            continue;
        }
        if ma.mode() != mb.mode() {
            problems.push(format!(
                "{}: mode {:o} vs {:o}",
                shown.display(),
                ma.mode(),
                mb.mode()
            ));
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            problems.push(format!(
                "{}: owner {}:{} vs {}:{}",
                shown.display(),
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            ));
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            problems.push(format!(
                "{}: mtime {}.{:09} vs {}.{:09}",
                shown.display(),
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            ));
        }
        match ka {
            "file" => {
                if ma.len() != mb.len() {
                    problems.push(format!(
                        "{}: size {} vs {}",
                        shown.display(),
                        ma.len(),
                        mb.len()
                    ));
                } else if std::fs::read(&pa).expect("read a") != std::fs::read(&pb).expect("read b")
                {
                    problems.push(format!("{}: content differs", shown.display()));
                }
            }
            "symlink" => {
                let (ta, tb) = (
                    std::fs::read_link(&pa).expect("readlink a"),
                    std::fs::read_link(&pb).expect("readlink b"),
                );
                if ta != tb {
                    problems.push(format!(
                        "{}: symlink target {} vs {}",
                        shown.display(),
                        ta.display(),
                        tb.display()
                    ));
                }
            }
            _ => {}
        }
        let (xa, xb) = (user_xattrs(&pa), user_xattrs(&pb));
        if xa != xb {
            problems.push(format!("{}: xattrs {xa:?} vs {xb:?}", shown.display()));
        }
        if ka != "dir" {
            let (ia, ib) = (ma.ino(), mb.ino());
            match a_to_b.get(&ia) {
                Some((seen_b, first)) if *seen_b != ib => problems.push(format!(
                    "{}: a hardlink of {} in the first tree is not one in the second",
                    shown.display(),
                    first.display()
                )),
                _ => {}
            }
            match b_to_a.get(&ib) {
                Some((seen_a, first)) if *seen_a != ia => problems.push(format!(
                    "{}: shares an inode with {} in the second tree but not in the first",
                    shown.display(),
                    first.display()
                )),
                _ => {}
            }
            a_to_b.entry(ia).or_insert((ib, rel.clone()));
            b_to_a.entry(ib).or_insert((ia, rel.clone()));
        }
    }
    assert!(
        problems.is_empty(),
        "trees {} and {} differ:\n  {}",
        a.display(),
        b.display(),
        problems.join("\n  ")
    );
}

/// Find any `window`-byte slice of any of `needles` in any file below `root`. Returns the
/// file, the offset in it, and which needle.
pub fn find_windows(
    root: &Path,
    needles: &[&[u8]],
    window: usize,
) -> Option<(PathBuf, usize, usize)> {
    let mut set: HashMap<&[u8], usize> = HashMap::new();
    for (i, n) in needles.iter().enumerate() {
        let w = window.min(n.len());
        for s in n.windows(w) {
            set.entry(s).or_insert(i);
        }
    }
    let sizes: HashSet<usize> = needles.iter().map(|n| window.min(n.len())).collect();
    for rel in list_tree(root) {
        let p = root.join(&rel);
        if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let bytes = std::fs::read(&p).expect("read repository file");
        for &w in &sizes {
            for (off, s) in bytes.windows(w).enumerate() {
                if let Some(&i) = set.get(s) {
                    return Some((rel, off, i));
                }
            }
        }
    }
    None
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A file name from raw bytes.
pub fn raw_name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Copy a directory tree of plain files (a repository, for crash tests on copies).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
