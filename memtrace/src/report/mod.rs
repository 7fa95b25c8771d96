//! Reports built from the model: the same [`Report`] value renders as JSON
//! ([`json::render`]) and as text a person reads at a glance ([`text::render`]).
//!
//! A report can be built at any point of a session: at its end, or after `replay --until`
//! stopped feeding events. Processes that exited show their layout at exit; the others, as of
//! the last event.

pub mod call_sites;
pub mod cgroups;
pub mod export;
pub mod findings;
pub mod folded;
pub mod format;
pub(crate) mod growth;
pub mod json;
mod process_json;
mod processes;
pub mod ranking;
pub mod schema;
pub mod stream;
mod summary;
pub mod summary_text;
#[cfg(test)]
mod tests;
pub mod text;
pub mod timeline;

pub use call_sites::{FrameName, FrameNamer, NoNames};
pub use schema::*;
pub use text::TextOptions;

use crate::event::Losses;
use crate::model::Model;
use crate::report::folded::FoldedPrograms;
use crate::report::summary::Listed;

/// What the report says about the session itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub source: Source,
    /// Events read from the kernel or the recording.
    pub events: u64,
    /// The loss totals the session knows of; the model's own (from Lost events) are merged in.
    pub lost: Losses,
    /// How the live session hooked the syscalls (`None` for a replay).
    pub backend: Option<BackendInfo>,
}

/// Thresholds of the findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportOptions {
    /// An unreleased anonymous mapping at least this large is a leak candidate.
    pub large_anon_bytes: u64,
    /// After an ABI-crossing exec, a mapping this close above the brk start starves the heap.
    pub near_brk_bytes: u64,
    /// `replay --since`: unreleased memory (and the findings about it) counts only regions
    /// created from this time on (CLOCK_MONOTONIC ns); 0 counts all.
    pub since_ns: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            large_anon_bytes: 1 << 20,
            near_brk_bytes: 8 << 20,
            since_ns: 0,
        }
    }
}

/// How much of each process's region lists a report built whole holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Every region: each process's layout and each group's regions, as the JSON, `--show-layout`
    /// and the exports list them.
    Whole,
    /// Only the regions the findings and the text report's group rows read
    /// ([`findings::reads`]), and no layout: the text report of a process with a million
    /// mappings without a second copy of them (the crafted 1M-mapping replay: 503 to 160 MiB).
    Evidence,
}

/// The report with frames shown as module+offset.
pub fn build(model: &Model, session: &SessionInfo) -> Report {
    build_with(model, &FoldedPrograms::default(), session, &mut NoNames)
}

/// The report with frames named by `namer` (function, file and line where it knows them).
pub fn build_named(model: &Model, session: &SessionInfo, namer: &mut dyn FrameNamer) -> Report {
    build_with(model, &FoldedPrograms::default(), session, namer)
}

/// The report of `model` and of the processes folded out of it into `exited`, with the
/// options they were folded with (`build` and `build_named` are for a model nothing was
/// folded out of, with the default options).
pub fn build_with(
    model: &Model,
    exited: &FoldedPrograms,
    session: &SessionInfo,
    namer: &mut dyn FrameNamer,
) -> Report {
    build_for(model, exited, session, namer, &[], Detail::Whole)
}

/// [`build_with`] for these processes only (all when `pids` is empty), built as
/// [`Report::filter_pids`] would leave it but without building, or naming the frames of, the
/// others: the agent's captures report the process a trigger is about and its family.
pub fn build_for(
    model: &Model,
    exited: &FoldedPrograms,
    session: &SessionInfo,
    namer: &mut dyn FrameNamer,
    pids: &[u32],
    detail: Detail,
) -> Report {
    let options = exited.options();
    let listed = match detail {
        Detail::Whole => Listed::All,
        Detail::Evidence => Listed::Evidence(options),
    };
    let span_ns = model
        .last_event_ns()
        .saturating_sub(model.first_event_ns().unwrap_or(0));
    let processes: Vec<ProcessReport> = model
        .processes()
        // A child forked by a traced parent without --follow was never traced itself.
        .filter(|view| view.process().traced())
        .filter(|view| pids.is_empty() || pids.contains(&view.process().pid()))
        .map(|view| {
            let moment = processes::Moment {
                now_ns: model.last_event_ns(),
                step_ns: model.timeline_step_ns(),
                since_ns: options.since_ns,
            };
            processes::process_report(&view, &moment, listed, namer)
        })
        .collect();
    let mut findings: Vec<Finding> = processes
        .iter()
        .flat_map(|process| findings::for_process(process, options))
        .collect();
    exited.annotate(&mut findings);
    // Chosen processes are reported alone: the folded programs are not among them.
    let exited = if pids.is_empty() {
        exited.reports(namer)
    } else {
        Vec::new()
    };
    let lost = lost_counts(model, session);
    let (summary, ranking) = ranking::of(
        &processes,
        &exited,
        &findings,
        span_ns,
        ranking::DEFAULT_ROWS,
    );
    Report {
        version: REPORT_VERSION,
        source: session.source,
        events: session.events,
        lost_events: lost.ring_full + lost.pending_full,
        lost,
        backend: session.backend.clone(),
        start_ns: model.first_event_ns(),
        cgroups: cgroups::of(&processes, &exited),
        processes,
        exited,
        findings,
        summary,
        ranking,
    }
}

/// One process's findings, as its report would state them (frames unnamed): for the agent's
/// metrics, which say what the reports say.
pub fn findings_of(
    model: &Model,
    view: &crate::model::ProcessView<'_>,
    options: &ReportOptions,
) -> Vec<Finding> {
    let moment = processes::Moment {
        now_ns: model.last_event_ns(),
        step_ns: model.timeline_step_ns(),
        since_ns: options.since_ns,
    };
    let report = processes::process_report(view, &moment, Listed::Evidence(options), &mut NoNames);
    findings::for_process(&report, options)
}

/// The loss totals of the session and of the model's own Lost events.
fn lost_counts(model: &Model, session: &SessionInfo) -> LostCounts {
    let model_lost = model.lost();
    LostCounts {
        ring_full: session.lost.ring_full.max(model_lost.ring_full),
        pending_full: session.lost.pending_full.max(model_lost.pending_full),
        stacks_not_sampled: session
            .lost
            .stacks_not_sampled
            .max(model_lost.stacks_not_sampled),
    }
}

impl Report {
    /// Keeps only these pids' processes and findings (`--pid`); an empty list keeps all. The
    /// folded programs go: a session replayed for some pids never folds them.
    pub fn filter_pids(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        self.processes.retain(|process| pids.contains(&process.pid));
        self.exited.clear();
        self.cgroups = cgroups::of(&self.processes, &self.exited);
        self.findings.retain(|finding| pids.contains(&finding.pid));
        self.rank(self.ranking.limit);
    }

    /// Ranks the processes again, keeping `rows` rows (`--top`; `usize::MAX` for all).
    pub fn rank(&mut self, rows: usize) {
        let (summary, ranking) = ranking::of(
            &self.processes,
            &self.exited,
            &self.findings,
            self.summary.span_ns,
            rows,
        );
        self.summary = summary;
        self.ranking = ranking;
    }
}
