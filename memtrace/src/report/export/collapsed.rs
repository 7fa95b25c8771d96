//! Collapsed stacks (`process;outer;…;inner bytes`), the input of flame-graph tools
//! (Brendan Gregg's flamegraph.pl, inferno, speedscope): the unreleased bytes of each call
//! stack, root first. Per process, the lines add up to the JSON report's
//! `unreleased.total_bytes`.

use std::fmt::Write as _;

use crate::report::export::held::{self, ProfileStack, NO_STACK};
use crate::report::schema::Report;

/// The whole file: one line per stack holding bytes.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for line in lines(report) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The lines without their newlines (the HTML flame graph draws the same ones).
pub(crate) fn lines(report: &Report) -> Vec<String> {
    held::profile_stacks(report)
        .iter()
        .filter(|stack| stack.inuse_bytes > 0)
        .map(line)
        .collect()
}

fn line(stack: &ProfileStack<'_>) -> String {
    let mut line = frame_text(&stack.owner.label);
    if stack.frames.is_empty() {
        line.push(';');
        line.push_str(NO_STACK);
    }
    for frame in stack.frames.iter().rev() {
        line.push(';');
        line.push_str(&frame_text(&held::label(frame)));
    }
    let _ = write!(line, " {}", stack.inuse_bytes);
    line
}

/// `;` separates frames and a newline ends the line: neither may appear inside one, and no
/// other control character either (a program names its comm, memfds and files): they are
/// escaped as everywhere else ([`crate::escape::terminal`]).
fn frame_text(name: &str) -> String {
    crate::escape::terminal(&name.replace(';', ":")).into_owned()
}
