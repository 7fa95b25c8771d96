//! A daemon spawning short-lived children all day: past the most recent exits
//! (`--keep-exited`), exited processes are folded into one entry per program, so that
//! memtrace's memory and its report follow what runs now. Folding depends on the events
//! alone: a replay folds what the live session folded.

use memtrace_tests::{memtrace_json, program, replay_json, require_root, Abi, Runtime, Scratch};
use serde_json::Value;

const CHILDREN: u64 = 40;
const KEEP: u64 = 5;
const MIB: u64 = 1 << 20;

fn spawned_by<'r>(report: &'r Value, spawner: &str) -> Vec<&'r Value> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|process| process["exe"] == spawner)
        .collect()
}

fn spawner_session(abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("folding-{}", abi.name()));
    let spawner = program("spawner", abi, Runtime::Libc);
    let spawner_path = spawner.to_str().unwrap();
    let recording = scratch.file("session.mtr");
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--keep-exited",
            &KEEP.to_string(),
            "--record",
            recording.to_str().unwrap(),
            "--",
            spawner_path,
            &CHILDREN.to_string(),
        ],
    );
    run.assert_success();
    let report = run.report();

    // Listed in full: the spawner, its first child (the example of the finding every child
    // has: 2 MiB never unmapped), and the five most recent exits: the spawner's own (last)
    // and its last four children's.
    let listed = spawned_by(report, spawner_path);
    assert_eq!(listed.len() as u64, 1 + KEEP, "{report:#}");
    let parent = listed[0]["pid"].as_u64().unwrap();
    let children: Vec<u64> = listed[1..]
        .iter()
        .map(|process| process["pid"].as_u64().unwrap())
        .collect();
    let example = children[0];

    let exited = report["exited"].as_array().unwrap();
    assert_eq!(exited.len(), 1, "{exited:#?}");
    let folded = &exited[0];
    let count = CHILDREN - 1 - (KEEP - 1);
    assert_eq!(folded["exe"], spawner_path);
    assert_eq!(folded["processes"], count);
    // Children 1..=35: odd ones exit 1, even ones 0.
    let exits: Vec<(u64, u64)> = folded["exits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|exit| {
            (
                exit["code"].as_u64().unwrap(),
                exit["processes"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sorted = exits.clone();
    sorted.sort();
    assert_eq!(sorted, [(0, count / 2), (1, count / 2 + 1)], "{exits:?}");
    // Each child's own calls: its 2 MiB and its scratch buffer; the scratch freed.
    assert!(folded["syscalls"]["mmap"]["calls"].as_u64().unwrap() >= 2 * count);
    assert_eq!(
        folded["syscalls"]["munmap"]["calls"].as_u64().unwrap(),
        count
    );
    let unreleased = &folded["unreleased"];
    let anon: Vec<&Value> = unreleased["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|group| group["kind"] == "anon")
        .collect();
    let anon_bytes: u64 = anon.iter().map(|g| g["bytes"].as_u64().unwrap()).sum();
    assert!(
        anon_bytes >= 2 * MIB * count && anon_bytes < 3 * MIB * count,
        "{anon:#?}"
    );
    // The folded call sites are named at the end, as a listed process's are.
    if abi == Abi::X86_64 {
        let site = unreleased["by_stack"]
            .as_array()
            .unwrap()
            .iter()
            .find(|site| {
                site["call_site"]
                    .as_str()
                    .unwrap()
                    .starts_with("leak_block")
            })
            .unwrap_or_else(|| panic!("no leak_block call site: {unreleased:#}"));
        assert_eq!(site["count"], count, "{site:#}");
        assert_eq!(site["bytes"], 2 * MIB * count);
    }
    // The example's finding tells how many folded children had the same.
    let findings = report["findings"].as_array().unwrap();
    let example_finding = findings
        .iter()
        .find(|f| f["pid"] == example && f["kind"] == "unreleased-anon")
        .unwrap_or_else(|| panic!("no finding for the example {example}: {findings:#?}"));
    assert_eq!(example_finding["also_in_folded"], count);
    let folded_findings = folded["findings"].as_array().unwrap();
    assert!(folded_findings
        .iter()
        .any(|f| f["kind"] == "unreleased-anon"
            && f["processes"] == count
            && f["example_pid"] == example));
    let cgroup_folded: u64 = report["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["folded_processes"].as_u64().unwrap())
        .sum();
    assert_eq!(cgroup_folded, count);

    // The replay folds the same: the same processes listed, the same folded entry, the same
    // findings.
    let keep = KEEP.to_string();
    let stacks = scratch.file("stacks.folded");
    let (output, replayed) = replay_json(
        &scratch,
        &recording,
        &["--keep-exited", &keep, "--folded", stacks.to_str().unwrap()],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pids = |report: &Value| -> Vec<u64> {
        report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|process| process["pid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(pids(&replayed), pids(report));
    assert_eq!(replayed["exited"], report["exited"]);
    assert_eq!(replayed["findings"], report["findings"]);
    // The collapsed stacks have the folded children under a root of their own.
    let stacks = std::fs::read_to_string(&stacks).unwrap();
    let root = format!(
        "{} ({count} exited, folded);",
        folded["comm"].as_str().unwrap()
    );
    let folded_lines: Vec<&str> = stacks.lines().filter(|l| l.starts_with(&root)).collect();
    let held: u64 = folded_lines
        .iter()
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(held >= 2 * MIB * count, "{stacks}");
    if abi == Abi::X86_64 {
        assert!(
            folded_lines
                .iter()
                .any(|line| line.ends_with(&format!("leak_block {}", 2 * MIB * count))),
            "{stacks}"
        );
    }
    // Kept all, nothing folds.
    let (_, all) = replay_json(&scratch, &recording, &["--keep-exited", "1000"]);
    let everyone = spawned_by(&all, spawner_path);
    assert_eq!(everyone.len() as u64, 1 + CHILDREN);
    assert!(all["exited"].as_array().unwrap().is_empty());
    // A folded child asked for (`--pid`) is reported in full, and nothing is folded.
    let folded_child = everyone
        .iter()
        .map(|process| process["pid"].as_u64().unwrap())
        .find(|pid| *pid != parent && !children.contains(pid))
        .unwrap();
    let (_, chosen) = replay_json(
        &scratch,
        &recording,
        &["--keep-exited", &keep, "--pid", &folded_child.to_string()],
    );
    assert_eq!(pids(&chosen), [folded_child]);
    assert!(chosen["exited"].as_array().unwrap().is_empty());
    let child = &chosen["processes"][0];
    assert!(child["unreleased"]["total_bytes"].as_u64().unwrap() >= 2 * MIB);
}

#[test]
fn a_spawners_exited_children_are_folded_by_program_64_bit() {
    spawner_session(Abi::X86_64);
}

#[test]
fn a_spawners_exited_children_are_folded_by_program_32_bit() {
    spawner_session(Abi::I386);
}

/// Real programs: a shell running /bin/true again and again.
#[test]
fn a_shells_short_lived_commands_are_folded_and_the_text_says_so() {
    require_root();
    let scratch = Scratch::new("folding-shell");
    let text = scratch.file("report.txt");
    let output = std::process::Command::new(memtrace_tests::memtrace_bin())
        .args([
            "--follow",
            "--keep-exited",
            "3",
            "-o",
            text.to_str().unwrap(),
            "--",
        ])
        .args([
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 30 ]; do /bin/true; i=$((i+1)); done",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&text).unwrap();
    let header = text.lines().next().unwrap();
    // The three most recent exits listed (sh's, last, and two of true's); the other 28 folded.
    assert!(
        header.contains("3 processes (and 28 exited, folded by program)"),
        "{text}"
    );
    assert!(
        text.contains("Exited processes folded by program"),
        "{text}"
    );
    let folded = text
        .lines()
        .find(|line| line.starts_with("true "))
        .unwrap_or_else(|| panic!("no folded entry for true:\n{text}"));
    // The whole report on failure: a second `true` group (another cgroup) says why.
    assert!(folded.contains("/true: 28 processes"), "{folded}\n{text}");
    assert!(text.contains("exited 0 ×28"), "{text}");
}
