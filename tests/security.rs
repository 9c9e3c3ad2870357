//! Security hardening (issue 15), end to end with the real binary: each test fails on the
//! code before the fix it covers.

mod common;

use common::Env;

/// `Env::cmd_with_password` sets `COFFER_PASSWORD`; these commands start without it.
fn cmd_without_password(env: &Env) -> assert_cmd::Command {
    let mut c = env.cmd();
    c.env_remove("COFFER_PASSWORD");
    c
}

#[test]
fn an_empty_passphrase_is_refused_from_every_source() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    // COFFER_PASSWORD= (set, empty): `backup` without --repo must not create the default
    // repository (under $HOME) protected by nothing.
    let mut c = env.cmd_with_password("");
    c.env_remove("COFFER_REPO");
    let out = env.run_cmd(c, ["backup", src.to_str().unwrap()]);
    out.failure().stderr_has("COFFER_PASSWORD is empty");
    let created = walk(&env.home);
    assert!(
        !created.iter().any(|p| p.ends_with("config")),
        "a repository protected by nothing was created: {created:?}"
    );
    // An empty file and a file with only a newline.
    for content in ["", "\n"] {
        let f = env.path("pw");
        std::fs::write(&f, content).unwrap();
        let out = env.run_cmd(
            cmd_without_password(&env),
            ["--password-file", f.to_str().unwrap(), "init"],
        );
        out.failure().stderr_has("is empty");
    }
    // A command that prints nothing.
    let out = env.run_cmd(
        cmd_without_password(&env),
        ["--password-command", "true", "init"],
    );
    out.failure().stderr_has("--password-command is empty");
    assert!(!env.repo.exists());
}

#[test]
fn an_explicit_password_file_wins_over_the_environment_and_says_so() {
    let env = Env::init();
    let wrong = env.path("wrong-pw");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    // COFFER_PASSWORD holds the right passphrase; the explicit flag names a wrong one: the flag
    // is used (so the open fails with a wrong passphrase) and the conflict is named.
    let out = env.run(["--password-file", wrong.to_str().unwrap(), "snapshots"]);
    out.expect_code(common::exit::WRONG_PASSWORD);
    out.stderr_has("taken from --password-file; COFFER_PASSWORD is ignored");
    // Both flags at once are refused.
    let out = env.run([
        "--password-file",
        wrong.to_str().unwrap(),
        "--password-command",
        "echo x",
        "snapshots",
    ]);
    out.failure().stderr_has("not both");
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

/// `--overwrite` never writes through an existing inode: a file of the target that is a
/// hardlink to a file outside it is replaced, the outside file keeps its content.
#[test]
fn overwrite_replaces_a_planted_hardlink_instead_of_writing_through_it() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("config"), "from the snapshot\n").unwrap();
    env.backup_json(&[&src]);
    let outside = env.path("outside-secret");
    std::fs::write(&outside, "must not change\n").unwrap();
    let target = env.path("target");
    std::fs::create_dir_all(target.join("src")).unwrap();
    std::fs::hard_link(&outside, target.join("src/config")).unwrap();
    for mode in ["always", "if-changed", "if-newer"] {
        env.run([
            "restore",
            "-s",
            "latest",
            "-t",
            target.to_str().unwrap(),
            "--overwrite",
            mode,
        ])
        .success();
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            "must not change\n"
        );
    }
    assert_eq!(
        std::fs::read_to_string(target.join("src/config")).unwrap(),
        "from the snapshot\n"
    );
}

/// Device nodes and trusted.* xattrs from a snapshot are recreated only with --privileged.
#[test]
fn devices_and_trusted_xattrs_need_privileged() {
    if !common::is_root() {
        eprintln!("note: making a device node needs root; skipped");
        return;
    }
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    std::fs::write(src.join("file"), "x").unwrap();
    let trusted = xattr::set(src.join("file"), "trusted.coffer", b"grant").is_ok();
    env.backup_json(&[&src]);
    let plain = env.path("plain");
    let out = env.run([
        "--json",
        "restore",
        "-s",
        "latest",
        "-t",
        plain.to_str().unwrap(),
    ]);
    out.success();
    assert_eq!(out.json()["skipped_devices"], 1);
    assert!(std::fs::symlink_metadata(plain.join("src/null")).is_err());
    if trusted {
        assert_eq!(
            xattr::get(plain.join("src/file"), "trusted.coffer").unwrap(),
            None
        );
    }
    let full = env.path("full");
    env.run([
        "restore",
        "-s",
        "latest",
        "-t",
        full.to_str().unwrap(),
        "--privileged",
    ])
    .success();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(full.join("src/null"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    if trusted {
        assert_eq!(
            xattr::get(full.join("src/file"), "trusted.coffer").unwrap(),
            Some(b"grant".to_vec())
        );
    } else {
        eprintln!("note: this file system takes no trusted.* xattrs; that part is skipped");
    }
}

/// A failing webhook, ping or notification URL is logged without its token: nothing of the
/// secret parts of the URLs reaches stderr, at the daemon's default and at the debug level.
#[test]
fn notification_failures_do_not_log_tokens() {
    let env = Env::init();
    // A port nothing listens on: every request fails to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = env.path("coffer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[backup]\nsources = [\"{missing}\"]\n[notify]\n\
             webhooks = [\"http://127.0.0.1:{port}/hook?token=SECRET-WEBHOOK\"]\n\
             pings = [\"http://user:SECRET-PASS@127.0.0.1:{port}/ping/SECRET-UUID\"]\n\
             urls = [\"generic://127.0.0.1:{port}/x?token=SECRET-SHOUT&disabletls=yes\"]\n\
             timeout_secs = 2\n",
            missing = env.path("no-such-source").display()
        ),
    )
    .unwrap();
    for verbosity in [None, Some("-vv")] {
        let mut args = vec!["run-job", "--config", cfg.to_str().unwrap()];
        args.extend(verbosity);
        let out = env.run(args);
        out.expect_code(1);
        assert!(
            out.stderr.contains("notification failed"),
            "the failures are not logged at all: {}",
            out.stderr
        );
        for secret in [
            "SECRET-WEBHOOK",
            "SECRET-PASS",
            "SECRET-UUID",
            "SECRET-SHOUT",
        ] {
            assert!(
                !out.stderr.contains(secret) && !out.stdout.contains(secret),
                "{secret} reached the log:\n{}",
                out.stderr
            );
        }
    }
}

/// While backups run, another thread keeps swapping a file for a symlink to a secret outside
/// the source, a directory for a symlink to a directory holding the secret, and the file for
/// a FIFO: no snapshot ever holds the secret, and no backup blocks.
#[test]
fn backup_never_follows_entries_swapped_while_it_reads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::init();
    let src = env.path("src");
    let outside = env.path("outside");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    const SECRET: &str = "SECRET-CONTENT-OUTSIDE-THE-SOURCE";
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    std::fs::write(outside.join("inner"), SECRET).unwrap();
    std::fs::write(src.join("victim"), "harmless").unwrap();
    std::fs::write(src.join("dir/inner"), "harmless").unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("filler{i}")), vec![b'x'; 4096]).unwrap();
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let (src, outside, stop) = (src.clone(), outside.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let victim = src.join("victim");
                let _ = std::fs::rename(&victim, src.join("victim.real"));
                if n.is_multiple_of(3) {
                    let _ = rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &victim,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o644),
                        0,
                    );
                } else {
                    let _ = std::os::unix::fs::symlink(outside.join("secret"), &victim);
                }
                let _ = std::fs::rename(src.join("dir"), src.join("dir.real"));
                let _ = std::os::unix::fs::symlink(&outside, src.join("dir"));
                let _ = std::fs::remove_file(&victim);
                let _ = std::fs::rename(src.join("victim.real"), &victim);
                let _ = std::fs::remove_file(src.join("dir"));
                let _ = std::fs::rename(src.join("dir.real"), src.join("dir"));
            }
        })
    };
    for _ in 0..40 {
        // Warnings (exit 3) are expected: entries vanish and change under the backup.
        let out = env.run(["backup", "--force", src.to_str().unwrap()]);
        assert!(out.code == 0 || out.code == 3, "{}", out.stderr);
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    // Every snapshot, restored: the secret is nowhere.
    for (i, s) in env.snapshots().iter().enumerate() {
        let id = s["id"].as_str().expect("snapshot id");
        let target = env.path(format!("restored-{i}"));
        env.run(["restore", "-s", id, "-t", target.to_str().unwrap()]);
        for p in walk(&target) {
            // Regular files only: a FIFO in the snapshot is restored as a FIFO.
            if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                continue;
            }
            if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(SECRET),
                    "snapshot {id} stored the secret at {}",
                    p.display()
                );
            }
        }
    }
}

/// Everything coffer creates locally is owner-only: repository objects and directories, the
/// catalog, the cache directory, the job state.
#[test]
fn local_state_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let cfg = env.path("job.toml");
    std::fs::write(
        &cfg,
        format!("[backup]\nsources = [\"{}\"]\n", src.display()),
    )
    .unwrap();
    env.run(["run-job", "--config", cfg.to_str().unwrap()])
        .success();
    let mut seen = 0;
    for root in [&env.repo, &env.cache] {
        for p in std::iter::once(root.to_path_buf()).chain(walk(root)) {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o777;
            let want = if m.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{} is {mode:o}", p.display());
            seen += 1;
        }
    }
    assert!(seen > 10, "only {seen} entries checked");
}

/// A cache directory others can write to is refused: a catalog planted there could make
/// backups skip data.
#[test]
fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::init();
    let shared = env.path("shared-cache");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.run(["--cache-dir", shared.to_str().unwrap(), "snapshots"]);
    out.failure().stderr_has("writable by others");
}

/// A repository made before owner-only modes keeps working, and `check` says so.
#[test]
fn check_names_a_repository_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::init();
    env.run(["check"]).success();
    assert!(!env.run(["check"]).stderr.contains("can be read by others"));
    std::fs::set_permissions(
        env.repo.join("config"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    env.run(["check"])
        .success()
        .stderr_has("can be read by others");
}
