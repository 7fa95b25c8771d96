//! User mode's consumer: the address-space model, the call stacks (unwound here from live stack
//! samples, or read back from a recording), the folding of exited processes by program, and
//! the `--interval` blocks. Live tracing and replay feed it the same events through the
//! [`Stream`](crate::stream::Stream), so a replay computes exactly what the live run computed.

pub mod interval;

use std::collections::{HashMap, HashSet};

use interval::IntervalPrinter;

use crate::{
    capture::{roots::Roots, RawStack},
    event::{Event, EventBody, JitSymbolEvent, ModuleEvent, StackEvent},
    model::{AddressSpace, Model, RegionKind},
    report::{
        self, folded::FoldedPrograms, Detail, FrameName, FrameNamer, Report, ReportOptions,
        SessionInfo,
    },
    stacks::{
        vdso::VDSO_NAME, FileView, MappedFile, ModuleCache, ModuleMap, PerfMaps, Symbolizer,
        Unwinder,
    },
    stream::Consumer,
};

/// Exited processes listed in full by default (`--keep-exited`); older ones are folded.
pub const DEFAULT_KEEP_EXITED: usize = 256;

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
        // The vDSO too: the unwinder reads it from the process's memory (`stacks::vdso`).
        let vdso = region.kind == RegionKind::Vdso && region.name.as_deref() == Some(VDSO_NAME);
        if region.kind != RegionKind::File && !vdso {
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

/// How user mode reports, fixed before the first event: folding follows these options, so a
/// replay folds exactly what the live session folded.
#[derive(Clone, Debug)]
pub struct UserModeOptions {
    /// `--keep-exited`: the most recent exits listed in full; older ones are folded by program.
    pub keep_exited: usize,
    /// The findings' thresholds and `--since`.
    pub report: ReportOptions,
    /// `replay --pid`: processes never folded.
    pub keep_pids: Vec<u32>,
}

impl Default for UserModeOptions {
    fn default() -> Self {
        Self {
            keep_exited: DEFAULT_KEEP_EXITED,
            report: ReportOptions::default(),
            keep_pids: Vec::new(),
        }
    }
}

pub struct UserMode {
    pub model: Model,
    /// Turns live stack samples into call stacks; replay reads stacks already unwound.
    unwinder: Unwinder,
    /// Reads each module the stacks run through at first sight (so a binary replaced later
    /// still names its frames), and names frames for the report.
    symbolizer: Symbolizer,
    /// Modules already announced in the stream, by process and path: a container's file at a
    /// path is not the host's.
    announced: HashMap<u32, HashSet<String>>,
    /// The perf maps of processes whose stacks run through JIT code, and the JIT symbols
    /// already announced in the stream, by process and start.
    perf_maps: PerfMaps,
    announced_jit: HashMap<u32, HashMap<u64, std::sync::Arc<str>>>,
    /// Exited processes folded out of the model past the `keep_exited` most recent, summed by
    /// program for the report.
    exited: FoldedPrograms,
    keep_exited: usize,
    /// Pids folded away since the session last asked ([`Self::take_forgotten`]).
    forgotten: Vec<u32>,
    /// Modules of live processes that could not be read as the process maps them (by process
    /// and path): their frames keep module+offset.
    unreadable_modules: u64,
    /// Each process's root as this machine reaches it, from its container identity or, for a
    /// child gone before it could be read, its parent's at fork: where its modules are read
    /// once `/proc/PID` is gone.
    roots: Roots,
    /// `--interval`: blocks of growth per interval.
    interval: Option<IntervalPrinter>,
}

impl Consumer for UserMode {
    fn consume(&mut self, event: &Event) {
        // Not forgotten at exit: stack samples are often read after their process is gone.
        if let EventBody::Container(container) = &event.body {
            self.roots.set(event.pid, &container.root);
        }
        self.roots.inherit(event);
        // Before the event: a block shows the state at its boundary.
        self.tick_interval(event.time_ns);
        self.model.apply(event);
        self.fold();
    }
}

impl UserMode {
    pub fn new(options: UserModeOptions) -> Self {
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
            exited: FoldedPrograms::new(options.report, options.keep_pids),
            keep_exited: options.keep_exited,
            forgotten: Vec::new(),
            unreadable_modules: 0,
            roots: Roots::default(),
            interval: None,
        }
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

    /// The root process `pid` was last known to name its files from: its own, told in its
    /// container identity, or its parent's at fork.
    pub fn root_of(&self, pid: u32) -> Option<std::sync::Arc<str>> {
        self.roots.shared_root_of(pid)
    }

    /// Modules of live processes whose files could not be read as the process maps them.
    pub fn unreadable_modules(&self) -> u64 {
        self.unreadable_modules
    }

    /// The exited processes folded by program.
    pub fn exited(&self) -> &FoldedPrograms {
        &self.exited
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
    /// sample follows its syscall, so the mappings it runs through are known). Returns the
    /// events that tell it, for the stream to record and feed back: the modules it runs
    /// through that the stream has not announced yet, then the `Stack` event. Recordings carry
    /// frames, not stack bytes.
    pub fn unwind(&mut self, capture: &RawStack) -> Vec<Event> {
        let sample = &capture.sample;
        let Some(process) = self.model.process(capture.pid) else {
            return Vec::new();
        };
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
            // No file: its frames are named by the symbols below.
            .filter(|mapping| mapping.path != VDSO_NAME)
            .filter(|mapping| {
                !self
                    .announced
                    .get(&capture.pid)
                    .is_some_and(|paths| paths.contains(&mapping.path))
            })
            .collect();
        new_modules.sort_by(|a, b| a.path.cmp(&b.path));
        new_modules.dedup_by(|a, b| a.path == b.path);
        let mut jit_symbols = jit_symbols_of(
            &frames,
            process.layout(),
            &modules.view,
            &mut self.perf_maps,
        );
        jit_symbols.extend(vdso_symbols_of(
            &frames,
            process.layout(),
            sample.abi,
            &self.unwinder,
        ));
        let mut events = Vec::with_capacity(new_modules.len() + jit_symbols.len() + 1);
        for mapping in new_modules {
            self.announced
                .entry(capture.pid)
                .or_default()
                .insert(mapping.path.clone());
            let stacks = self.model.call_stacks();
            // What the stream must tell about this process's file, if anything: its
            // build-id, or that it cannot be named (empty). Each module is a path of its own,
            // so what the model knows of one is not changed by announcing another first.
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
                events.push(event_of(
                    capture,
                    EventBody::Module(ModuleEvent {
                        path: mapping.path,
                        build_id,
                    }),
                ));
            }
        }
        for symbol in jit_symbols {
            let announced = self.announced_jit.entry(capture.pid).or_default();
            if announced.get(&symbol.start) == Some(&symbol.name) {
                continue;
            }
            announced.insert(symbol.start, std::sync::Arc::clone(&symbol.name));
            events.push(event_of(
                capture,
                EventBody::JitSymbol(JitSymbolEvent {
                    start: symbol.start,
                    len: symbol.len,
                    name: symbol.name.to_string(),
                }),
            ));
        }
        events.push(event_of(
            capture,
            EventBody::Stack(StackEvent {
                frames,
                truncated: walk.truncated,
            }),
        ));
        events
    }

    /// The processes whose frames were named from their perf maps.
    pub fn processes_with_perf_maps(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.perf_maps.processes_with_maps().collect();
        pids.sort_unstable();
        pids
    }

    /// The report of everything fed so far, frames named from the binaries as the symbolizer
    /// first saw them.
    pub fn report(&mut self, session: &SessionInfo, detail: Detail) -> Report {
        self.report_for(session, &[], detail)
    }

    /// The report of these processes only (all when `pids` is empty).
    pub fn report_for(&mut self, session: &SessionInfo, pids: &[u32], detail: Detail) -> Report {
        report::build_for(
            &self.model,
            &self.exited,
            session,
            &mut SymbolNames(&mut self.symbolizer),
            pids,
            detail,
        )
    }

    /// The JSON report streamed one process at a time to `out` (`pids`: only those, as
    /// `replay --pid`; `rows`: of the ranking, as `--top`): a session of a million processes
    /// is reported without holding its report in memory.
    pub fn write_json(
        &mut self,
        session: &SessionInfo,
        pids: &[u32],
        rows: usize,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        report::stream::write_json(
            &self.model,
            &self.exited,
            session,
            &mut SymbolNames(&mut self.symbolizer),
            pids,
            rows,
            out,
        )
    }
}

/// Names call-stack frames from the binaries on this machine, as the symbolizer first saw
/// them; a frame whose module is gone, or is not the build the stack ran through, stays
/// module+offset.
struct SymbolNames<'s>(&'s mut Symbolizer);

impl FrameNamer for SymbolNames<'_> {
    fn name(&mut self, module: &str, build_id: Option<&[u8]>, file_offset: u64) -> FrameName {
        // Innermost first: the inlined function the code belongs to names the frame.
        let frame = self
            .0
            .symbolize_inlined(module, build_id, file_offset)
            .swap_remove(0);
        FrameName {
            function: frame.function,
            file: frame.file,
            line: frame.line,
        }
    }
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

/// The vDSO functions the frames run through, as the unwinder's copy of the vDSO names them:
/// recorded like JIT symbols, since no file of the vDSO is there to name them at replay.
fn vdso_symbols_of(
    frames: &[u64],
    layout: &AddressSpace,
    abi: crate::stacks::StackAbi,
    unwinder: &Unwinder,
) -> Vec<crate::stacks::JitSymbol> {
    let mut symbols: Vec<crate::stacks::JitSymbol> = Vec::new();
    for (index, &address) in frames.iter().enumerate() {
        let lookup = if index == 0 {
            address
        } else {
            address.saturating_sub(1)
        };
        let Some(vdso) = layout
            .region_at(lookup)
            .filter(|region| region.name.as_deref() == Some(VDSO_NAME))
        else {
            continue;
        };
        if symbols
            .iter()
            .any(|s| (s.start..s.start + s.len).contains(&lookup))
        {
            continue;
        }
        symbols.extend(unwinder.vdso_symbol(abi, vdso.start, lookup));
    }
    symbols
}

/// An event about the thread and moment of a stack sample.
fn event_of(capture: &RawStack, body: EventBody) -> Event {
    Event {
        time_ns: capture.time_ns,
        pid: capture.pid,
        tid: capture.tid,
        comm: capture.comm,
        abi: capture.abi,
        body,
    }
}
