//! Resource limits: a restore into a file system that fills up, an export to a device that is
//! full, a source whose directories vanish while it is read. Each ends with success or one
//! clear error and a non-zero exit, never a panic, and leaves a repository that checks and
//! restores.
//!
//! The full file system is a 2 MiB tmpfs mounted for the test: that needs root (and the
//! mount capability). Under `CI=true` a failed mount is a failure; elsewhere the test says
//! why it skips.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Env, assert_no_panic, assert_trees_equal, pseudo_random};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("create parent");
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A tmpfs of `size` mounted at a directory, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        fs::create_dir_all(at).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(at.to_path_buf())),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
                assert!(!ci(), "cannot mount a small tmpfs under CI=true: {why}");
                eprintln!("skipping: cannot mount a small tmpfs ({why})");
                None
            }
            Err(e) => {
                assert!(!ci(), "cannot run mount under CI=true: {e}");
                eprintln!("skipping: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `coffer restore --snapshot latest --target TARGET`.
fn restore_latest(env: &Env, target: &Path) -> common::Out {
    env.run([
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
}

#[test]
fn restore_into_a_full_file_system_fails_clearly() {
    let env = Env::init();
    let src = env.path("src");
    // 6 MiB of incompressible data in three files, and small files: three times what fits.
    for i in 0..3 {
        write(
            &src.join(format!("big{i}.bin")),
            pseudo_random(40 + i, 2 << 20),
        );
    }
    for i in 0..20 {
        write(&src.join(format!("small/f{i}.txt")), format!("small {i}\n"));
    }
    env.backup_json(&[src.to_str().unwrap()]);

    let Some(mount) = Mount::tmpfs(&env.path("small-fs"), "2m") else {
        return;
    };
    let target = mount.0.join("out");
    let out = restore_latest(&env, &target);
    assert_no_panic(&out);
    assert_ne!(
        out.code, 0,
        "a restore that could not write everything succeeded"
    );
    assert!(
        out.stderr.contains("No space left on device"),
        "the error does not say the disk is full:\n{}",
        out.stderr
    );
    // One error, not one per file that no longer fits.
    let lines = out.stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 2, "more than a short error:\n{}", out.stderr);

    // Nothing happened to the repository: it checks, and a restore with room works.
    env.run(["check", "--read-data"]).success();
    let roomy = env.path("roomy");
    restore_latest(&env, &roomy).success();
    assert_trees_equal(&src, &roomy.join("src"));
}

#[test]
fn export_to_a_full_device_fails_with_one_line() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("data.bin"), pseudo_random(7, 3 << 20));
    env.backup_json(&[src.to_str().unwrap()]);
    assert!(Path::new("/dev/full").exists(), "/dev/full is missing");
    let bin = common::coffer_bin();
    let out = env.run_cmd(
        env.wrapped("sh"),
        [
            "-c".as_ref(),
            "exec \"$0\" export --snapshot latest --output - >/dev/full".as_ref(),
            bin.as_os_str(),
        ],
    );
    assert_no_panic(&out);
    assert_ne!(out.code, 0, "an export to a full device succeeded");
    assert!(
        out.stderr.contains("No space left on device"),
        "the error does not say the device is full:\n{}",
        out.stderr
    );
    let lines = out.stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 2, "more than a short error:\n{}", out.stderr);
}

#[test]
fn directories_vanishing_during_a_backup_give_a_valid_snapshot() {
    let env = Env::init();
    let src = env.path("src");
    for d in 0..150 {
        for f in 0..20 {
            write(
                &src.join(format!("d{d:03}/f{f:02}.txt")),
                format!("dir {d} file {f}\n").repeat(50),
            );
        }
    }
    let started = AtomicBool::new(false);
    let removed = AtomicUsize::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            // Remove directories from the end while the walk goes from the start.
            for d in (0..150).rev() {
                if fs::remove_dir_all(src.join(format!("d{d:03}"))).is_ok() {
                    removed.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        started.store(true, Ordering::SeqCst);
        env.run(["backup", "--json", src.to_str().unwrap()])
    });
    assert_no_panic(&out);
    assert!(
        out.code == 0 || out.code == common::exit::PARTIAL,
        "backup with vanishing directories exited {}:\n{}",
        out.code,
        out.stderr
    );
    assert_eq!(removed.load(Ordering::SeqCst), 150);
    // Whatever it saw is a valid snapshot, and the next backup of what is left works.
    env.run(["check", "--read-data"]).success();
    assert_eq!(env.snapshots().len(), 1);
    fs::create_dir_all(src.join("d000")).unwrap();
    write(&src.join("d000/again.txt"), "back\n");
    env.backup_json(&[src.to_str().unwrap()]);
    let restored = env.path("restored");
    restore_latest(&env, &restored).success();
    assert_trees_equal(&src, &restored.join("src"));
}

#[test]
fn a_20_gib_sparse_file_backs_up_small_and_restores_sparse() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    const SIZE: u64 = 20 << 30;
    const AT: u64 = 10 << 30;
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let huge = src.join("huge.img");
    {
        let mut f = fs::File::create(&huge).unwrap();
        f.set_len(SIZE).unwrap();
        f.seek(SeekFrom::Start(AT)).unwrap();
        f.write_all(b"data in the middle").unwrap();
    }
    if fs::metadata(&huge).unwrap().blocks() * 512 > 64 << 20 {
        assert!(
            !ci(),
            "the test directory's file system does not keep files sparse"
        );
        eprintln!("skipping: the temporary directory does not keep files sparse");
        return;
    }
    let before = common::dir_size(&env.repo);
    let v = env.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(v["bytes_read"], SIZE, "{v}");
    // 20 GiB of zeros are one chunk stored once.
    let grown = common::dir_size(&env.repo) - before;
    assert!(grown < 1 << 20, "the repository grew by {grown} bytes");

    let restored = env.path("restored");
    restore_latest(&env, &restored).success();
    let out = restored.join("src/huge.img");
    let m = fs::metadata(&out).unwrap();
    assert_eq!(m.len(), SIZE);
    assert!(
        m.blocks() * 512 <= 16 << 20,
        "the restored file is not sparse: {} bytes allocated",
        m.blocks() * 512
    );
    let mut f = fs::File::open(&out).unwrap();
    f.seek(SeekFrom::Start(AT - 4)).unwrap();
    let mut got = [0u8; 22];
    std::io::Read::read_exact(&mut f, &mut got).unwrap();
    assert_eq!(&got, b"\0\0\0\0data in the middle");
}

/// A backup, and a sync into a local repository, drop the packs they wrote from the page cache
/// once they are on disk (fadvise after their fsync): a nightly backup does not push a
/// database's pages out of memory with packs nobody reads soon. `fincore` (util-linux) tells
/// which pages of a file are cached.
#[test]
fn packs_written_by_a_backup_or_a_sync_leave_the_page_cache() {
    let env = Env::init();
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(env.dir.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if fs_type == "tmpfs" {
        // A tmpfs file's pages are its storage: they cannot leave memory.
        assert!(!ci(), "the test directory is on tmpfs under CI=true");
        eprintln!("skipping: the test directory is on tmpfs");
        return;
    }
    let packs_of = |repo: &Path| -> Vec<PathBuf> {
        common::list_tree(&repo.join("packs"))
            .into_iter()
            .map(|r| repo.join("packs").join(r))
            .filter(|p| p.is_file())
            .collect()
    };
    let cached = |files: &[PathBuf]| -> (u64, u64) {
        let out = Command::new("fincore")
            .args(["--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"])
            .args(files)
            .output();
        let out = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            other => panic!("fincore (util-linux) failed: {other:?}"),
        };
        out.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|n| n.parse::<u64>().ok());
                Some((f.next()??, f.next()??))
            })
            .fold((0, 0), |(r, s), (res, size)| (r + res, s + size))
    };
    let assert_not_cached = |packs: &[PathBuf], after: &str| {
        assert!(!packs.is_empty(), "no pack after the {after}");
        let (res, size) = cached(packs);
        assert!(size >= 24 << 20, "the packs hold {size} bytes");
        assert!(
            res <= size / 8,
            "{res} of the packs' {size} bytes are still in the page cache after the {after}"
        );
    };
    // The same question about a file just written: fincore works and sees cached pages.
    let control = env.path("control.bin");
    write(&control, pseudo_random(8, 4 << 20));
    let (res, size) = cached(std::slice::from_ref(&control));
    assert!(
        size == 4 << 20 && res >= 2 << 20,
        "a file just written is not seen in the page cache: {res} of {size} bytes"
    );

    let src = env.path("src");
    write(&src.join("media.bin"), pseudo_random(7, 24 << 20));
    env.backup_json(&[src.to_str().unwrap()]);
    assert_not_cached(&packs_of(&env.repo), "backup");

    // A sync reads those packs (into the cache) and writes them into the mirror (not).
    let mirror = env.path("mirror");
    let mirror_arg = mirror.to_str().unwrap();
    let from = env.repo.to_str().unwrap();
    env.run(["init", "--repo", mirror_arg, "--from", from])
        .success();
    env.run(["sync", "--to", mirror_arg]).success();
    assert_not_cached(&packs_of(&mirror), "sync");
}
