//! Strings the traced program controls never reach root's terminal raw (issue #29, row 3): a
//! program whose comm, memfd name and mapped file name hold escape sequences and newlines
//! (tests/programs/hostile.c), traced with every text output on. Each output holds no control
//! byte but the newlines and tabs memtrace itself writes, and the strings are visible, escaped
//! as strace escapes them. Also the warnings: escaped, and at most ten per kind with a count.

use std::{fs, process::Command};

use memtrace_tests::{memtrace_bin, program, require_root, Abi, Runtime, Scratch};
use rstest::rstest;

/// No byte below 0x20 but newline and tab, no DEL, no C1 control (CSI as U+009B), no
/// bidirectional override.
#[track_caller]
fn assert_no_control(name: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (line_number, line) in text.lines().enumerate() {
        let bad: Vec<char> = line
            .chars()
            .filter(|&c| {
                let c = c as u32;
                (c < 0x20 && c != 0x09)
                    || (0x7f..=0x9f).contains(&c)
                    || (0x202a..=0x202e).contains(&c)
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{name}, line {}: control characters {bad:?} in {line:?}",
            line_number + 1
        );
    }
    assert!(!bytes.contains(&0x1b), "{name}: a raw ESC");
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn no_output_passes_a_control_character_through(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("hostile-{}", abi.name()));
    let hostile = program("hostile", abi, Runtime::Libc);
    let files = scratch.file("files");
    fs::create_dir(&files).unwrap();
    let text = scratch.file("report.txt");
    let folded = scratch.file("folded.txt");
    let recording = scratch.file("rec.mtr");
    let output = Command::new(memtrace_bin())
        .args(["--events", "--interval", "0.2", "--show-layout"])
        .args(["-o", text.to_str().unwrap()])
        .args(["--folded", folded.to_str().unwrap()])
        .args(["--record", recording.to_str().unwrap()])
        .arg("--")
        .arg(&hostile)
        .args(["names", files.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report = fs::read(&text).unwrap();
    let collapsed = fs::read(&folded).unwrap();
    assert_no_control("the text report", &report);
    assert_no_control("--folded", &collapsed);
    assert_no_control("--events and --interval (stderr)", &output.stderr);
    assert_no_control("stdout", &output.stdout);

    // The strings are there, escaped: nothing was dropped.
    let report = String::from_utf8_lossy(&report);
    let memfd = r"\x1b]0;owned\x07\x1b[2J\nFindings: none\n  [leak] forged\r\x7f";
    let comm = r"\x1b[2J\n[x]\x1b]0;t\x07";
    assert!(report.contains(&format!("({comm})")), "{report}");
    assert!(report.contains(&format!("memfd:{memfd}")), "{report}");
    // The byte 0x9b that ends the names is not UTF-8 on its own: it arrives replaced (U+FFFD).
    assert!(
        report.contains(&format!("{memfd}\u{fffd}.so")),
        "the mapped file: {report}"
    );
    // The report's own lines are still its own: one findings heading, no forged one (the
    // summary's "Findings: 1 (...)" line is the report's own).
    assert_eq!(report.matches("\nFindings\n").count(), 1, "{report}");
    assert!(
        !report.lines().any(|line| line == "Findings: none"),
        "{report}"
    );
    assert!(!report
        .lines()
        .any(|line| line.starts_with("  [leak] forged")));
    // --events: in memfd_create's argument and in the next mmap's descriptor annotation.
    assert!(
        stderr.contains(&format!("memfd_create(\"{memfd}")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("</memfd:{memfd}")), "{stderr}");
    // --interval names the process by its comm.
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("pid ") && line.contains(comm)),
        "{stderr}"
    );
    let collapsed = String::from_utf8_lossy(&collapsed);
    // `;` separates frames there: the comm's own is shown as `:`.
    assert!(collapsed.contains(&comm.replace(';', ":")), "{collapsed}");

    // The recording replays to the same escaped outputs.
    let replayed = Command::new(memtrace_bin())
        .args([
            "replay",
            recording.to_str().unwrap(),
            "--events",
            "--interval",
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(replayed.status.success(), "{replayed:?}");
    assert_no_control("replay's report (stdout)", &replayed.stdout);
    assert_no_control("replay's --events and --interval", &replayed.stderr);
    assert!(String::from_utf8_lossy(&replayed.stderr).contains(&format!("</memfd:{memfd}")));
}

/// A program re-exec'ing fast makes memtrace warn at each exec (the image is gone before it is
/// read): the warnings are escaped, at most ten are shown, and one line counts the rest.
#[test]
fn repeated_warnings_are_escaped_and_counted() {
    require_root();
    let scratch = Scratch::new("hostile-reexec");
    let hostile = program("hostile", Abi::X86_64, Runtime::Libc);
    let output = Command::new(memtrace_bin())
        .args(["-o", "/dev/null", "--"])
        .arg(&hostile)
        .args(["reexec", scratch.path().to_str().unwrap(), "200"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_no_control("stderr", &output.stderr);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings = stderr
        .lines()
        .filter(|line| line.starts_with("[WARN") && line.contains("exec layout incomplete"))
        .count();
    let execs: u64 = stderr
        .split("could not be rebuilt")
        .next()
        .and_then(|before| before.rsplit("made at ").next())
        .and_then(|count| count.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of unreadable execs in {stderr}"));
    assert!(execs > 10, "only {execs} execs warned of: {stderr}");
    assert_eq!(warnings, 10, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} more warnings like the 10 above not shown ({execs} in all",
            execs - 10
        )),
        "{stderr}"
    );
    assert!(stderr.contains(r"\x1b]0;owned\x07"), "{stderr}");
}
