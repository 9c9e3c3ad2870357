//! The mount's inode table: which inode number stands for which path. The directories of
//! the mount's own (`snapshots/`, `ids/`, `hosts/<host>/`, `tags/<tag>/`) and the `latest`
//! link are laid out from the snapshot list; a snapshot's tree is added directory by
//! directory as the kernel looks into it ([`InodeTable::fill`]). Every path has an inode of
//! its own, also where two paths show the same snapshot (the kernel does not want a
//! directory under two names). Pure: the caller loads the trees.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;
/// Hex digits of the shortest id shown under `ids/`.
const SHORT_ID_DIGITS: usize = 8;

/// What the mount needs to know of a snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    /// The full id, lower-case hex.
    pub id: String,
    /// Its time, nanoseconds since the epoch (UTC).
    pub time_ns: i64,
    /// Its host.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its root tree.
    pub tree: BlobId,
}

/// What an inode is.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A directory of the mount's own (the root, `snapshots/`, `hosts/<host>/`, ...).
    Dir {
        /// The newest snapshot's time below it, nanoseconds.
        mtime_ns: i64,
    },
    /// A symbolic link of the mount's own (`latest`).
    Link {
        /// Where it points.
        target: Vec<u8>,
        /// The snapshot's time, nanoseconds.
        mtime_ns: i64,
    },
    /// A node of a snapshot's tree; a snapshot's root directory is one too.
    Node(Arc<Node>),
}

impl Entry {
    /// True for directories, of the mount's or of a snapshot.
    pub fn is_dir(&self) -> bool {
        match self {
            Entry::Dir { .. } => true,
            Entry::Link { .. } => false,
            Entry::Node(n) => n.kind == NodeKind::Dir,
        }
    }
}

/// A directory's entries.
#[derive(Debug, Default)]
struct Children {
    /// As listed, in order.
    listed: Vec<(Vec<u8>, u64)>,
    /// Every name that resolves, the listed ones and the aliases under `ids/`.
    by_name: HashMap<Vec<u8>, u64>,
}

/// One inode.
#[derive(Debug)]
pub struct Inode {
    /// The directory holding it (the root's is the root).
    pub parent: u64,
    /// What it is.
    pub entry: Entry,
    /// A directory's entries; `None` until its tree is loaded.
    children: Option<Children>,
}

/// Every inode handed out so far. Inodes are never reused while mounted.
#[derive(Debug)]
pub struct InodeTable {
    inodes: Vec<Inode>,
    /// The `ids/` directory.
    ids_dir: u64,
    /// Each snapshot's full id and root node, for lookups under `ids/` by full id or a longer
    /// prefix than the one listed.
    roots: Vec<(String, Arc<Node>)>,
}

impl InodeTable {
    /// The mount's layout for `snapshots` (oldest first), `latest` pointing at the snapshot
    /// with id `latest`; the mount's own directories and the snapshots' root directories
    /// belong to `owner` (uid, gid).
    pub fn new(snapshots: &[SnapshotInfo], latest: Option<&str>, owner: (u32, u32)) -> Self {
        let newest = snapshots.iter().map(|s| s.time_ns).max().unwrap_or(0);
        let root = Inode {
            parent: ROOT,
            entry: Entry::Dir { mtime_ns: newest },
            children: Some(Children::default()),
        };
        let mut t = InodeTable {
            inodes: vec![root],
            ids_dir: ROOT,
            roots: Vec::new(),
        };
        let names = snapshot_names(snapshots);
        let shorts = short_ids(snapshots.iter().map(|s| s.id.as_str()));
        let all: Vec<usize> = (0..snapshots.len()).collect();
        t.roots = snapshots
            .iter()
            .map(|s| (s.id.clone(), Arc::new(snapshot_root(s, owner))))
            .collect();

        let dir = t.add_dir(ROOT, b"snapshots", newest);
        t.add_snapshots(dir, &all, &names);
        t.ids_dir = t.add_dir(ROOT, b"ids", newest);
        t.add_snapshots(t.ids_dir, &all, &shorts);
        for (parent, groups) in [
            (
                b"hosts".as_slice(),
                group(snapshots, |s| vec![s.host.clone()]),
            ),
            (b"tags".as_slice(), group(snapshots, |s| s.tags.clone())),
        ] {
            let top = t.add_dir(ROOT, parent, newest);
            for (name, members) in groups {
                let newest_here = members.iter().map(|&i| snapshots[i].time_ns).max();
                let d = t.add_dir(top, name.as_bytes(), newest_here.unwrap_or(0));
                t.add_snapshots(d, &members, &names);
            }
        }
        if let Some(i) = latest.and_then(|id| snapshots.iter().position(|s| s.id == id)) {
            let target = format!("snapshots/{}", names[i]).into_bytes();
            let mtime_ns = snapshots[i].time_ns;
            t.add(ROOT, b"latest", Entry::Link { target, mtime_ns }, true);
        }
        t
    }

    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inodes.get(i)
    }

    /// The tree to load before the directory `ino` can be listed: `Some` for a snapshot's
    /// directory whose entries are not known yet.
    pub fn tree_to_load(&self, ino: u64) -> Option<BlobId> {
        let inode = self.get(ino)?;
        match (&inode.entry, &inode.children) {
            (Entry::Node(n), None) if n.kind == NodeKind::Dir => {
                // A directory without a tree (not written by coffer) is empty.
                n.subtree
            }
            _ => None,
        }
    }

    /// Record the entries of the snapshot directory `ino`, loaded from its tree. A directory
    /// filled already (by another thread meanwhile) keeps its inodes.
    pub fn fill(&mut self, ino: u64, nodes: Vec<Node>) {
        if self
            .get(ino)
            .is_none_or(|i| i.children.is_some() || !i.entry.is_dir())
        {
            return;
        }
        self.set_children(ino);
        for node in nodes {
            let name = node.name.to_vec();
            if Node::name_is_safe(&name) {
                self.add(ino, &name, Entry::Node(Arc::new(node)), true);
            }
        }
    }

    /// The entry `name` of the directory `parent`, if it is known. Under `ids/`, a full id
    /// or any unique prefix of at least 8 digits finds its snapshot too (and gets an inode of
    /// its own).
    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Option<u64> {
        if let Some(ino) = self.children_of(parent)?.by_name.get(name) {
            return Some(*ino);
        }
        if parent != self.ids_dir || name.len() < SHORT_ID_DIGITS {
            return None;
        }
        let wanted = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        let mut matching = self.roots.iter().filter(|(id, _)| id.starts_with(&wanted));
        let (_, root) = matching.next()?;
        if matching.next().is_some() {
            return None;
        }
        let entry = Entry::Node(root.clone());
        Some(self.add(parent, name, entry, false))
    }

    /// The listed entries of the directory `ino` (names and inodes), once known.
    pub fn listing(&self, ino: u64) -> Option<&[(Vec<u8>, u64)]> {
        Some(&self.children_of(ino)?.listed)
    }

    /// How many inodes there are.
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// True when only the root exists (never: the layout always has its directories).
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }

    fn children_of(&self, ino: u64) -> Option<&Children> {
        self.get(ino)?.children.as_ref()
    }

    fn set_children(&mut self, ino: u64) {
        if let Some(i) = ino.checked_sub(1).and_then(|i| usize::try_from(i).ok())
            && let Some(inode) = self.inodes.get_mut(i)
        {
            inode.children.get_or_insert_with(Children::default);
        }
    }

    fn add(&mut self, parent: u64, name: &[u8], entry: Entry, listed: bool) -> u64 {
        let children = match &entry {
            Entry::Dir { .. } => Some(Children::default()),
            _ => None,
        };
        self.inodes.push(Inode {
            parent,
            entry,
            children,
        });
        let ino = self.inodes.len() as u64;
        if let Some(c) = parent
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.inodes.get_mut(i))
            .and_then(|p| p.children.as_mut())
        {
            if listed {
                c.listed.push((name.to_vec(), ino));
            }
            c.by_name.insert(name.to_vec(), ino);
        }
        ino
    }

    fn add_dir(&mut self, parent: u64, name: &[u8], mtime_ns: i64) -> u64 {
        self.add(parent, name, Entry::Dir { mtime_ns }, true)
    }

    /// One directory per snapshot of `members` in `dir`, named by `names`.
    fn add_snapshots(&mut self, dir: u64, members: &[usize], names: &[String]) {
        for &i in members {
            let root = Entry::Node(self.roots[i].1.clone());
            self.add(dir, names[i].as_bytes(), root, true);
        }
    }
}

/// A snapshot's root directory: its tree, with the snapshot's time, owned by `owner`.
fn snapshot_root(s: &SnapshotInfo, owner: (u32, u32)) -> Node {
    let secs = s.time_ns.div_euclid(1_000_000_000);
    let nsec = s.time_ns.rem_euclid(1_000_000_000) as u32;
    crate::engine::walk::root_node(s.tree)
        .with_mtime(secs, nsec)
        .with_ctime(secs, nsec)
        .with_owner(owner.0, owner.1)
}

/// The snapshots of each group `keys` puts them in, by the group's directory name (groups
/// whose names differ only in a `/` share one).
fn group(
    snapshots: &[SnapshotInfo],
    keys: impl Fn(&SnapshotInfo) -> Vec<String>,
) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        for k in keys(s) {
            let members = out.entry(dir_name(&k)).or_default();
            if members.last() != Some(&i) {
                members.push(i);
            }
        }
    }
    out
}

/// A host or tag as a directory name: `/` and NUL become `_`; an empty name, `.` and `..`
/// get a `_` in front.
pub fn dir_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if Node::name_is_safe(name.as_bytes()) {
        name
    } else {
        format!("_{name}")
    }
}

/// Each snapshot's directory name under `snapshots/`: its UTC time
/// (`2026-12-02T03:00:00Z`), and where two share a second, `-` and its short id.
pub fn snapshot_names(snapshots: &[SnapshotInfo]) -> Vec<String> {
    let times: Vec<String> = snapshots
        .iter()
        .map(|s| {
            chrono::DateTime::from_timestamp_nanos(s.time_ns)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in &times {
        *count.entry(t).or_default() += 1;
    }
    let shorts = short_ids(snapshots.iter().map(|s| s.id.as_str()));
    times
        .iter()
        .zip(shorts)
        .map(|(t, short)| {
            if count[t.as_str()] > 1 {
                format!("{t}-{short}")
            } else {
                t.clone()
            }
        })
        .collect()
}

/// Each id's shortest prefix of at least 8 digits that no other id starts with (the whole id
/// where one equals another).
pub fn short_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let ids: Vec<&str> = ids.collect();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let mut len = vec![SHORT_ID_DIGITS; ids.len()];
    for w in order.windows(2) {
        let need = common(ids[w[0]], ids[w[1]]) + 1;
        len[w[0]] = len[w[0]].max(need);
        len[w[1]] = len[w[1]].max(need);
    }
    ids.iter()
        .zip(len)
        .map(|(id, n)| id.get(..n).unwrap_or(id).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, time: &str, host: &str, tags: &[&str]) -> SnapshotInfo {
        let t = chrono::DateTime::parse_from_rfc3339(time).unwrap();
        SnapshotInfo {
            id: id.to_string(),
            time_ns: t.timestamp_nanos_opt().unwrap(),
            host: host.to_string(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            tree: BlobId([id.as_bytes()[0]; 32]),
        }
    }

    fn names(t: &InodeTable, ino: u64) -> Vec<String> {
        t.listing(ino)
            .unwrap()
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    fn path(t: &mut InodeTable, p: &str) -> Option<u64> {
        let mut ino = ROOT;
        for c in p.split('/').filter(|c| !c.is_empty()) {
            ino = t.lookup(ino, c.as_bytes())?;
        }
        Some(ino)
    }

    fn sample() -> Vec<SnapshotInfo> {
        vec![
            snap("aaaa1111aa", "2026-12-01T03:00:00Z", "db", &["nightly"]),
            snap(
                "bbbb2222bb",
                "2026-12-02T03:00:00Z",
                "web",
                &["nightly", "a/b"],
            ),
            snap(
                "bbbb2222cc",
                "2026-12-02T03:00:00.5Z",
                "web",
                &["pre-restore"],
            ),
        ]
    }

    #[test]
    fn short_ids_grow_until_unique() {
        let ids = ["abcdef0123", "abcdef0124", "12345678ff", "abcd"];
        assert_eq!(
            short_ids(ids.iter().copied()),
            ["abcdef0123", "abcdef0124", "12345678", "abcd"]
        );
        assert_eq!(short_ids(["ab12cd34ef"].into_iter()), ["ab12cd34"]);
    }

    #[test]
    fn snapshots_in_the_same_second_get_their_short_id() {
        let n = snapshot_names(&sample());
        assert_eq!(
            n,
            [
                "2026-12-01T03:00:00Z",
                "2026-12-02T03:00:00Z-bbbb2222b",
                "2026-12-02T03:00:00Z-bbbb2222c",
            ]
        );
    }

    #[test]
    fn the_layout_has_snapshots_ids_hosts_tags_and_latest() {
        let mut t = InodeTable::new(&sample(), Some("bbbb2222bb"), (5, 6));
        assert_eq!(
            names(&t, ROOT),
            ["snapshots", "ids", "hosts", "tags", "latest"]
        );
        let hosts = path(&mut t, "hosts").unwrap();
        assert_eq!(names(&t, hosts), ["db", "web"]);
        let web = path(&mut t, "hosts/web").unwrap();
        assert_eq!(names(&t, web).len(), 2);
        let tags = path(&mut t, "tags").unwrap();
        assert_eq!(names(&t, tags), ["a_b", "nightly", "pre-restore"]);
        let nightly = path(&mut t, "tags/nightly").unwrap();
        assert_eq!(
            names(&t, nightly),
            ["2026-12-01T03:00:00Z", "2026-12-02T03:00:00Z-bbbb2222b"]
        );
        let ids = path(&mut t, "ids").unwrap();
        assert_eq!(names(&t, ids), ["aaaa1111", "bbbb2222b", "bbbb2222c"]);
        let latest = path(&mut t, "latest").unwrap();
        match &t.get(latest).unwrap().entry {
            Entry::Link { target, .. } => {
                assert_eq!(target, b"snapshots/2026-12-02T03:00:00Z-bbbb2222b")
            }
            other => panic!("latest is {other:?}"),
        }
        // A snapshot's root directory: its tree, owned by the mounting user, at its time.
        let root = path(&mut t, "snapshots/2026-12-01T03:00:00Z").unwrap();
        match &t.get(root).unwrap().entry {
            Entry::Node(n) => {
                assert_eq!((n.uid, n.gid, n.mtime), (5, 6, 1_796_094_000));
                assert_eq!(n.subtree, Some(BlobId([b'a'; 32])));
            }
            other => panic!("snapshot root is {other:?}"),
        }
        assert_eq!(t.tree_to_load(root), Some(BlobId([b'a'; 32])));
        assert_eq!(t.tree_to_load(hosts), None);
    }

    #[test]
    fn every_path_to_a_snapshot_has_its_own_inode() {
        let mut t = InodeTable::new(&sample(), Some("aaaa1111aa"), (0, 0));
        let a = path(&mut t, "snapshots/2026-12-01T03:00:00Z").unwrap();
        let b = path(&mut t, "hosts/db/2026-12-01T03:00:00Z").unwrap();
        let c = path(&mut t, "ids/aaaa1111").unwrap();
        assert!(a != b && b != c && a != c);
        let db = path(&mut t, "hosts/db").unwrap();
        assert_eq!(t.get(b).unwrap().parent, db);
    }

    #[test]
    fn ids_resolve_by_full_id_or_a_longer_unique_prefix_only() {
        let mut t = InodeTable::new(&sample(), None, (0, 0));
        let ids = path(&mut t, "ids").unwrap();
        let full = t.lookup(ids, b"aaaa1111aa").expect("the full id");
        assert_eq!(t.lookup(ids, b"aaaa1111aa"), Some(full), "looked up once");
        assert!(
            t.lookup(ids, b"AAAA1111A").is_some(),
            "case does not matter"
        );
        assert_eq!(t.lookup(ids, b"bbbb2222"), None, "ambiguous");
        assert_eq!(t.lookup(ids, b"aaaa"), None, "too short");
        assert_eq!(t.lookup(ids, b"cccc3333"), None, "no such snapshot");
        assert_eq!(names(&t, ids).len(), 3, "aliases are not listed");
        assert!(
            path(&mut t, "latest").is_none(),
            "no latest without snapshots"
        );
    }

    #[test]
    fn snapshot_directories_are_filled_once_from_their_trees() {
        let mut t = InodeTable::new(&sample(), None, (0, 0));
        let root = path(&mut t, "snapshots/2026-12-01T03:00:00Z").unwrap();
        assert_eq!(t.listing(root), None);
        assert_eq!(t.lookup(root, b"src"), None);
        let src = Node::new(b"src".to_vec(), NodeKind::Dir).with_subtree(BlobId([9; 32]));
        let bad = Node::new(b"..".to_vec(), NodeKind::File);
        t.fill(root, vec![src, bad]);
        assert_eq!(names(&t, root), ["src"]);
        let src_ino = t.lookup(root, b"src").unwrap();
        t.fill(root, vec![Node::new(b"other".to_vec(), NodeKind::File)]);
        assert_eq!(names(&t, root), ["src"], "filled once");
        assert_eq!(t.tree_to_load(src_ino), Some(BlobId([9; 32])));
        t.fill(src_ino, Vec::new());
        assert_eq!(t.tree_to_load(src_ino), None);
        assert_eq!(t.listing(src_ino), Some(&[][..]));
        assert!(t.get(0).is_none() && t.get(t.len() as u64 + 1).is_none());
    }

    #[test]
    fn host_and_tag_names_are_made_safe() {
        assert_eq!(dir_name("a/b"), "a_b");
        assert_eq!(dir_name(""), "_");
        assert_eq!(dir_name(".."), "_..");
        assert_eq!(dir_name("web-1"), "web-1");
    }
}
