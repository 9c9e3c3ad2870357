//! SIGKILL at random moments of backup, prune, forget, sync and a passphrase change: after
//! every kill the repository passes `check`, every snapshot that was complete before is still
//! there and restores byte-identically, and the next run of the same command succeeds.
//!
//! Each command is killed `KILLS` times (50 by default, `COFFER_KILLS` to change it; the soak
//! script runs many more). Kill moments are spread over the command's measured duration.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, PASSWORD, assert_trees_equal, pseudo_random};

fn kills() -> usize {
    std::env::var("COFFER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// A small deterministic generator for kill moments.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn coffer(env: &Env, password: &str, args: &[&str]) -> Command {
    let mut c = Command::new(common::coffer_bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", password)
        .env("COFFER_CACHE_DIR", &env.cache)
        .env("COFFER_RETRY_LOCK", "0")
        .current_dir(env.dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Run to completion; the duration.
fn timed(env: &Env, args: &[&str]) -> Duration {
    let t = Instant::now();
    let st = coffer(env, PASSWORD, args).status().unwrap();
    assert!(st.success(), "coffer {args:?} failed: {st}");
    t.elapsed()
}

/// Kill moments for one command, spread over its duration. The duration is learnt: a run
/// that finishes before its kill moment tells how long a whole run takes, so the window
/// shrinks to it on a fast machine and stays wide on a slow one.
struct Killer {
    rng: Rng,
    window: Duration,
    killed: usize,
}

impl Killer {
    fn new(seed: u64, first_guess: Duration) -> Self {
        Self {
            rng: Rng(seed),
            window: first_guess,
            killed: 0,
        }
    }

    /// Start the command, SIGKILL it at a random moment of the window (if still running).
    fn run(&mut self, mut c: Command) {
        let micros = self.window.as_micros() as u64 * 11 / 10;
        let after = Duration::from_micros(self.rng.below(micros.max(1)));
        let start = Instant::now();
        let mut child = c.spawn().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                // It finished first: a whole run is this long.
                self.window = start.elapsed();
                return;
            }
            if start.elapsed() >= after {
                child.kill().unwrap();
                child.wait().unwrap();
                self.killed += 1;
                // Widen a little, so moments late in a run get their turn even when the
                // first guess was short.
                self.window = self.window * 21 / 20;
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One line per command for the soak script (`scripts/soak.sh` collects them).
fn figures(command: &str, runs: usize, killed: usize, restores: usize) {
    eprintln!(
        "kill-figures: {command}: {runs} runs, {killed} killed mid-way, {runs} checks passed, \
         {restores} byte-identical restores"
    );
}

fn check_ok(env: &Env, what: &str) {
    let out = env.run(["check", "--json"]);
    assert_eq!(
        out.code, 0,
        "check failed after {what}:\n{}\n{}",
        out.stdout, out.stderr
    );
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn restore_equals(env: &Env, id: &str, expected: &Path, name: &str) {
    let target = env.path("restore-check");
    let _ = fs::remove_dir_all(&target);
    env.run([
        "restore",
        "--snapshot",
        id,
        "--target",
        target.to_str().unwrap(),
    ])
    .success();
    assert_trees_equal(expected, &target.join(name));
    fs::remove_dir_all(&target).unwrap();
}

fn fill(src: &Path, seed: u64, files: usize) {
    fs::create_dir_all(src).unwrap();
    for i in 0..files {
        fs::write(
            src.join(format!("f{i:03}.bin")),
            pseudo_random(seed * 1000 + i as u64, 96 * 1024),
        )
        .unwrap();
    }
}

#[test]
fn backup_killed_anywhere_loses_nothing() {
    let env = Env::init();
    let src = env.path("src");
    fill(&src, 1, 40);
    env.backup_json(&[src.to_str().unwrap()]);
    let first = snapshot_ids(&env)[0].clone();
    // What the first snapshot restores to before anything is killed.
    let base_root = env.path("base");
    env.run([
        "restore",
        "--snapshot",
        &first,
        "--target",
        base_root.to_str().unwrap(),
    ])
    .success();
    let base = base_root.join("src");
    assert_trees_equal(&src, &base);
    fill(&src, 2, 40);
    let d = timed(&env, &["backup", "--force", src.to_str().unwrap()]);
    let mut killer = Killer::new(0x9e37_79b9_7f4a_7c15, d);
    for k in 0..kills() {
        fill(&src, 3 + k as u64, 40);
        killer.run(coffer(&env, PASSWORD, &["backup", src.to_str().unwrap()]));
        check_ok(&env, &format!("backup kill {k}"));
        assert!(snapshot_ids(&env).contains(&first));
        if k % 10 == 0 {
            restore_equals(&env, &first, &base, "src");
        }
    }
    figures("backup", kills(), killer.killed, kills().div_ceil(10));
    assert!(
        killer.killed >= kills() / 2,
        "only {} runs were killed mid-way",
        killer.killed
    );
    env.backup_json(&[src.to_str().unwrap()]);
    let latest = snapshot_ids(&env).last().unwrap().clone();
    restore_equals(&env, &latest, &src, "src");
    restore_equals(&env, &first, &base, "src");
}

#[test]
fn prune_and_forget_killed_anywhere_keep_kept_snapshots() {
    let env = Env::init();
    let src = env.path("src");
    let mut forgets = Killer::new(0x1234_5678_9abc_def1, Duration::from_millis(1500));
    let mut prunes = Killer::new(0x0fed_cba9_8765_4321, Duration::from_millis(1000));
    for k in 0..kills() {
        // Two new nights per round so there is always something to forget and prune.
        for night in 0..2 {
            fill(&src, 10 + 2 * k as u64 + night, 12);
            env.backup_json(&[src.to_str().unwrap()]);
        }
        let newest = snapshot_ids(&env).last().unwrap().clone();
        let (cmd, killer): (&[&str], &mut Killer) = if k % 2 == 0 {
            (&["forget", "--keep-last", "1", "--prune"], &mut forgets)
        } else {
            (&["prune", "--max-unused", "0"], &mut prunes)
        };
        killer.run(coffer(&env, PASSWORD, cmd));
        check_ok(&env, &format!("{cmd:?} kill {k}"));
        let ids = snapshot_ids(&env);
        assert!(ids.contains(&newest), "the kept snapshot is gone");
        if k % 10 == 0 {
            restore_equals(&env, &newest, &src, "src");
        }
        // The next run of the same command succeeds.
        let out = env.run(cmd);
        out.success();
    }
    // Rounds k % 10 == 0 restore; they are all even, i.e. forget rounds.
    figures(
        "forget --prune",
        kills().div_ceil(2),
        forgets.killed,
        kills().div_ceil(10),
    );
    figures("prune", kills() / 2, prunes.killed, 0);
    assert!(
        forgets.killed + prunes.killed >= kills() / 2,
        "only {} runs were killed mid-way",
        forgets.killed + prunes.killed
    );
    env.run(["check", "--read-data"]).success();
    let newest = snapshot_ids(&env).last().unwrap().clone();
    restore_equals(&env, &newest, &src, "src");
}

#[test]
fn sync_and_passphrase_change_killed_anywhere() {
    let env = Env::init();
    let src = env.path("src");
    fill(&src, 500, 30);
    env.backup_json(&[src.to_str().unwrap()]);
    let target = env.path("mirror");
    env.run([
        "init",
        "--repo",
        target.to_str().unwrap(),
        "--from",
        env.repo.to_str().unwrap(),
    ])
    .success();
    let mut syncs = Killer::new(0xdead_beef_cafe_f00d, Duration::from_millis(800));
    for k in 0..kills() {
        fill(&src, 600 + k as u64, 30);
        env.backup_json(&[src.to_str().unwrap()]);
        // Sync, killed somewhere.
        syncs.run(coffer(
            &env,
            PASSWORD,
            &["sync", "--to", target.to_str().unwrap()],
        ));
        // The mirror is consistent and the next sync completes it.
        let mut c = coffer(&env, PASSWORD, &["check"]);
        c.env("COFFER_REPO", &target);
        assert!(c.status().unwrap().success(), "mirror check after kill {k}");
        let st = coffer(&env, PASSWORD, &["sync", "--to", target.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "sync after kill {k}");
    }
    figures("sync", kills(), syncs.killed, 0);
    assert!(
        syncs.killed >= kills() / 2,
        "only {} syncs were killed mid-way",
        syncs.killed
    );
    let latest = snapshot_ids(&env).last().unwrap().clone();
    let out = env.path("from-mirror");
    let st = coffer(
        &env,
        PASSWORD,
        &[
            "restore",
            "--snapshot",
            &latest,
            "--target",
            out.to_str().unwrap(),
        ],
    )
    .env("COFFER_REPO", &target)
    .status()
    .unwrap();
    assert!(st.success());
    assert_trees_equal(&src, &out.join("src"));

    // A passphrase change, killed somewhere: the old or the new passphrase opens it, and the
    // snapshots are all there.
    let count = snapshot_ids(&env).len();
    let mut current = PASSWORD.to_string();
    let mut changes = Killer::new(0x5eed_0fc0_ffee, Duration::from_millis(1500));
    for k in 0..kills() {
        let new = format!("pass-{k}");
        let mut c = coffer(&env, &current, &["key", "passwd"]);
        c.env("COFFER_NEW_PASSWORD", &new);
        changes.run(c);
        let opens = |pw: &str| {
            coffer(&env, pw, &["key", "list"])
                .status()
                .unwrap()
                .success()
        };
        if opens(&new) {
            current = new;
        } else {
            assert!(
                opens(&current),
                "after kill {k} neither passphrase opens the repository"
            );
        }
        // A kill between writing the new key and deleting the old one leaves both (by
        // design: never no usable key). Remove the leftover as a user would, so that the
        // number of keys, and with it the cost of a wrong passphrase, stays small.
        let out = env.run_with_password(&current, ["key", "list", "--json"]);
        out.success();
        for key in out.json().as_array().unwrap() {
            if key["current"] == false {
                let id = key["id"].as_str().unwrap();
                env.run_with_password(&current, ["key", "remove", id])
                    .success();
            }
        }
    }
    figures("key passwd", kills(), changes.killed, 0);
    assert!(
        changes.killed >= kills() / 2,
        "only {} passphrase changes were killed mid-way",
        changes.killed
    );
    assert_eq!(snapshot_ids_with(&env, &current).len(), count);
}

fn snapshot_ids_with(env: &Env, password: &str) -> Vec<String> {
    let out = env.run_with_password(password, ["snapshots", "--json"]);
    out.success();
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Many small files in a few directories and some larger ones: a kill lands in the middle of
/// writing them.
fn fill_tree(src: &Path, seed: u64) {
    for i in 0..600u64 {
        let len = 1 + (i * 7919 + seed) as usize % (24 << 10);
        let p = src.join(format!("d{}/f{i:03}", i % 6));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pseudo_random(seed * 10_000 + i, len)).unwrap();
    }
    for i in 0..4u64 {
        fs::write(
            src.join(format!("big{i}")),
            pseudo_random(seed * 10_000 + 900 + i, 1 << 20),
        )
        .unwrap();
    }
}

/// A restore killed anywhere, then run again into the same target: every file comes out
/// byte for byte with its metadata, whatever the rerun's `--overwrite` mode (`never` and
/// `if-newer` keep a file found in place, so an incomplete file left under its real name must
/// not look like one), and nothing temporary is left.
#[test]
fn restore_killed_anywhere_then_rerun_in_any_mode_completes() {
    let env = Env::init();
    let src = env.path("src");
    fill_tree(&src, 7);
    env.backup_json(&[src.to_str().unwrap()]);
    let target = env.path("target");
    let t = target.to_str().unwrap();
    let args = ["restore", "--snapshot", "latest", "--target", t];
    let d = timed(&env, &args);
    fs::remove_dir_all(&target).unwrap();
    let mut killer = Killer::new(0x2545_f491_4f6c_dd1d, d);
    let rounds = kills().div_ceil(2);
    for k in 0..rounds {
        killer.run(coffer(&env, PASSWORD, &args));
        let mode = ["never", "if-newer", "if-changed"][k % 3];
        let mut rerun = args.to_vec();
        rerun.extend(["--overwrite", mode]);
        env.run(&rerun).success();
        assert_trees_equal(&src, &target.join("src"));
        let left: Vec<_> = common::list_tree(&target)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".coffer-tmp"))
            .collect();
        assert!(left.is_empty(), "round {k} ({mode}): left {left:?}");
        fs::remove_dir_all(&target).unwrap();
    }
    figures("restore", rounds, killer.killed, rounds);
    assert!(
        killer.killed >= rounds / 2,
        "only {} restores were killed mid-way",
        killer.killed
    );
}
