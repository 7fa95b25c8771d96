//! Exited processes folded into one entry per program.
//!
//! A daemon traced for a day spawns thousands of processes (sshd's sessions, a CI runner's
//! jobs). Listed one by one, they would drown what runs now, and keeping each one's layout for
//! its report would make memtrace's memory grow with every process come and gone. So past the
//! most recent exits ([`DEFAULT_KEEP_EXITED`], `--keep-exited`), the model hands each exited
//! process over ([`Model::fold_exited`](crate::model::Model::fold_exited)) and
//! [`FoldedPrograms::fold`] adds what its report says to its program's totals: how many, how
//! they ended, their syscalls, what they still had mapped at exit (by group and by call site),
//! what their call sites allocated, and their findings. The first process of a program with
//! each kind of finding is not folded: it stays listed in full, as the example, and its
//! finding tells how many folded processes had one too.
//!
//! Each process's report is built by the same code as a listed process's, with frames left
//! unnamed: naming reads debug information, which waits for the end of the session. The
//! folded frames keep what naming needs (module, offset, build) and are named with the rest
//! of the report.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Fold, ProcessView};
use crate::report::call_sites::{self, FrameNamer};
use crate::report::processes::{self, Moment};
use crate::report::schema::{
    AllocatedSite, CallSiteGroup, ExitCount, ExitedProgramReport, Finding, FindingKind,
    FoldedFindings, ProcessReport, SizeGroup, SyscallTable, Unreleased, UnreleasedGroup,
};
use crate::report::summary::Listed;
use crate::report::{findings, ReportOptions};

mod capped;
mod frames;

use capped::{Capped, Sum};
use frames::{frame_keys, named, FoldedFrame, FrameKey, ToldModules};

/// Exited processes listed in full, the most recent exits, unless told otherwise.
pub const DEFAULT_KEEP_EXITED: usize = 256;

/// Programs told apart; the processes of any more are summed under [`OTHER`].
const MAX_PROGRAMS: usize = 1024;
/// Unreleased groups and call sites kept per program; the rest are summed under [`OTHER`].
const MAX_ENTRIES: usize = 32;
/// Sizes kept per call site.
const MAX_SIZES: usize = 16;
/// The name of what is summed past a limit.
const OTHER: &str = "(other)";

/// The folded programs of a session.
#[derive(Debug, Default)]
pub struct FoldedPrograms {
    options: ReportOptions,
    /// Processes never folded (`replay --pid`: the ones asked for).
    keep_pids: Vec<u32>,
    programs: Vec<Program>,
    index: HashMap<ProgramKey, usize>,
}

impl FoldedPrograms {
    /// Folds with the report's thresholds (and its `--since`), keeping `keep_pids` in full.
    pub fn new(options: ReportOptions, keep_pids: Vec<u32>) -> Self {
        Self {
            options,
            keep_pids,
            ..Self::default()
        }
    }

    /// The report's thresholds (and `--since`) the processes are folded with: the report must
    /// be built with the same.
    pub fn options(&self) -> &ReportOptions {
        &self.options
    }

    /// Adds an exited process's report to its program, or keeps it in full: when it was asked
    /// for, or as its program's first example of a kind of finding. `step_ns`: the timeline's
    /// step now.
    pub fn fold(&mut self, view: ProcessView<'_>, step_ns: u64) -> Fold {
        let process = view.process();
        if self.keep_pids.contains(&process.pid()) {
            return Fold::Keep;
        }
        let exit_ns = process.exit().map_or(0, |exit| exit.time_ns);
        let moment = Moment {
            now_ns: exit_ns,
            step_ns,
            since_ns: self.options.since_ns,
        };
        let mut told = ToldModules::default();
        // Folding keeps counts, not regions: the findings' evidence is all it reads.
        let listed = Listed::Evidence(&self.options);
        let report = processes::process_report(&view, &moment, listed, &mut told);
        let kinds: BTreeSet<FindingKind> = findings::for_process(&report, &self.options)
            .into_iter()
            .map(|finding| finding.kind)
            .collect();
        let program = self.program_of(&report);
        let mut example = false;
        for &kind in &kinds {
            program.findings.entry(kind).or_insert_with(|| {
                example = true;
                Tally {
                    processes: 0,
                    example_pid: report.pid,
                }
            });
        }
        if example {
            return Fold::Keep;
        }
        for kind in kinds {
            if let Some(tally) = program.findings.get_mut(&kind) {
                tally.processes += 1;
            }
        }
        program.add(&report, process.first_seen_ns(), exit_ns, &told);
        Fold::Away
    }

    /// Processes folded so far.
    pub fn folded_processes(&self) -> u64 {
        self.programs.iter().map(|program| program.processes).sum()
    }

    /// The programs with folded processes, their frames named by `namer`.
    pub fn reports(&self, namer: &mut dyn FrameNamer) -> Vec<ExitedProgramReport> {
        self.programs
            .iter()
            .filter(|program| program.processes > 0)
            .map(|program| program.report(namer))
            .collect()
    }

    /// Tells each example's findings how many folded processes had one of that kind too.
    pub(crate) fn annotate(&self, findings: &mut [Finding]) {
        for program in &self.programs {
            for (&kind, tally) in &program.findings {
                if tally.processes == 0 {
                    continue;
                }
                let examples = findings
                    .iter_mut()
                    .filter(|finding| finding.pid == tally.example_pid && finding.kind == kind);
                for finding in examples {
                    finding.also_in_folded = Some(tally.processes);
                    finding.message.push_str(&format!(
                        "; the same in {} of {} (folded below)",
                        crate::report::format::count_of(
                            tally.processes,
                            "more exited process",
                            "more exited processes"
                        ),
                        program.key.display(),
                    ));
                }
            }
        }
    }

    fn program_of(&mut self, report: &ProcessReport) -> &mut Program {
        let mut key = ProgramKey {
            exe: report.exe.clone(),
            comm: report.comm.clone(),
            cgroup: crate::report::cgroups::cgroup_of(report).to_owned(),
        };
        if !self.index.contains_key(&key) && self.programs.len() >= MAX_PROGRAMS {
            key = ProgramKey {
                exe: String::new(),
                comm: OTHER.to_owned(),
                cgroup: String::new(),
            };
        }
        let index = match self.index.get(&key) {
            Some(&index) => index,
            None => {
                self.programs.push(Program::new(key.clone(), report.pid));
                self.index.insert(key, self.programs.len() - 1);
                self.programs.len() - 1
            }
        };
        &mut self.programs[index]
    }
}

/// What tells one program's processes apart from another's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProgramKey {
    exe: String,
    comm: String,
    cgroup: String,
}

impl ProgramKey {
    fn display(&self) -> String {
        match (self.exe.is_empty(), self.cgroup.is_empty()) {
            (true, _) => self.comm.clone(),
            (false, true) => format!("{} ({})", self.exe, self.comm),
            (false, false) => format!("{} ({}) in {}", self.exe, self.comm, self.cgroup),
        }
    }
}

/// How many folded processes had a kind of finding, and the one kept as its example.
#[derive(Debug)]
struct Tally {
    processes: u64,
    example_pid: u32,
}

#[derive(Debug)]
struct Program {
    key: ProgramKey,
    processes: u64,
    first_pid: u32,
    last_pid: u32,
    first_seen_ns: u64,
    last_exit_ns: u64,
    exits: BTreeMap<(Option<i32>, Option<i32>), u64>,
    syscalls: SyscallTable,
    regions: u64,
    bytes: u64,
    loaded_regions: u64,
    loaded_bytes: u64,
    groups: Capped<(&'static str, String, String), GroupSum>,
    unreleased_sites: Capped<Vec<FrameKey>, UnreleasedSite>,
    allocated_sites: Capped<Vec<FrameKey>, AllocatedSum>,
    findings: BTreeMap<FindingKind, Tally>,
}

impl Program {
    fn new(key: ProgramKey, pid: u32) -> Self {
        Self {
            key,
            processes: 0,
            first_pid: pid,
            last_pid: pid,
            first_seen_ns: u64::MAX,
            last_exit_ns: 0,
            exits: BTreeMap::new(),
            syscalls: SyscallTable::default(),
            regions: 0,
            bytes: 0,
            loaded_regions: 0,
            loaded_bytes: 0,
            groups: Capped::default(),
            unreleased_sites: Capped::default(),
            allocated_sites: Capped::default(),
            findings: BTreeMap::new(),
        }
    }

    fn add(
        &mut self,
        report: &ProcessReport,
        first_seen_ns: u64,
        exit_ns: u64,
        told: &ToldModules,
    ) {
        if self.processes == 0 {
            self.first_pid = report.pid;
        }
        self.processes += 1;
        self.last_pid = report.pid;
        self.first_seen_ns = self.first_seen_ns.min(first_seen_ns);
        self.last_exit_ns = self.last_exit_ns.max(exit_ns);
        *self
            .exits
            .entry((report.exit_code, report.signal))
            .or_default() += 1;
        add_calls(&mut self.syscalls, &report.syscalls);
        self.regions += report.summary.iter().map(|kind| kind.regions).sum::<u64>();
        self.bytes += report.summary.iter().map(|kind| kind.bytes).sum::<u64>();
        for group in &report.unreleased.groups {
            if group.is_loaded() {
                self.loaded_regions += group.count;
                self.loaded_bytes += group.bytes;
                continue;
            }
            let key = (group.kind, group.name.clone(), group.perms.clone());
            self.groups.add(
                key,
                GroupSum {
                    count: group.count,
                    bytes: group.bytes,
                    first_created_ns: group.first_created_ns,
                    last_created_ns: group.last_created_ns,
                },
            );
        }
        for site in &report.unreleased.by_stack {
            let frames = told.folded(&site.frames);
            let key = frame_keys(&frames);
            self.unreleased_sites.add(
                key,
                UnreleasedSite {
                    frames,
                    count: site.count,
                    bytes: site.bytes,
                    truncated: site.truncated,
                    kinds: site.kinds.clone(),
                    sizes: site
                        .sizes
                        .iter()
                        .map(|size| (size.size, size.count))
                        .collect(),
                },
            );
        }
        for site in &report.allocated_by_stack {
            let frames = told.folded(&site.frames);
            let key = frame_keys(&frames);
            self.allocated_sites.add(
                key,
                AllocatedSum {
                    frames,
                    count: site.count,
                    bytes: site.bytes,
                },
            );
        }
    }

    fn report(&self, namer: &mut dyn FrameNamer) -> ExitedProgramReport {
        let mut exits: Vec<ExitCount> = self
            .exits
            .iter()
            .map(|(&(code, signal), &processes)| ExitCount {
                code,
                signal,
                processes,
            })
            .collect();
        exits.sort_by_key(|exit| std::cmp::Reverse(exit.processes));
        let mut groups: Vec<UnreleasedGroup> = self
            .groups
            .iter()
            .map(|(key, sum)| {
                let (kind, name, perms) = match key {
                    Some((kind, name, perms)) => (*kind, name.clone(), perms.clone()),
                    None => ("", OTHER.to_owned(), String::new()),
                };
                UnreleasedGroup {
                    kind,
                    name,
                    perms,
                    count: sum.count,
                    bytes: sum.bytes,
                    first_created_ns: sum.first_created_ns,
                    last_created_ns: sum.last_created_ns,
                    // Folded groups list no regions, and were never told apart by them.
                    thread_stacks: false,
                    regions: Vec::new(),
                }
            })
            .collect();
        groups.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
        let mut by_stack: Vec<CallSiteGroup> = self
            .unreleased_sites
            .iter()
            .map(|(_, site)| {
                let frames = named(&site.frames, namer);
                CallSiteGroup {
                    count: site.count,
                    bytes: site.bytes,
                    call_site: call_sites::call_site(&frames),
                    kinds: site.kinds.clone(),
                    sizes: SizeGroup::from_counts(site.sizes.iter().map(|(&s, &c)| (s, c))),
                    frames,
                    truncated: site.truncated,
                }
            })
            .collect();
        by_stack.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
        let mut allocated_by_stack: Vec<AllocatedSite> = self
            .allocated_sites
            .iter()
            .map(|(_, site)| {
                let frames = named(&site.frames, namer);
                AllocatedSite {
                    count: site.count,
                    bytes: site.bytes,
                    call_site: call_sites::call_site(&frames),
                    frames,
                }
            })
            .collect();
        allocated_by_stack.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
        ExitedProgramReport {
            exe: self.key.exe.clone(),
            comm: self.key.comm.clone(),
            cgroup: self.key.cgroup.clone(),
            processes: self.processes,
            first_pid: self.first_pid,
            last_pid: self.last_pid,
            first_seen_ns: self.first_seen_ns,
            last_exit_ns: self.last_exit_ns,
            exits,
            syscalls: self.syscalls,
            regions: self.regions,
            bytes: self.bytes,
            unreleased: Unreleased {
                total_regions: groups.iter().map(|group| group.count).sum(),
                total_bytes: groups.iter().map(|group| group.bytes).sum(),
                groups,
                by_stack,
            },
            loaded_regions: self.loaded_regions,
            loaded_bytes: self.loaded_bytes,
            allocated_by_stack,
            findings: self
                .findings
                .iter()
                .filter(|(_, tally)| tally.processes > 0)
                .map(|(&kind, tally)| FoldedFindings {
                    kind,
                    processes: tally.processes,
                    example_pid: tally.example_pid,
                })
                .collect(),
        }
    }
}

fn add_calls(total: &mut SyscallTable, calls: &SyscallTable) {
    for (sum, (_, add)) in total.values_mut().into_iter().zip(calls.rows()) {
        sum.calls += add.calls;
        sum.failed += add.failed;
    }
}

#[derive(Debug)]
struct GroupSum {
    count: u64,
    bytes: u64,
    first_created_ns: u64,
    last_created_ns: u64,
}

impl Sum for GroupSum {
    fn add(&mut self, other: Self) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.first_created_ns = self.first_created_ns.min(other.first_created_ns);
        self.last_created_ns = self.last_created_ns.max(other.last_created_ns);
    }
}

#[derive(Debug)]
struct UnreleasedSite {
    frames: Vec<FoldedFrame>,
    count: u64,
    bytes: u64,
    kinds: Vec<&'static str>,
    /// Region size → regions; at most [`MAX_SIZES`] sizes are told apart (the site's count
    /// and bytes still hold every region).
    sizes: BTreeMap<u64, u64>,
    /// Some process's stack of these frames was cut short.
    truncated: bool,
}

impl Sum for UnreleasedSite {
    fn add(&mut self, other: Self) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.truncated |= other.truncated;
        for kind in other.kinds {
            if !self.kinds.contains(&kind) {
                self.kinds.push(kind);
            }
        }
        for (size, count) in other.sizes {
            if let Some(sum) = self.sizes.get_mut(&size) {
                *sum += count;
            } else if self.sizes.len() < MAX_SIZES {
                self.sizes.insert(size, count);
            }
        }
        // Summed under `(other)`, sites keep the first one's frames: `other` has no key.
    }
}

#[derive(Debug)]
struct AllocatedSum {
    frames: Vec<FoldedFrame>,
    count: u64,
    bytes: u64,
}

impl Sum for AllocatedSum {
    fn add(&mut self, other: Self) {
        self.count += other.count;
        self.bytes += other.bytes;
    }
}
