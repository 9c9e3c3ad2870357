//! End-to-end tests of the `coffer` binary: every test gets its own temporary directory with
//! its own repository, catalog cache and home, and drives the real binary. Repositories use
//! the default parameters (1 MiB average chunks, argon2 with 64 MiB), so the data is small and
//! does not depend on where the chunker cuts.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Env, assert_trees_equal, exit, list_tree, pseudo_random, raw_name};
use filetime::FileTime;

const MIB: u64 = 1 << 20;

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

/// Relative path of the deep file: 40 directory levels, more than 300 bytes in all.
fn deep_rel() -> PathBuf {
    let mut p = PathBuf::from("deep");
    for i in 0..40 {
        p.push(format!("level-{i:02}-dir"));
    }
    p.push("leaf.txt");
    assert!(p.as_os_str().len() > 300 && p.components().count() > 40);
    p
}

/// Build a source tree with every kind of entry and metadata coffer must keep. Returns
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
    std::os::unix::fs::symlink("file.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/coffer/target", src.join("dangling")).unwrap();
    write(&src.join("hl1"), "one inode, two names\n");
    std::fs::create_dir(src.join("sub")).unwrap();
    chmod(&src.join("sub"), 0o750);
    std::fs::hard_link(src.join("hl1"), src.join("sub/hl2")).unwrap();
    write(
        &src.join(raw_name(b"caf\xe9")),
        "a name that is not UTF-8\n",
    );
    write(&src.join("sub/nested.txt"), "nested\n");
    write(&src.join(deep_rel()), "at the bottom\n");
    mkfifo(&src.join("fifo"), 0o640);

    // A sparse file: 32 MiB with a little data in the middle.
    let sparse = src.join("sparse");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&sparse).unwrap();
        f.set_len(32 * MIB).unwrap();
        f.seek(SeekFrom::Start(16 * MIB + 12345)).unwrap();
        f.write_all(b"data inside a sparse file").unwrap();
    }

    let attrs = src.join("sub/attrs.txt");
    write(&attrs, "has xattrs\n");
    let xattrs_ok = xattr::set(&attrs, "user.coffer.text", b"alpha").is_ok();
    if xattrs_ok {
        xattr::set(&attrs, "user.coffer.binary", &[0u8, 255, 1, 2]).unwrap();
        xattr::set(src.join("sub"), "user.coffer.dir", b"on a directory").unwrap();
    } else {
        eprintln!("note: the file system of the temp dir has no user xattrs; not tested");
    }

    // Times with nanoseconds on everything, directories last and deepest first.
    let mut entries = list_tree(src);
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let (mut dirs, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|p| src.join(p).symlink_metadata().unwrap().is_dir());
    for (i, rel) in others.iter().enumerate() {
        set_mtime(
            &src.join(rel),
            1_600_000_000 + i as i64,
            123_456_789 - i as u32,
        );
    }
    dirs.push(PathBuf::new());
    for (i, rel) in dirs.iter().enumerate() {
        set_mtime(
            &src.join(rel),
            1_700_000_000 + i as i64,
            987_654_321 - i as u32,
        );
    }
    xattrs_ok
}

#[test]
fn round_trip_keeps_content_and_metadata() {
    let env = Env::init();
    let src = env.path("src");
    let xattrs_ok = build_rich_tree(&src);
    let entries = list_tree(&src);
    let n_dirs = 1 + entries
        .iter()
        .filter(|p| src.join(p).symlink_metadata().unwrap().is_dir())
        .count() as u64;
    let n_other = entries.len() as u64 + 1 - n_dirs;

    let out = env.run(
        ["backup", "--json", "--tag", "nightly", "--tag", "second"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([src.as_os_str()]),
    );
    out.success();
    let summary = out.json();
    assert_eq!(summary["warnings"], serde_json::json!([]));
    assert_eq!(summary["dirs"], n_dirs, "{summary}");
    assert_eq!(summary["files"], n_other, "{summary}");
    assert_eq!(summary["parent"], serde_json::Value::Null);
    let id = summary["snapshot_id"].as_str().unwrap().to_string();

    // snapshots --json: id, short id, sources, tags.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let s = &snaps[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(s["short_id"], &id[..8]);
    assert_eq!(s["tags"], serde_json::json!(["nightly", "second"]));
    assert_eq!(
        s["sources"],
        serde_json::json!([{"name": "src", "path": src.to_str().unwrap()}])
    );

    // ls: every path, by unique prefix.
    let out = env.run(["ls", "-s", &id[..10]]);
    out.success();
    let listed: BTreeSet<&str> = out.stdout.lines().collect();
    let deep = format!("src/{}", deep_rel().display());
    for p in [
        "src",
        "src/file.txt",
        "src/emptydir",
        "src/empty",
        "src/link",
        "src/fifo",
        "src/sparse",
        "src/sub/hl2",
        "src/sub/attrs.txt",
        "src/caf\u{FFFD}",
        deep.as_str(),
    ] {
        assert!(listed.contains(p), "ls does not list {p}:\n{}", out.stdout);
    }
    assert_eq!(listed.len() as u64, n_dirs + n_other, "{}", out.stdout);

    // ls --json below a path: kinds, modes, targets, nanosecond times.
    let out = env.run(["ls", "--json", "-s", "latest", "src"]);
    out.success();
    let ls = out.json_lines();
    let find = |p: &str| {
        ls.iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} not in ls --json:\n{}", out.stdout))
            .clone()
    };
    assert_eq!(find("src/link")["kind"], "symlink");
    assert_eq!(find("src/link")["target"], "file.txt");
    assert_eq!(find("src/fifo")["kind"], "fifo");
    assert_eq!(find("src/emptydir")["kind"], "dir");
    let f = find("src/file.txt");
    assert_eq!(f["kind"], "file");
    assert_eq!(f["size"], 1000);
    assert_eq!(f["mode"], 0o640);
    let file_mtime = std::fs::metadata(src.join("file.txt"))
        .unwrap()
        .mtime_nsec();
    assert!(
        f["mtime"]
            .as_str()
            .unwrap()
            .contains(&format!(".{file_mtime:09}")),
        "{f}"
    );

    // Restore the whole snapshot.
    let target = env.path("restored");
    let out = env.run([
        "restore".as_ref(),
        "--json".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        target.as_os_str(),
    ]);
    out.success();
    let r = out.json();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["snapshot_id"], id.as_str());
    let top: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["src"]);
    let restored = target.join("src");
    assert_trees_equal(&src, &restored);

    // Spot checks of what assert_trees_equal covers, so a broken helper cannot hide them.
    let m1 = std::fs::metadata(restored.join("hl1")).unwrap();
    let m2 = std::fs::metadata(restored.join("sub/hl2")).unwrap();
    assert_eq!(m1.ino(), m2.ino(), "hardlinks were restored as copies");
    assert_eq!(m1.nlink(), 2);
    assert_eq!(
        std::fs::read_link(restored.join("dangling")).unwrap(),
        Path::new("/nonexistent/coffer/target")
    );
    assert_eq!(
        std::fs::read(restored.join(raw_name(b"caf\xe9"))).unwrap(),
        b"a name that is not UTF-8\n"
    );
    assert_eq!(
        std::fs::read(restored.join(deep_rel())).unwrap(),
        b"at the bottom\n"
    );
    let fm = std::fs::metadata(restored.join("file.txt")).unwrap();
    assert_eq!(fm.mtime_nsec(), file_mtime);
    assert_eq!(fm.mode() & 0o7777, 0o640);
    assert_eq!(
        std::fs::metadata(restored.join("setuid")).unwrap().mode() & 0o7777,
        0o4711
    );
    if xattrs_ok {
        assert_eq!(
            xattr::get(restored.join("sub/attrs.txt"), "user.coffer.binary").unwrap(),
            Some(vec![0u8, 255, 1, 2])
        );
    }
    let sm = std::fs::metadata(restored.join("sparse")).unwrap();
    assert_eq!(sm.len(), 32 * MIB);
    assert!(
        sm.blocks() * 512 < sm.len() / 4,
        "the restored sparse file is not sparse: {} bytes allocated for {}",
        sm.blocks() * 512,
        sm.len()
    );
}

/// A small tree with two subdirectories.
fn build_small_tree(src: &Path) {
    write(&src.join("a.txt"), "top\n");
    write(&src.join("sub/b.txt"), "in sub\n");
    write(&src.join("sub/inner/c.txt"), "deeper\n");
    write(&src.join("other/d.txt"), "elsewhere\n");
}

#[test]
fn partial_restore_restores_only_the_subtree() {
    let env = Env::init();
    let src = env.path("src");
    build_small_tree(&src);
    env.backup_json(&[&src]);

    let t1 = env.path("t1");
    env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        t1.as_os_str(),
        "--path".as_ref(),
        "src/sub/".as_ref(),
    ])
    .success();
    let got: Vec<PathBuf> = list_tree(&t1);
    let want: Vec<PathBuf> = [
        "src",
        "src/sub",
        "src/sub/b.txt",
        "src/sub/inner",
        "src/sub/inner/c.txt",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(got, want);
    assert_trees_equal(&src.join("sub"), &t1.join("src/sub"));

    // A single file.
    let t2 = env.path("t2");
    env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        t2.as_os_str(),
        "--path".as_ref(),
        "src/other/d.txt".as_ref(),
    ])
    .success();
    let got: Vec<PathBuf> = list_tree(&t2);
    let want: Vec<PathBuf> = ["src", "src/other", "src/other/d.txt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        std::fs::read(t2.join("src/other/d.txt")).unwrap(),
        b"elsewhere\n"
    );

    // A path that is not in the snapshot.
    let t3 = env.path("t3");
    env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        t3.as_os_str(),
        "--path".as_ref(),
        "src/nope".as_ref(),
    ])
    .expect_code(exit::ERROR)
    .stderr_has("src/nope");
}

#[test]
fn incremental_backup_reads_only_changed_files() {
    let env = Env::init();
    let src = env.path("src");
    build_small_tree(&src);
    let first = env.backup_json(&[&src]);
    assert_eq!(first["files_read"], 4, "{first}");

    let second = env.backup_json(&[&src]);
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(second["files_read"], 0, "{second}");
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_unchanged"], 4, "{second}");
    assert_eq!(second["blobs_added"], 0, "{second}");
    assert_eq!(second["packs_written"], 0, "{second}");

    let changed = "in sub, changed and longer\n";
    write(&src.join("sub/b.txt"), changed);
    let third = env.backup_json(&[&src]);
    assert_eq!(third["parent"], second["snapshot_id"], "{third}");
    assert_eq!(third["files_read"], 1, "{third}");
    assert_eq!(third["files_unchanged"], 3, "{third}");
    assert_eq!(third["bytes_read"], changed.len(), "{third}");

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
}

#[test]
fn identical_content_is_stored_once() {
    let env = Env::init();
    let src = env.path("src");
    let data = pseudo_random(20, (20 * MIB) as usize);
    write(&src.join("original.bin"), &data);
    write(&src.join("copies/the-copy.bin"), &data);
    drop(data);
    let before = common::dir_size(&env.repo);
    let s = env.backup_json(&[&src]);
    let grown = common::dir_size(&env.repo) - before;
    assert_eq!(s["bytes_read"], 40 * MIB, "{s}");
    let added = s["bytes_added"].as_u64().unwrap();
    assert!((20 * MIB..21 * MIB).contains(&added), "{s}");
    assert!(
        (20 * MIB..24 * MIB).contains(&grown),
        "the repository grew by {grown} bytes for 20 MiB of unique data"
    );

    let target = env.path("restored");
    env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        target.as_os_str(),
    ])
    .success();
    assert_trees_equal(&src, &target.join("src"));
}

#[test]
fn repository_holds_no_plaintext() {
    let env = Env::init();
    let src = env.path("src");
    let mut text = String::new();
    let mut i = 0u64;
    while text.len() < 4096 {
        text.push_str(&format!(
            "canary line {i:04}: the quick brown coffer jumps over the lazy scanner {}\n",
            (i * 7919) % 10007
        ));
        i += 1;
    }
    let binary = pseudo_random(5, 4096);
    let mut content = text.clone().into_bytes();
    content.extend_from_slice(&binary);
    content.extend_from_slice(text.as_bytes());
    let name = "coffer-canary-file-name-7f3a9.txt";
    write(&src.join("secret-dir").join(name), &content);
    env.backup_json(&[&src]);

    let found = common::find_windows(
        &env.repo,
        &[text.as_bytes(), &binary, name.as_bytes(), b"secret-dir"],
        64,
    );
    assert!(
        found.is_none(),
        "plaintext found in the repository: {found:?} (file, offset, needle: 0 text, 1 binary, \
         2 file name, 3 directory name)"
    );
}

#[test]
fn wrong_passphrase_exits_12_with_one_line() {
    let env = Env::init();
    let src = env.path("src");
    build_small_tree(&src);
    for args in [
        vec!["snapshots"],
        vec!["backup", src.to_str().unwrap()],
        vec!["restore", "-s", "latest", "-t", "somewhere"],
        vec!["key", "list"],
    ] {
        let out = env.run_with_password("not the passphrase", &args);
        out.expect_code(exit::WRONG_PASSWORD);
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "`{}`: stderr is not one line:\n{}",
            out.what,
            out.stderr
        );
        out.stderr_has("passphrase");
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert!(!env.path("somewhere").exists());
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    std::fs::create_dir(&env.repo).unwrap();
    let src = env.path("src");
    build_small_tree(&src);
    let repo = env.repo.display().to_string();
    for args in [
        vec!["snapshots"],
        vec!["backup", src.to_str().unwrap()],
        vec!["check"],
        vec!["ls", "-s", "latest"],
        vec!["restore", "-s", "latest", "-t", "out"],
        vec!["key", "list"],
    ] {
        let out = env.run(&args);
        out.expect_code(exit::NO_REPOSITORY).stderr_has(&repo);
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    }
    // A repository directory that does not exist at all.
    let mut c = env.cmd();
    c.env("COFFER_REPO", env.path("does/not/exist"));
    env.run_cmd(c, ["snapshots"])
        .expect_code(exit::NO_REPOSITORY)
        .stderr_has("does/not/exist");
    // Nothing was created by looking.
    assert!(
        list_tree(&env.repo).is_empty(),
        "{:?}",
        list_tree(&env.repo)
    );
    assert!(!env.path("does").exists());
}

#[test]
fn usage_errors_are_reported_cleanly() {
    let env = Env::init();
    let src = env.path("src");
    build_small_tree(&src);

    // Backup of a missing path: no snapshot.
    let missing = env.path("no-such-dir");
    env.run(["backup".as_ref(), missing.as_os_str()])
        .failure()
        .stderr_has("no-such-dir");
    assert!(env.snapshots().is_empty());

    env.backup_json(&[&src]);

    // Unknown snapshot ids.
    env.run(["restore", "-s", "deadbeef", "-t", "out"])
        .expect_code(exit::ERROR)
        .stderr_has("deadbeef");
    env.run(["ls", "-s", "0000000000"])
        .expect_code(exit::ERROR)
        .stderr_has("0000000000");
    assert!(!env.path("out").exists());

    // Restore into a regular file.
    let file = env.path("a-file");
    write(&file, "not a directory\n");
    let out = env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        file.as_os_str(),
    ]);
    out.failure().stderr_has("a-file");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory\n");
}

/// The path of the biggest pack file.
fn biggest_pack(repo: &Path) -> PathBuf {
    list_tree(&repo.join("packs"))
        .into_iter()
        .map(|r| repo.join("packs").join(r))
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack")
}

#[test]
fn flipped_bit_in_a_pack_is_found_and_named() {
    let env = Env::init();
    let src = env.path("src");
    // Incompressible and above the smallest pack size (format 3 pads packs to at least
    // 256 KiB), so the biggest pack is the data pack holding only it.
    write(&src.join("big.bin"), pseudo_random(7, 400_000));
    write(&src.join("dir/small.txt"), "");
    env.backup_json(&[&src]);
    env.run(["check", "--read-data"]).success();

    let pack = biggest_pack(&env.repo);
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = std::fs::read(&pack).unwrap();
    assert!(bytes.len() > 200_000);
    bytes[100_000] ^= 0x10;
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();

    let out = env.run(["check", "--read-data"]);
    out.expect_code(exit::ERROR)
        .stderr_has(&pack_id[..16])
        .stderr_has("src/big.bin");
    assert!(!out.stderr.contains("small.txt"), "{}", out.stderr);

    let out = env.run(["check", "--read-data", "--json"]);
    out.expect_code(exit::ERROR);
    let r = out.json();
    let problems = r["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .any(|p| p["object"].as_str().unwrap().contains(&pack_id)),
        "{r}"
    );
    assert!(
        problems.iter().any(|p| p["affects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().ends_with("src/big.bin"))),
        "{r}"
    );

    // Restoring the damaged file fails, names it, and restores the rest.
    let target = env.path("restored");
    let out = env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        "latest".as_ref(),
        "-t".as_ref(),
        target.as_os_str(),
    ]);
    out.expect_code(exit::ERROR).stderr_has("big.bin");
    assert!(target.join("src/dir/small.txt").is_file());
}

#[test]
fn truncated_snapshot_is_named_without_panic() {
    let env = Env::init();
    let src = env.path("src");
    build_small_tree(&src);
    let id = env.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = env.repo.join("snapshots").join(&id);
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::set_permissions(&snap, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    // Without the catalog, which still holds the snapshot as it was.
    std::fs::remove_dir_all(&env.cache).unwrap();

    let out = env.run(["check"]);
    out.expect_code(exit::ERROR)
        .stderr_has(&format!("snapshots/{id}"));

    let out = env.run(["snapshots"]);
    assert!(
        out.stderr.contains(&id) || out.stdout.contains(&id[..8]),
        "`snapshots` does not mention the damaged snapshot:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let out = env.run(["restore", "-s", id.as_str(), "-t", "out"]);
    out.failure().stderr_has(&id[..8]);
    let out = env.run(["ls", "-s", "latest"]);
    out.failure();
}

#[test]
fn unreadable_files_give_exit_3_and_a_snapshot() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("ok.txt"), "readable\n");
    write(&src.join("secret.txt"), "unreadable\n");
    write(&src.join("locked/inside.txt"), "behind a closed door\n");
    chmod(&src.join("secret.txt"), 0o000);
    chmod(&src.join("locked"), 0o000);

    // Root reads anything: run coffer without the capabilities that bypass permissions.
    const DROP: &str = "-dac_override,-dac_read_search";
    let wrapped = |args: &[&std::ffi::OsStr]| {
        let mut c = env.wrapped("setpriv");
        c.arg(format!("--inh-caps={DROP}"))
            .arg(format!("--bounding-set={DROP}"));
        c.arg(common::coffer_bin());
        env.run_cmd(c, args)
    };
    let unreadable = if common::is_root() {
        let probe = std::process::Command::new("setpriv")
            .arg(format!("--inh-caps={DROP}"))
            .arg(format!("--bounding-set={DROP}"))
            .arg("cat")
            .arg(src.join("secret.txt"))
            .output();
        matches!(probe, Ok(o) if !o.status.success() && o.stderr.windows(17).any(|w| w == b"Permission denied"))
    } else {
        std::fs::read(src.join("secret.txt")).is_err()
    };
    if !unreadable {
        chmod(&src.join("locked"), 0o755);
        eprintln!("note: cannot make a file unreadable here (root without setpriv?); skipped");
        return;
    }

    let args = ["backup".as_ref(), "--json".as_ref(), src.as_os_str()];
    let out = if common::is_root() {
        wrapped(&args)
    } else {
        env.run(args)
    };
    chmod(&src.join("locked"), 0o755);
    chmod(&src.join("secret.txt"), 0o644);
    out.expect_code(exit::PARTIAL);
    let s = out.json();
    let warned: Vec<&str> = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert!(warned.iter().any(|p| p.ends_with("secret.txt")), "{s}");
    assert!(warned.iter().any(|p| p.ends_with("locked")), "{s}");
    assert_eq!(s["files_read"], 1, "{s}");

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], s["snapshot_id"]);
    assert_eq!(snaps[0]["summary"]["errors"], 2);
    let out = env.run(["ls", "-s", "latest"]);
    out.success();
    let listed: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(listed, ["src", "src/ok.txt"]);
}

#[test]
fn keys_can_be_added_changed_and_listed() {
    let env = Env::init();
    let mut c = env.cmd();
    c.env("COFFER_NEW_PASSWORD", "second passphrase");
    let out = env.run_cmd(c, ["key", "add", "--json"]);
    out.success();
    let added = out.json()["added"].as_str().unwrap().to_string();

    let out = env.run(["key", "list", "--json"]);
    out.success();
    let keys = out.json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    let first = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        keys.iter()
            .any(|k| k["id"] == added.as_str() && k["current"] == false)
    );

    // The new passphrase opens the repository; `passwd` replaces the key it opened.
    env.run_with_password("second passphrase", ["snapshots"])
        .success();
    let mut c = env.cmd_with_password("second passphrase");
    c.env("COFFER_NEW_PASSWORD", "third passphrase");
    let out = env.run_cmd(c, ["key", "passwd", "--json"]);
    out.success();
    let third = out.json()["key"].as_str().unwrap().to_string();
    assert_ne!(third, added);

    env.run_with_password("second passphrase", ["snapshots"])
        .expect_code(exit::WRONG_PASSWORD);
    let out = env.run_with_password("third passphrase", ["key", "list", "--json"]);
    out.success();
    let keys = out.json();
    let ids: BTreeSet<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([first.as_str(), third.as_str()]));
    let current: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(current, [third.as_str()]);
    // The first passphrase was not touched.
    env.run(["snapshots"]).success();
}

#[test]
fn catalog_is_rebuilt_from_the_repository() {
    let env = Env::init();
    let src = env.path("src");
    build_small_tree(&src);
    let id = env.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Lost cache: rebuilt on open.
    std::fs::remove_dir_all(&env.cache).unwrap();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());

    // Lost cache again: `repair catalog`.
    std::fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(["repair", "catalog", "--json"]);
    out.success();
    let r = out.json();
    assert_eq!(r["snapshots_read"], 1, "{r}");
    assert!(r["index_files_read"].as_u64().unwrap() >= 1, "{r}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());

    let target = env.path("restored");
    env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        id[..8].as_ref(),
        "-t".as_ref(),
        target.as_os_str(),
    ])
    .success();
    assert_trees_equal(&src, &target.join("src"));
}

/// Content of every file of the hostile snapshot.
const HOSTILE_CONTENT: &[u8] = b"hostile content\n";

/// Write, with the library, a snapshot whose trees hold names that must never be joined to a
/// restore target: `..` at the root (a directory holding `escaped.txt`), and in `src/`: `..`
/// (holding another `..` holding `escaped.txt`), an absolute path (`absolute`), `a/b` next to
/// a directory `a`, a name with a NUL byte, and one safe file `ok.txt`. Returns its id.
fn write_hostile_snapshot(env: &Env, absolute: &Path) -> String {
    use coffer::compress::Compressor;
    use coffer::format::BlobKind;
    use coffer::format::index::PackIndex;
    use coffer::format::snapshot::{Snapshot, SourceInfo};
    use coffer::format::tree::{Node, NodeKind, Tree};
    use coffer::id::BlobId;
    use coffer::repo::{PackBuilder, Repository};
    use coffer::storage::{LocalStore, ObjectStore};
    use serde_bytes::ByteBuf;

    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(env.repo.clone()));
    let repo = Repository::open(store, common::PASSWORD.as_bytes()).expect("open");
    let mut comp = Compressor::new(3).unwrap();
    let mut pack = PackBuilder::default();
    let mut added: HashSet<BlobId> = HashSet::new();
    let mut add = |pack: &mut PackBuilder, kind: BlobKind, bytes: &[u8]| {
        let id = repo.keys().blob_id(kind, bytes);
        if added.insert(id) {
            pack.add(&repo, repo.seal_blob(id, kind, bytes, &mut comp).unwrap())
                .unwrap();
        }
        id
    };

    let content = HOSTILE_CONTENT;
    let data = add(&mut pack, BlobKind::Data, content);
    let node = |name: &[u8], kind: NodeKind, subtree: Option<BlobId>| Node {
        name: ByteBuf::from(name.to_vec()),
        kind,
        mode: if kind == NodeKind::Dir {
            0o40755
        } else {
            0o100644
        },
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        mtime_nsec: 0,
        ctime: 1_600_000_000,
        ctime_nsec: 0,
        size: if kind == NodeKind::File {
            content.len() as u64
        } else {
            0
        },
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        link_target: None,
        content: if kind == NodeKind::File {
            vec![data]
        } else {
            vec![]
        },
        subtree,
        xattrs: vec![],
    };
    let mut tree = |pack: &mut PackBuilder, mut nodes: Vec<Node>| {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = Tree { nodes }.encode().unwrap();
        Tree::decode(&bytes).expect("a valid tree");
        add(pack, BlobKind::Tree, &bytes)
    };

    let empty = tree(&mut pack, vec![]);
    let escaped = tree(&mut pack, vec![node(b"escaped.txt", NodeKind::File, None)]);
    let up_up = tree(&mut pack, vec![node(b"..", NodeKind::Dir, Some(escaped))]);
    let src = tree(
        &mut pack,
        vec![
            node(b"..", NodeKind::Dir, Some(up_up)),
            node(absolute.to_str().unwrap().as_bytes(), NodeKind::File, None),
            node(b"a", NodeKind::Dir, Some(empty)),
            node(b"a/b", NodeKind::File, None),
            node(b"nul\0byte", NodeKind::File, None),
            node(b"ok.txt", NodeKind::File, None),
        ],
    );
    let root = tree(
        &mut pack,
        vec![
            node(b"..", NodeKind::Dir, Some(escaped)),
            node(b"src", NodeKind::Dir, Some(src)),
        ],
    );
    let packed = pack.finish(&repo).unwrap();
    let index = PackIndex {
        pack: packed.id,
        blobs: packed.entries.clone(),
    };
    repo.save_pack(packed).unwrap();
    repo.save_index(&[index]).unwrap();
    repo.save_snapshot(&Snapshot {
        time_ns: 1_700_000_000_000_000_000,
        host: "hostile".into(),
        username: "mallory".into(),
        tags: vec![],
        parent: None,
        tree: root,
        sources: vec![SourceInfo {
            name: "src".into(),
            path: "/src".into(),
        }],
        summary: Default::default(),
        program_version: "test".into(),
    })
    .unwrap()
    .to_hex()
}

#[test]
fn restore_refuses_names_that_escape_the_target() {
    let env = Env::init();
    let outside = env.path("out");
    let target = outside.join("target");
    let absolute = env.path("absolute-escape.txt");
    let snapshot = write_hostile_snapshot(&env, &absolute);

    let before: BTreeSet<PathBuf> = list_tree(env.dir.path()).into_iter().collect();
    env.run(["ls", "-s", snapshot.as_str()]);
    let out = env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        snapshot.as_ref(),
        "-t".as_ref(),
        target.as_os_str(),
    ]);
    out.expect_code(exit::ERROR)
        .stderr_has("escape")
        .stderr_has("a/b")
        .stderr_has("absolute-escape.txt")
        .stderr_has("nul");
    let refusals = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:") && l.contains("escape the target"))
        .count();
    assert_eq!(refusals, 5, "{}", out.stderr);

    // Only the target changed, and it holds only the safe entries.
    let after: BTreeSet<PathBuf> = list_tree(env.dir.path())
        .into_iter()
        .filter(|p| {
            !p.starts_with("repo") && !p.starts_with("cache") && !p.starts_with("out/target")
        })
        .collect();
    let before: BTreeSet<PathBuf> = before
        .into_iter()
        .filter(|p| !p.starts_with("repo") && !p.starts_with("cache"))
        .chain([PathBuf::from("out")])
        .collect();
    assert_eq!(after, before, "something was written outside the target");
    assert!(!absolute.exists());
    let got = list_tree(&target);
    let want: Vec<PathBuf> = ["src", "src/a", "src/ok.txt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        std::fs::read(target.join("src/ok.txt")).unwrap(),
        HOSTILE_CONTENT
    );
}

#[test]
fn restore_path_argument_cannot_escape_the_target() {
    // `..` names the hostile directory in the snapshot, but `<target>/..` is outside the
    // target: a `--path` must be checked like the names in the trees.
    let env = Env::init();
    let outside = env.path("out");
    let target = outside.join("target");
    let snapshot = write_hostile_snapshot(&env, &env.path("absolute-escape.txt"));
    let out = env.run([
        "restore".as_ref(),
        "-s".as_ref(),
        snapshot.as_ref(),
        "-t".as_ref(),
        target.as_os_str(),
        "--path".as_ref(),
        "..".as_ref(),
    ]);
    assert!(
        !outside.join("escaped.txt").exists(),
        "`restore --path ..` wrote {} outside the target\nstdout: {}\nstderr: {}",
        outside.join("escaped.txt").display(),
        out.stdout,
        out.stderr
    );
    out.failure().stderr_has("..");
    if outside.exists() {
        let left = list_tree(&outside);
        assert!(left.iter().all(|p| p.starts_with("target")), "{left:?}");
    }
}

/// The tree comparison itself must notice every kind of difference it claims to check, or
/// the round-trip test proves nothing.
#[test]
fn tree_comparison_notices_differences() {
    fn make(root: &Path, hardlinked: bool) {
        write(&root.join("f"), "abc");
        write(&root.join("x"), "same");
        if hardlinked {
            std::fs::hard_link(root.join("x"), root.join("y")).unwrap();
        } else {
            write(&root.join("y"), "same");
        }
        std::os::unix::fs::symlink("f", root.join("l")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        for p in ["f", "x", "y", "l", "d", ""] {
            set_mtime(&root.join(p), 1_650_000_000, 5);
        }
    }
    fn differs(a: &Path, b: &Path, expected: &str) {
        let r = std::panic::catch_unwind(|| assert_trees_equal(a, b));
        let msg = match r {
            Ok(()) => panic!("assert_trees_equal missed a difference ({expected})"),
            Err(e) => e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        assert!(msg.contains(expected), "expected {expected:?} in: {msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make(&a, true);
    make(&b, true);
    assert_trees_equal(&a, &b);

    set_mtime(&b.join("f"), 1_650_000_000, 6);
    differs(&a, &b, "mtime");
    set_mtime(&b.join("f"), 1_650_000_000, 5);
    set_mtime(&b.join("l"), 1_650_000_000, 6);
    differs(&a, &b, "mtime");
    set_mtime(&b.join("l"), 1_650_000_000, 5);

    chmod(&b.join("f"), 0o600);
    differs(&a, &b, "mode");
    chmod(
        &b.join("f"),
        std::fs::metadata(a.join("f")).unwrap().mode() & 0o7777,
    );

    std::fs::write(b.join("f"), "abd").unwrap();
    set_mtime(&b.join("f"), 1_650_000_000, 5);
    differs(&a, &b, "content");
    std::fs::write(b.join("f"), "abc").unwrap();
    set_mtime(&b.join("f"), 1_650_000_000, 5);

    if xattr::set(b.join("f"), "user.coffer.test", b"v").is_ok() {
        differs(&a, &b, "xattrs");
        xattr::remove(b.join("f"), "user.coffer.test").unwrap();
    }
    assert_trees_equal(&a, &b);

    let c = dir.path().join("c");
    make(&c, false);
    differs(&a, &c, "hardlink");
    differs(&c, &a, "inode");

    let e = dir.path().join("e");
    make(&e, true);
    std::fs::remove_file(e.join("l")).unwrap();
    std::os::unix::fs::symlink("x", e.join("l")).unwrap();
    set_mtime(&e.join("l"), 1_650_000_000, 5);
    set_mtime(&e, 1_650_000_000, 5);
    differs(&a, &e, "symlink target");

    std::fs::remove_dir(e.join("d")).unwrap();
    differs(&a, &e, "only in");
}
