//! Docker: the adapter between coffer and the container engine, talking to it through bollard
//! over its unix socket (`/var/run/docker.sock` or `DOCKER_HOST`).
//!
//! It owns the engine connection ([`client`]) behind the [`ContainerEngine`] trait
//! ([`engine_api`]), the choice of volumes ([`volume`]), what the labels of containers mean
//! ([`label`]) and the order they stop and start in ([`order`]), commands run inside
//! containers ([`hook`]), helper containers ([`helper`]), and the guarantee that every
//! container it stopped is started again on every way out, signals included ([`guard`]). The
//! two-pass volume backup and the restore into a volume are `engine::volume_backup` and
//! `engine::volume_restore`, written against [`ContainerEngine`]: the engine calls this
//! module, and nothing here imports the engine.
//!
//! Invariant: a container this module stopped is in the [`guard`] registry until it has been
//! started again; a container that was not running when coffer came is never started.

pub mod backup;
pub mod client;
pub mod engine_api;
#[cfg(test)]
pub(crate) mod fake;
pub mod guard;
pub mod helper;
pub mod hook;
pub mod label;
pub mod order;
pub mod restore;
pub mod volume;

pub use client::DockerClient;
pub use engine_api::ContainerEngine;
pub use guard::{ContainerDowntime, restart_stopped_containers};
pub use restore::RestoreTarget;
pub use volume::{DockerVolume, VolumeSelection};

use crate::error::ErrorClass;

/// What can go wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine answers at the address.
    #[error(
        "the Docker engine at {host} cannot be reached: {message} (is Docker running? set DOCKER_HOST to its socket, e.g. unix:///var/run/docker.sock)"
    )]
    Unreachable {
        /// The address tried.
        host: String,
        /// What the connection said.
        message: String,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on the Docker socket {host}: run coffer as root or as a member of the docker group"
    )]
    PermissionDenied {
        /// The address tried.
        host: String,
    },
    /// An address coffer cannot use.
    #[error(
        "unsupported DOCKER_HOST {0:?}: coffer talks to the engine over a unix socket (unix:///path)"
    )]
    UnsupportedHost(String),
    /// A volume that was asked for does not exist.
    #[error("Docker volume {0:?} does not exist (see `docker volume ls`)")]
    NoSuchVolume(String),
    /// The engine refused or failed a request.
    #[error("Docker engine: {what}: {message}")]
    Api {
        /// The request.
        what: String,
        /// The engine's answer.
        message: String,
    },
    /// A command from a label failed inside a container.
    #[error("{phase} command {command:?} in container {container} failed ({status}): {output}")]
    Hook {
        /// `pre` or `post`.
        phase: String,
        /// The container's name.
        container: String,
        /// The shell command.
        command: String,
        /// Exit code or what went wrong.
        status: String,
        /// What it printed (stdout and stderr, capped).
        output: String,
    },
    /// The volume's data cannot be read or written from here.
    #[error("volume {volume}: {message}")]
    VolumeData {
        /// The volume.
        volume: String,
        /// What to do about it.
        message: String,
    },
    /// A problem with what the user asked for.
    #[error("{0}")]
    Usage(String),
    /// The run was interrupted by a signal; no further containers are stopped.
    #[error("interrupted")]
    Interrupted,
}

impl DockerError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            DockerError::Unreachable { .. } | DockerError::Api { .. } => ErrorClass::Transient,
            DockerError::PermissionDenied { .. }
            | DockerError::UnsupportedHost(_)
            | DockerError::NoSuchVolume(_)
            | DockerError::Hook { .. }
            | DockerError::VolumeData { .. }
            | DockerError::Usage(_) => ErrorClass::User,
            DockerError::Interrupted => ErrorClass::Interrupted,
        }
    }
}
