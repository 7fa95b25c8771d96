//! The report as data: what the JSON output is (field for field) and what the text output
//! reads from. Owned values only, so a report outlives the model and can be filtered.

use serde::Serialize;

use crate::model::SyscallName;

pub use crate::report::ranking::{RankedRest, RankedRow, Ranking, SessionSummary};
pub use crate::report::timeline::{GroupSeries, TimelineReport};

/// Bumped when a field changes meaning or goes away (new fields do not bump it).
pub const REPORT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Live,
    Replay,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Replay => "replay",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub version: u32,
    pub source: Source,
    pub events: u64,
    pub lost_events: u64,
    pub lost: LostCounts,
    /// How a live session hooked the syscalls; absent from a replay's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendInfo>,
    /// Time of the first event (CLOCK_MONOTONIC ns); times in the text are relative to it.
    pub start_ns: Option<u64>,
    pub processes: Vec<ProcessReport>,
    /// Exited processes past the most recent ones (`--keep-exited`), folded into one entry
    /// per program, in the order each program was first folded.
    pub exited: Vec<ExitedProgramReport>,
    /// The processes grouped by cgroup (v2), in the order each cgroup first appears.
    pub cgroups: Vec<CgroupReport>,
    pub findings: Vec<Finding>,
    /// The session's totals, and its processes and folded programs ranked (the first rows;
    /// the rest summed): last, because the streamed JSON sums them as the processes go by.
    pub summary: SessionSummary,
    pub ranking: Ranking,
}

/// One cgroup's processes and what they hold (at exit, or now).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CgroupReport {
    /// Its path in the v2 hierarchy, as `/proc/PID/cgroup` names it; "" for processes whose
    /// cgroup is unknown.
    pub cgroup: String,
    /// Host pids, in report order.
    pub pids: Vec<u32>,
    pub live_processes: u64,
    /// Mapped regions and bytes of its processes.
    pub regions: u64,
    pub bytes: u64,
    /// What its processes created during the session and still hold.
    pub unreleased_regions: u64,
    pub unreleased_bytes: u64,
    /// Its exited processes folded into `exited` (not in `pids`); their mappings at exit are
    /// in the totals above.
    pub folded_processes: u64,
}

/// The exited processes of one program (its executable, name and cgroup) that were folded:
/// what a report of each would have said, summed. Only the most recent exits are listed in
/// full (`--keep-exited`), so that memtrace's memory and the report follow what runs now, not
/// every process a daemon spawned; the first process of a program with each kind of finding
/// stays listed in full as its example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExitedProgramReport {
    /// Its executable (a forked child that did not exec has its parent's).
    pub exe: String,
    pub comm: String,
    /// "" when unknown.
    pub cgroup: String,
    /// Processes folded into this entry.
    pub processes: u64,
    /// The first and the last of them (pids are reused: others lie between).
    pub first_pid: u32,
    pub last_pid: u32,
    pub first_seen_ns: u64,
    pub last_exit_ns: u64,
    /// How they ended, most frequent first.
    pub exits: Vec<ExitCount>,
    pub syscalls: SyscallTable,
    /// What they had mapped at their exits, summed.
    pub regions: u64,
    pub bytes: u64,
    /// What their own syscalls allocated and still had mapped at their exits, summed: groups
    /// (their `regions` not listed) and call sites. Groups and call sites past the first few
    /// are summed in one entry named `(other)`.
    pub unreleased: Unreleased,
    /// What they loaded and still had mapped (executable, libraries, loader mappings, thread
    /// stacks): not listed by group, as it says nothing of a leak.
    pub loaded_regions: u64,
    pub loaded_bytes: u64,
    pub allocated_by_stack: Vec<AllocatedSite>,
    /// Their findings, per kind.
    pub findings: Vec<FoldedFindings>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExitCount {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub processes: u64,
}

/// How many folded processes of a program had a kind of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FoldedFindings {
    pub kind: FindingKind,
    pub processes: u64,
    /// The program's first process with this kind of finding, listed in full in `processes`
    /// as its example (its finding says `also_in_folded`).
    pub example_pid: u32,
}

/// The syscall hooks a live session used.
pub use crate::probes::backend::BackendInfo;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LostCounts {
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Syscalls whose entry could not be remembered.
    pub pending_full: u64,
    /// Call stacks not sampled (their ring was full): not lost events, the syscalls were
    /// all applied; only who made them is unknown.
    pub stacks_not_sampled: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    /// 0 when unknown.
    pub ppid: u32,
    pub comm: String,
    pub exe: String,
    /// The ABI the process ended with: `x86_64`, `i386` (or `unknown`).
    pub abi: &'static str,
    pub alive: bool,
    pub execs: Vec<ExecReport>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub syscalls: SyscallTable,
    pub layout: Vec<LayoutEntry>,
    pub summary: Vec<KindSummary>,
    pub unreleased: Unreleased,
    /// Memory found at attach (not files or stacks) and still held, grouped like `unreleased`.
    pub held_since_attach: Vec<UnreleasedGroup>,
    pub brk: BrkReport,
    pub distributions: Distributions,
    /// Live regions and bytes over the session, in all and per group.
    pub timeline: TimelineReport,
    /// Everything each sampled call stack created during the session, released since or not
    /// (the "alloc" side of a heap profile; `unreleased.by_stack` is the "in use" side),
    /// largest first.
    pub allocated_by_stack: Vec<AllocatedSite>,
    /// Who it is in its container, when known: paths in the report are as the process sees
    /// them, and `container.root` + path is where the host has the file.
    pub container: Option<ContainerReport>,
    /// Whether frames in its JIT code were named from its perf map (`/tmp/perf-PID.map`,
    /// which node, .NET, a JVM and CPython write when asked).
    pub perf_map: bool,
    /// Successful results the kernel cannot return (a decoding fault), refused by the model:
    /// neither counted in `syscalls` nor applied to `layout`.
    pub anomalies: AnomalyReport,
    /// Its mappings as the kernel counts them (the lines of `/proc/PID/maps`, what
    /// `vm.max_map_count` bounds), at exit or now.
    pub map_count: u64,
    /// What bounds its mappings, when the session read it (live sessions do).
    pub limits: Option<LimitsReport>,
    /// Its mmap and mremap calls refused with ENOMEM (mremap only where it may move).
    pub map_failures: MapFailuresReport,
}

/// The limits a process maps against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LimitsReport {
    /// `vm.max_map_count`; 0 when unknown.
    pub max_map_count: u64,
    /// The soft `RLIMIT_AS` in bytes; `null` when unlimited.
    pub address_space: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MapFailuresReport {
    pub count: u64,
    pub largest_ask: u64,
    /// The first few, with the layout's size when each failed.
    pub examples: Vec<MapFailureReport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MapFailureReport {
    pub time_ns: u64,
    pub syscall: &'static str,
    pub asked_bytes: u64,
    pub mapped_bytes: u64,
    pub map_count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnomalyReport {
    pub count: u64,
    /// The first few, as `munmap(0x119518b4, 393) = 0: unaligned address`.
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerReport {
    /// Its cgroup v2 path.
    pub cgroup: String,
    /// Its pid in its own pid namespace (the host pid is `pid`).
    pub ns_pid: u32,
    /// Its root directory on the host.
    pub root: String,
}

/// What one call stack created over the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllocatedSite {
    pub count: u64,
    pub bytes: u64,
    pub call_site: String,
    /// Innermost first.
    pub frames: Vec<FrameReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecReport {
    pub filename: String,
    pub interp: String,
    pub from_abi: &'static str,
    pub to_abi: &'static str,
    pub personality: u32,
    pub time_ns: u64,
    pub exe_base: u64,
    /// 0 for a static binary.
    pub interp_base: u64,
    /// Start of the lowest library mapping.
    pub lowest_library: Option<u64>,
    /// Start of the highest library mapping.
    pub highest_library: Option<u64>,
    pub brk_start: u64,
    pub stack_start: u64,
    pub stack_end: u64,
    pub entry: u64,
    /// The lowest mapping above the brk start that is not the heap.
    pub above_brk: Option<MappingRef>,
}

/// A mapping named as evidence (what bounds the heap, what sits above the brk start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MappingRef {
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub perms: String,
    pub kind: &'static str,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    pub calls: u64,
    pub failed: u64,
}

/// One value per reported syscall, in the order reports list them. The syscalls after
/// `execve` are in a report only when some process made them: a report of a session without
/// any is the one memtrace wrote before it traced them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(bound(serialize = "T: Serialize + Unmade"))]
pub struct PerSyscall<T> {
    pub mmap: T,
    pub munmap: T,
    pub brk: T,
    pub mremap: T,
    pub mprotect: T,
    pub memfd_create: T,
    pub execve: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub shmat: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub shmdt: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub io_setup: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub io_destroy: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub pkey_mprotect: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub mseal: T,
    #[serde(skip_serializing_if = "Unmade::unmade")]
    pub remap_file_pages: T,
}

/// Whether a syscall's figure says it was never made.
pub trait Unmade {
    fn unmade(&self) -> bool;
}

impl Unmade for Calls {
    fn unmade(&self) -> bool {
        self.calls == 0 && self.failed == 0
    }
}

impl Unmade for DistributionReport {
    fn unmade(&self) -> bool {
        self.count == 0
    }
}

impl<T: Copy> PerSyscall<T> {
    /// The reported syscalls, in the order reports list them.
    pub const NAMES: [SyscallName; 14] = [
        SyscallName::Mmap,
        SyscallName::Munmap,
        SyscallName::Brk,
        SyscallName::Mremap,
        SyscallName::Mprotect,
        SyscallName::MemfdCreate,
        SyscallName::Execve,
        SyscallName::Shmat,
        SyscallName::Shmdt,
        SyscallName::IoSetup,
        SyscallName::IoDestroy,
        SyscallName::PkeyMprotect,
        SyscallName::Mseal,
        SyscallName::RemapFilePages,
    ];

    /// One value per reported syscall, in [`Self::NAMES`] order.
    pub fn from_fn(mut value: impl FnMut(SyscallName) -> T) -> Self {
        let [mmap, munmap, brk, mremap, mprotect, memfd_create, execve, shmat, shmdt, io_setup, io_destroy, pkey_mprotect, mseal, remap_file_pages] =
            Self::NAMES.map(&mut value);
        Self {
            mmap,
            munmap,
            brk,
            mremap,
            mprotect,
            memfd_create,
            execve,
            shmat,
            shmdt,
            io_setup,
            io_destroy,
            pkey_mprotect,
            mseal,
            remap_file_pages,
        }
    }

    /// Rows in the order reports list them.
    pub fn rows(&self) -> [(&'static str, T); 14] {
        let values = [
            self.mmap,
            self.munmap,
            self.brk,
            self.mremap,
            self.mprotect,
            self.memfd_create,
            self.execve,
            self.shmat,
            self.shmdt,
            self.io_setup,
            self.io_destroy,
            self.pkey_mprotect,
            self.mseal,
            self.remap_file_pages,
        ];
        std::array::from_fn(|index| (Self::NAMES[index].as_str(), values[index]))
    }

    /// Every value, in [`Self::NAMES`] order, to add to.
    pub fn values_mut(&mut self) -> [&mut T; 14] {
        [
            &mut self.mmap,
            &mut self.munmap,
            &mut self.brk,
            &mut self.mremap,
            &mut self.mprotect,
            &mut self.memfd_create,
            &mut self.execve,
            &mut self.shmat,
            &mut self.shmdt,
            &mut self.io_setup,
            &mut self.io_destroy,
            &mut self.pkey_mprotect,
            &mut self.mseal,
            &mut self.remap_file_pages,
        ]
    }
}

pub type SyscallTable = PerSyscall<Calls>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayoutEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub kind: &'static str,
    pub name: String,
    pub origin: &'static str,
    pub offset: u64,
    /// Sealed by `mseal`: absent when not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// Its protection key (`pkey_mprotect`): absent for the default key, 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub pkey: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindSummary {
    pub kind: &'static str,
    pub regions: u64,
    pub bytes: u64,
    /// Of the process's mapped bytes, two decimals.
    pub percent: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Unreleased {
    pub total_regions: u64,
    pub total_bytes: u64,
    pub groups: Vec<UnreleasedGroup>,
    /// The same regions grouped by the call stack that created them (those with a sampled
    /// stack), largest first.
    pub by_stack: Vec<CallSiteGroup>,
}

/// Unreleased regions created from one call stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallSiteGroup {
    pub count: u64,
    pub bytes: u64,
    /// One line: the first frames outside the allocator, `f ← g ← main (file.c:9)`.
    pub call_site: String,
    /// The kinds of the regions it created (`anon`, `file`, `memfd`…).
    pub kinds: Vec<&'static str>,
    /// Largest total first.
    pub sizes: Vec<SizeGroup>,
    /// Innermost first.
    pub frames: Vec<FrameReport>,
    /// The stack was cut short before the program's entry point: its outer frames are
    /// unknown.
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrameReport {
    pub address: u64,
    /// The mapped file the address falls in, and the offset in it.
    pub module: Option<String>,
    pub offset: Option<u64>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl UnreleasedGroup {
    /// What a program loads rather than allocates: files (its executable, libraries, data
    /// files), and thread stacks.
    pub fn is_loaded(&self) -> bool {
        self.kind == "file" || (self.count > 0 && self.thread_stacks)
    }
}

/// Unreleased regions with the same kind, name and permissions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreleasedGroup {
    pub kind: &'static str,
    pub name: String,
    pub perms: String,
    pub count: u64,
    pub bytes: u64,
    /// When the oldest and the newest of them were created: how the group grew.
    pub first_created_ns: u64,
    pub last_created_ns: u64,
    /// Every one of its regions is a thread stack: kept apart from `regions`, which the
    /// streamed JSON does not hold ([`crate::report::stream`]), and not written.
    #[serde(skip)]
    pub thread_stacks: bool,
    /// Oldest first.
    pub regions: Vec<UnreleasedRegion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreleasedRegion {
    pub start: u64,
    pub len: u64,
    pub perms: String,
    pub kind: &'static str,
    pub name: String,
    pub created_ns: u64,
    pub syscall: &'static str,
    /// For a memfd created during the session: whether all its fds were closed while this
    /// mapping lives on.
    pub memfd_fd_closed: Option<bool>,
    pub memfd: Option<MemfdReport>,
    /// A thread stack (MAP_STACK/MAP_GROWSDOWN): expected to stay, not a leak.
    pub thread_stack: bool,
}

/// The memfd behind a mapping: what it is, when and by whom it was created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemfdReport {
    pub name: String,
    pub inode: u64,
    pub created_ns: u64,
    pub created_by_pid: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BrkReport {
    /// start_brk; `null` only for a process memtrace met without exec or attach.
    pub start: Option<u64>,
    /// The current break.
    pub end: Option<u64>,
    pub room_total: Option<u64>,
    pub room_left: Option<u64>,
    pub bounded_by: Option<MappingRef>,
    pub failed: Vec<BrkFailureReport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BrkFailureReport {
    pub time_ns: u64,
    pub requested: u64,
    pub asked_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DistributionReport {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Distributions {
    pub mmap_size: DistributionReport,
    pub munmap_size: DistributionReport,
    pub mremap_size: DistributionReport,
    pub mprotect_size: DistributionReport,
    /// Growth of the break per successful brk.
    pub brk_growth: DistributionReport,
    pub latency_ns: LatencyTable,
}

pub type LatencyTable = PerSyscall<DistributionReport>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    UnreleasedMemfd,
    UnreleasedAnon,
    BrkExhausted,
    AbiExecLayout,
    Growing,
    MapFailed,
    MapCountNearLimit,
    AddressSpaceNearLimit,
}

impl FindingKind {
    /// Every kind, in the order findings of one process are listed.
    pub const ALL: [Self; 8] = [
        Self::UnreleasedMemfd,
        Self::UnreleasedAnon,
        Self::BrkExhausted,
        Self::MapFailed,
        Self::MapCountNearLimit,
        Self::AddressSpaceNearLimit,
        Self::AbiExecLayout,
        Self::Growing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnreleasedMemfd => "unreleased-memfd",
            Self::UnreleasedAnon => "unreleased-anon",
            Self::BrkExhausted => "brk-exhausted",
            Self::AbiExecLayout => "abi-exec-layout",
            Self::Growing => "growing",
            Self::MapFailed => "map-failed",
            Self::MapCountNearLimit => "map-count-near-limit",
            Self::AddressSpaceNearLimit => "address-space-near-limit",
        }
    }
}

/// Something a person should look at, in one line, with the evidence beside it. A finding
/// needs evidence of a problem: growth, a known leak pattern, exhaustion or failure, or large
/// allocations an exited process never released; what a live process holds is state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub pid: u32,
    /// What was seen, then what to do (`what_to_do`, repeated at its end).
    pub message: String,
    /// What to do about it.
    pub what_to_do: String,
    /// For the example of a program's folded processes ([`ExitedProgramReport`]): how many
    /// of those had a finding of this kind too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub also_in_folded: Option<u64>,
    #[serde(flatten)]
    pub evidence: Evidence,
}

/// The evidence fields of each kind of finding, flattened beside `kind`, `pid` and `message`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    UnreleasedMemfd {
        name: String,
        regions: u64,
        bytes: u64,
        /// Distinct memfds behind the regions.
        memfds: u64,
        perms: Vec<String>,
        first_created_ns: u64,
        last_created_ns: u64,
        /// Of `regions`: already mapped when memtrace attached (their `created_ns` is the
        /// attach), and created during the trace.
        at_attach: u64,
        during_trace: u64,
        /// What it is and the known remedy, for a recognised pattern.
        pattern: Option<String>,
        remedy: Option<String>,
    },
    UnreleasedAnon {
        regions: u64,
        bytes: u64,
        threshold: u64,
        /// Largest total first.
        sizes: Vec<SizeGroup>,
        /// The call site owning most unreleased bytes, when stacks were sampled.
        top_call_site: Option<String>,
    },
    BrkExhausted {
        failed_calls: u64,
        largest_ask: u64,
        brk_start: Option<u64>,
        brk_end: Option<u64>,
        room_total: Option<u64>,
        room_left: Option<u64>,
        bounded_by: Option<MappingRef>,
    },
    AbiExecLayout {
        filename: String,
        from_abi: &'static str,
        to_abi: &'static str,
        personality: u32,
        exe_base: u64,
        interp_base: u64,
        lowest_library: Option<u64>,
        brk_start: u64,
        above_brk: Option<MappingRef>,
        reasons: Vec<String>,
    },
    MapFailed {
        failed_calls: u64,
        largest_ask: u64,
        /// The first failure: when, and the layout then.
        first_time_ns: u64,
        mapped_bytes: u64,
        map_count: u64,
        max_map_count: Option<u64>,
        address_space_limit: Option<u64>,
        /// What ran out, as far as the limits tell: `address-space` (RLIMIT_AS), `map-count`
        /// (vm.max_map_count) or `memory` (neither limit was near).
        exhausted: &'static str,
    },
    MapCountNearLimit {
        map_count: u64,
        max_map_count: u64,
        /// Of the limit, two decimals.
        percent: f64,
    },
    AddressSpaceNearLimit {
        mapped_bytes: u64,
        address_space_limit: u64,
        percent: f64,
    },
    Growing {
        /// The group's label, as in the timeline: `memfd:doublemapper`, `anon`.
        group: String,
        /// The least-squares rate over the steady rise.
        bytes_per_s: u64,
        /// Live regions and bytes of the group at the end.
        regions: u64,
        bytes: u64,
        /// When the rise began (the group's last sample at its starting level).
        since_ns: u64,
        /// What the group gained over the rise.
        grown_bytes: u64,
        /// For anonymous memory: the call site whose own series grew most.
        top_call_site: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SizeGroup {
    pub size: u64,
    pub count: u64,
    pub bytes: u64,
}

impl SizeGroup {
    /// Groups from a count of regions per size, largest total first (then larger size).
    pub(crate) fn from_counts(by_size: impl IntoIterator<Item = (u64, u64)>) -> Vec<Self> {
        let mut groups: Vec<Self> = by_size
            .into_iter()
            .map(|(size, count)| Self {
                size,
                count,
                bytes: size * count,
            })
            .collect();
        groups.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.size.cmp(&a.size)));
        groups
    }
}
