//! How client commands print: aligned tables for people at a terminal, JSON
//! for scripts (`--json`, or whenever stdout is not a terminal).

use serde_json::Value;
use std::io::{IsTerminal, Write};

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON rather than tables.
    pub json: bool,
    /// Stdout is a terminal: progress bars and colours make sense.
    pub terminal: bool,
}

impl Output {
    /// JSON when asked, or when stdout is a pipe or a file.
    pub fn new(json_flag: bool) -> Self {
        let terminal = std::io::stdout().is_terminal();
        Self { json: json_flag || !terminal, terminal }
    }

    /// Prints a JSON value, pretty, followed by a newline.
    pub fn print_json(&self, value: &Value) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }

    /// Prints `value` as JSON in JSON mode, else runs `human`.
    pub fn show(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        if self.json {
            return self.print_json(value);
        }
        let text = human(value);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            writeln!(out)?;
        }
        Ok(())
    }
}

/// A table of aligned columns, rendered as plain text.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column headings.
    headers: Vec<String>,
    /// Cells, one vector per row.
    rows: Vec<Vec<String>>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
}

impl Table {
    /// A table with these headings; columns whose heading starts with `>`
    /// are right-aligned (the `>` is not shown).
    pub fn new(headers: &[&str]) -> Self {
        Self {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>').to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns separated by two spaces.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let pad = " ".repeat(w - width(cell).min(*w));
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A JSON field as a table cell: strings bare, null blank, others as JSON.
pub fn cell(value: &Value, field: &str) -> String {
    text(value.get(field).unwrap_or(&Value::Null))
}

/// A JSON value as a table cell: strings bare, null blank, others as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A job's progress as a short cell: `40%` or `250/1000`.
pub fn progress_cell(progress: &Value) -> String {
    match progress {
        Value::Number(n) => format!("{}%", n.as_f64().unwrap_or(0.0).round()),
        Value::Object(p) => {
            let processed = p.get("processed").and_then(Value::as_u64).unwrap_or(0);
            match p.get("total").and_then(Value::as_u64) {
                Some(total) => format!("{processed}/{total}"),
                None => processed.to_string(),
            }
        }
        _ => String::new(),
    }
}

/// An RFC 3339 time without sub-second digits, for narrow columns.
pub fn short_time(value: &Value) -> String {
    let t = text(value);
    match (t.find('.'), t.ends_with('Z')) {
        (Some(dot), true) => format!("{}Z", &t[..dot]),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", ">COUNT"]);
        t.row(vec!["émails".into(), "7".into()]);
        t.row(vec!["x".into(), "1234".into()]);
        assert_eq!(t.render(), "NAME    COUNT\némails      7\nx        1234\n");
    }

    #[test]
    fn cells_render_values() {
        assert_eq!(progress_cell(&json!(42.4)), "42%");
        assert_eq!(progress_cell(&json!({"total": 10, "processed": 3})), "3/10");
        assert_eq!(cell(&json!({"a": null, "b": "x"}), "a"), "");
        assert_eq!(short_time(&json!("2026-01-01T00:00:00.123Z")), "2026-01-01T00:00:00Z");
    }
}
