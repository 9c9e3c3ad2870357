//! An in-memory [`ContainerEngine`] for tests: containers and volumes in a list, every request
//! that changes something written to a log (`stop app`, `start app`, `exec app: cmd`), and
//! failures on demand. No I/O, except the actions a test attaches to a stop (a service that
//! writes its last state to the volume as it shuts down).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::helper::{HelperOutcome, HelperSpec};
use super::label::{ContainerInfo, STOP_LABEL};
use super::volume::DockerVolume;
use super::{ContainerEngine, DockerError};

/// What a stop does besides stopping (run with the engine's state unlocked).
pub type OnStop = Box<dyn Fn() + Send>;

#[derive(Default)]
struct State {
    volumes: Vec<DockerVolume>,
    containers: Vec<ContainerInfo>,
    log: Vec<String>,
    fail_stop: HashSet<String>,
    fail_start: HashSet<String>,
    exec_exit: HashMap<String, i64>,
    helper: Option<HelperOutcome>,
    helper_specs: Vec<HelperSpec>,
}

/// The fake engine.
#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<State>,
    on_stop: Mutex<HashMap<String, OnStop>>,
}

/// A container named `name` (also its id, prefixed `id-`), mounting `volumes`.
pub fn container(name: &str, running: bool, volumes: &[&str]) -> ContainerInfo {
    ContainerInfo {
        id: format!("id-{name}"),
        name: name.to_string(),
        running,
        status: if running { "running" } else { "exited" }.into(),
        volumes: volumes.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// `c` with the stop label (value `true`).
pub fn stopping(mut c: ContainerInfo) -> ContainerInfo {
    c.labels.insert(STOP_LABEL.into(), "true".into());
    c
}

/// `c` with a label.
pub fn labelled(mut c: ContainerInfo, key: &str, value: &str) -> ContainerInfo {
    c.labels.insert(key.into(), value.into());
    c
}

impl FakeEngine {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a local volume whose files are at `mountpoint`.
    pub fn add_volume(&self, name: &str, mountpoint: PathBuf) {
        self.state().volumes.push(DockerVolume {
            name: name.into(),
            mountpoint,
            driver: "local".into(),
            ..Default::default()
        });
    }

    /// Add a container.
    pub fn add_container(&self, c: ContainerInfo) {
        self.state().containers.push(c);
    }

    /// Make stopping (or starting) the container named `name` fail.
    pub fn fail(&self, what: &str, name: &str) {
        let id = format!("id-{name}");
        let mut s = self.state();
        match what {
            "stop" => s.fail_stop.insert(id),
            _ => s.fail_start.insert(id),
        };
    }

    /// Make `command` exit with `code` (others exit with 0).
    pub fn exit_code(&self, command: &str, code: i64) {
        self.state().exec_exit.insert(command.into(), code);
    }

    /// Run `action` when the container named `name` is stopped.
    pub fn on_stop(&self, name: &str, action: OnStop) {
        self.on_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("id-{name}"), action);
    }

    /// What a helper container reports.
    pub fn helper_reports(&self, code: i64, stdout: &[u8]) {
        self.state().helper = Some(HelperOutcome {
            code,
            stdout: stdout.to_vec(),
        });
    }

    /// The helpers run so far.
    pub fn helper_specs(&self) -> Vec<HelperSpec> {
        self.state().helper_specs.clone()
    }

    /// The requests that changed something, in order.
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// Only the `stop` and `start` entries of the log.
    pub fn stops_and_starts(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.starts_with("stop ") || l.starts_with("start "))
            .collect()
    }

    /// Whether the container named `name` runs now.
    pub fn running(&self, name: &str) -> bool {
        self.state()
            .containers
            .iter()
            .any(|c| c.name == name && c.running)
    }

    fn name_of(&self, id: &str) -> String {
        self.state()
            .containers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    fn set_running(&self, id: &str, running: bool) {
        if let Some(c) = self.state().containers.iter_mut().find(|c| c.id == id) {
            c.running = running;
        }
    }
}

fn refused(what: String) -> DockerError {
    DockerError::Api {
        what,
        message: "refused by the fake engine".into(),
    }
}

impl ContainerEngine for FakeEngine {
    fn host(&self) -> &str {
        "fake://engine"
    }
    fn api_version(&self) -> String {
        "1.41".into()
    }
    fn list_volumes(
        &self,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<DockerVolume>, DockerError> {
        let labels = filters.get("label").cloned().unwrap_or_default();
        let mut v: Vec<DockerVolume> = self
            .state()
            .volumes
            .iter()
            .filter(|v| {
                labels.iter().all(|l| match l.split_once('=') {
                    Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                    None => v.labels.contains_key(l),
                })
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
    fn inspect_volume(&self, name: &str) -> Result<Option<DockerVolume>, DockerError> {
        Ok(self
            .state()
            .volumes
            .iter()
            .find(|v| v.name == name)
            .cloned())
    }
    fn create_volume(&self, name: &str) -> Result<DockerVolume, DockerError> {
        let v = DockerVolume {
            name: name.into(),
            mountpoint: PathBuf::from(format!("/nonexistent/volumes/{name}")),
            driver: "local".into(),
            ..Default::default()
        };
        let mut s = self.state();
        s.log.push(format!("create volume {name}"));
        s.volumes.push(v.clone());
        Ok(v)
    }
    fn containers_using(&self, volume: &str) -> Result<Vec<ContainerInfo>, DockerError> {
        let mut v: Vec<ContainerInfo> = self
            .state()
            .containers
            .iter()
            .filter(|c| c.volumes.iter().any(|n| n == volume))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
    fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        Ok(self.state().containers.iter().find(|c| c.id == id).cloned())
    }
    fn stop(&self, id: &str, _grace: Duration) -> Result<(), DockerError> {
        let name = self.name_of(id);
        if self.state().fail_stop.contains(id) {
            self.state().log.push(format!("stop {name} (refused)"));
            return Err(refused(format!("stopping container {id}")));
        }
        self.state().log.push(format!("stop {name}"));
        if let Some(action) = self
            .on_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            action();
        }
        self.set_running(id, false);
        Ok(())
    }
    fn start(&self, id: &str) -> Result<(), DockerError> {
        let name = self.name_of(id);
        if self.state().fail_start.contains(id) {
            self.state().log.push(format!("start {name} (refused)"));
            return Err(refused(format!("starting container {id}")));
        }
        self.state().log.push(format!("start {name}"));
        self.set_running(id, true);
        Ok(())
    }
    fn exec(&self, id: &str, command: &str) -> Result<(Option<i64>, String), DockerError> {
        let name = self.name_of(id);
        let mut s = self.state();
        s.log.push(format!("exec {name}: {command}"));
        let code = s.exec_exit.get(command).copied().unwrap_or(0);
        Ok((Some(code), format!("ran {command}\n")))
    }
    fn leftover_helpers(&self) -> Result<Vec<(String, String, String)>, DockerError> {
        Ok(Vec::new())
    }
    fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        self.state().log.push(format!("remove {id}"));
        Ok(())
    }
    fn run_helper(
        &self,
        spec: &HelperSpec,
        on_stderr: &mut dyn FnMut(&[u8]),
    ) -> Result<HelperOutcome, DockerError> {
        let mut s = self.state();
        s.log.push("run helper".into());
        s.helper_specs.push(spec.clone());
        match s.helper.take() {
            Some(out) => {
                on_stderr(b"helper: done\n");
                Ok(out)
            }
            None => Err(refused("creating a helper container".into())),
        }
    }
}
