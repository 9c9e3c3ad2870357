//! What `coffer backup` reads, chosen as restic users type it: `--exclude` patterns (absolute,
//! relative, names, `**`), `--iexclude`, exclude files, `--exclude-caches`,
//! `--exclude-if-present`, `--one-file-system`, `--files-from` (and `-verbatim`, `-raw`), and
//! `--dry-run`. Each test drives the real binary on real files in its own environment.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Env, exit, list_tree};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Write each relative path below `root` (content: the path).
fn files(root: &Path, rels: &[&str]) {
    for r in rels {
        write(&root.join(r), r.as_bytes());
    }
}

/// The paths of the newest snapshot, from `ls --json` (a name may hold a newline).
fn listed(env: &Env) -> BTreeSet<String> {
    let out = env.run(["ls", "--json", "-s", "latest"]);
    out.success();
    out.json_lines()
        .iter()
        .map(|e| e["path"].as_str().expect("a path").to_string())
        .collect()
}

/// `coffer backup ARGS`, expecting success; then the paths of the new snapshot.
#[track_caller]
fn backup_listing<S: AsRef<std::ffi::OsStr>>(env: &Env, args: &[S]) -> BTreeSet<String> {
    let mut all: Vec<OsString> = vec!["backup".into()];
    all.extend(args.iter().map(|a| a.as_ref().to_owned()));
    env.run(all).success();
    listed(env)
}

#[track_caller]
fn assert_listing(got: &BTreeSet<String>, present: &[&str], absent: &[&str]) {
    for p in present {
        assert!(got.contains(*p), "{p} missing from the snapshot: {got:#?}");
    }
    for p in absent {
        assert!(!got.contains(*p), "{p} should have been left out: {got:#?}");
    }
}

/// Every object (file) of the repository with its size: what a dry run must leave as it
/// found it. Directories are not objects: taking and releasing the backup's shared lock
/// may leave an empty `locks/`.
fn repo_objects(env: &Env) -> Vec<(String, u64)> {
    list_tree(&env.repo)
        .into_iter()
        .filter_map(|rel| {
            let m = std::fs::symlink_metadata(env.repo.join(&rel)).ok()?;
            m.is_file().then(|| (rel.display().to_string(), m.len()))
        })
        .collect()
}

#[test]
fn an_absolute_exclude_leaves_the_directory_out() {
    // Before issue 17, `--exclude /abs/path/dir` excluded nothing.
    let env = Env::init();
    let src = env.path("src");
    files(&src, &["keep.txt", "cache/big.bin", "sub/cache/kept.txt"]);
    let abs = src.join("cache");
    let got = backup_listing(
        &env,
        &["--exclude".as_ref(), abs.as_os_str(), src.as_os_str()],
    );
    assert_listing(
        &got,
        &["src/keep.txt", "src/sub/cache/kept.txt"],
        &["src/cache", "src/cache/big.bin"],
    );

    // The source given relative to the working directory (the environment's directory) is
    // made absolute before patterns are matched.
    let abs_file = env.path("src/keep.txt");
    let got = backup_listing(
        &env,
        &["--exclude".as_ref(), abs_file.as_os_str(), "src".as_ref()],
    );
    assert_listing(&got, &["src/cache/big.bin"], &["src/keep.txt"]);
}

#[test]
fn excludes_match_names_relative_paths_snapshot_paths_and_double_stars() {
    let env = Env::init();
    let src = env.path("src");
    files(
        &src,
        &[
            "keep.txt",
            "app.log",
            "sub/app.log",
            "sub/tmp/t.txt",
            "other/tmp/t.txt",
            "deep/a/b/c.o",
            "deep/a/b/c.c",
            "Photos/P.JPG",
            "Photos/p.png",
            "named/x.txt",
        ],
    );
    let got = backup_listing(
        &env,
        &[
            "-e",
            "*.log",
            "--exclude",
            "sub/tmp",
            "--exclude",
            "**/*.o",
            "--exclude",
            "/data/named",
            "--iexclude",
            "*.jpg",
            &format!("data={}", src.display()),
        ],
    );
    assert_listing(
        &got,
        &[
            "data/keep.txt",
            "data/other/tmp/t.txt",
            "data/deep/a/b/c.c",
            "data/Photos/p.png",
            "data/sub",
        ],
        &[
            "data/app.log",
            "data/sub/app.log",
            "data/sub/tmp",
            "data/deep/a/b/c.o",
            "data/Photos/P.JPG",
            "data/named",
        ],
    );
    // A case-sensitive pattern does not match another case.
    let got = backup_listing(
        &env,
        &["--exclude", "*.jpg", &format!("data={}", src.display())],
    );
    assert_listing(&got, &["data/Photos/P.JPG"], &[]);
}

#[test]
fn exclude_files_are_read_with_comments_and_a_missing_one_is_an_error() {
    let env = Env::init();
    let src = env.path("src");
    files(
        &src,
        &["keep.txt", "a.tmp", "build/out", "Secret/key", "notes.md"],
    );
    let list = env.path("excludes.txt");
    write(
        &list,
        format!(
            "# build output\n\n*.tmp\n  {}/build  \n#notes.md\n",
            src.display()
        ),
    );
    let ilist = env.path("iexcludes.txt");
    write(&ilist, "SECRET\n");
    let got = backup_listing(
        &env,
        &[
            "--exclude-file".as_ref(),
            list.as_os_str(),
            "--iexclude-file".as_ref(),
            ilist.as_os_str(),
            src.as_os_str(),
        ],
    );
    assert_listing(
        &got,
        &["src/keep.txt", "src/notes.md"],
        &["src/a.tmp", "src/build", "src/Secret"],
    );

    let before = env.snapshots().len();
    for option in ["--exclude-file", "--iexclude-file"] {
        let missing = env.path("no-such-excludes.txt");
        env.run([
            "backup".as_ref(),
            option.as_ref(),
            missing.as_os_str(),
            src.as_os_str(),
        ])
        .expect_code(exit::ERROR)
        .stderr_has("no-such-excludes.txt");
    }
    let missing = env.path("no-such-list");
    env.run([
        "backup".as_ref(),
        "--files-from".as_ref(),
        missing.as_os_str(),
    ])
    .expect_code(exit::ERROR)
    .stderr_has("no-such-list");
    // A bad pattern is named too.
    env.run([
        "backup".as_ref(),
        "--exclude".as_ref(),
        "[oops".as_ref(),
        src.as_os_str(),
    ])
    .expect_code(exit::ERROR)
    .stderr_has("[oops");
    assert_eq!(
        env.snapshots().len(),
        before,
        "a failed backup wrote a snapshot"
    );
}

#[test]
fn exclude_caches_keeps_only_a_valid_tag() {
    let env = Env::init();
    let src = env.path("src");
    files(
        &src,
        &["keep.txt", "cache/blob", "cache/sub/blob", "fake/blob"],
    );
    write(
        &src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n",
    );
    write(&src.join("fake/CACHEDIR.TAG"), "not a signature\n");
    let got = backup_listing(&env, &["--exclude-caches".as_ref(), src.as_os_str()]);
    assert_listing(
        &got,
        &[
            "src/keep.txt",
            "src/cache",
            "src/cache/CACHEDIR.TAG",
            "src/fake/blob",
        ],
        &["src/cache/blob", "src/cache/sub"],
    );
    // Without the option, everything is kept.
    let got = backup_listing(&env, &[src.as_os_str()]);
    assert_listing(&got, &["src/cache/blob", "src/cache/sub/blob"], &[]);
}

#[test]
fn exclude_if_present_leaves_out_what_a_marker_sits_beside() {
    let env = Env::init();
    let src = env.path("src");
    files(
        &src,
        &[
            "keep.txt",
            "vm/disk.img",
            "vm/.nobackup",
            "hdr/data",
            "nohdr/data",
        ],
    );
    write(&src.join("hdr/.skip"), "SKIP-ME please");
    write(&src.join("nohdr/.skip"), "something else");
    let got = backup_listing(
        &env,
        &[
            "--exclude-if-present",
            ".nobackup",
            "--exclude-if-present",
            ".skip:SKIP-ME",
            &src.display().to_string(),
        ],
    );
    assert_listing(
        &got,
        &[
            "src/keep.txt",
            "src/vm/.nobackup",
            "src/hdr/.skip",
            "src/nohdr/data",
        ],
        &["src/vm/disk.img", "src/hdr/data"],
    );
    env.run([
        "backup",
        "--exclude-if-present",
        "a/b",
        &src.display().to_string(),
    ])
    .expect_code(exit::ERROR)
    .stderr_has("--exclude-if-present");
}

#[test]
fn files_from_lists_expand_globs_and_take_verbatim_and_raw_paths() {
    let env = Env::init();
    let root = env.path("data");
    files(
        &root,
        &[
            "one/a.txt",
            "two/b.txt",
            "three/c.bin",
            "# hash/x",
            "sp ace/y",
        ],
    );
    let weird = root.join("new\nline");
    write(&weird.join("z"), "z");
    let d = root.display();

    // Globs, comments and blank lines.
    let list = env.path("list");
    write(
        &list,
        format!("# sources\n\n{d}/one\n  {d}/t*  \n{d}/none-*\n"),
    );
    let out = env.run(["backup".as_ref(), "--files-from".as_ref(), list.as_os_str()]);
    out.success().stderr_has("none-*");
    assert_listing(
        &listed(&env),
        &["one/a.txt", "two/b.txt", "three/c.bin"],
        &["# hash", "sp ace"],
    );

    // Verbatim: `#` and spaces are part of the path.
    let list = env.path("verbatim");
    write(&list, format!("{d}/# hash\n\n{d}/sp ace\n"));
    env.run([
        "backup".as_ref(),
        "--files-from-verbatim".as_ref(),
        list.as_os_str(),
    ])
    .success();
    assert_listing(&listed(&env), &["# hash/x", "sp ace/y"], &["one"]);

    // Raw: NUL-separated, a newline inside a name.
    let list = env.path("raw");
    let mut raw = weird.clone().into_os_string().into_vec();
    raw.push(0);
    raw.extend_from_slice(root.join("one").as_os_str().as_encoded_bytes());
    raw.push(0);
    std::fs::write(&list, raw).unwrap();
    env.run([
        "backup".as_ref(),
        "--files-from-raw".as_ref(),
        list.as_os_str(),
    ])
    .success();
    assert_listing(&listed(&env), &["new\nline/z", "one/a.txt"], &["two"]);

    // A listed path that does not exist fails the backup, as a missing source does.
    let list = env.path("missing");
    write(&list, format!("{d}/one\n{d}/not-there\n"));
    let before = env.snapshots().len();
    env.run([
        "backup".as_ref(),
        "--files-from-verbatim".as_ref(),
        list.as_os_str(),
    ])
    .expect_code(exit::ERROR)
    .stderr_has("not-there");
    assert_eq!(env.snapshots().len(), before);
}

#[test]
fn dry_run_reads_and_compares_but_stores_nothing() {
    let env = Env::init();
    let src = env.path("src");
    files(&src, &["a.txt", "b.txt", "sub/c.txt"]);
    let before = repo_objects(&env);

    let out = env.run([
        "backup".as_ref(),
        "--dry-run".as_ref(),
        "--json".as_ref(),
        src.as_os_str(),
    ]);
    out.success();
    let v = out.json();
    assert_eq!(v["dry_run"], true, "{v}");
    assert!(v["snapshot_id"].is_null(), "{v}");
    assert_eq!(v["files_read"], 3, "{v}");
    assert!(v["bytes_added"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["packs_written"], 0, "{v}");
    let read: Vec<&str> = v["would_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ["a.txt", "b.txt", "sub/c.txt"]
        .iter()
        .map(|f| src.join(f).display().to_string())
        .collect();
    assert_eq!(read, want, "{v}");
    assert!(
        v["would_read"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["reason"] == "new")
    );
    assert_eq!(
        repo_objects(&env),
        before,
        "a dry run changed the repository"
    );
    assert!(env.snapshots().is_empty());

    // Against a parent: only what changed would be read.
    env.backup_json(&[&src]);
    let after_backup = repo_objects(&env);
    write(&src.join("b.txt"), "b, changed and longer");
    write(&src.join("new.txt"), "new");
    let out = env.run([
        "backup".as_ref(),
        "-n".as_ref(),
        "-v".as_ref(),
        src.as_os_str(),
    ]);
    out.success();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("would read "))
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].contains("changed") && lines[0].contains("b.txt"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].contains("new") && lines[1].contains("new.txt"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nothing stored"), "{}", out.stdout);
    assert!(out.stdout.contains("would read"), "{}", out.stdout);
    assert_eq!(
        repo_objects(&env),
        after_backup,
        "a dry run changed the repository"
    );
    assert_eq!(env.snapshots().len(), 1);

    // Without -v: the summary, not the files.
    let out = env.run(["backup".as_ref(), "--dry-run".as_ref(), src.as_os_str()]);
    out.success();
    assert!(!out.stdout.contains("new.txt"), "{}", out.stdout);
}

#[test]
fn dry_run_never_creates_a_repository() {
    let env = Env::new();
    let src = env.path("src");
    files(&src, &["a.txt"]);
    // The default repository (no COFFER_REPO), which a real backup would create.
    let mut c = env.cmd();
    c.env_remove("COFFER_REPO");
    let out = env.run_cmd(
        c,
        ["backup".as_ref(), "--dry-run".as_ref(), src.as_os_str()],
    );
    out.expect_code(exit::NO_REPOSITORY);
    let default = env.home.join(".local/share/coffer");
    assert!(!default.exists(), "a dry run created {}", default.display());
    // A named one that does not exist.
    env.run(["backup".as_ref(), "-n".as_ref(), src.as_os_str()])
        .expect_code(exit::NO_REPOSITORY);
    assert!(!env.repo.exists());
}

/// An empty or relative `XDG_DATA_HOME` / `XDG_CACHE_HOME` counts as unset (the XDG base
/// directory specification): the default repository goes under `$HOME/.local/share`, never
/// under the working directory, where an empty `XDG_DATA_HOME` once put it.
#[test]
fn empty_or_relative_xdg_directories_count_as_unset() {
    let env = Env::new();
    let src = env.path("src");
    files(&src, &["a.txt"]);
    let cwd = env.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    for (data, cache) in [("", ""), ("relative/data", "relative/cache")] {
        let mut c = env.cmd();
        c.env_remove("COFFER_REPO")
            .env_remove("COFFER_CACHE_DIR")
            .env("XDG_DATA_HOME", data)
            .env("XDG_CACHE_HOME", cache)
            .current_dir(&cwd);
        env.run_cmd(c, ["backup".as_ref(), src.as_os_str()])
            .success();
    }
    assert!(
        env.home
            .join(".local/share/coffer/repository/config")
            .is_file()
    );
    assert!(env.home.join(".cache/coffer").is_dir());
    let left: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert!(left.is_empty(), "the working directory got {left:?}");
}

#[test]
fn selection_options_are_refused_with_docker() {
    let env = Env::init();
    env.run(["backup", "--docker", "--all-volumes", "--dry-run"])
        .expect_code(exit::ERROR)
        .stderr_has("--dry-run does not apply to --docker");
}

/// `--one-file-system` needs a second file system below a source; making one takes a mount
/// (root and CAP_SYS_ADMIN). `/dev` with `/dev/shm` mounted below it is one where the
/// container has it; elsewhere the decision is covered by the unit test of
/// `engine::exclude::boundary`, and this test says so and returns.
#[test]
fn one_file_system_keeps_mount_points_empty() {
    let (dev, shm) = (Path::new("/dev"), Path::new("/dev/shm"));
    let devices = (std::fs::metadata(dev), std::fs::metadata(shm));
    let (Ok(d), Ok(s)) = devices else {
        eprintln!("no /dev/shm: --one-file-system is covered by the unit test only");
        return;
    };
    if d.dev() == s.dev() || tempfile::tempdir_in(shm).is_err() {
        eprintln!("/dev/shm is not a writable mount below /dev: unit test only");
        return;
    }
    let env = Env::init();
    let marker = tempfile::tempdir_in(shm).unwrap();
    write(&marker.path().join("f"), "on another file system");
    let name = marker
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let inside = format!("dev/shm/{name}/f");

    // Device nodes are only recorded, never read; an unreadable entry is a warning (exit 3).
    let out = env.run(["backup", "--one-file-system", "dev=/dev"]);
    assert!(out.code == 0 || out.code == exit::PARTIAL, "{out:?}");
    assert_listing(&listed(&env), &["dev/shm", "dev/null"], &[&inside]);

    let out = env.run(["backup", "dev=/dev"]);
    assert!(out.code == 0 || out.code == exit::PARTIAL, "{out:?}");
    assert_listing(&listed(&env), &[&inside], &[]);
}
