//! A live tracing session: load the probes, start or attach to the target, pump the ring
//! buffer through the stream into user mode's consumer until the session ends, and hand back
//! what it saw.

mod feed;

pub(crate) use feed::{Feed, LiveConsumer};

use std::{
    ffi::OsString,
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    capture::Capture,
    cgroup::Cgroup,
    clock::{monotonic_ns, next_tick, sleep_until},
    event::Losses,
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
    /// Write the event stream to this file, checked before the session (its directory is
    /// not looked up again).
    pub record: Option<crate::output::Output>,
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
    let mut feed = Feed::new(
        Stream::new(
            stream::stderr_printer(options.print_events),
            recorder(&options, probes.backend())?,
        ),
        UserMode::new(options.user_mode.clone()),
        cgroup.is_some(),
    );
    let mut interval_ticks = options.interval.map(|period| {
        feed.consumer
            .print_intervals(interval::stderr_printer(period));
        tokio::time::interval(period)
    });
    let mut command = None;
    match &options.target {
        Target::Command(argv) => {
            let gated = GatedCommand::spawn(argv)?;
            probes.trace(gated.pid)?;
            // The gate's attach layout, read while it waits: it tells the command's parent
            // (memtrace) and its container, which no event of the command would; the exec
            // that follows replaces the layout itself.
            let _ = feed.attach(gated.pid);
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
            _ = next_tick(&mut interval_ticks) => feed.consumer.tick_interval(monotonic_ns()),
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
        user_mode: feed.consumer,
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
