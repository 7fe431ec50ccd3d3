//! Printing results: aligned tables for people, JSON for scripts.

use crate::cli::Output;
use serde::Serialize;

/// Prints `value` as JSON, or as `rows` under `headers` for people.
pub fn table<T: Serialize>(
    output: Output,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    if output == Output::Json {
        return json(value);
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
    Ok(())
}

/// Prints `value` as JSON, or `text` for people.
pub fn message<T: Serialize>(output: Output, value: &T, text: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => json(value),
        Output::Text => {
            println!("{text}");
            Ok(())
        }
    }
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
