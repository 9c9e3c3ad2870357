//! Durations as users type them. Pure: parsing, display and date arithmetic, no clock.
//!
//! Two kinds, one rule for `m`:
//! - [`Span`] is an age in a retention policy (`--keep-within`, `retention.keep_within`), read
//!   as restic reads it: units `y` (years), `m` (months), `w` (weeks), `d` (days), `h` (hours),
//!   and `min` (minutes), e.g. `2y5m7d3h`. `m` is **months**, as in restic; `mo` is accepted
//!   for months too. A unit is required: a bare number is refused (restic refuses it too).
//!   [`Span::before`] subtracts it from a time as restic does (`AddDate(-y, -m, -d)`, then
//!   hours and minutes).
//! - [`parse_fixed_secs`] reads a length of time that must be fixed (`--retry-lock`,
//!   `health --max-age`, the daemon's `interval` and `@every`): units `s`, `min`, `h`, `d`,
//!   `w`; a bare number is seconds. `m` is refused there, because a restic user means months
//!   by it and a Go or cron user minutes: the message says to write `min`. Months and years
//!   have no fixed length and are refused too.
//!
//! Minutes are therefore spelled `min` everywhere, and `m` never silently means minutes.

use std::fmt;

use chrono::{DateTime, Duration, Months, Utc};
use serde::Serialize;

/// A duration the user typed that cannot be read; the message says what to write instead.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

impl DurationError {
    fn too_large(s: &str) -> Self {
        DurationError(format!("duration {s:?} is too large"))
    }
}

/// An age in a retention policy: calendar years and months, then days, hours and minutes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Weeks (7 days).
    pub weeks: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
    /// Minutes.
    pub minutes: u32,
}

/// One `<number><unit>` term of a duration.
fn terms(s: &str) -> Result<Vec<(u64, &str)>, DurationError> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError(format!(
                "invalid duration {s:?}: expected numbers with units, e.g. 7d or 2y5m7d3h"
            )));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::too_large(s))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push((n, &rest[..unit_len]));
        rest = &rest[unit_len..];
    }
    Ok(out)
}

impl Span {
    /// Parse `y`, `m` (months), `mo`, `w`, `d`, `h`, `min` terms, e.g. `6m`, `2y5m7d3h`, `14d`.
    pub fn parse(s: &str) -> Result<Span, DurationError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DurationError(
                "empty duration: give e.g. 14d, 6m (months), 1y".into(),
            ));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DurationError(format!(
                "duration {s:?} has no unit: write e.g. {s}d (days), {s}h (hours) or {s}m \
                 (months)"
            )));
        }
        let mut span = Span::default();
        for (n, unit) in terms(s)? {
            let field = match unit {
                "y" => &mut span.years,
                "m" | "mo" => &mut span.months,
                "w" => &mut span.weeks,
                "d" => &mut span.days,
                "h" => &mut span.hours,
                "min" => &mut span.minutes,
                "s" => {
                    return Err(DurationError(format!(
                        "invalid unit \"s\" in {s:?}: a retention age has no seconds; use y, \
                         m (months), w, d, h or min"
                    )));
                }
                other => {
                    return Err(DurationError(format!(
                        "invalid unit {other:?} in {s:?}: use y, m (months), w, d, h or min"
                    )));
                }
            };
            *field = u32::try_from(n)
                .ok()
                .and_then(|n| field.checked_add(n))
                .ok_or_else(|| DurationError::too_large(s))?;
        }
        // Refuse what no date can hold, so that `before` only fails at the edges of time.
        if u64::from(span.years) * 12 + u64::from(span.months) > 120_000
            || span.fixed_secs() > 10_000 * 366 * 86_400
        {
            return Err(DurationError::too_large(s));
        }
        Ok(span)
    }

    /// The days, hours and minutes part in seconds.
    fn fixed_secs(&self) -> i64 {
        (i64::from(self.weeks) * 7 + i64::from(self.days)) * 86_400
            + i64::from(self.hours) * 3600
            + i64::from(self.minutes) * 60
    }

    /// True when every part is zero.
    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }

    /// `t` minus this span: calendar years and months first (a day that the month does not
    /// have becomes its last day: 31 August minus 6 months is 28 or 29 February), then weeks,
    /// days, hours and minutes. `None` only before the year -262143.
    pub fn before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        t.checked_sub_months(Months::new(months))?
            .checked_sub_signed(Duration::try_seconds(self.fixed_secs())?)
    }

    /// The short form (`2y5m7d3h`), as restic writes it.
    pub fn short(&self) -> String {
        let mut s = String::new();
        for (n, unit) in self.parts() {
            if n > 0 {
                s.push_str(&format!("{n}{}", unit.0));
            }
        }
        if s.is_empty() { "0d".into() } else { s }
    }

    fn parts(&self) -> [(u32, (&'static str, &'static str)); 6] {
        [
            (self.years, ("y", "year")),
            (self.months, ("m", "month")),
            (self.weeks, ("w", "week")),
            (self.days, ("d", "day")),
            (self.hours, ("h", "hour")),
            (self.minutes, ("min", "minute")),
        ]
    }
}

/// In words: `6 months`, `2 years 5 months 7 days 3 hours`.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .parts()
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, (_, w))| format!("{n} {w}{}", if *n == 1 { "" } else { "s" }))
            .collect();
        if words.is_empty() {
            f.write_str("0 days")
        } else {
            f.write_str(&words.join(" "))
        }
    }
}

/// Parse a fixed length of time in seconds: `s`, `min`, `h`, `d`, `w` terms (`90s`, `30min`,
/// `1h30min`, `7d`), or a bare number of seconds. `m` is refused (see the module's doc).
pub fn parse_fixed_secs(s: &str) -> Result<u64, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError(
            "empty duration: give e.g. 30s, 10min, 2h".into(),
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| DurationError::too_large(s));
    }
    let mut total: u64 = 0;
    for (n, unit) in terms(s)? {
        let secs: u64 = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "m" => {
                return Err(DurationError(format!(
                    "ambiguous unit \"m\" in {s:?}: write {n}min for minutes (in a retention \
                     policy, m means months, as in restic)"
                )));
            }
            "mo" | "M" | "y" => {
                return Err(DurationError(format!(
                    "unit {unit:?} in {s:?}: months and years have no fixed length here; use \
                     s, min, h, d or w"
                )));
            }
            other => {
                return Err(DurationError(format!(
                    "invalid unit {other:?} in {s:?}: use s, min, h, d or w"
                )));
            }
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::too_large(s))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    #[test]
    fn spans_read_as_restic_reads_them() {
        let cases: &[(&str, Span, &str)] = &[
            (
                "6m",
                Span {
                    months: 6,
                    ..Span::default()
                },
                "6 months",
            ),
            (
                "2y5m7d3h",
                Span {
                    years: 2,
                    months: 5,
                    days: 7,
                    hours: 3,
                    ..Span::default()
                },
                "2 years 5 months 7 days 3 hours",
            ),
            (
                "6mo",
                Span {
                    months: 6,
                    ..Span::default()
                },
                "6 months",
            ),
            (
                "2w1d",
                Span {
                    weeks: 2,
                    days: 1,
                    ..Span::default()
                },
                "2 weeks 1 day",
            ),
            (
                "90min",
                Span {
                    minutes: 90,
                    ..Span::default()
                },
                "90 minutes",
            ),
        ];
        for (text, span, words) in cases {
            assert_eq!(Span::parse(text).as_ref(), Ok(span), "{text}");
            assert_eq!(span.to_string(), *words);
        }
        assert_eq!(Span::parse("2y5m7d3h").unwrap().short(), "2y5m7d3h");
        for bad in ["", "6", "h", "5x", "30s", "-3d", "99999999999y", "20000y"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Span::parse("30")
                .unwrap_err()
                .to_string()
                .contains("no unit")
        );
    }

    #[test]
    fn before_subtracts_calendar_months_then_hours() {
        let six_months = Span::parse("6m").unwrap();
        assert_eq!(
            six_months.before(at(2026, 12, 5, 3)),
            Some(at(2026, 6, 5, 3))
        );
        // A day the month lacks becomes its last day.
        assert_eq!(
            six_months.before(at(2026, 8, 31, 0)),
            Some(at(2026, 2, 28, 0))
        );
        assert_eq!(
            Span::parse("1y1m1d1h").unwrap().before(at(2026, 3, 2, 1)),
            Some(at(2025, 2, 1, 0))
        );
        assert_eq!(
            Span::parse("1w").unwrap().before(at(2026, 3, 8, 0)),
            Some(at(2026, 3, 1, 0))
        );
    }

    #[test]
    fn fixed_lengths_refuse_m() {
        assert_eq!(parse_fixed_secs("0"), Ok(0));
        assert_eq!(parse_fixed_secs("90"), Ok(90));
        assert_eq!(parse_fixed_secs("30min"), Ok(1800));
        assert_eq!(parse_fixed_secs("1h30min"), Ok(5400));
        assert_eq!(parse_fixed_secs("25h"), Ok(90_000));
        assert_eq!(parse_fixed_secs("2w"), Ok(1_209_600));
        let e = parse_fixed_secs("30m").unwrap_err().to_string();
        assert!(e.contains("30min"), "{e}");
        for bad in ["", "6mo", "1y", "5x", "h", "99999999999999999999"] {
            assert!(parse_fixed_secs(bad).is_err(), "{bad}");
        }
    }
}
