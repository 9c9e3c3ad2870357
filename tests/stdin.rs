//! `backup --stdin` and `backup --stdin-from-command`: a stream stored as one file of a new
//! snapshot, given back by `dump`, `restore`, `ls`, `find` and `export`; a failed command
//! leaves no snapshot; the same stream twice adds (almost) nothing; memory does not grow
//! with the stream.

mod common;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use common::{Env, PASSWORD, coffer_bin, pseudo_random};

const MIB: usize = 1 << 20;

/// `coffer ARGS` with `input` on its standard input.
#[track_caller]
fn run_with_stdin(env: &Env, input: &[u8], args: &[&str]) -> common::Out {
    let mut c = env.cmd();
    c.write_stdin(input.to_vec());
    env.run_cmd(c, args)
}

/// `coffer dump latest NAME`: the bytes (stdout taken raw, not as text).
#[track_caller]
fn dump(env: &Env, snapshot: &str, name: &str) -> Vec<u8> {
    let out = env
        .cmd()
        .args(["dump", snapshot, name])
        .timeout(Duration::from_secs(120))
        .output()
        .expect("running coffer dump");
    assert!(
        out.status.success(),
        "dump {snapshot} {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn stdin_is_stored_as_one_file_and_dumped_back_byte_for_byte() {
    let env = Env::init();
    let data = pseudo_random(11, 5 * MIB + 12345);
    let out = run_with_stdin(
        &env,
        &data,
        &["backup", "--json", "--stdin", "--stdin-filename", "db.sql"],
    );
    out.success();
    let s = out.json();
    assert_eq!(s["files"], 1);
    assert_eq!(s["total_bytes"], data.len());
    assert!(s["snapshot_id"].is_string(), "{s}");

    assert!(dump(&env, "latest", "db.sql") == data, "dump differs");

    // The snapshot's root holds the file: restore writes TARGET/NAME.
    let target = env.path("restored");
    let out = env.run([
        OsString::from("restore"),
        "latest".into(),
        "--target".into(),
        target.clone().into(),
    ]);
    out.success();
    let restored = std::fs::read(target.join("db.sql")).expect("restored file");
    assert!(restored == data, "restored file differs");
    let meta = std::fs::metadata(target.join("db.sql")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o644
    );
    let age = std::time::SystemTime::now()
        .duration_since(meta.modified().unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(600), "mtime is not about now");

    let ls = env.run(["ls", "latest"]);
    ls.success();
    assert!(
        ls.stdout.lines().any(|l| l.trim() == "db.sql"),
        "{}",
        ls.stdout
    );
    let find = env.run(["find", "db.sql"]);
    find.success();
    assert!(find.stdout.contains("db.sql"), "{}", find.stdout);

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    let sources = &snaps[0]["sources"];
    assert_eq!(sources[0]["name"], "db.sql");
    assert_eq!(sources[0]["path"], "<stdin>");
}

#[test]
fn the_default_name_is_stdin_and_an_empty_stream_is_a_file() {
    let env = Env::init();
    run_with_stdin(&env, b"", &["backup", "--stdin"]).success();
    assert_eq!(dump(&env, "latest", "stdin"), b"");
    run_with_stdin(&env, b"hello\n", &["backup", "--stdin"]).success();
    assert_eq!(dump(&env, "latest", "stdin"), b"hello\n");
}

#[test]
fn a_command_output_is_backed_up_when_it_succeeds() {
    let env = Env::init();
    let data = pseudo_random(12, 3 * MIB + 7);
    std::fs::write(env.path("dump.bin"), &data).unwrap();
    let out = env.run([
        "backup",
        "--json",
        "--stdin-from-command",
        "--stdin-filename",
        "all.sql",
        "--",
        "sh",
        "-c",
        "cat dump.bin; echo 'a warning' >&2",
    ]);
    out.success();
    assert!(out.stderr.contains("a warning"), "{}", out.stderr);
    assert!(dump(&env, "latest", "all.sql") == data, "dump differs");
    let snaps = env.snapshots();
    assert_eq!(snaps[0]["sources"][0]["path"], "<command> sh");
}

#[test]
fn a_failed_command_leaves_no_snapshot() {
    let env = Env::init();
    run_with_stdin(&env, b"first", &["backup", "--stdin"]).success();
    let out = env.run([
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo partial; echo 'pg_dump: connection refused' >&2; exit 3",
    ]);
    out.failure();
    out.stderr_has("exited with status 3")
        .stderr_has("pg_dump: connection refused")
        .stderr_has("no snapshot was written");
    // One line of error.
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].contains("status 3"), "{}", errors[0]);
    assert_eq!(env.snapshots().len(), 1);
    assert_eq!(dump(&env, "latest", "stdin"), b"first");

    // A command killed by a signal, or one that cannot start, neither.
    let out = env.run([
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    out.failure().stderr_has("killed by signal 9");
    let out = env.run([
        "backup",
        "--stdin-from-command",
        "--",
        "/nonexistent/coffer-test-program",
    ]);
    out.failure().stderr_has("cannot run command");
    assert_eq!(env.snapshots().len(), 1);
    env.run(["check"]).success();
}

#[test]
fn stdin_is_refused_with_sources_and_bad_names() {
    let env = Env::init();
    let dir = env.path("src");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "x").unwrap();
    let dir = dir.to_str().unwrap();
    run_with_stdin(&env, b"data", &["backup", "--stdin", dir])
        .failure()
        .stderr_has("give no source");
    run_with_stdin(
        &env,
        b"data",
        &["backup", "--stdin-from-command", dir, "--", "echo", "x"],
    )
    .failure();
    for bad in ["../escape", "a/b", "..", "/abs"] {
        run_with_stdin(
            &env,
            b"data",
            &["backup", "--stdin", "--stdin-filename", bad],
        )
        .failure()
        .stderr_has("--stdin-filename");
    }
    run_with_stdin(&env, b"data", &["backup", "--stdin", "--exclude", "*.tmp"])
        .failure()
        .stderr_has("--exclude");
    // --stdin-filename alone is not a stream backup.
    env.run(["backup", "--stdin-filename", "x", dir]).failure();
    assert!(env.snapshots().is_empty());
}

#[test]
fn the_same_stream_twice_adds_almost_nothing() {
    let env = Env::init();
    let data = pseudo_random(13, 4 * MIB);
    let args = ["backup", "--json", "--stdin", "--stdin-filename", "vm.img"];
    let first = run_with_stdin(&env, &data, &args);
    first.success();
    let first = first.json();
    assert!(first["bytes_added"].as_u64().unwrap() >= data.len() as u64);
    let second = run_with_stdin(&env, &data, &args);
    second.success();
    let second = second.json();
    // Only the root tree (the file's mtime changed) is new.
    assert!(second["blobs_added"].as_u64().unwrap() <= 1, "{second}");
    assert!(second["bytes_added"].as_u64().unwrap() < 4096, "{second}");
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert!(dump(&env, "latest", "vm.img") == data);
}

#[test]
fn stream_and_directory_snapshots_are_never_each_others_parent() {
    let env = Env::init();
    // A directory source named `stdin`, as the default stream name.
    let dir = env.path("stdin");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "x").unwrap();
    let dir_first = env.backup_json(&[&dir]);
    let stream = run_with_stdin(&env, b"bytes", &["backup", "--json", "--stdin"]);
    stream.success();
    assert_eq!(stream.json()["parent"], serde_json::Value::Null);
    let dir_second = env.backup_json(&[&dir]);
    assert_eq!(dir_second["parent"], dir_first["snapshot_id"]);
    assert_eq!(dir_second["files_unchanged"], 1);
    let stream_second = run_with_stdin(&env, b"bytes", &["backup", "--json", "--stdin"]);
    stream_second.success();
    assert_eq!(stream_second.json()["parent"], stream.json()["snapshot_id"]);
}

#[test]
fn export_holds_the_stream_as_a_file() {
    let env = Env::init();
    let data = pseudo_random(14, MIB + 3);
    run_with_stdin(
        &env,
        &data,
        &["backup", "--stdin", "--stdin-filename", "db.sql"],
    )
    .success();
    let archive = env.path("out.tar.gz");
    env.run([
        OsString::from("export"),
        "-s".into(),
        "latest".into(),
        "-o".into(),
        archive.clone().into(),
    ])
    .success();
    let gz = tar_listing(&archive);
    assert!(gz.iter().any(|n| n == "backup/db.sql"), "{gz:?}");
}

/// The entry names of a tar.gz, by `tar tzf`.
fn tar_listing(archive: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("tzf")
        .arg(archive)
        .output()
        .expect("tar");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A stream much larger than the memory the backup may use: its peak resident size, read
/// from `/proc` while it runs, stays well below the stream's size (no `read_to_end`).
#[test]
fn memory_does_not_grow_with_the_stream() {
    const STREAM: usize = 128 * MIB;
    const MAX_RSS_KIB: u64 = 96 * 1024;
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipping: no /proc");
        return;
    }
    let env = Env::init();
    let mut child = std::process::Command::new(coffer_bin())
        .env_clear()
        .current_dir(env.dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", PASSWORD)
        .env("COFFER_CACHE_DIR", &env.cache)
        // The compressors and buffers of the workers are per thread: as on a small machine.
        .env("RAYON_NUM_THREADS", "2")
        .args([
            "backup",
            "--quiet",
            "--stdin-from-command",
            "--",
            "head",
            "-c",
        ])
        .arg(STREAM.to_string())
        .arg("/dev/urandom")
        .spawn()
        .expect("start coffer");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the backup did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "backup failed: {status}");
    assert!(peak_kib > 0, "no resident size read");
    assert!(
        peak_kib < MAX_RSS_KIB,
        "a {} MiB stream took {} MiB of memory",
        STREAM / MIB,
        peak_kib / 1024
    );
    let s = env.snapshots();
    assert_eq!(s[0]["summary"]["total_bytes"], STREAM);
}
