//! Condemned-pack markers in storage (`condemned/<id>`): written by a prune that runs beside
//! backups, read by every writer (which then treats the packs named as absent) and by the
//! next prune (which deletes the packs once nothing can still need them). Markers are
//! immutable like every object: completing one writes a new marker and deletes the old.

use std::collections::HashSet;

use super::{RepoError, Repository, list_ids, path, read_object};
use crate::crypto;
use crate::format::condemned::{self, CONDEMNED_AAD, Condemned};
use crate::id::{MarkerId, PackId};

/// Largest marker object read: 2 million packs (32 TiB of 16 MiB packs).
pub const MAX_MARKER_OBJECT_BYTES: u64 = 64 << 20;

impl Repository {
    /// Ids of every marker.
    pub fn list_markers(&self) -> Result<Vec<MarkerId>, RepoError> {
        list_ids(self.store.as_ref(), path::CONDEMNED, MarkerId::from_hex)
    }

    /// Load and verify one marker; `None` when it was deleted since it was listed.
    pub fn load_marker(&self, id: &MarkerId) -> Result<Option<Condemned>, RepoError> {
        let name = path::marker(id);
        let bytes = match read_object(self.store.as_ref(), &name, MAX_MARKER_OBJECT_BYTES) {
            Ok(b) => b,
            Err(RepoError::Storage(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if MarkerId::of_bytes(&bytes) != *id {
            return Err(RepoError::corrupt(name, "content does not match its name"));
        }
        let plain = crypto::open(&self.keys.encryption, CONDEMNED_AAD, &bytes)
            .map_err(|e| RepoError::corrupt(&name, e))?;
        condemned::decode(&plain)
            .map(Some)
            .map_err(|e| RepoError::corrupt(name, e))
    }

    /// Every marker, with what it says.
    pub fn load_markers(&self) -> Result<Vec<(MarkerId, Condemned)>, RepoError> {
        let mut out = Vec::new();
        for id in self.list_markers()? {
            if let Some(m) = self.load_marker(&id)? {
                out.push((id, m));
            }
        }
        Ok(out)
    }

    /// Every pack some marker condemns: what a writer must not reuse.
    pub fn condemned_packs(&self) -> Result<HashSet<PackId>, RepoError> {
        Ok(self
            .load_markers()?
            .into_iter()
            .flat_map(|(_, m)| m.packs)
            .collect())
    }

    /// Store a marker.
    pub fn save_marker(&self, m: &Condemned) -> Result<MarkerId, RepoError> {
        let bytes = crypto::seal(&self.keys.encryption, CONDEMNED_AAD, &condemned::encode(m))?;
        let id = MarkerId::of_bytes(&bytes);
        self.store.write(&path::marker(&id), &bytes)?;
        Ok(id)
    }

    /// Remove a marker.
    pub fn delete_marker(&self, id: &MarkerId) -> Result<(), RepoError> {
        Ok(self.store.delete(&path::marker(id))?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::memory_repo;
    use super::*;

    #[test]
    fn markers_round_trip_and_a_damaged_one_is_named() {
        let r = memory_repo();
        assert!(r.condemned_packs().unwrap().is_empty());
        let m = Condemned {
            time: 7,
            host: "h".into(),
            sessions: None,
            packs: vec![PackId([1; 32]), PackId([2; 32])],
        };
        let id = r.save_marker(&m).unwrap();
        assert_eq!(r.load_markers().unwrap(), vec![(id, m.clone())]);
        assert_eq!(r.condemned_packs().unwrap().len(), 2);
        let mut bytes = r.store.read(&path::marker(&id)).unwrap();
        bytes[40] ^= 1;
        r.store.write(&path::marker(&id), &bytes).unwrap();
        let err = r.load_marker(&id).unwrap_err().to_string();
        assert!(err.contains("condemned/"), "{err}");
        r.delete_marker(&id).unwrap();
        assert_eq!(r.load_marker(&id).unwrap(), None);
        assert!(r.list_markers().unwrap().is_empty());
    }
}
