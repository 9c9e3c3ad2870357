//! The repository config (`config`): plaintext JSON so that a reader can name the format
//! version before it has a key, authenticated by a keyed MAC so it cannot be changed without
//! the key.
//!
//! ```text
//! {"version":2,"id":"<64 hex>","chunker":{"min_bytes":..,"avg_bytes":..,"max_bytes":..},
//!  "compression_level":3,"pack_bytes":16777216,"created":"<RFC 3339>","mac":"<64 hex>"}
//! ```
//! `mac` = keyed BLAKE3 (config MAC sub-key) of the same JSON serialised with `"mac":""`.

use serde::{Deserialize, Serialize};

use super::FormatError;

/// Repository format version written by `init` in this build.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest repository format version this build reads and writes (in that version's rules).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest config accepted.
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// Content-defined chunking parameters, fixed at `init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk.
    pub min_bytes: u32,
    /// Average chunk.
    pub avg_bytes: u32,
    /// Largest chunk.
    pub max_bytes: u32,
}

impl ChunkerParams {
    /// The default: 256 KiB / 1 MiB / 4 MiB.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_bytes: 256 << 10,
        avg_bytes: 1 << 20,
        max_bytes: 4 << 20,
    };

    /// Check the limits fastcdc v2020 supports.
    pub fn validate(&self) -> Result<(), FormatError> {
        let ok = (64..=1 << 20).contains(&self.min_bytes)
            && (256..=4 << 20).contains(&self.avg_bytes)
            && (1024..=16 << 20).contains(&self.max_bytes)
            && self.min_bytes <= self.avg_bytes
            && self.avg_bytes <= self.max_bytes
            && self.min_bytes.is_multiple_of(2)
            && self.avg_bytes.is_multiple_of(2)
            && self.max_bytes.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(FormatError::invalid(
                "config",
                format!("chunker parameters {self:?}"),
            ))
        }
    }
}

/// The repository config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version.
    pub version: u32,
    /// Random repository id (hex).
    pub id: String,
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// Default zstd level for new blobs.
    pub compression_level: i32,
    /// Target size of a data pack.
    pub pack_bytes: u32,
    /// When the repository was created.
    pub created: String,
    /// Keyed MAC over the rest (hex).
    pub mac: String,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl Config {
    /// The bytes the MAC is computed over.
    pub fn mac_input(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut c = self.clone();
        c.mac = String::new();
        serde_json::to_vec(&c)
    }

    /// Encode as JSON.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    /// Decode, refusing a newer version with a clear error.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "config";
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(FormatError::invalid(WHAT, "larger than 64 KiB"));
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        if v.version < OLDEST_FORMAT_VERSION {
            return Err(FormatError::invalid(
                WHAT,
                format!("unknown format version {}", v.version),
            ));
        }
        if v.version > FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "repository",
                found: v.version,
                supported: FORMAT_VERSION,
            });
        }
        let c: Config =
            serde_json::from_slice(bytes).map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        c.chunker.validate()?;
        if !(-7..=22).contains(&c.compression_level) {
            return Err(FormatError::invalid(WHAT, "compression level out of range"));
        }
        if !(1 << 20..=1 << 30).contains(&c.pack_bytes) {
            return Err(FormatError::invalid(WHAT, "pack size out of range"));
        }
        if c.id.len() != 64 || c.mac.len() != 64 {
            return Err(FormatError::invalid(WHAT, "id or mac is malformed"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_newer_version_refused() {
        let c = Config {
            version: FORMAT_VERSION,
            id: "a".repeat(64),
            chunker: ChunkerParams::DEFAULT,
            compression_level: 3,
            pack_bytes: 16 << 20,
            created: "2026-11-23T00:00:00Z".into(),
            mac: "b".repeat(64),
        };
        assert_eq!(Config::decode(&c.encode().unwrap()).unwrap(), c);
        let mut older = c.clone();
        older.version = 1;
        assert_eq!(Config::decode(&older.encode().unwrap()).unwrap(), older);
        let mut newer = c.clone();
        newer.version = FORMAT_VERSION + 1;
        assert!(matches!(
            Config::decode(&newer.encode().unwrap()),
            Err(FormatError::UnsupportedVersion { found: 4, .. })
        ));
        newer.version = 0;
        assert!(Config::decode(&newer.encode().unwrap()).is_err());
        let mut odd = c.clone();
        odd.chunker.min_bytes = 1001;
        assert!(Config::decode(&odd.encode().unwrap()).is_err());
        assert!(Config::decode(b"{").is_err());
        assert_ne!(c.mac_input().unwrap(), c.encode().unwrap());
    }
}
