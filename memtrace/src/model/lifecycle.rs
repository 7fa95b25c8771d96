//! A process's life in the model: first sight (fork, attach, or an event from nowhere), exec,
//! exit, and being folded away once it is past the most recent exits. The model's own state
//! lives in its module; this is the part of it that creates and retires processes.

use std::sync::Arc;

use super::{
    attach, compact, exec, memfd, process::MmId, timeline::Sample, AddressSpace, Birth, Creation,
    ExitInfo, Fold, Memfd, MemfdId, Model, Origin, Process, ProcessView,
};
use crate::event::{Abi, AttachEvent, Event, ExecEvent, ExitEvent, ForkEvent};

/// Where an event's pid leads.
pub(super) enum Lookup {
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
            if self.recent.is_some_and(|(_, recent)| recent == id) {
                self.recent = None;
            }
            if self.by_pid.get(&process.pid) == Some(&id) {
                self.by_pid.remove(&process.pid);
                self.stacks.forget_process(process.pid);
                let exit_ns = process
                    .exit()
                    .map_or(self.last_event_ns, |exit| exit.time_ns);
                self.exited.forget(process.pid, exit_ns, self.last_event_ns);
                forgotten.push(process.pid);
            }
        }
        forgotten
    }

    pub(super) fn lookup(&mut self, pid: u32, time_ns: u64) -> Lookup {
        let id = match self.recent {
            Some((recent_pid, id)) if recent_pid == pid => id,
            _ => match self.by_pid.get(&pid) {
                Some(&id) => id,
                None if self.exited.is_straggler(pid, time_ns) => return Lookup::Folded,
                None => return Lookup::Missing,
            },
        };
        self.recent = Some((pid, id));
        match self.processes[id].exit().copied() {
            None => Lookup::Current(id),
            Some(exit) if time_ns <= exit.time_ns => Lookup::Late(id),
            Some(_) => Lookup::Missing,
        }
    }

    /// The live process an event belongs to, created if unknown; `None` for a straggler.
    pub(super) fn process_for(&mut self, event: &Event, birth: Birth) -> Option<usize> {
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
    pub(super) fn touch(&mut self, id: usize, event: &Event) {
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

    pub(super) fn create_process(&mut self, event: &Event, pid: u32, birth: Birth) -> usize {
        let mm = self.new_mm(AddressSpace::new());
        let process = Process::new(pid, event.comm, event.abi, birth, event.time_ns, mm);
        self.add_process(process)
    }

    pub(super) fn add_process(&mut self, process: Process) -> usize {
        let pid = process.pid;
        let id = self.processes.push(process);
        self.exited.reused(pid);
        self.by_pid.insert(pid, id);
        self.recent = Some((pid, id));
        id
    }

    pub(super) fn new_mm(&mut self, space: AddressSpace) -> MmId {
        self.mms.add(std::sync::Arc::new(space))
    }

    /// Gives a process a new layout (exec, attach). A layout still used by a vfork parent
    /// stays with the parent.
    pub(super) fn install_space(&mut self, id: usize, space: AddressSpace) {
        let mm = self.processes[id].mm;
        if self.mms[mm].users > 1 {
            self.mms[mm].users -= 1;
            self.processes[id].mm = self.new_mm(space);
        } else {
            self.mms[mm].space = std::sync::Arc::new(space);
        }
    }

    pub(super) fn fork(&mut self, event: &Event, record: &ForkEvent) {
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

    pub(super) fn spawn_child(&mut self, event: &Event, parent: usize, record: &ForkEvent) {
        let parent_mm = self.processes[parent].mm;
        let mm = if record.shares_mm && self.processes[parent].alive() {
            self.mms[parent_mm].users += 1;
            parent_mm
        } else {
            // Shared until one of them changes it.
            self.mms.add(self.mms[parent_mm].space.clone())
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
        // Limits are inherited; the failures are the parent's own.
        if let Some(limits) = parent.limits() {
            child.bounds = Some(Box::new(super::Bounds {
                limits: Some(*limits),
                ..super::Bounds::default()
            }));
        }
        self.add_process(child);
    }

    /// The fork of a child whose own events came first (they were delivered out of order):
    /// it ran on a copy of the parent, with its own changes on top.
    pub(super) fn adopt_child(&mut self, parent: usize, child: usize) {
        let parent_pid = self.processes[parent].pid;
        let parent_mm = self.processes[parent].mm;
        let inherited_fds = self.processes[parent].fds.inherit(&mut self.memfds);
        let inherited_brk = self.processes[parent].brk.inherit();
        let child_mm = self.processes[child].mm;
        let own = std::mem::take(&mut self.mms[child_mm].space);
        let mut space = AddressSpace::clone(&self.mms[parent_mm].space);
        for region in own.iter() {
            space.map(region.clone());
        }
        self.mms[child_mm].space = std::sync::Arc::new(space);
        let process = &mut self.processes[child];
        process.ppid = parent_pid;
        process.birth = Birth::Fork;
        process.fds.adopt_inherited(inherited_fds, &mut self.memfds);
        if process.brk.current().is_none() {
            process.brk = inherited_brk;
        }
    }

    pub(super) fn exec(&mut self, event: &Event, record: &ExecEvent) {
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
        let mm = process.mm;
        let activity = process.activity_mut();
        if let Some(previous) = activity.execs.last_mut() {
            previous.supersede(&self.mms[mm].space);
        }
        let pending = std::mem::take(&mut activity.pending_exec);
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
        process.activity_mut().execs.push(info);
        if record.new_abi != Abi::Unknown {
            process.abi = record.new_abi;
        }
        process.exe = Arc::new(record.filename.clone());
        process.comm = event.comm;
        process
            .brk
            .reset(record.layout.start_brk, record.layout.brk);
        process.fds.close_on_exec(&mut self.memfds);
    }

    pub(super) fn exit(&mut self, event: &Event, record: &ExitEvent) {
        let Some(id) = self.process_for(event, Birth::Lazy) else {
            return;
        };
        // Kernels whose sched_process_exit lacks group_dead may report the last exit twice
        // when two threads exit at once (probes::kernel_differences): the first one counts.
        if !record.group_dead || !self.processes[id].alive() {
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
        let map_count = self.mms[mm].space.vma_count();
        let process = &mut self.processes[id];
        process.fds.close_all(&mut self.memfds);
        let activity = process.activity_mut();
        activity.map_count_at_exit = u32::try_from(map_count).unwrap_or(u32::MAX);
        activity.memfds_closed_at_exit = closed;
        // Compacted to what the report needs: memory grows with live processes, not with
        // the ones come and gone.
        activity.pending_exec = Vec::new();
        activity.stats.compact();
        activity.exit = Some(ExitInfo {
            time_ns: event.time_ns,
            status: record.status,
            code: record.exit_code(),
            signal: record.signal(),
        });
        // Freeze the layout: one still in use by another process is copied for this one.
        if self.mms[mm].users > 1 {
            self.mms[mm].users -= 1;
            let frozen = self.mms[mm].space.clone();
            self.processes[id].mm = self.mms.add(frozen);
        }
        self.mms[self.processes[id].mm].users = 0;
        if self.processes[id].traced {
            self.exited.queue.push_back(id);
            let sample = Sample::of(
                &self.mms[self.processes[id].mm].space,
                event.time_ns,
                &mut self.groups,
            );
            self.processes[id].activity_mut().timeline.push(sample);
        }
        self.processes[id].activity_mut().timeline.shrink_to_fit();
        let process = &self.processes[id];
        if process.birth == Birth::Fork && process.execs().is_empty() {
            compact::inherited_copy(
                self.mms[process.mm].space_mut(),
                process.pid,
                &process.brk,
                &self.stacks,
            );
        }
        // From now on the layout is only read (reports, late stack samples).
        self.mms[process.mm].space_mut().freeze();
    }

    pub(super) fn attach(&mut self, event: &Event, record: &AttachEvent) {
        let Some(id) = self.process_for(event, Birth::Attach) else {
            return;
        };
        let created = Creation {
            origin: Origin::Attach,
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
        let space = attach::build_space(&record.regions, created, &self.memfds, &mut self.names);
        self.install_space(id, space);
        let process = &mut self.processes[id];
        for fd in &record.memfd_fds {
            if let Some(memfd) = self.memfds.by_inode(fd.inode) {
                process.fds.open(fd.fd, memfd, fd.cloexec, &mut self.memfds);
            }
        }
        if process.birth == Birth::Lazy {
            process.birth = Birth::Attach;
        }
        process.ppid = record.ppid;
        process.exe = Arc::new(record.exe.clone());
        process.brk.reset(record.start_brk, record.brk);
    }
}
