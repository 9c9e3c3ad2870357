//! End-to-end tests of our users' two seeds (/work/shared/seeds/000_*, 001_*): their
//! offen/docker-volume-backup compose services, run by docker-compose with coffer's image swapped
//! in and their environment kept, and their Test Plans run as they are written.
//!
//! * `seed_000_claude_remote_runner_test_plan`: seed 000's Test Plan 1-6 with its own scripts
//!   (tests/seeds/claude-remote-runner/: restore-backup.sh, restore-workspace-only.sh,
//!   scripts/check-backups.sh, each a verbatim copy except the adaptations listed at its top),
//!   then a `--force-recreate` with an every-minute schedule to see a scheduled run, the health
//!   check, and the snapshot host across re-creations.
//! * `seed_000_encryption_and_failure_mail`: the seed's optional GPG_PASSPHRASE and e-mail
//!   notifications switched on; a failing run must mail an SMTP sink (in this file, on
//!   127.0.0.1) and turn the container unhealthy.
//! * `seed_001_agent_os_s3`: seed 001's `volume-backup` service (reconstructed from its summary)
//!   against the local S3 server (moto), `docker exec ... backup`, the labelled databases
//!   stopped briefly, and a restore from the bucket.
//!
//! Every check is tagged with the point of the drop-in contract it tests (1 daemon + logs,
//! 2 manual trigger, 3 environment variables, 4 one snapshot per run / stopping / host,
//! 5 the tar.gz archive + gpg + pruning, 6 S3, 7 e-mail, 8 health check). A test runs all the
//! checks it can, prints a PASS/FAIL table, and fails at the end when any check failed (or
//! earlier, when a later step cannot run at all).
//!
//! Where the seeds themselves are wrong (they would fail with the old tool too), the test does
//! what the seed means and says so:
//! * restore-backup.sh extracts `/backup/$(basename $BACKUP_FILE)` with `cd /`: wrong file and
//!   wrong place (see the copy's header, fix B1).
//! * Test Plan 4 restores `backups/claude-backup-$(date +%Y%m%d)*.tar.gz`: the glob expands to
//!   every archive of the day and the script takes the first, the one Test Plan 2 made *before*
//!   test-restore.txt existed. The test passes the archive it just made.
//! * Test Plan 5 creates its "old" backups with plain `touch` (mtime now) and expects 7 to
//!   remain. The old tool prunes by mtime (BACKUP_RETENTION_DAYS), so it deletes none of them;
//!   the test checks exactly that, and that files touched 10 days ago are deleted.
//! * Seed 000's suggested `BACKUP_EXCLUDE_REGEXP: ".*\\.log$|..."` is rejected by docker-compose
//!   ("Invalid interpolation format"); the fixture writes `$$`.
//! * Seed 001 expects `backup-<timestamp>.tar.gz` objects in the bucket; with coffer the bucket
//!   holds the repository (contract 6), and without BACKUP_FILENAME no tar is written. Its bucket
//!   is created beforehand, as its Deployment Checklist does (the old tool never creates one);
//!   its example `BACKUP_S3_ENDPOINT=https://...` carries a scheme the old tool's AWS_ENDPOINT
//!   does not accept, so the fixture takes host:port plus AWS_ENDPOINT_PROTO.
//!
//! Requirements: root, a Docker engine, docker-compose (1.29), Debian's busybox-static
//! (/bin/busybox, for `coffer-test/busybox:latest`), gpg, curl, and moto
//! (tests/common/s3_server.rs).
//! Outside `CI=true` a missing one skips the test with the reason; under `CI=true` it fails.
//! Each test uses its own compose project (`cseed<kind>-<pid>-<n>`), temporary directory and
//! container names; a guard runs `docker-compose -p <project> down -v` and removes whatever is
//! left with the project's label or name prefix, also when the test fails. The images
//! `coffer-test/busybox:latest` and `coffer-test/coffer:latest` (rebuilt from this build's
//! binary with docs/docker/build-image.sh) are kept.
//!
//!     cargo test --release --test seeds -- --nocapture
//!
//! `COFFER_SEEDS_IMAGE=<image>` skips the image build and runs the stacks with that image instead
//! (the fixtures say `${COFFER_IMAGE:-coffer-test/coffer:latest}`), to debug the test itself.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

const BUSYBOX_IMAGE: &str = "coffer-test/busybox:latest";
const COFFER_IMAGE: &str = "coffer-test/coffer:latest";
const BUSYBOX: &str = "/bin/busybox";
/// The seed's example value of BACKUP_ENCRYPTION_KEY (its "3. Environment Variables").
const GPG_KEY: &str = "your-strong-passphrase-here-min-20-chars";
const COMPLETED: &str = "Backup completed successfully";
const FAILED: &str = "Backup failed";
const REGISTERED: &str = "Scheduled backup task registered";

// ---------------------------------------------------------------------------------------------
// Prerequisites

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (outside CI) or fail (under CI=true) with a reason.
fn unavailable(reason: String) -> Option<()> {
    if in_ci() {
        panic!("the seed tests cannot run under CI=true: {reason}");
    }
    eprintln!("skipping seed test: {reason}");
    None
}

fn tool_works(argv: &[&str]) -> Result<(), String> {
    match Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("`{}` cannot run: {e}", argv[0])),
    }
}

fn moto_available() -> Result<(), String> {
    if std::env::var("COFFER_TEST_S3_ENDPOINT").is_ok() {
        return Ok(());
    }
    let venv = std::env::var("COFFER_S3_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/coffer/s3-venv",
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())
        )
    });
    for py in ["python3".to_string(), format!("{venv}/bin/python")] {
        if tool_works(&[&py, "-c", "import moto.server, flask, flask_cors, boto3"]).is_ok() {
            return Ok(());
        }
    }
    Err(
        "moto is not installed (python3 -m pip install 'moto[server]'), and \
         COFFER_TEST_S3_ENDPOINT is not set"
            .into(),
    )
}

/// Build `coffer-test/busybox:latest` if it is missing (the recipe of tests/docker.rs).
fn ensure_busybox_image() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if tool_works(&["docker", "image", "inspect", BUSYBOX_IMAGE]).is_ok() {
                return Ok(());
            }
            if !Path::new(BUSYBOX).exists() {
                return Err(format!(
                    "{BUSYBOX} is missing: apt-get install -y busybox-static"
                ));
            }
            let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
            std::fs::copy(BUSYBOX, ctx.path().join("busybox")).map_err(|e| e.to_string())?;
            std::fs::write(
                ctx.path().join("Dockerfile"),
                "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/data\", \"/etc\"]\n\
                 RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                 ENV PATH=/bin\nCMD [\"/bin/sh\"]\n",
            )
            .map_err(|e| e.to_string())?;
            let o = Command::new("docker")
                .args(["build", "-q", "-t", BUSYBOX_IMAGE])
                .arg(ctx.path())
                .env("DOCKER_BUILDKIT", "0")
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!(
                    "building {BUSYBOX_IMAGE}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Ok(())
        })
        .clone()
}

/// Build `coffer-test/coffer:latest` from the binary of this build, once per test run. A
/// failure is the code under test's, so it panics rather than skips.
fn ensure_coffer_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        if let Ok(image) = std::env::var("COFFER_SEEDS_IMAGE") {
            // Debugging aid: run the seeds against an image built by hand.
            eprintln!("COFFER_SEEDS_IMAGE: using the existing image {image}, not building one");
            return tool_works(&["docker", "image", "inspect", &image]);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin = env!("CARGO_BIN_EXE_coffer");
        let previous = inspect(COFFER_IMAGE, "{{.Id}}");
        let o = Command::new("sh")
            .arg(root.join("docs/docker/build-image.sh"))
            .arg(bin)
            .arg(COFFER_IMAGE)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running docs/docker/build-image.sh: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "docs/docker/build-image.sh {bin} {COFFER_IMAGE} failed ({}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        // The image the tag pointed at before is now dangling: remove it (this fails, harmlessly,
        // while a container still uses it).
        if let Some(old) = previous
            && inspect(COFFER_IMAGE, "{{.Id}}").is_some_and(|new| new != old)
        {
            run(&["docker", "image", "rm", &old], 60);
        }
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Everything the seed tests need, plus `extra` ("gpg", "moto"); `None` = skip.
fn prerequisites(extra: &[&str]) -> Option<()> {
    if let Err(e) = tool_works(&["docker", "version", "--format", "{{.Server.APIVersion}}"]) {
        return unavailable(format!("no Docker engine answers: {e}"));
    }
    if let Err(e) = tool_works(&["docker-compose", "version"]) {
        return unavailable(format!("docker-compose is missing: {e}"));
    }
    if !common::is_root() {
        return unavailable("the tests read volume mountpoints and need root".into());
    }
    if let Err(e) = ensure_busybox_image() {
        return unavailable(e);
    }
    for x in extra {
        let r = match *x {
            "gpg" => tool_works(&["gpg", "--version"]).map_err(|e| format!("gpg is missing: {e}")),
            "moto" => moto_available(),
            "curl" => {
                tool_works(&["curl", "--version"]).map_err(|e| format!("curl is missing: {e}"))
            }
            _ => unreachable!(),
        };
        if let Err(e) = r {
            return unavailable(e);
        }
    }
    ensure_coffer_image();
    Some(())
}

// ---------------------------------------------------------------------------------------------
// Running commands

/// One finished command.
struct Run {
    what: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == 0
    }

    /// stdout and stderr together.
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        let timed_out = if self.code == 124 { " (timed out)" } else { "" };
        format!(
            "`{}` exited with {}{timed_out}\n--- stdout:\n{}--- stderr:\n{}",
            self.what,
            self.code,
            tail(&self.stdout, 40),
            tail(&self.stderr, 40)
        )
    }
}

/// Run `argv` under `timeout` (seconds), in `dir` with `env` added.
fn run_in(dir: Option<&Path>, env: &[(String, String)], argv: &[&str], timeout: u64) -> Run {
    let mut c = Command::new("timeout");
    c.arg("--kill-after=10")
        .arg(timeout.to_string())
        .args(argv)
        .stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    Run {
        what: argv.join(" "),
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn run(argv: &[&str], timeout: u64) -> Run {
    run_in(None, &[], argv, timeout)
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = lines[from..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// `docker inspect -f FORMAT NAME`, or `None` when it does not exist.
fn inspect(name: &str, format: &str) -> Option<String> {
    let r = run(&["docker", "inspect", "-f", format, name], 30);
    r.ok().then(|| r.stdout.trim().to_string())
}

fn running(name: &str) -> bool {
    inspect(name, "{{.State.Running}}").as_deref() == Some("true")
}

fn health(name: &str) -> String {
    inspect(
        name,
        "{{if .State.Health}}{{.State.Health.Status}}{{else}}no healthcheck{{end}}",
    )
    .unwrap_or_else(|| "no such container".into())
}

/// `docker logs NAME`: stdout and stderr of the container.
fn logs(name: &str) -> String {
    run(&["docker", "logs", name], 30).text()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn exec(name: &str, argv: &[&str], timeout: u64) -> Run {
    let mut a = vec!["docker", "exec", name];
    a.extend_from_slice(argv);
    run(&a, timeout)
}

/// Poll `f` every 250 ms until it returns `Some` or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `coffer snapshots --json` inside the container, with no flags (contract 2).
fn snapshots_in(container: &str) -> Result<Vec<Value>, String> {
    let r = exec(container, &["coffer", "snapshots", "--json"], 120);
    if !r.ok() {
        return Err(r.describe());
    }
    match serde_json::from_str::<Value>(&r.stdout) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(v) => Err(format!("not a JSON array: {v}")),
        Err(e) => Err(format!("not JSON ({e}): {}", r.describe())),
    }
}

fn source_names(snapshot: &Value) -> BTreeSet<String> {
    snapshot["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The newest snapshot (by time) of a `snapshots --json` list.
fn newest(snaps: &[Value]) -> Option<&Value> {
    snaps
        .iter()
        .max_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()))
}

// ---------------------------------------------------------------------------------------------
// Check table

/// PASS/FAIL rows of one test, printed when the test ends (also on a panic).
struct Report {
    title: String,
    rows: Mutex<Vec<(String, bool, String, String)>>,
    finished: bool,
}

impl Report {
    fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            rows: Mutex::new(Vec::new()),
            finished: false,
        }
    }

    /// Record one check; `detail` is printed for failures (and for passes when short).
    fn check(&self, point: &str, what: &str, ok: bool, detail: impl Into<String>) -> bool {
        let detail = detail.into();
        eprintln!(
            "[{}] contract {point}: {} {what}{}",
            self.title,
            if ok { "PASS" } else { "FAIL" },
            if ok && detail.len() <= 200 && !detail.is_empty() && !detail.trim().contains('\n') {
                format!(" ({})", detail.trim())
            } else if !ok {
                format!("\n{}", indent(&detail))
            } else {
                String::new()
            }
        );
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).push((
            point.to_string(),
            ok,
            what.to_string(),
            detail,
        ));
        ok
    }

    /// Like `check`, but the test cannot go on without it.
    #[track_caller]
    fn require(&self, point: &str, what: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        if !self.check(point, what, ok, detail.clone()) {
            panic!(
                "[{}] cannot go on: contract {point}: {what}\n{}",
                self.title,
                indent(&detail)
            );
        }
    }

    fn table(&self) -> (String, usize) {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = format!("\n===== {} =====\n", self.title);
        let mut failed = 0;
        for (point, ok, what, detail) in rows.iter() {
            s.push_str(&format!(
                "  {:<4} {}  {what}\n",
                point,
                if *ok { "PASS" } else { "FAIL" }
            ));
            if !ok {
                failed += 1;
                s.push_str(&indent(&truncate(detail, 3000)));
                s.push('\n');
            }
        }
        s.push_str(&format!("  {} checks, {failed} failed\n", rows.len()));
        (s, failed)
    }

    fn finish(mut self) {
        self.finished = true;
        let (table, failed) = self.table();
        eprintln!("{table}");
        assert_eq!(
            failed, 0,
            "[{}] {failed} checks failed (table above)",
            self.title
        );
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.finished {
            eprintln!("{}", self.table().0);
        }
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("        {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &s[cut..])
}

// ---------------------------------------------------------------------------------------------
// One compose project

/// A copy of a fixture folder under tests/seeds/ in a temporary directory, run as its own
/// compose project. Dropping it takes everything down.
struct Stack {
    project: String,
    dir: tempfile::TempDir,
    /// Variables for docker-compose and the seed's scripts (also in `.env`).
    env: Vec<(String, String)>,
    /// The `-f` sets used, for the teardown.
    file_sets: Mutex<Vec<Vec<String>>>,
    /// Host paths outside `dir` that the seed's scripts use (removed on drop).
    extra_paths: Vec<PathBuf>,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            // fs::copy keeps the mode, so the scripts stay executable.
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

impl Stack {
    /// `fixture` is a folder under tests/seeds/; `kind` a short tag for the project name.
    fn new(fixture: &str, kind: &str, vars: &[(&str, &str)]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // docker-compose 1.29 keeps only [-_a-z0-9] of a project name.
        let project = format!("cseed{kind}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{project}-"))
            .tempdir()
            .expect("temporary directory");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/seeds")
            .join(fixture);
        copy_tree(&src, dir.path());
        let mut env = vec![
            ("COMPOSE_PROJECT_NAME".to_string(), project.clone()),
            ("SEED_PREFIX".to_string(), format!("{project}-")),
            ("COFFER_PASSWORD".to_string(), common::PASSWORD.to_string()),
            (
                "COFFER_IMAGE".to_string(),
                std::env::var("COFFER_SEEDS_IMAGE").unwrap_or_else(|_| COFFER_IMAGE.to_string()),
            ),
        ];
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // The seeds keep their secrets in .env (seed 000, "3. Environment Variables").
        let dotenv: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(dir.path().join(".env"), dotenv).unwrap();
        Self {
            project,
            dir,
            env,
            file_sets: Mutex::new(Vec::new()),
            extra_paths: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A container name set with `${SEED_PREFIX}`.
    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.project)
    }

    /// `docker-compose -p PROJECT -f FILES... ARGS` in the project folder.
    fn compose(&self, files: &[&str], args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        {
            let mut sets = self.file_sets.lock().unwrap();
            let set: Vec<String> = files.iter().map(|f| f.to_string()).collect();
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        let mut argv = vec!["docker-compose", "-p", &self.project];
        for f in files {
            argv.extend(["-f", f]);
        }
        argv.extend_from_slice(args);
        let mut env = self.env.clone();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        run_in(Some(self.dir.path()), &env, &argv, 300)
    }

    /// `bash -c SCRIPT` in the project folder, with the project's variables.
    fn bash(&self, script: &str, timeout: u64) -> Run {
        run_in(
            Some(self.dir.path()),
            &self.env,
            &["bash", "-c", script],
            timeout,
        )
    }

    /// The id of the container of a compose service.
    fn service_container(&self, files: &[&str], service: &str) -> Option<String> {
        let r = self.compose(files, &["ps", "-q", service], &[]);
        let id = r.stdout.trim().to_string();
        (r.ok() && !id.is_empty()).then_some(id)
    }

    fn volume_mountpoint(&self, volume: &str) -> PathBuf {
        let name = format!("{}_{volume}", self.project);
        let r = run(
            &[
                "docker",
                "volume",
                "inspect",
                "-f",
                "{{.Mountpoint}}",
                &name,
            ],
            30,
        );
        assert!(r.ok(), "{}", r.describe());
        PathBuf::from(r.stdout.trim())
    }

    /// Names of the files in `backups/` (or another folder of the project).
    fn files_in(&self, rel: &str) -> BTreeSet<String> {
        std::fs::read_dir(self.path(rel))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let sets = self
            .file_sets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for set in sets.iter().rev() {
            let files: Vec<&str> = set.iter().map(String::as_str).collect();
            let r = self.compose(&files, &["down", "-v", "--remove-orphans", "-t", "2"], &[]);
            if !r.ok() {
                eprintln!("teardown: {}", r.describe());
            }
        }
        // Whatever is left: containers and networks with the project's label, volumes with
        // its label or name prefix (restore-backup.sh re-creates volumes without labels).
        let label = format!("label=com.docker.compose.project={}", self.project);
        let ids = |argv: &[&str]| -> Vec<String> {
            run(argv, 60)
                .stdout
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        for c in ids(&["docker", "ps", "-aq", "--filter", &label]) {
            run(&["docker", "rm", "-f", "-v", &c], 60);
        }
        let prefix = format!("{}_", self.project);
        let mut vols = ids(&["docker", "volume", "ls", "-q", "--filter", &label]);
        vols.extend(
            ids(&["docker", "volume", "ls", "-q"])
                .into_iter()
                .filter(|v| v.starts_with(&prefix)),
        );
        for v in vols {
            run(&["docker", "volume", "rm", "-f", &v], 60);
        }
        for n in ids(&["docker", "network", "ls", "-q", "--filter", &label]) {
            run(&["docker", "network", "rm", &n], 60);
        }
        for p in &self.extra_paths {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archives

/// `claude-backup-YYYYMMDD-HHMMSS.tar.gz` (+ `suffix`), the seed's BACKUP_FILENAME.
fn is_seed_archive_name(name: &str, suffix: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("claude-backup-")
        .and_then(|r| r.strip_suffix(&format!(".tar.gz{suffix}")))
    else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

/// `tar -tzf FILE` (the seed's own check), the entries.
fn tar_list(path: &Path) -> Result<Vec<String>, String> {
    let r = run(&["tar", "-tzf", &path.to_string_lossy()], 60);
    if r.ok() {
        Ok(r.stdout.lines().map(str::to_string).collect())
    } else {
        Err(r.describe())
    }
}

/// What is wrong with an archive listing: expected entries missing, and entries that
/// BACKUP_EXCLUDE_REGEXP (`.*\.log$|.*\.cache$|node_modules`) matches. The old tool tests
/// every walked path, directories included, so not even an empty `node_modules/` is archived;
/// directories are reported apart from files.
struct ArchiveProblems {
    missing: Vec<String>,
    excluded_files: Vec<String>,
    excluded_dirs: Vec<String>,
}

fn archive_problems(entries: &[String], expected: &[&str]) -> ArchiveProblems {
    let set: BTreeSet<&str> = entries.iter().map(|e| e.trim_end_matches('/')).collect();
    let mut p = ArchiveProblems {
        missing: expected
            .iter()
            .filter(|e| !set.contains(**e))
            .map(|e| e.to_string())
            .collect(),
        excluded_files: Vec::new(),
        excluded_dirs: Vec::new(),
    };
    for e in entries {
        let name = e.trim_end_matches('/');
        if name.ends_with(".log") || name.ends_with(".cache") || name.contains("node_modules") {
            if e.ends_with('/') {
                p.excluded_dirs.push(e.clone());
            } else {
                p.excluded_files.push(e.clone());
            }
        }
    }
    p
}

/// The archive checks of contract 5 on one listing.
fn check_archive_listing(report: &Report, what: &str, entries: &[String]) {
    let p = archive_problems(entries, SEED0_EXPECTED);
    let listing = format!("-- entries:\n{}", entries.join("\n"));
    report.check(
        "5",
        &format!("{what}: backup/<name>/ layout with workspace, claude-config and sessions files"),
        p.missing.is_empty(),
        format!("missing: {:?}\n{listing}", p.missing),
    );
    report.check(
        "3",
        &format!("{what}: no file matching BACKUP_EXCLUDE_REGEXP (.log, .cache, node_modules)"),
        p.excluded_files.is_empty(),
        format!("present: {:?}\n{listing}", p.excluded_files),
    );
    report.check(
        "3",
        &format!("{what}: no directory matching BACKUP_EXCLUDE_REGEXP (the old tool archives no empty node_modules/)"),
        p.excluded_dirs.is_empty(),
        format!("present: {:?}\n{listing}", p.excluded_dirs),
    );
}

const SEED0_EXPECTED: &[&str] = &[
    "backup/workspace/project/src/main.py",
    "backup/workspace/project/README.md",
    "backup/claude-config/settings.json",
    "backup/claude-config/projects/history.jsonl",
    "backup/sessions/user-42.json",
];

// ---------------------------------------------------------------------------------------------
// SMTP sink

/// A plain SMTP relay on 127.0.0.1 that accepts every message (no TLS, no AUTH) and keeps the
/// transcripts.
struct SmtpSink {
    port: u16,
    sessions: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        let port = l.local_addr().unwrap().port();
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let s2 = sessions.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let s3 = s2.clone();
                std::thread::spawn(move || smtp_session(conn, &s3));
            }
        });
        Self { port, sessions }
    }

    /// Transcripts of the sessions that delivered a message.
    fn messages(&self) -> Vec<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| t.contains("\nS: 250 queued"))
            .cloned()
            .collect()
    }

    fn all(&self) -> String {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n----\n")
    }
}

/// One SMTP conversation, its transcript (client lines as they came, server replies prefixed
/// with `S: `) kept up to date in `sessions` (a client may keep the connection open).
fn smtp_session(conn: TcpStream, sessions: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut w = conn.try_clone().expect("clone the SMTP stream");
    let mut r = BufReader::new(conn);
    let slot = {
        let mut s = sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.push(String::new());
        s.len() - 1
    };
    let say = |t: &mut String, w: &mut TcpStream, s: &str| {
        t.push_str(&format!("\nS: {s}"));
        sessions.lock().unwrap_or_else(|p| p.into_inner())[slot] = t.clone();
        let _ = w.write_all(format!("{s}\r\n").as_bytes());
    };
    let mut t = String::new();
    say(&mut t, &mut w, "220 coffer-test-sink ESMTP");
    let mut in_data = false;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        t.push('\n');
        t.push_str(line.trim_end_matches(['\r', '\n']));
        if in_data {
            if line.trim_end_matches(['\r', '\n']) == "." {
                in_data = false;
                say(&mut t, &mut w, "250 queued");
            }
            continue;
        }
        let cmd = line.trim().to_ascii_uppercase();
        let verb = cmd.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" | "HELO" => say(&mut t, &mut w, "250 coffer-test-sink"),
            "MAIL" | "RCPT" | "RSET" | "NOOP" => say(&mut t, &mut w, "250 OK"),
            "DATA" => {
                in_data = true;
                say(&mut t, &mut w, "354 End data with <CR><LF>.<CR><LF>");
            }
            "QUIT" => {
                say(&mut t, &mut w, "221 Bye");
                break;
            }
            _ => say(&mut t, &mut w, "502 Command not implemented"),
        }
    }
    sessions.lock().unwrap_or_else(|p| p.into_inner())[slot] = t;
}

// ---------------------------------------------------------------------------------------------
// Shared steps

/// Wait until the daemon says its schedule is registered (contract 1); true when seen.
fn wait_registered(report: &Report, container: &str, schedule: &str, secs: u64) -> bool {
    let seen = wait_for(Duration::from_secs(secs), || {
        let l = logs(container);
        (l.contains(REGISTERED) || l.contains(schedule)).then_some(l)
    });
    let l = logs(container);
    report.check(
        "1",
        &format!(
            "`docker logs {container}` shows the schedule registered (\"{REGISTERED}\" or \"{schedule}\")"
        ),
        seen.is_some(),
        match &seen {
            Some(l) if l.contains(REGISTERED) => format!("saw \"{REGISTERED}\""),
            Some(_) => format!("saw the schedule, but not \"{REGISTERED}\""),
            None => format!(
                "within {secs}s; state {} restarts {}; logs:\n{}",
                inspect(container, "{{.State.Status}}").unwrap_or_default(),
                inspect(container, "{{.RestartCount}}").unwrap_or_default(),
                tail(&l, 30)
            ),
        },
    )
}

/// Run a manual backup with `argv` in `container` (contract 2) and check the result lines in
/// the output and the logs. Returns whether it exited 0.
fn manual_backup(report: &Report, container: &str, argv: &[&str], step: &str) -> bool {
    let before = count(&logs(container), COMPLETED);
    let t = Instant::now();
    let r = exec(container, argv, 240);
    let took = t.elapsed().as_secs_f64();
    let ok = report.check(
        "2",
        &format!(
            "{step}: `docker exec {container} {}` exits 0",
            argv.join(" ")
        ),
        r.ok(),
        if r.ok() {
            format!("{took:.1}s")
        } else {
            r.describe()
        },
    );
    report.check(
        "2",
        &format!("{step}: the caller sees the result (\"{COMPLETED}\")"),
        r.text().contains(COMPLETED),
        r.describe(),
    );
    let logged = wait_for(Duration::from_secs(15), || {
        (count(&logs(container), COMPLETED) > before).then_some(())
    });
    report.check(
        "1",
        &format!("{step}: `docker logs` gains a \"{COMPLETED}\" line"),
        logged.is_some(),
        tail(&logs(container), 30),
    );
    ok
}

// ---------------------------------------------------------------------------------------------
// Seed 000: claude-remote-runner

#[test]
fn seed_000_claude_remote_runner_test_plan() {
    if prerequisites(&[]).is_none() {
        return;
    }
    let report = Report::new("seed 000 Test Plan");
    let mut st = Stack::new("claude-remote-runner", "0", &[]);
    // restore-workspace-only.sh extracts into this fixed host path (and removes it itself).
    st.extra_paths.push(PathBuf::from("/tmp/restore-workspace"));
    let st = st;
    std::fs::create_dir_all(st.path("backups")).unwrap();
    std::fs::create_dir_all(st.path("sessions")).unwrap();
    std::fs::write(
        st.path("sessions/user-42.json"),
        "{\"chat\": 42, \"state\": \"idle\"}\n",
    )
    .unwrap();
    let main: &[&str] = &["docker-compose.yml"];
    let backup = st.name("claude-backup");
    let web = st.name("claudebox-web");
    let backups_dir = st.path("backups");

    // ---- Test Plan 1: Verify Backup Service Starts
    let up = st.compose(main, &["up", "-d"], &[]);
    report.require(
        "1",
        "`docker-compose up -d` (seed 000)",
        up.ok(),
        up.describe(),
    );
    let ps = run(&["docker", "ps"], 30);
    report.check(
        "1",
        "`docker ps | grep backup` lists the backup container",
        ps.stdout
            .lines()
            .any(|l| l.contains("backup") && l.contains(&backup)),
        ps.describe(),
    );
    wait_registered(&report, &backup, "0 2 * * *", 20);
    std::thread::sleep(Duration::from_secs(2));
    report.check(
        "1",
        "the backup container keeps running (daemon is the default command)",
        running(&backup) && inspect(&backup, "{{.RestartCount}}").as_deref() == Some("0"),
        format!(
            "state {:?}, restarts {:?}; logs:\n{}",
            inspect(&backup, "{{.State.Status}}"),
            inspect(&backup, "{{.RestartCount}}"),
            tail(&logs(&backup), 30)
        ),
    );
    let seed_vars = [
        "BACKUP_CRON_EXPRESSION",
        "BACKUP_FILENAME",
        "BACKUP_RETENTION_DAYS",
        "BACKUP_PRUNING_PREFIX",
        "BACKUP_ARCHIVE",
        "BACKUP_COMPRESSION",
        "BACKUP_COMPRESSION_LEVEL",
        "BACKUP_EXCLUDE_REGEXP",
    ];
    let start_logs = logs(&backup);
    let warned: Vec<&str> = start_logs
        .lines()
        .filter(|l| {
            let low = l.to_lowercase();
            (low.contains("unsupported") || low.contains("not supported") || low.contains("ignor"))
                && seed_vars.iter().any(|v| l.contains(v))
        })
        .collect();
    report.check(
        "3",
        "no start-up warning calls one of the seed's variables unsupported",
        warned.is_empty(),
        warned.join("\n"),
    );
    let seeded = wait_for(Duration::from_secs(20), || {
        exec(&web, &["test", "-f", "/workspace/.seeded"], 30)
            .ok()
            .then_some(())
    });
    report.require(
        "-",
        "claudebox-web stand-in wrote its workspace",
        seeded.is_some(),
        tail(&logs(&web), 20),
    );
    // Before the first run there may be no repository yet ("no coffer repository", exit 10):
    // count that as zero snapshots; the no-flags check itself follows the first run.
    let snaps0 = snapshots_in(&backup);
    if let Err(e) = &snaps0 {
        eprintln!(
            "[seed 000 Test Plan] note: `coffer snapshots --json` before the first run:\n{e}"
        );
    }
    let n0 = snaps0.map(|s| s.len()).unwrap_or(0);

    // ---- Test Plan 2: Trigger Manual Backup
    let files0 = st.files_in("backups");
    let ok2 = manual_backup(&report, &backup, &["/bin/backup"], "Test Plan 2");
    let files1 = st.files_in("backups");
    let new2: Vec<&String> = files1.difference(&files0).collect();
    report.require(
        "5",
        "Test Plan 2: one new claude-backup-%Y%m%d-%H%M%S.tar.gz appears in backups/",
        new2.len() == 1 && is_seed_archive_name(new2[0], ""),
        format!(
            "exit ok: {ok2}; new files {new2:?}; logs:\n{}",
            tail(&logs(&backup), 20)
        ),
    );
    let archive2 = backups_dir.join(new2[0]);
    let today_utc = chrono::Utc::now().format("%Y%m%d").to_string();
    let today_local = chrono::Local::now().format("%Y%m%d").to_string();
    report.check(
        "5",
        "the archive name carries today's date (strftime)",
        new2[0].contains(&today_utc) || new2[0].contains(&today_local),
        format!("{} (today {today_utc} UTC)", new2[0]),
    );
    let snaps1 = snapshots_in(&backup);
    report.check(
        "2",
        "`docker exec <c> coffer snapshots --json` works with no flags",
        snaps1.is_ok(),
        snaps1.clone().err().unwrap_or_default(),
    );
    let snaps1 = snaps1.unwrap_or_default();
    report.check(
        "4",
        "Test Plan 2: the run made exactly one snapshot",
        snaps1.len() == n0 + 1,
        format!(
            "{} snapshots before, {} after: {snaps1:?}",
            n0,
            snaps1.len()
        ),
    );
    let want_sources: BTreeSet<String> = ["workspace", "claude-config", "sessions"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let s1 = newest(&snaps1).cloned().unwrap_or(Value::Null);
    report.check(
        "4",
        "the snapshot holds every source: workspace, claude-config, sessions",
        source_names(&s1) == want_sources,
        format!("{s1}"),
    );
    let host1 = s1["host"].as_str().unwrap_or("").to_string();
    let ls = exec(
        &backup,
        &["coffer", "ls", "--json", "--snapshot", "latest"],
        120,
    );
    let ls_entries: Vec<(String, String)> = ls
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["path"].as_str().unwrap_or("").to_string(),
                v["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let matches =
        |p: &str| p.ends_with(".log") || p.ends_with(".cache") || p.contains("node_modules");
    let bad_files: Vec<&String> = ls_entries
        .iter()
        .filter(|(p, k)| k != "dir" && matches(p))
        .map(|(p, _)| p)
        .collect();
    let bad_dirs: Vec<&String> = ls_entries
        .iter()
        .filter(|(p, k)| k == "dir" && matches(p))
        .map(|(p, _)| p)
        .collect();
    report.check(
        "3",
        "BACKUP_EXCLUDE_REGEXP applies to the snapshot: no matching file, main.py kept",
        ls.ok() && ls_entries.iter().any(|(p, _)| p.ends_with("main.py")) && bad_files.is_empty(),
        format!("matching files {bad_files:?}\n{}", ls.describe()),
    );
    report.check(
        "3",
        "BACKUP_EXCLUDE_REGEXP applies to the snapshot: no matching directory (node_modules/)",
        ls.ok() && bad_dirs.is_empty(),
        format!("matching directories {bad_dirs:?}"),
    );

    // ---- Test Plan 3: Verify Backup Contents (`tar -tzf ... | grep workspace`)
    let magic = std::fs::read(&archive2)
        .map(|b| b.starts_with(&[0x1f, 0x8b]))
        .unwrap_or(false);
    report.check(
        "5",
        "the archive is gzip (BACKUP_COMPRESSION=gz)",
        magic,
        "",
    );
    match tar_list(&archive2) {
        Ok(entries) => {
            report.check(
                "5",
                "Test Plan 3: `tar -tzf | grep workspace` shows workspace files",
                entries.iter().any(|e| e.starts_with("backup/workspace/")),
                entries.join("\n"),
            );
            check_archive_listing(&report, "Test Plan 3", &entries);
        }
        Err(e) => {
            report.check("5", "Test Plan 3: `tar -tzf` lists the archive", false, e);
        }
    }

    // The seed's restore scripts extract with `alpine`, whose tar is busybox's.
    let mount = format!("{}:/archive:ro", backups_dir.display());
    let in_archive = format!("/archive/{}", new2[0]);
    let bb = run(
        &[
            "docker",
            "run",
            "--rm",
            "-v",
            &mount,
            BUSYBOX_IMAGE,
            "tar",
            "-tzf",
            &in_archive,
        ],
        60,
    );
    report.check(
        "5",
        "busybox (alpine) `tar -tzf` reads the archive, as the seed's restore scripts need",
        bb.ok() && bb.stdout.contains("backup/workspace/project/src/main.py"),
        bb.describe(),
    );

    // ---- Test Plan 4: Test Restore Procedure (Safe Test)
    let w = exec(
        &web,
        &[
            "sh",
            "-c",
            "echo 'test-restore' > /workspace/test-restore.txt",
        ],
        30,
    );
    report.require(
        "-",
        "write /workspace/test-restore.txt",
        w.ok(),
        w.describe(),
    );
    let files2 = st.files_in("backups");
    manual_backup(&report, &backup, &["/bin/backup"], "Test Plan 4");
    let files3 = st.files_in("backups");
    let new4: Vec<&String> = files3
        .difference(&files2)
        .filter(|n| is_seed_archive_name(n, ""))
        .collect();
    report.require(
        "5",
        "Test Plan 4: the backup wrote a new archive",
        new4.len() == 1,
        format!("new files {new4:?}"),
    );
    let archive4 = format!("backups/{}", new4[0]);
    let rm = exec(&web, &["rm", "/workspace/test-restore.txt"], 30);
    report.require("-", "delete test-restore.txt", rm.ok(), rm.describe());
    // Not in the seed: change claude-config too, so that its restore shows.
    let w = exec(
        &web,
        &["sh", "-c", "echo '{}' > /root/.claude/settings.json"],
        30,
    );
    report.require("-", "change claude-config", w.ok(), w.describe());
    // The seed runs `./restore-backup.sh backups/claude-backup-$(date +%Y%m%d)*.tar.gz`, which
    // picks the oldest archive of the day (see the top of this file): pass the new one.
    // `read -p "Continue? (yes/no)"` wants the word: `yes yes` (plain `yes` says "y").
    let restore = st.bash(&format!("yes yes | ./restore-backup.sh {archive4}"), 240);
    report.check(
        "5",
        "Test Plan 4: restore-backup.sh (down, safety tar, re-create volumes, extract, up) succeeds",
        restore.ok() && restore.stdout.contains("Restore complete"),
        restore.describe(),
    );
    let back = wait_for(Duration::from_secs(30), || {
        let r = exec(&web, &["cat", "/workspace/test-restore.txt"], 30);
        r.ok().then_some(r.stdout)
    });
    report.check(
        "5",
        "Test Plan 4: `docker exec claudebox-web cat /workspace/test-restore.txt` is back",
        back.as_deref().map(str::trim) == Some("test-restore"),
        format!("{back:?}; restore output:\n{}", tail(&restore.text(), 30)),
    );
    let cfg = exec(&web, &["cat", "/root/.claude/settings.json"], 30);
    report.check(
        "5",
        "Test Plan 4: claude-config restored too",
        cfg.stdout.trim() == "{\"theme\":\"dark\"}",
        cfg.describe(),
    );
    report.check(
        "-",
        "restore-backup.sh left its safety backup pre-restore-backup-*.tar.gz",
        st.files_in("backups")
            .iter()
            .any(|f| f.starts_with("pre-restore-backup-")),
        format!("{:?}", st.files_in("backups")),
    );
    if !running(&web) || !running(&backup) {
        // The script stopped half-way (set -e) with the stack down: bring it back so that the
        // remaining steps can run.
        let up = st.compose(main, &["up", "-d"], &[]);
        report.require(
            "-",
            "recovery after the failed restore: `docker-compose up -d`",
            up.ok(),
            up.describe(),
        );
        let seeded = wait_for(Duration::from_secs(20), || {
            exec(&web, &["test", "-f", "/workspace/.seeded"], 30)
                .ok()
                .then_some(())
        });
        report.require("-", "claudebox-web runs again", seeded.is_some(), "");
    }
    // The script's `down` + `up -d` re-created the backup container.
    wait_registered(&report, &backup, "0 2 * * *", 20);

    // ---- Partial restore (seed section 7): restore-workspace-only.sh
    let w = exec(
        &web,
        &[
            "sh",
            "-c",
            "echo changed > /workspace/project/README.md && rm /workspace/project/src/main.py \
             && echo kept > /root/.claude/after-backup.txt",
        ],
        30,
    );
    report.require("-", "change the workspace", w.ok(), w.describe());
    let partial = st.bash(&format!("./restore-workspace-only.sh {archive4}"), 240);
    let readme = wait_for(Duration::from_secs(30), || {
        let r = exec(&web, &["cat", "/workspace/project/README.md"], 30);
        r.ok().then_some(r.stdout)
    });
    let main_py = exec(&web, &["cat", "/workspace/project/src/main.py"], 30);
    report.check(
        "5",
        "restore-workspace-only.sh (`tar xzf ... backup/workspace/`) restores the workspace",
        partial.ok() && readme.as_deref().map(str::trim) == Some("# my project") && main_py.ok(),
        format!(
            "README {readme:?}, main.py: {}\n{}",
            main_py.describe(),
            partial.describe()
        ),
    );
    let kept = exec(&web, &["cat", "/root/.claude/after-backup.txt"], 30);
    report.check(
        "-",
        "restore-workspace-only.sh leaves claude-config alone",
        kept.ok(),
        kept.describe(),
    );

    // ---- The two restore procedures as one coffer command each (docs/docker.md), from the
    // running backup service, whose volume mounts are read-only.
    let w = exec(
        &web,
        &[
            "sh",
            "-c",
            "rm /workspace/test-restore.txt && echo changed > /workspace/project/README.md \
             && echo extra > /workspace/not-in-backup.txt",
        ],
        30,
    );
    report.require("-", "change the workspace again", w.ok(), w.describe());
    let workspace_volume = format!("{}_workspace", st.project);
    let one = exec(
        &backup,
        &[
            "restore",
            "--snapshot",
            "latest",
            "--path",
            "workspace/",
            "--to-volume",
            &workspace_volume,
        ],
        300,
    );
    let back = exec(&web, &["cat", "/workspace/test-restore.txt"], 30);
    let readme = exec(&web, &["cat", "/workspace/project/README.md"], 30);
    let extra = exec(&web, &["test", "-e", "/workspace/not-in-backup.txt"], 30);
    report.check(
        "5",
        "Test Plan 4 with `docker exec claude-backup restore --snapshot latest --path workspace/ \
         --to-volume <project>_workspace`: file back, changes undone, extra file removed",
        one.ok()
            && back.stdout.trim() == "test-restore"
            && readme.stdout.trim() == "# my project"
            && !extra.ok(),
        format!(
            "{}\n{}\n{}",
            one.describe(),
            back.describe(),
            readme.describe()
        ),
    );
    report.check(
        "-",
        "the restore names its pre-restore snapshot and the app container runs again",
        one.stdout.contains("pre-restore") && running(&web) && running(&backup),
        one.describe(),
    );
    let helpers = run(
        &[
            "docker",
            "ps",
            "-a",
            "-q",
            "--filter",
            "label=coffer.helper",
        ],
        30,
    );
    report.check(
        "-",
        "no helper container is left",
        helpers.ok() && helpers.stdout.trim().is_empty(),
        helpers.describe(),
    );
    let snaps = snapshots_in(&backup).unwrap_or_default();
    let safety = snaps.iter().any(|s| {
        s["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "pre-restore"))
    });
    report.check(
        "-",
        "the pre-restore snapshot is in the repository",
        safety,
        "",
    );
    let w = exec(
        &web,
        &[
            "sh",
            "-c",
            "echo '{}' > /root/.claude/settings.json && rm /workspace/test-restore.txt",
        ],
        30,
    );
    report.require("-", "change both volumes", w.ok(), w.describe());
    let all = exec(
        &backup,
        &["restore", "--snapshot", "latest", "--all-volumes"],
        300,
    );
    let back = exec(&web, &["cat", "/workspace/test-restore.txt"], 30);
    let cfg = exec(&web, &["cat", "/root/.claude/settings.json"], 30);
    report.check(
        "5",
        "restore-backup.sh as `docker exec claude-backup restore --snapshot latest --all-volumes`: \
         every volume back",
        all.ok()
            && back.stdout.trim() == "test-restore"
            && cfg.stdout.trim() == "{\"theme\":\"dark\"}",
        format!(
            "{}\n{}\n{}",
            all.describe(),
            back.describe(),
            cfg.describe()
        ),
    );

    // ---- Test Plan 5: Test Backup Retention
    // The seed's plain `touch` gives mtime = now: the old tool keeps those (it prunes by mtime),
    // so three such files must stay. Ten touched 10 days ago must go; an old file without the
    // prefix must stay.
    let mut old = Vec::new();
    for i in 1..=10 {
        let n = format!("claude-backup-2026020{i}-020000.tar.gz");
        let t = run(
            &[
                "touch",
                "-d",
                "10 days ago",
                &backups_dir.join(&n).to_string_lossy(),
            ],
            30,
        );
        assert!(t.ok(), "{}", t.describe());
        old.push(n);
    }
    let mut fresh = Vec::new();
    for i in 1..=3 {
        let n = format!("claude-backup-2026030{i}-020000.tar.gz");
        std::fs::write(backups_dir.join(&n), b"").unwrap();
        fresh.push(n);
    }
    let foreign = "manual-backup-20260101-000000.tar.gz";
    let t = run(
        &[
            "touch",
            "-d",
            "10 days ago",
            &backups_dir.join(foreign).to_string_lossy(),
        ],
        30,
    );
    assert!(t.ok(), "{}", t.describe());
    let before5 = st.files_in("backups");
    let ok5 = manual_backup(&report, &backup, &["/bin/backup"], "Test Plan 5");
    let after5 = st.files_in("backups");
    let left_old: Vec<&String> = old.iter().filter(|n| after5.contains(*n)).collect();
    report.check(
        "5",
        "Test Plan 5: claude-backup-* files older than BACKUP_RETENTION_DAYS=7 (mtime) are pruned",
        ok5 && left_old.is_empty(),
        format!("still there: {left_old:?}; all: {after5:?}"),
    );
    let gone: Vec<&String> = before5
        .iter()
        .filter(|n| !old.contains(n) && !after5.contains(*n))
        .collect();
    report.check(
        "5",
        "Test Plan 5: recent archives, the seed's plain-`touch`ed files and files without the prefix stay",
        gone.is_empty(),
        format!("deleted: {gone:?}"),
    );
    for n in &fresh {
        let _ = std::fs::remove_file(backups_dir.join(n));
    }
    let snaps5 = snapshots_in(&backup).unwrap_or_default();
    let host5 = newest(&snaps5)
        .and_then(|s| s["host"].as_str())
        .unwrap_or("")
        .to_string();
    report.check(
        "4",
        "snapshot host is stable across restore-backup.sh's `down` + `up -d`",
        !host1.is_empty() && host1 == host5,
        format!("before {host1:?}, after {host5:?}"),
    );

    // ---- Test Plan 6: Test Backup Monitoring
    let check = st.bash("./scripts/check-backups.sh", 60);
    report.check(
        "5",
        "Test Plan 6: ./scripts/check-backups.sh exits 0 (archive valid, age acceptable)",
        check.ok() && check.stdout.contains("Backup archive is valid"),
        check.describe(),
    );

    // ---- A scheduled run, after `up -d --force-recreate` with an every-minute schedule
    let id_before = inspect(&backup, "{{.Id}}").unwrap_or_default();
    let files7 = st.files_in("backups");
    let every_minute = [("SEED_CRON", "* * * * *")];
    let up = st.compose(
        main,
        &["up", "-d", "--force-recreate", "backup"],
        &every_minute,
    );
    report.require(
        "4",
        "`docker-compose up -d --force-recreate backup`",
        up.ok(),
        up.describe(),
    );
    let started = Instant::now();
    report.check(
        "-",
        "the backup container was re-created",
        inspect(&backup, "{{.Id}}").is_some_and(|id| id != id_before),
        "",
    );
    wait_registered(&report, &backup, "* * * * *", 20);
    let mut healthy_after = None;
    let mut scheduled_after = None;
    let deadline = Duration::from_secs(100);
    while started.elapsed() < deadline && (healthy_after.is_none() || scheduled_after.is_none()) {
        if healthy_after.is_none() && health(&backup) == "healthy" {
            healthy_after = Some(started.elapsed().as_secs());
        }
        if scheduled_after.is_none() && logs(&backup).contains(COMPLETED) {
            scheduled_after = Some(started.elapsed().as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    report.check(
        "1",
        "BACKUP_CRON_EXPRESSION=\"* * * * *\": a scheduled run logs \"Backup completed successfully\"",
        scheduled_after.is_some(),
        match scheduled_after {
            Some(s) => format!("after {s}s"),
            None => format!("not within {}s; logs:\n{}", deadline.as_secs(), tail(&logs(&backup), 30)),
        },
    );
    let new7: Vec<String> = st
        .files_in("backups")
        .difference(&files7)
        .filter(|n| is_seed_archive_name(n, ""))
        .cloned()
        .collect();
    report.check(
        "5",
        "the scheduled run wrote an archive",
        !new7.is_empty(),
        format!("{new7:?}"),
    );
    report.check(
        "8",
        "HEALTHCHECK: healthy soon after start",
        healthy_after.is_some(),
        match healthy_after {
            Some(s) => format!("healthy after {s}s"),
            None => format!(
                "status {:?} after {}s; {}",
                health(&backup),
                started.elapsed().as_secs(),
                inspect(&backup, "{{json .State.Health}}").unwrap_or_default()
            ),
        },
    );
    let snaps7 = snapshots_in(&backup).unwrap_or_default();
    let host7 = newest(&snaps7)
        .and_then(|s| s["host"].as_str())
        .unwrap_or("")
        .to_string();
    report.check(
        "4",
        "snapshot host is stable across `up -d --force-recreate`",
        scheduled_after.is_some() && !host1.is_empty() && host7 == host1,
        format!("first {host1:?}, after re-creation {host7:?}"),
    );
    report.finish();
}

#[test]
fn seed_000_encryption_and_failure_mail() {
    if prerequisites(&["gpg"]).is_none() {
        return;
    }
    let report = Report::new("seed 000 GPG + e-mail");
    let sink = SmtpSink::start();
    let port = sink.port.to_string();
    let st = Stack::new(
        "claude-remote-runner",
        "0v",
        &[
            ("BACKUP_ENCRYPTION_KEY", GPG_KEY),
            ("SMTP_PORT", &port),
            ("SMTP_PASSWORD", "unused"),
        ],
    );
    std::fs::create_dir_all(st.path("backups")).unwrap();
    std::fs::create_dir_all(st.path("backups-readonly")).unwrap();
    std::fs::create_dir_all(st.path("sessions")).unwrap();
    std::fs::write(st.path("sessions/user-42.json"), "{\"chat\": 42}\n").unwrap();
    let backup = st.name("claude-backup");
    let web = st.name("claudebox-web");

    // ---- GPG_PASSPHRASE (the seed's optional encryption)
    let gpg_files: &[&str] = &["docker-compose.yml", "docker-compose.gpg.yml"];
    let up = st.compose(gpg_files, &["up", "-d"], &[]);
    report.require(
        "1",
        "`docker-compose up -d` with GPG_PASSPHRASE",
        up.ok(),
        up.describe(),
    );
    wait_registered(&report, &backup, "0 2 * * *", 20);
    let naming: Vec<String> = logs(&backup)
        .lines()
        .filter(|l| l.contains("BACKUP_LATEST_SYMLINK"))
        .map(str::to_string)
        .collect();
    let one_warning = naming.len() == 1 && {
        let low = naming[0].to_lowercase();
        low.contains("warn") || low.contains("unsupported") || low.contains("not supported")
    };
    report.check(
        "3",
        "one start-up warning line names the unsupported BACKUP_LATEST_SYMLINK",
        one_warning,
        if one_warning {
            naming[0].trim().to_string()
        } else {
            format!(
                "lines naming it: {naming:?}\nlogs:\n{}",
                tail(&logs(&backup), 20)
            )
        },
    );
    let seeded = wait_for(Duration::from_secs(20), || {
        exec(&web, &["test", "-f", "/workspace/.seeded"], 30)
            .ok()
            .then_some(())
    });
    report.require(
        "-",
        "claudebox-web wrote its workspace",
        seeded.is_some(),
        "",
    );
    let before = st.files_in("backups");
    manual_backup(&report, &backup, &["/bin/backup"], "GPG run");
    let after = st.files_in("backups");
    let new: Vec<&String> = after.difference(&before).collect();
    let gpg: Vec<&&String> = new
        .iter()
        .filter(|n| is_seed_archive_name(n, ".gpg"))
        .collect();
    report.check(
        "5",
        "GPG_PASSPHRASE: the run writes claude-backup-%Y%m%d-%H%M%S.tar.gz.gpg and no plain archive",
        gpg.len() == 1 && new.len() == 1,
        format!("new files: {new:?}"),
    );
    if let Some(name) = gpg.first() {
        let path = st.path("backups").join(name);
        let bytes = std::fs::read(&path).unwrap_or_default();
        report.check(
            "5",
            "the .gpg file is OpenPGP (a packet header), not gzip",
            bytes.first().is_some_and(|b| b & 0x80 != 0) && !bytes.starts_with(&[0x1f, 0x8b]),
            format!("first bytes {:02x?}", &bytes[..bytes.len().min(8)]),
        );
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("decrypted.tar.gz");
        let d = run(
            &[
                "gpg",
                "--homedir",
                &home.path().to_string_lossy(),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                GPG_KEY,
                "-o",
                &out.to_string_lossy(),
                "-d",
                &path.to_string_lossy(),
            ],
            60,
        );
        report.check(
            "5",
            "`gpg --batch --pinentry-mode loopback --passphrase P -d` decrypts it",
            d.ok(),
            d.describe(),
        );
        if d.ok() {
            match tar_list(&out) {
                Ok(entries) => check_archive_listing(&report, "decrypted .gpg", &entries),
                Err(e) => {
                    report.check("5", "the decrypted file is a gzip tar", false, e);
                }
            }
        }
        let wrong = run(
            &[
                "gpg",
                "--homedir",
                &home.path().to_string_lossy(),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "wrong passphrase",
                "-o",
                "/dev/null",
                "-d",
                &path.to_string_lossy(),
            ],
            60,
        );
        report.check(
            "5",
            "a wrong passphrase does not decrypt it",
            !wrong.ok(),
            wrong.describe(),
        );
    }

    // ---- E-mail notifications, and a run that fails (/archive read-only)
    let alerts: &[&str] = &["docker-compose.alerts.yml"];
    let up = st.compose(alerts, &["up", "-d"], &[]);
    report.require(
        "7",
        "`docker-compose -f docker-compose.alerts.yml up -d` (EMAIL_*, read-only /archive)",
        up.ok(),
        up.describe(),
    );
    let started = Instant::now();
    let up_running = wait_for(Duration::from_secs(20), || running(&backup).then_some(()));
    report.check(
        "1",
        "with a read-only /archive the daemon still starts (the run fails, not the start)",
        up_running.is_some() && inspect(&backup, "{{.RestartCount}}").as_deref() == Some("0"),
        format!(
            "state {:?}, restarts {:?}; logs:\n{}",
            inspect(&backup, "{{.State.Status}}"),
            inspect(&backup, "{{.RestartCount}}"),
            tail(&logs(&backup), 30)
        ),
    );
    let health_before = health(&backup);
    let r = exec(&backup, &["/bin/backup"], 240);
    report.check(
        "2",
        "a failing manual run exits non-zero",
        r.code != 0 && r.code != 124,
        r.describe(),
    );
    report.check(
        "2",
        "the caller sees \"Backup failed: <why>\"",
        r.text().contains(FAILED),
        r.describe(),
    );
    let failed_line = wait_for(Duration::from_secs(15), || {
        logs(&backup)
            .lines()
            .find(|l| l.contains(&format!("{FAILED}:")))
            .map(str::to_string)
    });
    report.check(
        "1",
        "`docker logs` shows \"Backup failed: <why>\"",
        failed_line.is_some(),
        failed_line.unwrap_or_else(|| tail(&logs(&backup), 30)),
    );
    let mail = wait_for(Duration::from_secs(30), || {
        sink.messages()
            .into_iter()
            .find(|m| m.to_lowercase().contains("rcpt to:<admin@yourdomain.com>"))
    });
    report.check(
        "7",
        "EMAIL_NOTIFICATION_RECIPIENT gets a mail through EMAIL_SMTP_HOST:EMAIL_SMTP_PORT",
        mail.is_some(),
        format!("sink transcripts:\n{}", sink.all()),
    );
    if let Some(m) = &mail {
        let low = m.to_lowercase();
        report.check(
            "7",
            "the mail says the backup failed",
            low.contains("fail") || low.contains("error"),
            m.lines()
                .find(|l| l.to_lowercase().starts_with("subject:"))
                .map(str::to_string)
                .unwrap_or_else(|| m.clone()),
        );
    }
    let unhealthy = wait_for(Duration::from_secs(120), || {
        (health(&backup) == "unhealthy").then_some(started.elapsed().as_secs())
    });
    report.check(
        "8",
        "HEALTHCHECK: unhealthy after a failed run",
        unhealthy.is_some(),
        match unhealthy {
            Some(s) => format!("unhealthy {s}s after start (before the run: {health_before})"),
            None => format!(
                "status {:?}; {}",
                health(&backup),
                inspect(&backup, "{{json .State.Health}}").unwrap_or_default()
            ),
        },
    );
    report.finish();
}

// ---------------------------------------------------------------------------------------------
// Seed 001: agent-os

const SEED1_VOLUMES: &[&str] = &[
    "supabase-db-data",
    "supabase-storage",
    "n8n_storage",
    "langconnect_storage",
    "mcp_server_storage",
    "windmill_db_data",
    "db-config",
];

fn read_counter(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s.trim()).ok()
}

#[test]
fn seed_001_agent_os_s3() {
    if prerequisites(&["moto", "curl"]).is_none() {
        return;
    }
    let report = Report::new("seed 001 agent-os S3");
    let s3 = common::s3_server::server();
    // The seed's Deployment Checklist creates the bucket first ("Set up Hetzner Object Storage
    // bucket (agent-os-backups)"); the old tool never creates one. What coffer creates on first
    // use is the repository in it. (The name is unique per run in case the server is shared.)
    let bucket = format!("agent-os-backups-{}", std::process::id());
    let mk = run(
        &[
            "curl",
            "-sS",
            "-f",
            "-X",
            "PUT",
            &format!("{}/{bucket}", s3.endpoint),
        ],
        30,
    );
    report.require(
        "-",
        &format!("create the bucket {bucket} (the seed's checklist)"),
        mk.ok(),
        mk.describe(),
    );
    let endpoint_hostport = s3
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let st = Stack::new(
        "agent-os",
        "1",
        &[
            ("BACKUP_S3_BUCKET_NAME", &bucket),
            ("BACKUP_S3_ENDPOINT", &endpoint_hostport),
            ("BACKUP_S3_ACCESS_KEY_ID", &s3.key_id),
            ("BACKUP_S3_SECRET_ACCESS_KEY", &s3.secret),
        ],
    );
    let files: &[&str] = &["docker-compose.production.yml"];
    let backup = st.name("volume-backup-prod");

    let up = st.compose(files, &["up", "-d"], &[]);
    report.require(
        "1",
        "`docker-compose up -d` (seed 001)",
        up.ok(),
        up.describe(),
    );
    let labelled = ["db_prod", "windmill-db-prod", "storage_prod"];
    let mut ids = Vec::new();
    for svc in labelled.iter().chain(["apps"].iter()) {
        let id = st.service_container(files, svc);
        report.require("-", &format!("container of {svc}"), id.is_some(), "");
        ids.push((svc.to_string(), id.unwrap()));
    }
    let db_mp = st.volume_mountpoint("supabase-db-data");
    let writing = wait_for(Duration::from_secs(30), || {
        (read_counter(&db_mp.join("a")) > 3
            && st
                .volume_mountpoint("n8n_storage")
                .join("state.txt")
                .exists())
        .then_some(())
    });
    report.require("-", "the stand-in databases write", writing.is_some(), "");
    wait_registered(&report, &backup, "0 3 * * *", 20);
    let started_before: Vec<(String, String)> = ids
        .iter()
        .map(|(s, id)| {
            (
                s.clone(),
                inspect(id, "{{.State.StartedAt}}").unwrap_or_default(),
            )
        })
        .collect();
    let counter_before = read_counter(&db_mp.join("a"));

    // "Run manual test backup: docker exec volume-backup-prod backup"
    let ok = manual_backup(&report, &backup, &["backup"], "seed 001 Testing");
    // "docker logs volume-backup-prod --tail 50" ... Look for: "Backup completed successfully"
    let tail50 = run(&["docker", "logs", &backup, "--tail", "50"], 30).text();
    report.check(
        "1",
        "`docker logs volume-backup-prod --tail 50` contains \"Backup completed successfully\"",
        tail50.contains(COMPLETED),
        tail(&tail50, 50),
    );

    // The labelled databases were stopped briefly and run again; the others never stopped.
    for ((svc, id), (_, before)) in ids.iter().zip(&started_before) {
        let state_ok = wait_for(Duration::from_secs(30), || running(id).then_some(()));
        let after = inspect(id, "{{.State.StartedAt}}").unwrap_or_default();
        if svc == "apps" {
            report.check(
                "4",
                "the unlabelled container (n8n etc.) kept running and was not restarted",
                state_ok.is_some() && &after == before,
                format!("StartedAt {before} -> {after}"),
            );
            continue;
        }
        let stopped_at = inspect(id, "{{.State.FinishedAt}}").unwrap_or_default();
        let downtime = match (parse_time(&stopped_at), parse_time(&after)) {
            (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
            _ => None,
        };
        report.check(
            "4",
            &format!("labelled {svc} was stopped during the backup and runs again"),
            ok && state_ok.is_some() && &after != before,
            format!(
                "running {:?}; StartedAt {before} -> {after}",
                state_ok.is_some()
            ),
        );
        report.check(
            "4",
            &format!("{svc} was stopped only briefly (< 30 s)"),
            downtime.is_some_and(|d| (0.0..30.0).contains(&d)) && &after != before,
            format!("stopped {stopped_at}, started {after}: {downtime:?} s"),
        );
    }

    // One snapshot holding the seven volumes, none of the windmill caches.
    let snaps = snapshots_in(&backup);
    report.check(
        "2",
        "`docker exec volume-backup-prod coffer snapshots --json` works with no flags",
        snaps.is_ok(),
        snaps.clone().err().unwrap_or_default(),
    );
    let snaps = snaps.unwrap_or_default();
    let want: BTreeSet<String> = SEED1_VOLUMES.iter().map(|s| s.to_string()).collect();
    report.check(
        "4",
        "one snapshot per run, holding the seven backed-up volumes",
        snaps.len() == 1 && source_names(&snaps[0]) == want,
        format!("{snaps:?}"),
    );

    // The bucket holds the repository: open it from the host and restore.
    let env = common::Env::new();
    let url = format!("s3://{bucket}?endpoint={}", s3.endpoint);
    let host_snaps = common::s3_server::run(&env, s3, ["snapshots", "--json", "--repo", &url]);
    let listing = run(
        &[
            "curl",
            "-s",
            &format!("{}/{bucket}?list-type=2", s3.endpoint),
        ],
        30,
    );
    let host_list = if host_snaps.code == 0 {
        serde_json::from_str::<Value>(&host_snaps.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    report.check(
        "6",
        &format!(
            "s3://{bucket} holds a coffer repository (created on first use) with the run's snapshot"
        ),
        host_list.len() == 1,
        format!(
            "`coffer snapshots --repo {url}`: exit {}\n{}{}\nbucket listing: {}",
            host_snaps.code,
            host_snaps.stdout,
            host_snaps.stderr,
            truncate(&listing.stdout, 1500)
        ),
    );
    if host_list.len() == 1 {
        let target = env.path("restored");
        let r = common::s3_server::run(
            &env,
            s3,
            [
                "restore",
                "--repo",
                &url,
                "--snapshot",
                "latest",
                "--target",
                &target.to_string_lossy(),
            ],
        );
        let mut problems = Vec::new();
        if r.code != 0 {
            problems.push(format!("restore exited {}: {}", r.code, r.stderr));
        }
        for vol in ["supabase-db-data", "windmill_db_data", "supabase-storage"] {
            let dir = target.join(vol);
            let (a, b) = (read_counter(&dir.join("a")), read_counter(&dir.join("b")));
            if a == 0 || a != b {
                problems.push(format!("{vol}: torn or missing counter a={a} b={b}"));
            }
            let live = std::fs::read_to_string(st.volume_mountpoint(vol).join("PG_VERSION"))
                .unwrap_or_default();
            let got = std::fs::read_to_string(dir.join("PG_VERSION")).unwrap_or_default();
            if live.is_empty() || live != got {
                problems.push(format!("{vol}/PG_VERSION {got:?}, volume has {live:?}"));
            }
        }
        if read_counter(&target.join("supabase-db-data/a")) < counter_before {
            problems.push("supabase-db-data is older than the state before the backup".into());
        }
        for (vol, file, want) in [
            ("n8n_storage", "state.txt", "data of /n8n\n"),
            ("langconnect_storage", "state.txt", "data of /langconnect\n"),
            ("mcp_server_storage", "state.txt", "data of /mcp\n"),
            ("db-config", "postgresql.conf", "max_connections = 100\n"),
        ] {
            let got = std::fs::read_to_string(target.join(vol).join(file)).unwrap_or_default();
            if got != want {
                problems.push(format!("{vol}/{file}: {got:?}, expected {want:?}"));
            }
        }
        for cache in ["windmill_worker_dependency_cache", "windmill_worker_logs"] {
            if target.join(cache).exists() {
                problems.push(format!("{cache} was restored but is not backed up"));
            }
        }
        report.check(
            "6",
            "a restore from the bucket returns the volumes' data (consistent a == b)",
            problems.is_empty(),
            problems.join("\n"),
        );
    }
    report.finish();
}

/// The SMTP sink itself works (so a missing mail in contract 7 is coffer's): curl sends one.
#[test]
fn smtp_sink_receives_a_plain_mail() {
    if tool_works(&["curl", "--version"]).is_err() {
        eprintln!("skipping: no curl");
        return;
    }
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.txt");
    std::fs::write(&mail, "Subject: test\r\n\r\nhello\r\n").unwrap();
    let r = run(
        &[
            "curl",
            "-sS",
            &format!("smtp://127.0.0.1:{}", sink.port),
            "--mail-from",
            "backup@localhost",
            "--mail-rcpt",
            "admin@yourdomain.com",
            "-T",
            &mail.to_string_lossy(),
        ],
        30,
    );
    assert!(r.ok(), "{}", r.describe());
    let got = wait_for(Duration::from_secs(5), || {
        sink.messages().into_iter().next()
    });
    let got = got.unwrap_or_else(|| panic!("the sink kept nothing: {}", sink.all()));
    assert!(
        got.to_lowercase()
            .contains("rcpt to:<admin@yourdomain.com>")
            && got.contains("hello"),
        "{got}"
    );
}
