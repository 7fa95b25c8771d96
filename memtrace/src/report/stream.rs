//! The JSON report written as it is built, one process at a time.
//!
//! [`build_with`](crate::report::build_with) makes the whole [`Report`](crate::report::Report)
//! and [`json::render`](crate::report::json::render) one string of it: for a session of many
//! processes both are far larger than the model (for 100k short-lived processes, 0.6 GB of
//! report and 0.9 GB of text next to a 75 MB model). [`write_json`] writes the same bytes while
//! holding one process's report at a time, without its lists of regions (written from the
//! model, [`crate::report::process_json`]), plus the findings and the ranking's first rows,
//! which come last.

use std::cell::RefCell;
use std::io::{self, Write};

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

use crate::model::Model;
use crate::report::cgroups::CgroupTotals;
use crate::report::folded::FoldedPrograms;
use crate::report::process_json::ProcessJson;
use crate::report::ranking::{Ranking, RankingBuilder, SessionSummary};
use crate::report::schema::{BackendInfo, Finding, LostCounts, Source, REPORT_VERSION};
use crate::report::summary::Listed;
use crate::report::{findings, processes, FrameNamer, ReportOptions, SessionInfo};

/// Writes what `json::render(&build_with(model, exited, session, namer))` would, with
/// [`Report::filter_pids`](crate::report::Report::filter_pids) applied for a non-empty `pids`
/// and [`Report::rank`](crate::report::Report::rank) for `rows`.
pub fn write_json(
    model: &Model,
    exited: &FoldedPrograms,
    session: &SessionInfo,
    namer: &mut dyn FrameNamer,
    pids: &[u32],
    rows: usize,
    out: &mut dyn Write,
) -> io::Result<()> {
    let options = exited.options();
    let lost = super::lost_counts(model, session);
    let findings = RefCell::new(Vec::new());
    let cgroups = RefCell::new(CgroupTotals::default());
    let span_ns = model
        .last_event_ns()
        .saturating_sub(model.first_event_ns().unwrap_or(0));
    let ranked = RefCell::new(Ranked::Building(RankingBuilder::new(rows, span_ns)));
    let namer = RefCell::new(namer);
    let report = Streamed {
        version: REPORT_VERSION,
        source: session.source,
        events: session.events,
        lost_events: lost.ring_full + lost.pending_full,
        lost,
        backend: session.backend.as_ref(),
        start_ns: model.first_event_ns(),
        processes: Processes {
            model,
            options,
            pids,
            namer: &namer,
            findings: &findings,
            cgroups: &cgroups,
            ranked: &ranked,
        },
        exited: Exited {
            exited: if pids.is_empty() { Some(exited) } else { None },
            namer: &namer,
            cgroups: &cgroups,
            ranked: &ranked,
        },
        cgroups: Cgroups(&cgroups),
        findings: Findings {
            findings: &findings,
            exited,
        },
        summary: SummaryOf(&ranked),
        ranking: RankingOf(&ranked),
    };
    let mut out = io::BufWriter::new(out);
    let mut serializer = serde_json::Serializer::pretty(&mut out);
    report.serialize(&mut serializer).map_err(io::Error::from)?;
    out.flush()
}

/// [`Report`](crate::report::Report)'s fields, in its order, with the processes and findings
/// made as they are written (a test holds the two to the same bytes). The cgroups sum the
/// processes up, so they come after them.
#[derive(Serialize)]
struct Streamed<'a, 'n> {
    version: u32,
    source: Source,
    events: u64,
    lost_events: u64,
    lost: LostCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'a BackendInfo>,
    start_ns: Option<u64>,
    processes: Processes<'a, 'n>,
    exited: Exited<'a, 'n>,
    cgroups: Cgroups<'a>,
    findings: Findings<'a>,
    summary: SummaryOf<'a>,
    ranking: RankingOf<'a>,
}

/// The summary and ranking, summed as the processes and folded programs go by, then done.
enum Ranked {
    Building(RankingBuilder),
    Done(SessionSummary, Ranking),
    /// Only while finishing.
    Taken,
}

impl Ranked {
    fn builder(&mut self) -> Option<&mut RankingBuilder> {
        match self {
            Self::Building(builder) => Some(builder),
            _ => None,
        }
    }

    fn finish(&mut self) {
        *self = match std::mem::replace(self, Self::Taken) {
            Self::Building(builder) => {
                let (summary, ranking) = builder.finish();
                Self::Done(summary, ranking)
            }
            done => done,
        };
    }
}

struct SummaryOf<'a>(&'a RefCell<Ranked>);

impl Serialize for SummaryOf<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut ranked = self.0.borrow_mut();
        ranked.finish();
        match &*ranked {
            Ranked::Done(summary, _) => summary.serialize(serializer),
            _ => SessionSummary::default().serialize(serializer),
        }
    }
}

struct RankingOf<'a>(&'a RefCell<Ranked>);

impl Serialize for RankingOf<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut ranked = self.0.borrow_mut();
        ranked.finish();
        match &*ranked {
            Ranked::Done(_, ranking) => ranking.serialize(serializer),
            _ => Ranking::default().serialize(serializer),
        }
    }
}

/// Each traced process's report, built, written and dropped in turn; its findings are kept
/// for the end. Serialization takes `&self`, hence the cells.
struct Processes<'a, 'n> {
    model: &'a Model,
    options: &'a ReportOptions,
    pids: &'a [u32],
    namer: &'a RefCell<&'n mut dyn FrameNamer>,
    findings: &'a RefCell<Vec<Finding>>,
    /// The processes' cgroups, summed as they go by, written after them.
    cgroups: &'a RefCell<CgroupTotals>,
    ranked: &'a RefCell<Ranked>,
}

impl Serialize for Processes<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let moment = processes::Moment {
            now_ns: self.model.last_event_ns(),
            step_ns: self.model.timeline_step_ns(),
            since_ns: self.options.since_ns,
        };
        let chosen = |pid: u32| self.pids.is_empty() || self.pids.contains(&pid);
        let mut namer = self.namer.borrow_mut();
        let mut sequence = serializer.serialize_seq(None)?;
        for view in self.model.processes() {
            // A child forked by a traced parent without --follow was never traced itself.
            if !view.process().traced() || !chosen(view.process().pid()) {
                continue;
            }
            let listed = Listed::Evidence(self.options);
            let (report, members) = processes::process_parts(&view, &moment, listed, &mut **namer);
            let own = findings::for_process(&report, self.options);
            if let Some(builder) = self.ranked.borrow_mut().builder() {
                builder.add_process(&report, &own);
            }
            self.findings
                .borrow_mut()
                .extend(own.into_iter().filter(|finding| chosen(finding.pid)));
            self.cgroups.borrow_mut().add(&report);
            sequence.serialize_element(&ProcessJson {
                report: &report,
                members: &members,
                view: &view,
            })?;
        }
        sequence.end()
    }
}

/// The folded programs (none when `--pid` chose processes), summed into the cgroups too.
struct Exited<'a, 'n> {
    exited: Option<&'a FoldedPrograms>,
    namer: &'a RefCell<&'n mut dyn FrameNamer>,
    cgroups: &'a RefCell<CgroupTotals>,
    ranked: &'a RefCell<Ranked>,
}

impl Serialize for Exited<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let programs = match self.exited {
            Some(exited) => exited.reports(&mut **self.namer.borrow_mut()),
            None => Vec::new(),
        };
        let mut cgroups = self.cgroups.borrow_mut();
        let mut ranked = self.ranked.borrow_mut();
        for program in &programs {
            cgroups.add_folded(program);
            if let Some(builder) = ranked.builder() {
                builder.add_folded(program);
            }
        }
        programs.serialize(serializer)
    }
}

struct Cgroups<'a>(&'a RefCell<CgroupTotals>);

impl Serialize for Cgroups<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.take().finish().serialize(serializer)
    }
}

/// The findings of the processes written, those of folded programs' examples told how many
/// folded processes had the same.
struct Findings<'a> {
    findings: &'a RefCell<Vec<Finding>>,
    exited: &'a FoldedPrograms,
}

impl Serialize for Findings<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut findings = self.findings.borrow_mut();
        self.exited.annotate(&mut findings);
        findings.serialize(serializer)
    }
}
