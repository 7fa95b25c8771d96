//! Loading and attaching the eBPF programs, and the maps userspace talks to them through.
//!
//! This is the only module that knows about aya. The syscalls attach through fentry/fexit or raw
//! tracepoints (`backend`); the process events always as raw tracepoints, which need neither
//! tracefs nor ftrace.

pub mod backend;
pub mod btf;
pub mod floor;
pub mod kernel_btf;
pub mod kernel_differences;
pub mod kernel_mode;
pub mod offsets;
pub mod preflight;

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
    Btf, Ebpf,
};
use memtrace_common::{
    kernel_mode::names as kernel_mode_names, lost_slot, names, ProbeConfig,
    DEFAULT_RING_BUFFER_BYTES, DEFAULT_STACK_MIN_BYTES, MAX_CGROUPS, STACK_RING_BYTES,
};

use self::backend::{Attached, BackendChoice};
use crate::event::Losses;

/// The eBPF object built from memtrace-ebpf by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace-probes"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this memtrace was built without its eBPF programs (AYA_BUILD_SKIP); build it with `cargo xtask build`")]
    NoObject,
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error("reading the kernel's BTF: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("loading eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    KernelMode(#[from] kernel_mode::KernelModeError),
    #[error("--backend fentry: {0}")]
    Fentry(#[source] backend::FentryError),
    #[error("--ring-buffer-size {0} must be a power of two and at least 4096")]
    RingBufferSize(u32),
    #[error("--cgroup given {0} times: at most {MAX_CGROUPS} cgroups are traced at once")]
    TooManyCgroups(usize),
}

/// The cgroups' ids in the programs' form: the ones given, then 0s.
fn cgroup_slots(ids: &[u64]) -> Result<[u64; MAX_CGROUPS], ProbeError> {
    if ids.len() > MAX_CGROUPS {
        return Err(ProbeError::TooManyCgroups(ids.len()));
    }
    let mut slots = [0; MAX_CGROUPS];
    slots[..ids.len()].copy_from_slice(ids);
    Ok(slots)
}

impl ProbeError {
    /// The verifier's own words when it rejected a program: the only useful part of such an
    /// error, printed in full after the one-line message. Not for a refused `--backend
    /// fentry`: a kernel that cannot run it (5.10's BTF, lockdown) lacks something, which is
    /// one line, the verifier's reason included; its whole log is at debug level
    /// (`backend::attach_syscalls`).
    pub fn verifier_log(&self) -> Option<String> {
        match self {
            Self::Program {
                source: aya::programs::ProgramError::LoadError { verifier_log, .. },
                ..
            } => Some(verifier_log.to_string()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Trace children of traced processes (`--follow`).
    pub follow_children: bool,
    /// The ring buffer's size in bytes (a power of two).
    pub ring_buffer_bytes: u32,
    /// Emit aya-log diagnostics from the programs.
    pub ebpf_log: bool,
    /// Sample the user stack of calls that create at least this many bytes (`None`: never).
    pub stack_min_bytes: Option<u64>,
    /// How to hook the syscalls (`--backend`).
    pub backend: BackendChoice,
    /// `--cgroup`: trace every process of the cgroups v2 with these ids (at most
    /// [`MAX_CGROUPS`]; none: no cgroup).
    pub cgroup_ids: Vec<u64>,
    /// Report the OOM killer's victims (`oom:mark_victim`; for the agent). Off: the program is
    /// not even loaded, so user mode pays nothing for it.
    pub oom_victims: bool,
    /// Stamp every traced syscall's entry, for its latency (`--latency`). Off, the entry
    /// programs see only execs, and a traced call costs one program run instead of two.
    pub syscall_latency: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            follow_children: false,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            ebpf_log: false,
            stack_min_bytes: Some(DEFAULT_STACK_MIN_BYTES),
            backend: BackendChoice::default(),
            cgroup_ids: Vec::new(),
            oom_victims: false,
            syscall_latency: false,
        }
    }
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    /// Reads the programs' aya-log records (`--ebpf-log`); it owns their ring buffer.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// How the syscalls are hooked.
    attached: Attached,
}

impl Probes {
    /// Checks privileges and kernel support, resolves struct offsets from BTF, then loads and
    /// attaches every program.
    pub fn load(options: &ProbeOptions) -> Result<Self, ProbeError> {
        let (mut ebpf, btf, differences) = load_object(options)?;

        let logger = if options.ebpf_log {
            aya_log::EbpfLogger::init(&mut ebpf)
                .map_err(|error| log::warn!("eBPF logging unavailable: {error}"))
                .ok()
        } else {
            None
        };

        // Syscalls first: with `--backend fentry` where fentry is forbidden, nothing else is
        // loaded before the one-line refusal.
        let entries = if options.syscall_latency {
            backend::Entries::Every
        } else if differences.prepare_exec {
            backend::Entries::ExecsAtPrepare
        } else {
            backend::Entries::Execs
        };
        let attached = backend::attach_syscalls(&mut ebpf, &btf, options.backend, entries)?;
        let oom_victims = match differences.oom_victim_program {
            Some(program) if options.oom_victims => {
                Some((program, kernel_differences::OOM_VICTIM_TRACEPOINT))
            }
            _ => None,
        };
        for (program, tracepoint) in differences
            .process_tracepoints()
            .into_iter()
            .chain(oom_victims)
        {
            let raw: &mut RawTracePoint = program_of(&mut ebpf, program)?;
            raw.load()
                .map_err(|source| ProbeError::Program { program, source })?;
            raw.attach(tracepoint)
                .map_err(|source| ProbeError::Program { program, source })?;
        }
        if options.oom_victims && differences.oom_victim_program.is_none() {
            log::warn!(
                "this kernel has no oom:mark_victim tracepoint: OOM victims are not reported"
            );
        }
        Ok(Self {
            ebpf,
            logger,
            attached,
        })
    }

    /// The syscall hooks in use, and why not fentry when auto fell back.
    pub fn backend(&self) -> &Attached {
        &self.attached
    }

    /// Passes the programs' pending log records on to the `log` crate (`--ebpf-log`).
    pub fn flush_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// Starts tracing a process (all its threads).
    pub fn trace(&mut self, pid: u32) -> Result<(), ProbeError> {
        trace_process(&mut self.ebpf, pid)
    }

    /// How many processes are still traced; the kernel side removes each one as it exits.
    pub fn traced_count(&self) -> Result<usize, ProbeError> {
        count_traced(&self.ebpf)
    }

    /// The event ring buffer, handed to the capture task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS_MAP)
            .ok_or(ProbeError::Missing(names::EVENTS_MAP))?;
        RingBuf::try_from(map).map_err(|e| ProbeError::Map(names::EVENTS_MAP, e))
    }

    /// The stack-sample ring, handed to the capture task with the event ring.
    pub fn take_stacks(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::STACKS_MAP)
            .ok_or(ProbeError::Missing(names::STACKS_MAP))?;
        RingBuf::try_from(map).map_err(|e| ProbeError::Map(names::STACKS_MAP, e))
    }

    /// Events the kernel side could not deliver so far, summed over CPUs.
    pub fn lost(&self) -> Result<Losses, ProbeError> {
        let map = self
            .ebpf
            .map(names::LOST_MAP)
            .ok_or(ProbeError::Missing(names::LOST_MAP))?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| ProbeError::Map(names::LOST_MAP, e))?;
        let total = |slot: u32| -> Result<u64, ProbeError> {
            let values = counters
                .get(&slot, 0)
                .map_err(|e| ProbeError::Map(names::LOST_MAP, e))?;
            Ok(values.iter().sum())
        };
        Ok(Losses {
            ring_full: total(lost_slot::RING_FULL)?,
            pending_full: total(lost_slot::PENDING_FULL)?,
            stacks_not_sampled: total(lost_slot::STACK_NOT_SAMPLED)?,
        })
    }
}

/// Checks privileges and kernel support, resolves struct offsets from BTF, and loads the
/// object's maps and globals (its programs are loaded one by one by the caller).
/// Loads the object with the running kernel's offsets and the options' tunables; also says how
/// this kernel differs from others ([`kernel_differences`]).
fn load_object(
    options: &ProbeOptions,
) -> Result<(Ebpf, Btf, kernel_differences::KernelDifferences), ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    preflight::check()?;
    let size = options.ring_buffer_bytes;
    if !size.is_power_of_two() || size < 4096 {
        return Err(ProbeError::RingBufferSize(size));
    }
    preflight::raise_memlock_limit();

    let (offsets, differences) = kernel_btf::answers(|btf| {
        Ok((
            offsets::kernel_offsets(btf)?,
            kernel_differences::KernelDifferences::of(btf),
        ))
    })?;
    let config = ProbeConfig {
        follow_children: u32::from(options.follow_children),
        log_enabled: u32::from(options.ebpf_log),
        syscall_latency: u32::from(options.syscall_latency),
        _pad: 0,
        stack_min_bytes: options.stack_min_bytes.unwrap_or(u64::MAX),
        // A quarter of the ring, shared among the CPUs (each counts its own): the reader wakes
        // up well before the ring fills, however the events spread over the CPUs.
        wakeup_bytes: u64::from(size / 4) / possible_cpus(),
        cgroup_ids: cgroup_slots(&options.cgroup_ids)?,
    };
    let aya_btf = kernel_btf::aya_form()?;
    let mut loader = kernel_btf::loader();
    let ebpf = loader
        .btf(Some(&aya_btf))
        .override_global(names::OFFSETS_GLOBAL, &offsets, true)
        .override_global(names::CONFIG_GLOBAL, &config, true)
        .map_max_entries(names::EVENTS_MAP, size)
        .map_max_entries(names::STACKS_MAP, stack_ring_bytes(options))
        // Kernel mode's tables: user mode never attaches the programs that fill them.
        .map_max_entries(kernel_mode_names::OUTSTANDING_MAP, 1)
        .map_max_entries(kernel_mode_names::SITES_MAP, 1)
        .map_max_entries(kernel_mode_names::CACHE_NAMES_MAP, 1)
        .map_max_entries(kernel_mode_names::KMEM_STACKS_MAP, 1)
        .load(EBPF_OBJECT)?;
    Ok((ebpf, aya_btf, differences))
}

/// The CPUs the per-CPU wakeup counters are kept for; 1 if the kernel does not say, which
/// only makes wakeups rarer.
fn possible_cpus() -> u64 {
    aya::util::nr_cpus().map_or(1, |cpus| cpus.max(1) as u64)
}

/// The smallest ring the kernel accepts: one page.
pub(crate) const EMPTY_RING_BYTES: u32 = 4096;

/// Without stack sampling (`--no-stacks`) the stack ring stays empty: it gets one page rather
/// than the 8 MiB the kernel maps twice into memtrace (16 MiB of its RSS).
fn stack_ring_bytes(options: &ProbeOptions) -> u32 {
    match options.stack_min_bytes {
        Some(_) => STACK_RING_BYTES,
        None => EMPTY_RING_BYTES,
    }
}

fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(ProbeError::Missing(name))?;
    program.try_into().map_err(|source| ProbeError::Program {
        program: name,
        source,
    })
}

/// Puts a process (all its threads) in the traced set the programs of `ebpf` share (user mode
/// and kernel mode load the same process programs).
pub(crate) fn trace_process(ebpf: &mut Ebpf, pid: u32) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(names::TRACED_MAP)
        .ok_or(ProbeError::Missing(names::TRACED_MAP))?;
    let mut traced: HashMap<_, u32, u32> =
        HashMap::try_from(map).map_err(|e| ProbeError::Map(names::TRACED_MAP, e))?;
    traced
        .insert(pid, 1, 0)
        .map_err(|e| ProbeError::Map(names::TRACED_MAP, e))
}

/// How many processes are in the traced set; the exit programs remove each one.
pub(crate) fn count_traced(ebpf: &Ebpf) -> Result<usize, ProbeError> {
    let map = ebpf
        .map(names::TRACED_MAP)
        .ok_or(ProbeError::Missing(names::TRACED_MAP))?;
    let traced: HashMap<_, u32, u32> =
        HashMap::try_from(map).map_err(|e| ProbeError::Map(names::TRACED_MAP, e))?;
    Ok(traced.keys().filter(Result::is_ok).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `oom:mark_victim`'s program is loaded and attached when asked for (the agent), and not
    /// even loaded otherwise: user mode pays nothing for it.
    #[test]
    fn the_oom_victim_program_loads_only_when_asked() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none_or(|ci| ci != "true"),
                "CI runs as root"
            );
            eprintln!("not root: the programs cannot be loaded here");
            return;
        }
        let options = |oom_victims| ProbeOptions {
            backend: BackendChoice::RawTracepoint,
            stack_min_bytes: None,
            oom_victims,
            ..ProbeOptions::default()
        };
        let program = kernel_btf::answers(|btf| {
            Ok(kernel_differences::KernelDifferences::of(btf).oom_victim_program)
        })
        .expect("the kernel's BTF")
        .expect("this kernel has oom:mark_victim");
        let loaded = |probes: &Probes| {
            probes
                .ebpf
                .program(program)
                .is_some_and(|program| program.fd().is_ok())
        };
        let asked = Probes::load(&options(true)).expect("loading with OOM victims");
        assert!(loaded(&asked), "{program} is not loaded");
        drop(asked);
        let not_asked = Probes::load(&options(false)).expect("loading without OOM victims");
        assert!(!loaded(&not_asked), "{program} was loaded unasked");
    }
}
