//! Typed 32-byte identifiers. Every object and blob in a repository is named by a hash of its
//! bytes; the type says which namespace an id belongs to so that a `PackId` can never be used
//! where a `BlobId` is expected.

use std::fmt;

/// Length of every identifier in bytes.
pub const ID_BYTES: usize = 32;

/// Error for a string that is not a full 64-character hex id.
#[derive(Debug, thiserror::Error)]
#[error("not a valid id: {0:?} (expected 64 hex characters)")]
pub struct ParseIdError(pub String);

/// A typed id written as 64 hex characters where people and JSON read it (summaries); the
/// derived serde form is raw bytes, for the repository's binary encodings.
pub trait HexId: fmt::Display + Sized {
    /// Parse the full hex form.
    fn parse_hex(s: &str) -> Result<Self, ParseIdError>;
}

/// `#[serde(with = "crate::id::as_hex")]`: a typed id as a hex string.
pub mod as_hex {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Write the id as hex.
    pub fn serialize<S: Serializer, T: super::HexId>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Read a hex id.
    pub fn deserialize<'de, D: Deserializer<'de>, T: super::HexId>(d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        T::parse_hex(&s).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "crate::id::as_hex_opt")]`: an optional typed id as a hex string or null.
pub mod as_hex_opt {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Write the id as hex, or null.
    pub fn serialize<S: Serializer, T: super::HexId>(
        id: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_none(),
        }
    }

    /// Read a hex id or null.
    pub fn deserialize<'de, D: Deserializer<'de>, T: super::HexId>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => T::parse_hex(&s).map(Some).map_err(D::Error::custom),
            None => Ok(None),
        }
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; ID_BYTES]);

        impl $name {
            /// Hex form, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, as shown to users.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parse a full 64-character hex id.
            pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
                let mut out = [0u8; ID_BYTES];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
                Ok(Self(out))
            }

            /// Unkeyed BLAKE3 of `bytes`: the name of a stored object.
            pub fn of_bytes(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
        }

        impl HexId for $name {
            fn parse_hex(s: &str) -> Result<Self, ParseIdError> {
                Self::from_hex(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext (file chunk or tree).
    BlobId
);

/// Kind of a blob: its id is keyed by it, so a file chunk can never pass for a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// An encoded directory tree.
    Tree,
}
typed_id!(
    /// BLAKE3 of a pack file's bytes.
    PackId
);
typed_id!(
    /// BLAKE3 of an index file's bytes.
    IndexId
);
typed_id!(
    /// BLAKE3 of a snapshot object's bytes.
    SnapshotId
);
typed_id!(
    /// BLAKE3 of a key file's bytes.
    KeyId
);
typed_id!(
    /// BLAKE3 of a condemned-pack marker's bytes (`condemned/<id>`).
    MarkerId
);

/// The hasher of an [`IdMap`]: an id is a hash already, so its first eight bytes are the
/// map's hash, where SipHash would hash all 32 bytes again (a restore of 57,274 files spent
/// 1.4 % of its CPU time on that). For ids that are hashes: someone who can write the
/// repository could make ids that collide in a map, which slows the map down and nothing else.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(8) ^ u64::from_le_bytes(first);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_hash_ids_by_their_first_bytes() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        let (a, b) = (BlobId::of_bytes(b"a"), BlobId::of_bytes(b"b"));
        assert_ne!(build.hash_one(a), build.hash_one(b));
        let mut c = a;
        c.0[31] ^= 1;
        assert_eq!(
            build.hash_one(a),
            build.hash_one(c),
            "only the first bytes count"
        );
        let mut m: IdMap<BlobId, u32> = IdMap::default();
        m.insert(a, 1);
        m.insert(c, 2);
        assert_eq!((m[&a], m[&c], m.get(&b)), (1, 2, None));
    }

    #[test]
    fn hex_round_trip_and_short_prefix() {
        let id = BlobId::of_bytes(b"hello");
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(BlobId::from_hex(&hex).unwrap(), id);
        assert!(hex.starts_with(&id.short()));
        assert!(BlobId::from_hex("abc").is_err());
        assert!(BlobId::from_hex(&"zz".repeat(32)).is_err());
    }
}
