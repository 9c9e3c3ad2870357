//! Many hosts, one repository (issue 19): four backup processes of four hosts (each with its
//! own cache) and a forget-and-prune loop run at once, round after round, on a local
//! directory and on the S3 test server, with SIGKILL at random moments of any of them. After
//! every round `check --read-data` passes and every snapshot restores byte for byte. A writer
//! frozen with SIGSTOP across two prunes completes its snapshot once resumed.
//!
//! `COFFER_CONCURRENT_ROUNDS` sets the rounds on the local directory (default 6; S3 runs
//! half as many), `COFFER_CONCURRENT_SEED` the seed of the kill moments (printed).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::s3_server::{Server, server};
use common::{Env, list_tree, pseudo_random};

const HOSTS: usize = 4;

/// A small deterministic generator.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn seed() -> u64 {
    let s = std::env::var("COFFER_CONCURRENT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("COFFER_CONCURRENT_SEED={s}");
    s
}

/// One repository, local or on S3, and how to run coffer against it as one host.
struct Shared<'a> {
    env: Env,
    s3: Option<(&'a Server, String)>,
}

impl Shared<'_> {
    /// `coffer ARGS` as host `who`: its own cache directory.
    fn cmd(&self, who: &str, args: &[&str]) -> Command {
        let mut c = Command::new(common::coffer_bin());
        c.env_clear()
            .current_dir(self.env.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.env.home)
            .env("COFFER_REPO", &self.env.repo)
            .env("COFFER_PASSWORD", common::PASSWORD)
            .env("COFFER_CACHE_DIR", self.env.path(format!("cache-{who}")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((s, url)) = &self.s3 {
            c.env("COFFER_REPO", url)
                .env("AWS_ACCESS_KEY_ID", &s.key_id)
                .env("AWS_SECRET_ACCESS_KEY", &s.secret);
        }
        c
    }

    #[track_caller]
    fn run(&self, who: &str, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(who, args).output().expect("run coffer");
        let out = (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert!(
            !out.2.contains("panicked"),
            "coffer {args:?} panicked:\n{}",
            out.2
        );
        out
    }

    #[track_caller]
    fn ok(&self, who: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(who, args);
        assert_eq!(code, 0, "coffer {args:?} failed:\n{err}");
        out
    }

    /// `check --read-data` passes, and every snapshot restores as its source was.
    fn assert_whole(&self, expected: &HashMap<String, PathBuf>) {
        // A host of its own each time: a host that saw snapshots which another host forgot
        // since warns about them, and its check exits 3 until they are acknowledged.
        static CHECKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let checker = &format!("checker-{n}");
        self.ok(checker, &["check", "--read-data"]);
        let list: serde_json::Value =
            serde_json::from_str(&self.ok(checker, &["snapshots", "--json"])).unwrap();
        for s in list.as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            let tag = s["tags"][0].as_str().unwrap().to_string();
            let want = expected
                .get(&tag)
                .unwrap_or_else(|| panic!("snapshot {id} has an unknown tag {tag}"));
            let out = self.env.path(format!("restored-{id}"));
            self.ok(
                "checker",
                &[
                    "restore",
                    "--snapshot",
                    id,
                    "--target",
                    out.to_str().unwrap(),
                ],
            );
            assert_same_content(want, &out.join("ws"), &tag);
            fs::remove_dir_all(&out).unwrap();
        }
    }
}

/// Same names, kinds and file bytes (metadata is the restore tests' business).
fn assert_same_content(a: &Path, b: &Path, what: &str) {
    let (la, lb) = (list_tree(a), list_tree(b));
    assert_eq!(la, lb, "{what}: entries differ");
    for rel in la {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        if pa.is_file() {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{what}: {} differs",
                rel.display()
            );
        }
    }
}

/// Host `h`'s source at round `r`: files every host shares (dedup across hosts), files of
/// its own, and a few that change every round.
fn make_source(dir: &Path, h: usize, r: u64) {
    let _ = fs::remove_dir_all(dir);
    let w = |rel: &str, bytes: Vec<u8>| {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    };
    w("shared/base.bin", pseudo_random(1, 1_500_000));
    w("shared/lib.bin", pseudo_random(2 + r / 3, 600_000));
    w(
        &format!("own/h{h}.bin"),
        pseudo_random(100 + h as u64, 900_000),
    );
    w(
        &format!("own/night-{}.bin", r % 3),
        pseudo_random(1000 + 10 * r + h as u64, 700_000),
    );
    for i in 0..20u64 {
        w(
            &format!("small/{i}.txt"),
            format!("host {h} round {r} file {i}\n")
                .repeat(1 + i as usize * 40)
                .into_bytes(),
        );
    }
}

/// Keep a copy of what a backup of `src` tagged `tag` must restore to.
fn remember(env: &Env, expected: &mut HashMap<String, PathBuf>, tag: &str, src: &Path) {
    let dest = env.path(format!("expected/{tag}"));
    let ok = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(&dest)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a");
    expected.insert(tag.to_string(), dest);
}

fn kill_at(child: &mut Child, at: Option<Instant>) -> bool {
    if let Some(at) = at
        && Instant::now() >= at
        && child.try_wait().unwrap().is_none()
    {
        child.kill().unwrap();
        return true;
    }
    false
}

fn rounds_of_concurrent_backups_and_prunes(shared: &Shared, rounds: u64) {
    let mut rng = Rng(seed());
    let mut expected: HashMap<String, PathBuf> = HashMap::new();
    fs::create_dir_all(shared.env.path("expected")).unwrap();
    let mut killed: BTreeMap<&str, u32> = BTreeMap::new();
    let mut deleted_total = 0u64;
    for r in 0..rounds {
        let mut children: Vec<(String, Child, Option<Instant>)> = Vec::new();
        let start = Instant::now();
        for h in 0..HOSTS {
            let src = shared.env.path(format!("src-h{h}/ws"));
            make_source(&src, h, r);
            let tag = format!("h{h}r{r}");
            remember(&shared.env, &mut expected, &tag, &src);
            let who = format!("h{h}");
            let child = shared
                .cmd(
                    &who,
                    &[
                        "backup",
                        "--json",
                        "--host",
                        &who,
                        "--tag",
                        &tag,
                        src.to_str().unwrap(),
                    ],
                )
                .spawn()
                .unwrap();
            // One backup in three is killed at a random moment of its first 1.5 s.
            let kill =
                (rng.below(3) == 0).then(|| start + Duration::from_millis(100 + rng.below(1400)));
            children.push((who, child, kill));
        }
        // The prune loop: forget the older snapshots of a host, prune, while the backups run.
        let mut prunes = 0;
        while prunes < 2
            || children
                .iter_mut()
                .any(|c| c.1.try_wait().unwrap().is_none())
        {
            let h = rng.below(HOSTS as u64);
            shared.ok(
                "pruner",
                &["forget", "--keep-last", "2", "--host", &format!("h{h}")],
            );
            let mut prune = shared
                .cmd(
                    "pruner",
                    &["prune", "--json", "--grace", "0", "--max-unused", "0"],
                )
                .spawn()
                .unwrap();
            let kill =
                (rng.below(4) == 0).then(|| Instant::now() + Duration::from_millis(rng.below(800)));
            loop {
                for c in children.iter_mut() {
                    if kill_at(&mut c.1, c.2) {
                        *killed.entry("backup").or_default() += 1;
                        c.2 = None;
                    }
                }
                if kill_at(&mut prune, kill) {
                    *killed.entry("prune").or_default() += 1;
                }
                if prune.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let o = prune.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("panicked"), "prune panicked:\n{err}");
            if o.status.code() == Some(0) {
                let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                deleted_total += s["packs_deleted"].as_u64().unwrap();
            } else {
                assert!(o.status.code().is_none(), "prune failed:\n{err}");
            }
            prunes += 1;
        }
        for (who, child, _) in children {
            let o = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("panicked"), "{who} panicked:\n{err}");
            // Killed, or complete: never a failure.
            assert!(
                o.status.code().is_none() || o.status.success(),
                "backup of {who} failed in round {r}:\n{err}"
            );
        }
        shared.assert_whole(&expected);
    }
    // A last prune with nothing running carries out every marker.
    let last: serde_json::Value =
        serde_json::from_str(&shared.ok("pruner", &["prune", "--json", "--grace", "0"])).unwrap();
    assert_eq!(last["markers_waiting"], serde_json::json!([]), "{last}");
    deleted_total += last["packs_deleted"].as_u64().unwrap();
    assert!(
        shared
            .ok("checker-last", &["check", "--json"])
            .contains("\"problems\":[]"),
        "check after the last prune"
    );
    shared.assert_whole(&expected);
    eprintln!("killed {killed:?}; prunes deleted {deleted_total} packs");
    assert!(deleted_total > 0, "the prunes deleted nothing");
}

fn local_rounds() -> u64 {
    std::env::var("COFFER_CONCURRENT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

#[test]
fn four_hosts_back_up_beside_a_prune_loop_with_kills_on_a_local_directory() {
    let shared = Shared {
        env: Env::init(),
        s3: None,
    };
    rounds_of_concurrent_backups_and_prunes(&shared, local_rounds());
}

#[test]
fn four_hosts_back_up_beside_a_prune_loop_with_kills_on_s3() {
    let s = server();
    let shared = Shared {
        env: Env::new(),
        s3: Some((s, s.url("concurrent"))),
    };
    shared.ok("init", &["init"]);
    rounds_of_concurrent_backups_and_prunes(&shared, local_rounds().div_ceil(2).max(2));
}

/// A backup stopped with SIGSTOP while two prunes condemn the blobs it reuses (its parent was
/// forgotten): the prunes finish without waiting for it and delete nothing it needs; resumed,
/// it writes a complete snapshot.
#[test]
fn a_writer_frozen_across_two_prunes_completes_a_whole_snapshot() {
    let shared = Shared {
        env: Env::init(),
        s3: None,
    };
    let src = shared.env.path("src/ws");
    let w = |rel: &str, bytes: Vec<u8>| {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    };
    for i in 0..6u64 {
        w(&format!("big/{i}.bin"), pseudo_random(10 + i, 1_000_000));
    }
    let parent = shared.ok(
        "a",
        &[
            "backup",
            "--json",
            "--host",
            "a",
            "--tag",
            "first",
            src.to_str().unwrap(),
        ],
    );
    let parent: serde_json::Value = serde_json::from_str(&parent).unwrap();
    let parent = parent["snapshot_id"].as_str().unwrap().to_string();
    // Most files stay (reused from the parent without being read); new ones take time.
    for i in 0..4u64 {
        w(&format!("new/{i}.bin"), pseudo_random(100 + i, 1_500_000));
    }
    let mut expected = HashMap::new();
    fs::create_dir_all(shared.env.path("expected")).unwrap();
    remember(&shared.env, &mut expected, "second", &src);
    let writer = shared
        .cmd(
            "a",
            &[
                "backup",
                "--json",
                "--host",
                "a",
                "--tag",
                "second",
                src.to_str().unwrap(),
            ],
        )
        .spawn()
        .unwrap();
    // Freeze it once its lock is there.
    let locks = shared.env.repo.join("locks");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the backup took no lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = rustix::process::Pid::from_raw(writer.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();

    shared.ok("pruner", &["forget", &parent]);
    let mut waiting = 0;
    for _ in 0..2 {
        let s: serde_json::Value =
            serde_json::from_str(&shared.ok("pruner", &["prune", "--json", "--grace", "0"]))
                .unwrap();
        waiting += s["markers_waiting"].as_array().unwrap().len();
        assert_eq!(s["packs_deleted"], 0, "deleted beside a frozen writer: {s}");
    }
    assert!(waiting >= 2, "the frozen writer's lock was not waited for");
    // Another host backs up meanwhile: it does not wait either.
    let other = shared.env.path("src-b/ws");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("b.txt"), "b").unwrap();
    remember(&shared.env, &mut expected, "other", &other);
    shared.ok(
        "b",
        &[
            "backup",
            "--host",
            "b",
            "--tag",
            "other",
            other.to_str().unwrap(),
        ],
    );

    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let o = writer.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the resumed writer failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    shared.assert_whole(&expected);
    // Now nothing runs: the condemned packs the new snapshot does not need go.
    let s: serde_json::Value =
        serde_json::from_str(&shared.ok("pruner", &["prune", "--json", "--grace", "0"])).unwrap();
    assert_eq!(s["markers_waiting"], serde_json::json!([]), "{s}");
    shared.assert_whole(&expected);
}
