//! Where a restore into Docker goes ([`RestoreTarget`]) and where a helper container mounts
//! it. The restore itself (stop the target's users, save a safety snapshot, restore, start
//! them again) is `engine::volume_restore` (the engine calls this module, never the
//! reverse).

use serde::{Deserialize, Serialize};

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
