//! One line per event for `--events`, strace-like and decoded per ABI:
//! `[4242 i386] mmap2(NULL, 1048576, rw-, private|anonymous, -1, 0) = 0xf7a00000`.
//! Every string in a line comes from the traced program or the file system, and is escaped
//! ([`crate::escape::terminal`]) wherever it appears.

use std::fmt::Write as _;

use crate::escape::terminal;
use crate::event::{
    completed_args, Abi, Event, EventBody, Syscall, SyscallEvent, IO_SETUP_RING_ARG,
};
use crate::linux_abi::SYSV_PATH_PREFIX;

pub fn abi_name(abi: Abi) -> &'static str {
    match abi {
        Abi::X86_64 => "x86_64",
        Abi::I386 => "i386",
        Abi::Unknown => "?",
    }
}

/// The line for an event, or `None` for events that only feed the model.
pub fn format(event: &Event) -> Option<String> {
    let prefix = format!("[{} {}]", event.pid, abi_name(event.abi));
    let prefix = if event.tid != event.pid {
        format!("[{}/{} {}]", event.pid, event.tid, abi_name(event.abi))
    } else {
        prefix
    };
    let text = match &event.body {
        EventBody::Syscall(call) => syscall(call),
        EventBody::Fork(fork) => {
            let what = if fork.thread { "thread" } else { "fork" };
            format!("+++ {what} {} +++", fork.child_tid)
        }
        EventBody::Exec(exec) => format!(
            "+++ exec {} ({} → {}, personality {:#x}) +++",
            terminal(&exec.filename),
            abi_name(event.abi),
            abi_name(exec.new_abi),
            exec.personality
        ),
        EventBody::Exit(exit) if exit.group_dead => match (exit.exit_code(), exit.signal()) {
            (Some(code), _) => format!("+++ exited with {code} +++"),
            (None, Some(signal)) => format!("+++ killed by {} +++", signal_name(signal)),
            _ => "+++ exited +++".to_string(),
        },
        EventBody::ExecMapping(mapping) => {
            let name = mapping
                .file
                .as_ref()
                .map(|f| f.path.clone())
                .or_else(|| mapping.name.clone())
                .unwrap_or_else(|| "[bss]".to_string());
            format!(
                "    (kernel maps {:#x}-{:#x} {} {})",
                mapping.start,
                mapping.start + mapping.len,
                prot(u64::from(mapping.prot)),
                terminal(&name)
            )
        }
        EventBody::Lost(lost) if lost.total() > 0 => {
            return Some(format!(
                "!!! {} events lost so far (ring buffer full) !!!",
                lost.total()
            ))
        }
        _ => return None,
    };
    Some(format!("{prefix} {text}"))
}

fn syscall(call: &SyscallEvent) -> String {
    let a = &call.args;
    let name = call.syscall.name();
    let args = match call.syscall {
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap => {
            let file = call
                .file
                .as_ref()
                .map(|f| format!(" <{}>", terminal(&f.path)))
                .unwrap_or_default();
            format!(
                "{}, {}, {}, {}, {}{file}, {:#x}",
                address(a[0]),
                a[1],
                prot(a[2]),
                map_flags(a[3]),
                a[4] as u32 as i32,
                a[5]
            )
        }
        Syscall::Munmap => format!("{}, {}", address(a[0]), a[1]),
        Syscall::Brk => address(a[0]),
        Syscall::Mremap => format!(
            "{}, {}, {}, {}{}",
            address(a[0]),
            a[1],
            a[2],
            mremap_flags(a[3]),
            if a[3] & 2 != 0 {
                format!(", {}", address(a[4]))
            } else {
                String::new()
            }
        ),
        Syscall::Mprotect => format!("{}, {}, {}", address(a[0]), a[1], prot(a[2])),
        Syscall::MemfdCreate => format!(
            "{}, {}",
            quoted(call.string.as_deref()),
            if a[1] & 1 != 0 { "MFD_CLOEXEC" } else { "0" }
        ),
        Syscall::Execve => format!("{}, ...", quoted(call.string.as_deref())),
        Syscall::Execveat => format!(
            "{}, {}, ...",
            a[0] as u32 as i32,
            quoted(call.string.as_deref())
        ),
        Syscall::Close => format!("{}", a[0] as u32 as i32),
        Syscall::Shmat => format!("{}, {}, {:#x}", a[0] as u32 as i32, address(a[1]), a[2]),
        Syscall::Shmdt | Syscall::IoDestroy => address(a[0]),
        Syscall::IoSetup => format!("{}, [{:#x}]", a[0] as u32, a[IO_SETUP_RING_ARG]),
        Syscall::PkeyMprotect => format!(
            "{}, {}, {}, {}",
            address(a[0]),
            a[1],
            prot(a[2]),
            a[3] as u32 as i32
        ),
        Syscall::Mseal => format!("{}, {}, {:#x}", address(a[0]), a[1], a[2]),
        Syscall::RemapFilePages => format!(
            "{}, {}, {}, {}, {:#x}",
            address(a[0]),
            a[1],
            prot(a[2]),
            a[3],
            a[4]
        ),
        Syscall::Ipc => format!("{}, ...", a[0]),
    };
    format!("{name}({args}) = {}{}", result(call), told_by_capture(call))
}

/// What capture added to a successful call: the segment shmat attached, the ring io_setup
/// mapped.
fn told_by_capture(call: &SyscallEvent) -> String {
    let a = &call.args;
    match call.syscall {
        _ if call.failed() => String::new(),
        Syscall::Shmat if a[completed_args::SHMAT_SIZE] != 0 => format!(
            " <{SYSV_PATH_PREFIX}{:08x}, {} bytes>",
            a[completed_args::SHMAT_KEY] as u32,
            a[completed_args::SHMAT_SIZE]
        ),
        Syscall::IoSetup if a[completed_args::IO_SETUP_RING_SIZE] != 0 => {
            format!(" <ring {} bytes>", a[completed_args::IO_SETUP_RING_SIZE])
        }
        _ => String::new(),
    }
}

/// A string argument as strace shows one: in quotes, escaped (a quote too, so the argument
/// cannot seem to end early); `?` when it was not read.
fn quoted(string: Option<&str>) -> String {
    match string {
        Some(string) => format!("\"{}\"", terminal(string).replace('"', "\\\"")),
        None => "?".to_owned(),
    }
}

fn result(call: &SyscallEvent) -> String {
    if let Some(errno) = call.errno() {
        let description = nix::errno::Errno::from_raw(errno).desc();
        return format!("-1 {} ({description})", errno_name(errno));
    }
    match call.syscall {
        Syscall::Mmap
        | Syscall::Mmap2
        | Syscall::OldMmap
        | Syscall::Brk
        | Syscall::Mremap
        | Syscall::Shmat => {
            format!("{:#x}", call.ret)
        }
        _ => call.ret.to_string(),
    }
}

fn address(value: u64) -> String {
    if value == 0 {
        "NULL".to_string()
    } else {
        format!("{value:#x}")
    }
}

/// `rw-` / `r-x` / `---`.
pub fn prot(prot: u64) -> String {
    let mut text = String::with_capacity(3);
    text.push(if prot & 1 != 0 { 'r' } else { '-' });
    text.push(if prot & 2 != 0 { 'w' } else { '-' });
    text.push(if prot & 4 != 0 { 'x' } else { '-' });
    text
}

const MAP_FLAGS: [(u64, &str); 14] = [
    (0x01, "shared"),
    (0x02, "private"),
    (0x03, "shared_validate"),
    (0x10, "fixed"),
    (0x20, "anonymous"),
    (0x40, "32bit"),
    (0x100, "growsdown"),
    (0x800, "denywrite"),
    (0x2000, "locked"),
    (0x4000, "noreserve"),
    (0x8000, "populate"),
    (0x10000, "nonblock"),
    (0x20000, "stack"),
    (0x100000, "fixed_noreplace"),
];

fn map_flags(flags: u64) -> String {
    let mut names = Vec::new();
    let kind = flags & 0x03;
    if let Some((_, name)) = MAP_FLAGS.iter().find(|(bit, _)| *bit == kind) {
        names.push((*name).to_string());
    }
    let mut known = 0x03;
    for (bit, name) in MAP_FLAGS.iter().skip(3) {
        if flags & bit != 0 {
            names.push((*name).to_string());
            known |= bit;
        }
    }
    if flags & 0x40000 != 0 {
        names.push("hugetlb".to_string());
        known |= 0xfc04_0000;
    }
    let rest = flags & !known;
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    if names.is_empty() {
        "0".to_string()
    } else {
        names.join("|")
    }
}

fn mremap_flags(flags: u64) -> String {
    let mut text = String::new();
    for (bit, name) in [(1, "maymove"), (2, "fixed"), (4, "dontunmap")] {
        if flags & bit != 0 {
            if !text.is_empty() {
                text.push('|');
            }
            let _ = write!(text, "{name}");
        }
    }
    if text.is_empty() {
        "0".to_string()
    } else {
        text
    }
}

/// `ENOMEM` for 12, as strace prints it; `E4096` for a number libc has no name for.
pub fn errno_name(errno: i32) -> String {
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => format!("E{errno}"),
        known => format!("{known:?}"),
    }
}

/// [`errno_name`] as a `&'static str`, for labels kept by value (the agent's metrics): each
/// name is made once and kept, and there are at most 4095 errnos.
pub fn errno_label(errno: i32) -> &'static str {
    use std::{collections::HashMap, sync::Mutex, sync::OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<i32, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    names
        .entry(errno)
        .or_insert_with(|| Box::leak(errno_name(errno).into_boxed_str()))
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(signal) => signal.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Comm;

    #[test]
    fn errno_names_are_libc_names() {
        assert_eq!(errno_name(12), "ENOMEM");
        assert_eq!(errno_name(133), "EHWPOISON");
        assert_eq!(errno_name(4000), "E4000");
    }

    fn syscall_event(abi: Abi, syscall: Syscall, args: [u64; 6], ret: i64) -> Event {
        Event {
            time_ns: 1,
            pid: 4242,
            tid: 4242,
            comm: Comm::from_str_lossy("prog"),
            abi,
            body: EventBody::Syscall(SyscallEvent {
                syscall,
                args,
                ret,
                entry_ns: 0,
                string: None,
                file: None,
            }),
        }
    }

    #[test]
    fn ia32_mmap2_line() {
        let event = syscall_event(
            Abi::I386,
            Syscall::Mmap2,
            [0, 1_048_576, 3, 0x22, 0xffff_ffff, 0],
            0xf7a0_0000,
        );
        assert_eq!(
            format(&event).unwrap(),
            "[4242 i386] mmap2(NULL, 1048576, rw-, private|anonymous, -1, 0x0) = 0xf7a00000"
        );
    }

    #[test]
    fn failed_munmap_names_the_error() {
        let event = syscall_event(
            Abi::X86_64,
            Syscall::Munmap,
            [0x1001, 4096, 0, 0, 0, 0],
            -22,
        );
        assert_eq!(
            format(&event).unwrap(),
            "[4242 x86_64] munmap(0x1001, 4096) = -1 EINVAL (Invalid argument)"
        );
    }

    /// Names a program chose (a memfd's, a mapped file's) cannot forge a line or drive the
    /// terminal, in any of the places a line shows them.
    #[test]
    fn program_strings_are_escaped() {
        let hostile = "x\x1b]0;owned\x07\n[1 x86_64] fake\"";
        let mut memfd = syscall_event(Abi::X86_64, Syscall::MemfdCreate, [0; 6], 3);
        if let EventBody::Syscall(call) = &mut memfd.body {
            call.string = Some(hostile.to_owned());
        }
        let mut mmap = syscall_event(Abi::X86_64, Syscall::Mmap, [0, 4096, 1, 1, 3, 0], 0x1000);
        if let EventBody::Syscall(call) = &mut mmap.body {
            call.file = Some(crate::event::FileRef {
                inode: 1,
                path: format!("/memfd:{hostile} (deleted)"),
            });
        }
        for event in [memfd, mmap] {
            let line = format(&event).unwrap();
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(
                line.contains("x\\x1b]0;owned\\x07\\n[1 x86_64] fake"),
                "{line}"
            );
        }
    }

    #[test]
    fn flags_by_name() {
        assert_eq!(map_flags(0x22), "private|anonymous");
        assert_eq!(map_flags(0x100012), "private|fixed|fixed_noreplace");
        assert_eq!(map_flags(0x01), "shared");
        assert_eq!(prot(5), "r-x");
        assert_eq!(mremap_flags(3), "maymove|fixed");
    }
}
