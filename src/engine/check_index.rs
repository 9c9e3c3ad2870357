//! The repository's index as `check` holds it: each pack's entries once, and per blob id only
//! where the entry `check` uses is, in a table sorted by id and built once at its final size
//! (40 bytes a blob; a hash map of locations took about 3 times that with its spare room and
//! rehashing).
//!
//! Of a blob's entries, the first in a pack that exists is used, so that an old index file put
//! back after prune (naming packs prune deleted) cannot make a sound blob look lost; each such
//! pair is reported as a conflict.

use std::collections::HashMap;

use crate::format::BlobEntry;
use crate::id::{BlobId, IndexId, PackId};
use crate::repo::BlobLocation;

/// A blob indexed in a pack that exists and, too, in one that is missing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Conflict {
    /// The blob.
    pub blob: BlobId,
    /// The pack whose copy is used (it exists).
    pub used: PackId,
    /// The pack that is missing.
    pub missing: PackId,
}

/// What [`CheckIndex::index_blobs`] found about blobs indexed more than once.
#[derive(Debug, Default)]
pub(super) struct Duplicates {
    /// Blobs with an entry in a missing pack besides the one used, in an existing pack.
    pub conflicts: Vec<Conflict>,
    /// Blobs indexed in two packs that both exist (harmless: two backups stored them at once,
    /// or a prune was interrupted; the next prune keeps one).
    pub in_existing_packs: u64,
}

#[derive(Default)]
pub(super) struct CheckIndex {
    packs: Vec<(PackId, Vec<BlobEntry>)>,
    /// The first index file naming each pack, by pack number.
    named_by: Vec<IndexId>,
    pack_no: HashMap<PackId, u32>,
    /// (blob id, pack number, entry number), sorted by id, one row per id.
    blobs: Vec<(BlobId, u32, u32)>,
}

impl CheckIndex {
    /// Add a pack's entries as the index file `from` lists them (a pack listed twice gets
    /// both).
    pub(super) fn add_pack(&mut self, from: IndexId, pack: PackId, blobs: Vec<BlobEntry>) {
        match self.pack_no.get(&pack) {
            Some(&n) => self.packs[n as usize].1.extend(blobs),
            None => {
                self.pack_no.insert(pack, self.packs.len() as u32);
                self.packs.push((pack, blobs));
                self.named_by.push(from);
            }
        }
    }

    /// Build the blob id table; call once, after the last [`CheckIndex::add_pack`]. A blob
    /// indexed more than once is found at its first entry (in index file order) in a pack for
    /// which `exists` holds, else at its first entry.
    pub(super) fn index_blobs(&mut self, exists: impl Fn(&PackId) -> bool) -> Duplicates {
        let present: Vec<bool> = self.packs.iter().map(|(p, _)| exists(p)).collect();
        let n = self.packs.iter().map(|(_, b)| b.len()).sum();
        let mut blobs = Vec::with_capacity(n);
        for (p, (_, entries)) in self.packs.iter().enumerate() {
            for (i, e) in entries.iter().enumerate() {
                blobs.push((e.id, p as u32, i as u32));
            }
        }
        // Stable: of equal ids in existing packs (or in missing ones) the first added stays
        // first, and dedup keeps it.
        blobs.sort_by_key(|b| (b.0, !present[b.1 as usize]));
        let mut d = Duplicates::default();
        for run in blobs.chunk_by(|a, b| a.0 == b.0) {
            let used = run[0].1 as usize;
            if !present[used] {
                continue;
            }
            let mut both_exist = false;
            let mut missing = None;
            for &(_, p, _) in &run[1..] {
                let p = p as usize;
                if p == used {
                    continue;
                }
                if present[p] {
                    both_exist = true;
                } else {
                    missing.get_or_insert(p);
                }
            }
            if let Some(m) = missing {
                d.conflicts.push(Conflict {
                    blob: run[0].0,
                    used: self.packs[used].0,
                    missing: self.packs[m].0,
                });
            }
            d.in_existing_packs += u64::from(both_exist);
        }
        blobs.dedup_by_key(|b| b.0);
        blobs.shrink_to_fit();
        self.blobs = blobs;
        d
    }

    pub(super) fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    fn position(&self, id: &BlobId) -> Option<(u32, u32)> {
        let i = self.blobs.binary_search_by(|b| b.0.cmp(id)).ok()?;
        Some((self.blobs[i].1, self.blobs[i].2))
    }

    pub(super) fn contains(&self, id: &BlobId) -> bool {
        self.position(id).is_some()
    }

    pub(super) fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        let (p, i) = self.position(id)?;
        let (pack, entries) = &self.packs[p as usize];
        Some(BlobLocation {
            pack: *pack,
            entry: entries[i as usize],
        })
    }

    pub(super) fn entries(&self, pack: &PackId) -> Option<&[BlobEntry]> {
        let &n = self.pack_no.get(pack)?;
        Some(&self.packs[n as usize].1)
    }

    /// The first index file that names `pack`.
    pub(super) fn named_by(&self, pack: &PackId) -> Option<IndexId> {
        let &n = self.pack_no.get(pack)?;
        Some(self.named_by[n as usize])
    }

    pub(super) fn packs(&self) -> impl Iterator<Item = (&PackId, &Vec<BlobEntry>)> {
        self.packs.iter().map(|(p, e)| (p, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobKind;

    fn entry(id: u8, offset: u32) -> BlobEntry {
        BlobEntry {
            id: BlobId([id; 32]),
            kind: BlobKind::Data,
            compression: crate::format::Compression::None,
            offset,
            packed_len: 50,
            data_len: 10,
            raw_len: 10,
        }
    }

    #[test]
    fn check_index_finds_first_entry_of_each_blob() {
        let (p1, p2) = (PackId([1; 32]), PackId([2; 32]));
        let (i1, i2) = (IndexId([1; 32]), IndexId([2; 32]));
        let mut index = CheckIndex::default();
        index.add_pack(i1, p1, vec![entry(9, 0), entry(3, 50)]);
        index.add_pack(i1, p2, vec![entry(3, 0), entry(5, 50)]);
        // The same pack listed by a second index file: its entries are kept beside the first.
        index.add_pack(i2, p1, vec![entry(7, 100)]);
        let d = index.index_blobs(|_| true);
        assert!(d.conflicts.is_empty());
        assert_eq!(d.in_existing_packs, 1);

        assert_eq!(index.blob_count(), 4);
        let three = index.get(&BlobId([3; 32])).unwrap();
        assert_eq!(
            (three.pack, three.entry.offset),
            (p1, 50),
            "first listed wins"
        );
        assert_eq!(index.get(&BlobId([7; 32])).unwrap().pack, p1);
        assert_eq!(index.get(&BlobId([5; 32])).unwrap().pack, p2);
        assert!(!index.contains(&BlobId([4; 32])));
        assert!(index.get(&BlobId([0; 32])).is_none());
        assert_eq!(index.entries(&p1).unwrap().len(), 3);
        assert_eq!(index.named_by(&p1), Some(i1));
        assert!(index.entries(&PackId([3; 32])).is_none());
        assert_eq!(index.packs().count(), 2);
    }

    /// An old index file, listed first, names a pack prune deleted; the blob's copy in the
    /// pack that exists is used, and the pair is a conflict.
    #[test]
    fn an_entry_in_an_existing_pack_wins_over_an_earlier_one_in_a_missing_pack() {
        let (gone, repacked, other) = (PackId([1; 32]), PackId([2; 32]), PackId([3; 32]));
        let mut index = CheckIndex::default();
        index.add_pack(IndexId([1; 32]), gone, vec![entry(3, 0), entry(4, 50)]);
        index.add_pack(IndexId([2; 32]), repacked, vec![entry(3, 200)]);
        index.add_pack(IndexId([2; 32]), other, vec![entry(5, 0)]);
        let d = index.index_blobs(|p| *p != gone);
        assert_eq!(
            d.conflicts,
            vec![Conflict {
                blob: BlobId([3; 32]),
                used: repacked,
                missing: gone
            }]
        );
        assert_eq!(d.in_existing_packs, 0);
        let three = index.get(&BlobId([3; 32])).unwrap();
        assert_eq!((three.pack, three.entry.offset), (repacked, 200));
        // A blob only in the missing pack stays there (check reports it lost).
        assert_eq!(index.get(&BlobId([4; 32])).unwrap().pack, gone);
    }
}
