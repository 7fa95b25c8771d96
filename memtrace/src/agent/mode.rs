//! The agent's consumer: user mode's, plus the flight recorder every event goes into and the
//! triggers that watch the stream.
//!
//! Failures (a brk that could not move the break, an mmap or mremap refused with ENOMEM) fire
//! as their events are consumed; conditions that take a look at the model (map count, size,
//! growth) fire at the agent's evaluation tick ([`AgentMode::evaluate`]).

use std::collections::{BTreeSet, HashMap};

use super::{
    flight::FlightRecorder,
    growth::GrowthTracker,
    triggers::{Fired, TriggerKind},
};
use crate::{
    capture::OomVictim,
    event::{Event, EventBody, Losses, Syscall},
    model::{Model, ProcessView, RegionKind},
    recording::RecordError,
    report::format::bytes,
    session::LiveConsumer,
    stream::Consumer,
    user_mode::UserMode,
};

const ENOMEM: i32 = 12;

/// Kinds of memory a process allocates, as opposed to loading (files, stacks, the vdso): what
/// `--trigger-size` and the metrics' allocated bytes count.
pub const ALLOCATED_KINDS: [RegionKind; 4] = [
    RegionKind::Anon,
    RegionKind::Heap,
    RegionKind::Memfd,
    RegionKind::SharedAnon,
];

/// How the triggers are set.
#[derive(Clone, Debug)]
pub struct TriggerOptions {
    pub enabled: BTreeSet<TriggerKind>,
    /// `--growing-for`.
    pub growing_for_ns: u64,
    /// `--trigger-size`.
    pub size_bytes: Option<u64>,
    /// `vm.max_map_count`, read at start.
    pub max_map_count: u64,
}

pub struct AgentMode {
    pub user_mode: UserMode,
    pub flight: FlightRecorder,
    options: TriggerOptions,
    growth: GrowthTracker,
    fired: Vec<Fired>,
    /// Processes above the map-count or size line, so that crossing it fires once.
    above_map_count: BTreeSet<u32>,
    above_size: BTreeSet<u32>,
    /// Why the flight recorder stopped recording, if it did (told once).
    pub recording_error: Option<RecordError>,
    /// The latest loss totals, for the segments' trailers.
    lost: Losses,
}

impl Consumer for AgentMode {
    fn consume(&mut self, event: &Event) {
        if self.recording_error.is_none() {
            if let Err(error) = self.flight.record(event) {
                self.recording_error = Some(error);
            }
        }
        if let EventBody::Lost(lost) = &event.body {
            self.lost = *lost;
        }
        let brk_failures = brk_failures(&self.user_mode.model, event);
        self.user_mode.consume(event);
        self.observe(event, brk_failures);
    }
}

impl LiveConsumer for AgentMode {
    fn user_mode(&mut self) -> &mut UserMode {
        &mut self.user_mode
    }

    fn oom_victim(&mut self, victim: &OomVictim) {
        if !self.enabled(TriggerKind::Oom) {
            return;
        }
        // The tracepoint's own pid is the victim's thread-group leader's (the OOM killer picks
        // processes); on kernels whose tracepoint gives only that number, it is in `tid`.
        let pid = match victim.identity.pid {
            0 => victim.identity.tid,
            pid => pid,
        };
        let view = self.user_mode.model.process(pid);
        let comm = view
            .as_ref()
            .map(|view| view.process().comm())
            .or_else(|| victim.comm.map(|comm| comm.as_string()))
            .unwrap_or_default();
        let allocated = view.as_ref().map(allocated_bytes);
        self.fired.push(Fired {
            kind: TriggerKind::Oom,
            pid,
            comm: comm.clone(),
            time_ns: victim.time_ns,
            detail: match allocated {
                Some(allocated) => format!(
                    "the OOM killer chose pid {pid} ({comm}), which had allocated {}",
                    bytes(allocated)
                ),
                None => format!("the OOM killer chose pid {pid} ({comm}), not traced"),
            },
            figures: serde_json::json!({ "uid": victim.uid, "allocated_bytes": allocated }),
        });
    }
}

impl AgentMode {
    pub fn new(user_mode: UserMode, flight: FlightRecorder, options: TriggerOptions) -> Self {
        Self {
            user_mode,
            flight,
            growth: GrowthTracker::new(options.growing_for_ns),
            options,
            fired: Vec::new(),
            above_map_count: BTreeSet::new(),
            above_size: BTreeSet::new(),
            recording_error: None,
            lost: Losses::default(),
        }
    }

    /// A trigger from outside the stream (a signal).
    pub fn fire(&mut self, fired: Fired) {
        self.fired.push(fired);
    }

    /// The triggers fired since the last call.
    pub fn take_fired(&mut self) -> Vec<Fired> {
        std::mem::take(&mut self.fired)
    }

    fn enabled(&self, kind: TriggerKind) -> bool {
        self.options.enabled.contains(&kind)
    }

    /// Starts a flight-recorder segment with a keyframe of every live process.
    pub fn keyframe(&mut self, time_ns: u64) {
        if self.recording_error.is_some() {
            return;
        }
        let result = (|| {
            self.flight.start_segment(time_ns, self.lost)?;
            for keyframe in self.user_mode.model.keyframes() {
                let event = |body| Event {
                    time_ns,
                    pid: keyframe.pid,
                    tid: keyframe.pid,
                    comm: keyframe.comm,
                    abi: keyframe.abi,
                    body,
                };
                if let Some(container) = &keyframe.container {
                    self.flight
                        .record(&event(EventBody::Container(container.clone())))?;
                }
                // Moved, not copied: a copy of every live region each minute doubles the
                // keyframe's transient peak, which grows with the regions.
                self.flight
                    .record(&event(EventBody::Keyframe(keyframe.layout)))?;
            }
            Ok(())
        })();
        if let Err(error) = result {
            self.recording_error = Some(error);
        }
    }

    /// What the failures among this event's effects fire.
    fn observe(&mut self, event: &Event, brk_failures_before: Option<usize>) {
        let EventBody::Syscall(call) = &event.body else {
            return;
        };
        let comm = || event.comm.as_string();
        match call.syscall {
            Syscall::Brk if self.enabled(TriggerKind::BrkFailed) => {
                let Some(view) = self.user_mode.model.process(event.pid) else {
                    return;
                };
                let brk = view.process().brk();
                if brk.failures().len() <= brk_failures_before.unwrap_or(0) {
                    return;
                }
                let Some(failure) = brk.failures().last() else {
                    return;
                };
                let bounded = brk
                    .headroom(view.layout())
                    .map(|headroom| {
                        format!(
                            "; the heap is bounded by {} {} at {:#x}",
                            if headroom.bounded_by.name().is_empty() {
                                headroom.bounded_by.kind.as_str()
                            } else {
                                headroom.bounded_by.name()
                            },
                            headroom.bounded_by.perms,
                            headroom.bounded_by.start
                        )
                    })
                    .unwrap_or_default();
                self.fired.push(Fired {
                    kind: TriggerKind::BrkFailed,
                    pid: event.pid,
                    comm: comm(),
                    time_ns: event.time_ns,
                    detail: format!(
                        "brk({:#x}) failed: asked for {} more at the break {:#x}{bounded}",
                        failure.requested,
                        bytes(failure.asked_bytes),
                        failure.current
                    ),
                    figures: serde_json::json!({
                        "requested": failure.requested,
                        "asked_bytes": failure.asked_bytes,
                        "break": failure.current,
                    }),
                });
            }
            Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap | Syscall::Mremap
                if call.errno() == Some(ENOMEM) && self.enabled(TriggerKind::MmapFailed) =>
            {
                let size = if call.syscall == Syscall::Mremap {
                    call.args[2]
                } else {
                    call.args[1]
                };
                self.fired.push(Fired {
                    kind: TriggerKind::MmapFailed,
                    pid: event.pid,
                    comm: comm(),
                    time_ns: event.time_ns,
                    detail: format!(
                        "{} of {} failed with ENOMEM",
                        call.syscall.name(),
                        bytes(size)
                    ),
                    figures: serde_json::json!({ "syscall": call.syscall.name(), "bytes": size }),
                });
            }
            _ => {}
        }
    }

    /// Looks at every live process: map count, allocated size, growth. Called once a second.
    pub fn evaluate(&mut self, now_ns: u64) {
        let model = &self.user_mode.model;
        let map_count_line = self.options.max_map_count * 9 / 10;
        let mut live = BTreeSet::new();
        let mut fired = Vec::new();
        for view in model
            .live_processes()
            .filter(|view| view.process().traced())
        {
            let pid = view.process().pid();
            live.insert(pid);
            if self.options.enabled.contains(&TriggerKind::MapCount) && map_count_line > 0 {
                let count = view.layout().iter().count() as u64;
                // Fires on crossing the line; once below 80% again, it may fire again.
                if count > map_count_line && self.above_map_count.insert(pid) {
                    fired.push(Fired {
                        kind: TriggerKind::MapCount,
                        pid,
                        comm: view.process().comm(),
                        time_ns: now_ns,
                        detail: format!(
                            "{count} mappings, above 90% of vm.max_map_count ({}): the next mmap may fail with ENOMEM",
                            self.options.max_map_count
                        ),
                        figures: serde_json::json!({
                            "map_count": count,
                            "max_map_count": self.options.max_map_count,
                        }),
                    });
                } else if count < self.options.max_map_count * 8 / 10 {
                    self.above_map_count.remove(&pid);
                }
            }
            if let (true, Some(line)) = (
                self.options.enabled.contains(&TriggerKind::Size),
                self.options.size_bytes,
            ) {
                let allocated = allocated_bytes(&view);
                if allocated > line && self.above_size.insert(pid) {
                    fired.push(Fired {
                        kind: TriggerKind::Size,
                        pid,
                        comm: view.process().comm(),
                        time_ns: now_ns,
                        detail: format!(
                            "{} allocated, above --trigger-size {}",
                            bytes(allocated),
                            bytes(line)
                        ),
                        figures: serde_json::json!({ "allocated_bytes": allocated, "trigger_size": line }),
                    });
                } else if allocated < line / 10 * 9 {
                    self.above_size.remove(&pid);
                }
            }
        }
        self.above_map_count.retain(|pid| live.contains(pid));
        self.above_size.retain(|pid| live.contains(pid));
        if self.options.enabled.contains(&TriggerKind::Growing) {
            for growing in self.growth.sample(model, now_ns) {
                fired.push(Fired {
                    kind: TriggerKind::Growing,
                    pid: growing.pid,
                    comm: growing.comm.clone(),
                    time_ns: now_ns,
                    detail: format!(
                        "{} grows steadily at {}/s (+{} since {:.0} s ago), now {}",
                        growing.group,
                        bytes(growing.bytes_per_s),
                        bytes(growing.grown_bytes),
                        now_ns.saturating_sub(growing.since_ns) as f64 / 1e9,
                        bytes(growing.bytes_now)
                    ),
                    figures: serde_json::json!({
                        "group": growing.group,
                        "bytes_per_s": growing.bytes_per_s,
                        "grown_bytes": growing.grown_bytes,
                        "since_ns": growing.since_ns,
                        "bytes": growing.bytes_now,
                    }),
                });
            }
        }
        self.fired.extend(fired);
    }

    /// Rates of the groups growing steadily now, by process: the metrics' growth.
    pub fn growth_rates(&self) -> HashMap<u32, Vec<(String, u64)>> {
        let mut rates: HashMap<u32, Vec<(String, u64)>> = HashMap::new();
        for (pid, group, rate) in self.growth.rates() {
            rates.entry(pid).or_default().push((group, rate));
        }
        rates
    }
}

/// The brk failures a process has before a brk event is applied (`None` for other events).
fn brk_failures(model: &Model, event: &Event) -> Option<usize> {
    match &event.body {
        EventBody::Syscall(call) if call.syscall == Syscall::Brk => model
            .process(event.pid)
            .map(|view| view.process().brk().failures().len()),
        _ => None,
    }
}

/// Bytes a process has allocated and still holds (loaded files, stacks and the vdso excluded).
pub fn allocated_bytes(view: &ProcessView<'_>) -> u64 {
    view.layout()
        .iter()
        .filter(|region| ALLOCATED_KINDS.contains(&region.kind))
        .map(|region| region.len())
        .sum()
}
