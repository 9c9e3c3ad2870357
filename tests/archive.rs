//! `coffer export` and `coffer import` against the real GNU tar: exported archives list and
//! extract like the old nightly archives and equal a plain restore; archives made by
//! `tar czf` import into snapshots that restore to the original directory, deduplicated night
//! after night; damaged archives leave no snapshot. Needs GNU `tar` on the PATH (CI has it).

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Env, assert_trees_equal, dir_size, is_root, list_tree, pseudo_random, raw_name};
use filetime::FileTime;

const MIB: usize = 1 << 20;

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

/// Run GNU tar in `cwd`; panics with its stderr unless it succeeds.
#[track_caller]
fn gnu_tar<I, S>(cwd: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new("tar")
        .args(&args)
        .current_dir(cwd)
        .output()
        .expect("GNU tar must be installed to run these tests");
    assert!(
        out.status.success(),
        "tar {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a shell command line in `cwd`; returns its stdout.
#[track_caller]
fn sh(cwd: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(cwd)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "`{script}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names in a .tar.gz, as GNU tar lists them (raw bytes).
fn tar_names(cwd: &Path, archive: &Path) -> BTreeSet<Vec<u8>> {
    let out = gnu_tar(
        cwd,
        [
            OsStr::new("--quoting-style=literal"),
            OsStr::new("-tzf"),
            archive.as_os_str(),
        ],
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The relative path of a file more than 300 bytes deep whose name is not UTF-8.
fn deep_rel() -> PathBuf {
    let mut p = PathBuf::from("deep");
    for i in 0..30 {
        p.push(format!("level-{i:02}-directory"));
    }
    p.push(raw_name(b"\xff\xfeleaf"));
    assert!(p.as_os_str().len() > 300);
    p
}

/// A volume with every kind of entry and metadata tar can carry. With `pax` (for archives
/// with PAX records), mtimes have nanoseconds and a file has a user xattr; without, mtimes
/// are whole seconds (GNU format). Returns whether the file system took the xattr.
fn build_volume(root: &Path, seed: u64, pax: bool) -> bool {
    std::fs::create_dir_all(root).unwrap();
    write(&root.join("file.txt"), "some text\n".repeat(200));
    chmod(&root.join("file.txt"), 0o640);
    write(&root.join("exec.sh"), "#!/bin/sh\necho hi\n");
    chmod(&root.join("exec.sh"), 0o755);
    write(&root.join("setuid"), "setuid bit\n");
    chmod(&root.join("setuid"), 0o4711);
    write(&root.join("empty"), "");
    chmod(&root.join("empty"), 0o600);
    std::fs::create_dir(root.join("emptydir")).unwrap();
    chmod(&root.join("emptydir"), 0o700);
    write(&root.join("sticky/inside"), "in a sticky directory\n");
    chmod(&root.join("sticky"), 0o1777);
    std::os::unix::fs::symlink("file.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/coffer/target", root.join("dangling")).unwrap();
    let long_target = format!("{}/{}", "t".repeat(80), "u".repeat(80));
    std::os::unix::fs::symlink(&long_target, root.join("longlink")).unwrap();
    write(&root.join("hl1"), "one inode, two names\n");
    write(&root.join("sub/nested.txt"), "nested\n");
    std::fs::hard_link(root.join("hl1"), root.join("sub/hl2")).unwrap();
    write(
        &root.join(raw_name(b"caf\xe9")),
        "a name that is not UTF-8\n",
    );
    write(
        &root.join("sub").join(format!("{}.txt", "n".repeat(150))),
        "a name longer than 100 bytes\n",
    );
    write(&root.join(deep_rel()), "at the bottom\n");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // Several chunks, so a file's content spans blobs.
    write(
        &root.join("random.bin"),
        pseudo_random(seed, 3 * MIB + 12345),
    );
    if is_root() {
        let own = |p: &Path, u, g| std::os::unix::fs::lchown(p, Some(u), Some(g)).unwrap();
        write(&root.join("owned"), "owned by someone else\n");
        own(&root.join("owned"), 1234, 5678);
        own(&root.join("sub"), 4321, 8765);
        own(&root.join("link"), 1111, 2222);
    }
    let xattrs_ok = pax && xattr::set(root.join("file.txt"), "user.coffer.text", b"alpha").is_ok();

    // Times last: files, then directories deepest first, then the root.
    let mut entries = list_tree(root);
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let (mut dirs, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|p| root.join(p).symlink_metadata().unwrap().is_dir());
    let nsec = |i: usize| if pax { 123_456_789 - i as u32 } else { 0 };
    for (i, rel) in others.iter().enumerate() {
        set_mtime(&root.join(rel), 1_600_000_000 + i as i64, nsec(i));
    }
    dirs.push(PathBuf::new());
    for (i, rel) in dirs.iter().enumerate() {
        set_mtime(&root.join(rel), 1_700_000_000 + i as i64, nsec(i));
    }
    xattrs_ok
}

/// The names `tar -tf` shows for `volumes` exported with the default prefix.
fn expected_names(volumes: &[(&str, &Path)]) -> BTreeSet<Vec<u8>> {
    let mut names = BTreeSet::from([b"backup/".to_vec()]);
    for (name, dir) in volumes {
        names.insert(format!("backup/{name}/").into_bytes());
        for rel in list_tree(dir) {
            let mut n = format!("backup/{name}/").into_bytes();
            n.extend_from_slice(rel.as_os_str().as_bytes());
            if dir.join(&rel).symlink_metadata().unwrap().is_dir() {
                n.push(b'/');
            }
            names.insert(n);
        }
    }
    names
}

/// `coffer ARGS` with TZ=UTC, so names and times in local time are predictable.
#[track_caller]
fn run_utc<I, S>(env: &Env, args: I) -> common::Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = env.cmd();
    c.env("TZ", "UTC");
    env.run_cmd(c, args)
}

fn restore(env: &Env, snapshot: &str, target: &Path) {
    let out = env.run([
        OsStr::new("restore"),
        OsStr::new("--json"),
        OsStr::new("-s"),
        OsStr::new(snapshot),
        OsStr::new("-t"),
        target.as_os_str(),
    ]);
    out.success();
    assert_eq!(
        out.json()["errors"],
        serde_json::json!([]),
        "{}",
        out.stdout
    );
}

/// `coffer import --json ARCHIVE ARGS...`, expecting success; the summary.
#[track_caller]
fn import(env: &Env, archive: &Path, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("import"),
        OsStr::new("--json"),
        archive.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    let out = run_utc(env, all);
    out.success();
    out.json()
}

#[test]
fn export_lists_and_extracts_like_a_restore() {
    let env = Env::init();
    let (ws, db) = (env.path("src/ws"), env.path("src/db"));
    let xattrs_ok = build_volume(&ws, 1, true);
    build_volume(&db, 2, true);
    env.backup_json(&[
        format!("workspace={}", ws.display()),
        format!("db={}", db.display()),
    ]);

    let archive = env.path("export.tar.gz");
    let out = env.run([
        OsStr::new("export"),
        OsStr::new("--json"),
        OsStr::new("-s"),
        OsStr::new("latest"),
        OsStr::new("--output"),
        archive.as_os_str(),
    ]);
    out.success();
    let s = out.json();
    assert_eq!(s["output"], archive.to_str().unwrap());
    assert_eq!(s["warnings"], serde_json::json!([]), "{s}");
    assert!(s["hardlinks"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(
        std::fs::metadata(&archive).unwrap().len(),
        s["archive_bytes"].as_u64().unwrap()
    );
    assert_eq!(std::fs::metadata(&archive).unwrap().mode() & 0o777, 0o600);

    // GNU tar lists exactly the old layout: backup/<volume>/<path>.
    let names = tar_names(env.dir.path(), &archive);
    let want = expected_names(&[("workspace", &ws), ("db", &db)]);
    assert_eq!(
        names
            .iter()
            .map(|n| String::from_utf8_lossy(n))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|n| String::from_utf8_lossy(n))
            .collect::<Vec<_>>()
    );

    // tar xzf and a plain restore give identical trees.
    let extract = env.path("extract");
    std::fs::create_dir(&extract).unwrap();
    let mut args = vec![OsString::from("-xzf"), archive.clone().into_os_string()];
    if xattrs_ok {
        args.extend(["--xattrs".into(), "--xattrs-include=user.*".into()]);
    }
    if !is_root() {
        args.push("-p".into()); // root preserves permissions and owners by default
    }
    gnu_tar(&extract, &args);
    let restored = env.path("restore");
    restore(&env, "latest", &restored);
    for vol in ["workspace", "db"] {
        assert_trees_equal(&extract.join("backup").join(vol), &restored.join(vol));
    }
    let top: BTreeSet<OsString> = std::fs::read_dir(extract.join("backup"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, BTreeSet::from(["db".into(), "workspace".into()]));

    // Importing the export gives the same snapshot content back (set-id bits included: an
    // archive of our own is trusted).
    let v = import(
        &env,
        &archive,
        &["--time", "2025-01-01T00:00:00Z", "--privileged"],
    );
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    assert_eq!(v["sources"], serde_json::json!(["db", "workspace"]));
    let again = env.path("again");
    restore(&env, v["snapshot_id"].as_str().unwrap(), &again);
    for vol in ["workspace", "db"] {
        assert_trees_equal(&restored.join(vol), &again.join(vol));
    }
}

#[test]
fn old_scripts_list_and_extract_one_volume() {
    let env = Env::init();
    let (ws, db) = (env.path("src/ws"), env.path("src/db"));
    build_volume(&ws, 3, false);
    build_volume(&db, 4, false);
    env.backup_json(&[
        format!("workspace={}", ws.display()),
        format!("db={}", db.display()),
    ]);
    let out = env.run(["export", "-s", "latest", "--output", "nightly.tar.gz"]);
    out.success();
    assert!(out.stdout.contains("nightly.tar.gz"), "{}", out.stdout);

    // The old monitoring check and restore commands, unchanged.
    let count: u64 = sh(env.dir.path(), "tar -tzf nightly.tar.gz | grep -c backup/")
        .trim()
        .parse()
        .unwrap();
    assert!(count > 20, "{count}");
    std::fs::create_dir(env.path("dir")).unwrap();
    sh(
        env.dir.path(),
        "tar xzf nightly.tar.gz -C dir backup/workspace/",
    );
    let top: Vec<OsString> = std::fs::read_dir(env.path("dir/backup"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["workspace"]);
    assert_eq!(
        std::fs::read(env.path("dir/backup/workspace/file.txt")).unwrap(),
        std::fs::read(ws.join("file.txt")).unwrap()
    );

    // --path keeps full paths (and the directories leading to them); --prefix changes backup/.
    let out = env.run([
        "export",
        "-s",
        "latest",
        "--path",
        "workspace/sub",
        "--prefix",
        "volumes",
        "-o",
        "part.tar.gz",
    ]);
    out.success();
    let names = tar_names(env.dir.path(), &env.path("part.tar.gz"));
    assert!(names.contains(b"volumes/".as_slice()), "{names:?}");
    assert!(
        names.contains(b"volumes/workspace/".as_slice()),
        "{names:?}"
    );
    assert!(
        names.contains(b"volumes/workspace/sub/nested.txt".as_slice()),
        "{names:?}"
    );
    assert!(
        names.iter().all(|n| n == b"volumes/"
            || n == b"volumes/workspace/"
            || n.starts_with(b"volumes/workspace/sub/")),
        "{names:?}"
    );
    let out = env.run([
        "export",
        "-s",
        "latest",
        "--prefix",
        "",
        "-o",
        "bare.tar.gz",
    ]);
    out.success();
    let names = tar_names(env.dir.path(), &env.path("bare.tar.gz"));
    assert!(names.contains(b"db/file.txt".as_slice()), "{names:?}");

    // A failing export leaves nothing behind.
    let top = || -> BTreeSet<OsString> {
        std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    let before = top();
    env.run([
        "export",
        "-s",
        "latest",
        "--path",
        "nope",
        "-o",
        "bad.tar.gz",
    ])
    .failure()
    .stderr_has("nope");
    assert_eq!(top(), before);
}

/// `dir/backup/{workspace,db}` built by [`build_volume`].
fn old_layout(dir: &Path, seed: u64, pax: bool) -> bool {
    let a = build_volume(&dir.join("backup/workspace"), seed, pax);
    build_volume(&dir.join("backup/db"), seed + 1, pax);
    let t = if pax { 5 } else { 0 };
    set_mtime(&dir.join("backup"), 1_650_000_000, t);
    a
}

#[test]
fn import_of_tar_czf_archives_restores_the_original() {
    let env = Env::init();
    // The old tool's archive: GNU format, whole-second times, `backup/...` names.
    let old = env.path("old");
    old_layout(&old, 10, false);
    let a = env.path("backup-2025-11-16T03-00-00.tar.gz");
    gnu_tar(
        &old,
        [OsStr::new("czf"), a.as_os_str(), OsStr::new("backup")],
    );
    // `--privileged` throughout: the volumes hold a setuid file, which an import of an
    // archive not vouched for drops (tests/security.rs).
    let v = import(
        &env,
        &a,
        &["--tag", "legacy", "--host", "oldbox", "--privileged"],
    );
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    assert_eq!(v["time"], "2025-11-16T03:00:00+00:00");
    assert_eq!(v["time_source"], "name");
    let id_a = v["snapshot_id"].as_str().unwrap().to_string();

    // PAX format with nanosecond times, xattrs and `./backup/...` names.
    let posix = env.path("posix");
    let xattrs_ok = old_layout(&posix, 20, true);
    let b = env.path("claude-backup-20260204-020000.tar.gz");
    let mut args: Vec<OsString> = vec!["--format=posix".into()];
    if xattrs_ok {
        args.push("--xattrs".into());
    }
    args.extend(["-czf".into(), b.clone().into_os_string(), "./backup".into()]);
    gnu_tar(&posix, &args);
    let v = import(&env, &b, &["--privileged"]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    let id_b = v["snapshot_id"].as_str().unwrap().to_string();

    let snaps = env.snapshots();
    let find = |id: &str| snaps.iter().find(|s| s["id"] == id).unwrap().clone();
    let sa = find(&id_a);
    assert_eq!(sa["time"], "2025-11-16T03:00:00+00:00");
    assert_eq!(sa["host"], "oldbox");
    assert_eq!(sa["tags"], serde_json::json!(["legacy", "imported"]));
    assert_eq!(sa["parent"], serde_json::Value::Null);
    let names: Vec<&str> = sa["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "workspace"]);
    let path = sa["sources"][1]["path"].as_str().unwrap();
    assert_eq!(path, format!("{}:backup/workspace", a.display()));
    assert_eq!(find(&id_b)["time"], "2026-02-04T02:00:00+00:00");

    for (id, dir) in [(&id_a, &old), (&id_b, &posix)] {
        let target = env.path(format!("restore-{}", &id[..8]));
        restore(&env, id, &target);
        for vol in ["workspace", "db"] {
            assert_trees_equal(&dir.join("backup").join(vol), &target.join(vol));
        }
        let m1 = std::fs::metadata(target.join("workspace/hl1")).unwrap();
        let m2 = std::fs::metadata(target.join("workspace/sub/hl2")).unwrap();
        assert_eq!((m1.ino(), m1.nlink()), (m2.ino(), 2), "hardlink lost");
    }

    // An archive whose name has no date: the file's mtime, with a warning.
    let c = env.path("volumes.tar.gz");
    std::fs::copy(&a, &c).unwrap();
    set_mtime(&c, 1_700_000_000, 0);
    let out = run_utc(&env, [OsStr::new("import"), c.as_os_str()]);
    out.success().stderr_has("no date in the name");
    let snaps = env.snapshots();
    assert!(
        snaps
            .iter()
            .any(|s| s["time"] == "2023-11-14T22:13:20+00:00"),
        "{snaps:?}"
    );
}

#[test]
fn nightly_imports_cost_what_changed() {
    let env = Env::init();
    let dir = env.path("night");
    let ws = dir.join("backup/workspace");
    write(&ws.join("data.bin"), pseudo_random(99, 10 * MIB));
    write(
        &dir.join("backup/db/dump.sql"),
        "create table t (x int);\n".repeat(500),
    );
    let mut sizes = Vec::new();
    for night in 1..=30u32 {
        write(&ws.join("counter.txt"), format!("night {night}\n"));
        let name = format!("backup-2025-11-{night:02}T03-00-00.tar.gz");
        gnu_tar(&dir, ["czf", name.as_str(), "backup"]);
        let v = import(&env, &dir.join(&name), &[]);
        assert_eq!(v["time"], format!("2025-11-{night:02}T03:00:00+00:00"));
        std::fs::remove_file(dir.join(&name)).unwrap();
        sizes.push(dir_size(&env.repo));
    }
    assert_eq!(env.snapshots().len(), 30);
    let (first, last) = (sizes[0], sizes[29]);
    assert!(first > 10 * MIB as u64, "{first}");
    // What changed, plus the padding format 3 gives every snapshot that stores anything
    // (docs/crypto.md): a data and a tree pack of at least 256 KiB, a 4 KiB index and snapshot.
    let padding = 29 * (2 * coffer::format::padding::MIN_PACK_BYTES + 8192);
    assert!(
        ((last - padding) as f64) < 1.5 * first as f64,
        "30 nightly imports take {last} bytes, the first {first}: {sizes:?}"
    );
}

#[test]
fn damaged_archives_are_refused_without_a_snapshot() {
    let env = Env::init();
    let dir = env.path("d");
    write(
        &dir.join("backup/workspace/data.bin"),
        pseudo_random(7, 4 * MIB),
    );
    write(
        &dir.join("backup/workspace/text.txt"),
        "text\n".repeat(100_000),
    );
    let good = env.path("backup-2025-11-16T03-00-00.tar.gz");
    gnu_tar(
        &dir,
        [OsStr::new("czf"), good.as_os_str(), OsStr::new("backup")],
    );
    import(&env, &good, &[]);
    let before = env.snapshots();
    let bytes = std::fs::read(&good).unwrap();

    let truncated = env.path("backup-2025-11-17T03-00-00.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut corrupt = bytes.clone();
    let mid = bytes.len() / 2;
    for b in &mut corrupt[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let flipped = env.path("backup-2025-11-18T03-00-00.tar.gz");
    std::fs::write(&flipped, &corrupt).unwrap();
    let not_gzip = env.path("backup-2025-11-19T03-00-00.tar.gz");
    std::fs::write(&not_gzip, b"not an archive at all").unwrap();

    for (archive, what) in [
        (&truncated, "truncated or corrupt"),
        (&flipped, "truncated or corrupt"),
        (&not_gzip, "not a gzip file"),
    ] {
        let out = env.run([OsStr::new("import"), archive.as_os_str()]);
        out.expect_code(common::exit::ERROR).stderr_has(what);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line: {}", out.stderr);
        assert!(lines[0].starts_with("error: "), "{}", out.stderr);
        assert!(
            lines[0].contains(archive.file_name().unwrap().to_str().unwrap()),
            "{}",
            out.stderr
        );
        assert_eq!(env.snapshots(), before, "{what}: a snapshot was written");
    }

    // Names that would escape the extraction directory are refused.
    write(&dir.join("outside.txt"), "outside\n");
    let evil = env.path("evil.tar.gz");
    gnu_tar(
        &dir,
        [
            OsStr::new("-czPf"),
            evil.as_os_str(),
            OsStr::new("backup/workspace/../../outside.txt"),
        ],
    );
    env.run([OsStr::new("import"), evil.as_os_str()])
        .expect_code(common::exit::ERROR)
        .stderr_has("..");
    assert_eq!(env.snapshots(), before);

    // Entries outside backup/ are skipped with a warning (exit 3); the rest is imported.
    let mixed = env.path("mixed-20251120.tar.gz");
    gnu_tar(
        &dir,
        [
            OsStr::new("czf"),
            mixed.as_os_str(),
            OsStr::new("backup"),
            OsStr::new("outside.txt"),
        ],
    );
    let out = run_utc(&env, [OsStr::new("import"), mixed.as_os_str()]);
    out.expect_code(common::exit::PARTIAL)
        .stderr_has("outside.txt");
    assert_eq!(env.snapshots().len(), before.len() + 1);
}

#[test]
fn output_dir_names_files_and_keeps_latest() {
    let env = Env::init();
    let dir = env.path("d");
    build_volume(&dir.join("backup/workspace"), 30, false);
    let a = env.path("claude-backup-20260204-020000.tar.gz");
    gnu_tar(
        &dir,
        [OsStr::new("czf"), a.as_os_str(), OsStr::new("backup")],
    );
    let first = import(&env, &a, &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = import(&env, &a, &["--time", "2026-02-05T02:00:00+00:00"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let out_dir = env.path("exports");
    for id in [&first, &second] {
        let out = run_utc(
            &env,
            [
                OsStr::new("export"),
                OsStr::new("-s"),
                OsStr::new(id.as_str()),
                OsStr::new("--output-dir"),
                out_dir.as_os_str(),
                OsStr::new("--name"),
                OsStr::new("claude-backup-%Y%m%d-%H%M%S.tar.gz"),
            ],
        );
        out.success();
    }
    let files: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([
            "claude-backup-20260204-020000.tar.gz".to_string(),
            "claude-backup-20260205-020000.tar.gz".to_string(),
            "latest".to_string(),
        ]),
        "a temporary file was left behind, or a name is wrong"
    );
    assert_eq!(
        std::fs::read_link(out_dir.join("latest")).unwrap(),
        Path::new("claude-backup-20260205-020000.tar.gz")
    );
    // What the monitoring scripts do: glob, then list the newest through the symlink.
    let listed = sh(
        &out_dir,
        "ls claude-backup-*.tar.gz | wc -l; tar -tzf latest | grep -c backup/workspace/",
    );
    let counts: Vec<u64> = listed.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts[0], 2);
    assert!(counts[1] > 20);

    // The default pattern is the old tool's.
    let out = run_utc(
        &env,
        [
            OsStr::new("export"),
            OsStr::new("-s"),
            OsStr::new(first.as_str()),
            OsStr::new("--output-dir"),
            out_dir.as_os_str(),
        ],
    );
    out.success();
    assert!(out_dir.join("backup-2026-02-04T02-00-00.tar.gz").is_file());
    // A bad pattern is refused before any work.
    run_utc(
        &env,
        [
            OsStr::new("export"),
            OsStr::new("-s"),
            OsStr::new("latest"),
            OsStr::new("--output-dir"),
            out_dir.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("a/%Y.tar.gz"),
        ],
    )
    .failure()
    .stderr_has("plain file name");

    // --output - streams to stdout, which `tar -tzf -` reads.
    let o = env
        .cmd()
        .args(["export", "-q", "-s", "latest", "--output", "-"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut tar = Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    let listed = tar.wait_with_output().unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.lines().any(|l| l == "backup/workspace/file.txt"),
        "{listed}"
    );
}
