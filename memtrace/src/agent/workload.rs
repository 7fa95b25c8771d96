//! A busy server's event stream in compressed time, for the agent's bench and tests: a service
//! that forks a short-lived child every second (every tenth one execs), maps and frees 4 MiB
//! twenty times a second, and a second service that leaks a memfd double mapping every five
//! minutes (seed 000's pattern at its pace: 980 regions in a few days). Deterministic: the
//! same seconds give the same events.

use crate::event::{
    Abi, AttachEvent, Comm, Event, EventBody, ExecEvent, ExitEvent, FileRef, ForkEvent,
    ImageLayout, MapsLine, Syscall, SyscallEvent,
};

pub const SERVICE: u32 = 100;
pub const LEAKER: u32 = 200;
const SECOND: u64 = 1_000_000_000;
const RW: u64 = 3;
const RX: u64 = 5;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE_ANONYMOUS: u64 = 0x22;
const VIEW: u64 = 64 << 10;

fn event(time_ns: u64, pid: u32, comm: &str, body: EventBody) -> Event {
    Event {
        time_ns,
        pid,
        tid: pid,
        comm: Comm::from_str_lossy(comm),
        abi: Abi::X86_64,
        body,
    }
}

#[allow(clippy::too_many_arguments)] // one argument per field of the message it builds
fn syscall(
    time_ns: u64,
    pid: u32,
    comm: &str,
    syscall: Syscall,
    args: [u64; 6],
    ret: i64,
    string: Option<&str>,
    file: Option<FileRef>,
) -> Event {
    event(
        time_ns,
        pid,
        comm,
        EventBody::Syscall(SyscallEvent {
            syscall,
            args,
            ret,
            entry_ns: time_ns - 700,
            string: string.map(str::to_owned),
            file,
        }),
    )
}

/// Twenty libraries as an attach layout lists them: 40 regions, each one's code and data.
/// The footprint example's processes are made of them too.
pub fn library_regions() -> impl Iterator<Item = MapsLine> {
    (0..40u64).map(|index| MapsLine {
        start: 0x7f00_0000_0000 + index * 0x10_0000,
        end: 0x7f00_0000_0000 + index * 0x10_0000 + 0x8_0000,
        perms: if index % 2 == 0 { "r-xp" } else { "rw-p" }.to_owned(),
        offset: 0,
        inode: 100 + index / 2,
        name: format!("/usr/lib/lib{}.so", index / 2),
    })
}

fn attach(time_ns: u64, pid: u32, comm: &str, exe: &str) -> Event {
    let regions = library_regions()
        .chain([
            MapsLine {
                start: 0x5600_0000_0000,
                end: 0x5600_0002_1000,
                perms: "rw-p".into(),
                offset: 0,
                inode: 0,
                name: "[heap]".into(),
            },
            MapsLine {
                start: 0x7ffc_0000_0000,
                end: 0x7ffc_0002_1000,
                perms: "rw-p".into(),
                offset: 0,
                inode: 0,
                name: "[stack]".into(),
            },
        ])
        .collect();
    event(
        time_ns,
        pid,
        comm,
        EventBody::Attach(AttachEvent {
            regions,
            start_brk: 0x5600_0000_0000,
            brk: 0x5600_0002_1000,
            ppid: 1,
            exe: exe.to_owned(),
            memfd_fds: Vec::new(),
        }),
    )
}

/// The services as memtrace finds them at `start_ns`.
pub fn start(start_ns: u64) -> Vec<Event> {
    vec![
        attach(start_ns, SERVICE, "service", "/usr/sbin/service"),
        attach(start_ns + 1_000, LEAKER, "dotnet", "/usr/bin/dotnet"),
    ]
}

/// Second `second` of the day (from 0), which starts at `start_ns`.
pub fn second(start_ns: u64, second: u64) -> Vec<Event> {
    second_of(start_ns, second, true)
}

/// [`second`], with or without the slow leak: without it, what the agent holds for the
/// live processes does not change over the day, so its memory must not either.
pub fn second_of(start_ns: u64, second: u64, leak: bool) -> Vec<Event> {
    let now = start_ns + SECOND + second * SECOND;
    let mut events = Vec::with_capacity(64);
    // Churn: 4 MiB mapped and freed, twenty times a second.
    let buffer = 0x7e00_0000_0000u64;
    for tick in 0..20 {
        let time = now + tick * (SECOND / 20);
        events.push(syscall(
            time,
            SERVICE,
            "service",
            Syscall::Mmap,
            [0, 4 << 20, RW, MAP_PRIVATE_ANONYMOUS, u64::MAX, 0],
            buffer as i64,
            None,
            None,
        ));
        events.push(syscall(
            time + 200_000,
            SERVICE,
            "service",
            Syscall::Munmap,
            [buffer, 4 << 20, 0, 0, 0, 0],
            0,
            None,
            None,
        ));
    }
    // A short-lived child, pids wrapping as the kernel's do; every tenth one execs.
    let child = 10_000 + (second % 20_000) as u32;
    let born = now + 300_000_000;
    events.push(event(
        born,
        SERVICE,
        "service",
        EventBody::Fork(ForkEvent {
            child_pid: child,
            child_tid: child,
            thread: false,
            shares_mm: false,
            untraced: false,
        }),
    ));
    let comm = if second.is_multiple_of(10) {
        events.push(event(
            born + 100_000,
            child,
            "service",
            EventBody::Exec(Box::new(ExecEvent {
                old_tid: child,
                personality: 0,
                new_abi: Abi::X86_64,
                filename: "/usr/bin/helper".into(),
                interp: "/usr/bin/helper".into(),
                layout: ImageLayout {
                    start_brk: 0x5700_0000_0000,
                    brk: 0x5700_0000_0000,
                    stack_start: 0x7ffd_0000_0000,
                    stack_end: 0x7ffd_0002_1000,
                    ..ImageLayout::default()
                },
            })),
        ));
        "helper"
    } else {
        "service"
    };
    events.push(syscall(
        born + 200_000,
        child,
        comm,
        Syscall::Mmap,
        [0, 64 << 10, RW, MAP_PRIVATE_ANONYMOUS, u64::MAX, 0],
        0x7d00_0000_0000,
        None,
        None,
    ));
    events.push(event(
        born + 400_000,
        child,
        comm,
        EventBody::Exit(ExitEvent {
            status: 0,
            group_dead: true,
        }),
    ));
    // The leak, every five minutes: a memfd mapped twice, its fd closed, never unmapped.
    if !leak || second % 300 != 30 {
        return events;
    }
    let leak_at = now + 600_000_000;
    let inode = 1_000_000 + second;
    let memfd = FileRef {
        inode,
        path: "/memfd:doublemapper".into(),
    };
    let fd = 7;
    events.push(syscall(
        leak_at,
        LEAKER,
        "dotnet",
        Syscall::MemfdCreate,
        [0x1000, 1, 0, 0, 0, 0],
        fd,
        Some("doublemapper"),
        Some(memfd.clone()),
    ));
    let base = 0x7a00_0000_0000 + second * 2 * VIEW;
    for (index, prot) in [RW, RX].into_iter().enumerate() {
        events.push(syscall(
            leak_at + 10_000 + index as u64 * 10_000,
            LEAKER,
            "dotnet",
            Syscall::Mmap,
            [
                base + index as u64 * VIEW,
                VIEW,
                prot,
                MAP_SHARED | 0x10,
                fd as u64,
                0,
            ],
            (base + index as u64 * VIEW) as i64,
            None,
            Some(memfd.clone()),
        ));
    }
    events.push(syscall(
        leak_at + 40_000,
        LEAKER,
        "dotnet",
        Syscall::Close,
        [fd as u64, 0, 0, 0, 0, 0],
        0,
        None,
        None,
    ));
    events
}

/// The time of second `second` of a day that starts at `start_ns`.
pub fn time_of(start_ns: u64, second: u64) -> u64 {
    start_ns + SECOND + second * SECOND
}
