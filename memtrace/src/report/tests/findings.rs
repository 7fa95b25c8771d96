//! Findings: what each incident of shared/docs/scenarios.md must raise, and what must not.

use super::*;

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
