//! The daemon configured by the old offen/docker-volume-backup variables alone, through the
//! real binary, without Docker: the manual trigger (`backup`) through the running daemon, the
//! nightly archive (gzip tar in the old layout, OpenPGP for `gpg -d`, excluded paths absent),
//! archive pruning by prefix and age, one snapshot of every source, `health --daemon`, and a
//! failure mail to a loopback SMTP sink. The Docker side (stopping labelled containers, the
//! image, the seeds' compose files) is in tests/seeds.rs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Env, coffer_bin};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The daemon process, killed with its group on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The old tool's variables of the first seed, pointed at this test's directories.
fn seed_env(env: &Env, c: &mut Command) {
    c.env_clear()
        .current_dir(env.dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", common::PASSWORD)
        .env("COFFER_CACHE_DIR", &env.cache)
        .env("COFFER_HOST", "claude-backup")
        .env("BACKUP_CRON_EXPRESSION", "0 2 * * *")
        .env("BACKUP_FILENAME", "claude-backup-%Y%m%d-%H%M%S.tar.gz")
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "claude-backup-")
        .env("BACKUP_ARCHIVE", env.path("backups"))
        .env("BACKUP_COMPRESSION", "gz")
        .env("BACKUP_COMPRESSION_LEVEL", "6")
        .env("BACKUP_SOURCES", env.path("backup"))
        .env(
            "BACKUP_EXCLUDE_REGEXP",
            ".*\\.log$|.*\\.cache$|node_modules",
        );
}

fn volumes(env: &Env) {
    let b = env.path("backup");
    for d in [
        "workspace/src",
        "workspace/node_modules/x",
        "claude-config",
        "sessions",
    ] {
        std::fs::create_dir_all(b.join(d)).unwrap();
    }
    std::fs::write(b.join("workspace/src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(b.join("workspace/build.log"), "noise\n").unwrap();
    std::fs::write(b.join("workspace/node_modules/x/index.js"), "x\n").unwrap();
    std::fs::write(b.join("workspace/.cache"), "cache\n").unwrap();
    std::fs::write(b.join("claude-config/settings.json"), "{}\n").unwrap();
    std::fs::write(b.join("sessions/user-1.json"), "{\"id\":1}\n").unwrap();
    std::fs::create_dir_all(env.path("backups")).unwrap();
}

fn start_daemon(env: &Env, extra: &[(&str, &str)]) -> Daemon {
    let log = env.path("daemon.log");
    let mut c = Command::new(coffer_bin());
    seed_env(env, &mut c);
    for (k, v) in extra {
        c.env(k, v);
    }
    c.arg("daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0);
    let d = Daemon {
        child: c.spawn().unwrap(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("Scheduled backup task registered") {
        assert!(
            Instant::now() < deadline,
            "the daemon did not register its schedule:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// `backup` as the old image had it: the coffer binary under that name.
fn trigger(env: &Env, extra: &[(&str, &str)]) -> std::process::Output {
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("backup");
    if !link.exists() {
        std::os::unix::fs::symlink(coffer_bin(), &link).unwrap();
    }
    let mut c = Command::new(&link);
    seed_env(env, &mut c);
    for (k, v) in extra {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

fn archives(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn tar_list(archive: &Path) -> Vec<String> {
    let o = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "tar -tzf {}", archive.display());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_manual_trigger_runs_the_daemons_job_and_writes_the_old_archive() {
    let env = Env::init();
    volumes(&env);
    // An archive of ten days ago goes, one of today stays, another tool's file stays.
    let backups = env.path("backups");
    let old = backups.join("claude-backup-20260201-020000.tar.gz");
    std::fs::write(&old, "old").unwrap();
    filetime::set_file_mtime(
        &old,
        filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - 10 * 86_400, 0),
    )
    .unwrap();
    std::fs::write(backups.join("claude-backup-20260210-020000.tar.gz"), "new").unwrap();
    std::fs::write(backups.join("pre-restore-backup-20260101.tar.gz"), "mine").unwrap();
    let daemon = start_daemon(&env, &[("WEBDAV_URL", "https://dav.example")]);
    // Unsupported variables of the old tool are named at start.
    assert!(
        daemon
            .log()
            .contains("not supported by coffer, ignored: WEBDAV_URL"),
        "{}",
        daemon.log()
    );

    let out = trigger(&env, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", daemon.log());
    // The caller sees the run, and so does the daemon's log (`docker logs`).
    assert!(stdout.contains("Backup completed successfully"), "{stdout}");
    assert!(stdout.contains("step=\"archive\""), "{stdout}");
    assert!(daemon.log().contains("manual backup requested"));
    assert!(daemon.log().contains("Backup completed successfully"));

    let names = archives(&backups);
    let new: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("claude-backup-2026") && !n.contains("0210-0200"))
        .collect();
    assert_eq!(new.len(), 1, "{names:?}");
    assert!(!names.contains(&"claude-backup-20260201-020000.tar.gz".to_string()));
    assert!(names.contains(&"claude-backup-20260210-020000.tar.gz".to_string()));
    assert!(names.contains(&"pre-restore-backup-20260101.tar.gz".to_string()));

    let listed = tar_list(&backups.join(new[0]));
    for want in [
        "backup/workspace/src/main.rs",
        "backup/claude-config/settings.json",
        "backup/sessions/user-1.json",
    ] {
        assert!(listed.iter().any(|l| l == want), "{want} in {listed:?}");
    }
    for gone in ["build.log", "node_modules", ".cache"] {
        assert!(
            !listed.iter().any(|l| l.contains(gone)),
            "{gone} excluded: {listed:?}"
        );
    }
    // The old restore scripts extract with busybox tar (alpine): it reads the archive too.
    if std::path::Path::new("/bin/busybox").exists() {
        let b = Command::new("/bin/busybox")
            .args(["tar", "-tzf"])
            .arg(backups.join(new[0]))
            .output()
            .unwrap();
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    }
    // The old restore: tar xzf ... backup/workspace/
    let restored = env.path("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let x = Command::new("tar")
        .arg("xzf")
        .arg(backups.join(new[0]))
        .arg("-C")
        .arg(&restored)
        .arg("backup/workspace/")
        .status()
        .unwrap();
    assert!(x.success());
    assert_eq!(
        std::fs::read_to_string(restored.join("backup/workspace/src/main.rs")).unwrap(),
        "fn main() {}\n"
    );

    // One snapshot holds every source, under the stable host.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let text = snaps[0].to_string();
    for s in ["workspace", "claude-config", "sessions", "claude-backup"] {
        assert!(text.contains(s), "{s} in {text}");
    }

    // The image's health check: healthy while the daemon runs and the run succeeded.
    let mut h = env.cmd();
    h.args(["health", "--daemon"]);
    let h = h.output().unwrap();
    assert_eq!(
        h.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&h.stderr)
    );
    drop(daemon);
    let mut h = env.cmd();
    h.args(["health", "--daemon"]);
    let h = h.output().unwrap();
    assert_eq!(h.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&h.stderr).contains("no coffer daemon answers"));
}

#[test]
fn gpg_passphrase_encrypts_the_archive_for_gpg() {
    if Command::new("gpg").arg("--version").output().is_err() {
        assert!(!in_ci(), "gpg is missing under CI=true");
        eprintln!("skipping: gpg is missing");
        return;
    }
    let env = Env::init();
    volumes(&env);
    // Without a daemon, `backup` runs the job itself.
    let out = trigger(&env, &[("GPG_PASSPHRASE", "old-secret")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = archives(&env.path("backups"));
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".tar.gz.gpg"), "{names:?}");
    let home = env.path("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    let dec = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase"])
        .arg("old-secret")
        .arg("-o")
        .arg(env.path("plain.tar.gz"))
        .arg("-d")
        .arg(env.path("backups").join(&names[0]))
        .output()
        .unwrap();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "gpg-agent"])
        .status();
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    let listed = tar_list(&env.path("plain.tar.gz"));
    assert!(listed.iter().any(|l| l == "backup/sessions/user-1.json"));
}

/// A loopback SMTP sink: accepts one message and hands over its envelope and data.
fn smtp_sink() -> (u16, Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in l.incoming().take(4) {
            let Ok(mut s) = conn else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut seen = String::new();
            let _ = s.write_all(b"220 sink ESMTP\r\n");
            let mut in_data = false;
            for _ in 0..10_000 {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                seen.push_str(&line);
                let reply: &[u8] = if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        b"250 queued\r\n"
                    } else {
                        continue;
                    }
                } else {
                    let cmd = line.to_ascii_uppercase();
                    if cmd.starts_with("EHLO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if cmd.starts_with("DATA") {
                        in_data = true;
                        b"354 go on\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = s.write_all(b"221 bye\r\n");
                        break;
                    } else {
                        b"250 ok\r\n"
                    }
                };
                let _ = s.write_all(reply);
            }
            if seen.contains("DATA") && tx.send(seen).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

#[test]
fn a_failed_run_mails_the_old_recipient() {
    let env = Env::init();
    volumes(&env);
    let (port, rx) = smtp_sink();
    let port = port.to_string();
    // The archive directory is missing: the archive step fails, and the run with it.
    std::fs::remove_dir_all(env.path("backups")).unwrap();
    let out = trigger(
        &env,
        &[
            ("EMAIL_NOTIFICATION_RECIPIENT", "ops@example.com"),
            ("EMAIL_SMTP_HOST", "127.0.0.1"),
            ("EMAIL_SMTP_PORT", &port),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Backup failed:"), "{stderr}");
    let mail = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the failure mail");
    assert!(mail.contains("RCPT TO:<ops@example.com>"), "{mail}");
    assert!(mail.contains("failed"), "{mail}");
    assert!(mail.contains("archive directory"), "{mail}");
}
