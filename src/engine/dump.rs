//! `dump`: one file of a snapshot to a writer (its content, verified blob by blob), or a
//! directory as a plain tar stream (restic's `dump`), for `coffer dump ID PATH | ...`.
//!
//! A file's bytes are checked to add up to its recorded size; a failed dump returns an error
//! after whatever was written, so a script sees a non-zero exit, never a short success.

use std::io::Write;

use serde::Serialize;

use super::archive::export::{ExportOptions, export_tar};
use super::blob_reader::BlobReader;
use super::walk::{components, resolve};
use super::{EngineError, Progress};
use crate::catalog::Catalog;
use crate::format::tree::NodeKind;
use crate::repo::{LockKind, Repository};

/// What `dump` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct DumpSummary {
    /// The snapshot.
    pub snapshot_id: String,
    /// The path inside it.
    pub path: String,
    /// `file`, or `tar` for a directory.
    pub format: &'static str,
    /// Bytes of file content written.
    pub content_bytes: u64,
}

/// Write the file at `path` of snapshot `snapshot` (id, prefix or `latest`) to `out`, or the
/// directory at `path` (the whole snapshot for an empty path or `/`) as a tar stream.
pub fn dump(
    repo: &Repository,
    catalog: &Catalog,
    snapshot: &str,
    path: &str,
    out: Box<dyn Write + Send>,
) -> Result<DumpSummary, EngineError> {
    let _lock = repo.lock(LockKind::Shared, "dump")?;
    catalog.refresh(repo)?;
    let snap = catalog.resolve_snapshot(snapshot)?;
    let node = resolve(repo, catalog, snap.snapshot.tree, path)?;
    let clean = components(path).join("/");
    let progress = Progress::default();
    match node.kind {
        NodeKind::File => {
            let mut out = out;
            let name = clean.as_bytes();
            let mut reader =
                BlobReader::new(repo, catalog, &progress, &node.content, node.size, name);
            let copied = std::io::copy(&mut reader, &mut out).and_then(|n| out.flush().map(|_| n));
            let content_bytes = match copied {
                Ok(n) => n,
                Err(e) => {
                    return Err(reader.take_failure().unwrap_or(EngineError::Io {
                        path: "the dump output".into(),
                        source: e,
                    }));
                }
            };
            Ok(DumpSummary {
                snapshot_id: snap.id.to_hex(),
                path: clean,
                format: "file",
                content_bytes,
            })
        }
        NodeKind::Dir => {
            drop(_lock);
            let opts = ExportOptions {
                snapshot: snap.id.to_hex(),
                paths: if clean.is_empty() {
                    Vec::new()
                } else {
                    vec![clean.clone()]
                },
                prefix: String::new(),
                ..ExportOptions::default()
            };
            let s = export_tar(repo, catalog, &opts, out, &progress, false)?;
            Ok(DumpSummary {
                snapshot_id: snap.id.to_hex(),
                path: clean,
                format: "tar",
                content_bytes: s.content_bytes,
            })
        }
        other => Err(EngineError::Usage(format!(
            "{clean:?} is a {} in snapshot {}: dump writes files and directories only",
            super::walk::kind_name(other),
            snap.id.short()
        ))),
    }
}
