//! `flamegraph.svg`, drawn by inferno from the folded stacks.

use std::io::Write;

use anyhow::{Context, Result};

use super::Kind;

/// Draws the folded lines as an interactive SVG flame graph.
pub fn write(lines: &[(String, u64)], kind: Kind, out: &mut dyn Write) -> Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    (options.title, options.count_name) = match kind {
        Kind::Cpu => ("oxeye CPU profile".to_owned(), "samples".to_owned()),
        Kind::OffCpu => ("oxeye off-CPU profile".to_owned(), "ns".to_owned()),
    };
    let folded: Vec<String> = lines.iter().map(|(stack, count)| format!("{stack} {count}")).collect();
    if folded.is_empty() {
        // inferno refuses empty input; an empty profile still gets a valid (empty) picture.
        write!(out, r#"<?xml version="1.0" standalone="no"?><svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="1200" height="60"><text x="10" y="30">oxeye: no samples</text></svg>"#)?;
        return Ok(());
    }
    inferno::flamegraph::from_lines(&mut options, folded.iter().map(String::as_str), out).context("inferno could not draw the flame graph")
}
