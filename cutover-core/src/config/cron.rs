//! Validation of 5-field cron expressions (`minute hour day-of-month month
//! day-of-week`), as evaluated later by the scheduler.
//!
//! Accepted per field: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`,
//! and comma-separated lists of those; month and weekday names (`jan`,
//! `mon`) and the nicknames `@hourly`, `@daily`, `@midnight`, `@weekly`,
//! `@monthly`, `@yearly`, `@annually`. `CronSchedule` is both the validator
//! and the evaluator the scheduler uses (UTC, minute resolution); a pure
//! bit-set per field needs no crate.

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

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

/// Checks a cron expression; the error says which field is wrong and why.
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    CronSchedule::parse(expr).map(|_| ())
}

/// A parsed 5-field schedule, evaluated in UTC at minute resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// Allowed values per field as bit sets (bit n = value n).
    fields: [u64; 5],
    /// Day-of-month or day-of-week was `*`: classic cron matches a day when
    /// both are restricted and *either* matches, otherwise when both match.
    dom_star: bool,
    dow_star: bool,
}

/// A UTC calendar minute, as the scheduler evaluates schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilMinute {
    pub minute: u32,
    pub hour: u32,
    pub day: u32,
    pub month: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl CivilMinute {
    /// The UTC minute containing `unix_secs`.
    pub fn from_unix(unix_secs: i64) -> CivilMinute {
        let days = unix_secs.div_euclid(86_400);
        let secs = unix_secs.rem_euclid(86_400);
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let _ = era;
        CivilMinute {
            minute: ((secs / 60) % 60) as u32,
            hour: (secs / 3600) as u32,
            day,
            month,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

impl CronSchedule {
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
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
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "schedule {expr:?} has {} fields, not 5; {CRON_RULE}",
                parts.len()
            ));
        }
        let mut fields = [0u64; 5];
        for (i, (field, (name, min, max))) in parts.iter().zip(FIELDS).enumerate() {
            fields[i] = field_set(field, name, min, max)
                .map_err(|why| format!("schedule {expr:?}: {name} field {field:?}: {why}; {CRON_RULE}"))?;
        }
        // Day of week 7 is Sunday too.
        if fields[4] & (1 << 7) != 0 {
            fields[4] |= 1;
        }
        Ok(CronSchedule {
            fields,
            dom_star: parts[2] == "*",
            dow_star: parts[4] == "*",
        })
    }

    pub fn matches(&self, t: CivilMinute) -> bool {
        let has = |i: usize, v: u32| self.fields[i] & (1u64 << v) != 0;
        let dom = has(2, t.day);
        let dow = has(4, t.weekday);
        let day = if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        };
        has(0, t.minute) && has(1, t.hour) && has(3, t.month) && day
    }

    /// The first minute after `unix_secs` (exclusive) that matches, within a
    /// year; None if the schedule never fires (e.g. 30 February).
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let mut t = unix_secs.div_euclid(60) * 60 + 60;
        for _ in 0..(366 * 24 * 60) {
            if self.matches(CivilMinute::from_unix(t)) {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

fn field_set(field: &str, name: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut set = 0u64;
    for part in field.split(',') {
        if part.is_empty() {
            return Err("empty list item".to_owned());
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let step = match step {
            Some(step) => {
                let n: u32 = step
                    .parse()
                    .map_err(|_| format!("step {step:?} is not a number"))?;
                if n == 0 || n > max {
                    return Err(format!("step {n} is out of range 1-{max}"));
                }
                if range != "*" && !range.contains('-') {
                    return Err(format!("a step needs `*` or a range before '/', found {range:?}"));
                }
                n
            }
            None => 1,
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else {
            match range.split_once('-') {
                Some((a, b)) => (value(a, name, min, max)?, value(b, name, min, max)?),
                None => {
                    let v = value(range, name, min, max)?;
                    (v, v)
                }
            }
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1u64 << v;
            v += step;
        }
    }
    Ok(set)
}

fn value(text: &str, name: &str, min: u32, max: u32) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let named = match name {
        "month" => MONTHS.iter().position(|m| *m == lower).map(|i| i as u32 + 1),
        "day of week" => DAYS.iter().position(|d| *d == lower).map(|i| i as u32),
        _ => None,
    };
    if let Some(v) = named {
        return Ok(v);
    }
    let v: u32 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if v < min || v > max {
        return Err(format!("{v} is out of range {min}-{max}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            check_cron(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_what_cron_cannot_mean() {
        for (bad, needle) in [
            ("* * * *", "4 fields"),
            ("* * * * * *", "6 fields"),
            ("60 * * * *", "60 is out of range 0-59"),
            ("* 24 * * *", "out of range 0-23"),
            ("* * 0 * *", "out of range 1-31"),
            ("* * * 13 *", "out of range 1-12"),
            ("* * * * 8", "out of range 0-7"),
            ("*/0 * * * *", "step 0"),
            ("5/2 * * * *", "needs `*` or a range"),
            ("10-5 * * * *", "backwards"),
            ("a * * * *", "not a number"),
            ("1,,2 * * * *", "empty list item"),
            ("@sometimes", "nickname"),
            ("", "0 fields"),
        ] {
            let err = check_cron(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn civil_minutes_and_matching() {
        // 2026-11-21 23:14 UTC is a Saturday.
        let t = CivilMinute::from_unix(1_795_302_840);
        assert_eq!((t.month, t.day, t.hour, t.minute, t.weekday), (11, 21, 23, 14, 6));
        let every_15 = CronSchedule::parse("*/15 * * * *").unwrap();
        assert!(!every_15.matches(t));
        assert!(every_15.matches(CivilMinute { minute: 45, ..t }));
        assert_eq!(
            every_15.next_after(1_795_302_840),
            Some(1_795_302_840 - 14 * 60 + 15 * 60)
        );
        let weekend = CronSchedule::parse("0 9 * * sat,sun").unwrap();
        assert!(weekend.matches(CivilMinute {
            minute: 0,
            hour: 9,
            ..t
        }));
        assert!(!weekend.matches(CivilMinute {
            minute: 0,
            hour: 9,
            weekday: 1,
            ..t
        }));
        // Both day fields restricted: either matches (classic cron).
        let either = CronSchedule::parse("0 0 1 * 6").unwrap();
        assert!(either.matches(CivilMinute {
            minute: 0,
            hour: 0,
            ..t
        }));
        assert!(CronSchedule::parse("0 0 30 2 *").unwrap().next_after(0).is_none());
        assert!(CronSchedule::parse("0 0 * * 7").unwrap().matches(CivilMinute {
            minute: 0,
            hour: 0,
            weekday: 0,
            ..t
        }));
    }
}
