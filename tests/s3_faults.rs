//! Transient and lasting S3 failures, injected by a proxy on loopback between coffer and the
//! S3 test server (see `common::fault_proxy`): a share of failed requests is survived with no
//! data lost; an outage ends the command with one clear line and leaves a repository that the
//! server, reached directly, shows consistent.

mod common;

use std::path::Path;

use coffer::storage::ObjectStore;
use common::fault_proxy::FaultProxy;
use common::s3_server::{Server, run, server};
use common::{Env, assert_no_panic, assert_trees_equal, exit, pseudo_random};

const MIB: usize = 1 << 20;

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `mib` MiB of incompressible data in files of 10 MiB, plus small files.
fn make_source(root: &Path, seed: u64, mib: usize) {
    for i in 0..mib.div_ceil(10) {
        let len = (mib - i * 10).min(10) * MIB + 17 * i;
        write(
            &root.join(format!("big/r{i}.bin")),
            pseudo_random(seed + i as u64, len),
        );
    }
    for i in 0..30 {
        write(
            &root.join(format!("small/d{}/f{i:02}.txt", i % 4)),
            format!("file {i} of seed {seed}\n").repeat(i + 1),
        );
    }
    write(&root.join("small/empty"), "");
}

/// The same repository, reached without the proxy.
fn direct(url: &str, proxy: &FaultProxy, s: &Server) -> String {
    url.replace(&proxy.endpoint(), &s.endpoint)
}

#[track_caller]
fn json_ok(env: &Env, s: &Server, args: &[&str]) -> serde_json::Value {
    let out = run(env, s, args);
    out.success();
    out.json()
}

#[track_caller]
fn check_read_data(env: &Env, s: &Server, url: &str) {
    let r = json_ok(env, s, &["check", "--read-data", "--json", "--repo", url]);
    assert_eq!(r["problems"], serde_json::json!([]), "{r}");
}

#[track_caller]
fn check(env: &Env, s: &Server, url: &str) {
    let r = json_ok(env, s, &["check", "--json", "--repo", url]);
    assert_eq!(r["problems"], serde_json::json!([]), "{r}");
}

#[track_caller]
fn restore_equals(env: &Env, s: &Server, url: &str, snapshot: &str, src: &Path, name: &str) {
    let target = env.path(name);
    let t = target.display().to_string();
    run(
        env,
        s,
        ["restore", "--repo", url, "-s", snapshot, "-t", t.as_str()],
    )
    .success();
    assert_trees_equal(src, &target.join("src"));
}

#[test]
fn transient_failures_are_retried_without_data_loss() {
    let s = server();
    // One request in five fails: 503 SlowDown, 500 InternalError, a dropped connection, or an
    // answer cut half-way after the server did the work.
    let proxy = FaultProxy::start(&s.endpoint, 20, 0x00c0_ffee);
    let env = Env::new();
    let url = s.url_at("faults", &proxy.endpoint());
    let src = env.path("src");
    // 34 MiB of random data: two full 16 MiB packs (multipart uploads) and a partial one.
    make_source(&src, 1, 34);

    run(&env, s, ["init", "--repo", &url]).success();
    let v = json_ok(
        &env,
        s,
        &[
            "backup",
            "--json",
            "--connections",
            "3",
            "--repo",
            &url,
            "src",
        ],
    );
    assert!(v["packs_written"].as_u64().unwrap_or(0) >= 3, "{v}");
    restore_equals(&env, s, &url, "latest", &src, "restored");
    check_read_data(&env, s, &url);

    // S3 to S3 through the proxy on both sides.
    let copy = s.url_at("faults-copy", &proxy.endpoint());
    run(&env, s, ["init", "--repo", &copy, "--from", &url]).success();
    let v = json_ok(&env, s, &["sync", "--json", "--repo", &url, "--to", &copy]);
    assert_eq!(v["snapshots_copied"], 1, "{v}");

    let c = proxy.counts();
    eprintln!("fault proxy: {c:?}");
    assert!(
        c.slow_down > 0 && c.internal > 0 && c.dropped > 0 && c.cut > 0,
        "not every kind of fault was injected: {c:?}"
    );

    // What the server holds, without the proxy: both repositories are whole.
    // (A restore reads and verifies every blob it writes.)
    let (url, copy) = (direct(&url, &proxy, s), direct(&copy, &proxy, s));
    check(&env, s, &url);
    check(&env, s, &copy);
    restore_equals(&env, s, &copy, "latest", &src, "from-copy");
}

#[test]
fn stalled_requests_are_cut_by_the_timeout_and_retried() {
    let s = server();
    // One request in six fails, and one fault in five is a stall: the server does the work
    // but the answer is held back far longer than the repository's 2 s timeout allows.
    let proxy = FaultProxy::start(&s.endpoint, 16, 0x5eed_5a11);
    proxy.stall_for(std::time::Duration::from_secs(8));
    let env = Env::new();
    let url = format!("{}&timeout=2", s.url_at("stalls", &proxy.endpoint()));
    let src = env.path("src");
    make_source(&src, 3, 20);

    run(&env, s, ["init", "--repo", &url]).success();
    json_ok(&env, s, &["backup", "--json", "--repo", &url, "src"]);
    restore_equals(&env, s, &url, "latest", &src, "restored");
    check_read_data(&env, s, &url);
    let c = proxy.counts();
    eprintln!("fault proxy: {c:?}");
    assert!(c.stalled > 0, "no request was stalled: {c:?}");

    let url = direct(&url, &proxy, s);
    check_read_data(&env, s, &url);
}

#[test]
fn an_outage_stops_with_one_line_and_leaves_the_repository_consistent() {
    let s = server();
    let proxy = FaultProxy::start(&s.endpoint, 0, 7);
    let env = Env::new();
    // Two retries, to keep the test short.
    let url = format!("{}&retries=2", s.url_at("outage", &proxy.endpoint()));
    let src = env.path("src");
    make_source(&src, 10, 1);

    run(&env, s, ["init", "--repo", &url]).success();
    let v = json_ok(&env, s, &["backup", "--json", "--repo", &url, "src"]);
    let first_id = v["snapshot_id"].as_str().unwrap_or_default().to_string();
    restore_equals(&env, s, &url, &first_id, &src, "first");

    // The outage begins after a few PUTs of the second backup: some packs are stored.
    // 20 MiB: PUTs of the lock, two parts of a 16 MiB pack, one small pack; then none.
    make_source(&src, 20, 20);
    proxy.outage_after_puts(4);
    let out = run(
        &env,
        s,
        ["backup", "--connections", "2", "--repo", &url, "src"],
    );
    assert_no_panic(&out);
    out.expect_code(exit::ERROR);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    out.stderr_has("backup into")
        .stderr_has("gave up after retries");
    assert!(!out.stderr.contains(&s.secret), "secret in: {}", out.stderr);
    let c = proxy.counts();
    assert!(c.faults() > 0 && c.forwarded > 0, "{c:?}");

    // The server, reached directly: the first snapshot only, and it is whole.
    let d = direct(&url, &proxy, s);
    let snaps = json_ok(&env, s, &["snapshots", "--json", "--repo", &d]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    check_read_data(&env, s, &d);
    let first = env.path("first").join("src");
    restore_equals(&env, s, &d, &first_id, &first, "first-again");

    // A command that starts during the outage names it at once.
    let out = run(&env, s, ["snapshots", "--repo", &url]);
    out.expect_code(exit::ERROR)
        .stderr_has("cannot reach the S3 endpoint");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    // Once the service is back, the same backup completes.
    proxy.outage_after_puts(u64::MAX);
    run(&env, s, ["backup", "-q", "--repo", &url, "src"]).success();
    check(&env, s, &d);
    restore_equals(&env, s, &d, "latest", &src, "second");
}

#[test]
fn a_lost_answer_to_a_completed_multipart_upload_is_not_a_failure() {
    let s = server();
    let proxy = FaultProxy::start(&s.endpoint, 0, 3);
    let url = s.url_at("lost-answer", &proxy.endpoint());
    let store = s.store(&url);
    // CompleteMultipartUpload is `POST /bucket/key?uploadId=..`: the server completes the
    // upload, the answer is cut, and the completion is retried (moto accepts the repeat).
    proxy.cut_next("POST ", "uploadId=");
    let big = pseudo_random(5, 20 * MIB + 3);
    store
        .write("packs/ab/big", &big)
        .expect("the write took effect");
    assert_eq!(proxy.counts().cut, 1, "{:?}", proxy.counts());
    assert!(store.read("packs/ab/big").expect("read back") == big);
}
