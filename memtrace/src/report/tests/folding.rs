//! Exited processes folded by program.

use super::*;

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
    let mut exited = FoldedPrograms::new(ReportOptions::default(), vec![CHILDREN + 3]);
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
