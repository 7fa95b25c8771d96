//! Writing a report in every form asked for (`-o`, `--format`, `--html`, `--pprof`,
//! `--folded`), each file written whole or not at all, and every one written whatever
//! happens to the others.
//!
//! Every output is checked once, before the session starts ([`Outputs::check`]): its directory
//! is opened then and written through that descriptor at the end (see [`crate::output`]), so
//! nothing swapped in the meantime can redirect it.

use std::{
    io::{self, Write},
    path::Path,
};

use anyhow::Context as _;

use super::args::{Format, OutputArgs};
use crate::{
    output::{self, Output},
    report::{self, text::TextOptions, Detail, Report, SessionInfo},
    user_mode::UserMode,
};

/// The outputs of one run, checked: the recording and every form of the report.
#[derive(Debug, Default)]
pub struct Outputs {
    /// `--record`.
    pub record: Option<Output>,
    /// `-o`; the report goes to stdout without it.
    report: Option<Output>,
    pprof: Option<Output>,
    folded: Option<Output>,
    html: Option<Output>,
}

impl Outputs {
    /// Checks every output (what each refuses is in [`crate::output`]) and refuses two that
    /// name one file (through `..`, a link or a hard link), before tracing starts: finding
    /// out at the end would lose the session.
    pub fn check(record: Option<&Path>, args: &OutputArgs) -> anyhow::Result<Self> {
        let check = |path: Option<&Path>| path.map(output::check).transpose();
        let outputs = Self {
            record: check(record)?,
            report: check(args.output.as_deref())?,
            pprof: check(args.pprof.as_deref())?,
            folded: check(args.folded.as_deref())?,
            html: check(args.html.as_deref())?,
        };
        output::refuse_same_file(&outputs.named())?;
        Ok(outputs)
    }

    /// Every output with the option that named it.
    pub fn named(&self) -> Vec<(&'static str, &Output)> {
        [
            ("--record", &self.record),
            ("-o", &self.report),
            ("--pprof", &self.pprof),
            ("--folded", &self.folded),
            ("--html", &self.html),
        ]
        .into_iter()
        .filter_map(|(option, output)| Some((option, output.as_ref()?)))
        .collect()
    }

    /// The report's outputs (the recording left out).
    pub fn reports(&self) -> Vec<(&'static str, &Output)> {
        let mut named = self.named();
        named.retain(|(option, _)| *option != "--record");
        named
    }

    fn exports(&self) -> bool {
        self.pprof.is_some() || self.folded.is_some() || self.html.is_some()
    }
}

/// What became of each output: written, or why not.
#[derive(Default)]
struct Written {
    done: Vec<String>,
    failed: Vec<(String, anyhow::Error)>,
}

impl Written {
    fn record(&mut self, option: &str, output: Option<&Output>, result: anyhow::Result<()>) {
        let name = match output {
            Some(output) => format!("{option} {}", output.path().display()),
            None => "the report on stdout".to_owned(),
        };
        match result {
            Ok(()) => self.done.push(name),
            Err(error) => self.failed.push((name, error)),
        }
    }

    /// One error naming each output that failed and why, and each that was written; or, when
    /// only stdout failed, its own error (a closed pipe is not memtrace's failure).
    fn finish(mut self) -> anyhow::Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        if self.failed.len() == 1 && self.failed[0].0 == "the report on stdout" {
            return Err(self.failed.remove(0).1);
        }
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(name, error)| format!("{name} not written ({})", super::chain_line(error)))
            .collect();
        let mut line = failed.join("; ");
        if !self.done.is_empty() {
            line.push_str(&format!("; written: {}", self.done.join(", ")));
        }
        Err(anyhow::anyhow!(line))
    }
}

/// User mode's report, in every form asked for (`pids`: only those, as `replay --pid`). JSON
/// alone is streamed one process at a time: a session of a million processes is reported
/// without holding its report, or the text of it, in memory (the footprint bench measures
/// both ways).
pub fn write_user_report(
    user_mode: &mut UserMode,
    info: &SessionInfo,
    pids: &[u32],
    args: &OutputArgs,
    outputs: &Outputs,
) -> anyhow::Result<()> {
    if args.format == Format::Json && !outputs.exports() {
        let rows = args.ranked_rows();
        let mut write = |out: &mut dyn Write| user_mode.write_json(info, pids, rows, out);
        return match &outputs.report {
            Some(output) => Ok(output.write_atomic_with(write)?),
            None => {
                let mut stdout = io::BufWriter::new(io::stdout().lock());
                write(&mut stdout)?;
                stdout.flush()?;
                Ok(())
            }
        };
    }
    // The text report alone lists no regions but those the findings read (unless `--show-layout`
    // asks for the layout): the whole lists would be a second copy of the model's.
    let detail = if args.format == Format::Text && !args.show_layout && !outputs.exports() {
        Detail::Evidence
    } else {
        Detail::Whole
    };
    let mut report = user_mode.report(info, detail);
    if !pids.is_empty() {
        report.filter_pids(pids);
    }
    report.rank(args.ranked_rows());
    write_report(&report, args, outputs, !pids.is_empty())
}

/// `chosen`: the processes were chosen by pid, and are all detailed.
fn write_report(
    report: &Report,
    args: &OutputArgs,
    outputs: &Outputs,
    chosen: bool,
) -> anyhow::Result<()> {
    let mut written = Written::default();
    let all = args.all || chosen;
    // The exports first: a report on stdout may end in a closed pipe.
    write_exports(report, outputs, all, &mut written);
    let rendered = match args.format {
        Format::Json => report::json::render(report),
        Format::Text => report::text::render(
            report,
            &TextOptions {
                show_layout: args.show_layout,
                all,
            },
        ),
    };
    written.record(
        "-o",
        outputs.report.as_ref(),
        write_to(outputs.report.as_ref(), &rendered),
    );
    written.finish()
}

/// A report already rendered (kernel mode's), to `-o` or stdout.
pub fn write_rendered(rendered: &str, outputs: &Outputs) -> anyhow::Result<()> {
    let mut written = Written::default();
    written.record(
        "-o",
        outputs.report.as_ref(),
        write_to(outputs.report.as_ref(), rendered),
    );
    written.finish()
}

fn write_to(output: Option<&Output>, rendered: &str) -> anyhow::Result<()> {
    match output {
        Some(output) => Ok(output.write_atomic(rendered.as_bytes())?),
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(rendered.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// The files other tools read: each written whole, or not at all; one failing does not stop
/// the others.
/// `all`: every process is detailed, not only the ranked ones and those with findings.
fn write_exports(report: &Report, outputs: &Outputs, all: bool, written: &mut Written) {
    if let Some(output) = &outputs.pprof {
        let result = report::export::pprof::render(report)
            .context("compressing the profile")
            .and_then(|profile| Ok(output.write_atomic(&profile)?));
        written.record("--pprof", Some(output), result);
    }
    if let Some(output) = &outputs.folded {
        let folded = report::export::collapsed::render(report);
        let result = output.write_atomic(folded.as_bytes()).map_err(Into::into);
        written.record("--folded", Some(output), result);
    }
    if let Some(output) = &outputs.html {
        let page =
            report::export::html::render_with(report, &report::export::html::HtmlOptions { all });
        let result = output.write_atomic(page.as_bytes()).map_err(Into::into);
        written.record("--html", Some(output), result);
    }
}
