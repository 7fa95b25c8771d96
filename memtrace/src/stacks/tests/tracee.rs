//! A real stack sample without BPF: the program runs under ptrace and is stopped at the entry
//! of the large mmap its malloc makes; registers come from PTRACE_GETREGS and the stack bytes
//! from `/proc/PID/mem`, as the kernel side would capture them.

use std::{
    fs::{self, File},
    os::unix::fs::FileExt,
    path::Path,
    process::{Child, Command, Stdio},
};

use nix::{
    sys::{
        ptrace,
        signal::Signal,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

use crate::{
    procfs::parse_maps_line,
    stacks::{vdso::VDSO_NAME, FileView, MappedFile, MappedFiles, StackAbi, StackSample},
};

/// What the eBPF side captures: "a few KiB" of stack from sp.
pub const CAPTURED_STACK_BYTES: u64 = 4096;

const MMAP_X86_64: u64 = 9;
const MMAP2_I386: u64 = 192;
const ENOSYS: i64 = 38;
const LARGE_MAPPING: u64 = 16 << 20;

/// Stops the traced program cannot need more of on the way to its mmap: a bound on the walk
/// so a program that never makes it fails the test instead of hanging it.
const MAX_STOPS: usize = 10_000;

pub struct Capture {
    pub sample: StackSample,
    pub modules: MappedFiles,
}

/// Runs `binary` (which stops itself with SIGSTOP first) until the entry of its first mmap of
/// at least 16 MiB, and captures the stack sample there.
pub fn capture_large_mmap(binary: &Path, abi: StackAbi) -> Capture {
    let child = Command::new(binary)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the test program");
    let tracee = KillOnDrop(child);
    let pid = Pid::from_raw(tracee.0.id() as i32);

    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        other => panic!("the program did not stop itself: {other:?}"),
    }
    ptrace::seize(
        pid,
        ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL,
    )
    .expect("PTRACE_SEIZE");
    // Forces a ptrace-stop to start from, whatever the group-stop reports after the seize.
    ptrace::interrupt(pid).expect("PTRACE_INTERRUPT");

    for _ in 0..MAX_STOPS {
        let mut deliver = None;
        match waitpid(pid, None).expect("waitpid") {
            WaitStatus::PtraceSyscall(_) => {
                let regs = ptrace::getregs(pid).expect("PTRACE_GETREGS");
                let entering = regs.rax as i64 == -ENOSYS;
                let (mmap_number, length) = match abi {
                    StackAbi::X86_64 => (MMAP_X86_64, regs.rsi),
                    StackAbi::I386 => (MMAP2_I386, regs.rcx & 0xffff_ffff),
                };
                if entering && regs.orig_rax == mmap_number && length >= LARGE_MAPPING {
                    let sample = StackSample {
                        abi,
                        ip: regs.rip,
                        sp: regs.rsp,
                        bp: regs.rbp,
                        stack: Vec::new(),
                    };
                    return capture(pid, sample);
                }
            }
            // A signal on its way to the program: pass it on (SIGSTOP was the program's own,
            // already consumed by the group-stop).
            WaitStatus::Stopped(_, signal) if signal != Signal::SIGSTOP => deliver = Some(signal),
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                panic!("the program ended without a large mmap")
            }
            // Group-stop and event stops: resume.
            _ => {}
        }
        ptrace::syscall(pid, deliver).expect("PTRACE_SYSCALL");
    }
    panic!("no large mmap within {MAX_STOPS} stops")
}

/// Reads the stack bytes and the file mappings of the stopped tracee.
fn capture(pid: Pid, mut sample: StackSample) -> Capture {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("reading maps");
    let regions: Vec<_> = maps.lines().filter_map(parse_maps_line).collect();
    let stack_end = regions
        .iter()
        .find(|region| (region.start..region.end).contains(&sample.sp))
        .expect("sp in a mapping")
        .end;
    let length = CAPTURED_STACK_BYTES.min(stack_end - sample.sp);
    sample.stack = vec![0; length as usize];
    File::open(format!("/proc/{pid}/mem"))
        .and_then(|memory| memory.read_exact_at(&mut sample.stack, sample.sp))
        .expect("reading the stack from /proc/PID/mem");
    // Files as this machine has them; the vDSO, which is no file, read from the tracee.
    let modules = regions
        .into_iter()
        .filter(|region| region.name.starts_with('/') || region.name == VDSO_NAME)
        .map(|region| MappedFile {
            start: region.start,
            end: region.end,
            file_offset: region.offset,
            executable: region.perms.as_bytes().get(2) == Some(&b'x'),
            view: if region.name == VDSO_NAME {
                FileView::Process {
                    pid: pid.as_raw() as u32,
                    root: None,
                }
            } else {
                FileView::Host
            },
            path: region.name,
            inode: region.inode,
        })
        .collect();
    Capture { sample, modules }
}

/// The traced program dies with the test, even when an assertion fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
