//! The session summary and the ranking: steady growth first, then memory held; the first
//! rows kept and the rest summed, the same whether ranked whole or as the processes go by.

use super::*;
use crate::report::ranking::{self, RankingBuilder};

/// `count` processes, process `i` holding `i + 1` × 64 KiB of its own anonymous memory.
fn holders(count: u32) -> Feed {
    let mut feed = Feed::new();
    for index in 0..count {
        let pid = 100 + index;
        feed.mmap_anon(
            pid,
            JIT_BASE + u64::from(index) * 64 * MIB,
            u64::from(index + 1) * 64 * KIB,
            RW,
        );
    }
    feed
}

#[test]
fn the_largest_holders_rank_first_and_the_rest_is_summed() {
    let mut report = report_of(&holders(30));
    report.rank(5);
    let pids: Vec<Option<u32>> = report.ranking.rows.iter().map(|row| row.pid).collect();
    assert_eq!(
        pids,
        [Some(129), Some(128), Some(127), Some(126), Some(125)]
    );
    assert_eq!(report.ranking.total_rows, 30);
    let rest = &report.ranking.rest;
    assert_eq!((rest.rows, rest.processes), (25, 25));
    // 1 + … + 25 blocks of 64 KiB.
    assert_eq!(rest.held_bytes, 25 * 26 / 2 * 64 * KIB);
    let listed: u64 = report.ranking.rows.iter().map(|row| row.held_bytes).sum();
    assert_eq!(listed + rest.held_bytes, report.summary.live.held_bytes);
    assert_eq!(report.summary.live.processes, 30);
}

#[test]
fn steady_growth_ranks_above_what_others_hold() {
    let mut feed = holders(5);
    // Pid 200 holds least but grows 1 MiB every 100 ms for 4 s.
    for step in 0..40u64 {
        feed.time_ns += 100_000_000;
        feed.mmap_anon(200, 0x7e00_0000_0000 + step * 2 * MIB, MIB, RW);
    }
    let report = report_of(&feed);
    let top = &report.ranking.rows[0];
    assert_eq!(top.pid, Some(200));
    assert!(top.growing_bytes_per_s > 0);
    assert_eq!(top.findings, [FindingKind::Growing]);
    assert!(top.change_bytes >= 39 * MIB as i64, "{top:#?}");
    assert!(top.bytes_per_s.is_some_and(|rate| rate > 0));
}

/// The streamed JSON ranks while it holds only a few rows: cutting as it goes loses nothing.
#[test]
fn ranking_as_the_processes_go_by_is_ranking_them_whole() {
    let report = report_of(&holders(200));
    let (_, whole) = ranking::of(&report.processes, &[], &report.findings, 0, usize::MAX);
    for limit in [0, 1, 7, 64, 199, 200] {
        let mut builder = RankingBuilder::new(limit, 0);
        for process in &report.processes {
            builder.add_process(process, &report.findings);
        }
        let (summary, cut) = builder.finish();
        assert_eq!(cut.rows[..], whole.rows[..limit.min(200)], "limit {limit}");
        assert_eq!(cut.rest.rows as usize, 200 - limit.min(200));
        assert_eq!(summary.live.processes, 200);
        let listed: u64 = cut.rows.iter().map(|row| row.held_bytes).sum();
        assert_eq!(listed + cut.rest.held_bytes, summary.live.held_bytes);
    }
}

#[test]
fn a_folded_program_ranks_as_its_average_process() {
    let (children, folded) = folded_children_feed(2);
    let report = crate::report::build_with(
        &children.model,
        &folded,
        &session(children.model.events()),
        &mut NoNames,
    );
    let row = report
        .ranking
        .rows
        .iter()
        .find(|row| row.pid.is_none())
        .expect("a folded row");
    assert!(row.processes > 1);
    assert_eq!(row.map_count, None);
    assert_eq!(report.summary.exited.folded_programs, 1);
    assert_eq!(report.summary.exited.folded_processes, row.processes);
}

#[test]
fn the_text_opens_on_the_summary_and_details_the_table() {
    let mut report = report_of(&holders(30));
    report.rank(5);
    let text = text::render(&report, &TextOptions::default());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[2].starts_with("Session: "), "{text}");
    assert!(text.contains("Processes by steady growth, then memory held: 5 of 30"));
    assert!(text.contains("  … 25 more (25 processes): held "), "{text}");
    // The five of the table, in brief.
    assert_eq!(
        text.lines().filter(|line| line.starts_with("pid ")).count(),
        5
    );
    assert!(text.contains("  mapped by kind: anon "), "{text}");
    assert!(!text.contains("  kind   regions"), "{text}");
    // --all: every process, in full.
    let all = text::render(
        &report,
        &TextOptions {
            all: true,
            ..TextOptions::default()
        },
    );
    assert_eq!(
        all.lines().filter(|line| line.starts_with("pid ")).count(),
        30
    );
    assert!(all.contains("  kind   regions"));
}

/// A comm is the traced program's to choose: the table shows it escaped, as every line does.
#[test]
fn the_table_escapes_what_the_traced_program_named() {
    let mut feed = Feed::new();
    feed.comm = "evil\x1b[2J";
    feed.mmap_anon(9, JIT_BASE, MIB, RW);
    let text = text::render(&report_of(&feed), &TextOptions::default());
    let row = text
        .lines()
        .find(|line| line.trim_start().starts_with("9 "))
        .unwrap();
    assert!(row.contains("evil\\x1b[2J"), "{row}");
}
