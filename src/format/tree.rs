//! Tree blobs: one directory, its entries sorted by name.
//!
//! ```text
//! | version: u8 = 1 | postcard(Tree) |
//! ```
//! postcard: integers as LEB128 varints (signed ones zigzag), byte strings and sequences as a
//! varint length then the items, `Option` as 0/1 then the value, enums as a varint variant
//! index. `docs/format.md` lists the fields in order. Encoding is deterministic, so an
//! unchanged directory has the same bytes, hence the same id, and dedupes for free.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::FormatError;
use crate::id::BlobId;

/// Tree format version written.
pub const TREE_VERSION: u8 = 1;
/// Largest encoded tree accepted.
pub const MAX_TREE_BYTES: usize = super::MAX_BLOB_BYTES as usize;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Unix socket (recorded, not recreated).
    Socket,
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name.
    pub name: ByteBuf,
    /// Attribute value.
    pub value: ByteBuf,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name (raw bytes: not necessarily UTF-8). Never empty, `.`, `..`, or containing
    /// `/` or NUL in a valid tree; restore checks again.
    pub name: ByteBuf,
    /// Kind.
    pub kind: NodeKind,
    /// Permission bits and file type bits as `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Status change time, seconds (change detection only).
    pub ctime: i64,
    /// Status change time, nanoseconds.
    pub ctime_nsec: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Inode number (change detection and hardlinks).
    pub inode: u64,
    /// Device of the file system holding it.
    pub device: u64,
    /// Number of hard links.
    pub links: u64,
    /// Device number (device nodes).
    pub rdev: u64,
    /// Symlink target (raw bytes).
    pub link_target: Option<ByteBuf>,
    /// Content blobs in order (files).
    pub content: Vec<BlobId>,
    /// Subtree (directories).
    pub subtree: Option<BlobId>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// A node of `kind` named `name` and nothing more known: mode, owner, times, size, inode,
    /// device and rdev zero, one link, no link target, content, subtree or xattrs. The `with_`
    /// methods fill in the rest.
    pub fn new(name: impl Into<Vec<u8>>, kind: NodeKind) -> Self {
        Node {
            name: ByteBuf::from(name.into()),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            link_target: None,
            content: Vec::new(),
            subtree: None,
            xattrs: Vec::new(),
        }
    }

    /// With `mode` (permission and file type bits, as `st_mode`).
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// With owner `uid` and group `gid`.
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Self {
        (self.uid, self.gid) = (uid, gid);
        self
    }

    /// With modification time `secs` and `nsec`.
    pub fn with_mtime(mut self, secs: i64, nsec: u32) -> Self {
        (self.mtime, self.mtime_nsec) = (secs, nsec);
        self
    }

    /// With status change time `secs` and `nsec`.
    pub fn with_ctime(mut self, secs: i64, nsec: u32) -> Self {
        (self.ctime, self.ctime_nsec) = (secs, nsec);
        self
    }

    /// With extended attributes `xattrs` (sorted by name).
    pub fn with_xattrs(mut self, xattrs: Vec<Xattr>) -> Self {
        self.xattrs = xattrs;
        self
    }

    /// With the directory's tree `subtree`.
    pub fn with_subtree(mut self, subtree: BlobId) -> Self {
        self.subtree = Some(subtree);
        self
    }

    /// True when `name` is safe to join to a directory path.
    pub fn name_is_safe(name: &[u8]) -> bool {
        !name.is_empty()
            && name != b"."
            && name != b".."
            && !name.contains(&b'/')
            && !name.contains(&0)
    }
}

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries, sorted by name, names unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Encode; entries must already be sorted. Postcard fails only on a bug (plain structs
    /// into a `Vec`), and then says so rather than yielding an empty tree.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = vec![TREE_VERSION];
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Decode and validate names and order.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "tree";
        let (&version, body) = bytes.split_first().ok_or(FormatError::Truncated {
            what: WHAT,
            needed: 1,
            available: 0,
        })?;
        if version != TREE_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: version.into(),
                supported: TREE_VERSION.into(),
            });
        }
        if bytes.len() > MAX_TREE_BYTES {
            return Err(FormatError::invalid(WHAT, "larger than the maximum"));
        }
        let tree: Tree =
            postcard::from_bytes(body).map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        for pair in tree.nodes.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(FormatError::invalid(
                    WHAT,
                    "entries not sorted or not unique",
                ));
            }
        }
        // One value, one byte form: trailing bytes or padded varints are refused, so a tree's
        // id names exactly one encoding.
        let again = tree
            .encode()
            .map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        if again != bytes {
            return Err(FormatError::invalid(WHAT, "not in canonical encoding"));
        }
        Ok(tree)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            0usize..7,
            any::<u32>(),
            any::<(u32, u32, i64, u32, u64, u64)>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 1..10),
                    proptest::collection::vec(any::<u8>(), 0..10),
                ),
                0..3,
            ),
        )
            .prop_map(
                |(
                    name,
                    kind,
                    mode,
                    (uid, gid, mtime, nsec, size, inode),
                    target,
                    content,
                    xattrs,
                )| Node {
                    name: ByteBuf::from(name),
                    kind: [
                        NodeKind::File,
                        NodeKind::Dir,
                        NodeKind::Symlink,
                        NodeKind::Fifo,
                        NodeKind::CharDevice,
                        NodeKind::BlockDevice,
                        NodeKind::Socket,
                    ][kind],
                    mode,
                    uid,
                    gid,
                    mtime,
                    mtime_nsec: nsec % 1_000_000_000,
                    ctime: mtime.wrapping_add(1),
                    ctime_nsec: 0,
                    size,
                    inode,
                    device: 42,
                    links: 1,
                    rdev: 0,
                    link_target: target.map(ByteBuf::from),
                    content: content.into_iter().map(BlobId).collect(),
                    subtree: None,
                    xattrs: xattrs
                        .into_iter()
                        .map(|(n, v)| Xattr {
                            name: ByteBuf::from(n),
                            value: ByteBuf::from(v),
                        })
                        .collect(),
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(mut nodes in proptest::collection::vec(arb_node(), 0..12)) {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree { nodes };
            let bytes = t.encode().unwrap();
            prop_assert_eq!(Tree::decode(&bytes).unwrap(), t.clone());
            prop_assert_eq!(bytes, t.encode().unwrap());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&bytes);
        }
    }

    #[test]
    fn rejects_unsorted_and_unknown_version() {
        let n = |s: &str| Node::new(s, NodeKind::File).with_mode(0o100644);
        let mut junk = Tree::default().encode().unwrap();
        junk.extend_from_slice(b"junk");
        assert!(Tree::decode(&junk).is_err());
        assert!(Tree::decode(&[1, 0x80, 0x00]).is_err());
        let t = Tree {
            nodes: vec![n("b"), n("a")],
        };
        assert!(Tree::decode(&t.encode().unwrap()).is_err());
        let mut v = Tree::default().encode().unwrap();
        v[0] = 7;
        assert!(matches!(
            Tree::decode(&v),
            Err(FormatError::UnsupportedVersion { .. })
        ));
        assert!(Node::name_is_safe(b"ok"));
        assert!(
            Tree::decode(
                &Tree {
                    nodes: vec![n("a")]
                }
                .encode()
                .unwrap()
            )
            .is_ok()
        );
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(!Node::name_is_safe(bad));
        }
    }

    #[test]
    fn builders_set_only_what_they_name() {
        let id = BlobId([7; 32]);
        let x = Xattr {
            name: ByteBuf::from(b"user.a".to_vec()),
            value: ByteBuf::from(b"1".to_vec()),
        };
        let n = Node::new(b"d".to_vec(), NodeKind::Dir)
            .with_mode(0o40755)
            .with_owner(1, 2)
            .with_mtime(3, 4)
            .with_ctime(5, 6)
            .with_xattrs(vec![x.clone()])
            .with_subtree(id);
        let mut want = Node::new("d", NodeKind::Dir);
        (want.mode, want.uid, want.gid) = (0o40755, 1, 2);
        (want.mtime, want.mtime_nsec, want.ctime, want.ctime_nsec) = (3, 4, 5, 6);
        (want.xattrs, want.subtree) = (vec![x], Some(id));
        assert_eq!(n, want);
        let bare = Node::new("f", NodeKind::File);
        assert_eq!(
            (bare.links, bare.size, bare.inode, bare.device),
            (1, 0, 0, 0)
        );
        assert!(bare.content.is_empty() && bare.link_target.is_none() && bare.subtree.is_none());
    }
}
