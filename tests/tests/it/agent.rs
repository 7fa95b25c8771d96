//! `memtrace agent`, as a server runs it: system-wide, for as long as it takes, with unrelated
//! processes starting and failing on their own; the captures it writes are read back with
//! `memtrace replay`, as a person would.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

use memtrace_tests::{
    json_differences, memtrace_bin, process, program, replay_json, require_root, spawn_ready, Abi,
    Runtime, Scratch, TestCgroup,
};
use rstest::rstest;
use serde_json::Value;

/// One system-wide agent at a time: each traces every process of the machine, the other
/// tests' included, and two would each capture the other's triggers.
pub(crate) static ONE_AGENT: Mutex<()> = Mutex::new(());

/// A running agent, stopped (SIGTERM) when dropped.
pub(crate) struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    captures: PathBuf,
}

impl Agent {
    #[track_caller]
    pub(crate) fn start(captures: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(memtrace_bin())
            .arg("agent")
            .arg("--capture-dir")
            .arg(captures)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("running memtrace agent");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child,
            lines,
            log: Vec::new(),
            captures: captures.to_owned(),
        };
        agent.wait_for_line("started:", Duration::from_secs(60));
        agent
    }

    /// Waits for a log line containing `text`, and returns it.
    #[track_caller]
    fn wait_for_line(&mut self, text: &str, timeout: Duration) -> String {
        let give_up = Instant::now() + timeout;
        if let Some(line) = self.log.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no agent line with {text:?} within {timeout:?}; it said:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits for a complete capture whose name has `kind` (and `pid`, when given).
    #[track_caller]
    fn wait_for_capture(&mut self, kind: &str, pid: Option<u32>, timeout: Duration) -> PathBuf {
        let give_up = Instant::now() + timeout;
        loop {
            if let Some(found) = complete_captures(&self.captures).into_iter().find(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                name.contains(&format!("-{kind}"))
                    && pid.is_none_or(|pid| name.contains(&format!("-{pid}-")))
            }) {
                return found;
            }
            while let Ok(line) = self.lines.try_recv() {
                self.log.push(line);
            }
            assert!(
                Instant::now() < give_up,
                "no {kind} capture within {timeout:?}; the agent said:\n{}",
                self.log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it said so far.
    pub(crate) fn said(&self) -> String {
        self.log.join("\n")
    }

    /// SIGTERM, then its status and everything it said.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        signal(&self.child, "TERM");
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log).join("\n"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The captures present, oldest first; a temporary of a capture being written is not one.
fn complete_captures(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// A capture holds its recording, the reports of its replay and what fired it; the report it
/// holds is what `memtrace replay` of its recording says of the processes it reports (the
/// trigger's and its family; all of them for a trigger about the system).
#[track_caller]
fn assert_complete(scratch: &Scratch, capture: &Path) -> (Value, Value) {
    for file in ["capture.mtr", "report.txt", "report.json", "trigger.json"] {
        assert!(
            capture.join(file).is_file(),
            "{} lacks {file}",
            capture.display()
        );
    }
    let read = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(capture.join(file)).unwrap()).unwrap()
    };
    let trigger = read("trigger.json");
    let pids: Vec<String> = trigger["reported_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    let mut args = Vec::new();
    for pid in &pids {
        args.extend(["--pid", pid.as_str()]);
    }
    let (output, replayed) = replay_json(scratch, &capture.join("capture.mtr"), &args);
    assert!(
        output.status.success(),
        "the capture replays cleanly: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let differences = json_differences("", &read("report.json"), &replayed);
    assert!(
        differences.is_empty(),
        "report.json is the capture's replay: {}",
        differences[..differences.len().min(20)].join("\n")
    );
    (replayed, trigger)
}

/// Seed 003's mechanism, started as an unrelated process while the agent watches the whole
/// machine: within 2 s a capture whose replay shows the failed brk calls and what bounds the
/// heap.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn a_failed_brk_is_captured_within_two_seconds(#[case] abi: Abi) {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new(&format!("agent-brk-{}", abi.name()));
    let mut agent = Agent::start(&scratch.file("captures"), &[]);
    let blocker = scratch.file("blocker.dat");
    let starve = Command::new(program("brk_starve", abi, Runtime::Libc))
        .arg(&blocker)
        .arg("20")
        .spawn()
        .unwrap();
    let pid = starve.id();
    let status = starve.wait_with_output().unwrap().status;
    assert!(status.success());
    let failed_at = Instant::now();
    let capture = agent.wait_for_capture("brk-failed", Some(pid), Duration::from_secs(10));
    let took = failed_at.elapsed();
    let (report, trigger) = assert_complete(&scratch, &capture);
    assert!(took < Duration::from_secs(2), "the capture took {took:?}");
    assert_eq!(trigger["trigger"], "brk-failed");
    assert_eq!(trigger["pid"], pid);
    let starved = process(&report, u64::from(pid));
    let failures = starved["brk"]["failed"].as_array().unwrap();
    assert_eq!(failures.len(), 5, "{:#}", starved["brk"]);
    assert_eq!(failures[0]["asked_bytes"], 64 << 10);
    let bounded_by = &starved["brk"]["bounded_by"];
    assert!(
        bounded_by["name"]
            .as_str()
            .unwrap()
            .ends_with("blocker.dat"),
        "what bounds the heap: {bounded_by:#}"
    );
    assert_eq!(starved["abi"], abi.name());
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("trigger brk-failed pid"), "{log}");
}

/// Seed 000's leak run slowly, among everything else: once it has grown steadily for
/// --growing-for, a `growing` capture names memfd:doublemapper at its true rate (±10%), the rate
/// the kernel's own /proc/PID/maps shows over the same time.
#[test]
fn a_slow_memfd_leak_is_captured_as_growing_at_its_true_rate() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("agent-growing");
    let mut agent = Agent::start(
        &scratch.file("captures"),
        &["--growing-for", "20", "--no-trigger", "map-count"],
    );
    let (mut leaker, _) =
        spawn_ready(Command::new(program("leaky_service", Abi::X86_64, Runtime::Libc)).arg("600"));
    let pid = leaker.id();
    // The truth, from the kernel: the leak's bytes in /proc/PID/maps, sampled on the clock the
    // events carry, so that a rate can be checked over exactly the span it was measured on.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(bytes) = doublemapper_bytes(pid) {
                    samples.push((monotonic_ns(), bytes));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let capture = agent.wait_for_capture("growing", Some(pid), Duration::from_secs(60));
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let _ = leaker.kill();
    let _ = leaker.wait();
    let (report, trigger) = assert_complete(&scratch, &capture);
    assert_eq!(trigger["trigger"], "growing");
    assert_eq!(trigger["figures"]["group"], "memfd:doublemapper");
    let figures = &trigger["figures"];
    let true_rate = rate_between(
        &samples,
        figures["since_ns"].as_u64().unwrap(),
        trigger["time_ns"].as_u64().unwrap(),
    );
    let rate = figures["bytes_per_s"].as_f64().unwrap();
    assert!(
        (rate / true_rate - 1.0).abs() <= 0.10,
        "the trigger's rate {rate:.0} B/s against /proc's {true_rate:.0} B/s over the same span"
    );
    // The capture's own report finds it growing too, from the window alone, at the rate
    // /proc shows over the rise it saw.
    let growing = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|finding| {
            finding["kind"] == "growing"
                && finding["pid"] == pid
                && finding["group"] == "memfd:doublemapper"
        })
        .unwrap_or_else(|| panic!("the capture's report: {:#}", report["findings"]));
    let report_rate = growing["bytes_per_s"].as_f64().unwrap();
    let true_rate = rate_between(
        &samples,
        growing["since_ns"].as_u64().unwrap(),
        trigger["window"]["end_ns"].as_u64().unwrap(),
    );
    assert!(
        (report_rate / true_rate - 1.0).abs() <= 0.10,
        "the report's rate {report_rate:.0} B/s against /proc's {true_rate:.0} B/s"
    );
    agent.stop();
}

/// The bytes of `/memfd:doublemapper` mappings in a process's /proc/PID/maps.
pub(crate) fn doublemapper_bytes(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(
        maps.lines()
            .filter(|line| line.contains("/memfd:doublemapper"))
            .filter_map(|line| {
                let (start, end) = line.split_whitespace().next()?.split_once('-')?;
                Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
            })
            .sum(),
    )
}

/// CLOCK_MONOTONIC now, in ns: the clock of memtrace's events.
pub(crate) fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// Bytes per second between the samples nearest to `from_ns` and `to_ns`.
#[track_caller]
pub(crate) fn rate_between(samples: &[(u64, u64)], from_ns: u64, to_ns: u64) -> f64 {
    let nearest = |at: u64| {
        *samples
            .iter()
            .min_by_key(|(time, _)| time.abs_diff(at))
            .expect("samples of /proc")
    };
    let (from, to) = (nearest(from_ns), nearest(to_ns));
    assert!(
        to.0 > from.0 + 5_000_000_000,
        "a span of several seconds: {from:?} {to:?}"
    );
    (to.1 - from.1) as f64 / ((to.0 - from.0) as f64 / 1e9)
}

/// SIGUSR1 captures now; 25 of them leave the 20 newest (--max-captures), each complete.
#[test]
fn signals_capture_and_rotation_keeps_the_newest() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("agent-signals");
    let captures = scratch.file("captures");
    // Without stacks, and with little history per capture: this is about rotation.
    let agent = Agent::start(
        &captures,
        &[
            // Only the signal: an unrelated process's failure would add a capture of its own.
            "--no-trigger",
            "brk-failed",
            "--no-trigger",
            "mmap-failed",
            "--no-trigger",
            "map-count",
            "--no-trigger",
            "growing",
            "--no-trigger",
            "kernel",
            "--max-captures",
            "20",
            "--no-stacks",
            "--capture-window",
            "1",
            "--keyframe-interval",
            "1",
        ],
    );
    let mut names = Vec::new();
    for index in 0..25 {
        signal(&agent.child, "USR1");
        // Each capture is awaited before the next signal: the agent queues only a few.
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let present = complete_captures(&captures);
            if let Some(newest) = present.last().filter(|newest| !names.contains(*newest)) {
                names.push(newest.clone());
                break;
            }
            assert!(
                Instant::now() < give_up,
                "capture {index} never came:\n{}",
                agent.log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The oldest goes once the newest is in place (its size counts against
    // --max-capture-bytes): for a moment after the last capture there are 21.
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut present = complete_captures(&captures);
    while present.len() > 20 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
        present = complete_captures(&captures);
    }
    assert_eq!(present.len(), 20);
    assert_eq!(present, names[5..], "the 5 oldest were rotated out");
    for capture in present.iter().step_by(7) {
        let (_, trigger) = assert_complete(&scratch, capture);
        assert_eq!(trigger["trigger"], "signal");
    }
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("rotated out"), "{log}");
}

/// kill -9 in the middle of a capture: every capture directory present is complete and
/// replays; the agent started again removes the half-written one and captures as before.
#[test]
fn a_killed_agent_leaves_only_complete_captures_and_resumes() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("agent-kill");
    let captures = scratch.file("captures");
    for round in 0..6 {
        let mut agent = Agent::start(&captures, &[]);
        // Enough history that a capture takes a while to write and replay.
        let mut churn = Command::new(program("mmap_loop", Abi::X86_64, Runtime::Libc))
            .arg("200000")
            .spawn()
            .unwrap();
        let _ = churn.wait();
        signal(&agent.child, "USR1");
        // Killed at a different point of the capture each round.
        std::thread::sleep(Duration::from_millis(20 + 60 * round));
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        for capture in complete_captures(&captures) {
            assert_complete(&scratch, &capture);
        }
        let _ = agent.wait_for_line("started:", Duration::from_secs(1));
    }
    let before = complete_captures(&captures).len();
    let mut agent = Agent::start(&captures, &[]);
    let leftovers: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-written captures are removed at start"
    );
    signal(&agent.child, "USR1");
    let give_up = Instant::now() + Duration::from_secs(20);
    while complete_captures(&captures).len() == before {
        assert!(
            Instant::now() < give_up,
            "no capture after the restart:\n{}",
            agent.log.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let newest = complete_captures(&captures).pop().unwrap();
    assert_complete(&scratch, &newest);
    let _ = agent.wait_for_line("capture signal", Duration::from_secs(5));
    agent.stop();
}

/// Seed 003 end to end: the agent watching an OpenSSH server's cgroup; a login whose shell
/// runs the brk-starved program is captured with sshd, its session child and the shell, and
/// the exec's ABI line.
#[test]
fn a_login_whose_shell_starves_its_heap_is_captured_with_sshd() {
    use super::sshd::{ensure_test_user, free_port, is_bash, login, start_sshd, SSHD};
    require_root();
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} missing: `cargo xtask setup` installs openssh-server"
    );
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    ensure_test_user();
    let scratch = Scratch::new("agent-sshd");
    let port = free_port();
    let sshd = start_sshd(&scratch, port);
    // sshd in a cgroup of its own, as systemd would put sshd.service.
    let cgroup = TestCgroup::new("agent-sshd");
    std::fs::write(cgroup.path.join("cgroup.procs"), sshd.0.id().to_string()).unwrap();
    // The session user writes its blocker where it may.
    let shared = scratch.file("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let starve = program("brk_starve", Abi::X86_64, Runtime::Libc);
    let mut agent = Agent::start(
        &scratch.file("captures"),
        &["--cgroup", cgroup.path.to_str().unwrap()],
    );
    let said = login(
        &scratch,
        port,
        &format!(
            "{} {}/blocker.dat 20; echo starved",
            starve.display(),
            shared.display()
        ),
    );
    assert_eq!(said.trim(), "starved");
    let capture = agent.wait_for_capture("brk-failed", None, Duration::from_secs(10));
    let (report, _) = assert_complete(&scratch, &capture);
    agent.stop();
    drop(sshd);
    drop(cgroup);
    let processes = report["processes"].as_array().unwrap();
    let sshd_pid = processes
        .iter()
        .find(|p| p["exe"].as_str().unwrap_or("").ends_with("/sshd"))
        .unwrap_or_else(|| panic!("sshd is in the capture: {report:#}"))["pid"]
        .clone();
    let bash = processes
        .iter()
        .find(|p| is_bash(p))
        .unwrap_or_else(|| panic!("the login's bash: {report:#}"));
    let exec = bash["execs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["filename"].as_str().unwrap().ends_with("/bash"))
        .unwrap();
    assert_eq!(
        (exec["from_abi"].as_str(), exec["to_abi"].as_str()),
        (Some("x86_64"), Some("x86_64"))
    );
    // bash's parent is sshd's session child, whose parent is sshd.
    let session = processes
        .iter()
        .find(|p| p["pid"] == bash["ppid"])
        .unwrap_or_else(|| panic!("bash's parent, sshd's session: {report:#}"));
    assert!(
        session["ppid"] == sshd_pid
            || processes
                .iter()
                .any(|p| p["pid"] == session["ppid"] && p["ppid"] == sshd_pid),
        "the session descends from sshd"
    );
    let starved = processes
        .iter()
        .find(|p| p["exe"].as_str().unwrap_or("").ends_with("/brk_starve-64"))
        .unwrap_or_else(|| panic!("the starved program: {report:#}"));
    assert_eq!(starved["brk"]["failed"].as_array().unwrap().len(), 5);
}

/// `--cgroup` repeated: the agent watches each cgroup given and no other. The brk-starved
/// program started in two watched cgroups is captured in both; started in a third, unwatched
/// one, it is not traced at all.
#[test]
fn repeated_cgroups_are_each_watched_and_no_other() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("agent-cgroups");
    let cgroups = [
        TestCgroup::new("agent-cg-a"),
        TestCgroup::new("agent-cg-b"),
        TestCgroup::new("agent-cg-c"),
    ];
    let mut agent = Agent::start(
        &scratch.file("captures"),
        &[
            "--cgroup",
            cgroups[0].path.to_str().unwrap(),
            "--cgroup",
            cgroups[1].path.to_str().unwrap(),
        ],
    );
    assert!(
        agent.said().contains(&format!(
            "in cgroups {}, {}",
            cgroups[0].name, cgroups[1].name
        )),
        "{}",
        agent.said()
    );
    // Each program joins its cgroup before it execs, as a service manager starts one.
    let starved: Vec<u32> = cgroups
        .iter()
        .enumerate()
        .map(|(index, cgroup)| {
            let mut child = Command::new("sh")
                .arg("-c")
                .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"")
                .arg("sh")
                .arg(&cgroup.path)
                .arg(program("brk_starve", Abi::X86_64, Runtime::Libc))
                .arg(scratch.file(&format!("blocker-{index}.dat")))
                .arg("20")
                .spawn()
                .unwrap();
            let pid = child.id();
            assert!(child.wait().unwrap().success());
            pid
        })
        .collect();
    for &pid in &starved[..2] {
        let capture = agent.wait_for_capture("brk-failed", Some(pid), Duration::from_secs(10));
        let (report, _) = assert_complete(&scratch, &capture);
        let process = process(&report, u64::from(pid));
        assert_eq!(process["brk"]["failed"].as_array().unwrap().len(), 5);
    }
    // The third failed as the others did, before the second's capture was awaited.
    let unwatched = starved[2];
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains(&format!("pid {unwatched}:")) && !log.contains(&format!("pid {unwatched} ")),
        "the unwatched cgroup's process was traced:\n{log}"
    );
    let names: Vec<String> = complete_captures(&scratch.file("captures"))
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|name| name.contains(&format!("-{unwatched}-"))),
        "{names:?}"
    );
    drop(cgroups);
}

/// A memory cgroup limited to `bytes`, removed when dropped: cgroup v2's `memory.max` where the
/// memory controller is on the unified hierarchy, else cgroup v1's `memory.limit_in_bytes` (a
/// hybrid host, as this one is).
struct MemoryLimited {
    path: PathBuf,
}

impl MemoryLimited {
    fn new(test: &str, bytes: u64) -> Self {
        let name = format!("memtrace-test-{test}-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup").join(&name);
        let v1 = Path::new("/sys/fs/cgroup/memory").join(&name);
        let path = if Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists()
            && std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
                .unwrap()
                .contains("memory")
        {
            std::fs::create_dir_all(&v2).unwrap();
            std::fs::write(v2.join("memory.max"), bytes.to_string()).unwrap();
            let _ = std::fs::write(v2.join("memory.swap.max"), "0");
            v2
        } else {
            std::fs::create_dir_all(&v1).unwrap();
            std::fs::write(v1.join("memory.limit_in_bytes"), bytes.to_string()).unwrap();
            let _ = std::fs::write(v1.join("memory.swappiness"), "0");
            v1
        };
        Self { path }
    }
}

impl Drop for MemoryLimited {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The OOM killer, system-wide: python3 in a memory cgroup of 64 MiB fills a 512 MiB buffer,
/// is killed, and an `oom` capture names it, with its family's report.
#[test]
fn a_process_the_oom_killer_chooses_is_captured() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("agent-oom");
    let limited = MemoryLimited::new("agent-oom", 64 << 20);
    let mut agent = Agent::start(&scratch.file("captures"), &[]);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && exec python3 -c 'b = bytearray(512 << 20)'")
        .arg("sh")
        .arg(&limited.path)
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "python3 was not killed by the OOM killer: {status:?}"
    );
    let capture = agent.wait_for_capture("oom", Some(pid), Duration::from_secs(10));
    let (report, trigger) = assert_complete(&scratch, &capture);
    assert_eq!(trigger["trigger"], "oom");
    assert_eq!(trigger["pid"], pid);
    assert_eq!(trigger["comm"], "python3", "{trigger:#}");
    assert!(
        trigger["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("the OOM killer chose pid {pid} (python3)")),
        "{trigger:#}"
    );
    let victim = process(&report, u64::from(pid));
    assert_eq!(victim["comm"], "python3", "{victim:#}");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("trigger oom pid {pid}")), "{log}");
    drop(limited);
}
