//! Retention, prune, rolling verification and health, driven through the real binary; prune's
//! crash safety through the engine with a fault-injecting store.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use coffer::engine::Progress;
use coffer::engine::backup::{BackupOptions, SourceSpec, backup};
use coffer::engine::check::{CheckOptions, check};
use coffer::engine::prune::{PruneOptions, prune};
use coffer::engine::restore::{RestoreOptions, restore};
use coffer::repo::{InitOptions, Repository};
use coffer::storage::{FaultStore, LocalStore, ObjectStore};
use common::{Env, assert_trees_equal, copy_dir, dir_size, pseudo_random};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A night's state of a workspace: a stable base, and a file that is new every night.
fn night(src: &Path, n: u64) {
    write(&src.join("base.bin"), pseudo_random(7, 300_000));
    write(&src.join("nightly.bin"), pseudo_random(1000 + n, 200_000));
    write(&src.join("notes.txt"), format!("night {n}\n"));
}

fn restore_to(env: &Env, id: &str, target: &Path) {
    env.run([
        "restore",
        "--snapshot",
        id,
        "--target",
        target.to_str().unwrap(),
    ])
    .success();
}

#[test]
fn forget_and_prune_free_space_and_keep_what_stays_restorable() {
    let env = Env::init();
    let src = env.path("ws");
    let mut ids = Vec::new();
    for n in 0..32u64 {
        night(&src, n);
        let time = format!("2025-10-{:02}T03:00:00Z", n % 31 + 1);
        let time = if n == 31 {
            "2025-11-01T03:00:00Z".to_string()
        } else {
            time
        };
        let out = env.run(["backup", "--json", "--time", &time, src.to_str().unwrap()]);
        out.success();
        ids.push(
            out.strict_json()["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Keep a copy of what the newest three nights looked like.
    let keep_dir = env.path("expected");
    for (i, id) in ids[29..].iter().enumerate() {
        restore_to(&env, id, &keep_dir.join(i.to_string()));
    }

    // A dry run changes nothing and says why each kept snapshot stays.
    let dry = env.run(["forget", "--keep-last", "3", "--dry-run", "--json"]);
    dry.success();
    let v = dry.strict_json();
    assert_eq!(v["kept"], 3);
    assert_eq!(v["removed"], 29);
    let reasons: Vec<_> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == true)
        .map(|s| s["reasons"].clone())
        .collect();
    assert!(
        reasons.iter().all(|r| r == &serde_json::json!(["last"])),
        "{v}"
    );
    assert_eq!(env.snapshots().len(), 32);

    let before = dir_size(&env.repo.join("packs"));
    let out = env.run(["forget", "--keep-last", "3", "--prune", "--json"]);
    out.success();
    let v = out.strict_json();
    assert_eq!(v["removed"], 29);
    let p = &v["prune"];
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    let after = dir_size(&env.repo.join("packs"));
    // 29 nights of 200 kB incompressible data are gone: at least 4 MB.
    assert!(
        before > after + 4_000_000,
        "prune freed too little: {before} -> {after}"
    );
    let left = env.snapshots();
    assert_eq!(left.len(), 3);
    for (i, id) in ids[29..].iter().enumerate() {
        let out_dir = env.path(format!("restored-{i}"));
        restore_to(&env, id, &out_dir);
        assert_trees_equal(
            &keep_dir.join(i.to_string()).join("ws"),
            &out_dir.join("ws"),
        );
    }
    let c = env.run(["check", "--read-data", "--json"]);
    c.success();
    assert_eq!(c.strict_json()["problems"], serde_json::json!([]));
    // A second prune finds nothing more to do.
    let again = env.run(["prune", "--json"]);
    again.success();
    let v = again.strict_json();
    assert_eq!(v["packs_deleted"], 0, "{v}");
    // And backups go on deduplicating against what is left.
    night(&src, 31);
    let b = env.backup_json(&[src.to_str().unwrap()]);
    // Only the changed directory's trees are new: no data.
    assert!(b["bytes_added"].as_u64().unwrap() < 10_000, "{b}");
}

#[test]
fn forget_refuses_an_empty_policy_and_bad_arguments() {
    let env = Env::init();
    let src = env.path("ws");
    night(&src, 1);
    env.backup_json(&[src.to_str().unwrap()]);
    env.run(["forget"])
        .expect_code(common::exit::ERROR)
        .stderr_has("no retention policy");
    env.run(["forget", "--keep-within", "5x"])
        .failure()
        .stderr_has("--keep-within");
    env.run(["forget", "--keep-last", "1", "--group-by", "color"])
        .failure()
        .stderr_has("group-by");
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn retention_days_keeps_recent_and_the_newest() {
    let env = Env::init();
    let src = env.path("ws");
    let now = chrono::Utc::now();
    for (n, days_ago) in [40i64, 20, 3, 1].iter().enumerate() {
        night(&src, n as u64);
        let t = (now - chrono::Duration::days(*days_ago)).to_rfc3339();
        env.run(["backup", "--time", &t, src.to_str().unwrap()])
            .success();
    }
    let out = env.run(["forget", "--retention-days", "7", "--json"]);
    out.success();
    assert_eq!(out.strict_json()["removed"], 2);
    assert_eq!(env.snapshots().len(), 2);
    // The old tool's variable works too.
    let mut c = env.cmd();
    c.env("BACKUP_RETENTION_DAYS", "2");
    let out = env.run_cmd(c, ["forget", "--json"]);
    out.success();
    assert_eq!(out.strict_json()["removed"], 1);
}

#[test]
fn rolling_check_subsets_cover_every_pack() {
    let env = Env::init();
    let src = env.path("ws");
    for n in 0..6u64 {
        night(&src, n);
        env.backup_json(&[src.to_str().unwrap()]);
    }
    let packs = fs::read_dir(env.repo.join("packs"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum::<usize>();
    assert!(packs >= 6, "{packs}");
    let mut read = 0;
    for _ in 0..3 {
        let out = env.run(["check", "--read-data-subset", "1/3", "--json"]);
        out.success();
        let v = out.strict_json();
        assert_eq!(v["problems"], serde_json::json!([]));
        read += v["packs_read"].as_u64().unwrap() as usize;
    }
    // Three runs of a third read each pack exactly once.
    assert_eq!(read, packs.div_ceil(3) * 3);
    // Damage in a pack is found by the subset that reads it, and named with its files.
    let victim = fs::read_dir(env.repo.join("packs"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[100] ^= 0x40;
    fs::write(&victim, bytes).unwrap();
    let mut found = false;
    for _ in 0..3 {
        let out = env.run(["check", "--read-data-subset", "34%", "--json"]);
        if out.code != 0 {
            let v = out.strict_json();
            let text = v["problems"].to_string();
            assert!(text.contains(".bin"), "{text}");
            found = true;
            break;
        }
    }
    assert!(found, "three runs of a third never read the damaged pack");
}

#[test]
fn health_reports_age_of_the_newest_snapshot() {
    let env = Env::init();
    env.run(["health"]).expect_code(1).stderr_has("no snapshot");
    let src = env.path("ws");
    night(&src, 1);
    let old = (chrono::Utc::now() - chrono::Duration::hours(30)).to_rfc3339();
    env.run(["backup", "--time", &old, src.to_str().unwrap()])
        .success();
    env.run(["health", "--max-age", "25h"])
        .expect_code(1)
        .stderr_has("unhealthy");
    let v = env.run(["health", "--max-age", "2d", "--json"]);
    v.success();
    assert_eq!(v.strict_json()["healthy"], true);
    env.backup_json(&[src.to_str().unwrap()]);
    env.run(["health"]).success();
}

#[test]
fn backup_waits_for_a_running_exclusive_prune_and_both_finish() {
    backup_beside_prune(&["prune", "--json", "--max-unused", "0", "--exclusive"]);
}

/// The default prune runs beside the backup (no waiting); both finish and the repository is
/// whole.
#[test]
fn backup_runs_beside_a_prune_and_both_finish() {
    backup_beside_prune(&["prune", "--json", "--max-unused", "0"]);
}

fn backup_beside_prune(prune_args: &[&str]) {
    let env = Env::init();
    let src = env.path("ws");
    for n in 0..4u64 {
        night(&src, n);
        env.backup_json(&[src.to_str().unwrap()]);
    }
    env.run(["forget", "--keep-last", "1"]).success();
    let prune = std::process::Command::new(common::coffer_bin())
        .env_clear()
        .env("HOME", &env.home)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", common::PASSWORD)
        .env("COFFER_CACHE_DIR", env.path("cache-prune"))
        .args(prune_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let src2 = env.path("ws2");
    night(&src2, 9);
    let b = env.backup_json(&[src2.to_str().unwrap()]);
    let out = prune.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = b["snapshot_id"].as_str().unwrap();
    let target = env.path("out");
    restore_to(&env, id, &target);
    assert_trees_equal(&src2, &target.join("ws2"));
    env.run(["check", "--read-data"]).success();
}

fn opts() -> InitOptions {
    InitOptions {
        pack_bytes: 1 << 20,
        kdf: coffer::crypto::KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    }
}

fn backup_opts(src: &Path) -> BackupOptions {
    BackupOptions {
        sources: vec![SourceSpec {
            name: "ws".into(),
            path: src.to_path_buf(),
        }],
        tags: vec![],
        host: "test".into(),
        excludes: vec![],
        exclude_regexes: vec![],
        parent: None,
        force: false,
        time: None,
        ..Default::default()
    }
}

/// Prune interrupted at every one of its writes and deletes leaves a repository that passes
/// check and restores every kept snapshot; the next prune finishes the job.
#[test]
fn prune_crash_at_every_write_keeps_kept_snapshots() {
    prune_crash_matrix(true);
}

/// The same for the prune that runs beside backups: markers, the completed marker, the
/// consolidated index, the deletions, each interrupted in turn.
#[test]
fn prune_beside_backups_crash_at_every_write_keeps_kept_snapshots() {
    prune_crash_matrix(false);
}

fn prune_crash_matrix(exclusive: bool) {
    let env = Env::new();
    let src = env.path("ws");
    let root = env.path("repo-fault");
    let fault = Arc::new(FaultStore::new(LocalStore::new(&root)));
    let store: Arc<dyn ObjectStore> = fault.clone();
    let repo = Repository::init(store.clone(), b"pw", opts()).unwrap();
    let cache = env.path("cache");
    let catalog = |n: &str| coffer::catalog::Catalog::open(&cache.join(n)).unwrap();
    let cat = catalog("main");
    let mut ids = Vec::new();
    for n in 0..5u64 {
        night(&src, n);
        let s = backup(&repo, &cat, &backup_opts(&src), &Progress::default()).unwrap();
        ids.push(s.snapshot_id.expect("a snapshot"));
    }
    let expected = env.path("expected");
    restore(
        &repo,
        &cat,
        &RestoreOptions {
            snapshot: ids[4].to_hex(),
            target: expected.clone(),
            ..Default::default()
        },
        &Progress::default(),
    )
    .unwrap();
    // Forget all but the newest, by deleting the snapshot objects.
    for id in &ids[..4] {
        repo.delete_snapshot(id).unwrap();
    }
    let prune_opts = PruneOptions {
        max_unused_percent: 0.0,
        exclusive,
        ..PruneOptions::default()
    };
    // Count a complete prune's writes and deletes on a copy.
    let probe_root = env.path("probe");
    copy_dir(&root, &probe_root);
    let probe = Arc::new(FaultStore::new(LocalStore::new(&probe_root)));
    let probe_store: Arc<dyn ObjectStore> = probe.clone();
    let probe_repo = Repository::open(probe_store, b"pw").unwrap();
    prune(
        &probe_repo,
        &catalog("probe"),
        &prune_opts,
        &Progress::default(),
    )
    .unwrap();
    let total = probe.writes();
    assert!(total >= 4, "{total}");

    let mut crashes = 0;
    for k in 0..total {
        let work = env.path(format!("work-{k}"));
        copy_dir(&root, &work);
        let f = Arc::new(FaultStore::new(LocalStore::new(&work)));
        let s: Arc<dyn ObjectStore> = f.clone();
        let r = Repository::open(s.clone(), b"pw").unwrap();
        f.fail_after(k);
        let res = prune(
            &r,
            &catalog(&format!("c-{k}")),
            &prune_opts,
            &Progress::default(),
        );
        f.heal();
        if res.is_err() {
            crashes += 1;
        }
        // A crashed process's lock stays behind (in this test the "crashed" prune ran in this
        // very process, so it does not look dead): remove it as `coffer unlock` would.
        r.unlock(true).unwrap();
        let report = check(
            &r,
            &CheckOptions {
                read_data: true,
                ..CheckOptions::default()
            },
            &Progress::default(),
        )
        .unwrap();
        assert!(
            report.problems.is_empty(),
            "after a crash at write {k}: {:?}",
            report.problems
        );
        let out = env.path(format!("out-{k}"));
        restore(
            &r,
            &catalog(&format!("r-{k}")),
            &RestoreOptions {
                snapshot: ids[4].to_hex(),
                target: out.clone(),
                ..Default::default()
            },
            &Progress::default(),
        )
        .unwrap();
        assert_trees_equal(&expected.join("ws"), &out.join("ws"));
        // The next prune completes and leaves as little as an uninterrupted one.
        prune(
            &r,
            &catalog(&format!("c2-{k}")),
            &prune_opts,
            &Progress::default(),
        )
        .unwrap();
        assert!(
            dir_size(&work.join("packs")) <= dir_size(&probe_root.join("packs")) + 4096,
            "crash at {k}: the next prune did not finish the job"
        );
        fs::remove_dir_all(&work).unwrap();
        fs::remove_dir_all(&out).unwrap();
    }
    assert!(
        crashes + 2 >= total,
        "only {crashes} of {total} crash points failed"
    );
}

#[test]
fn two_backups_from_two_processes_at_once_both_complete() {
    let env = Env::init();
    let a = env.path("a");
    let b = env.path("b");
    for (dir, seed) in [(&a, 1u64), (&b, 2)] {
        for i in 0..20u64 {
            write(
                &dir.join(format!("f{i}.bin")),
                pseudo_random(seed * 100 + i, 150_000),
            );
        }
    }
    let spawn = |src: &Path, cache: &str| {
        std::process::Command::new(common::coffer_bin())
            .env_clear()
            .env("HOME", &env.home)
            .env("COFFER_REPO", &env.repo)
            .env("COFFER_PASSWORD", common::PASSWORD)
            .env("COFFER_CACHE_DIR", env.path(cache))
            .args(["backup", "--json", src.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let pa = spawn(&a, "cache-a");
    let pb = spawn(&b, "cache-b");
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "{oa:?}");
    assert!(ob.status.success(), "{ob:?}");
    assert_eq!(env.snapshots().len(), 2);
    env.run(["check", "--read-data"]).success();
    for (src, out) in [(&a, &oa), (&b, &ob)] {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let target = env.path(format!(
            "out-{}",
            src.file_name().unwrap().to_str().unwrap()
        ));
        restore_to(&env, v["snapshot_id"].as_str().unwrap(), &target);
        assert_trees_equal(src, &target.join(src.file_name().unwrap()));
    }
}

/// A repository with a cheap key: these tests run the binary a few hundred times.
fn cheap_env() -> Env {
    let env = Env::new();
    env.run(["init", "--kdf-memory", "19", "--kdf-iterations", "2"])
        .success();
    env
}

/// One snapshot of `src` at `time` (RFC 3339); its id.
fn backup_at(env: &Env, src: &Path, time: &str) -> String {
    let out = env.run(["backup", "--json", "--time", time, src.to_str().unwrap()]);
    out.success();
    out.strict_json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn strict_json_refuses_duplicate_keys_at_any_depth() {
    use common::strict_json::parse;
    assert!(parse(r#"{"a": [1, {"b": 2}], "c": null}"#).is_ok());
    assert!(parse(r#"{"id": 1, "id": 1}"#).is_err());
    assert!(parse(r#"[{"x": {"id": "a", "id": "b"}}]"#).is_err());
    assert_eq!(
        parse(r#"{"n": -1, "f": 1.5}"#).unwrap(),
        serde_json::json!({"n": -1, "f": 1.5})
    );
}

#[test]
fn keep_within_6m_keeps_six_months_as_restic_does() {
    // Daily snapshots from 2026-04-20 to 2026-10-31. `6m` is six calendar months (restic's
    // reading): back to 2026-04-30, so 185 stay. It used to mean six minutes: one stayed.
    let env = cheap_env();
    let src = env.path("ws");
    write(&src.join("a.txt"), "same every day\n");
    let start = chrono::NaiveDate::from_ymd_opt(2026, 4, 20).unwrap();
    let end = chrono::NaiveDate::from_ymd_opt(2026, 10, 31).unwrap();
    let mut day = start;
    while day <= end {
        backup_at(&env, &src, &format!("{day}T03:00:00Z"));
        day = day.succ_opt().unwrap();
    }
    let dry = env.run(["forget", "--keep-within", "6m", "--dry-run"]);
    dry.success();
    assert!(
        dry.stdout
            .contains("keep within 6 months (since 2026-04-30 03:00:00 UTC)"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("policy: keep within 6 months (6m)"));
    let out = env.run(["forget", "--keep-within", "6m", "--json"]);
    out.success();
    let v = out.strict_json();
    assert_eq!(v["kept"], 185, "{v}");
    assert_eq!(v["removed"], 10);
    assert_eq!(v["policy"]["keep_within"]["months"], 6, "{v}");
    let entries = v["snapshots"].as_array().unwrap();
    let newest = entries.last().unwrap();
    assert_eq!(newest["within_since"], "2026-04-30T03:00:00Z");
    assert_eq!(newest["reasons"], serde_json::json!(["within 6m"]));
    let left = env.snapshots();
    assert_eq!(left.len(), 185);
    // restic's combined form is read the same way, and `m` alone never means minutes.
    let all = env.run(["forget", "--keep-within", "2y5m7d3h", "--dry-run", "--json"]);
    all.success();
    assert_eq!(all.strict_json()["removed"], 0);
    env.run(["forget", "--keep-within", "30"])
        .expect_code(2)
        .stderr_has("no unit");
}

#[test]
fn minutes_are_spelled_min_where_m_is_ambiguous() {
    let env = cheap_env();
    env.run(["--retry-lock", "10m", "snapshots"])
        .expect_code(2)
        .stderr_has("10min");
    env.run(["--retry-lock", "10min", "snapshots"]).success();
    env.run(["health", "--max-age", "30m"])
        .expect_code(2)
        .stderr_has("30min");
}

#[test]
fn forget_by_id_forgets_exactly_those() {
    let env = cheap_env();
    let src = env.path("ws");
    night(&src, 1);
    let ids: Vec<String> = (1..=4)
        .map(|d| backup_at(&env, &src, &format!("2026-11-0{d}T03:00:00Z")))
        .collect();
    // Unknown id: an error, nothing forgotten, even with a good id beside it.
    env.run(["forget", &ids[0], "feedface"])
        .expect_code(common::exit::ERROR)
        .stderr_has("no snapshot \"feedface\"");
    assert_eq!(env.snapshots().len(), 4);
    // With a policy: refused.
    env.run(["forget", &ids[0], "--keep-last", "1"])
        .expect_code(common::exit::ERROR)
        .stderr_has("not both");
    // An ambiguous prefix names its candidates (16 hex digits give many a shared first one).
    let first: Vec<char> = ids.iter().map(|i| i.chars().next().unwrap()).collect();
    if let Some(c) = first
        .iter()
        .find(|c| first.iter().filter(|d| d == c).count() > 1)
    {
        let out = env.run(["forget", &c.to_string()]);
        out.expect_code(common::exit::ERROR).stderr_has("ambiguous");
        for id in ids.iter().filter(|i| i.starts_with(*c)) {
            out.stderr_has(id);
        }
    }
    let dry = env.run(["forget", "--dry-run", "--json", &ids[1][..12]]);
    dry.success();
    assert_eq!(dry.strict_json()["removed"], 1);
    assert_eq!(env.snapshots().len(), 4);
    let out = env.run(["forget", "--json", &ids[1], &ids[3][..10], &ids[1][..8]]);
    out.success();
    let v = out.strict_json();
    assert_eq!(v["removed"], 2, "{v}");
    assert_eq!(v["kept"], 2);
    let left: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [ids[0].clone(), ids[2].clone()]);
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let env = cheap_env();
    let src = env.path("ws");
    night(&src, 1);
    for d in 1..=9 {
        backup_at(&env, &src, &format!("2026-11-0{d}T03:00:00Z"));
    }
    // A real pipe whose reader has gone: `forget --dry-run | head -1`, many times over.
    for args in [
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["snapshots"],
    ] {
        let mut c = std::process::Command::new(common::coffer_bin());
        c.env_clear()
            .env("COFFER_REPO", &env.repo)
            .env("COFFER_PASSWORD", common::PASSWORD)
            .env("COFFER_CACHE_DIR", &env.cache)
            .env("HOME", &env.home)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        // Close the read end before the child writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}
