//! The JSON report: its schema, --pid, a report mid-stream, and the streamed form equal to the rendered one.

use super::*;

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
        .mmap_memfd(BASH, JIT_BASE + MIB, MIB, RX, ("doublemapper", 77, 9))
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
        assert_str(finding, "what_to_do");
        let message = finding["message"].as_str().unwrap();
        assert!(
            message.ends_with(finding["what_to_do"].as_str().unwrap()),
            "{message}"
        );
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
    // Held by a live process: state, no finding.
    assert!(early.processes[0].alive);
    assert_eq!(early.processes[0].unreleased.total_bytes, 2 * MIB);
    assert!(early.findings.is_empty(), "{:#?}", early.findings);
    let mut exited = Feed::new();
    exited.mmap_anon(1, JIT_BASE, 2 * MIB, RW).exit(1, 0);
    assert!(report_of(&exited)
        .findings
        .iter()
        .any(|finding| finding.kind == FindingKind::UnreleasedAnon));
    feed.munmap(1, JIT_BASE, 2 * MIB).exit(1, 0);
    let late = report_of(&feed);
    assert_eq!(late.processes[0].unreleased.total_bytes, 0);
    assert!(late.findings.is_empty());
}

/// The streamed JSON must be the rendered report, byte for byte: with findings, several
/// processes, a live session's backend, and `--pid`.
#[test]
fn streamed_json_is_the_rendered_report() {
    for (feed, exited) in &varied_sessions() {
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
                for rows in [crate::report::ranking::DEFAULT_ROWS, 1, usize::MAX] {
                    report.rank(rows);
                    let mut streamed = Vec::new();
                    crate::report::stream::write_json(
                        &feed.model,
                        exited,
                        &info,
                        &mut NoNames,
                        &pids,
                        rows,
                        &mut streamed,
                    )
                    .unwrap();
                    assert_eq!(String::from_utf8(streamed).unwrap(), json::render(&report));
                }
            }
        }
    }
}
