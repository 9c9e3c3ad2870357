//! What container labels mean to coffer. Pure: no engine calls.
//!
//! * Stop during backup: `docker-volume-backup.stop-during-backup=<value>` (the old tool's
//!   label, so compose files work unchanged) or `coffer.stop=<value>`. A backup stops the
//!   containers whose value equals its `--stop-label-value` (default `true`), as the old
//!   tool's `BACKUP_STOP_DURING_BACKUP_LABEL` did.
//! * Commands: `docker-volume-backup.archive-pre` / `archive-post` (old names) and
//!   `coffer.exec-pre` / `coffer.exec-post`, run with `sh -c` inside the container.
//! * Dependencies: compose's `com.docker.compose.depends_on`, `network_mode: container:...`
//!   (compose writes `service:x` as `container:<id>`), legacy links, and `coffer.depends-on`
//!   (comma-separated service or container names).

use std::collections::HashMap;

use serde::Serialize;

/// The old tool's stop label.
pub const STOP_LABEL_LEGACY: &str = "docker-volume-backup.stop-during-backup";
/// coffer's stop label.
pub const STOP_LABEL: &str = "coffer.stop";
/// The default value that selects a container for stopping.
pub const DEFAULT_STOP_VALUE: &str = "true";
/// Pre-backup command labels, run in this order.
pub const PRE_LABELS: [&str; 2] = ["docker-volume-backup.archive-pre", "coffer.exec-pre"];
/// Post-backup command labels, run in this order.
pub const POST_LABELS: [&str; 2] = ["docker-volume-backup.archive-post", "coffer.exec-post"];
/// coffer's explicit dependency label.
pub const DEPENDS_ON_LABEL: &str = "coffer.depends-on";
/// Compose v2's dependency label (`svc:condition:restart,...`).
pub const COMPOSE_DEPENDS_ON: &str = "com.docker.compose.depends_on";
/// Compose's project label.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// Compose's service label.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Compose's label on a volume: its name in the compose file.
pub const COMPOSE_VOLUME: &str = "com.docker.compose.volume";

/// When a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before the volume is read.
    Pre,
    /// After the volume was read and the containers started again.
    Post,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        })
    }
}

/// What coffer needs to know of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Whether it runs now.
    pub running: bool,
    /// The engine's status word (`running`, `exited`, ...).
    pub status: String,
    /// `HostConfig.NetworkMode` (`container:<id>` ties it to another container).
    pub network_mode: Option<String>,
    /// Legacy links (`/db:/web/db`).
    pub links: Vec<String>,
    /// Names of the volumes it mounts.
    pub volumes: Vec<String>,
    /// Where each of its volumes is mounted inside it: (destination, volume name).
    pub volume_mounts: Vec<(String, String)>,
    /// Where each of its bind mounts is mounted inside it: (destination, host path).
    pub bind_mounts: Vec<(String, String)>,
    /// The id of its image.
    pub image: String,
}

/// A reference from one container to one it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepRef {
    /// A compose service of the same project.
    Service(String),
    /// A container name or id (or id prefix).
    Container(String),
    /// A service of the same project, or else a container name.
    Either(String),
}

impl ContainerInfo {
    /// Does a backup with this `--stop-label-value` stop it (when it runs)?
    pub fn wants_stop(&self, value: &str) -> bool {
        [STOP_LABEL_LEGACY, STOP_LABEL]
            .iter()
            .filter_map(|k| self.labels.get(*k))
            .any(|v| label_value_matches(v, value))
    }

    /// The shell commands of a phase, in the order they run.
    pub fn commands(&self, phase: Phase) -> Vec<String> {
        let keys = match phase {
            Phase::Pre => PRE_LABELS,
            Phase::Post => POST_LABELS,
        };
        keys.iter()
            .filter_map(|k| self.labels.get(*k))
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    }

    /// Its compose project, if any.
    pub fn project(&self) -> Option<&str> {
        self.labels.get(COMPOSE_PROJECT).map(String::as_str)
    }

    /// Its compose service, if any.
    pub fn service(&self) -> Option<&str> {
        self.labels.get(COMPOSE_SERVICE).map(String::as_str)
    }

    /// The containers it depends on, as written in its labels and configuration.
    pub fn dependencies(&self) -> Vec<DepRef> {
        let mut deps = Vec::new();
        if let Some(v) = self.labels.get(COMPOSE_DEPENDS_ON) {
            for item in v.split(',') {
                let svc = item.split(':').next().unwrap_or("").trim();
                if !svc.is_empty() {
                    deps.push(DepRef::Service(svc.to_string()));
                }
            }
        }
        if let Some(v) = self.labels.get(DEPENDS_ON_LABEL) {
            for item in v.split(',') {
                let n = item.trim();
                if !n.is_empty() {
                    deps.push(DepRef::Either(n.to_string()));
                }
            }
        }
        if let Some(mode) = &self.network_mode {
            if let Some(c) = mode.strip_prefix("container:") {
                deps.push(DepRef::Container(c.to_string()));
            } else if let Some(s) = mode.strip_prefix("service:") {
                deps.push(DepRef::Service(s.to_string()));
            }
        }
        for l in &self.links {
            let target = l.split(':').next().unwrap_or("").trim_start_matches('/');
            if !target.is_empty() {
                deps.push(DepRef::Container(target.to_string()));
            }
        }
        deps
    }

    /// Does this container answer to `r`, seen from a container of project `from_project`?
    pub fn matches(&self, r: &DepRef, from_project: Option<&str>) -> bool {
        let same_project = from_project.is_some() && self.project() == from_project;
        let is_service = |s: &str| same_project && self.service() == Some(s);
        let is_container = |c: &str| {
            self.name == c.trim_start_matches('/')
                || self.id == c
                || (c.len() >= 12 && self.id.starts_with(c))
        };
        match r {
            DepRef::Service(s) => is_service(s),
            DepRef::Container(c) => is_container(c),
            DepRef::Either(n) => is_service(n) || is_container(n),
        }
    }
}

fn label_value_matches(label: &str, wanted: &str) -> bool {
    let label = label.trim();
    if wanted.eq_ignore_ascii_case(DEFAULT_STOP_VALUE) {
        label.eq_ignore_ascii_case(DEFAULT_STOP_VALUE)
    } else {
        label == wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "0123456789abcdef0123".into(),
            name: "app".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn stop_label_values() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
        let cases: &[Case] = &[
            (&[(STOP_LABEL_LEGACY, "true")], "true", true),
            (&[(STOP_LABEL_LEGACY, "True")], "true", true),
            (&[(STOP_LABEL_LEGACY, "false")], "true", false),
            (&[(STOP_LABEL, "true")], "true", true),
            (&[(STOP_LABEL_LEGACY, "nightly")], "true", false),
            (&[(STOP_LABEL_LEGACY, "nightly")], "nightly", true),
            (&[(STOP_LABEL_LEGACY, "true")], "nightly", false),
            (
                &[(STOP_LABEL, "weekly"), (STOP_LABEL_LEGACY, "nightly")],
                "nightly",
                true,
            ),
            (&[], "true", false),
        ];
        for (labels, value, want) in cases {
            assert_eq!(c(labels).wants_stop(value), *want, "{labels:?} {value}");
        }
    }

    #[test]
    fn commands_in_order_and_blank_ones_dropped() {
        let x = c(&[
            ("coffer.exec-pre", "echo new"),
            ("docker-volume-backup.archive-pre", "echo old"),
            ("coffer.exec-post", "  "),
        ]);
        assert_eq!(x.commands(Phase::Pre), vec!["echo old", "echo new"]);
        assert!(x.commands(Phase::Post).is_empty());
    }

    #[test]
    fn dependencies_from_labels_and_wiring() {
        let mut x = c(&[
            (
                COMPOSE_DEPENDS_ON,
                "db:service_started:false,cache:service_healthy:true",
            ),
            (DEPENDS_ON_LABEL, "proxy, other"),
        ]);
        x.network_mode = Some("container:abcdef".into());
        x.links = vec!["/legacy:/app/legacy".into()];
        assert_eq!(
            x.dependencies(),
            vec![
                DepRef::Service("db".into()),
                DepRef::Service("cache".into()),
                DepRef::Either("proxy".into()),
                DepRef::Either("other".into()),
                DepRef::Container("abcdef".into()),
                DepRef::Container("legacy".into()),
            ]
        );
        let mut y = c(&[]);
        y.network_mode = Some("bridge".into());
        assert!(y.dependencies().is_empty());
    }

    #[test]
    fn matching_services_needs_the_same_project() {
        let db = c(&[(COMPOSE_PROJECT, "p"), (COMPOSE_SERVICE, "db")]);
        assert!(db.matches(&DepRef::Service("db".into()), Some("p")));
        assert!(!db.matches(&DepRef::Service("db".into()), Some("q")));
        assert!(!db.matches(&DepRef::Service("db".into()), None));
        assert!(db.matches(&DepRef::Container("app".into()), None));
        assert!(db.matches(&DepRef::Container("0123456789abcdef".into()), None));
        assert!(!db.matches(&DepRef::Container("0123".into()), None));
        assert!(db.matches(&DepRef::Either("db".into()), Some("p")));
        assert!(db.matches(&DepRef::Either("app".into()), Some("q")));
    }
}
