//! What a live session keeps to feed the stream: which processes were seeded from `/proc`
//! and when, who each is in its container, and under `--cgroup` which processes memtrace knows
//! from their beginning. User mode and the agent feed their consumers through it alike.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
};

use super::SessionError;
use crate::{
    capture::{Captured, Note, OomVictim, TaskIdentity},
    cgroup::CgroupNames,
    clock::monotonic_ns,
    event::{Abi, Comm, ContainerIdentity, Event, EventBody, LimitsEvent, Losses},
    probes::Probes,
    procfs,
    recording::RecordingSink,
    stream::{Consumer, Stream},
    user_mode::UserMode,
};

/// A consumer a live session can feed: user mode, or a mode built on it (the agent), which
/// unwinds stack samples and folds exited processes.
pub(crate) trait LiveConsumer: Consumer {
    fn user_mode(&mut self) -> &mut UserMode;

    /// The OOM killer chose `victim` (told only when the probes were loaded to watch for it).
    fn oom_victim(&mut self, _victim: &OomVictim) {}
}

impl LiveConsumer for UserMode {
    fn user_mode(&mut self) -> &mut UserMode {
        self
    }
}

/// The stream, user mode's consumer, and what the session keeps per process to feed them:
/// when each seeded process was read from `/proc`, who each is in its container, and under
/// `--cgroup` which processes memtrace knows from their beginning.
pub(crate) struct Feed<C, W: RecordingSink = File> {
    pub(crate) stream: Stream<W>,
    pub(crate) consumer: C,
    /// Events a process made before its attach layout was read are already part of it.
    attached_at: HashMap<u32, u64>,
    /// The container identity last told for each process.
    containers: HashMap<u32, ContainerIdentity>,
    /// The limits last told for each process, and `vm.max_map_count` (read once).
    limits: HashMap<u32, LimitsEvent>,
    max_map_count: u64,
    /// Who each process is as the kernel last said (its fork, its exec, a thread first seen),
    /// until the stream is told.
    kernel_identities: HashMap<u32, TaskIdentity>,
    /// The paths of the cgroup ids the kernel gives.
    cgroups: CgroupNames,
    /// With `--cgroup`: the processes seeded, or born in a fork memtrace saw; any other one
    /// joined the cgroup while running and is seeded when first seen.
    known: Option<HashSet<u32>>,
}

impl<C: LiveConsumer, W: RecordingSink> Feed<C, W> {
    /// `cgroup`: the session traces a cgroup, whose members may join it while running.
    pub(crate) fn new(stream: Stream<W>, consumer: C, cgroup: bool) -> Self {
        Self {
            stream,
            consumer,
            attached_at: HashMap::new(),
            containers: HashMap::new(),
            limits: HashMap::new(),
            max_map_count: procfs::max_map_count().unwrap_or(0),
            kernel_identities: HashMap::new(),
            cgroups: CgroupNames::default(),
            known: cgroup.then(HashSet::new),
        }
    }

    /// Traces `pids` and feeds each one's layout as `/proc` shows it now. A process that
    /// exits meanwhile is no longer of interest, unless it is `required` (the `--pid`).
    pub(crate) fn seed(
        &mut self,
        probes: &mut Probes,
        pids: &[u32],
        required: Option<u32>,
    ) -> Result<(), SessionError> {
        for &pid in pids {
            probes.trace(pid)?;
        }
        for &pid in pids {
            match self.attach(pid) {
                Ok(()) => {}
                Err(error) if Some(pid) == required => {
                    return Err(SessionError::Attach(pid, error))
                }
                Err(_) => {}
            }
        }
        if let Some(known) = &mut self.known {
            known.extend(pids.iter().copied());
        }
        Ok(())
    }

    /// Feeds the layout of a running process as `/proc` shows it now; its events from before
    /// this moment are part of it and are skipped.
    pub(crate) fn attach(&mut self, pid: u32) -> Result<(), std::io::Error> {
        let taken_at = monotonic_ns();
        let layout = procfs::attach_layout(pid)?;
        self.attached_at.insert(pid, taken_at);
        let event = attach_event(pid, taken_at, layout);
        self.identify(&event);
        self.stream.feed(&event, &mut self.consumer);
        Ok(())
    }

    /// Feeds what the reader captured, in order; under `--cgroup`, processes that joined
    /// the cgroup while running are seeded first ([`Self::seed_joiners`]).
    pub(crate) fn batch(&mut self, batch: Vec<Captured>) {
        self.seed_joiners(&batch);
        for captured in batch {
            match captured {
                Captured::Event(event) if !self.before_attach(event.pid, event.time_ns) => {
                    // An exec's mappings come before it and belong to it.
                    let exec = matches!(event.body, EventBody::Exec(_) | EventBody::ExecMapping(_));
                    if !exec {
                        self.identify(&event);
                    }
                    self.stream.feed(&event, &mut self.consumer);
                    if matches!(event.body, EventBody::Exec(_)) {
                        // A new image may come with a new root (`chroot DIR cmd`) or cgroup.
                        self.identify(&event);
                    }
                    if let EventBody::Exit(exit) = &event.body {
                        if exit.group_dead {
                            self.kernel_identities.remove(&event.pid);
                        }
                    }
                }
                // A thread's fork says nothing its process's identity has not; a comm told of a
                // process identified already (a rename) says nothing new either.
                Captured::Note(Note::Identity(identity)) if identity.pid == identity.tid => {
                    self.kernel_identities.insert(identity.pid, identity);
                }
                Captured::Note(Note::Comm(identity))
                    if !self.containers.contains_key(&identity.pid) =>
                {
                    self.kernel_identities.insert(identity.pid, identity);
                }
                Captured::Note(Note::OomVictim(victim)) => self.consumer.oom_victim(&victim),
                Captured::Stack(stack) if !self.before_attach(stack.pid, stack.time_ns) => {
                    let told = self.consumer.user_mode().unwind(&stack);
                    self.stream.feed_all(&told, &mut self.consumer);
                }
                _ => {}
            }
        }
        self.forget_folded();
    }

    /// Drops what is kept about processes user mode folded away: memtrace's memory follows
    /// the processes that run, not all those that ran.
    fn forget_folded(&mut self) {
        for pid in self.consumer.user_mode().take_forgotten() {
            self.attached_at.remove(&pid);
            self.containers.remove(&pid);
            self.limits.remove(&pid);
            self.kernel_identities.remove(&pid);
            if let Some(known) = &mut self.known {
                known.remove(&pid);
            }
        }
    }

    fn before_attach(&self, pid: u32, time_ns: u64) -> bool {
        self.attached_at
            .get(&pid)
            .is_some_and(|&taken_at| time_ns < taken_at)
    }

    /// With `--cgroup`: a process first seen in the middle of its life (it was moved into the
    /// cgroup) is seeded from `/proc` before its events, as an attach would; one first seen at
    /// a fork or an exec starts from there and needs nothing. A process already gone keeps
    /// only the events it left.
    fn seed_joiners(&mut self, batch: &[Captured]) {
        let Some(mut known) = self.known.take() else {
            return;
        };
        for captured in batch {
            let Captured::Event(event) = captured else {
                continue;
            };
            if let EventBody::Fork(fork) = &event.body {
                known.insert(fork.child_pid);
            }
            if event.pid == 0 || !known.insert(event.pid) {
                continue;
            }
            if !matches!(event.body, EventBody::Exec(_)) {
                let _ = self.attach(event.pid);
            }
        }
        self.known = Some(known);
    }

    /// Tells the stream who the process of `event` is in its container, when memtrace first
    /// sees it and after an exec (when that changed): the recording then carries it, and a
    /// replay elsewhere names the process the same way. Its cgroup and its pid in its own
    /// namespace are the kernel's at its fork or exec (or when one of its threads was first
    /// seen), so a process gone within milliseconds has them too; only a process memtrace
    /// attached to, whose identity the kernel has not told, is read from `/proc` while it runs.
    fn identify(&mut self, event: &Event) {
        self.tell_limits(event);
        if let EventBody::Fork(fork) = &event.body {
            if !fork.thread {
                // A pid taken again is another process.
                self.containers.remove(&fork.child_pid);
            }
            if fork.untraced {
                // Nothing of it comes: who it is is not kept for an event that never comes.
                self.kernel_identities.remove(&fork.child_pid);
            }
        }
        let exec = matches!(event.body, EventBody::Exec(_));
        if event.pid == 0 || (!exec && self.containers.contains_key(&event.pid)) {
            return;
        }
        let container = match self.kernel_identities.remove(&event.pid) {
            Some(identity) => self.container_of(&identity),
            None => match procfs::container_identity(event.pid) {
                Some(container) => container,
                None => return,
            },
        };
        if self.containers.get(&event.pid) == Some(&container) {
            return;
        }
        self.containers.insert(event.pid, container.clone());
        self.stream.feed(
            &Event {
                tid: event.pid,
                body: EventBody::Container(container),
                ..event.clone()
            },
            &mut self.consumer,
        );
    }

    /// A process's container identity from what the kernel said. Its root is read from
    /// `/proc/PID/root` (only `/proc` has it) while the process is there; once it is gone,
    /// it is the one it was last known with: its own before an exec, else its parent's at fork,
    /// where the kernel starts it, else memtrace's own.
    fn container_of(&mut self, identity: &TaskIdentity) -> ContainerIdentity {
        let pid = identity.pid;
        let cgroup = match identity.cgroup_id {
            // A kernel without the offsets for it.
            0 => procfs::container_identity(pid)
                .map(|container| container.cgroup)
                .unwrap_or_default(),
            id => match self.cgroups.path_of(id) {
                Some(path) => path.to_owned(),
                None => CgroupNames::removed_name(id),
            },
        };
        let ns_pid = match identity.ns_pid {
            0 => procfs::container_identity(pid).map_or(pid, |container| container.ns_pid),
            ns_pid => ns_pid,
        };
        let root = std::fs::read_link(format!("/proc/{pid}/root"))
            .ok()
            .map(|root| root.to_string_lossy().into_owned())
            .or_else(|| self.containers.get(&pid).map(|known| known.root.clone()))
            .or_else(|| {
                self.consumer
                    .user_mode()
                    .root_of(pid)
                    .map(|root| root.to_string())
            })
            // Never seen alive, nor any parent it has: only `/proc` shows a chroot, and this one
            // is taken to share memtrace's root, as a process memtrace launched starts in it.
            .unwrap_or_else(|| "/".to_owned());
        ContainerIdentity {
            cgroup,
            ns_pid,
            root,
        }
    }

    /// Tells the stream what bounds the process's mappings, when memtrace first sees it and
    /// after an exec (a shell's `ulimit -v` comes between its fork and the exec), read from
    /// `/proc` while it runs: the findings of exhaustion judge against them, in a replay too.
    fn tell_limits(&mut self, event: &Event) {
        let exec = matches!(event.body, EventBody::Exec(_));
        if event.pid == 0 || (!exec && self.limits.contains_key(&event.pid)) {
            return;
        }
        let Some(address_space) = procfs::address_space_limit(event.pid) else {
            return;
        };
        let limits = LimitsEvent {
            max_map_count: self.max_map_count,
            address_space,
        };
        if self.limits.insert(event.pid, limits) == Some(limits) {
            return;
        }
        self.stream.feed(
            &Event {
                tid: event.pid,
                body: EventBody::Limits(limits),
                ..event.clone()
            },
            &mut self.consumer,
        );
    }

    /// Turns a change in the kernel's loss counters into a `Lost` event, so the loss is in the
    /// report and in the recording at the point where it happened: the kernel's losses, plus
    /// the stack samples the reader dropped (`stacks_dropped`), which both mean a call stack is
    /// unknown, never a lost event.
    pub(crate) fn report_new_losses(
        &mut self,
        probes: &Probes,
        stacks_dropped: u64,
        previous: Losses,
    ) -> Result<Losses, SessionError> {
        let mut lost = probes.lost()?;
        lost.stacks_not_sampled += stacks_dropped;
        if lost != previous {
            self.stream.feed(
                &Event::of_session(monotonic_ns(), EventBody::Lost(lost)),
                &mut self.consumer,
            );
        }
        Ok(lost)
    }
}

fn attach_event(pid: u32, time_ns: u64, layout: crate::event::AttachEvent) -> Event {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| Comm::from_str_lossy(c.trim_end()))
        .unwrap_or_default();
    let abi = if procfs::is_ia32(pid) {
        Abi::I386
    } else {
        Abi::X86_64
    };
    Event {
        time_ns,
        pid,
        tid: pid,
        comm,
        abi,
        body: EventBody::Attach(layout),
    }
}
