//! Walking the trees of a snapshot: resolving a path inside it, and listing entries.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{EngineError, display_bytes, load_tree};
use crate::catalog::Catalog;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::Repository;

/// A node standing for a snapshot's root directory.
pub fn root_node(tree: BlobId) -> Node {
    Node::new(Vec::new(), NodeKind::Dir)
        .with_mode(0o40755)
        .with_subtree(tree)
}

/// Split a user's path inside a snapshot (`workspace/src/`) into components.
pub fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Find the node at `path` below the root tree. The empty path is the root itself.
pub fn resolve(
    repo: &Repository,
    catalog: &Catalog,
    root: BlobId,
    path: &str,
) -> Result<Node, EngineError> {
    let mut node = root_node(root);
    for c in components(path) {
        if !Node::name_is_safe(c.as_bytes()) {
            return Err(EngineError::Usage(format!(
                "{path:?}: {c:?} is not allowed in a path inside a snapshot"
            )));
        }
        let subtree = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => t,
            _ => {
                return Err(EngineError::Usage(format!(
                    "{path:?} is not in the snapshot"
                )));
            }
        };
        let tree = load_tree(repo, catalog, &subtree)?;
        let names: Vec<String> = tree
            .nodes
            .iter()
            .map(|n| String::from_utf8_lossy(&n.name).into_owned())
            .collect();
        node = match tree.nodes.into_iter().find(|n| n.name[..] == *c.as_bytes()) {
            Some(n) => n,
            None => return Err(EngineError::Usage(not_found(path, c, &names))),
        };
    }
    Ok(node)
}

/// The message for a path that is not in the snapshot: what is there instead, and the
/// closest name (`workspace` for a source named `shop_workspace`).
fn not_found(path: &str, missing: &str, names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut msg = format!("{path:?} is not in the snapshot");
    if let Some(best) = closest(missing, names) {
        msg.push_str(&format!("; did you mean {best:?}?"));
    }
    if names.is_empty() {
        msg.push_str(&format!(" ({missing:?} is in an empty directory)"));
    } else {
        let mut shown: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
        if names.len() > SHOWN {
            shown.push("...");
        }
        msg.push_str(&format!(" (there: {})", shown.join(", ")));
    }
    msg
}

/// The name closest to `wanted`: one that ends with it after a `_` or `-` (compose's project
/// prefix), else one within two edits.
fn closest<'a>(wanted: &str, names: &'a [String]) -> Option<&'a str> {
    let suffixed = names.iter().find(|n| {
        n.strip_suffix(wanted)
            .is_some_and(|p| p.ends_with('_') || p.ends_with('-'))
    });
    if let Some(n) = suffixed {
        return Some(n);
    }
    names
        .iter()
        .map(|n| (edit_distance(wanted, n), n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_names_what_is_there() {
        let names: Vec<String> = ["claude-remote-runner_workspace", "sessions"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = not_found("workspace/", "workspace", &names);
        assert!(
            m.contains("did you mean \"claude-remote-runner_workspace\""),
            "{m}"
        );
        assert!(
            m.contains("there: claude-remote-runner_workspace, sessions"),
            "{m}"
        );
        assert_eq!(closest("sesions", &names), Some("sessions"));
        assert_eq!(closest("database", &names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

/// Call `f` for `node` at `path` and every node below it, depth first, parents before
/// children, in name order.
pub fn walk(
    repo: &Repository,
    catalog: &Catalog,
    path: &Path,
    node: &Node,
    f: &mut dyn FnMut(&Path, &Node) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    f(path, node)?;
    if let (NodeKind::Dir, Some(subtree)) = (node.kind, node.subtree) {
        let tree = load_tree(repo, catalog, &subtree)?;
        for child in &tree.nodes {
            let p = path
                .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&child.name));
            walk(repo, catalog, &p, child, f)?;
        }
    }
    Ok(())
}

/// One entry as `ls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LsEntry {
    /// Path inside the snapshot.
    pub path: String,
    /// `file`, `dir`, `symlink`, ...
    pub kind: &'static str,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (RFC 3339).
    pub mtime: String,
    /// Symlink target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The `ls` name of a node kind.
pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

/// List everything at and below `path` in the tree `root`.
pub fn ls(
    repo: &Repository,
    catalog: &Catalog,
    root: BlobId,
    path: &str,
    f: &mut dyn FnMut(LsEntry),
) -> Result<(), EngineError> {
    let node = resolve(repo, catalog, root, path)?;
    let start: PathBuf = components(path).iter().collect();
    walk(repo, catalog, &start, &node, &mut |p, n| {
        if p.as_os_str().is_empty() {
            return Ok(());
        }
        f(LsEntry {
            path: p.to_string_lossy().into_owned(),
            kind: kind_name(n.kind),
            size: n.size,
            mode: n.mode & 0o7777,
            mtime: chrono::DateTime::from_timestamp(n.mtime, n.mtime_nsec)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            target: n.link_target.as_ref().map(|t| display_bytes(t)),
        });
        Ok(())
    })
}
