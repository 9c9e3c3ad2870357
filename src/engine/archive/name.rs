//! Archive file names and the times in them, as the old nightly tools wrote them
//! (`backup-2025-11-16T03-00-00.tar.gz`): export makes a name from a snapshot's time with a
//! strftime pattern ([`output_name`]); import reads a snapshot time back out of a name
//! ([`time_from_name`]).
//!
//! Pure: no I/O, no clock. A made name is always a plain file name (never a path, `..` or
//! [`LATEST_LINK`]), so it cannot escape or replace anything in the output directory.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};

use crate::engine::EngineError;
use crate::format::tree::Node;

/// The old tool's file name pattern (strftime, local time).
pub const DEFAULT_NAME_PATTERN: &str = "backup-%Y-%m-%dT%H-%M-%S.tar.gz";
/// Name of the symlink `--output-dir` keeps pointing at the newest export.
pub const LATEST_LINK: &str = "latest";

/// The file name for an export of a snapshot taken at `time`, from a strftime `pattern` (the
/// old tool's `backup-%Y-%m-%dT%H-%M-%S.tar.gz`). Refuses invalid patterns and results that
/// are not a plain file name.
pub fn output_name<Tz: TimeZone>(pattern: &str, time: &DateTime<Tz>) -> Result<String, EngineError>
where
    Tz::Offset: std::fmt::Display,
{
    use chrono::format::{Item, StrftimeItems};
    let bad = |why: &str| EngineError::Usage(format!("--name {pattern:?}: {why}"));
    let items: Vec<Item<'_>> = StrftimeItems::new(pattern).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(bad("not a valid strftime pattern"));
    }
    let mut name = String::new();
    // Formatting reports (never panics on) what the items cannot express.
    write!(name, "{}", time.format_with_items(items.iter()))
        .map_err(|_| bad("not a valid strftime pattern"))?;
    if !Node::name_is_safe(name.as_bytes()) || name == LATEST_LINK {
        return Err(bad(&format!(
            "gives {name:?}, which is not a plain file name"
        )));
    }
    Ok(name)
}

/// Parse two or four ASCII digits at `*p`.
fn digits(b: &[u8], p: &mut usize, n: usize) -> Option<u32> {
    let s = b.get(*p..*p + n)?;
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *p += n;
    Some(s.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
}

fn skip_dash(b: &[u8], p: &mut usize) {
    if b.get(*p) == Some(&b'-') {
        *p += 1;
    }
}

/// Match `\d{4}-?\d{2}-?\d{2}([T-]\d{2}-?\d{2}-?\d{2})?` at `i`: its end and, when it is a
/// real date and time, the value.
fn date_at(b: &[u8], i: usize) -> Option<(usize, Option<NaiveDateTime>)> {
    let mut p = i;
    let y = digits(b, &mut p, 4)?;
    skip_dash(b, &mut p);
    let mo = digits(b, &mut p, 2)?;
    skip_dash(b, &mut p);
    let d = digits(b, &mut p, 2)?;
    let time = (|| {
        let mut q = p;
        if !matches!(b.get(q), Some(b'T' | b'-')) {
            return None;
        }
        q += 1;
        let h = digits(b, &mut q, 2)?;
        skip_dash(b, &mut q);
        let mi = digits(b, &mut q, 2)?;
        skip_dash(b, &mut q);
        let s = digits(b, &mut q, 2)?;
        Some((q, h, mi, s))
    })();
    let (end, h, mi, s) = time.unwrap_or((p, 0, 0, 0));
    let value = NaiveDate::from_ymd_opt(y as i32, mo, d).and_then(|dt| dt.and_hms_opt(h, mi, s));
    Some((end, value))
}

/// The date and time in an archive's file name, as the old tools wrote them
/// (`backup-2025-11-16T03-00-00.tar.gz`, `claude-backup-20260204-020000.tar.gz`,
/// `volumes-20251116.tar.gz`): the last match that is a real date.
pub fn time_from_name(name: &str) -> Option<NaiveDateTime> {
    let b = name.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        match date_at(b, i) {
            Some((end, value)) => {
                found = value.or(found);
                i = end;
            }
            None => i += 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    #[test]
    fn output_names_follow_the_pattern() {
        let t = Utc
            .with_ymd_and_hms(2025, 11, 16, 3, 4, 5)
            .single()
            .unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            (
                DEFAULT_NAME_PATTERN,
                Some("backup-2025-11-16T03-04-05.tar.gz"),
            ),
            (
                "claude-backup-%Y%m%d-%H%M%S.tar.gz",
                Some("claude-backup-20251116-030405.tar.gz"),
            ),
            ("volumes-%Y%m%d.tar.gz", Some("volumes-20251116.tar.gz")),
            ("plain.tar.gz", Some("plain.tar.gz")),
            ("%Y/%m/backup.tar.gz", None),
            ("backup-%", None),
            ("", None),
            ("..", None),
            ("latest", None),
        ];
        for (pattern, want) in cases {
            let got = output_name(pattern, &t).ok();
            assert_eq!(got.as_deref(), *want, "pattern {pattern:?}");
        }
        let east = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            output_name(DEFAULT_NAME_PATTERN, &t.with_timezone(&east)).unwrap(),
            "backup-2025-11-16T04-04-05.tar.gz"
        );
    }

    #[test]
    fn times_from_archive_names() {
        let t = |y, mo, d, h, mi, s| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|d| d.and_hms_opt(h, mi, s))
                .unwrap()
        };
        let cases: &[(&str, Option<NaiveDateTime>)] = &[
            (
                "backup-2025-11-16T03-00-00.tar.gz",
                Some(t(2025, 11, 16, 3, 0, 0)),
            ),
            (
                "claude-backup-20260204-020000.tar.gz",
                Some(t(2026, 2, 4, 2, 0, 0)),
            ),
            ("volumes-20251116.tar.gz", Some(t(2025, 11, 16, 0, 0, 0))),
            ("backup-2025-11-16.tar.gz", Some(t(2025, 11, 16, 0, 0, 0))),
            (
                "backup-20251116T031500.tar.gz",
                Some(t(2025, 11, 16, 3, 15, 0)),
            ),
            (
                "nightly-2025-11-16-1.tar.gz",
                Some(t(2025, 11, 16, 0, 0, 0)),
            ),
            (
                "2024-01-01-copy-of-backup-2025-11-16T03-00-00.tar.gz",
                Some(t(2025, 11, 16, 3, 0, 0)),
            ),
            (
                "backup-2025-11-16-weekly-2025-13-01.tar.gz",
                Some(t(2025, 11, 16, 0, 0, 0)),
            ),
            ("backup.tar.gz", None),
            ("backup-2025-13-01.tar.gz", None),
            ("backup-2025-11-16T25-00-00.tar.gz", None),
            ("backup-123.tar.gz", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(time_from_name(name), *want, "{name:?}");
        }
    }
}
