//! The kernel matrix of `cargo xtask test`: the smoke subset of the integration tests, run
//! inside a guest of each Debian kernel of [`vm_fetch::KERNELS`] (see vm.rs for the guests).
//!
//! The test binary is the one cargo already built for this machine (tests/tests/it), run in the
//! guest by path with exact test names: the guest shares this machine's root, so nothing is
//! rebuilt. A name that matches no test would run nothing and pass, so the matrix guards
//! itself twice: every name must be one the binary lists (checked here, before any guest
//! boots), and each run in a guest must report exactly as many tests as it was given.
//! At most two guests run at once: CI machines have two cores, and each guest is one emulated
//! machine (TCG) busy mostly in the verifier.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    cmd,
    vm::{self, Guest, GuestRun},
    vm_fetch::{self, Kernel, KERNELS},
    workspace::Workspace,
};

/// The integration-test binary (the `[[test]]` target of tests/Cargo.toml).
const TEST_TARGET: &str = "it";

/// The smoke subset: what differs between kernels (tracepoint prototypes, the verifier, struct
/// layouts, compat syscalls) and the features users rely on most. Run on each backend by force
/// (`MEMTRACE_BACKEND`): on the raw tracepoints, which every kernel has, and on fentry wherever
/// it must load ([`Kernel::fentry`]), so that neither backend is only tried through the other's
/// fallback.
const SMOKE_TESTS: &[&str] = &[
    // Exact counts in both ABIs: sys_exit (and sys_enter or sched_prepare_exec) and TS_COMPAT.
    "tracing::exact_counts::case_1_x86_64",
    "tracing::exact_counts::case_2_i386",
    // fork, exec across ABIs, exit.
    "tracing::a_32_bit_parent_execs_a_64_bit_child",
    // A failed exec, which 6.10 and later see only at its exit (no program at entry).
    "tracing::a_failed_exec_is_counted_with_its_file_name::case_1_x86_64",
    "tracing::a_failed_exec_is_counted_with_its_file_name::case_2_i386",
    // --pid attach.
    "tracing::attach_sees_what_a_sleeping_process_does_next",
    "layout::doublemapper::case_1_x86_64",
    "layout::doublemapper::case_2_i386",
    // #23's syscalls (SysV shm, ia32's ipc(2), the aio ring, pkeys, mseal where the kernel
    // has it) counted as strace counts them, on each backend.
    "mapping_ways::counts_equal_strace::case_1_x86_64",
    "mapping_ways::counts_equal_strace::case_2_i386",
];

/// The backends compared, once per kernel, with the default backend choice: where fentry
/// attaches (every Debian kernel booted here allows ftrace) the report must equal the raw
/// tracepoints' one; where it does not, auto must fall back and say why. Then kernel mode
/// (#11): its tracepoints' prototypes and `sched_process_exit`'s arity differ between kernels
/// (all four pass: 5.10 in 60 s, 6.1 32 s, 6.12 21 s of guest time).
const DEFAULT_BACKEND_TESTS: &[&str] = &[
    "backend::counts_on_both_backends::case_1_x86_64",
    "kernel_allocs::pipes_are_counted_once_and_replayed_alike::case_1_x86_64",
    "kernel_allocs::pipes_are_counted_once_and_replayed_alike::case_2_i386",
];

/// One invocation of the test binary in a guest.
struct SmokeRun {
    /// `KEY=VALUE` in front of the command, or nothing.
    environment: &'static str,
    tests: &'static [&'static str],
}

/// The invocations a guest of `kernel` makes, in order.
fn smoke_runs(kernel: &Kernel) -> Vec<SmokeRun> {
    let mut runs = vec![SmokeRun {
        environment: "MEMTRACE_BACKEND=raw-tracepoint",
        tests: SMOKE_TESTS,
    }];
    if kernel.fentry {
        runs.push(SmokeRun {
            environment: "MEMTRACE_BACKEND=fentry",
            tests: SMOKE_TESTS,
        });
    }
    runs.push(SmokeRun {
        environment: "",
        tests: DEFAULT_BACKEND_TESTS,
    });
    runs
}

/// Guests at once.
const PARALLEL_GUESTS: usize = 2;
/// One guest's whole run: boot, loading under emulation (minutes on a busy machine), the tests.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1500);

/// The kernels `cargo xtask test` boots when not told which: the whole matrix. Measured on a
/// 2-core machine shared with other work, two guests at once, with the smoke subset on both
/// backends where fentry loads: 5.10 120 s, 6.1 179 s, 6.12 122 s, 6.18 117 s, 7.2 95 s; 338 s
/// of wall time (with one test binary, 5.10 and 6.18 alone: 166 s and 130 s, 169 s of wall
/// time). What costs is the verifier under emulation, fentry most: keep an eye on it when the
/// programs grow (probes/kernel_differences.rs).
const DEFAULT_KERNELS: [&str; 5] = ["5.10", "6.1", "6.12", "6.18", "7.2"];

/// Which kernels `--kernels` selects: the default set, all of the matrix, some by label, or
/// none.
pub fn select(labels: &[String]) -> Result<Vec<&'static Kernel>> {
    if labels.is_empty() {
        return DEFAULT_KERNELS
            .iter()
            .map(|label| vm_fetch::find(label))
            .collect();
    }
    if labels.iter().any(|label| label == "all") {
        return Ok(KERNELS.iter().collect());
    }
    if labels.iter().any(|label| label == "none") {
        return Ok(Vec::new());
    }
    labels.iter().map(|label| vm_fetch::find(label)).collect()
}

/// Runs the smoke subset in a guest of each kernel; fails naming every kernel where it failed.
pub fn run(
    workspace: &Workspace,
    memtrace_binary: &Path,
    kernels: &[&'static Kernel],
) -> Result<()> {
    if kernels.is_empty() {
        cmd::step("kernel matrix: skipped (--kernels none)");
        return Ok(());
    }
    let binary = test_binary(workspace)?;
    check_names(&binary)?;
    let labels: Vec<&str> = kernels.iter().map(|kernel| kernel.label).collect();
    cmd::step(format!(
        "kernel matrix: the smoke subset in guests of Linux {} ({PARALLEL_GUESTS} at once)",
        labels.join(", ")
    ));

    // One at a time, before the guests start: downloads share one private apt directory, whose
    // lock a second apt-get would find taken.
    for kernel in kernels {
        vm_fetch::fetch(workspace, kernel)
            .with_context(|| format!("fetching Linux {}", kernel.label))?;
    }

    let queue = Mutex::new(kernels.iter().copied());
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..PARALLEL_GUESTS {
            scope.spawn(|| {
                while let Some(kernel) = next_kernel(&queue) {
                    let runs = smoke_runs(kernel);
                    let guest = Guest {
                        kernel,
                        command: smoke_command(&binary, &runs),
                        environment: vec![
                            (
                                "MEMTRACE_BIN".to_owned(),
                                memtrace_binary.display().to_string(),
                            ),
                            // The backend test then fails rather than falls back if fentry
                            // is refused where it must load (a verifier regression).
                            (
                                "MEMTRACE_EXPECT_FENTRY".to_owned(),
                                u8::from(kernel.fentry).to_string(),
                            ),
                        ],
                        timeout: GUEST_TIMEOUT,
                        output_prefix: format!("[{}] ", kernel.label),
                    };
                    let guest_started = Instant::now();
                    let mut outcome = vm::run_in_guest(workspace, &guest);
                    let mut rebooted = false;
                    // Emulated SMP guests rarely crash while the kernel patches its own code
                    // (seen once in 6.18: an int3 Oops in syscall_trace_enter as a tracepoint
                    // was switched on, under multi-threaded TCG). A guest that died before
                    // its command ended is booted once more, and says so; a test that failed
                    // reported its status and is never retried.
                    if let Err(error) = &outcome {
                        if error.is::<vm::GuestDied>() {
                            cmd::step(format!(
                                "{}the guest died ({error}); booting it once more",
                                guest.output_prefix
                            ));
                            outcome = vm::run_in_guest(workspace, &guest);
                            rebooted = true;
                        }
                    }
                    let elapsed = guest_started.elapsed();
                    let verdict = verdict(&runs, outcome, rebooted);
                    if let Ok(mut results) = results.lock() {
                        results.push((kernel, verdict, elapsed));
                    }
                }
            });
        }
    });

    let mut results = results.into_inner().unwrap_or_default();
    results
        .sort_by_key(|(kernel, _, _)| KERNELS.iter().position(|known| known.label == kernel.label));
    let mut failed = Vec::new();
    cmd::step(format!(
        "kernel matrix results ({} s in all):",
        started.elapsed().as_secs()
    ));
    for (kernel, verdict, elapsed) in &results {
        let verdict = match verdict {
            Ok(passed) => passed.clone(),
            Err(why) => {
                failed.push(kernel.label);
                format!("FAILED ({why})")
            }
        };
        println!(
            "  Linux {:5} {:36} {verdict} in {} s",
            kernel.label,
            kernel.package(),
            elapsed.as_secs()
        );
    }
    if !failed.is_empty() {
        bail!("the smoke tests failed on Linux {}", failed.join(", "));
    }
    Ok(())
}

/// A guest's verdict: what passed, or why it failed.
fn verdict(
    runs: &[SmokeRun],
    outcome: Result<GuestRun>,
    rebooted: bool,
) -> std::result::Result<String, String> {
    let guest_run = outcome.map_err(|error| format!("{error:#}"))?;
    if guest_run.status != 0 {
        return Err(format!("the tests exited with {}", guest_run.status));
    }
    check_counts(runs, &guest_run.output)?;
    let tests: usize = runs.iter().map(|run| run.tests.len()).sum();
    Ok(if rebooted {
        format!("passed, {tests} tests (on a second boot: the first guest died)")
    } else {
        format!("passed, {tests} tests")
    })
}

fn next_kernel<I: Iterator<Item = &'static Kernel>>(queue: &Mutex<I>) -> Option<&'static Kernel> {
    queue.lock().ok()?.next()
}

/// The integration-test binary, as cargo built it for this machine.
fn test_binary(workspace: &Workspace) -> Result<PathBuf> {
    let mut build = workspace.cargo();
    build.args([
        "test",
        "--package",
        "memtrace-tests",
        "--test",
        TEST_TARGET,
        "--no-run",
        "--message-format=json",
    ]);
    let output = cmd::read_stdout(&mut build).context("building the integration tests")?;
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["kind"] == serde_json::json!(["test"])
                && message["target"]["name"] == TEST_TARGET
        })
        .and_then(|message| message["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no test binary named {TEST_TARGET}"))
}

/// Fails, before any guest boots, if the matrix names a test the binary does not have (a
/// renamed or moved test would otherwise run nowhere).
fn check_names(binary: &Path) -> Result<()> {
    let listing =
        cmd::read_stdout(std::process::Command::new(binary).args(["--list", "--format", "terse"]))
            .context("listing the integration tests")?;
    let known: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .collect();
    let unknown: Vec<&str> = SMOKE_TESTS
        .iter()
        .chain(DEFAULT_BACKEND_TESTS)
        .copied()
        .filter(|name| !known.contains(name))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "the kernel matrix names tests that {} does not have (renamed or moved? update \
             xtask/src/vm_matrix.rs): {}",
            binary.display(),
            unknown.join(", ")
        );
    }
    Ok(())
}

/// The line the guest prints before each run: `xtask-smoke: run 1: 6 tests`.
const RUN_MARKER: &str = "xtask-smoke: run ";

/// One shell command that makes every run (each even after another failed, so a guest reports
/// everything) and exits non-zero if any failed. Each run is announced by a [`RUN_MARKER`]
/// line, so that [`check_counts`] can tell whose summary is whose.
fn smoke_command(binary: &Path, runs: &[SmokeRun]) -> Vec<OsString> {
    let mut script = String::from("status=0\n");
    for (index, run) in runs.iter().enumerate() {
        script.push_str(&format!(
            "echo '{RUN_MARKER}{}: {} tests'\n",
            index + 1,
            run.tests.len()
        ));
        // --exact: each name is one test; --test-threads=1: the guest has little to spare and
        // the output stays readable; --color never: the summary is read back.
        script.push_str(&format!(
            "{} '{}' --exact --test-threads=1 --color never {} || status=1\n",
            run.environment,
            binary.display(),
            run.tests.join(" ")
        ));
    }
    script.push_str("exit $status\n");
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Checks that each run's libtest summary (`test result: ok. 6 passed; 0 failed; ...`) counts
/// exactly the tests the run was given, and names what did not run.
fn check_counts(runs: &[SmokeRun], output: &[String]) -> std::result::Result<(), String> {
    // Per run: the tests it reported as run (`test NAME ... ok`), and its summary's count.
    let mut seen: Vec<(Vec<String>, Option<usize>)> = vec![(Vec::new(), None); runs.len()];
    let mut current = None;
    for line in output {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(RUN_MARKER) {
            current = rest
                .split(':')
                .next()
                .and_then(|number| number.parse::<usize>().ok())
                .and_then(|number| number.checked_sub(1))
                .filter(|&index| index < runs.len());
            continue;
        }
        let Some(index) = current else { continue };
        if let Some(summary) = line.strip_prefix("test result: ") {
            seen[index].1 = Some(count_in_summary(summary));
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split(" ... ").next())
        {
            seen[index].0.push(name.to_owned());
        }
    }
    let mut problems = Vec::new();
    for (index, (run, (names, count))) in runs.iter().zip(&seen).enumerate() {
        let given = run.tests.len();
        let environment = if run.environment.is_empty() {
            "default backend"
        } else {
            run.environment
        };
        match count {
            Some(count) if *count == given => {}
            Some(count) => {
                let missing: Vec<&str> = run
                    .tests
                    .iter()
                    .copied()
                    .filter(|test| !names.iter().any(|name| name == test))
                    .collect();
                problems.push(format!(
                    "run {} ({environment}) ran {count} of the {given} tests it was given; not \
                     run: {}",
                    index + 1,
                    missing.join(", ")
                ));
            }
            None => problems.push(format!(
                "run {} ({environment}) printed no libtest summary",
                index + 1
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The tests a libtest summary says ran: passed + failed (`ok. 6 passed; 0 failed; 0 ignored;
/// 0 measured; 80 filtered out; finished in 20.27s`).
fn count_in_summary(summary: &str) -> usize {
    summary
        .split(';')
        .filter_map(|part| {
            let mut words = part.split_whitespace().rev();
            let what = words.next()?;
            let number = words.next()?.parse::<usize>().ok()?;
            matches!(what, "passed" | "failed").then_some(number)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNS: [SmokeRun; 2] = [
        SmokeRun {
            environment: "MEMTRACE_BACKEND=raw-tracepoint",
            tests: &["a::one", "a::two"],
        },
        SmokeRun {
            environment: "",
            tests: &["b::three"],
        },
    ];

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_run_ran_what_it_was_given() {
        let output = lines(
            "xtask-smoke: run 1: 2 tests\n\nrunning 2 tests\ntest a::one ... ok\n\
             test a::two ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; \
             86 filtered out; finished in 2.01s\nxtask-smoke: run 2: 1 tests\n\
             test b::three ... ok\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; \
             87 filtered out; finished in 1.00s\n",
        );
        assert_eq!(check_counts(&RUNS, &output), Ok(()));
    }

    #[test]
    fn a_renamed_test_is_named() {
        let output = lines(
            "xtask-smoke: run 1: 2 tests\ntest a::one ... ok\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 87 filtered out; \
             finished in 2.01s\nxtask-smoke: run 2: 1 tests\ntest b::three ... ok\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 87 filtered out; \
             finished in 1.00s\n",
        );
        assert_eq!(
            check_counts(&RUNS, &output),
            Err(
                "run 1 (MEMTRACE_BACKEND=raw-tracepoint) ran 1 of the 2 tests it was given; \
                 not run: a::two"
                    .to_owned()
            )
        );
    }

    #[test]
    fn a_run_without_a_summary_fails() {
        let output = lines("xtask-smoke: run 1: 2 tests\nSegmentation fault\n");
        let problems = check_counts(&RUNS, &output).unwrap_err();
        assert!(
            problems.contains("run 1 (MEMTRACE_BACKEND=raw-tracepoint) printed no libtest summary")
                && problems.contains("run 2 (default backend) printed no libtest summary"),
            "{problems}"
        );
    }
}
