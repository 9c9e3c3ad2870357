//! Restore never writes outside its target, even when the target already holds symlinks that
//! point out (left by an earlier restore or planted by someone else).

mod common;

use std::fs;

use common::Env;

#[test]
fn restore_path_does_not_follow_a_symlink_in_the_target() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/file.txt"), "inside\n").unwrap();
    env.backup_json(&[&src]);

    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = env.path("target");
    fs::create_dir_all(target.join("src")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("src/a")).unwrap();

    // An ancestor of the restored path is never created through a symlink: refused.
    for path in ["src/a/b/", "src/a/b/file.txt"] {
        let out = env.run([
            "restore",
            "-s",
            "latest",
            "-t",
            target.to_str().unwrap(),
            "--path",
            path,
            "--overwrite",
        ]);
        assert_ne!(
            out.code, 0,
            "restore --path {path} succeeded through a symlink"
        );
        assert!(out.stderr.contains("symlink"), "{path}: {}", out.stderr);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "restore --path {path} wrote outside the target"
        );
    }
    // Inside the restored tree, the symlink where the snapshot has a directory is replaced
    // by that directory (restore works in place), never followed.
    let out = env.run([
        "restore",
        "-s",
        "latest",
        "-t",
        target.to_str().unwrap(),
        "--path",
        "src/",
        "--overwrite",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside the target"
    );
    let a = fs::symlink_metadata(target.join("src/a")).unwrap();
    assert!(a.is_dir(), "the symlink was not replaced by the directory");
    assert_eq!(
        fs::read_to_string(target.join("src/a/b/file.txt")).unwrap(),
        "inside\n"
    );
}
