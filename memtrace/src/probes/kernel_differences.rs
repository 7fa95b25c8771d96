//! Every difference between kernel versions memtrace adapts to, in one place, each with the
//! kernel change behind it (as libbpf-tools' core_fixes.bpf.h does). Each is decided from what
//! the running kernel describes about itself in its BTF, never from its version number:
//! distribution kernels backport.
//!
//! Struct layouts are not listed here: every field the programs read has its offset read from
//! BTF (offsets.rs), which absorbs layout changes without version checks.
//!
//! The differences, tested in guests of Debian's 5.10, 6.1, 6.12 and 6.18 (`cargo xtask vm`):
//! - `sched_process_exit` gained a second argument, `bool group_dead`, after 6.12 (6.12 and
//!   earlier pass only the task; 6.18 passes both). A raw tracepoint program that reads an
//!   argument its tracepoint lacks fails to attach (EINVAL), so each form has its own program;
//!   the older one derives group_dead from `signal->live`, which do_exit() decrements before it
//!   fires the tracepoint on every kernel since raw tracepoints exist.
//! - 6.1's verifier walks every byte of a plain 256-byte struct copy into ring memory as its
//!   own instruction on each path, and gave up on sys_exit ("BPF program is too large"): the
//!   programs copy buffers with one bounded helper call instead (syscalls.rs). Not a switch.
//! - 6.12's and 6.1's verifiers allow 512 bytes of stack for a program's whole chain of calls
//!   and refused sys_exit ("combined stack size of 2 calls is 592. Too large"; 6.1: 608),
//!   which 6.18's accepted. The exit programs read the saved registers in place rather than
//!   copying them to the stack (syscalls.rs). Not a switch.
//! - 6.1's verifier prunes far less across calls to subprograms: the exit programs are one
//!   inlined frame (syscalls.rs `exit_syscall`: sys_exit loads in 15 s under emulation instead
//!   of 41 s), and each fexit program gets its syscall as a constant (the fentry backend loads
//!   in 22 s instead of 10 minutes). Not a switch.
//! - 5.10's verifier refuses any read of stack never written, even one whose value is then
//!   unused (later kernels allow it to privileged programs): LLVM reads an `Option`'s payload
//!   before testing it, so the exit path passes "none" as plain sentinel values (syscalls.rs
//!   `NO_FILE`, `NO_STRING`). Not a switch.
//! - 5.10's BTF describes the `struct pt_regs *` argument of some syscall functions
//!   (`__x64_sys_mprotect`) as a forward declaration, so an fentry program may not read it
//!   ("arg0 type FWD is not a struct"): the fentry backend does not load and `auto` uses the
//!   raw tracepoints, saying why in the report (backend.rs).
//! - `oom:mark_victim` passed the victim's pid alone (`int pid`) until it passed the task
//!   (`struct task_struct *`), to which Linux 6.8 added its uid (6.18 passes both): one program
//!   per form, as for `sched_process_exit`, chosen from the prototype.
//! - `sched_prepare_exec` (Linux 6.10) fires once an exec is past its point of no return, while
//!   the task is still the caller: where it exists (and `--latency` is off) it parks an
//!   execve's entry and `sys_enter` is not attached at all, so a traced call pays one program
//!   on the raw tracepoints (syscalls.rs `sched_prepare_exec`); before 6.10, `sys_enter` does
//!   it, turning every other syscall away on its number.
//! - The direct ia32 SysV IPC syscalls (shmat 397, shmdt 398) exist since Linux 5.1, mseal
//!   since 6.10; a kernel without one's function (or built without SysV IPC or AIO) leaves
//!   that fentry program out (backend.rs `OPTIONAL_FUNCTIONS`).

use super::btf::{tracepoints::ParamType, Btf};

/// The tracepoint whose prototype changed.
const EXIT_TRACEPOINT: &str = "sched_process_exit";
/// `sched_process_exit(struct task_struct *p, bool group_dead)`.
const EXIT_ARGS_WITH_GROUP_DEAD: u32 = 2;

/// What the running kernel needs done its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelDifferences {
    /// The program to attach to `sched_process_exit`.
    pub exit_program: &'static str,
    /// The program for `oom:mark_victim`'s form on this kernel (`None`: no such tracepoint).
    pub oom_victim_program: Option<&'static str>,
    /// The kernel has `sched_prepare_exec` (6.10 and later), where an exec's entry can be
    /// parked without a program on `sys_enter`.
    pub prepare_exec: bool,
}

/// The tracepoint of an exec past its point of no return, the task still the caller.
pub const PREPARE_EXEC_TRACEPOINT: &str = "sched_prepare_exec";

/// The tracepoint the OOM killer fires for each victim.
pub const OOM_VICTIM_TRACEPOINT: &str = "mark_victim";

/// The program for kernels whose `sched_process_exit` passes `group_dead`.
pub const EXIT_PROGRAM: &str = "sched_process_exit";
/// The program for kernels whose `sched_process_exit` passes only the task (6.12 and earlier).
pub const EXIT_PROGRAM_LEGACY: &str = "sched_process_exit_legacy";

impl KernelDifferences {
    pub fn of(btf: &Btf) -> Self {
        Self {
            oom_victim_program: oom_victim_program(
                btf.raw_tracepoint_params(OOM_VICTIM_TRACEPOINT)
                    .ok()
                    .flatten()
                    .as_deref(),
            ),
            prepare_exec: btf.tracepoint_arg_count(PREPARE_EXEC_TRACEPOINT).is_some(),
            ..Self::from_exit_arg_count(btf.tracepoint_arg_count(EXIT_TRACEPOINT))
        }
    }

    /// `None`: the BTF does not describe the tracepoint (an unusual build); the one-argument
    /// program is the one that attaches everywhere.
    fn from_exit_arg_count(args: Option<u32>) -> Self {
        let exit_program = match args {
            Some(count) if count >= EXIT_ARGS_WITH_GROUP_DEAD => EXIT_PROGRAM,
            _ => EXIT_PROGRAM_LEGACY,
        };
        Self {
            exit_program,
            oom_victim_program: None,
            prepare_exec: false,
        }
    }

    /// The process events' programs to attach as raw tracepoints, as (program, tracepoint): the
    /// same on every backend and kernel (fork, exec, rename), then the kernel-specific one. (The syscalls' programs
    /// are chosen by `backend`.)
    pub fn process_tracepoints(&self) -> [(&'static str, &'static str); 4] {
        [
            ("sched_process_fork", "sched_process_fork"),
            ("sched_process_exec", "sched_process_exec"),
            ("task_rename", "task_rename"),
            (self.exit_program, EXIT_TRACEPOINT),
        ]
    }
}

/// The `oom:mark_victim` program for the tracepoint's parameters.
fn oom_victim_program(params: Option<&[ParamType]>) -> Option<&'static str> {
    let task = |param: &ParamType| matches!(param, ParamType::StructPointer(name) if name == "task_struct");
    match params? {
        [first, ParamType::Integer(4)] if task(first) => Some("oom_victim"),
        [first] if task(first) => Some("oom_victim_no_uid"),
        [ParamType::Integer(4)] => Some("oom_victim_pid"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::btf::test_support::kernel_btf;
    use super::*;

    #[test]
    fn the_exit_program_follows_the_tracepoint_s_arity() {
        assert_eq!(
            KernelDifferences::from_exit_arg_count(Some(2)).exit_program,
            EXIT_PROGRAM
        );
        assert_eq!(
            KernelDifferences::from_exit_arg_count(Some(1)).exit_program,
            EXIT_PROGRAM_LEGACY
        );
        assert_eq!(
            KernelDifferences::from_exit_arg_count(None).exit_program,
            EXIT_PROGRAM_LEGACY
        );
    }

    #[test]
    fn the_oom_victim_program_follows_the_prototype() {
        let task = || ParamType::StructPointer("task_struct".to_owned());
        assert_eq!(
            oom_victim_program(Some(&[task(), ParamType::Integer(4)])),
            Some("oom_victim")
        );
        assert_eq!(
            oom_victim_program(Some(&[task()])),
            Some("oom_victim_no_uid")
        );
        assert_eq!(
            oom_victim_program(Some(&[ParamType::Integer(4)])),
            Some("oom_victim_pid")
        );
        assert_eq!(oom_victim_program(None), None);
        assert_eq!(oom_victim_program(Some(&[ParamType::Pointer])), None);
        // This 6.18 kernel passes (task, uid).
        if let Some(btf) = kernel_btf() {
            assert!(KernelDifferences::of(btf).oom_victim_program.is_some());
        }
    }

    /// The running kernel's tracepoints read from its BTF: sched_process_fork has always passed
    /// (parent, child) and sched_process_exec (p, old_pid, bprm).
    #[test]
    fn tracepoint_prototypes_come_from_the_running_kernel() {
        let Some(btf) = kernel_btf() else {
            assert!(std::env::var_os("CI").is_none(), "CI kernels have BTF");
            return;
        };
        assert_eq!(btf.tracepoint_arg_count("sched_process_fork"), Some(2));
        assert_eq!(btf.tracepoint_arg_count("sched_process_exec"), Some(3));
        assert_eq!(btf.tracepoint_arg_count("sys_enter"), Some(2));
        assert_eq!(btf.tracepoint_arg_count("no_such_tracepoint"), None);
        let exit = btf.tracepoint_arg_count(EXIT_TRACEPOINT);
        assert!(matches!(exit, Some(1 | 2)), "sched_process_exit: {exit:?}");
        // `sched_prepare_exec(task, bprm)` where the kernel has it (6.10 on; 5.10 and 6.1 in
        // the guests do not): then it is what the differences say.
        let prepare = btf.tracepoint_arg_count(PREPARE_EXEC_TRACEPOINT);
        assert!(
            matches!(prepare, None | Some(2)),
            "sched_prepare_exec: {prepare:?}"
        );
        assert_eq!(KernelDifferences::of(btf).prepare_exec, prepare.is_some());
    }
}
