//! When the daemon runs its job: a cron expression (UTC) or a fixed interval. Pure: parsing and
//! "next time after t", no clock and no sleeping.
//!
//! Cron syntax: 5 fields `minute hour day-of-month month day-of-week`, or 6 with a leading
//! `second` field (as the old tool's robfig/cron accepted); `*`, `a-b`, lists `a,b`, steps `*/n`
//! and `a-b/n`, month and weekday names (`jan`, `mon`), `7` for Sunday; the macros `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`, and `@every 90s`.
//! When both day fields are restricted a day matches either (Vixie cron).

use chrono::{DateTime, Datelike, Duration, DurationRound, Timelike, Utc};

/// How far ahead [`Schedule::next_after`] looks before giving up (e.g. `0 0 30 2 *`).
const SEARCH_YEARS: i32 = 5;

/// Why a schedule does not parse. Every variant is a configuration error: it names the field
/// and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Not 5 or 6 fields.
    #[error(
        "{expression:?} has {fields} fields: expected 5 (minute hour day month weekday) or 6 \
         (with seconds first)"
    )]
    FieldCount {
        /// The expression as given.
        expression: String,
        /// How many fields it has.
        fields: usize,
    },
    /// One field is wrong.
    #[error("{what} field {field:?}: {problem}")]
    Field {
        /// `minute`, `day of week`, ...
        what: &'static str,
        /// The field as written.
        field: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// An `@` word that is not a macro.
    #[error("unknown macro {0:?}")]
    UnknownMacro(String),
    /// `@every` with a duration that does not parse.
    #[error("{0}")]
    Duration(String),
    /// `@every 0s`.
    #[error("@every needs a duration of at least 1s")]
    EveryTooShort,
}

/// What is wrong with one field of a cron expression.
#[derive(Debug, thiserror::Error)]
pub enum FieldProblem {
    /// `*/x`.
    #[error("the step is not a number")]
    StepNotNumber,
    /// `*/0`.
    #[error("a step of 0")]
    ZeroStep,
    /// `10-5`.
    #[error("range {0}-{1} goes backwards")]
    Backwards(u32, u32),
    /// Neither a number nor a name.
    #[error("{0:?} is not a number")]
    NotNumber(String),
    /// A number outside the field's range.
    #[error("{value} is outside {lo}-{hi}")]
    OutOfRange {
        /// The number.
        value: u32,
        /// The smallest allowed.
        lo: u32,
        /// The largest allowed.
        hi: u32,
    },
}

/// A schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// A cron expression, evaluated in UTC.
    Cron(Cron),
    /// Every this many seconds, counted from the daemon's start.
    Every(u64),
}

/// A parsed cron expression: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parse a cron expression, a macro, or `@every DURATION`.
    pub fn parse(s: &str) -> Result<Schedule, ScheduleError> {
        let s = s.trim();
        if let Some(d) = s.strip_prefix("@every") {
            let secs = crate::engine::retention::parse_duration(d.trim())
                .map_err(ScheduleError::Duration)?;
            if secs <= 0 {
                return Err(ScheduleError::EveryTooShort);
            }
            return Ok(Schedule::Every(secs as u64));
        }
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            m if m.starts_with('@') => return Err(ScheduleError::UnknownMacro(m.into())),
            other => other,
        };
        Cron::parse(expanded).map(Schedule::Cron)
    }

    /// The first time strictly after `t` (whole seconds) at which the job is due; `None` when a
    /// cron expression never matches within the next years.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(secs) => {
                t.checked_add_signed(Duration::try_seconds(i64::try_from(*secs).ok()?)?)
            }
            Schedule::Cron(c) => c.next_after(t),
        }
    }
}

impl Cron {
    /// Parse 5 or 6 whitespace-separated fields. `?` in the day fields means `*`, as in the
    /// old tool's robfig/cron.
    pub fn parse(s: &str) -> Result<Cron, ScheduleError> {
        let mut fields: Vec<&str> = s.split_whitespace().collect();
        let n = fields.len();
        if n >= 5 {
            for i in [n - 3, n - 1] {
                if fields[i] == "?" {
                    fields[i] = "*";
                }
            }
        }
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(ScheduleError::FieldCount {
                    expression: s.into(),
                    fields: n,
                });
            }
        };
        let seconds = field(sec, "second", 0, 59, &[])?;
        let minutes = field(rest[0], "minute", 0, 59, &[])?;
        let hours = field(rest[1], "hour", 0, 23, &[])?;
        let dom = field(rest[2], "day of month", 1, 31, &[])?;
        let months = field(rest[3], "month", 1, 12, &MONTHS)?;
        // 0-7, 7 being Sunday again.
        let dow = field(rest[4], "day of week", 0, 7, &WEEKDAYS)?;
        let dow = (dow | (dow >> 7)) & 0x7f;
        Ok(Cron {
            seconds,
            minutes,
            hours: hours as u32,
            days_of_month: dom as u32,
            months: months as u16,
            days_of_week: dow as u8,
            dom_restricted: !rest[2].starts_with('*'),
            dow_restricted: !rest[4].starts_with('*'),
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days_of_month & (1 << t.day()) != 0;
        let dow = self.days_of_week & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first matching time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut c = t.duration_trunc(Duration::seconds(1)).ok()? + Duration::seconds(1);
        let limit = t.year() + SEARCH_YEARS;
        while c.year() <= limit {
            if self.months & (1 << c.month()) == 0 {
                // First second of the next month.
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                c = chrono::NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
                continue;
            }
            if !self.day_matches(&c) {
                c = c.date_naive().succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
                continue;
            }
            if self.hours & (1 << c.hour()) == 0 {
                c = c.with_minute(0)?.with_second(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << c.minute()) == 0 {
                c = c.with_second(0)? + Duration::minutes(1);
                continue;
            }
            if self.seconds & (1 << c.second()) == 0 {
                c += Duration::seconds(1);
                continue;
            }
            return Some(c);
        }
        None
    }
}

/// One field: a bit per allowed value in `lo..=hi`.
fn field(
    s: &str,
    what: &'static str,
    lo: u32,
    hi: u32,
    names: &[&str],
) -> Result<u64, ScheduleError> {
    let mut bits = 0u64;
    for part in s.split(',') {
        let (a, b, step) =
            part_range(part, lo, hi, names).map_err(|problem| ScheduleError::Field {
                what,
                field: s.into(),
                problem,
            })?;
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            match v.checked_add(step) {
                Some(n) => v = n,
                None => break,
            }
        }
    }
    Ok(bits)
}

/// One comma-separated part of a field: first value, last value, step.
fn part_range(
    part: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
) -> Result<(u32, u32, u32), FieldProblem> {
    let (range, step) = match part.split_once('/') {
        Some((r, st)) => {
            let st: u32 = st.parse().map_err(|_| FieldProblem::StepNotNumber)?;
            if st == 0 {
                return Err(FieldProblem::ZeroStep);
            }
            (r, st)
        }
        None => (part, 1),
    };
    let (a, b) = if range == "*" {
        (lo, hi)
    } else if let Some((a, b)) = range.split_once('-') {
        (value(a, lo, hi, names)?, value(b, lo, hi, names)?)
    } else {
        let v = value(range, lo, hi, names)?;
        // `5/15` means from 5 to the end in steps of 15.
        (v, if part.contains('/') { hi } else { v })
    };
    if a > b {
        return Err(FieldProblem::Backwards(a, b));
    }
    Ok((a, b, step))
}

fn value(s: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, FieldProblem> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        // Month names count from 1, weekday names from 0.
        return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
    }
    let v: u32 = s.parse().map_err(|_| FieldProblem::NotNumber(s.into()))?;
    if v < lo || v > hi {
        return Err(FieldProblem::OutOfRange { value: v, lo, hi });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn question_mark_is_any_day() {
        let t = |x: &str| DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc);
        let s = Schedule::parse("0 3 ? * *").unwrap();
        assert_eq!(
            s.next_after(t("2026-02-04T04:00:00Z")),
            Some(t("2026-02-05T03:00:00Z"))
        );
        assert!(Schedule::parse("0 0 0 ? * *").is_ok());
        assert!(Schedule::parse("? 3 * * *").is_err());
    }

    #[test]
    fn next_times() {
        let cases = [
            // (expression, after, expected next)
            ("0 2 * * *", "2025-11-16T01:59:59Z", "2025-11-16T02:00:00Z"),
            ("0 2 * * *", "2025-11-16T02:00:00Z", "2025-11-17T02:00:00Z"),
            ("0 3 * * *", "2025-12-31T04:00:00Z", "2026-01-01T03:00:00Z"),
            (
                "*/15 * * * *",
                "2025-11-16T10:07:30Z",
                "2025-11-16T10:15:00Z",
            ),
            (
                "*/3 * * * * *",
                "2025-11-16T10:07:31Z",
                "2025-11-16T10:07:33Z",
            ),
            (
                "30 * * * * *",
                "2025-11-16T10:07:31Z",
                "2025-11-16T10:08:30Z",
            ),
            ("0 0 29 2 *", "2025-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "0 9 * * mon-fri",
                "2025-11-15T10:00:00Z",
                "2025-11-17T09:00:00Z",
            ),
            ("0 9 * * 7", "2025-11-15T10:00:00Z", "2025-11-16T09:00:00Z"),
            (
                "0 0 1 jan,jul *",
                "2025-02-01T00:00:00Z",
                "2025-07-01T00:00:00Z",
            ),
            // Both day fields restricted: either matches (the 13th, or a Friday).
            (
                "0 0 13 * fri",
                "2025-11-08T00:00:00Z",
                "2025-11-13T00:00:00Z",
            ),
            (
                "0 0 13 * fri",
                "2025-11-13T00:00:00Z",
                "2025-11-14T00:00:00Z",
            ),
            (
                "5-10/5 1 * * *",
                "2025-11-16T01:05:00Z",
                "2025-11-16T01:10:00Z",
            ),
            ("@daily", "2025-11-16T12:00:00Z", "2025-11-17T00:00:00Z"),
            ("@hourly", "2025-11-16T12:00:00Z", "2025-11-16T13:00:00Z"),
            ("@weekly", "2025-11-16T12:00:00Z", "2025-11-23T00:00:00Z"),
            ("@every 90s", "2025-11-16T12:00:00Z", "2025-11-16T12:01:30Z"),
        ];
        for (expr, after, want) in cases {
            let s = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(
                s.next_after(t(after)),
                Some(t(want)),
                "{expr} after {after}"
            );
        }
    }

    #[test]
    fn never_matching_or_huge_gives_none() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next_after(t("2025-01-01T00:00:00Z")), None);
        let s = Schedule::parse("@every 9999999999999999s").unwrap();
        assert_eq!(s.next_after(t("2025-01-01T00:00:00Z")), None);
        let s = Schedule::parse("*/4294967295 * * * *").unwrap();
        assert!(s.next_after(t("2025-01-01T00:00:30Z")).is_some());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("0 2 * *", "4 fields"),
            ("61 * * * *", "minute"),
            ("0 24 * * *", "hour"),
            ("0 0 0 * *", "day of month"),
            ("0 0 * 13 *", "month"),
            ("0 0 * * 8", "day of week"),
            ("*/0 * * * *", "step of 0"),
            ("10-5 * * * *", "backwards"),
            ("x * * * *", "not a number"),
            ("@sometimes", "unknown macro"),
            ("@every soon", "invalid duration"),
        ];
        for (expr, needle) in cases {
            let e = Schedule::parse(expr).expect_err(expr).to_string();
            assert!(e.contains(needle), "{expr}: {e:?} lacks {needle:?}");
        }
    }
}
