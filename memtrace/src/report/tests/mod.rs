//! The incidents from the field reports, replayed as synthetic streams, must come out of the
//! reports as findings a person understands; the JSON must keep its schema.

use serde_json::Value;

use crate::event::{Abi, AttachEvent, Losses, Syscall};
use crate::model::testing::*;
use crate::report::folded::FoldedPrograms;
use crate::report::schema::{Evidence, FindingKind, Report};
use crate::report::{
    build, json, text, Detail, NoNames, ReportOptions, SessionInfo, Source, TextOptions,
};

mod findings;
mod folding;
mod json_report;
mod processes;
mod ranking;
mod text_report;

const DOTNET: u32 = 4242;
const JIT_BASE: u64 = 0x7f00_0000_0000;

fn session(events: u64) -> SessionInfo {
    SessionInfo {
        source: Source::Replay,
        events,
        lost: Losses::default(),
        backend: None,
    }
}

fn report_of(feed: &Feed) -> Report {
    build(&feed.model, &session(feed.model.events()))
}

/// .NET with W^X: 8 rounds of memfd_create("doublemapper") mapped rw and r-x, fd closed, never
/// unmapped; plus one memfd released properly.
fn doublemapper_feed() -> Feed {
    let mut feed = Feed::new();
    feed.comm = "dotnet";
    let fd = 10;
    for round in 0..8u64 {
        let rw = JIT_BASE + round * 8 * MIB;
        let view = ("doublemapper", 1000 + round, fd);
        feed.memfd_create(DOTNET, "doublemapper", 1000 + round, fd as i64)
            .mmap_memfd(DOTNET, rw, 4 * MIB, RW, view)
            .mmap_memfd(DOTNET, rw + 4 * MIB, 4 * MIB, RX, view)
            .close(DOTNET, fd);
    }
    let released = JIT_BASE + 0x1000_0000;
    let view = ("released", 2000, fd);
    feed.memfd_create(DOTNET, "released", 2000, fd as i64)
        .mmap_memfd(DOTNET, released, 4 * MIB, RW, view)
        .mmap_memfd(DOTNET, released + 4 * MIB, 4 * MIB, RX, view)
        .close(DOTNET, fd)
        .munmap(DOTNET, released, 8 * MIB)
        .exit(DOTNET, 0);
    feed
}

/// A native library behind a managed wrapper: 16 MiB blocks never freed beside an 8 MiB one
/// that was.
fn anon_leak_feed() -> Feed {
    const PID: u32 = 777;
    let mut feed = Feed::new();
    feed.comm = "wrapper";
    let base = 0x7f10_0000_0000;
    for block in 0..6 {
        feed.mmap_anon(PID, base + block * 32 * MIB, 16 * MIB, RW);
    }
    let freed = base + 0x1_0000_0000;
    feed.mmap_anon(PID, freed, 8 * MIB, RW)
        .munmap(PID, freed, 8 * MIB)
        // Small blocks and thread stacks are not what this finding is about.
        .mmap_anon(PID, freed + 16 * MIB, 64 * KIB, RW)
        .syscall(
            PID,
            Syscall::Mmap,
            [0, 8 * MIB, RW, ANON | 0x20000, u64::MAX, 0],
            (freed + 32 * MIB) as i64,
        )
        .exit(PID, 0);
    feed
}

const SSHD: u32 = 600;
const BASH: u32 = 601;
const START_BRK: u64 = 0x7ac000;

/// sshd (32-bit) starts bash (64-bit): on exec-shield kernels the libraries land below the
/// executable and right above the heap.
fn sshd_bash_feed(from_abi: Abi) -> Feed {
    let mut feed = Feed::new();
    feed.comm = "sshd";
    feed.abi = from_abi;
    feed.attach(
        SSHD,
        AttachEvent {
            regions: vec![maps_line(
                0x0804_8000,
                0x0810_0000,
                "r-xp",
                1,
                "/usr/sbin/sshd",
            )],
            start_brk: 0x0900_0000,
            brk: 0x0900_0000,
            ppid: 1,
            exe: "/usr/sbin/sshd".to_owned(),
            memfd_fds: Vec::new(),
        },
    )
    .fork(SSHD, BASH, false, false);
    // The exec and the mappings the kernel makes for it carry the caller's ABI.
    let bash = file(11, "/bin/bash");
    let ld = file(12, "/lib64/ld-2.12.so");
    let libc = file(13, "/lib64/libc-2.12.so");
    let libtinfo = file(14, "/lib64/libtinfo.so.5");
    feed.exec_mapping(BASH, exec_mmap(0x40_0000, 0xd5000, 5, 0, bash.clone()))
        .exec_mapping(BASH, exec_mmap(0x6d4000, 0xa000, 3, 0xd4000, bash))
        .exec_mapping(
            BASH,
            exec_other(crate::event::ExecMappingKind::Bss, 0x6de000, 0x5000, 3),
        )
        .exec_mapping(BASH, exec_mmap(0x11_0000, 0x20000, 5, 0, ld));
    let mut record = exec_record(
        "/bin/bash",
        Abi::X86_64,
        START_BRK,
        (0x7fff_1000_0000, 0x7fff_1002_1000),
    );
    record.layout.start_code = 0x40_0000;
    record.layout.interp_base = 0x11_0000;
    record.personality = 0x0800_0000;
    feed.comm = "bash";
    feed.exec(BASH, record);
    feed.abi = Abi::X86_64;
    feed.mmap_file(BASH, 0x13_0000, 0x18_0000, RX, MAP_PRIVATE, 3, 0, libc)
        .mmap_file(BASH, 0x886000, 0x20000, RX, MAP_PRIVATE, 3, 0, libtinfo)
        .brk(BASH, 0, START_BRK)
        .brk(BASH, START_BRK + 0xd0000, START_BRK + 0xd0000)
        .brk(BASH, START_BRK + 0x100000, START_BRK + 0xd0000)
        .brk(BASH, START_BRK + 0xd1000, START_BRK + 0xd0000);
    feed
}

/// Three processes: two in one container's cgroup (pids 1 and 2 inside), one on the host.
fn two_containers_feed() -> Feed {
    let mut feed = Feed::new();
    let container = |cgroup: &str, ns_pid: u32, root: &str| {
        crate::event::EventBody::Container(crate::event::ContainerIdentity {
            cgroup: cgroup.to_owned(),
            ns_pid,
            root: root.to_owned(),
        })
    };
    feed.send(700, 700, container("/pod/app", 1, "/srv/app"))
        .mmap_anon(700, JIT_BASE, 4 * MIB, RW)
        .send(701, 701, container("/pod/app", 2, "/srv/app"))
        .mmap_anon(701, JIT_BASE, 2 * MIB, RW)
        .send(900, 900, container("/user.slice", 900, "/"))
        .mmap_anon(900, JIT_BASE, MIB, RW)
        .munmap(900, JIT_BASE, MIB);
    feed
}

/// The parent of [`folded_children_feed`]'s children, and the first child's pid.
const SPAWNER: u32 = 600;
const CHILDREN: u32 = 601;

/// A spawner starting ten children one after the other: each maps 2 MiB it never unmaps
/// (a finding), a 64 KiB block it frees, and exits 0 (the sixth is killed by signal 9). The
/// exited children past the `keep` most recent are folded.
fn folded_children_feed(keep: usize) -> (Feed, FoldedPrograms) {
    let mut feed = Feed::new();
    feed.comm = "spawner";
    let mut exited = FoldedPrograms::new(ReportOptions::default(), Vec::new());
    feed.mmap_anon(SPAWNER, JIT_BASE, MIB, RW);
    for child in 0..10u32 {
        let pid = CHILDREN + child;
        let base = JIT_BASE + 0x1000_0000;
        feed.fork(SPAWNER, pid, false, false)
            .mmap_anon(pid, base, 2 * MIB, RW)
            .mmap_anon(pid, base + 4 * MIB, 64 * KIB, RW)
            .munmap(pid, base + 4 * MIB, 64 * KIB)
            .exit(pid, if child == 5 { 9 } else { 0 });
        let step_ns = feed.model.timeline_step_ns();
        feed.model
            .fold_exited(keep, &mut |view| exited.fold(view, step_ns));
    }
    (feed, exited)
}

/// Sessions that between them show every part of a report, each with what was folded out of
/// it: findings of each kind, an exec across ABIs, an empty session, containers, folded
/// children. For the tests that hold one way of making a report to another.
fn varied_sessions() -> Vec<(Feed, FoldedPrograms)> {
    let mut sshd = sshd_bash_feed(Abi::I386);
    sshd.exit(BASH, 0);
    let nothing = FoldedPrograms::default;
    vec![
        (doublemapper_feed(), nothing()),
        (anon_leak_feed(), nothing()),
        (sshd, nothing()),
        (Feed::new(), nothing()),
        (two_containers_feed(), nothing()),
        folded_children_feed(2),
    ]
}

fn folded_report(feed: &Feed, exited: &FoldedPrograms) -> Report {
    crate::report::build_with(
        &feed.model,
        exited,
        &session(feed.model.events()),
        &mut NoNames,
    )
}
