//! Cron schedules of scheduler jobs: 5-field expressions (`minute hour day-of-month month
//! day-of-week`) evaluated by `croner`, in UTC or in the job's IANA `timezone:` (`chrono-tz`).
//!
//! Accepted: what croner accepts in five fields (`*`, numbers, ranges `a-b`, steps `*/n` and
//! `a-b/n`, lists, month and weekday names, and its extensions `L`, `W`, `#`, `?`), plus the
//! nicknames `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`.
//! Six or seven fields (seconds, years) are refused: the scheduler ticks once a minute, and a
//! seconds field would silently never fire as written. When both day fields are restricted,
//! either may match (classic cron).
//!
//! Daylight saving time follows croner (the Open Cron Pattern Specification, like Vixie cron):
//! a fixed-time job (`30 2 * * *`) whose time falls into a spring-forward gap runs once right
//! after the gap (03:00), and once, at the first occurrence, on a fall-back day; an interval
//! job (`*/15 * * * *`) skips the minutes that do not exist and runs in both repeated hours.
//!
//! Rejected: the hand-written bit-set evaluator this replaced (UTC only: a time zone with DST
//! is exactly where a hand-written calendar goes wrong) and the `cron` crate (6-7 fields with
//! seconds, no DST rules for fixed-time jobs).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

const NICKNAMES: [&str; 7] = [
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

const CRON_RULE: &str = "a schedule has 5 fields \"minute hour day-of-month month day-of-week\", each `*`, a number, a range a-b, a step */n or a-b/n, or a comma-separated list of those, e.g. \"*/15 * * * *\"";

/// Checks a cron expression; the error says what is wrong and how to write it.
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    CronSchedule::parse(expr).map(|_| ())
}

/// Checks an IANA time zone name and returns its canonical spelling (`europe/paris` →
/// `Europe/Paris`); the error suggests the nearest known name.
pub(crate) fn check_timezone(name: &str) -> Result<String, String> {
    if let Ok(tz) = Tz::from_str(name) {
        return Ok(tz.name().to_owned());
    }
    if let Ok(tz) = Tz::from_str_insensitive(name) {
        return Err(format!(
            "unknown time zone {name:?}; did you mean {:?}? (names are case-sensitive)",
            tz.name()
        ));
    }
    let names: Vec<String> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|t| t.name().to_ascii_lowercase())
        .collect();
    let lowered: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = super::values::nearest(name, &lowered)
        .and_then(|n| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .find(|t| t.name().eq_ignore_ascii_case(n))
        })
        .map(|t| format!(" did you mean {:?}?", t.name()))
        .unwrap_or_default();
    Err(format!(
        "unknown time zone {name:?};{hint} write an IANA time zone name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\""
    ))
}

const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat"),
];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// croner's error names neither the field nor its range: find the first field that fails
/// on its own (the others `*`) and say both.
fn which_field(expanded: &str, error: &croner::errors::CronError) -> String {
    let why = error.to_string();
    let why = why
        .trim_start_matches("Component error: ")
        .trim_start_matches("Invalid pattern: ")
        .trim_end_matches('.');
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    for (i, (name, range)) in FIELDS.iter().enumerate() {
        let mut alone = ["*"; 5];
        alone[i] = fields[i];
        if parser().parse(&alone.join(" ")).is_err() {
            return format!("{name} field {:?}: {why} (allowed: {range})", fields[i]);
        }
    }
    why.to_owned()
}

/// A parsed 5-field schedule and the time zone its fields are read in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// A schedule read in UTC.
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        CronSchedule::parse_in(expr, None)
    }

    /// A schedule read in the IANA time zone `timezone` (UTC when None).
    pub fn parse_in(expr: &str, timezone: Option<&str>) -> Result<CronSchedule, String> {
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| check_timezone(name).unwrap_err())?,
        };
        let trimmed = expr.trim();
        let expanded = if trimmed.starts_with('@') {
            match trimmed.to_ascii_lowercase().as_str() {
                "@hourly" => "0 * * * *",
                "@daily" | "@midnight" => "0 0 * * *",
                "@weekly" => "0 0 * * 0",
                "@monthly" => "0 0 1 * *",
                "@yearly" | "@annually" => "0 0 1 1 *",
                _ => {
                    return Err(format!(
                        "unknown schedule nickname {trimmed:?}; use one of {}",
                        NICKNAMES.join(", ")
                    ));
                }
            }
        } else {
            trimmed
        };
        let fields = expanded.split_whitespace().count();
        if fields != 5 {
            let why = if fields > 5 {
                " (seconds and years are not supported: jobs start on the minute)"
            } else {
                ""
            };
            return Err(format!(
                "schedule {expr:?} has {fields} fields, not 5{why}; {CRON_RULE}"
            ));
        }
        // croner reads `1,,2` as `1,2`; an empty list item is more likely a typo.
        if let Some(field) = expanded
            .split_whitespace()
            .find(|f| f.split(',').any(str::is_empty))
        {
            return Err(format!(
                "schedule {expr:?}: field {field:?} has an empty list item; {CRON_RULE}"
            ));
        }
        let cron = parser()
            .parse(expanded)
            .map_err(|e| format!("schedule {expr:?}: {}; {CRON_RULE}", which_field(expanded, &e)))?;
        Ok(CronSchedule { cron, tz })
    }

    /// The time zone the fields are read in.
    pub fn timezone(&self) -> &'static str {
        self.tz.name()
    }

    /// The first start after `unix_secs` (exclusive), as Unix seconds; None if the schedule
    /// never fires (e.g. 30 February).
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let start = DateTime::<Utc>::from_timestamp(unix_secs, 0)?.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp())
    }

    /// Whether the job starts in the minute beginning at `minute_secs` (Unix seconds, a
    /// multiple of 60): the schedule's next start after the previous minute is this one.
    pub fn is_due(&self, minute_secs: i64) -> bool {
        let minute = minute_secs.div_euclid(60) * 60;
        self.next_after(minute - 60) == Some(minute)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.cron.pattern.as_str() == other.cron.pattern.as_str() && self.tz == other.tz
    }
}

impl Eq for CronSchedule {}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    #[test]
    fn accepts_common_schedules() {
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "0 3 * * 1-5",
            "0,30 8-18/2 1 jan-jun MON",
            "59 23 31 12 7",
            "@daily",
            "@Hourly",
            "@midnight",
        ] {
            check_cron(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_what_cron_cannot_mean() {
        for (bad, needle) in [
            ("* * * *", "4 fields"),
            (
                "* * * * * *",
                "6 fields, not 5 (seconds and years are not supported",
            ),
            ("0 0 0 * * * *", "7 fields"),
            (
                "60 * * * *",
                "minute field \"60\": Number out of bounds (allowed: 0-59)",
            ),
            ("* 24 * * *", "hour field \"24\""),
            ("* * 0 * *", "day of month field \"0\""),
            ("* * * 13 *", "month field \"13\""),
            ("* * * * 8", "day of week field \"8\""),
            ("*/0 * * * *", "minute field \"*/0\": Step cannot be zero"),
            ("10-5 * * * *", "minute field \"10-5\""),
            (
                "a * * * *",
                "minute field \"a\": Pattern contains illegal characters",
            ),
            ("1,,2 * * * *", "empty list item"),
            ("@sometimes", "nickname"),
            ("", "0 fields"),
        ] {
            let err = check_cron(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad:?}: {err}");
            assert!(
                err.contains("a schedule has 5 fields") || err.contains("nickname"),
                "{bad:?}: {err}"
            );
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Utc.from_utc_datetime(
            &NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, 0)
                .unwrap(),
        )
        .timestamp()
    }

    /// The minutes of `[from, to)` (UTC) in which `s` is due.
    fn due_minutes(s: &CronSchedule, from: i64, to: i64) -> Vec<i64> {
        (from / 60..to / 60)
            .map(|m| m * 60)
            .filter(|&t| s.is_due(t))
            .collect()
    }

    #[test]
    fn utc_matching_and_next() {
        // 2026-11-21 23:14 UTC is a Saturday.
        let t = utc(2026, 11, 21, 23, 14);
        let every_15 = CronSchedule::parse("*/15 * * * *").unwrap();
        assert!(!every_15.is_due(t));
        assert!(every_15.is_due(utc(2026, 11, 21, 23, 15)));
        assert_eq!(every_15.next_after(t), Some(utc(2026, 11, 21, 23, 15)));
        let weekend = CronSchedule::parse("0 9 * * sat,sun").unwrap();
        assert!(weekend.is_due(utc(2026, 11, 21, 9, 0)));
        assert!(!weekend.is_due(utc(2026, 11, 23, 9, 0)), "a Monday");
        // Both day fields restricted: either matches (classic cron); 2026-11-01 is a Sunday.
        let either = CronSchedule::parse("0 0 1 * 6").unwrap();
        assert!(either.is_due(utc(2026, 11, 1, 0, 0)));
        assert!(either.is_due(utc(2026, 11, 7, 0, 0)), "a Saturday");
        assert!(CronSchedule::parse("0 0 30 2 *").unwrap().next_after(0).is_none());
        assert!(
            CronSchedule::parse("0 0 * * 7")
                .unwrap()
                .is_due(utc(2026, 11, 22, 0, 0))
        );
    }

    #[test]
    fn a_timezone_moves_the_start() {
        let paris = CronSchedule::parse_in("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.timezone(), "Europe/Paris");
        // Winter: UTC+1; summer: UTC+2.
        assert!(paris.is_due(utc(2026, 1, 15, 8, 0)));
        assert!(paris.is_due(utc(2026, 7, 15, 7, 0)));
        assert!(!paris.is_due(utc(2026, 7, 15, 9, 0)));
    }

    #[test]
    fn spring_forward_runs_a_skipped_fixed_time_once_after_the_gap() {
        // 2026-03-29, last Sunday of March: Paris goes from 02:00 CET to 03:00 CEST (01:00 UTC),
        // so 02:30 does not exist that day.
        let job = CronSchedule::parse_in("30 2 * * *", Some("Europe/Paris")).unwrap();
        let day = due_minutes(&job, utc(2026, 3, 28, 22, 0), utc(2026, 3, 29, 22, 0));
        assert_eq!(day, vec![utc(2026, 3, 29, 1, 0)], "once, at 03:00 CEST");
        // The days around it keep 02:30 local.
        assert!(job.is_due(utc(2026, 3, 28, 1, 30)), "02:30 CET");
        assert!(job.is_due(utc(2026, 3, 30, 0, 30)), "02:30 CEST");
        // An interval job skips the hour that does not exist.
        let quarterly = CronSchedule::parse_in("*/15 * * * *", Some("Europe/Paris")).unwrap();
        // The local day from midnight CET to midnight CEST.
        let n = due_minutes(&quarterly, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0)).len();
        assert_eq!(n, 23 * 4, "a 23-hour day");
    }

    #[test]
    fn fall_back_runs_a_repeated_fixed_time_once() {
        // 2026-10-25, last Sunday of October: Paris goes from 03:00 CEST back to 02:00 CET
        // (01:00 UTC), so 02:30 happens twice (00:30 and 01:30 UTC).
        let job = CronSchedule::parse_in("30 2 * * *", Some("Europe/Paris")).unwrap();
        let day = due_minutes(&job, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0));
        assert_eq!(day, vec![utc(2026, 10, 25, 0, 30)], "once, at the first 02:30");
        assert!(job.is_due(utc(2026, 10, 26, 1, 30)), "02:30 CET the next day");
        let quarterly = CronSchedule::parse_in("*/15 * * * *", Some("Europe/Paris")).unwrap();
        let n = due_minutes(&quarterly, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0)).len();
        assert_eq!(n, 25 * 4, "a 25-hour day");
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(check_timezone("Europe/Paris").unwrap(), "Europe/Paris");
        assert_eq!(check_timezone("UTC").unwrap(), "UTC");
        let e = check_timezone("europe/paris").unwrap_err();
        assert!(e.contains("did you mean \"Europe/Paris\""), "{e}");
        let e = check_timezone("Europe/Pariss").unwrap_err();
        assert!(e.contains("did you mean \"Europe/Paris\""), "{e}");
        let e = check_timezone("Mars/Olympus").unwrap_err();
        assert!(
            e.contains("unknown time zone \"Mars/Olympus\"") && e.contains("IANA"),
            "{e}"
        );
        assert!(CronSchedule::parse_in("* * * * *", Some("CEST")).is_err());
    }
}
