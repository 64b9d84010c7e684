//! Human tables and JSON. Tables are plain text with aligned columns; JSON is
//! the server's answer, pretty-printed, so scripts get the full data.

use serde::Serialize;
use unicode_width::UnicodeWidthStr;

use crate::cli::Output;

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows under a header with columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

/// The text of [`table`]: columns padded to the widest cell as a terminal shows it
/// (`unicode-width`: a CJK character or an emoji takes two columns, a combining accent none).
fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.width());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i].saturating_sub(c.width()) + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_in_a_commit_subject_keep_the_columns_lined_up() {
        let rows = vec![
            vec![
                "0123456789ab".to_owned(),
                "修复登录页面".to_owned(),
                "alice".to_owned(),
            ],
            vec![
                "ba9876543210".to_owned(),
                "🚀 ship it".to_owned(),
                "bob".to_owned(),
            ],
            vec![
                "aaaaaaaaaaaa".to_owned(),
                "café crème".to_owned(),
                "carol".to_owned(),
            ],
            vec![
                "bbbbbbbbbbbb".to_owned(),
                "plain ascii subject".to_owned(),
                "dave".to_owned(),
            ],
        ];
        let text = render_table(&["VERSION", "SUBJECT", "AUTHOR"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        // The AUTHOR column starts at the same terminal column on every line.
        let author_col = |line: &str, author: &str| line[..line.find(author).unwrap()].width();
        let want = author_col(lines[0], "AUTHOR");
        for (line, author) in lines[1..].iter().zip(["alice", "bob", "carol", "dave"]) {
            assert_eq!(author_col(line, author), want, "{text}");
        }
        assert_eq!(want, 12 + 2 + "plain ascii subject".len() + 2, "{text}");
    }
}
