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

/// The files directly in (or below) a repository directory, by name.
fn object_names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Issue 15, point 9: a snapshot deleted from the repository behind coffer's back is no longer
/// dropped from the catalog silently. `snapshots` warns, `check` exits 3 naming it, until it is
/// acknowledged; a snapshot removed by `coffer forget` is not reported.
#[test]
fn a_snapshot_deleted_behind_coffers_back_is_reported_until_acknowledged() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for night in 0..3 {
        std::fs::write(src.join("f"), format!("night {night}\n")).unwrap();
        let id = env.backup_json(&[&src])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    env.run(["check"]).success();
    let gone = &ids[1];
    std::fs::remove_file(env.repo.join("snapshots").join(gone)).unwrap();

    let out = env.run(["snapshots"]);
    out.success().stderr_has(&gone[..8]).stderr_has("vanished");
    // `--json` keeps its array on stdout; the warning is on stderr.
    let out = env.run(["snapshots", "--json"]);
    out.success().stderr_has(&gone[..8]);
    assert_eq!(out.json().as_array().unwrap().len(), 2);

    let out = env.run(["check"]);
    out.expect_code(common::exit::PARTIAL)
        .stderr_has(&gone[..8])
        .stderr_has("--acknowledge-vanished");
    let out = env.run(["check", "--json"]);
    out.expect_code(common::exit::PARTIAL);
    let v = out.json();
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    assert_eq!(v["vanished_snapshots"][0]["id"], gone.as_str(), "{v}");
    assert_eq!(v["vanished_snapshots"].as_array().unwrap().len(), 1, "{v}");

    // Damage still wins: exit 1, and the vanished snapshot is named as well.
    let other = ids[2].clone();
    let snap = env.repo.join("snapshots").join(&other);
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    env.run(["check"])
        .expect_code(common::exit::ERROR)
        .stderr_has(&gone[..8]);
    std::fs::write(&snap, &bytes).unwrap();

    // Acknowledged: reported once more as such, then no longer.
    let out = env.run(["check", "--acknowledge-vanished"]);
    out.success();
    assert!(out.stdout.contains("acknowledged"), "{}", out.stdout);
    assert!(out.stdout.contains(&gone[..8]), "{}", out.stdout);
    env.run(["check"]).success();
    let out = env.run(["snapshots"]);
    assert!(!out.stderr.contains("vanished"), "{}", out.stderr);

    // What `coffer forget` removes is not reported.
    env.run(["forget", "--keep-last", "1"]).success();
    assert_eq!(env.snapshots().len(), 1);
    let out = env.run(["snapshots"]);
    assert!(!out.stderr.contains("vanished"), "{}", out.stderr);
    env.run(["check"]).success();
}

/// Issue 15, point 9: an old index file put back after prune repacked and deleted its packs
/// (a replayed index) must not point restores at the deleted packs, whichever index file a
/// catalog reads first; `check` names the blob indexed in both packs.
#[test]
fn an_old_index_file_put_back_does_not_point_restores_at_deleted_packs() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let keep = common::pseudo_random(1, 200_000);
    std::fs::write(src.join("keep.bin"), &keep).unwrap();
    std::fs::write(src.join("drop.bin"), common::pseudo_random(2, 200_000)).unwrap();
    env.backup_json(&[&src]);
    let index_dir = env.repo.join("index");
    let old_names = object_names(&index_dir);
    assert_eq!(old_names.len(), 1, "{old_names:?}");
    let old_name = old_names.iter().next().unwrap().clone();
    let old_bytes = std::fs::read(index_dir.join(&old_name)).unwrap();
    // Another host's catalog reads the repository now, so it knows the old index file.
    let other = env.path("other-cache");
    env.run(["--cache-dir", other.to_str().unwrap(), "snapshots"])
        .success();

    std::fs::remove_file(src.join("drop.bin")).unwrap();
    let second = env.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let packs_before = object_names(&env.repo.join("packs"));
    env.run(["forget", "--keep-last", "1", "--prune", "--max-unused", "0"])
        .success();
    let packs_after = object_names(&env.repo.join("packs"));
    let deleted: Vec<&String> = packs_before.difference(&packs_after).collect();
    let created: Vec<&String> = packs_after.difference(&packs_before).collect();
    assert!(
        !deleted.is_empty() && !created.is_empty(),
        "nothing repacked"
    );
    assert!(!index_dir.join(&old_name).exists());

    // The old index file is put back.
    std::fs::write(index_dir.join(&old_name), &old_bytes).unwrap();

    for (n, cache) in [other, env.path("fresh-cache")].iter().enumerate() {
        let target = env.path(format!("restored-{n}"));
        env.run([
            "--cache-dir",
            cache.to_str().unwrap(),
            "restore",
            "-s",
            &second,
            "-t",
            target.to_str().unwrap(),
        ])
        .success();
        assert_eq!(std::fs::read(target.join("src/keep.bin")).unwrap(), keep);
    }

    let out = env.run(["check", "--json"]);
    let v = out.json();
    let conflict = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["object"].as_str().unwrap().starts_with("blob "))
        .unwrap_or_else(|| panic!("no conflict named: {v}"));
    let message = conflict["message"].as_str().unwrap();
    assert!(
        deleted.iter().any(|p| message.contains(p.as_str()))
            && created.iter().any(|p| message.contains(p.as_str())),
        "the conflict does not name both packs: {message}"
    );
    // The deleted packs the old file names are reported too; a prune writes a clean index.
    assert!(out.stdout.contains(&old_name), "{v}");
    env.run(["prune"]).success();
    env.run(["check"]).success();
}

/// One PAX extended-header record, `<length> <key>=<value>\n`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A file capability as the kernel stores it (VFS_CAP_REVISION_2, effective, permitted
/// CAP_NET_BIND_SERVICE).
const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// An archive in the old layout from somewhere not trusted: a setgid directory, a setuid
/// file, a character device with a hard link to it, and a file with a file capability, a
/// trusted.* and a user.* xattr.
fn untrusted_archive(path: &std::path::Path) {
    use tar::{EntryType, Header};
    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    let mut h = header(EntryType::Directory, 0o2775, 0);
    b.append_data(&mut h, "backup/vol/", std::io::empty())
        .unwrap();
    let script = b"#!/bin/sh\nid\n";
    let mut h = header(EntryType::Regular, 0o4755, script.len() as u64);
    b.append_data(&mut h, "backup/vol/suid", &script[..])
        .unwrap();
    let mut h = header(EntryType::Char, 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "backup/vol/null", std::io::empty())
        .unwrap();
    let mut h = header(EntryType::Link, 0o666, 0);
    b.append_link(&mut h, "backup/vol/null-link", "backup/vol/null")
        .unwrap();
    let mut pax = pax_record("SCHILY.xattr.security.capability", &CAPABILITY);
    pax.extend(pax_record("SCHILY.xattr.trusted.grant", b"yes"));
    pax.extend(pax_record("SCHILY.xattr.user.note", b"kept"));
    let mut h = header(EntryType::XHeader, 0o644, pax.len() as u64);
    b.append_data(&mut h, "backup/vol/PaxHeaders/cap", &pax[..])
        .unwrap();
    let mut h = header(EntryType::Regular, 0o755, script.len() as u64);
    b.append_data(&mut h, "backup/vol/cap", &script[..])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

/// `coffer ls --json` of a snapshot: path -> (kind, mode).
fn ls_modes(env: &Env, id: &str) -> std::collections::BTreeMap<String, (String, u64)> {
    let out = env.run(["ls", "--json", "-s", id]);
    out.success();
    out.json_lines()
        .into_iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["mode"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The `SCHILY.xattr.*` names `coffer export` writes for `backup/vol/cap`, with their values.
fn exported_xattrs(env: &Env, id: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = env.path(format!("export-{}.tar.gz", &id[..8]));
    env.run(["export", "-s", id, "-o", file.to_str().unwrap()])
        .success();
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap());
    let mut archive = tar::Archive::new(gz);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() != b"backup/vol/cap" {
            continue;
        }
        let Some(pax) = e.pax_extensions().unwrap() else {
            return Default::default();
        };
        return pax
            .map(|r| r.unwrap())
            .filter_map(|r| {
                let key = r.key().unwrap().strip_prefix("SCHILY.xattr.")?.to_string();
                Some((key, r.value_bytes().to_vec()))
            })
            .collect();
    }
    panic!("backup/vol/cap is not in the export");
}

/// Issue 15, point 6 (import): an archive is not trusted. Without `--privileged`, import
/// clears setuid/setgid bits, skips device nodes (and hard links to them) and leaves out
/// security.* and trusted.* xattrs, counting each and saying so in one warning; with it,
/// everything is kept.
#[test]
fn import_drops_what_grants_rights_unless_privileged() {
    let env = Env::init();
    let archive = env.path("untrusted.tar.gz");
    untrusted_archive(&archive);
    let a = archive.to_str().unwrap();
    let time = "2025-01-01T00:00:00Z";

    let out = env.run(["import", "--time", time, a]);
    out.success()
        .stderr_has("2 device nodes")
        .stderr_has("--privileged");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one warning line: {}", out.stderr);

    let out = env.run(["--json", "import", "--time", time, a]);
    out.success();
    let v = out.json();
    assert_eq!(
        v["dropped"],
        serde_json::json!({"set_id_bits": 2, "device_nodes": 2, "xattrs": 2}),
        "{v}"
    );
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    let plain = v["snapshot_id"].as_str().unwrap().to_string();
    let ls = ls_modes(&env, &plain);
    assert_eq!(ls["vol"], ("dir".to_string(), 0o775), "{ls:?}");
    assert_eq!(ls["vol/suid"], ("file".to_string(), 0o755), "{ls:?}");
    assert!(
        !ls.contains_key("vol/null") && !ls.contains_key("vol/null-link"),
        "{ls:?}"
    );
    let x = exported_xattrs(&env, &plain);
    assert_eq!(x.keys().collect::<Vec<_>>(), ["user.note"], "{x:?}");
    // Not even a privileged restore brings back what the import left out.
    let target = env.path("restored");
    env.run([
        "restore",
        "-s",
        &plain,
        "-t",
        target.to_str().unwrap(),
        "--privileged",
    ])
    .success();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(target.join("vol/suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert!(std::fs::symlink_metadata(target.join("vol/null")).is_err());

    let out = env.run(["--json", "import", "--time", time, a, "--privileged"]);
    out.success();
    let v = out.json();
    assert_eq!(
        v["dropped"],
        serde_json::json!({"set_id_bits": 0, "device_nodes": 0, "xattrs": 0}),
        "{v}"
    );
    let full = v["snapshot_id"].as_str().unwrap().to_string();
    let ls = ls_modes(&env, &full);
    assert_eq!(ls["vol"], ("dir".to_string(), 0o2775), "{ls:?}");
    assert_eq!(ls["vol/suid"], ("file".to_string(), 0o4755), "{ls:?}");
    assert_eq!(ls["vol/null"].0, "chardev", "{ls:?}");
    assert_eq!(ls["vol/null-link"].0, "chardev", "{ls:?}");
    let x = exported_xattrs(&env, &full);
    assert_eq!(x["security.capability"], CAPABILITY, "{x:?}");
    assert_eq!(x["trusted.grant"], b"yes", "{x:?}");
    assert_eq!(x["user.note"], b"kept", "{x:?}");
    let out = env.run(["import", "--time", time, a, "--privileged"]);
    out.success();
    assert!(!out.stderr.contains("dropped"), "{}", out.stderr);
}

/// The repository's id, from its config.
fn repo_id(env: &Env) -> String {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.repo.join("config")).unwrap()).unwrap();
    config["id"].as_str().unwrap().to_string()
}

/// The names in `keys/`.
fn key_names(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Write `bytes` into `keys/` under `name` (default: their hash, as a real key file).
fn plant_key_file(env: &Env, bytes: &[u8], name: Option<String>) -> String {
    let name = name.unwrap_or_else(|| coffer::id::KeyId::of_bytes(bytes).to_hex());
    std::fs::write(env.repo.join("keys").join(&name), bytes).unwrap();
    name
}

/// A well-formed key file with `kdf` that no passphrase opens (its sealed key is noise),
/// dated in the far future (the old order tried the newest first), named by its hash, with a
/// salt drawn until `wanted(name)` holds.
fn decoy(kdf: coffer::crypto::KdfParams, seed: &mut u64, wanted: impl Fn(&str) -> bool) -> Vec<u8> {
    use coffer::format::keyfile::{KeyFile, SEALED_KEY_BYTES};
    loop {
        *seed += 1;
        let noise = common::pseudo_random(*seed, 32 + SEALED_KEY_BYTES);
        let bytes = KeyFile {
            kdf,
            salt: noise[..32].try_into().unwrap(),
            created: i64::MAX,
            host: "decoy".into(),
            sealed_master: noise[32..].to_vec(),
        }
        .encode();
        if wanted(&coffer::id::KeyId::of_bytes(&bytes).to_hex()) {
            return bytes;
        }
    }
}

/// 1,000 junk files in `keys/` beside the real key: 25 cheap well-formed decoys that sort
/// before it, 475 well-formed decoys at the costliest parameters an unnamed key may have
/// that sort after it, and 500 files that are not key files.
fn plant_thousand_junk_key_files(env: &Env, real: &str) {
    use coffer::crypto::KdfParams;
    let mut seed = 0;
    let cheap = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    for _ in 0..25 {
        plant_key_file(env, &decoy(cheap, &mut seed, |n| n < real), None);
    }
    for _ in 0..475 {
        let costly = decoy(KdfParams::LIMIT, &mut seed, |n| n > real);
        plant_key_file(env, &costly, None);
    }
    let well_formed = decoy(cheap, &mut seed, |_| true);
    for i in 0..500u64 {
        seed += 1;
        match i % 5 {
            // Noise, and a key file cut short: named by their hash, but do not decode.
            0 | 1 => plant_key_file(env, &common::pseudo_random(seed, 100 + i as usize), None),
            2 => {
                let whole = decoy(cheap, &mut seed, |_| true);
                plant_key_file(env, &whole[..whole.len() - 1], None)
            }
            // A well-formed key file under a name that is not its hash.
            3 => {
                let name = hex::encode(common::pseudo_random(seed, 32));
                plant_key_file(env, &well_formed, Some(name))
            }
            // Larger than any key file.
            _ => plant_key_file(env, &common::pseudo_random(seed, 5000), None),
        };
    }
    assert_eq!(key_names(env).len(), 1001);
}

/// 1,000 junk files in `keys/` do not slow down a host that opened the repository before: it
/// tries the key it used first. A host without that memory stops after 20 key derivations
/// with an error that says what to do, and `--key-id` / `COFFER_KEY_ID` open it. (Before, every
/// key file was read and tried, newest `created` first: the planted ones, at up to 1 GiB and
/// 32 passes each.)
#[test]
fn a_thousand_junk_key_files_do_not_stop_an_open() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::init();
    let real = key_names(&env).pop().unwrap();
    // `init` remembered its key, owner-only.
    let hint = env.cache.join(repo_id(&env)).join("last-key");
    assert_eq!(std::fs::read_to_string(&hint).unwrap().trim(), real);
    let mode = std::fs::metadata(&hint).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    plant_thousand_junk_key_files(&env, &real);

    let started = std::time::Instant::now();
    let out = env.run(["snapshots"]);
    out.success();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.lines().count() <= 1,
        "junk that was never read was reported:\n{}",
        out.stderr
    );

    // A host that never opened it: 20 derivations on the cheap decoys, then the error.
    let fresh = env.path("fresh-cache");
    let out = env.run(["--cache-dir", fresh.to_str().unwrap(), "snapshots"]);
    out.expect_code(common::exit::WRONG_PASSWORD)
        .stderr_has("wrong passphrase for the 20 of 1001 key files tried")
        .stderr_has("--key-id <id> or COFFER_KEY_ID")
        .stderr_has("remove the key files you do not know");
    assert!(!fresh.join(repo_id(&env)).join("last-key").exists());

    // Naming the key opens it (a prefix will do), and the host remembers it.
    let out = env.run([
        "--cache-dir",
        fresh.to_str().unwrap(),
        "--key-id",
        &real[..8],
        "snapshots",
    ]);
    out.success();
    env.run(["--cache-dir", fresh.to_str().unwrap(), "snapshots"])
        .success();
    let other = env.path("other-cache");
    let mut c = env.cmd();
    c.env("COFFER_KEY_ID", &real)
        .env("COFFER_CACHE_DIR", &other);
    env.run_cmd(c, ["snapshots"]).success();
    // A name that matches no key file says so.
    env.run(["--key-id", "00000000000000000000", "snapshots"])
        .failure()
        .stderr_has("no key file keys/00000000000000000000");
}

/// A key file above the Argon2id limit for keys nobody named is not tried: Argon2 does not
/// run (1 GiB and 32 passes take long), and the error names the file, its parameters and the
/// limit. Before, it was tried like any other.
#[test]
fn a_key_file_above_the_kdf_limit_is_refused_naming_the_limit() {
    use coffer::crypto::KdfParams;
    let env = Env::init();
    // The key file format's own bounds, which every older coffer accepted.
    let most = KdfParams {
        memory_kib: 1 << 20,
        iterations: 32,
        parallelism: 1,
    };
    let name = plant_key_file(&env, &decoy(most, &mut 0, |_| true), None);
    let fresh = env.path("fresh-cache");
    let started = std::time::Instant::now();
    let out = env.run_with_password(
        "not the passphrase",
        ["--cache-dir", fresh.to_str().unwrap(), "snapshots"],
    );
    out.expect_code(common::exit::WRONG_PASSWORD)
        .stderr_has(&format!(
            "key file {} was not tried: it asks for Argon2id with 1024 MiB and 32 passes, \
             above the limit of 256 MiB and 10 passes",
            &name[..8]
        ))
        .stderr_has(&format!("--key-id {}", &name[..8]));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}: Argon2 ran",
        started.elapsed()
    );
    // With the right passphrase the real key opens; the skipped file is no error.
    env.run(["--cache-dir", fresh.to_str().unwrap(), "snapshots"])
        .success();
}

/// New keys get 64 MiB and 3 passes by default, and the command line makes none cheaper than
/// OWASP's minimum (19 MiB, 2 passes) nor costlier than what coffer tries for a key it is not
/// told to use (256 MiB, 10 passes). Before, 1 MiB and 1 pass were accepted.
#[test]
fn new_keys_are_made_within_the_kdf_bounds() {
    use coffer::format::keyfile::KeyFile;
    let env = Env::init();
    let only = key_names(&env).pop().unwrap();
    let kf = KeyFile::decode(&std::fs::read(env.repo.join("keys").join(only)).unwrap()).unwrap();
    assert_eq!(
        (kf.kdf.memory_kib, kf.kdf.iterations, kf.kdf.parallelism),
        (64 * 1024, 3, 4)
    );
    for args in [
        ["--kdf-memory", "18"],
        ["--kdf-memory", "257"],
        ["--kdf-iterations", "1"],
        ["--kdf-iterations", "11"],
    ] {
        let mut c = env.cmd();
        c.env("COFFER_NEW_PASSWORD", "another passphrase");
        let out = env.run_cmd(c, [&["key", "add"][..], &args[..]].concat());
        out.failure().stderr_has("is not in");
        let fresh = Env::new();
        fresh.run([&["init"][..], &args[..]].concat()).failure();
        assert!(!fresh.repo.join("config").exists());
    }
    let mut c = env.cmd();
    c.env("COFFER_NEW_PASSWORD", "another passphrase");
    env.run_cmd(
        c,
        ["key", "add", "--kdf-memory", "19", "--kdf-iterations", "2"],
    )
    .success();
    assert_eq!(key_names(&env).len(), 2);
}
