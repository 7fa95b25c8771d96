//! Writing user mode's report in every form asked for (`-o`, `--format`, `--html`, `--pprof`,
//! `--folded`), each file written whole or not at all.

use std::{
    io::{self, Write},
    path::Path,
};

use anyhow::Context as _;

use super::args::{Format, OutputArgs};
use crate::{
    output,
    report::{self, text::TextOptions, Report, SessionInfo},
    user_mode::UserMode,
};

/// Every file the report goes to, with the option that named it.
pub fn report_outputs(output: &OutputArgs) -> Vec<(&'static str, &Path)> {
    let report = output.output.as_deref().map(|path| ("-o", path));
    report.into_iter().chain(output.exports()).collect()
}

/// Two outputs naming one file (through `..`, a link or a hard link) are refused before
/// tracing starts: finding out at the end would lose the session.
pub fn refuse_shared_outputs(record: Option<&Path>, output: &OutputArgs) -> anyhow::Result<()> {
    let recording = record.map(|path| ("--record", path));
    let outputs: Vec<_> = recording
        .into_iter()
        .chain(report_outputs(output))
        .collect();
    Ok(output::refuse_same_file(&outputs)?)
}

/// User mode's report, in every form asked for (`pids`: only those, as `replay --pid`). JSON
/// alone is streamed one process at a time: a session of a million processes is reported
/// without holding its report, or the text of it, in memory (the footprint bench measures
/// both ways).
pub fn write_user_report(
    user_mode: &mut UserMode,
    info: &SessionInfo,
    pids: &[u32],
    output: &OutputArgs,
) -> anyhow::Result<()> {
    let exports = output.pprof.is_some() || output.folded.is_some() || output.html.is_some();
    if output.format == Format::Json && !exports {
        let rows = output.ranked_rows();
        let mut write = |out: &mut dyn Write| user_mode.write_json(info, pids, rows, out);
        return match &output.output {
            Some(path) => Ok(output::write_atomic_with(path, write)?),
            None => {
                let mut stdout = io::BufWriter::new(io::stdout().lock());
                write(&mut stdout)?;
                stdout.flush()?;
                Ok(())
            }
        };
    }
    let mut report = user_mode.report(info);
    if !pids.is_empty() {
        report.filter_pids(pids);
    }
    report.rank(output.ranked_rows());
    write_report(&report, output, !pids.is_empty())
}

/// `chosen`: the processes were chosen by pid, and are all detailed.
fn write_report(report: &Report, output: &OutputArgs, chosen: bool) -> anyhow::Result<()> {
    // The exports first: a report on stdout may end in a closed pipe.
    write_exports(report, output, chosen)?;
    let rendered = match output.format {
        Format::Json => report::json::render(report),
        Format::Text => report::text::render(
            report,
            &TextOptions {
                show_layout: output.show_layout,
                all: output.all || chosen,
            },
        ),
    };
    write_rendered(&rendered, output)
}

pub fn write_rendered(rendered: &str, output: &OutputArgs) -> anyhow::Result<()> {
    match &output.output {
        Some(path) => Ok(output::write_atomic(path, rendered.as_bytes())?),
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(rendered.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// The files other tools read: each written whole, or not at all, with one line on error.
fn write_exports(report: &Report, output: &OutputArgs, chosen: bool) -> anyhow::Result<()> {
    if let Some(path) = &output.pprof {
        let profile = report::export::pprof::render(report).context("compressing the profile")?;
        output::write_atomic(path, &profile)
            .with_context(|| format!("writing the pprof profile to {}", path.display()))?;
    }
    if let Some(path) = &output.folded {
        let folded = report::export::collapsed::render(report);
        output::write_atomic(path, folded.as_bytes())
            .with_context(|| format!("writing the collapsed stacks to {}", path.display()))?;
    }
    if let Some(path) = &output.html {
        let options = report::export::html::HtmlOptions {
            all: output.all || chosen,
        };
        let page = report::export::html::render_with(report, &options);
        output::write_atomic(path, page.as_bytes())
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    Ok(())
}
