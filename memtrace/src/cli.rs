//! The command line: parse, run the live session or the replay, write the report, and turn
//! the outcome into an exit code.

use std::{
    ffi::OsString,
    fs,
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use memtrace_common::{DEFAULT_RING_BUFFER_BYTES, DEFAULT_STACK_MIN_BYTES};

use crate::{
    launch,
    probes::{ProbeError, ProbeOptions},
    replay::{self, ReplayOptions},
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
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Attach to this running process (all its threads) instead of starting a command.
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Also trace the children the traced processes start, and what they exec.
    #[arg(short, long)]
    pub follow: bool,
    /// Print one line per event as it happens (on stderr), strace-like.
    #[arg(long)]
    pub events: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
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
    #[command(flatten)]
    pub output: OutputArgs,
    /// The command to start and trace: `memtrace [OPTIONS] -- CMD [ARGS...]`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
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
    /// Print one line per event (on stderr), as `--events` did live.
    #[arg(long)]
    pub events: bool,
    #[command(flatten)]
    pub output: OutputArgs,
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
        None => run_trace(cli.trace),
    }
}

fn run_trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), _) => Target::Pid(pid),
        (None, false) => Target::Command(args.command.clone()),
        (None, true) => anyhow::bail!(
            "nothing to trace: give a command (`memtrace -- CMD`) or a process (`memtrace --pid PID`)"
        ),
    };
    let duration = match args.duration {
        Some(seconds) if !(seconds.is_finite() && seconds > 0.0) => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(seconds) => Some(Duration::from_secs_f64(seconds)),
        None => None,
    };
    let options = LiveOptions {
        target,
        probes: ProbeOptions {
            follow_children: args.follow,
            ring_buffer_bytes: args.ring_buffer_size,
            ebpf_log: args.ebpf_log,
            stack_min_bytes: (!args.no_stacks).then_some(args.stack_min_size),
        },
        print_events: args.events,
        duration,
        record: args.record.clone(),
        command_line: std::env::args().collect(),
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
    let info = SessionInfo {
        source: Source::Live,
        events: outcome.pipeline.events,
        lost: outcome.pipeline.lost,
    };
    let mut pipeline = outcome.pipeline;
    let report = report::build_named(
        &pipeline.model,
        &info,
        &mut SymbolNames(&mut pipeline.symbolizer),
    );
    write_report(&report, &args.output)?;
    if pipeline.lost.total() > 0 {
        eprintln!(
            "memtrace: {} events lost (ring buffer full: {}, in-flight table full: {}); try a larger --ring-buffer-size",
            pipeline.lost.total(),
            pipeline.lost.ring_full,
            pipeline.lost.pending_full
        );
    }
    Ok(match outcome.command_status {
        Some(status) => exit_code_of(status),
        None => ExitCode::SUCCESS,
    })
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let until = match args.until {
        Some(seconds) if !(seconds.is_finite() && seconds >= 0.0) => {
            anyhow::bail!("--until must be a number of seconds, 0 or more")
        }
        Some(seconds) => Some(Duration::from_secs_f64(seconds)),
        None => None,
    };
    let replayed = replay::run(&ReplayOptions {
        path: args.file.clone(),
        until,
        print_events: args.events,
    })?;
    // A damaged recording still gets its report (nothing read is lost), then a non-zero exit
    // with one line per problem.
    let mut damaged = false;
    if let Some(error) = &replayed.stopped_by {
        eprintln!("memtrace: replay stopped early: {error}");
        damaged = true;
    }
    if let Some(truncation) = replayed.outcome.truncated_at {
        eprintln!("memtrace: recording {truncation}");
        damaged = true;
    }
    if replayed.outcome.corrupt_frames_skipped > 0 {
        eprintln!(
            "memtrace: {} corrupt frames skipped",
            replayed.outcome.corrupt_frames_skipped
        );
        damaged = true;
    }
    let info = SessionInfo {
        source: Source::Replay,
        events: replayed.pipeline.events,
        lost: replayed.pipeline.lost,
    };
    let mut pipeline = replayed.pipeline;
    let mut report = report::build_named(
        &pipeline.model,
        &info,
        &mut SymbolNames(&mut pipeline.symbolizer),
    );
    if !args.pids.is_empty() {
        report.filter_pids(&args.pids);
    }
    write_report(&report, &args.output)?;
    Ok(if damaged && args.until.is_none() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
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
    match &output.output {
        Some(path) => write_private(path, rendered.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display())),
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
        report::export::file::write(path, &profile)
            .with_context(|| format!("writing the pprof profile to {}", path.display()))?;
    }
    if let Some(path) = &output.folded {
        let folded = report::export::folded::render(report);
        report::export::file::write(path, folded.as_bytes())
            .with_context(|| format!("writing the collapsed stacks to {}", path.display()))?;
    }
    if let Some(path) = &output.html {
        let page = report::export::html::render(report);
        report::export::file::write(path, page.as_bytes())
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    Ok(())
}

/// Reports hold address layouts, which defeat ASLR: like recordings, they are the owner's
/// alone (0600, also when an existing file is overwritten).
fn write_private(path: &std::path::Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file this call creates; /dev/null and other devices keep theirs.
    if file.metadata()?.is_file() {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)
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
