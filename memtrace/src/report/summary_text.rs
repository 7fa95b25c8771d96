//! The text report's session summary, read before anything else: the totals, then the ranked
//! table of processes and folded programs (one line each), then which processes the report
//! details. A server's hundreds of near-identical processes are one screen, as smem or top
//! show a system; the detail follows for the processes of the table and those with findings
//! (`--all`: for every process, in full).

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::escape::terminal;
use crate::report::format::{bytes, count, count_of, table};
use crate::report::schema::{ExitedProgramReport, ProcessReport, RankedRow, Report, SyscallTable};
use crate::report::text::TextOptions;

/// With at most this many processes detailed, each gets its full block (tables of syscalls
/// and kinds); more get the brief one, so the report of a server stays a few screens.
const FULL_BLOCKS_UP_TO: usize = 4;
/// A cgroup path is shown by its end (where a service or a container names itself).
const CGROUP_WIDTH: usize = 40;

/// Which processes and folded programs the report details.
pub struct Detailed {
    all: bool,
    pids: HashSet<u32>,
    /// Folded programs of the table, by executable and cgroup.
    programs: HashSet<(String, String, String)>,
    /// Processes detailed.
    pub processes: usize,
}

impl Detailed {
    pub fn new(report: &Report, options: &TextOptions) -> Self {
        let mut pids: HashSet<u32> = report
            .ranking
            .rows
            .iter()
            .filter_map(|row| row.pid)
            .collect();
        pids.extend(report.findings.iter().map(|finding| finding.pid));
        let programs = report
            .ranking
            .rows
            .iter()
            .filter(|row| row.pid.is_none())
            .map(|row| (row.exe.clone(), row.comm.clone(), row.cgroup.clone()))
            .collect();
        let processes = if options.all {
            report.processes.len()
        } else {
            report
                .processes
                .iter()
                .filter(|process| pids.contains(&process.pid))
                .count()
        };
        Self {
            all: options.all,
            pids,
            programs,
            processes,
        }
    }

    pub fn process(&self, process: &ProcessReport) -> bool {
        self.all || self.pids.contains(&process.pid)
    }

    pub fn folded(&self, program: &ExitedProgramReport) -> bool {
        self.all
            || self.programs.contains(&(
                program.exe.clone(),
                program.comm.clone(),
                program.cgroup.clone(),
            ))
    }

    /// Whether process blocks are full (syscall and kind tables) or brief (one line each).
    pub fn full_blocks(&self) -> bool {
        self.all || self.processes <= FULL_BLOCKS_UP_TO
    }
}

/// The totals and the ranked table.
pub fn summary(out: &mut String, report: &Report) {
    let summary = &report.summary;
    let live = &summary.live;
    let exited = &summary.exited;
    out.push('\n');
    let _ = write!(out, "Session: {:.1}s. ", summary.span_ns as f64 / 1e9);
    if live.processes == 0 {
        out.push_str("No process live at the end");
    } else {
        let _ = write!(
            out,
            "Live: {} mapping {}, holding {} ({} over the session)",
            count_of(live.processes, "process", "processes"),
            bytes(live.mapped_bytes),
            bytes(live.held_bytes),
            signed_bytes(live.change_bytes),
        );
    }
    if exited.processes + exited.folded_processes > 0 {
        let _ = write!(
            out,
            ". Exited: {}{}, holding {} at their exits",
            count_of(
                exited.processes + exited.folded_processes,
                "process",
                "processes"
            ),
            match exited.folded_programs {
                0 => String::new(),
                programs => format!(
                    " ({} folded into {})",
                    exited.folded_processes,
                    count(programs, "program")
                ),
            },
            bytes(exited.held_bytes),
        );
    }
    out.push('\n');
    if summary.findings.is_empty() {
        out.push_str("Findings: none\n");
    } else {
        let kinds: Vec<String> = summary
            .findings
            .iter()
            .map(|entry| format!("{} {}", entry.count, entry.kind.as_str()))
            .collect();
        let total: u64 = summary.findings.iter().map(|entry| entry.count).sum();
        let _ = writeln!(
            out,
            "Findings: {} ({}), listed below the table",
            total,
            kinds.join(", ")
        );
    }
    ranked_table(out, report);
}

fn ranked_table(out: &mut String, report: &Report) {
    let ranking = &report.ranking;
    if ranking.total_rows == 0 {
        return;
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Processes by steady growth, then memory held: {} of {}{}",
        ranking.rows.len(),
        ranking.total_rows,
        if ranking.rest.rows > 0 {
            " (--top N for more, --all for every one)"
        } else {
            ""
        },
    );
    let mut rows = vec![[
        "pid", "name", "cgroup", "state", "mapped", "held", "change", "rate", "maps", "findings",
    ]
    .map(str::to_owned)
    .to_vec()];
    rows.extend(ranking.rows.iter().map(|row| table_row(report, row)));
    for line in table(&rows, "  ", &[1, 2, 3, 9]) {
        let _ = writeln!(out, "{line}");
    }
    let rest = &ranking.rest;
    if rest.rows > 0 {
        let _ = writeln!(
            out,
            "  … {} more ({}): held {}, change {}, {}",
            rest.rows,
            count_of(rest.processes, "process", "processes"),
            bytes(rest.held_bytes),
            signed_bytes(rest.change_bytes),
            count(rest.findings, "finding"),
        );
    }
    out.push_str(
        "  held: allocated and still mapped (not files, thread stacks or ---p reservations); change: allocated memory over the session\n",
    );
}

fn table_row(report: &Report, row: &RankedRow) -> Vec<String> {
    let (pid, name, state) = match row.pid {
        Some(pid) => {
            let state = report
                .processes
                .iter()
                .find(|process| process.pid == pid)
                .map_or_else(String::new, state_of);
            (pid.to_string(), terminal(&row.comm).into_owned(), state)
        }
        None => (
            "–".to_owned(),
            format!("{} ×{}", terminal(&row.comm), row.processes),
            "folded".to_owned(),
        ),
    };
    let cgroup = if row.cgroup.is_empty() {
        "?".to_owned()
    } else {
        terminal(&tail(&row.cgroup, CGROUP_WIDTH)).into_owned()
    };
    vec![
        pid,
        name,
        cgroup,
        state,
        bytes(row.mapped_bytes),
        bytes(row.held_bytes),
        signed_bytes(row.change_bytes),
        row.bytes_per_s
            .map_or("–".to_owned(), |rate| format!("{}/s", signed_bytes(rate))),
        row.map_count
            .map_or("–".to_owned(), |maps| maps.to_string()),
        row.findings
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    ]
}

/// The heading of the detail: which processes follow.
pub fn detail_heading(out: &mut String, report: &Report, detailed: &Detailed) {
    if detailed.all || detailed.processes == report.processes.len() {
        return;
    }
    let _ = writeln!(
        out,
        "\nDetail: the {} of the table and with findings ({} more with --all)",
        count_of(detailed.processes as u64, "process", "processes"),
        report.processes.len() - detailed.processes,
    );
}

/// A brief block's last lines: its syscalls and its memory by kind, one line each.
pub fn brief_tables(out: &mut String, process: &ProcessReport) {
    let calls = syscall_counts(&process.syscalls);
    if calls.is_empty() {
        out.push_str("  no memory syscalls traced\n");
    } else {
        let _ = writeln!(out, "  syscalls: {}", calls.join(", "));
    }
    if process.anomalies.count > 0 {
        let _ = writeln!(
            out,
            "  {} refused (results the kernel cannot return; layout untouched)",
            count_of(
                process.anomalies.count,
                "impossible call",
                "impossible calls"
            ),
        );
    }
    if process.summary.is_empty() {
        out.push_str("  nothing mapped\n");
        return;
    }
    let kinds: Vec<String> = process
        .summary
        .iter()
        .map(|kind| format!("{} {} ({:.1}%)", kind.kind, bytes(kind.bytes), kind.percent))
        .collect();
    let _ = writeln!(
        out,
        "  mapped by kind: {}; {} in {}",
        kinds.join(", "),
        bytes(process.summary.iter().map(|kind| kind.bytes).sum()),
        count(
            process.summary.iter().map(|kind| kind.regions).sum(),
            "region"
        ),
    );
}

fn state_of(process: &ProcessReport) -> String {
    match (process.exit_code, process.signal) {
        (_, Some(signal)) => format!("killed {signal}"),
        (Some(code), None) => format!("exited {code}"),
        (None, None) => "running".to_owned(),
    }
}

/// `+1.50 MiB`, `-4 KiB`, `0 B`.
fn signed_bytes(value: i64) -> String {
    match value {
        0 => "0 B".to_owned(),
        v if v > 0 => format!("+{}", bytes(v as u64)),
        v => format!("-{}", bytes(v.unsigned_abs())),
    }
}

/// At most `max` characters, the end kept.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(count - (max - 1)).collect();
    format!("…{kept}")
}

/// The syscalls made, one `name calls (failed)` each, for a one-line summary.
pub fn syscall_counts(syscalls: &SyscallTable) -> Vec<String> {
    syscalls
        .rows()
        .into_iter()
        .filter(|(_, calls)| calls.calls > 0)
        .map(|(name, calls)| match calls.failed {
            0 => format!("{name} {}", calls.calls),
            failed => format!("{name} {} ({failed} failed)", calls.calls),
        })
        .collect()
}
