//! `diff` and `dump` against the real binary, on real files.

mod common;

use std::path::Path;

use common::{Env, assert_trees_equal, pseudo_random};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn snapshot_id(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().expect("snapshot_id").to_string()
}

/// Two snapshots of one tree, with a file added, one removed, one changed, one whose kind
/// changed, a removed directory and many unchanged files.
fn two_snapshots(env: &Env) -> (String, String) {
    let src = env.path("src");
    write(&src.join("keep/same.txt"), "unchanged");
    for i in 0..50 {
        write(&src.join(format!("many/f{i:03}")), format!("file {i}"));
    }
    write(&src.join("changed.txt"), "before");
    write(&src.join("gone.txt"), "12345");
    write(&src.join("olddir/inner.txt"), "abc");
    write(&src.join("kind"), "a file first");
    let first = snapshot_id(&env.backup_json(&[&src]));
    write(&src.join("changed.txt"), "after, and longer");
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::remove_dir_all(src.join("olddir")).unwrap();
    std::fs::remove_file(src.join("kind")).unwrap();
    std::fs::create_dir(src.join("kind")).unwrap();
    write(&src.join("new/added.bin"), vec![7u8; 1000]);
    let second = snapshot_id(&env.backup_json(&[&src]));
    (first, second)
}

#[test]
fn diff_lists_added_removed_and_changed_entries_with_sizes() {
    let env = Env::init();
    let (first, second) = two_snapshots(&env);
    let out = env.run(["diff", "--json", &first[..8], &second]);
    out.success();
    let lines = out.json_lines();
    let (summary, entries) = lines.split_last().expect("a summary line");
    let mut got: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["change"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("added", "src/new/"),
        ("added", "src/new/added.bin"),
        ("modified", "src/changed.txt"),
        ("removed", "src/gone.txt"),
        ("removed", "src/olddir/"),
        ("removed", "src/olddir/inner.txt"),
        ("type", "src/kind"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{}", out.stdout);
    let changed = entries
        .iter()
        .find(|e| e["path"] == "src/changed.txt")
        .unwrap();
    assert_eq!(changed["size_before"], 6);
    assert_eq!(changed["size_after"], 17);
    assert_eq!(summary["files_added"], 1);
    assert_eq!(summary["files_removed"], 2);
    assert_eq!(summary["files_changed"], 2);
    assert_eq!(summary["dirs_added"], 1);
    assert_eq!(summary["dirs_removed"], 1);
    assert_eq!(summary["bytes_added"], 1000 + 11);
    assert_eq!(summary["bytes_removed"], 5 + 3);
    // The unchanged directories (`keep/`, `many/`) have the same tree ids: never loaded.
    assert_eq!(summary["trees_loaded"], 4, "{summary}");

    // The human form, restic's marks.
    let text = env.run(["diff", &first, "latest"]);
    text.success();
    assert!(
        text.stdout.contains("+    src/new/added.bin"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("-    src/gone.txt"), "{}", text.stdout);
    assert!(
        text.stdout.contains("M    src/changed.txt"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("T    src/kind"), "{}", text.stdout);
}

#[test]
fn diff_of_a_snapshot_with_itself_is_empty_and_loads_nothing() {
    let env = Env::init();
    let (_, second) = two_snapshots(&env);
    let out = env.run(["diff", "--json", &second, "latest"]);
    out.success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert_eq!(lines[0]["trees_loaded"], 0);
    assert_eq!(lines[0]["files_changed"], 0);
}

#[test]
fn diff_with_an_unknown_snapshot_fails_with_a_clear_error() {
    let env = Env::init();
    let (first, _) = two_snapshots(&env);
    let out = env.run(["diff", &first, "deadbeef"]);
    out.failure();
    assert!(out.stderr.contains("deadbeef"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn dump_writes_a_file_byte_for_byte() {
    let env = Env::init();
    let src = env.path("src");
    // Several chunks (1 MiB average).
    let big = pseudo_random(11, 5 << 20);
    write(&src.join("data/big.bin"), &big);
    write(&src.join("data/small.txt"), "hello\n");
    env.backup_json(&[&src]);
    let out = env
        .cmd()
        .args(["dump", "latest", "src/data/big.bin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big, "dumped {} bytes", out.stdout.len());
    let small = env.run(["dump", "latest", "/src/data/small.txt"]);
    small.success();
    assert_eq!(small.stdout, "hello\n");
}

#[test]
fn dump_of_a_directory_is_a_tar_that_tar_extracts() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("dir/a.txt"), "alpha");
    write(&src.join("dir/sub/b.bin"), pseudo_random(3, 300_000));
    std::os::unix::fs::symlink("a.txt", src.join("dir/link")).unwrap();
    env.backup_json(&[&src]);
    let tar = env.path("dir.tar");
    let out = env
        .cmd()
        .args(["dump", "latest", "src/dir"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&tar, &out.stdout).unwrap();
    let dest = env.path("extracted");
    std::fs::create_dir(&dest).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success(), "tar -xf of the dump failed");
    assert_trees_equal(&src.join("dir"), &dest.join("src/dir"));
}

#[test]
fn dump_refuses_missing_paths_and_unknown_snapshots() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), "alpha");
    env.backup_json(&[&src]);
    let out = env.run(["dump", "latest", "src/nope.txt"]);
    out.failure();
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("nope.txt"), "{}", out.stderr);
    let out = env.run(["dump", "0000ffff", "src/a.txt"]);
    out.failure();
    assert!(out.stderr.contains("0000ffff"), "{}", out.stderr);
}

/// Three snapshots of a tree that changes a little each time: `find` answers by name and by
/// path, across snapshots, and indexes only what each new snapshot changed.
#[test]
fn find_searches_every_snapshot_by_name_and_path() {
    let env = Env::init();
    let src = env.path("work");
    for d in 0..20 {
        for f in 0..10 {
            write(&src.join(format!("d{d:02}/f{f}.txt")), format!("{d} {f}"));
        }
    }
    write(&src.join("db/dump.sql"), "select 1;");
    env.backup_json(&[&src]);
    let first = env.run(["find", "--json", "nothing-like-this"]);
    first.success();
    assert_eq!(first.json(), serde_json::json!([]));
    let text = env.run(["find", "nothing-like-this"]);
    text.success();
    assert!(text.stdout.is_empty(), "{}", text.stdout);
    assert!(text.stderr.contains("no entry matches"), "{}", text.stderr);

    write(&src.join("d03/notes.SQL"), "more");
    env.backup_json(&[&src]);
    std::fs::remove_file(src.join("db/dump.sql")).unwrap();
    write(&src.join("d07/f1.txt"), "changed");
    env.backup_json(&[&src]);

    let out = env.run(["find", "--json", "*.sql"]);
    out.success();
    let v = out.json();
    let per: Vec<(usize, Vec<String>)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let paths = s["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["path"].as_str().unwrap().to_string())
                .collect();
            (s["matches"].as_array().unwrap().len(), paths)
        })
        .collect();
    // The dump is in the first two snapshots only; `.SQL` differs in case.
    assert_eq!(
        per,
        vec![
            (1, vec!["work/db/dump.sql".to_string()]),
            (1, vec!["work/db/dump.sql".to_string()])
        ],
        "{v}"
    );
    let ci = env.run(["find", "--json", "-i", "*.sql"]).json();
    assert_eq!(ci.as_array().unwrap().len(), 3, "{ci}");
    assert_eq!(ci[2]["matches"][0]["path"], "work/d03/notes.SQL");

    // A path pattern: `*` does not cross `/`, `**` does.
    let one = env.run(["find", "--json", "work/d07/f1.txt"]).json();
    assert_eq!(one.as_array().unwrap().len(), 3);
    assert_eq!(one[0]["matches"][0]["size"], 3);
    assert_eq!(one[2]["matches"][0]["size"], 7);
    let none = env.run(["find", "--json", "work/*.txt"]).json();
    assert_eq!(none, serde_json::json!([]));
    let deep = env
        .run(["find", "--json", "--snapshot", "latest", "work/**/f9.txt"])
        .json();
    assert_eq!(deep.as_array().unwrap().len(), 1);
    assert_eq!(deep[0]["matches"].as_array().unwrap().len(), 20);

    // Human output names the snapshot, then the paths.
    let text = env.run(["find", "dump.sql"]);
    text.success();
    assert_eq!(
        text.stdout
            .matches("Found matching entries in snapshot")
            .count(),
        2
    );
    assert!(
        text.stdout.contains("\nwork/db/dump.sql\n"),
        "{}",
        text.stdout
    );
}

#[test]
fn find_indexes_each_snapshot_once_and_only_its_new_trees() {
    let env = Env::init();
    let src = env.path("work");
    for d in 0..30 {
        write(&src.join(format!("d{d:02}/file")), format!("{d}"));
    }
    env.backup_json(&[&src]);
    env.backup_json(&[&src]);
    write(&src.join("d05/new"), "x");
    env.backup_json(&[&src]);
    let out = env.run(["find", "--json", "file"]);
    out.success();
    assert_eq!(out.json().as_array().unwrap().len(), 3);
    // A second search indexes nothing and gives the same answer.
    let again = env.run(["find", "--json", "file"]);
    assert_eq!(again.json(), out.json());
    // Forgetting a snapshot removes it from the answers.
    env.run(["forget", "--keep-last", "2"]).success();
    let after = env.run(["find", "--json", "file"]).json();
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
}

/// Snapshots named the way restic users type them: positional ids for `ls`, `restore` and
/// `snapshots`, and an ambiguous prefix that lists its candidates.
#[test]
fn snapshots_are_named_positionally_and_ambiguity_lists_candidates() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("dir/a.txt"), "alpha");
    let mut ids = Vec::new();
    for day in 1..=17 {
        let time = format!("2026-01-{day:02}T03:00:00Z");
        let out = env.run(["backup", "--json", "--time", &time, src.to_str().unwrap()]);
        out.success();
        ids.push(snapshot_id(&out.json()));
    }
    let ls = env.run(["ls", "latest"]);
    ls.success();
    assert!(ls.stdout.contains("src/dir/a.txt"), "{}", ls.stdout);
    let ls_path = env.run(["ls", &ids[0][..12], "src/dir"]);
    ls_path.success();
    assert_eq!(ls_path.stdout.trim(), "src/dir\nsrc/dir/a.txt");
    let ls_flag = env.run(["ls", "-s", "latest", "src/dir"]);
    ls_flag.success();
    assert_eq!(ls_flag.stdout.trim(), "src/dir\nsrc/dir/a.txt");
    env.run(["ls"]).failure().stderr_has("ls needs a snapshot");

    let target = env.path("restored");
    env.run(["restore", "latest", "--target", target.to_str().unwrap()])
        .success();
    assert_eq!(
        std::fs::read(target.join("src/dir/a.txt")).unwrap(),
        b"alpha"
    );
    env.run(["restore", "latest", "-s", "latest", "--target", "x"])
        .failure();

    let one = env.run(["snapshots", "--json", &ids[3][..10]]);
    one.success();
    let listed = one.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], ids[3].as_str());

    // 17 ids over 16 hex digits: two share their first character.
    let shared = ids
        .iter()
        .map(|id| &id[..1])
        .find(|c| ids.iter().filter(|id| id.starts_with(*c)).count() > 1)
        .unwrap()
        .to_string();
    let out = env.run(["ls", &shared]);
    out.failure();
    out.stderr_has("ambiguous");
    for id in ids.iter().filter(|id| id.starts_with(&shared)) {
        out.stderr_has(&id[..16]);
    }
}

#[test]
fn tag_adds_removes_and_sets_tags_keeping_the_snapshot() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), "alpha");
    let out = env.run([
        "backup",
        "--json",
        "--tag",
        "nightly",
        src.to_str().unwrap(),
    ]);
    out.success();
    let first = snapshot_id(&out.json());
    write(&src.join("b.txt"), "beta");
    env.backup_json(&[&src]);
    let tags_of = |env: &Env| -> Vec<Vec<String>> {
        env.snapshots()
            .iter()
            .map(|s| {
                s["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    let added = env.run(["tag", "--json", "--add", "keep", &first[..8]]);
    added.success();
    let v = added.json();
    assert_eq!(v["changed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["changed"][0]["old_id"], first.as_str());
    assert_eq!(tags_of(&env), vec![vec!["nightly", "keep"], vec![]]);
    // Unchanged content: the retagged snapshot restores as before.
    let target = env.path("out");
    let new_id = v["changed"][0]["new_id"].as_str().unwrap().to_string();
    env.run(["restore", &new_id, "--target", target.to_str().unwrap()])
        .success();
    assert_eq!(std::fs::read(target.join("src/a.txt")).unwrap(), b"alpha");
    assert!(!target.join("src/b.txt").exists());
    // --remove on every snapshot, --set on one.
    env.run(["tag", "--remove", "nightly"]).success();
    assert_eq!(tags_of(&env), vec![vec!["keep"], vec![]]);
    env.run(["tag", "--set", "x", "--set", "y", "latest"])
        .success();
    assert_eq!(tags_of(&env), vec![vec!["keep"], vec!["x", "y"]]);
    // The old id is gone and not reported as vanished.
    let check = env.run(["check"]);
    check.success();
    // Bad input changes nothing.
    env.run(["tag", "--add", "z", "ffffffff"]).failure();
    env.run(["tag", "latest"]).failure().stderr_has("--add");
    env.run(["tag", "--set", "a", "--add", "b"]).failure();
    assert_eq!(tags_of(&env), vec![vec!["keep"], vec!["x", "y"]]);
}

#[test]
fn cache_cleanup_removes_only_caches_unused_for_long() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), "alpha");
    env.backup_json(&[&src]);
    // A repository deleted long ago left its catalog behind.
    let old = env.cache.join("ab".repeat(32));
    write(&old.join("catalog.sqlite"), vec![0u8; 4096]);
    let long_ago = filetime::FileTime::from_unix_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 40 * 86_400,
        0,
    );
    filetime::set_file_mtime(old.join("catalog.sqlite"), long_ago).unwrap();
    filetime::set_file_mtime(&old, long_ago).unwrap();
    // Not a repository's cache: never touched.
    write(&env.cache.join("notes/keep.txt"), "mine");

    let listed = env.run(["cache", "--json"]);
    listed.success();
    let v = listed.json();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["repository_id"], "ab".repeat(32));
    assert!(v[0]["unused_secs"].as_u64().unwrap() > 39 * 86_400);

    let dry = env.run(["cache", "--json", "--cleanup", "--dry-run"]);
    dry.success();
    assert_eq!(dry.json()[0]["removed"], true);
    assert!(old.exists(), "a dry run removes nothing");

    env.run(["cache", "--cleanup"]).success();
    assert!(!old.exists());
    assert!(env.cache.join("notes/keep.txt").exists());
    let after = env.run(["cache", "--json"]).json();
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after[0]["removed"], false);
    // The repository in use still opens with its cache.
    env.run(["ls", "latest"]).success();
}

#[test]
fn snapshots_group_by_and_latest() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), "alpha");
    for (host, day) in [("web", 1), ("db", 2), ("web", 3), ("web", 4), ("db", 5)] {
        let time = format!("2026-02-{day:02}T03:00:00Z");
        env.run([
            "backup",
            "--host",
            host,
            "--time",
            &time,
            src.to_str().unwrap(),
        ])
        .success();
    }
    let latest = env.run(["snapshots", "--json", "--latest", "1"]).json();
    let hosts: Vec<(&str, &str)> = latest
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["host"].as_str().unwrap(), s["time"].as_str().unwrap()))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("db", "2026-02-05T03:00:00+00:00"),
            ("web", "2026-02-04T03:00:00+00:00")
        ]
    );
    let grouped = env
        .run(["snapshots", "--json", "--group-by", "host"])
        .json();
    let groups: Vec<(&str, usize)> = grouped
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group_key"].as_str().unwrap(),
                g["snapshots"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(groups, vec![("host=db", 2), ("host=web", 3)]);
    let text = env.run(["snapshots", "--group-by", "host", "--latest", "2"]);
    text.success();
    assert!(
        text.stdout.contains("snapshots of host=web:"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.trim_end().ends_with("4 snapshots"),
        "{}",
        text.stdout
    );
    env.run(["snapshots", "--group-by", "colour"])
        .failure()
        .stderr_has("colour");
}

#[test]
fn ls_long_reads_like_ls_long() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("dir/a.txt"), vec![b'x'; 2048]);
    std::os::unix::fs::symlink("dir/a.txt", src.join("link")).unwrap();
    env.backup_json(&[&src]);
    let out = env.run(["ls", "-l", "latest", "src"]);
    out.success();
    let line = |p: &str| {
        out.stdout
            .lines()
            .find(|l| l.ends_with(p) || l.contains(&format!("{p} -> ")))
            .unwrap_or_else(|| panic!("no {p} in {}", out.stdout))
            .to_string()
    };
    assert!(line("src/dir").starts_with("drwx"), "{}", out.stdout);
    let file = line("src/dir/a.txt");
    assert!(file.starts_with("-rw"), "{file}");
    assert!(file.contains("2.00 KiB"), "{file}");
    assert!(file.contains(" UTC "), "{file}");
    assert!(line("src/link").starts_with('l'));
    assert!(
        line("src/link").ends_with("src/link -> dir/a.txt"),
        "{}",
        out.stdout
    );
}

#[test]
fn completion_scripts_and_man_pages_are_generated() {
    let env = Env::new();
    let bash = env.run(["completion", "bash"]);
    bash.success();
    assert!(bash.stdout.contains("_coffer()"), "{}", bash.stdout);
    assert!(bash.stdout.contains("find"), "commands are completed");
    let script = env.path("coffer.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n rejects the completion script");
    for shell in ["zsh", "fish"] {
        let out = env.run(["completion", shell]);
        out.success();
        assert!(out.stdout.contains("coffer"), "{shell}");
    }
    env.run(["completion", "tcsh"]).failure();

    let page = env.run(["man"]);
    page.success();
    assert!(page.stdout.contains(".TH coffer 1"), "{}", page.stdout);
    let dir = env.path("man1");
    env.run(["man", "--dir", dir.to_str().unwrap()]).success();
    for name in [
        "coffer.1",
        "coffer-backup.1",
        "coffer-find.1",
        "coffer-restore.1",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.contains(".TH"), "{name}");
    }
}
