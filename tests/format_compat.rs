//! The repository format is a contract: a repository written by format version 1 (the golden
//! fixture in `tests/fixtures/format-v1/`, written by coffer 0.1.0) must still open, list,
//! check and restore byte-identically with every later build.

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

const PASSWORD: &str = "coffer-fixture";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn coffer(repo: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("coffer")
        .unwrap()
        .args(args)
        .env("COFFER_REPO", repo)
        .env("COFFER_PASSWORD", PASSWORD)
        .env("COFFER_CACHE_DIR", cache)
        .env_remove("COFFER_PASSWORD_FILE")
        .output()
        .unwrap()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn format_v1_fixture_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // Copy: commands take locks, and the fixture must stay untouched.
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1/repo"),
        &repo,
    );
    let cache = dir.path().join("cache");

    let out = coffer(&repo, &cache, &["snapshots", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = list.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        snaps[0]["id"],
        "9f364a6c8640a6ee47a1b236276e4b34a63d7d33fccf0ddf6ae6db31e5f4a5ca"
    );
    assert_eq!(snaps[0]["host"], "fixture-host");
    assert_eq!(snaps[0]["tags"][0], "fixture");

    let out = coffer(&repo, &cache, &["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let target = dir.path().join("out");
    let out = coffer(
        &repo,
        &cache,
        &["restore", "-s", "9f364a6c", "-t", target.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = target.join("data");
    assert_eq!(
        std::fs::read_to_string(data.join("docs/readme.txt")).unwrap(),
        "hello coffer format v1\n"
    );
    assert_eq!(
        sha256(&data.join("blob.bin")),
        "ac4660530ca27737632410d5b1840a52389bd6d323d7da526c952123884cbd54"
    );
    assert_eq!(
        sha256(&data.join("text.txt")),
        "a8a9cf1989367f7118621fa4cf6a457f021bb6b12b771bb69cff768846cc2e96"
    );
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("docs/readme.txt")
    );
    assert!(data.join("empty-dir").is_dir());
    let mtime = std::fs::metadata(data.join("blob.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let expected = chrono::DateTime::parse_from_rfc3339("2025-11-16T03:00:00Z").unwrap();
    assert_eq!(chrono::DateTime::<chrono::Utc>::from(mtime), expected);
}
