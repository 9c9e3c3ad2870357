//! Where a restore into Docker goes ([`RestoreTarget`]) and where a helper container mounts
//! it. The restore itself (stop the target's users, save a safety snapshot, restore, start
//! them again) is [`crate::engine::volume_restore`]; its items are re-exported here under
//! their old paths.

use serde::{Deserialize, Serialize};

pub use crate::engine::volume_job::{
    HelperRequest, SAFETY_TAG, VolumeJob, VolumeJobResult, run_volume_job,
};
pub use crate::engine::volume_restore::{
    HelperAccess, VolumeRestoreOptions, VolumeRestoreSummary, restore_volume,
};

/// Where a helper mounts the volume it restores into.
pub const HELPER_TARGET: &str = "/coffer-target";

/// Where a restore goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreTarget {
    /// A Docker volume, by name.
    Volume(String),
    /// A bind-mounted directory, by its path on the engine's host.
    Bind(String),
}

impl RestoreTarget {
    /// How it is named in messages.
    pub fn describe(&self) -> String {
        match self {
            RestoreTarget::Volume(v) => format!("volume {v}"),
            RestoreTarget::Bind(p) => format!("host directory {p}"),
        }
    }
}
