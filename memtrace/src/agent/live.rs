//! The agent's loop: every process of the host (or of a cgroup) traced from its fork, the
//! stream fed to the agent's consumer, keyframes at intervals, the triggers evaluated once a
//! second, and captures written on a thread of their own so that the events never wait.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::{
    capture::{write_capture, CaptureDir, CaptureError, CaptureInput, Stored},
    flight::FlightRecorder,
    http::{Server, ServerOptions},
    http_handoff::{handoff, Queue},
    kernel_watch::{run_kernel_window, KernelWatch},
    mode::{allocated_bytes, AgentMode, TriggerOptions},
    scrape::{answer, AgentCounters},
    triggers::{Fired, RateLimit, TriggerKind, Verdict},
};
use crate::{
    capture::Capture,
    cgroup::Cgroup,
    clock::{monotonic_ns, sleep_until},
    escape,
    event::Losses,
    probes::{ProbeOptions, Probes},
    procfs,
    recording::{Mode, RecordingHeader},
    session::Feed,
    stream::Stream,
    user_mode::{UserMode, UserModeOptions},
};

/// What the agent watches.
#[derive(Clone, Debug)]
pub enum AgentTarget {
    /// Every process of the host.
    System,
    /// Every process of these cgroups v2 (`--cgroup`, `--unit`; at most
    /// `memtrace_common::MAX_CGROUPS`).
    Cgroups(Vec<Cgroup>),
}

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub target: AgentTarget,
    pub probes: ProbeOptions,
    pub capture_dir: PathBuf,
    /// `--history`, `--history-bytes`: what the flight recorder keeps.
    pub history: Duration,
    pub history_bytes: u64,
    /// How often a keyframe starts a new segment of history.
    pub keyframe_interval: Duration,
    /// How much history before the trigger a capture holds (at least).
    pub capture_window: Duration,
    pub triggers: TriggerOptions,
    /// At most one capture per trigger kind and process in this long.
    pub cooldown: Duration,
    pub max_captures: usize,
    pub max_capture_bytes: u64,
    /// How long kernel mode runs when the kernel trigger fires, and the rise that fires it.
    pub kernel_window: Duration,
    pub kernel_growth_bytes: u64,
    /// Stop after this long (tests, and a bounded run by hand); otherwise until SIGTERM.
    pub duration: Option<Duration>,
    pub keep_exited: usize,
    pub command_line: Vec<String>,
    /// `--listen`: where /metrics and the pprof endpoints are served (none: not served).
    pub listen: Option<std::net::SocketAddr>,
    /// `--metrics-top`: processes with series of their own, by allocated bytes.
    pub metrics_top: usize,
    /// `vm.max_map_count`, for the metrics.
    pub max_map_count: Option<u64>,
}

/// What the agent did, when it stops.
#[derive(Debug, Default)]
pub struct AgentOutcome {
    pub events: u64,
    pub captures: u64,
    pub lost: Losses,
}

/// How often the triggers look at the model, the kernel's totals and the losses.
const EVALUATION_PERIOD: Duration = Duration::from_secs(1);
/// Captures waiting for the one being written, at most; beyond, a trigger is skipped.
const MAX_QUEUED_CAPTURES: usize = 8;
/// How long a stopping agent waits for the captures it is writing.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// How often scrapes waiting for the model are answered, at least (they are also answered
/// after every batch of events).
const SCRAPE_PERIOD: Duration = Duration::from_millis(100);
/// How long a scrape waits for the model before it gets 503.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);

fn log(line: impl AsRef<str>) {
    // One line per thing worth a person's attention, on stderr: journald keeps it with the
    // time and the unit. Strings from traced programs in it are escaped where they are built.
    eprintln!("memtrace agent: {}", line.as_ref());
}

/// A capture finished on its thread.
struct Done {
    fired: Fired,
    result: Result<(Stored, Vec<String>), CaptureError>,
}

/// A capture asked for, with what a kernel trigger adds.
struct Wanted {
    fired: Fired,
    skipped_before: u64,
    extra: Vec<(String, Vec<u8>)>,
}

pub async fn run(options: AgentOptions) -> anyhow::Result<AgentOutcome> {
    // Refused before anything is traced: a capture directory that cannot be written safely
    // makes the agent pointless.
    let captures = Arc::new(CaptureDir::open(&options.capture_dir)?);
    // Bound before anything is traced too: an address that cannot be served is refused now.
    let server = match options.listen {
        Some(address) => Some(HttpThread::start(address, options.metrics_top)?),
        None => None,
    };
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let probes_options = ProbeOptions {
        follow_children: true,
        cgroup_ids: match &options.target {
            AgentTarget::Cgroups(cgroups) => cgroups.iter().map(|cgroup| cgroup.id).collect(),
            AgentTarget::System => Vec::new(),
        },
        ..options.probes.clone()
    };
    let mut probes = Probes::load(&probes_options)?;
    let capture = Capture::new(probes.take_events()?, probes.take_stacks()?);
    let backend = probes.backend().info();
    let header = RecordingHeader::now(Mode::Agent, &options.command_line, Some(backend.clone()));
    let flight = FlightRecorder::new(
        header.clone(),
        options.history.as_nanos() as u64,
        options.history_bytes,
    );
    let user_mode = UserMode::new(UserModeOptions {
        keep_exited: options.keep_exited,
        ..UserModeOptions::default()
    });
    let mut agent = AgentMode::new(user_mode, flight, options.triggers.clone());
    // The first segment starts before anything is known: the attach layouts that seed it
    // are its keyframe.
    agent.keyframe(monotonic_ns());
    let is_cgroup = matches!(options.target, AgentTarget::Cgroups(_));
    let mut feed: Feed<AgentMode> = Feed::new(Stream::new(None, None), agent, is_cgroup);
    let own = std::process::id();
    let (pids, where_) = match &options.target {
        AgentTarget::System => (procfs::all_pids(), "system-wide".to_owned()),
        AgentTarget::Cgroups(cgroups) => {
            let mut pids = Vec::new();
            for cgroup in cgroups {
                pids.extend(cgroup.members()?);
            }
            let names: Vec<String> = cgroups
                .iter()
                .map(|cgroup| escape::terminal(&cgroup.name).into_owned())
                .collect();
            let noun = if cgroups.len() == 1 {
                "cgroup"
            } else {
                "cgroups"
            };
            (pids, format!("in {noun} {}", names.join(", ")))
        }
    };
    let (threads, processes): (Vec<u32>, Vec<u32>) = pids
        .into_iter()
        .filter(|&pid| pid != own)
        .partition(|&pid| procfs::is_kernel_thread(pid));
    // Kernel threads have no layout, but the kernel's usermode helpers are their children:
    // traced, so that what they start is followed.
    for &pid in &threads {
        let _ = probes.trace(pid);
    }
    feed.seed(&mut probes, &processes, None)?;
    log(format!(
        "started: tracing {} processes {where_} on {} (backend {}{}); history {} s / {} MiB; captures in {}",
        processes.len(),
        header.kernel_release,
        backend.name,
        backend
            .why
            .as_deref()
            .map(|why| format!(": {why}"))
            .unwrap_or_default(),
        options.history.as_secs(),
        options.history_bytes >> 20,
        options.capture_dir.display()
    ));

    if let Some(server) = &server {
        log(format!(
            "serving http://{}/metrics, /debug/pprof/heap and /debug/pprof/allocs",
            server.address
        ));
    }
    let mut counters = AgentCounters {
        max_map_count: options.max_map_count,
        backend: Some(backend.clone()),
        ..AgentCounters::default()
    };
    let mut scrapes = tokio::time::interval(SCRAPE_PERIOD);
    let mut reader = capture.spawn()?;
    let started = Instant::now();
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut evaluation = tokio::time::interval(EVALUATION_PERIOD);
    let mut keyframes = tokio::time::interval_at(
        tokio::time::Instant::now() + options.keyframe_interval,
        options.keyframe_interval,
    );
    let mut limit = RateLimit::new(options.cooldown.as_nanos() as u64);
    let mut kernel_watch =
        KernelWatch::new(options.triggers.growing_for_ns, options.kernel_growth_bytes);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (kernel_tx, mut kernel_rx) = mpsc::unbounded_channel::<Wanted>();
    let mut queue: VecDeque<Wanted> = VecDeque::new();
    let mut writing = false;
    let mut kernel_running = false;
    let mut lost = Losses::default();
    let mut outcome = AgentOutcome::default();
    let mut told_recording_error = false;
    // The cgroups still there: the agent stops once the last one is removed.
    let mut watched: Vec<Cgroup> = match &options.target {
        AgentTarget::Cgroups(cgroups) => cgroups.clone(),
        AgentTarget::System => Vec::new(),
    };

    loop {
        tokio::select! {
            batch = reader.next_batch() => match batch {
                Some(batch) => feed.batch(batch),
                None => break,
            },
            _ = evaluation.tick() => {
                let now = monotonic_ns();
                feed.consumer.evaluate(now);
                if options.triggers.enabled.contains(&TriggerKind::Kernel) && !kernel_running {
                    let held: u64 = feed
                        .consumer
                        .user_mode
                        .model
                        .live_processes()
                        .map(|view| allocated_bytes(&view))
                        .sum();
                    if let Some(fired) = kernel_watch.sample(now, held) {
                        if let Verdict::Capture { skipped_before } = limit.judge(&fired) {
                            log(format!(
                                "trigger kernel: {}; running kernel mode for {} s",
                                fired.detail,
                                options.kernel_window.as_secs()
                            ));
                            kernel_running = true;
                            spawn_kernel_window(fired, skipped_before, &options, kernel_tx.clone());
                        }
                    }
                }
                for (kind, pid, skipped) in limit.ended_cooldowns(now) {
                    log(format!(
                        "trigger {} pid {pid}: {skipped} more skipped by the rate limit in the last {} s",
                        kind.as_str(),
                        options.cooldown.as_secs()
                    ));
                }
                let new_lost = feed.report_new_losses(&probes, reader.stacks_dropped(), lost)?;
                if new_lost.total() > lost.total() {
                    log(format!(
                        "{} events lost so far (ring buffer full: {}, in-flight table full: {}): the layouts of the processes involved may be off",
                        new_lost.total(),
                        new_lost.ring_full,
                        new_lost.pending_full
                    ));
                }
                lost = new_lost;
                probes.flush_logs();
            }
            _ = keyframes.tick() => feed.consumer.keyframe(monotonic_ns()),
            _ = scrapes.tick() => {}
            _ = user1.recv() => feed.consumer.fire(Fired {
                kind: TriggerKind::Signal,
                pid: 0,
                comm: String::new(),
                time_ns: monotonic_ns(),
                detail: "SIGUSR1: a capture was asked for".to_owned(),
                figures: serde_json::Value::Null,
            }),
            Some(wanted) = kernel_rx.recv() => {
                kernel_running = false;
                queue.push_back(wanted);
            }
            Some(done) = done_rx.recv() => {
                writing = false;
                match done.result {
                    Ok((stored, removed)) => {
                        outcome.captures += 1;
                        *counters.captures.entry(done.fired.kind).or_default() += 1;
                        log(format!(
                            "capture {} pid {}{}: {} ({} KiB){}",
                            done.fired.kind.as_str(),
                            done.fired.pid,
                            if done.fired.comm.is_empty() { String::new() } else { format!(" ({})", escape::terminal(&done.fired.comm)) },
                            captures.path().join(&stored.name).display(),
                            stored.bytes >> 10,
                            if removed.is_empty() { String::new() } else { format!("; rotated out {}", removed.join(", ")) }
                        ));
                    }
                    Err(error) => log(format!("capture {} failed: {error}", done.fired.kind.as_str())),
                }
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = sleep_until(deadline) => break,
        }
        for fired in feed.consumer.take_fired() {
            match limit.judge(&fired) {
                Verdict::Capture { skipped_before } => {
                    log(format!(
                        "trigger {} pid {}{}: {}",
                        fired.kind.as_str(),
                        fired.pid,
                        if fired.comm.is_empty() { String::new() } else { format!(" ({})", escape::terminal(&fired.comm)) },
                        escape::terminal(&fired.detail)
                    ));
                    if queue.len() < MAX_QUEUED_CAPTURES {
                        queue.push_back(Wanted { fired, skipped_before, extra: Vec::new() });
                    } else {
                        log(format!(
                            "trigger {} pid {} skipped: {MAX_QUEUED_CAPTURES} captures already wait to be written",
                            fired.kind.as_str(),
                            fired.pid
                        ));
                    }
                }
                Verdict::Skipped { first: true } => log(format!(
                    "trigger {} pid {} skipped by the rate limit (one capture per {} s); further ones are counted",
                    fired.kind.as_str(),
                    fired.pid,
                    options.cooldown.as_secs()
                )),
                Verdict::Skipped { first: false } => {}
            }
        }
        if !writing {
            if let Some(wanted) = queue.pop_front() {
                writing = start_capture(
                    wanted,
                    &mut feed.consumer,
                    &header,
                    &options,
                    &captures,
                    backend.clone(),
                    lost,
                    done_tx.clone(),
                );
            }
        }
        if let (Some(error), false) = (&feed.consumer.recording_error, told_recording_error) {
            log(format!(
                "the flight recorder stopped: {error}; captures hold what it had"
            ));
            told_recording_error = true;
        }
        for pid in feed.consumer.user_mode.take_forgotten() {
            limit.forget(pid);
        }
        if let Some(server) = &server {
            counters.events = feed.stream.events();
            counters.lost = lost;
            server
                .queue
                .answer_pending(|query| answer(query, &mut feed.consumer, &counters));
        }
        if !watched.is_empty() {
            watched.retain(|cgroup| {
                let exists = cgroup.exists();
                if !exists {
                    log(format!("cgroup {} is gone", escape::terminal(&cgroup.name)));
                }
                exists
            });
            if watched.is_empty() {
                break;
            }
        }
    }

    // What the kernel wrote before the end still belongs to the history.
    let (rest, counts) = reader.finish();
    feed.batch(rest);
    outcome.lost = feed.report_new_losses(&probes, counts.stacks_dropped, lost)?;
    for fired in feed.consumer.take_fired() {
        if let Verdict::Capture { skipped_before } = limit.judge(&fired) {
            queue.push_back(Wanted {
                fired,
                skipped_before,
                extra: Vec::new(),
            });
        }
    }
    // Captures asked for are finished before the agent goes.
    let give_up = tokio::time::Instant::now() + STOP_WAIT;
    while writing || !queue.is_empty() {
        if !writing {
            let Some(wanted) = queue.pop_front() else {
                break;
            };
            writing = start_capture(
                wanted,
                &mut feed.consumer,
                &header,
                &options,
                &captures,
                backend.clone(),
                outcome.lost,
                done_tx.clone(),
            );
            continue;
        }
        tokio::select! {
            Some(done) = done_rx.recv() => {
                writing = false;
                match done.result {
                    Ok((stored, _)) => {
                        outcome.captures += 1;
                        log(format!("capture {}: {}", done.fired.kind.as_str(), captures.path().join(&stored.name).display()));
                    }
                    Err(error) => log(format!("capture {} failed: {error}", done.fired.kind.as_str())),
                }
            }
            _ = tokio::time::sleep_until(give_up) => {
                log("stopping without the captures still being written");
                break;
            }
        }
    }
    if let Some(server) = server {
        server.stop();
    }
    outcome.events = feed.stream.events();
    log(format!(
        "stopped after {} s: {} events, {} captures",
        started.elapsed().as_secs(),
        outcome.events,
        outcome.captures
    ));
    Ok(outcome)
}

/// Cuts the window a capture holds and writes it on a blocking thread; false when there was
/// nothing to write (the flight recorder failed).
#[allow(clippy::too_many_arguments)]
fn start_capture(
    wanted: Wanted,
    agent: &mut AgentMode,
    header: &RecordingHeader,
    options: &AgentOptions,
    captures: &Arc<CaptureDir>,
    backend: crate::report::BackendInfo,
    lost: Losses,
    done: mpsc::UnboundedSender<Done>,
) -> bool {
    // A growing trigger's capture holds the whole rise.
    let window_ns = match wanted.fired.kind {
        TriggerKind::Growing | TriggerKind::Kernel => options
            .capture_window
            .max(Duration::from_nanos(options.triggers.growing_for_ns)),
        _ => options.capture_window,
    }
    .as_nanos() as u64;
    let window = match agent
        .flight
        .cut(wanted.fired.time_ns.saturating_sub(window_ns))
    {
        Ok(window) => window,
        Err(error) => {
            log(format!(
                "capture {} failed: the flight recorder: {error}",
                wanted.fired.kind.as_str()
            ));
            return false;
        }
    };
    let input = CaptureInput {
        fired: wanted.fired.clone(),
        skipped_before: wanted.skipped_before,
        header: header.clone(),
        window,
        lost,
        backend: Some(backend),
        extra: wanted.extra,
    };
    let captures = Arc::clone(captures);
    let (max_count, max_bytes) = (options.max_captures, options.max_capture_bytes);
    let fired = wanted.fired;
    tokio::task::spawn_blocking(move || {
        let result = write_capture(&captures, input)
            .and_then(|stored| Ok((stored, captures.rotate(max_count, max_bytes)?)));
        let _ = done.send(Done { fired, result });
    });
    true
}

/// Kernel mode for the kernel trigger's window, on a thread of its own (it loads programs of
/// its own and sleeps between kernel snapshots); its reports join the capture.
fn spawn_kernel_window(
    fired: Fired,
    skipped_before: u64,
    options: &AgentOptions,
    wanted: mpsc::UnboundedSender<Wanted>,
) {
    let duration = options.kernel_window;
    let command_line = options.command_line.clone();
    std::thread::spawn(move || {
        let extra = match run_kernel_window(duration, Duration::from_secs(1), &command_line) {
            Ok(window) => vec![
                ("kernel.mtr".to_owned(), window.recording),
                ("kernel.txt".to_owned(), window.text.into_bytes()),
                ("kernel.json".to_owned(), window.json.into_bytes()),
            ],
            Err(error) => {
                log(format!(
                    "kernel mode for the kernel trigger failed: {error:#}"
                ));
                Vec::new()
            }
        };
        let _ = wanted.send(Wanted {
            fired,
            skipped_before,
            extra,
        });
    });
}

/// The HTTP server on a thread of its own, with a runtime of its own: a scrape is served while
/// the model's thread is busy, and waits only for the model's answer, which comes between two
/// batches of events.
struct HttpThread {
    address: std::net::SocketAddr,
    queue: Queue,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpThread {
    fn start(address: std::net::SocketAddr, metrics_top: usize) -> anyhow::Result<Self> {
        let (requests, queue) = handoff(SCRAPE_DEADLINE);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, bound) = std::sync::mpsc::channel();
        let options = ServerOptions {
            metrics_top,
            scrape_timeout: SCRAPE_DEADLINE,
            ..ServerOptions::default()
        };
        let thread = std::thread::Builder::new()
            .name("memtrace-http".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let server = match Server::bind(address, options).await {
                        Ok(server) => server,
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready.send(server.local_addr());
                    server
                        .run(Arc::new(requests), async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        let address = bound
            .recv()
            .map_err(|_| anyhow::anyhow!("--listen {address}: the server thread ended"))?
            .map_err(|error| anyhow::anyhow!("--listen {address}: {error}"))?;
        Ok(Self {
            address,
            queue,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
