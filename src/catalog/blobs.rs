//! The catalog's blob index: where each blob is stored, one location per blob id.
//!
//! Two index files may name the same blob in different packs: two backups that stored it at
//! once (both copies are good), or an old index file put back after prune repacked or deleted
//! its packs (one copy is gone). The first entry read is kept, and the refresh is told of each
//! conflict; [`Catalog::resolve_conflicts`] then lists the packs, once, and keeps an entry in
//! a pack that exists. Nothing extra is done while index files agree.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};

use super::{Catalog, CatalogError};
use crate::format::index::PackIndex;
use crate::format::{BlobEntry, BlobKind, BlobLocation, Compression};
use crate::id::{BlobId, IdMap, IndexId, PackId};

/// An index entry that was not taken because the blob was already indexed in another pack.
#[derive(Clone, Copy, Debug)]
pub(super) struct Conflict {
    /// The entry passed over.
    pub other: BlobLocation,
}

/// What [`Catalog::resolve_conflicts`] changed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Resolved {
    /// Blobs moved to an entry whose pack exists.
    pub moved: usize,
    /// Entries dropped because their pack is missing.
    pub dropped: usize,
    /// Packs whose entries were dropped.
    pub missing_packs: usize,
}

fn blob_from_row(
    pack: Vec<u8>,
    row: &rusqlite::Row<'_>,
    id: BlobId,
) -> rusqlite::Result<Option<BlobLocation>> {
    match pack.try_into() {
        Ok(p) => blob_in_pack(PackId(p), row, id),
        Err(_) => Ok(None),
    }
}

/// A blob's location from a row whose columns 1 to 6 are those of `blobs` from `kind` on.
fn blob_in_pack(
    pack: PackId,
    row: &rusqlite::Row<'_>,
    id: BlobId,
) -> rusqlite::Result<Option<BlobLocation>> {
    let kind = BlobKind::from_byte(row.get::<_, u8>(1)?);
    let compression = Compression::from_byte(row.get::<_, u8>(2)?);
    let (Ok(kind), Ok(compression)) = (kind, compression) else {
        return Ok(None);
    };
    Ok(Some(BlobLocation {
        pack,
        entry: BlobEntry {
            id,
            kind,
            compression,
            offset: row.get(3)?,
            packed_len: row.get(4)?,
            data_len: row.get(5)?,
            raw_len: row.get(6)?,
        },
    }))
}

fn insert_blob(
    st: &mut rusqlite::CachedStatement<'_>,
    pack_no: i64,
    b: &BlobEntry,
) -> rusqlite::Result<usize> {
    st.execute(params![
        &b.id.0[..],
        pack_no,
        b.kind.to_byte(),
        b.compression.to_byte(),
        b.offset,
        b.packed_len,
        b.data_len,
        b.raw_len
    ])
}

impl Catalog {
    /// Record an index file that has been written.
    pub fn add_index(&self, id: &IndexId, packs: &[PackIndex]) -> Result<(), CatalogError> {
        self.insert_index(id, packs).map(drop)
    }

    /// Record an index file; returns its entries that were passed over because the blob is
    /// already indexed in another pack.
    pub(super) fn insert_index(
        &self,
        id: &IndexId,
        packs: &[PackIndex],
    ) -> Result<Vec<Conflict>, CatalogError> {
        self.sql(|c| {
            let tx = c.transaction()?;
            let mut conflicts = Vec::new();
            {
                let mut ins_pack =
                    tx.prepare_cached("INSERT OR IGNORE INTO packs(id) VALUES (?1)")?;
                let mut pack_no = tx.prepare_cached("SELECT no FROM packs WHERE id = ?1")?;
                let mut ins_blob = tx.prepare_cached(
                    "INSERT OR IGNORE INTO blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let mut indexed_in = tx.prepare_cached("SELECT pack FROM blobs WHERE id = ?1")?;
                let mut pack_id = tx.prepare_cached("SELECT id FROM packs WHERE no = ?1")?;
                let mut replace = tx.prepare_cached(
                    "INSERT OR REPLACE INTO blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let condemned = self.condemned.read().unwrap_or_else(|p| p.into_inner());
                for p in packs {
                    ins_pack.execute(params![&p.pack.0[..]])?;
                    let no: i64 = pack_no.query_row(params![&p.pack.0[..]], |r| r.get(0))?;
                    for b in &p.blobs {
                        if insert_blob(&mut ins_blob, no, b)? != 0 {
                            continue;
                        }
                        let old =
                            indexed_in.query_row(params![&b.id.0[..]], |r| r.get::<_, i64>(0))?;
                        if old == no {
                            continue;
                        }
                        // A copy stored again beside a condemned one replaces it: the
                        // condemned pack is on its way out.
                        if !condemned.is_empty()
                            && !condemned.contains(&p.pack)
                            && pack_id
                                .query_row(params![old], |r| r.get::<_, Vec<u8>>(0))
                                .ok()
                                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                                .is_some_and(|v| condemned.contains(&PackId(v)))
                        {
                            insert_blob(&mut replace, no, b)?;
                        } else {
                            conflicts.push(Conflict {
                                other: BlobLocation {
                                    pack: p.pack,
                                    entry: *b,
                                },
                            });
                        }
                    }
                }
                tx.execute(
                    "INSERT OR IGNORE INTO index_files VALUES (?1)",
                    params![&id.0[..]],
                )?;
            }
            tx.commit()?;
            Ok(conflicts)
        })
    }

    /// After index files named blobs in more than one pack: with `present`, the packs the
    /// repository lists now, move each conflicting blob to an entry whose pack exists, then
    /// drop the entries of packs that are missing (so that neither restore nor dedup relies
    /// on them). Only entries recorded before `present` was listed may be dropped: a backup
    /// sharing this catalog may record packs stored since; `listed_after_no` is the highest
    /// pack number of the catalog when the listing began.
    pub(super) fn resolve_conflicts(
        &self,
        conflicts: &[Conflict],
        present: &HashSet<PackId>,
        listed_after_no: i64,
    ) -> Result<Resolved, CatalogError> {
        self.sql(|c| {
            let tx = c.transaction()?;
            let mut r = Resolved::default();
            {
                let mut current = tx.prepare_cached(
                    "SELECT p.id FROM blobs b JOIN packs p ON p.no = b.pack WHERE b.id = ?1",
                )?;
                let mut pack_no = tx.prepare_cached("SELECT no FROM packs WHERE id = ?1")?;
                let mut replace = tx.prepare_cached(
                    "INSERT OR REPLACE INTO blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for c in conflicts {
                    let other = &c.other;
                    if !present.contains(&other.pack) {
                        continue;
                    }
                    let now: Option<Vec<u8>> = current
                        .query_row(params![&other.entry.id.0[..]], |r| r.get(0))
                        .optional()?;
                    let now_present = now
                        .and_then(|p| <[u8; 32]>::try_from(p).ok())
                        .is_some_and(|p| present.contains(&PackId(p)));
                    if !now_present {
                        let no: i64 =
                            pack_no.query_row(params![&other.pack.0[..]], |r| r.get(0))?;
                        insert_blob(&mut replace, no, &other.entry)?;
                        r.moved += 1;
                    }
                }
            }
            let packs: Vec<(i64, Vec<u8>)> = {
                let mut st = tx.prepare("SELECT no, id FROM packs WHERE no <= ?1")?;
                let rows =
                    st.query_map(params![listed_after_no], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (no, id) in packs {
                let Ok(id) = <[u8; 32]>::try_from(id) else {
                    continue;
                };
                if present.contains(&PackId(id)) {
                    continue;
                }
                r.dropped += tx.execute("DELETE FROM blobs WHERE pack = ?1", params![no])?;
                tx.execute("DELETE FROM packs WHERE no = ?1", params![no])?;
                r.missing_packs += 1;
            }
            tx.commit()?;
            Ok(r)
        })
    }

    /// The highest pack number recorded so far (0 when none).
    pub(super) fn last_pack_no(&self) -> Result<i64, CatalogError> {
        self.sql(|c| {
            c.query_row("SELECT MAX(no) FROM packs", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
        })
        .map(Option::unwrap_or_default)
    }

    /// True when a blob is stored in an indexed pack.
    pub fn has_blob(&self, id: &BlobId) -> Result<bool, CatalogError> {
        if self.has_condemned() {
            let at = self.blob_location(id)?;
            return Ok(at.is_some_and(|l| !self.is_condemned(&l.pack)));
        }
        self.lookup(|c| {
            c.prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")?
                .query_row(params![&id.0[..]], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    /// True when the last refresh found condemned packs.
    fn has_condemned(&self) -> bool {
        !self
            .condemned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// True when a prune condemned `pack` (as of the last refresh).
    pub fn is_condemned(&self, pack: &PackId) -> bool {
        self.condemned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(pack)
    }

    /// [`Catalog::blob_location`] of each of `ids`, in one go: one statement, and each pack
    /// looked up once rather than joined for every blob (a restore of 57,274 files looks up
    /// as many blobs, and the lookups were most of its walk's time).
    pub fn blob_locations<'i>(
        &self,
        ids: impl IntoIterator<Item = &'i BlobId>,
    ) -> Result<IdMap<BlobId, Option<BlobLocation>>, CatalogError> {
        self.lookup(|c| {
            let mut blobs = c.prepare_cached(
                "SELECT pack, kind, compression, offset, packed_len, data_len, raw_len
                 FROM blobs WHERE id = ?1",
            )?;
            let mut packs = c.prepare_cached("SELECT id FROM packs WHERE no = ?1")?;
            let mut pack_ids: HashMap<i64, Option<PackId>> = HashMap::new();
            let mut out = IdMap::default();
            for id in ids {
                if out.contains_key(id) {
                    continue;
                }
                let mut rows = blobs.query(params![&id.0[..]])?;
                let loc = match rows.next()? {
                    None => None,
                    Some(row) => {
                        let no: i64 = row.get(0)?;
                        let pack = match pack_ids.get(&no) {
                            Some(p) => *p,
                            None => {
                                let p = packs
                                    .query_row(params![no], |r| r.get::<_, Vec<u8>>(0))
                                    .optional()?
                                    .and_then(|b| b.try_into().ok())
                                    .map(PackId);
                                pack_ids.insert(no, p);
                                p
                            }
                        };
                        match pack {
                            Some(p) => blob_in_pack(p, row, *id)?,
                            None => None,
                        }
                    }
                };
                out.insert(*id, loc);
            }
            Ok(out)
        })
    }

    /// Where a blob is stored.
    pub fn blob_location(&self, id: &BlobId) -> Result<Option<BlobLocation>, CatalogError> {
        self.lookup(|c| {
            c.prepare_cached(
                "SELECT p.id, b.kind, b.compression, b.offset, b.packed_len, b.data_len, b.raw_len
                 FROM blobs b JOIN packs p ON p.no = b.pack WHERE b.id = ?1",
            )?
            .query_row(params![&id.0[..]], |r| {
                let pack: Vec<u8> = r.get(0)?;
                blob_from_row(pack, r, *id)
            })
            .optional()
            .map(Option::flatten)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: BlobId, offset: u32) -> BlobEntry {
        BlobEntry {
            id,
            kind: BlobKind::Data,
            compression: Compression::None,
            offset,
            packed_len: 50,
            data_len: 10,
            raw_len: 10,
        }
    }

    /// An old index file read first names a pack that prune deleted; the current one, read
    /// second, names the pack the blob was repacked into. The existing pack wins, and the
    /// old file's entries without another copy are dropped.
    #[test]
    fn a_conflict_resolves_to_the_pack_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let (live, dead) = (BlobId([1; 32]), BlobId([2; 32]));
        let (old, new) = (PackId([10; 32]), PackId([11; 32]));
        let none = c
            .insert_index(
                &IndexId([1; 32]),
                &[PackIndex {
                    pack: old,
                    blobs: vec![entry(live, 0), entry(dead, 50)],
                }],
            )
            .unwrap();
        assert!(none.is_empty());
        // The same entries again (another reader recorded the file too): no conflict.
        let none = c
            .insert_index(
                &IndexId([1; 32]),
                &[PackIndex {
                    pack: old,
                    blobs: vec![entry(live, 0)],
                }],
            )
            .unwrap();
        assert!(none.is_empty());
        let conflicts = c
            .insert_index(
                &IndexId([2; 32]),
                &[PackIndex {
                    pack: new,
                    blobs: vec![entry(live, 100)],
                }],
            )
            .unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(c.blob_location(&live).unwrap().unwrap().pack, old);

        // A pack recorded after the listing began (a backup sharing the catalog) stays.
        let listed_after = c.last_pack_no().unwrap();
        let fresh = BlobId([3; 32]);
        c.add_index(
            &IndexId([3; 32]),
            &[PackIndex {
                pack: PackId([12; 32]),
                blobs: vec![entry(fresh, 0)],
            }],
        )
        .unwrap();
        let present: HashSet<PackId> = [new].into_iter().collect();
        let r = c
            .resolve_conflicts(&conflicts, &present, listed_after)
            .unwrap();
        assert_eq!((r.moved, r.dropped, r.missing_packs), (1, 1, 1));
        let loc = c.blob_location(&live).unwrap().unwrap();
        assert_eq!((loc.pack, loc.entry.offset), (new, 100));
        assert!(
            !c.has_blob(&dead).unwrap(),
            "no copy left: not used for dedup"
        );
        assert!(c.has_blob(&fresh).unwrap());
        assert_eq!(c.stats().unwrap().packs, 2);
    }

    /// Both copies exist (two backups stored the blob at once): the first stays.
    #[test]
    fn a_conflict_between_existing_packs_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let b = BlobId([1; 32]);
        let (p1, p2) = (PackId([10; 32]), PackId([11; 32]));
        for (i, p) in [(1u8, p1), (2, p2)] {
            let conflicts = c
                .insert_index(
                    &IndexId([i; 32]),
                    &[PackIndex {
                        pack: p,
                        blobs: vec![entry(b, 0)],
                    }],
                )
                .unwrap();
            let present: HashSet<PackId> = [p1, p2].into_iter().collect();
            let last = c.last_pack_no().unwrap();
            let r = c.resolve_conflicts(&conflicts, &present, last).unwrap();
            assert_eq!((r.moved, r.dropped), (0, 0));
        }
        assert_eq!(c.blob_location(&b).unwrap().unwrap().pack, p1);
    }

    /// Many blobs at once give what each one alone gives: packs resolved, kinds and lengths
    /// read, a missing blob as `None`, a repeated id once.
    #[test]
    fn blob_locations_agree_with_blob_location() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let (p1, p2) = (PackId([10; 32]), PackId([11; 32]));
        let ids: Vec<BlobId> = (1..=6).map(|i| BlobId([i; 32])).collect();
        let mut tree = entry(ids[1], 50);
        tree.kind = BlobKind::Tree;
        tree.compression = Compression::Zstd;
        c.insert_index(
            &IndexId([1; 32]),
            &[
                PackIndex {
                    pack: p1,
                    blobs: vec![entry(ids[0], 0), tree],
                },
                PackIndex {
                    pack: p2,
                    blobs: vec![entry(ids[2], 0), entry(ids[3], 70)],
                },
            ],
        )
        .unwrap();
        let mut asked = ids.clone();
        asked.push(ids[0]);
        let got = c.blob_locations(&asked).unwrap();
        assert_eq!(got.len(), ids.len());
        for id in &ids {
            assert_eq!(got[id], c.blob_location(id).unwrap(), "{id}");
        }
        assert_eq!(got[&ids[3]].unwrap().pack, p2);
        assert_eq!(got[&ids[1]].unwrap().entry, tree);
        assert!(got[&ids[4]].is_none() && got[&ids[5]].is_none());
    }
}
