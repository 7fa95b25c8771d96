//! The command line: parse, run the live session or the replay, write the report, and turn
//! the outcome into an exit code.

use std::{
    ffi::OsString,
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use memtrace_common::{DEFAULT_RING_BUFFER_BYTES, DEFAULT_STACK_MIN_BYTES};

use crate::{
    kernel::{
        self,
        live::{KernelOptions, KernelTarget},
    },
    launch, output,
    probes::{backend::BackendChoice, floor::HookFloor, ProbeError, ProbeOptions},
    replay::{self, ReplayOptions},
    report::exited::{ExitedPrograms, DEFAULT_KEEP_EXITED},
    report::{self, text::TextOptions, FrameName, FrameNamer, Report, SessionInfo, Source},
    session::{self, LiveOptions, SessionError, Target},
    stacks::Symbolizer,
};

/// Trace the memory-mapping syscalls of a command or a running process, rebuild each
/// process's address space, and report what was never released and what looks wrong.
#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  sudo memtrace -- python3 -c 'x = bytearray(64 << 20)'\n  sudo memtrace --pid 1234 --duration 60 --format json -o report.json\n  sudo memtrace --pid $(pgrep -o sshd) --follow --record sshd.mtr\n  memtrace replay sshd.mtr --until 30\n\nTracing needs root (CAP_BPF and CAP_PERFMON); replay does not."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rebuild the report of a recorded session (no root needed).
    Replay(ReplayArgs),
    /// Kernel allocations (slab, page, per-CPU) made during the trace and still outstanding,
    /// by call site and cache: the Linux `!poolused`.
    Kernel(KernelArgs),
    /// For `cargo xtask bench`: run CMD with empty programs on the syscall hooks, the cost
    /// memtrace is compared with.
    #[command(hide = true)]
    HookFloor {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
pub struct KernelArgs {
    /// Count only allocations made in this process's context (all its threads).
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// With --pid or a command: also count their children's allocations.
    #[arg(short, long)]
    pub follow: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Read the outstanding allocations this often (the points growth is judged on).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Record the kernel stack of each allocation and show the commonest per call site.
    #[arg(long)]
    pub stacks: bool,
    /// Capacity of the kernel's table of outstanding allocations; allocations beyond it are
    /// counted and reported, not tracked.
    #[arg(long, value_name = "N", default_value_t = 1 << 18)]
    pub max_outstanding: u32,
    /// Also trace the page allocator (call sites only with --stacks). System-wide this is
    /// mostly the page cache of file I/O, which can fill the outstanding table.
    #[arg(long)]
    pub pages: bool,
    /// Write the snapshots to FILE, to replay them later (`memtrace replay FILE`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// A command to start: count the allocations made in its context.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Attach to this running process (all its threads) instead of starting a command.
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Trace every process of this cgroup (v2): those in it now, and every process started
    /// in it or moved into it later, filtered in the kernel. PATH is its directory
    /// (/sys/fs/cgroup/system.slice/foo.service) or its path in the hierarchy, as
    /// /proc/PID/cgroup names it (/system.slice/foo.service). Only that cgroup, not the
    /// cgroups below it: give a container's own (leaf) cgroup. A process that leaves it stays
    /// traced until it exits. The session runs until --duration, Ctrl-C, SIGTERM, or the
    /// cgroup is removed.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["command", "pid"])]
    pub cgroup: Option<PathBuf>,
    /// Also trace the children the traced processes start, and what they exec.
    #[arg(short, long)]
    pub follow: bool,
    /// Print one line per event as it happens (on stderr), strace-like.
    #[arg(long)]
    pub events: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Every SECONDS, print per traced process its live totals and the groups that grew
    /// most, with deltas and rates (on stderr).
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<f64>,
    #[command(flatten)]
    pub exited: ExitedArgs,
    /// Write the whole event stream to FILE, to replay it later (`memtrace replay FILE`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Size of the kernel's event ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_size: u32,
    /// Forward the eBPF programs' own diagnostics (aya-log) to stderr.
    #[arg(long)]
    pub ebpf_log: bool,
    /// Record who allocated: the user call stack of every mmap, mremap, brk and memfd_create
    /// that creates at least --stack-min-size bytes (on by default).
    #[arg(long, overrides_with = "no_stacks")]
    pub stacks: bool,
    /// Do not sample call stacks.
    #[arg(long, overrides_with = "stacks")]
    pub no_stacks: bool,
    /// Smallest mapping whose call stack is sampled; 0 samples every call (see
    /// `cargo xtask bench` for the cost).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_MIN_BYTES)]
    pub stack_min_size: u64,
    /// How to hook the syscalls: fentry/fexit on their kernel functions (costs other processes
    /// nothing; needs ftrace), raw sys_enter/sys_exit tracepoints (work everywhere), or auto:
    /// fentry where it attaches. The report's header names the one used. MEMTRACE_BACKEND sets
    /// the default (for a fleet or a test matrix that always wants one backend).
    #[arg(long, value_enum, env = "MEMTRACE_BACKEND", default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub output: OutputArgs,
    /// The command to start and trace: `memtrace [OPTIONS] -- CMD [ARGS...]`.
    /// Options are not taken as the command (no `allow_hyphen_values`), so a mistyped option
    /// is an error rather than a command to run; after the command's first word, its own
    /// options are its own.
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording (made with `--record`).
    pub file: PathBuf,
    /// Stop the replay this many seconds into the session and report the layouts as they were.
    #[arg(long, value_name = "SECONDS")]
    pub until: Option<f64>,
    /// Report only these processes (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// With --until: report only what was created from this many seconds into the session
    /// and is still mapped at --until (or at the end): what grew in that window.
    #[arg(long, value_name = "SECONDS")]
    pub since: Option<f64>,
    /// Every SECONDS of the recorded session, print the growth block `--interval` prints live.
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<f64>,
    /// Print one line per event (on stderr), as `--events` did live.
    #[arg(long)]
    pub events: bool,
    #[command(flatten)]
    pub exited: ExitedArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--keep-exited`, live and in replay.
#[derive(Debug, Args)]
pub struct ExitedArgs {
    /// List this many of the most recent exited processes in full; older ones are folded into
    /// one entry per program (counts, exits, syscalls, unreleased memory, call sites,
    /// findings), so memtrace's memory and the report follow what runs, not every process
    /// that ran. A program's first process with each kind of finding stays listed in full.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_EXITED)]
    pub keep_exited: usize,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Include every region of every process in the text report.
    #[arg(long)]
    pub show_layout: bool,
    /// Also write the unreleased bytes by call stack as a gzipped pprof profile
    /// (inuse_space, inuse_objects, alloc_space, alloc_objects), for `go tool pprof`,
    /// Pyroscope, Perfetto or speedscope.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Also write the unreleased bytes by call stack as collapsed stacks
    /// (`process;outer;...;inner bytes`), for flame-graph tools.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Also write a self-contained HTML page with charts: bytes over time by kind, the groups
    /// that grew most, the address space to scale, unreleased bytes by call stack.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl OutputArgs {
    /// The export files asked for, as (option, path).
    fn exports(&self) -> impl Iterator<Item = (&'static str, &Path)> + '_ {
        [
            ("--pprof", &self.pprof),
            ("--folded", &self.folded),
            ("--html", &self.html),
        ]
        .into_iter()
        .filter_map(|(option, path)| Some((option, path.as_deref()?)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// memtrace's `main`: returns the traced command's exit code after the report.
pub fn main() -> ExitCode {
    let arguments: Vec<OsString> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|a| a == launch::GATE_ARGUMENT) {
        let command = arguments.get(3..).unwrap_or_default();
        return ExitCode::from(launch::run_gate(command) as u8);
    }
    let cli = Cli::parse();
    // --ebpf-log asks for the programs' own messages, which they log at debug level.
    let default_filter = if cli.trace.ebpf_log {
        "warn,memtrace=debug"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .format_timestamp(None)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("memtrace: {}", one_line(&error));
            // A transparent wrapper hides the probe error from the chain: ask both.
            if let Some(log) = error.chain().find_map(|cause| {
                cause
                    .downcast_ref::<ProbeError>()
                    .and_then(ProbeError::verifier_log)
                    .or_else(|| cause.downcast_ref::<SessionError>()?.verifier_log())
            }) {
                eprintln!("verifier log:\n{log}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Replay(args)) => run_replay(args),
        Some(Command::Kernel(args)) => run_kernel(args),
        Some(Command::HookFloor { command }) => run_hook_floor(&command),
        None => run_trace(cli.trace),
    }
}

fn run_trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let target = match (args.pid, &args.cgroup, args.command.is_empty()) {
        (Some(pid), _, _) => Target::Pid(pid),
        (None, Some(path), _) => Target::Cgroup(crate::cgroup::Cgroup::resolve(path)?),
        (None, None, false) => Target::Command(args.command.clone()),
        (None, None, true) => anyhow::bail!(
            "nothing to trace: give a command (`memtrace -- CMD`), a process (`memtrace --pid PID`) or a cgroup (`memtrace --cgroup PATH`)"
        ),
    };
    let cgroup_id = match &target {
        Target::Cgroup(cgroup) => cgroup.id,
        _ => 0,
    };
    refuse_shared_outputs(args.record.as_deref(), &args.output)?;
    let duration = match args.duration {
        Some(seconds) if seconds <= 0.0 => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(seconds) => Some(seconds_option("--duration", seconds)?),
        None => None,
    };
    let options = LiveOptions {
        target,
        probes: ProbeOptions {
            follow_children: args.follow,
            ring_buffer_bytes: args.ring_buffer_size,
            ebpf_log: args.ebpf_log,
            stack_min_bytes: (!args.no_stacks).then_some(args.stack_min_size),
            backend: args.backend,
            cgroup_id,
            oom_victims: false,
        },
        print_events: args.events,
        duration,
        record: args.record.clone(),
        command_line: std::env::args().collect(),
        interval: interval_option(args.interval)?,
        keep_exited: args.exited.keep_exited,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(session::run(options))?;
    if outcome.undecodable > 0 {
        eprintln!(
            "memtrace: {} kernel records could not be decoded",
            outcome.undecodable
        );
    }
    if outcome.unreadable_images > 0 {
        eprintln!(
            "memtrace: the layout the kernel made at {} exec(s) could not be rebuilt (see the warnings above); those images are missing from their processes' layouts",
            outcome.unreadable_images
        );
    }
    let info = SessionInfo {
        source: Source::Live,
        events: outcome.pipeline.events,
        lost: outcome.pipeline.lost,
        backend: Some(outcome.backend.info()),
    };
    let mut pipeline = outcome.pipeline;
    report_model(
        &pipeline.model,
        &pipeline.exited,
        &info,
        &mut SymbolNames(&mut pipeline.symbolizer),
        &[],
        &args.output,
    )?;
    if pipeline.unreadable_modules > 0 {
        eprintln!(
            "memtrace: {} module file(s) of traced processes could not be read as the process maps them (it was gone, or the file there is not the mapped one): frames in them show module+offset, and their stacks were walked by frame pointers only",
            pipeline.unreadable_modules
        );
    }
    let recording_failed = pipeline.recording_failure();
    if let Some(failure) = &recording_failed {
        eprintln!("memtrace: {failure}");
    }
    if pipeline.lost.total() > 0 {
        eprintln!(
            "memtrace: {} events lost (ring buffer full: {}, in-flight table full: {}); try a larger --ring-buffer-size",
            pipeline.lost.total(),
            pipeline.lost.ring_full,
            pipeline.lost.pending_full
        );
    }
    // A recording that misses events is a failure of memtrace's, whatever the command did.
    Ok(match outcome.command_status {
        _ if recording_failed.is_some() => ExitCode::FAILURE,
        Some(status) => exit_code_of(status),
        None => ExitCode::SUCCESS,
    })
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let until = match args.until {
        Some(seconds) => Some(seconds_option("--until", seconds)?),
        None => None,
    };
    refuse_shared_outputs(None, &args.output)?;
    for output in report_outputs(&args.output) {
        output::refuse_input(output, ("the recording", &args.file))?;
    }
    let since = match args.since {
        Some(seconds) => Some(seconds_option("--since", seconds)?),
        None => None,
    };
    if let (Some(since), Some(until)) = (since, until) {
        if since > until {
            anyhow::bail!("--since must not be later than --until");
        }
    }
    let replayed = replay::run(&ReplayOptions {
        path: args.file.clone(),
        until,
        print_events: args.events,
        interval: interval_option(args.interval)?,
        since,
        keep_exited: args.exited.keep_exited,
        pids: args.pids.clone(),
    })?;
    // A damaged recording still gets its report (nothing read is lost), then a non-zero exit
    // with one line per problem.
    let mut damaged = false;
    if let Some(error) = &replayed.stopped_by {
        eprintln!("memtrace: replay stopped early: {error}");
        damaged = true;
    }
    for problem in replayed.outcome.problems() {
        eprintln!("memtrace: {problem}");
        damaged = true;
    }
    if !replayed.outcome.sequenced {
        eprintln!(
            "memtrace: this recording is format version 1, which does not number its frames: only its trailer's event count can be checked"
        );
    }
    if !replayed.pipeline.kernel.is_empty() {
        let report = kernel::report::build(&replayed.pipeline.kernel, Source::Replay);
        write_kernel_report(&report, &args.output)?;
        // As for a user-space recording: damage fails the replay, --until or not.
        return Ok(if damaged {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    let info = SessionInfo {
        source: Source::Replay,
        events: replayed.pipeline.events,
        lost: replayed.pipeline.lost,
        backend: None,
    };
    let mut pipeline = replayed.pipeline;
    report_model(
        &pipeline.model,
        &pipeline.exited,
        &info,
        &mut SymbolNames(&mut pipeline.symbolizer),
        &args.pids,
        &args.output,
    )?;
    Ok(if damaged {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The most seconds a time option takes: about 31 years, far beyond any session, and small
/// enough that adding it to a clock reading or counting it in nanoseconds cannot overflow.
const MAX_SECONDS: f64 = 1e9;

/// A time option as a duration, or one line saying what it must be (not a panic: `1e30` does
/// not fit a `Duration`).
fn seconds_option(option: &str, seconds: f64) -> anyhow::Result<Duration> {
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        anyhow::bail!("{option} {seconds} is out of range: give 0 to {MAX_SECONDS} seconds");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Every file the report goes to, with the option that named it.
fn report_outputs(output: &OutputArgs) -> Vec<(&'static str, &Path)> {
    let report = output.output.as_deref().map(|path| ("-o", path));
    report.into_iter().chain(output.exports()).collect()
}

/// Two outputs naming one file (through `..`, a link or a hard link) are refused before
/// tracing starts: finding out at the end would lose the session.
fn refuse_shared_outputs(record: Option<&Path>, output: &OutputArgs) -> anyhow::Result<()> {
    let recording = record.map(|path| ("--record", path));
    let outputs: Vec<_> = recording
        .into_iter()
        .chain(report_outputs(output))
        .collect();
    Ok(output::refuse_same_file(&outputs)?)
}

fn run_kernel(args: KernelArgs) -> anyhow::Result<ExitCode> {
    refuse_shared_outputs(args.record.as_deref(), &args.output)?;
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), _) => KernelTarget::Pid(pid),
        (None, false) => KernelTarget::Command(args.command.clone()),
        (None, true) => KernelTarget::System,
    };
    anyhow::ensure!(
        !args.follow || !matches!(target, KernelTarget::System),
        "--follow needs --pid or a command"
    );
    let duration = match args.duration {
        Some(seconds) if seconds <= 0.0 => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(seconds) => Some(seconds_option("--duration", seconds)?),
        None => None,
    };
    anyhow::ensure!(
        args.interval >= 0.01,
        "--interval must be at least 0.01 seconds"
    );
    let interval = seconds_option("--interval", args.interval)?;
    let options = KernelOptions {
        target,
        follow: args.follow,
        stacks: args.stacks,
        interval,
        duration,
        record: args.record.clone(),
        max_outstanding: args.max_outstanding,
        pages: args.pages,
        command_line: std::env::args().collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(kernel::live::run(options))?;
    let report = kernel::report::build(&outcome.pipeline.kernel, Source::Live);
    write_kernel_report(&report, &args.output)?;
    let recording_failed = outcome.pipeline.recording_failure();
    if let Some(failure) = &recording_failed {
        eprintln!("memtrace: {failure}");
    }
    if report.kernel.table_full > 0 {
        eprintln!(
            "memtrace: {} kernel allocations not tracked (outstanding table full); try a larger --max-outstanding",
            report.kernel.table_full
        );
    }
    Ok(match outcome.command_status {
        _ if recording_failed.is_some() => ExitCode::FAILURE,
        Some(status) => exit_code_of(status),
        None => ExitCode::SUCCESS,
    })
}

fn write_kernel_report(
    report: &kernel::report::KernelReportFile,
    output: &OutputArgs,
) -> anyhow::Result<()> {
    let rendered = match output.format {
        Format::Json => kernel::report::render_json(report),
        Format::Text => kernel::report::render_text(report),
    };
    write_rendered(&rendered, output)
}

/// `--interval`: a positive number of seconds.
fn interval_option(seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match seconds {
        Some(seconds) if seconds.is_nan() || seconds <= 0.0 => {
            anyhow::bail!("--interval must be a positive number of seconds")
        }
        Some(seconds) => Ok(Some(seconds_option("--interval", seconds)?)),
        None => Ok(None),
    }
}

fn run_hook_floor(command: &[OsString]) -> anyhow::Result<ExitCode> {
    let _floor = HookFloor::attach()?;
    let (program, args) = command
        .split_first()
        .context("hook-floor needs a command")?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    Ok(exit_code_of(status))
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

/// The report of `model`, in every form asked for. JSON alone is streamed one process at a
/// time: a session of a million processes is reported without holding its report, or the
/// text of it, in memory (the footprint bench measures both ways).
fn report_model(
    model: &crate::model::Model,
    exited: &ExitedPrograms,
    info: &SessionInfo,
    namer: &mut dyn FrameNamer,
    pids: &[u32],
    output: &OutputArgs,
) -> anyhow::Result<()> {
    let exports = output.pprof.is_some() || output.folded.is_some() || output.html.is_some();
    if output.format == Format::Json && !exports {
        let mut write =
            |out: &mut dyn Write| report::stream::write_json(model, exited, info, namer, pids, out);
        return match &output.output {
            Some(path) => Ok(output::write_atomic_with(path, write)?),
            None => {
                let mut stdout = io::BufWriter::new(io::stdout().lock());
                write(&mut stdout)?;
                stdout.flush()?;
                Ok(())
            }
        };
    }
    let mut report = report::build_with(model, exited, info, namer);
    if !pids.is_empty() {
        report.filter_pids(pids);
    }
    write_report(&report, output)
}

fn write_report(report: &Report, output: &OutputArgs) -> anyhow::Result<()> {
    // The exports first: a report on stdout may end in a closed pipe.
    write_exports(report, output)?;
    let rendered = match output.format {
        Format::Json => report::json::render(report),
        Format::Text => report::text::render(
            report,
            &TextOptions {
                show_layout: output.show_layout,
            },
        ),
    };
    write_rendered(&rendered, output)
}

fn write_rendered(rendered: &str, output: &OutputArgs) -> anyhow::Result<()> {
    match &output.output {
        Some(path) => Ok(output::write_atomic(path, rendered.as_bytes())?),
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(rendered.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// The files other tools read: each written whole, or not at all, with one line on error.
fn write_exports(report: &Report, output: &OutputArgs) -> anyhow::Result<()> {
    if let Some(path) = &output.pprof {
        let profile = report::export::pprof::render(report).context("compressing the profile")?;
        output::write_atomic(path, &profile)
            .with_context(|| format!("writing the pprof profile to {}", path.display()))?;
    }
    if let Some(path) = &output.folded {
        let folded = report::export::folded::render(report);
        output::write_atomic(path, folded.as_bytes())
            .with_context(|| format!("writing the collapsed stacks to {}", path.display()))?;
    }
    if let Some(path) = &output.html {
        let page = report::export::html::render(report);
        output::write_atomic(path, page.as_bytes())
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    Ok(())
}

/// The traced command's status as our own: its code, or 128 + the signal that killed it, as
/// a shell reports it.
fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal) as u8),
        _ => ExitCode::FAILURE,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// The error and its causes on one line, without repeating a cause a message already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.lines().next().unwrap_or_default().to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
