//! The command line's types (clap) and the checks of their values that clap cannot make.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use memtrace_common::{DEFAULT_RING_BUFFER_BYTES, DEFAULT_STACK_MIN_BYTES};

use crate::{
    agent::triggers::TriggerKind,
    probes::{backend::BackendChoice, ProbeOptions},
    user_mode::DEFAULT_KEEP_EXITED,
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
    /// Always on: watch every process of the host (or of a cgroup) for days, keep the last
    /// minutes of history in memory, and save it with its reports when a trigger fires.
    Agent(AgentArgs),
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
    #[command(flatten)]
    pub probes: ProbeArgs,
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
pub struct AgentArgs {
    /// Watch only the processes of this cgroup (v2), as `memtrace --cgroup` does; without it
    /// (and without --unit), every process of the host. Repeatable, with --unit too: up to 8
    /// cgroups in all.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,
    /// Watch only the processes of this systemd unit (its cgroup, e.g. `sshd.service`).
    /// Repeatable.
    #[arg(long, value_name = "NAME")]
    pub unit: Vec<String>,
    /// Where captures are written: one directory per capture, owner-only.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/memtrace/captures")]
    pub capture_dir: PathBuf,
    /// Seconds of history the flight recorder keeps.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub history: f64,
    /// The flight recorder's memory, at most (suffixes K, M, G: 64M).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub history_bytes: u64,
    /// Seconds between keyframes: a capture starts at the last one before its window.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub keyframe_interval: f64,
    /// Seconds of history before the trigger a capture holds, at least (a growing trigger's
    /// capture holds the whole rise).
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub capture_window: f64,
    /// Turn a trigger off (repeatable).
    #[arg(long, value_enum, value_name = "KIND")]
    pub no_trigger: Vec<TriggerKind>,
    /// How long a group must grow steadily before the growing trigger fires.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub growing_for: f64,
    /// Capture when a process's allocated memory crosses this (off until given).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub trigger_size: Option<u64>,
    /// At most one capture per trigger and process in this many seconds; the rest is counted.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub trigger_cooldown: f64,
    /// How long kernel mode runs when the kernel trigger fires.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub kernel_window: f64,
    /// The kernel trigger's least rise of kernel memory.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub kernel_growth: u64,
    /// Captures kept, at most: the oldest go first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_captures: usize,
    /// Bytes the captures take, at most: the oldest go first.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    pub max_capture_bytes: u64,
    /// Stop after this many seconds (otherwise at SIGTERM or Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Exited processes listed in full in the model; older ones are folded by program.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_EXITED)]
    pub keep_exited: usize,
    /// Serve /metrics (Prometheus, OpenMetrics) and /debug/pprof/heap and /allocs (go tool
    /// pprof, Parca, Pyroscope) on ADDR; without ADDR, 127.0.0.1:9464. Only an address named
    /// here is other than loopback.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:9464",
        value_parser = crate::agent::http::parse_listen
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// Processes with /metrics series of their own, by allocated bytes (and every process
    /// with a finding); the rest are summed per program and cgroup.
    #[arg(long, value_name = "N", default_value_t = crate::agent::metrics::DEFAULT_TOP)]
    pub metrics_top: usize,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// A size: a number of bytes, or one with a binary suffix (`64K`, `64M`, `1G`, `64MiB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[digits.len()..];
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(format!("{text}: not a size (give bytes, or K, M, G, T)")),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text}: not a size (give bytes, or K, M, G, T)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text}: too large"))
}

/// How the probes trace: live user mode and the agent alike.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Size of the kernel's event ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_size: u32,
    /// Forward the eBPF programs' own diagnostics (aya-log) to stderr.
    #[arg(long)]
    pub ebpf_log: bool,
    /// Record who allocated: the user call stack of every mmap, mremap, brk and memfd_create
    /// that creates at least --stack-min-size bytes (on by default).
    #[arg(long, conflicts_with = "no_stacks")]
    pub stacks: bool,
    /// Do not sample call stacks.
    #[arg(long, conflicts_with_all = ["stacks", "stack_min_size"])]
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
    /// Measure each syscall's latency (the report's p50/p99/max columns). It stamps every
    /// traced call at entry too, which costs a second program run and clock read per call.
    #[arg(long)]
    pub latency: bool,
}

impl ProbeArgs {
    /// The probes' options for these flags (`follow` and `cgroup_ids` are the mode's).
    pub fn options(&self, follow_children: bool, cgroup_ids: Vec<u64>) -> ProbeOptions {
        ProbeOptions {
            follow_children,
            ring_buffer_bytes: self.ring_buffer_size,
            ebpf_log: self.ebpf_log,
            stack_min_bytes: (!self.no_stacks).then_some(self.stack_min_size),
            backend: self.backend,
            cgroup_ids,
            oom_victims: false,
            syscall_latency: self.latency,
        }
    }
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
