//! Condemned-pack markers: the first phase of a prune that runs beside backups. Sealed with
//! aad "coffer condemned" and stored under `condemned/<BLAKE3 of the sealed bytes>`.
//!
//! ```text
//! | version: u8 = 1 | time: i64 LE | host_len: u8 | host: host_len bytes (UTF-8) |
//! | has_sessions: u8 (0 or 1) | [ session_count: u32 LE | session_count x session ] |
//! | pack_count: u32 LE | pack_count x pack id: [u8; 32] |
//! session: | len: u8 (1..=64) | len bytes (UTF-8) |
//! ```
//!
//! `time` is the pruning host's clock when the marker was written, `sessions` the lock
//! sessions that were present in `locks/` after the packs were condemned (absent in a marker
//! whose writer has not listed the locks yet). See `docs/format.md`, "Prune beside backups".

use super::FormatError;
use super::cursor::Cursor;
use crate::id::PackId;

/// Marker format version written.
pub const CONDEMNED_VERSION: u8 = 1;
/// Associated data of a sealed marker.
pub const CONDEMNED_AAD: &[u8] = b"coffer condemned";
/// Longest session name.
pub const MAX_SESSION_BYTES: usize = 64;

/// Packs that no snapshot needed when a prune looked, to be deleted by a later prune once
/// every process that might have reused them is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condemned {
    /// When it was written, Unix seconds of the pruning host.
    pub time: i64,
    /// The pruning host.
    pub host: String,
    /// The lock sessions present after the packs were condemned; `None` until listed.
    pub sessions: Option<Vec<String>>,
    /// The condemned packs.
    pub packs: Vec<PackId>,
}

/// Encode a marker's plaintext. Host names are cut to 255 bytes and session names to
/// [`MAX_SESSION_BYTES`] (at a character boundary).
pub fn encode(m: &Condemned) -> Vec<u8> {
    let host = cut(&m.host, 255);
    let mut out = Vec::with_capacity(16 + host.len() + 36 * m.packs.len());
    out.push(CONDEMNED_VERSION);
    out.extend_from_slice(&m.time.to_le_bytes());
    out.push(host.len() as u8);
    out.extend_from_slice(host.as_bytes());
    match &m.sessions {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            let s: Vec<&str> = s
                .iter()
                .map(|s| cut(s, MAX_SESSION_BYTES))
                .filter(|s| !s.is_empty())
                .collect();
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            for s in s {
                out.push(s.len() as u8);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.extend_from_slice(&(m.packs.len() as u32).to_le_bytes());
    for p in &m.packs {
        out.extend_from_slice(&p.0);
    }
    out
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decode a marker's plaintext.
pub fn decode(bytes: &[u8]) -> Result<Condemned, FormatError> {
    const WHAT: &str = "condemned marker";
    let mut c = Cursor::new(bytes, WHAT);
    let version = c.u8()?;
    if version != CONDEMNED_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: version.into(),
            supported: CONDEMNED_VERSION.into(),
        });
    }
    let time = c.i64()?;
    let host_len = c.u8()? as usize;
    let host = utf8(c.take(host_len)?, WHAT)?;
    let sessions = match c.u8()? {
        0 => None,
        1 => {
            let count = c.u32()? as usize;
            // Each session takes at least 2 bytes: bound the allocation by the input.
            if count > c.remaining() / 2 {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("{count} sessions do not fit"),
                ));
            }
            let mut s = Vec::with_capacity(count);
            for _ in 0..count {
                let len = c.u8()? as usize;
                if len == 0 || len > MAX_SESSION_BYTES {
                    return Err(FormatError::invalid(
                        WHAT,
                        format!("a session name of {len} bytes"),
                    ));
                }
                s.push(utf8(c.take(len)?, WHAT)?);
            }
            Some(s)
        }
        other => {
            return Err(FormatError::invalid(WHAT, format!("sessions flag {other}")));
        }
    };
    let count = c.u32()? as usize;
    if count > c.remaining() / 32 {
        return Err(FormatError::invalid(
            WHAT,
            format!("{count} packs do not fit"),
        ));
    }
    let mut packs = Vec::with_capacity(count);
    for _ in 0..count {
        packs.push(PackId(c.array()?));
    }
    c.finish()?;
    Ok(Condemned {
        time,
        host,
        sessions,
        packs,
    })
}

fn utf8(b: &[u8], what: &'static str) -> Result<String, FormatError> {
    String::from_utf8(b.to_vec()).map_err(|_| FormatError::invalid(what, "a name is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn marker(sessions: Option<Vec<String>>, packs: u8) -> Condemned {
        Condemned {
            time: 1_795_424_287,
            host: "build-1".into(),
            sessions,
            packs: (0..packs).map(|n| PackId([n; 32])).collect(),
        }
    }

    #[test]
    fn round_trips_and_refuses_what_it_does_not_know() {
        for m in [
            marker(None, 0),
            marker(None, 3),
            marker(Some(vec![]), 1),
            marker(Some(vec!["a1b2".into(), "c3".into()]), 2),
        ] {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
        let good = encode(&marker(Some(vec!["s".into()]), 2));
        let mut newer = good.clone();
        newer[0] = 2;
        assert!(matches!(
            decode(&newer),
            Err(FormatError::UnsupportedVersion { found: 2, .. })
        ));
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // A pack count the input cannot hold is refused before anything is allocated.
        let mut huge = encode(&marker(None, 0));
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            decode(&huge)
                .unwrap_err()
                .to_string()
                .contains("do not fit")
        );
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let mut m = marker(Some(vec!["é".repeat(40)]), 1);
        m.host = "ü".repeat(200);
        let back = decode(&encode(&m)).unwrap();
        assert_eq!(back.host.len(), 254);
        assert_eq!(back.sessions.unwrap()[0].len(), 64);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = decode(&b) {
                prop_assert_eq!(encode(&m), b);
            }
        }
    }
}
