//! Processes in a container traced from the host: a Debian 11 root (the cached debootstrap
//! minbase), entered under new mount and pid namespaces in a cgroup of its own. The host has
//! other files at the same paths (glibc 2.36 against the container's 2.31), so a layout right
//! to the byte shows memtrace read the container's own files; the report names the process
//! as the container does.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{
    built_program, debian_root::debian_root, maps::agreement, memtrace_json, processes,
    replay_json, require_root, Scratch, TestCgroup, Tracer,
};
use serde_json::Value;

#[test]
fn a_process_in_a_container_is_traced_with_its_own_files_and_names() {
    require_root();
    // As the kernel names it: the cached root may be reached through a link.
    let root = std::fs::canonicalize(debian_root()).unwrap();
    let scratch = Scratch::new("container");
    let cgroup = TestCgroup::new("container");
    let inside = format!("/tmp/memtrace-container-{}", std::process::id());
    let dir = root.join(inside.trim_start_matches('/'));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The shell joins the new cgroup, then enters the container; its bash (pid 1 there) makes
    // a 3 MB string and saves its own maps, as seen inside. It lives a second first, as a
    // service does: memtrace reads who it is from /proc, which only a live process has.
    let script = format!(
        "sleep 1; x=$(head -c 3000000 /dev/zero | tr '\\0' a); cat /proc/$$/maps > {inside}/maps; \
         echo $$ > {inside}/pid"
    );
    let enter = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --mount --pid --fork --mount-proc={}/proc chroot {} /bin/bash -c \"$0\"",
        cgroup.path.display(),
        root.display(),
        root.display()
    );
    let recording = scratch.file("container.mtr");
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--record",
            recording.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &enter,
            &script,
        ],
    );
    run.assert_success();
    let report = run.report();
    let bash = processes(report)
        .iter()
        .find(|p| p["container"]["root"] == root.to_str().unwrap() && p["container"]["ns_pid"] == 1)
        .unwrap_or_else(|| panic!("no bash in the container root: {report:#}"));

    // Its names as the container sees them.
    let ns_pid = std::fs::read_to_string(dir.join("pid")).unwrap();
    assert_eq!(bash["exe"], "/bin/bash");
    assert_eq!(ns_pid.trim(), "1");
    assert_ne!(bash["pid"], 1);
    assert_eq!(bash["container"]["cgroup"], cgroup.name.as_str());

    // Its layout, rebuilt from the container's own binaries.
    let maps = std::fs::read_to_string(dir.join("maps")).unwrap();
    let (ratio, differences) = agreement(&maps, bash);
    assert!(
        ratio >= 0.999,
        "the container's bash: rebuilt layout agrees with its /proc/PID/maps on {:.3}% of \
         bytes:\n{differences}",
        ratio * 100.0
    );
    assert!(
        bash["layout"]
            .as_array()
            .unwrap()
            .iter()
            .any(|region| region["name"] == "/usr/lib/x86_64-linux-gnu/ld-2.31.so"),
        "the container's own ld.so (glibc 2.31), named as inside: {bash:#}"
    );

    // The recording carries who it is: a replay names it the same way.
    let (replayed, replay) = replay_json(&scratch, &recording, &[]);
    assert!(replayed.status.success(), "{replayed:?}");
    let again = processes(&replay)
        .iter()
        .find(|p| p["pid"] == bash["pid"])
        .expect("the bash in the replay");
    assert_eq!(again["container"], bash["container"]);

    // The text report says who it is.
    let text = Command::new(memtrace_tests::memtrace_bin())
        .args(["--follow", "--", "/bin/sh", "-c", &enter, &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "container: pid 1 in its namespace, cgroup {}",
            cgroup.name
        )),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Who a process is comes from the kernel, at its fork and exec: a process in a pid namespace
/// and a cgroup of its own, gone within milliseconds (long before memtrace could read its
/// `/proc` entry), still has its cgroup and its pid in its namespace, and the recording
/// carries them to the replay.
#[test]
fn a_process_gone_within_milliseconds_has_its_cgroup_and_namespace_pid() {
    require_root();
    let scratch = Scratch::new("container-short-lived");
    let cgroup = TestCgroup::new("short-lived");
    let recording = scratch.file("short-lived.mtr");
    let enter = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --pid --fork /bin/true",
        cgroup.path.display()
    );
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--record",
            recording.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &enter,
        ],
    );
    run.assert_success();
    let report = run.report();
    assert_eq!(report["lost_events"], 0);
    let child = processes(report)
        .iter()
        .find(|p| p["exe"] == "/bin/true")
        .unwrap_or_else(|| panic!("no /bin/true: {report:#}"));
    assert_eq!(child["alive"], false);
    assert_ne!(child["pid"], 1);
    assert_eq!(child["container"]["ns_pid"], 1, "{:#}", child["container"]);
    assert_eq!(
        child["container"]["cgroup"],
        cgroup.name.as_str(),
        "{:#}",
        child["container"]
    );
    // unshare, which the shell became, is in the cgroup too, in the host's pid namespace.
    let unshare = processes(report)
        .iter()
        .find(|p| p["exe"] == "/usr/bin/unshare")
        .unwrap_or_else(|| panic!("no unshare: {report:#}"));
    assert_eq!(unshare["container"]["cgroup"], cgroup.name.as_str());
    assert_eq!(unshare["container"]["ns_pid"], unshare["pid"]);

    let (replayed, replay) = replay_json(&scratch, &recording, &[]);
    assert!(replayed.status.success(), "{replayed:?}");
    for live in [child, unshare] {
        let again = processes(&replay)
            .iter()
            .find(|p| p["pid"] == live["pid"])
            .expect("the process in the replay");
        assert_eq!(again["container"], live["container"]);
    }
    println!(
        "short-lived: /bin/true pid {} is pid 1 in cgroup {}, live and replayed",
        child["pid"], cgroup.name
    );
}

/// A directory of the container (`/tmp/memtrace-NAME-PID` inside it), made afresh, and the
/// host's other directory of the same path, removed at the end.
struct SharedPath {
    /// The path as the container sees it (and as the host's decoy has it).
    inside: String,
    /// The same directory as the host reaches it inside the container's root.
    in_root: PathBuf,
}

impl SharedPath {
    fn new(root: &Path, name: &str) -> Self {
        let inside = format!("/tmp/memtrace-{name}-{}", std::process::id());
        let in_root = root.join(inside.trim_start_matches('/'));
        for dir in [Path::new(&inside), in_root.as_path()] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).unwrap();
        }
        Self { inside, in_root }
    }
}

impl Drop for SharedPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.inside);
        let _ = std::fs::remove_dir_all(&self.in_root);
    }
}

/// Puts tests/programs/inside.c, as tests/build.rs built it statically (the container's glibc
/// is older than the host's, so only a static program runs there), into `inside` in the
/// container's root, and its decoy with other functions at the same path on the host: reading
/// the host's file would name the container program's frames `host_decoy_*`.
#[track_caller]
fn build_inside_program(shared: &SharedPath) -> String {
    let program = format!("{}/inside", shared.inside);
    for (output, built) in [
        (shared.in_root.join("inside"), "inside-64-static"),
        (PathBuf::from(&program), "inside-64-static-decoy"),
    ] {
        std::fs::copy(built_program(built), &output).unwrap();
    }
    program
}

/// The shell command that enters `cgroup`, then the container: new mount and pid namespaces
/// rooted at `root`, running `inner` (a bash script, `$0`) as its pid 1.
fn enter_command(cgroup: &TestCgroup, root: &Path) -> String {
    format!(
        "echo $$ > {}/cgroup.procs && exec unshare --mount --pid --fork --mount-proc={}/proc chroot {} /bin/bash -c \"$0\"",
        cgroup.path.display(),
        root.display(),
        root.display()
    )
}

/// Starts the container in the background: `sh` becomes `unshare`, whose child is the
/// container's pid 1.
fn start_container(cgroup: &TestCgroup, root: &Path, inner: &str) -> Child {
    Command::new("/bin/sh")
        .args(["-c", &enter_command(cgroup, root), inner])
        .spawn()
        .expect("starting the container")
}

/// The host pid of the container's pid 1 once it runs `exe_name`.
#[track_caller]
fn container_init(unshare: u32, exe_name: &str) -> u32 {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .find_map(|c| c.parse::<u32>().ok())
        {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe.file_name().is_some_and(|name| name == exe_name) {
                return pid;
            }
        }
        assert!(
            Instant::now() < give_up,
            "the container never ran {exe_name}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for an attached memtrace's end: it must succeed and warn of nothing.
#[track_caller]
fn finish(tracer: Tracer) {
    let (status, stderr) = tracer.wait(Duration::from_secs(10));
    assert!(status.success(), "memtrace: {status:?}\n{stderr}");
    assert!(stderr.is_empty(), "memtrace warned: {stderr}");
}

/// Waits until a process of `cgroup` runs a file named `exe_name`.
#[track_caller]
fn wait_for_member(cgroup: &TestCgroup, exe_name: &str) {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let members = std::fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
        if members.lines().any(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.file_name().is_some_and(|name| name == exe_name))
        }) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "nothing in the cgroup ran {exe_name}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every function named in the process's call stacks.
fn stack_functions(process: &Value) -> Vec<String> {
    process["unreleased"]["by_stack"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["frames"].as_array().unwrap())
        .filter_map(|frame| frame["function"].as_str().map(str::to_owned))
        .collect()
}

/// The container program's stacks name its own functions, never the host decoy's.
#[track_caller]
fn assert_own_functions(process: &Value) {
    let functions = stack_functions(process);
    assert!(
        functions.iter().any(|f| f == "memtrace_inside_leaf")
            && functions.iter().any(|f| f == "memtrace_inside_middle")
            && functions.iter().any(|f| f == "main"),
        "the container program's own functions, from its own file: {functions:?}"
    );
    assert!(
        !functions.iter().any(|f| f.starts_with("host_decoy")),
        "named from the host's file of the same path: {functions:?}"
    );
    let top = &process["unreleased"]["by_stack"][0];
    assert_eq!(top["count"], 4, "{top:#}");
    assert!(
        top["call_site"]
            .as_str()
            .unwrap()
            .contains("memtrace_inside_leaf ← memtrace_inside_middle ← main"),
        "{top:#}"
    );
}

/// Its layout at the end, rebuilt, against the maps it saved inside.
#[track_caller]
fn assert_layout_agrees(process: &Value, maps_file: &Path) {
    let maps = std::fs::read_to_string(maps_file).unwrap();
    let (ratio, differences) = agreement(&maps, process);
    assert!(
        ratio >= 0.999,
        "rebuilt layout agrees with its /proc/PID/maps on {:.3}% of bytes:\n{differences}",
        ratio * 100.0
    );
}

/// `--pid` with the host pid of a program running in a container: attached while it runs,
/// its layout, names and call stacks come from the container's files.
#[test]
fn a_program_in_a_container_is_attached_to_by_its_host_pid() {
    require_root();
    let root = std::fs::canonicalize(debian_root()).unwrap();
    let scratch = Scratch::new("container-attach");
    let cgroup = TestCgroup::new("attach");
    let shared = SharedPath::new(&root, "attach");
    let program = build_inside_program(&shared);

    let mut container =
        start_container(&cgroup, &root, &format!("exec {program} {}", shared.inside));
    let pid = container_init(container.id(), "inside");
    let report_path = scratch.file("attach.json");
    let recording = scratch.file("attach.mtr");
    let tracer = Tracer::attach(&[
        "--pid",
        &pid.to_string(),
        "--record",
        recording.to_str().unwrap(),
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    std::fs::write(shared.in_root.join("go"), "").unwrap();
    finish(tracer);
    assert!(container.wait().unwrap().success());

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let process = memtrace_tests::process(&report, u64::from(pid));
    assert_eq!(process["exe"], program.as_str(), "named as inside");
    assert_eq!(process["container"]["ns_pid"], 1);
    assert_eq!(process["container"]["cgroup"], cgroup.name.as_str());
    assert_eq!(process["container"]["root"], root.to_str().unwrap());
    assert_layout_agrees(process, &shared.in_root.join("maps"));
    assert_own_functions(process);

    // Replayed here, where the path holds the decoy: the recording names the build that ran,
    // so its frames stay module+offset rather than take the decoy's names.
    let (replayed, replay) = replay_json(&scratch, &recording, &[]);
    assert!(replayed.status.success(), "{replayed:?}");
    let again = memtrace_tests::process(&replay, u64::from(pid));
    assert_eq!(again["container"], process["container"]);
    let functions = stack_functions(again);
    assert!(
        !functions.iter().any(|f| f.starts_with("host_decoy")),
        "a replay named frames from another build: {functions:?}"
    );
    assert_eq!(again["unreleased"]["by_stack"][0]["count"], 4);
}

/// `--cgroup`: what is in the cgroup at attach, what is started in it afterwards and what
/// joins it are traced; a process outside it is not.
#[test]
fn a_whole_cgroup_is_traced_and_nothing_outside_it() {
    require_root();
    let root = std::fs::canonicalize(debian_root()).unwrap();
    let scratch = Scratch::new("container-cgroup");
    let cgroup = TestCgroup::new("cgroup");
    let shared = SharedPath::new(&root, "cgroup");
    let program = build_inside_program(&shared);

    // The container's bash (pid 1 there) waits on a FIFO, then starts three programs: `sleep`,
    // `head`, gone at once (its files are read from the root its parent had), and the program
    // built inside, which waits for late/go.
    let late = shared.in_root.join("late");
    std::fs::create_dir(&late).unwrap();
    let fifo = shared.in_root.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let inner = format!(
        "read line < {dir}/fifo; sleep 0.3; head -c 200000 /dev/zero > /dev/null; {program} {dir}/late & wait",
        dir = shared.inside
    );
    let mut container = start_container(&cgroup, &root, &inner);
    let init = container_init(container.id(), "bash");
    // A host process that joins the cgroup later, while it runs.
    let mut joiner = Command::new("/bin/sh")
        .args([
            "-c",
            "read line; /usr/bin/head -c 100000 /dev/zero > /dev/null",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();

    let report_path = scratch.file("cgroup.json");
    let tracer = Tracer::attach(&[
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    // Outside the cgroup, during the session: must not appear.
    let bystander = Command::new("/usr/bin/head")
        .args(["-c", "100000", "/dev/zero"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let bystander_pid = bystander.id();
    std::fs::write(cgroup.path.join("cgroup.procs"), joiner.id().to_string()).unwrap();
    std::io::Write::write_all(joiner.stdin.as_mut().unwrap(), b"go\n").unwrap();
    std::fs::write(&fifo, "go\n").unwrap();
    wait_for_member(&cgroup, "inside");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(late.join("go"), "").unwrap();
    assert!(container.wait().unwrap().success());
    assert!(joiner.wait().unwrap().success());
    assert!(bystander.wait_with_output().unwrap().status.success());
    // Only --duration, a signal or the cgroup's removal end a --cgroup session: the last.
    std::fs::remove_dir(&cgroup.path).unwrap();
    finish(tracer);

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let all = processes(&report);
    let pids: Vec<u64> = all.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert!(
        !pids.contains(&u64::from(bystander_pid)),
        "a process outside the cgroup was traced: {pids:?}"
    );
    for process in all {
        // A process gone before memtrace read who it is (the joiner's `head`) has no identity.
        assert!(
            process["container"].is_null()
                || process["container"]["cgroup"] == cgroup.name.as_str(),
            "only the cgroup's processes: {process:#}"
        );
    }
    // In it at attach: the container's bash, pid 1 there.
    let bash = memtrace_tests::process(&report, u64::from(init));
    assert_eq!(bash["container"]["ns_pid"], 1);
    // Started in it after attach, by its bash. (`head` is gone before memtrace can read who
    // it is: it has no container identity, only its place in the tree.)
    let started: Vec<&Value> = all.iter().filter(|p| p["ppid"] == init).collect();
    for name in ["bin/sleep", "bin/head"] {
        assert!(
            started
                .iter()
                .any(|p| p["exe"].as_str().unwrap().ends_with(name)),
            "{name} in {pids:?}"
        );
    }
    let inside = started
        .iter()
        .find(|p| p["exe"] == program.as_str())
        .unwrap_or_else(|| panic!("the program started in the container: {pids:?}"));
    assert!(inside["container"]["ns_pid"].as_u64().unwrap() > 1);
    assert_layout_agrees(inside, &late.join("maps"));
    assert_own_functions(inside);
    // Joined it while running, and was traced from then on.
    let joined = memtrace_tests::process(&report, u64::from(joiner.id()));
    assert_eq!(joined["container"]["cgroup"], cgroup.name.as_str());
    assert_eq!(joined["comm"], "sh");
    // The cgroup, with its processes, beside them.
    let group = report["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["cgroup"] == cgroup.name.as_str())
        .unwrap_or_else(|| panic!("{:#}", report["cgroups"]));
    let members = all
        .iter()
        .filter(|p| p["container"]["cgroup"] == cgroup.name.as_str())
        .count();
    assert_eq!(group["pids"].as_array().unwrap().len(), members);
    assert!(
        members >= 4,
        "bash, sleep, the program, the joiner: {pids:?}"
    );
}

/// A path that is not a cgroup v2 directory is one line and a failure.
#[test]
fn a_path_that_is_not_a_cgroup_is_refused() {
    require_root();
    let output = memtrace_tests::memtrace(&["--cgroup", "/usr/bin"]);
    memtrace_tests::assert_one_line_error(&output, "--cgroup /usr/bin: not a cgroup v2 directory");
    let output = memtrace_tests::memtrace(&["--cgroup", "/memtrace-no-such-cgroup"]);
    memtrace_tests::assert_one_line_error(&output, "No such file or directory");
}
