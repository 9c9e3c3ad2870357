//! Containers stopped by coffer are started again on every way out: when the work is done,
//! when it fails (the guard's `Drop`), and when the process is told to stop (SIGINT, SIGTERM:
//! the CLI's signal thread calls [`restart_stopped_containers`] before it exits).
//!
//! Invariant: a container is entered in the process-wide registry *before* it is asked to
//! stop and leaves it only once it was started again. Once a signal arrived, no further
//! container is stopped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::label::ContainerInfo;
use super::{ContainerEngine, DockerClient, DockerError};
use crate::runtime::IoRuntime;

/// How often a start that failed is tried again.
const START_ATTEMPTS: u32 = 3;
/// Pause between start attempts.
const START_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long the signal path waits for a stop in flight before it starts the container.
const STOP_IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Stopping,
    Stopped,
}

#[derive(Clone, Debug)]
struct Entry {
    host: String,
    id: String,
    name: String,
    state: State,
}

struct Registry {
    shutting_down: bool,
    entries: Vec<Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    shutting_down: false,
    entries: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long one container was down.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ContainerDowntime {
    /// Container name.
    pub name: String,
    /// Container id.
    pub id: String,
    /// Seconds from the stop request to the end of the start request.
    pub downtime_secs: f64,
    /// Whether it runs again.
    pub started: bool,
    /// Why it could not be started, if it could not.
    pub error: Option<String>,
}

struct Stopped {
    id: String,
    name: String,
    at: Instant,
}

/// Stops containers and starts them again, latest stopped first, when told to or dropped.
pub struct StopGuard<'a> {
    client: &'a dyn ContainerEngine,
    grace: Duration,
    stopped: Vec<Stopped>,
}

impl<'a> StopGuard<'a> {
    /// A guard that gives each container `grace` to exit when stopping it.
    pub fn new(client: &'a dyn ContainerEngine, grace: Duration) -> Self {
        Self {
            client,
            grace,
            stopped: Vec::new(),
        }
    }

    /// Stop a running container. Fails with [`DockerError::Interrupted`] after a signal.
    pub fn stop(&mut self, c: &ContainerInfo) -> Result<(), DockerError> {
        {
            let mut r = registry();
            if r.shutting_down {
                return Err(DockerError::Interrupted);
            }
            r.entries.push(Entry {
                host: self.client.host().to_string(),
                id: c.id.clone(),
                name: c.name.clone(),
                state: State::Stopping,
            });
        }
        let at = Instant::now();
        tracing::info!("stopping container {}", c.name);
        match self.client.stop(&c.id, self.grace) {
            Ok(()) => {
                let mut r = registry();
                if let Some(e) = r.entries.iter_mut().find(|e| e.id == c.id) {
                    e.state = State::Stopped;
                }
                self.stopped.push(Stopped {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    at,
                });
                Ok(())
            }
            Err(e) => {
                // It may be half way down: make sure it runs, then report.
                let _ = self.client.start(&c.id);
                unregister(&c.id);
                Err(e)
            }
        }
    }

    /// Whether any container is stopped now.
    pub fn is_empty(&self) -> bool {
        self.stopped.is_empty()
    }

    /// Start every stopped container again, in the reverse of the order they stopped in.
    pub fn start_all(&mut self) -> Vec<ContainerDowntime> {
        let mut out = Vec::new();
        while let Some(s) = self.stopped.pop() {
            let result = start_with_retries(self.client, &s.id);
            unregister(&s.id);
            let downtime_secs = s.at.elapsed().as_secs_f64();
            match &result {
                Ok(()) => tracing::info!(
                    "started container {} again after {downtime_secs:.2}s",
                    s.name
                ),
                Err(e) => tracing::error!("container {} could not be started: {e}", s.name),
            }
            out.push(ContainerDowntime {
                name: s.name,
                id: s.id,
                downtime_secs,
                started: result.is_ok(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        out
    }
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if !self.stopped.is_empty() {
            for d in self.start_all() {
                if let Some(e) = d.error {
                    eprintln!(
                        "error: container {} could not be started again: {e}",
                        d.name
                    );
                }
            }
        }
    }
}

fn start_with_retries(client: &dyn ContainerEngine, id: &str) -> Result<(), DockerError> {
    let mut last = None;
    for attempt in 0..START_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(START_RETRY_PAUSE);
        }
        match client.start(id) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(DockerError::Interrupted))
}

fn unregister(id: &str) {
    registry().entries.retain(|e| e.id != id);
}

/// Whether a signal asked the process to stop (no further containers are stopped).
pub fn shutting_down() -> bool {
    registry().shutting_down
}

/// Start every container this process stopped and has not started again; from then on, no
/// container is stopped. For the signal path: it blocks until the engine answered (waiting,
/// at most [`STOP_IN_FLIGHT_WAIT`], for stops in flight to finish first). Returns the names of
/// the containers started. Requests run on `io`.
pub fn restart_stopped_containers(io: &IoRuntime) -> Vec<String> {
    registry().shutting_down = true;
    let deadline = Instant::now() + STOP_IN_FLIGHT_WAIT;
    while Instant::now() < deadline
        && registry()
            .entries
            .iter()
            .any(|e| e.state == State::Stopping)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let entries: Vec<Entry> = registry().entries.clone();
    let mut started = Vec::new();
    let mut hosts: Vec<&str> = entries.iter().map(|e| e.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let client = match DockerClient::connect(Some(host), io) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot start the stopped containers again: {e}");
                continue;
            }
        };
        for e in entries.iter().rev().filter(|e| e.host == host) {
            match start_with_retries(&client, &e.id) {
                Ok(()) => {
                    unregister(&e.id);
                    started.push(e.name.clone());
                }
                Err(err) => eprintln!("error: container {} could not be started: {err}", e.name),
            }
        }
    }
    started
}
