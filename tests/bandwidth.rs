//! `--limit-upload` and `--limit-download` (KiB/s, also `COFFER_LIMIT_UPLOAD` and
//! `COFFER_LIMIT_DOWNLOAD`): a limited backup or restore takes at least the time its bytes
//! need at the limit, and stores or restores what an unlimited one would. Only lower bounds
//! are asserted: a slow machine must not fail these tests. (The token bucket itself is tested
//! on a simulated clock in `src/storage/throttle.rs`; S3 in `tests/s3.rs`.)

mod common;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use common::{Env, assert_trees_equal, pseudo_random};

const MIB: usize = 1 << 20;

/// A source of about 2 MiB of incompressible data in `env`.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big.bin"), pseudo_random(21, 2 * MIB - 4096)).unwrap();
    std::fs::write(src.join("sub/small.txt"), "a small file\n").unwrap();
    src
}

fn restore_args(target: &std::path::Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
    args.extend(["restore".into(), "latest".into(), "--target".into()]);
    args.push(target.as_os_str().to_owned());
    args
}

#[test]
fn a_limited_upload_takes_the_time_its_bytes_need() {
    let env = Env::init();
    let src = source(&env);
    let started = Instant::now();
    let out = env.run([
        OsString::from("--limit-upload"),
        "512".into(),
        "backup".into(),
        "--json".into(),
        src.clone().into(),
    ]);
    let took = started.elapsed();
    out.success();
    let sent = out.json()["stored_bytes_added"].as_u64().unwrap();
    assert!(sent >= 2 * MIB as u64 - 4096, "{}", out.stdout);
    // 2 MiB at 512 KiB/s is 4 s, less a quarter second of burst.
    assert!(
        took >= Duration::from_secs(3),
        "a backup of 2 MiB at 512 KiB/s took {took:?}"
    );
    let target = env.path("restored");
    env.run(restore_args(&target, &[])).success();
    assert_trees_equal(&src, &target.join("src"));
}

#[test]
fn a_limited_download_takes_the_time_its_bytes_need() {
    let env = Env::init();
    let src = source(&env);
    env.backup_json(&[&src]);
    let target = env.path("restored");
    let started = Instant::now();
    let out = env.run(restore_args(&target, &["--limit-download", "512"]));
    let took = started.elapsed();
    out.success();
    assert!(
        took >= Duration::from_secs(3),
        "a restore of 2 MiB at 512 KiB/s took {took:?}"
    );
    assert_trees_equal(&src, &target.join("src"));
}

#[test]
fn the_limits_come_from_the_environment_too() {
    let env = Env::init();
    let src = source(&env);
    let mut c = env.cmd();
    c.env("COFFER_LIMIT_UPLOAD", "512");
    let started = Instant::now();
    env.run_cmd(c, [OsString::from("backup"), src.clone().into()])
        .success();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "COFFER_LIMIT_UPLOAD=512: a backup of 2 MiB took {took:?}"
    );
    let mut c = env.cmd();
    c.env("COFFER_LIMIT_DOWNLOAD", "512");
    let target = env.path("restored");
    let started = Instant::now();
    env.run_cmd(c, restore_args(&target, &[])).success();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "COFFER_LIMIT_DOWNLOAD=512: a restore of 2 MiB took {took:?}"
    );
    assert_trees_equal(&src, &target.join("src"));
}

#[test]
fn zero_is_no_limit_and_a_bad_value_is_refused() {
    let env = Env::init();
    let src = source(&env);
    env.run([
        OsString::from("backup"),
        "--limit-upload".into(),
        "0".into(),
        "--limit-download".into(),
        "0".into(),
        src.clone().into(),
    ])
    .success();
    for bad in ["-1", "fast", "1.5"] {
        env.run(["snapshots", "--limit-upload", bad]).failure();
    }
    let mut c = env.cmd();
    c.env("COFFER_LIMIT_DOWNLOAD", "lots");
    env.run_cmd(c, ["snapshots"])
        .failure()
        .stderr_has("--limit-download");
    // A variable set to nothing (`COFFER_LIMIT_UPLOAD=${LIMIT:-}`) is no limit.
    let mut c = env.cmd();
    c.env("COFFER_LIMIT_UPLOAD", "")
        .env("COFFER_LIMIT_DOWNLOAD", "");
    env.run_cmd(c, ["snapshots"]).success();
}
