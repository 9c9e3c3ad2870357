//! Reading a file of the mount by range: which of its blobs hold the bytes asked for
//! ([`Layout`]), and the decrypted blobs kept for the next reads ([`BlobCache`], least
//! recently used first out, at most [`BLOB_CACHE_BYTES`]). Pure: the caller loads the blobs.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use crate::id::BlobId;

/// Decrypted blobs kept in memory by a mount, in bytes. With the kernel's page cache on top,
/// enough for the blobs that a few files read at once are in the middle of (a chunk is at most
/// 16 MiB).
pub const BLOB_CACHE_BYTES: usize = 64 << 20;

/// Where a file's blobs sit in its content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Each blob's end offset in the file.
    ends: Vec<u64>,
}

impl Layout {
    /// The layout of blobs of lengths `lens`, in order.
    pub fn new(lens: impl IntoIterator<Item = u64>) -> Self {
        let mut at = 0u64;
        let ends = lens
            .into_iter()
            .map(|l| {
                at = at.saturating_add(l);
                at
            })
            .collect();
        Self { ends }
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Where blob `i` starts in the file.
    pub fn start(&self, i: usize) -> u64 {
        i.checked_sub(1).map_or(0, |p| self.ends[p])
    }

    /// The length of blob `i`.
    pub fn blob_len(&self, i: usize) -> u64 {
        self.ends[i] - self.start(i)
    }

    /// The blobs holding bytes `offset..offset + size` (cut at the end of the file).
    pub fn covering(&self, offset: u64, size: u64) -> Range<usize> {
        let end = offset.saturating_add(size).min(self.size());
        if offset >= end {
            return 0..0;
        }
        let first = self.ends.partition_point(|&e| e <= offset);
        let last = self.ends.partition_point(|&e| e < end);
        first..last + 1
    }
}

/// Decrypted blobs, the least recently used dropped first once they pass the capacity.
#[derive(Debug)]
pub struct BlobCache {
    capacity_bytes: usize,
    used_bytes: usize,
    tick: u64,
    blobs: HashMap<BlobId, (Arc<Vec<u8>>, u64)>,
    /// Blobs by the tick of their last use.
    by_use: BTreeMap<u64, BlobId>,
}

impl BlobCache {
    /// An empty cache holding up to `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            used_bytes: 0,
            tick: 0,
            blobs: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// The blob `id`, if cached (it becomes the most recently used).
    pub fn get(&mut self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let (data, used) = self.blobs.get_mut(id)?;
        self.by_use.remove(used);
        *used = self.tick;
        self.by_use.insert(self.tick, *id);
        Some(data.clone())
    }

    /// Keep blob `id`, dropping the least recently used ones to make room. A blob larger than
    /// the whole cache is not kept.
    pub fn insert(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        if data.len() > self.capacity_bytes || self.blobs.contains_key(&id) {
            return;
        }
        while self.used_bytes + data.len() > self.capacity_bytes {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((gone, _)) = self.blobs.remove(&oldest) {
                self.used_bytes -= gone.len();
            }
        }
        self.tick += 1;
        self.used_bytes += data.len();
        self.by_use.insert(self.tick, id);
        self.blobs.insert(id, (data, self.tick));
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_finds_the_blobs_of_a_range() {
        let l = Layout::new([10, 10, 5]);
        assert_eq!(l.size(), 25);
        assert_eq!((l.start(1), l.blob_len(1), l.blob_len(2)), (10, 10, 5));
        let cases = [
            ((0, 1), 0..1),
            ((0, 10), 0..1),
            ((9, 2), 0..2),
            ((10, 10), 1..2),
            ((15, 100), 1..3),
            ((0, 25), 0..3),
            ((24, 1), 2..3),
            ((25, 1), 0..0),
            ((3, 0), 0..0),
            ((u64::MAX, 4096), 0..0),
        ];
        for ((offset, size), want) in cases {
            assert_eq!(l.covering(offset, size), want, "{offset}+{size}");
        }
        let empty = Layout::new([]);
        assert_eq!(empty.size(), 0);
        assert_eq!(empty.covering(0, 4096), 0..0);
    }

    #[test]
    fn the_least_recently_used_blob_goes_first() {
        let id = |b: u8| BlobId([b; 32]);
        let blob = |n: usize| Arc::new(vec![0u8; n]);
        let mut c = BlobCache::new(100);
        c.insert(id(1), blob(40));
        c.insert(id(2), blob(40));
        assert!(c.get(&id(1)).is_some(), "1 is now the most recent");
        c.insert(id(3), blob(40));
        assert!(c.get(&id(2)).is_none(), "2 was the least recently used");
        assert!(c.get(&id(1)).is_some() && c.get(&id(3)).is_some());
        assert_eq!(c.used_bytes(), 80);
        c.insert(id(4), blob(101));
        assert!(c.get(&id(4)).is_none(), "larger than the cache");
        c.insert(id(5), blob(100));
        assert_eq!(c.used_bytes(), 100);
        assert!(c.get(&id(1)).is_none() && c.get(&id(5)).is_some());
        c.insert(id(5), blob(100));
        assert_eq!(c.used_bytes(), 100, "inserted once");
    }
}
