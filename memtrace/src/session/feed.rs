//! What a live session keeps to feed the stream: which processes were seeded from `/proc`
//! and when, who each is in its container, and under `--cgroup` which processes memtrace knows
//! from their beginning. User mode and the agent feed their consumers through it alike.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
};

use super::SessionError;
use crate::{
    capture::Captured,
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
    /// The parent of each child seen forked and not identified yet: a child gone before its
    /// `/proc` entry could be read is in its parent's cgroup and root, as the kernel forks it.
    forked_from: HashMap<u32, u32>,
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
            forked_from: HashMap::new(),
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
                    let exec = matches!(event.body, EventBody::Exec(_));
                    if !exec {
                        self.identify(&event);
                    }
                    self.stream.feed(&event, &mut self.consumer);
                    if exec {
                        // A new image may come with a new root (`chroot DIR cmd`) or cgroup.
                        self.identify(&event);
                    }
                }
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
            self.forked_from.remove(&pid);
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
    /// sees it and after an exec (when that changed), read from `/proc` while it runs: the
    /// recording then carries it, and a replay elsewhere names the process the same way.
    fn identify(&mut self, event: &Event) {
        self.tell_limits(event);
        if let EventBody::Fork(fork) = &event.body {
            if !fork.thread {
                self.forked_from.insert(fork.child_pid, event.pid);
            }
        }
        let exec = matches!(event.body, EventBody::Exec(_));
        if event.pid == 0 || (!exec && self.containers.contains_key(&event.pid)) {
            return;
        }
        let container = match procfs::container_identity(event.pid) {
            Some(container) => container,
            // Gone already (a short-lived child often is): its parent's cgroup and root, when
            // the parent is in the host's pid namespace, where the child's pid is its own.
            // Otherwise whether a process is told apart would depend on how fast memtrace ran.
            None => match self
                .forked_from
                .get(&event.pid)
                .and_then(|parent| Some((*parent, self.containers.get(parent)?)))
            {
                Some((parent, inherited)) if !exec && inherited.ns_pid == parent => {
                    ContainerIdentity {
                        ns_pid: event.pid,
                        ..inherited.clone()
                    }
                }
                _ => return,
            },
        };
        self.forked_from.remove(&event.pid);
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
