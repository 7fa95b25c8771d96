//! The address-space model: every traced process's layout rebuilt from the event stream.
//!
//! Pure and synchronous: [`Model::apply`] takes events in order, and a report can be built
//! from the model at any point (session end, `replay --until`, a live refresh). Live capture and
//! replay feed the same events through the same code.

pub mod address_space;
pub mod anomaly;
pub mod attach;
mod backing;
pub mod brk;
pub mod call_stacks;
mod compact;
pub mod exec;
mod exited;
pub mod fds;
mod keyframe;
mod lifecycle;
pub mod limits;
pub mod memfd;
mod names;
pub mod process;
pub mod region;
pub mod stats;
mod syscalls;
mod tables;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod timeline;

use std::collections::{HashMap, HashSet};

pub use address_space::{AddressSpace, CoverageEntry};
pub use anomaly::{Anomalies, Anomaly};
pub use attach::space_from_maps;
pub use brk::{BrkFailure, BrkState, Headroom};
pub use call_stacks::{Allocated, CallStacks, StackId};
pub use exec::{ExecInfo, ImageFacts};
pub use exited::Fold;
pub use keyframe::Keyframe;
pub use limits::{Bounds, MapFailure, MapFailures};
pub use memfd::{Memfd, MemfdId, MemfdRegistry};
pub use process::{Birth, ExitInfo, Process, ProcessView};
pub use region::{page_align_up, Creation, Origin, Perms, Region, RegionKind, PAGE_SIZE};
pub use stats::{CallCounts, Distribution, DistributionSummary, SyscallName, SyscallStats};

use crate::event::{Event, EventBody, Losses};
use exited::Exited;
use lifecycle::Lookup;
use names::Names;
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
    lost: Losses,
    events: u64,
    ignored_events: u64,
    first_event_ns: Option<u64>,
    last_event_ns: u64,
    /// The last pid looked up: long runs of events from one process skip the hash map.
    recent: Option<(u32, usize)>,
    clock: Clock,
    groups: Groups,
    exited: Exited,
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
                    space: self.mms[process.mm].space_mut(),
                    process,
                    memfds: &mut self.memfds,
                    names: &mut self.names,
                };
                syscalls::apply(target, event, record);
            }
            EventBody::ExecMapping(record) => {
                if let Some(id) = self.process_for(event, Birth::Lazy) {
                    self.processes[id]
                        .activity_mut()
                        .pending_exec
                        .push(record.clone());
                }
            }
            EventBody::Fork(record) => self.fork(event, record),
            EventBody::Exec(record) => self.exec(event, record),
            EventBody::Exit(record) => self.exit(event, record),
            EventBody::Attach(record) => self.attach(event, record),
            // A keyframe repeats what the stream before it told: only a replay that starts at
            // it (a capture) learns the process from it.
            EventBody::Keyframe(record) if !self.knows_live(event.pid) => {
                self.attach(event, record)
            }
            EventBody::Keyframe(_) => {}
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
            // Kernel allocations belong to no process: kernel mode's model takes them.
            EventBody::KernelSnapshot(_) => {}
            EventBody::Container(record) => {
                if let Some(id) = self.process_for(event, Birth::Lazy) {
                    self.processes[id].activity_mut().container = Some(Box::new(record.clone()));
                }
            }
            EventBody::Limits(record) => {
                if let Some(id) = self.process_for(event, Birth::Lazy) {
                    let bounds = self.processes[id].bounds.get_or_insert_with(Box::default);
                    bounds.limits = Some(*record);
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
        // The table holds few exited processes besides the live ones (the most recent exits,
        // the folded programs' examples): a set of the live ones would cost each process more.
        self.processes
            .iter()
            .filter(|process| process.alive())
            .map(|process| self.view(process))
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
    pub fn lost(&self) -> Losses {
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

    /// Forgets the memfds nothing refers to any more: no fd, no region of any process's
    /// layout (live or at exit), no exited process's record of them.
    fn sweep_memfds(&mut self) {
        let mut referenced = HashSet::new();
        for process in self.processes.iter() {
            let regions = self.mms[process.mm].space.iter();
            referenced.extend(regions.filter_map(|region| region.memfd));
            referenced.extend(process.fds.memfds());
            referenced.extend(
                process
                    .activity()
                    .memfds_closed_at_exit
                    .iter()
                    .map(|(id, _)| *id),
            );
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
        for process in self.processes.iter_mut() {
            if !process.traced || !process.alive() {
                continue;
            }
            let space = &self.mms[process.mm].space;
            let sample = Sample::of(space, crossing.first_ns, &mut self.groups);
            let timeline = &mut process.activity_mut().timeline;
            if crossing.last_ns > crossing.first_ns {
                let mut last = sample.clone();
                last.time_ns = crossing.last_ns;
                timeline.push(sample);
                timeline.push(last);
            } else {
                timeline.push(sample);
            }
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
        let Some((tid, last_ns)) = process.activity().last_creation else {
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
        for region in self.mms[process.mm].space_mut().iter_mut() {
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
            let allocated = self.processes[id]
                .activity_mut()
                .allocated
                .entry(stack)
                .or_default();
            allocated.regions += created_regions;
            allocated.bytes += created_bytes;
        }
    }

    /// The interned call stacks regions point at.
    pub fn call_stacks(&self) -> &CallStacks {
        &self.stacks
    }
}
