//! Export's tar records: GNU headers made from tree nodes, link targets written byte for byte
//! (with a GNU long-link record when they do not fit the header), PAX records before an
//! entry, and errors that name the archive entry or the output.
//!
//! It knows nothing of snapshots or repositories: the exporter decides what goes in the
//! archive and in which order; this writes each record the way GNU tar would read it back.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{EntryType, Header};

use crate::engine::{EngineError, display_bytes};
use crate::format::tree::Node;
use crate::repo::RepoError;

/// The error of writing entry `name`: a broken pipe is the output's fault, anything else the
/// entry's.
pub(super) fn io_error(name: &[u8], e: io::Error) -> EngineError {
    let path = if e.kind() == io::ErrorKind::BrokenPipe {
        "the export output".to_string()
    } else {
        format!("archive entry {}", display_bytes(name))
    };
    EngineError::Io { path, source: e }
}

/// A GNU header of `kind` with `node`'s mode, owner and mtime, and size 0.
pub(super) fn header(node: &Node, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(node.mode & 0o7777);
    h.set_uid(node.uid.into());
    h.set_gid(node.gid.into());
    h.set_mtime(node.mtime.max(0) as u64);
    h.set_size(0);
    // Zeros, as GNU tar writes them (an empty field is not a number to strict readers).
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    h
}

/// A tar stream being written into `W`. Dropped before [`TarWriter::into_inner`], the
/// underlying builder still writes the end-of-archive blocks into `W`; whoever owns `W`
/// decides whether the stream counts as complete.
pub(super) struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub(super) fn new(out: W) -> Self {
        Self {
            tar: tar::Builder::new(out),
        }
    }

    /// End the archive and return the writer.
    pub(super) fn into_inner(self) -> io::Result<W> {
        self.tar.into_inner()
    }

    /// Write `records` as a PAX header for the entry `name` that follows (nothing when empty).
    pub(super) fn write_pax(
        &mut self,
        name: &[u8],
        records: &[(String, Vec<u8>)],
    ) -> Result<(), EngineError> {
        if records.is_empty() {
            return Ok(());
        }
        // Named as Go's archive/tar (the old tool) names it: busybox tar, the `tar` of the
        // alpine containers in the operators' restore scripts, refuses a PAX header without a
        // name ("invalid tar magic").
        let data = pax_records(records);
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let path = pax_header_name(name);
        self.tar
            .append_data(&mut h, Path::new(OsStr::from_bytes(&path)), &data[..])
            .map_err(|e| io_error(name, e))
    }

    /// Write the entry `name` with header `h` and content `data` (whose length `h` states).
    pub(super) fn append(
        &mut self,
        h: &mut Header,
        name: &[u8],
        data: impl Read,
    ) -> Result<(), EngineError> {
        let path = Path::new(OsStr::from_bytes(name));
        self.tar
            .append_data(h, path, data)
            .map_err(|e| io_error(name, e))
    }

    /// A symlink or hardlink entry whose target is written byte for byte (tar's own path
    /// handling would normalise `a//b` or `./x`), with a GNU long-link record when it does
    /// not fit the header.
    pub(super) fn append_link(
        &mut self,
        h: &mut Header,
        name: &[u8],
        target: &[u8],
    ) -> Result<(), EngineError> {
        if target.contains(&0) {
            return Err(EngineError::Repo(RepoError::corrupt(
                format!("entry {}", display_bytes(name)),
                "link target contains a NUL byte",
            )));
        }
        let field = &mut h.as_old_mut().linkname;
        field.fill(0);
        let n = target.len().min(field.len());
        field[..n].copy_from_slice(&target[..n]);
        if target.len() > field.len() {
            let mut long = Header::new_gnu();
            let marker = b"././@LongLink";
            long.as_old_mut().name[..marker.len()].copy_from_slice(marker);
            long.set_mode(0o644);
            long.set_uid(0);
            long.set_gid(0);
            long.set_mtime(0);
            long.set_size(target.len() as u64 + 1);
            long.set_entry_type(EntryType::GNULongLink);
            long.set_cksum();
            self.tar
                .append(&long, target.chain(&[0u8][..]))
                .map_err(|e| io_error(name, e))?;
        }
        self.append(h, name, io::empty())
    }
}

/// PAX records, each `LEN KEY=VALUE\n` where LEN counts the whole record with its own digits.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + rest.to_string().len();
        if len.to_string().len() + rest != len {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// `PaxHeaders.0/<last component>`, short enough for a plain ustar name.
fn pax_header_name(entry: &[u8]) -> Vec<u8> {
    let trimmed = entry.strip_suffix(b"/").unwrap_or(entry);
    let base = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(trimmed);
    let mut base = base.to_vec();
    // A cut in the middle of a UTF-8 sequence would make a valid name invalid.
    let mut cut = base.len().min(80);
    if let Ok(text) = std::str::from_utf8(&base) {
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
    }
    base.truncate(cut);
    if base.is_empty() || base == b"." || base == b".." {
        base = b"entry".to_vec();
    }
    let mut name = b"PaxHeaders.0/".to_vec();
    name.extend_from_slice(&base);
    name
}

#[cfg(test)]
mod pax_tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_records(&[("mtime".into(), b"1.5".to_vec())]);
        assert_eq!(r, b"13 mtime=1.5\n");
        // 9 + 1 digit would be 10, which has two digits: 11.
        let r = pax_records(&[("a".into(), b"bcdef".to_vec())]);
        assert_eq!(r, b"11 a=bcdef\n");
        for n in 0..300 {
            let r = pax_records(&[("k".into(), vec![b'v'; n])]);
            let len: usize = std::str::from_utf8(r.split(|&b| b == b' ').next().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len(), "value of {n} bytes");
        }
    }

    #[test]
    fn pax_header_names_are_short_and_named() {
        assert_eq!(
            pax_header_name(b"backup/workspace/"),
            b"PaxHeaders.0/workspace"
        );
        assert_eq!(pax_header_name(b"backup/a.txt"), b"PaxHeaders.0/a.txt");
        assert_eq!(pax_header_name(b"/"), b"PaxHeaders.0/entry");
        assert!(pax_header_name(&[b'x'; 300]).len() <= 100);
        let long = "é".repeat(60);
        let n = pax_header_name(long.as_bytes());
        assert!(std::str::from_utf8(&n).is_ok() && n.len() <= 100);
    }
}
