//! Processes' own reports: an exited child's, and grouping by cgroup.

use super::*;

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
