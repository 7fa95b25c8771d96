//! Where every event goes, whether it was just captured or read back from a recording: the
//! model, and optionally the `--events` printer and the recorder. Live tracing and replay both
//! push events through here, so a replay computes exactly what the live run computed.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
};

use crate::{
    capture::{roots::Roots, StackCapture},
    event::{Event, EventBody, JitSymbolRecord, LostRecord, ModuleRecord, StackRecord},
    event_line,
    interval::IntervalPrinter,
    kernel::model::KernelModel,
    model::{AddressSpace, Model, RegionKind},
    record::{RecordError, RecordingWriter},
    report::exited::{ExitedPrograms, DEFAULT_KEEP_EXITED},
    stacks::{FileView, MappedFile, ModuleCache, ModuleMap, PerfMaps, Symbolizer, Unwinder},
};

/// Deep enough for an allocation inside an interpreter; deeper frames rarely tell more.
const MAX_FRAMES: usize = 64;

/// A live process's file mappings, as the unwinder asks for them, read through its own view
/// of the files.
struct ProcessModules<'m> {
    layout: &'m AddressSpace,
    view: FileView,
}

impl ModuleMap for ProcessModules<'_> {
    fn mapping_at(&self, address: u64) -> Option<MappedFile> {
        let region = self.layout.region_at(address)?;
        if region.kind != RegionKind::File {
            return None;
        }
        Some(MappedFile {
            start: region.start,
            end: region.end,
            file_offset: region.offset,
            path: region.name.as_deref()?.to_string(),
            executable: region.perms.executable(),
            inode: region.inode,
            view: self.view.clone(),
        })
    }
}

pub struct Pipeline {
    pub model: Model,
    /// Turns live stack samples into call stacks; replay reads stacks already unwound.
    unwinder: Unwinder,
    /// Reads each module the stacks run through at first sight (so a binary replaced later
    /// still names its frames), and names frames for the report.
    pub symbolizer: Symbolizer,
    /// Modules already announced in the stream, by process and path: a container's file at a
    /// path is not the host's.
    announced: HashMap<u32, HashSet<String>>,
    /// The perf maps of processes whose stacks run through JIT code, and the JIT symbols
    /// already announced in the stream, by process and start.
    perf_maps: PerfMaps,
    announced_jit: HashMap<u32, HashMap<u64, std::sync::Arc<str>>>,
    /// Exited processes folded out of the model past the `keep_exited` most recent, summed by
    /// program for the report.
    pub exited: ExitedPrograms,
    keep_exited: usize,
    /// Pids folded away since the session last asked ([`Self::take_forgotten`]).
    forgotten: Vec<u32>,
    /// Modules of live processes that could not be read as the process maps them (by process
    /// and path): their frames keep module+offset.
    pub unreadable_modules: u64,
    /// Each process's root as this machine reaches it, from its container identity or, for a
    /// child gone before it could be read, its parent's at fork: where its modules are read
    /// once `/proc/PID` is gone.
    roots: Roots,
    printer: Option<Box<dyn Write + Send>>,
    recorder: Option<RecordingWriter>,
    /// Why the recorder stopped, if it did; the session goes on without it.
    recording_failure: Option<RecordingFailure>,
    /// Everything fed, loss reports, stacks and modules included: what a complete recording
    /// would hold.
    stream_events: u64,
    /// Events fed, not counting loss reports.
    pub events: u64,
    /// The latest loss totals.
    pub lost: LostRecord,
    /// Kernel mode's allocations (`memtrace kernel`), from its snapshots.
    pub kernel: KernelModel,
    /// `--interval`: blocks of growth per interval.
    interval: Option<IntervalPrinter>,
}

impl Pipeline {
    pub fn new(printer: Option<Box<dyn Write + Send>>, recorder: Option<RecordingWriter>) -> Self {
        // One cache of opened modules: the symbolizer names frames from the very files the
        // unwinder read, without opening them again.
        let modules = ModuleCache::new().shared();
        Self {
            model: Model::new(),
            unwinder: Unwinder::with_modules(modules.clone()),
            symbolizer: Symbolizer::with_modules(modules),
            announced: HashMap::new(),
            perf_maps: PerfMaps::default(),
            announced_jit: HashMap::new(),
            exited: ExitedPrograms::default(),
            keep_exited: DEFAULT_KEEP_EXITED,
            forgotten: Vec::new(),
            unreadable_modules: 0,
            roots: Roots::default(),
            printer,
            recorder,
            recording_failure: None,
            stream_events: 0,
            events: 0,
            lost: LostRecord::default(),
            kernel: KernelModel::default(),
            interval: None,
        }
    }

    /// Lists the `keep` most recent exits in full and folds older ones into `exited`
    /// (`--keep-exited`); `exited` holds the report's options, which the folded processes'
    /// findings follow. Set before the first event.
    pub fn fold_exited(&mut self, keep: usize, exited: ExitedPrograms) {
        self.keep_exited = keep;
        self.exited = exited;
    }

    /// The pids folded away since the last call: the session's own per-pid state about them
    /// can go (a pid taken again is a new process).
    pub fn take_forgotten(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.forgotten)
    }

    /// Prints a block of growth per interval (`--interval`) as events go by.
    pub fn print_intervals(&mut self, printer: IntervalPrinter) {
        self.interval = Some(printer);
    }

    /// Prints the interval blocks due by `now_ns` (a live session's clock, for quiet spans).
    pub fn tick_interval(&mut self, now_ns: u64) {
        if let Some(interval) = &mut self.interval {
            interval.tick(now_ns, &self.model);
        }
    }

    /// Records, prints and models one event. A failing recorder (a full disk) stops recording
    /// but not the session: every event still reaches the model, so the report is whole, and
    /// [`recording_failure`](Self::recording_failure) says what the recording misses. A
    /// failing printer (closed pipe) only stops printing.
    pub fn feed(&mut self, event: &Event) -> Result<(), RecordError> {
        self.stream_events += 1;
        if let Some(recorder) = &mut self.recorder {
            if let Err(error) = recorder.write_event(event) {
                self.stop_recording(error);
            }
        }
        if let Some(printer) = &mut self.printer {
            if let Some(line) = event_line::format(event) {
                if writeln!(printer, "{line}").is_err() {
                    self.printer = None;
                }
            }
        }
        // Not forgotten at exit: stack samples are often read after their process is gone.
        if let EventBody::Container(container) = &event.body {
            self.roots.set(event.pid, &container.root);
        }
        self.roots.inherit(event);
        match &event.body {
            EventBody::Lost(lost) => self.lost = *lost,
            EventBody::KernelSnapshot(snapshot) => {
                self.events += 1;
                self.kernel.apply(event.time_ns, snapshot);
            }
            _ => self.events += 1,
        }
        // Before the event: a block shows the state at its boundary.
        self.tick_interval(event.time_ns);
        self.model.apply(event);
        self.fold();
        Ok(())
    }

    /// Folds the exited processes past the most recent; after every event, so a replay folds
    /// what the live session folded.
    fn fold(&mut self) {
        let step_ns = self.model.timeline_step_ns();
        let exited = &mut self.exited;
        let forgotten = self
            .model
            .fold_exited(self.keep_exited, &mut |view| exited.fold(view, step_ns));
        for pid in forgotten {
            self.announced.remove(&pid);
            self.announced_jit.remove(&pid);
            self.perf_maps.forget(pid);
            self.roots.forget(pid);
            self.forgotten.push(pid);
        }
    }

    /// Unwinds a live stack sample against the process's layout as the model has it now (the
    /// sample follows its syscall, so the mappings it runs through are known), then feeds the
    /// result as a `Stack` event: recordings carry frames, not stack bytes.
    pub fn feed_stack(&mut self, capture: &StackCapture) -> Result<(), RecordError> {
        let sample = &capture.sample;
        let (frames, truncated, new_modules, jit_symbols) = match self.model.process(capture.pid) {
            Some(process) => {
                let root = self.roots.shared_root_of(capture.pid);
                let modules = ProcessModules {
                    layout: process.layout(),
                    view: FileView::Process {
                        pid: capture.pid,
                        root,
                    },
                };
                let walk = self.unwinder.walk(sample, &modules, MAX_FRAMES);
                let frames = walk.frames;
                let mut new_modules: Vec<MappedFile> = frames
                    .iter()
                    .filter_map(|&address| modules.mapping_at(address.saturating_sub(1)))
                    .filter(|mapping| {
                        !self
                            .announced
                            .get(&capture.pid)
                            .is_some_and(|paths| paths.contains(&mapping.path))
                    })
                    .collect();
                new_modules.sort_by(|a, b| a.path.cmp(&b.path));
                new_modules.dedup_by(|a, b| a.path == b.path);
                let jit_symbols = jit_symbols_of(
                    &frames,
                    process.layout(),
                    &modules.view,
                    &mut self.perf_maps,
                );
                (frames, walk.truncated, new_modules, jit_symbols)
            }
            None => return Ok(()),
        };
        for mapping in new_modules {
            self.announced
                .entry(capture.pid)
                .or_default()
                .insert(mapping.path.clone());
            let stacks = self.model.call_stacks();
            // What the stream must tell about this process's file, if anything: its
            // build-id, or that it cannot be named (empty).
            let tell = match self.symbolizer.register_mapped(&mapping) {
                Ok(registered) if !registered.build_id.is_empty() => {
                    let told = stacks.build_id(capture.pid, &mapping.path);
                    (told != Some(registered.build_id.as_slice())).then_some(registered.build_id)
                }
                // No build-id: named by path when the path names this very file.
                Ok(registered) => (!registered.named_by_path
                    || stacks.build_id(capture.pid, &mapping.path).is_some())
                .then(Vec::new),
                Err(error) => {
                    log::warn!(
                        "pid {}: call stacks through {} stay module+offset: {error}",
                        capture.pid,
                        mapping.path
                    );
                    self.unreadable_modules += 1;
                    self.symbolizer.mark_unreadable(&mapping.path);
                    stacks.nameable(capture.pid, &mapping.path).then(Vec::new)
                }
            };
            if let Some(build_id) = tell {
                self.feed(&event_of(
                    capture,
                    EventBody::Module(ModuleRecord {
                        path: mapping.path,
                        build_id,
                    }),
                ))?;
            }
        }
        for symbol in jit_symbols {
            let announced = self.announced_jit.entry(capture.pid).or_default();
            if announced.get(&symbol.start) == Some(&symbol.name) {
                continue;
            }
            announced.insert(symbol.start, std::sync::Arc::clone(&symbol.name));
            self.feed(&event_of(
                capture,
                EventBody::JitSymbol(JitSymbolRecord {
                    start: symbol.start,
                    len: symbol.len,
                    name: symbol.name.to_string(),
                }),
            ))?;
        }
        self.feed(&event_of(
            capture,
            EventBody::Stack(StackRecord { frames, truncated }),
        ))
    }

    /// The processes whose frames were named from their perf maps.
    pub fn processes_with_perf_maps(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.perf_maps.processes_with_maps().collect();
        pids.sort_unstable();
        pids
    }

    /// Writes the recorder's open frame when its flush interval has passed (see
    /// [`RecordingWriter::flush_if_due`]).
    pub fn flush_recording_if_due(&mut self, now: std::time::Instant) {
        if let Some(recorder) = &mut self.recorder {
            if let Err(error) = recorder.flush_if_due(now) {
                self.stop_recording(error);
            }
        }
    }

    /// Ends the recording with its trailer, so a reader knows it is complete.
    pub fn finish_recording(&mut self) -> Result<(), RecordError> {
        if let Some(recorder) = self.recorder.take() {
            let kept = recorder.events_flushed();
            if let Err(error) = recorder.finish(self.lost) {
                self.recording_failure = Some(RecordingFailure {
                    error,
                    events_kept: kept,
                });
            }
        }
        if let Some(printer) = &mut self.printer {
            let _ = printer.flush();
        }
        Ok(())
    }

    fn stop_recording(&mut self, error: RecordError) {
        let events_kept = self
            .recorder
            .take()
            .map_or(0, |recorder| recorder.events_flushed());
        self.recording_failure = Some(RecordingFailure { error, events_kept });
    }

    /// What the recording misses, when the recorder failed: one line for the user.
    pub fn recording_failure(&self) -> Option<String> {
        let failure = self.recording_failure.as_ref()?;
        Some(format!(
            "{}; the recording holds the first {} of the session's {} events and no trailer (replay reports it truncated); the report covers all of them",
            failure.error, failure.events_kept, self.stream_events
        ))
    }
}

/// A recording that could not be completed.
#[derive(Debug)]
struct RecordingFailure {
    error: RecordError,
    /// Events in the frames that reached the file: a replay gives these.
    events_kept: u64,
}

/// The perf-map names of the frames in anonymous executable memory (JIT code), looked up
/// as the frames are named: a return address one byte back, inside its call.
fn jit_symbols_of(
    frames: &[u64],
    layout: &AddressSpace,
    view: &FileView,
    perf_maps: &mut PerfMaps,
) -> Vec<crate::stacks::JitSymbol> {
    let mut symbols: Vec<crate::stacks::JitSymbol> = Vec::new();
    for (index, &address) in frames.iter().enumerate() {
        let lookup = if index == 0 {
            address
        } else {
            address.saturating_sub(1)
        };
        let jit_code = layout.region_at(lookup).is_some_and(|region| {
            region.perms.executable()
                && !matches!(
                    region.kind,
                    RegionKind::File | RegionKind::Stack | RegionKind::Vdso
                )
        });
        if !jit_code
            || symbols
                .iter()
                .any(|s| (s.start..s.start + s.len).contains(&lookup))
        {
            continue;
        }
        symbols.extend(perf_maps.symbol_at(view, lookup));
    }
    symbols
}

/// An event about the thread and moment of a stack sample.
fn event_of(capture: &StackCapture, body: EventBody) -> Event {
    Event {
        time_ns: capture.time_ns,
        pid: capture.pid,
        tid: capture.tid,
        comm: capture.comm,
        abi: capture.abi,
        body,
    }
}
