//! PAX extended-header records, as export writes them and import reads them back: what a GNU
//! tar header cannot hold about a node.
//!
//! Export writes `mtime` when it has nanoseconds or is before the epoch, and one
//! `SCHILY.xattr.<name>` per extended attribute (GNU tar's and star's spelling). Import reads
//! those, and `uid`/`gid` for owner ids too large for the header; it ignores every other key.
//! The time codecs here are pure; only [`Pax::read`] reads from the archive.

use std::io::{self, Read};

use serde_bytes::ByteBuf;

use crate::engine::{Warnings, display_bytes};
use crate::format::tree::{Node, Xattr};

/// Format a time as a PAX decimal (`-1.5` is 1.5 s before the epoch).
pub(super) fn encode_time(secs: i64, nsec: u32) -> String {
    let nsec = nsec.min(999_999_999);
    if secs >= 0 || nsec == 0 {
        format!("{secs}.{nsec:09}")
    } else {
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nsec)
    }
}

/// Parse a PAX time (`1600000000.123456789`, `-1.5`) into seconds and nanoseconds.
pub(super) fn decode_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits_only = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.as_bytes().get(i).map_or(0, |c| u32::from(c - b'0'));
    }
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

/// PAX records for what a GNU header cannot hold of `node` (at `rel` in the snapshot). An
/// extended attribute whose name is not UTF-8 cannot be written and is warned about.
pub(super) fn encode_records(
    rel: &[u8],
    node: &Node,
    warnings: &Warnings,
) -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    if node.mtime_nsec != 0 || node.mtime < 0 {
        records.push((
            "mtime".to_string(),
            encode_time(node.mtime, node.mtime_nsec).into_bytes(),
        ));
    }
    for x in &node.xattrs {
        match std::str::from_utf8(&x.name) {
            Ok(name) => records.push((format!("SCHILY.xattr.{name}"), x.value.to_vec())),
            Err(_) => warnings.push(
                display_bytes(rel),
                format!(
                    "extended attribute {} has a non-UTF-8 name; not exported",
                    display_bytes(&x.name)
                ),
            ),
        }
    }
    records
}

/// The PAX records coffer uses, read from before one tar entry.
#[derive(Default)]
pub(super) struct Pax {
    /// Modification time, seconds and nanoseconds.
    pub mtime: Option<(i64, u32)>,
    /// Owner id.
    pub uid: Option<u64>,
    /// Group id.
    pub gid: Option<u64>,
    /// Extended attributes, sorted by name, one per name.
    pub xattrs: Vec<Xattr>,
}

impl Pax {
    /// The records of `entry` (none when it has no PAX header). Fails only when the records
    /// cannot be read; a value that does not parse is ignored.
    pub(super) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Pax> {
        let mut pax = Pax::default();
        let Some(ext) = entry.pax_extensions()? else {
            return Ok(pax);
        };
        for rec in ext {
            let rec = rec?;
            let Ok(key) = rec.key() else { continue };
            let value = rec.value_bytes();
            let number = || std::str::from_utf8(value).ok()?.trim().parse::<u64>().ok();
            match key {
                "mtime" => pax.mtime = decode_time(value),
                "uid" => pax.uid = number(),
                "gid" => pax.gid = number(),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        pax.xattrs.push(Xattr {
                            name: ByteBuf::from(name.as_bytes().to_vec()),
                            value: ByteBuf::from(value.to_vec()),
                        });
                    }
                }
            }
        }
        pax.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        pax.xattrs.dedup_by(|a, b| a.name == b.name);
        Ok(pax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_encode() {
        assert_eq!(
            encode_time(1_600_000_000, 123_456_789),
            "1600000000.123456789"
        );
        assert_eq!(encode_time(5, 0), "5.000000000");
        assert_eq!(encode_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(encode_time(-2, 0), "-2.000000000");
    }

    #[test]
    fn times_decode() {
        let cases: &[(&str, Option<(i64, u32)>)] = &[
            ("1600000000.123456789", Some((1_600_000_000, 123_456_789))),
            ("1600000000", Some((1_600_000_000, 0))),
            ("1600000000.5", Some((1_600_000_000, 500_000_000))),
            ("1.1234567891", Some((1, 123_456_789))),
            ("-1.5", Some((-2, 500_000_000))),
            ("-2", Some((-2, 0))),
            (".5", Some((0, 500_000_000))),
            ("", None),
            ("-", None),
            ("12a", None),
            ("1.-5", None),
            ("99999999999999999999999", None),
        ];
        for (s, want) in cases {
            assert_eq!(decode_time(s.as_bytes()), *want, "{s:?}");
        }
    }
}
