//! The tracer itself: real probes, real 64-bit and 32-bit processes, exact syscall counts.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use memtrace_tests::{
    calls, memtrace_json, oracle, process, processes, processes_running, program, require_root,
    spawn_ready, Abi, Runtime, Scratch, REPORTED_SYSCALLS,
};
use rstest::rstest;
use serde_json::Value;

/// What tests/programs/counts.c does, per reported syscall: (calls, failed). The one execve is
/// memtrace starting it.
const COUNTS_PROGRAM: [(&str, u64, u64); 7] = [
    ("mmap", 6, 1),
    ("munmap", 5, 1),
    ("brk", 3, 0),
    ("mremap", 2, 0),
    ("mprotect", 3, 1),
    ("memfd_create", 2, 1),
    ("execve", 1, 0),
];

#[track_caller]
fn assert_counts_program(entry: &Value) {
    for (syscall, expected_calls, expected_failed) in COUNTS_PROGRAM {
        assert_eq!(
            calls(entry, syscall),
            (expected_calls, expected_failed),
            "{syscall} (calls, failed) for pid {}",
            entry["pid"]
        );
    }
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn exact_counts(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("counts-{}", abi.name()));
    let counts = program("counts", abi, Runtime::Bare);
    let run = memtrace_json(&scratch, &["--", counts.to_str().unwrap()]);
    run.assert_success();
    let report = run.report();
    assert_eq!(report["source"], "live");
    assert_eq!(report["lost_events"], 0);
    let traced = processes(report);
    assert_eq!(traced.len(), 1, "only the command is traced: {report:#}");
    let entry = &traced[0];
    assert_eq!(entry["abi"], abi.name());
    assert_eq!(entry["exit_code"], 0);
    assert_counts_program(entry);
    let execs = entry["execs"].as_array().unwrap();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0]["to_abi"], abi.name());
}

/// Latency is measured only when asked (`--latency`: the entry programs then stamp every
/// traced call, which costs a second program run per call): with it, every call of every
/// reported syscall has a latency, in both ABIs, and the text report shows the columns;
/// without it, none has one and the columns are gone rather than zeros.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn latency_is_measured_only_with_latency(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("latency-{}", abi.name()));
    let counts = program("counts", abi, Runtime::Bare);
    let counts = counts.to_str().unwrap();
    for latency in [true, false] {
        let flag: &[&str] = if latency { &["--latency"] } else { &[] };
        let run = memtrace_json(&scratch, &[flag, &["--", counts]].concat());
        run.assert_success();
        let traced = processes(run.report());
        let entry = &traced[0];
        assert_counts_program(entry);
        for (syscall, expected_calls, _) in COUNTS_PROGRAM {
            let measured = &entry["distributions"]["latency_ns"][syscall];
            let count = measured["count"].as_u64().unwrap();
            if !latency {
                assert_eq!(count, 0, "{syscall} without --latency: {measured}");
                continue;
            }
            assert_eq!(count, expected_calls, "{syscall}: {measured}");
            let [p50, p99, max] = ["p50", "p99", "max"].map(|at| measured[at].as_u64().unwrap());
            // An exec takes milliseconds; the others, microseconds. A second is a broken stamp.
            assert!(
                0 < p50 && p50 <= p99 && p99 <= max && max < 1_000_000_000,
                "{syscall}: {measured}"
            );
        }

        let text = Command::new(memtrace_tests::memtrace_bin())
            .args(flag)
            .args(["--", counts])
            .output()
            .unwrap();
        assert!(text.status.success());
        let text = String::from_utf8(text.stdout).unwrap();
        let header = text
            .lines()
            .find(|line| line.trim_start().starts_with("syscall "))
            .unwrap_or_else(|| panic!("no syscall table:\n{text}"));
        assert_eq!(header.contains("p99 ns"), latency, "{header}");
    }
}

/// A failed exec is counted as strace counts it, in both ABIs, with its file name: on kernels
/// where nothing runs at syscall entry (6.10 and later, without `--latency`) it is seen only
/// at its exit, which returns to the caller with its registers and memory intact.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn a_failed_exec_is_counted_with_its_file_name(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("failed-exec-{}", abi.name()));
    let parent = program("exec_child", abi, Runtime::Libc);
    let missing = scratch.file("no-such-program");
    let missing = missing.to_str().unwrap();
    for latency in [false, true] {
        let mut args = vec!["--follow", "--events"];
        if latency {
            args.push("--latency");
        }
        args.extend(["--", parent.to_str().unwrap(), missing]);
        let run = memtrace_json(&scratch, &args);
        // exec_child exits with its child's code: 127, the child's _exit after execv failed.
        assert_eq!(run.output.status.code(), Some(127), "{:?}", run.output);
        let report = run.report();
        let traced = processes(report);
        // The command: the one traced process whose parent is not traced.
        let parent_entry = traced
            .iter()
            .find(|entry| !traced.iter().any(|other| other["pid"] == entry["ppid"]))
            .unwrap();
        let child = traced
            .iter()
            .find(|entry| entry["ppid"] == parent_entry["pid"])
            .unwrap_or_else(|| panic!("no child in {report:#}"));
        assert_eq!(child["abi"], abi.name());
        assert_eq!(
            calls(child, "execve"),
            (1, 1),
            "latency {latency}: {child:#}"
        );
        assert_eq!(calls(parent_entry, "execve"), (1, 0), "{parent_entry:#}");
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        let line = stderr
            .lines()
            .find(|line| line.contains("execve(") && line.contains("ENOENT"))
            .unwrap_or_else(|| panic!("no failed execve line:\n{stderr}"));
        assert!(line.contains(missing), "{line}");
        assert!(line.contains(&format!(" {}] ", abi.name())), "{line}");
    }
}

#[test]
fn a_32_bit_parent_execs_a_64_bit_child() {
    require_root();
    let scratch = Scratch::new("exec-32-to-64");
    let parent = program("exec_child", Abi::I386, Runtime::Libc);
    let child = program("counts", Abi::X86_64, Runtime::Bare);
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--",
            parent.to_str().unwrap(),
            child.to_str().unwrap(),
        ],
    );
    run.assert_success();
    let report = run.report();
    let parents = processes_running(report, "exec_child-32");
    assert_eq!(parents.len(), 1, "{report:#}");
    let parent_entry = parents[0];
    assert_eq!(parent_entry["abi"], "i386");
    assert!(
        calls(parent_entry, "mmap").0 > 0,
        "the 32-bit parent's own mmap2 calls count"
    );

    let children = processes_running(report, "counts-64-bare");
    assert_eq!(children.len(), 1, "{report:#}");
    let child_entry = children[0];
    assert_eq!(child_entry["ppid"], parent_entry["pid"]);
    assert_eq!(child_entry["abi"], "x86_64");
    let exec = &child_entry["execs"][0];
    assert_eq!(
        (&exec["from_abi"], &exec["to_abi"]),
        (&"i386".into(), &"x86_64".into())
    );
    assert_counts_program(child_entry);
    assert_eq!(child_entry["exit_code"], 0);
    assert_eq!(parent_entry["exit_code"], 0);
}

#[test]
fn attach_sees_what_a_sleeping_process_does_next() {
    require_root();
    let scratch = Scratch::new("attach");
    let sleeper = program("sleeper", Abi::X86_64, Runtime::Libc);
    let (mut target, ready) = spawn_ready(Command::new(&sleeper));
    assert_eq!(ready, "ready\n");
    let pid = target.id();

    let report_path = scratch.file("report.json");
    // memtrace says when it is attached; only then may the sleeper go on.
    let mut tracer = memtrace_tests::attach(&[
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
        "--pid",
        &pid.to_string(),
    ]);
    Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(target.wait().unwrap().success());
    let status = wait_with_timeout(&mut tracer, Duration::from_secs(20));
    assert!(status.success(), "memtrace --pid ended with {status:?}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let entry = process(&report, u64::from(pid));
    assert_eq!(
        calls(entry, "mmap"),
        (5, 0),
        "exactly the mappings made after attach"
    );
    assert_eq!(calls(entry, "munmap"), (0, 0));
    assert_eq!(entry["exit_code"], 0);
    // The layout starts from /proc/PID/maps at attach.
    let layout = entry["layout"].as_array().unwrap();
    assert!(layout
        .iter()
        .any(|r| r["origin"] == "snapshot" && r["name"] == "[stack]"));
}

#[test]
fn follow_sees_grandchildren() {
    require_root();
    let scratch = Scratch::new("follow");
    let forktree = program("forktree", Abi::X86_64, Runtime::Libc);
    let run = memtrace_json(&scratch, &["--follow", "--", forktree.to_str().unwrap()]);
    run.assert_success();
    let report = run.report();
    let family = processes_running(report, "forktree-64");
    assert_eq!(family.len(), 3, "parent, child and grandchild: {report:#}");
    let root = family
        .iter()
        .find(|p| calls(p, "execve").0 == 1)
        .expect("the exec'd root");
    let child = family
        .iter()
        .find(|p| p["ppid"] == root["pid"])
        .expect("a child");
    let grandchild = family
        .iter()
        .find(|p| p["ppid"] == child["pid"])
        .expect("a grandchild");
    assert_eq!(calls(grandchild, "mmap"), (7, 0));
}

#[test]
fn without_follow_children_are_not_traced() {
    require_root();
    let scratch = Scratch::new("no-follow");
    let forktree = program("forktree", Abi::X86_64, Runtime::Libc);
    let run = memtrace_json(&scratch, &["--", forktree.to_str().unwrap()]);
    run.assert_success();
    assert_eq!(processes(run.report()).len(), 1);
}

#[test]
fn a_full_ring_buffer_counts_every_lost_event() {
    require_root();
    let scratch = Scratch::new("lost");
    let flood = program("flood", Abi::X86_64, Runtime::Bare);
    let rounds: u64 = 200_000;
    let run = memtrace_json(
        &scratch,
        &[
            "--ring-buffer-size",
            "4096",
            "--",
            flood.to_str().unwrap(),
            &rounds.to_string(),
        ],
    );
    run.assert_success();
    let report = run.report();
    let lost = report["lost_events"].as_u64().unwrap();
    assert!(lost > 0, "a 4 KiB ring cannot hold this flood");
    assert!(
        run.stderr().contains("events lost"),
        "losses are said: {}",
        run.stderr()
    );
    let entry = &processes(report)[0];
    let delivered = calls(entry, "mmap").0 + calls(entry, "munmap").0;
    // Every mmap and munmap either arrived or was counted as lost; so was the exit event.
    let exit_seen = u64::from(!entry["exit_code"].is_null());
    assert_eq!(delivered + lost + exit_seen, 2 * rounds + 1, "{report:#}");
}

#[test]
fn untraced_processes_never_appear() {
    require_root();
    let scratch = Scratch::new("untraced");
    let flood = program("flood", Abi::X86_64, Runtime::Bare);
    let mut bystander = Command::new(&flood).arg("20000000").spawn().unwrap();
    let counts = program("counts", Abi::X86_64, Runtime::Bare);
    let run = memtrace_json(&scratch, &["--", counts.to_str().unwrap()]);
    bystander.kill().unwrap();
    let _ = bystander.wait();
    run.assert_success();
    let report = run.report();
    assert_eq!(processes(report).len(), 1);
    assert!(processes(report)
        .iter()
        .all(|p| p["pid"].as_u64() != Some(u64::from(bystander.id()))));
    assert_counts_program(&processes(report)[0]);
}

/// Real programs no one here wrote, traced by memtrace and strace in the same run: memtrace
/// follows strace and everything it starts, and strace writes its own account to a file.
#[test]
fn counts_equal_strace_on_real_programs() {
    require_root();
    let scratch = Scratch::new("strace");
    let source = scratch.file("hello.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let object = scratch.file("hello.o");
    let repo = scratch.file("repo");
    let workloads: Vec<Vec<String>> = vec![
        vec![
            "python3".into(),
            "-c".into(),
            "import json; x = bytearray(64 << 20); print(len(x))".into(),
        ],
        vec![
            "gcc".into(),
            "-c".into(),
            source.display().to_string(),
            "-o".into(),
            object.display().to_string(),
        ],
        vec![
            "git".into(),
            "init".into(),
            "-q".into(),
            repo.display().to_string(),
        ],
        vec!["bash".into(), "-c".into(), "ls / > /dev/null; true".into()],
    ];
    for workload in workloads {
        let strace_log = scratch.file("strace.log");
        let mut args: Vec<String> = vec![
            "--follow".into(),
            "--".into(),
            "strace".into(),
            "-f".into(),
            "-qq".into(),
        ];
        args.extend(["-o".into(), strace_log.display().to_string()]);
        args.extend(["-e".into(), oracle::STRACE_FILTER.into()]);
        args.extend(workload.iter().cloned());
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = memtrace_json(&scratch, &arg_refs);
        run.assert_success();
        let report = run.report();
        assert_eq!(report["lost_events"], 0);
        let by_strace = oracle::strace_counts(&std::fs::read_to_string(&strace_log).unwrap());
        assert!(!by_strace.is_empty(), "strace saw nothing for {workload:?}");
        for (pid, counts) in &by_strace {
            let entry = process(report, *pid);
            for name in REPORTED_SYSCALLS {
                let expected = counts.get(name).copied().unwrap_or((0, 0));
                assert_eq!(
                    calls(entry, name),
                    expected,
                    "{name} of pid {pid} in {workload:?}"
                );
            }
        }
    }
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("memtrace did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ia32's old_mmap passes its arguments in user memory: they are read and decoded like mmap2's.
#[test]
fn old_mmap_of_a_32_bit_program_is_decoded() {
    require_root();
    let scratch = Scratch::new("old-mmap");
    let exe = program("old_mmap", Abi::I386, Runtime::Bare);
    let run = memtrace_json(&scratch, &["--", exe.to_str().unwrap()]);
    run.assert_success();
    let entry = &processes(run.report())[0];
    assert_eq!(calls(entry, "mmap"), (1, 0));
    let created: Vec<&Value> = entry["unreleased"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["regions"].as_array().unwrap())
        .collect();
    assert_eq!(created.len(), 1, "{entry:#}");
    assert_eq!(created[0]["len"], 3 * 4096);
    assert_eq!(created[0]["perms"], "rw-p");
    assert!(created[0]["start"].as_u64().unwrap() < 1 << 32);
}

/// memtrace exits with the traced command's exit code, or 128 + the signal that killed it.
#[test]
fn the_command_exit_code_is_memtrace_exit_code() {
    require_root();
    let scratch = Scratch::new("exit-code");
    let run = memtrace_json(&scratch, &["--", "sh", "-c", "exit 7"]);
    assert_eq!(run.output.status.code(), Some(7), "{}", run.stderr());
    assert_eq!(processes(run.report())[0]["exit_code"], 7);
    let run = memtrace_json(&scratch, &["--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(run.output.status.code(), Some(128 + 9), "{}", run.stderr());
    assert_eq!(processes(run.report())[0]["signal"], 9);
}

/// Four threads making syscalls at once on both CPUs: every call is counted exactly, none is
/// attributed to the wrong syscall, even as threads move between CPUs mid-call.
#[test]
fn concurrent_threads_are_counted_exactly() {
    require_root();
    let scratch = Scratch::new("threads");
    let exe = program("threads", Abi::X86_64, Runtime::Libc);
    let counts_of = |rounds: &str| {
        let run = memtrace_json(&scratch, &["--", exe.to_str().unwrap(), rounds]);
        run.assert_success();
        assert_eq!(run.report()["lost_events"], 0);
        let entry = processes(run.report())[0].clone();
        (calls(&entry, "mmap"), calls(&entry, "munmap"))
    };
    let (idle_mmap, idle_munmap) = counts_of("0");
    let (busy_mmap, busy_munmap) = counts_of("5000");
    assert_eq!(busy_mmap.0 - idle_mmap.0, 20_000);
    assert_eq!(busy_mmap.1 - idle_mmap.1, 1_000);
    assert_eq!(busy_munmap.0 - idle_munmap.0, 19_000);
    assert_eq!(busy_munmap.1 - idle_munmap.1, 0);
}

/// Under sudo the command runs as the user who ran sudo, with that user's groups, like
/// `strace -u`: memtrace reads what sudo leaves in the environment.
#[test]
fn under_sudo_the_command_runs_as_the_invoking_user() {
    require_root();
    let scratch = Scratch::new("sudo-user");
    let report = scratch.file("report.json");
    let output = Command::new(memtrace_tests::memtrace_bin())
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env("SUDO_USER", "nobody")
        .args([
            "--format",
            "json",
            "-o",
            report.to_str().unwrap(),
            "--",
            "id",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout);
    assert!(id.starts_with("uid=65534(nobody) gid=65534("), "{id}");
    assert!(!id.contains("(root)"), "no root group left: {id}");
}

/// --ebpf-log forwards the programs' own aya-log messages (they log each traced exec).
#[test]
fn ebpf_log_forwards_the_programs_messages() {
    require_root();
    let scratch = Scratch::new("ebpf-log");
    let counts = program("counts", Abi::X86_64, Runtime::Bare);
    let run = memtrace_json(&scratch, &["--ebpf-log", "--", counts.to_str().unwrap()]);
    run.assert_success();
    let pid = processes(run.report())[0]["pid"].as_u64().unwrap();
    assert!(
        run.stderr()
            .contains(&format!("exec in traced process {pid}")),
        "{}",
        run.stderr()
    );
}
