//! The tree of an import, assembled in memory from tar entries in whatever order the archive
//! has them, then saved as tree blobs bottom-up, children before their directory.
//!
//! It behaves as `tar x` would on an empty directory: a later entry of a name replaces an
//! earlier one, a directory needed below a non-directory replaces it (with a warning), and a
//! directory without an entry of its own gets default metadata stamped with the snapshot time.
//! Memory grows with the number of entries, not with their size: content is already saved and
//! only its blob ids are held.

use std::collections::{BTreeMap, HashMap};

use serde_bytes::ByteBuf;

use crate::engine::saver::Saver;
use crate::engine::{EngineError, Warnings, display_bytes};
use crate::format::BlobKind;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::BlobId;

/// A directory being assembled from tar entries.
#[derive(Default)]
struct DirBuild {
    /// Its own entry, when the archive has one.
    meta: Option<Node>,
    children: BTreeMap<Vec<u8>, Item>,
}

enum Item {
    Dir(DirBuild),
    Leaf(Node),
}

/// The saved tree of an import.
pub(super) struct SavedTree {
    /// The root tree: one node per source.
    pub root: BlobId,
    /// The sources' names, in tree order.
    pub sources: Vec<String>,
    /// Directory trees saved (the root not counted).
    pub dirs: u64,
}

/// The snapshot's tree being built. Paths are lists of components below the prefix, the
/// source first.
pub(super) struct TreeBuilder {
    root: DirBuild,
    /// Names of each inode that has hardlink entries.
    link_counts: HashMap<u64, u64>,
    /// Snapshot time, for directories the archive has no entry for.
    time_secs: i64,
}

impl TreeBuilder {
    /// An empty tree for a snapshot taken at `time_secs`.
    pub(super) fn new(time_secs: i64) -> Self {
        Self {
            root: DirBuild::default(),
            link_counts: HashMap::new(),
            time_secs,
        }
    }

    /// Whether no entry has been added below the root.
    pub(super) fn is_empty(&self) -> bool {
        self.root.children.is_empty()
    }

    /// Give the directory at `comps` the metadata of its own entry.
    pub(super) fn set_dir(
        &mut self,
        comps: &[Vec<u8>],
        node: Node,
        warnings: &Warnings,
    ) -> Result<(), EngineError> {
        self.dir_mut(comps, warnings)?.meta = Some(node);
        Ok(())
    }

    /// The directory at `comps`, created (with default metadata until its own entry comes)
    /// where missing. A non-directory in the way is replaced, as `tar x` would.
    fn dir_mut(
        &mut self,
        comps: &[Vec<u8>],
        warnings: &Warnings,
    ) -> Result<&mut DirBuild, EngineError> {
        let mut d = &mut self.root;
        for c in comps {
            let item = d
                .children
                .entry(c.clone())
                .or_insert_with(|| Item::Dir(DirBuild::default()));
            if matches!(item, Item::Leaf(_)) {
                warnings.push(
                    display_bytes(&comps.join(&b'/')),
                    "a later entry needs a directory here; the earlier entry was dropped",
                );
                *item = Item::Dir(DirBuild::default());
            }
            d = match item {
                Item::Dir(sub) => sub,
                Item::Leaf(_) => {
                    return Err(EngineError::Internal("import: directory lost".into()));
                }
            };
        }
        Ok(d)
    }

    /// Put a non-directory `node` at `rel`.
    pub(super) fn insert(
        &mut self,
        rel: &[Vec<u8>],
        node: Node,
        warnings: &Warnings,
    ) -> Result<(), EngineError> {
        let Some((last, parents)) = rel.split_last() else {
            return Ok(());
        };
        let dir = self.dir_mut(parents, warnings)?;
        // A later entry of the same name replaces the earlier one, as `tar x` does.
        dir.children.insert(last.clone(), Item::Leaf(node));
        Ok(())
    }

    /// The non-directory at `comps`, if there is one.
    pub(super) fn find(&self, comps: &[Vec<u8>]) -> Option<&Node> {
        let (last, parents) = comps.split_last()?;
        let mut d = &self.root;
        for c in parents {
            match d.children.get(c)? {
                Item::Dir(sub) => d = sub,
                Item::Leaf(_) => return None,
            }
        }
        match d.children.get(last)? {
            Item::Leaf(n) => Some(n),
            Item::Dir(_) => None,
        }
    }

    /// Count one more name of the file `inode` (a hardlink entry to it).
    pub(super) fn add_link(&mut self, inode: u64) {
        *self.link_counts.entry(inode).or_insert(1) += 1;
    }

    /// The metadata of a directory without an entry of its own (its name and subtree are
    /// set when it is saved).
    fn default_dir(&self) -> Node {
        Node::new(Vec::new(), NodeKind::Dir)
            .with_mode(0o40755)
            .with_mtime(self.time_secs, 0)
            .with_ctime(self.time_secs, 0)
    }

    /// Save a directory's tree, children first; returns its node.
    fn save_dir(
        &self,
        saver: &Saver<'_>,
        name: &[u8],
        d: DirBuild,
        dirs: &mut u64,
    ) -> Result<Node, EngineError> {
        let mut nodes = Vec::with_capacity(d.children.len());
        // BTreeMap order is byte order of the names: the order trees are sorted in.
        for (child, item) in d.children {
            nodes.push(match item {
                Item::Dir(sub) => self.save_dir(saver, &child, sub, dirs)?,
                Item::Leaf(mut n) => {
                    if n.kind == NodeKind::File
                        && let Some(&count) = self.link_counts.get(&n.inode)
                    {
                        n.links = count;
                    }
                    n
                }
            });
        }
        let id = saver.save(
            BlobKind::Tree,
            &crate::engine::encode_tree(&Tree { nodes })?,
        )?;
        let mut node = d.meta.unwrap_or_else(|| self.default_dir());
        node.name = ByteBuf::from(name.to_vec());
        node.subtree = Some(id);
        *dirs += 1;
        Ok(node)
    }

    /// Save every tree, bottom-up, leaving the builder empty. `source_name` turns the name of
    /// each entry below the root into the source's name, or refuses it.
    pub(super) fn save(
        &mut self,
        saver: &Saver<'_>,
        source_name: impl Fn(&[u8]) -> Result<String, EngineError>,
    ) -> Result<SavedTree, EngineError> {
        let root = std::mem::take(&mut self.root);
        let mut dirs = 0;
        let mut sources = Vec::new();
        let mut nodes = Vec::new();
        for (name, item) in root.children {
            let shown = source_name(&name)?;
            nodes.push(match item {
                Item::Dir(d) => self.save_dir(saver, &name, d, &mut dirs)?,
                Item::Leaf(n) => n,
            });
            sources.push(shown);
        }
        let root = saver.save(
            BlobKind::Tree,
            &crate::engine::encode_tree(&Tree { nodes })?,
        )?;
        Ok(SavedTree {
            root,
            sources,
            dirs,
        })
    }
}
