//! Fidelity at default settings on busy programs: nothing lost, the rebuilt layout equal to
//! the kernel's, the counts equal to strace's; no exit ever decoded as another syscall; and a
//! launch-mode session that ends when told.
//!
//! The layout oracle: the workload stops itself (SIGSTOP) once it has done its work; the test
//! waits until every thread is stopped, reads /proc/PID/maps, then stops memtrace (SIGTERM)
//! and compares the report's layout of the (still live) process with what it read.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{
    calls, memtrace, memtrace_bin, memtrace_json, oracle, process, processes, program,
    require_root, Abi, Runtime, Scratch, REPORTED_SYSCALLS,
};
use rstest::rstest;
use serde_json::Value;

/// Bytes of the rebuilt layout that must agree with /proc/PID/maps.
const LAYOUT_AGREEMENT: f64 = 0.999;

/// memtrace with only a JSON report asked for: default settings otherwise.
fn spawn_memtrace(report: &Path, command: &[&str]) -> Child {
    Command::new(memtrace_bin())
        .args(["--format", "json", "-o"])
        .arg(report)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("running memtrace")
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

fn state_of(stat_path: &Path) -> Option<char> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The command memtrace launched, once it runs its own image (the gate before it is memtrace).
fn launched_command(memtrace_pid: u32) -> Option<u32> {
    let me = std::fs::canonicalize(memtrace_bin()).ok()?;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(memtrace_pid))
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe != me))
}

/// Whether every thread of `pid` is stopped.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .filter_map(Result::ok)
        .all(|task| matches!(state_of(&task.path().join("stat")), Some('T' | 't')))
}

#[track_caller]
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    wait_for("memtrace to exit", limit, || child.try_wait().unwrap())
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// What the snapshot oracle saw.
struct Snapshot {
    report: Value,
    pid: u32,
    maps: String,
}

/// Traces `command` (which stops itself when done) at default settings, reads its maps once
/// all its threads are stopped, then ends memtrace with SIGTERM and kills the workload.
#[track_caller]
fn snapshot_run(scratch: &Scratch, command: &[&str]) -> Snapshot {
    let report_path = scratch.file("snapshot.json");
    let _ = std::fs::remove_file(&report_path);
    let mut tracer = spawn_memtrace(&report_path, command);
    let pid = wait_for("the command to start", Duration::from_secs(60), || {
        launched_command(tracer.id())
    });
    wait_for(
        "the workload to stop itself",
        Duration::from_secs(120),
        || all_threads_stopped(pid).then_some(()),
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    kill(tracer.id(), "TERM");
    let status = wait_with_timeout(&mut tracer, Duration::from_secs(30));
    kill(pid, "KILL");
    assert!(status.success(), "memtrace ended with {status:?}");
    let report = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap())
        .expect("a JSON report");
    Snapshot { report, pid, maps }
}

/// Checks the snapshot run: nothing lost, layout agreement; prints the figures.
#[track_caller]
fn assert_snapshot_faithful(name: &str, snapshot: &Snapshot) {
    let report = &snapshot.report;
    let entry = process(report, u64::from(snapshot.pid));
    let agreement = oracle::agreement(entry, &snapshot.maps);
    println!(
        "{name}: {} events, {} lost, {} stacks not sampled; layout agrees on {} of {} bytes ({:.4}%)",
        report["events"],
        report["lost_events"],
        report["lost"]["stacks_not_sampled"],
        agreement.agreeing,
        agreement.mapped,
        agreement.ratio() * 100.0
    );
    assert_eq!(report["lost_events"], 0, "{name}: events lost");
    assert_eq!(
        entry["anomalies"]["count"], 0,
        "{name}: {:#}",
        entry["anomalies"]
    );
    assert!(
        agreement.ratio() >= LAYOUT_AGREEMENT,
        "{name}: layout agrees on {:.4}% of bytes only:\n{}",
        agreement.ratio() * 100.0,
        agreement.differences
    );
}

/// Traces `strace -f COMMAND` with `--follow` and checks that every process strace saw has
/// the same count of each memory syscall (calls and failures) in memtrace's report.
#[track_caller]
fn assert_counts_equal_strace(name: &str, scratch: &Scratch, command: &[&str]) {
    let log = scratch.file("strace.log");
    let log_arg = log.display().to_string();
    let mut args = vec![
        "--follow",
        "--",
        "strace",
        "-f",
        "-qq",
        "-o",
        &log_arg,
        "-e",
        oracle::STRACE_FILTER,
    ];
    args.extend_from_slice(command);
    let run = memtrace_json(scratch, &args);
    run.assert_success();
    let report = run.report();
    let by_strace = oracle::strace_counts(&std::fs::read_to_string(&log).unwrap());
    assert!(!by_strace.is_empty(), "{name}: strace saw nothing");
    let mut compared = 0u64;
    for (pid, counts) in &by_strace {
        let entry = process(report, *pid);
        for syscall in REPORTED_SYSCALLS {
            let expected = counts.get(syscall).copied().unwrap_or((0, 0));
            assert_eq!(
                calls(entry, syscall),
                expected,
                "{name}: {syscall} of pid {pid}"
            );
            compared += expected.0;
        }
    }
    println!(
        "{name} under strace: {} events, {} lost; {compared} calls in {} processes, each count equal to strace's",
        report["events"],
        report["lost_events"],
        by_strace.len()
    );
    assert_eq!(report["lost_events"], 0, "{name}: events lost");
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn thread_race(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("race-{}", abi.name()));
    let exe = program("race", abi, Runtime::Libc);
    let exe = exe.to_str().unwrap();
    let name = format!("race {}", abi.name());
    let snapshot = snapshot_run(&scratch, &[exe, "2000"]);
    assert_snapshot_faithful(&name, &snapshot);
    // 8 threads × 2000 rounds: one mmap, one mprotect, one or two munmaps each.
    let entry = process(&snapshot.report, u64::from(snapshot.pid));
    assert!(calls(entry, "mmap").0 >= 16_000);
    assert!(calls(entry, "munmap").0 >= 24_000);
    assert_counts_equal_strace(&name, &scratch, &[exe, "2000", "exit"]);
}

const NODE_WORKLOAD: &str = r#"
const { Worker, isMainThread } = require('worker_threads');
const stop = process.argv[2] === 'stop';
if (isMainThread) {
  const keep = [];
  for (let i = 0; i < 3000; i++) {
    keep.push(Buffer.alloc(64 * 1024));
    if (i % 3 === 0) keep.shift();
  }
  for (let i = 0; i < 200; i++) keep.push(new ArrayBuffer(1 << 20));
  let done = 0;
  for (let w = 0; w < 4; w++) {
    new Worker(__filename, { argv: [process.argv[2] || ''] }).on('exit', () => {
      if (++done === 4) {
        if (stop) process.kill(process.pid, 'SIGSTOP');
        process.exit(0);
      }
    });
  }
} else {
  const mine = [];
  for (let i = 0; i < 400; i++) mine.push(Buffer.alloc(256 * 1024));
  for (let i = 0; i < 100; i++) mine.push(new ArrayBuffer(512 * 1024));
}
"#;

#[test]
fn node_buffers_array_buffers_and_workers() {
    require_root();
    let scratch = Scratch::new("node");
    let script = scratch.file("workload.js");
    std::fs::write(&script, NODE_WORKLOAD).unwrap();
    let script = script.to_str().unwrap();
    let snapshot = snapshot_run(&scratch, &["node", script, "stop"]);
    assert_snapshot_faithful("node", &snapshot);
    assert_counts_equal_strace("node", &scratch, &["node", script]);
}

const NUMPY_WORKLOAD: &str = "
import os, signal, sys
import numpy as np
arrays = [np.ones(1 << 17) for _ in range(400)]
del arrays[::2]
big = np.zeros((2048, 2048))
big += 1
if sys.argv[1:] == ['stop']:
    os.kill(os.getpid(), signal.SIGSTOP)
";

#[test]
fn python_with_numpy() {
    require_root();
    let scratch = Scratch::new("numpy");
    let script = scratch.file("workload.py");
    std::fs::write(&script, NUMPY_WORKLOAD).unwrap();
    let script = script.to_str().unwrap();
    // Debian's python3, which has numpy (the python3 on PATH may be another one).
    let snapshot = snapshot_run(&scratch, &["/usr/bin/python3", script, "stop"]);
    assert_snapshot_faithful("python3 numpy", &snapshot);
    assert_counts_equal_strace("python3 numpy", &scratch, &["/usr/bin/python3", script]);
}

const JAVA_WORKLOAD: &str = "
import java.util.ArrayList;
public class Workload {
    public static void main(String[] args) throws Exception {
        ArrayList<byte[]> keep = new ArrayList<>();
        for (int i = 0; i < 1000; i++) {
            keep.add(new byte[256 * 1024]);
            if (i % 2 == 0) keep.remove(0);
        }
        Thread[] threads = new Thread[4];
        for (int t = 0; t < threads.length; t++) {
            threads[t] = new Thread(() -> {
                ArrayList<java.nio.ByteBuffer> direct = new ArrayList<>();
                for (int i = 0; i < 50; i++) direct.add(java.nio.ByteBuffer.allocateDirect(1 << 20));
            });
            threads[t].start();
        }
        for (Thread thread : threads) thread.join();
        if (args.length > 0) {
            long pid = ProcessHandle.current().pid();
            new ProcessBuilder(\"kill\", \"-STOP\", Long.toString(pid)).start();
            Thread.sleep(60_000);
        }
    }
}
";

#[test]
fn jvm() {
    require_root();
    let scratch = Scratch::new("jvm");
    let source = scratch.file("Workload.java");
    std::fs::write(&source, JAVA_WORKLOAD).unwrap();
    let compiled = Command::new("javac")
        .arg("-d")
        .arg(scratch.path())
        .arg(&source)
        .status()
        .expect("running javac (cargo xtask setup installs default-jdk-headless)");
    assert!(compiled.success());
    let classpath = scratch.path().to_str().unwrap();
    // A bounded heap and one GC thread keep the JVM's own start-up lean on a 2-core machine.
    let java = [
        "java",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-cp",
        classpath,
        "Workload",
    ];
    let mut stopping = java.to_vec();
    stopping.push("stop");
    let snapshot = snapshot_run(&scratch, &stopping);
    assert_snapshot_faithful("java", &snapshot);
    assert_counts_equal_strace("java", &scratch, &java);
}

/// gcc (driver, cc1, as, collect2, ld) and git: many short processes, each counted.
#[test]
fn gcc_and_git_counts_equal_strace() {
    require_root();
    let scratch = Scratch::new("gcc-git");
    let source = scratch.file("hello.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n",
    )
    .unwrap();
    let binary = scratch.file("hello");
    assert_counts_equal_strace(
        "gcc",
        &scratch,
        &[
            "gcc",
            "-O2",
            "-o",
            binary.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
    );
    let repo = scratch.file("repo");
    assert_counts_equal_strace(
        "git",
        &scratch,
        &["git", "init", "-q", repo.to_str().unwrap()],
    );
}

/// A futex's exit must never pair with a munmap entry left in the in-flight table: the test
/// plants exactly such an entry for the workload's thread, then lets it make the futex call.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn futex_exit_never_taken_for_a_stale_munmap(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("stale-{}", abi.name()));
    let exe = program("stale_exit", abi, Runtime::Bare);
    let report_path = scratch.file("report.json");
    let mut tracer = Command::new(memtrace_bin())
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .arg("--")
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running memtrace");
    let mut tid = String::new();
    BufReader::new(tracer.stdout.take().unwrap())
        .read_line(&mut tid)
        .unwrap();
    let tid: u32 = tid.trim().parse().expect("the workload's tid");
    let map_id = pending_map_of(tracer.id());
    let planted = memtrace_common::PendingSyscall {
        syscall: memtrace_common::Syscall::Munmap as u32,
        flags: 0,
        abi: match abi {
            Abi::X86_64 => memtrace_common::Abi::X86_64,
            Abi::I386 => memtrace_common::Abi::I386,
        } as u32,
        _pad: 0,
        entry_ns: 1,
        args: [0x1000, 0x1000, 0, 0, 0, 0],
    };
    let mut update = Command::new("bpftool");
    update.args(["map", "update", "id", &map_id.to_string(), "key", "hex"]);
    update.args(hex_bytes(&tid.to_ne_bytes()));
    update.args(["value", "hex"]);
    update.args(hex_bytes(memtrace_common::record_as_bytes(&planted)));
    let planted_ok = update.status().expect("running bpftool");
    assert!(planted_ok.success(), "bpftool could not plant the entry");
    tracer.stdin.take().unwrap().write_all(b"x").unwrap();
    let status = wait_with_timeout(&mut tracer, Duration::from_secs(30));
    assert!(
        status.success(),
        "the workload or memtrace failed: {status:?}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let entry = process(&report, u64::from(tid));
    println!(
        "stale entry {}: munmap {:?}, mmap {:?}, anomalies {}",
        abi.name(),
        calls(entry, "munmap"),
        calls(entry, "mmap"),
        entry["anomalies"]["count"]
    );
    // Exactly the workload's own calls: the futex was not taken for the planted munmap.
    assert_eq!(calls(entry, "munmap"), (1, 0));
    assert_eq!(calls(entry, "mmap"), (1, 0));
    assert_eq!(entry["anomalies"]["count"], 0);
}

fn hex_bytes(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The id of the in-flight table of the memtrace process `pid`: the map ids its fds hold
/// (`/proc/PID/fdinfo`), the one bpftool names PENDING.
fn pending_map_of(pid: u32) -> u64 {
    let held: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("map_id:")?.trim().parse().ok())
        })
        .collect();
    let listing = Command::new("bpftool")
        .args(["map", "show", "--json"])
        .output()
        .expect("running bpftool (cargo xtask setup installs it)");
    let maps: Value = serde_json::from_slice(&listing.stdout).unwrap();
    maps.as_array()
        .unwrap()
        .iter()
        .filter(|map| map["name"] == memtrace_common::names::PENDING_MAP)
        .filter_map(|map| map["id"].as_u64())
        .find(|id| held.contains(id))
        .unwrap_or_else(|| {
            panic!(
                "no {} map held by pid {pid}",
                memtrace_common::names::PENDING_MAP
            )
        })
}

#[test]
fn true_makes_exactly_one_execve() {
    require_root();
    let scratch = Scratch::new("true");
    let run = memtrace_json(&scratch, &["--", "true"]);
    run.assert_success();
    let all = processes(run.report());
    assert_eq!(all.len(), 1, "{:#}", run.report());
    println!("memtrace -- true: execve {:?}", calls(&all[0], "execve"));
    assert_eq!(calls(&all[0], "execve"), (1, 0));
}

/// Launch mode ends within 2 s of being told, whether or not the command has ended; the
/// command keeps running, untraced.
fn ends_when_told(how: &str) {
    require_root();
    let scratch = Scratch::new(&format!("ends-{how}"));
    let report_path = scratch.file("report.json");
    let mut args = vec!["--format", "json", "-o", report_path.to_str().unwrap()];
    if how == "duration" {
        args.extend(["--duration", "1"]);
    }
    args.extend(["--", "sleep", "30"]);
    let mut tracer = Command::new(memtrace_bin())
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let command = wait_for("sleep to start", Duration::from_secs(60), || {
        launched_command(tracer.id())
    });
    let told = Instant::now();
    let budget = match how {
        "TERM" | "INT" => {
            kill(tracer.id(), how);
            Duration::from_secs(2)
        }
        // The deadline runs from the start of tracing, just before the command's exec.
        _ => Duration::from_secs(1 + 2),
    };
    let status = wait_with_timeout(&mut tracer, Duration::from_secs(30));
    let took = told.elapsed();
    let command_alive = Path::new(&format!("/proc/{command}")).exists();
    kill(command, "KILL");
    println!(
        "{how}: memtrace ended in {took:?} ({status:?}); command still running: {command_alive}"
    );
    assert!(took <= budget, "{how}: took {took:?}");
    assert!(status.success(), "{how}: {status:?}");
    assert!(command_alive, "{how}: the command should keep running");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(
        calls(process(&report, u64::from(command)), "execve"),
        (1, 0)
    );
}

#[test]
fn launch_mode_ends_on_duration() {
    ends_when_told("duration");
}

#[test]
fn launch_mode_ends_on_sigterm() {
    ends_when_told("TERM");
}

#[test]
fn launch_mode_ends_on_sigint() {
    ends_when_told("INT");
}

/// The command's own exit status, every time: the session used to end on "no traced process
/// left" before the status arrived, and exit 0 (once in ~150 runs).
#[test]
fn exit_status_of_the_command_is_kept() {
    require_root();
    for _ in 0..5 {
        let output = memtrace(&["-o", "/dev/null", "--", "/etc/passwd"]);
        assert_eq!(output.status.code(), Some(127));
        let output = memtrace(&["-o", "/dev/null", "--", "sh", "-c", "exit 7"]);
        assert_eq!(output.status.code(), Some(7));
    }
}

const WASMTIME_WORKLOAD: &str = r#"
import os, signal, sys
import wasmtime
engine = wasmtime.Engine()
store = wasmtime.Store(engine)
module = wasmtime.Module(engine, """
(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32)
    (memory.grow (local.get 0))))
""")
instances = []
for _ in range(8):
    instance = wasmtime.Instance(store, module, [])
    grow = instance.exports(store)["grow"]
    for _ in range(32):
        grow(store, 16)
    instances.append(instance)
if sys.argv[1:] == ["stop"]:
    os.kill(os.getpid(), signal.SIGSTOP)
"#;

/// wasmtime (from PyPI, installed by `cargo xtask setup`), run from Debian's python3.
#[test]
fn wasmtime() {
    require_root();
    let scratch = Scratch::new("wasmtime");
    let script = scratch.file("workload.py");
    std::fs::write(&script, WASMTIME_WORKLOAD).unwrap();
    let packages = memtrace_tests::workspace_root().join("target/xtask/python");
    assert!(
        packages.join("wasmtime").is_dir(),
        "wasmtime is not installed: run `cargo xtask setup`"
    );
    let script = script.to_str().unwrap();
    let python_path = format!("PYTHONPATH={}", packages.display());
    let python = ["env", &python_path, "/usr/bin/python3", script];
    let snapshot = snapshot_run(&scratch, &[&python[..], &["stop"]].concat());
    assert_snapshot_faithful("wasmtime", &snapshot);
    assert_counts_equal_strace("wasmtime", &scratch, &python);
}
