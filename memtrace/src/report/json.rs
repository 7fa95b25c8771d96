//! The report as pretty-printed JSON: integers for numbers, one entry per process.

use crate::report::Report;

pub fn render(report: &Report) -> String {
    // Only strings, integers, floats, options and vectors: serde_json cannot fail on these.
    serde_json::to_string_pretty(report).unwrap_or_else(|error| {
        serde_json::json!({ "error": format!("report serialization failed: {error}") }).to_string()
    })
}
