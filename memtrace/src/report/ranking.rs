//! The session on one screen: its totals ([`SessionSummary`]) and one ranked row per process
//! and per folded program ([`Ranking`]), as `!address -summary`, smem and top show a system:
//! where to look first. Rows are ranked by what a leak hunter looks at first: steady growth
//! (the `growing` finding's rate), then the memory allocated and still held, then the change
//! over the session. The first rows are kept, the rest summed in one line.
//!
//! Both are functions of the report ([`of`]) or of its parts as they go by
//! ([`RankingBuilder`]: the streamed JSON holds one process's report at a time), so whatever
//! else ranks processes (the agent) ranks them the same way.

use std::cmp::Ordering;

use serde::Serialize;

use crate::report::cgroups::cgroup_of;
use crate::report::findings::mapped_bytes;
use crate::report::schema::{
    Evidence, ExitedProgramReport, Finding, FindingKind, ProcessReport, UnreleasedGroup,
};

/// Rows listed by default (`--top`); the rest are summed in one line.
pub const DEFAULT_ROWS: usize = 20;

/// A rate needs at least this much time to mean anything: a process that lived 10 ms and
/// mapped 1 MiB did not grow at 100 MiB/s.
const MIN_RATE_SPAN_NS: u64 = 1_000_000_000;

/// The session's totals: what the live processes map and hold now, what the exited ones left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// From the first event to the last (or to `replay --until`).
    pub span_ns: u64,
    pub live: LiveTotals,
    pub exited: ExitedTotals,
    /// Findings per kind, most frequent first (then in [`FindingKind::ALL`] order).
    pub findings: Vec<FindingCount>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LiveTotals {
    pub processes: u64,
    pub mapped_bytes: u64,
    pub held_bytes: u64,
    /// What their allocated memory changed by over the session.
    pub change_bytes: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitedTotals {
    /// Exited processes listed in full.
    pub processes: u64,
    /// Exited processes folded by program, and the programs.
    pub folded_processes: u64,
    pub folded_programs: u64,
    /// What they all still held at their exits.
    pub held_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FindingCount {
    pub kind: FindingKind,
    pub count: u64,
}

/// The ranked rows and the rest summed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ranking {
    /// Rows there are in all (processes and folded programs).
    pub total_rows: u64,
    /// The first rows, ranked.
    pub rows: Vec<RankedRow>,
    /// The rows past them, summed.
    pub rest: RankedRest,
    /// How many rows were asked for.
    #[serde(skip)]
    pub(crate) limit: usize,
}

/// One process, or one program's folded processes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedRow {
    /// The process; `null` for a folded program.
    pub pid: Option<u32>,
    /// 1 for a process; for a folded program, its processes.
    pub processes: u64,
    pub comm: String,
    pub exe: String,
    /// "" when unknown.
    pub cgroup: String,
    pub alive: bool,
    /// Mapped now or at exit (a folded program: at its processes' exits, summed).
    pub mapped_bytes: u64,
    /// Allocated and still mapped, now or at exit: what its own syscalls created and what it
    /// held since attach, without the files and thread stacks it loaded or inaccessible
    /// reservations (`---p`).
    pub held_bytes: u64,
    /// What its allocated memory (every kind but files, stacks, the vdso) changed by from
    /// its first sample to its last; 0 for a folded program.
    pub change_bytes: i64,
    /// The change per second, over at least a second.
    pub bytes_per_s: Option<i64>,
    /// The rate of its fastest steadily growing group (its `growing` finding); 0 when none.
    pub growing_bytes_per_s: u64,
    /// Its mappings as the kernel counts them; `null` for a folded program.
    pub map_count: Option<u64>,
    /// The kinds of its findings (for a folded program: of its processes').
    pub findings: Vec<FindingKind>,
}

/// Rows past the listed ones, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RankedRest {
    pub rows: u64,
    pub processes: u64,
    pub mapped_bytes: u64,
    pub held_bytes: u64,
    pub change_bytes: i64,
    pub findings: u64,
}

impl RankedRest {
    fn add(&mut self, row: &RankedRow) {
        self.rows += 1;
        self.processes += row.processes;
        self.mapped_bytes += row.mapped_bytes;
        self.held_bytes += row.held_bytes;
        self.change_bytes += row.change_bytes;
        self.findings += row.findings.len() as u64;
    }
}

/// What a process holds: allocated and still mapped, neither loaded nor an inaccessible
/// reservation.
pub fn held_bytes(process: &ProcessReport) -> u64 {
    let held = |group: &&UnreleasedGroup| !group.is_loaded() && !group.perms.starts_with("---");
    process
        .unreleased
        .groups
        .iter()
        .chain(&process.held_since_attach)
        .filter(held)
        .map(|group| group.bytes)
        .sum()
}

/// A process's change of allocated memory over its timeline, and the span it covers.
pub fn change(process: &ProcessReport) -> (i64, u64) {
    let timeline = &process.timeline;
    let (Some(&first), Some(&last)) = (timeline.allocated.first(), timeline.allocated.last())
    else {
        return (0, 0);
    };
    let span = match (timeline.times_ns.first(), timeline.times_ns.last()) {
        (Some(&start), Some(&end)) => end.saturating_sub(start),
        _ => 0,
    };
    (last as i64 - first as i64, span)
}

/// The row of a process, with its findings (of it alone).
pub fn process_row(process: &ProcessReport, findings: &[Finding]) -> RankedRow {
    let (change_bytes, span) = change(process);
    let mut kinds: Vec<FindingKind> = findings
        .iter()
        .filter(|finding| finding.pid == process.pid)
        .map(|finding| finding.kind)
        .collect();
    kinds.dedup();
    let growing_bytes_per_s = findings
        .iter()
        .filter(|finding| finding.pid == process.pid)
        .filter_map(|finding| match finding.evidence {
            Evidence::Growing { bytes_per_s, .. } => Some(bytes_per_s),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    RankedRow {
        pid: Some(process.pid),
        processes: 1,
        comm: process.comm.clone(),
        exe: process.exe.clone(),
        cgroup: cgroup_of(process).to_owned(),
        alive: process.alive,
        mapped_bytes: mapped_bytes(process),
        held_bytes: held_bytes(process),
        change_bytes,
        bytes_per_s: (span >= MIN_RATE_SPAN_NS)
            .then(|| (change_bytes as f64 / (span as f64 / 1e9)).round() as i64),
        growing_bytes_per_s,
        map_count: Some(process.map_count),
        findings: kinds,
    }
}

/// The row of a program's folded processes.
pub fn folded_row(program: &ExitedProgramReport) -> RankedRow {
    let held = |group: &&UnreleasedGroup| !group.is_loaded() && !group.perms.starts_with("---");
    RankedRow {
        pid: None,
        processes: program.processes,
        comm: program.comm.clone(),
        exe: program.exe.clone(),
        cgroup: program.cgroup.clone(),
        alive: false,
        mapped_bytes: program.bytes,
        held_bytes: program
            .unreleased
            .groups
            .iter()
            .filter(held)
            .map(|group| group.bytes)
            .sum(),
        change_bytes: 0,
        bytes_per_s: None,
        growing_bytes_per_s: 0,
        map_count: None,
        findings: program.findings.iter().map(|tally| tally.kind).collect(),
    }
}

/// The ranking's order: steady growth first, then held memory (a folded program by its
/// average process: a thousand exits holding a little each are no bigger a problem than one),
/// then the change over the session; ties by pid, folded programs after processes.
pub fn order(a: &RankedRow, b: &RankedRow) -> Ordering {
    let held = |row: &RankedRow| row.held_bytes / row.processes.max(1);
    b.growing_bytes_per_s
        .cmp(&a.growing_bytes_per_s)
        .then_with(|| held(b).cmp(&held(a)))
        .then_with(|| b.change_bytes.cmp(&a.change_bytes))
        .then_with(|| (a.pid.is_none(), a.pid).cmp(&(b.pid.is_none(), b.pid)))
        .then_with(|| a.exe.cmp(&b.exe))
}

/// Sums and ranks rows as they go by, keeping only the first `limit` (a session of a million
/// processes is ranked without a million rows): whenever twice as many are held, the ones
/// past `limit` are summed into the rest.
#[derive(Debug)]
pub struct RankingBuilder {
    limit: usize,
    rows: Vec<RankedRow>,
    rest: RankedRest,
    total_rows: u64,
    summary: SessionSummary,
    findings: Vec<FindingCount>,
}

impl RankingBuilder {
    pub fn new(limit: usize, span_ns: u64) -> Self {
        Self {
            limit,
            rows: Vec::new(),
            rest: RankedRest::default(),
            total_rows: 0,
            summary: SessionSummary {
                span_ns,
                ..SessionSummary::default()
            },
            findings: FindingKind::ALL
                .iter()
                .map(|&kind| FindingCount { kind, count: 0 })
                .collect(),
        }
    }

    /// A listed process and its findings.
    pub fn add_process(&mut self, process: &ProcessReport, findings: &[Finding]) {
        let row = process_row(process, findings);
        for finding in findings.iter().filter(|f| f.pid == process.pid) {
            self.count_finding(finding.kind, 1);
        }
        if row.alive {
            let live = &mut self.summary.live;
            live.processes += 1;
            live.mapped_bytes += row.mapped_bytes;
            live.held_bytes += row.held_bytes;
            live.change_bytes += row.change_bytes;
        } else {
            self.summary.exited.processes += 1;
            self.summary.exited.held_bytes += row.held_bytes;
        }
        self.push(row);
    }

    /// A program's folded processes (their findings' examples are listed processes, counted
    /// there).
    pub fn add_folded(&mut self, program: &ExitedProgramReport) {
        let row = folded_row(program);
        let exited = &mut self.summary.exited;
        exited.folded_processes += program.processes;
        exited.folded_programs += 1;
        exited.held_bytes += row.held_bytes;
        for tally in &program.findings {
            // The example is listed and counted with its process.
            self.count_finding(tally.kind, tally.processes.saturating_sub(1));
        }
        self.push(row);
    }

    fn count_finding(&mut self, kind: FindingKind, count: u64) {
        if let Some(entry) = self.findings.iter_mut().find(|entry| entry.kind == kind) {
            entry.count += count;
        }
    }

    fn push(&mut self, row: RankedRow) {
        self.total_rows += 1;
        self.rows.push(row);
        if self.rows.len() >= self.limit.saturating_mul(2).max(64) {
            self.cut();
        }
    }

    fn cut(&mut self) {
        self.rows.sort_by(order);
        if self.rows.len() > self.limit {
            for row in self.rows.drain(self.limit..) {
                self.rest.add(&row);
            }
        }
    }

    pub fn finish(mut self) -> (SessionSummary, Ranking) {
        self.cut();
        let mut findings: Vec<FindingCount> = self
            .findings
            .into_iter()
            .filter(|entry| entry.count > 0)
            .collect();
        // Stable: kinds with equal counts stay in their listed order.
        findings.sort_by_key(|entry| std::cmp::Reverse(entry.count));
        self.summary.findings = findings;
        (
            self.summary,
            Ranking {
                total_rows: self.total_rows,
                rows: self.rows,
                rest: self.rest,
                limit: self.limit,
            },
        )
    }
}

/// The summary and ranking of listed processes and folded programs, `limit` rows kept.
pub fn of(
    processes: &[ProcessReport],
    exited: &[ExitedProgramReport],
    findings: &[Finding],
    span_ns: u64,
    limit: usize,
) -> (SessionSummary, Ranking) {
    let mut by_pid: std::collections::HashMap<u32, Vec<Finding>> = Default::default();
    for finding in findings {
        by_pid.entry(finding.pid).or_default().push(finding.clone());
    }
    let mut builder = RankingBuilder::new(limit, span_ns);
    for process in processes {
        let own = by_pid.get(&process.pid).map_or(&[][..], Vec::as_slice);
        builder.add_process(process, own);
    }
    for program in exited {
        builder.add_folded(program);
    }
    builder.finish()
}
