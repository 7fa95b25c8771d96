//! A live tracing session: load the probes, start or attach to the target, pump the ring
//! buffer through the stream into user mode's consumer until the session ends, and hand back
//! what it saw.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    path::PathBuf,
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    capture::{Capture, Captured, Note, TaskIdentity},
    cgroup::{Cgroup, CgroupNames},
    clock::{monotonic_ns, next_tick, sleep_until},
    event::{Abi, Comm, ContainerIdentity, Event, EventBody, Losses},
    launch::{self, GatedCommand, LaunchError},
    probes::{backend::Attached, ProbeError, ProbeOptions, Probes},
    procfs,
    recording::{Mode, RecordError, RecordingHeader, RecordingWriter, WriterOptions},
    stream::{self, Stream},
    user_mode::{interval, UserMode, UserModeOptions},
};

#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command and trace it from its exec on.
    Command(Vec<OsString>),
    /// Attach to a running process.
    Pid(u32),
    /// Trace every process of a cgroup v2, now and later (`--cgroup`).
    Cgroup(Cgroup),
}

#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub target: Target,
    pub probes: ProbeOptions,
    /// Print one line per event on stderr.
    pub print_events: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write the event stream to this file.
    pub record: Option<PathBuf>,
    /// memtrace's own command line, kept in the recording.
    pub command_line: Vec<String>,
    /// `--interval`: print a block of growth on stderr every this long.
    pub interval: Option<Duration>,
    /// How user mode folds and reports.
    pub user_mode: UserModeOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    #[error("cannot trace process {0}: {1}")]
    Untraceable(u32, &'static str),
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("reading the ring buffer: {0}")]
    Ring(std::io::Error),
    #[error("reading the layout of process {0}: {1}")]
    Attach(u32, std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("--cgroup {0}: reading its processes: {1}")]
    CgroupMembers(String, std::io::Error),
}

impl SessionError {
    /// The verifier's log, when it rejected one of the programs.
    pub fn verifier_log(&self) -> Option<String> {
        match self {
            Self::Probes(error) => error.verifier_log(),
            _ => None,
        }
    }
}

/// What a finished session leaves behind.
pub struct LiveOutcome {
    pub stream: Stream,
    pub user_mode: UserMode,
    /// The command's exit status, for `memtrace -- CMD`.
    pub command_status: Option<ExitStatus>,
    /// Ring records that could not be decoded.
    pub undecodable: u64,
    /// Execs whose kernel-made mappings could not be rebuilt (their files were unreadable).
    pub unreadable_images: u64,
    /// The syscall hooks the session used.
    pub backend: Attached,
}

pub async fn run(options: LiveOptions) -> Result<LiveOutcome, SessionError> {
    // Checked before the probes load, so a session that cannot mean anything never starts.
    match &options.target {
        Target::Pid(pid) => {
            let pid = *pid;
            if !procfs::process_exists(pid) {
                return Err(SessionError::NoSuchProcess(pid));
            }
            if let Some(reason) = procfs::untraceable_reason(pid) {
                return Err(SessionError::Untraceable(pid, reason));
            }
        }
        Target::Command(_) => {
            launch::invoking_user()?;
        }
        Target::Cgroup(cgroup) => {
            cgroup.members().map_err(|error| {
                SessionError::CgroupMembers(cgroup.directory.display().to_string(), error)
            })?;
        }
    }
    // Before anything slow: a SIGTERM or Ctrl-C during the load must end the session with its
    // report, not kill memtrace outright.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SessionError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(SessionError::Signals)?;
    let mut probes = Probes::load(&options.probes)?;
    let capture = Capture::new(probes.take_events()?, probes.take_stacks()?);
    let cgroup = match &options.target {
        Target::Cgroup(cgroup) => Some(cgroup.clone()),
        _ => None,
    };
    let mut feed = Feed {
        stream: Stream::new(
            stream::stderr_printer(options.print_events),
            recorder(&options, probes.backend())?,
        ),
        user_mode: UserMode::new(options.user_mode.clone()),
        attached_at: HashMap::new(),
        containers: HashMap::new(),
        kernel_identities: HashMap::new(),
        cgroups: CgroupNames::default(),
        known: cgroup.as_ref().map(|_| HashSet::new()),
    };
    let mut interval_ticks = options.interval.map(|period| {
        feed.user_mode
            .print_intervals(interval::stderr_printer(period));
        tokio::time::interval(period)
    });
    let mut command = None;
    match &options.target {
        Target::Command(argv) => {
            let gated = GatedCommand::spawn(argv)?;
            probes.trace(gated.pid)?;
            gated.release()?;
            command = Some(gated);
        }
        Target::Pid(pid) => {
            let mut pids = vec![*pid];
            if options.probes.follow_children {
                pids.extend(procfs::descendants(*pid));
            }
            feed.seed(&mut probes, &pids, Some(*pid))?;
            // Scripts wait for this line before they make the target act.
            eprintln!(
                "memtrace: attached to {} process{} ({}); Ctrl-C to stop",
                pids.len(),
                if pids.len() == 1 { "" } else { "es" },
                pid_list(&pids)
            );
        }
        Target::Cgroup(cgroup) => {
            // The kernel side already traces every member on sight; seeding them from /proc
            // gives those already running their layout as it is now, as `--pid` does.
            let mut pids = cgroup.members().map_err(|error| {
                SessionError::CgroupMembers(cgroup.directory.display().to_string(), error)
            })?;
            if options.probes.follow_children {
                let members = pids.clone();
                pids.extend(members.into_iter().flat_map(procfs::descendants));
                pids.sort_unstable();
                pids.dedup();
            }
            feed.seed(&mut probes, &pids, None)?;
            eprintln!(
                "memtrace: attached to cgroup {} ({} process{}{}{}); Ctrl-C to stop",
                cgroup.name,
                pids.len(),
                if pids.len() == 1 { "" } else { "es" },
                if pids.is_empty() { "" } else { ": " },
                pid_list(&pids)
            );
        }
    }

    // The reader thread starts once the target is traced: from here on the rings fill.
    let mut reader = capture.spawn().map_err(SessionError::Ring)?;
    let mut child = command.map(|gated| gated.child);
    let mut child_signal = signal(SignalKind::child()).map_err(SessionError::Signals)?;
    let mut deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut command_status = None;
    let mut lost = Losses::default();
    let mut cgroup_check = cgroup.as_ref().map(|_| tokio::time::interval(CGROUP_CHECK));

    loop {
        tokio::select! {
            batch = reader.next_batch() => match batch {
                Some(batch) => feed.batch(batch),
                None => break,
            },
            _ = interrupt.recv() => {
                if child.is_none() { break; }
                // The command shares our terminal and got the Ctrl-C too: give it a moment
                // to end on its own (its exit belongs in the report), then stop regardless.
                let grace = tokio::time::Instant::now() + INTERRUPT_GRACE;
                deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
            }
            _ = terminate.recv() => break,
            _ = sleep_until(deadline) => break,
            _ = next_tick(&mut interval_ticks) => feed.user_mode.tick_interval(monotonic_ns()),
            // A quiet cgroup sends no events: its removal is noticed on this tick.
            _ = next_tick(&mut cgroup_check) => {}
            _ = child_signal.recv() => {}
        }
        if let Some(status) = reap(&mut child) {
            command_status = Some(status);
        }
        probes.flush_logs();
        lost = feed.report_new_losses(&probes, reader.stacks_dropped(), lost)?;
        feed.stream.flush_recording_if_due(Instant::now());
        let command_done = command_status.is_some() && !options.probes.follow_children;
        if command_done {
            break;
        }
        if let Some(cgroup) = &cgroup {
            // An empty cgroup may get processes later: only its removal ends the session.
            if !cgroup.exists() {
                break;
            }
        } else if probes.traced_count()? == 0 {
            // The kernel side forgets a process at its exit, a moment before its parent can
            // reap it: the command's status is on its way.
            if let Some(status) = reap_within(&mut child, REAP_WAIT).await {
                command_status = Some(status);
            }
            break;
        }
    }

    // Whatever the kernel wrote before the end still belongs to the session.
    let (rest, counts) = reader.finish();
    feed.batch(rest);
    probes.flush_logs();
    feed.report_new_losses(&probes, counts.stacks_dropped, lost)?;
    feed.stream.finish();
    // A command still running when the session ends (SIGTERM, Ctrl-C, --duration) keeps
    // running untraced, as a process strace detaches from; nobody here waits for it.
    Ok(LiveOutcome {
        stream: feed.stream,
        user_mode: feed.user_mode,
        command_status,
        undecodable: counts.undecodable,
        unreadable_images: counts.unreadable_images,
        backend: probes.backend().clone(),
    })
}

/// How long a Ctrl-C leaves the command to end on its own before the session stops.
/// Half a second: ending (drain, report, detach) must fit in the 2 s a user is promised.
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);
/// How often a `--cgroup` session looks whether its cgroup is still there (the session ends
/// when it is removed, within the 2 s a user is promised).
const CGROUP_CHECK: Duration = Duration::from_millis(500);
/// How long the session waits for the command's status once the kernel saw its last exit.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// The command's status, if it has ended (never blocks).
fn reap(child: &mut Option<Child>) -> Option<ExitStatus> {
    let status = child.as_mut()?.try_wait().ok()??;
    *child = None;
    Some(status)
}

/// The command's status, waiting up to `limit` for it.
async fn reap_within(child: &mut Option<Child>, limit: Duration) -> Option<ExitStatus> {
    let give_up = Instant::now() + limit;
    loop {
        child.as_ref()?;
        if let Some(status) = reap(child) {
            return Some(status);
        }
        if Instant::now() >= give_up {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pid_list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stream, user mode's consumer, and what the session keeps per process to feed them:
/// when each seeded process was read from `/proc`, who each is in its container, and under
/// `--cgroup` which processes memtrace knows from their beginning.
struct Feed {
    stream: Stream,
    user_mode: UserMode,
    /// Events a process made before its attach layout was read are already part of it.
    attached_at: HashMap<u32, u64>,
    /// The container identity last told for each process.
    containers: HashMap<u32, ContainerIdentity>,
    /// Who each process is as the kernel last said (its fork, its exec, a thread first seen),
    /// until the stream is told.
    kernel_identities: HashMap<u32, TaskIdentity>,
    /// The paths of the cgroup ids the kernel gives.
    cgroups: CgroupNames,
    /// With `--cgroup`: the processes seeded, or born in a fork memtrace saw; any other one
    /// joined the cgroup while running and is seeded when first seen.
    known: Option<HashSet<u32>>,
}

impl Feed {
    /// Traces `pids` and feeds each one's layout as `/proc` shows it now. A process that
    /// exits meanwhile is no longer of interest, unless it is `required` (the `--pid`).
    fn seed(
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
    fn attach(&mut self, pid: u32) -> Result<(), std::io::Error> {
        let taken_at = monotonic_ns();
        let layout = procfs::attach_layout(pid)?;
        self.attached_at.insert(pid, taken_at);
        let event = attach_event(pid, taken_at, layout);
        self.identify(&event);
        self.stream.feed(&event, &mut self.user_mode);
        Ok(())
    }

    /// Feeds what the reader captured, in order; under `--cgroup`, processes that joined
    /// the cgroup while running are seeded first ([`Self::seed_joiners`]).
    fn batch(&mut self, batch: Vec<Captured>) {
        self.seed_joiners(&batch);
        for captured in batch {
            match captured {
                Captured::Event(event) if !self.before_attach(event.pid, event.time_ns) => {
                    // An exec's mappings come before it and belong to it.
                    let exec = matches!(event.body, EventBody::Exec(_) | EventBody::ExecMapping(_));
                    if !exec {
                        self.identify(&event);
                    }
                    self.stream.feed(&event, &mut self.user_mode);
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
                Captured::Stack(stack) if !self.before_attach(stack.pid, stack.time_ns) => {
                    let told = self.user_mode.unwind(&stack);
                    self.stream.feed_all(&told, &mut self.user_mode);
                }
                _ => {}
            }
        }
        self.forget_folded();
    }

    /// Drops what is kept about processes user mode folded away: memtrace's memory follows
    /// the processes that run, not all those that ran.
    fn forget_folded(&mut self) {
        for pid in self.user_mode.take_forgotten() {
            self.attached_at.remove(&pid);
            self.containers.remove(&pid);
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
            &mut self.user_mode,
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
            .or_else(|| self.user_mode.root_of(pid).map(|root| root.to_string()))
            // Never seen alive, nor any parent it has: only `/proc` shows a chroot, and this one
            // is taken to share memtrace's root, as a process memtrace launched starts in it.
            .unwrap_or_else(|| "/".to_owned());
        ContainerIdentity {
            cgroup,
            ns_pid,
            root,
        }
    }

    /// Turns a change in the kernel's loss counters into a `Lost` event, so the loss is in the
    /// report and in the recording at the point where it happened: the kernel's losses, plus
    /// the stack samples the reader dropped (`stacks_dropped`), which both mean a call stack is
    /// unknown, never a lost event.
    fn report_new_losses(
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
                &mut self.user_mode,
            );
        }
        Ok(lost)
    }
}

fn recorder(
    options: &LiveOptions,
    backend: &Attached,
) -> Result<Option<RecordingWriter>, RecordError> {
    let Some(path) = &options.record else {
        return Ok(None);
    };
    let header = RecordingHeader::now(Mode::User, &options.command_line, Some(backend.info()));
    RecordingWriter::create(path, &header, WriterOptions::default()).map(Some)
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
