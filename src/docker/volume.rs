//! Which volumes a run concerns, and where their files are.
//!
//! Volumes are chosen by name, all of them, by label, or by compose project. Their files are
//! read at the engine's mountpoint when coffer runs on the host, or at `/backup/<name>` (the
//! old tool's layout, also under the volume's compose-file name) when coffer runs in a
//! container with the volumes mounted there.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::label::{COMPOSE_PROJECT, COMPOSE_VOLUME};
use super::{ContainerEngine, DockerError};

/// Where the old tool's compose files mount the volumes to back up.
pub const DEFAULT_MOUNT_DIR: &str = "/backup";

/// A Docker volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DockerVolume {
    /// Its name.
    pub name: String,
    /// Where the engine keeps its files (on the engine's host).
    pub mountpoint: PathBuf,
    /// Its driver (`local` for plain volumes).
    pub driver: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl DockerVolume {
    pub(crate) fn from_api(v: bollard::models::Volume) -> Self {
        Self {
            name: v.name,
            mountpoint: PathBuf::from(v.mountpoint),
            driver: v.driver,
            labels: v.labels.into_iter().collect(),
        }
    }

    /// Its compose project, if compose made it.
    pub fn project(&self) -> Option<&str> {
        self.labels.get(COMPOSE_PROJECT).map(String::as_str)
    }

    /// Its name in the compose file, if compose made it (`data` for `proj_data`).
    pub fn compose_name(&self) -> Option<&str> {
        self.labels.get(COMPOSE_VOLUME).map(String::as_str)
    }

    /// Where its files can be reached from here: `<mount_dir>/<name>` (or the compose-file
    /// name) if that is a directory, else the engine's mountpoint if it is one.
    pub fn data_path(&self, mount_dir: &Path) -> Result<PathBuf, DockerError> {
        let mut candidates = vec![mount_dir.join(&self.name)];
        if let Some(short) = self.compose_name()
            && short != self.name
            && !short.contains('/')
        {
            candidates.push(mount_dir.join(short));
        }
        for c in &candidates {
            if c.is_dir() {
                return Ok(c.clone());
            }
        }
        match std::fs::metadata(&self.mountpoint) {
            Ok(m) if m.is_dir() => Ok(self.mountpoint.clone()),
            Ok(_) => Err(self.unreachable("its mountpoint is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(self.unreachable("permission denied on its mountpoint: run coffer as root"))
            }
            Err(e) => Err(self.unreachable(&e.to_string())),
        }
    }

    fn unreachable(&self, why: &str) -> DockerError {
        DockerError::VolumeData {
            volume: self.name.clone(),
            message: format!(
                "its files are not reachable here ({}: {why}); run coffer on the Docker host, \
                 or in a container with the volume mounted at {}/{}",
                self.mountpoint.display(),
                DEFAULT_MOUNT_DIR,
                self.compose_name().unwrap_or(&self.name)
            ),
        }
    }
}

/// Which volumes to use.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VolumeSelection {
    /// These volumes, by name (each must exist).
    pub names: Vec<String>,
    /// Every volume (narrowed by `labels` and `compose_project` when given).
    pub all: bool,
    /// Volumes carrying these labels: `KEY` or `KEY=VALUE`.
    pub labels: Vec<String>,
    /// Volumes of this compose project.
    pub compose_project: Option<String>,
}

impl VolumeSelection {
    /// Whether anything was asked for.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && !self.all
            && self.labels.is_empty()
            && self.compose_project.is_none()
    }

    /// The engine filters of the listing part (`None` when only names were given).
    pub fn filters(&self) -> Option<HashMap<String, Vec<String>>> {
        if !self.all && self.labels.is_empty() && self.compose_project.is_none() {
            return None;
        }
        let mut labels: Vec<String> = self.labels.clone();
        if let Some(p) = &self.compose_project {
            labels.push(format!("{COMPOSE_PROJECT}={p}"));
        }
        let mut f = HashMap::new();
        if !labels.is_empty() {
            f.insert("label".to_string(), labels);
        }
        Some(f)
    }

    /// Resolve to volumes, sorted by name, without duplicates.
    pub fn resolve(&self, client: &dyn ContainerEngine) -> Result<Vec<DockerVolume>, DockerError> {
        if self.is_empty() {
            return Err(DockerError::Usage(
                "say which volumes: --volume NAME, --all-volumes, --volume-label KEY=VALUE or \
                 --compose-project NAME"
                    .into(),
            ));
        }
        for l in &self.labels {
            if l.is_empty() || l.starts_with('=') {
                return Err(DockerError::Usage(format!(
                    "bad --volume-label {l:?}: write KEY or KEY=VALUE"
                )));
            }
        }
        let mut out: BTreeMap<String, DockerVolume> = BTreeMap::new();
        for n in &self.names {
            let v = client
                .inspect_volume(n)?
                .ok_or_else(|| DockerError::NoSuchVolume(n.clone()))?;
            out.insert(v.name.clone(), v);
        }
        if let Some(f) = self.filters() {
            let listed = client.list_volumes(&f)?;
            if listed.is_empty() && self.names.is_empty() {
                return Err(DockerError::Usage(format!(
                    "no Docker volume matches {}",
                    self.describe()
                )));
            }
            for v in listed {
                out.insert(v.name.clone(), v);
            }
        }
        Ok(out.into_values().collect())
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.all {
            parts.push("--all-volumes".to_string());
        }
        for l in &self.labels {
            parts.push(format!("--volume-label {l}"));
        }
        if let Some(p) = &self.compose_project {
            parts.push(format!("--compose-project {p}"));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_labels_and_project() {
        let s = VolumeSelection {
            labels: vec!["backup=yes".into()],
            compose_project: Some("shop".into()),
            ..Default::default()
        };
        let f = s.filters().unwrap_or_default();
        assert_eq!(
            f.get("label").cloned().unwrap_or_default(),
            vec![
                "backup=yes".to_string(),
                "com.docker.compose.project=shop".to_string()
            ]
        );
        let names_only = VolumeSelection {
            names: vec!["a".into()],
            ..Default::default()
        };
        assert!(names_only.filters().is_none());
        let all = VolumeSelection {
            all: true,
            ..Default::default()
        };
        assert_eq!(all.filters(), Some(HashMap::new()));
        assert!(VolumeSelection::default().is_empty());
    }

    #[test]
    fn data_path_prefers_the_mounted_layout() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mount = dir.path().join("backup");
        let mp = dir.path().join("mp");
        std::fs::create_dir_all(mount.join("data")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(&mp).unwrap_or_else(|e| panic!("{e}"));
        let mut v = DockerVolume {
            name: "shop_data".into(),
            mountpoint: mp.clone(),
            ..Default::default()
        };
        assert_eq!(v.data_path(&mount).ok(), Some(mp.clone()));
        v.labels.insert(COMPOSE_VOLUME.into(), "data".into());
        assert_eq!(v.data_path(&mount).ok(), Some(mount.join("data")));
        v.mountpoint = dir.path().join("missing");
        v.labels.clear();
        match v.data_path(&mount) {
            Err(DockerError::VolumeData { volume, message }) => {
                assert_eq!(volume, "shop_data");
                assert!(message.contains("/backup/shop_data"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
