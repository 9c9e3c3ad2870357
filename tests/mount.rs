//! `coffer mount` against the real binary and a real FUSE mount: a backed-up directory read
//! back byte for byte through the mount, the mount's layout, a clean unmount on SIGTERM, and
//! the mount points it refuses.
//!
//! FUSE needs `/dev/fuse`: where it cannot be opened the tests that mount say so and pass,
//! except under `CI=true`, where they fail (CI must run them).

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Env, coffer_bin, list_tree, pseudo_random};

/// How long a mount may take to appear, and a process to end after SIGTERM.
const WAIT: Duration = Duration::from_secs(60);

/// True when FUSE can be used here; false (with a message) when it cannot, outside CI.
fn fuse_available(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: /dev/fuse cannot be opened ({e}), and CI=true: FUSE must work in CI")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: /dev/fuse cannot be opened ({e}); it needs FUSE");
            false
        }
    }
}

/// True when `dir` is a mount point of this process's namespace.
fn is_mounted(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == dir)
}

/// A running `coffer mount`; on drop (after a failed test) it is stopped, and its mount
/// point unmounted if it is still mounted.
struct Mount {
    child: Option<Child>,
    dir: PathBuf,
}

impl Mount {
    /// Start `coffer mount DIR` and wait until the mount shows `snapshots/`.
    fn start(env: &Env, dir: &Path) -> Self {
        let child = std::process::Command::new(coffer_bin())
            .env_clear()
            .current_dir(env.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &env.home)
            .env("COFFER_REPO", &env.repo)
            .env("COFFER_PASSWORD", common::PASSWORD)
            .env("COFFER_CACHE_DIR", &env.cache)
            .arg("mount")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coffer mount");
        let mut m = Mount {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        while !dir.join("snapshots").is_dir() {
            if let Some(status) = m.child().try_wait().expect("try_wait") {
                let out = m.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "coffer mount exited with {status} before mounting: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                start.elapsed() < WAIT,
                "no mount at {} after {WAIT:?}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Send `signal` and wait for the process to end: its exit code, its stderr, and whether
    /// the mount point was still mounted once it had ended.
    fn stop(&mut self, signal: rustix::process::Signal) -> (i32, String, bool) {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, signal).expect("signal coffer mount");
        let start = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if start.elapsed() > WAIT {
                let _ = child.kill();
                panic!("coffer mount still running {WAIT:?} after {signal:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (
            out.status.code().unwrap_or(-1),
            stderr,
            is_mounted(&self.dir),
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.dir) {
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create parent");
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A source tree: nested directories, a file of several chunks, an empty file, a symlink.
fn make_source(src: &Path) -> Vec<u8> {
    let big = pseudo_random(7, 6 * 1024 * 1024 + 12_345);
    write(&src.join("big.bin"), &big);
    write(&src.join("empty"), b"");
    write(&src.join("a/b/c/deep.txt"), "deep down\n");
    write(&src.join("a/notes.md"), "# notes\n");
    std::fs::set_permissions(
        src.join("a/notes.md"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("a/b/c/deep.txt", src.join("link")).expect("symlink");
    big
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every entry below `orig` is in `mounted` with the same kind, content, link target, mode,
/// size and mtime.
fn assert_same_tree(orig: &Path, mounted: &Path) {
    let want = list_tree(orig);
    assert_eq!(
        list_tree(mounted),
        want,
        "the listing of {}",
        mounted.display()
    );
    for rel in want {
        let (a, b) = (orig.join(&rel), mounted.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&a).unwrap(),
            std::fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(ma.mode(), mb.mode(), "mode of {}", rel.display());
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "{}",
            rel.display()
        );
        if ma.is_dir() {
            continue;
        }
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
        assert_eq!(ma.size(), mb.size(), "size of {}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap()
            );
        } else {
            let got = std::fs::read(&b).unwrap_or_else(|e| panic!("read {}: {e}", b.display()));
            assert!(
                got == std::fs::read(&a).unwrap(),
                "{} differs",
                rel.display()
            );
        }
    }
}

#[test]
fn mount_serves_snapshots_byte_for_byte_and_unmounts_on_sigterm() {
    if !fuse_available("mount_serves_snapshots_byte_for_byte_and_unmounts_on_sigterm") {
        return;
    }
    let env = Env::init();
    let src = env.path("src");
    let big = make_source(&src);
    env.run(["backup", "--tag", "nightly", s(&src)]).success();
    write(&src.join("a/added.txt"), "in the second snapshot only");
    env.run(["backup", s(&src)]).success();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    let host = snaps[0]["host"].as_str().expect("host").to_string();
    let first_id = snaps[0]["id"].as_str().expect("id").to_string();

    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut m = Mount::start(&env, &mnt);

    assert_eq!(names(&mnt), ["hosts", "ids", "latest", "snapshots", "tags"]);
    let times = names(&mnt.join("snapshots"));
    assert_eq!(times.len(), 2, "{times:?}");
    for t in &times {
        assert!(
            t.starts_with("20") && t.contains('T') && t.contains('Z'),
            "{t}"
        );
    }
    // `latest` points at the second snapshot (checked by its content below).
    let target = std::fs::read_link(mnt.join("latest")).unwrap();
    let newest = target.strip_prefix("snapshots").expect("under snapshots/");
    assert!(times.iter().any(|t| Path::new(t) == newest), "{target:?}");
    assert_eq!(names(&mnt.join("hosts")), std::slice::from_ref(&host));
    assert_eq!(names(&mnt.join("hosts").join(&host)).len(), 2);
    assert_eq!(names(&mnt.join("tags")), ["nightly"]);
    let tagged = names(&mnt.join("tags/nightly"));
    assert_eq!(tagged.len(), 1);
    let ids = names(&mnt.join("ids"));
    assert!(ids.contains(&first_id[..8].to_string()), "{ids:?}");

    // The newest snapshot is the source as it is now, through `latest`.
    assert_eq!(names(&mnt.join("latest")), ["src"]);
    assert_same_tree(&src, &mnt.join("latest/src"));
    let cmp = std::process::Command::new("cmp")
        .arg(src.join("big.bin"))
        .arg(mnt.join("latest/src/big.bin"))
        .status();
    if let Ok(status) = cmp {
        assert!(status.success(), "cmp big.bin");
    }

    // The first snapshot, by full id and by tag, lacks the file added later.
    let by_id = mnt.join("ids").join(&first_id).join("src");
    assert!(by_id.join("a/notes.md").is_file());
    assert!(!by_id.join("a/added.txt").exists());
    let by_tag = mnt.join("tags/nightly").join(&tagged[0]).join("src");
    assert_eq!(std::fs::read(by_tag.join("big.bin")).unwrap(), big);

    // A range from the middle of the big file, across a chunk boundary or two.
    let mut f = std::fs::File::open(by_id.join("big.bin")).unwrap();
    let (at, len) = (3 * 1024 * 1024 + 4321, 1_500_000);
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut got = vec![0u8; len];
    f.read_exact(&mut got).unwrap();
    assert!(got == big[at..at + len], "the range differs");
    drop(f);

    // Read-only.
    assert!(std::fs::write(mnt.join("latest/src/new"), "x").is_err());
    assert!(std::fs::remove_file(mnt.join("latest/src/empty")).is_err());

    let (code, stderr, mounted) = m.stop(rustix::process::Signal::TERM);
    assert_eq!(code, 0, "exit code after SIGTERM; stderr: {stderr}");
    assert!(!mounted, "still mounted after SIGTERM; stderr: {stderr}");
    assert!(names(&mnt).is_empty(), "the mount point is empty again");
}

/// One `error: ...` line on stderr, containing `needle`, and a non-zero exit.
#[track_caller]
fn assert_refused(out: &common::Out, needle: &str) {
    out.failure();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", out.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{lines:?}"
    );
}

#[test]
fn mount_refuses_a_missing_file_or_non_empty_mount_point() {
    let env = Env::init();
    let out = env.run(["mount", s(&env.path("none"))]);
    assert_refused(&out, "does not exist");
    write(&env.path("full/file"), "x");
    let out = env.run(["mount", s(&env.path("full"))]);
    assert_refused(&out, "is not empty");
    let out = env.run(["mount", s(&env.path("full/file"))]);
    assert_refused(&out, "is not a directory");
}

#[test]
fn mount_refuses_a_busy_mount_point_and_goes_when_unmounted_or_killed() {
    if !fuse_available("mount_refuses_a_busy_mount_point_and_goes_when_unmounted_or_killed") {
        return;
    }
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("f"), "x");
    env.run(["backup", s(&src)]).success();
    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut m = Mount::start(&env, &mnt);
    let out = env.run(["mount", s(&mnt)]);
    assert_refused(&out, "is busy");

    // `umount` from outside ends the process, with exit 0.
    let status = std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .expect("umount");
    assert!(status.success());
    let start = Instant::now();
    while m.child().try_wait().unwrap().is_none() {
        assert!(start.elapsed() < WAIT, "still running after umount");
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = m.child().wait().unwrap().code();
    assert_eq!(code, Some(0));
    assert!(!is_mounted(&mnt));
    drop(m);

    // Ctrl-C unmounts as SIGTERM does.
    let mut m = Mount::start(&env, &mnt);
    let (code, stderr, mounted) = m.stop(rustix::process::Signal::INT);
    assert_eq!(
        (code, mounted),
        (0, false),
        "after SIGINT; stderr: {stderr}"
    );
    drop(m);

    // Killed outright: as root FUSE's auto_unmount takes the mount away all the same.
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let mut m = Mount::start(&env, &mnt);
    m.stop(rustix::process::Signal::KILL);
    let start = Instant::now();
    while is_mounted(&mnt) {
        assert!(start.elapsed() < WAIT, "still mounted after SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
}
