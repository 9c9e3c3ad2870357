//! What coffer asks of a container engine, as a trait: the volume backup and the restore
//! into a volume (in [`crate::engine`]) are written against it, so their stop/start ordering
//! can be tested with an in-memory engine. [`DockerClient`] is the real one (bollard).
//!
//! It must stay a thin list of engine requests: decisions (which containers stop, in which
//! order) belong to the callers, not to an implementation.

use std::collections::HashMap;
use std::time::Duration;

use super::helper::{HelperOutcome, HelperSpec};
use super::label::ContainerInfo;
use super::volume::DockerVolume;
use super::{DockerClient, DockerError};

/// The requests coffer makes to a container engine.
pub trait ContainerEngine {
    /// The engine's address (a stopped container is recorded with it, for the signal path).
    fn host(&self) -> &str;
    /// The API version spoken.
    fn api_version(&self) -> String;
    /// Volumes matching all `filters` (engine filter syntax), sorted by name.
    fn list_volumes(
        &self,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<DockerVolume>, DockerError>;
    /// One volume, or `None` when it does not exist.
    fn inspect_volume(&self, name: &str) -> Result<Option<DockerVolume>, DockerError>;
    /// Create a local volume.
    fn create_volume(&self, name: &str) -> Result<DockerVolume, DockerError>;
    /// Every container (running or not) that mounts the volume, sorted by name.
    fn containers_using(&self, volume: &str) -> Result<Vec<ContainerInfo>, DockerError>;
    /// A container, or `None` when it does not exist.
    fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError>;
    /// Stop a container, giving it `grace` to exit; an already stopped one is not an error.
    fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError>;
    /// Start a container; a running one is not an error.
    fn start(&self, id: &str) -> Result<(), DockerError>;
    /// Run `sh -c command` in a running container: its exit code and its output.
    fn exec(&self, id: &str, command: &str) -> Result<(Option<i64>, String), DockerError>;
    /// Helper containers whose owner is gone: (id, name, owner).
    fn leftover_helpers(&self) -> Result<Vec<(String, String, String)>, DockerError>;
    /// Remove a container, running or not; a missing one is not an error.
    fn remove_container(&self, id: &str) -> Result<(), DockerError>;
    /// Run a helper container to its end (see [`super::helper`]).
    fn run_helper(
        &self,
        spec: &HelperSpec,
        on_stderr: &mut dyn FnMut(&[u8]),
    ) -> Result<HelperOutcome, DockerError>;
}

impl ContainerEngine for DockerClient {
    fn host(&self) -> &str {
        DockerClient::host(self)
    }
    fn api_version(&self) -> String {
        DockerClient::api_version(self)
    }
    fn list_volumes(
        &self,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<DockerVolume>, DockerError> {
        DockerClient::list_volumes(self, filters)
    }
    fn inspect_volume(&self, name: &str) -> Result<Option<DockerVolume>, DockerError> {
        DockerClient::inspect_volume(self, name)
    }
    fn create_volume(&self, name: &str) -> Result<DockerVolume, DockerError> {
        DockerClient::create_volume(self, name)
    }
    fn containers_using(&self, volume: &str) -> Result<Vec<ContainerInfo>, DockerError> {
        DockerClient::containers_using(self, volume)
    }
    fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        DockerClient::inspect(self, id)
    }
    fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        DockerClient::stop(self, id, grace)
    }
    fn start(&self, id: &str) -> Result<(), DockerError> {
        DockerClient::start(self, id)
    }
    fn exec(&self, id: &str, command: &str) -> Result<(Option<i64>, String), DockerError> {
        DockerClient::exec(self, id, command)
    }
    fn leftover_helpers(&self) -> Result<Vec<(String, String, String)>, DockerError> {
        DockerClient::leftover_helpers(self)
    }
    fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        DockerClient::remove_container(self, id)
    }
    fn run_helper(
        &self,
        spec: &HelperSpec,
        on_stderr: &mut dyn FnMut(&[u8]),
    ) -> Result<HelperOutcome, DockerError> {
        DockerClient::run_helper(self, spec, on_stderr)
    }
}
