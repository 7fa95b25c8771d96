//! The command line's types (clap) and the checks of their values that clap cannot make.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use memtrace_common::{DEFAULT_RING_BUFFER_BYTES, DEFAULT_STACK_MIN_BYTES};

use crate::{probes::backend::BackendChoice, user_mode::DEFAULT_KEEP_EXITED};

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
    /// Take a kernel snapshot of the outstanding allocations this often (the points growth is
    /// judged on). `--interval` is the older name.
    #[arg(
        long,
        visible_alias = "interval",
        value_name = "SECONDS",
        default_value_t = 1.0
    )]
    pub snapshot_interval: f64,
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
    /// Write the kernel snapshots to FILE, to replay them later (`memtrace replay FILE`).
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
    /// Rows of the session summary's table of processes and folded programs (the rest are
    /// summed in one line); the text and HTML reports detail those and the processes with
    /// findings.
    #[arg(long, value_name = "N", default_value_t = crate::report::ranking::DEFAULT_ROWS)]
    pub top: usize,
    /// Rank and detail every process, in full (text, HTML and the JSON ranking).
    #[arg(long)]
    pub all: bool,
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
    /// The rows of the ranking asked for (`--top`, `--all`).
    pub fn ranked_rows(&self) -> usize {
        if self.all {
            usize::MAX
        } else {
            self.top
        }
    }

    /// The export files asked for, as (option, path).
    pub fn exports(&self) -> impl Iterator<Item = (&'static str, &Path)> + '_ {
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

/// The most seconds a time option takes: about 31 years, far beyond any session, and small
/// enough that adding it to a clock reading or counting it in nanoseconds cannot overflow.
const MAX_SECONDS: f64 = 1e9;

/// A time option as a duration, or one line saying what it must be (not a panic: `1e30` does
/// not fit a `Duration`).
pub fn seconds_option(option: &str, seconds: f64) -> anyhow::Result<Duration> {
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        anyhow::bail!("{option} {seconds} is out of range: give 0 to {MAX_SECONDS} seconds");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// An optional time option that must be a positive number of seconds (`--duration`,
/// `--interval`).
pub fn positive_seconds(option: &str, seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match seconds {
        Some(seconds) if seconds.is_nan() || seconds <= 0.0 => {
            anyhow::bail!("{option} must be a positive number of seconds")
        }
        Some(seconds) => Ok(Some(seconds_option(option, seconds)?)),
        None => Ok(None),
    }
}
