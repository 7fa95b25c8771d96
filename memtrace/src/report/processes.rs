//! One process's part of the report, from its model view.

use crate::model::{
    Anomalies, DistributionSummary, ExecInfo, Headroom, MapFailures, ProcessView, Region,
    SyscallName, SyscallStats,
};
use crate::report::call_sites::{self, FrameNamer};
use crate::report::format;
use crate::report::schema::{
    AnomalyReport, BrkFailureReport, BrkReport, Calls, ContainerReport, DistributionReport,
    Distributions, ExecReport, LatencyTable, LayoutEntry, LimitsReport, MapFailureReport,
    MapFailuresReport, MappingRef, ProcessReport, SyscallTable,
};
use crate::report::summary::{self, Listed};
use crate::report::timeline;

/// When a process's report is taken and what it counts.
pub(crate) struct Moment {
    /// The report's moment for a live process.
    pub(crate) now_ns: u64,
    /// The timeline's step.
    pub(crate) step_ns: u64,
    /// Unreleased memory counts only what was created from then on.
    pub(crate) since_ns: u64,
}

pub(crate) fn process_report(
    view: &ProcessView<'_>,
    moment: &Moment,
    listed: Listed<'_>,
    namer: &mut dyn FrameNamer,
) -> ProcessReport {
    process_parts(view, moment, listed, namer).0
}

/// The regions of a process's report's groups, in the model: what the streamed JSON lists
/// from, group for group.
pub(crate) struct Members<'m> {
    pub(crate) unreleased: Vec<Vec<&'m Region>>,
    pub(crate) held_since_attach: Vec<Vec<&'m Region>>,
}

/// The report of a process, with `layout` and its groups' `regions` as `listed` asks, and
/// the regions of each group in the model.
pub(crate) fn process_parts<'m>(
    view: &ProcessView<'m>,
    moment: &Moment,
    listed: Listed<'_>,
    namer: &mut dyn FrameNamer,
) -> (ProcessReport, Members<'m>) {
    let process = view.process();
    let exit = process.exit();
    let (unreleased, unreleased_members) =
        summary::unreleased(view, moment.since_ns, listed, namer);
    let (held_since_attach, held_members) =
        summary::held_since_attach(view, moment.since_ns, listed)
            .into_iter()
            .unzip();
    let layout = match listed {
        Listed::All => view.layout().iter().map(layout_entry).collect(),
        Listed::Evidence(_) => Vec::new(),
    };
    let report = ProcessReport {
        pid: process.pid(),
        ppid: process.ppid(),
        comm: process.comm(),
        exe: process.exe().to_owned(),
        abi: format::abi(process.abi()),
        alive: process.alive(),
        execs: process
            .execs()
            .iter()
            .map(|exec| exec_report(view, exec))
            .collect(),
        exit_code: exit.and_then(|exit| exit.code),
        signal: exit.and_then(|exit| exit.signal),
        syscalls: syscall_table(process.stats()),
        layout,
        summary: summary::by_kind(view.layout()),
        unreleased,
        held_since_attach,
        brk: brk_report(view),
        distributions: distributions(process.stats()),
        timeline: timeline::timeline_report(view, moment.now_ns, moment.step_ns, namer),
        allocated_by_stack: call_sites::allocated_by_stack(view, namer),
        container: process.container().map(|container| ContainerReport {
            cgroup: container.cgroup.clone(),
            ns_pid: container.ns_pid,
            root: container.root.clone(),
        }),
        perf_map: view.has_jit_symbols(),
        anomalies: anomaly_report(process.anomalies()),
        map_count: view.map_count(),
        limits: process.limits().map(|limits| LimitsReport {
            max_map_count: limits.max_map_count,
            address_space: limits.address_space,
        }),
        map_failures: map_failures(process.map_failures()),
    };
    let members = Members {
        unreleased: unreleased_members,
        held_since_attach: held_members,
    };
    (report, members)
}

fn map_failures(failures: &MapFailures) -> MapFailuresReport {
    MapFailuresReport {
        count: failures.count,
        largest_ask: failures.largest_ask,
        examples: failures
            .examples
            .iter()
            .map(|failure| MapFailureReport {
                time_ns: failure.time_ns,
                // Only the mmap family is kept, and each has a name.
                syscall: SyscallName::of(failure.syscall).map_or("other", SyscallName::as_str),
                asked_bytes: failure.asked_bytes,
                mapped_bytes: failure.mapped_bytes,
                map_count: failure.map_count,
            })
            .collect(),
    }
}

fn anomaly_report(anomalies: &Anomalies) -> AnomalyReport {
    AnomalyReport {
        count: anomalies.count,
        examples: anomalies
            .examples
            .iter()
            .map(|anomaly| {
                format!(
                    "{}({:#x}, {}, {}) = {:#x}: {}",
                    SyscallName::of(anomaly.syscall).map_or("?", SyscallName::as_str),
                    anomaly.args[0],
                    anomaly.args[1],
                    anomaly.args[2],
                    anomaly.ret,
                    anomaly.reason
                )
            })
            .collect(),
    }
}

pub(crate) fn mapping_ref(region: &Region) -> MappingRef {
    MappingRef {
        start: region.start,
        end: region.end,
        name: region.name().to_owned(),
        perms: region.perms.to_string(),
        kind: region.kind.as_str(),
    }
}

fn exec_report(view: &ProcessView<'_>, exec: &ExecInfo) -> ExecReport {
    let facts = view.exec_facts(exec);
    ExecReport {
        filename: exec.filename.clone(),
        interp: exec.interp.clone(),
        from_abi: format::abi(exec.from_abi),
        to_abi: format::abi(exec.to_abi),
        personality: exec.personality,
        time_ns: exec.time_ns,
        exe_base: exec.exe_base,
        interp_base: exec.interp_base,
        lowest_library: facts.lowest_library,
        highest_library: facts.highest_library,
        brk_start: exec.brk_start,
        stack_start: exec.stack_start,
        stack_end: exec.stack_end,
        entry: exec.entry,
        above_brk: facts.above_brk.as_ref().map(mapping_ref),
    }
}

pub(crate) fn layout_entry(region: &Region) -> LayoutEntry {
    LayoutEntry {
        start: region.start,
        end: region.end,
        perms: region.perms.to_string(),
        kind: region.kind.as_str(),
        name: region.name().to_owned(),
        origin: region.created.origin.as_str(),
        offset: region.offset,
        sealed: region.sealed,
        pkey: region.pkey,
    }
}

fn syscall_table(stats: &SyscallStats) -> SyscallTable {
    SyscallTable::from_fn(|name| {
        let counts = stats.counts(name);
        Calls {
            calls: counts.calls,
            failed: counts.failed,
        }
    })
}

fn brk_report(view: &ProcessView<'_>) -> BrkReport {
    let brk = view.process().brk();
    let headroom: Option<Headroom<'_>> = view.headroom();
    BrkReport {
        start: brk.start(),
        end: brk.current(),
        room_total: headroom.and_then(|headroom| headroom.room_total),
        room_left: headroom.and_then(|headroom| headroom.room_left),
        bounded_by: headroom.map(|headroom| mapping_ref(headroom.bounded_by)),
        failed: brk
            .failures()
            .iter()
            .map(|failure| BrkFailureReport {
                time_ns: failure.time_ns,
                requested: failure.requested,
                asked_bytes: failure.asked_bytes,
            })
            .collect(),
    }
}

fn distribution(summary: DistributionSummary) -> DistributionReport {
    DistributionReport {
        count: summary.count,
        p50: summary.p50,
        p99: summary.p99,
        max: summary.max,
    }
}

fn distributions(stats: &SyscallStats) -> Distributions {
    let size = |name: SyscallName| distribution(stats.sizes(name));
    let latency = |name: SyscallName| distribution(stats.latency_ns(name));
    Distributions {
        mmap_size: size(SyscallName::Mmap),
        munmap_size: size(SyscallName::Munmap),
        mremap_size: size(SyscallName::Mremap),
        mprotect_size: size(SyscallName::Mprotect),
        brk_growth: size(SyscallName::Brk),
        latency_ns: LatencyTable::from_fn(latency),
    }
}
