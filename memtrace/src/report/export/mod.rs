//! The report in the formats other tools read (pprof's profile.proto, collapsed stacks for
//! flame-graph tools) and as a page people look at (one self-contained HTML file).
//!
//! All three start from the same [`Report`](crate::report::Report) the text and JSON come
//! from, and the two stack formats from the same [`held::profile_stacks`], so their totals
//! agree with `unreleased` in the JSON report.

pub mod collapsed;
mod held;
pub mod html;
pub mod pprof;
