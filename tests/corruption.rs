//! Corruption matrix: for each object kind (config, key, pack, index, snapshot, tree) a flipped
//! bit, a truncation and a deletion are detected, named, never panic, and leave what is not
//! affected restorable. Lost or damaged index files are rebuilt by `repair index`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Env, assert_trees_equal, list_tree, pseudo_random};

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    Truncate,
    Delete,
}

const DAMAGES: [Damage; 3] = [Damage::Flip, Damage::Truncate, Damage::Delete];

/// Bytes of `b` that hold content: in a pack, the blobs (format 3 pads packs inside the
/// sealed header, so the middle of a small pack, or its first third, is header padding).
fn content_len(path: &Path, b: &[u8]) -> usize {
    if path.to_string_lossy().contains("/packs/") {
        let n = b.len();
        let header = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize;
        n - 8 - header
    } else {
        b.len()
    }
}

fn damage(path: &Path, how: Damage) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    match how {
        Damage::Flip => {
            let mut b = fs::read(path).unwrap();
            let at = content_len(path, &b) / 2;
            b[at] ^= 0x08;
            fs::write(path, b).unwrap();
        }
        Damage::Truncate => {
            let b = fs::read(path).unwrap();
            fs::write(path, &b[..content_len(path, &b) / 3]).unwrap();
        }
        Damage::Delete => fs::remove_file(path).unwrap(),
    }
}

fn objects(repo: &Path, dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = list_tree(&repo.join(dir))
        .into_iter()
        .map(|r| repo.join(dir).join(r))
        .filter(|p| p.is_file())
        .collect();
    v.sort_by_key(|p| fs::metadata(p).unwrap().len());
    v
}

/// A repository with two sources: `a` (one 2 MB incompressible file, alone in the biggest
/// pack) and `b` (small text files); the first snapshot holds `b`, the second both.
fn setup() -> (Env, PathBuf, String, String) {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b/deep")).unwrap();
    fs::write(src.join("a/big.bin"), pseudo_random(3, 2_000_000)).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("b/deep/t{i}.txt")), format!("text {i}\n")).unwrap();
    }
    let a = src.join("a");
    let b = src.join("b");
    // The first night has only `b`, so `a`'s data lands in a pack of its own the second night.
    let first = env.backup_json(&[&b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = env.backup_json(&[&a, &b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.run(["check", "--read-data"]).success();
    (env, src, first, second)
}

/// A fresh cache, so nothing is answered from the catalog of before the damage.
fn forget_cache(env: &Env) {
    let _ = fs::remove_dir_all(&env.cache);
}

fn check_fails_naming(env: &Env, needle: &str, what: &str) {
    let out = env.run(["check", "--read-data"]);
    assert_ne!(out.code, 0, "{what}: check passed:\n{}", out.stdout);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(needle),
        "{what}: check does not name {needle}:\n{all}"
    );
}

#[test]
fn config_and_key_damage_is_named_and_refused() {
    for how in DAMAGES {
        let (env, _, _, _) = setup();
        damage(&env.repo.join("config"), how);
        forget_cache(&env);
        let out = env.run(["snapshots"]);
        assert_eq!(out.code, 1, "{how:?} config: {}", out.stderr);
        assert!(
            out.stderr.contains("config"),
            "{how:?} config: {}",
            out.stderr
        );
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        if matches!(how, Damage::Delete) {
            // `init` must not paper over a repository that lost its config.
            env.run(["init"]).failure();
        }

        let (env, _, _, _) = setup();
        let key = objects(&env.repo, "keys").pop().unwrap();
        damage(&key, how);
        forget_cache(&env);
        let out = env.run(["snapshots"]);
        assert_ne!(out.code, 0, "{how:?} key");
        // One error line (a warning naming the damaged key file may precede it).
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("key") || out.stderr.contains("passphrase"),
            "{how:?} key: {}",
            out.stderr
        );
    }
}

#[test]
fn data_pack_damage_names_the_file_and_spares_the_rest() {
    for how in DAMAGES {
        let (env, src, _, second) = setup();
        let pack = objects(&env.repo, "packs").pop().unwrap();
        let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
        damage(&pack, how);
        forget_cache(&env);
        check_fails_naming(&env, &pack_id[..16], &format!("{how:?} pack"));
        check_fails_naming(&env, "a/big.bin", &format!("{how:?} pack"));
        let target = env.path("out");
        let out = env.run(["restore", "-s", &second, "-t", target.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{how:?} pack restore: {}", out.stderr);
        assert!(out.stderr.contains("big.bin"), "{how:?}: {}", out.stderr);
        assert_trees_equal(&src.join("b"), &target.join("b"));
    }
}

#[test]
fn tree_pack_damage_is_found() {
    for how in DAMAGES {
        let (env, _, _, _) = setup();
        // Trees live in their own small packs: the smallest pack holds trees.
        let pack = objects(&env.repo, "packs").remove(0);
        let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
        damage(&pack, how);
        forget_cache(&env);
        let out = env.run(["check", "--read-data", "--json"]);
        assert_eq!(out.code, 1, "{how:?} tree pack: {}", out.stderr);
        let text = out.stdout.clone();
        assert!(
            text.contains("tree") || text.contains(&pack_id),
            "{how:?}: {text}"
        );
        // Restore fails loudly rather than writing a partial tree silently.
        let out = env.run(["restore", "-s", "latest", "-t", "out"]);
        assert_ne!(out.code, 0, "{how:?} restore after tree damage succeeded");
    }
}

#[test]
fn snapshot_damage_spares_other_snapshots() {
    for how in DAMAGES {
        let (env, src, first, second) = setup();
        damage(&env.repo.join("snapshots").join(&first), how);
        forget_cache(&env);
        let out = env.run(["check"]);
        match how {
            // A deleted snapshot is simply gone: the rest is consistent.
            Damage::Delete => {
                out.success();
            }
            _ => {
                assert_eq!(out.code, 1, "{how:?}");
                assert!(out.stderr.contains(&first[..16]), "{how:?}: {}", out.stderr);
            }
        }
        let target = env.path("out");
        env.run(["restore", "-s", &second, "-t", target.to_str().unwrap()])
            .success();
        assert_trees_equal(&src.join("b"), &target.join("b"));
        let out = env.run(["restore", "-s", &first, "-t", "out2"]);
        assert_ne!(out.code, 0, "{how:?}: a damaged snapshot restored");
    }
}

#[test]
fn index_damage_is_found_and_repaired() {
    for how in DAMAGES {
        let (env, src, _, second) = setup();
        for index in objects(&env.repo, "index") {
            damage(&index, how);
        }
        forget_cache(&env);
        let out = env.run(["check"]);
        assert_eq!(out.code, 1, "{how:?} index: check passed");
        env.run(["repair", "index"]).success();
        forget_cache(&env);
        env.run(["check", "--read-data"]).success();
        let target = env.path("out");
        env.run(["restore", "-s", &second, "-t", target.to_str().unwrap()])
            .success();
        assert_trees_equal(&src.join("a"), &target.join("a"));
        assert_trees_equal(&src.join("b"), &target.join("b"));
    }
}
