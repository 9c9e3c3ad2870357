//! The daemon and `run-job` through the real binary: a schedule of every two seconds, a local
//! HTTP listener standing in for webhook and ping receivers, metrics over HTTP and in a
//! textfile, start-up validation, and runs that die (SIGKILL) or are interrupted (SIGTERM).
//! Every spawned process is killed when its test ends, pass or fail.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Env, coffer_bin};

/// One request the test listener received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// A local HTTP server that answers 200 to everything and hands each request to the test.
fn listener() -> (String, Receiver<Request>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let Ok(clone) = s.try_clone() else { continue };
            let mut r = BufReader::new(clone);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let body = String::from_utf8_lossy(&body).into_owned();
            if tx.send(Request { method, path, body }).is_err() {
                break;
            }
        }
    });
    (base, rx)
}

/// Wait for a request matching `pred`, collecting everything seen on the way.
fn wait_for(
    rx: &Receiver<Request>,
    seen: &mut Vec<Request>,
    secs: u64,
    pred: impl Fn(&Request) -> bool,
) -> Request {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => {
                seen.push(r.clone());
                if pred(&r) {
                    return r;
                }
            }
            Err(_) => panic!("no matching request within {secs}s; seen: {seen:#?}"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of a metric line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A spawned coffer process, killed (with its process group) on drop.
struct Spawned {
    child: Child,
    stderr: PathBuf,
}

impl Spawned {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .status();
    }

    /// Wait for the process to end; its exit code (None when killed by a signal).
    fn wait(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "process did not end within {secs}s; stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.signal("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(env: &Env, args: &[&str], tweak: impl FnOnce(&mut std::process::Command)) -> Spawned {
    let stderr = env.path(format!("stderr-{}.log", args[0]));
    // The environment of `Env::cmd`, on a std command (spawned, not waited for).
    let mut c = std::process::Command::new(coffer_bin());
    c.env_clear()
        .current_dir(env.dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", common::PASSWORD)
        .env("COFFER_CACHE_DIR", &env.cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0);
    tweak(&mut c);
    Spawned {
        child: c.spawn().unwrap(),
        stderr,
    }
}

fn write_config(env: &Env, text: &str) -> PathBuf {
    let p = env.path("coffer.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn source(env: &Env) -> PathBuf {
    let src = env.path("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), common::pseudo_random(3, 100_000)).unwrap();
    src
}

fn toml_path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn daemon_runs_on_schedule_notifies_and_serves_metrics() {
    let env = Env::init();
    let src = source(&env);
    let (base, rx) = listener();
    let port = free_port();
    let textfile = env.path("coffer.prom");
    let cfg = write_config(
        &env,
        &format!(
            r#"schedule = "*/2 * * * * *"
[backup]
sources = ["data={src}"]
[retention]
keep_last = 2
[check]
read_data_subset = "50%"
[notify]
webhooks = ["{base}/hook"]
on_success = true
pings = ["{base}/ping/abc"]
[metrics]
textfile = "{textfile}"
"#,
            src = toml_path(&src),
            textfile = toml_path(&textfile)
        ),
    );
    let addr = format!("127.0.0.1:{port}");
    let d = spawn(
        &env,
        &[
            "daemon",
            "--config",
            cfg.to_str().unwrap(),
            "--metrics-listen",
            &addr,
        ],
        |_| {},
    );
    let mut seen = Vec::new();
    let start = wait_for(&rx, &mut seen, 60, |r| r.path == "/ping/abc/start");
    assert_eq!(start.method, "POST");
    let hook = wait_for(&rx, &mut seen, 60, |r| r.path == "/hook");
    let v: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["snapshot"].as_str().map(str::len), Some(64), "{v}");
    assert!(v["bytes_added"].as_u64().unwrap() > 0, "{v}");
    assert!(v["duration_secs"].as_f64().is_some(), "{v}");
    assert!(v["error"].is_null(), "{v}");
    wait_for(&rx, &mut seen, 30, |r| r.path == "/ping/abc");

    // A second scheduled run happens: the job repeats.
    wait_for(&rx, &mut seen, 60, |r| r.path == "/hook");

    let text = http_get(&addr, "/metrics").expect("metrics answer");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(metric(&text, "coffer_snapshots").unwrap() >= 1.0, "{text}");
    assert!(
        metric(&text, "coffer_last_success_timestamp_seconds").is_some(),
        "{text}"
    );
    assert!(
        metric(&text, "coffer_repository_bytes").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "coffer_job_failures_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        metric(&text, "coffer_job_skipped_total").is_some(),
        "{text}"
    );
    let file = std::fs::read_to_string(&textfile).unwrap();
    assert!(metric(&file, "coffer_snapshots").unwrap() >= 1.0, "{file}");
    assert!(http_get(&addr, "/").unwrap().starts_with("HTTP/1.1 404"));

    // One structured line per step.
    let log = d.stderr();
    for step in ["backup", "forget", "check", "sync"] {
        assert!(log.contains(&format!("step=\"{step}\"")), "{log}");
    }
    assert!(log.contains("status=\"not configured\""), "{log}");
    env.run(["health"]).success();
}

#[test]
fn failing_job_sends_the_failure_notification() {
    let env = Env::init();
    let src = source(&env);
    let (base, rx) = listener();
    // A directory that is not a repository: every run fails to open it.
    let not_repo = env.path("not-a-repo");
    std::fs::create_dir_all(&not_repo).unwrap();
    let cfg = write_config(
        &env,
        &format!(
            r#"repository = "{repo}"
interval = "2s"
[backup]
sources = ["{src}"]
[notify]
webhooks = ["{base}/hook"]
pings = ["{base}/ping"]
"#,
            repo = toml_path(&not_repo),
            src = toml_path(&src)
        ),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _d = spawn(
        &env,
        &[
            "daemon",
            "--config",
            cfg.to_str().unwrap(),
            "--metrics-listen",
            &addr,
        ],
        |c| {
            c.env_remove("COFFER_REPO");
        },
    );
    let mut seen = Vec::new();
    let fail = wait_for(&rx, &mut seen, 60, |r| r.path == "/ping/fail");
    assert!(fail.body.contains("no coffer repository"), "{fail:?}");
    let hook = wait_for(&rx, &mut seen, 60, |r| r.path == "/hook");
    let v: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["snapshot"].is_null(), "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.starts_with("backup: ") && e.contains("no coffer repository"),
        "{e}"
    );
    assert_eq!(v["steps"][1]["status"], "skipped", "{v}");
    // The start ping came first; no success ping at all.
    assert!(seen.iter().any(|r| r.path == "/ping/start"), "{seen:?}");
    assert!(!seen.iter().any(|r| r.path == "/ping"), "{seen:?}");
    let text = http_get(&addr, "/metrics").unwrap();
    assert!(
        metric(&text, "coffer_job_failures_total").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "coffer_last_success"), Some(0.0), "{text}");
}

#[test]
fn run_job_runs_once_and_fails_non_zero() {
    let env = Env::init();
    let src = source(&env);
    let cfg = write_config(
        &env,
        &format!(
            "[backup]\nsources = [\"{}\"]\n[retention]\nkeep_last = 1\n",
            toml_path(&src)
        ),
    );
    let c = cfg.to_str().unwrap();
    let out = env.run(["run-job", "--config", c, "--json"]);
    out.success();
    let r = out.json();
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["snapshot_count"], 1, "{r}");
    env.run(["run-job", "--config", c]).success();
    // keep_last = 1: forget removed the first snapshot.
    assert_eq!(env.snapshots().len(), 1);
    env.run(["health"]).success();

    // The source disappears: the run fails, health says so.
    std::fs::remove_dir_all(&src).unwrap();
    let out = env.run(["run-job", "--config", c]);
    out.expect_code(1).stderr_has("job failed: backup:");
    let h = env.run(["health", "--json"]);
    h.expect_code(1);
    let v = h.json();
    assert_eq!(v["last_job"], "failed", "{v}");
    assert!(
        v["last_job_error"].as_str().unwrap().contains("backup"),
        "{v}"
    );
    // Retention did not run after the failed backup: the one snapshot is still there.
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let env = Env::init();
    let cases: &[(&str, &str)] = &[
        (
            "[backup]\nsources = [\"/x\"]\n[retention]\nkeep_within = \"soon\"\n",
            "retention.keep_within",
        ),
        (
            "schedule = \"0 25 * * *\"\n[backup]\nsources = [\"/x\"]\n",
            "schedule",
        ),
        (
            "[backup]\nsources = [\"/x\"]\n[notify]\nwebhooks = [\"ftp://h/x\"]\n",
            "notify.webhooks",
        ),
        ("[backup]\nsourcez = [\"/x\"]\n", "sourcez"),
        // No file, no variables: the old default, every directory under /backup, which is
        // missing here.
        ("", "/backup"),
    ];
    for (text, key) in cases {
        let cfg = write_config(&env, text);
        for cmd in ["daemon", "run-job"] {
            let out = env.run([cmd, "--config", cfg.to_str().unwrap()]);
            out.expect_code(1).stderr_has(key);
        }
    }
    // The old environment variables are checked too, and named.
    let cfg = write_config(&env, "[backup]\nsources = [\"/x\"]\n");
    let mut c = env.cmd();
    c.env("BACKUP_CRON_EXPRESSION", "every night");
    env.run_cmd(c, ["daemon", "--config", cfg.to_str().unwrap()])
        .expect_code(1)
        .stderr_has("BACKUP_CRON_EXPRESSION");
    let mut c = env.cmd();
    c.env("BACKUP_EXCLUDE_REGEXP", "(unclosed");
    env.run_cmd(c, ["daemon", "--config", cfg.to_str().unwrap()])
        .expect_code(1)
        .stderr_has("BACKUP_EXCLUDE_REGEXP");
    // A missing file is named.
    env.run(["daemon", "--config", "/nonexistent/coffer.toml"])
        .expect_code(1)
        .stderr_has("/nonexistent/coffer.toml");
}

#[test]
fn old_environment_variables_configure_the_job() {
    let env = Env::init();
    // The old layout: one directory per volume under BACKUP_SOURCES.
    let root = env.path("backup");
    for v in ["workspace", "claude-config"] {
        std::fs::create_dir_all(root.join(v)).unwrap();
        std::fs::write(root.join(v).join("f.txt"), v).unwrap();
        std::fs::write(root.join(v).join("debug.log"), "noise").unwrap();
    }
    let mut c = env.cmd();
    c.env("BACKUP_SOURCES", &root)
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_EXCLUDE_REGEXP", "\\.log$");
    env.run_cmd(c, ["run-job"]).success();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    let names: Vec<&str> = snaps[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["claude-config", "workspace"]);
    let ls = env.run(["ls", "--snapshot", "latest"]);
    ls.success();
    assert!(ls.stdout.contains("workspace/f.txt"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("debug.log"), "{}", ls.stdout);
}

/// A password command that announces it started, then hangs: the run is then inside its
/// backup step, with its state recorded as running.
fn hanging_run(env: &Env, cfg: &Path) -> Spawned {
    let marker = env.path("in-backup");
    let cmd = format!("touch {}; sleep 60; echo x", marker.display());
    let s = spawn(env, &["run-job", "--config", cfg.to_str().unwrap()], |c| {
        c.env_remove("COFFER_PASSWORD")
            .env("COFFER_PASSWORD_COMMAND", &cmd);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the run never started: {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

#[test]
fn a_killed_run_is_reported_by_health_and_the_next_run() {
    let env = Env::init();
    let src = source(&env);
    let (base, rx) = listener();
    let cfg = write_config(
        &env,
        &format!(
            "[backup]\nsources = [\"{}\"]\n[notify]\nwebhooks = [\"{base}/hook\"]\n",
            toml_path(&src)
        ),
    );
    env.run(["backup", src.to_str().unwrap()]).success();
    let mut run = hanging_run(&env, &cfg);
    // While it runs, health does not blame it; a second run is refused (one at a time).
    env.run(["health"]).success();
    env.run(["run-job", "--config", cfg.to_str().unwrap()])
        .expect_code(11)
        .stderr_has("another job run is in progress");
    run.signal("-KILL");
    assert_eq!(run.wait(30), None);

    let out = env.run(["health"]);
    out.expect_code(1)
        .stderr_has("died without finishing during step backup");

    // The next run reports the dead one (a failure webhook), then runs normally.
    env.run(["run-job", "--config", cfg.to_str().unwrap()])
        .success();
    let mut seen = Vec::new();
    let hook = wait_for(&rx, &mut seen, 10, |r| r.path == "/hook");
    let v: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("died without finishing"),
        "{v}"
    );
    env.run(["health"]).success();
}

#[test]
fn sigterm_aborts_the_run_and_records_it() {
    let env = Env::init();
    let src = source(&env);
    let cfg = write_config(
        &env,
        &format!("[backup]\nsources = [\"{}\"]\n", toml_path(&src)),
    );
    env.run(["backup", src.to_str().unwrap()]).success();
    let mut run = hanging_run(&env, &cfg);
    // Only the coffer process, as `docker stop` would.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status();
    assert_eq!(run.wait(30), Some(143));
    let h = env.run(["health", "--json"]);
    h.expect_code(1);
    let v = h.json();
    assert_eq!(v["last_job"], "failed", "{v}");
    assert!(
        v["last_job_error"]
            .as_str()
            .unwrap()
            .contains("interrupted by SIGTERM during step backup"),
        "{v}"
    );
    // No lock is left behind: a normal run goes through.
    env.run(["run-job", "--config", cfg.to_str().unwrap()])
        .success();
}
