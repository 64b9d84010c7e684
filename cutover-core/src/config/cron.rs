//! Validation of 5-field cron expressions (`minute hour day-of-month month
//! day-of-week`), as evaluated later by the scheduler.
//!
//! Accepted per field: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`,
//! and comma-separated lists of those; month and weekday names (`jan`,
//! `mon`) and the nicknames `@hourly`, `@daily`, `@midnight`, `@weekly`,
//! `@monthly`, `@yearly`, `@annually`. Only validation happens here; no crate
//! is needed for that, and evaluation belongs to the engine.

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
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        return if NICKNAMES.contains(&trimmed.to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            Err(format!(
                "unknown schedule nickname {trimmed:?}; use one of {}",
                NICKNAMES.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "schedule {expr:?} has {} fields, not 5; {CRON_RULE}",
            fields.len()
        ));
    }
    for (field, (name, min, max)) in fields.iter().zip(FIELDS) {
        check_field(field, name, min, max)
            .map_err(|why| format!("schedule {expr:?}: {name} field {field:?}: {why}; {CRON_RULE}"))?;
    }
    Ok(())
}

fn check_field(field: &str, name: &str, min: u32, max: u32) -> Result<(), String> {
    for part in field.split(',') {
        if part.is_empty() {
            return Err("empty list item".to_owned());
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(step) = step {
            let n: u32 = step
                .parse()
                .map_err(|_| format!("step {step:?} is not a number"))?;
            if n == 0 || n > max {
                return Err(format!("step {n} is out of range 1-{max}"));
            }
            if range != "*" && !range.contains('-') {
                return Err(format!("a step needs `*` or a range before '/', found {range:?}"));
            }
        }
        if range == "*" {
            continue;
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (value(a, name, min, max)?, value(b, name, min, max)?),
            None => {
                let v = value(range, name, min, max)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
    }
    Ok(())
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
}
