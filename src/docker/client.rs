//! The connection to the Docker engine: bollard over a unix socket (or plain `tcp://`), the
//! API version negotiated with the engine (bollard speaks 1.53; Debian's 20.10 engine 1.41),
//! and engine errors turned into [`DockerError`]s that say what to do.
//!
//! The rest of coffer is synchronous (rayon and threads), so the client's methods wait for
//! the engine's answer on the process's I/O runtime ([`crate::runtime`]), which it keeps
//! alive. It must not be called from inside async code.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, VolumeCreateRequest};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::DockerError;
use super::label::ContainerInfo;
use super::volume::DockerVolume;
use crate::runtime::{IoHandle, IoRuntime};

/// Where the engine listens when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// Per-request timeout; a stop waits for the container's own grace period, which must be
/// shorter.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Output of a command run in a container kept for the report.
pub const MAX_EXEC_OUTPUT_BYTES: usize = 64 << 10;

/// A connected Docker engine.
pub struct DockerClient {
    pub(super) rt: IoHandle,
    pub(super) docker: Docker,
    host: String,
}

/// The engine address: the argument, else `DOCKER_HOST`, else the default socket.
pub fn resolve_host(host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string()),
    }
}

impl DockerClient {
    /// Connect to the engine at `host` (see [`resolve_host`]) and agree on an API version;
    /// requests run on `io` (started here if it was not).
    pub fn connect(host: Option<&str>, io: &IoRuntime) -> Result<Self, DockerError> {
        let host = resolve_host(host);
        let timeout = REQUEST_TIMEOUT.as_secs();
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with('/') {
            Docker::connect_with_unix(&host, timeout, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, timeout, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(DockerError::UnsupportedHost(host));
        }
        .map_err(|e| connection_error(&host, e))?;
        let rt = io.handle().map_err(|e| DockerError::Unreachable {
            host: host.clone(),
            message: format!("cannot start the I/O runtime: {e}"),
        })?;
        // Negotiating is the first request: it tells whether anything answers.
        let docker = rt
            .block_on(docker.negotiate_version())
            .map_err(|e| connection_error(&host, e))?;
        Ok(Self { rt, docker, host })
    }

    /// The address connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version in use (after negotiation).
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    pub(super) fn err(&self, what: impl Into<String>, e: bollard::errors::Error) -> DockerError {
        api_error(&self.host, what.into(), e)
    }

    /// Volumes matching all `filters` (engine filter syntax, e.g. `label` -> `k=v`).
    pub fn list_volumes(
        &self,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<DockerVolume>, DockerError> {
        let opts = ListVolumesOptionsBuilder::default()
            .filters(filters)
            .build();
        let r = self
            .rt
            .block_on(self.docker.list_volumes(Some(opts)))
            .map_err(|e| self.err("listing volumes", e))?;
        let mut v: Vec<DockerVolume> = r
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(DockerVolume::from_api)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// One volume, or `None` when it does not exist.
    pub fn inspect_volume(&self, name: &str) -> Result<Option<DockerVolume>, DockerError> {
        match self.rt.block_on(self.docker.inspect_volume(name)) {
            Ok(v) => Ok(Some(DockerVolume::from_api(v))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.err(format!("inspecting volume {name}"), e)),
        }
    }

    /// Create a local volume.
    pub fn create_volume(&self, name: &str) -> Result<DockerVolume, DockerError> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let v = self
            .rt
            .block_on(self.docker.create_volume(req))
            .map_err(|e| self.err(format!("creating volume {name}"), e))?;
        Ok(DockerVolume::from_api(v))
    }

    /// Every container (running or not) that mounts the volume.
    pub fn containers_using(&self, volume: &str) -> Result<Vec<ContainerInfo>, DockerError> {
        let filters = HashMap::from([("volume".to_string(), vec![volume.to_string()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(opts)))
            .map_err(|e| self.err(format!("listing containers of volume {volume}"), e))?;
        let mut out = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            match self.inspect(&id)? {
                Some(info) => out.push(info),
                None => continue, // removed meanwhile
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every container on the engine (for resolving dependencies by name).
    pub fn container_names(&self) -> Result<HashMap<String, String>, DockerError> {
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(opts)))
            .map_err(|e| self.err("listing containers", e))?;
        let mut m = HashMap::new();
        for c in list {
            let Some(id) = c.id else { continue };
            for n in c.names.unwrap_or_default() {
                m.insert(n.trim_start_matches('/').to_string(), id.clone());
            }
        }
        Ok(m)
    }

    /// A container's state, labels and wiring, or `None` when it does not exist.
    pub fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        match self.rt.block_on(self.docker.inspect_container(id, None)) {
            Ok(r) => Ok(Some(info_from_inspect(id, r))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.err(format!("inspecting container {id}"), e)),
        }
    }

    /// Stop a container, giving it `grace` to exit before it is killed.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(t).build();
        match self.rt.block_on(self.docker.stop_container(id, Some(opts))) {
            // 304: already stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("stopping container {id}"), e)),
        }
    }

    /// Start a container (a running one is left alone).
    pub fn start(&self, id: &str) -> Result<(), DockerError> {
        match self.rt.block_on(
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        ) {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("starting container {id}"), e)),
        }
    }

    /// Run `sh -c command` in a running container; returns its exit code (if the engine knows
    /// it) and its output, stdout and stderr interleaved, capped at
    /// [`MAX_EXEC_OUTPUT_BYTES`].
    pub fn exec(&self, id: &str, command: &str) -> Result<(Option<i64>, String), DockerError> {
        let what = || format!("running {command:?} in container {id}");
        self.rt.block_on(async {
            let ex = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(vec!["sh", "-c", command]),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| self.err(what(), e))?;
            let mut out: Vec<u8> = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&ex.id, None)
                .await
                .map_err(|e| self.err(what(), e))?
            {
                while let Some(m) = output.next().await {
                    let m = m.map_err(|e| self.err(what(), e))?;
                    let bytes = m.into_bytes();
                    let room = MAX_EXEC_OUTPUT_BYTES.saturating_sub(out.len());
                    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            let code = self
                .docker
                .inspect_exec(&ex.id)
                .await
                .map_err(|e| self.err(what(), e))?
                .exit_code;
            Ok((code, String::from_utf8_lossy(&out).into_owned()))
        })
    }
}

fn info_from_inspect(id: &str, r: ContainerInspectResponse) -> ContainerInfo {
    let state = r.state.unwrap_or_default();
    let config = r.config.unwrap_or_default();
    let host_config = r.host_config.unwrap_or_default();
    let mounts = r.mounts.unwrap_or_default();
    ContainerInfo {
        id: r.id.unwrap_or_else(|| id.to_string()),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: config.labels.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        network_mode: host_config.network_mode,
        links: host_config.links.unwrap_or_default(),
        volume_mounts: mounts
            .iter()
            .filter_map(|m| Some((m.destination.clone()?, m.name.clone()?)))
            .collect(),
        bind_mounts: mounts
            .iter()
            .filter(|m| m.name.is_none())
            .filter_map(|m| Some((m.destination.clone()?, m.source.clone()?)))
            .collect(),
        volumes: mounts.into_iter().filter_map(|m| m.name).collect(),
        image: r.image.unwrap_or_default(),
    }
}

/// Does an error (or one of its causes) carry this I/O error kind?
fn has_io_kind(e: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == kind
        {
            return true;
        }
        cur = c.source();
    }
    false
}

fn connection_error(host: &str, e: bollard::errors::Error) -> DockerError {
    use std::io::ErrorKind;
    if has_io_kind(&e, ErrorKind::PermissionDenied) {
        return DockerError::PermissionDenied {
            host: host.to_string(),
        };
    }
    match e {
        bollard::errors::Error::SocketNotFoundError(path) => DockerError::Unreachable {
            host: host.to_string(),
            message: format!("no socket at {path}"),
        },
        bollard::errors::Error::UnsupportedURISchemeError { .. } => {
            DockerError::UnsupportedHost(host.to_string())
        }
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Api {
            what: "asking for the API version".into(),
            message: format!("{message} (HTTP {status_code})"),
        },
        other => DockerError::Unreachable {
            host: host.to_string(),
            message: error_chain(&other),
        },
    }
}

fn api_error(host: &str, what: String, e: bollard::errors::Error) -> DockerError {
    use std::io::ErrorKind;
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Api {
            what,
            message: format!("{message} (HTTP {status_code})"),
        },
        bollard::errors::Error::RequestTimeoutError => DockerError::Api {
            what,
            message: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
        },
        other if has_io_kind(&other, ErrorKind::PermissionDenied) => {
            DockerError::PermissionDenied {
                host: host.to_string(),
            }
        }
        other => DockerError::Api {
            what,
            message: error_chain(&other),
        },
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resolution_prefers_the_argument() {
        assert_eq!(resolve_host(Some("unix:///x.sock")), "unix:///x.sock");
    }

    #[test]
    fn missing_socket_is_unreachable() {
        match DockerClient::connect(Some("unix:///nonexistent/docker.sock"), &IoRuntime::new()) {
            Err(DockerError::Unreachable { host, message }) => {
                assert_eq!(host, "unix:///nonexistent/docker.sock");
                assert!(message.contains("/nonexistent/docker.sock"), "{message}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let io = IoRuntime::new();
        assert!(matches!(
            DockerClient::connect(Some("ssh://host"), &io),
            Err(DockerError::UnsupportedHost(_))
        ));
        assert!(!io.is_started());
    }
}
