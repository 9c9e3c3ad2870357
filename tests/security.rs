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
