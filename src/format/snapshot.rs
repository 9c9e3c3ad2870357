//! Snapshot manifests (`snapshots/<id>`), sealed with aad "coffer snapshot".
//!
//! ```text
//! | version: u8 = 1 | postcard(Snapshot) |
//! ```
//! The root tree holds one entry per source, named after the source: a directory (or the
//! file a source path named), or, for a stream (`backup --stdin`), the file holding it.

use serde::{Deserialize, Serialize};

use super::FormatError;
use crate::id::{BlobId, SnapshotId};

/// Snapshot format version written.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Associated data of a sealed snapshot.
pub const SNAPSHOT_AAD: &[u8] = b"coffer snapshot";
/// Largest encoded snapshot accepted.
pub const MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// One source of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Name of its top-level directory in the snapshot.
    pub name: String,
    /// Absolute path it was read from (lossy UTF-8, informational); for a stream,
    /// [`SourceInfo::STDIN_PATH`] or [`SourceInfo::COMMAND_PREFIX`] and the program.
    pub path: String,
}

impl SourceInfo {
    /// The `path` of a source read from standard input (`backup --stdin`). Never an absolute
    /// path, as a directory's is, nor an imported archive's `ARCHIVE:PREFIX/NAME`.
    pub const STDIN_PATH: &str = "<stdin>";
    /// The start of the `path` of a source read from a command's output
    /// (`backup --stdin-from-command`), followed by the program (not its arguments, which may
    /// hold a password).
    pub const COMMAND_PREFIX: &str = "<command> ";

    /// Whether the source is a stream (standard input or a command's output), stored as one
    /// file at the root, rather than a path that was walked.
    pub fn is_stream(&self) -> bool {
        self.path == Self::STDIN_PATH || self.path.starts_with(Self::COMMAND_PREFIX)
    }
}

/// Statistics of the backup that wrote a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes: u64,
    /// Files that were read (new or changed).
    pub files_read: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of added blobs.
    pub bytes_added: u64,
    /// Stored (compressed, sealed) bytes of added blobs.
    pub stored_bytes_added: u64,
    /// Files that could not be read.
    pub errors: u64,
    /// Wall time of the backup, milliseconds.
    pub duration_ms: u64,
}

/// A snapshot manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Start time, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User who ran the backup.
    pub username: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Snapshot used for change detection.
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: BlobId,
    /// Sources, in the order given.
    pub sources: Vec<SourceInfo>,
    /// Statistics.
    pub summary: SnapshotSummary,
    /// Version of coffer that wrote it.
    pub program_version: String,
}

impl Snapshot {
    /// Encode. Postcard fails only on a bug, and then says so rather than yielding an empty
    /// snapshot.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Decode.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "snapshot";
        let (&version, body) = bytes.split_first().ok_or(FormatError::Truncated {
            what: WHAT,
            needed: 1,
            available: 0,
        })?;
        if version != SNAPSHOT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: version.into(),
                supported: SNAPSHOT_VERSION.into(),
            });
        }
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(FormatError::invalid(WHAT, "larger than the maximum"));
        }
        let s: Snapshot =
            postcard::from_bytes(body).map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        let again = s
            .encode()
            .map_err(|e| FormatError::invalid(WHAT, e.to_string()))?;
        if again != bytes {
            return Err(FormatError::invalid(WHAT, "not in canonical encoding"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(host in ".{0,20}", tags in proptest::collection::vec("[a-z]{1,8}", 0..4),
                       time_ns in any::<i64>(), files in any::<u64>()) {
            let s = Snapshot {
                time_ns, host, username: "root".into(), tags,
                parent: Some(SnapshotId([1; 32])), tree: BlobId([2; 32]),
                sources: vec![SourceInfo { name: "workspace".into(), path: "/data/ws".into() }],
                summary: SnapshotSummary { files, ..Default::default() },
                program_version: "0.1.0".into(),
            };
            prop_assert_eq!(Snapshot::decode(&s.encode().unwrap()).unwrap(), s);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&bytes);
        }
    }
}
