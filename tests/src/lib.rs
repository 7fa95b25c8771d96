//! Shared by the integration tests (tests/tests/it, one test binary): the C test programs
//! tests/build.rs built for either ABI, running the real memtrace binary, and reading its JSON
//! report.
//!
//! The tests load real BPF programs, so they run as root (`cargo xtask test` does, and sets
//! `MEMTRACE_BIN` to the release binary it just built).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

pub mod crafted;
pub mod debian_root;
pub mod devtools;
pub mod maps;
pub mod oracle;

/// Which ABI to build a test program for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Abi {
    X86_64,
    I386,
}

impl Abi {
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::I386 => "i386",
        }
    }
}

/// How a test program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// With the C library, dynamically linked: a real program with ld.so and libc.
    Libc,
    /// No C library, static, raw syscalls: the process makes exactly the syscalls in its
    /// source, which is what exact-count tests need.
    Bare,
    /// With the C library, keeping frame pointers (`-fno-omit-frame-pointer`).
    LibcFramePointers,
    /// With the C library, without frame pointers (`-fomit-frame-pointer`): only DWARF CFI
    /// can unwind it.
    LibcNoFramePointers,
}

/// The memtrace binary under test.
#[track_caller]
pub fn memtrace_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MEMTRACE_BIN") {
        return PathBuf::from(path);
    }
    let built = workspace_root().join("target/release/memtrace");
    assert!(
        built.exists(),
        "no memtrace binary: run the tests with `cargo xtask test` (or set MEMTRACE_BIN)"
    );
    built
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A program a test needs, found on PATH. A test without it cannot mean anything, so it fails
/// saying which package brings it (`cargo xtask test` installs them all).
#[track_caller]
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} is missing: install Debian's {package} package (`cargo xtask setup`)")
        })
}

/// The tests load BPF programs: without root they cannot mean anything.
#[track_caller]
pub fn require_root() {
    // /proc/self belongs to the process's effective user.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    assert_eq!(
        euid, 0,
        "these tests load BPF programs: run them as root (`cargo xtask test`)"
    );
}

/// A scratch directory for one test, removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Self {
        // Every test of the suite runs in one process: the count keeps two scratch
        // directories of one name apart.
        static MADE: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "memtrace-test-{test}-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A cgroup v2 directory for one test, removed when dropped (once its processes are gone).
pub struct TestCgroup {
    pub path: PathBuf,
    /// As `/proc/PID/cgroup` names it.
    pub name: String,
}

impl TestCgroup {
    pub fn new(test: &str) -> Self {
        // The v2 hierarchy: /sys/fs/cgroup itself, or .../unified on a hybrid setup.
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|dir| Path::new(dir).join("cgroup.procs").exists())
            .expect("a cgroup v2 hierarchy");
        let name = format!("/memtrace-test-{test}-{}", std::process::id());
        let path = Path::new(mount).join(name.trim_start_matches('/'));
        std::fs::create_dir_all(&path).unwrap();
        Self { path, name }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Where tests/build.rs put the built test programs.
pub fn programs_dir() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("programs")
}

/// A test program tests/build.rs built, by its file name (`inside-64-static`).
#[track_caller]
pub fn built_program(file_name: &str) -> PathBuf {
    let path = programs_dir().join(file_name);
    assert!(
        path.is_file(),
        "tests/build.rs built no {file_name} (add its variant there)"
    );
    path
}

/// `tests/programs/NAME.c` as tests/build.rs built it for `abi` and `runtime`.
#[track_caller]
pub fn program(name: &str, abi: Abi, runtime: Runtime) -> PathBuf {
    let bits = if abi == Abi::I386 { "32" } else { "64" };
    let suffix = match runtime {
        Runtime::Libc => "",
        Runtime::Bare => "-bare",
        Runtime::LibcFramePointers => "-fp",
        Runtime::LibcNoFramePointers => "-nofp",
    };
    built_program(&format!("{name}-{bits}{suffix}"))
}

/// One run of memtrace.
pub struct Run {
    pub output: Output,
    /// The JSON report, when the run wrote one.
    pub report: Option<Value>,
}

impl Run {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    #[track_caller]
    pub fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("memtrace wrote no JSON report; stderr:\n{}", self.stderr()))
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "memtrace failed ({:?}); stderr:\n{}",
            self.output.status,
            self.stderr()
        );
        self
    }
}

/// Runs memtrace with `args`, asking for a JSON report in `scratch`.
#[track_caller]
pub fn memtrace_json(scratch: &Scratch, args: &[&str]) -> Run {
    let report_path = scratch.file("report.json");
    let _ = std::fs::remove_file(&report_path);
    let output = Command::new(memtrace_bin())
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .args(args)
        .output()
        .expect("running memtrace");
    let report = std::fs::read_to_string(&report_path).ok().map(|text| {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{text}"))
    });
    Run { output, report }
}

/// Runs memtrace with `args` as given (no report options added).
pub fn memtrace(args: &[&str]) -> Output {
    Command::new(memtrace_bin())
        .args(args)
        .output()
        .expect("running memtrace")
}

/// The report's entry for a pid.
#[track_caller]
pub fn process(report: &Value, pid: u64) -> &Value {
    processes(report)
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("no process {pid} in the report:\n{report:#}"))
}

pub fn processes(report: &Value) -> &Vec<Value> {
    report["processes"]
        .as_array()
        .expect("report.processes is an array")
}

/// The processes whose executable file name ends with `suffix`.
pub fn processes_running<'a>(report: &'a Value, suffix: &str) -> Vec<&'a Value> {
    processes(report)
        .iter()
        .filter(|p| p["exe"].as_str().is_some_and(|exe| exe.ends_with(suffix)))
        .collect()
}

/// `syscalls.NAME.calls` and `.failed` of a process entry; (0, 0) for one of
/// [`WHEN_MADE_SYSCALLS`] the report leaves out.
#[track_caller]
pub fn calls(process: &Value, syscall: &str) -> (u64, u64) {
    let counts = &process["syscalls"][syscall];
    if counts.is_null() && WHEN_MADE_SYSCALLS.contains(&syscall) {
        return (0, 0);
    }
    (
        counts["calls"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count for {syscall} in {process:#}")),
        counts["failed"].as_u64().unwrap_or(0),
    )
}

/// The syscall names of the report's `syscalls` object.
pub const REPORTED_SYSCALLS: [&str; 14] = [
    "mmap",
    "munmap",
    "brk",
    "mremap",
    "mprotect",
    "memfd_create",
    "execve",
    "shmat",
    "shmdt",
    "io_setup",
    "io_destroy",
    "pkey_mprotect",
    "mseal",
    "remap_file_pages",
];

/// The ones a report names only when some process made them (so that a report of a session
/// without any is what it was before memtrace traced them).
pub const WHEN_MADE_SYSCALLS: [&str; 7] = [
    "shmat",
    "shmdt",
    "io_setup",
    "io_destroy",
    "pkey_mprotect",
    "mseal",
    "remap_file_pages",
];

/// Runs `memtrace replay RECORDING` with `extra` arguments, asking for a JSON report in
/// `scratch`; returns how it ended and the report.
#[track_caller]
pub fn replay_json(
    scratch: &Scratch,
    recording: &std::path::Path,
    extra: &[&str],
) -> (std::process::Output, Value) {
    let out = scratch.file("replay.json");
    let output = Command::new(memtrace_bin())
        .arg("replay")
        .arg(recording)
        .args(["--format", "json", "-o", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "replay wrote no JSON ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (output, report)
}

/// memtrace started with `ARGS` (an attach: `--pid …`, `--cgroup …`) and past the line that says
/// it is attached, so the caller may now make the target act. The rest of its stderr is read
/// in the background: a pipe nobody reads could block it, a closed one fail its last words.
pub struct Tracer {
    pub child: std::process::Child,
    /// The first line: memtrace's "attached …".
    pub attached: String,
    rest: std::thread::JoinHandle<String>,
}

impl Tracer {
    #[track_caller]
    pub fn attach(args: &[&str]) -> Self {
        use std::io::{BufRead, BufReader, Read};
        let mut child = Command::new(memtrace_bin())
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running memtrace");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut attached = String::new();
        stderr.read_line(&mut attached).unwrap();
        assert!(
            attached.contains("attached"),
            "unexpected first line: {attached:?}"
        );
        let rest = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            rest
        });
        Self {
            child,
            attached,
            rest,
        }
    }

    /// Waits up to `timeout` for memtrace's end (killing it past that, and failing): its
    /// status and its stderr after the attach line.
    #[track_caller]
    pub fn wait(mut self, timeout: std::time::Duration) -> (std::process::ExitStatus, String) {
        let give_up = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > give_up {
                let _ = self.child.kill();
                panic!("memtrace did not end within {timeout:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        (status, self.rest.join().unwrap())
    }
}

/// [`Tracer::attach`] for callers that only signal and wait for the process.
#[track_caller]
pub fn attach(args: &[&str]) -> std::process::Child {
    Tracer::attach(args).child
}

/// memtrace refused with one line on stderr, naming `expected`, a non-zero exit and no panic.
#[track_caller]
pub fn assert_one_line_error(output: &Output, expected: &str) {
    assert!(
        !output.status.success(),
        "expected a failure, got {:?}",
        output.status
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line, got:\n{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Where two JSON values differ, as `path: left vs right` lines.
pub fn json_differences(path: &str, left: &Value, right: &Value) -> Vec<String> {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|key| {
                    let (l, r) = (&l.get(key), &r.get(key));
                    json_differences(
                        &format!("{path}.{key}"),
                        l.unwrap_or(&Value::Null),
                        r.unwrap_or(&Value::Null),
                    )
                })
                .collect()
        }
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => l
            .iter()
            .zip(r)
            .enumerate()
            .flat_map(|(i, (l, r))| json_differences(&format!("{path}[{i}]"), l, r))
            .collect(),
        _ if left == right => Vec::new(),
        _ => vec![format!("{path}: {left} vs {right}")],
    }
}

/// Starts a test program that says it is set up by printing a first line (`ready`), and waits
/// for that line: what it does next is what the test traces. Returns the child and the line.
#[track_caller]
pub fn spawn_ready(
    mut command: impl std::borrow::BorrowMut<std::process::Command>,
) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = command
        .borrow_mut()
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The preamble's length in a version 3 recording: magic, version, session id.
pub const RECORDING_PREAMBLE: usize = 28;

/// A recording's frames found by walking their lengths: (start, end, type).
pub fn recording_frames(bytes: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut frames = Vec::new();
    let mut start = RECORDING_PREAMBLE;
    while start + 7 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[start + 2..start + 6].try_into().unwrap()) as usize;
        let end = start + 7 + len + 4;
        frames.push((start, end, bytes[start + 6]));
        start = end;
    }
    frames
}

/// A real recording (`name` in `scratch`) of a real program, `mmap_loop ITERATIONS`, without
/// stacks: it spans several events frames once the iterations are in the thousands.
pub fn record_mmap_loop(scratch: &Scratch, name: &str, iterations: &str) -> PathBuf {
    let recording = scratch.file(name);
    let workload = program("mmap_loop", Abi::X86_64, Runtime::Libc);
    memtrace_json(
        scratch,
        &[
            "--no-stacks",
            "--record",
            recording.to_str().unwrap(),
            "--",
            workload.to_str().unwrap(),
            iterations,
        ],
    )
    .assert_success();
    recording
}
