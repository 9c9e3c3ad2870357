//! `copy --from-repo` against the real binary, on real files: two repositories with different
//! passphrases and master keys.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{Env, Out, PASSWORD, assert_trees_equal, exit, list_tree, pseudo_random};

/// The destination's passphrase (the source's is [`PASSWORD`]).
const DST_PASSWORD: &str = "a different passphrase for the copy";
/// A cheap key for the test repositories.
const FAST_KEY: [&str; 4] = ["--kdf-memory", "19", "--kdf-iterations", "2"];

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A source repository (the environment's, [`PASSWORD`]) and a destination made by its own
/// `init` (`dst/`, [`DST_PASSWORD`]), so with another master key.
struct Pair {
    env: Env,
    dst: PathBuf,
    /// A file holding the source's passphrase.
    src_password_file: PathBuf,
}

impl Pair {
    fn new() -> Self {
        let env = Env::new();
        let mut init = vec!["init"];
        init.extend(FAST_KEY);
        env.run(&init).success();
        let dst = env.path("dst");
        let pair = Self {
            src_password_file: env.path("src-password"),
            dst,
            env,
        };
        pair.on_dst(&init).success();
        write(&pair.src_password_file, format!("{PASSWORD}\n"));
        pair
    }

    /// `coffer ARGS --repo dst/` with the destination's passphrase.
    fn on_dst(&self, args: &[&str]) -> Out {
        let mut a: Vec<OsString> = args.iter().map(OsString::from).collect();
        a.push("--repo".into());
        a.push(self.dst.clone().into());
        self.env.run_with_password(DST_PASSWORD, a)
    }

    /// `coffer copy --from-repo SRC --from-password-file F ARGS` into the destination.
    fn copy(&self, args: &[&str]) -> Out {
        let from = self.env.repo.to_str().expect("utf-8 path");
        let pw = self.src_password_file.to_str().expect("utf-8 path");
        let mut a = vec!["copy", "--from-repo", from, "--from-password-file", pw];
        a.extend(args);
        self.on_dst(&a)
    }

    fn copy_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend(args);
        let out = self.copy(&a);
        out.success();
        out.strict_json()
    }

    fn dst_snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.on_dst(&["snapshots", "--json"]);
        out.success();
        out.json().as_array().cloned().expect("an array")
    }

    /// Every object of the destination with its size (locks and temporary files aside).
    fn dst_objects(&self) -> BTreeMap<PathBuf, u64> {
        list_tree(&self.dst)
            .into_iter()
            .filter(|p| !p.starts_with("locks") && !p.starts_with("tmp"))
            .filter_map(|p| {
                let m = std::fs::symlink_metadata(self.dst.join(&p)).ok()?;
                m.is_file().then_some((p, m.len()))
            })
            .collect()
    }
}

/// A directory worth copying: nested directories, a file of several chunks, the same content
/// twice, symlinks (one dangling) and an empty directory.
fn make_data(root: &Path) {
    write(&root.join("big.bin"), pseudo_random(1, 6 << 20));
    write(&root.join("a/b/c/deep.txt"), "deep inside");
    write(&root.join("a/twin-1"), pseudo_random(2, 300_000));
    write(&root.join("a/twin-2"), pseudo_random(2, 300_000));
    for i in 0..20 {
        write(&root.join(format!("many/f{i:02}")), format!("file {i}"));
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../big.bin", root.join("links/to-big")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("links/dangling")).unwrap();
}

fn snapshot_by_id<'a>(list: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no snapshot {id} in {list:?}"))
}

/// Restore `id` of the source and of its copy, and compare them entry by entry.
fn assert_restores_equal(pair: &Pair, src_id: &str, dst_id: &str, name: &str) {
    let (a, b) = (
        pair.env.path(format!("r-src-{name}")),
        pair.env.path(format!("r-dst-{name}")),
    );
    pair.env
        .run(["restore", src_id, "--target", a.to_str().unwrap()])
        .success();
    pair.on_dst(&["restore", dst_id, "--target", b.to_str().unwrap()])
        .success();
    assert_trees_equal(&a.join("data"), &b.join("data"));
}

#[test]
fn copy_reencrypts_snapshots_that_restore_byte_for_byte_and_runs_once() {
    let pair = Pair::new();
    let data = pair.env.path("data");
    make_data(&data);
    let first = pair.env.backup_json(&[&data]);
    write(&data.join("a/b/new.txt"), "added later");
    write(&data.join("big.bin"), pseudo_random(3, 5 << 20));
    let out = pair.env.run([
        "backup",
        "--json",
        "--tag",
        "second",
        data.to_str().unwrap(),
    ]);
    out.success();
    let second = out.json();
    // The destination already holds a snapshot of its own.
    let own_dir = pair.env.path("own");
    write(&own_dir.join("mine.txt"), "the destination's own data");
    let own = pair.on_dst(&["backup", "--json", own_dir.to_str().unwrap()]);
    own.success();
    let own_id = own.json()["snapshot_id"].as_str().unwrap().to_string();

    // A wrong source passphrase: exit 12, one line, the destination untouched.
    let before = pair.dst_objects();
    write(&pair.src_password_file, "not the passphrase\n");
    let out = pair.copy(&[]);
    out.expect_code(exit::WRONG_PASSWORD)
        .stderr_has("wrong passphrase");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert_eq!(pair.dst_objects(), before);
    write(&pair.src_password_file, format!("{PASSWORD}\n"));

    let v = pair.copy_json(&[]);
    assert_eq!(v["snapshots_copied"], 2, "{v}");
    assert_eq!(v["snapshots_skipped"], 0, "{v}");
    assert!(v["blobs_added"].as_u64().unwrap() > 5, "{v}");
    assert!(v["packs_written"].as_u64().unwrap() > 0, "{v}");

    let dst = pair.dst_snapshots();
    assert_eq!(dst.len(), 3, "{dst:?}");
    snapshot_by_id(&dst, &own_id);
    let src = pair.env.snapshots();
    for (s, src_id) in [(&first, 0), (&second, 1)] {
        let sid = s["snapshot_id"].as_str().unwrap();
        let copied = &v["snapshots"][src_id];
        assert_eq!(copied["source_id"], sid);
        let did = copied["target_id"].as_str().expect("target_id").to_string();
        let (a, b) = (snapshot_by_id(&src, sid), snapshot_by_id(&dst, &did));
        for field in ["time", "host", "username", "tags", "sources", "summary"] {
            assert_eq!(a[field], b[field], "{field} of {sid} and its copy {did}");
        }
        // Another key, so other ids.
        assert_ne!(a["tree"], b["tree"]);
        assert_restores_equal(&pair, sid, &did, &src_id.to_string());
    }
    // The copy of the second snapshot restores to what is on disk now.
    let now = pair.env.path("r-now");
    let second_copy = v["snapshots"][1]["target_id"].as_str().unwrap();
    pair.on_dst(&["restore", second_copy, "--target", now.to_str().unwrap()])
        .success();
    assert_trees_equal(&data, &now.join("data"));
    pair.on_dst(&["check", "--read-data"]).success();

    // Again: nothing to copy, nothing read, nothing written.
    let before = pair.dst_objects();
    let again = pair.copy_json(&[]);
    assert_eq!(again["snapshots_copied"], 0, "{again}");
    assert_eq!(again["snapshots_skipped"], 2, "{again}");
    assert_eq!(again["blobs_added"], 0, "{again}");
    assert_eq!(again["blobs_read"], 0, "{again}");
    assert_eq!(pair.dst_objects(), before);
    // With a cache that never saw the first run: the trees are compared by reading the
    // source again, and still nothing is written.
    let mut c = pair.env.cmd_with_password(DST_PASSWORD);
    c.env("COFFER_CACHE_DIR", pair.env.path("other-cache"));
    let from = pair.env.repo.to_str().unwrap();
    let pw = pair.src_password_file.to_str().unwrap();
    let dst = pair.dst.to_str().unwrap();
    let out = pair.env.run_cmd(
        c,
        [
            "copy",
            "--json",
            "--repo",
            dst,
            "--from-repo",
            from,
            "--from-password-file",
            pw,
        ],
    );
    out.success();
    let cold = out.json();
    assert_eq!(cold["snapshots_skipped"], 2, "{cold}");
    assert_eq!(cold["blobs_added"], 0, "{cold}");
    assert!(cold["blobs_read"].as_u64().unwrap() > 0, "{cold}");
    assert_eq!(pair.dst_objects(), before);
    assert_eq!(pair.dst_snapshots().len(), 3);
}

#[test]
fn copy_selects_by_id_host_and_tag_and_dry_run_writes_nothing() {
    let pair = Pair::new();
    let data = pair.env.path("data");
    make_data(&data);
    let d = data.to_str().unwrap();
    let one = pair.env.run(["backup", "--json", "--host", "h1", d]);
    let one = one.success().json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&data.join("more.txt"), "more");
    pair.env
        .run(["backup", "--host", "h2", "--tag", "keep", d])
        .success();
    pair.env.run(["backup", "--host", "h2", d]).success();

    // A dry run names what it would copy and writes nothing.
    let before = pair.dst_objects();
    let v = pair.copy_json(&["--dry-run", "--tag", "keep"]);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["snapshots_copied"], 1, "{v}");
    assert!(v["blobs_added"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["snapshots"][0]["target_id"], serde_json::Value::Null);
    assert_eq!(pair.dst_objects(), before);

    // `latest` of a host, then a prefix: one snapshot each.
    let v = pair.copy_json(&["--host", "h1", "latest"]);
    assert_eq!(v["snapshots_copied"], 1, "{v}");
    assert_eq!(v["snapshots"][0]["source_id"], one.as_str());
    let v = pair.copy_json(&[&one[..10]]);
    assert_eq!(
        (
            v["snapshots_copied"].as_u64(),
            v["snapshots_skipped"].as_u64()
        ),
        (Some(0), Some(1))
    );
    let v = pair.copy_json(&["--tag", "keep"]);
    assert_eq!(v["snapshots_copied"], 1, "{v}");
    assert_eq!(pair.dst_snapshots().len(), 2);
    // The rest, and only the rest.
    let v = pair.copy_json(&[]);
    assert_eq!(
        (
            v["snapshots_copied"].as_u64(),
            v["snapshots_skipped"].as_u64()
        ),
        (Some(1), Some(2))
    );
    pair.on_dst(&["check", "--read-data"]).success();
}

#[test]
fn copy_refuses_unknown_ids_missing_sources_and_itself_in_one_line() {
    let pair = Pair::new();
    let data = pair.env.path("data");
    write(&data.join("f"), "x");
    pair.env.backup_json(&[&data]);
    let before = pair.dst_objects();
    let one_line = |out: &Out| assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    let out = pair.copy(&["0123456789abcdef"]);
    out.expect_code(exit::ERROR).stderr_has("no snapshot");
    one_line(&out);
    let out = pair.copy(&["--host", "nobody", "latest"]);
    out.expect_code(exit::ERROR)
        .stderr_has("no snapshot matches");
    one_line(&out);
    let missing = pair.env.path("missing");
    let out = pair.on_dst(&["copy", "--from-repo", missing.to_str().unwrap()]);
    out.expect_code(exit::NO_REPOSITORY)
        .stderr_has("no coffer repository");
    one_line(&out);
    let dst = pair.dst.to_str().unwrap();
    let out = pair.on_dst(&["copy", "--from-repo", dst]);
    out.expect_code(exit::ERROR).stderr_has("--from-repo");
    one_line(&out);
    assert_eq!(pair.dst_objects(), before);
}

#[test]
fn copy_between_repositories_sharing_the_master_key_keeps_the_ids() {
    let env = Env::new();
    let mut init = vec!["init"];
    init.extend(FAST_KEY);
    env.run(&init).success();
    let data = env.path("data");
    make_data(&data);
    let sid = env.backup_json(&[&data])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mirror = env.path("mirror");
    let (m, r) = (mirror.to_str().unwrap(), env.repo.to_str().unwrap());
    let mut init_from = vec!["init", "--repo", m, "--from", r];
    init_from.extend(FAST_KEY);
    env.run(&init_from).success();
    let out = env.run(["copy", "--json", "--repo", m, "--from-repo", r]);
    let v = out.success().json();
    assert_eq!(v["snapshots_copied"], 1, "{v}");
    let src = env.snapshots();
    let copy = env
        .run(["snapshots", "--json", "--repo", m])
        .success()
        .json();
    assert_eq!(src[0]["tree"], copy[0]["tree"], "ids map to themselves");
    env.run(["check", "--read-data", "--repo", m]).success();
    let v = env
        .run(["copy", "--json", "--repo", m, "--from-repo", r, &sid[..8]])
        .success()
        .json();
    assert_eq!(
        (v["snapshots_copied"].as_u64(), v["blobs_added"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn copy_killed_anywhere_leaves_a_sound_destination_that_the_next_run_completes() {
    let pair = Pair::new();
    let data = pair.env.path("data");
    make_data(&data);
    for i in 0..3u64 {
        write(
            &data.join(format!("round-{i}.bin")),
            pseudo_random(10 + i, 3 << 20),
        );
        pair.env.backup_json(&[&data]);
    }
    let from = pair.env.repo.to_str().unwrap();
    let pw = pair.src_password_file.to_str().unwrap();
    let dst = pair.dst.to_str().unwrap();
    let args = [
        "copy",
        "--repo",
        dst,
        "--from-repo",
        from,
        "--from-password-file",
        pw,
    ];
    // How long a whole copy takes here: the kills land between 5 % and 90 % of it. A fixed
    // delay (it was 0.1 to 1.6 s) stops killing anything once copying gets faster.
    let probe = pair.env.path("probe");
    let probe_arg = probe.to_str().unwrap();
    let mut init = vec!["init", "--repo", probe_arg];
    init.extend(FAST_KEY);
    pair.env.run_with_password(DST_PASSWORD, &init).success();
    let mut probe_args = args;
    probe_args[2] = probe_arg;
    let started = std::time::Instant::now();
    pair.env
        .run_with_password(DST_PASSWORD, probe_args)
        .success();
    let whole = started.elapsed();
    let (mut state, mut killed) = (0x9e37_79b9_7f4a_7c15u64, 0);
    for k in 0..6 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut child = std::process::Command::new(common::coffer_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &pair.env.home)
            .env("COFFER_PASSWORD", DST_PASSWORD)
            .env("COFFER_CACHE_DIR", &pair.env.cache)
            .current_dir(pair.env.dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn coffer");
        std::thread::sleep(whole * (5 + (state % 86) as u32) / 100);
        let _ = child.kill();
        let st = child.wait().expect("wait for coffer");
        killed += usize::from(st.code().is_none());
        // Whatever was cut off: the destination checks clean.
        let out = pair.on_dst(&["check"]);
        assert_eq!(
            out.code, 0,
            "check after kill {k}:\n{}{}",
            out.stdout, out.stderr
        );
    }
    eprintln!("{killed} of 6 copies killed mid-way (a whole copy took {whole:?})");
    assert!(killed > 0, "no copy was killed mid-way");
    let v = pair.copy_json(&[]);
    assert_eq!(
        v["snapshots_copied"].as_u64().unwrap() + v["snapshots_skipped"].as_u64().unwrap(),
        3,
        "{v}"
    );
    assert_eq!(pair.dst_snapshots().len(), 3, "no snapshot copied twice");
    pair.on_dst(&["check", "--read-data"]).success();
    let newest = v["snapshots"][2]["target_id"].as_str().unwrap();
    let out = pair.env.path("r-newest");
    pair.on_dst(&["restore", newest, "--target", out.to_str().unwrap()])
        .success();
    assert_trees_equal(&data, &out.join("data"));
}
