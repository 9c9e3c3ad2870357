//! The repository format is a contract: the repositories written by earlier format versions
//! (the golden fixtures in `tests/fixtures/format-vN/`, written once and never changed) must
//! still open, list, check and restore byte-identically with every later build, and a
//! repository of an older version must stay within its version's rules when written to.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use assert_cmd::cargo::CommandCargoExt;
use coffer::format::config::FORMAT_VERSION;
use coffer::format::pack::padded_len;
use coffer::format::padding;
use coffer::repo::Repository;
use coffer::storage::{LocalStore, ObjectStore};

const PASSWORD: &str = "coffer-fixture";
/// What `scripts/make-format-fixture.sh 2` printed when it wrote `tests/fixtures/format-v2/`.
const V2_SNAPSHOT: &str = "4f29b34f5c7a68fa8366a4b29292d3dccf49fff3e9a897cfb4ddbc20db419faa";
const V2_BLOB_SHA256: &str = "bd338e528bd045c79819771cfca94f0c7abd9aff00ca6cbf99cd945caf2c5537";
const V2_TEXT_SHA256: &str = "77de504442355419022286de36ad5b3b6e4e56f513c35190138b2e602e294493";
/// What `scripts/make-format-fixture.sh 3` printed when it wrote `tests/fixtures/format-v3/`
/// (same data, so the same file digests).
const V3_SNAPSHOT: &str = "b94f0c036dc8e91d7bedb7cc6438ef9f5d135ed3ff002871b8e3e946ed088d5c";

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

fn fixture(version: u32) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/format-v{version}/repo"))
}

fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Check that every blob of every index file of `repo` is padded by the rule of `version`;
/// returns how many blobs there are and their padding bytes in all.
fn assert_padded_by(repo: &Path, version: u32) -> (usize, u64) {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(repo.to_path_buf()));
    let r = Repository::open(store, PASSWORD.as_bytes()).unwrap();
    let (mut blobs, mut padding) = (0, 0u64);
    for id in r.list_index_files().unwrap() {
        for pack in r.load_index(&id).unwrap() {
            for b in &pack.blobs {
                assert_eq!(
                    b.packed_len as usize,
                    padded_len(version, b.data_len as usize) + 40,
                    "version {version}, payload {}",
                    b.data_len
                );
                blobs += 1;
                padding += u64::from(b.packed_len - 40 - b.data_len);
            }
        }
    }
    assert!(blobs > 0);
    (blobs, padding)
}

/// The format version in `repo`'s config.
fn config_version(repo: &Path) -> u64 {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("config")).unwrap()).unwrap();
    config["version"].as_u64().unwrap()
}

/// Files of many sizes, compressible and not, so that blobs fall in many padding classes; all
/// below the default minimum chunk (256 KiB), so each is one blob and the padding is the same
/// in every run.
fn assorted_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, len) in [0usize, 1, 31, 33, 300, 4097, 9000, 70_000, 200_000, 250_000]
        .into_iter()
        .enumerate()
    {
        let noise: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(format!("noise{i}")), &noise).unwrap();
        std::fs::write(dir.join(format!("text{i}")), "coffer ".repeat(len / 7)).unwrap();
    }
}

/// What a golden fixture holds (v1 written by coffer 0.1.0, v2 by
/// `scripts/make-format-fixture.sh`): one snapshot of `data/` with a readme, a binary and a
/// text file, a symlink and an empty directory, all with one mtime.
struct Fixture {
    version: u32,
    snapshot: &'static str,
    blob_sha256: &'static str,
    text_sha256: &'static str,
    mtime: &'static str,
}

/// Open a copy of the fixture (commands take locks; the fixture must stay untouched), list,
/// check and restore it, and compare what comes out. Returns the work directory, the copy of
/// the repository and the restored `data/`.
fn restore_fixture(f: &Fixture) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&fixture(f.version), &repo);
    let cache = dir.path().join("cache");

    let out = coffer(&repo, &cache, &["snapshots", "--json"]);
    assert_ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = list.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], f.snapshot);
    assert_eq!(snaps[0]["host"], "fixture-host");
    assert_eq!(snaps[0]["tags"][0], "fixture");

    assert_ok(&coffer(&repo, &cache, &["check", "--read-data"]));
    let target = dir.path().join("out");
    assert_ok(&coffer(
        &repo,
        &cache,
        &[
            "restore",
            "-s",
            &f.snapshot[..8],
            "-t",
            target.to_str().unwrap(),
        ],
    ));
    let data = target.join("data");
    assert_eq!(
        std::fs::read_to_string(data.join("docs/readme.txt")).unwrap(),
        format!("hello coffer format v{}\n", f.version)
    );
    assert_eq!(sha256(&data.join("blob.bin")), f.blob_sha256);
    assert_eq!(sha256(&data.join("text.txt")), f.text_sha256);
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("docs/readme.txt")
    );
    assert!(data.join("empty-dir").is_dir());
    let mtime = std::fs::metadata(data.join("blob.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let expected = chrono::DateTime::parse_from_rfc3339(f.mtime).unwrap();
    assert_eq!(chrono::DateTime::<chrono::Utc>::from(mtime), expected);
    (dir, repo, data)
}

#[test]
fn format_v1_fixture_still_reads() {
    restore_fixture(&Fixture {
        version: 1,
        snapshot: "9f364a6c8640a6ee47a1b236276e4b34a63d7d33fccf0ddf6ae6db31e5f4a5ca",
        blob_sha256: "ac4660530ca27737632410d5b1840a52389bd6d323d7da526c952123884cbd54",
        text_sha256: "a8a9cf1989367f7118621fa4cf6a457f021bb6b12b771bb69cff768846cc2e96",
        mtime: "2025-11-16T03:00:00Z",
    });
}

#[test]
fn format_v2_fixture_still_reads() {
    let (_dir, repo, data) = restore_fixture(&Fixture {
        version: 2,
        snapshot: V2_SNAPSHOT,
        blob_sha256: V2_BLOB_SHA256,
        text_sha256: V2_TEXT_SHA256,
        mtime: "2026-11-23T03:00:00Z",
    });
    assert_eq!(std::fs::read(data.join("docs/one-byte.txt")).unwrap(), b"x");
    // The fixture itself was padded by the version 2 rule.
    assert_padded_by(&repo, 2);
}

#[test]
fn format_v3_fixture_still_reads() {
    let (_dir, repo, data) = restore_fixture(&Fixture {
        version: 3,
        snapshot: V3_SNAPSHOT,
        blob_sha256: V2_BLOB_SHA256,
        text_sha256: V2_TEXT_SHA256,
        mtime: "2026-11-23T03:00:00Z",
    });
    assert_eq!(std::fs::read(data.join("docs/one-byte.txt")).unwrap(), b"x");
    assert_padded_by(&repo, 3);
    assert_objects_bucketed(&repo);
}

/// Every file under `dir/<sub>` with its size.
fn files(dir: &Path, sub: &str) -> std::collections::BTreeMap<std::path::PathBuf, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.join(sub)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), e.metadata().unwrap().len());
            }
        }
    }
    out
}

fn sizes(dir: &Path, sub: &str) -> Vec<u64> {
    files(dir, sub).into_values().collect()
}

/// Every pack of a version 3 repository is stored at a bucket size, and every index file and
/// snapshot at a padded-object size.
fn assert_objects_bucketed(repo: &Path) {
    let packs = sizes(repo, "packs");
    assert!(!packs.is_empty());
    for n in packs {
        assert_eq!(
            n,
            padding::pack_len(n),
            "pack of {n} bytes is not a bucket size"
        );
        assert!(n >= padding::MIN_PACK_BYTES);
    }
    for sub in ["index", "snapshots"] {
        for n in sizes(repo, sub) {
            let plain = n as usize - 40;
            assert_eq!(
                plain,
                padding::object_len(plain),
                "{sub} object of {n} bytes"
            );
        }
    }
}

/// A version 2 repository keeps its rules when this build writes to it: no pack or object
/// padding (another host with an older build may share it), and the seeded chunker, so the
/// same data deduplicates against what it stored before.
#[test]
fn v2_repository_keeps_v2_rules_and_chunker_when_written() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&fixture(2), &repo);
    let cache = dir.path().join("cache");
    let src = dir.path().join("data");
    assorted_files(&src);
    std::fs::write(src.join("big"), vec![7u8; 3 << 20]).unwrap();
    assert_ok(&coffer(&repo, &cache, &["backup", src.to_str().unwrap()]));
    assert_eq!(config_version(&repo), 2);
    assert_padded_by(&repo, 2);
    // Tree packs of a small backup are far below the version 3 minimum.
    assert!(
        sizes(&repo, "packs")
            .iter()
            .any(|&n| n < padding::MIN_PACK_BYTES / 4)
    );
    for n in sizes(&repo, "snapshots") {
        assert!(n < 4096, "snapshot of {n} bytes is padded");
    }
    // The fixture's v2 packs read, and a second backup of the same data adds no data blob.
    let out = coffer(&repo, &cache, &["backup", "--json", src.to_str().unwrap()]);
    assert_ok(&out);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files_read"], 0, "{summary}");
    assert_ok(&coffer(&repo, &cache, &["check", "--read-data"]));
}

/// In a version 3 repository a lone new file in an incremental backup gets a pack of the
/// smallest bucket whatever its size below it, so the pack does not give the size away.
#[test]
fn v3_lone_new_file_does_not_reveal_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let cache = dir.path().join("cache");
    let src = dir.path().join("data");
    assorted_files(&src);
    assert_ok(&coffer(&repo, &cache, &["init"]));
    assert_ok(&coffer(&repo, &cache, &["backup", src.to_str().unwrap()]));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for (i, len) in [10usize, 3_000, 90_000, 200_000].into_iter().enumerate() {
        let before = files(&repo, "packs");
        let noise: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(src.join(format!("new{i}")), &noise).unwrap();
        assert_ok(&coffer(&repo, &cache, &["backup", src.to_str().unwrap()]));
        let new: Vec<u64> = files(&repo, "packs")
            .into_iter()
            .filter(|(p, _)| !before.contains_key(p))
            .map(|(_, n)| n)
            .collect();
        // One data pack with the file, one tree pack with the changed directories.
        assert_eq!(
            new,
            vec![padding::MIN_PACK_BYTES; 2],
            "packs of a backup that added a file of {len} bytes"
        );
    }
    assert_objects_bucketed(&repo);
    assert_ok(&coffer(&repo, &cache, &["check", "--read-data"]));
}

/// A build that writes version 2 must not write version 2 blobs into a version 1 repository:
/// another host with an older build may share it.
#[test]
fn v1_repository_keeps_v1_rules_when_written() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&fixture(1), &repo);
    let cache = dir.path().join("cache");
    let src = dir.path().join("data");
    assorted_files(&src);
    let (before, _) = assert_padded_by(&repo, 1);
    assert_ok(&coffer(&repo, &cache, &["backup", src.to_str().unwrap()]));

    let (after, _) = assert_padded_by(&repo, 1);
    assert!(after > before + 10, "the backup added blobs");
    assert_eq!(config_version(&repo), 1);
    assert_ok(&coffer(&repo, &cache, &["check", "--read-data"]));
    let target = dir.path().join("out");
    assert_ok(&coffer(
        &repo,
        &cache,
        &["restore", "-s", "latest", "-t", target.to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read(src.join("noise9")).unwrap(),
        std::fs::read(target.join("data/noise9")).unwrap()
    );
}

/// `init` writes the current version with its finer padding; `--format-version 1` still makes
/// a version 1 repository, and a version this build does not know is refused.
#[test]
fn init_writes_current_version_and_can_write_v1() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data");
    assorted_files(&src);
    let mut paddings = Vec::new();
    for (version, args) in [
        (FORMAT_VERSION, &["init"][..]),
        (1, &["init", "--format-version", "1"][..]),
    ] {
        let repo = dir.path().join(format!("repo-{version}"));
        let cache = dir.path().join(format!("cache-{version}"));
        assert_ok(&coffer(&repo, &cache, args));
        assert_ok(&coffer(&repo, &cache, &["backup", src.to_str().unwrap()]));
        assert_eq!(config_version(&repo), u64::from(version));
        let (_, padding) = assert_padded_by(&repo, version);
        assert_ok(&coffer(&repo, &cache, &["check", "--read-data"]));
        paddings.push(padding);
    }
    // Same data: the finer rule pads far less (each rule's bound is in src/format/pack.rs).
    assert!(
        paddings[0] * 4 < paddings[1],
        "padding v2, v1: {paddings:?}"
    );
    let out = coffer(
        &dir.path().join("repo-new"),
        &dir.path().join("cache-new"),
        &[
            "init",
            "--format-version",
            &(FORMAT_VERSION + 1).to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(!dir.path().join("repo-new/config").exists());
}

/// `init --from` makes a mirror for `sync`: it keeps its source's format version, since the
/// packs it will receive were written by that version's rules.
#[test]
fn init_from_keeps_the_source_version() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    copy_dir(&fixture(1), &source);
    let mirror = dir.path().join("mirror");
    let out = coffer(
        &mirror,
        &dir.path().join("cache"),
        &["init", "--from", source.to_str().unwrap()],
    );
    assert_ok(&out);
    assert_eq!(config_version(&mirror), 1);
    let cache = dir.path().join("cache");
    let out = coffer(&source, &cache, &["sync", "--to", mirror.to_str().unwrap()]);
    assert_ok(&out);
    assert_ok(&coffer(&mirror, &cache, &["check", "--read-data"]));
}
