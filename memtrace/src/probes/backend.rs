//! How memtrace hooks the syscalls it traces, chosen once at start ([`attach_syscalls`]), as
//! bcc's tools choose between fentry and kprobes.
//!
//! - **fentry**: fentry/fexit on the kernel functions of exactly the traced syscalls
//!   ([`FENTRY_FUNCTIONS`]). The other processes' syscalls never reach a BPF program. Needs
//!   ftrace (kernel lockdown forbids it) and the functions in the kernel's BTF.
//! - **raw-tracepoint**: `sys_enter`/`sys_exit`, which every kernel memtrace supports allows.
//!   Every syscall of every process then takes the kernel's slow path (the cost `cargo xtask
//!   bench` calls the floor); memtrace's programs turn the others away on the number alone.
//!
//! Both run the same entry and exit code (memtrace-ebpf's `syscalls`), so they produce the
//! same events. Process events (fork, exec, exit) stay on the `sched_*` raw tracepoints.

use aya::{
    programs::{BtfTracePoint, FEntry, FExit, ProgramError, RawTracePoint},
    Btf, Ebpf,
};

use super::{kernel_differences::PREPARE_EXEC_TRACEPOINT, program_of, ProbeError};

/// The syscall hooks a live session used, as its report and its recording tell them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackendInfo {
    /// `fentry` or `raw-tracepoint`.
    pub name: String,
    /// Why it is not the preferred one (fentry), when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What the user asked for (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// fentry where it attaches, raw tracepoints otherwise.
    #[default]
    Auto,
    Fentry,
    RawTracepoint,
}

/// The hooks in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fentry,
    RawTracepoint,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::RawTracepoint => "raw-tracepoint",
        }
    }
}

/// The backend in use and, when auto fell back from fentry, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub backend: Backend,
    pub fallback: Option<String>,
}

impl Attached {
    pub fn info(&self) -> BackendInfo {
        BackendInfo {
            name: self.backend.as_str().to_owned(),
            why: self
                .fallback
                .as_ref()
                .map(|reason| format!("fentry unavailable: {reason}")),
        }
    }
}

/// `(kernel function, fentry program, fexit program)` for every syscall of both ABIs, as
/// memtrace-ebpf's `fentry` module defines them. The ia32 functions are those of the ia32
/// syscall table (arch/x86/entry/syscalls/syscall_32.tbl): mmap2 is `mmap_pgoff`, old_mmap
/// and execve(at) are compat entry points. The functions of [`OPTIONAL_FUNCTIONS`] may be
/// missing from a kernel (an older one, or one built without SysV IPC or AIO): their programs
/// are then left out and the others attach.
pub const FENTRY_FUNCTIONS: [(&str, &str, &str); 34] = [
    ("__x64_sys_mmap", "x64_mmap_enter", "x64_mmap_exit"),
    (
        "__x64_sys_mprotect",
        "x64_mprotect_enter",
        "x64_mprotect_exit",
    ),
    ("__x64_sys_munmap", "x64_munmap_enter", "x64_munmap_exit"),
    ("__x64_sys_brk", "x64_brk_enter", "x64_brk_exit"),
    ("__x64_sys_mremap", "x64_mremap_enter", "x64_mremap_exit"),
    ("__x64_sys_close", "x64_close_enter", "x64_close_exit"),
    ("__x64_sys_execve", "x64_execve_enter", "x64_execve_exit"),
    (
        "__x64_sys_memfd_create",
        "x64_memfd_enter",
        "x64_memfd_exit",
    ),
    (
        "__x64_sys_execveat",
        "x64_execveat_enter",
        "x64_execveat_exit",
    ),
    ("__ia32_sys_close", "ia32_close_enter", "ia32_close_exit"),
    (
        "__ia32_compat_sys_execve",
        "ia32_execve_enter",
        "ia32_execve_exit",
    ),
    ("__ia32_sys_brk", "ia32_brk_enter", "ia32_brk_exit"),
    (
        "__ia32_compat_sys_ia32_mmap",
        "ia32_old_mmap_enter",
        "ia32_old_mmap_exit",
    ),
    ("__ia32_sys_munmap", "ia32_munmap_enter", "ia32_munmap_exit"),
    (
        "__ia32_sys_mprotect",
        "ia32_mprotect_enter",
        "ia32_mprotect_exit",
    ),
    ("__ia32_sys_mremap", "ia32_mremap_enter", "ia32_mremap_exit"),
    (
        "__ia32_sys_mmap_pgoff",
        "ia32_mmap2_enter",
        "ia32_mmap2_exit",
    ),
    (
        "__ia32_sys_memfd_create",
        "ia32_memfd_enter",
        "ia32_memfd_exit",
    ),
    (
        "__ia32_compat_sys_execveat",
        "ia32_execveat_enter",
        "ia32_execveat_exit",
    ),
    // Every way a mapping is made (#23).
    ("__x64_sys_shmat", "x64_shmat_enter", "x64_shmat_exit"),
    ("__x64_sys_shmdt", "x64_shmdt_enter", "x64_shmdt_exit"),
    (
        "__x64_sys_io_setup",
        "x64_io_setup_enter",
        "x64_io_setup_exit",
    ),
    (
        "__x64_sys_io_destroy",
        "x64_io_destroy_enter",
        "x64_io_destroy_exit",
    ),
    (
        "__x64_sys_remap_file_pages",
        "x64_remap_enter",
        "x64_remap_exit",
    ),
    (
        "__x64_sys_pkey_mprotect",
        "x64_pkey_mprot_enter",
        "x64_pkey_mprot_exit",
    ),
    ("__x64_sys_mseal", "x64_mseal_enter", "x64_mseal_exit"),
    ("__ia32_compat_sys_ipc", "ia32_ipc_enter", "ia32_ipc_exit"),
    (
        "__ia32_compat_sys_io_setup",
        "ia32_io_setup_enter",
        "ia32_io_setup_exit",
    ),
    (
        "__ia32_sys_io_destroy",
        "ia32_io_destroy_enter",
        "ia32_io_destroy_exit",
    ),
    (
        "__ia32_sys_remap_file_pages",
        "ia32_remap_enter",
        "ia32_remap_exit",
    ),
    (
        "__ia32_sys_pkey_mprotect",
        "ia32_pkey_mprot_enter",
        "ia32_pkey_mprot_exit",
    ),
    (
        "__ia32_compat_sys_shmat",
        "ia32_shmat_enter",
        "ia32_shmat_exit",
    ),
    ("__ia32_sys_shmdt", "ia32_shmdt_enter", "ia32_shmdt_exit"),
    ("__ia32_sys_mseal", "ia32_mseal_enter", "ia32_mseal_exit"),
];

/// The exec functions of [`FENTRY_FUNCTIONS`]: their entry is always attached (it reads the
/// file name and arguments the new image no longer has).
const EXEC_FUNCTIONS: [&str; 4] = [
    "__x64_sys_execve",
    "__x64_sys_execveat",
    "__ia32_compat_sys_execve",
    "__ia32_compat_sys_execveat",
];

/// Functions of [`FENTRY_FUNCTIONS`] a kernel may lack: mseal (6.10), ia32's direct shmat and
/// shmdt (5.1), and the SysV IPC and AIO ones, which a kernel can be built without. On a
/// kernel without one the syscall does not exist (ENOSYS, which the raw tracepoints would
/// report), so nothing is missed.
pub const OPTIONAL_FUNCTIONS: [&str; 15] = [
    "__x64_sys_shmat",
    "__x64_sys_shmdt",
    "__x64_sys_io_setup",
    "__x64_sys_io_destroy",
    "__x64_sys_remap_file_pages",
    "__x64_sys_pkey_mprotect",
    "__x64_sys_mseal",
    "__ia32_compat_sys_ipc",
    "__ia32_compat_sys_io_setup",
    "__ia32_sys_io_destroy",
    "__ia32_sys_remap_file_pages",
    "__ia32_sys_pkey_mprotect",
    "__ia32_compat_sys_shmat",
    "__ia32_sys_shmdt",
    "__ia32_sys_mseal",
];

/// Which syscalls' entries a program sees: exit reads the arguments from the user registers,
/// so an entry matters only for its latency, or for an exec (whose exit runs in the new image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entries {
    /// Every traced syscall's (`--latency`: each is stamped).
    Every,
    /// Only execs', on the backend's entry hook (kernels before 6.10).
    Execs,
    /// Only execs', at `sched_prepare_exec`, on either backend: no program on any syscall's
    /// entry, so a traced call pays one program run.
    ExecsAtPrepare,
}

/// Attaches the syscall programs of the backend `choice` asks for: the one place the backend
/// is decided. `auto` tries fentry and, if any of its programs does not load or attach, removes
/// them all and uses the raw tracepoints; an explicit choice that fails is an error.
pub fn attach_syscalls(
    ebpf: &mut Ebpf,
    btf: &Btf,
    choice: BackendChoice,
    entries: Entries,
) -> Result<Attached, ProbeError> {
    let attach_fentry = |ebpf: &mut Ebpf| {
        attach_fentry(ebpf, btf, entries).inspect_err(|error| {
            if let Some(log) = &error.verifier_log {
                log::debug!("fentry backend: {error}; the verifier's log:\n{log}");
            }
        })
    };
    let attached = match choice {
        BackendChoice::Fentry => {
            attach_fentry(ebpf).map_err(ProbeError::Fentry)?;
            Attached {
                backend: Backend::Fentry,
                fallback: None,
            }
        }
        BackendChoice::RawTracepoint => {
            attach_raw_tracepoints(ebpf, btf, entries)?;
            Attached {
                backend: Backend::RawTracepoint,
                fallback: None,
            }
        }
        BackendChoice::Auto => match attach_fentry(ebpf) {
            Ok(()) => Attached {
                backend: Backend::Fentry,
                fallback: None,
            },
            Err(reason) => {
                detach_fentry(ebpf);
                attach_raw_tracepoints(ebpf, btf, entries)?;
                Attached {
                    backend: Backend::RawTracepoint,
                    fallback: Some(reason.to_string()),
                }
            }
        },
    };
    attach_prepare_exec(ebpf, btf, entries)?;
    Ok(attached)
}

/// Why a program of the fentry backend did not load or attach.
#[derive(Debug, thiserror::Error)]
#[error("{program} on {function}: {reason}")]
pub struct FentryError {
    program: &'static str,
    function: &'static str,
    /// One line: a refusal's errno, or the verifier's reason ([`verifier_reason`]).
    reason: String,
    /// The verifier's whole log, when it rejected the program.
    pub verifier_log: Option<String>,
}

impl FentryError {
    fn new(program: &'static str, function: &'static str, error: &ProgramError) -> Self {
        let (reason, verifier_log) = match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                match verifier_reason(&log) {
                    Some(reason) => (
                        format!("rejected by the verifier: {reason}"),
                        Some(log.clone()),
                    ),
                    None => (format!("load refused: {io_error}"), None),
                }
            }
            ProgramError::SyscallError(error) => {
                (format!("{}: {}", error.call, error.io_error), None)
            }
            other => (other.to_string(), None),
        };
        Self {
            program,
            function,
            reason,
            verifier_log,
        }
    }
}

/// The line of a verifier log that says why it refused the program: the last one before the
/// statistics the verifier closes every log with (since 5.2: "verification time", "stack
/// depth", "processed N insns"), which say nothing about why.
fn verifier_reason(log: &str) -> Option<&str> {
    const STATISTICS: [&str; 3] = ["verification time ", "stack depth ", "processed "];
    let mut lines = log
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .rev()
        .peekable();
    let last = lines.peek().copied();
    lines
        .find(|line| {
            !STATISTICS
                .iter()
                .any(|statistic| line.starts_with(statistic))
        })
        .or(last)
}

/// The exec entries' program of [`Entries::ExecsAtPrepare`], the same on both backends.
fn attach_prepare_exec(ebpf: &mut Ebpf, btf: &Btf, entries: Entries) -> Result<(), ProbeError> {
    if entries != Entries::ExecsAtPrepare {
        return Ok(());
    }
    let program = "sched_prepare_exec";
    let prepare: &mut BtfTracePoint = program_of(ebpf, program)?;
    prepare
        .load(PREPARE_EXEC_TRACEPOINT, btf)
        .map_err(|source| ProbeError::Program { program, source })?;
    prepare
        .attach()
        .map_err(|source| ProbeError::Program { program, source })?;
    Ok(())
}

/// Loads and attaches the fentry/fexit programs: every fexit, and the fentry programs whose
/// entry matters ([`Entries`]).
fn attach_fentry(ebpf: &mut Ebpf, btf: &Btf, entries: Entries) -> Result<(), FentryError> {
    for (function, entry, exit) in FENTRY_FUNCTIONS {
        let error =
            |program| move |source: ProgramError| FentryError::new(program, function, &source);
        // The exit first: every function has one, so this is where a function the kernel
        // lacks is found out, whether or not its entry is wanted.
        let fexit: &mut FExit = program_of(ebpf, exit).map_err(|e| missing(&e, exit, function))?;
        match fexit.load(function, btf) {
            // Not in this kernel's BTF: the kernel has no such function.
            Err(ProgramError::Btf(_)) if OPTIONAL_FUNCTIONS.contains(&function) => {
                log::debug!("fentry backend: this kernel has no {function}; left out");
                continue;
            }
            loaded => loaded.map_err(error(exit))?,
        }
        fexit.attach().map_err(error(exit))?;
        let wanted = match entries {
            Entries::Every => true,
            Entries::Execs => EXEC_FUNCTIONS.contains(&function),
            Entries::ExecsAtPrepare => false,
        };
        if wanted {
            let fentry: &mut FEntry =
                program_of(ebpf, entry).map_err(|e| missing(&e, entry, function))?;
            fentry.load(function, btf).map_err(error(entry))?;
            fentry.attach().map_err(error(entry))?;
        }
    }
    Ok(())
}

/// A program the object lacks, or of another type.
fn missing(error: &ProbeError, program: &'static str, function: &'static str) -> FentryError {
    FentryError {
        program,
        function,
        reason: error.to_string(),
        verifier_log: None,
    }
}

/// Unloads whatever part of the fentry backend did load, so that no program of it stays
/// attached next to the raw tracepoints.
fn detach_fentry(ebpf: &mut Ebpf) {
    for (_, entry, exit) in FENTRY_FUNCTIONS {
        if let Ok(program) = program_of::<FEntry>(ebpf, entry) {
            let _ = program.unload();
        }
        if let Ok(program) = program_of::<FExit>(ebpf, exit) {
            let _ = program.unload();
        }
    }
}

fn attach_raw_tracepoints(ebpf: &mut Ebpf, btf: &Btf, entries: Entries) -> Result<(), ProbeError> {
    if entries != Entries::ExecsAtPrepare {
        let program = "sys_enter";
        let enter: &mut RawTracePoint = program_of(ebpf, program)?;
        enter
            .load()
            .map_err(|source| ProbeError::Program { program, source })?;
        enter
            .attach("sys_enter")
            .map_err(|source| ProbeError::Program { program, source })?;
    }
    let program = "sys_exit";
    let exit: &mut BtfTracePoint = program_of(ebpf, program)?;
    exit.load("sys_exit", btf)
        .map_err(|source| ProbeError::Program { program, source })?;
    exit.attach()
        .map_err(|source| ProbeError::Program { program, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every traced syscall of both ABIs has its function, once.
    #[test]
    fn fentry_functions_cover_both_abis() {
        let mut functions: Vec<&str> = FENTRY_FUNCTIONS.iter().map(|(f, _, _)| *f).collect();
        functions.sort_unstable();
        functions.dedup();
        assert_eq!(functions.len(), FENTRY_FUNCTIONS.len());
        let x64 = functions.iter().filter(|f| f.starts_with("__x64_")).count();
        let ia32 = functions
            .iter()
            .filter(|f| f.starts_with("__ia32_"))
            .count();
        let traced = |abi| {
            (0..512)
                .filter(|&nr| memtrace_common::Syscall::from_number(abi, nr).is_some())
                .count()
        };
        assert_eq!(x64, traced(memtrace_common::Abi::X86_64));
        assert_eq!(ia32, traced(memtrace_common::Abi::I386));
        for optional in OPTIONAL_FUNCTIONS {
            assert!(functions.contains(&optional), "{optional}");
        }
        // The exec functions are exactly those whose entry programs are execve's/execveat's.
        let execs: Vec<&str> = FENTRY_FUNCTIONS
            .iter()
            .filter(|(_, entry, _)| entry.contains("_execve"))
            .map(|(function, _, _)| *function)
            .collect();
        assert_eq!(execs, EXEC_FUNCTIONS);
    }

    /// The running kernel has every function the fentry backend attaches to, optional ones
    /// aside.
    #[test]
    fn fentry_functions_are_in_the_kernel_s_btf() {
        let Some(btf) = super::super::btf::test_support::kernel_btf() else {
            assert!(std::env::var_os("CI").is_none(), "CI kernels have BTF");
            return;
        };
        let dump = |name: &str| btf.has_function(name);
        for (function, _, _) in FENTRY_FUNCTIONS {
            assert!(
                dump(function) || OPTIONAL_FUNCTIONS.contains(&function),
                "{function} is not in this kernel's BTF"
            );
        }
    }

    /// Logs as 5.10 and 6.12 ended them (tested in guests).
    #[test]
    fn the_verifier_reason_is_not_its_statistics() {
        let linux_5_10 = "func '__x64_sys_mprotect' arg0 type FWD is not a struct\n\
                          invalid bpf_context access off=0 size=8\n\
                          verification time 12084 usec\n\
                          stack depth 168+0+0+0+0\n\
                          processed 3 insns (limit 1000000) max_states_per_insn 0 \
                          total_states 0 peak_states 0 mark_read 0\n\n";
        assert_eq!(
            verifier_reason(linux_5_10),
            Some("invalid bpf_context access off=0 size=8")
        );
        let linux_6_12 = "combined stack size of 2 calls is 592. Too large\n\
                          verification time 9144808 usec\n\
                          stack depth 424+0+0+160+64+88\n\
                          processed 115926 insns (limit 1000000)\n";
        assert_eq!(
            verifier_reason(linux_6_12),
            Some("combined stack size of 2 calls is 592. Too large")
        );
        assert_eq!(
            verifier_reason("only statistics: processed 3 insns"),
            Some("only statistics: processed 3 insns")
        );
        assert_eq!(
            verifier_reason("processed 3 insns"),
            Some("processed 3 insns")
        );
        assert_eq!(verifier_reason("\n"), None);
    }

    #[test]
    fn fallback_is_named_in_the_report() {
        let attached = Attached {
            backend: Backend::RawTracepoint,
            fallback: Some("x64_mmap_enter on __x64_sys_mmap: EPERM".into()),
        };
        let info = attached.info();
        assert_eq!(info.name, "raw-tracepoint");
        assert_eq!(
            info.why.as_deref(),
            Some("fentry unavailable: x64_mmap_enter on __x64_sys_mmap: EPERM")
        );
    }
}
