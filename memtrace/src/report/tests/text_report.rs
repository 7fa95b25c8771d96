//! The text report a person reads.

use super::*;

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

    let with_layout = text::render(
        &report,
        &TextOptions {
            show_layout: true,
            ..TextOptions::default()
        },
    );
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

/// The text report built with only the findings' evidence listed (what `memtrace` and
/// `memtrace replay` build for it, a million mappings without a second copy) is the one
/// built whole, in every way it is shown: the findings, the group rows' closed memfds and
/// the ranking read nothing the evidence leaves out.
#[test]
fn text_built_from_the_evidence_is_the_whole_reports() {
    for (feed, exited) in &varied_sessions() {
        let info = session(feed.model.events());
        let build = |detail| {
            crate::report::build_for(&feed.model, exited, &info, &mut NoNames, &[], detail)
        };
        let (whole, evidence) = (build(Detail::Whole), build(Detail::Evidence));
        for all in [false, true] {
            let options = TextOptions {
                show_layout: false,
                all,
            };
            assert_eq!(
                text::render(&evidence, &options),
                text::render(&whole, &options)
            );
        }
    }
}
