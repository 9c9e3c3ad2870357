//! `tag`: change the tags of snapshots. Snapshot objects are named by their content, so a
//! changed snapshot is a new object: it is written first, then the old one is forgotten (as
//! `forget` does it: remembered as forgotten, then deleted). A crash in between leaves both,
//! which differ only in their tags; nothing is lost.

use serde::Serialize;

use super::EngineError;
use crate::catalog::Catalog;
use crate::id::SnapshotId;
use crate::repo::{LockKind, Repository};

/// What to change, and where.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TagOptions {
    /// Snapshots (ids, unique prefixes, `latest`); all snapshots when empty.
    pub snapshots: Vec<String>,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
    /// Replace all tags with these (with `set_given`, even by none).
    pub set: Vec<String>,
    /// `--set` was given (possibly empty: remove every tag).
    pub set_given: bool,
}

/// One snapshot whose tags changed.
#[derive(Clone, Debug, Serialize)]
pub struct Retagged {
    /// The snapshot before.
    #[serde(with = "crate::id::as_hex")]
    pub old_id: SnapshotId,
    /// The snapshot written in its place.
    #[serde(with = "crate::id::as_hex")]
    pub new_id: SnapshotId,
    /// Its tags now.
    pub tags: Vec<String>,
}

/// What `tag` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TagSummary {
    /// Snapshots whose tags changed.
    pub changed: Vec<Retagged>,
    /// Snapshots selected whose tags were already so.
    pub unchanged: u64,
}

/// The tags `tags` become under `opts` (order kept, no duplicates).
pub fn new_tags(tags: &[String], opts: &TagOptions) -> Vec<String> {
    let mut out: Vec<String> = if opts.set_given {
        opts.set.clone()
    } else {
        tags.to_vec()
    };
    out.retain(|t| !opts.remove.contains(t));
    for t in &opts.add {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out
}

/// Change the tags of the selected snapshots.
pub fn tag(
    repo: &Repository,
    catalog: &Catalog,
    opts: &TagOptions,
) -> Result<TagSummary, EngineError> {
    if opts.add.is_empty() && opts.remove.is_empty() && !opts.set_given {
        return Err(EngineError::Usage(
            "tag needs --add, --remove or --set (e.g. `coffer tag --add keep latest`)".into(),
        ));
    }
    if opts.set_given && (!opts.add.is_empty() || !opts.remove.is_empty()) {
        return Err(EngineError::Usage(
            "--set replaces every tag: it cannot be combined with --add or --remove".into(),
        ));
    }
    for t in opts.add.iter().chain(&opts.set) {
        if t.is_empty() || t.contains(',') || t.chars().any(char::is_control) {
            return Err(EngineError::Usage(format!(
                "tag {t:?} is not allowed: tags are non-empty, without commas or control characters"
            )));
        }
    }
    let _lock = repo.lock(LockKind::Exclusive, "tag")?;
    catalog.refresh(repo)?;
    let selected = if opts.snapshots.is_empty() {
        catalog.snapshots()?
    } else {
        let mut v = Vec::new();
        for s in &opts.snapshots {
            let e = catalog.resolve_snapshot(s)?;
            if !v
                .iter()
                .any(|x: &crate::catalog::SnapshotEntry| x.id == e.id)
            {
                v.push(e);
            }
        }
        v
    };
    let mut summary = TagSummary::default();
    for entry in selected {
        let tags = new_tags(&entry.snapshot.tags, opts);
        if tags == entry.snapshot.tags {
            summary.unchanged += 1;
            continue;
        }
        let mut snapshot = entry.snapshot.clone();
        snapshot.tags = tags.clone();
        // The new object first: until the old one is gone both exist, never neither.
        let new_id = repo.save_snapshot(&snapshot)?;
        catalog.add_snapshot(&new_id, &snapshot)?;
        catalog.remove_snapshot(&entry.id)?;
        repo.delete_snapshot(&entry.id)?;
        summary.changed.push(Retagged {
            old_id: entry.id,
            new_id,
            tags,
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn new_tags_adds_removes_and_sets() {
        let add = TagOptions {
            add: v(&["keep", "a"]),
            ..Default::default()
        };
        assert_eq!(new_tags(&v(&["a", "b"]), &add), v(&["a", "b", "keep"]));
        let remove = TagOptions {
            remove: v(&["a"]),
            ..Default::default()
        };
        assert_eq!(new_tags(&v(&["a", "b"]), &remove), v(&["b"]));
        let set = TagOptions {
            set: v(&["x", "x"]),
            set_given: true,
            ..Default::default()
        };
        assert_eq!(new_tags(&v(&["a"]), &set), v(&["x"]));
        let clear = TagOptions {
            set_given: true,
            ..Default::default()
        };
        assert!(new_tags(&v(&["a"]), &clear).is_empty());
    }
}
