//! One traced process (all its threads): identity, history and the state the reports need.

use std::sync::Arc;

use crate::event::{Abi, Comm, ExecMappingEvent, LimitsEvent};
use crate::model::address_space::AddressSpace;
use crate::model::anomaly::Anomalies;
use crate::model::brk::{BrkState, Headroom};
use crate::model::call_stacks::{Allocated, StackId};
use crate::model::exec::{ExecInfo, ImageFacts};
use crate::model::fds::FdTable;
use crate::model::limits::{Bounds, MapFailures};
use crate::model::memfd::{Memfd, MemfdId, MemfdRegistry};
use crate::model::region::{Origin, Region};
use crate::model::stats::SyscallStats;
use crate::model::timeline::{Groups, Timeline};

/// Index of an address space in the model: processes share one while a vfork child runs on its
/// parent's memory. 32 bits, beside the process's other small fields: every process holds
/// one, and slots are reused, so there are never more than processes held at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MmId(u32);

impl MmId {
    pub(crate) fn new(slot: usize) -> Self {
        Self(u32::try_from(slot).expect("fewer than 2^32 address spaces held at once"))
    }

    pub(crate) fn slot(self) -> usize {
        self.0 as usize
    }
}

/// How memtrace first learned of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Birth {
    /// Its parent's fork: the layout is a copy of the parent's.
    Fork,
    /// Attached to: the layout came from `/proc/PID/maps`.
    Attach,
    /// An event for a pid never seen before: what it had before is unknown.
    Lazy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub time_ns: u64,
    /// The wait status as the kernel keeps it.
    pub status: u32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Debug)]
pub struct Process {
    pub(crate) pid: u32,
    /// 0 when unknown.
    pub(crate) ppid: u32,
    pub(crate) comm: Comm,
    /// Shared: a forked child has its parent's until it execs. An `Arc<String>`, one pointer
    /// where `Arc<str>` is two: with it a process is 136 bytes, a smaller allocation.
    pub(crate) exe: Arc<String>,
    pub(crate) abi: Abi,
    pub(crate) birth: Birth,
    /// Events of its own reached us: it was traced, not only seen being forked by a traced
    /// parent (children without `--follow`).
    pub(crate) traced: bool,
    pub(crate) first_seen_ns: u64,
    pub(crate) brk: BrkState,
    pub(crate) fds: FdTable,
    pub(crate) mm: MmId,
    /// Its limits, once told, and the map calls refused with ENOMEM.
    pub(crate) bounds: Option<Box<Bounds>>,
    /// What its own events told; `None` until the first. Boxed apart: a forked child that has
    /// not run yet has only what it inherited, and a million of those must cost what that
    /// takes, not a whole process each.
    activity: Option<Box<Activity>>,
}

/// What a process's own events told about it (see [`Process::activity`]).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// The thread and time of the last syscall that may have created memory: the stack that
    /// follows it belongs to the regions it created.
    pub(crate) last_creation: Option<(u32, u64)>,
    pub(crate) execs: Vec<ExecInfo>,
    pub(crate) exit: Option<ExitInfo>,
    pub(crate) stats: SyscallStats,
    /// The kernel's mappings for an exec in progress, until its Exec event (or failure).
    pub(crate) pending_exec: Vec<ExecMappingEvent>,
    /// For each memfd mapped at exit: whether all its fds were closed by then. Taken before
    /// exit closes the process's own fds, which would make every memfd look closed.
    pub(crate) memfds_closed_at_exit: Vec<(MemfdId, bool)>,
    /// Its live memory over the session, per group.
    pub(crate) timeline: Timeline,
    /// What each sampled call stack of this process created, released since or not.
    pub(crate) allocated: std::collections::BTreeMap<StackId, Allocated>,
    /// Its container identity, once told (live: read from /proc at first sight). Boxed, like
    /// the anomalies: most processes have none.
    pub(crate) container: Option<Box<crate::event::ContainerIdentity>>,
    /// Successes the kernel cannot return, refused (see [`crate::model::anomaly`]).
    pub(crate) anomalies: Option<Box<Anomalies>>,
    /// Its mappings as the kernel counts them, at exit (its layout is compacted then).
    pub(crate) map_count_at_exit: u32,
}

/// The activity of a process none of whose events came yet.
static NO_ACTIVITY: std::sync::LazyLock<Activity> = std::sync::LazyLock::new(Activity::default);

impl Process {
    pub(crate) fn new(
        pid: u32,
        comm: Comm,
        abi: Abi,
        birth: Birth,
        time_ns: u64,
        mm: MmId,
    ) -> Self {
        Self {
            pid,
            ppid: 0,
            comm,
            exe: Arc::default(),
            abi,
            birth,
            traced: false,
            first_seen_ns: time_ns,
            brk: BrkState::default(),
            fds: FdTable::default(),
            mm,
            bounds: None,
            activity: None,
        }
    }

    /// What its own events told (all empty before the first).
    pub(crate) fn activity(&self) -> &Activity {
        self.activity.as_deref().unwrap_or(&NO_ACTIVITY)
    }

    /// The same, to change: made at the first change.
    pub(crate) fn activity_mut(&mut self) -> &mut Activity {
        self.activity.get_or_insert_with(Box::default)
    }

    /// The limits the session told for it, when it did.
    pub fn limits(&self) -> Option<&LimitsEvent> {
        self.bounds.as_ref()?.limits.as_ref()
    }

    /// Its mmap and mremap calls refused with ENOMEM.
    pub fn map_failures(&self) -> &MapFailures {
        static NONE: MapFailures = MapFailures {
            count: 0,
            largest_ask: 0,
            examples: Vec::new(),
        };
        self.bounds
            .as_ref()
            .map_or(&NONE, |bounds| &bounds.failures)
    }

    /// Records refused as impossible; the layout never saw them.
    pub fn anomalies(&self) -> &Anomalies {
        static NONE: Anomalies = Anomalies {
            count: 0,
            examples: Vec::new(),
        };
        self.activity().anomalies.as_deref().unwrap_or(&NONE)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// 0 when unknown.
    pub fn ppid(&self) -> u32 {
        self.ppid
    }

    pub fn comm(&self) -> String {
        self.comm.as_string()
    }

    /// Its container identity (cgroup, pid in its own namespace, root), when known.
    pub fn container(&self) -> Option<&crate::event::ContainerIdentity> {
        self.activity().container.as_deref()
    }

    /// The last exec's filename or the attach layout's `/proc/PID/exe`; empty when unknown.
    pub fn exe(&self) -> &str {
        &self.exe
    }

    /// The ABI the process has now (or ended with).
    pub fn abi(&self) -> Abi {
        self.abi
    }

    pub fn birth(&self) -> Birth {
        self.birth
    }

    pub fn first_seen_ns(&self) -> u64 {
        self.first_seen_ns
    }

    pub fn execs(&self) -> &[ExecInfo] {
        &self.activity().execs
    }

    pub fn exit(&self) -> Option<&ExitInfo> {
        self.activity().exit.as_ref()
    }

    pub fn alive(&self) -> bool {
        self.activity().exit.is_none()
    }

    pub fn traced(&self) -> bool {
        self.traced
    }

    pub fn stats(&self) -> &SyscallStats {
        &self.activity().stats
    }

    pub fn brk(&self) -> &BrkState {
        &self.brk
    }

    pub fn fds(&self) -> &FdTable {
        &self.fds
    }

    pub fn timeline(&self) -> &Timeline {
        &self.activity().timeline
    }
}

/// A process with its layout (now, or frozen at exit) and the session's memfds: everything a
/// report asks about one process.
#[derive(Clone, Copy)]
pub struct ProcessView<'m> {
    pub(crate) process: &'m Process,
    pub(crate) space: &'m AddressSpace,
    pub(crate) memfds: &'m MemfdRegistry,
    pub(crate) stacks: &'m crate::model::call_stacks::CallStacks,
    pub(crate) groups: &'m Groups,
}

impl<'m> ProcessView<'m> {
    pub fn process(&self) -> &'m Process {
        self.process
    }

    /// The session's timeline groups, which [`Timeline`] samples refer to.
    pub fn timeline_groups(&self) -> &'m Groups {
        self.groups
    }

    /// The build-id of a module the call stacks run through, when it was recorded.
    pub fn module_build_id(&self, path: &str) -> Option<&'m [u8]> {
        self.stacks.build_id(self.process.pid, path)
    }

    /// The JIT function at `address` of this process, as its perf map named it.
    pub fn jit_function(&self, address: u64) -> Option<&'m str> {
        self.stacks.jit_function(self.process.pid, address)
    }

    /// Whether the stack with these frames was cut short before the entry point.
    pub fn stack_truncated(&self, frames: &[u64]) -> bool {
        self.stacks.is_truncated(frames)
    }

    /// Whether any of this process's frames was named from its perf map.
    pub fn has_jit_symbols(&self) -> bool {
        // The vDSO's functions are told as JIT symbols too, but come from no perf map.
        self.stacks
            .jit_symbol_starts(self.process.pid)
            .any(|start| {
                !self.layout().region_at(start).is_some_and(|region| {
                    region.name.as_deref() == Some(crate::stacks::vdso::VDSO_NAME)
                })
            })
    }

    /// Whether this process's frames in `path` may be named (see
    /// [`CallStacks::nameable`](crate::model::call_stacks::CallStacks::nameable)).
    pub fn module_nameable(&self, path: &str) -> bool {
        self.stacks.nameable(self.process.pid, path)
    }

    /// The frames of a region's creating call stack, innermost first (empty when none was
    /// sampled).
    pub fn stack_frames(&self, region: &Region) -> &'m [u64] {
        region.stack.map_or(&[], |id| self.stacks.frames(id))
    }

    /// Everything each sampled call stack created during the session (released or not),
    /// with the stack's frames, innermost first.
    pub fn allocated_by_stack(&self) -> impl Iterator<Item = (&'m [u64], Allocated)> + 'm {
        let stacks = self.stacks;
        self.process
            .activity()
            .allocated
            .iter()
            .map(move |(&id, &allocated)| (stacks.frames(id), allocated))
    }

    pub fn layout(&self) -> &'m AddressSpace {
        self.space
    }

    /// Regions this process's own syscalls created during the session that are still mapped
    /// (at exit, or now). Copies inherited through fork belong to the parent.
    pub fn unreleased(&self) -> impl Iterator<Item = &'m Region> + 'm {
        let pid = self.process.pid;
        self.space.iter().filter(move |region| {
            region.created.origin == Origin::Syscall && region.created.pid == pid
        })
    }

    /// The session memfd behind a region.
    pub fn memfd(&self, region: &Region) -> Option<&'m Memfd> {
        region.memfd.and_then(|id| self.memfds.get(id))
    }

    /// Whether every fd of the region's memfd was closed while the region stayed mapped;
    /// `None` when the region is no session memfd's.
    pub fn memfd_fd_closed(&self, region: &Region) -> Option<bool> {
        let id = region.memfd?;
        if self.process.exit().is_some() {
            return self
                .process
                .activity()
                .memfds_closed_at_exit
                .iter()
                .find(|(memfd, _)| *memfd == id)
                .map(|&(_, closed)| closed);
        }
        self.memfds.get(id).map(|memfd| memfd.open_fds() == 0)
    }

    /// Its mappings as the kernel counts them (what `vm.max_map_count` bounds), now or at
    /// exit.
    pub fn map_count(&self) -> u64 {
        if self.process.exit().is_some() {
            return u64::from(self.process.activity().map_count_at_exit);
        }
        self.space.vma_count()
    }

    pub fn headroom(&self) -> Option<Headroom<'m>> {
        self.process.brk.headroom(self.space)
    }

    pub fn exec_facts(&self, exec: &ExecInfo) -> ImageFacts {
        exec.facts(self.space)
    }
}
