//! `latest` narrowed by --host/--tag/--source, `rewrite` and `stats --mode`, against the real
//! binary on real files.

mod common;

use std::path::{Path, PathBuf};

use common::{Env, assert_no_panic, assert_trees_equal, list_tree, pseudo_random};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn backup(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    let out = env.run(all);
    out.success();
    out.json()["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_string()
}

fn ls(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = vec!["ls"];
    all.extend_from_slice(args);
    let out = env.run(all);
    out.success();
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn latest_is_the_newest_snapshot_of_the_host_tag_and_source_asked_for() {
    let env = Env::init();
    let (web, db) = (env.path("web"), env.path("db"));
    write(&web.join("index.html"), "<html>");
    write(&db.join("dump.sql"), "CREATE TABLE t;");
    let web_s = web.to_str().unwrap();
    let db_s = db.to_str().unwrap();
    backup(&env, &["--host", "front", "--tag", "weekly", web_s]);
    backup(&env, &["--host", "back", db_s]);

    // Unfiltered, `latest` is the newest of all: the database host's.
    assert!(ls(&env, &["latest"]).contains(&"db/dump.sql".to_string()));
    // Narrowed: by host, by tag, by source name and by the path the source was read from.
    for filter in [
        vec!["--host", "front"],
        vec!["--tag", "weekly"],
        vec!["--source", "web"],
        vec!["--source", web_s],
    ] {
        let mut args = vec!["latest"];
        args.extend(filter.iter().copied());
        let listed = ls(&env, &args);
        assert!(
            listed.contains(&"web/index.html".to_string()),
            "{filter:?}: {listed:?}"
        );
    }
    let out = env.run(["dump", "latest", "web/index.html", "--host", "front"]);
    out.success();
    assert_eq!(out.stdout, "<html>");
    let target = env.path("restored");
    env.run([
        "restore",
        "latest",
        "--host",
        "front",
        "--target",
        target.to_str().unwrap(),
    ])
    .success();
    assert!(target.join("web/index.html").is_file());
    assert!(!target.join("db").exists());

    // Nothing passes: a one-line error naming the filter, no panic.
    let out = env.run(["ls", "latest", "--host", "nowhere"]);
    out.failure();
    assert_no_panic(&out);
    out.stderr_has("no snapshot of host nowhere");
}

/// A source with a secret, a dependency directory and ordinary files, backed up once.
fn source_with_mistakes(env: &Env) -> (std::path::PathBuf, String) {
    let src = env.path("app");
    write(&src.join("README"), "hello");
    write(&src.join("config/.env"), "TOKEN=hunter2");
    write(&src.join("config/app.toml"), "port = 80");
    write(&src.join("data/big.bin"), pseudo_random(7, 3 << 20));
    for i in 0..20 {
        write(
            &src.join(format!("node_modules/m{i}/index.js")),
            format!("m{i}"),
        );
    }
    let id = backup(env, &[src.to_str().unwrap()]);
    (src, id)
}

#[test]
fn rewrite_leaves_out_what_matches_and_keeps_everything_else_byte_for_byte() {
    let env = Env::init();
    let (src, original) = source_with_mistakes(&env);
    let abs_modules = format!("{}/node_modules", src.display());

    // A dry run says what would go and writes nothing.
    let out = env.run(["rewrite", "--json", "-n", "--exclude", ".env", &original]);
    out.success();
    let v = out.strict_json();
    assert_eq!(v["rewritten"][0]["removed"]["files"], 1, "{v}");
    assert!(v["rewritten"][0]["new_id"].is_null());
    assert_eq!(env.snapshots().len(), 1);

    // By name at any depth, and by the absolute path the source was read from.
    let out = env.run([
        "rewrite",
        "--json",
        "--exclude",
        ".env",
        "--exclude",
        &abs_modules,
    ]);
    out.success();
    let v = out.strict_json();
    let r = &v["rewritten"][0];
    assert_eq!(r["old_id"], original.as_str());
    assert_eq!(r["removed"]["files"], 21, "{v}");
    assert_eq!(r["removed"]["dirs"], 21, "{v}");
    let new_id = r["new_id"].as_str().expect("new id").to_string();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2, "the original stays without --forget");
    let new = snaps.iter().find(|s| s["id"] == new_id.as_str()).unwrap();
    assert!(
        new["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "rewrite")
    );

    // The new snapshot is the source without what was excluded, byte for byte.
    let target = env.path("restored");
    env.run(["restore", &new_id, "--target", target.to_str().unwrap()])
        .success();
    let restored = list_tree(&target.join("app"));
    let expected: Vec<PathBuf> = list_tree(&src)
        .into_iter()
        .filter(|p| !p.ends_with(".env") && !p.starts_with("node_modules"))
        .collect();
    assert_eq!(restored, expected);
    for p in &expected {
        let (a, b) = (src.join(p), target.join("app").join(p));
        if a.is_file() {
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{p:?}"
            );
        }
    }
    // The other snapshot still restores whole.
    let whole = env.path("whole");
    env.run(["restore", &original, "--target", whole.to_str().unwrap()])
        .success();
    assert_trees_equal(&src, &whole.join("app"));

    // --forget replaces the snapshot; then prune and check find the repository whole.
    let out = env.run([
        "rewrite",
        "--json",
        "--forget",
        "--exclude",
        "big.bin",
        &new_id,
    ]);
    out.success();
    let v = out.strict_json();
    assert_eq!(v["rewritten"][0]["forgotten"], true);
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&new_id));
    env.run(["forget", &original]).success();
    env.run(["prune"]).success();
    env.run(["check", "--read-data"]).success();
    let listed = ls(&env, &["latest"]);
    assert!(
        listed.contains(&"app/config/app.toml".to_string()),
        "{listed:?}"
    );
    assert!(
        !listed
            .iter()
            .any(|p| p.contains(".env") || p.contains("big.bin"))
    );
}

#[test]
fn rewrite_without_a_match_or_a_pattern_changes_nothing() {
    let env = Env::init();
    let (_src, original) = source_with_mistakes(&env);
    let out = env.run(["rewrite", "--json", "--exclude", "*.nothing"]);
    out.success();
    let v = out.strict_json();
    assert_eq!(v["unchanged"], 1);
    assert_eq!(v["rewritten"], serde_json::json!([]));
    assert_eq!(env.snapshots().len(), 1);

    let out = env.run(["rewrite", &original]);
    out.failure();
    assert_no_panic(&out);
    out.stderr_has("--exclude");
    let out = env.run(["rewrite", "--exclude", "x", "ffffffffffff"]);
    out.failure();
    assert_no_panic(&out);
    out.stderr_has("no snapshot");
}

#[test]
fn stats_modes_count_files_content_and_blobs() {
    let env = Env::init();
    let src = env.path("s");
    let a = pseudo_random(1, 1000);
    write(&src.join("a"), &a);
    write(&src.join("copy/of_a"), &a);
    write(&src.join("c"), pseudo_random(2, 500));
    let first = backup(&env, &[src.to_str().unwrap()]);
    backup(&env, &[src.to_str().unwrap()]);

    let stats = |args: &[&str]| {
        let mut all = vec!["stats", "--json"];
        all.extend_from_slice(args);
        let out = env.run(all);
        out.success();
        out.strict_json()
    };
    let v = stats(&["--mode", "restore-size"]);
    assert_eq!(
        (
            v["snapshots_count"].as_u64(),
            v["total_file_count"].as_u64()
        ),
        (Some(2), Some(6))
    );
    assert_eq!(v["total_size"], 5000);
    let v = stats(&["--mode", "files-by-contents"]);
    assert_eq!(v["total_file_count"], 2, "{v}");
    assert_eq!(v["total_size"], 1500);
    let v = stats(&["--mode", "raw-data"]);
    // Two content blobs, and the trees: root, `s`, `copy`.
    assert_eq!(v["total_blob_count"], 5, "{v}");
    assert!(v["total_size"].as_u64().unwrap() > 1500);
    assert!(v["total_stored_size"].as_u64().unwrap() > 0);
    // One snapshot by id: restore-size is the default mode.
    let v = stats(&[&first[..10]]);
    assert_eq!(v["total_file_count"], 3);
    assert_eq!(v["mode"], "restore-size");
    // Without a mode or snapshot: the repository's own figures, as before.
    let v = stats(&[]);
    assert_eq!(v["snapshots"], 2);

    let out = env.run(["stats", "--mode", "raw-data", "0000000000"]);
    out.failure();
    assert_no_panic(&out);
    out.stderr_has("no snapshot");
}

#[test]
fn install_script_puts_the_binary_completions_and_man_pages_in_place() {
    let env = Env::new();
    let prefix = env.path("prefix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("PREFIX", &prefix)
        .env("COFFER_BIN", common::coffer_bin())
        .output()
        .expect("run install.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = prefix.join("bin/coffer");
    let version = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .expect("run the installed binary");
    assert!(version.status.success());
    let bash = std::fs::read_to_string(prefix.join("share/bash-completion/completions/coffer"))
        .expect("bash completion");
    assert!(
        bash.contains("rewrite") && bash.contains("--keep-within"),
        "bash completion"
    );
    let zsh = std::fs::read_to_string(prefix.join("share/zsh/site-functions/_coffer")).unwrap();
    assert!(zsh.starts_with("#compdef coffer"));
    assert!(
        prefix
            .join("share/fish/vendor_completions.d/coffer.fish")
            .is_file()
    );
    let man = std::fs::read_to_string(prefix.join("share/man/man1/coffer-rewrite.1"))
        .expect("man page of a subcommand");
    assert!(man.contains(".TH") && man.contains("exclude"));
    assert!(prefix.join("share/man/man1/coffer.1").is_file());
}
