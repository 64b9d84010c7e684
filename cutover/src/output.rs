//! Human tables and JSON. Tables are plain text with aligned columns; JSON is
//! the server's answer, pretty-printed, so scripts get the full data.

use serde::Serialize;

use crate::cli::Output;

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows under a header with columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A version for a table: 12 hex digits, `latest`, or `-`.
pub fn short(v: Option<&str>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.len() == 40 => v[..12].to_owned(),
        Some(v) => v.to_owned(),
    }
}

/// Unix milliseconds as RFC 3339 UTC, to the second.
pub fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn emit<T: Serialize>(format: Output, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    match format {
        Output::Json => json(value),
        Output::Table => {
            human(value);
            Ok(())
        }
    }
}

/// A stage as people read it ("Prepare versions information"), from its JSON name.
pub fn stage_title(v: &serde_json::Value) -> String {
    serde_json::from_value::<cutover_core::Stage>(v.clone())
        .map(|s| s.title().to_owned())
        .unwrap_or_else(|_| v.as_str().unwrap_or("").to_owned())
}
