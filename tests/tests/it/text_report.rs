//! The text report, whole, for the demo's workloads (the three incidents of
//! shared/docs/scenarios.md: tests/programs/doublemapper.c, bigalloc.c and brk_starve.c), in
//! both ABIs. A `contains` check passes whatever else the report says; a snapshot
//! (tests/tests/it/snapshots/) shows every changed line.
//!
//! What differs from run to run is redacted, and nothing else: pids, addresses (ASLR), times
//! since the exec, the test's own paths, the room above a heap that only ASLR bounds, and the header's event count (it includes the process's container
//! identity, read from /proc only if the process is still alive when memtrace looks: 103 or
//! 104 events for doublemapper, about one run in fifteen). The backend is forced, so the report is the same whether or not fentry
//! loads on the machine.
//!
//! After a deliberate change to the report: `INSTA_UPDATE=always cargo xtask test -- text_report`
//! rewrites the snapshots (or `cargo insta review` with cargo-insta installed), and `git diff`
//! shows what changed. Under CI=true a differing report fails and nothing is written.

use memtrace_tests::{program, programs_dir, require_root, Abi, Runtime, Scratch};
use rstest::rstest;

/// The report's values that vary between runs of the same workload, as (regex, replacement).
const REDACTIONS: [(&str, &str); 7] = [
    (
        r"(?m)^memtrace live: \d+ events",
        "memtrace live: [EVENTS] events",
    ),
    (r"(?m)^Session: \d+(\.\d+)?s\.", "Session: [DURATION]."),
    // The ranked table: its pid column (right-aligned, as wide as the widest pid) and rows.
    (r"(?m)^ +pid  name ", "    pid  name "),
    (r"(?m)^ +\d+  ([^ ])", "  [PID]  $1"),
    (r"pid \d+", "pid [PID]"),
    // 32-bit addresses have 8 digits; short values (personality 0x0) are not addresses.
    (r"0x[0-9a-f]{5,}", "[ADDR]"),
    (r"\+\d+\.\d{6}s", "[TIME]"),
];

/// Lines a known race adds: memtrace reads a process's container identity from /proc when it
/// first handles one of its events; a process that has already exited (a zombie) still has
/// its status and cgroup, but not its root, and the empty root is taken for a container's
/// (memtrace/src/procfs.rs, `container_identity`). About one run in fifteen of these
/// short-lived workloads. Removed here, and only in this exact shape (cgroup "/", empty root),
/// until that is fixed; then these filters go.
const EXITED_PROCESS_TAKEN_FOR_A_CONTAINER: [(&str, &str); 2] = [
    (r"(?m)^cgroup /: .*\n\n", ""),
    (
        r"(?m)^  container: pid \[PID\] in its namespace, cgroup /, root \n",
        "",
    ),
];

/// A heap bounded by whatever mapping ASLR put above it has room of that random distance.
const ASLR_ROOM: (&str, &str) = (
    r"room \d+(\.\d+)? [GT]iB \(\d+(\.\d+)? [GT]iB left\)",
    "room [ASLR GAP]",
);

/// Runs memtrace on `exe ARGS` (on the raw tracepoints) and returns its text report with the
/// test's own paths named.
#[track_caller]
fn text_report(scratch: &Scratch, exe: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(memtrace_tests::memtrace_bin())
        .args(["--backend", "raw-tracepoint", "--"])
        .arg(exe)
        .args(args)
        .output()
        .expect("running memtrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "memtrace failed: {stderr}");
    assert!(stderr.is_empty(), "memtrace warned: {stderr}");
    String::from_utf8(output.stdout)
        .expect("the text report is UTF-8")
        .replace(scratch.path().to_str().unwrap(), "[SCRATCH]")
        .replace(programs_dir().to_str().unwrap(), "[PROGRAMS]")
}

#[track_caller]
fn assert_report(name: &str, report: &str, aslr_room: bool) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (regex, replacement) in REDACTIONS {
        settings.add_filter(regex, replacement);
    }
    if aslr_room {
        settings.add_filter(ASLR_ROOM.0, ASLR_ROOM.1);
    }
    for (regex, replacement) in EXITED_PROCESS_TAKEN_FOR_A_CONTAINER {
        settings.add_filter(regex, replacement);
    }
    settings.bind(|| insta::assert_snapshot!(name, report));
}

/// .NET's W^X double mapping: 8 memfds mapped rw and r-x, the fds closed, the views kept.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn doublemapper(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("text-doublemapper-{}", abi.name()));
    let maps = scratch.file("maps");
    let exe = program("doublemapper", abi, Runtime::Libc);
    let report = text_report(&scratch, &exe, &["8", maps.to_str().unwrap()]);
    assert_report(&format!("doublemapper-{}", abi.name()), &report, true);
}

/// Six 16 MiB blocks allocated and never freed.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn bigalloc(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("text-bigalloc-{}", abi.name()));
    let maps = scratch.file("maps");
    let exe = program("bigalloc", abi, Runtime::Libc);
    let report = text_report(&scratch, &exe, &["6", maps.to_str().unwrap()]);
    assert_report(&format!("bigalloc-{}", abi.name()), &report, true);
}

/// A heap starved by a file mapped right above it: brk fails with room left elsewhere.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn brk_starve(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("text-brk-{}", abi.name()));
    let maps = scratch.file("maps");
    let blocker = scratch.file("blocker.dat");
    let exe = program("brk_starve", abi, Runtime::Libc);
    let report = text_report(
        &scratch,
        &exe,
        &[blocker.to_str().unwrap(), "20", maps.to_str().unwrap()],
    );
    assert_report(&format!("brk_starve-{}", abi.name()), &report, false);
}
