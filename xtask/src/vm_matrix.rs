//! The kernel matrix of `cargo xtask test`: the smoke subset of the integration tests, run
//! inside a guest of each Debian kernel of [`vm_fetch::KERNELS`] (see vm.rs for the guests).
//!
//! The test binaries are the ones cargo already built for this machine, run in the guest by
//! path with a name filter: the guest shares this machine's root, so nothing is rebuilt.
//! At most two guests run at once: CI machines have two cores, and each guest is one emulated
//! machine (TCG) busy mostly in the verifier.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    cmd,
    vm::{self, Guest},
    vm_fetch::{self, Kernel, KERNELS},
    workspace::Workspace,
};

/// The smoke subset, by test binary: what differs between kernels (tracepoint prototypes, the
/// verifier, struct layouts, compat syscalls) and the features users rely on most. Run on each
/// backend by force (`MEMTRACE_BACKEND`): on the raw tracepoints, which every kernel has, and
/// on fentry wherever it must load ([`Kernel::fentry`]), so that neither backend is only
/// tried through the other's fallback.
const SMOKE_TESTS: [(&str, &[&str]); 2] = [
    (
        "tracing",
        &[
            // Exact counts in both ABIs: sys_enter/sys_exit and TS_COMPAT.
            "exact_counts::case_1_x86_64",
            "exact_counts::case_2_i386",
            // fork, exec across ABIs, exit.
            "a_32_bit_parent_execs_a_64_bit_child",
            // --pid attach.
            "attach_sees_what_a_sleeping_process_does_next",
        ],
    ),
    (
        "layout",
        &["doublemapper::case_1_x86_64", "doublemapper::case_2_i386"],
    ),
];

/// The backends compared, once per kernel, with the default backend choice: where fentry
/// attaches (every Debian kernel booted here allows ftrace) the report must equal the raw
/// tracepoints' one; where it does not, auto must fall back and say why.
const BACKEND_TESTS: [(&str, &[&str]); 1] =
    [("backend", &["counts_on_both_backends::case_1_x86_64"])];

/// Kernel mode (#11): its tracepoints' prototypes and `sched_process_exit`'s arity differ
/// between kernels (all four pass: 5.10 in 60 s, 6.1 32 s, 6.12 21 s of guest time).
const KERNEL_MODE_TESTS: [(&str, &[&str]); 1] = [(
    "kernel_allocs",
    &[
        "pipes_are_counted_once_and_replayed_alike::case_1_x86_64",
        "pipes_are_counted_once_and_replayed_alike::case_2_i386",
    ],
)];

/// Guests at once.
const PARALLEL_GUESTS: usize = 2;
/// One guest's whole run: boot, loading under emulation (minutes on a busy machine), the tests.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1500);

/// The kernels `cargo xtask test` boots when not told which: the whole matrix. Measured in a
/// clean-clone CI run on a 2-core machine, two guests at once, with the smoke subset on both
/// backends where fentry loads: 5.10 180 s, 6.1 237 s, 6.12 135 s, 6.18 128 s, 7.2 103 s; 418 s
/// of wall time. What costs is the verifier under emulation, fentry most: keep an eye on it
/// when the programs grow (probes/kernel_differences.rs).
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
    let binaries = test_binaries(workspace)?;
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
                    let command = match smoke_command(&binaries, kernel) {
                        Ok(command) => command,
                        Err(error) => {
                            if let Ok(mut results) = results.lock() {
                                results.push((kernel, Err(error), Duration::ZERO, false));
                            }
                            continue;
                        }
                    };
                    let guest = Guest {
                        kernel,
                        command,
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
                    if let Ok(mut results) = results.lock() {
                        results.push((kernel, outcome, elapsed, rebooted));
                    }
                }
            });
        }
    });

    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(kernel, _, _, _)| {
        KERNELS.iter().position(|known| known.label == kernel.label)
    });
    let mut failed = Vec::new();
    cmd::step(format!(
        "kernel matrix results ({} s in all):",
        started.elapsed().as_secs()
    ));
    for (kernel, outcome, elapsed, rebooted) in &results {
        let verdict = match outcome {
            Ok(0) if *rebooted => "passed (on a second boot: the first guest died)".to_owned(),
            Ok(0) => "passed".to_owned(),
            Ok(status) => format!("FAILED (the tests exited with {status})"),
            Err(error) => format!("FAILED ({error:#})"),
        };
        if !matches!(outcome, Ok(0)) {
            failed.push(kernel.label);
        }
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

fn next_kernel<I: Iterator<Item = &'static Kernel>>(queue: &Mutex<I>) -> Option<&'static Kernel> {
    queue.lock().ok()?.next()
}

/// The test binaries of memtrace-tests by name, as cargo built them for this machine.
fn test_binaries(workspace: &Workspace) -> Result<BTreeMap<String, PathBuf>> {
    let mut build = workspace.cargo();
    build.args([
        "test",
        "--package",
        "memtrace-tests",
        "--no-run",
        "--message-format=json",
    ]);
    let output = cmd::read_stdout(&mut build).context("building the integration tests")?;
    let mut binaries = BTreeMap::new();
    for line in output.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["reason"] == "compiler-artifact"
            && message["target"]["kind"] == serde_json::json!(["test"]);
        if let (true, Some(name), Some(path)) = (
            is_test,
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            binaries.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    Ok(binaries)
}

/// One shell command that runs every smoke test binary (each even after another failed, so a
/// guest reports everything) and exits non-zero if any failed.
fn smoke_command(binaries: &BTreeMap<String, PathBuf>, kernel: &Kernel) -> Result<Vec<OsString>> {
    let mut script = String::from("status=0\n");
    let mut runs = vec![("MEMTRACE_BACKEND=raw-tracepoint", &SMOKE_TESTS[..])];
    if kernel.fentry {
        runs.push(("MEMTRACE_BACKEND=fentry", &SMOKE_TESTS[..]));
    }
    runs.extend([("", &BACKEND_TESTS[..]), ("", &KERNEL_MODE_TESTS[..])]);
    for (environment, groups) in runs {
        for (binary, tests) in groups {
            let path = binaries
                .get(*binary)
                .with_context(|| format!("cargo built no test binary named {binary}"))?;
            // --exact: each name is one test; --test-threads=1: the guest has little to spare
            // and the output stays readable.
            script.push_str(&format!(
                "{environment} '{}' --exact --test-threads=1 {} || status=1\n",
                path.display(),
                tests.join(" ")
            ));
        }
    }
    script.push_str("exit $status\n");
    Ok(vec!["sh".into(), "-c".into(), script.into()])
}
