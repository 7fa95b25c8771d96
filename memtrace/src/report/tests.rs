//! The incidents from the field reports, replayed as synthetic streams, must come out of the
//! reports as findings a person understands; the JSON must keep its schema.

use serde_json::Value;

use crate::event::{Abi, AttachEvent, Losses, Syscall};
use crate::model::testing::*;
use crate::report::folded::ExitedPrograms;
use crate::report::schema::{Evidence, FindingKind, Report};
use crate::report::{build, json, text, NoNames, ReportOptions, SessionInfo, Source, TextOptions};

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

#[test]
fn doublemapper_leak_is_found_with_its_remedy() {
    let report = report_of(&doublemapper_feed());
    let findings: Vec<_> = report
        .findings
        .iter()
        .filter(|finding| finding.kind == FindingKind::UnreleasedMemfd)
        .collect();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let finding = findings[0];
    assert_eq!(finding.pid, DOTNET);
    match &finding.evidence {
        Evidence::UnreleasedMemfd {
            name,
            regions,
            bytes,
            memfds,
            perms,
            remedy,
            ..
        } => {
            assert_eq!(name, "memfd:doublemapper");
            assert_eq!((*regions, *bytes, *memfds), (16, 64 * MIB, 8));
            assert_eq!(perms, &["rw-s", "r-xs"]);
            assert_eq!(remedy.as_deref(), Some("DOTNET_EnableWriteXorExecute=0"));
        }
        other => panic!("unexpected evidence {other:?}"),
    }
    assert!(finding.message.contains("W^X"), "{}", finding.message);
    assert!(finding.message.contains("DOTNET_EnableWriteXorExecute=0"));
    assert!(!finding.message.contains("released"));

    let process = &report.processes[0];
    let groups: Vec<_> = process
        .unreleased
        .groups
        .iter()
        .map(|group| {
            (
                group.name.as_str(),
                group.perms.as_str(),
                group.count,
                group.bytes,
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("memfd:doublemapper", "rw-s", 8, 32 * MIB),
            ("memfd:doublemapper", "r-xs", 8, 32 * MIB),
        ]
    );
    assert_eq!(
        (
            process.unreleased.total_regions,
            process.unreleased.total_bytes
        ),
        (16, 64 * MIB)
    );
    let region = &process.unreleased.groups[0].regions[0];
    assert_eq!(region.memfd_fd_closed, Some(true));
    assert_eq!(region.syscall, "mmap");
    assert_eq!(region.memfd.as_ref().unwrap().created_by_pid, DOTNET);
}

#[test]
fn a_memfd_whose_fd_is_still_open_is_no_finding() {
    let mut feed = Feed::new();
    feed.memfd_create(DOTNET, "doublemapper", 1000, 10)
        .mmap_memfd(DOTNET, JIT_BASE, 4 * MIB, RW, ("doublemapper", 1000, 10));
    let report = report_of(&feed);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.processes[0].unreleased.total_bytes, 4 * MIB);
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
        );
    feed
}

#[test]
fn large_anonymous_blocks_never_freed_are_grouped_by_size() {
    let report = report_of(&anon_leak_feed());
    let finding = report
        .findings
        .iter()
        .find(|finding| finding.kind == FindingKind::UnreleasedAnon)
        .expect("an unreleased-anon finding");
    match &finding.evidence {
        Evidence::UnreleasedAnon {
            regions,
            bytes,
            sizes,
            ..
        } => {
            assert_eq!((*regions, *bytes), (6, 96 * MIB));
            assert_eq!(sizes.len(), 1);
            assert_eq!((sizes[0].size, sizes[0].count), (16 * MIB, 6));
        }
        other => panic!("unexpected evidence {other:?}"),
    }
    assert!(
        finding.message.contains("6 × 16 MiB = 96 MiB"),
        "{}",
        finding.message
    );
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let unreleased = &report.processes[0].unreleased;
    assert_eq!(
        unreleased.total_regions, 8,
        "the small block and the stack still count there"
    );
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

#[test]
fn starved_brk_names_its_room_and_what_blocks_it() {
    let report = report_of(&sshd_bash_feed(Abi::I386));
    let finding = report
        .findings
        .iter()
        .find(|finding| finding.kind == FindingKind::BrkExhausted)
        .expect("a brk-exhausted finding");
    assert_eq!(finding.pid, BASH);
    match &finding.evidence {
        Evidence::BrkExhausted {
            failed_calls,
            largest_ask,
            room_total,
            room_left,
            bounded_by,
            ..
        } => {
            assert_eq!(*failed_calls, 2);
            assert_eq!(*largest_ask, 0x30000);
            assert_eq!(*room_total, Some(0x886000 - START_BRK));
            assert_eq!(*room_left, Some(0x886000 - START_BRK - 0xd0000));
            assert_eq!(bounded_by.as_ref().unwrap().name, "/lib64/libtinfo.so.5");
        }
        other => panic!("unexpected evidence {other:?}"),
    }
    assert!(
        finding.message.contains("872 KiB of room"),
        "{}",
        finding.message
    );
    let bash = report
        .processes
        .iter()
        .find(|process| process.pid == BASH)
        .unwrap();
    let asked: Vec<_> = bash
        .brk
        .failed
        .iter()
        .map(|failure| failure.asked_bytes)
        .collect();
    assert_eq!(asked, [0x30000, 0x1000]);
}

#[test]
fn brk_starved_by_a_file_one_mib_above_start_brk() {
    const PID: u32 = 650;
    let mut feed = Feed::new();
    feed.exec(
        PID,
        exec_record(
            "/usr/bin/app",
            Abi::X86_64,
            START_BRK,
            (0x7fff_0000_0000, 0x7fff_0002_1000),
        ),
    )
    .mmap_file(
        PID,
        START_BRK + MIB,
        0x1000,
        PROT_READ,
        MAP_PRIVATE,
        3,
        0,
        file(5, "/etc/ld.so.cache"),
    )
    .brk(PID, START_BRK + 2 * MIB, START_BRK);
    let report = report_of(&feed);
    let brk = &report.processes[0].brk;
    assert_eq!((brk.room_total, brk.room_left), (Some(MIB), Some(MIB)));
    assert_eq!(brk.bounded_by.as_ref().unwrap().name, "/etc/ld.so.cache");
    assert_eq!(brk.failed[0].asked_bytes, 2 * MIB);
    let kinds: Vec<_> = report.findings.iter().map(|finding| finding.kind).collect();
    assert_eq!(kinds, [FindingKind::BrkExhausted]);
}

#[test]
fn abi_crossing_exec_with_a_32_bit_layout_is_found() {
    let report = report_of(&sshd_bash_feed(Abi::I386));
    let finding = report
        .findings
        .iter()
        .find(|finding| finding.kind == FindingKind::AbiExecLayout)
        .expect("an abi-exec-layout finding");
    assert_eq!(finding.pid, BASH);
    match &finding.evidence {
        Evidence::AbiExecLayout {
            from_abi,
            to_abi,
            exe_base,
            interp_base,
            lowest_library,
            reasons,
            ..
        } => {
            assert_eq!((*from_abi, *to_abi), ("i386", "x86_64"));
            assert_eq!((*exe_base, *interp_base), (0x40_0000, 0x11_0000));
            assert_eq!(*lowest_library, Some(0x13_0000));
            assert_eq!(reasons.len(), 3, "{reasons:#?}");
        }
        other => panic!("unexpected evidence {other:?}"),
    }
    assert!(
        finding.message.contains("i386 → x86_64"),
        "{}",
        finding.message
    );

    let bash = report
        .processes
        .iter()
        .find(|process| process.pid == BASH)
        .unwrap();
    let exec = &bash.execs[0];
    assert_eq!(
        (exec.from_abi, exec.to_abi, exec.personality),
        ("i386", "x86_64", 0x0800_0000)
    );
    assert_eq!(
        (exec.lowest_library, exec.highest_library),
        (Some(0x13_0000), Some(0x886000))
    );
    assert_eq!(exec.above_brk.as_ref().unwrap().start, 0x886000);
    assert_eq!(bash.ppid, SSHD);
    assert_eq!(bash.abi, "x86_64");
}

#[test]
fn the_same_layout_without_an_abi_crossing_is_no_abi_finding() {
    let report = report_of(&sshd_bash_feed(Abi::X86_64));
    assert!(report
        .findings
        .iter()
        .all(|finding| finding.kind != FindingKind::AbiExecLayout));
}

fn assert_u64(value: &Value, field: &str) {
    assert!(
        value[field].is_u64(),
        "{field} should be an integer: {}",
        value[field]
    );
}

fn assert_u64_or_null(value: &Value, field: &str) {
    assert!(
        value[field].is_u64() || value[field].is_null(),
        "{field} should be an integer or null: {}",
        value[field]
    );
}

fn assert_str(value: &Value, field: &str) {
    assert!(
        value[field].is_string(),
        "{field} should be a string: {}",
        value[field]
    );
}

fn assert_distribution(value: &Value) {
    for field in ["count", "p50", "p99", "max"] {
        assert_u64(value, field);
    }
}

#[test]
fn json_follows_the_schema() {
    let mut feed = sshd_bash_feed(Abi::I386);
    feed.memfd_create(BASH, "doublemapper", 77, 9)
        .mmap_memfd(BASH, JIT_BASE, MIB, RW, ("doublemapper", 77, 9))
        .close(BASH, 9)
        .exit(BASH, 1 << 8);
    let report: Value = serde_json::from_str(&json::render(&report_of(&feed))).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["source"], "replay");
    assert_u64(&report, "events");
    assert_u64(&report, "lost_events");
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "one entry per process");
    let bash = processes
        .iter()
        .find(|process| process["pid"] == BASH)
        .unwrap();
    assert_u64(bash, "pid");
    assert_u64(bash, "ppid");
    for field in ["comm", "exe", "abi"] {
        assert_str(bash, field);
    }
    assert_eq!(bash["abi"], "x86_64");
    assert_eq!(bash["exit_code"], 1);
    assert!(bash["signal"].is_null());

    let exec = &bash["execs"][0];
    for field in ["filename", "from_abi", "to_abi"] {
        assert_str(exec, field);
    }
    for field in [
        "personality",
        "time_ns",
        "exe_base",
        "interp_base",
        "brk_start",
        "stack_start",
        "stack_end",
    ] {
        assert_u64(exec, field);
    }
    assert_u64_or_null(exec, "lowest_library");
    assert_u64_or_null(exec, "highest_library");

    let syscalls = bash["syscalls"].as_object().unwrap();
    let names: Vec<_> = syscalls.keys().map(String::as_str).collect();
    let mut expected = [
        "mmap",
        "munmap",
        "brk",
        "mremap",
        "mprotect",
        "memfd_create",
        "execve",
    ];
    expected.sort_unstable();
    let mut names_sorted = names.clone();
    names_sorted.sort_unstable();
    assert_eq!(names_sorted, expected, "close is not in this object");
    for counts in syscalls.values() {
        assert_u64(counts, "calls");
        assert_u64(counts, "failed");
    }
    assert_eq!(bash["syscalls"]["brk"]["failed"], 2);

    for entry in bash["layout"].as_array().unwrap() {
        assert_u64(entry, "start");
        assert_u64(entry, "end");
        for field in ["perms", "kind", "name", "origin"] {
            assert_str(entry, field);
        }
        let kind = entry["kind"].as_str().unwrap();
        assert!(
            [
                "file",
                "anon",
                "heap",
                "stack",
                "memfd",
                "shared-anon",
                "vdso",
                "other"
            ]
            .contains(&kind),
            "{kind}"
        );
        assert!(["exec", "snapshot", "syscall"].contains(&entry["origin"].as_str().unwrap()));
    }
    for entry in bash["summary"].as_array().unwrap() {
        assert_str(entry, "kind");
        assert_u64(entry, "regions");
        assert_u64(entry, "bytes");
        assert!(entry["percent"].is_f64(), "{}", entry["percent"]);
    }

    let unreleased = &bash["unreleased"];
    assert_u64(unreleased, "total_regions");
    assert_u64(unreleased, "total_bytes");
    let group = &unreleased["groups"][0];
    for field in ["kind", "name", "perms"] {
        assert_str(group, field);
    }
    assert_u64(group, "count");
    assert_u64(group, "bytes");
    let region = &group["regions"][0];
    assert_u64(region, "start");
    assert_u64(region, "len");
    assert_u64(region, "created_ns");
    for field in ["perms", "kind", "name", "syscall"] {
        assert_str(region, field);
    }
    let memfd_region = unreleased["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["kind"] == "memfd")
        .map(|group| &group["regions"][0])
        .unwrap();
    assert_eq!(memfd_region["memfd_fd_closed"], true);
    assert!(region["memfd_fd_closed"].is_boolean() || region["memfd_fd_closed"].is_null());

    let brk = &bash["brk"];
    assert_u64(brk, "start");
    assert_u64(brk, "end");
    assert_u64_or_null(brk, "room_total");
    assert_u64_or_null(brk, "room_left");
    assert_u64(&brk["bounded_by"], "start");
    assert_str(&brk["bounded_by"], "name");
    assert_str(&brk["bounded_by"], "perms");
    for failure in brk["failed"].as_array().unwrap() {
        assert_u64(failure, "time_ns");
        assert_u64(failure, "requested");
        assert_u64(failure, "asked_bytes");
    }

    assert_distribution(&bash["distributions"]["mmap_size"]);
    for name in expected {
        assert_distribution(&bash["distributions"]["latency_ns"][name]);
    }

    let findings = report["findings"].as_array().unwrap();
    assert!(findings.len() >= 3);
    for finding in findings {
        assert_str(finding, "kind");
        assert_u64(finding, "pid");
        assert_str(finding, "message");
    }
    let kinds: Vec<_> = findings
        .iter()
        .map(|finding| finding["kind"].as_str().unwrap())
        .collect();
    for kind in ["unreleased-memfd", "brk-exhausted", "abi-exec-layout"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn filter_pids_keeps_the_chosen_processes_and_their_findings() {
    let mut report = report_of(&sshd_bash_feed(Abi::I386));
    report.filter_pids(&[SSHD]);
    assert_eq!(report.processes.len(), 1);
    assert_eq!(report.processes[0].pid, SSHD);
    assert!(report.findings.is_empty());
}

#[test]
fn a_report_can_be_built_mid_stream() {
    let mut feed = Feed::new();
    feed.mmap_anon(1, JIT_BASE, 2 * MIB, RW);
    let early = report_of(&feed);
    feed.munmap(1, JIT_BASE, 2 * MIB);
    let late = report_of(&feed);
    assert!(early.processes[0].alive);
    assert_eq!(early.processes[0].unreleased.total_bytes, 2 * MIB);
    assert!(early
        .findings
        .iter()
        .any(|finding| finding.kind == FindingKind::UnreleasedAnon));
    assert_eq!(late.processes[0].unreleased.total_bytes, 0);
    assert!(late.findings.is_empty());
}

#[test]
fn text_shows_groups_findings_and_lost_events() {
    let feed = doublemapper_feed();
    let mut info = session(feed.model.events());
    info.lost = Losses {
        ring_full: 120,
        pending_full: 3,
        stacks_not_sampled: 5,
    };
    let report = build(&feed.model, &info);
    let rendered = text::render(&report, &TextOptions::default());
    println!("{rendered}");
    // Unsampled stacks are shown apart, never counted as lost events.
    assert!(rendered.contains("WARNING: 123 events lost"), "{rendered}");
    assert!(
        rendered.contains("note: 5 call stacks not sampled"),
        "{rendered}"
    );
    assert!(rendered.contains("pid 4242 (dotnet)"));
    assert!(rendered.contains("exited 0"));
    let group_line = rendered
        .lines()
        .find(|line| line.trim_start().starts_with("memfd:doublemapper") && line.contains("rw-s"))
        .expect("a line for the rw-s views");
    assert!(group_line.contains("8 regions"), "{group_line}");
    assert!(group_line.contains("32 MiB"), "{group_line}");
    assert!(rendered.contains("[unreleased-memfd]"));
    // The signal first: the findings come before the per-process blocks.
    assert!(rendered.find("Findings").unwrap() < rendered.find("pid 4242 (dotnet)").unwrap());
    assert!(
        !rendered.contains("layout\n"),
        "the region list only on request"
    );

    let with_layout = text::render(&report, &TextOptions { show_layout: true });
    assert!(with_layout.contains("  layout\n"));
    assert!(with_layout.contains("00007f0000000000-00007f0000400000"));
}

#[test]
fn text_of_the_sshd_bash_incident() {
    let report = report_of(&sshd_bash_feed(Abi::I386));
    let rendered = text::render(&report, &TextOptions::default());
    println!("{rendered}");
    assert!(
        rendered.contains("exec /bin/bash  i386 → x86_64"),
        "{rendered}"
    );
    assert!(rendered.contains("bounded by /lib64/libtinfo.so.5 r-xp at 0x886000"));
    assert!(rendered.contains("brk failed 2×"));
    assert!(rendered.contains("[abi-exec-layout]"));
    assert!(rendered.contains("[brk-exhausted]"));
}

/// A live report names the syscall hooks it used, and why not fentry; a replay's has none.
#[test]
fn the_header_names_the_backend() {
    let feed = doublemapper_feed();
    let mut info = session(feed.model.events());
    info.backend = Some(crate::report::BackendInfo {
        name: "raw-tracepoint".into(),
        why: Some("fentry unavailable: load refused".into()),
    });
    let report = build(&feed.model, &info);
    let text = text::render(&report, &TextOptions::default());
    assert_eq!(
        text.lines().nth(1),
        Some("backend: raw-tracepoint (fentry unavailable: load refused)")
    );
    let json: Value = serde_json::from_str(&json::render(&report)).unwrap();
    assert_eq!(json["backend"]["name"], "raw-tracepoint");
    assert_eq!(json["backend"]["why"], "fentry unavailable: load refused");

    let replayed = report_of(&feed);
    assert!(!text::render(&replayed, &TextOptions::default()).contains("backend:"));
    let json: Value = serde_json::from_str(&json::render(&replayed)).unwrap();
    assert!(json.get("backend").is_none());
}

/// An exited process is compacted (its statistics to their summaries, its layout to a frozen
/// copy of what it made, its timeline shared): its report must say what it said just before.
#[test]
fn an_exited_forked_child_reports_what_it_did_before_its_exit() {
    const PARENT: u32 = 700;
    const CHILD: u32 = 701;
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, JIT_BASE, 4 * MIB, RW)
        .fork(PARENT, CHILD, false, false)
        .mmap_anon(CHILD, JIT_BASE + 8 * MIB, 2 * MIB, RW)
        .mmap_anon(CHILD, JIT_BASE + 16 * MIB, 64 * KIB, RW)
        .mmap_anon(CHILD, JIT_BASE + 24 * MIB, 3 * (4 * KIB), RW)
        .munmap(CHILD, JIT_BASE + 24 * MIB, 4 * KIB)
        .mprotect(CHILD, JIT_BASE + 16 * MIB, 4 * KIB, PROT_NONE)
        .memfd_create(CHILD, "doublemapper", 78, 5)
        .mmap_memfd(CHILD, JIT_BASE + 32 * MIB, MIB, RW, ("doublemapper", 78, 5))
        .close(CHILD, 5)
        .syscall(
            CHILD,
            Syscall::Mmap,
            [0, (4 * KIB), RW, ANON, u64::MAX, 0],
            -ENOMEM,
        );
    let child = |feed: &Feed| -> Value {
        let report: Value = serde_json::from_str(&json::render(&report_of(feed))).unwrap();
        report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|process| process["pid"] == CHILD)
            .unwrap()
            .clone()
    };
    let before = child(&feed);
    feed.exit(CHILD, 0);
    let after = child(&feed);
    assert_eq!(after["alive"], false);
    for field in [
        "syscalls",
        "distributions",
        "unreleased",
        "brk",
        "allocated_by_stack",
        "anomalies",
        "execs",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["syscalls"]["mmap"]["calls"], 5);
    assert_eq!(after["syscalls"]["mmap"]["failed"], 1);
    assert_eq!(after["distributions"]["mmap_size"]["count"], 4);
    // Its layout is what it made; its parent's 4 MiB is the parent's.
    let layout: Vec<u64> = after["layout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|region| region["start"].as_u64().unwrap())
        .collect();
    assert!(!layout.contains(&JIT_BASE));
    assert!(layout.contains(&(JIT_BASE + 32 * MIB)));
    // The same report when asked twice: reading a frozen layout changes nothing.
    assert_eq!(child(&feed), after);
}

/// The streamed JSON must be the rendered report, byte for byte: with findings, several
/// processes, a live session's backend, and `--pid`.
#[test]
fn streamed_json_is_the_rendered_report() {
    let mut sshd = sshd_bash_feed(Abi::I386);
    sshd.exit(BASH, 0);
    let nothing = ExitedPrograms::default();
    let (children, folded) = folded_children_feed(2);
    let feeds = [
        (doublemapper_feed(), &nothing),
        (anon_leak_feed(), &nothing),
        (sshd, &nothing),
        (Feed::new(), &nothing),
        (two_containers_feed(), &nothing),
        (children, &folded),
    ];
    for (feed, exited) in &feeds {
        let mut info = session(feed.model.events());
        for backend in [None, Some("raw-tracepoint")] {
            info.backend = backend.map(|name| crate::report::BackendInfo {
                name: name.to_owned(),
                why: Some("no fentry here".to_owned()),
            });
            for pids in [vec![], vec![BASH], vec![12345], vec![CHILDREN]] {
                let mut report =
                    crate::report::build_with(&feed.model, exited, &info, &mut NoNames);
                report.filter_pids(&pids);
                let mut streamed = Vec::new();
                crate::report::stream::write_json(
                    &feed.model,
                    exited,
                    &info,
                    &mut NoNames,
                    &pids,
                    &mut streamed,
                )
                .unwrap();
                assert_eq!(String::from_utf8(streamed).unwrap(), json::render(&report));
            }
        }
    }
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

#[test]
fn processes_are_grouped_by_cgroup() {
    let report = report_of(&two_containers_feed());
    let groups: Vec<(&str, &[u32], u64)> = report
        .cgroups
        .iter()
        .map(|g| (g.cgroup.as_str(), g.pids.as_slice(), g.unreleased_bytes))
        .collect();
    assert_eq!(
        groups,
        [
            ("/pod/app", &[700, 701][..], 6 * MIB),
            ("/user.slice", &[900][..], 0)
        ]
    );
    let value: Value = serde_json::from_str(&json::render(&report)).unwrap();
    assert_eq!(value["cgroups"][0]["pids"], serde_json::json!([700, 701]));
    // Text: a heading per cgroup, each followed by its own processes.
    let text = text::render(&report, &TextOptions::default());
    let app = text.find("cgroup /pod/app: 2 processes").expect(&text);
    let host = text.find("cgroup /user.slice: 1 process").expect(&text);
    let pid = |pid: u32| text.find(&format!("\npid {pid} ")).expect(&text);
    assert!(
        app < pid(700) && pid(701) < host && host < pid(900),
        "{text}"
    );
    // One cgroup on the host alone needs no heading.
    let host_only = report_of(&anon_leak_feed());
    let text = text::render(&host_only, &TextOptions::default());
    assert!(!text.contains("\ncgroup "), "{text}");
}

/// The parent of [`folded_children_feed`]'s children, and the first child's pid.
const SPAWNER: u32 = 600;
const CHILDREN: u32 = 601;

/// A spawner starting ten children one after the other: each maps 2 MiB it never unmaps
/// (a finding), a 64 KiB block it frees, and exits 0 (the sixth is killed by signal 9). The
/// exited children past the `keep` most recent are folded.
fn folded_children_feed(keep: usize) -> (Feed, ExitedPrograms) {
    let mut feed = Feed::new();
    feed.comm = "spawner";
    let mut exited = ExitedPrograms::new(ReportOptions::default(), Vec::new());
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

fn folded_report(feed: &Feed, exited: &ExitedPrograms) -> Report {
    crate::report::build_with(
        &feed.model,
        exited,
        &session(feed.model.events()),
        &mut NoNames,
    )
}

#[test]
fn exited_processes_past_the_most_recent_are_folded_by_program() {
    let (feed, exited) = folded_children_feed(2);
    let report = folded_report(&feed, &exited);
    // Listed in full: the spawner, the first child (the example of its finding), the last two.
    let pids: Vec<u32> = report.processes.iter().map(|process| process.pid).collect();
    assert_eq!(pids, [SPAWNER, CHILDREN, CHILDREN + 8, CHILDREN + 9]);
    assert_eq!(feed.model.process_count(), 4);
    assert_eq!(report.exited.len(), 1, "{:#?}", report.exited);
    let program = &report.exited[0];
    assert_eq!(program.processes, 7);
    assert_eq!(
        (program.first_pid, program.last_pid),
        (CHILDREN + 1, CHILDREN + 7)
    );
    assert_eq!(program.comm, "spawner");
    let exits: Vec<(Option<i32>, Option<i32>, u64)> = program
        .exits
        .iter()
        .map(|exit| (exit.code, exit.signal, exit.processes))
        .collect();
    assert_eq!(exits, [(Some(0), None, 6), (None, Some(9), 1)]);
    // Each child's own syscalls, summed: 2 mmaps and a munmap each.
    assert_eq!(program.syscalls.mmap.calls, 14);
    assert_eq!(program.syscalls.munmap.calls, 7);
    // What they still had mapped at exit: their own 2 MiB each (the inherited 1 MiB is the
    // spawner's).
    assert_eq!(program.unreleased.total_regions, 7);
    assert_eq!(program.unreleased.total_bytes, 14 * MIB);
    assert_eq!(program.unreleased.groups.len(), 1);
    assert!(program.unreleased.groups[0].regions.is_empty());
    // The example's finding tells how many folded processes had the same.
    let kinds: Vec<FindingKind> = program.findings.iter().map(|f| f.kind).collect();
    assert!(!kinds.is_empty(), "{program:#?}");
    for folded in &program.findings {
        assert_eq!((folded.processes, folded.example_pid), (7, CHILDREN));
        let example = report
            .findings
            .iter()
            .find(|finding| finding.pid == CHILDREN && finding.kind == folded.kind)
            .expect("the example's finding");
        assert_eq!(example.also_in_folded, Some(7));
        assert!(
            example.message.contains("7 more exited processes"),
            "{}",
            example.message
        );
    }
    // The last two listed children had the finding too; theirs say nothing of folding.
    assert!(report
        .findings
        .iter()
        .filter(|finding| finding.pid > CHILDREN)
        .all(|finding| finding.also_in_folded.is_none()));
    // Their cgroup counts them, and what they held at exit.
    let cgroup = &report.cgroups[0];
    assert_eq!(cgroup.folded_processes, 7);
    assert_eq!(cgroup.pids.len(), 4);
    assert!(cgroup.unreleased_bytes >= 14 * MIB + 3 * 2 * MIB);
    let text = text::render(&report, &TextOptions::default());
    assert!(text.contains("(and 7 exited, folded by program)"), "{text}");
    assert!(
        text.contains("Exited processes folded by program"),
        "{text}"
    );
    assert!(
        text.contains("exited 0 ×6, killed by signal 9 ×1"),
        "{text}"
    );
    // The stack formats have the folded processes too, under a root of their own; what they
    // held at exit was made without a sampled stack here.
    let folded = crate::report::export::collapsed::render(&report);
    assert!(
        folded.contains(&format!(
            "spawner (7 exited, folded);[no call stack sampled] {}\n",
            14 * MIB
        )),
        "{folded}"
    );
    assert!(!crate::report::export::pprof::render(&report)
        .unwrap()
        .is_empty());
    // `--pid` reports the chosen processes only.
    let mut chosen = report.clone();
    chosen.filter_pids(&[CHILDREN + 9]);
    assert!(chosen.exited.is_empty());
    assert_eq!(chosen.cgroups[0].folded_processes, 0);
}

#[test]
fn folding_keeps_what_was_asked_for_and_the_most_recent() {
    // Keeping more than ran folds nothing.
    let (feed, exited) = folded_children_feed(64);
    let report = folded_report(&feed, &exited);
    assert_eq!(report.processes.len(), 11);
    assert!(report.exited.is_empty());
    assert!(report.findings.iter().all(|f| f.also_in_folded.is_none()));
    // Nothing kept: all but the example go.
    let (feed, exited) = folded_children_feed(0);
    let report = folded_report(&feed, &exited);
    assert_eq!(report.processes.len(), 2);
    assert_eq!(report.exited[0].processes, 9);
    assert_eq!(exited.folded_processes(), 9);
    // Processes asked for (`replay --pid`) are never folded.
    let mut feed = Feed::new();
    let mut exited = ExitedPrograms::new(ReportOptions::default(), vec![CHILDREN + 3]);
    for child in 0..5 {
        feed.fork(SPAWNER, CHILDREN + child, false, false)
            .exit(CHILDREN + child, 0);
        let step_ns = feed.model.timeline_step_ns();
        feed.model
            .fold_exited(0, &mut |view| exited.fold(view, step_ns));
    }
    let report = folded_report(&feed, &exited);
    let pids: Vec<u32> = report.processes.iter().map(|process| process.pid).collect();
    assert_eq!(pids, [SPAWNER, CHILDREN + 3]);
    assert_eq!(report.exited[0].processes, 4);
}
