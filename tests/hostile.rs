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

    for path in ["src/a/b/", "src/a/b/file.txt", "src/"] {
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
}
