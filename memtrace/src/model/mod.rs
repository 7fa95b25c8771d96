//! The address-space model: every traced process's layout rebuilt from the event stream.
//!
//! Pure and synchronous: [`Model::apply`] takes events in order, and a report can be built
//! from the model at any point (session end, `replay --until`, a live refresh). Live capture and
//! replay feed the same events through the same code.

pub mod address_space;
pub mod anomaly;
mod backing;
pub mod brk;
pub mod call_stacks;
mod compact;
pub mod exec;
mod exited;
pub mod fds;
pub mod memfd;
mod names;
pub mod process;
pub mod region;
pub mod snapshot;
pub mod stats;
mod syscalls;
mod tables;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod timeline;

use std::collections::{BTreeSet, HashMap, HashSet};

pub use address_space::{AddressSpace, CoverageEntry};
pub use anomaly::{Anomalies, Anomaly};
pub use brk::{BrkFailure, BrkState, Headroom};
pub use call_stacks::{Allocated, CallStacks, StackId};
pub use exec::{ExecInfo, ImageFacts};
pub use exited::Fold;
pub use memfd::{Memfd, MemfdId, MemfdRegistry};
pub use process::{Birth, ExitInfo, Process, ProcessView};
pub use region::{page_align_up, Creation, Origin, Perms, Region, RegionKind, PAGE_SIZE};
pub use snapshot::space_from_maps;
pub use stats::{CallCounts, Distribution, DistributionSummary, SyscallName, SyscallStats};

use crate::event::{
    Abi, Event, EventBody, ExecRecord, ExitRecord, ForkRecord, LostRecord, SnapshotRecord,
};
use exited::Exited;
use names::Names;
use process::MmId;
use syscalls::SyscallTarget;
use tables::{MmTable, ProcessTable};
use timeline::{Clock, Crossing, Groups, Sample};

#[derive(Debug, Default)]
pub struct Model {
    /// Every process seen and not folded away, in order of first appearance; a reused pid gets
    /// a new entry.
    processes: ProcessTable,
    mms: MmTable,
    /// The latest process with each pid.
    by_pid: HashMap<u32, usize>,
    memfds: MemfdRegistry,
    names: Names,
    stacks: CallStacks,
    lost: LostRecord,
    events: u64,
    ignored_events: u64,
    first_event_ns: Option<u64>,
    last_event_ns: u64,
    /// The last pid looked up: long runs of events from one process skip the hash map.
    recent: Option<(u32, usize)>,
    /// Processes not yet exited: the ones the timeline samples.
    live: BTreeSet<usize>,
    clock: Clock,
    groups: Groups,
    exited: Exited,
}

/// Where an event's pid leads.
enum Lookup {
    Current(usize),
    /// The process exited after this event was made: a straggler, too late to change anything.
    Late(usize),
    /// An event of a process folded away since its exit: as late as [`Lookup::Late`], with
    /// nothing left to apply it to.
    Folded,
    /// Never seen, or seen and gone before this event (the pid was reused).
    Missing,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, event: &Event) {
        if self.memfds.sweep_due() {
            self.sweep_memfds();
        }
        self.events += 1;
        self.first_event_ns.get_or_insert(event.time_ns);
        self.last_event_ns = self.last_event_ns.max(event.time_ns);
        // Before the event: the state at the boundaries it crossed.
        if let Some(crossing) = self.clock.advance(event.time_ns) {
            self.sample_live(crossing);
        }
        match &event.body {
            EventBody::Syscall(record) => {
                let Some(id) = self.process_for(event, Birth::Lazy) else {
                    return;
                };
                let process = &mut self.processes[id];
                let target = SyscallTarget {
                    space: &mut self.mms[process.mm].space,
                    process,
                    memfds: &mut self.memfds,
                    names: &mut self.names,
                };
                syscalls::apply(target, event, record);
            }
            EventBody::ExecMapping(record) => {
                if let Some(id) = self.process_for(event, Birth::Lazy) {
                    self.processes[id].pending_exec.push(record.clone());
                }
            }
            EventBody::Fork(record) => self.fork(event, record),
            EventBody::Exec(record) => self.exec(event, record),
            EventBody::Exit(record) => self.exit(event, record),
            EventBody::Snapshot(record) => self.snapshot(event, record),
            EventBody::Stack(record) => {
                self.attach_stack(event, &record.frames);
                if record.truncated {
                    self.stacks.mark_truncated(&record.frames);
                }
            }
            EventBody::Module(record) => {
                self.stacks
                    .record_module(event.pid, &record.path, &record.build_id)
            }
            EventBody::JitSymbol(record) => self.stacks.record_jit_symbol(event.pid, record),
            // Kernel allocations belong to no process: the pipeline's kernel model takes them.
            EventBody::KernelSnapshot(_) => {}
            EventBody::Container(record) => {
                if let Some(id) = self.process_for(event, Birth::Lazy) {
                    self.processes[id].container = Some(Box::new(record.clone()));
                }
            }
            EventBody::Lost(record) => {
                // Totals, not increments; taking the larger guards against reordering.
                self.lost.ring_full = self.lost.ring_full.max(record.ring_full);
                self.lost.pending_full = self.lost.pending_full.max(record.pending_full);
                self.lost.stacks_not_sampled =
                    self.lost.stacks_not_sampled.max(record.stacks_not_sampled);
            }
        }
    }

    /// Every process seen, in order of first appearance, with its layout now (or at exit).
    /// Includes children only seen being forked; [`Process::traced`] tells them apart.
    pub fn processes(&self) -> impl Iterator<Item = ProcessView<'_>> + '_ {
        self.processes.iter().map(|process| self.view(process))
    }

    /// Processes the model holds now: the live ones, the exited ones not folded away, and
    /// children only seen being forked.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// The processes that have not exited, in order of first appearance.
    pub fn live_processes(&self) -> impl Iterator<Item = ProcessView<'_>> + '_ {
        self.live.iter().map(|&id| self.view(&self.processes[id]))
    }

    /// The latest process with this pid.
    pub fn process(&self, pid: u32) -> Option<ProcessView<'_>> {
        let &id = self.by_pid.get(&pid)?;
        Some(self.view(&self.processes[id]))
    }

    pub fn memfds(&self) -> &MemfdRegistry {
        &self.memfds
    }

    /// The latest loss totals the event stream reported.
    pub fn lost(&self) -> LostRecord {
        self.lost
    }

    /// Events applied so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events that arrived for a process after its exit and were not applied.
    pub fn ignored_events(&self) -> u64 {
        self.ignored_events
    }

    pub fn first_event_ns(&self) -> Option<u64> {
        self.first_event_ns
    }

    pub fn last_event_ns(&self) -> u64 {
        self.last_event_ns
    }

    fn view<'m>(&'m self, process: &'m Process) -> ProcessView<'m> {
        ProcessView {
            process,
            space: &self.mms[process.mm].space,
            memfds: &self.memfds,
            stacks: &self.stacks,
            groups: &self.groups,
        }
    }

    /// Folds away the exited processes beyond the `keep` that exited last, oldest first:
    /// `fold` is shown each one (with its layout at exit, for its report) and says whether it
    /// goes or stays in full anyway; one that stays is not shown again. Returns the pids of the
    /// processes folded away that no newer process has taken, whose per-pid state elsewhere
    /// can go too.
    ///
    /// Cheap when there is nothing to fold: call it after every event, so that what is folded
    /// depends on the events alone and a replay folds what the live session folded.
    pub fn fold_exited(
        &mut self,
        keep: usize,
        fold: &mut dyn FnMut(ProcessView<'_>) -> Fold,
    ) -> Vec<u32> {
        let mut forgotten = Vec::new();
        while self.exited.queue.len() > keep {
            let Some(id) = self.exited.queue.pop_front() else {
                break;
            };
            if fold(self.view(&self.processes[id])) == Fold::Keep {
                continue;
            }
            let Some(process) = self.processes.remove(id) else {
                continue;
            };
            self.mms.release(process.mm);
            self.live.remove(&id);
            if self.recent.is_some_and(|(_, recent)| recent == id) {
                self.recent = None;
            }
            if self.by_pid.get(&process.pid) == Some(&id) {
                self.by_pid.remove(&process.pid);
                self.stacks.forget_process(process.pid);
                let exit_ns = process.exit.map_or(self.last_event_ns, |exit| exit.time_ns);
                self.exited.forget(process.pid, exit_ns, self.last_event_ns);
                forgotten.push(process.pid);
            }
        }
        forgotten
    }

    /// Forgets the memfds nothing refers to any more: no fd, no region of any process's
    /// layout (live or at exit), no exited process's record of them.
    fn sweep_memfds(&mut self) {
        let mut referenced = HashSet::new();
        for process in self.processes.iter() {
            let regions = self.mms[process.mm].space.iter();
            referenced.extend(regions.filter_map(|region| region.memfd));
            referenced.extend(process.fds.memfds());
            referenced.extend(process.memfds_closed_at_exit.iter().map(|(id, _)| *id));
        }
        self.memfds.sweep(&referenced);
    }

    /// The step the timeline samples at now.
    pub fn timeline_step_ns(&self) -> u64 {
        self.clock.step_ns()
    }

    pub fn timeline_groups(&self) -> &Groups {
        &self.groups
    }

    fn sample_live(&mut self, crossing: Crossing) {
        for &id in &self.live {
            let process = &mut self.processes[id];
            if !process.traced {
                continue;
            }
            let space = &self.mms[process.mm].space;
            let sample = Sample::of(space, crossing.first_ns, &mut self.groups);
            if crossing.last_ns > crossing.first_ns {
                let mut last = sample.clone();
                last.time_ns = crossing.last_ns;
                process.timeline.push(sample);
                process.timeline.push(last);
            } else {
                process.timeline.push(sample);
            }
        }
    }

    fn lookup(&mut self, pid: u32, time_ns: u64) -> Lookup {
        let id = match self.recent {
            Some((recent_pid, id)) if recent_pid == pid => id,
            _ => match self.by_pid.get(&pid) {
                Some(&id) => id,
                None if self.exited.is_straggler(pid, time_ns) => return Lookup::Folded,
                None => return Lookup::Missing,
            },
        };
        self.recent = Some((pid, id));
        match self.processes[id].exit {
            None => Lookup::Current(id),
            Some(exit) if time_ns <= exit.time_ns => Lookup::Late(id),
            Some(_) => Lookup::Missing,
        }
    }

    /// The live process an event belongs to, created if unknown; `None` for a straggler.
    fn process_for(&mut self, event: &Event, birth: Birth) -> Option<usize> {
        match self.lookup(event.pid, event.time_ns) {
            Lookup::Current(id) => {
                self.touch(id, event);
                Some(id)
            }
            Lookup::Late(_) | Lookup::Folded => {
                self.ignored_events += 1;
                None
            }
            Lookup::Missing => {
                let id = self.create_process(event, event.pid, birth);
                self.touch(id, event);
                Some(id)
            }
        }
    }

    /// What any event of its own tells about its process, starting with: it is traced.
    fn touch(&mut self, id: usize, event: &Event) {
        let process = &mut self.processes[id];
        process.traced = true;
        // Threads may carry their own names; the process is named by its main thread.
        if event.tid == event.pid {
            process.comm = event.comm;
        }
        if process.abi == Abi::Unknown {
            process.abi = event.abi;
        }
    }

    fn create_process(&mut self, event: &Event, pid: u32, birth: Birth) -> usize {
        let mm = self.new_mm(AddressSpace::new());
        let process = Process::new(pid, event.comm, event.abi, birth, event.time_ns, mm);
        self.add_process(process)
    }

    fn add_process(&mut self, process: Process) -> usize {
        let pid = process.pid;
        let id = self.processes.push(process);
        self.exited.reused(pid);
        self.live.insert(id);
        self.by_pid.insert(pid, id);
        self.recent = Some((pid, id));
        id
    }

    fn new_mm(&mut self, space: AddressSpace) -> MmId {
        self.mms.add(space)
    }

    /// Gives a process a new layout (exec, snapshot). A layout still used by a vfork parent
    /// stays with the parent.
    fn install_space(&mut self, id: usize, space: AddressSpace) {
        let mm = self.processes[id].mm;
        if self.mms[mm].users > 1 {
            self.mms[mm].users -= 1;
            self.processes[id].mm = self.new_mm(space);
        } else {
            self.mms[mm].space = space;
        }
    }

    fn fork(&mut self, event: &Event, record: &ForkRecord) {
        // A parent that exited since still forked: its child is real.
        let parent = match self.lookup(event.pid, event.time_ns) {
            Lookup::Current(id) => {
                self.touch(id, event);
                id
            }
            Lookup::Late(id) => id,
            // Its events are no longer applied; a child that is traced is met at its own.
            Lookup::Folded => return,
            Lookup::Missing => self.create_process(event, event.pid, Birth::Lazy),
        };
        // A child memtrace will not trace (no --follow) would be a copy of its parent's
        // layout kept for nothing: nothing of it ever comes, not even its exit.
        if record.thread || record.untraced {
            return;
        }
        let existing = self.by_pid.get(&record.child_pid).copied();
        match existing {
            Some(child)
                if self.processes[child].alive() && self.processes[child].birth == Birth::Lazy =>
            {
                self.adopt_child(parent, child);
            }
            _ => self.spawn_child(event, parent, record),
        }
    }

    fn spawn_child(&mut self, event: &Event, parent: usize, record: &ForkRecord) {
        let parent_mm = self.processes[parent].mm;
        let mm = if record.shares_mm && self.processes[parent].alive() {
            self.mms[parent_mm].users += 1;
            parent_mm
        } else {
            let copy = self.mms[parent_mm].space.clone();
            self.new_mm(copy)
        };
        let parent = &self.processes[parent];
        let mut child = Process::new(
            record.child_pid,
            parent.comm,
            parent.abi,
            Birth::Fork,
            event.time_ns,
            mm,
        );
        child.ppid = parent.pid;
        child.exe = parent.exe.clone();
        child.brk = parent.brk.inherit();
        child.fds = parent.fds.inherit(&mut self.memfds);
        self.add_process(child);
    }

    /// The fork of a child whose own events came first (they were delivered out of order):
    /// it ran on a copy of the parent, with its own changes on top.
    fn adopt_child(&mut self, parent: usize, child: usize) {
        let parent_pid = self.processes[parent].pid;
        let parent_mm = self.processes[parent].mm;
        let inherited_fds = self.processes[parent].fds.inherit(&mut self.memfds);
        let inherited_brk = self.processes[parent].brk.inherit();
        let child_mm = self.processes[child].mm;
        let own = std::mem::take(&mut self.mms[child_mm].space);
        let mut space = self.mms[parent_mm].space.clone();
        for region in own.iter() {
            space.map(region.clone());
        }
        self.mms[child_mm].space = space;
        let process = &mut self.processes[child];
        process.ppid = parent_pid;
        process.birth = Birth::Fork;
        process.fds.adopt_inherited(inherited_fds, &mut self.memfds);
        if process.brk.current().is_none() {
            process.brk = inherited_brk;
        }
    }

    /// A stack follows the syscall it belongs to: it goes to the regions that syscall of the
    /// same thread created.
    fn attach_stack(&mut self, event: &Event, frames: &[u64]) {
        // A sample read after its process's exit record still names a syscall made before the
        // exit (samples travel in a ring of their own, read at another moment): it belongs to
        // the exited process, whose regions are kept for the report.
        let id = match self.lookup(event.pid, event.time_ns) {
            Lookup::Late(id) => id,
            Lookup::Folded => return,
            _ => match self.process_for(event, Birth::Lazy) {
                Some(id) => id,
                None => return,
            },
        };
        let process = &self.processes[id];
        let Some((tid, last_ns)) = process.last_creation else {
            return;
        };
        // A sample carries its syscall's own time, so it names its creation wherever it
        // arrives in the stream (samples travel in a ring of their own). Recordings made before
        // that stamped it later, and placed it right after its syscall: the thread's last.
        let time_ns = if event.time_ns <= last_ns {
            event.time_ns
        } else if tid == event.tid {
            last_ns
        } else {
            return;
        };
        if frames.is_empty() {
            return;
        }
        let stack = self.stacks.intern(frames);
        let pid = process.pid;
        let mut created_bytes = 0;
        let mut created_regions = 0;
        for region in self.mms[process.mm].space.iter_mut() {
            let created = &region.created;
            if created.origin == Origin::Syscall && created.time_ns == time_ns && created.pid == pid
            {
                region.stack = Some(stack);
                created_regions += 1;
                created_bytes += region.len();
            }
        }
        // Counted now, while the regions exist: a later munmap removes them from the layout
        // but not from what the call site allocated.
        if created_regions > 0 {
            let allocated = self.processes[id].allocated.entry(stack).or_default();
            allocated.regions += created_regions;
            allocated.bytes += created_bytes;
        }
    }

    /// The interned call stacks regions point at.
    pub fn call_stacks(&self) -> &CallStacks {
        &self.stacks
    }

    fn exec(&mut self, event: &Event, record: &ExecRecord) {
        // An exec event carries the ABI execve was called from (the kernel has switched the
        // task to the new image's mode by then; the probe takes the caller's from the
        // syscall's entry). Fall back on what the process was known to be.
        let known_abi = match self.lookup(event.pid, event.time_ns) {
            Lookup::Current(id) => self.processes[id].abi,
            Lookup::Late(_) | Lookup::Folded | Lookup::Missing => Abi::Unknown,
        };
        let from_abi = if event.abi == Abi::Unknown {
            known_abi
        } else {
            event.abi
        };
        let Some(id) = self.process_for(event, Birth::Lazy) else {
            return;
        };
        let process = &mut self.processes[id];
        if let Some(previous) = process.execs.last_mut() {
            previous.supersede(&self.mms[process.mm].space);
        }
        let pending = std::mem::take(&mut process.pending_exec);
        let created = Creation {
            origin: Origin::Exec,
            time_ns: event.time_ns,
            syscall: None,
            pid: process.pid,
        };
        let space = exec::build_image(&pending, record, created, &self.memfds, &mut self.names);
        let info = exec::exec_info(record, &space, event.time_ns, from_abi);
        self.install_space(id, space);
        let process = &mut self.processes[id];
        process.execs.push(info);
        if record.new_abi != Abi::Unknown {
            process.abi = record.new_abi;
        }
        process.exe = record.filename.clone();
        process.comm = event.comm;
        process
            .brk
            .reset(record.layout.start_brk, record.layout.brk);
        process.fds.close_on_exec(&mut self.memfds);
    }

    fn exit(&mut self, event: &Event, record: &ExitRecord) {
        let Some(id) = self.process_for(event, Birth::Lazy) else {
            return;
        };
        // Kernels whose sched_process_exit lacks group_dead may report the last exit twice
        // when two threads exit at once (probes::kernel_differences): the first one counts.
        if !record.group_dead || self.processes[id].exit.is_some() {
            return;
        }
        let mm = self.processes[id].mm;
        let mut closed: Vec<(MemfdId, bool)> = self.mms[mm]
            .space
            .iter()
            .filter_map(|region| region.memfd)
            .map(|memfd| {
                let open = self.memfds.get(memfd).map_or(0, Memfd::open_fds);
                (memfd, open == 0)
            })
            .collect();
        closed.sort_unstable();
        closed.dedup();
        let process = &mut self.processes[id];
        process.memfds_closed_at_exit = closed;
        process.fds.close_all(&mut self.memfds);
        // Compacted to what the report needs: memory grows with live processes, not with
        // the ones come and gone.
        process.pending_exec = Vec::new();
        process.stats.compact();
        process.exit = Some(ExitInfo {
            time_ns: event.time_ns,
            status: record.status,
            code: record.exit_code(),
            signal: record.signal(),
        });
        // Freeze the layout: one still in use by another process is copied for this one.
        if self.mms[mm].users > 1 {
            self.mms[mm].users -= 1;
            let frozen = self.mms[mm].space.clone();
            self.processes[id].mm = self.new_mm(frozen);
        }
        self.mms[self.processes[id].mm].users = 0;
        self.live.remove(&id);
        if self.processes[id].traced {
            self.exited.queue.push_back(id);
            let sample = Sample::of(
                &self.mms[self.processes[id].mm].space,
                event.time_ns,
                &mut self.groups,
            );
            self.processes[id].timeline.push(sample);
        }
        self.processes[id].timeline.shrink_to_fit();
        let process = &self.processes[id];
        if process.birth == Birth::Fork && process.execs.is_empty() {
            compact::inherited_copy(
                &mut self.mms[process.mm].space,
                process.pid,
                &process.brk,
                &self.stacks,
            );
        }
        // From now on the layout is only read (reports, late stack samples).
        self.mms[process.mm].space.freeze();
    }

    fn snapshot(&mut self, event: &Event, record: &SnapshotRecord) {
        let Some(id) = self.process_for(event, Birth::Snapshot) else {
            return;
        };
        let created = Creation {
            origin: Origin::Snapshot,
            time_ns: event.time_ns,
            syscall: None,
            pid: event.pid,
        };
        // Memfds mapped at attach join the registry by inode, so their mappings and the fds
        // still open on them are tracked like the session's own.
        for region in &record.regions {
            if region.inode == 0 {
                continue;
            }
            if let Some(name) = memfd::region_name_from_path(&region.name) {
                self.memfds.seen_at_attach(
                    &name,
                    region.inode,
                    event.time_ns,
                    event.pid,
                    &mut self.names,
                );
            }
        }
        let space = snapshot::build_space(&record.regions, created, &self.memfds, &mut self.names);
        self.install_space(id, space);
        let process = &mut self.processes[id];
        for fd in &record.memfd_fds {
            if let Some(memfd) = self.memfds.by_inode(fd.inode) {
                process.fds.open(fd.fd, memfd, fd.cloexec, &mut self.memfds);
            }
        }
        if process.birth == Birth::Lazy {
            process.birth = Birth::Snapshot;
        }
        process.ppid = record.ppid;
        process.exe = record.exe.clone();
        process.brk.reset(record.start_brk, record.brk);
    }
}
