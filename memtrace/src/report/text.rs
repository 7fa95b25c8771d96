//! The report for a person: the findings first, then per process a short block in the spirit
//! of WinDbg's `!address -summary`: who, what it allocated and still holds (what it loaded,
//! its executable, libraries and thread stacks, summed up in one line), what it held at
//! attach, how it grew, the heap's room, then the syscalls and memory by kind.

use std::fmt::Write as _;

use crate::escape::terminal;
use crate::report::call_sites;
use crate::report::cgroups;
use crate::report::format::{bytes, count, count_of, hex, since, table};
use crate::report::schema::{
    CgroupReport, ContainerReport, ExecReport, ExitedProgramReport, ProcessReport, Report,
    Unreleased, UnreleasedGroup,
};
use crate::report::summary_text;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// List every region of every process (the JSON always has them).
    pub show_layout: bool,
    /// Detail every process in full (`--all`), not only those of the session summary's table
    /// and those with findings.
    pub all: bool,
}

/// Unreleased groups listed per process; the rest are summed up in one line.
const LISTED_GROUPS: usize = 10;
/// Failed brk calls listed per process.
const LISTED_BRK_FAILURES: usize = 5;

pub fn render(report: &Report, options: &TextOptions) -> String {
    let mut out = String::new();
    header(&mut out, report);
    // >>> The session summary first (#24, report/summary_text.rs): the totals and the ranked
    // table; then the findings, then the detail of the processes the table or a finding names.
    summary_text::summary(&mut out, report);
    let detailed = summary_text::Detailed::new(report, options);
    // <<<
    // The signal first: what a person should look at, then the evidence per process.
    if !report.findings.is_empty() {
        out.push_str("\nFindings\n");
        for finding in &report.findings {
            let _ = writeln!(
                out,
                "  [{}] {}",
                finding.kind.as_str(),
                terminal(&finding.message)
            );
        }
    }
    summary_text::detail_heading(&mut out, report, &detailed);
    if cgroups::worth_headings(&report.processes, &report.cgroups) {
        // Per cgroup, in the order they first appear: what each container holds, then its
        // processes.
        for group in &report.cgroups {
            let members: Vec<&ProcessReport> = report
                .processes
                .iter()
                .filter(|process| cgroups::cgroup_of(process) == group.cgroup)
                .filter(|process| detailed.process(process))
                .collect();
            if members.is_empty() && !options.all {
                continue;
            }
            out.push('\n');
            cgroup_heading(&mut out, group);
            for process in members {
                out.push('\n');
                process_block(&mut out, report, process, options, &detailed);
            }
        }
    } else {
        for process in report.processes.iter().filter(|p| detailed.process(p)) {
            out.push('\n');
            process_block(&mut out, report, process, options, &detailed);
        }
    }
    let folded: Vec<&ExitedProgramReport> = report
        .exited
        .iter()
        .filter(|program| detailed.folded(program))
        .collect();
    if !folded.is_empty() {
        out.push_str(
            "\nExited processes folded by program (the most recent exits are listed above)\n",
        );
        for program in folded {
            out.push('\n');
            folded_block(&mut out, report, program);
        }
    }
    out
}

/// A program's folded processes: how many, how they ended, what they left mapped and where it
/// was allocated, their syscalls and findings.
fn folded_block(out: &mut String, report: &Report, program: &ExitedProgramReport) {
    let exe = if program.exe.is_empty() {
        "?"
    } else {
        &program.exe
    };
    let pids = if program.first_pid == program.last_pid {
        format!("pid {}", program.first_pid)
    } else {
        format!("pids {}..{}", program.first_pid, program.last_pid)
    };
    let _ = writeln!(
        out,
        "{} ({})  {}: {}, {pids}, {}..{}",
        terminal(&program.comm),
        terminal(if program.cgroup.is_empty() {
            "cgroup unknown"
        } else {
            &program.cgroup
        }),
        terminal(exe),
        count_of(program.processes, "process", "processes"),
        since(report.start_ns, program.first_seen_ns),
        since(report.start_ns, program.last_exit_ns),
    );
    let exits: Vec<String> = program
        .exits
        .iter()
        .map(|exit| {
            let how = match (exit.code, exit.signal) {
                (_, Some(signal)) => format!("killed by signal {signal}"),
                (Some(code), None) => format!("exited {code}"),
                (None, None) => "exit unknown".to_owned(),
            };
            format!("{how} ×{}", exit.processes)
        })
        .collect();
    let _ = writeln!(
        out,
        "  {}; at exit {} mapped in {}",
        exits.join(", "),
        bytes(program.bytes),
        count(program.regions, "region"),
    );
    let allocated: Vec<&UnreleasedGroup> = program.unreleased.groups.iter().collect();
    if allocated.is_empty() {
        out.push_str("  allocated and unreleased at exit: nothing\n");
    } else {
        group_section(
            out,
            report,
            "allocated and unreleased at exit, all processes",
            &allocated,
        );
    }
    call_site_lines(
        out,
        &program.unreleased,
        "allocated and unreleased at exit, by call site",
    );
    if program.loaded_regions > 0 {
        let _ = writeln!(
            out,
            "  loaded (libraries, loader mappings, thread stacks), all processes: {}, {}",
            count(program.loaded_regions, "region"),
            bytes(program.loaded_bytes),
        );
    }
    let calls = summary_text::syscall_counts(&program.syscalls);
    if !calls.is_empty() {
        let _ = writeln!(out, "  syscalls: {}", calls.join(", "));
    }
    for finding in &program.findings {
        let _ = writeln!(
            out,
            "  [{}] in {} (example: pid {}, listed above)",
            finding.kind.as_str(),
            count_of(finding.processes, "process", "processes"),
            finding.example_pid,
        );
    }
}

fn cgroup_heading(out: &mut String, group: &CgroupReport) {
    let name = if group.cgroup.is_empty() {
        "(unknown)"
    } else {
        &group.cgroup
    };
    let _ = writeln!(
        out,
        "cgroup {}: {}{} ({} running), {} in {}, unreleased {} in {}",
        terminal(name),
        count_of(group.pids.len() as u64, "process", "processes"),
        match group.folded_processes {
            0 => String::new(),
            folded => format!(" and {folded} folded"),
        },
        group.live_processes,
        bytes(group.bytes),
        count(group.regions, "region"),
        bytes(group.unreleased_bytes),
        count(group.unreleased_regions, "region"),
    );
}

fn header(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "memtrace {}: {}, {}{}, {} lost",
        report.source.as_str(),
        count(report.events, "event"),
        count_of(report.processes.len() as u64, "process", "processes"),
        match report
            .exited
            .iter()
            .map(|program| program.processes)
            .sum::<u64>()
        {
            0 => String::new(),
            folded => format!(" (and {folded} exited, folded by program)"),
        },
        report.lost_events,
    );
    if let Some(backend) = &report.backend {
        let _ = match &backend.why {
            Some(why) => writeln!(
                out,
                "backend: {} ({})",
                terminal(&backend.name),
                terminal(why)
            ),
            None => writeln!(out, "backend: {}", terminal(&backend.name)),
        };
    }
    if report.lost_events > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} events lost (ring buffer full: {}, in-flight syscall table full: {}); \
             layouts and counts may be incomplete",
            report.lost_events, report.lost.ring_full, report.lost.pending_full,
        );
    }
    if report.lost.stacks_not_sampled > 0 {
        let _ = writeln!(
            out,
            "note: {} not sampled (stack ring full); no event was lost for it",
            count_of(report.lost.stacks_not_sampled, "call stack", "call stacks"),
        );
    }
}

fn process_block(
    out: &mut String,
    report: &Report,
    process: &ProcessReport,
    options: &TextOptions,
    detailed: &summary_text::Detailed,
) {
    let state = match (process.exit_code, process.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), None) => format!("exited {code}"),
        (None, None) => "running".to_owned(),
    };
    let exe = if process.exe.is_empty() {
        "?"
    } else {
        &process.exe
    };
    let _ = writeln!(
        out,
        "pid {} ({})  {}  {}  {state}  ppid {}",
        process.pid,
        terminal(&process.comm),
        terminal(exe),
        process.abi,
        process.ppid,
    );
    // Only for a process in a container: on the host its pid and root say nothing new.
    let in_container = |c: &&ContainerReport| c.root != "/" || c.ns_pid != process.pid;
    if let Some(container) = process.container.as_ref().filter(in_container) {
        let _ = writeln!(
            out,
            "  container: pid {} in its namespace, cgroup {}, root {}",
            container.ns_pid,
            terminal(&container.cgroup),
            terminal(&container.root)
        );
    }
    if process.perf_map {
        let _ = writeln!(
            out,
            "  JIT frames named from its perf map (/tmp/perf-PID.map)"
        );
    }
    for exec in &process.execs {
        exec_lines(out, report, exec);
    }
    unreleased(out, report, process);
    held_since_attach(out, report, process);
    growth_line(out, process);
    brk_lines(out, report, process);
    // >>> Brief blocks when many processes are detailed (#24, report/summary_text.rs).
    if detailed.full_blocks() {
        syscall_table(out, process);
        anomaly_lines(out, process);
        kind_table(out, process);
    } else {
        summary_text::brief_tables(out, process);
    }
    // <<<
    if options.show_layout {
        layout(out, process);
    }
}

fn exec_lines(out: &mut String, report: &Report, exec: &ExecReport) {
    let _ = writeln!(
        out,
        "  exec {}  {} → {}  personality {:#x}  {}",
        terminal(&exec.filename),
        exec.from_abi,
        exec.to_abi,
        exec.personality,
        since(report.start_ns, exec.time_ns),
    );
    let libraries = match (exec.lowest_library, exec.highest_library) {
        (Some(low), Some(high)) => format!("{}–{}", hex(low), hex(high)),
        _ => "none".to_owned(),
    };
    let interp = if exec.interp_base == 0 {
        "none".to_owned()
    } else {
        hex(exec.interp_base)
    };
    let _ = writeln!(
        out,
        "    exe {}  interp {interp}  libraries {libraries}  brk {}  stack {}–{}",
        hex(exec.exe_base),
        hex(exec.brk_start),
        hex(exec.stack_start),
        hex(exec.stack_end),
    );
}

fn syscall_table(out: &mut String, process: &ProcessReport) {
    let latency = process.distributions.latency_ns.rows();
    // Latencies are measured only with `--latency`; without, the columns would be all zeros.
    let measured = latency.iter().any(|(_, latency)| latency.count > 0);
    let columns: &[&str] = if measured {
        &["syscall", "calls", "failed", "p50 ns", "p99 ns", "max ns"]
    } else {
        &["syscall", "calls", "failed"]
    };
    let mut rows = vec![columns.iter().map(|&column| column.to_owned()).collect()];
    for ((name, calls), (_, latency)) in process.syscalls.rows().into_iter().zip(latency) {
        if calls.calls == 0 {
            continue;
        }
        let mut row = vec![
            name.to_owned(),
            calls.calls.to_string(),
            calls.failed.to_string(),
        ];
        if measured {
            row.extend([latency.p50, latency.p99, latency.max].map(|ns| ns.to_string()));
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        out.push_str("  no memory syscalls traced\n");
        return;
    }
    for line in table(&rows, "  ", &[0]) {
        let _ = writeln!(out, "{line}");
    }
}

fn anomaly_lines(out: &mut String, process: &ProcessReport) {
    let anomalies = &process.anomalies;
    if anomalies.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {} refused (results the kernel cannot return; layout untouched):",
        count_of(anomalies.count, "impossible call", "impossible calls"),
    );
    for example in &anomalies.examples {
        let _ = writeln!(out, "    {}", terminal(example));
    }
}

fn kind_table(out: &mut String, process: &ProcessReport) {
    if process.summary.is_empty() {
        out.push_str("  nothing mapped\n");
        return;
    }
    let mut rows = vec![["kind", "regions", "bytes", "percent"]
        .map(str::to_owned)
        .to_vec()];
    for kind in &process.summary {
        rows.push(vec![
            kind.kind.to_owned(),
            kind.regions.to_string(),
            bytes(kind.bytes),
            format!("{:.1}%", kind.percent),
        ]);
    }
    let total: u64 = process.summary.iter().map(|kind| kind.bytes).sum();
    let regions: u64 = process.summary.iter().map(|kind| kind.regions).sum();
    rows.push(vec![
        "total".to_owned(),
        regions.to_string(),
        bytes(total),
        String::new(),
    ]);
    for line in table(&rows, "  ", &[0]) {
        let _ = writeln!(out, "{line}");
    }
}

/// What a program loads rather than allocates: its executable, libraries and loader mappings
/// (files), and thread stacks.
fn unreleased(out: &mut String, report: &Report, process: &ProcessReport) {
    let unreleased = &process.unreleased;
    if unreleased.total_regions == 0 {
        out.push_str("  unreleased: nothing\n");
        return;
    }
    let (loaded, allocated): (Vec<&UnreleasedGroup>, Vec<&UnreleasedGroup>) = unreleased
        .groups
        .iter()
        .partition(|group| group.is_loaded());
    if allocated.is_empty() {
        out.push_str("  allocated and unreleased: nothing\n");
    } else {
        group_section(out, report, "allocated and unreleased", &allocated);
    }
    call_site_lines(out, unreleased, "allocated and unreleased, by call site");
    if !loaded.is_empty() {
        let _ = writeln!(
            out,
            "  loaded (libraries, loader mappings, thread stacks): {}, {}",
            count(loaded.iter().map(|group| group.count).sum(), "region"),
            bytes(loaded.iter().map(|group| group.bytes).sum()),
        );
    }
}

/// A heading with the groups' totals, then their table.
fn group_section(out: &mut String, report: &Report, heading: &str, groups: &[&UnreleasedGroup]) {
    let _ = writeln!(
        out,
        "  {heading}: {}, {}",
        count(groups.iter().map(|group| group.count).sum(), "region"),
        bytes(groups.iter().map(|group| group.bytes).sum()),
    );
    group_table(out, report, groups);
}

/// The call sites of what was allocated, largest first: the loader's file mappings have a call
/// site too (`_dl_map_segments`), which would otherwise top the list of a short program.
fn call_site_lines(out: &mut String, unreleased: &Unreleased, heading: &str) {
    let sites: Vec<_> = unreleased
        .by_stack
        .iter()
        .filter(|site| site.kinds.iter().any(|kind| *kind != "file"))
        .collect();
    if sites.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {heading}:");
    for site in sites.into_iter().take(LISTED_GROUPS) {
        // A stack cut short does not pass for whole: its outer callers are unknown.
        let cut = if site.truncated {
            " ← … (stack cut short)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    {}  {}{cut}",
            call_sites::amount(site),
            terminal(&site.call_site)
        );
    }
}

fn group_table(out: &mut String, report: &Report, groups: &[&UnreleasedGroup]) {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .take(LISTED_GROUPS)
        .map(|group| group_row(report, group))
        .collect();
    for line in table(&rows, "    ", &[0, 1, 4, 5]) {
        let _ = writeln!(out, "{line}");
    }
    let rest = &groups[groups.len().min(LISTED_GROUPS)..];
    if !rest.is_empty() {
        let _ = writeln!(
            out,
            "    … {} more: {}, {}",
            count(rest.len() as u64, "group"),
            count(rest.iter().map(|group| group.count).sum(), "region"),
            bytes(rest.iter().map(|group| group.bytes).sum()),
        );
    }
}

/// The state at attach: what the process had allocated before memtrace came and still holds.
fn held_since_attach(out: &mut String, report: &Report, process: &ProcessReport) {
    let groups: Vec<&UnreleasedGroup> = process.held_since_attach.iter().collect();
    if groups.is_empty() {
        return;
    }
    group_section(out, report, "held since attach", &groups);
}

/// The whole process's live bytes from the first to the last point of its timeline.
fn growth_line(out: &mut String, process: &ProcessReport) {
    let timeline = &process.timeline;
    let (Some(&first), Some(&last)) = (timeline.bytes.first(), timeline.bytes.last()) else {
        return;
    };
    if timeline.times_ns.len() < 2 {
        return;
    }
    let seconds = timeline
        .times_ns
        .last()
        .zip(timeline.times_ns.first())
        .map_or(0.0, |(end, start)| end.saturating_sub(*start) as f64 / 1e9);
    let change = if last >= first {
        format!("+{}", bytes(last - first))
    } else {
        format!("-{}", bytes(first - last))
    };
    let _ = writeln!(
        out,
        "  mapped {} → {} ({change}) over {seconds:.1}s, {} samples",
        bytes(first),
        bytes(last),
        timeline.times_ns.len(),
    );
}

fn group_row(report: &Report, group: &UnreleasedGroup) -> Vec<String> {
    let name = if group.name.is_empty() {
        format!("[{}]", group.kind)
    } else {
        terminal(&group.name).into_owned()
    };
    let closed = group
        .regions
        .iter()
        .filter(|region| region.memfd_fd_closed == Some(true))
        .count();
    let fd_note = if closed > 0 { "fd closed" } else { "" };
    let created = if group.first_created_ns == group.last_created_ns {
        since(report.start_ns, group.first_created_ns)
    } else {
        format!(
            "{}..{}",
            since(report.start_ns, group.first_created_ns),
            since(report.start_ns, group.last_created_ns)
        )
    };
    vec![
        name,
        terminal(&group.perms).into_owned(),
        count(group.count, "region"),
        bytes(group.bytes),
        created,
        fd_note.to_owned(),
    ]
}

fn brk_lines(out: &mut String, report: &Report, process: &ProcessReport) {
    let brk = &process.brk;
    let (Some(start), Some(end)) = (brk.start, brk.end) else {
        if let Some(end) = brk.end {
            let _ = writeln!(out, "  brk at {} (start unknown)", hex(end));
        }
        return;
    };
    let room = match (&brk.bounded_by, brk.room_total, brk.room_left) {
        (Some(bound), Some(total), Some(left)) => format!(
            "room {} ({} left), bounded by {} {} at {}",
            bytes(total),
            bytes(left),
            terminal(if bound.name.is_empty() {
                "anonymous memory"
            } else {
                &bound.name
            }),
            terminal(&bound.perms),
            hex(bound.start),
        ),
        _ => "nothing mapped above".to_owned(),
    };
    let _ = writeln!(
        out,
        "  brk {}–{} ({} used)  {room}",
        hex(start),
        hex(end),
        bytes(end.saturating_sub(start)),
    );
    if brk.failed.is_empty() {
        return;
    }
    let listed: Vec<String> = brk
        .failed
        .iter()
        .take(LISTED_BRK_FAILURES)
        .map(|failure| {
            format!(
                "{} asked {}",
                since(report.start_ns, failure.time_ns),
                bytes(failure.asked_bytes)
            )
        })
        .collect();
    let more = brk.failed.len().saturating_sub(LISTED_BRK_FAILURES);
    let _ = writeln!(
        out,
        "  brk failed {}×: {}{}",
        brk.failed.len(),
        listed.join(", "),
        if more > 0 {
            format!(", … {more} more")
        } else {
            String::new()
        },
    );
}

fn layout(out: &mut String, process: &ProcessReport) {
    out.push_str("  layout\n");
    let rows: Vec<Vec<String>> = process
        .layout
        .iter()
        .map(|region| {
            vec![
                format!("{:016x}-{:016x}", region.start, region.end),
                terminal(&region.perms).into_owned(),
                format!("{:08x}", region.offset),
                region.kind.to_owned(),
                region.origin.to_owned(),
                bytes(region.end - region.start),
                terminal(&region.name).into_owned(),
            ]
        })
        .collect();
    for line in table(&rows, "    ", &[0, 1, 3, 4, 6]) {
        let _ = writeln!(out, "{line}");
    }
}
