//! Short-lived helper containers: a restore into a volume runs in a container made from
//! coffer's own image (nothing is pulled) that mounts the volume read-write, so the backup
//! service, whose mounts are read-only, can restore, and the service never stops itself.
//!
//! The helper is attached before it starts: what it must do (with the passphrase) goes to
//! its stdin as one JSON line, never into its configuration, and its stdin stays open as a
//! lifeline: when the caller dies, even by SIGKILL, the engine closes that stdin, the helper
//! exits, and the engine removes it (`AutoRemove`). The caller also removes it on every way
//! out (SIGINT and SIGTERM through [`remove_helpers`]), and each helper carries labels, so a
//! leftover one is found ([`DockerClient::leftover_helpers`]) by the next restore and by
//! `coffer check`.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{DockerClient, DockerError};
use crate::runtime::IoRuntime;

/// Label on every helper container.
pub const HELPER_LABEL: &str = "coffer.helper";
/// Label naming who started it: `container:<id>/<pid>` or `pid:<host name>:<pid>`.
pub const OWNER_LABEL: &str = "coffer.helper.owner";
/// The most stdout a helper may return (its JSON summary).
const MAX_STDOUT: usize = 16 << 20;

/// A helper to run.
#[derive(Clone, Debug, Default)]
pub struct HelperSpec {
    /// Image id or name.
    pub image: String,
    /// Arguments to the image's entrypoint (coffer).
    pub cmd: Vec<String>,
    /// Environment (no secrets beyond what the caller's own container already has).
    pub env: Vec<String>,
    /// `source:destination[:ro]` mounts.
    pub binds: Vec<String>,
    /// Containers whose mounts it takes too.
    pub volumes_from: Vec<String>,
    /// `host`, or `container:<id>` to share the caller's network.
    pub network_mode: String,
    /// What goes to its stdin first.
    pub stdin: Vec<u8>,
    /// Who starts it (for [`OWNER_LABEL`]).
    pub owner: String,
    /// What it is for (the value of [`HELPER_LABEL`]).
    pub purpose: String,
}

/// How a helper ended.
#[derive(Debug)]
pub struct HelperOutcome {
    /// Its exit code.
    pub code: i64,
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
}

/// Helpers of this process still present: (engine host, id).
static HELPERS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn helpers() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    HELPERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The owner label of helpers started by this process.
pub fn owner_label() -> String {
    let pid = std::process::id();
    match super::backup::own_container_id() {
        Some(id) => format!("container:{id}/{pid}"),
        None => format!("pid:{}:{pid}", host_name()),
    }
}

/// This machine's name, as `crate::repo::hostname` has it (the same call: an owner label
/// written by one must be judged by the other).
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Remove every helper this process started and has not removed yet (the signal path), with
/// requests on `io`.
pub fn remove_helpers(io: &IoRuntime) -> usize {
    let list: Vec<(String, String)> = helpers().clone();
    let mut n = 0;
    for (host, id) in list {
        if let Ok(c) = DockerClient::connect(Some(&host), io)
            && c.remove_container(&id).is_ok()
        {
            n += 1;
        }
    }
    helpers().clear();
    n
}

impl DockerClient {
    /// Remove a container, running or not; a missing one is not an error.
    pub fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .rt
            .block_on(self.docker.remove_container(id, Some(opts)))
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("removing container {id}"), e)),
        }
    }

    /// Run a helper to its end: its stderr goes to `on_stderr` as it comes, its stdout is
    /// returned. It is removed on every way out of this function.
    pub fn run_helper(
        &self,
        spec: &HelperSpec,
        on_stderr: &mut dyn FnMut(&[u8]),
    ) -> Result<HelperOutcome, DockerError> {
        let labels = HashMap::from([
            (HELPER_LABEL.to_string(), spec.purpose.clone()),
            (OWNER_LABEL.to_string(), spec.owner.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                volumes_from: Some(spec.volumes_from.clone()),
                network_mode: Some(spec.network_mode.clone()),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .rt
            .block_on(
                self.docker
                    .create_container(None::<CreateContainerOptions>, body),
            )
            .map_err(|e| {
                self.err(
                    format!("creating a helper container from {}", spec.image),
                    e,
                )
            })?;
        let id = created.id;
        helpers().push((self.host().to_string(), id.clone()));
        let r = self.drive_helper(&id, spec, on_stderr);
        let removed = self.remove_container(&id);
        helpers().retain(|(_, h)| *h != id);
        let out = r?;
        removed?;
        Ok(out)
    }

    fn drive_helper(
        &self,
        id: &str,
        spec: &HelperSpec,
        on_stderr: &mut dyn FnMut(&[u8]),
    ) -> Result<HelperOutcome, DockerError> {
        self.rt.block_on(async {
            let attach = AttachContainerOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                stream: true,
                ..Default::default()
            };
            let mut io = self
                .docker
                .attach_container(id, Some(attach))
                .await
                .map_err(|e| self.err(format!("attaching to helper container {id}"), e))?;
            // Registered before the start, so an exit is never missed (the engine removes the
            // helper right after it).
            let docker = self.docker.clone();
            let wait_id = id.to_string();
            let wait = tokio::spawn(async move {
                let opts = WaitContainerOptions {
                    condition: "next-exit".into(),
                };
                let mut s = docker.wait_container(&wait_id, Some(opts));
                match s.next().await {
                    Some(Ok(r)) => Ok(r.status_code),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code, ..
                    })) => Ok(code),
                    Some(Err(e)) => Err(e),
                    None => Ok(-1),
                }
            });
            self.docker
                .start_container(id, None::<StartContainerOptions>)
                .await
                .map_err(|e| self.err(format!("starting helper container {id}"), e))?;
            let send = async {
                io.input.write_all(&spec.stdin).await?;
                io.input.flush().await
            };
            send.await.map_err(|e| DockerError::Api {
                what: format!("writing to helper container {id}"),
                message: e.to_string(),
            })?;
            let mut stdout = Vec::new();
            while let Some(item) = io.output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => {
                        if stdout.len() + message.len() <= MAX_STDOUT {
                            stdout.extend_from_slice(&message);
                        }
                    }
                    Ok(LogOutput::StdErr { message }) | Ok(LogOutput::Console { message }) => {
                        on_stderr(&message)
                    }
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        return Err(self.err(format!("reading helper container {id}"), e));
                    }
                }
            }
            drop(io.input);
            let code = match wait.await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(self.err(format!("waiting for helper container {id}"), e)),
                Err(e) => {
                    return Err(DockerError::Api {
                        what: format!("waiting for helper container {id}"),
                        message: e.to_string(),
                    });
                }
            };
            Ok(HelperOutcome { code, stdout })
        })
    }

    /// Helper containers whose owner is gone: (id, name, owner).
    pub fn leftover_helpers(&self) -> Result<Vec<(String, String, String)>, DockerError> {
        let filters = HashMap::from([("label".to_string(), vec![HELPER_LABEL.to_string()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(opts)))
            .map_err(|e| self.err("listing helper containers", e))?;
        let mut out = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            let owner = c
                .labels
                .as_ref()
                .and_then(|l| l.get(OWNER_LABEL))
                .cloned()
                .unwrap_or_default();
            if !self.owner_alive(&owner)? {
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                out.push((id, name, owner));
            }
        }
        Ok(out)
    }

    fn owner_alive(&self, owner: &str) -> Result<bool, DockerError> {
        if let Some(rest) = owner.strip_prefix("container:") {
            let (id, pid) = rest.split_once('/').unwrap_or((rest, ""));
            if !self.inspect(id)?.is_some_and(|c| c.running) {
                return Ok(false);
            }
            // In the same container, the process itself can be looked for.
            if super::backup::own_container_id().as_deref() == Some(id) && !pid.is_empty() {
                return Ok(std::path::Path::new(&format!("/proc/{pid}")).exists());
            }
            return Ok(true);
        }
        if let Some(rest) = owner.strip_prefix("pid:")
            && let Some((host, pid)) = rest.rsplit_once(':')
        {
            if host != host_name() {
                return Ok(true); // another machine's: not ours to judge
            }
            return Ok(std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        Ok(false)
    }
}
