//! `find`: entries matching a pattern across all snapshots, answered from the catalog's path
//! index (`catalog::paths`) instead of reading every tree of every snapshot as restic does.
//!
//! The index is brought up to date first: each snapshot not in it yet adds the trees it does
//! not share with an indexed one (nothing, for a snapshot of unchanged data). Then one query
//! over the distinct entries finds the names, and each match's paths come from climbing its
//! tree's parents up to the snapshot roots, once per tree.
//!
//! A pattern without `/` matches names at any depth (`*.sql`, `notes.txt`); a pattern with
//! `/` matches whole paths inside the snapshot (`src/**/*.rs`, `workspace/notes.txt`; a
//! leading `/` is ignored), `*` not crossing `/`, `**` any number of directories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use serde::Serialize;

use super::restore::fetch::prefetch_trees;
use super::{EngineError, load_tree};
use crate::catalog::{Catalog, PathHit};
use crate::format::tree::NodeKind;
use crate::id::{BlobId, SnapshotId};
use crate::repo::{LockKind, Repository};

/// What to look for, and in which snapshots.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FindOptions {
    /// Glob patterns; an entry matching any of them is listed.
    pub patterns: Vec<String>,
    /// Compare in lower case.
    pub ignore_case: bool,
    /// Only snapshots of these hosts (all when empty).
    pub hosts: Vec<String>,
    /// Only snapshots with all of these tags (all when empty).
    pub tags: Vec<String>,
    /// Only these snapshots (ids or unique prefixes; all when empty).
    pub snapshots: Vec<String>,
}

/// One matching entry.
#[derive(Clone, Debug, Serialize)]
pub struct FindMatch {
    /// Path inside the snapshot.
    pub path: String,
    /// `file`, `dir`, `symlink`, ...
    pub kind: &'static str,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time (RFC 3339, UTC).
    pub mtime: String,
}

/// The matches of one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotMatches {
    /// The snapshot's id.
    pub snapshot: String,
    /// Its time (RFC 3339, UTC).
    pub time: String,
    /// Its host.
    pub host: String,
    /// The matching entries, in path order.
    pub matches: Vec<FindMatch>,
}

/// What `find` found, and what keeping the index up to date cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FindSummary {
    /// Snapshots with at least one match, oldest first.
    pub snapshots: Vec<SnapshotMatches>,
    /// Snapshots added to the path index by this run.
    pub snapshots_indexed: u64,
    /// Trees read to add them.
    pub trees_indexed: u64,
    /// Trees dropped from the index because no snapshot left reaches them.
    pub trees_dropped: u64,
}

/// A compiled pattern: the glob on names that the index answers, and for a path pattern the
/// whole-path matcher applied to the results.
struct Pattern {
    name_glob: String,
    path: Option<globset::GlobMatcher>,
}

impl Pattern {
    fn new(p: &str, ignore_case: bool) -> Result<Self, EngineError> {
        let trimmed = p.trim_start_matches('/').trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(EngineError::Usage(format!(
                "find pattern {p:?} matches nothing: give a name or a path, e.g. '*.sql'"
            )));
        }
        let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
        let path = if trimmed.contains('/') {
            let glob = globset::GlobBuilder::new(trimmed)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| EngineError::Usage(format!("find pattern {p:?}: {e}")))?;
            Some(glob.compile_matcher())
        } else {
            None
        };
        // `**` as the last component matches any name.
        let name_glob = if last == "**" {
            "*".into()
        } else {
            last.to_string()
        };
        Ok(Pattern { name_glob, path })
    }
}

/// Find the entries matching `opts.patterns` in the selected snapshots.
pub fn find(
    repo: &Repository,
    catalog: &Catalog,
    opts: &FindOptions,
) -> Result<FindSummary, EngineError> {
    if opts.patterns.is_empty() {
        return Err(EngineError::Usage(
            "find needs a pattern, e.g. '*.sql'".into(),
        ));
    }
    let patterns = opts
        .patterns
        .iter()
        .map(|p| Pattern::new(p, opts.ignore_case))
        .collect::<Result<Vec<_>, _>>()?;
    let _lock = repo.lock(LockKind::Shared, "find")?;
    catalog.refresh(repo)?;
    let selected = select_snapshots(catalog, opts)?;
    let mut summary = FindSummary::default();
    update_index(repo, catalog, &mut summary)?;
    let roots = catalog.path_roots()?;
    let mut climber = Climber {
        catalog,
        roots: &roots,
        memo: HashMap::new(),
    };
    let mut found: HashMap<SnapshotId, BTreeMap<String, FindMatch>> = HashMap::new();
    for p in &patterns {
        for hit in catalog.find_names(&p.name_glob, opts.ignore_case)? {
            for (snap, dir) in climber.dirs(hit.tree)?.iter() {
                if !selected.contains_key(snap) {
                    continue;
                }
                let path = format!("{dir}{}", hit.name);
                if p.path.as_ref().is_some_and(|m| !m.is_match(&path)) {
                    continue;
                }
                found
                    .entry(*snap)
                    .or_default()
                    .insert(path.clone(), to_match(path, &hit));
            }
        }
    }
    let mut out: Vec<(i64, SnapshotMatches)> = found
        .into_iter()
        .filter_map(|(id, matches)| {
            let s = selected.get(&id)?;
            Some((
                s.time_ns,
                SnapshotMatches {
                    snapshot: id.to_hex(),
                    time: chrono::DateTime::from_timestamp_nanos(s.time_ns).to_rfc3339(),
                    host: s.host.clone(),
                    matches: matches.into_values().collect(),
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.snapshot.cmp(&b.1.snapshot)));
    summary.snapshots = out.into_iter().map(|(_, m)| m).collect();
    Ok(summary)
}

fn to_match(path: String, hit: &PathHit) -> FindMatch {
    FindMatch {
        path,
        kind: super::walk::kind_name(hit.kind),
        size: if hit.kind == NodeKind::File {
            hit.size
        } else {
            0
        },
        mtime: chrono::DateTime::from_timestamp(hit.mtime, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    }
}

/// The snapshots `opts` selects, by id.
fn select_snapshots(
    catalog: &Catalog,
    opts: &FindOptions,
) -> Result<HashMap<SnapshotId, crate::format::snapshot::Snapshot>, EngineError> {
    let mut wanted: Option<HashSet<SnapshotId>> = None;
    if !opts.snapshots.is_empty() {
        let mut ids = HashSet::new();
        for s in &opts.snapshots {
            ids.insert(catalog.resolve_snapshot(s)?.id);
        }
        wanted = Some(ids);
    }
    Ok(catalog
        .snapshots()?
        .into_iter()
        .filter(|s| wanted.as_ref().is_none_or(|w| w.contains(&s.id)))
        .filter(|s| opts.hosts.is_empty() || opts.hosts.contains(&s.snapshot.host))
        .filter(|s| opts.tags.iter().all(|t| s.snapshot.tags.contains(t)))
        .map(|s| (s.id, s.snapshot))
        .collect())
}

/// Add every snapshot the path index lacks, each with the trees no indexed snapshot shares.
fn update_index(
    repo: &Repository,
    catalog: &Catalog,
    summary: &mut FindSummary,
) -> Result<(), EngineError> {
    summary.trees_dropped = catalog.drop_stale_paths()?;
    let missing = catalog.snapshots_without_paths()?;
    if missing.len() >= BULK_SNAPSHOTS {
        catalog.begin_bulk_paths()?;
    }
    let built = add_paths(repo, catalog, missing, summary);
    catalog.end_bulk_paths()?;
    built
}

/// From this many snapshots to add, the path index is built in bulk.
const BULK_SNAPSHOTS: usize = 8;

/// Add `missing` snapshots to the path index, reading the trees the index lacks.
fn add_paths(
    repo: &Repository,
    catalog: &Catalog,
    missing: Vec<(SnapshotId, BlobId)>,
    summary: &mut FindSummary,
) -> Result<(), EngineError> {
    for (snapshot, root) in missing {
        if repo.is_remote() && !catalog.tree_has_paths(&root)? {
            prefetch_trees(repo, catalog, &root)?;
        }
        let mut trees = Vec::new();
        let mut stack: Vec<BlobId> = vec![root];
        let mut seen = HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) || catalog.tree_has_paths(&id)? {
                continue;
            }
            let tree = load_tree(repo, catalog, &id)?;
            stack.extend(
                tree.nodes
                    .iter()
                    .filter(|n| n.kind == NodeKind::Dir)
                    .filter_map(|n| n.subtree),
            );
            trees.push((id, tree));
        }
        summary.trees_indexed += trees.len() as u64;
        summary.snapshots_indexed += 1;
        catalog.add_snapshot_paths(&snapshot, &root, &trees)?;
    }
    Ok(())
}

/// The directory paths (ending in `/`, `""` for a root) at which each tree appears in the
/// indexed snapshots, computed once per tree.
struct Climber<'a> {
    catalog: &'a Catalog,
    roots: &'a HashMap<i64, Vec<SnapshotId>>,
    memo: HashMap<i64, Rc<Vec<(SnapshotId, String)>>>,
}

impl Climber<'_> {
    fn dirs(&mut self, tree: i64) -> Result<Rc<Vec<(SnapshotId, String)>>, EngineError> {
        if let Some(d) = self.memo.get(&tree) {
            return Ok(d.clone());
        }
        let mut out: Vec<(SnapshotId, String)> = self
            .roots
            .get(&tree)
            .map(|s| s.iter().map(|id| (*id, String::new())).collect())
            .unwrap_or_default();
        for (parent, name) in self.catalog.path_parents(tree)? {
            for (snap, dir) in self.dirs(parent)?.iter() {
                out.push((*snap, format!("{dir}{name}/")));
            }
        }
        let out = Rc::new(out);
        self.memo.insert(tree, out.clone());
        Ok(out)
    }
}
