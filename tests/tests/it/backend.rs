//! The syscall hooks (`--backend`): fentry/fexit where the kernel allows it, raw tracepoints
//! everywhere. Both must give the same report; a forced fentry the kernel refuses is one line
//! and a non-zero exit, and auto then falls back and says why in the header.
//!
//! Which half runs depends on the kernel: where ftrace is locked down (this project's CI
//! machines) the refusal and the fallback are checked; where fentry attaches (the guests of
//! `cargo xtask vm`) the two backends' reports are compared. Neither half skips.

use memtrace_tests::{
    memtrace_json, processes, program, require_root, Abi, Runtime, Scratch, REPORTED_SYSCALLS,
};
use rstest::rstest;
use serde_json::{json, Value};

/// What must not depend on the backend: per process (in report order) its ABI, exit code,
/// syscall counts, the layout summary and what was never released; the findings' kinds and
/// sizes. Addresses, pids and times differ from run to run and are left out.
fn comparable(report: &Value) -> Value {
    let processes: Vec<Value> = processes(report)
        .iter()
        .map(|process| {
            let counts: Vec<Value> = REPORTED_SYSCALLS
                .iter()
                .map(|name| {
                    let counts = &process["syscalls"][name];
                    json!([name, counts["calls"], counts["failed"]])
                })
                .collect();
            let unreleased: Vec<Value> = process["unreleased"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|group| json!([group["kind"], group["name"], group["count"], group["bytes"]]))
                .collect();
            json!({
                "abi": process["abi"],
                "exit_code": process["exit_code"],
                "counts": counts,
                "summary": process["summary"],
                "unreleased": unreleased,
            })
        })
        .collect();
    let findings: Vec<Value> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|finding| {
            json!([
                finding["kind"],
                finding["name"],
                finding["regions"],
                finding["bytes"]
            ])
        })
        .collect();
    json!({ "processes": processes, "findings": findings, "lost_events": report["lost_events"] })
}

fn same_report_on_both_backends(name: &str, abi: Abi, runtime: Runtime, args: &[&str]) {
    require_root();
    let scratch = Scratch::new(&format!("backend-{name}-{}", abi.name()));
    let exe = program(name, abi, runtime);
    let command: Vec<&str> = [exe.to_str().unwrap()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let run_with = |backend: &str| {
        let mut arguments = vec!["--backend", backend, "--"];
        arguments.extend(&command);
        memtrace_json(&scratch, &arguments)
    };

    let raw = run_with("raw-tracepoint");
    raw.assert_success();
    assert_eq!(raw.report()["backend"]["name"], "raw-tracepoint");
    let fentry = run_with("fentry");
    if fentry.output.status.success() {
        assert_eq!(fentry.report()["backend"]["name"], "fentry");
        assert!(fentry.report()["backend"].get("why").is_none());
        assert_eq!(comparable(fentry.report()), comparable(raw.report()));
        return;
    }

    // This kernel refuses fentry: one line, exit 1, no report; auto falls back and says why.
    let stderr = fentry.stderr();
    // The kernel matrix says where fentry must load: there a refusal is a regression.
    assert_ne!(
        std::env::var("MEMTRACE_EXPECT_FENTRY").as_deref(),
        Ok("1"),
        "fentry must load on this kernel: {stderr}"
    );
    assert_eq!(fentry.output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("memtrace: --backend fentry: "),
        "{stderr}"
    );
    assert!(fentry.report.is_none());
    let auto = run_with("auto");
    auto.assert_success();
    let backend = &auto.report()["backend"];
    assert_eq!(backend["name"], "raw-tracepoint");
    assert!(
        backend["why"]
            .as_str()
            .unwrap()
            .starts_with("fentry unavailable: "),
        "{backend}"
    );
    assert_eq!(comparable(auto.report()), comparable(raw.report()));
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn counts_on_both_backends(#[case] abi: Abi) {
    same_report_on_both_backends("counts", abi, Runtime::Bare, &[]);
}

/// For i386, mmap2 and memfd_create through the ia32 entry points.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn doublemapper_on_both_backends(#[case] abi: Abi) {
    same_report_on_both_backends("doublemapper", abi, Runtime::Libc, &["8"]);
}

/// old_mmap, whose ia32 entry point is a compat function.
#[test]
fn old_mmap_on_both_backends() {
    same_report_on_both_backends("old_mmap", Abi::I386, Runtime::Bare, &[]);
}
