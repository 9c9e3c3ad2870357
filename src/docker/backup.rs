//! What the Docker adapter knows about a volume backup: the tags that record which volume (or
//! host directory) a snapshot's source is, and which container this process runs in (never
//! stopped). The backup itself, two passes with the labelled containers stopped only for the
//! second, is `engine::volume_backup` (the engine calls this module, never the reverse).

use super::ContainerEngine;

/// The name of the container this process runs in (a stable host name for snapshots: it
/// survives `docker-compose up --force-recreate`, where the container id does not).
pub fn own_container_name(client: &dyn ContainerEngine) -> Option<String> {
    let id = own_container_id()?;
    client
        .inspect(&id)
        .ok()
        .flatten()
        .map(|c| c.name)
        .filter(|n| !n.is_empty())
}

/// Tag prefix recording which volume a source of a snapshot is: `volume:<source>=<volume>`.
pub const VOLUME_TAG: &str = "volume:";
/// Tag prefix recording which host directory a source is: `bind:<source>=<path>`.
pub const BIND_TAG: &str = "bind:";

/// Where each source of a snapshot came from, as its tags record: (source name, target).
/// A snapshot of one volume (`backup --docker`) has one source and a `volume=<name>` tag.
pub fn recorded_targets(
    snap: &crate::format::snapshot::Snapshot,
) -> Vec<(String, super::restore::RestoreTarget)> {
    use super::restore::RestoreTarget;
    let mut out = Vec::new();
    for t in &snap.tags {
        let (prefix_len, bind) = if t.starts_with(VOLUME_TAG) {
            (VOLUME_TAG.len(), false)
        } else if t.starts_with(BIND_TAG) {
            (BIND_TAG.len(), true)
        } else {
            continue;
        };
        if let Some((src, what)) = t[prefix_len..].split_once('=') {
            let target = if bind {
                RestoreTarget::Bind(what.to_string())
            } else {
                RestoreTarget::Volume(what.to_string())
            };
            out.push((src.to_string(), target));
        }
    }
    if out.is_empty()
        && let [only] = snap.sources.as_slice()
        && let Some(v) = snap.tags.iter().find_map(|t| t.strip_prefix("volume="))
    {
        out.push((only.name.clone(), RestoreTarget::Volume(v.to_string())));
    }
    out
}

/// The tags of a volume's snapshot.
pub fn volume_tags(
    extra: &[String],
    volume: &str,
    project: Option<&str>,
    services: &[String],
) -> Vec<String> {
    let mut tags: Vec<String> = extra.to_vec();
    tags.push(format!("volume={volume}"));
    if let Some(p) = project {
        tags.push(format!("compose-project={p}"));
    }
    for s in services {
        tags.push(format!("compose-service={s}"));
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    tags
}

/// This process's container id, when coffer itself runs in a container (so it never stops
/// itself). Read from the cgroup/mount paths the engine sets up, else the host name, which
/// Docker sets to the short id.
pub(crate) fn own_container_id() -> Option<String> {
    if !std::path::Path::new("/.dockerenv").exists() {
        return None;
    }
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for part in info.split(['/', ' ']) {
            if is_id(part) {
                return Some(part.to_string());
            }
        }
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_volume_project_and_services() {
        let t = volume_tags(
            &["nightly".into(), "volume=db".into()],
            "db",
            Some("shop"),
            &["api".into(), "postgres".into()],
        );
        assert_eq!(
            t,
            [
                "nightly",
                "volume=db",
                "compose-project=shop",
                "compose-service=api",
                "compose-service=postgres"
            ]
        );
        assert_eq!(volume_tags(&[], "v", None, &[]), ["volume=v"]);
    }
}
