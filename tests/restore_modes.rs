//! End-to-end tests of `coffer restore` into targets that already hold files: the overwrite
//! modes (`--overwrite always|if-changed|if-newer|never`, `if-changed` by default, a bare
//! `--overwrite` meaning `always`), `--delete`, `--dry-run`, `--include` / `--exclude`,
//! `--verify`, atomic per-file writes (no `.coffer-tmp` left behind), type changes, stale
//! temporary files and the JSON summary. Every test gets its own temporary directory with its
//! own repository, catalog cache and home (see `common`), backs up a small tree named `src`
//! and restores it with the real binary; the restored tree is then `TARGET/src`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Env, Out, assert_trees_equal, list_tree, raw_name, user_xattrs};
use filetime::FileTime;
use serde_json::{Value, json};

/// Base of the mtimes of the non-directories of the test trees.
const T0: i64 = 1_600_000_000;

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn set_mtime(path: &Path, secs: i64, nsec: u32) {
    let t = FileTime::from_unix_time(secs, nsec);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("utimes {}: {e}", path.display()));
}

fn mkfifo(path: &Path, mode: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(mode),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

fn lstat(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
}

fn ino(path: &Path) -> u64 {
    lstat(path).ino()
}

fn mtime(path: &Path) -> (i64, i64) {
    let m = lstat(path);
    (m.mtime(), m.mtime_nsec())
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Distinct mtimes with nanoseconds on every entry below `root` and on `root`: non-directories
/// from [`T0`] on, then directories deepest first (so setting one never disturbs another).
fn set_tree_times(root: &Path) {
    let mut entries = list_tree(root);
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let (mut dirs, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|p| lstat(&root.join(p)).is_dir());
    for (i, rel) in others.iter().enumerate() {
        set_mtime(&root.join(rel), T0 + i as i64, 123_456_789 - i as u32);
    }
    dirs.push(PathBuf::new());
    for (i, rel) in dirs.iter().enumerate() {
        set_mtime(
            &root.join(rel),
            1_700_000_000 + i as i64,
            987_654_321 - i as u32,
        );
    }
}

/// The regular files of [`build_tree`].
const TREE_FILES: [&str; 5] = [
    "a.txt",
    "b.txt",
    "sub/c.txt",
    "sub/inner/d.txt",
    "other/e.txt",
];

/// A small tree: five regular files in nested directories (one with mode 0640), a symlink and
/// an empty directory, all with distinct nanosecond mtimes. No hardlinks, so every count of
/// files is unambiguous.
fn build_tree(src: &Path) {
    write(&src.join("a.txt"), "alpha\n");
    write(&src.join("b.txt"), "bravo bravo\n");
    chmod(&src.join("b.txt"), 0o640);
    write(&src.join("sub/c.txt"), "charlie\n");
    write(&src.join("sub/inner/d.txt"), "delta delta delta\n");
    write(&src.join("other/e.txt"), "echo\n");
    symlink("a.txt", &src.join("link"));
    std::fs::create_dir(src.join("empty")).unwrap();
    set_tree_times(src);
}

/// Build a source tree with every kind of entry and metadata a restore must reproduce (as
/// `build_rich_tree` in `tests/cli.rs`, without its large sparse and deep files). Returns
/// whether the file system took the user xattrs.
fn build_rich_tree(src: &Path) -> bool {
    std::fs::create_dir_all(src).unwrap();
    write(&src.join("file.txt"), "some text\n".repeat(100));
    chmod(&src.join("file.txt"), 0o640);
    write(&src.join("exec.sh"), "#!/bin/sh\necho hi\n");
    chmod(&src.join("exec.sh"), 0o755);
    write(&src.join("setuid"), "setuid and sticky bits\n");
    chmod(&src.join("setuid"), 0o4711);
    write(&src.join("empty"), "");
    chmod(&src.join("empty"), 0o600);
    std::fs::create_dir(src.join("emptydir")).unwrap();
    chmod(&src.join("emptydir"), 0o700);
    symlink("file.txt", &src.join("link"));
    symlink("/nonexistent/coffer/target", &src.join("dangling"));
    write(&src.join("hl1"), "one inode, two names\n");
    std::fs::create_dir(src.join("sub")).unwrap();
    chmod(&src.join("sub"), 0o750);
    std::fs::hard_link(src.join("hl1"), src.join("sub/hl2")).unwrap();
    write(
        &src.join(raw_name(b"caf\xe9")),
        "a name that is not UTF-8\n",
    );
    write(&src.join("sub/nested.txt"), "nested\n");
    mkfifo(&src.join("fifo"), 0o640);
    let attrs = src.join("sub/attrs.txt");
    write(&attrs, "has xattrs\n");
    let xattrs_ok = xattr::set(&attrs, "user.coffer.text", b"alpha").is_ok();
    if xattrs_ok {
        xattr::set(&attrs, "user.coffer.binary", &[0u8, 255, 1, 2]).unwrap();
        xattr::set(src.join("sub"), "user.coffer.dir", b"on a directory").unwrap();
    } else {
        eprintln!("note: the file system of the temp dir has no user xattrs; not tested");
    }
    set_tree_times(src);
    xattrs_ok
}

/// A fresh repository holding one snapshot of `src/` made by `build`; the environment and the
/// source directory.
fn backed_up(build: impl FnOnce(&Path)) -> (Env, PathBuf) {
    let env = Env::init();
    let src = env.path("src");
    build(&src);
    env.backup_json(&[&src]);
    (env, src)
}

/// `coffer restore -s latest -t TARGET EXTRA...`.
#[track_caller]
fn restore(env: &Env, target: &Path, extra: &[&str]) -> Out {
    let mut args: Vec<OsString> = ["restore", "-s", "latest", "-t"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(target.into());
    args.extend(extra.iter().map(OsString::from));
    env.run(args)
}

/// `coffer restore --json ...`, expecting success without errors; the summary.
#[track_caller]
fn restore_json(env: &Env, target: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = restore(env, target, &args);
    out.success();
    let v = out.json();
    assert_eq!(v["errors"], json!([]), "restore errors: {v}");
    v
}

/// A number of a JSON summary.
#[track_caller]
fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key:?} is not a non-negative integer in {v}"))
}

/// Every entry below `root` whose name contains `.coffer-tmp`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    list_tree(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".coffer-tmp"))
        })
        .collect()
}

#[track_caller]
fn assert_no_temp_files(root: &Path) {
    let left = temp_files(root);
    assert!(
        left.is_empty(),
        "temporary files left in the target: {left:?}"
    );
}

/// The entries below `root` as a set.
fn entry_set(root: &Path) -> BTreeSet<PathBuf> {
    list_tree(root).into_iter().collect()
}

/// A set of relative paths.
fn paths(list: &[&str]) -> BTreeSet<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

/// The entries of a snapshot of `src` as restored under a target: `src` and `src/...`.
fn restored_entries(src: &Path) -> BTreeSet<PathBuf> {
    std::iter::once(PathBuf::from("src"))
        .chain(list_tree(src).into_iter().map(|p| Path::new("src").join(p)))
        .collect()
}

/// Everything observable about one entry, for "nothing changed" comparisons.
#[derive(Debug, PartialEq, Eq)]
struct EntryState {
    /// Whole `st_mode` (kind and permission bits).
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ino: u64,
    nlink: u64,
    /// Content of a regular file (the trees are small).
    content: Option<Vec<u8>>,
    link_target: Option<PathBuf>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// The state of `root` itself (as `.`) and of every entry below it.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, EntryState> {
    std::iter::once(PathBuf::from("."))
        .chain(list_tree(root))
        .map(|rel| {
            let p = root.join(&rel);
            let m = lstat(&p);
            let state = EntryState {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: m.len(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ino: m.ino(),
                nlink: m.nlink(),
                content: m.is_file().then(|| read(&p)),
                link_target: m
                    .file_type()
                    .is_symlink()
                    .then(|| std::fs::read_link(&p).unwrap()),
                xattrs: user_xattrs(&p),
            };
            (rel, state)
        })
        .collect()
}

#[track_caller]
fn assert_state_unchanged(
    before: &BTreeMap<PathBuf, EntryState>,
    after: &BTreeMap<PathBuf, EntryState>,
) {
    let mut problems = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => problems.push(format!("{}: removed", p.display())),
            Some(a) if a != b => {
                problems.push(format!("{}: changed\n    {b:?}\n -> {a:?}", p.display()))
            }
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        problems.push(format!("{}: created", p.display()));
    }
    assert!(
        problems.is_empty(),
        "the target changed:\n  {}",
        problems.join("\n  ")
    );
}

/// The inode number of every regular file of [`build_tree`] restored under `restored`.
fn file_inodes(restored: &Path) -> BTreeMap<&'static str, u64> {
    TREE_FILES
        .iter()
        .map(|f| (*f, ino(&restored.join(f))))
        .collect()
}

/// The inode number of every regular file below `root`.
fn regular_file_inodes(root: &Path) -> BTreeMap<PathBuf, u64> {
    list_tree(root)
        .into_iter()
        .filter(|p| lstat(&root.join(p)).is_file())
        .map(|p| {
            let i = ino(&root.join(&p));
            (p, i)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Behaviour the old restore already had.
// ---------------------------------------------------------------------------------------

#[test]
fn fresh_restore_leaves_no_temporary_files() {
    let (env, src) = backed_up(|s| {
        build_rich_tree(s);
    });
    let target = env.path("restored");
    restore(&env, &target, &[]).success();
    assert_trees_equal(&src, &target.join("src"));
    assert_no_temp_files(&target);

    // The same restore again over the complete target, with the old bare `--overwrite`.
    restore(&env, &target, &["--overwrite"]).success();
    assert_trees_equal(&src, &target.join("src"));
    assert_no_temp_files(&target);
}

#[test]
fn overwrite_rejects_an_unknown_mode() {
    let (env, _src) = backed_up(build_tree);
    let target = env.path("restored");
    restore(&env, &target, &["--overwrite", "sometimes"]).failure();
    assert!(!target.exists(), "a refused command created the target");
}

// ---------------------------------------------------------------------------------------
// The JSON summary and re-running a restore.
// ---------------------------------------------------------------------------------------

#[test]
fn json_summary_of_a_fresh_restore_has_every_field() {
    let env = Env::init();
    let src = env.path("src");
    build_tree(&src);
    let id = env.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = env.path("restored");
    let s = restore_json(&env, &target, &[]);
    assert_eq!(s["snapshot_id"], id.as_str(), "{s}");
    assert_eq!(num(&s, "files"), TREE_FILES.len() as u64, "{s}");
    assert_eq!(num(&s, "files_written"), TREE_FILES.len() as u64, "{s}");
    assert_eq!(num(&s, "files_unchanged"), 0, "{s}");
    assert!(
        num(&s, "dirs") >= 5,
        "src, sub, sub/inner, other, empty: {s}"
    );
    assert_eq!(num(&s, "bytes"), common::dir_size(&src), "{s}");
    assert_eq!(num(&s, "deleted"), 0, "{s}");
    assert_eq!(s["dry_run"], false, "{s}");
    assert!(s["errors"].is_array(), "{s}");
    assert!(
        num(&s, "requests") > 0,
        "files were written without reads: {s}"
    );
    assert!(num(&s, "bytes_fetched") > 0, "{s}");
    assert_trees_equal(&src, &target.join("src"));
}

#[test]
fn rerun_with_default_mode_writes_and_fetches_nothing() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    let first = restore_json(&env, &target, &[]);
    assert_eq!(
        num(&first, "files_written"),
        TREE_FILES.len() as u64,
        "{first}"
    );
    let inodes = file_inodes(&restored);

    let again = restore_json(&env, &target, &[]);
    assert_eq!(num(&again, "files_written"), 0, "{again}");
    assert_eq!(
        num(&again, "files_unchanged"),
        TREE_FILES.len() as u64,
        "{again}"
    );
    assert_eq!(
        num(&again, "files_unchanged"),
        num(&again, "files"),
        "{again}"
    );
    assert_eq!(num(&again, "bytes"), 0, "{again}");
    assert_eq!(num(&again, "deleted"), 0, "{again}");
    assert_eq!(
        num(&again, "requests"),
        0,
        "nothing had to be fetched: {again}"
    );
    assert_eq!(num(&again, "bytes_fetched"), 0, "{again}");
    assert_eq!(again["dry_run"], false, "{again}");
    assert_eq!(
        file_inodes(&restored),
        inodes,
        "unchanged files were rewritten"
    );
    assert_trees_equal(&src, &restored);
    assert_no_temp_files(&target);
}

// ---------------------------------------------------------------------------------------
// --overwrite modes.
// ---------------------------------------------------------------------------------------

#[test]
fn no_overwrite_mode_fails_on_a_target_that_holds_the_files() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    restore(&env, &target, &[]).success();
    for extra in [
        &[][..],
        &["--overwrite"],
        &["--overwrite", "always"],
        &["--overwrite", "if-changed"],
        &["--overwrite", "if-newer"],
        &["--overwrite", "never"],
        &["--overwrite=never"],
    ] {
        let out = restore(&env, &target, extra);
        out.success();
        assert!(
            !out.stderr.contains("error"),
            "restore {extra:?} reported errors:\n{}",
            out.stderr
        );
        assert_trees_equal(&src, &target.join("src"));
        assert_no_temp_files(&target);
    }
}

#[test]
fn default_mode_rewrites_a_file_of_different_size() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    write(&restored.join("a.txt"), "alpha, changed and longer\n");
    let s = restore_json(&env, &target, &[]);
    assert_eq!(read(&restored.join("a.txt")), b"alpha\n");
    assert_eq!(num(&s, "files_written"), 1, "{s}");
    assert_eq!(
        num(&s, "files_unchanged"),
        TREE_FILES.len() as u64 - 1,
        "{s}"
    );
    assert_eq!(num(&s, "bytes"), "alpha\n".len() as u64, "{s}");
    assert_trees_equal(&src, &restored);
}

#[test]
fn default_mode_keeps_identical_content_and_restores_its_metadata() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    let b = restored.join("b.txt");
    let inode = ino(&b);
    set_mtime(&b, T0 + 50_000, 1);
    chmod(&b, 0o666);

    let s = restore_json(&env, &target, &[]);
    assert_eq!(
        ino(&b),
        inode,
        "a file with the snapshot's content was rewritten"
    );
    assert_eq!(read(&b), b"bravo bravo\n");
    assert_eq!(mtime(&b), mtime(&src.join("b.txt")), "mtime not restored");
    assert_eq!(lstat(&b).mode() & 0o7777, 0o640, "mode not restored");
    assert_eq!(num(&s, "files_written"), 0, "{s}");
    assert_eq!(num(&s, "bytes"), 0, "{s}");
    assert_trees_equal(&src, &restored);
}

#[test]
fn default_mode_rewrites_same_size_different_content() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    let b = restored.join("b.txt");
    write(&b, "BRAVO BRAVO\n");
    assert_eq!(lstat(&b).len(), lstat(&src.join("b.txt")).len());
    assert_ne!(mtime(&b), mtime(&src.join("b.txt")));

    let s = restore_json(&env, &target, &[]);
    assert_eq!(
        read(&b),
        b"bravo bravo\n",
        "a changed file of equal size was kept"
    );
    assert_eq!(num(&s, "files_written"), 1, "{s}");
    assert_eq!(
        num(&s, "files_unchanged"),
        TREE_FILES.len() as u64 - 1,
        "{s}"
    );
    assert_trees_equal(&src, &restored);
}

/// The spec's shortcut: a file whose size and mtime match the snapshot's is taken as
/// unchanged without reading it (as restic does), so a same-size edit that kept the mtime
/// survives the default mode; `--overwrite always` replaces it.
#[test]
fn default_mode_trusts_matching_size_and_mtime() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    let b = restored.join("b.txt");
    let when = mtime(&src.join("b.txt"));
    write(&b, "BRAVO BRAVO\n");
    set_mtime(&b, when.0, when.1 as u32);
    let inode = ino(&b);

    let s = restore_json(&env, &target, &[]);
    assert_eq!(num(&s, "files_written"), 0, "{s}");
    assert_eq!(num(&s, "files_unchanged"), TREE_FILES.len() as u64, "{s}");
    assert_eq!(read(&b), b"BRAVO BRAVO\n");
    assert_eq!(ino(&b), inode);

    let s = restore_json(&env, &target, &["--overwrite", "always"]);
    assert_eq!(read(&b), b"bravo bravo\n");
    assert_eq!(num(&s, "files_written"), TREE_FILES.len() as u64, "{s}");
    assert_trees_equal(&src, &restored);
}

#[test]
fn explicit_if_changed_behaves_as_the_default() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    // (a) different size, (b) same content with another mtime, (c) same size, new content.
    write(&restored.join("a.txt"), "alpha, changed and longer\n");
    let b = restored.join("b.txt");
    let b_inode = ino(&b);
    set_mtime(&b, T0 + 50_000, 1);
    write(&restored.join("sub/c.txt"), "CHARLIE\n");
    let untouched = file_inodes(&restored);

    let s = restore_json(&env, &target, &["--overwrite", "if-changed"]);
    assert_eq!(num(&s, "files_written"), 2, "{s}");
    assert_eq!(num(&s, "files_unchanged"), 3, "{s}");
    assert_eq!(
        num(&s, "bytes"),
        ("alpha\n".len() + "charlie\n".len()) as u64,
        "{s}"
    );
    assert_eq!(read(&restored.join("a.txt")), b"alpha\n");
    assert_eq!(read(&restored.join("sub/c.txt")), b"charlie\n");
    assert_eq!(ino(&b), b_inode, "b.txt had the snapshot's content");
    for f in ["sub/inner/d.txt", "other/e.txt"] {
        assert_eq!(ino(&restored.join(f)), untouched[f], "{f} was rewritten");
    }
    assert_trees_equal(&src, &restored);
}

#[test]
fn overwrite_always_rewrites_every_file() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    let before = file_inodes(&restored);

    let s = restore_json(&env, &target, &["--overwrite", "always"]);
    assert_eq!(num(&s, "files_written"), TREE_FILES.len() as u64, "{s}");
    assert_eq!(num(&s, "files_unchanged"), 0, "{s}");
    assert_eq!(num(&s, "bytes"), common::dir_size(&src), "{s}");
    let after = file_inodes(&restored);
    for f in TREE_FILES {
        assert_ne!(before[f], after[f], "{f} was not rewritten (same inode)");
    }
    assert_trees_equal(&src, &restored);
    assert_no_temp_files(&target);
}

#[test]
fn bare_overwrite_means_always() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();

    // Before the other options, as old scripts wrote it...
    let before = file_inodes(&restored);
    let mut args: Vec<OsString> = ["restore", "--overwrite", "--json", "-s", "latest", "-t"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(target.clone().into());
    let out = env.run(args);
    out.success();
    let s = out.json();
    assert_eq!(num(&s, "files_written"), TREE_FILES.len() as u64, "{s}");
    let after = file_inodes(&restored);
    for f in TREE_FILES {
        assert_ne!(
            before[f], after[f],
            "{f} was not rewritten by a bare --overwrite"
        );
    }
    assert_trees_equal(&src, &restored);

    // ...and last.
    let s = restore_json(&env, &target, &["--overwrite"]);
    assert_eq!(num(&s, "files_written"), TREE_FILES.len() as u64, "{s}");
    let last = file_inodes(&restored);
    for f in TREE_FILES {
        assert_ne!(
            after[f], last[f],
            "{f} was not rewritten by a bare --overwrite"
        );
    }
    assert_trees_equal(&src, &restored);
}

#[test]
fn overwrite_if_newer_replaces_only_older_files() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    // Newer than the snapshot: kept.
    let a = restored.join("a.txt");
    write(&a, "alpha, edited after the backup\n");
    set_mtime(&a, T0 + 100_000, 7);
    // Older than the snapshot: replaced.
    let b = restored.join("b.txt");
    write(&b, "an older bravo\n");
    set_mtime(&b, T0 - 100_000, 7);
    // Missing: restored.
    std::fs::remove_file(restored.join("sub/c.txt")).unwrap();
    // As in the snapshot (same mtime, so not newer): left alone.
    let e_inode = ino(&restored.join("other/e.txt"));

    let s = restore_json(&env, &target, &["--overwrite", "if-newer"]);
    assert_eq!(
        read(&a),
        b"alpha, edited after the backup\n",
        "a newer file was replaced"
    );
    assert_eq!(mtime(&a), (T0 + 100_000, 7));
    assert_eq!(read(&b), b"bravo bravo\n", "an older file was kept");
    assert_eq!(mtime(&b), mtime(&src.join("b.txt")));
    assert_eq!(lstat(&b).mode() & 0o7777, 0o640);
    assert_eq!(read(&restored.join("sub/c.txt")), b"charlie\n");
    assert_eq!(
        mtime(&restored.join("sub/c.txt")),
        mtime(&src.join("sub/c.txt"))
    );
    assert_eq!(ino(&restored.join("other/e.txt")), e_inode);
    assert_eq!(num(&s, "files_written"), 2, "b.txt and sub/c.txt: {s}");
    assert_no_temp_files(&target);
}

#[test]
fn overwrite_never_keeps_existing_files_and_restores_missing_ones() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    let a = restored.join("a.txt");
    write(&a, "alpha, edited after the backup\n");
    set_mtime(&a, T0 + 100_000, 7);
    let b = restored.join("b.txt");
    write(&b, "an older bravo\n");
    set_mtime(&b, T0 - 100_000, 7);
    let b_inode = ino(&b);
    std::fs::remove_file(restored.join("sub/c.txt")).unwrap();
    std::fs::remove_dir_all(restored.join("other")).unwrap();

    let s = restore_json(&env, &target, &["--overwrite", "never"]);
    assert_eq!(read(&a), b"alpha, edited after the backup\n");
    assert_eq!(mtime(&a), (T0 + 100_000, 7));
    assert_eq!(
        read(&b),
        b"an older bravo\n",
        "--overwrite never replaced a file"
    );
    assert_eq!(mtime(&b), (T0 - 100_000, 7));
    assert_eq!(ino(&b), b_inode);
    assert_eq!(read(&restored.join("sub/c.txt")), b"charlie\n");
    assert_eq!(read(&restored.join("other/e.txt")), b"echo\n");
    assert_eq!(
        mtime(&restored.join("other/e.txt")),
        mtime(&src.join("other/e.txt"))
    );
    assert_eq!(
        num(&s, "files_written"),
        2,
        "sub/c.txt and other/e.txt: {s}"
    );
    assert_no_temp_files(&target);
}

// ---------------------------------------------------------------------------------------
// --delete.
// ---------------------------------------------------------------------------------------

/// Put entries that are not in the snapshot of [`build_tree`] into `target`, which holds a
/// restore of it. Returns their number (top-level extras only: a directory counts once).
fn plant_extras(target: &Path, outside: &Path) -> u64 {
    let restored = target.join("src");
    write(&restored.join("extra.txt"), "not in the snapshot\n");
    write(
        &restored.join("extradir/a/b.txt"),
        "a whole extra directory\n",
    );
    write(&restored.join("extradir/c.txt"), "more\n");
    write(
        &restored.join("sub/inner/extra-nested.txt"),
        "nested extra\n",
    );
    write(&restored.join("empty/intruder"), "in the empty directory\n");
    write(&outside.join("keep.txt"), "outside the target\n");
    symlink(outside, &restored.join("extra-link"));
    write(
        &target.join("stray.txt"),
        "next to the snapshot's top directory\n",
    );
    6
}

#[test]
fn without_delete_extra_entries_stay() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    restore(&env, &target, &[]).success();
    let outside = env.path("outside");
    plant_extras(&target, &outside);
    let before = entry_set(&target);

    let s = restore_json(&env, &target, &[]);
    assert_eq!(num(&s, "deleted"), 0, "{s}");
    assert_eq!(
        entry_set(&target),
        before,
        "extras were removed without --delete"
    );
    for f in TREE_FILES {
        assert_eq!(read(&target.join("src").join(f)), read(&src.join(f)), "{f}");
    }
}

#[test]
fn delete_removes_files_symlinks_and_directories_not_in_the_snapshot() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    restore(&env, &target, &[]).success();
    let outside = env.path("outside");
    let extras = plant_extras(&target, &outside);

    let s = restore_json(&env, &target, &["--delete"]);
    let deleted = num(&s, "deleted");
    assert!(
        (extras..=extras + 4).contains(&deleted),
        "{extras} extras (3 entries more below them): {s}"
    );
    assert_eq!(
        entry_set(&target),
        restored_entries(&src),
        "--delete of the whole snapshot left extras"
    );
    assert_trees_equal(&src, &target.join("src"));
    // The extra symlink was removed, not followed.
    assert_eq!(read(&outside.join("keep.txt")), b"outside the target\n");
    assert_eq!(entry_set(&outside), paths(&["keep.txt"]));
    assert_no_temp_files(&target);
}

#[test]
fn delete_with_path_removes_only_below_that_path() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    restore(&env, &target, &[]).success();
    let restored = target.join("src");
    let outside = env.path("outside");
    plant_extras(&target, &outside);
    write(&restored.join("sub/extra.txt"), "extra in sub\n");
    write(
        &restored.join("sub/extradir/x.txt"),
        "extra directory in sub\n",
    );
    std::fs::remove_file(restored.join("sub/c.txt")).unwrap();
    let before = entry_set(&target);

    restore_json(&env, &target, &["--delete", "--path", "src/sub/"]);
    assert_trees_equal(&src.join("sub"), &restored.join("sub"));
    let gone: BTreeSet<PathBuf> = before.difference(&entry_set(&target)).cloned().collect();
    assert_eq!(
        gone,
        paths(&[
            "src/sub/extra.txt",
            "src/sub/extradir",
            "src/sub/extradir/x.txt",
            "src/sub/inner/extra-nested.txt",
        ]),
        "--delete --path src/sub/ removed the wrong entries"
    );
    let added: Vec<_> = entry_set(&target).difference(&before).cloned().collect();
    assert_eq!(added, [PathBuf::from("src/sub/c.txt")]);
    assert_eq!(read(&outside.join("keep.txt")), b"outside the target\n");
}

// ---------------------------------------------------------------------------------------
// --dry-run.
// ---------------------------------------------------------------------------------------

/// A target holding a restore of [`build_tree`] with `b.txt` changed (other size),
/// `sub/inner/d.txt` missing and two extra files, `x.txt` and `sub/y.txt`.
fn dry_run_target(env: &Env) -> PathBuf {
    let target = env.path("restored");
    restore(env, &target, &[]).success();
    let restored = target.join("src");
    write(
        &restored.join("b.txt"),
        "bravo, but longer than in the snapshot\n",
    );
    std::fs::remove_file(restored.join("sub/inner/d.txt")).unwrap();
    write(&restored.join("x.txt"), "extra\n");
    write(&restored.join("sub/y.txt"), "extra too\n");
    target
}

#[test]
fn dry_run_changes_nothing_and_counts_what_it_would_do() {
    let (env, _src) = backed_up(build_tree);
    let target = dry_run_target(&env);
    let before = tree_state(&target);

    let s = restore_json(&env, &target, &["--dry-run", "--delete"]);
    assert_state_unchanged(&before, &tree_state(&target));
    assert_eq!(s["dry_run"], true, "{s}");
    assert_eq!(
        num(&s, "files_written"),
        2,
        "b.txt and sub/inner/d.txt: {s}"
    );
    assert_eq!(num(&s, "files_unchanged"), 3, "{s}");
    assert_eq!(num(&s, "deleted"), 2, "x.txt and sub/y.txt: {s}");
    assert_eq!(
        num(&s, "bytes"),
        ("bravo bravo\n".len() + "delta delta delta\n".len()) as u64,
        "{s}"
    );

    // Without --delete nothing would be deleted; still nothing changes.
    let s = restore_json(&env, &target, &["--dry-run"]);
    assert_eq!(s["dry_run"], true, "{s}");
    assert_eq!(num(&s, "deleted"), 0, "{s}");
    assert_eq!(num(&s, "files_written"), 2, "{s}");
    assert_state_unchanged(&before, &tree_state(&target));
}

#[test]
fn dry_run_with_every_mode_changes_nothing() {
    let (env, _src) = backed_up(build_tree);
    let target = dry_run_target(&env);
    // A stale temporary file and a type change must not be cleaned up by a dry run either.
    let restored = target.join("src");
    write(
        &restored.join("sub/.c.txt.coffer-tmp-12345"),
        "half written\n",
    );
    std::fs::remove_dir_all(restored.join("other")).unwrap();
    write(
        &restored.join("other"),
        "a file where the snapshot has a directory\n",
    );
    let before = tree_state(&target);
    for mode in ["always", "if-changed", "if-newer", "never"] {
        let out = restore(
            &env,
            &target,
            &["--json", "--dry-run", "--delete", "--overwrite", mode],
        );
        // Under `never` the file in the way of the directory `other` is kept, so that
        // directory cannot be restored: whether that is reported as an error is not what
        // this test is about. The other modes replace it.
        if mode == "never" {
            assert!(
                out.code == 0 || out.code == common::exit::ERROR,
                "`{}` exited with {}\nstdout:\n{}\nstderr:\n{}",
                out.what,
                out.code,
                out.stdout,
                out.stderr
            );
        } else {
            out.success();
            assert_eq!(out.json()["errors"], json!([]), "{}", out.stdout);
        }
        let s = out.json();
        assert_eq!(s["dry_run"], true, "{s}");
        assert_state_unchanged(&before, &tree_state(&target));
    }
}

#[test]
fn dry_run_does_not_create_the_target() {
    let (env, src) = backed_up(build_tree);
    let parent = env.path("missing");
    let target = parent.join("target");
    let s = restore_json(&env, &target, &["--dry-run"]);
    assert!(!parent.exists(), "--dry-run created {}", parent.display());
    assert_eq!(s["dry_run"], true, "{s}");
    assert_eq!(num(&s, "files_written"), TREE_FILES.len() as u64, "{s}");
    assert_eq!(num(&s, "files_unchanged"), 0, "{s}");
    assert_eq!(num(&s, "bytes"), common::dir_size(&src), "{s}");

    // Human output too.
    restore(&env, &target, &["--dry-run"]).success();
    assert!(!parent.exists(), "--dry-run created {}", parent.display());
}

#[test]
fn dry_run_lists_each_path_it_would_write_or_delete() {
    let (env, _src) = backed_up(build_tree);
    let target = dry_run_target(&env);
    let before = tree_state(&target);
    let out = restore(&env, &target, &["--dry-run", "--delete"]);
    out.success();
    let lines: Vec<&str> = out.stdout.lines().chain(out.stderr.lines()).collect();
    for p in [
        "src/b.txt",
        "src/sub/inner/d.txt",
        "src/x.txt",
        "src/sub/y.txt",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(p)),
            "the dry run does not list {p} on a line\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
    assert_state_unchanged(&before, &tree_state(&target));
}

// ---------------------------------------------------------------------------------------
// --include / --exclude.
// ---------------------------------------------------------------------------------------

/// A tree for the patterns: `.log` files at several depths (and a directory named `*.log`),
/// two directories named `data` (`src/data` and `src/keep/data`).
fn build_filter_tree(src: &Path) {
    for (p, content) in [
        ("a.txt", "a\n"),
        ("b.log", "b log\n"),
        ("data/x.bin", "x\n"),
        ("data/z.log", "z log\n"),
        ("data/deep/y.bin", "y\n"),
        ("docs/readme.md", "readme\n"),
        ("docs/notes.log", "notes\n"),
        ("keep/k.txt", "k\n"),
        ("keep/data/w.txt", "w\n"),
        (
            "keep/sub.log/inside.txt",
            "in a directory named like a log\n",
        ),
    ] {
        write(&src.join(p), content);
    }
    set_tree_times(src);
}

/// Restore into a fresh target with `patterns`; the entries it holds. Every restored regular
/// file must have its source's content.
#[track_caller]
fn restore_filtered(env: &Env, src: &Path, name: &str, patterns: &[&str]) -> BTreeSet<PathBuf> {
    let target = env.path(name);
    restore_json(env, &target, patterns);
    let got = entry_set(&target);
    for p in &got {
        let m = lstat(&target.join(p));
        if m.is_file() {
            let rel = p.strip_prefix("src").unwrap();
            assert_eq!(
                read(&target.join(p)),
                read(&src.join(rel)),
                "{}",
                p.display()
            );
        }
    }
    assert_no_temp_files(&target);
    got
}

/// The entries of the whole snapshot of `src` minus those for which `drop` holds.
fn all_but(src: &Path, drop: impl Fn(&str) -> bool) -> BTreeSet<PathBuf> {
    restored_entries(src)
        .into_iter()
        .filter(|p| !drop(p.to_str().unwrap()))
        .collect()
}

#[test]
fn exclude_by_name_and_by_path() {
    let (env, src) = backed_up(build_filter_tree);

    // A name pattern matches at any depth, directories included (with what is below them).
    let got = restore_filtered(&env, &src, "t-log", &["--exclude", "*.log"]);
    assert_eq!(
        got,
        all_but(&src, |p| p.ends_with(".log") || p.contains(".log/")),
        "--exclude '*.log'"
    );
    let got = restore_filtered(&env, &src, "t-data", &["--exclude", "data"]);
    assert_eq!(
        got,
        all_but(&src, |p| p.ends_with("/data") || p.contains("/data/")),
        "--exclude data (a name: both directories called data)"
    );

    // A pattern with a slash matches the path from the snapshot root, `/` optional.
    let want = all_but(&src, |p| p == "src/data" || p.starts_with("src/data/"));
    let got = restore_filtered(&env, &src, "t-path", &["--exclude", "src/data"]);
    assert_eq!(got, want, "--exclude src/data");
    assert!(got.contains(Path::new("src/keep/data/w.txt")));
    let got = restore_filtered(&env, &src, "t-rooted", &["--exclude", "/src/data"]);
    assert_eq!(got, want, "--exclude /src/data");
    let got = restore_filtered(&env, &src, "t-file", &["--exclude", "/src/a.txt"]);
    assert_eq!(
        got,
        all_but(&src, |p| p == "src/a.txt"),
        "--exclude /src/a.txt"
    );

    // `dir/**` drops everything below the directory (whether the directory itself is kept
    // is not specified).
    let mut got = restore_filtered(&env, &src, "t-glob", &["--exclude", "src/data/**"]);
    got.remove(Path::new("src/data"));
    let mut want = all_but(&src, |p| p.starts_with("src/data/"));
    want.remove(Path::new("src/data"));
    assert_eq!(got, want, "--exclude 'src/data/**'");

    // Repeatable.
    let got = restore_filtered(
        &env,
        &src,
        "t-two",
        &["--exclude", "*.log", "--exclude", "docs"],
    );
    assert_eq!(
        got,
        all_but(&src, |p| p.ends_with(".log")
            || p.contains(".log/")
            || p.starts_with("src/docs")),
        "--exclude '*.log' --exclude docs"
    );
}

#[test]
fn include_restores_matches_their_contents_and_their_parents() {
    let (env, src) = backed_up(build_filter_tree);

    let got = restore_filtered(&env, &src, "t-md", &["--include", "*.md"]);
    assert_eq!(
        got,
        paths(&["src", "src/docs", "src/docs/readme.md"]),
        "--include '*.md'"
    );

    let got = restore_filtered(&env, &src, "t-dir", &["--include", "src/data"]);
    assert_eq!(
        got,
        paths(&[
            "src",
            "src/data",
            "src/data/deep",
            "src/data/deep/y.bin",
            "src/data/x.bin",
            "src/data/z.log",
        ]),
        "--include src/data: the directory with everything below it, not src/keep/data"
    );

    let got = restore_filtered(&env, &src, "t-name", &["--include", "data"]);
    assert_eq!(
        got,
        paths(&[
            "src",
            "src/data",
            "src/data/deep",
            "src/data/deep/y.bin",
            "src/data/x.bin",
            "src/data/z.log",
            "src/keep",
            "src/keep/data",
            "src/keep/data/w.txt",
        ]),
        "--include data (a name, at any depth)"
    );

    let got = restore_filtered(
        &env,
        &src,
        "t-two",
        &["--include", "/src/a.txt", "--include", "*.md"],
    );
    assert_eq!(
        got,
        paths(&["src", "src/a.txt", "src/docs", "src/docs/readme.md"]),
        "--include /src/a.txt --include '*.md'"
    );
}

#[test]
fn exclude_wins_over_include() {
    let (env, src) = backed_up(build_filter_tree);
    let got = restore_filtered(
        &env,
        &src,
        "t",
        &["--include", "src/data", "--exclude", "*.log"],
    );
    assert_eq!(
        got,
        paths(&[
            "src",
            "src/data",
            "src/data/deep",
            "src/data/deep/y.bin",
            "src/data/x.bin",
        ])
    );
    let got = restore_filtered(
        &env,
        &src,
        "t2",
        &["--include", "src/keep", "--exclude", "src/keep/data"],
    );
    assert_eq!(
        got,
        paths(&[
            "src",
            "src/keep",
            "src/keep/k.txt",
            "src/keep/sub.log",
            "src/keep/sub.log/inside.txt",
        ])
    );
}

// ---------------------------------------------------------------------------------------
// --verify.
// ---------------------------------------------------------------------------------------

#[test]
fn verify_rereads_every_restored_file() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let s = restore_json(&env, &target, &["--verify"]);
    assert_eq!(num(&s, "verified"), TREE_FILES.len() as u64, "{s}");
    assert_eq!(num(&s, "verified"), num(&s, "files"), "{s}");
    assert_trees_equal(&src, &target.join("src"));

    // Human output, over the same target with every file rewritten.
    restore(&env, &target, &["--verify", "--overwrite", "always"]).success();
    assert_trees_equal(&src, &target.join("src"));
}

// ---------------------------------------------------------------------------------------
// Type changes, stale temporary files, a rich tree.
// ---------------------------------------------------------------------------------------

#[test]
fn type_change_between_file_and_directory_is_replaced() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    // A directory with content where the snapshot has the file a.txt...
    std::fs::remove_file(restored.join("a.txt")).unwrap();
    write(
        &restored.join("a.txt/x.txt"),
        "in a directory named a.txt\n",
    );
    write(&restored.join("a.txt/deeper/y.txt"), "deeper\n");
    // ...and a file where it has the directory sub/.
    std::fs::remove_dir_all(restored.join("sub")).unwrap();
    write(&restored.join("sub"), "a file named sub\n");

    restore_json(&env, &target, &[]);
    assert!(lstat(&restored.join("a.txt")).is_file());
    assert!(lstat(&restored.join("sub")).is_dir());
    assert_trees_equal(&src, &restored);
    assert_no_temp_files(&target);
}

#[test]
fn symlink_in_the_way_is_replaced_not_followed() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    let outside = env.path("outside");
    write(&outside.join("c.txt"), "outside, must stay\n");
    std::fs::remove_dir_all(restored.join("sub")).unwrap();
    symlink(&outside, &restored.join("sub"));
    std::fs::remove_file(restored.join("a.txt")).unwrap();
    symlink(outside.join("c.txt"), &restored.join("a.txt"));

    restore_json(&env, &target, &[]);
    assert_trees_equal(&src, &restored);
    assert_eq!(entry_set(&outside), paths(&["c.txt"]));
    assert_eq!(read(&outside.join("c.txt")), b"outside, must stay\n");
}

#[test]
fn stale_temporary_files_are_removed_by_the_next_restore() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    // Left by killed restores: next to an unchanged file, next to a changed one, and for a
    // file that was never completed.
    write(
        &restored.join("sub/.c.txt.coffer-tmp-12345"),
        "half written\n",
    );
    write(&restored.join(".a.txt.coffer-tmp-999"), "half");
    write(&restored.join("b.txt"), "changed bravo, longer\n");
    write(&restored.join(".b.txt.coffer-tmp-31337"), "half");
    std::fs::remove_file(restored.join("other/e.txt")).unwrap();
    write(&restored.join("other/.e.txt.coffer-tmp-4242"), "ec");

    restore_json(&env, &target, &[]);
    assert_no_temp_files(&target);
    assert_trees_equal(&src, &restored);
}

#[test]
fn rich_tree_over_a_modified_copy_with_delete_equals_the_source() {
    let env = Env::init();
    let src = env.path("src");
    let xattrs_ok = build_rich_tree(&src);
    env.backup_json(&[&src]);
    let target = env.path("restored");
    let restored = target.join("src");
    restore(&env, &target, &[]).success();
    assert_trees_equal(&src, &restored);

    // Content: other size; mtime only; mode only; an empty file filled.
    write(&restored.join("file.txt"), "rewritten by someone\n");
    set_mtime(&restored.join("exec.sh"), T0 + 999_999, 5);
    chmod(&restored.join("setuid"), 0o755);
    write(&restored.join("empty"), "no longer empty\n");
    // Symlinks: retargeted, removed.
    std::fs::remove_file(restored.join("link")).unwrap();
    symlink("exec.sh", &restored.join("link"));
    std::fs::remove_file(restored.join("dangling")).unwrap();
    // A hardlink broken into a copy with the same content and mtime.
    let hl2 = restored.join("sub/hl2");
    let hl2_time = mtime(&hl2);
    std::fs::remove_file(&hl2).unwrap();
    write(&hl2, "one inode, two names\n");
    set_mtime(&hl2, hl2_time.0, hl2_time.1 as u32);
    // A non-UTF-8 name removed; type changes: the FIFO and a file.
    std::fs::remove_file(restored.join(raw_name(b"caf\xe9"))).unwrap();
    std::fs::remove_file(restored.join("fifo")).unwrap();
    write(&restored.join("fifo"), "was a fifo\n");
    std::fs::remove_file(restored.join("sub/nested.txt")).unwrap();
    write(&restored.join("sub/nested.txt/inside.txt"), "was a file\n");
    // Directory metadata and xattrs.
    chmod(&restored.join("sub"), 0o700);
    if xattrs_ok {
        xattr::remove(restored.join("sub/attrs.txt"), "user.coffer.text").unwrap();
    }
    // Extras.
    write(&restored.join("emptydir/intruder.txt"), "extra\n");
    write(&restored.join("extra.txt"), "extra\n");
    write(&restored.join("extradir/a/b.txt"), "extra\n");
    symlink("file.txt", &restored.join("extra-link"));

    let s = restore_json(&env, &target, &["--delete"]);
    assert!(num(&s, "deleted") >= 4, "{s}");
    assert!(num(&s, "files_unchanged") >= 1, "{s}");
    assert_eq!(entry_set(&target), restored_entries(&src));
    assert_trees_equal(&src, &restored);
    let (m1, m2) = (lstat(&restored.join("hl1")), lstat(&hl2));
    assert_eq!(m1.ino(), m2.ino(), "the broken hardlink was not relinked");
    assert_eq!(m1.nlink(), 2);
    assert_no_temp_files(&target);

    // Once more: nothing left to do; no regular file is rewritten (symlinks and FIFOs may
    // be recreated).
    let inodes = regular_file_inodes(&target);
    let s = restore_json(&env, &target, &["--delete"]);
    assert_eq!(num(&s, "files_written"), 0, "{s}");
    assert_eq!(num(&s, "deleted"), 0, "{s}");
    assert_eq!(regular_file_inodes(&target), inodes);
    assert_trees_equal(&src, &restored);
}

/// The helpers above must see what they claim to check, or the tests prove nothing.
#[test]
fn helpers_notice_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    build_tree(&root);
    let before = tree_state(&root);
    assert_state_unchanged(&before, &tree_state(&root));
    let changed = |f: &dyn Fn(&Path)| {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("t");
        build_tree(&r);
        let before = tree_state(&r);
        f(&r);
        let after = tree_state(&r);
        assert!(
            std::panic::catch_unwind(|| assert_state_unchanged(&before, &after)).is_err(),
            "a change was not noticed"
        );
    };
    changed(&|r| set_mtime(&r.join("a.txt"), T0 - 1, 0));
    changed(&|r| chmod(&r.join("a.txt"), 0o600));
    changed(&|r| {
        let t = mtime(&r.join("b.txt"));
        write(&r.join("b.txt"), "BRAVO BRAVO\n");
        set_mtime(&r.join("b.txt"), t.0, t.1 as u32);
    });
    changed(&|r| {
        // Same content, mode and times, another inode.
        let p = r.join("sub/c.txt");
        let (t, d) = (mtime(&p), mtime(&r.join("sub")));
        let copy = r.join("sub/copy");
        std::fs::copy(&p, &copy).unwrap();
        set_mtime(&copy, t.0, t.1 as u32);
        std::fs::rename(&copy, &p).unwrap();
        set_mtime(&r.join("sub"), d.0, d.1 as u32);
    });
    changed(&|r| write(&r.join("new"), ""));
    changed(&|r| set_mtime(r, 1, 0));
    write(&root.join("sub/.c.txt.coffer-tmp-1"), "");
    assert_eq!(
        temp_files(&root),
        [PathBuf::from("sub/.c.txt.coffer-tmp-1")]
    );
}

/// Regular files with many permission bits, for the modes of files created under their real
/// names (their mode is given at creation; `fchmod` only when that cannot give it).
fn build_mode_tree(src: &Path) {
    let modes = [
        0o644, 0o755, 0o600, 0o444, 0o640, 0o777, 0o700, 0o604, 0o664, 0o400, 0o555, 0o666, 0o620,
        0o1755,
    ];
    for (i, mode) in modes.iter().enumerate() {
        let p = src.join(format!("d{}/m{mode:o}", i % 3));
        write(&p, format!("mode {mode:o}\n"));
        chmod(&p, *mode);
    }
    write(&src.join("empty"), "");
    chmod(&src.join("empty"), 0o664);
    // Directories' modes too (a directory the restore creates gets 0777 less the umask).
    chmod(&src.join("d1"), 0o775);
    chmod(&src.join("d2"), 0o700);
    if common::is_root() {
        // Another group, set-id bits: set explicitly, whatever creation gave.
        let sg = src.join("sg");
        std::fs::create_dir(&sg).unwrap();
        std::os::unix::fs::chown(&sg, Some(0), Some(4242)).unwrap();
        chmod(&sg, 0o2775);
        write(&sg.join("inner/f"), "in a setgid directory\n");
        write(&sg.join("setuid"), "setuid\n");
        chmod(&sg.join("setuid"), 0o4755);
    }
    set_tree_times(src);
}

#[test]
fn fresh_restore_gives_every_mode_whatever_the_umask() {
    let (env, src) = backed_up(build_mode_tree);
    for umask in ["022", "077", "000", "027", "002"] {
        let target = env.path(format!("restored-{umask}"));
        let mut c = env.wrapped("sh");
        c.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(common::coffer_bin())
            .args(["restore", "-s", "latest", "-t"])
            .arg(&target);
        let out = c.output().unwrap();
        assert!(out.status.success(), "umask {umask}: {out:?}");
        assert_trees_equal(&src, &target.join("src"));
        assert_no_temp_files(&target);
    }
}

/// As root, files created in a setgid directory take its group; the snapshot's group must
/// be set all the same.
#[test]
fn fresh_restore_into_a_setgid_directory_keeps_the_snapshots_groups() {
    if !common::is_root() {
        eprintln!("note: not root; ownership is not restored, nothing to test");
        return;
    }
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::chown(&target, Some(0), Some(4242)).unwrap();
    chmod(&target, 0o2775);
    restore_json(&env, &target, &[]);
    assert_trees_equal(&src, &target.join("src"));
}

/// A file planned twice in one restore (overlapping `--path`s) is found in place by the
/// second writer, which replaces it as any existing file.
#[test]
fn overlapping_paths_write_a_file_twice_without_errors() {
    let (env, src) = backed_up(build_tree);
    let target = env.path("restored");
    let s = restore_json(
        &env,
        &target,
        &["--path", "src/sub/", "--path", "src/sub/inner/"],
    );
    assert!(num(&s, "files_written") >= 2, "{s}");
    assert_trees_equal(&src.join("sub"), &target.join("src/sub"));
    assert_no_temp_files(&target);
}

/// Batches are written by a writer thread while the walk plans the next ones, so a directory
/// that an overlapping `--path` walks again can hold this restore's temporary files in flight
/// (the files it replaces). The second walk must leave them alone: every file is replaced
/// without an error, whole, and no temporary file stays. 2,400 files make several batches.
#[test]
fn overlapping_paths_leave_the_writers_files_in_flight_alone() {
    let many = |root: &Path, content: &dyn Fn(usize, usize) -> String| {
        for d in 0..4 {
            for f in 0..600 {
                write(&root.join(format!("many/d{d}/f{f:03}.txt")), content(d, f));
            }
        }
    };
    let (env, src) = backed_up(|src| {
        many(src, &|d, f| format!("file {d}/{f}\n").repeat(1 + f % 7));
        set_tree_times(src);
    });
    let target = env.path("restored");
    // Every file is there with other content, so each is written under a temporary name and
    // renamed over the old one.
    many(&target.join("src"), &|d, f| format!("old {d}/{f}"));
    let s = restore_json(
        &env,
        &target,
        &["--path", "src/many/", "--path", "src/many/d2/"],
    );
    assert!(num(&s, "files_written") >= 2400, "{s}");
    assert_trees_equal(&src.join("many"), &target.join("src/many"));
    assert_no_temp_files(&target);
}

/// What a restore killed in the middle of a batch leaves: files under their real names
/// listed in the batch's journal, some complete (the snapshot's size and mtime), some not.
/// The next run removes the incomplete ones before anything else, so even `--overwrite
/// never` and `if-newer` (which keep an existing file) restore them whole; a complete one
/// stays as it is, and the journal never takes the restore outside the target.
#[test]
fn incomplete_files_of_an_interrupted_restore_are_rewritten_in_any_mode() {
    let (env, src) = backed_up(build_tree);
    for mode in ["never", "if-newer", "if-changed"] {
        let target = env.path(format!("restored-{mode}"));
        let restored = target.join("src");
        restore(&env, &target, &[]).success();
        let complete = ino(&restored.join("a.txt"));
        // Incomplete: cut short (its mtime is the time of the write), or full length but
        // not all written (zeros where a blob was still to come).
        write(&restored.join("sub/c.txt"), "char");
        let d = restored.join("sub/inner/d.txt");
        let len = std::fs::metadata(&d).unwrap().len() as usize;
        write(&d, vec![0u8; len]);
        let outside = env.path(format!("outside-{mode}.txt"));
        write(&outside, "not the restore's\n");
        let rec = |rel: &Path, orig: &Path| {
            let m = lstat(orig);
            format!(
                "{} {} {} {}\0",
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                rel.display()
            )
        };
        let journal = [
            rec(Path::new("src/a.txt"), &src.join("a.txt")),
            rec(Path::new("src/sub/c.txt"), &src.join("sub/c.txt")),
            rec(
                Path::new("src/sub/inner/d.txt"),
                &src.join("sub/inner/d.txt"),
            ),
            format!("1 1 0 ../outside-{mode}.txt\0"),
            // Cut short by the kill: no NUL.
            "5 1 0 src/b.t".to_string(),
        ]
        .concat();
        write(&target.join(".coffer-tmp-4321-journal"), journal);

        restore_json(&env, &target, &["--overwrite", mode]);
        assert_trees_equal(&src, &restored);
        assert_eq!(
            ino(&restored.join("a.txt")),
            complete,
            "{mode}: a.txt was rewritten"
        );
        assert_eq!(read(&outside), b"not the restore's\n");
        assert_no_temp_files(&target);
    }
}

/// A read whose blobs decompress to more than a part (2 MiB) is placed in parts, the blobs
/// stored raw before each cut copied out of it: the restored file is still the original, byte
/// for byte.
#[test]
fn a_read_of_very_compressible_blobs_is_written_in_parts() {
    const MIB: usize = 1 << 20;
    let (env, src) = backed_up(|s| {
        let mut data = common::pseudo_random(7, 3 * MIB);
        let mut text = Vec::with_capacity(24 * MIB);
        let mut i = 0u64;
        while text.len() < 24 * MIB {
            text.extend_from_slice(format!("line {i} of a log that compresses well\n").as_bytes());
            i += 1;
        }
        data.extend_from_slice(&text);
        data.extend_from_slice(&common::pseudo_random(8, 3 * MIB + 4321));
        write(&s.join("mixed.bin"), &data);
        set_tree_times(s);
    });
    let target = env.path("restored");
    let v = restore_json(&env, &target, &[]);
    // Random, then text, then random: about 7.5 MiB stored, next to each other in one pack,
    // so one read brings all of it (more than 24 MiB once decompressed).
    assert_eq!(num(&v, "requests"), 1, "{v}");
    assert_trees_equal(&src, &target.join("src"));
}

/// A hardlink that cannot be made (its first name is held by a directory the restore was told
/// to keep) is written as a copy: after every writer thread has finished, with the same
/// content and metadata, and without an error.
#[test]
fn a_hardlink_that_cannot_be_made_is_written_as_a_copy() {
    let (env, src) = backed_up(|src| {
        write(&src.join("hl1"), "one inode, two names\n");
        write(&src.join("sub/keep.txt"), "keep\n");
        std::fs::hard_link(src.join("hl1"), src.join("sub/hl2")).unwrap();
        set_tree_times(src);
    });
    let target = env.path("target");
    // The first name of the inode is a directory in the target; `never` keeps it.
    std::fs::create_dir_all(target.join("src/hl1")).unwrap();
    write(&target.join("src/hl1/mine"), "not from the snapshot\n");
    let v = restore_json(&env, &target, &["--overwrite", "never"]);
    let copy = target.join("src/sub/hl2");
    assert_eq!(
        std::fs::read(&copy).expect("the second name was not restored"),
        std::fs::read(src.join("sub/hl2")).unwrap()
    );
    assert_eq!(lstat(&copy).mtime(), lstat(&src.join("sub/hl2")).mtime());
    assert_eq!(lstat(&copy).nlink(), 1);
    assert!(
        target.join("src/hl1/mine").is_file(),
        "the kept directory was touched"
    );
    assert_no_temp_files(&target);
    assert_eq!(v["errors"], json!([]), "{v}");
}
