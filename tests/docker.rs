//! Docker integration tests against the real engine (`/var/run/docker.sock` or `DOCKER_HOST`).
//!
//! No image can be pulled here: the tests build `coffer-test/busybox:latest` themselves,
//! `FROM scratch` with Debian's static busybox (`apt-get install busybox-static`). Every
//! container and volume a test creates carries a unique name prefix and is removed when the
//! test ends. The tests read volumes at their mountpoints, so they need root.
//!
//! Under `CI=true` a missing engine, image ingredient or root is a failure; elsewhere the
//! tests print why they skip.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Env, exit};

const IMAGE: &str = "coffer-test/busybox:latest";
const BUSYBOX: &str = "/bin/busybox";

/// Writes the same counter to `a` then `b`, forever; on SIGTERM it finishes the iteration, so
/// a consistent state has `a == b`.
const WRITER: &str = "trap 'stop=1' TERM; i=$(cat /data/a 2>/dev/null || echo 0); \
    while [ -z \"$stop\" ]; do i=$((i+1)); echo $i > /data/a; echo $i > /data/b; sleep 0.05; done";
/// Sleeps until told to stop.
const SLEEPER: &str = "trap 'exit 0' TERM; while true; do sleep 0.1; done";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (outside CI) or fail (in CI) with a reason.
fn unavailable(reason: String) -> Option<Fixture> {
    if in_ci() {
        panic!("Docker tests cannot run under CI=true: {reason}");
    }
    eprintln!("skipping Docker test: {reason}");
    None
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
}

#[track_caller]
fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Build the test image once per test run (it is kept between runs).
fn ensure_image() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if docker(&["image", "inspect", IMAGE]).status.success() {
                return Ok(());
            }
            if !std::path::Path::new(BUSYBOX).exists() {
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
            let ctx_path = ctx.path().to_string_lossy().into_owned();
            let o = Command::new("docker")
                .args(["build", "-q", "-t", IMAGE, &ctx_path])
                .env("DOCKER_BUILDKIT", "0")
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!(
                    "building {IMAGE}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Ok(())
        })
        .clone()
}

/// Containers and volumes of one test, removed on drop.
struct Fixture {
    prefix: String,
    containers: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        match Command::new("docker")
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return unavailable(format!(
                    "no Docker engine answers: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => return unavailable(format!("the docker command cannot run: {e}")),
        }
        if !common::is_root() {
            return unavailable("the tests read volume mountpoints and need root".into());
        }
        if let Err(e) = ensure_image() {
            return unavailable(e);
        }
        let n = N.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            prefix: format!("coffer-t{}-{n}-{test}", std::process::id()),
            containers: Mutex::new(Vec::new()),
            volumes: Mutex::new(Vec::new()),
        })
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Create a volume `<prefix>-<what>` with labels.
    fn volume(&self, what: &str, labels: &[&str]) -> String {
        let name = self.name(what);
        let mut args = vec!["volume", "create"];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push(&name);
        docker_ok(&args);
        self.volumes.lock().unwrap().push(name.clone());
        name
    }

    fn mountpoint(&self, volume: &str) -> PathBuf {
        PathBuf::from(docker_ok(&[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            volume,
        ]))
    }

    /// `docker run -d --name <prefix>-<what> ARGS IMAGE sh -c SCRIPT`.
    fn run(&self, what: &str, args: &[&str], script: &str) -> String {
        let name = self.name(what);
        let mut a = vec!["run", "-d", "--name", &name];
        a.extend_from_slice(args);
        a.extend([IMAGE, "sh", "-c", script]);
        self.containers.lock().unwrap().push(name.clone());
        docker_ok(&a);
        name
    }

    fn running(&self, name: &str) -> bool {
        docker_ok(&["inspect", "-f", "{{.State.Running}}", name]) == "true"
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, name])
    }

    /// Files and their checksums in a volume, as a container sees them.
    fn contents(&self, volume: &str) -> String {
        let mount = format!("{volume}:/data:ro");
        docker_ok(&[
            "run",
            "--rm",
            "-v",
            &mount,
            IMAGE,
            "sh",
            "-c",
            "cd /data && find . | sort && find . -type f | sort | xargs -r sha256sum",
        ])
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_counter(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn unreachable_engine_gives_a_clear_error() {
    let env = Env::init();
    let mut c = env.cmd();
    c.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let out = env.run_cmd(c, ["backup", "--docker", "--all-volumes"]);
    out.expect_code(exit::ERROR)
        .stderr_has("cannot be reached")
        .stderr_has("/nonexistent/docker.sock")
        .stderr_has("DOCKER_HOST");
    let out = env.run([
        "backup",
        "--docker",
        "--docker-host",
        "unix:///nonexistent/docker.sock",
        "--volume",
        "x",
    ]);
    out.expect_code(exit::ERROR).stderr_has("cannot be reached");
    let out = env.run(["backup", "--docker"]);
    out.expect_code(exit::ERROR).stderr_has("say which volumes");
}

#[test]
fn missing_volume_is_a_clear_error() {
    let Some(fx) = Fixture::new("missing") else {
        return;
    };
    let env = Env::init();
    let name = fx.name("nope");
    env.run(["backup", "--docker", "--volume", &name])
        .expect_code(exit::ERROR)
        .stderr_has("does not exist");
}

#[test]
fn labelled_container_stops_only_for_the_second_pass_and_the_snapshot_is_consistent() {
    let Some(fx) = Fixture::new("consistent") else {
        return;
    };
    let vol = fx.volume("data", &[]);
    let mp = fx.mountpoint(&vol);
    std::fs::write(mp.join("static.txt"), "unchanging\n".repeat(1000)).unwrap();
    let vol_mount = format!("{vol}:/data");
    let writer = fx.run(
        "writer",
        &[
            "-v",
            &vol_mount,
            "--label",
            "docker-volume-backup.stop-during-backup=true",
            "--label",
            "coffer.exec-pre=echo dump-$(cat /data/a) > /data/dump.sql",
            "--label",
            "coffer.exec-post=rm -f /data/dump.sql",
        ],
        WRITER,
    );
    let bystander = fx.run("bystander", &["-v", &vol_mount], SLEEPER);
    wait_until("the writer to write", Duration::from_secs(20), || {
        read_counter(&mp.join("a")) > 3
    });
    let started_before = fx.inspect(&writer, "{{.State.StartedAt}}");
    let counter_before = read_counter(&mp.join("a"));

    let env = Env::init();
    let out = env.run([
        "backup",
        "--json",
        "--docker",
        "--volume",
        &vol,
        "--stop-timeout",
        "10",
        "--tag",
        "nightly",
    ]);
    out.success();
    let v = out.json();
    let vb = &v["volumes"][0];
    assert_eq!(vb["volume"], vol.as_str(), "{v}");
    assert!(vb["error"].is_null(), "{v}");
    assert!(vb["first_pass"].is_object(), "a first pass ran: {v}");
    let containers = vb["containers"].as_array().expect("containers");
    assert_eq!(
        containers.len(),
        1,
        "only the labelled container stops: {v}"
    );
    assert_eq!(containers[0]["name"], writer.as_str());
    assert_eq!(containers[0]["started"], true);
    let downtime = containers[0]["downtime_secs"].as_f64().unwrap_or(f64::MAX);
    assert!(downtime < 10.0, "downtime {downtime}s: {v}");
    let tags: Vec<&str> = vb["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tags.contains(&"nightly") && tags.contains(&format!("volume={vol}").as_str()));
    let hooks = vb["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "pre and post ran: {v}");

    // Both containers run; the writer was restarted, the bystander never stopped.
    assert!(fx.running(&writer) && fx.running(&bystander));
    assert_ne!(fx.inspect(&writer, "{{.State.StartedAt}}"), started_before);
    assert_eq!(fx.inspect(&bystander, "{{.RestartCount}}"), "0");
    assert!(
        !mp.join("dump.sql").exists(),
        "the post command removed the dump"
    );

    // The snapshot holds a state the writer wrote (a == b), newer than before the backup,
    // and the pre command's dump.
    let snap = vb["snapshot"]["snapshot_id"].as_str().unwrap().to_string();
    let target = env.path("restored");
    let path_arg = format!("{vol}/");
    env.run([
        "restore",
        "--snapshot",
        &snap,
        "--target",
        target.to_str().unwrap(),
        "--path",
        &path_arg,
    ])
    .success();
    let a = read_counter(&target.join(&vol).join("a"));
    let b = read_counter(&target.join(&vol).join("b"));
    assert_eq!(a, b, "torn state restored");
    assert!(
        a > counter_before,
        "restored {a}, before the backup {counter_before}"
    );
    let dump = std::fs::read_to_string(target.join(&vol).join("dump.sql")).unwrap();
    assert!(dump.starts_with("dump-"), "{dump}");
    assert_eq!(
        std::fs::read_to_string(target.join(&vol).join("static.txt")).unwrap(),
        "unchanging\n".repeat(1000)
    );

    // `snapshots --tag volume=NAME` finds it.
    let tag = format!("volume={vol}");
    let snaps = env.run(["snapshots", "--json", "--tag", &tag]);
    snaps.success();
    assert_eq!(snaps.json().as_array().map(|a| a.len()), Some(1));
}

#[test]
fn dependents_stop_first_and_start_last() {
    let Some(fx) = Fixture::new("order") else {
        return;
    };
    let vol = fx.volume("data", &[]);
    let vol_mount = format!("{vol}:/data");
    let label = "coffer.stop=true";
    let db = fx.run("db", &["-v", &vol_mount, "--label", label], SLEEPER);
    // The app shares the db's network namespace: it cannot start before the db does.
    let net = format!("container:{db}");
    let app = fx.run(
        "app",
        &["-v", &vol_mount, "--label", label, "--network", &net],
        SLEEPER,
    );
    let env = Env::init();
    let out = env.run([
        "backup",
        "--json",
        "--docker",
        "--volume",
        &vol,
        "--stop-timeout",
        "5",
    ]);
    out.success();
    let v = out.json();
    let names: Vec<&str> = v["volumes"][0]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    // Reported in start order: the db first.
    assert_eq!(names, [db.as_str(), app.as_str()], "{v}");
    assert!(fx.running(&db) && fx.running(&app));
    let finished = |c: &str| fx.inspect(c, "{{.State.FinishedAt}}");
    let started = |c: &str| fx.inspect(c, "{{.State.StartedAt}}");
    // RFC 3339 times of the same zone compare as strings.
    assert!(finished(&app) < finished(&db), "the app stopped first");
    assert!(started(&db) < started(&app), "the db started first");
}

#[test]
fn failing_pre_command_fails_the_volume_and_containers_keep_running() {
    let Some(fx) = Fixture::new("prefail") else {
        return;
    };
    let bad = fx.volume("bad", &[]);
    let good = fx.volume("good", &[]);
    std::fs::write(fx.mountpoint(&good).join("f"), "x").unwrap();
    let bad_mount = format!("{bad}:/data");
    let c = fx.run(
        "db",
        &[
            "-v",
            &bad_mount,
            "--label",
            "docker-volume-backup.stop-during-backup=true",
            "--label",
            "docker-volume-backup.archive-pre=echo pg_dump: connection refused >&2; exit 3",
        ],
        SLEEPER,
    );
    let env = Env::init();
    let out = env.run([
        "backup",
        "--docker",
        "--volume",
        &bad,
        "--volume",
        &good,
        "--stop-timeout",
        "5",
    ]);
    out.expect_code(exit::ERROR)
        .stderr_has("pg_dump: connection refused")
        .stderr_has("exit code 3")
        .stderr_has(&bad);
    assert!(
        fx.running(&c),
        "the container runs after a failed pre command"
    );
    // The other volume was backed up.
    let tag = format!("volume={good}");
    let snaps = env.run(["snapshots", "--json", "--tag", &tag]);
    assert_eq!(snaps.json().as_array().map(|a| a.len()), Some(1));
    let tag = format!("volume={bad}");
    let snaps = env.run(["snapshots", "--json", "--tag", &tag]);
    assert_eq!(snaps.json().as_array().map(|a| a.len()), Some(0));
}

#[test]
fn stopped_containers_stay_stopped_and_label_values_scope() {
    let Some(fx) = Fixture::new("scope") else {
        return;
    };
    let vol = fx.volume("data", &[]);
    let vol_mount = format!("{vol}:/data");
    let idle = fx.run(
        "idle",
        &["-v", &vol_mount, "--label", "coffer.stop=true"],
        SLEEPER,
    );
    docker_ok(&["stop", "-t", "5", &idle]);
    let nightly = fx.run(
        "nightly",
        &[
            "-v",
            &vol_mount,
            "--label",
            "docker-volume-backup.stop-during-backup=nightly",
        ],
        SLEEPER,
    );
    let env = Env::init();
    let out = env.run(["backup", "--json", "--docker", "--volume", &vol]);
    out.success();
    let v = out.json();
    assert_eq!(v["volumes"][0]["containers"], serde_json::json!([]), "{v}");
    assert_eq!(v["volumes"][0]["left_stopped"], serde_json::json!([idle]));
    assert!(
        v["volumes"][0]["first_pass"].is_null(),
        "nothing stops: one pass"
    );
    assert!(!fx.running(&idle));
    let before = fx.inspect(&nightly, "{{.State.StartedAt}}");

    let out = env.run([
        "backup",
        "--json",
        "--docker",
        "--volume",
        &vol,
        "--stop-label-value",
        "nightly",
        "--stop-timeout",
        "5",
    ]);
    out.success();
    let v = out.json();
    assert_eq!(v["volumes"][0]["containers"][0]["name"], nightly.as_str());
    assert!(fx.running(&nightly));
    assert_ne!(fx.inspect(&nightly, "{{.State.StartedAt}}"), before);
    assert!(
        !fx.running(&idle),
        "an already stopped container stays stopped"
    );
}

#[test]
fn sigterm_mid_backup_starts_the_containers_again() {
    let Some(fx) = Fixture::new("sigterm") else {
        return;
    };
    let vol = fx.volume("data", &[]);
    let vol_mount = format!("{vol}:/data");
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &vol_mount,
        IMAGE,
        "dd",
        "if=/dev/urandom",
        "of=/data/big",
        "bs=1M",
        "count=512",
    ]);
    let c = fx.run(
        "svc",
        &["-v", &vol_mount, "--label", "coffer.stop=true"],
        SLEEPER,
    );
    let env = Env::init();
    let mut cmd = std::process::Command::new(common::coffer_bin());
    cmd.env_clear()
        .current_dir(env.dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", common::PASSWORD)
        .env("COFFER_CACHE_DIR", &env.cache)
        .args([
            "backup",
            "--docker",
            "--volume",
            &vol,
            "--single-pass",
            "--stop-timeout",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn coffer");
    wait_until("the container to stop", Duration::from_secs(30), || {
        !fx.running(&c)
    });
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).expect("pid"),
        rustix::process::Signal::TERM,
    );
    let status = child.wait().expect("wait for coffer");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert_eq!(status.code(), Some(143), "stderr: {stderr}");
    assert!(stderr.contains("started container"), "{stderr}");
    assert!(fx.running(&c), "the container runs again after SIGTERM");
}

#[test]
fn restore_into_a_volume_gives_containers_the_exact_content() {
    let Some(fx) = Fixture::new("restore") else {
        return;
    };
    let src = fx.volume("src", &[]);
    let src_mount = format!("{src}:/data");
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &src_mount,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /data/sub/deeper && echo one > /data/one && \
         dd if=/dev/urandom of=/data/sub/blob bs=64k count=40 2>/dev/null && \
         ln -s ../one /data/sub/link && chmod 600 /data/one && echo x > /data/sub/deeper/x",
    ]);
    let env = Env::init();
    let out = env.run(["backup", "--json", "--docker", "--volume", &src]);
    out.success();
    let snap = out.json()["volumes"][0]["snapshot"]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Into a new volume.
    let dst = fx.name("dst");
    fx.volumes.lock().unwrap().push(dst.clone());
    env.run([
        "restore",
        "--snapshot",
        &snap,
        "--to-volume",
        &dst,
        "--create",
    ])
    .success();
    assert_eq!(fx.contents(&dst), fx.contents(&src));

    // Into a volume in use, with stale content: the user stops for the swap and runs after.
    let used = fx.volume("used", &[]);
    let used_mount = format!("{used}:/data");
    std::fs::write(fx.mountpoint(&used).join("stale"), "old").unwrap();
    let user = fx.run("user", &["-v", &used_mount], SLEEPER);
    let path_arg = format!("{src}/");
    let out = env.run([
        "restore",
        "--json",
        "--snapshot",
        &snap,
        "--path",
        &path_arg,
        "--to-volume",
        &used,
        "--stop-timeout",
        "5",
    ]);
    out.success();
    assert_eq!(out.json()["containers"][0]["name"], user.as_str());
    assert!(fx.running(&user));
    assert_eq!(fx.contents(&used), fx.contents(&src));

    // A missing volume without --create is an error.
    let missing = fx.name("missing");
    env.run(["restore", "--snapshot", &snap, "--to-volume", &missing])
        .expect_code(exit::ERROR)
        .stderr_has("--create");
}

#[test]
fn volumes_by_label_and_compose_project_are_tagged() {
    let Some(fx) = Fixture::new("select") else {
        return;
    };
    let project = fx.name("proj");
    let project_label = format!("com.docker.compose.project={project}");
    let web = fx.volume("web", &[&project_label, "com.docker.compose.volume=web"]);
    let db = fx.volume("db", &[&project_label, "com.docker.compose.volume=db"]);
    let unique = format!("{}=yes", fx.name("mark"));
    let marked = fx.volume("marked", &[&unique]);
    let db_mount = format!("{db}:/data");
    fx.run(
        "db-1",
        &[
            "-v",
            &db_mount,
            "--label",
            &project_label,
            "--label",
            "com.docker.compose.service=postgres",
        ],
        SLEEPER,
    );
    let env = Env::init();
    let out = env.run([
        "backup",
        "--json",
        "--docker",
        "--compose-project",
        &project,
    ]);
    out.success();
    let v = out.json();
    let vols: Vec<&str> = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["volume"].as_str())
        .collect();
    assert_eq!(vols, [db.as_str(), web.as_str()], "{v}");
    let tag = "compose-service=postgres";
    let snaps = env.run(["snapshots", "--json", "--tag", tag]);
    let list = snaps.json();
    assert_eq!(list.as_array().map(|a| a.len()), Some(1), "{list}");
    assert_eq!(list[0]["sources"][0]["name"], db.as_str());
    let ptag = format!("compose-project={project}");
    let snaps = env.run(["snapshots", "--json", "--tag", &ptag]);
    assert_eq!(snaps.json().as_array().map(|a| a.len()), Some(2));

    let out = env.run(["backup", "--json", "--docker", "--volume-label", &unique]);
    out.success();
    assert_eq!(out.json()["volumes"][0]["volume"], marked.as_str());
    let nothing = format!("{}=nothing", fx.name("mark"));
    env.run(["backup", "--docker", "--volume-label", &nothing])
        .expect_code(exit::ERROR)
        .stderr_has("no Docker volume matches");
}

/// `docker-compose down -v` of a project when the test ends.
struct ComposeProject {
    dir: tempfile::TempDir,
    name: String,
}

impl ComposeProject {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker-compose")
            .args(args)
            .current_dir(self.dir.path())
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env("COFFER_PASSWORD", common::PASSWORD)
            .env("COFFER_IMAGE", COFFER_IMAGE)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running docker-compose {args:?}: {e}"))
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"]);
    }
}

const COFFER_IMAGE: &str = "coffer-test/coffer:latest";

/// Build the coffer image from the binary under test, once per test binary; returns docs/docker.
fn build_coffer_image() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/docker");
    let r = BUILT.get_or_init(|| {
        let built = Command::new(docs.join("build-image.sh"))
            .arg(common::coffer_bin())
            .arg(COFFER_IMAGE)
            .output()
            .map_err(|e| format!("build-image.sh: {e}"))?;
        if built.status.success() {
            Ok(())
        } else {
            Err(format!(
                "build-image.sh: {}",
                String::from_utf8_lossy(&built.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    docs
}

/// The compose example with the app's volume under a restore from inside the backup service
/// (read-only mounts: the work is done by a helper container): the caller is killed with
/// SIGKILL half way, the helper goes away by itself, a rerun finishes the job and starts the
/// app again, and the safety snapshot the first run took holds the state before, byte for byte.
#[test]
fn restore_from_the_service_survives_sigkill_and_a_rerun_finishes() {
    let Some(_fx) = Fixture::new("killrestore") else {
        return;
    };
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(!in_ci(), "docker-compose is missing under CI=true");
        eprintln!("skipping: docker-compose is missing");
        return;
    }
    let docs = build_coffer_image();
    let project = ComposeProject {
        dir: tempfile::tempdir().expect("temporary directory"),
        name: format!("cofferkill{}", std::process::id()),
    };
    std::fs::copy(
        docs.join("docker-compose.yml"),
        project.dir.path().join("docker-compose.yml"),
    )
    .expect("copy the example");
    let up = project.compose(&["up", "-d"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let app = format!("{}_app_1", project.name);
    let backup = format!("{}_backup_1", project.name);
    let volume = format!("{}_appdata", project.name);
    wait_until("the daemon's schedule", Duration::from_secs(30), || {
        let o = docker(&["logs", &backup]);
        String::from_utf8_lossy(&o.stderr).contains("Scheduled backup task registered")
    });
    // What the snapshot holds: 48 files of 4 MiB.
    docker_ok(&[
        "exec",
        &app,
        "sh",
        "-c",
        "mkdir -p /data/files && for i in $(seq 1 48); do \
         dd if=/dev/urandom of=/data/files/f$i bs=1M count=4 2>/dev/null; done",
    ]);
    let sums = |pattern: &str| {
        docker_ok(&[
            "exec",
            &app,
            "sh",
            "-c",
            &format!("cd /data && md5sum {pattern} | sort"),
        ])
    };
    let in_snapshot = sums("files/*");
    let run = docker(&["exec", &backup, "backup"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    // The state before the restore: other content under the same names, and extra files.
    docker_ok(&[
        "exec",
        &app,
        "sh",
        "-c",
        "for i in $(seq 1 48); do dd if=/dev/urandom of=/data/files/f$i bs=1M count=4 \
         2>/dev/null; done && mkdir -p /data/extra && echo only-before > /data/extra/x",
    ]);
    let before = sums("files/* extra/*");
    let data = PathBuf::from(docker_ok(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}}",
        &volume,
    ]));
    let restore_args = [
        "exec",
        &backup,
        "restore",
        "--snapshot",
        "latest",
        "--path",
        "appdata/",
        "--to-volume",
        &volume,
    ];
    let mut first = Command::new("docker")
        .args(restore_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec restore");
    // Kill the caller (coffer inside the service, called as `restore`) once files are being
    // written into the volume.
    let has_temp = || {
        std::fs::read_dir(data.join("files")).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains(".coffer-tmp-"))
        })
    };
    wait_until("the restore to write", Duration::from_secs(120), has_temp);
    let kill = Command::new("pkill")
        .args(["-KILL", "-f", "^restore --snapshot latest --path appdata/"])
        .status()
        .expect("pkill");
    assert!(kill.success(), "no restore process to kill");
    let _ = first.wait();
    wait_until("the helper to go away", Duration::from_secs(60), || {
        docker_ok(&["ps", "-a", "-q", "--filter", "label=coffer.helper"]).is_empty()
    });
    assert!(!docker_ok(&["inspect", "-f", "{{.State.Running}}", &app]).contains("true"));

    // The rerun finishes the job and starts the app the killed run stopped.
    let rerun = docker(&restore_args);
    let out = String::from_utf8_lossy(&rerun.stdout).to_string();
    assert!(
        rerun.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert!(out.contains("pre-restore"), "{out}");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &app]),
        "true"
    );
    assert_eq!(sums("files/*"), in_snapshot);
    assert!(
        !data.join("extra").exists(),
        "an entry not in the snapshot stayed"
    );
    let leftovers: Vec<String> = list_files(&data)
        .into_iter()
        .filter(|p| p.contains(".coffer-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(docker_ok(&["ps", "-a", "-q", "--filter", "label=coffer.helper"]).is_empty());

    // The first safety snapshot (taken before the kill) holds the state before, byte for byte.
    let env = Env::new();
    let repo = project.dir.path().join("backups/coffer/repository");
    let repo = repo.to_str().unwrap();
    let snaps = env.run(["--repo", repo, "--json", "snapshots"]);
    snaps.success();
    let list = snaps.json();
    let safety: Vec<&serde_json::Value> = list
        .as_array()
        .expect("snapshots array")
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "pre-restore"))
        })
        .collect();
    assert!(!safety.is_empty(), "no pre-restore snapshot");
    let id = safety[0]["id"].as_str().expect("id");
    let target = env.path("before");
    env.run([
        "--repo",
        repo,
        "restore",
        "--snapshot",
        id,
        "--target",
        target.to_str().unwrap(),
    ])
    .success();
    let restored = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\"/appdata && md5sum files/* extra/* | sort")
        .arg("sh")
        .arg(&target)
        .output()
        .expect("md5sum");
    assert_eq!(
        String::from_utf8_lossy(&restored.stdout).trim(),
        before.trim()
    );
}

/// Every path below `root`, relative.
fn list_files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn the_compose_example_backs_up_and_restores() {
    let Some(_fx) = Fixture::new("compose") else {
        return;
    };
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        if in_ci() {
            panic!("docker-compose is missing under CI=true");
        }
        eprintln!("skipping: docker-compose is missing");
        return;
    }
    let docs = build_coffer_image();
    let project = ComposeProject {
        dir: tempfile::tempdir().expect("temporary directory"),
        name: format!("coffercompose{}", std::process::id()),
    };
    std::fs::copy(
        docs.join("docker-compose.yml"),
        project.dir.path().join("docker-compose.yml"),
    )
    .expect("copy the example");
    let up = project.compose(&["up", "-d"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let app = format!("{}_app_1", project.name);
    wait_until("the app to write", Duration::from_secs(20), || {
        let o = docker(&["exec", &app, "cat", "/data/a"]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u64>()
            .is_ok_and(|n| n > 3)
    });
    // The service is the daemon; the old manual trigger runs its job now.
    let backup = format!("{}_backup_1", project.name);
    wait_until("the daemon's schedule", Duration::from_secs(30), || {
        let o = docker(&["logs", &backup]);
        String::from_utf8_lossy(&o.stderr).contains("Scheduled backup task registered")
    });
    let run = docker(&["exec", &backup, "backup"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the manual trigger failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(&format!("stopped {app} for at most")),
        "{stdout}"
    );
    assert!(stdout.contains("Backup completed successfully"), "{stdout}");
    let logs = docker(&["logs", &backup]);
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("Backup completed successfully"),
        "docker logs shows the run"
    );
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &app]),
        "true"
    );

    // The repository the service created restores a consistent state with the dump.
    let env = Env::new();
    let repo = project.dir.path().join("backups/coffer/repository");
    let target = env.path("restored");
    env.run([
        "--repo",
        repo.to_str().unwrap(),
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .success();
    // One source per /backup/<name> mount, named as the old archive named it.
    let vol_dir = target.join("appdata");
    let a = read_counter(&vol_dir.join("a"));
    assert!(a > 3 && a == read_counter(&vol_dir.join("b")), "a={a}");
    let dump = std::fs::read_to_string(vol_dir.join("dump.txt")).expect("the pre command's dump");
    assert!(dump.starts_with("dump-"), "{dump}");
    // And the nightly archive the old scripts read.
    let archives: Vec<PathBuf> = std::fs::read_dir(project.dir.path().join("backups"))
        .expect("./backups")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let listed = Command::new("tar")
        .arg("-tzf")
        .arg(&archives[0])
        .output()
        .expect("tar");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("backup/appdata/a"));
}

#[test]
fn permission_denied_on_the_socket_is_clear() {
    let Some(_fx) = Fixture::new("perm") else {
        return;
    };
    let env = Env::new();
    // `nobody` may not use the socket (root:docker, mode 660).
    let mut c = env.wrapped("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        common::coffer_bin().to_str().expect("binary path"),
        "backup",
        "--docker",
        "--all-volumes",
    ]);
    let o = c.output().expect("setpriv");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit::ERROR), "{stderr}");
    assert!(
        stderr.contains("permission denied on the Docker socket"),
        "{stderr}"
    );
}

/// Disaster recovery on a new server: with only the S3 repository's URL, its credentials, the
/// passphrase and an empty cache, `restore --all-volumes --create` recreates every volume the
/// snapshot records, with its content.
#[test]
fn disaster_recovery_recreates_every_volume_from_s3_with_a_fresh_cache() {
    let Some(fx) = Fixture::new("dr") else {
        return;
    };
    let s = common::s3_server::server();
    let env = Env::new();
    let url = s.url("dr");
    let one = fx.volume("one", &[]);
    let two = fx.volume("two", &[]);
    let (m1, m2) = (fx.mountpoint(&one), fx.mountpoint(&two));
    std::fs::create_dir_all(m1.join("db/base")).unwrap();
    std::fs::write(m1.join("db/base/1"), common::pseudo_random(7, 3 << 20)).unwrap();
    std::fs::write(m1.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(m2.join("index.html"), "<h1>hello</h1>\n").unwrap();
    std::os::unix::fs::symlink("index.html", m2.join("home.html")).unwrap();
    let (c1, c2) = (fx.contents(&one), fx.contents(&two));
    common::s3_server::run(&env, s, ["init", "--repo", &url]).success();
    let tag1 = format!("volume:one={one}");
    let tag2 = format!("volume:two={two}");
    let src1 = format!("one={}", m1.display());
    let src2 = format!("two={}", m2.display());
    common::s3_server::run(
        &env,
        s,
        [
            "backup", "--repo", &url, "--tag", &tag1, "--tag", &tag2, &src1, &src2,
        ],
    )
    .success();
    // The server burns down: the volumes are gone.
    docker_ok(&["volume", "rm", &one, &two]);
    let fresh_cache = env.path("new-server-cache");
    let out = common::s3_server::run(
        &env,
        s,
        [
            "--cache-dir",
            fresh_cache.to_str().unwrap(),
            "--repo",
            &url,
            "--json",
            "restore",
            "--snapshot",
            "latest",
            "--all-volumes",
            "--create",
        ],
    );
    out.success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["created"], true, "{l}");
        assert!(l["restore"]["requests"].as_u64().unwrap_or(0) > 0, "{l}");
        // Nothing was there to save.
        assert!(l["safety_snapshot"].is_null(), "{l}");
    }
    assert_eq!(fx.contents(&one), c1);
    assert_eq!(fx.contents(&two), c2);
}
